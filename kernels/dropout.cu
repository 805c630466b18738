// Dropout (inverted, as Caffe's): in TRAIN, y = x * mask * scale with mask ~ Bernoulli(1 - ratio)
// and scale = 1 / (1 - ratio). Reference: cpu::activation::dropout_forward / dropout_backward.
//
// The mask comes from the counter-based generator in common.cuh: element i keeps its value when
// its 32-bit random word is > `threshold` = UINT_MAX * ratio (Caffe's GPU rule: `mask = rand >
// uint_thres`). Because the word is a pure function of (seed, offset, i), backward can
// regenerate the mask instead of reading one; the forward still writes it as 0/1 floats when
// asked (`mask` non-null), for a layer that exposes it or a test that compares with the CPU op.
// The host advances `offset` by one per forward pass, so every pass draws a fresh mask.
//
// Each thread handles four consecutive elements: one Philox evaluation gives their four words.
#include "common.cuh"

// y (may alias x) = x * keep * scale; mask (nullable, must not alias) = keep as 0/1.
extern "C" __global__ void dropout_fwd_f32(const float* x, float* y, float* mask, i64 n, u64 seed, u64 offset,
                                           u32 threshold, float scale) {
    const i64 groups = (n + 3) / 4;
    GRID_STRIDE_LOOP(g, groups) {
        const u32x4 r = random_words(seed, offset, (u64)g);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const i64 i = 4 * g + j;
            if (i < n) {
                const float keep = ind(word_of(r, j) > threshold);
                // Caffe's order: (x * mask) * scale.
                y[i] = rmul(rmul(x[i], keep), scale);
                if (mask) mask[i] = keep;
            }
        }
    }
}

// dx (may alias dy) = dy * keep * scale, with the mask regenerated from (seed, offset).
extern "C" __global__ void dropout_bwd_f32(const float* dy, float* dx, i64 n, u64 seed, u64 offset, u32 threshold,
                                           float scale) {
    const i64 groups = (n + 3) / 4;
    GRID_STRIDE_LOOP(g, groups) {
        const u32x4 r = random_words(seed, offset, (u64)g);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const i64 i = 4 * g + j;
            if (i < n) dx[i] = rmul(rmul(dy[i], ind(word_of(r, j) > threshold)), scale);
        }
    }
}

// dx (may alias dy) = dy * mask * scale from a stored 0/1 mask (the CPU layer's form).
extern "C" __global__ void dropout_bwd_mask_f32(const float* dy, const float* mask, float* dx, i64 n,
                                                float scale) {
    GRID_STRIDE_LOOP(i, n) { dx[i] = rmul(rmul(dy[i], mask[i]), scale); }
}
