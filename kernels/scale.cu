// Scale and Bias: a factor or an offset broadcast along the `dim` positions of a blob viewed as
// (outer, dim, inner), and the reductions of their gradients. Reference:
// src/backend/cpu/scale.rs. The same kernels serve Convolution's and InnerProduct's bias (dim =
// channels, inner = spatial or 1) and their bias gradients.
//
// Gradients reduce over (outer, inner) per d in two fixed-order stages, exactly as BatchNorm's
// statistics do (common.cuh): scale_grad_partials_f32 then scale_grad_finish_f32. No atomics.
#include "common.cuh"

// y = scale[d] * x (+ bias[d]); bias nullable; y may alias x. The product is rounded before the
// bias is added, as Caffe's separate scale and bias passes do.
extern "C" __global__ void scale_fwd_f32(const float* x, const float* scale, const float* bias, float* y, i64 n,
                                         i64 dim, i64 inner) {
    const bool small = FITS_U32(n);
    GRID_STRIDE_LOOP(i, n) {
        const i64 d = middle_index(i, inner, dim, small);
        const float v = rmul(scale[d], x[i]);
        y[i] = bias ? radd(v, bias[d]) : v;
    }
}

// y = x + bias[d]; y may alias x.
extern "C" __global__ void scale_bias_fwd_f32(const float* x, const float* bias, float* y, i64 n, i64 dim,
                                              i64 inner) {
    const bool small = FITS_U32(n);
    GRID_STRIDE_LOOP(i, n) { y[i] = radd(x[i], bias[middle_index(i, inner, dim, small)]); }
}

// Stage one of g[d] = sum over (o, i) of a[o,d,i] * b[o,d,i] (or of a alone when b is null):
// block (d = blockIdx.x, j = blockIdx.y) writes partial[d * chunks + j], in double.
// Launch: grid (dim, chunks), CREMA_THREADS threads.
extern "C" __global__ void scale_grad_partials_f32(const float* a, const float* b, double* partial, i64 outer,
                                                   i64 dim, i64 inner) {
    const i64 d = blockIdx.x, j = blockIdx.y, chunks = gridDim.y;
    double s;
    if (b) {
        s = channel_chunk_sum(outer, dim, inner, d, j, chunks, [&](i64 k) { return (double)a[k] * (double)b[k]; });
    } else {
        s = channel_chunk_sum(outer, dim, inner, d, j, chunks, [&](i64 k) { return (double)a[k]; });
    }
    if (threadIdx.x == 0) partial[d * chunks + j] = s;
}

// Stage two: g[d] = (accumulate ? g[d] : 0) + (float)sum_j partial[d * chunks + j]. One block
// per d. (Layers accumulate parameter gradients across iter_size passes; Caffe's scale layer
// overwrites when it owns the sum.)
extern "C" __global__ void scale_grad_finish_f32(const double* partial, float* g, i64 chunks, int accumulate) {
    const i64 d = blockIdx.x;
    const double s = channel_finish(partial, d, chunks);
    if (threadIdx.x == 0) g[d] = accumulate ? radd(g[d], (float)s) : (float)s;
}
