// Convolution's data movement: 2-D im2col / col2im with padding, stride and dilation (a
// convolution is then gemm(weights, col), its input gradient col2im(gemm(weights^T, dy)), its
// weight gradient gemm(dy, col^T); the products are gemm.cu's). Reference: src/backend/cpu/conv.rs.
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
