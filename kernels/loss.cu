// Softmax cross-entropy (SoftmaxWithLoss after its softmax) and Accuracy, over scores laid out
// (outer, classes, inner) with one float label per (outer, inner) position. Reference:
// src/backend/cpu/loss.rs and the layers softmax_loss.rs / accuracy.rs.
//
// Labels are floats read as Caffe's static_cast<int> (truncation). Before any kernel indexes with
// a label, loss_find_bad_label_f32 finds the first label that is neither the ignore label nor a
// class index, so the host can fail with the CPU layer's message instead of reading out of
// bounds.
//
// The loss is a sum over positions: blocks sum fixed chunks into double partials, one block adds
// the partials in order and applies the normalization (loss_param.normalization, Caffe's enum
// values: FULL 0, VALID 1, BATCH_SIZE 2, NONE 3). The loss and the valid count stay on the device;
// backward reads both from there, so the host reads back only what it logs.
#include "common.cuh"

// Caffe's get_normalizer, never below 1 (an all-ignored batch gives loss 0, not NaN).
__device__ __forceinline__ float normalizer(int mode, i64 outer, i64 inner, float valid) {
    float n;
    if (mode == 0)
        n = (float)(outer * inner);
    else if (mode == 1)
        n = valid;
    else if (mode == 2)
        n = (float)outer;
    else
        n = 1.0f;
    return fmaxf(n, 1.0f);
}

__device__ __forceinline__ bool is_ignored(float v, int has_ignore, int ignore) {
    return has_ignore && label_of(v) == ignore;
}

// first_bad (set to 2^64 - 1 by the host) receives the smallest index whose label is neither
// `ignore` (when has_ignore) nor in [0, classes), or a value static_cast<int> cannot convert
// (NaN, infinities, out of int range). An integer atomicMin: the result is the same whatever
// order the threads arrive in.
extern "C" __global__ void loss_find_bad_label_f32(const float* labels, i64 n, int classes, int has_ignore,
                                                   int ignore, u64* first_bad) {
    GRID_STRIDE_LOOP(i, n) {
        const float t = truncf(labels[i]);
        bool ok = false;
        if (isfinite(t) && t >= -2147483648.0f && t < 2147483648.0f) {
            const int l = (int)t;
            ok = (has_ignore && l == ignore) || (l >= 0 && l < classes);
        }
        if (!ok) atomicMin(first_bad, (u64)i);
    }
}

// Stage one: block j sums chunk j of the outer * inner positions: partial_loss[j] = sum of
// -log(max(p[label], FLT_MIN)), partial_count[j] = number of non-ignored positions.
// Launch: grid (chunks), CREMA_THREADS threads.
extern "C" __global__ void loss_softmax_fwd_partials_f32(const float* prob, const float* labels,
                                                         double* partial_loss, double* partial_count, i64 outer,
                                                         i64 classes, i64 inner, int has_ignore, int ignore) {
    const i64 m = outer * inner, chunks = gridDim.x, j = blockIdx.x;
    const i64 per = (m + chunks - 1) / chunks;
    const i64 begin = j * per, end = min(m, begin + per);
    double loss = 0.0, count = 0.0;
    for (i64 pos = begin + threadIdx.x; pos < end; pos += blockDim.x) {
        const float v = labels[pos];
        if (is_ignored(v, has_ignore, ignore)) continue;
        const i64 o = pos / inner, k = pos - o * inner;
        const float p = prob[(o * classes + label_of(v)) * inner + k];
        loss += (double)(-logf(fmaxf(p, CREMA_FLT_MIN)));
        count += 1.0;
    }
    loss = block_sum(loss);
    count = block_sum(count);
    if (threadIdx.x == 0) {
        partial_loss[j] = loss;
        partial_count[j] = count;
    }
}

// Stage two (one block): loss_out[0] = loss / normalizer, valid_out[0] = the valid count.
extern "C" __global__ void loss_softmax_fwd_finish_f32(const double* partial_loss, const double* partial_count,
                                                       i64 chunks, float* loss_out, float* valid_out, int mode,
                                                       i64 outer, i64 inner) {
    double loss = 0.0, count = 0.0;
    for (i64 j = threadIdx.x; j < chunks; j += blockDim.x) {
        loss += partial_loss[j];
        count += partial_count[j];
    }
    loss = block_sum(loss);
    count = block_sum(count);
    if (threadIdx.x == 0) {
        const float valid = (float)count;
        loss_out[0] = (float)loss / normalizer(mode, outer, inner, valid);
        valid_out[0] = valid;
    }
}

// dx = (p - onehot(label)) * (top_diff[0] / normalizer), 0 over all classes of an ignored
// position. `top_diff` is the loss blob's diff (the loss weight), `valid` the count the forward
// wrote; both are read on the device. dx may alias prob.
extern "C" __global__ void loss_softmax_bwd_f32(const float* prob, const float* labels, const float* top_diff,
                                                const float* valid, float* dx, i64 outer, i64 classes, i64 inner,
                                                int has_ignore, int ignore, int mode) {
    const float weight = top_diff[0] / normalizer(mode, outer, inner, valid[0]);
    const i64 dim = classes * inner;
    GRID_STRIDE_LOOP(i, outer * dim) {
        const i64 o = i / dim, rem = i - o * dim;
        const i64 c = rem / inner, k = rem - c * inner;
        const float v = labels[o * inner + k];
        float d;
        if (is_ignored(v, has_ignore, ignore))
            d = 0.0f;
        else
            d = label_of(v) == c ? rsub(prob[i], 1.0f) : prob[i];
        dx[i] = rmul(d, weight);
    }
}

// Accuracy, stage one: per position, correct[pos] = 1 when fewer than top_k classes score at
// least as high as the true one (the true class counts itself, and ties count against it, as in
// Caffe), label_out[pos] = the label, or -1 when ignored.
extern "C" __global__ void loss_accuracy_terms_f32(const float* scores, const float* labels, float* correct,
                                                   int* label_out, i64 outer, i64 classes, i64 inner, int top_k,
                                                   int has_ignore, int ignore) {
    GRID_STRIDE_LOOP(pos, outer * inner) {
        const float v = labels[pos];
        if (is_ignored(v, has_ignore, ignore)) {
            correct[pos] = 0.0f;
            label_out[pos] = -1;
            continue;
        }
        const int l = label_of(v);
        const i64 o = pos / inner, k = pos - o * inner;
        const float* s = scores + o * classes * inner + k;
        const float truth = s[(i64)l * inner];
        int better = -1;
        for (i64 c = 0; c < classes && better < top_k; ++c)
            if (s[c * inner] >= truth) ++better;
        correct[pos] = better < top_k ? 1.0f : 0.0f;
        label_out[pos] = l;
    }
}

// Accuracy, stage two. Block 0: accuracy[0] = correct / valid (0 when nothing is valid). Block
// 1 + c (when per_class is non-null): per_class[c] = accuracy among labels c (0 without any).
// Counts are integers, so their sums are exact in any order.
extern "C" __global__ void loss_accuracy_finish_f32(const float* correct, const int* label_out, i64 positions,
                                                    float* accuracy, float* per_class) {
    const int c = (int)blockIdx.x - 1;  // -1: the overall accuracy
    long long hits = 0, total = 0;
    for (i64 pos = threadIdx.x; pos < positions; pos += blockDim.x) {
        const int l = label_out[pos];
        if (l < 0 || (c >= 0 && l != c)) continue;
        total += 1;
        hits += correct[pos] != 0.0f ? 1 : 0;
    }
    hits = block_sum(hits);
    total = block_sum(total);
    if (threadIdx.x == 0) {
        const float r = total == 0 ? 0.0f : (float)hits / (float)total;
        if (c < 0)
            accuracy[0] = r;
        else
            per_class[c] = r;
    }
}
