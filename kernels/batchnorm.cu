// BatchNorm over blobs laid out (num, channels, spatial). Reference: src/backend/cpu/batch_norm.rs.
//
// Statistics are per-channel sums over num * spatial positions. They run in two fixed-order
// stages (common.cuh): batchnorm_channel_partials_f32 fills partial[c * chunks + j] (double) with
// block (c, j) summing chunk j of channel c, then batchnorm_channel_finish_f32 adds each
// channel's partials in order and divides. The chunk count depends on the shape only, so the
// bits never depend on the GPU or on timing; no atomics. Sums are in double like the CPU's
// (which adds serially): the two orders round differently only far below float precision.
//
// A training-mode forward is:
//   partials(x, mode 0) -> finish(/ m) = mean
//   partials(x, mode 1, mean) -> finish(/ m) = var           (two passes, as Caffe computes it)
//   update_running(mean, var)      <- the only kernel that writes the stored statistics
//   std(var, eps) -> normalize(x, mean, std) = y
// and its backward: partials(dy, y, mode 2) and partials(dy, mode 0) -> finish(/ 1) ->
// bwd_train. Global mode: global_stats -> std -> normalize, and bwd_global.
#include "common.cuh"

// Block (blockIdx.x = c, blockIdx.y = j) writes partial[c * chunks + j]:
//   mode 0: sum of a
//   mode 1: sum of (a - mean[c])^2, the difference rounded in float, then squared in double
//   mode 2: sum of a * b, in double
// Launch: grid (channels, chunks), CREMA_THREADS threads.
extern "C" __global__ void batchnorm_channel_partials_f32(const float* a, const float* b, const float* mean,
                                                          double* partial, i64 num, i64 channels, i64 spatial,
                                                          int mode) {
    const i64 c = blockIdx.x, j = blockIdx.y, chunks = gridDim.y;
    double s;
    if (mode == 0) {
        s = channel_chunk_sum(num, channels, spatial, c, j, chunks, [&](i64 k) { return (double)a[k]; });
    } else if (mode == 1) {
        const float mu = mean[c];
        s = channel_chunk_sum(num, channels, spatial, c, j, chunks, [&](i64 k) {
            const double d = (double)rsub(a[k], mu);
            return d * d;
        });
    } else {
        s = channel_chunk_sum(num, channels, spatial, c, j, chunks,
                              [&](i64 k) { return (double)a[k] * (double)b[k]; });
    }
    if (threadIdx.x == 0) partial[c * chunks + j] = s;
}

// out[c] = (float)(sum_j partial[c * chunks + j] / divisor). One block per channel.
extern "C" __global__ void batchnorm_channel_finish_f32(const double* partial, float* out, i64 chunks,
                                                        double divisor) {
    const i64 c = blockIdx.x;
    const double s = channel_finish(partial, c, chunks);
    if (threadIdx.x == 0) out[c] = (float)(s / divisor);
}

// The moving-average update every training-mode forward makes (Caffe's):
//   factor = maf * factor + 1;  mean_sum = maf * mean_sum + mean;
//   var_sum = maf * var_sum + correction * var   (correction = m / (m - 1), or 1 when m == 1).
// `factor` is one float on the device (the layer's third blob): the statistics never leave it.
extern "C" __global__ void batchnorm_update_running_f32(const float* mean, const float* var, float* mean_sum,
                                                        float* var_sum, float* factor, int channels, float maf,
                                                        float correction) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c == 0) factor[0] = radd(rmul(factor[0], maf), 1.0f);
    if (c < channels) {
        mean_sum[c] = radd(rmul(mean_sum[c], maf), mean[c]);
        var_sum[c] = radd(rmul(var_sum[c], maf), rmul(correction, var[c]));
    }
}

// Global mode's statistics: the stored sums over the stored factor (0 when the factor is 0, so
// an untrained layer normalises with mean 0, variance 0, as Caffe does).
extern "C" __global__ void batchnorm_global_stats_f32(const float* mean_sum, const float* var_sum,
                                                      const float* factor, float* mean, float* var, int channels) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < channels) {
        const float f = factor[0];
        const float s = f == 0.0f ? 0.0f : 1.0f / f;
        mean[c] = rmul(s, mean_sum[c]);
        var[c] = rmul(s, var_sum[c]);
    }
}

// std[c] = sqrt(var[c] + eps) (sqrtf is correctly rounded: NVRTC's default -prec-sqrt=true).
extern "C" __global__ void batchnorm_std_f32(const float* var, float* std, int channels, float eps) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c < channels) std[c] = sqrtf(radd(var[c], eps));
}

// y = (x - mean[c]) / std[c]; y may alias x. n = num * channels * spatial.
extern "C" __global__ void batchnorm_normalize_f32(const float* x, const float* mean, const float* std, float* y,
                                                   i64 n, i64 channels, i64 spatial) {
    const bool small = FITS_U32(n);
    GRID_STRIDE_LOOP(i, n) {
        const i64 c = middle_index(i, spatial, channels, small);
        y[i] = rsub(x[i], mean[c]) / std[c];
    }
}

// Training-mode gradient: dx = (dy + (y * sum_dyy[c] + sum_dy[c]) * neg_inv_m) / std[c], with the
// per-channel sums of dy * y and dy from the partials/finish kernels, neg_inv_m = -1 / (num *
// spatial), y the normalised output. dx may alias dy.
extern "C" __global__ void batchnorm_bwd_train_f32(const float* dy, const float* y, const float* std,
                                                   const float* sum_dyy, const float* sum_dy, float* dx, i64 n,
                                                   i64 channels, i64 spatial, float neg_inv_m) {
    const bool small = FITS_U32(n);
    GRID_STRIDE_LOOP(i, n) {
        const i64 c = middle_index(i, spatial, channels, small);
        const float t = rmul(radd(rmul(y[i], sum_dyy[c]), sum_dy[c]), neg_inv_m);
        dx[i] = radd(dy[i], t) / std[c];
    }
}

// Global-mode gradient (the statistics are constants): dx = dy / std[c]. dx may alias dy.
extern "C" __global__ void batchnorm_bwd_global_f32(const float* dy, const float* std, float* dx, i64 n,
                                                    i64 channels, i64 spatial) {
    const bool small = FITS_U32(n);
    GRID_STRIDE_LOOP(i, n) {
        const i64 c = middle_index(i, spatial, channels, small);
        dx[i] = dy[i] / std[c];
    }
}
