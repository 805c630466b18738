// crema's shared device code: index types, Caffe's min/max and rounding rules, fixed-order
// reductions and the counter-based random generator. Included by every kernels/*.cu file; the
// Rust side hands it to NVRTC as an in-memory header named "common.cuh", so compiling a kernel
// file needs no include path and no CUDA headers at all.
//
// Conventions every kernel file follows (the typed wrappers in src/backend/cuda/kernels.rs rely
// on them):
// - Entry points are `extern "C" __global__`, named `<family>_<op>_f32`, where <family> is the
//   file's stem.
// - Element counts and flat indices are 64-bit (`i64`): a batch of activations can pass 2^31
//   elements. Per-image geometry (heights, widths, channels) is 32-bit `int`.
// - Element-wise kernels use grid-stride loops, so the grid size (which the wrappers derive from
//   the SM count) never changes a result. Kernels that reduce take their partition from the shape
//   alone (never from the device), and reduce in a fixed order: no atomics on floats anywhere, so
//   a run is bit-reproducible on any GPU of the same architecture.
// - Pointers that may alias (an in-place layer's input and output) are not `__restrict__`;
//   every element-wise kernel reads element i before writing element i, and nothing else.
// - Where the CPU reference (src/backend/cpu) computes `a * b + c` as two rounded operations,
//   the kernels use `rmul`/`radd` (round-to-nearest intrinsics the compiler may not fuse into an
//   FMA), so that element-wise results made of + - * / and sqrt are bit-identical to the CPU's.
//   Transcendentals (exp, log, tanh, pow) come from CUDA's libdevice and may differ from glibc in
//   the last unit. Matrix products use FMAs freely: their summation order differs from any CPU
//   BLAS anyway.
#pragma once

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;

// FLT_MAX (NVRTC compiles without the C library's headers).
#define CREMA_FLT_MAX 3.402823466e+38f
// FLT_MIN, the smallest normal float.
#define CREMA_FLT_MIN 1.175494351e-38f

// Threads per block of every element-wise and reduction kernel; the wrappers launch with this.
// A multiple of 32 (the reductions below assume whole warps).
#define CREMA_THREADS 256

// for (i64 i = global thread index; i < n; i += total threads)
#define GRID_STRIDE_LOOP(i, n)                                                     \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (i64)(n);       \
         i += (i64)blockDim.x * gridDim.x)

// ---- Caffe's scalar rules -------------------------------------------------------------------

// std::max(a, b) is `(a < b) ? b : a` and std::min(a, b) is `(b < a) ? b : a`: with a NaN these
// return `a`, unlike fmaxf/fminf, which drop the NaN. Caffe's formulas use the std:: versions.
__device__ __forceinline__ float cmax(float a, float b) { return (a < b) ? b : a; }
__device__ __forceinline__ float cmin(float a, float b) { return (b < a) ? b : a; }
__device__ __forceinline__ float ind(bool c) { return c ? 1.0f : 0.0f; }

// Separately rounded arithmetic (never contracted into an FMA), to match the CPU reference.
__device__ __forceinline__ float rmul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float radd(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float rsub(float a, float b) { return __fsub_rn(a, b); }

// The middle index d of flat index i in a blob viewed as (outer, dim, inner): (i / inner) % dim.
// 64-bit integer division is emulated (several times the cost of 32-bit), and an element-wise
// kernel that divided in 64 bits per element would be bound by it rather than by memory, so blobs
// under 2^32 elements (`small`, uniform across the launch) divide in 32 bits.
__device__ __forceinline__ i64 middle_index(i64 i, i64 inner, i64 dim, bool small) {
    if (small) return (i64)(((u32)i / (u32)inner) % (u32)dim);
    return (i / inner) % dim;
}
#define FITS_U32(n) ((n) <= 0xffffffffLL)

// Caffe's sigmoid, 0.5 * tanh(0.5 x) + 0.5, evaluated in double as its C++ does (the literals are
// doubles); stable at both ends, unlike 1 / (1 + exp(-x)).
__device__ __forceinline__ float caffe_sigmoid(float x) {
    return (float)(0.5 * tanh(0.5 * (double)x) + 0.5);
}

// A float label read as Caffe's static_cast<int> does (truncation toward zero). Labels are
// checked for range before any kernel indexes with them (loss_find_bad_label_f32).
__device__ __forceinline__ int label_of(float v) { return (int)truncf(v); }

// ---- Fixed-order reductions -----------------------------------------------------------------
//
// A warp sums with a fixed shuffle tree (lane i takes lane i + 16, + 8, ..., + 1), and a block
// sums its warps' results the same way in warp 0. The rounding therefore depends only on the
// values each thread brings, which depend only on the shape; never on timing.

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    return v;  // complete in lane 0
}

// Sum of `v` over the block; the result is valid in thread 0 only. Every thread of the block must
// call it (it synchronises), and blockDim.x must be a multiple of 32.
template <typename T>
__device__ T block_sum(T v) {
    __shared__ T warp_part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // a previous call's readers are done with warp_part
    v = warp_sum(v);
    if (lane == 0) warp_part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? warp_part[lane] : T(0);
        v = warp_sum(v);
    }
    return v;
}

// Channel reductions over a blob viewed as (outer, channels, inner), the layout of BatchNorm's
// statistics (num, C, H*W) and of Scale/Bias gradients (outer, dim, inner). Stage one: block
// (c, j) sums chunk j of channel c's outer*inner positions into partial[c * chunks + j], in
// double; stage two (channel_finish) adds a channel's partials in chunk order. The chunk count
// is chosen by the host from the shape alone.
//
// `term(flat_index)` gives the value to add (x, (x - mean)^2, dy * y, ...).
template <typename Term>
__device__ double channel_chunk_sum(i64 outer, i64 channels, i64 inner, i64 c, i64 chunk, i64 chunks,
                                    Term term) {
    const i64 m = outer * inner;
    const i64 per = (m + chunks - 1) / chunks;
    const i64 begin = chunk * per;
    const i64 end = begin + per < m ? begin + per : m;
    double s = 0.0;
    i64 k = begin + threadIdx.x;
    if (k < end) {
        // Walk (o, i) = (k / inner, k % inner) incrementally: one division per thread, not per
        // element. step_i < inner, so one carry per step suffices.
        i64 o = k / inner, i = k - o * inner;
        const i64 step_o = (i64)blockDim.x / inner, step_i = (i64)blockDim.x - step_o * inner;
        for (; k < end; k += blockDim.x) {
            s += term((o * channels + c) * inner + i);
            i += step_i;
            o += step_o;
            if (i >= inner) {
                i -= inner;
                ++o;
            }
        }
    }
    return block_sum(s);
}

// Stage two: the sum of partial[c * chunks + 0 .. chunks) in a fixed order (valid in thread 0).
__device__ __forceinline__ double channel_finish(const double* partial, i64 c, i64 chunks) {
    double s = 0.0;
    for (i64 j = threadIdx.x; j < chunks; j += blockDim.x) s += partial[c * chunks + j];
    return block_sum(s);
}

// ---- Counter-based random numbers -----------------------------------------------------------
//
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a keyed
// bijection of a 128-bit counter. Element i of a draw gets word i % 4 of philox(counter = (i / 4,
// offset), key = seed): any thread can compute any element's number with no state, so a mask
// can be regenerated in backward instead of stored, and the numbers do not depend on the launch
// configuration. The host mirror (kernels.rs, `philox4x32_10`) is checked against the published
// known-answer vectors.
struct u32x4 {
    u32 x, y, z, w;
};

__device__ __forceinline__ u32x4 philox4x32_10(u32x4 ctr, u32 k0, u32 k1) {
    const u32 M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    const u32 W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        const u32 hi0 = __umulhi(M0, ctr.x), lo0 = M0 * ctr.x;
        const u32 hi1 = __umulhi(M1, ctr.z), lo1 = M1 * ctr.z;
        ctr = u32x4{hi1 ^ ctr.y ^ k0, lo1, hi0 ^ ctr.w ^ k1, lo0};
        k0 += W0;
        k1 += W1;
    }
    return ctr;
}

// The four 32-bit random words for elements 4g .. 4g + 3 of the draw (seed, offset).
__device__ __forceinline__ u32x4 random_words(u64 seed, u64 offset, u64 g) {
    return philox4x32_10(u32x4{(u32)g, (u32)(g >> 32), (u32)offset, (u32)(offset >> 32)}, (u32)seed,
                         (u32)(seed >> 32));
}

__device__ __forceinline__ u32 word_of(const u32x4& r, int j) {
    return j == 0 ? r.x : j == 1 ? r.y : j == 2 ? r.z : r.w;
}
