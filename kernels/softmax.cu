// Softmax over the middle axis of an (outer, channels, inner) array, as Caffe computes it:
// subtract the channel maximum, exponentiate, divide by the channel sum. Backward:
// dx = (dy - sum_c dy * y) * y. Reference: src/backend/cpu/softmax.rs.
//
// Two layouts, picked by the host from the shape alone:
// - columns (inner > 1, or few channels): one thread per (outer, inner) column walks its
//   channels serially. Adjacent threads read adjacent inner positions, so every channel step is a
//   coalesced row read, and the order of operations is the CPU's exactly.
// - rows (inner == 1 with many channels, the classifier case: N x 1000): one warp per row; each
//   lane takes every 32nd channel, then a fixed shuffle tree combines the lanes. The max is exact
//   in any order; the sums round in a different (fixed) order than the CPU's serial sum.
// Both allow y to alias x and dx to alias dy: an element is read and written by one thread only.
#include "common.cuh"

extern "C" __global__ void softmax_fwd_f32(const float* x, float* y, i64 outer, i64 channels, i64 inner) {
    GRID_STRIDE_LOOP(col, outer * inner) {
        const i64 o = col / inner, k = col - o * inner;
        const i64 base = o * channels * inner + k;
        // f32::max / fmaxf: a NaN loses against a number, as in the CPU reference.
        float m = x[base];
        for (i64 c = 1; c < channels; ++c) m = fmaxf(m, x[base + c * inner]);
        float s = 0.0f;
        for (i64 c = 0; c < channels; ++c) {
            const float e = expf(rsub(x[base + c * inner], m));
            y[base + c * inner] = e;
            s = c == 0 ? e : radd(s, e);
        }
        for (i64 c = 0; c < channels; ++c) y[base + c * inner] = y[base + c * inner] / s;
    }
}

extern "C" __global__ void softmax_bwd_f32(const float* y, const float* dy, float* dx, i64 outer, i64 channels,
                                           i64 inner) {
    GRID_STRIDE_LOOP(col, outer * inner) {
        const i64 o = col / inner, k = col - o * inner;
        const i64 base = o * channels * inner + k;
        float s = 0.0f;
        for (i64 c = 0; c < channels; ++c) s = radd(s, rmul(dy[base + c * inner], y[base + c * inner]));
        for (i64 c = 0; c < channels; ++c) {
            const i64 i = base + c * inner;
            dx[i] = rmul(rsub(dy[i], s), y[i]);
        }
    }
}

// Warp-wide fixed-order sum, returned to every lane.
__device__ __forceinline__ float warp_sum_all(float v) { return __shfl_sync(0xffffffffu, warp_sum(v), 0); }

__device__ __forceinline__ float warp_max_all(float v) {
    // Max is exact whatever the order; the butterfly gives every lane the result.
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// Rows: x and y are rows x channels, one warp per row.
extern "C" __global__ void softmax_fwd_rows_f32(const float* x, float* y, i64 rows, i64 channels) {
    const int lane = threadIdx.x & 31;
    const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
    for (i64 r = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
        const float* xr = x + r * channels;
        float* yr = y + r * channels;
        // Lanes past the row's end bring the first element, which cannot change the max.
        float m = xr[0];
        for (i64 c = lane; c < channels; c += 32) m = fmaxf(m, xr[c]);
        m = warp_max_all(m);
        float s = 0.0f;
        for (i64 c = lane; c < channels; c += 32) {
            const float e = expf(rsub(xr[c], m));
            yr[c] = e;
            s = radd(s, e);
        }
        s = warp_sum_all(s);
        for (i64 c = lane; c < channels; c += 32) yr[c] = yr[c] / s;
    }
}

extern "C" __global__ void softmax_bwd_rows_f32(const float* y, const float* dy, float* dx, i64 rows,
                                                i64 channels) {
    const int lane = threadIdx.x & 31;
    const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
    for (i64 r = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
        const i64 base = r * channels;
        float s = 0.0f;
        for (i64 c = lane; c < channels; c += 32) s = radd(s, rmul(dy[base + c], y[base + c]));
        s = warp_sum_all(s);
        for (i64 c = lane; c < channels; c += 32) dx[base + c] = rmul(rsub(dy[base + c], s), y[base + c]);
    }
}
