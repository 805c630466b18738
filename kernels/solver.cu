// Fused solver updates: one pass per parameter blob does what Caffe's ApplyUpdate does in four
// (normalize by iter_size, regularize, compute the update value, w -= update). Reference:
// src/solver/update.rs (normalize_regularize, compute_update_value) and the `w -= diff` of
// src/solver/train.rs. Every operation is a separately rounded + - * / or sqrt, in the CPU's
// order (rmul/radd/rsub, never contracted into an FMA), so a GPU step gives the CPU's bits.
//
// Common arguments:
//   w, diff        the blob's data and gradient; diff is left holding the update value, as in
//                  Caffe (where the update is applied to the data from the diff)
//   local_rate     rate * lr_mult (the caller skips blobs the solver must not touch)
//   local_decay    weight_decay * decay_mult; l1 != 0 selects L1 (sign(w)) over L2 (w)
//   iter_size      gradients are divided by it when > 1
//   apply          0 leaves w alone (the solver's "rate is 0 and the step is rate x ..." case, where
//                  the history still moves as in Caffe but the weights must not)
//
// Plus the deterministic sum of squares behind clip_gradients: partial sums per fixed chunk (in
// double), then one block adds all blobs' partials in order; and the clipping itself, which
// reads that sum on the device, so the host never needs the norm to decide (it reads it back
// only to log Caffe's clipping line).
#include "common.cuh"

// The normalized, regularized gradient of element i.
__device__ __forceinline__ float prepared_grad(float g, float w, float local_decay, int l1, int iter_size) {
    if (iter_size > 1) g = rmul(g, 1.0f / (float)iter_size);
    if (local_decay != 0.0f) {
        const float r = l1 ? ind(w > 0.0f) - ind(w < 0.0f) : w;
        g = radd(g, rmul(local_decay, r));
    }
    return g;
}

__device__ __forceinline__ void finish(float* w, float* diff, i64 i, float step, int apply) {
    diff[i] = step;
    if (apply) w[i] = rsub(w[i], step);
}

// SGD with momentum: h = momentum * h + rate * g; step = h.
extern "C" __global__ void solver_sgd_f32(float* w, float* diff, float* h, i64 n, float local_rate,
                                          float local_decay, int l1, int iter_size, int apply, float momentum) {
    GRID_STRIDE_LOOP(i, n) {
        const float g = prepared_grad(diff[i], w[i], local_decay, l1, iter_size);
        const float v = radd(rmul(h[i], momentum), rmul(local_rate, g));
        h[i] = v;
        finish(w, diff, i, v, apply);
    }
}

// Nesterov: h' = momentum * h + rate * g; step = (1 + momentum) h' - momentum h.
extern "C" __global__ void solver_nesterov_f32(float* w, float* diff, float* h, i64 n, float local_rate,
                                               float local_decay, int l1, int iter_size, int apply, float momentum) {
    GRID_STRIDE_LOOP(i, n) {
        const float g = prepared_grad(diff[i], w[i], local_decay, l1, iter_size);
        const float prev = h[i];
        const float v = radd(rmul(prev, momentum), rmul(local_rate, g));
        h[i] = v;
        finish(w, diff, i, radd(rmul(-momentum, prev), rmul(1.0f + momentum, v)), apply);
    }
}

// AdaGrad: h += g^2; step = rate * g / (sqrt(h) + delta).
extern "C" __global__ void solver_adagrad_f32(float* w, float* diff, float* h, i64 n, float local_rate,
                                              float local_decay, int l1, int iter_size, int apply, float delta) {
    GRID_STRIDE_LOOP(i, n) {
        const float g = prepared_grad(diff[i], w[i], local_decay, l1, iter_size);
        const float v = radd(h[i], rmul(g, g));
        h[i] = v;
        finish(w, diff, i, rmul(local_rate, g / radd(sqrtf(v), delta)), apply);
    }
}

// RMSProp: h = rms_decay * h + (1 - rms_decay) g^2; step = rate * g / (sqrt(h) + delta).
extern "C" __global__ void solver_rmsprop_f32(float* w, float* diff, float* h, i64 n, float local_rate,
                                              float local_decay, int l1, int iter_size, int apply, float rms_decay,
                                              float delta) {
    const float one_minus = 1.0f - rms_decay;
    GRID_STRIDE_LOOP(i, n) {
        const float g = prepared_grad(diff[i], w[i], local_decay, l1, iter_size);
        const float v = radd(rmul(h[i], rms_decay), rmul(one_minus, rmul(g, g)));
        h[i] = v;
        finish(w, diff, i, rmul(local_rate, g / radd(sqrtf(v), delta)), apply);
    }
}

// AdaDelta: h1 = mu h1 + (1 - mu) g^2; u = g sqrt((h2 + delta) / (h1 + delta));
// h2 = mu h2 + (1 - mu) u^2; step = rate * u.
extern "C" __global__ void solver_adadelta_f32(float* w, float* diff, float* h1, float* h2, i64 n, float local_rate,
                                               float local_decay, int l1, int iter_size, int apply, float momentum,
                                               float delta) {
    const float one_minus = 1.0f - momentum;
    GRID_STRIDE_LOOP(i, n) {
        const float g = prepared_grad(diff[i], w[i], local_decay, l1, iter_size);
        const float a = radd(rmul(h1[i], momentum), rmul(one_minus, rmul(g, g)));
        h1[i] = a;
        const float u = rmul(g, sqrtf(radd(h2[i], delta) / radd(a, delta)));
        h2[i] = radd(rmul(h2[i], momentum), rmul(one_minus, rmul(u, u)));
        finish(w, diff, i, rmul(local_rate, u), apply);
    }
}

// Adam: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; step = scale * m / (sqrt(v) + delta),
// scale = rate * sqrt(1 - b2^t) / (1 - b1^t), computed on the host (in double, as update.rs does);
// the local rate is folded into it, so Adam takes no local_rate argument.
extern "C" __global__ void solver_adam_f32(float* w, float* diff, float* m, float* v, i64 n, float local_decay, int l1,
                                           int iter_size, int apply, float beta1, float beta2, float delta,
                                           float scale) {
    const float one_minus1 = 1.0f - beta1, one_minus2 = 1.0f - beta2;
    GRID_STRIDE_LOOP(i, n) {
        const float g = prepared_grad(diff[i], w[i], local_decay, l1, iter_size);
        const float mi = radd(rmul(m[i], beta1), rmul(one_minus1, g));
        const float vi = radd(rmul(v[i], beta2), rmul(one_minus2, rmul(g, g)));
        m[i] = mi;
        v[i] = vi;
        finish(w, diff, i, rmul(scale, mi / radd(sqrtf(vi), delta)), apply);
    }
}

// Sum of squares, stage one: block j writes partial[j] = sum of x^2 over chunk j of [0, n) (the
// chunk count, gridDim.x, is chosen by the host from n alone). Launch: grid (chunks),
// CREMA_THREADS threads.
extern "C" __global__ void solver_sumsq_partials_f32(const float* x, i64 n, double* partial) {
    const i64 chunks = gridDim.x, j = blockIdx.x;
    const i64 per = (n + chunks - 1) / chunks;
    const i64 begin = j * per, end = min(n, begin + per);
    double s = 0.0;
    for (i64 i = begin + threadIdx.x; i < end; i += blockDim.x) {
        const double v = (double)x[i];
        s += v * v;
    }
    s = block_sum(s);
    if (threadIdx.x == 0) partial[j] = s;
}

// Stage two (one block): out[0] = (float)(sum of partial[0 .. count)), in order. With every
// learnable blob's partials laid out one after another, this is the global gradient's squared
// L2 norm.
extern "C" __global__ void solver_sumsq_finish_f32(const double* partial, i64 count, float* out) {
    double s = 0.0;
    for (i64 j = threadIdx.x; j < count; j += blockDim.x) s += partial[j];
    s = block_sum(s);
    if (threadIdx.x == 0) out[0] = (float)s;
}

// Caffe's clip_gradients on one blob's gradient: with norm = sqrt(sumsq[0]) (the finish kernel's
// output), diff *= clip / norm when norm > clip, else nothing. Same operations as the CPU's
// (f32 sqrt, one division, one product per element).
extern "C" __global__ void solver_clip_scale_f32(float* diff, i64 n, const float* sumsq, float clip) {
    const float norm = sqrtf(sumsq[0]);
    if (!(norm > clip)) return;
    const float scale = clip / norm;
    GRID_STRIDE_LOOP(i, n) { diff[i] = rmul(diff[i], scale); }
}
