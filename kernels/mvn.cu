// Mean-variance normalisation of contiguous rows (a row is one (n, c) plane, or one whole image
// with across_channels). Reference: src/backend/cpu/mvn.rs.
//
// One block per row (grid-stride over rows): the row's sums are block reductions in double with
// a fixed partition (thread t takes elements t, t + blockDim, ...; common.cuh's block_sum), so
// the bits depend on the shape only. Every pass of a block reads all it needs before the barrier
// inside block_sum, and each thread then writes only the elements it read itself, so y may alias
// x (and dx dy): in-place MVN works.
#include "common.cuh"

// The block-wide sum of `v` (double), valid in every thread.
__device__ __forceinline__ double row_total(double v) {
    __shared__ double total;
    v = block_sum(v);
    if (threadIdx.x == 0) total = v;
    __syncthreads();
    const double t = total;
    __syncthreads();  // everyone has read `total` before a later call overwrites it
    return t;
}

// y = x - mean; with normalize_variance, y /= sqrt(var) + eps and std[row] = sqrt(var) + eps
// (eps added to the standard deviation, as Caffe does; std is left alone otherwise). The mean
// and variance are taken in double and rounded to float, as the CPU does.
extern "C" __global__ void mvn_fwd_f32(const float* x, float* y, float* std, i64 rows, i64 dim,
                                       int normalize_variance, float eps) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * dim;
        float* yr = y + r * dim;
        double s = 0.0;
        for (i64 i = threadIdx.x; i < dim; i += blockDim.x) s += (double)xr[i];
        const float mean = (float)(row_total(s) / (double)dim);
        double ss = 0.0;
        for (i64 i = threadIdx.x; i < dim; i += blockDim.x) {
            const float v = rsub(xr[i], mean);
            yr[i] = v;
            ss += (double)v * (double)v;
        }
        if (normalize_variance) {
            const float var = (float)(row_total(ss) / (double)dim);
            const float sd = radd(sqrtf(var), eps);
            for (i64 i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = yr[i] / sd;
            if (threadIdx.x == 0) std[r] = sd;
        }
    }
}

// Caffe's backward: with normalize_variance dx = (dy - (y * sum(y dy) + sum(dy)) * inv_dim) / std,
// else dx = dy - sum(dy) * inv_dim; the sums in double, rounded to float.
extern "C" __global__ void mvn_bwd_f32(const float* y, const float* dy, float* dx, const float* std, i64 rows,
                                       i64 dim, int normalize_variance, float inv_dim) {
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* yr = y + r * dim;
        const float* gr = dy + r * dim;
        float* dr = dx + r * dim;
        double s = 0.0, sy = 0.0;
        for (i64 i = threadIdx.x; i < dim; i += blockDim.x) {
            s += (double)gr[i];
            if (normalize_variance) sy += (double)yr[i] * (double)gr[i];
        }
        const float sum_dy = (float)row_total(s);
        if (normalize_variance) {
            const float sum_ydy = (float)row_total(sy);
            const float sd = std[r];
            for (i64 i = threadIdx.x; i < dim; i += blockDim.x)
                dr[i] = rsub(gr[i], rmul(radd(rmul(yr[i], sum_ydy), sum_dy), inv_dim)) / sd;
        } else {
            const float mean = rmul(sum_dy, inv_dim);
            for (i64 i = threadIdx.x; i < dim; i += blockDim.x) dr[i] = rsub(gr[i], mean);
        }
    }
}
