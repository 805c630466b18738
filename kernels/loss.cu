// Softmax cross-entropy (SoftmaxWithLoss after its softmax) and Accuracy, over scores laid out
// (outer, classes, inner) with one float label per (outer, inner) position. Reference:
// src/backend/cpu/loss.rs and the layers softmax_loss.rs / accuracy.rs.
//
// Labels are floats read as Caffe's static_cast<int> (truncation). loss_find_bad_label_f32 finds
// the first label that is neither the ignore label nor a class index, so the host can fail with
// the CPU layer's message. The layers launch it after their loss kernels, so that its read-back
// waits for work the net reads back anyway; the kernels that index with a label therefore skip
// out-of-range labels themselves (their results are then discarded with the error).
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
        const int l = label_of(v);
        if (l < 0 || l >= classes) continue;  // a bad label: the layer fails after this launch
        const i64 o = pos / inner, k = pos - o * inner;
        const float p = prob[(o * classes + l) * inner + k];
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

// Stage two (one block): loss_out[0] = loss / normalizer, valid_out[0] = the valid count. Also
// the second stage of the sigmoid cross-entropy, whose partials have the same layout.
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
        if (l < 0 || l >= classes) {  // a bad label: the layer fails after this launch
            correct[pos] = 0.0f;
            label_out[pos] = -1;
            continue;
        }
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

// ---- Sigmoid cross-entropy (SigmoidCrossEntropyLoss) -------------------------------------------
//
// Logits x and targets t of the same count n; positions whose target truncates to the ignore
// label are skipped. Stage one sums each chunk's terms in double (grid: chunks), stage two is
// loss_softmax_fwd_finish_f32 with (outer, inner) = (num, count / num).

// partial_loss[j] = -sum of x (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0])) over chunk j (the
// overflow-free form, each term in float as the CPU computes it), partial_count[j] = the number
// of positions not ignored.
extern "C" __global__ void loss_sigmoid_ce_fwd_partials_f32(const float* x, const float* t, double* partial_loss,
                                                            double* partial_count, i64 n, int has_ignore,
                                                            int ignore) {
    const i64 chunks = gridDim.x, j = blockIdx.x;
    const i64 per = (n + chunks - 1) / chunks;
    const i64 begin = j * per, end = min(n, begin + per);
    double loss = 0.0, count = 0.0;
    for (i64 i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const float target = t[i];
        if (is_ignored(target, has_ignore, ignore)) continue;
        const float v = x[i];
        const float pos = ind(v >= 0.0f);
        const float term =
            rsub(rmul(v, rsub(target, pos)), logf(radd(1.0f, expf(rsub(v, rmul(rmul(2.0f, v), pos))))));
        loss -= (double)term;
        count += 1.0;
    }
    loss = block_sum(loss);
    count = block_sum(count);
    if (threadIdx.x == 0) {
        partial_loss[j] = loss;
        partial_count[j] = count;
    }
}

// dx = (sigmoid(x) - t) * (top_diff[0] / normalizer), 0 where the target is ignored. `sig` is the
// sigmoid the forward kept, `valid` the count it wrote.
extern "C" __global__ void loss_sigmoid_ce_bwd_f32(const float* sig, const float* t, const float* top_diff,
                                                   const float* valid, float* dx, i64 n, i64 outer, i64 inner,
                                                   int has_ignore, int ignore, int mode) {
    const float weight = top_diff[0] / normalizer(mode, outer, inner, valid[0]);
    GRID_STRIDE_LOOP(i, n) {
        const float target = t[i];
        const float d = is_ignored(target, has_ignore, ignore) ? 0.0f : rsub(sig[i], target);
        dx[i] = rmul(d, weight);
    }
}

// ---- Euclidean loss ---------------------------------------------------------------------------

// Stage one (grid: chunks): diff = a - b, kept for backward; partial[j] = the sum of diff^2 over
// chunk j, in double.
extern "C" __global__ void loss_euclidean_fwd_partials_f32(const float* a, const float* b, float* diff,
                                                           double* partial, i64 n) {
    const i64 chunks = gridDim.x, j = blockIdx.x;
    const i64 per = (n + chunks - 1) / chunks;
    const i64 begin = j * per, end = min(n, begin + per);
    double s = 0.0;
    for (i64 i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const float d = rsub(a[i], b[i]);
        diff[i] = d;
        s += (double)d * (double)d;
    }
    s = block_sum(s);
    if (threadIdx.x == 0) partial[j] = s;
}

// Stage two (one block): loss_out[0] = sum / num / 2, in float as the CPU divides.
extern "C" __global__ void loss_euclidean_fwd_finish_f32(const double* partial, i64 chunks, float* loss_out,
                                                         float num) {
    double s = 0.0;
    for (i64 j = threadIdx.x; j < chunks; j += blockDim.x) s += partial[j];
    s = block_sum(s);
    if (threadIdx.x == 0) loss_out[0] = (float)s / num / 2.0f;
}

// y = ((sign * top_diff[0]) / divisor) * x: a loss gradient scaled by the loss weight, which is
// read on the device (Euclidean: sign +-1, divisor = num).
extern "C" __global__ void loss_weighted_copy_f32(const float* x, const float* top_diff, float* y, i64 n, float sign,
                                                  float divisor) {
    const float alpha = rmul(sign, top_diff[0]) / divisor;
    GRID_STRIDE_LOOP(i, n) { y[i] = rmul(alpha, x[i]); }
}

// ---- ArgMax -------------------------------------------------------------------------------------
//
// Caffe's order (std::greater on (value, index) pairs): a higher value first, among equal values
// the higher index first; NaN above every number, as the CPU reference orders it. A total order,
// so the top k are the same whatever order the elements are compared in.
__device__ __forceinline__ bool ranks_before(float av, i64 ai, float bv, i64 bi) {
    const bool an = isnan(av), bn = isnan(bv);
    if (an != bn) return an;
    if (!an && av != bv) return av > bv;
    return ai > bi;
}

// One warp per row; rows hold `dim` values `axis_dist` apart (row r starts at (r / axis_dist) *
// dim * axis_dist + r % axis_dist). Pick j of the top k is the best element ranked after pick
// j - 1: each lane scans every 32nd element, then a butterfly gives every lane the warp's best.
// Output layout as cpu::loss::argmax_forward: with an axis, entry j of row r goes to
// ((r / axis_dist) * top_k + j) * axis_dist + r % axis_dist (the value when out_max_val, else the
// index); without, row r holds top_k indices, then (out_max_val) top_k values.
extern "C" __global__ void loss_argmax_f32(const float* x, float* y, i64 rows, i64 dim, i64 axis_dist, int top_k,
                                           int out_max_val, int has_axis) {
    const int lane = threadIdx.x & 31;
    const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
    for (i64 r = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
        const i64 q = r / axis_dist, rem = r - q * axis_dist;
        const float* row = x + q * dim * axis_dist + rem;
        float bound_v = 0.0f;
        i64 bound_i = -1;  // -1: no pick yet
        for (int j = 0; j < top_k; ++j) {
            float best_v = 0.0f;
            i64 best_i = -1;
            for (i64 c = lane; c < dim; c += 32) {
                const float v = row[c * axis_dist];
                if (bound_i >= 0 && !ranks_before(bound_v, bound_i, v, c)) continue;
                if (best_i < 0 || ranks_before(v, c, best_v, best_i)) {
                    best_v = v;
                    best_i = c;
                }
            }
#pragma unroll
            for (int offset = 16; offset > 0; offset >>= 1) {
                const float ov = __shfl_xor_sync(0xffffffffu, best_v, offset);
                const i64 oi = __shfl_xor_sync(0xffffffffu, best_i, offset);
                if (oi >= 0 && (best_i < 0 || ranks_before(ov, oi, best_v, best_i))) {
                    best_v = ov;
                    best_i = oi;
                }
            }
            if (lane == 0) {
                if (has_axis) {
                    y[(q * top_k + j) * axis_dist + rem] = out_max_val ? best_v : (float)best_i;
                } else if (out_max_val) {
                    y[2 * r * top_k + j] = (float)best_i;
                    y[2 * r * top_k + top_k + j] = best_v;
                } else {
                    y[r * top_k + j] = (float)best_i;
                }
            }
            bound_v = best_v;
            bound_i = best_i;
        }
    }
}
