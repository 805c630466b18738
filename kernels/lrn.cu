// Local response normalisation across channels over (num, channels, plane) blobs (plane = H*W).
// Reference: src/backend/cpu/lrn.rs.
//   scale = k + alpha / size * sum of x^2 over the `size` channels centred on c (zero padded)
//   y = x * scale^-beta
//   dx = dy * scale^-beta - (2 alpha beta / size) * x * sum over the window around c of
//        dy * y / scale
// Each element sums its own window (size is small: 5 in AlexNet/GoogLeNet) in ascending channel
// order, which is the CPU's order, so the sums round identically. Threads take consecutive
// positions of a plane, so each of the window's channel reads is coalesced.
//
// Forward and backward are two launches each: an output element needs its neighbours' inputs,
// so writing it in the same pass would race with an in-place layer (y == x), and backward needs
// every channel's dy * y / scale before any window sum.
#include "common.cuh"

// The channel window [lo, hi) of `size` (odd) channels centred on c.
__device__ __forceinline__ void channel_window(int c, int channels, int size, int& lo, int& hi) {
    const int pre = (size - 1) / 2;
    lo = max(c - pre, 0);
    hi = min(c + pre + 1, channels);
}

// scale = k + alpha_over_size * window sum of x^2. Must not alias x.
extern "C" __global__ void lrn_across_scale_f32(const float* x, float* scale, i64 num, int channels, i64 plane,
                                                int size, float alpha_over_size, float k) {
    GRID_STRIDE_LOOP(i, num * channels * plane) {
        const i64 s = i % plane, t = i / plane;
        const int c = (int)(t % channels);
        const i64 n = t / channels;
        int lo, hi;
        channel_window(c, channels, size, lo, hi);
        float sum = 0.0f;
        for (int cc = lo; cc < hi; ++cc) {
            const float v = x[(n * channels + cc) * plane + s];
            sum = radd(sum, rmul(v, v));
        }
        scale[i] = radd(k, rmul(alpha_over_size, sum));
    }
}

// y = scale^-beta * x; y may alias x.
extern "C" __global__ void lrn_across_output_f32(const float* x, const float* scale, float* y, i64 n, float beta) {
    GRID_STRIDE_LOOP(i, n) { y[i] = rmul(powf(scale[i], -beta), x[i]); }
}

// ratio = dy * y / scale (backward's first pass; `ratio` is a scratch buffer the size of x).
extern "C" __global__ void lrn_across_ratio_f32(const float* dy, const float* y, const float* scale, float* ratio,
                                                i64 n) {
    GRID_STRIDE_LOOP(i, n) { ratio[i] = rmul(dy[i], y[i]) / scale[i]; }
}

// dx = dy * scale^-beta - cache_ratio * (x * window sum of ratio), cache_ratio = 2 alpha beta /
// size. dx may alias dy (each element reads only its own dy); it must not alias ratio or x.
extern "C" __global__ void lrn_across_bwd_f32(const float* x, const float* scale, const float* ratio,
                                              const float* dy, float* dx, i64 num, int channels, i64 plane, int size,
                                              float beta, float cache_ratio) {
    GRID_STRIDE_LOOP(i, num * channels * plane) {
        const i64 s = i % plane, t = i / plane;
        const int c = (int)(t % channels);
        const i64 n = t / channels;
        int lo, hi;
        channel_window(c, channels, size, lo, hi);
        float sum = 0.0f;
        for (int cc = lo; cc < hi; ++cc) sum = radd(sum, ratio[(n * channels + cc) * plane + s]);
        dx[i] = rsub(rmul(dy[i], powf(scale[i], -beta)), rmul(cache_ratio, rmul(x[i], sum)));
    }
}
