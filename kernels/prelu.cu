// PReLU over blobs viewed as (num, channels, dim): y = max(x, 0) + a[c] * min(x, 0), with one
// slope per channel or one shared slope. Reference: src/backend/cpu/prelu.rs.
//
// The slope gradient sums dy * x over the positions where x <= 0, per channel, in the two
// fixed-order stages of common.cuh (prelu_slope_partials_f32, then scale.cu's
// scale_grad_finish_f32 per channel, or prelu_slope_finish_shared_f32 for a shared slope).
#include "common.cuh"

// The slope of flat index i.
__device__ __forceinline__ float slope_of(const float* slope, i64 i, i64 channels, i64 dim, int shared,
                                          bool small) {
    return shared ? slope[0] : slope[middle_index(i, dim, channels, small)];
}

// y may alias x. fmaxf/fminf, like Rust's f32::max/min the CPU uses, return the number when one
// argument is NaN.
extern "C" __global__ void prelu_fwd_f32(const float* x, const float* slope, float* y, i64 n, i64 channels, i64 dim,
                                         int shared) {
    const bool small = FITS_U32(n);
    GRID_STRIDE_LOOP(i, n) {
        const float v = x[i];
        y[i] = radd(fmaxf(v, 0.0f), rmul(slope_of(slope, i, channels, dim, shared, small), fminf(v, 0.0f)));
    }
}

// dx = dy where x > 0, dy * a[c] elsewhere; dx may alias dy. x is the forward's input.
extern "C" __global__ void prelu_bwd_f32(const float* x, const float* dy, const float* slope, float* dx, i64 n,
                                         i64 channels, i64 dim, int shared) {
    const bool small = FITS_U32(n);
    GRID_STRIDE_LOOP(i, n) {
        const float g = dy[i];
        dx[i] = x[i] > 0.0f ? g : rmul(g, slope_of(slope, i, channels, dim, shared, small));
    }
}

// Stage one of the slope gradient: block (c, j) writes partial[c * chunks + j], the sum over
// chunk j of channel c's num * dim positions of dy * x where x <= 0, in double.
// Launch: grid (channels, chunks), CREMA_THREADS threads.
extern "C" __global__ void prelu_slope_partials_f32(const float* x, const float* dy, double* partial, i64 num,
                                                    i64 channels, i64 dim) {
    const i64 c = blockIdx.x, j = blockIdx.y, chunks = gridDim.y;
    const double s = channel_chunk_sum(num, channels, dim, c, j, chunks, [&](i64 k) {
        const float v = x[k];
        return v <= 0.0f ? (double)dy[k] * (double)v : 0.0;
    });
    if (threadIdx.x == 0) partial[c * chunks + j] = s;
}

// Stage two for a shared slope: g[0] += (float)(sum of all `count` partials), added in a fixed
// order by one block.
extern "C" __global__ void prelu_slope_finish_shared_f32(const double* partial, float* g, i64 count) {
    double s = 0.0;
    for (i64 j = threadIdx.x; j < count; j += blockDim.x) s += partial[j];
    s = block_sum(s);
    if (threadIdx.x == 0) g[0] = radd(g[0], (float)s);
}
