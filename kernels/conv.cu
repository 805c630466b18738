// Convolution's data movement: im2col / col2im with padding, stride and dilation, 2-D and N-D (a
// convolution is then gemm(weights, col), its input gradient col2im(gemm(weights^T, dy)), its
// weight gradient gemm(dy, col^T); the products are gemm.cu's, the orchestration
// src/backend/cuda/conv.rs). Reference: src/backend/cpu/conv.rs.
// The column buffer of one image is (channels * kh * kw) rows x (OH * OW) columns, row-major,
// rows ordered (channel, ki, kj): Caffe's layout, so weights are interchangeable.
//
// Several images at once: blockIdx.z is the image, `im_stride` and `col_stride` the distances
// between consecutive images' data (so a batch can be unrolled into one wide column buffer, or
// one image at a time into a reused buffer).
#include "common.cuh"

// Grid: (ceil(OH * OW / CREMA_THREADS), min(rows, 65535), images), rows = channels * kh * kw;
// blockIdx.y strides over the rows. Each thread writes one column element: consecutive threads
// write consecutive columns (coalesced) and read input elements `sw` apart.
extern "C" __global__ void conv_im2col_f32(const float* im, float* col, int channels, int H, int W, int kh, int kw,
                                          int pad_h, int pad_w, int sh, int sw, int dh, int dw, int OH, int OW,
                                          i64 im_stride, i64 col_stride) {
    const int P = OH * OW;
    const int rows = channels * kh * kw;
    const float* imz = im + (i64)blockIdx.z * im_stride;
    float* colz = col + (i64)blockIdx.z * col_stride;
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= P) return;
    const int oh = p / OW, ow = p - oh * OW;
    for (int r = blockIdx.y; r < rows; r += gridDim.y) {
        const int kj = r % kw, t = r / kw;
        const int ki = t % kh, c = t / kh;
        const int ih = oh * sh - pad_h + ki * dh, iw = ow * sw - pad_w + kj * dw;
        const bool inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
        colz[(i64)r * P + p] = inside ? imz[((i64)c * H + ih) * W + iw] : 0.0f;
    }
}

// The transpose: im[c, h, w] = sum over the (ki, kj) whose window position lands on (h, w) of the
// matching column element. One thread per image element gathers its (at most kh * kw) terms in
// (ki, kj) order, the order in which the CPU's col2im scatters into that element, so the sums
// round identically; no thread writes another's element, so no atomics. Overwrites im.
// Grid: (ceil(channels * H * W / CREMA_THREADS) capped, 1, images), grid-stride over elements.
extern "C" __global__ void conv_col2im_f32(const float* col, float* im, int channels, int H, int W, int kh, int kw,
                                          int pad_h, int pad_w, int sh, int sw, int dh, int dw, int OH, int OW,
                                          i64 im_stride, i64 col_stride) {
    const i64 P = (i64)OH * OW;
    const float* colz = col + (i64)blockIdx.z * col_stride;
    float* imz = im + (i64)blockIdx.z * im_stride;
    const i64 n = (i64)channels * H * W;
    GRID_STRIDE_LOOP(idx, n) {
        const int w = (int)(idx % W);
        const i64 t = idx / W;
        const int h = (int)(t % H), c = (int)(t / H);
        float sum = 0.0f;
        for (int ki = 0; ki < kh; ++ki) {
            // Output row oh reads input row h through kernel row ki when oh * sh = h + pad_h - ki * dh.
            const int th = h + pad_h - ki * dh;
            if (th < 0) break;  // grows more negative with ki
            if (th % sh != 0) continue;
            const int oh = th / sh;
            if (oh >= OH) continue;
            for (int kj = 0; kj < kw; ++kj) {
                const int tw = w + pad_w - kj * dw;
                if (tw < 0) break;
                if (tw % sw != 0) continue;
                const int ow = tw / sw;
                if (ow >= OW) continue;
                const i64 r = ((i64)c * kh + ki) * kw + kj;
                sum = radd(sum, colz[r * P + (i64)oh * OW + ow]);
            }
        }
        imz[idx] = sum;
    }
}

// ---- N-D im2col / col2im: any number of spatial axes (1-D, 3-D, force_nd_im2col) ----
//
// The geometry lives in device memory (`geom`, 6 * nd ints, uploaded once per shape): im_shape,
// col_shape, kernel, pad, stride, dilation, each nd long, axis 0 first. Each block copies it to
// shared memory. Column row r is (channel, kernel offset k) with k a row-major index over the
// kernel's axes, as in the 2-D kernels and Caffe's im2col_nd.
#define CONV_MAX_AXES 32

__device__ __forceinline__ void load_geometry(const int* geom, int nd, int* sg) {
    for (int i = threadIdx.x; i < 6 * nd; i += blockDim.x) sg[i] = geom[i];
    __syncthreads();
}

// One thread per column element (grid-stride over rows * col_spatial), blockIdx.z the image.
// An index's coordinates are peeled off from the last axis to the first, so no per-axis arrays.
extern "C" __global__ void conv_im2col_nd_f32(const float* im, float* col, const int* geom, int nd, int channels,
                                             i64 im_spatial, i64 col_spatial, i64 kernel_count, i64 im_stride,
                                             i64 col_stride) {
    __shared__ int sg[6 * CONV_MAX_AXES];
    load_geometry(geom, nd, sg);
    const int *im_shape = sg, *col_shape = sg + nd, *kernel = sg + 2 * nd, *pad = sg + 3 * nd,
              *stride = sg + 4 * nd, *dilation = sg + 5 * nd;
    const float* imz = im + (i64)blockIdx.z * im_stride;
    float* colz = col + (i64)blockIdx.z * col_stride;
    const i64 n = (i64)channels * kernel_count * col_spatial;
    GRID_STRIDE_LOOP(i, n) {
        const i64 r = i / col_spatial;
        i64 p = i - r * col_spatial;
        const i64 c = r / kernel_count;
        i64 k = r - c * kernel_count;
        i64 offset = 0, mult = 1;
        bool inside = true;
        for (int d = nd - 1; d >= 0; --d) {
            const i64 kd = k % kernel[d], od = p % col_shape[d];
            k /= kernel[d];
            p /= col_shape[d];
            const i64 id = od * stride[d] - pad[d] + kd * dilation[d];
            inside = inside && id >= 0 && id < im_shape[d];
            offset += id * mult;
            mult *= im_shape[d];
        }
        colz[i] = inside ? imz[c * im_spatial + offset] : 0.0f;
    }
}

// The transpose, overwriting im: one thread per image element gathers, in ascending kernel
// offset, the column elements whose window position lands on it: the order in which the CPU's
// N-D col2im scatters into that element, so the sums round identically. Grid-stride over
// channels * im_spatial, blockIdx.z the image.
extern "C" __global__ void conv_col2im_nd_f32(const float* col, float* im, const int* geom, int nd, int channels,
                                             i64 im_spatial, i64 col_spatial, i64 kernel_count, i64 im_stride,
                                             i64 col_stride) {
    __shared__ int sg[6 * CONV_MAX_AXES];
    load_geometry(geom, nd, sg);
    const int *im_shape = sg, *col_shape = sg + nd, *kernel = sg + 2 * nd, *pad = sg + 3 * nd,
              *stride = sg + 4 * nd, *dilation = sg + 5 * nd;
    const float* colz = col + (i64)blockIdx.z * col_stride;
    float* imz = im + (i64)blockIdx.z * im_stride;
    const i64 n = (i64)channels * im_spatial;
    GRID_STRIDE_LOOP(idx, n) {
        const i64 c = idx / im_spatial, s = idx - c * im_spatial;
        float sum = 0.0f;
        for (i64 k = 0; k < kernel_count; ++k) {
            i64 rem_s = s, rem_k = k, pos = 0, mult = 1;
            bool hit = true;
            for (int d = nd - 1; d >= 0 && hit; --d) {
                const i64 id = rem_s % im_shape[d], kd = rem_k % kernel[d];
                rem_s /= im_shape[d];
                rem_k /= kernel[d];
                // Output position o reads input position id through kernel offset kd when
                // o * stride = id + pad - kd * dilation.
                const i64 t = id + pad[d] - kd * dilation[d];
                if (t < 0 || t % stride[d] != 0 || t / stride[d] >= col_shape[d]) {
                    hit = false;
                } else {
                    pos += (t / stride[d]) * mult;
                    mult *= col_shape[d];
                }
            }
            if (hit) sum = radd(sum, colz[(c * kernel_count + k) * col_spatial + pos]);
        }
        imz[idx] = sum;
    }
}

// ---- Weight-gradient partials ----
//
// The weight gradient of a chunk of images is computed as one batched product into per-image
// partials (partial[z * n + i] for image z), which this kernel adds into dw in image order:
// dw[i] += ((partial[0][i] + partial[1][i]) + ...). The order depends on the shape only.
extern "C" __global__ void conv_sum_partials_f32(const float* partial, float* dw, i64 n, int images) {
    GRID_STRIDE_LOOP(i, n) {
        float s = partial[i];
        for (int z = 1; z < images; ++z) s = radd(s, partial[(i64)z * n + i]);
        dw[i] = radd(dw[i], s);
    }
}
