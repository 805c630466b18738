// Just enough of CUDA to run crema's kernel sources on the CPU, so that their index arithmetic
// and reductions can be checked on machines without a GPU (tests/kernels_on_host.rs compiles
// and runs dense_kernels.cpp with it). Blocks run one after another; a block of one thread
// runs in the calling thread (grid-stride kernels cover every element that way), a larger
// block as that many std::threads meeting at a block barrier for __syncthreads and at their
// warp's barrier for shuffles. Float arithmetic is IEEE single precision as on the GPU; the
// compile must not contract a * b + c into FMAs (-ffp-contract=off), as __fmul_rn/__fadd_rn
// forbid. __CUDA_ARCH__ is undefined here, so code with an sm_80 branch (gemm.cu's cp.async
// copies) runs its portable branch.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

struct Dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline thread_local Dim3 threadIdx, blockIdx;
inline Dim3 blockDim, gridDim;
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;

inline void __syncthreads() {
    if (blockDim.x > 1) block_barrier->arrive_and_wait();
}

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __restrict__
#define __align__(n) __attribute__((aligned(n)))

struct alignas(16) float4 {
    float x, y, z, w;
};

inline float __fmul_rn(float a, float b) {
    volatile float r = a * b;
    return r;
}
inline float __fadd_rn(float a, float b) {
    volatile float r = a + b;
    return r;
}
inline float __fsub_rn(float a, float b) {
    volatile float r = a - b;
    return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }

// Every lane of a warp calls it together, as on the GPU; the lanes exchange values through a
// buffer, meeting at their warp's barrier.
template <typename T>
inline T __shfl_down_sync(unsigned, T v, int offset) {
    static T lanes[1024];
    if (blockDim.x == 1) return v;
    const int t = threadIdx.x, lane = t & 31;
    auto& warp = *warp_barriers[t >> 5];
    warp.arrive_and_wait();
    lanes[t] = v;
    warp.arrive_and_wait();
    const T r = lane + offset < 32 ? lanes[t + offset] : v;
    warp.arrive_and_wait();
    return r;
}

inline std::mutex atomic_lock;
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
    std::lock_guard<std::mutex> l(atomic_lock);
    const auto old = *p;
    if (v < old) *p = v;
    return old;
}
inline int atomicMax(int* p, int v) {
    std::lock_guard<std::mutex> l(atomic_lock);
    const int old = *p;
    if (v > old) *p = v;
    return old;
}

using std::max;
using std::min;

// Runs `kernel` (a callable that invokes the entry point) over `grid` blocks of `threads`
// (1, or a multiple of 32 as the kernels require).
template <typename F>
void launch(Dim3 grid, unsigned threads, F kernel) {
    gridDim = grid;
    blockDim = Dim3{threads, 1, 1};
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                if (threads == 1) {
                    blockIdx = {x, y, z};
                    threadIdx = {0, 0, 0};
                    kernel();
                    continue;
                }
                block_barrier = std::make_unique<std::barrier<>>(threads);
                warp_barriers.clear();
                for (unsigned w = 0; w < (threads + 31) / 32; ++w)
                    warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
                std::vector<std::thread> pool;
                for (unsigned t = 0; t < threads; ++t)
                    pool.emplace_back([=] {
                        blockIdx = {x, y, z};
                        threadIdx = {t, 0, 0};
                        kernel();
                    });
                for (auto& th : pool) th.join();
            }
}
