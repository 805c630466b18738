// Data movement and small utilities: Concat/Slice block copies along an axis, fill, and scaled
// copies. Reference: src/backend/cpu/tensor.rs (axis_insert / axis_extract) and
// cpu::loss::scale / scaled_copy.
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

// y[i] = value.
extern "C" __global__ void tensor_fill_f32(float* y, i64 n, float value) {
    GRID_STRIDE_LOOP(i, n) { y[i] = value; }
}

// y = alpha * x (Caffe's caffe_scal when y == x, caffe_cpu_axpby with beta 0 otherwise); y may
// alias x. Used for loss scaling and gradient clipping.
extern "C" __global__ void tensor_scale_f32(const float* x, float* y, i64 n, float alpha) {
    GRID_STRIDE_LOOP(i, n) { y[i] = rmul(alpha, x[i]); }
}
