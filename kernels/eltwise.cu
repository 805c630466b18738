// Eltwise (SUM, PROD, MAX over several equal-shaped inputs), forward and backward. Reference:
// src/backend/cpu/eltwise.rs. A layer with k inputs is k - 1 (or k) launches of the two-operand
// kernels below, in input order, so each element sees exactly the CPU's sequence of rounded
// operations:
//   SUM:  sum(x0, c0, y, acc=0); sum(x1, c1, y, acc=1); ...      y = ((0 + c0 x0) + c1 x1) + ...
//   PROD: prod(x0, x1, y); prod(y, x2, y); ...                   y = (x0 x1) x2 ...
//   MAX:  max_first(x0, x1, y, arg); max_next(x2, y, arg, 2); ...
// One pass per input is what the CPU does too; a fused k-input kernel would save the re-reads
// of y but needs a device array of pointers per call, which is not worth it for k = 2 or 3.
#include "common.cuh"

// y = (accumulate ? y : 0) + coeff * x. y may alias x only when accumulate is 0.
extern "C" __global__ void eltwise_sum_fwd_f32(const float* x, float* y, i64 n, float coeff, int accumulate) {
    GRID_STRIDE_LOOP(i, n) {
        const float base = accumulate ? y[i] : 0.0f;
        y[i] = radd(base, rmul(coeff, x[i]));
    }
}

// y = a * b; y may alias a or b (so `prod(y, x_k, y)` multiplies the next input in).
extern "C" __global__ void eltwise_prod_fwd_f32(const float* a, const float* b, float* y, i64 n) {
    GRID_STRIDE_LOOP(i, n) { y[i] = rmul(a[i], b[i]); }
}

// The first two inputs of a MAX: y = a > b ? a : b, arg = 0 or 1 (ties go to input 1).
extern "C" __global__ void eltwise_max_first_f32(const float* a, const float* b, float* y, int* arg, i64 n) {
    GRID_STRIDE_LOOP(i, n) {
        const float u = a[i], v = b[i];
        const bool first = u > v;
        y[i] = first ? u : v;
        arg[i] = first ? 0 : 1;
    }
}

// A later input k of a MAX replaces the running max only when strictly greater.
extern "C" __global__ void eltwise_max_next_f32(const float* x, float* y, int* arg, i64 n, int k) {
    GRID_STRIDE_LOOP(i, n) {
        const float v = x[i];
        if (v > y[i]) {
            y[i] = v;
            arg[i] = k;
        }
    }
}

// SUM backward for one input: dx = coeff * dy (a copy when coeff is 1). dx may alias dy.
extern "C" __global__ void eltwise_sum_bwd_f32(const float* dy, float* dx, i64 n, float coeff) {
    GRID_STRIDE_LOOP(i, n) {
        const float g = dy[i];
        dx[i] = coeff == 1.0f ? g : rmul(coeff, g);
    }
}

// PROD backward for input i, the quotient form (stable_prod_grad: false): dx = (y / x_i) * dy.
// The stable form (the product of the other inputs, in input order, times dy) is a chain of
// eltwise_prod_fwd_f32 launches ending with `prod(dx, dy, dx)`.
extern "C" __global__ void eltwise_prod_bwd_quotient_f32(const float* dy, const float* y, const float* x, float* dx,
                                                         i64 n) {
    GRID_STRIDE_LOOP(i, n) { dx[i] = rmul(y[i] / x[i], dy[i]); }
}

// MAX backward for input k: dy where input k won, else 0.
extern "C" __global__ void eltwise_max_bwd_f32(const float* dy, const int* arg, float* dx, i64 n, int k) {
    GRID_STRIDE_LOOP(i, n) { dx[i] = arg[i] == k ? dy[i] : 0.0f; }
}
