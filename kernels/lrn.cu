// Local response normalisation over (num, channels, plane) blobs (plane = H*W), across channels
// and within channels. Reference: src/backend/cpu/lrn.rs.
//
// ACROSS_CHANNELS:
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

// ---- WITHIN_CHANNEL ----
//
// Caffe builds it from layers: the square of x, AVE pooling (kernel `size`, stride 1, pad
// (size - 1) / 2, with pooling's divisor rule), Power (scale alpha, shift 1, power -beta) and a
// product with x; the gradient flows back through the same layers and the split's sum. The
// kernels do the same arithmetic in the CPU's order (src/backend/cpu/lrn.rs, lrn_within_*):
//   pooled = window sum of x^2 / divisor, power = (alpha * pooled + 1)^-beta, y = x * power
//   dpool = power / (alpha * pooled + 1) * (-beta * alpha) * (dy * x)
//   dx = dy * power + (sum over the windows holding the element of dpool / divisor) * 2x
// `k` is not used, as in Caffe.

// The AVE window of output o along an axis of `len`: in-image range [s, e) and the divisor extent
// (the window cut at len + pad, so padding counts and positions past it do not).
__device__ __forceinline__ void within_window(int o, int len, int size, int pad, int& s, int& e, int& ext) {
    const int start = o - pad;
    const int end = min(start + size, len + pad);
    ext = end - start;
    s = max(start, 0);
    e = min(end, len);
}

// pooled, power and y for every element (one thread each). y must not alias x (LRN refuses to
// run in place).
extern "C" __global__ void lrn_within_fwd_f32(const float* x, float* pooled, float* power, float* y, i64 planes,
                                              int H, int W, int size, float alpha, float beta) {
    const int pad = (size - 1) / 2;
    GRID_STRIDE_LOOP(i, planes * H * W) {
        const int w = (int)(i % W);
        const i64 t = i / W;
        const int h = (int)(t % H);
        const float* xp = x + (t / H) * H * W;
        int hs, he, hext, ws, we, wext;
        within_window(h, H, size, pad, hs, he, hext);
        within_window(w, W, size, pad, ws, we, wext);
        float s = 0.0f;
        for (int a = hs; a < he; ++a)
            for (int b = ws; b < we; ++b) {
                const float v = xp[a * W + b];
                s = radd(s, rmul(v, v));
            }
        const float p = s / (float)(hext * wext);
        const float q = powf(radd(rmul(alpha, p), 1.0f), -beta);
        pooled[i] = p;
        power[i] = q;
        y[i] = rmul(x[i], q);
    }
}

// The gradient reaching the pooled values, element-wise; diff_scale = -beta * alpha.
extern "C" __global__ void lrn_within_dpool_f32(const float* x, const float* pooled, const float* power,
                                                const float* dy, float* dpool, i64 n, float alpha,
                                                float diff_scale) {
    GRID_STRIDE_LOOP(i, n) {
        const float a = rmul(power[i] / radd(rmul(alpha, pooled[i]), 1.0f), diff_scale);
        dpool[i] = rmul(a, rmul(dy[i], x[i]));
    }
}

// dx = dy * power + (window gather of dpool / divisor) * 2x. With stride 1, output (ph, pw)'s
// window holds (h, w) when ph - pad <= h < ph - pad + size; the gather runs in ascending (ph, pw),
// the order the CPU's scatter adds in. dx must not alias dpool or x.
extern "C" __global__ void lrn_within_bwd_f32(const float* x, const float* power, const float* dy,
                                              const float* dpool, float* dx, i64 planes, int H, int W, int size) {
    const int pad = (size - 1) / 2;
    GRID_STRIDE_LOOP(i, planes * H * W) {
        const int w = (int)(i % W);
        const i64 t = i / W;
        const int h = (int)(t % H);
        const float* dp = dpool + (t / H) * H * W;
        const int ph0 = max(h + pad - size + 1, 0), ph1 = min(h + pad, H - 1);
        const int pw0 = max(w + pad - size + 1, 0), pw1 = min(w + pad, W - 1);
        float g = 0.0f;
        for (int ph = ph0; ph <= ph1; ++ph) {
            int s, e, hext;
            within_window(ph, H, size, pad, s, e, hext);
            for (int pw = pw0; pw <= pw1; ++pw) {
                int s2, e2, wext;
                within_window(pw, W, size, pad, s2, e2, wext);
                g = radd(g, dp[ph * W + pw] / (float)(hext * wext));
            }
        }
        dx[i] = radd(rmul(dy[i], power[i]), rmul(g, rmul(2.0f, x[i])));
    }
}
