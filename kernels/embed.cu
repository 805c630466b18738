// Embed: a table lookup. Each of m float indices picks a row of the (k, n) weight table.
// Reference: src/backend/cpu/embed.rs and src/layers/embed.rs.
//
// Indices are checked before any kernel reads the table with them (embed_find_bad_index_f32,
// whose one value the host reads back), so the layer fails with the CPU's message instead of
// reading out of bounds; the other kernels still skip an index outside the table.
#include "common.cuh"

// first_bad (set to 2^64 - 1 by the host) receives the smallest i whose value is not an integer
// in [0, k). An integer atomicMin: the result does not depend on the threads' order.
extern "C" __global__ void embed_find_bad_index_f32(const float* idx, i64 m, i64 k, u64* first_bad) {
    GRID_STRIDE_LOOP(i, m) {
        const float v = idx[i];
        const bool ok = v >= 0.0f && v < (float)k && truncf(v) == v && (i64)v < k;
        if (!ok) atomicMin(first_bad, (u64)i);
    }
}

// y[i, j] = w[idx[i], j] (+ bias[j]); bias nullable. One thread per output element.
extern "C" __global__ void embed_fwd_f32(const float* idx, const float* w, const float* bias, float* y, i64 m,
                                         i64 k, i64 n) {
    GRID_STRIDE_LOOP(t, m * n) {
        const i64 i = t / n, j = t - i * n;
        const i64 r = (i64)idx[i];
        float v = (r >= 0 && r < k) ? w[r * n + j] : 0.0f;
        y[t] = bias ? radd(v, bias[j]) : v;
    }
}

// first[r] = m - (the first i with idx[i] == r), 0 for a row no index names: where backward's
// scan for row r starts, and which rows it skips. `first` must be zeroed by the host; an integer
// atomicMax, so the result does not depend on the threads' order.
extern "C" __global__ void embed_first_use_f32(const float* idx, int* first, i64 m, i64 k) {
    GRID_STRIDE_LOOP(i, m) {
        const i64 r = (i64)idx[i];
        if (r >= 0 && r < k) atomicMax(&first[r], (int)(m - i));
    }
}

// dw[r, j] += dy[i, j] for every i with idx[i] == r, added in ascending i, which is the CPU's
// order, so the bits match. One thread per weight, the only writer of its weight (no atomics):
// it scans the indices from the row's first use on (consecutive threads share a row, so a warp
// reads each index once); rows no index names are left alone.
extern "C" __global__ void embed_bwd_weights_f32(const float* idx, const int* first, const float* dy, float* dw,
                                                 i64 m, i64 k, i64 n) {
    GRID_STRIDE_LOOP(t, k * n) {
        const i64 r = t / n, j = t - r * n;
        const int f = first[r];
        if (f == 0) continue;
        float acc = dw[t];
        for (i64 i = m - f; i < m; ++i)
            if ((i64)idx[i] == r) acc = radd(acc, dy[i * n + j]);
        dw[t] = acc;
    }
}
