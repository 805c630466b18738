// Reduction (Caffe's Reduction layer): each row of a (num, dim) array reduced to one value, times
// coeff, and its backward. Reference: src/backend/cpu/reduction.rs. `op` is the CPU's ReduceOp:
// 0 sum (also MEAN, whose 1 / dim is folded into coeff), 1 sum of |x|, 2 sum of squares.
//
// The forward is two launches with a partition fixed by the shape: block b of stage one sums
// chunk (b % chunks) of row (b / chunks) in double, stage two adds a row's partials in chunk
// order. Rows of any length and any number of rows use the whole GPU, and the result does not
// depend on the grid.
#include "common.cuh"

__device__ __forceinline__ double reduction_term(int op, float v) {
    if (op == 1) return (double)fabsf(v);
    if (op == 2) return (double)v * (double)v;
    return (double)v;
}

// partial[r * chunks + j] = the sum of chunk j of row r. Grid-stride over the num * chunks
// (row, chunk) pairs, one block per pair at a time (uniform across the block: block_sum
// synchronises).
extern "C" __global__ void reduction_partials_f32(const float* x, double* partial, i64 num, i64 dim, i64 chunks,
                                                  int op) {
    const i64 per = (dim + chunks - 1) / chunks;
    for (i64 b = blockIdx.x; b < num * chunks; b += gridDim.x) {
        const i64 r = b / chunks, j = b - r * chunks;
        const i64 begin = j * per, end = min(dim, begin + per);
        const float* row = x + r * dim;
        double s = 0.0;
        for (i64 k = begin + threadIdx.x; k < end; k += blockDim.x) s += reduction_term(op, row[k]);
        s = block_sum(s);
        if (threadIdx.x == 0) partial[b] = s;
    }
}

// y[r] = coeff * (sum of row r's partials, in chunk order), rounded to float first as the CPU
// does (and not multiplied when coeff is 1).
extern "C" __global__ void reduction_finish_f32(const double* partial, float* y, i64 num, i64 chunks, float coeff) {
    GRID_STRIDE_LOOP(r, num) {
        double s = 0.0;
        for (i64 j = 0; j < chunks; ++j) s += partial[r * chunks + j];
        const float v = (float)s;
        y[r] = coeff != 1.0f ? rmul(v, coeff) : v;
    }
}

// dx[r, k] = c (sum), c * sign(x) (|x|), 2c * x (squares), with c = dy[r] * coeff.
extern "C" __global__ void reduction_bwd_f32(const float* x, const float* dy, float* dx, i64 num, i64 dim, int op,
                                             float coeff) {
    const i64 n = num * dim;
    const bool small = FITS_U32(n);
    GRID_STRIDE_LOOP(i, n) {
        const i64 r = small ? (i64)((u32)i / (u32)dim) : i / dim;
        const float c = rmul(dy[r], coeff);
        float d;
        if (op == 1) {
            const float v = x[i];
            d = rmul(c, rsub(ind(0.0f < v), ind(v < 0.0f)));
        } else if (op == 2) {
            d = rmul(rmul(2.0f, c), x[i]);
        } else {
            d = c;
        }
        dx[i] = d;
    }
}
