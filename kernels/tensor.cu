// Data movement and small utilities: Concat/Slice block copies along an axis (Crop is a chain of
// them, one per cropped axis), Tile, fill, and scaled copies. Reference: src/backend/cpu/tensor.rs
// (axis_insert / axis_extract / tile_forward / tile_backward) and cpu::loss::scale / scaled_copy.
//
// A blob viewed as (outer, axis, inner): Concat writes each bottom's (outer, src_axis, inner)
// block into the top at an axis offset (Slice's backward is the same copy); Slice reads a block
// out (Concat's backward). One thread per element of the smaller (block) side, so each element is
// written once; reads and writes are contiguous along `inner` and along the block's rows.
#include "common.cuh"

// dst[o, offset + a, i] = src[o, a, i] for the src_axis positions a of the block.
extern "C" __global__ void tensor_axis_insert_f32(const float* src, float* dst, i64 outer, i64 src_axis,
                                                  i64 dst_axis, i64 offset, i64 inner) {
    const i64 row = src_axis * inner;
    GRID_STRIDE_LOOP(i, outer * row) {
        const i64 o = i / row, r = i - o * row;
        dst[o * dst_axis * inner + offset * inner + r] = src[i];
    }
}

// dst[o, a, i] = src[o, offset + a, i] for the dst_axis positions a of the block.
extern "C" __global__ void tensor_axis_extract_f32(const float* src, float* dst, i64 outer, i64 src_axis,
                                                   i64 offset, i64 dst_axis, i64 inner) {
    const i64 row = dst_axis * inner;
    GRID_STRIDE_LOOP(i, outer * row) {
        const i64 o = i / row, r = i - o * row;
        dst[i] = src[o * src_axis * inner + offset * inner + r];
    }
}

// Tile: y, viewed as (outer, tiles, inner), holds `tiles` copies of each row of x (outer, inner).
extern "C" __global__ void tensor_tile_fwd_f32(const float* x, float* y, i64 outer, i64 inner, i64 tiles) {
    const i64 row = tiles * inner;
    GRID_STRIDE_LOOP(i, outer * row) {
        const i64 o = i / row, j = (i - o * row) % inner;
        y[i] = x[o * inner + j];
    }
}

// Tile backward: dx[o, j] = dy[o, 0, j] + dy[o, 1, j] + ..., added in tile order as the CPU does.
extern "C" __global__ void tensor_tile_bwd_f32(const float* dy, float* dx, i64 outer, i64 inner, i64 tiles) {
    GRID_STRIDE_LOOP(i, outer * inner) {
        const i64 o = i / inner, j = i - o * inner;
        const float* src = dy + o * tiles * inner + j;
        float s = src[0];
        for (i64 t = 1; t < tiles; ++t) s = radd(s, src[t * inner]);
        dx[i] = s;
    }
}

// y[i] = value.
extern "C" __global__ void tensor_fill_f32(float* y, i64 n, float value) {
    GRID_STRIDE_LOOP(i, n) { y[i] = value; }
}

// y = alpha * x (Caffe's caffe_scal when y == x, caffe_cpu_axpby with beta 0 otherwise); y may
// alias x. Used for loss scaling and gradient clipping.
extern "C" __global__ void tensor_scale_f32(const float* x, float* y, i64 n, float alpha) {
    GRID_STRIDE_LOOP(i, n) { y[i] = rmul(alpha, x[i]); }
}
