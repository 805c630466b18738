// Single-precision matrix product, row-major like cblas_sgemm(CblasRowMajor, ...):
//     C = alpha * op(A) * op(B) + beta * C,   op(A) is M x K, op(B) is K x N, C is M x N,
// with leading dimensions (lda, ldb, ldc), optional transposes, and a batch index in
// blockIdx.z (strides between the batch's matrices; a convolution's groups or images). With
// beta == 0, C is not read (NaNs in it do not propagate), as BLAS specifies. Reference:
// src/backend/cpu/blas.rs (sgemm). Inner product and convolution are built on it.
//
// The kernel is the classic shared-memory tiling with register blocking (as in the CUTLASS SIMT
// and MAGMA kernels):
// - A block computes a BM x BN tile of C, marching along K in steps of BK. Each step stages a
//   BM x BK slice of op(A) and a BK x BN slice of op(B) in shared memory, stored k-major
//   (As[k][m], Bs[k][n]) so that the inner product step reads contiguous rows.
// - Each thread owns a TM x TN sub-tile of C in registers: per k it loads TM values of A and TN
//   of B from shared memory as float4s and does TM * TN FMAs, so shared-memory traffic is
//   (TM + TN) / (TM * TN) of the FMA count. The sub-tile is split into 4-wide pieces spread across
//   the tile (rows ty*4 and ty*4 + BM/2, ...) so that a warp's float4 reads are contiguous and
//   free of bank conflicts.
// - Double buffering: while step k is computed from one shared buffer, step k + 1 is already
//   being copied into the other by cp.async (sm_80+: global -> shared with no register staging,
//   which is what lets the 8x8 configuration fit in 128 registers without spilling). One
//   barrier per step suffices (see the loop).
// - Copies are scalar and predicated (out-of-range elements become 0), so any M, N, K, any
//   leading dimension and any pointer offset work; each warp's copies still cover contiguous
//   32-byte sectors whichever operand is transposed (the mapping follows the operand's
//   contiguous dimension).
// Two configurations: 128x128x8 with 8x8 per thread (large products) and 64x64x16 with 4x4 per
// thread (small ones, where 128-wide tiles would leave most of the GPU idle). Both use 256 threads.
// The summation order along K is fixed (k ascending per thread), so results are reproducible.
#include "common.cuh"

template <int BM, int BN, int BK, int TM, int TN>
struct GemmConfig {
    // Enumerators rather than static constexpr members: those would be emitted as global data.
    enum : int {
        THREADS = (BM / TM) * (BN / TN),
        PAD = 4,  // keeps rows 16-byte aligned and spreads column writes over banks
        A_LOADS = BM * BK / THREADS,
        B_LOADS = BK * BN / THREADS,
    };
    static_assert(THREADS == 256, "the wrappers launch 256 threads");
    static_assert(BM * BK % THREADS == 0 && BK * BN % THREADS == 0, "tile loads must divide evenly");
    static_assert(TM % 4 == 0 && TN % 4 == 0, "sub-tiles are made of float4 pieces");
};

// Global -> shared copies of one float. On sm_80 and later these are cp.async: the copy engine
// writes shared memory directly, with no register staging, and `ok == false` zero-fills (src-size
// 0: nothing is read; `src` is then any valid address). Earlier GPUs load and store synchronously.
__device__ __forceinline__ void copy_to_shared(float* dst, const float* src, bool ok) {
#if __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(src), "r"(ok ? 4 : 0));
#else
    *dst = ok ? *src : 0.0f;
#endif
}
__device__ __forceinline__ void copy_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
__device__ __forceinline__ void copy_wait() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// The transposes are template parameters: the entry points dispatch once per launch, and each
// instantiation's load addressing folds to the operand's layout (runtime flags cost registers the
// 8x8 configuration does not have to spare). Shared memory is declared by the entry point and
// passed in, so the four instantiations share one allocation.
template <int BM, int BN, int BK, int TM, int TN, bool TRANS_A, bool TRANS_B>
__device__ __forceinline__ void sgemm_tile(int M, int N, int K, float alpha, const float* __restrict__ A, int lda,
                                           const float* __restrict__ B, int ldb, float beta, float* __restrict__ C,
                                           int ldc, float (*As)[BK][BM + GemmConfig<BM, BN, BK, TM, TN>::PAD],
                                           float (*Bs)[BK][BN + GemmConfig<BM, BN, BK, TM, TN>::PAD]) {
    typedef GemmConfig<BM, BN, BK, TM, TN> Cfg;

    const int tid = threadIdx.x;
    const int tx = tid % (BN / TN), ty = tid / (BN / TN);
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;

    // Element e of this thread's share of a tile: where it comes from in global memory and where
    // it goes in shared memory. Mapping the fastest-varying thread index to the operand's
    // contiguous dimension keeps each warp's loads coalesced. Out-of-range elements become 0.
    // Per thread, the r-th element of a tile sits r * (THREADS / BK) rows (or r * (THREADS / BM)
    // k-rows) after the first, so one base pointer per operand and constant strides address them
    // all: a few registers instead of one 64-bit pointer per element.
    constexpr int A_R = TRANS_A ? Cfg::THREADS / BM : Cfg::THREADS / BK;  // rows of op(A)'s stored
    constexpr int B_R = TRANS_B ? Cfg::THREADS / BK : Cfg::THREADS / BN;  // matrix per r step
    const int a_m = TRANS_A ? tid % BM : tid / BK, a_k = TRANS_A ? tid / BM : tid % BK;
    const int b_n = TRANS_B ? tid / BK : tid % BN, b_k = TRANS_B ? tid % BK : tid / BN;
    const float* a_base = TRANS_A ? A + (i64)a_k * lda + m0 + a_m : A + (i64)(m0 + a_m) * lda + a_k;
    const float* b_base = TRANS_B ? B + (i64)(n0 + b_n) * ldb + b_k : B + (i64)b_k * ldb + n0 + b_n;
    const i64 a_r_step = (i64)A_R * lda, b_r_step = (i64)B_R * ldb;
    const i64 a_k_step = TRANS_A ? (i64)lda : 1, b_k_step = TRANS_B ? 1 : (i64)ldb;

    auto stage = [&](int buf, int k0) {
#pragma unroll
        for (int r = 0; r < Cfg::A_LOADS; ++r) {
            const int m = TRANS_A ? a_m : a_m + r * A_R;
            const int k = TRANS_A ? a_k + r * A_R : a_k;
            const bool ok = m0 + m < M && k0 + k < K;
            const float* src = a_base + r * a_r_step + k0 * a_k_step;
            copy_to_shared(&As[buf][k][m], ok ? src : A, ok);
        }
#pragma unroll
        for (int r = 0; r < Cfg::B_LOADS; ++r) {
            const int n = TRANS_B ? b_n + r * B_R : b_n;
            const int k = TRANS_B ? b_k : b_k + r * B_R;
            const bool ok = n0 + n < N && k0 + k < K;
            const float* src = b_base + r * b_r_step + k0 * b_k_step;
            copy_to_shared(&Bs[buf][k][n], ok ? src : B, ok);
        }
        copy_commit();
    };

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;

    // Row i of the thread's sub-tile is tile row (i / 4) * (BM / (TM / 4)) + ty * 4 + i % 4; columns
    // likewise. With TM = 8 and BM = 128 that is rows ty*4 .. ty*4+3 and 64 + ty*4 .. 64 + ty*4+3.
    constexpr int ROW_PIECES = TM / 4, COL_PIECES = TN / 4;
    constexpr int ROW_STRIDE = BM / ROW_PIECES, COL_STRIDE = BN / COL_PIECES;

    const int k_tiles = (K + BK - 1) / BK;
    if (k_tiles > 0) stage(0, 0);
    copy_wait();
    __syncthreads();

    for (int t = 0; t < k_tiles; ++t) {
        const int cur = t & 1;
        // Start the next step's copies first, so they run while this step computes. Writing
        // buffer cur ^ 1 needs no barrier before it: its last readers were in step t - 1, and every
        // thread passed the barrier that ends step t - 1 after reading it.
        if (t + 1 < k_tiles) stage(cur ^ 1, (t + 1) * BK);
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            float a[TM], b[TN];
#pragma unroll
            for (int p = 0; p < ROW_PIECES; ++p) {
                const float4 v = *reinterpret_cast<const float4*>(&As[cur][k][p * ROW_STRIDE + ty * 4]);
                a[p * 4 + 0] = v.x;
                a[p * 4 + 1] = v.y;
                a[p * 4 + 2] = v.z;
                a[p * 4 + 3] = v.w;
            }
#pragma unroll
            for (int p = 0; p < COL_PIECES; ++p) {
                const float4 v = *reinterpret_cast<const float4*>(&Bs[cur][k][p * COL_STRIDE + tx * 4]);
                b[p * 4 + 0] = v.x;
                b[p * 4 + 1] = v.y;
                b[p * 4 + 2] = v.z;
                b[p * 4 + 3] = v.w;
            }
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        // The next buffer's copies have landed (for this thread), and after the barrier for all.
        copy_wait();
        __syncthreads();
    }

    // Epilogue: C = alpha * acc + beta * C, predicated on the matrix edge.
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int gm = m0 + (i / 4) * ROW_STRIDE + ty * 4 + (i % 4);
        if (gm >= M) continue;
        float* c_row = C + (i64)gm * ldc;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int gn = n0 + (j / 4) * COL_STRIDE + tx * 4 + (j % 4);
            if (gn < N) {
                const float r = alpha * acc[i][j];
                c_row[gn] = beta == 0.0f ? r : fmaf(beta, c_row[gn], r);
            }
        }
    }
}

// Runs the tile function instantiated for the launch's transposes.
template <int BM, int BN, int BK, int TM, int TN>
__device__ __forceinline__ void sgemm_dispatch(int trans_a, int trans_b, int M, int N, int K, float alpha,
                                               const float* A, int lda, const float* B, int ldb, float beta, float* C,
                                               int ldc) {
    constexpr int PAD = GemmConfig<BM, BN, BK, TM, TN>::PAD;
    __shared__ __align__(16) float As[2][BK][BM + PAD];
    __shared__ __align__(16) float Bs[2][BK][BN + PAD];
    if (trans_a) {
        if (trans_b)
            sgemm_tile<BM, BN, BK, TM, TN, true, true>(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, As, Bs);
        else
            sgemm_tile<BM, BN, BK, TM, TN, true, false>(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, As, Bs);
    } else {
        if (trans_b)
            sgemm_tile<BM, BN, BK, TM, TN, false, true>(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, As, Bs);
        else
            sgemm_tile<BM, BN, BK, TM, TN, false, false>(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, As, Bs);
    }
}

// Grid: (ceil(N / 128), ceil(M / 128), batch); 256 threads. Matrix z of the batch starts at
// A + z * stride_a, B + z * stride_b, C + z * stride_c. Two blocks per SM (<= 128 registers).
extern "C" __global__ void __launch_bounds__(256, 2)
    gemm_sgemm_128x128_f32(int trans_a, int trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                           i64 stride_a, const float* B, int ldb, i64 stride_b, float beta, float* C, int ldc,
                           i64 stride_c) {
    const i64 z = blockIdx.z;
    sgemm_dispatch<128, 128, 8, 8, 8>(trans_a, trans_b, M, N, K, alpha, A + z * stride_a, lda, B + z * stride_b, ldb,
                                      beta, C + z * stride_c, ldc);
}

// Grid: (ceil(N / 64), ceil(M / 64), batch); 256 threads.
extern "C" __global__ void __launch_bounds__(256)
    gemm_sgemm_64x64_f32(int trans_a, int trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                         i64 stride_a, const float* B, int ldb, i64 stride_b, float beta, float* C, int ldc,
                         i64 stride_c) {
    const i64 z = blockIdx.z;
    sgemm_dispatch<64, 64, 16, 4, 4>(trans_a, trans_b, M, N, K, alpha, A + z * stride_a, lda, B + z * stride_b, ldb,
                                     beta, C + z * stride_c, ldc);
}
