// Element-wise activations (Caffe's neuron layers), forward and backward. Reference:
// src/backend/cpu/activation.rs; each kernel is one line of it, with the same order of
// operations and the same promotions to double where Caffe's C++ promotes (a `0.5` or `1.`
// literal), so results are the CPU's bits except for the last unit of exp/log/tanh/pow.
//
// Every kernel allows its output to alias its input (in-place layers: `y == x`, `dx == dy`):
// thread i reads element i of each input, then writes element i of the output, and nothing else.
// Memory-bound: one read per input and one write, grid-stride.
#include "common.cuh"

// ---- ReLU: y = max(x, 0) + slope * min(x, 0) ----

extern "C" __global__ void activation_relu_fwd_f32(const float* x, float* y, i64 n, float slope) {
    GRID_STRIDE_LOOP(i, n) {
        const float v = x[i];
        y[i] = radd(cmax(v, 0.0f), rmul(slope, cmin(v, 0.0f)));
    }
}

// dx = dy * ((x > 0) + slope * (x <= 0)); x is the layer's bottom data.
extern "C" __global__ void activation_relu_bwd_f32(const float* dy, const float* x, float* dx, i64 n,
                                                   float slope) {
    GRID_STRIDE_LOOP(i, n) {
        const float v = x[i];
        dx[i] = rmul(dy[i], radd(ind(v > 0.0f), rmul(slope, ind(v <= 0.0f))));
    }
}

// ---- ELU: y = max(x, 0) + alpha * (exp(min(x, 0)) - 1) ----

extern "C" __global__ void activation_elu_fwd_f32(const float* x, float* y, i64 n, float alpha) {
    GRID_STRIDE_LOOP(i, n) {
        const float v = x[i];
        y[i] = radd(cmax(v, 0.0f), rmul(alpha, rsub(expf(cmin(v, 0.0f)), 1.0f)));
    }
}

// dx = dy * ((x > 0) + (alpha + y) * (x <= 0)).
extern "C" __global__ void activation_elu_bwd_f32(const float* dy, const float* x, const float* y, float* dx,
                                                  i64 n, float alpha) {
    GRID_STRIDE_LOOP(i, n) {
        const float v = x[i];
        dx[i] = rmul(dy[i], radd(ind(v > 0.0f), rmul(radd(alpha, y[i]), ind(v <= 0.0f))));
    }
}

// ---- Sigmoid ----

extern "C" __global__ void activation_sigmoid_fwd_f32(const float* x, float* y, i64 n) {
    GRID_STRIDE_LOOP(i, n) { y[i] = caffe_sigmoid(x[i]); }
}

// dx = dy * y * (1 - y), the last factor in double as in Caffe.
extern "C" __global__ void activation_sigmoid_bwd_f32(const float* dy, const float* y, float* dx, i64 n) {
    GRID_STRIDE_LOOP(i, n) {
        const float s = y[i];
        dx[i] = (float)((double)rmul(dy[i], s) * (1.0 - (double)s));
    }
}

// ---- TanH ----

extern "C" __global__ void activation_tanh_fwd_f32(const float* x, float* y, i64 n) {
    GRID_STRIDE_LOOP(i, n) { y[i] = tanhf(x[i]); }
}

// dx = dy * (1 - y^2).
extern "C" __global__ void activation_tanh_bwd_f32(const float* dy, const float* y, float* dx, i64 n) {
    GRID_STRIDE_LOOP(i, n) {
        const float t = y[i];
        dx[i] = rmul(dy[i], rsub(1.0f, rmul(t, t)));
    }
}

// ---- AbsVal ----

extern "C" __global__ void activation_absval_fwd_f32(const float* x, float* y, i64 n) {
    GRID_STRIDE_LOOP(i, n) { y[i] = fabsf(x[i]); }
}

// dx = dy * sign(x), sign(0) = 0.
extern "C" __global__ void activation_absval_bwd_f32(const float* dy, const float* x, float* dx, i64 n) {
    GRID_STRIDE_LOOP(i, n) {
        const float v = x[i];
        dx[i] = rmul(dy[i], rsub(ind(0.0f < v), ind(v < 0.0f)));
    }
}

// ---- Power: y = (shift + scale * x)^power ----
//
// Caffe's special cases are decided on the host from the parameters and passed as `mode`, so the
// kernel has no per-element parameter tests beyond those Caffe itself makes:
//   mode 0: power * scale == 0: y is the constant `value` (1 when power == 0, shift^power else).
//   mode 1: the general formula, skipping the steps whose parameter is neutral, as Caffe does.

extern "C" __global__ void activation_power_fwd_f32(const float* x, float* y, i64 n, float power, float scale,
                                                    float shift, int mode, float value) {
    GRID_STRIDE_LOOP(i, n) {
        if (mode == 0) {
            y[i] = value;
        } else {
            float v = x[i];
            if (scale != 1.0f) v = rmul(v, scale);
            if (shift != 0.0f) v = radd(v, shift);
            if (power != 1.0f) v = powf(v, power);
            y[i] = v;
        }
    }
}

// Backward, with Caffe's cases (mode chosen on the host, as in cpu::activation::power_backward):
//   mode 0: power * scale == 0 or power == 1: dx = dy * diff_scale.
//   mode 1: power == 2: dx = dy * (a * x (+ b)), a = diff_scale * scale, b = diff_scale * shift.
//   mode 2: shift == 0: dx = dy * ((y / x) * power).
//   mode 3: otherwise: dx = dy * (diff_scale * y / (shift + scale * x)).
extern "C" __global__ void activation_power_bwd_f32(const float* dy, const float* x, const float* y, float* dx,
                                                    i64 n, float power, float scale, float shift, int mode) {
    const float diff_scale = power * scale;
    GRID_STRIDE_LOOP(i, n) {
        const float g = dy[i];
        float d;
        if (mode == 0) {
            d = rmul(g, diff_scale);
        } else if (mode == 1) {
            float t = rmul(rmul(diff_scale, scale), x[i]);
            if (shift != 0.0f) t = radd(t, rmul(diff_scale, shift));
            d = rmul(g, t);
        } else if (mode == 2) {
            d = rmul(g, rmul(y[i] / x[i], power));
        } else {
            float t = x[i];
            if (scale != 1.0f) t = rmul(t, scale);
            t = radd(t, shift);
            t = y[i] / t;
            if (diff_scale != 1.0f) t = rmul(t, diff_scale);
            d = rmul(g, t);
        }
        dx[i] = d;
    }
}

// ---- Exp: y = outer * exp(inner * x) (inner, outer from cpu::activation::exp_scales) ----

extern "C" __global__ void activation_exp_fwd_f32(const float* x, float* y, i64 n, float inner, float outer) {
    GRID_STRIDE_LOOP(i, n) {
        const float v = x[i];
        float r = inner == 1.0f ? expf(v) : expf(rmul(inner, v));
        if (outer != 1.0f) r = rmul(r, outer);
        y[i] = r;
    }
}

// dx = y * dy * inner.
extern "C" __global__ void activation_exp_bwd_f32(const float* dy, const float* y, float* dx, i64 n,
                                                  float inner) {
    GRID_STRIDE_LOOP(i, n) {
        float g = rmul(y[i], dy[i]);
        if (inner != 1.0f) g = rmul(g, inner);
        dx[i] = g;
    }
}

// ---- Log: y = base_scale * ln(shift + scale * x) ----

extern "C" __global__ void activation_log_fwd_f32(const float* x, float* y, i64 n, float scale, float shift,
                                                  float base_scale) {
    GRID_STRIDE_LOOP(i, n) {
        float v = x[i];
        if (scale != 1.0f) v = rmul(v, scale);
        if (shift != 0.0f) v = radd(v, shift);
        v = logf(v);
        if (base_scale != 1.0f) v = rmul(v, base_scale);
        y[i] = v;
    }
}

// dx = dy * num_scale / (shift + scale * x). Caffe writes the reciprocal as powx(.., -1), which
// glibc and CUDA both evaluate exactly as 1 / v.
extern "C" __global__ void activation_log_bwd_f32(const float* dy, const float* x, float* dx, i64 n, float scale,
                                                  float shift, float num_scale) {
    GRID_STRIDE_LOOP(i, n) {
        float v = x[i];
        if (scale != 1.0f) v = rmul(v, scale);
        if (shift != 0.0f) v = radd(v, shift);
        v = 1.0f / v;
        if (num_scale != 1.0f) v = rmul(v, num_scale);
        dx[i] = rmul(dy[i], v);
    }
}

// ---- BNLL: y = log(1 + exp(x)), in Caffe's overflow-safe split ----

extern "C" __global__ void activation_bnll_fwd_f32(const float* x, float* y, i64 n) {
    GRID_STRIDE_LOOP(i, n) {
        const float v = x[i];
        y[i] = v > 0.0f ? (float)((double)v + log(1.0 + (double)expf(-v))) : (float)log(1.0 + (double)expf(v));
    }
}

// dx = dy * e / (e + 1), e = exp(min(x, 50)) (Caffe's kBNLL_THRESHOLD).
extern "C" __global__ void activation_bnll_bwd_f32(const float* dy, const float* x, float* dx, i64 n) {
    GRID_STRIDE_LOOP(i, n) {
        const float e = expf(cmin(x[i], 50.0f));
        dx[i] = (float)((double)rmul(dy[i], e) / ((double)e + 1.0));
    }
}

// ---- Threshold: y = (x > t) ? 1 : 0 (no backward in Caffe) ----

extern "C" __global__ void activation_threshold_fwd_f32(const float* x, float* y, i64 n, float t) {
    GRID_STRIDE_LOOP(i, n) { y[i] = ind(x[i] > t); }
}

// ---- Clip: y = max(lo, min(x, hi)), std:: semantics (NaN becomes lo) ----

extern "C" __global__ void activation_clip_fwd_f32(const float* x, float* y, i64 n, float lo, float hi) {
    GRID_STRIDE_LOOP(i, n) { y[i] = cmax(lo, cmin(x[i], hi)); }
}

// dx = dy * (lo <= x <= hi).
extern "C" __global__ void activation_clip_bwd_f32(const float* dy, const float* x, float* dx, i64 n, float lo,
                                                   float hi) {
    GRID_STRIDE_LOOP(i, n) {
        const float v = x[i];
        dx[i] = rmul(dy[i], ind(v >= lo && v <= hi));
    }
}

// ---- Swish: y = x * sigmoid(beta * x); the sigmoid `s` is kept for backward ----

// `s` must not alias x or y. In place (y == x) is safe: element i is read once before y[i] is
// written.
extern "C" __global__ void activation_swish_fwd_f32(const float* x, float* y, float* s, i64 n, float beta) {
    GRID_STRIDE_LOOP(i, n) {
        const float v = x[i];
        const float sg = caffe_sigmoid(rmul(beta, v));
        s[i] = sg;
        y[i] = rmul(v, sg);
    }
}

// dx = dy * (beta*y + s * (1 - beta*y)), in double where Caffe's `1.` promotes.
extern "C" __global__ void activation_swish_bwd_f32(const float* dy, const float* y, const float* s, float* dx,
                                                    i64 n, float beta) {
    GRID_STRIDE_LOOP(i, n) {
        // __dadd_rn/__dmul_rn: the CPU rounds the product before the sum; an FMA would not.
        const double by = (double)rmul(beta, y[i]);
        dx[i] = (float)__dmul_rn((double)dy[i], __dadd_rn(by, __dmul_rn((double)s[i], 1.0 - by)));
    }
}
