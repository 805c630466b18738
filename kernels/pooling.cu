// 2-D MAX and AVE pooling over independent H x W planes (one per (num, channel) pair), with
// Caffe's window rules. Reference: src/backend/cpu/pooling.rs, whose module comment states them:
// - MAX windows are clamped to the image; the first strictly greater element in row-major order
//   wins (ties keep the earliest); the argmax is the flat h * W + w index in the plane, -1 when
//   nothing in the window exceeded -FLT_MAX.
// - AVE windows are clamped to H + pad before the divisor is taken (padding counts, positions
//   past the trailing pad do not); the sum covers only the image.
//
// Forward: one thread per output. Backward: one thread per *input* element, gathering from the
// outputs whose windows contain it, in ascending (ph, pw) order. That is exactly the order in
// which the CPU's scatter adds into that element, so the sums round identically, and no atomics
// are needed. Global pooling (kernel = the whole plane) has its own forward kernels, one warp per
// plane; the generic backward kernels already cost O(1) per input element there.
#include "common.cuh"

// Output index -> (plane, ph, pw).
__device__ __forceinline__ void split_out(i64 idx, int PH, int PW, i64& p, int& ph, int& pw) {
    pw = (int)(idx % PW);
    const i64 t = idx / PW;
    ph = (int)(t % PH);
    p = t / PH;
}

// The outputs [lo, hi) along one axis whose (unclamped) windows [o * s - pad, o * s - pad + k)
// contain input position h. For an in-image position this is the same set as with Caffe's
// clamped windows, MAX or AVE.
__device__ __forceinline__ void covering(int h, int k, int s, int pad, int P, int& lo, int& hi) {
    lo = (h + pad < k) ? 0 : (h + pad - k) / s + 1;
    hi = min((h + pad) / s + 1, P);
}

// y = window max; mask (nullable) = argmax as int; top_mask (nullable) = argmax as float
// (Caffe's optional second top).
extern "C" __global__ void pooling_max_fwd_f32(const float* x, float* y, int* mask, float* top_mask, i64 planes,
                                               int H, int W, int PH, int PW, int kh, int kw, int sh, int sw,
                                               int pad_h, int pad_w) {
    const i64 n = planes * PH * PW;
    GRID_STRIDE_LOOP(idx, n) {
        i64 p;
        int ph, pw;
        split_out(idx, PH, PW, p, ph, pw);
        int hs = ph * sh - pad_h, ws = pw * sw - pad_w;
        const int he = min(hs + kh, H), we = min(ws + kw, W);
        hs = max(hs, 0);
        ws = max(ws, 0);
        const float* xp = x + p * H * W;
        float best = -CREMA_FLT_MAX;
        int arg = -1;
        for (int h = hs; h < he; ++h) {
            for (int w = ws; w < we; ++w) {
                const float v = xp[h * W + w];
                if (v > best) {
                    best = v;
                    arg = h * W + w;
                }
            }
        }
        y[idx] = best;
        if (mask) mask[idx] = arg;
        if (top_mask) top_mask[idx] = (float)arg;
    }
}

// dx (overwritten, must not alias dy) = sum of dy over the windows whose argmax is this element.
extern "C" __global__ void pooling_max_bwd_f32(const float* dy, const int* mask, float* dx, i64 planes, int H,
                                               int W, int PH, int PW, int kh, int kw, int sh, int sw, int pad_h,
                                               int pad_w) {
    const i64 n = planes * H * W;
    GRID_STRIDE_LOOP(idx, n) {
        const int w = (int)(idx % W);
        const i64 t = idx / W;
        const int h = (int)(t % H);
        const i64 p = t / H;
        int phs, phe, pws, pwe;
        covering(h, kh, sh, pad_h, PH, phs, phe);
        covering(w, kw, sw, pad_w, PW, pws, pwe);
        const int target = h * W + w;
        const i64 base = p * PH * PW;
        float g = 0.0f;
        for (int ph = phs; ph < phe; ++ph) {
            for (int pw = pws; pw < pwe; ++pw) {
                const i64 o = base + ph * PW + pw;
                if (mask[o] == target) g = radd(g, dy[o]);
            }
        }
        dx[idx] = g;
    }
}

// AVE window along one axis for output o: the in-image range [s, e) and the divisor extent.
__device__ __forceinline__ void ave_window(int o, int stride, int pad, int k, int size, int& s, int& e, int& ext) {
    const int start = o * stride - pad;
    const int end = min(start + k, size + pad);
    ext = end - start;
    s = max(start, 0);
    e = min(end, size);
}

extern "C" __global__ void pooling_ave_fwd_f32(const float* x, float* y, i64 planes, int H, int W, int PH, int PW,
                                               int kh, int kw, int sh, int sw, int pad_h, int pad_w) {
    const i64 n = planes * PH * PW;
    GRID_STRIDE_LOOP(idx, n) {
        i64 p;
        int ph, pw;
        split_out(idx, PH, PW, p, ph, pw);
        int hs, he, hext, ws, we, wext;
        ave_window(ph, sh, pad_h, kh, H, hs, he, hext);
        ave_window(pw, sw, pad_w, kw, W, ws, we, wext);
        const float* xp = x + p * H * W;
        float sum = 0.0f;
        for (int h = hs; h < he; ++h)
            for (int w = ws; w < we; ++w) sum = radd(sum, xp[h * W + w]);
        y[idx] = sum / (float)(hext * wext);
    }
}

// dx (overwritten, must not alias dy) = sum over the windows holding this element of
// dy / pool_size, in (ph, pw) order.
extern "C" __global__ void pooling_ave_bwd_f32(const float* dy, float* dx, i64 planes, int H, int W, int PH, int PW,
                                               int kh, int kw, int sh, int sw, int pad_h, int pad_w) {
    const i64 n = planes * H * W;
    GRID_STRIDE_LOOP(idx, n) {
        const int w = (int)(idx % W);
        const i64 t = idx / W;
        const int h = (int)(t % H);
        const i64 p = t / H;
        int phs, phe, pws, pwe;
        covering(h, kh, sh, pad_h, PH, phs, phe);
        covering(w, kw, sw, pad_w, PW, pws, pwe);
        const i64 base = p * PH * PW;
        float g = 0.0f;
        for (int ph = phs; ph < phe; ++ph) {
            int s, e, hext;
            ave_window(ph, sh, pad_h, kh, H, s, e, hext);
            for (int pw = pws; pw < pwe; ++pw) {
                int s2, e2, wext;
                ave_window(pw, sw, pad_w, kw, W, s2, e2, wext);
                g = radd(g, dy[base + ph * PW + pw] / (float)(hext * wext));
            }
        }
        dx[idx] = g;
    }
}

// ---- Global pooling forward: one warp per plane of `spatial` elements ----
//
// Lane l takes elements l, l + 32, ... in order, then the warp combines lane results with a
// fixed shuffle tree. For AVE that is a different (more accurate) summation order than the CPU's
// serial row-major sum; for MAX the result is the CPU's exactly: lanes combine by (larger value,
// then smaller index), which is "first strictly greater in row-major order".

extern "C" __global__ void pooling_global_ave_fwd_f32(const float* x, float* y, i64 planes, i64 spatial) {
    const int lane = threadIdx.x & 31;
    const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
    for (i64 p = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; p < planes; p += warps) {
        const float* xp = x + p * spatial;
        float s = 0.0f;
        for (i64 k = lane; k < spatial; k += 32) s = radd(s, xp[k]);
        s = warp_sum(s);
        if (lane == 0) y[p] = s / (float)spatial;
    }
}

extern "C" __global__ void pooling_global_max_fwd_f32(const float* x, float* y, int* mask, float* top_mask,
                                                      i64 planes, i64 spatial) {
    const int lane = threadIdx.x & 31;
    const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
    for (i64 p = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; p < planes; p += warps) {
        const float* xp = x + p * spatial;
        float best = -CREMA_FLT_MAX;
        int arg = -1;
        for (i64 k = lane; k < spatial; k += 32) {
            const float v = xp[k];
            if (v > best) {
                best = v;
                arg = (int)k;
            }
        }
        // A lane's arg is -1 only while its best is still -FLT_MAX, so on a tie of real values
        // both indices are valid and the smaller (earlier) one wins.
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) {
            const float ov = __shfl_down_sync(0xffffffffu, best, offset);
            const int oa = __shfl_down_sync(0xffffffffu, arg, offset);
            if (ov > best || (ov == best && oa >= 0 && (arg < 0 || oa < arg))) {
                best = ov;
                arg = oa;
            }
        }
        if (lane == 0) {
            y[p] = best;
            if (mask) mask[p] = arg;
            if (top_mask) top_mask[p] = (float)arg;
        }
    }
}
