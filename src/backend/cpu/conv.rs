//! Convolution arithmetic (Caffe's `im2col` + gemm formulation), shared by Convolution and
//! Deconvolution.
//!
//! A convolution is seen from the gemm's side: the *image* side is what im2col reads (a
//! convolution's bottom, a deconvolution's top) and the *column* side has one column per
//! output position (a convolution's top, a deconvolution's bottom). The column buffer of one
//! image is `(im_channels * prod(kernel)) x prod(col_shape)`, row-major, rows ordered
//! (channel, kernel offsets), columns ordered like the column side's spatial positions: the
//! same layout as Caffe's, so weights are interchangeable.
//!
//! The 2-D im2col/col2im work on a prepared copy of the image (zero-padded, and split into
//! column-phase planes when the column stride is above 1) so that every row segment is one
//! contiguous copy with no per-value padding test; the N-D versions handle any number of
//! spatial axes (and 2-D under `force_nd_im2col`) with the same results.
//!
//! Images are independent in forward and in the input gradient, so batches run one image
//! per rayon task (single-threaded gemm inside, per-thread scratch buffers kept between
//! calls). The weight gradient sums over images: it is split into a number of image chunks
//! that depends only on the shapes, each chunk sums its images in order into its own partial,
//! and the partials are added in chunk order; the bits never depend on the thread count.

use std::cell::RefCell;

use rayon::prelude::*;

use super::blas::{sgemm_ld, worth_threads};
#[cfg(target_arch = "x86_64")]
use super::conv_direct as direct;
use super::scratch;
use super::wide::Wide;

thread_local! {
    static GEMM_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Benchmarks and tests compare the direct kernels (`conv_direct.rs`, where the CPU and the
/// geometry allow them) with the im2col + GEMM path: `true` makes the calls this thread makes
/// from now on take the latter everywhere.
pub fn set_gemm_only(on: bool) {
    GEMM_ONLY.with(|f| f.set(on));
}

#[cfg(target_arch = "x86_64")]
fn direct_enabled() -> bool {
    !GEMM_ONLY.with(|f| f.get())
}

/// Below this many multiply-adds in a whole batch, threads cost more than they save.
const PAR_MIN_WORK: usize = 1 << 17;
/// At most this many per-chunk weight-gradient partials (bounds the extra memory and the
/// final reduction; enough chunks to keep a many-core machine busy).
const MAX_WEIGHT_CHUNKS: usize = 16;
/// Total floats the weight-gradient partials may take.
const PARTIALS_BUDGET: usize = 1 << 23;

/// The geometry of one convolution, from the gemm's point of view (see the module comment).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConvGeom {
    /// Channels on the image side (a convolution's input channels).
    pub im_channels: usize,
    /// Channels on the column side (a convolution's `num_output`).
    pub col_channels: usize,
    pub group: usize,
    /// Spatial dims of the image side.
    pub im_shape: Vec<usize>,
    /// Spatial dims of the column side (one column per position).
    pub col_shape: Vec<usize>,
    pub kernel: Vec<usize>,
    pub pad: Vec<usize>,
    pub stride: Vec<usize>,
    pub dilation: Vec<usize>,
    /// Use the N-D im2col even for 2-D (Caffe's `force_nd_im2col`; same numbers).
    pub force_nd: bool,
}

impl ConvGeom {
    pub fn im_spatial(&self) -> usize {
        self.im_shape.iter().product()
    }

    pub fn col_spatial(&self) -> usize {
        self.col_shape.iter().product()
    }

    pub fn kernel_count(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Rows of one group's column block: `im_channels / group * prod(kernel)`.
    pub fn kernel_dim(&self) -> usize {
        self.im_channels / self.group * self.kernel_count()
    }

    /// One group's GEMM dimensions: its input channels, its output channels, its taps
    /// (`kernel_dim`) and the output positions of an image.
    pub fn group_dims(&self) -> (usize, usize, usize, usize) {
        (
            self.im_channels / self.group,
            self.col_channels / self.group,
            self.kernel_dim(),
            self.col_spatial(),
        )
    }

    /// Values of one image on the image side.
    pub fn im_dim(&self) -> usize {
        self.im_channels * self.im_spatial()
    }

    /// Values of one image on the column side.
    pub fn col_dim(&self) -> usize {
        self.col_channels * self.col_spatial()
    }

    /// Length of one image's column buffer.
    pub fn col_buffer_len(&self) -> usize {
        self.im_channels * self.kernel_count() * self.col_spatial()
    }

    /// Length of the weight blob: `col_channels x (im_channels / group) x kernel`.
    pub fn weight_len(&self) -> usize {
        self.col_channels * self.kernel_dim()
    }

    /// im2col is the identity (Caffe's `is_1x1_`: kernel 1, stride 1, pad 0 on every axis;
    /// dilation does not matter with a kernel of 1).
    pub fn is_1x1(&self) -> bool {
        (0..self.kernel.len())
            .all(|i| self.kernel[i] == 1 && self.stride[i] == 1 && self.pad[i] == 0)
    }

    /// Multiply-adds of one image's products.
    fn work_per_image(&self) -> usize {
        self.col_channels * self.kernel_dim() * self.col_spatial()
    }
}

/// Caffe's convolution output size, `floor((in + 2 pad - (dilation (k - 1) + 1)) / stride) + 1`;
/// `None` where the dilated kernel does not fit in the padded input or the stride is 0.
pub fn conv_out_size(
    input: usize,
    kernel: usize,
    pad: usize,
    stride: usize,
    dilation: usize,
) -> Option<usize> {
    let extent = dilation * (kernel.checked_sub(1)?) + 1;
    let padded = input + 2 * pad;
    if stride == 0 || padded < extent {
        return None;
    }
    Some((padded - extent) / stride + 1)
}

/// Caffe's deconvolution output size, `stride (in - 1) + dilation (k - 1) + 1 - 2 pad`;
/// `None` where it is below 1.
pub fn deconv_out_size(
    input: usize,
    kernel: usize,
    pad: usize,
    stride: usize,
    dilation: usize,
) -> Option<usize> {
    let extent = dilation * (kernel.checked_sub(1)?) + 1;
    let full = stride * input.checked_sub(1)? + extent;
    full.checked_sub(2 * pad).filter(|&o| o >= 1)
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PREPARED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's column buffer of at least `len` values.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    scratch::with(&SCRATCH, len, f)
}

/// Runs `f` with this thread's prepared-image buffer (separate from the column buffer, which
/// is in use at the same time).
pub(super) fn with_prepared<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    scratch::with(&PREPARED, len, f)
}

fn ceil_div(a: isize, b: isize) -> isize {
    if a >= 0 {
        (a + b - 1) / b
    } else {
        -((-a) / b)
    }
}

/// The positions `x` in `[0, n_out)` whose input index `x * stride + offset - pad` lies in
/// `[0, size)`: a contiguous range `[lo, hi)`.
fn valid_range(
    n_out: usize,
    stride: usize,
    offset: usize,
    pad: usize,
    size: usize,
) -> (usize, usize) {
    let (s, off, p, sz, n) = (
        stride as isize,
        offset as isize,
        pad as isize,
        size as isize,
        n_out as isize,
    );
    let lo = ceil_div(p - off, s).clamp(0, n);
    let hi = ceil_div(sz + p - off, s).clamp(0, n);
    (lo as usize, hi.max(lo) as usize)
}

/// One row segment of im2col: `out[x] = src[x * stride + offset - pad]` on `[lo, hi)`, 0
/// elsewhere.
#[inline]
fn gather_row(out: &mut [f32], src: &[f32], lo: usize, hi: usize, stride: usize, start: usize) {
    out[..lo].fill(0.0);
    out[hi..].fill(0.0);
    if hi <= lo {
        return;
    }
    // `start` is the input index of position `lo`.
    if stride == 1 {
        out[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
    } else {
        for (i, o) in out[lo..hi].iter_mut().enumerate() {
            *o = src[start + i * stride];
        }
    }
}

/// The transpose of `gather_row`: `dst[x * stride + offset - pad] += col[x]` on `[lo, hi)`.
#[inline]
fn scatter_row(col: &[f32], dst: &mut [f32], lo: usize, hi: usize, stride: usize, start: usize) {
    if hi <= lo {
        return;
    }
    if stride == 1 {
        for (d, c) in dst[start..start + (hi - lo)].iter_mut().zip(&col[lo..hi]) {
            *d += *c;
        }
    } else {
        for (i, c) in col[lo..hi].iter().enumerate() {
            dst[start + i * stride] += *c;
        }
    }
}

/// Copies one image's patches into its column buffer (`g.col_buffer_len()` values).
pub fn im2col(g: &ConvGeom, im: &[f32], col: &mut [f32]) {
    im2col_ld(g, im, col, g.col_spatial());
}

/// Sums one image's column buffer back into image layout (overwriting `im`); overlapping
/// windows accumulate, as in Caffe's col2im.
pub fn col2im(g: &ConvGeom, col: &[f32], im: &mut [f32]) {
    col2im_ld(g, col, im, g.col_spatial());
}

/// `im2col` into rows `ld` values apart (`ld >= g.col_spatial()`; the gap is left as is).
fn im2col_ld(g: &ConvGeom, im: &[f32], col: &mut [f32], ld: usize) {
    if g.kernel.len() == 2 && !g.force_nd {
        im2col_2d(g, im, col, ld);
    } else {
        im2col_nd(g, im, col, ld);
    }
}

/// `col2im` from rows `ld` values apart.
fn col2im_ld(g: &ConvGeom, col: &[f32], im: &mut [f32], ld: usize) {
    if g.kernel.len() == 2 && !g.force_nd {
        col2im_2d(g, col, im, ld);
    } else {
        im[..g.im_dim()].fill(0.0);
        col2im_nd(g, col, im, ld);
    }
}

/// Leading dimension of the CPU's column buffers: the row length, padded by 48 values when
/// rows would start a multiple of 2 KiB apart. The GEMM reads B down its columns, and such
/// strides put every row in the same L1 sets (4K aliasing): at 32x32 outputs the forward ran
/// at 60% of its speed with a padded stride (docs/cpu-perf.md).
fn col_ld(g: &ConvGeom) -> usize {
    let p = g.col_spatial();
    if p >= 512 && p.is_multiple_of(512) {
        p + 48
    } else {
        p
    }
}

/// Values of one image's CPU column buffer (rows `col_ld` apart).
fn col_scratch_len(g: &ConvGeom) -> usize {
    g.im_channels * g.kernel_count() * col_ld(g)
}

/// Copies a short run: fixed-size chunks the compiler turns into vector moves (a
/// `copy_from_slice` of a runtime length becomes a `memmove` call, which cost more than the
/// copy for the 8-64 value rows of im2col).
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    let src = &src[..dst.len()];
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        let v: [f32; 8] = s.try_into().unwrap();
        d.copy_from_slice(&v);
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// `dst += src` over a short run (vectorised, no call).
#[inline(always)]
fn add_run(dst: &mut [f32], src: &[f32]) {
    let src = &src[..dst.len()];
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

/// Layout of the 2-D working copy of an image: zero-padded to `hp x wp` and, for a column
/// stride `sw > 1`, split into `sw` planes by column phase (`plane q` holds padded columns
/// `q, q + sw, q + 2 sw, ...`, `wq` of them), so that every row segment of the column buffer
/// is a contiguous run of one plane, whatever the stride.
#[derive(Clone, Copy)]
pub(super) struct Prepared {
    pub hp: usize,
    pub wq: usize,
    pub sw: usize,
    pub channels: usize,
}

impl Prepared {
    pub fn new(g: &ConvGeom) -> Prepared {
        let hp = g.im_shape[0] + 2 * g.pad[0];
        let wp = g.im_shape[1] + 2 * g.pad[1];
        let sw = g.stride[1];
        Prepared {
            hp,
            wq: wp.div_ceil(sw),
            sw,
            channels: g.im_channels,
        }
    }

    pub fn len(&self) -> usize {
        self.sw * self.channels * self.hp * self.wq
    }

    /// Offset of padded position (row, column) of channel c.
    #[inline(always)]
    pub fn at(&self, c: usize, row: usize, col: usize) -> usize {
        ((col % self.sw * self.channels + c) * self.hp + row) * self.wq + col / self.sw
    }

    /// Whether the image itself already has this layout (no padding, stride 1).
    fn is_identity(g: &ConvGeom) -> bool {
        g.pad[0] == 0 && g.pad[1] == 0 && g.stride[1] == 1
    }
}

/// Calls `seg(col_offset, prepared_offset)` for every row segment of a 2-D column buffer
/// whose rows are `ld` apart: `ow` values, contiguous in the prepared image. Every read is in
/// bounds by the output-size formula, so no padding logic runs per value.
#[inline(always)]
fn for_each_segment_2d(g: &ConvGeom, pr: Prepared, ld: usize, mut seg: impl FnMut(usize, usize)) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let (sh, dh, dw) = (g.stride[0], g.dilation[0], g.dilation[1]);
    let (oh, ow) = (g.col_shape[0], g.col_shape[1]);
    let row_step = sh * pr.wq;
    for c in 0..g.im_channels {
        for ki in 0..kh {
            for kj in 0..kw {
                let r = (c * kh + ki) * kw + kj;
                let src0 = pr.at(c, ki * dh, kj * dw);
                for y in 0..oh {
                    seg(r * ld + y * ow, src0 + y * row_step);
                }
            }
        }
    }
}

/// Writes one image row into the phase planes: column `x` is padded column `x + pad`, which
/// lives in plane `(x + pad) % sw` at index `(x + pad) / sw`; `starts[q]` is where plane q's
/// row begins.
#[inline(always)]
fn deinterleave(src: &[f32], pad: usize, sw: usize, starts: &[usize], buf: &mut [f32]) {
    let (mut q, mut j, mut x) = (pad % sw, pad / sw, 0);
    while x < src.len() && q != 0 {
        buf[starts[q] + j] = src[x];
        x += 1;
        q += 1;
        if q == sw {
            q = 0;
            j += 1;
        }
    }
    let groups = (src.len() - x) / sw;
    let body = &src[x..x + groups * sw];
    if sw == 2 {
        // The common stride: two plane rows as disjoint slices, so the loop has no checks.
        let (p0, p1) = two_rows(buf, starts[0] + j, starts[1] + j, groups);
        for ((x0, x1), pair) in p0.iter_mut().zip(p1.iter_mut()).zip(body.chunks_exact(2)) {
            *x0 = pair[0];
            *x1 = pair[1];
        }
    } else {
        for (g, grp) in body.chunks_exact(sw).enumerate() {
            for (q, v) in grp.iter().enumerate() {
                buf[starts[q] + j + g] = *v;
            }
        }
    }
    j += groups;
    for (q, v) in src[x + groups * sw..].iter().enumerate() {
        buf[starts[q] + j] = *v;
    }
}

/// Two disjoint mutable runs `buf[a..a + n]` and `buf[b..b + n]` (not overlapping).
fn two_rows(buf: &mut [f32], a: usize, b: usize, n: usize) -> (&mut [f32], &mut [f32]) {
    if a < b {
        let (lo, hi) = buf.split_at_mut(b);
        (&mut lo[a..a + n], &mut hi[..n])
    } else {
        let (lo, hi) = buf.split_at_mut(a);
        let first = &mut hi[..n];
        (first, &mut lo[b..b + n])
    }
}

/// The inverse of `deinterleave`: reads one image row back from the phase planes.
#[inline(always)]
fn interleave(buf: &[f32], pad: usize, sw: usize, starts: &[usize], dst: &mut [f32]) {
    let (mut q, mut j, mut x) = (pad % sw, pad / sw, 0);
    while x < dst.len() && q != 0 {
        dst[x] = buf[starts[q] + j];
        x += 1;
        q += 1;
        if q == sw {
            q = 0;
            j += 1;
        }
    }
    let groups = (dst.len() - x) / sw;
    let body = &mut dst[x..x + groups * sw];
    if sw == 2 {
        let (p0, p1) = (
            &buf[starts[0] + j..][..groups],
            &buf[starts[1] + j..][..groups],
        );
        for ((x0, x1), pair) in p0.iter().zip(p1).zip(body.chunks_exact_mut(2)) {
            pair[0] = *x0;
            pair[1] = *x1;
        }
    } else {
        for (g, grp) in body.chunks_exact_mut(sw).enumerate() {
            for (q, d) in grp.iter_mut().enumerate() {
                *d = buf[starts[q] + j + g];
            }
        }
    }
    j += groups;
    for (q, d) in dst[x + groups * sw..].iter_mut().enumerate() {
        *d = buf[starts[q] + j];
    }
}

/// Whether a 2-D convolution is a 1x1 kernel without padding: its column buffer is the image
/// subsampled by the stride, and every image value feeds at most one column value.
fn is_pointwise(g: &ConvGeom) -> bool {
    g.kernel == [1, 1] && g.pad == [0, 0]
}

/// `im2col` of a pointwise convolution (`is_pointwise`): the strided gather, straight from the
/// image. Preparing a stride-2 image (all of it split into column phases) cost more than the
/// GEMM in ResNet's projections.
fn im2col_pointwise(g: &ConvGeom, im: &[f32], col: &mut [f32], ld: usize) {
    let (h, w) = (g.im_shape[0], g.im_shape[1]);
    let (oh, ow) = (g.col_shape[0], g.col_shape[1]);
    let (sh, sw) = (g.stride[0], g.stride[1]);
    Wide::detected().run(
        #[inline(always)]
        || {
            for c in 0..g.im_channels {
                for oy in 0..oh {
                    let src = &im[(c * h + oy * sh) * w..][..w];
                    let dst = &mut col[c * ld + oy * ow..][..ow];
                    if sw == 1 {
                        copy_run(dst, &src[..ow]);
                    } else {
                        for (ox, d) in dst.iter_mut().enumerate() {
                            *d = src[ox * sw];
                        }
                    }
                }
            }
        },
    )
}

/// `col2im` of a pointwise convolution: each image value is 0 or `0 + ` its one column value
/// (the general path's sum into a zeroed image, the same bits).
fn col2im_pointwise(g: &ConvGeom, col: &[f32], im: &mut [f32], ld: usize) {
    let (h, w) = (g.im_shape[0], g.im_shape[1]);
    let (oh, ow) = (g.col_shape[0], g.col_shape[1]);
    let (sh, sw) = (g.stride[0], g.stride[1]);
    Wide::detected().run(
        #[inline(always)]
        || {
            for c in 0..g.im_channels {
                for (y, row) in im[c * h * w..(c + 1) * h * w]
                    .chunks_exact_mut(w)
                    .enumerate()
                {
                    row.fill(0.0);
                    if y % sh != 0 || y / sh >= oh {
                        continue;
                    }
                    let src = &col[c * ld + (y / sh) * ow..][..ow];
                    for (ox, &v) in src.iter().enumerate() {
                        row[ox * sw] += v;
                    }
                }
            }
        },
    )
}

fn im2col_2d(g: &ConvGeom, im: &[f32], col: &mut [f32], ld: usize) {
    if is_pointwise(g) {
        im2col_pointwise(g, im, col, ld);
        return;
    }
    im2col_2d_prepared(g, im, col, ld);
}

fn im2col_2d_prepared(g: &ConvGeom, im: &[f32], col: &mut [f32], ld: usize) {
    let ow = g.col_shape[1];
    let pr = Prepared::new(g);
    let gather = |src: &[f32], col: &mut [f32]| {
        for_each_segment_2d(g, pr, ld, |o, s| {
            copy_run(&mut col[o..o + ow], &src[s..s + ow])
        })
    };
    if Prepared::is_identity(g) {
        gather(im, col);
        return;
    }
    with_prepared(pr.len(), |buf| {
        prepare_2d(g, pr, im, buf);
        gather(buf, col);
    });
}

/// Zeros stored at once by `zero_span`.
const ZEROS: usize = 8;

/// Zeros `buf[from..to]` in stores of `ZEROS` values (a `fill` of a few values is a `memset`
/// call), so it may also zero up to `ZEROS - 1` values past `to` that lie in `buf`: callers
/// write those afterwards.
#[inline(always)]
fn zero_span(buf: &mut [f32], mut from: usize, to: usize) {
    while from < to {
        let Some(z) = buf.get_mut(from..from + ZEROS) else {
            buf[from..to].fill(0.0);
            return;
        };
        let z: &mut [f32; ZEROS] = z.try_into().unwrap();
        *z = [0.0; ZEROS];
        from += ZEROS;
    }
}

/// Writes one image into its prepared layout (`buf`: at least `pr.len()` values; all of it is
/// written, padding included; values past `pr.len()` may be zeroed).
pub(super) fn prepare_2d(g: &ConvGeom, pr: Prepared, im: &[f32], buf: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if pr.sw == 2 && Wide::detected() == Wide::Avx512 {
        assert!(buf.len() >= pr.len() && im.len() >= g.im_dim());
        // SAFETY: the CPU has AVX-512F (`Wide::detected`); the sizes are checked above.
        unsafe { prepare_2d_phases2_avx512(g, pr, im, buf) };
        return;
    }
    Wide::detected().run(
        #[inline(always)]
        || prepare_2d_as(g, pr, im, buf),
    )
}

#[inline(always)]
fn prepare_2d_as(g: &ConvGeom, pr: Prepared, im: &[f32], buf: &mut [f32]) {
    let (h, w, ph, pw) = (g.im_shape[0], g.im_shape[1], g.pad[0], g.pad[1]);
    let mut starts = [0usize; 8];
    let mut starts_vec;
    let starts: &mut [usize] = if pr.sw <= 8 {
        &mut starts[..pr.sw]
    } else {
        starts_vec = vec![0usize; pr.sw];
        &mut starts_vec
    };
    if pr.sw == 1 {
        // One plane per channel, rows of wq = w + 2 pw. The cost is per row (8x8 images have
        // as many rows as 32x32 ones), so a row is one vectorised copy and a store or two of
        // zeros: a row's right padding and the next row's left padding are adjacent, and the
        // zeros stored past them (into the next row, the next plane's top) are overwritten
        // afterwards, in this order.
        let (hp, wq) = (pr.hp, pr.wq);
        for c in 0..g.im_channels {
            let (plane, end) = (c * hp * wq, (c + 1) * hp * wq);
            if h == 0 || w == 0 {
                buf[plane..end].fill(0.0);
                continue;
            }
            zero_span(buf, plane, plane + ph * wq + pw);
            for (y, row) in im[c * h * w..(c + 1) * h * w].chunks_exact(w).enumerate() {
                let at = plane + (ph + y) * wq + pw;
                copy_run(&mut buf[at..at + w], row);
                let gap_end = if y + 1 == h { end } else { at + w + 2 * pw };
                zero_span(buf, at + w, gap_end);
            }
        }
        return;
    }
    buf[..pr.len()].fill(0.0);
    for c in 0..g.im_channels {
        for y in 0..h {
            let src = &im[(c * h + y) * w..(c * h + y + 1) * w];
            for (q, st) in starts.iter_mut().enumerate() {
                *st = ((q * pr.channels + c) * pr.hp + y + ph) * pr.wq;
            }
            deinterleave(src, pw, pr.sw, starts, buf);
        }
    }
}

/// `prepare_2d` for a column stride of 2 with AVX-512F: each padded row is read 32 columns
/// at a time (a masked load, so the padding lanes read nothing and come out zero) and split
/// into its two phase rows by two permutes, whole rows padding included; only the padding
/// rows are zeroed besides. `deinterleave` moves value by value, and a 32-wide row has 15
/// pairs, too few for the compiler's vectors: it took a quarter of ResNet-20's stride-2
/// forward (docs/cpu-perf.md).
///
/// # Safety
/// The CPU must have AVX-512F; `buf` must hold `pr.len()` values and `im` `g.im_dim()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn prepare_2d_phases2_avx512(g: &ConvGeom, pr: Prepared, im: &[f32], buf: &mut [f32]) {
    use std::arch::x86_64::*;
    let (h, w, ph, pw) = (g.im_shape[0], g.im_shape[1], g.pad[0], g.pad[1]);
    let (hp, wq, channels) = (pr.hp, pr.wq, pr.channels);
    debug_assert!(pr.sw == 2 && buf.len() >= pr.len() && im.len() >= channels * h * w);
    for plane in buf[..pr.len()].chunks_exact_mut(hp * wq) {
        plane[..ph * wq].fill(0.0);
        plane[(ph + h) * wq..].fill(0.0);
    }
    // The lanes of 16 columns from `first` that are real: 0 <= first + l < w.
    let real = |first: isize| -> __mmask16 {
        let lo = (-first).clamp(0, 16);
        let hi = (w as isize - first).clamp(0, 16);
        if hi <= lo {
            0
        } else {
            (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as __mmask16
        }
    };
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let out = buf.as_mut_ptr();
    for c in 0..channels {
        for y in 0..h {
            let src = im.as_ptr().add((c * h + y) * w);
            let d0 = out.add((c * hp + y + ph) * wq);
            let d1 = out.add(((channels + c) * hp + y + ph) * wq);
            // Padded columns s..s + 32 go to index s / 2.. of both phase rows.
            for s in (0..2 * wq).step_by(32) {
                let first = s as isize - pw as isize;
                let a = _mm512_maskz_loadu_ps(real(first), src.wrapping_offset(first));
                let b = _mm512_maskz_loadu_ps(real(first + 16), src.wrapping_offset(first + 16));
                let n = (wq - s / 2).min(16);
                let keep = ((1u32 << n) - 1) as __mmask16;
                _mm512_mask_storeu_ps(d0.add(s / 2), keep, _mm512_permutex2var_ps(a, even, b));
                _mm512_mask_storeu_ps(d1.add(s / 2), keep, _mm512_permutex2var_ps(a, odd, b));
            }
        }
    }
}

fn col2im_2d(g: &ConvGeom, col: &[f32], im: &mut [f32], ld: usize) {
    if is_pointwise(g) {
        col2im_pointwise(g, col, im, ld);
        return;
    }
    col2im_2d_prepared(g, col, im, ld);
}

fn col2im_2d_prepared(g: &ConvGeom, col: &[f32], im: &mut [f32], ld: usize) {
    let ow = g.col_shape[1];
    let pr = Prepared::new(g);
    let scatter = |dst: &mut [f32]| {
        for_each_segment_2d(g, pr, ld, |o, s| {
            add_run(&mut dst[s..s + ow], &col[o..o + ow])
        })
    };
    if Prepared::is_identity(g) {
        im[..g.im_dim()].fill(0.0);
        scatter(im);
        return;
    }
    let (h, w, ph, pw) = (g.im_shape[0], g.im_shape[1], g.pad[0], g.pad[1]);
    let mut starts = vec![0usize; pr.sw];
    with_prepared(pr.len(), |buf| {
        buf.fill(0.0);
        scatter(buf);
        for c in 0..g.im_channels {
            for y in 0..h {
                let dst = &mut im[(c * h + y) * w..(c * h + y + 1) * w];
                if pr.sw == 1 {
                    let s = pr.at(c, y + ph, pw);
                    copy_run(dst, &buf[s..s + w]);
                    continue;
                }
                for (q, st) in starts.iter_mut().enumerate() {
                    *st = ((q * pr.channels + c) * pr.hp + y + ph) * pr.wq;
                }
                interleave(&*buf, pw, pr.sw, &starts, dst);
            }
        }
    });
}

/// N-D walk: for every column-buffer row (channel, kernel offsets; rows `ld` apart) and every
/// position of the column side's leading spatial dims, the row segment along the last
/// spatial dim.
#[inline]
fn for_each_row_nd(
    g: &ConvGeom,
    ld: usize,
    mut row: impl FnMut(usize, Option<usize>, usize, usize, usize),
) {
    let nd = g.kernel.len();
    if nd == 0 {
        // No spatial axes: one column, each row is one channel.
        for c in 0..g.im_channels {
            row(c * ld, Some(c), 0, 1, 0);
        }
        return;
    }
    let last = nd - 1;
    let ow = g.col_shape[last];
    let p = g.col_spatial();
    let outer = p / ow.max(1);
    let kcount = g.kernel_count();
    let im_sp = g.im_spatial();
    let w = g.im_shape[last];
    let mut koff = vec![0usize; nd];
    let mut pos = vec![0usize; last];
    for c in 0..g.im_channels {
        for k in 0..kcount {
            let mut rem = k;
            for d in (0..nd).rev() {
                koff[d] = rem % g.kernel[d];
                rem /= g.kernel[d];
            }
            let r = c * kcount + k;
            let offset = koff[last] * g.dilation[last];
            let (lo, hi) = valid_range(ow, g.stride[last], offset, g.pad[last], w);
            let start = (lo * g.stride[last] + offset).saturating_sub(g.pad[last]);
            pos.fill(0);
            for o in 0..outer {
                let mut src = Some(0usize);
                for d in 0..last {
                    let i = (pos[d] * g.stride[d] + koff[d] * g.dilation[d]) as isize
                        - g.pad[d] as isize;
                    if i < 0 || i >= g.im_shape[d] as isize {
                        src = None;
                        break;
                    }
                    src = src.map(|s| s * g.im_shape[d] + i as usize);
                }
                let src = src.map(|s| c * im_sp + s * w);
                row(r * ld + o * ow, src, lo, hi, start);
                for d in (0..last).rev() {
                    pos[d] += 1;
                    if pos[d] < g.col_shape[d] {
                        break;
                    }
                    pos[d] = 0;
                }
            }
        }
    }
}

fn im2col_nd(g: &ConvGeom, im: &[f32], col: &mut [f32], ld: usize) {
    let nd = g.kernel.len();
    let ow = if nd == 0 { 1 } else { g.col_shape[nd - 1] };
    let w = if nd == 0 { 1 } else { g.im_shape[nd - 1] };
    let sw = if nd == 0 { 1 } else { g.stride[nd - 1] };
    for_each_row_nd(g, ld, |base, src, lo, hi, start| {
        let out = &mut col[base..base + ow];
        match src {
            None => out.fill(0.0),
            Some(s) => gather_row(out, &im[s..s + w], lo, hi, sw, start),
        }
    });
}

fn col2im_nd(g: &ConvGeom, col: &[f32], im: &mut [f32], ld: usize) {
    let nd = g.kernel.len();
    let ow = if nd == 0 { 1 } else { g.col_shape[nd - 1] };
    let w = if nd == 0 { 1 } else { g.im_shape[nd - 1] };
    let sw = if nd == 0 { 1 } else { g.stride[nd - 1] };
    for_each_row_nd(g, ld, |base, src, lo, hi, start| {
        if let Some(s) = src {
            scatter_row(&col[base..base + ow], &mut im[s..s + w], lo, hi, sw, start);
        }
    });
}

/// How an image's products run: on the calling thread (the batch already runs one image per
/// rayon task), or spread over threads when the product is large enough (`sgemm`'s rule).
#[derive(Clone, Copy)]
enum Gemm {
    Serial,
    Threaded,
}

impl Gemm {
    /// `sgemm_ld` under this policy (same bits either way).
    #[allow(clippy::too_many_arguments)]
    fn run(
        self,
        (ta, tb): (bool, bool),
        (m, n, k): (usize, usize, usize),
        (a, lda): (&[f32], usize),
        (b, ldb): (&[f32], usize),
        beta: f32,
        (c, ldc): (&mut [f32], usize),
    ) {
        let par = matches!(self, Gemm::Threaded) && worth_threads(m, n, k);
        sgemm_ld(par, ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc);
    }
}

/// Whether a batch is worth spreading over threads one image per task.
fn per_image_parallel(g: &ConvGeom, num: usize) -> bool {
    num >= 2 && num * g.work_per_image() >= PAR_MIN_WORK
}

/// `y = W * col(x)` for one image, per group (Caffe's `forward_cpu_gemm`).
fn forward_one(
    g: &ConvGeom,
    gemm: Gemm,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (m, k, p) = (g.col_channels / g.group, g.kernel_dim(), g.col_spatial());
    let products = |col: &[f32], ld: usize, y: &mut [f32]| {
        for gi in 0..g.group {
            gemm.run(
                (false, false),
                (m, p, k),
                (&w[gi * m * k..], k),
                (&col[gi * k * ld..], ld),
                0.0,
                (&mut y[gi * m * p..], p),
            );
        }
    };
    if g.is_1x1() {
        products(x, p, y);
    } else {
        let ld = col_ld(g);
        with_scratch(col_scratch_len(g), |col| {
            im2col_ld(g, x, col, ld);
            products(col, ld, y);
        });
    }
    if let Some(b) = bias {
        add_bias_one(b, p, y);
    }
}

fn add_bias_one(bias: &[f32], spatial: usize, y: &mut [f32]) {
    for (row, &b) in y.chunks_exact_mut(spatial).zip(bias) {
        row.iter_mut().for_each(|v| *v += b);
    }
}

/// Forward of a batch: `y_n = W * im2col(x_n) (+ bias)` for `num` images; `x` holds
/// `num * g.im_dim()` values, `y` `num * g.col_dim()`, `w` `g.weight_len()`, `bias`
/// `g.col_channels`. (A deconvolution's input gradient is this without bias.)
pub fn conv_forward(
    g: &ConvGeom,
    num: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (id, od) = (g.im_dim(), g.col_dim());
    if od == 0 || num == 0 {
        return;
    }
    if id == 0 {
        // An empty input (a zero spatial dim under padding) convolves to the bias alone.
        y[..num * od].fill(0.0);
        if let Some(b) = bias {
            y[..num * od]
                .chunks_mut(od)
                .for_each(|yn| add_bias_one(b, g.col_spatial(), yn));
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if direct::forward_pays(g) && direct_enabled() {
        let plan = direct::ForwardPlan::new(g);
        let packed = plan.pack(g, w);
        direct_forward_batches(g, num, (x, id), (y, od), |xs, ys| {
            plan.run(g, &packed, ys.len() / od, xs, ys);
            if let Some(b) = bias {
                ys.chunks_mut(od)
                    .for_each(|yn| add_bias_one(b, g.col_spatial(), yn));
            }
        });
        return;
    }
    if per_image_parallel(g, num) {
        y[..num * od]
            .par_chunks_mut(od)
            .zip(x[..num * id].par_chunks(id))
            .for_each(|(yn, xn)| forward_one(g, Gemm::Serial, xn, w, bias, yn));
    } else {
        for (yn, xn) in y[..num * od].chunks_mut(od).zip(x.chunks(id.max(1))) {
            forward_one(g, Gemm::Threaded, xn, w, bias, yn);
        }
    }
}

/// Runs `f(inputs, outputs)` of the direct forward kernels over a batch of `num` images
/// (`x`: `num` inputs of `id` values, `y`: `num` outputs of `od`), a few images per call:
/// the kernels group the rows of several images by the kernel rows they need
/// (`conv_direct::ForwardPlan::run`). The outputs are the same whatever the grouping; it
/// takes up to 3 images per call where that leaves every thread 2 calls or more.
#[cfg(target_arch = "x86_64")]
fn direct_forward_batches(
    g: &ConvGeom,
    num: usize,
    (x, id): (&[f32], usize),
    (y, od): (&mut [f32], usize),
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    let (x, y) = (&x[..num * id], &mut y[..num * od]);
    if per_image_parallel(g, num) {
        let per = (num / (2 * rayon::current_num_threads())).clamp(1, 3);
        y.par_chunks_mut(per * od)
            .zip(x.par_chunks(per * id))
            .for_each(|(ys, xs)| f(xs, ys));
    } else {
        f(x, y);
    }
}

/// `dx = col2im(W^T * dy)` for one image (Caffe's `backward_cpu_gemm`).
fn backward_input_one(g: &ConvGeom, gemm: Gemm, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (m, k, p) = (g.col_channels / g.group, g.kernel_dim(), g.col_spatial());
    let products = |col: &mut [f32], ld: usize| {
        for gi in 0..g.group {
            gemm.run(
                (true, false),
                (k, p, m),
                (&w[gi * m * k..], k),
                (&dy[gi * m * p..], p),
                0.0,
                (&mut col[gi * k * ld..], ld),
            );
        }
    };
    if g.is_1x1() {
        products(dx, p);
    } else {
        let ld = col_ld(g);
        with_scratch(col_scratch_len(g), |col| {
            products(col, ld);
            col2im_ld(g, col, dx, ld);
        });
    }
}

/// Input gradient of a batch, overwriting `dx` (`num * g.im_dim()` values) from `dy`
/// (`num * g.col_dim()`). (A deconvolution's forward is this, plus its bias.)
pub fn conv_backward_input(g: &ConvGeom, num: usize, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (id, od) = (g.im_dim(), g.col_dim());
    if id == 0 || num == 0 {
        return;
    }
    if od == 0 {
        dx[..num * id].fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(t) = direct::input_grad_geom(g).filter(|_| direct_enabled()) {
        // The input gradient is the forward of `t` over dy with flipped weights.
        let mut flipped = Vec::new();
        direct::flip_weights(g, w, &mut flipped);
        let plan = direct::ForwardPlan::new(&t);
        let packed = plan.pack(&t, &flipped);
        direct_forward_batches(g, num, (dy, od), (dx, id), |dys, dxs| {
            plan.run(&t, &packed, dxs.len() / id, dys, dxs)
        });
        return;
    }
    if per_image_parallel(g, num) {
        dx[..num * id]
            .par_chunks_mut(id)
            .zip(dy[..num * od].par_chunks(od))
            .for_each(|(dxn, dyn_)| backward_input_one(g, Gemm::Serial, dyn_, w, dxn));
    } else {
        for (dxn, dyn_) in dx[..num * id].chunks_mut(id).zip(dy.chunks(od.max(1))) {
            backward_input_one(g, Gemm::Threaded, dyn_, w, dxn);
        }
    }
}

/// `dwt (+)= col(x) * dy^T` for one image, per group: the weight gradient *transposed*
/// (`kernel_dim x m` per group), because the product with the long reduction over positions
/// runs much faster with the wide column matrix on the left. `beta` 0 starts a fresh sum.
fn weight_grad_one(g: &ConvGeom, gemm: Gemm, x: &[f32], dy: &[f32], beta: f32, dwt: &mut [f32]) {
    let (m, k, p) = (g.col_channels / g.group, g.kernel_dim(), g.col_spatial());
    let products = |col: &[f32], ld: usize, dwt: &mut [f32]| {
        for gi in 0..g.group {
            gemm.run(
                (false, true),
                (k, m, p),
                (&col[gi * k * ld..], ld),
                (&dy[gi * m * p..], p),
                beta,
                (&mut dwt[gi * k * m..], m),
            );
        }
    };
    if g.is_1x1() {
        products(x, p, dwt);
    } else {
        let ld = col_ld(g);
        with_scratch(col_scratch_len(g), |col| {
            im2col_ld(g, x, col, ld);
            products(col, ld, dwt);
        });
    }
}

/// How many image chunks the weight gradient is split into: a function of the shapes only,
/// so the summation order (hence the bits) never depends on the thread count.
pub fn weight_grad_chunks(g: &ConvGeom, num: usize) -> usize {
    if !per_image_parallel(g, num) {
        return 1;
    }
    let by_memory = (PARTIALS_BUDGET / g.weight_len().max(1)).max(1);
    num.min(MAX_WEIGHT_CHUNKS).min(by_memory)
}

/// Weight gradient of a batch, accumulated into `dw` (`+=`): `sum_n dy_n * im2col(x_n)^T`.
/// With `col_bias`, also the column side's per-channel sums (a convolution's bias gradient,
/// `g.col_channels` values, `+=`): the direct kernels take them from the dy they pack anyway
/// (`conv_direct::weight_grad_chunk`), the GEMM path with `channel_bias_grad`.
/// `partials` is scratch the caller keeps between calls: one transposed partial sum per
/// image chunk (and its bias sums), added to `dw` in chunk order.
pub fn conv_weight_grad(
    g: &ConvGeom,
    num: usize,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    col_bias: Option<&mut [f32]>,
    partials: &mut Vec<f32>,
) {
    let (id, od, wl) = (g.im_dim(), g.col_dim(), g.weight_len());
    #[cfg(target_arch = "x86_64")]
    let direct = direct::handles(g) && direct_enabled();
    #[cfg(not(target_arch = "x86_64"))]
    let direct = false;
    let col_bias = match col_bias {
        Some(db) if !direct => {
            channel_bias_grad(num, g.col_channels, g.col_spatial(), dy, db);
            None
        }
        other => other,
    };
    if num == 0 || wl == 0 || id == 0 || od == 0 {
        if let Some(db) = col_bias {
            // An empty input still has a bias gradient.
            channel_bias_grad(num, g.col_channels, g.col_spatial(), dy, db);
        }
        return;
    }
    let nb = if col_bias.is_some() {
        g.col_channels
    } else {
        0
    };
    let stride = wl + nb;
    let chunks = weight_grad_chunks(g, num);
    let per = num.div_ceil(chunks);
    let chunks = num.div_ceil(per);
    if partials.len() < chunks * stride {
        partials.resize(chunks * stride, 0.0);
    }
    let chunk_sum = |gemm: Gemm, part: &mut [f32], xs: &[f32], dys: &[f32]| {
        #[cfg(target_arch = "x86_64")]
        if direct {
            let (w, b) = part.split_at_mut(wl);
            direct::weight_grad_chunk(g, xs.len() / id, xs, dys, w, (nb > 0).then_some(b));
            return;
        }
        for (i, (xn, dyn_)) in xs.chunks(id).zip(dys.chunks(od)).enumerate() {
            let beta = if i == 0 { 0.0 } else { 1.0 };
            weight_grad_one(g, gemm, xn, dyn_, beta, part);
        }
    };
    if chunks == 1 {
        chunk_sum(
            Gemm::Threaded,
            &mut partials[..stride],
            &x[..num * id],
            &dy[..num * od],
        );
    } else {
        partials[..chunks * stride]
            .par_chunks_mut(stride)
            .zip(x[..num * id].par_chunks(per * id))
            .zip(dy[..num * od].par_chunks(per * od))
            .for_each(|((part, xs), dys)| chunk_sum(Gemm::Serial, part, xs, dys));
    }
    // dw[gi][mi][ki] += sum_c part_c[gi][ki][mi]: the partials summed in chunk order into the
    // first one (contiguous, vectorised), then added transposed; the bias sums likewise.
    let (m, k) = (g.col_channels / g.group, g.kernel_dim());
    let (first, rest) = partials[..chunks * stride].split_at_mut(stride);
    let sum_into_first = |i0: usize, out: &mut [f32]| {
        for c in 0..chunks - 1 {
            let part = &rest[c * stride + i0..c * stride + i0 + out.len()];
            for (o, v) in out.iter_mut().zip(part) {
                *o += *v;
            }
        }
    };
    const SPAN: usize = 4096;
    if stride * chunks >= PAR_MIN_WORK {
        first
            .par_chunks_mut(SPAN)
            .enumerate()
            .for_each(|(i, out)| sum_into_first(i * SPAN, out));
    } else {
        sum_into_first(0, first);
    }
    let (total, bias_total) = first.split_at(wl);
    for (r, out) in dw[..wl].chunks_mut(k).enumerate() {
        let (gi, mi) = (r / m, r % m);
        let base = gi * k * m + mi;
        for (ki, o) in out.iter_mut().enumerate() {
            *o += total[base + ki * m];
        }
    }
    if let Some(db) = col_bias {
        for (d, v) in db.iter_mut().zip(bias_total) {
            *d += *v;
        }
    }
}

/// Sum of a slice in a fixed order (eight interleaved lanes, then the lanes in order), so
/// it vectorises and stays deterministic.
pub fn sum_fixed(v: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut it = v.chunks_exact(8);
    for c in &mut it {
        for i in 0..8 {
            lanes[i] += c[i];
        }
    }
    let mut s = 0f32;
    for l in lanes {
        s += l;
    }
    for &r in it.remainder() {
        s += r;
    }
    s
}

/// `sum_fixed` of `N` slices of one length at once: the same additions, in `N` independent
/// chains (one chain's additions wait on each other; several keep the adder busy).
fn sum_fixed_n<const N: usize>(v: [&[f32]; N]) -> [f32; N] {
    let len = v[0].len();
    assert!(v.iter().all(|s| s.len() == len));
    let mut lanes = [[0f32; 8]; N];
    let body = len / 8 * 8;
    for at in (0..body).step_by(8) {
        for (l, s) in lanes.iter_mut().zip(&v) {
            let c: &[f32; 8] = s[at..at + 8].try_into().unwrap();
            for i in 0..8 {
                l[i] += c[i];
            }
        }
    }
    std::array::from_fn(|j| {
        let mut s = 0f32;
        for l in lanes[j] {
            s += l;
        }
        for &r in &v[j][body..] {
            s += r;
        }
        s
    })
}

/// `y[n][c][p] += bias[c]` for `num` images of `channels x spatial`.
pub fn add_channel_bias(num: usize, channels: usize, spatial: usize, bias: &[f32], y: &mut [f32]) {
    let dim = channels * spatial;
    if dim == 0 {
        return;
    }
    let y = &mut y[..num * dim];
    if num * dim >= PAR_MIN_WORK && num >= 2 {
        y.par_chunks_mut(dim)
            .for_each(|yn| add_bias_one(bias, spatial, yn));
    } else {
        y.chunks_mut(dim)
            .for_each(|yn| add_bias_one(bias, spatial, yn));
    }
}

/// `db[c] += sum_{n,p} dy[n][c][p]` (Caffe's per-image gemv with a ones vector), each
/// channel summed image by image in order.
pub fn channel_bias_grad(num: usize, channels: usize, spatial: usize, dy: &[f32], db: &mut [f32]) {
    let dim = channels * spatial;
    let one = |c: usize, d: &mut f32| {
        let run = |n: usize| &dy[n * dim + c * spatial..n * dim + (c + 1) * spatial];
        let mut s = 0f32;
        // Four images' sums at a time, added to `s` in image order.
        let quads = num / 4 * 4;
        for n in (0..quads).step_by(4) {
            for v in sum_fixed_n([run(n), run(n + 1), run(n + 2), run(n + 3)]) {
                s += v;
            }
        }
        for n in quads..num {
            s += sum_fixed(run(n));
        }
        *d += s;
    };
    if num * dim >= PAR_MIN_WORK {
        db[..channels]
            .par_iter_mut()
            .enumerate()
            .for_each(|(c, d)| one(c, d));
    } else {
        db[..channels]
            .iter_mut()
            .enumerate()
            .for_each(|(c, d)| one(c, d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::blas::{sgemm, sgemm_serial};
    use crate::backend::cpu::wide::bits;

    #[allow(clippy::too_many_arguments)]
    fn geom(
        c: usize,
        m: usize,
        group: usize,
        im: &[usize],
        k: &[usize],
        p: &[usize],
        s: &[usize],
        d: &[usize],
    ) -> ConvGeom {
        let col_shape = (0..im.len())
            .map(|i| conv_out_size(im[i], k[i], p[i], s[i], d[i]).unwrap())
            .collect();
        ConvGeom {
            im_channels: c,
            col_channels: m,
            group,
            im_shape: im.to_vec(),
            col_shape,
            kernel: k.to_vec(),
            pad: p.to_vec(),
            stride: s.to_vec(),
            dilation: d.to_vec(),
            force_nd: false,
        }
    }

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.7133).sin()).collect()
    }

    /// Direct N-D convolution, the definition the gemm formulation must reproduce.
    fn naive_conv(g: &ConvGeom, x: &[f32], w: &[f32]) -> Vec<f32> {
        let nd = g.kernel.len();
        let (cg, mg) = (g.im_channels / g.group, g.col_channels / g.group);
        let kc = g.kernel_count();
        let p = g.col_spatial();
        let mut y = vec![0f32; g.col_dim()];
        for o in 0..g.col_channels {
            let gi = o / mg;
            for pos in 0..p {
                let mut opos = vec![0; nd];
                let mut r = pos;
                for d in (0..nd).rev() {
                    opos[d] = r % g.col_shape[d];
                    r /= g.col_shape[d];
                }
                let mut s = 0f64;
                for ci in 0..cg {
                    let c = gi * cg + ci;
                    for k in 0..kc {
                        let mut kk = vec![0; nd];
                        let mut r = k;
                        for d in (0..nd).rev() {
                            kk[d] = r % g.kernel[d];
                            r /= g.kernel[d];
                        }
                        let mut idx = 0usize;
                        let mut ok = true;
                        for d in 0..nd {
                            let i = (opos[d] * g.stride[d] + kk[d] * g.dilation[d]) as isize
                                - g.pad[d] as isize;
                            if i < 0 || i >= g.im_shape[d] as isize {
                                ok = false;
                            }
                            idx = idx * g.im_shape[d] + i.max(0) as usize;
                        }
                        if ok {
                            s += x[c * g.im_spatial() + idx] as f64
                                * w[(o * cg + ci) * kc + k] as f64;
                        }
                    }
                }
                y[o * p + pos] = s as f32;
            }
        }
        y
    }

    fn configs() -> Vec<ConvGeom> {
        vec![
            geom(3, 4, 1, &[7, 6], &[3, 3], &[1, 1], &[1, 1], &[1, 1]),
            geom(4, 6, 2, &[9, 8], &[3, 2], &[2, 0], &[2, 3], &[1, 2]),
            geom(2, 3, 1, &[5, 9], &[1, 4], &[0, 3], &[1, 2], &[1, 1]),
            geom(
                2,
                2,
                1,
                &[4, 5, 6],
                &[2, 3, 2],
                &[1, 0, 1],
                &[1, 2, 2],
                &[2, 1, 1],
            ),
            geom(3, 2, 1, &[11], &[3], &[2], &[3], &[2]),
            geom(2, 4, 2, &[3, 3], &[1, 1], &[0, 0], &[1, 1], &[1, 1]),
            geom(2, 3, 1, &[2, 2], &[3, 3], &[1, 1], &[1, 1], &[1, 1]),
            geom(2, 3, 1, &[7, 11], &[3, 3], &[1, 2], &[2, 4], &[1, 1]),
            geom(1, 2, 1, &[5, 20], &[2, 3], &[0, 1], &[1, 9], &[1, 1]),
            geom(3, 2, 1, &[6, 7], &[1, 1], &[0, 0], &[2, 2], &[1, 1]),
            // 512 output positions: column buffers with a padded leading dimension.
            geom(2, 3, 1, &[32, 16], &[3, 3], &[1, 1], &[1, 1], &[1, 1]),
            // Same-size outputs with 8+ input channels per group: the direct input gradient
            // (11 wide: a short vector per row; dilated; grouped).
            geom(8, 8, 1, &[9, 11], &[3, 3], &[1, 1], &[1, 1], &[1, 1]),
            geom(9, 10, 1, &[7, 10], &[3, 3], &[2, 2], &[1, 1], &[2, 2]),
            geom(16, 12, 2, &[5, 9], &[3, 5], &[1, 2], &[1, 1], &[1, 1]),
            // 1200 taps: the direct forward in two passes over the taps.
            geom(48, 3, 1, &[6, 6], &[5, 5], &[2, 2], &[1, 1], &[1, 1]),
            // CIFAR-10's conv3 shape, fewer channels, and a dilated 3x5 kernel with 20 output
            // channels: the channel tiles' weight gradient.
            geom(6, 16, 1, &[8, 8], &[5, 5], &[2, 2], &[1, 1], &[1, 1]),
            geom(4, 20, 1, &[10, 9], &[3, 5], &[1, 2], &[1, 1], &[1, 2]),
        ]
    }

    #[test]
    fn gemm_forward_matches_direct_convolution() {
        for g in configs() {
            let x = values(g.im_dim(), 0.3);
            let w = values(g.weight_len(), 1.9);
            let want = naive_conv(&g, &x, &w);
            for force_nd in [false, true] {
                let g = ConvGeom {
                    force_nd,
                    ..g.clone()
                };
                let mut y = vec![f32::NAN; g.col_dim()];
                conv_forward(&g, 1, &x, &w, None, &mut y);
                for (a, b) in y.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-4, "{g:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn pointwise_columns_are_the_general_paths_bits() {
        let mut seen = 0;
        for g in configs().into_iter().chain([
            geom(16, 32, 1, &[32, 32], &[1, 1], &[0, 0], &[2, 2], &[1, 1]),
            geom(3, 2, 1, &[7, 9], &[1, 1], &[0, 0], &[3, 2], &[1, 1]),
            geom(2, 2, 1, &[5, 19], &[1, 1], &[0, 0], &[1, 1], &[1, 1]),
        ]) {
            if g.kernel.len() != 2 || !is_pointwise(&g) {
                continue;
            }
            seen += 1;
            let ld = col_ld(&g);
            let x = values(g.im_dim(), 0.7);
            // Negative zeros in the column: the general path's sum turns them into +0.
            let mut c = values(g.col_buffer_len().max(col_scratch_len(&g)), 1.3);
            c.iter_mut().step_by(5).for_each(|v| *v = -0.0);
            let (mut a, mut b) = (
                vec![f32::NAN; col_scratch_len(&g)],
                vec![f32::NAN; col_scratch_len(&g)],
            );
            im2col_pointwise(&g, &x, &mut a, ld);
            im2col_2d_prepared(&g, &x, &mut b, ld);
            assert_eq!(bits(&a), bits(&b), "im2col {g:?}");
            let (mut a, mut b) = (vec![f32::NAN; g.im_dim()], vec![f32::NAN; g.im_dim()]);
            col2im_pointwise(&g, &c, &mut a, ld);
            col2im_2d_prepared(&g, &c, &mut b, ld);
            assert_eq!(bits(&a), bits(&b), "col2im {g:?}");
        }
        assert!(seen >= 4);
    }

    #[test]
    fn col2im_is_the_transpose_of_im2col() {
        // <im2col(x), c> == <x, col2im(c)> for random x, c.
        for g in configs() {
            for force_nd in [false, true] {
                let g = ConvGeom {
                    force_nd,
                    ..g.clone()
                };
                let x = values(g.im_dim(), 0.1);
                let c = values(g.col_buffer_len(), 2.2);
                let mut col = vec![f32::NAN; g.col_buffer_len()];
                im2col(&g, &x, &mut col);
                let mut im = vec![f32::NAN; g.im_dim()];
                col2im(&g, &c, &mut im);
                let lhs: f64 = col.iter().zip(&c).map(|(a, b)| *a as f64 * *b as f64).sum();
                let rhs: f64 = x.iter().zip(&im).map(|(a, b)| *a as f64 * *b as f64).sum();
                assert!((lhs - rhs).abs() < 1e-3, "{g:?}: {lhs} vs {rhs}");
            }
        }
    }

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    #[test]
    fn gradients_are_adjoints_of_the_direct_convolution() {
        // conv(x, w) is bilinear: <dy, conv(x, v)> = <dW, v> and <dy, conv(u, w)> = <dx, u>.
        for g in configs() {
            let num = 3;
            let x = values(num * g.im_dim(), 0.4);
            let w = values(g.weight_len(), 1.1);
            let dy = values(num * g.col_dim(), 2.7);
            let (v, u) = (values(g.weight_len(), 5.5), values(num * g.im_dim(), 3.3));
            let mut dw = vec![0f32; g.weight_len()];
            conv_weight_grad(&g, num, &x, &dy, &mut dw, None, &mut Vec::new());
            let mut dx = vec![f32::NAN; num * g.im_dim()];
            conv_backward_input(&g, num, &dy, &w, &mut dx);
            let (mut want_w, mut want_x) = (0f64, 0f64);
            for n in 0..num {
                let xs = &x[n * g.im_dim()..(n + 1) * g.im_dim()];
                let us = &u[n * g.im_dim()..(n + 1) * g.im_dim()];
                let dys = &dy[n * g.col_dim()..(n + 1) * g.col_dim()];
                want_w += dot(dys, &naive_conv(&g, xs, &v));
                want_x += dot(dys, &naive_conv(&g, us, &w));
            }
            let (got_w, got_x) = (dot(&dw, &v), dot(&dx, &u));
            assert!(
                (got_w - want_w).abs() < 1e-3 * want_w.abs().max(1.0),
                "{g:?}: {got_w} vs {want_w}"
            );
            assert!(
                (got_x - want_x).abs() < 1e-3 * want_x.abs().max(1.0),
                "{g:?}: {got_x} vs {want_x}"
            );
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn stride_2_phase_planes_match_the_value_by_value_split() {
        if Wide::detected() != Wide::Avx512 {
            println!("SKIPPED: this CPU lacks AVX-512, the vector split never runs");
            return;
        }
        // Widths under, at and past 32 columns, odd and even, padding 0 to 3 (wider than
        // a 16-lane half at none), rows of padding above and below, several channels.
        for (c, h, w, ph, pw) in [
            (3, 32, 32, 1, 1),
            (2, 16, 16, 1, 1),
            (2, 5, 7, 0, 0),
            (3, 4, 31, 2, 3),
            (1, 3, 33, 1, 2),
            (2, 6, 70, 3, 1),
            (1, 2, 1, 1, 3),
        ] {
            let g = geom(c, 4, 1, &[h, w], &[3, 3], &[ph, pw], &[2, 2], &[1, 1]);
            let pr = Prepared::new(&g);
            assert_eq!(pr.sw, 2);
            let im = values(g.im_dim(), 0.3);
            let mut want = vec![f32::NAN; pr.len()];
            prepare_2d_as(&g, pr, &im, &mut want);
            let mut got = vec![f32::NAN; pr.len()];
            prepare_2d(&g, pr, &im, &mut got);
            assert_eq!(bits(&got), bits(&want), "{c}x{h}x{w}, pad {ph} {pw}");
        }
    }

    #[test]
    fn direct_and_gemm_paths_agree() {
        // Whatever path the CPU takes by default (the direct kernels where they apply),
        // against the im2col + GEMM path, on batches that split the weight gradient in chunks.
        #[cfg(target_arch = "x86_64")]
        if direct::cpu_supported() {
            let n = |f: &dyn Fn(&ConvGeom) -> bool| configs().iter().filter(|g| f(g)).count();
            assert!(n(&|g| direct::handles(g)) >= 10);
            assert!(n(&|g| direct::forward_pays(g)) >= 2);
            assert!(n(&|g| direct::input_grad_geom(g).is_some()) >= 3);
            assert!(n(&|g| direct::handles(g) && g.kernel_dim() > 1024) == 1);
            if direct::channel_tiles_supported() {
                let wgrad = |g: &ConvGeom| direct::handles(g).then(|| direct::weight_grad_tiles(g));
                let channels =
                    |g: &ConvGeom| matches!(wgrad(g), Some(direct::Tiles::Channels { .. }));
                assert!(n(&channels) >= 2);
                assert!(n(&|g| wgrad(g) == Some(direct::Tiles::WideRows)) >= 2);
            }
        }
        for g in configs() {
            let num = 5;
            let x = values(num * g.im_dim(), 0.8);
            let w = values(g.weight_len(), 1.7);
            let dy = values(num * g.col_dim(), 2.9);
            let run = |gemm_only: bool| {
                set_gemm_only(gemm_only);
                let mut y = vec![f32::NAN; num * g.col_dim()];
                conv_forward(&g, num, &x, &w, None, &mut y);
                let mut dx = vec![f32::NAN; num * g.im_dim()];
                conv_backward_input(&g, num, &dy, &w, &mut dx);
                let mut dw = vec![0.5f32; g.weight_len()];
                let mut db = vec![0.25f32; g.col_channels];
                conv_weight_grad(&g, num, &x, &dy, &mut dw, Some(&mut db), &mut Vec::new());
                set_gemm_only(false);
                (y, dx, dw, db)
            };
            let (a, b) = (run(false), run(true));
            let mut want_db = vec![0.25f32; g.col_channels];
            channel_bias_grad(num, g.col_channels, g.col_spatial(), &dy, &mut want_db);
            assert_eq!(b.3, want_db, "{g:?}: the GEMM path's bias gradient");
            for (what, got, want) in [
                ("y", &a.0, &b.0),
                ("dx", &a.1, &b.1),
                ("dw", &a.2, &b.2),
                ("db", &a.3, &b.3),
            ] {
                let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                for (p, q) in got.iter().zip(want.iter()) {
                    assert!((p - q).abs() <= 1e-5 * scale, "{g:?} {what}: {p} vs {q}");
                }
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn direct_forward_gives_the_same_bits_however_images_are_grouped() {
        // 5x5, pad 2, 8x8: direct forward and input gradient, row classes of one vector a
        // row. 13 images run 3, 3, 3, 3, 1 per call on one thread, 3 or 2 per call on 2 and 3
        // threads, and one at a time. With 8 input channels the row tiles run the forward; with
        // 24 (600 taps), the channel tiles; their 15% of products with padding columns make
        // channel tiles of both weight gradients. At 16x16 with a 3x3 kernel (4% padding
        // columns), the wide row tiles run all three. That is on a CPU with AVX-512VL; without
        // it, the row tiles run everything.
        use direct::Tiles::*;
        for (c, hw, k, tiles) in [
            (8, 8, 5, (Rows, Channels { vectors: 4 })),
            (24, 8, 5, (Channels { vectors: 4 }, Channels { vectors: 4 })),
            (8, 16, 3, (WideRows, WideRows)),
        ] {
            let g = geom(
                c,
                32,
                1,
                &[hw, hw],
                &[k, k],
                &[k / 2, k / 2],
                &[1, 1],
                &[1, 1],
            );
            direct_forward_grouping_case(&g, tiles);
        }
    }

    /// `direct_forward_gives_the_same_bits_however_images_are_grouped` for one geometry,
    /// whose forward and weight gradient take `tiles` on a CPU with AVX-512VL (row tiles
    /// without it).
    #[cfg(target_arch = "x86_64")]
    fn direct_forward_grouping_case(g: &ConvGeom, tiles: (direct::Tiles, direct::Tiles)) {
        let g = g.clone();
        let num = 13;
        if direct::cpu_supported() {
            assert!(direct::forward_pays(&g) && direct::input_grad_geom(&g).is_some());
            let want = if direct::channel_tiles_supported() {
                tiles
            } else {
                println!("SKIPPED (AVX-512 tiles): this CPU lacks AVX-512VL; row tiles ran {g:?}");
                (direct::Tiles::Rows, direct::Tiles::Rows)
            };
            let got = (
                direct::ForwardPlan::new(&g).tiles(),
                direct::weight_grad_tiles(&g),
            );
            assert_eq!(got, want, "{g:?}");
        }
        assert!(per_image_parallel(&g, num));
        let x = values(num * g.im_dim(), 0.3);
        let w = values(g.weight_len(), 1.4);
        let b = values(g.col_channels, 2.2);
        let dy = values(num * g.col_dim(), 0.8);
        let run = |threads: usize, num: usize, x: &[f32], dy: &[f32]| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut y = vec![f32::NAN; num * g.col_dim()];
                conv_forward(&g, num, x, &w, Some(&b), &mut y);
                let mut dx = vec![f32::NAN; num * g.im_dim()];
                conv_backward_input(&g, num, dy, &w, &mut dx);
                (y, dx)
            })
        };
        let (y1, dx1) = run(1, num, &x, &dy);
        for threads in [2, 3] {
            let (y, dx) = run(threads, num, &x, &dy);
            assert_eq!((&y, &dx), (&y1, &dx1), "{threads} threads");
        }
        // The weight gradient (whatever the tiles) on 1, 2 and 3 threads.
        let dw = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut dw = vec![0.5f32; g.weight_len()];
                let mut db = vec![0.25f32; g.col_channels];
                conv_weight_grad(&g, num, &x, &dy, &mut dw, Some(&mut db), &mut Vec::new());
                (dw, db)
            })
        };
        let dw1 = dw(1);
        for threads in [2, 3] {
            assert_eq!(dw(threads), dw1, "weight gradient on {threads} threads");
        }
        for n in 0..num {
            let xs = &x[n * g.im_dim()..(n + 1) * g.im_dim()];
            let dys = &dy[n * g.col_dim()..(n + 1) * g.col_dim()];
            let (yn, dxn) = run(1, 1, xs, dys);
            assert_eq!(
                &y1[n * g.col_dim()..(n + 1) * g.col_dim()],
                &yn[..],
                "y of image {n}"
            );
            assert_eq!(
                &dx1[n * g.im_dim()..(n + 1) * g.im_dim()],
                &dxn[..],
                "dx of image {n}"
            );
        }
    }

    #[test]
    fn batched_paths_are_deterministic_and_agree() {
        let g = geom(8, 16, 2, &[12, 10], &[3, 3], &[1, 1], &[1, 1], &[1, 1]);
        let num = 7;
        let x = values(num * g.im_dim(), 0.5);
        let w = values(g.weight_len(), 0.9);
        let dy = values(num * g.col_dim(), 1.3);
        assert!(per_image_parallel(&g, num));
        let mut y = vec![0f32; num * g.col_dim()];
        conv_forward(&g, num, &x, &w, None, &mut y);
        for n in 0..num {
            let mut y1 = vec![0f32; g.col_dim()];
            conv_forward(
                &g,
                1,
                &x[n * g.im_dim()..(n + 1) * g.im_dim()],
                &w,
                None,
                &mut y1,
            );
            assert_eq!(&y[n * g.col_dim()..(n + 1) * g.col_dim()], &y1[..]);
        }
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut dw = vec![0.25f32; g.weight_len()];
                let mut db = vec![0.5f32; g.col_channels];
                let mut partials = Vec::new();
                conv_weight_grad(&g, num, &x, &dy, &mut dw, Some(&mut db), &mut partials);
                let mut dx = vec![0f32; num * g.im_dim()];
                conv_backward_input(&g, num, &dy, &w, &mut dx);
                (dw, dx, db)
            })
        };
        let (dw1, dx1, db1) = run(1);
        let (dw3, dx3, db3) = run(3);
        assert_eq!(dw1, dw3);
        assert_eq!(dx1, dx3);
        assert_eq!(db1, db3);
        // Against the image-by-image sum (each image alone takes the one-chunk path).
        let mut want = vec![0.25f32; g.weight_len()];
        let mut partials = Vec::new();
        for n in 0..num {
            let xs = &x[n * g.im_dim()..(n + 1) * g.im_dim()];
            let dys = &dy[n * g.col_dim()..(n + 1) * g.col_dim()];
            conv_weight_grad(&g, 1, xs, dys, &mut want, None, &mut partials);
        }
        for (a, b) in dw1.iter().zip(&want) {
            assert!((a - b).abs() < 1e-3 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn prepared_image_is_the_padded_image_split_by_column_phase() {
        for (c, h, w, ph, pw, sw) in [
            (3, 5, 7, 1, 1, 1),
            (2, 4, 32, 2, 0, 1),
            (2, 6, 32, 1, 1, 2),
            (3, 5, 9, 0, 2, 2),
            (2, 3, 11, 2, 3, 2),
            (1, 4, 1, 1, 1, 2),
            (2, 5, 13, 1, 2, 3),
            (1, 3, 10, 0, 0, 4),
            (3, 8, 8, 1, 1, 1),
            (2, 3, 5, 0, 5, 1),
            (2, 4, 3, 0, 0, 1),
            (1, 1, 20, 3, 1, 1),
            (2, 2, 2, 4, 4, 1),
            (2, 3, 9, 0, 2, 1),
        ] {
            let g = geom(c, 1, 1, &[h, w], &[1, 1], &[ph, pw], &[1, sw], &[1, 1]);
            let pr = Prepared::new(&g);
            let im = values(g.im_dim(), 0.2);
            let mut buf = vec![f32::NAN; pr.len()];
            prepare_2d(&g, pr, &im, &mut buf);
            // The baseline build (what runs where the CPU has no AVX2) writes the same.
            let mut base = vec![f32::NAN; pr.len()];
            prepare_2d_as(&g, pr, &im, &mut base);
            assert_eq!(bits(&base), bits(&buf));
            let wp = w + 2 * pw;
            for q in 0..sw {
                for ci in 0..c {
                    for row in 0..pr.hp {
                        for j in 0..pr.wq {
                            let col = j * sw + q;
                            let inside = (ph..ph + h).contains(&row) && (pw..pw + w).contains(&col);
                            let want = if col < wp && inside {
                                im[(ci * h + row - ph) * w + col - pw]
                            } else {
                                0.0
                            };
                            let got = buf[((q * c + ci) * pr.hp + row) * pr.wq + j];
                            assert_eq!(got.to_bits(), want.to_bits(), "{c} {h} {w} {ph} {pw} {sw}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bias_gradient_sums_each_image_then_the_images_in_order() {
        for (num, channels, spatial) in [(1, 2, 7), (5, 3, 13), (9, 2, 64), (4, 1, 8), (7, 2, 1)] {
            let dy = values(num * channels * spatial, 0.6);
            let mut got = vec![0.5f32; channels];
            channel_bias_grad(num, channels, spatial, &dy, &mut got);
            for (c, g) in got.iter().enumerate() {
                let mut s = 0f32;
                for n in 0..num {
                    let at = (n * channels + c) * spatial;
                    s += sum_fixed(&dy[at..at + spatial]);
                }
                assert_eq!(
                    g.to_bits(),
                    (0.5 + s).to_bits(),
                    "{num} {channels} {spatial}"
                );
            }
        }
    }

    #[test]
    fn threaded_and_serial_gemm_give_the_same_bits() {
        // The batching choices above rely on it (they pick sgemm or sgemm_serial by shape).
        for (ta, tb, m, n, k) in [
            (false, false, 64, 300, 200),
            (false, true, 144, 16, 1024),
            (true, false, 150, 256, 32),
        ] {
            let a = values(m * k, 0.2);
            let b = values(k * n, 0.6);
            let mut serial = vec![0.5f32; m * n];
            sgemm_serial(ta, tb, m, n, k, 1.0, &a, &b, 1.0, &mut serial);
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut c = vec![0.5f32; m * n];
                pool.install(|| sgemm(ta, tb, m, n, k, 1.0, &a, &b, 1.0, &mut c));
                assert_eq!(c, serial, "{ta} {tb} {m} {n} {k} on {threads} threads");
            }
        }
    }

    #[test]
    fn output_sizes() {
        assert_eq!(conv_out_size(9, 3, 1, 1, 2), Some(7));
        assert_eq!(conv_out_size(9, 3, 0, 2, 1), Some(4));
        assert_eq!(conv_out_size(2, 5, 1, 1, 1), None);
        assert_eq!(conv_out_size(3, 4, 0, 2, 1), None);
        assert_eq!(deconv_out_size(5, 4, 1, 2, 1), Some(10));
        assert_eq!(deconv_out_size(1, 1, 1, 1, 1), None);
        assert_eq!(valid_range(5, 2, 0, 3, 4), (2, 4));
    }
}
