//! Convolution on the GPU (Caffe's im2col + gemm formulation, as `backend::cpu::conv`), shared
//! by Convolution and Deconvolution: forward, input gradient, weight gradient and bias gradient
//! over a batch, from the same [`ConvGeom`] the CPU uses (image side, column side; see there).
//!
//! Images are unrolled a chunk at a time into one column buffer (bounded by [`COL_BUDGET`]),
//! and each chunk's products run as strided batches over images or over groups, whichever is
//! larger, so a chunk costs one im2col and min(images, groups) gemm launches. The weight
//! gradient of a chunk goes into per-image partials (one batched product) which a second kernel
//! adds into the gradient in image order: the summation order depends on the shape only.
//! A 1x1 convolution (stride 1, no pad) reads the image directly, as Caffe's `is_1x1_` does.
//! Two spatial axes use the 2-D im2col kernels; any other count (and `force_nd_im2col`) the
//! N-D kernels, whose per-axis geometry is uploaded once per shape.
//!
//! A chunk's products are described as data (`Products`, and the launches it expands to), so
//! the unit tests below run the very same layouts on the host against the CPU convolution.

use anyhow::Result;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use super::gpu::Gpu;
use super::kernels::{channel_partials_len, Conv2d, ConvNd, GemmShape, Io, Kernels};
use super::ops::{at, at_mut, upload_table, DeviceBuf};
use crate::backend::cpu::conv::ConvGeom;

/// Floats the column buffer may take (64 MiB): a chunk holds as many images as fit, at least one.
pub const COL_BUDGET: usize = 1 << 24;
/// Floats the per-image weight-gradient partials may take.
pub const PARTIAL_BUDGET: usize = 1 << 24;
/// Images one launch's grid can hold (grid z).
const MAX_BATCH: usize = 65535;

/// Images per chunk when each takes `per_image` floats of a `budget`.
fn chunk_images(per_image: usize, budget: usize, num: usize) -> usize {
    (budget / per_image.max(1)).clamp(1, num.clamp(1, MAX_BATCH))
}

/// The im2col/col2im kernels a geometry uses.
enum Mover {
    TwoD(Conv2d),
    Nd(ConvNd),
}

/// Where matrix (image n, group g) of a gemm operand starts: `offset + n * image + g * group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    offset: usize,
    image: usize,
    group: usize,
}

/// The products of one chunk of images: `C_{n,g} = op(A_{n,g}) op(B_{n,g}) (+ beta C_{n,g})`
/// for every image n < `images` and group g < `groups`, `shape` giving one product.
#[derive(Debug, Clone, Copy)]
struct Products {
    shape: GemmShape,
    images: usize,
    groups: usize,
    a: Layout,
    b: Layout,
    c: Layout,
}

/// One launch of a product grid: a strided batch, and where its first matrices start.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Launch {
    shape: GemmShape,
    a: usize,
    b: usize,
    c: usize,
}

impl Products {
    /// The column side of a convolution's products for the images of a chunk: the image itself
    /// (a 1x1 convolution, `image_offset` = the chunk's first image) or the chunk's column
    /// buffer (offset 0, one `col_buffer_len` per image).
    fn columns(geom: &ConvGeom, image_offset: Option<usize>) -> Layout {
        let group = geom.kernel_dim() * geom.col_spatial();
        match image_offset {
            Some(offset) => Layout {
                offset,
                image: geom.im_dim(),
                group,
            },
            None => Layout {
                offset: 0,
                image: geom.col_buffer_len(),
                group,
            },
        }
    }

    fn weights(geom: &ConvGeom) -> Layout {
        Layout {
            offset: 0,
            image: 0,
            group: geom.col_channels / geom.group * geom.kernel_dim(),
        }
    }

    /// The column-side blob (a convolution's top) from image `n0` on.
    fn outputs(geom: &ConvGeom, n0: usize) -> Layout {
        Layout {
            offset: n0 * geom.col_dim(),
            image: geom.col_dim(),
            group: geom.col_channels / geom.group * geom.col_spatial(),
        }
    }

    fn dims(geom: &ConvGeom) -> (usize, usize, usize) {
        (
            geom.col_channels / geom.group,
            geom.kernel_dim(),
            geom.col_spatial(),
        )
    }

    /// Forward: y_g (m x p) = W_g (m x kd) * columns_g (kd x p).
    fn forward(geom: &ConvGeom, images: usize, n0: usize, cols: Layout) -> Products {
        let (m, kd, p) = Self::dims(geom);
        Products {
            shape: GemmShape::contiguous(false, false, m, p, kd, 1.0, 0.0),
            images,
            groups: geom.group,
            a: Self::weights(geom),
            b: cols,
            c: Self::outputs(geom, n0),
        }
    }

    /// Input gradient: columns_g (kd x p) = W_g^T (kd x m) * dy_g (m x p).
    fn backward_input(geom: &ConvGeom, images: usize, n0: usize, cols: Layout) -> Products {
        let (m, kd, p) = Self::dims(geom);
        Products {
            shape: GemmShape::contiguous(true, false, kd, p, m, 1.0, 0.0),
            images,
            groups: geom.group,
            a: Self::weights(geom),
            b: Self::outputs(geom, n0),
            c: cols,
        }
    }

    /// Weight gradient: G_g (m x kd) = dy_g (m x p) * columns_g^T (p x kd), into per-image
    /// partials (`partials`: one weight blob per image, beta 0) or straight into the gradient
    /// (beta 1, the chunk's one image).
    fn weight_grad(
        geom: &ConvGeom,
        images: usize,
        n0: usize,
        cols: Layout,
        partials: bool,
    ) -> Products {
        let (m, kd, p) = Self::dims(geom);
        let mut c = Self::weights(geom);
        let beta = if partials {
            c.image = geom.weight_len();
            0.0
        } else {
            1.0
        };
        Products {
            shape: GemmShape::contiguous(false, true, m, kd, p, 1.0, beta),
            images,
            groups: geom.group,
            a: Self::outputs(geom, n0),
            b: cols,
            c,
        }
    }

    /// The launches: a strided batch over whichever of images and groups is larger (in pieces
    /// the grid can hold), looping over the other.
    fn launches(&self) -> Vec<Launch> {
        let batch_images = self.images >= self.groups;
        let (outer, inner) = if batch_images {
            (self.groups, self.images)
        } else {
            (self.images, self.groups)
        };
        // (stride of the looped index, stride of the batched index)
        let split = |l: Layout| {
            if batch_images {
                (l.group, l.image)
            } else {
                (l.image, l.group)
            }
        };
        let mut out = Vec::new();
        for o in 0..outer {
            let mut start = 0;
            while start < inner {
                let count = (inner - start).min(MAX_BATCH);
                let offset = |l: Layout| {
                    let (looped, batched) = split(l);
                    l.offset + o * looped + start * batched
                };
                let mut shape = self.shape;
                shape.batch = count;
                shape.stride_a = split(self.a).1;
                shape.stride_b = split(self.b).1;
                shape.stride_c = split(self.c).1;
                out.push(Launch {
                    shape,
                    a: offset(self.a),
                    b: offset(self.b),
                    c: offset(self.c),
                });
                start += count;
            }
        }
        out
    }

    fn run(
        &self,
        k: &Kernels,
        s: &CudaStream,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        c: &mut CudaSlice<f32>,
    ) -> Result<()> {
        for l in self.launches() {
            k.sgemm_batched(
                s,
                &l.shape,
                &at(a, l.a)?,
                &at(b, l.b)?,
                &mut at_mut(c, l.c)?,
            )?;
        }
        Ok(())
    }
}

/// One convolution layer's device scratch: the column buffer, the weight-gradient partials,
/// the bias-gradient partials and the N-D geometry table. Sized at first use and when shapes
/// change.
#[derive(Default)]
pub struct ConvGpu {
    col: DeviceBuf<f32>,
    partials: DeviceBuf<f32>,
    bias_partials: DeviceBuf<f64>,
    table: Option<(Vec<i32>, CudaSlice<i32>)>,
}

impl ConvGpu {
    fn mover(&mut self, g: &Gpu, geom: &ConvGeom) -> Result<Mover> {
        if geom.kernel.len() == 2 && !geom.force_nd {
            return Ok(Mover::TwoD(Conv2d::from_geom(geom)?));
        }
        let nd = ConvNd::from_geom(geom)?;
        if self.table.as_ref().is_none_or(|(t, _)| *t != nd.table) {
            self.table = Some((nd.table.clone(), upload_table(g, &nd.table)?));
        }
        Ok(Mover::Nd(nd))
    }

    /// `y_n = W * im2col(x_n) (+ bias)` for `num` images (overwrites `y`).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &mut self,
        g: &Gpu,
        geom: &ConvGeom,
        num: usize,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (id, od) = (geom.im_dim(), geom.col_dim());
        if od == 0 || num == 0 {
            return Ok(());
        }
        let (k, s) = (g.kernels(), g.stream());
        if id == 0 {
            // An empty input (a zero spatial dim under padding) convolves to the bias alone.
            s.memset_zeros(y)?;
        } else if geom.is_1x1() {
            Products::forward(geom, num, 0, Products::columns(geom, Some(0))).run(k, s, w, x, y)?;
        } else {
            let mover = self.mover(g, geom)?;
            let cl = geom.col_buffer_len();
            let chunk = chunk_images(cl, COL_BUDGET, num);
            let col = self.col.at_least(g, chunk * cl)?;
            let table = self.table.as_ref().map(|(_, t)| t);
            for n0 in (0..num).step_by(chunk) {
                let b = chunk.min(num - n0);
                im2col(k, s, &mover, table, &at(x, n0 * id)?, col, b, id, cl)?;
                Products::forward(geom, b, n0, Products::columns(geom, None))
                    .run(k, s, w, col, y)?;
            }
        }
        if let Some(b) = bias {
            k.scale_bias_fwd(
                s,
                Io::InPlace(&mut *y),
                b,
                num,
                geom.col_channels,
                geom.col_spatial(),
            )?;
        }
        Ok(())
    }

    /// `dx_n = col2im(W^T * dy_n)` for `num` images (overwrites `dx`).
    #[allow(clippy::too_many_arguments)]
    pub fn backward_input(
        &mut self,
        g: &Gpu,
        geom: &ConvGeom,
        num: usize,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        dx: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (id, od) = (geom.im_dim(), geom.col_dim());
        if id == 0 || num == 0 {
            return Ok(());
        }
        let (k, s) = (g.kernels(), g.stream());
        if od == 0 {
            s.memset_zeros(dx)?;
            return Ok(());
        }
        if geom.is_1x1() {
            let cols = Products::columns(geom, Some(0));
            return Products::backward_input(geom, num, 0, cols).run(k, s, w, dy, dx);
        }
        let mover = self.mover(g, geom)?;
        let cl = geom.col_buffer_len();
        let chunk = chunk_images(cl, COL_BUDGET, num);
        let col = self.col.at_least(g, chunk * cl)?;
        let table = self.table.as_ref().map(|(_, t)| t);
        for n0 in (0..num).step_by(chunk) {
            let b = chunk.min(num - n0);
            let cols = Products::columns(geom, None);
            Products::backward_input(geom, b, n0, cols).run(k, s, w, dy, col)?;
            col2im(
                k,
                s,
                &mover,
                table,
                col,
                &mut at_mut(dx, n0 * id)?,
                b,
                id,
                cl,
            )?;
        }
        Ok(())
    }

    /// `dw += sum_n dy_n * im2col(x_n)^T` (accumulates, as every parameter gradient does).
    #[allow(clippy::too_many_arguments)]
    pub fn weight_grad(
        &mut self,
        g: &Gpu,
        geom: &ConvGeom,
        num: usize,
        x: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        dw: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (id, od, wl) = (geom.im_dim(), geom.col_dim(), geom.weight_len());
        if num == 0 || wl == 0 || id == 0 || od == 0 {
            return Ok(());
        }
        let (k, s) = (g.kernels(), g.stream());
        let chunk = weight_grad_chunk(geom, num);
        let mover = if geom.is_1x1() {
            None
        } else {
            Some(self.mover(g, geom)?)
        };
        let mut partials = if chunk > 1 {
            Some(self.partials.at_least(g, chunk * wl)?)
        } else {
            None
        };
        let Some(mover) = mover else {
            for n0 in (0..num).step_by(chunk) {
                let b = chunk.min(num - n0);
                let cols = Products::columns(geom, Some(n0 * id));
                accumulate_weight_grad(
                    k,
                    s,
                    geom,
                    b,
                    n0,
                    cols,
                    dy,
                    x,
                    partials.as_deref_mut(),
                    dw,
                )?;
            }
            return Ok(());
        };
        let cl = geom.col_buffer_len();
        let col = self.col.at_least(g, chunk * cl)?;
        let table = self.table.as_ref().map(|(_, t)| t);
        for n0 in (0..num).step_by(chunk) {
            let b = chunk.min(num - n0);
            im2col(k, s, &mover, table, &at(x, n0 * id)?, col, b, id, cl)?;
            let cols = Products::columns(geom, None);
            accumulate_weight_grad(
                k,
                s,
                geom,
                b,
                n0,
                cols,
                dy,
                col,
                partials.as_deref_mut(),
                dw,
            )?;
        }
        Ok(())
    }

    /// `db[c] += sum over images and positions of dy[n][c][p]` (a blob of `num x channels x
    /// spatial`).
    pub fn bias_grad(
        &mut self,
        g: &Gpu,
        num: usize,
        channels: usize,
        spatial: usize,
        dy: &CudaSlice<f32>,
        db: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if num * spatial == 0 || channels == 0 {
            return Ok(());
        }
        let (k, s) = (g.kernels(), g.stream());
        let partial = self
            .bias_partials
            .get(g, channel_partials_len(channels, num, spatial))?;
        let chunks = k.scale_grad_partials(s, dy, None, partial, num, channels, spatial)?;
        k.scale_grad_finish(s, partial, db, channels, chunks, true)
    }
}

/// Images per weight-gradient chunk: bounded by the partials' budget, and by the column
/// buffer's where there is one.
fn weight_grad_chunk(geom: &ConvGeom, num: usize) -> usize {
    let chunk = chunk_images(geom.weight_len(), PARTIAL_BUDGET, num);
    if geom.is_1x1() {
        chunk
    } else {
        chunk.min(chunk_images(geom.col_buffer_len(), COL_BUDGET, num))
    }
}

/// One chunk's weight gradient added into `dw`: a batched product into per-image partials
/// which are then summed into `dw` in image order, or, for a chunk of one image, one product
/// accumulating straight into `dw`.
#[allow(clippy::too_many_arguments)]
fn accumulate_weight_grad(
    k: &Kernels,
    s: &CudaStream,
    geom: &ConvGeom,
    images: usize,
    n0: usize,
    cols: Layout,
    dy: &CudaSlice<f32>,
    src: &CudaSlice<f32>,
    partials: Option<&mut CudaSlice<f32>>,
    dw: &mut CudaSlice<f32>,
) -> Result<()> {
    match partials {
        Some(part) if images > 1 => {
            Products::weight_grad(geom, images, n0, cols, true).run(k, s, dy, src, part)?;
            k.conv_sum_partials(s, part, dw, geom.weight_len(), images)
        }
        _ => Products::weight_grad(geom, images, n0, cols, false).run(k, s, dy, src, dw),
    }
}

#[allow(clippy::too_many_arguments)]
fn im2col(
    k: &Kernels,
    s: &CudaStream,
    mover: &Mover,
    table: Option<&CudaSlice<i32>>,
    im: &dyn DevicePtr<f32>,
    col: &mut dyn DevicePtrMut<f32>,
    images: usize,
    im_stride: usize,
    col_stride: usize,
) -> Result<()> {
    match mover {
        Mover::TwoD(g2) => k.conv_im2col(s, im, col, g2, images, im_stride, col_stride),
        Mover::Nd(nd) => {
            let table = table.ok_or_else(|| anyhow::anyhow!("N-D im2col without its table"))?;
            k.conv_im2col_nd(s, im, col, nd, table, images, im_stride, col_stride)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn col2im(
    k: &Kernels,
    s: &CudaStream,
    mover: &Mover,
    table: Option<&CudaSlice<i32>>,
    col: &dyn DevicePtr<f32>,
    im: &mut dyn DevicePtrMut<f32>,
    images: usize,
    im_stride: usize,
    col_stride: usize,
) -> Result<()> {
    match mover {
        Mover::TwoD(g2) => k.conv_col2im(s, col, im, g2, images, im_stride, col_stride),
        Mover::Nd(nd) => {
            let table = table.ok_or_else(|| anyhow::anyhow!("N-D col2im without its table"))?;
            k.conv_col2im_nd(s, col, im, nd, table, images, im_stride, col_stride)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::conv as cpu;

    /// Executes a plan's launches on the host, exactly as the sgemm kernel defines them
    /// (strided batch, leading dimensions, transposes, beta 0 not reading C), after checking
    /// that every operand range lies inside its buffer as the kernel wrappers do.
    fn run_on_host(p: &Products, a: &[f32], b: &[f32], c: &mut [f32]) {
        for l in p.launches() {
            let sh = l.shape;
            let (na, nb, nc) = sh.needs();
            assert!(l.a + na <= a.len(), "{sh:?}: A out of range");
            assert!(l.b + nb <= b.len(), "{sh:?}: B out of range");
            assert!(l.c + nc <= c.len(), "{sh:?}: C out of range");
            for z in 0..sh.batch {
                let (a0, b0, c0) = (
                    l.a + z * sh.stride_a,
                    l.b + z * sh.stride_b,
                    l.c + z * sh.stride_c,
                );
                for i in 0..sh.m {
                    for j in 0..sh.n {
                        let mut acc = 0f64;
                        for q in 0..sh.k {
                            let av = if sh.trans_a {
                                a[a0 + q * sh.lda + i]
                            } else {
                                a[a0 + i * sh.lda + q]
                            };
                            let bv = if sh.trans_b {
                                b[b0 + j * sh.ldb + q]
                            } else {
                                b[b0 + q * sh.ldb + j]
                            };
                            acc += av as f64 * bv as f64;
                        }
                        let ci = c0 + i * sh.ldc + j;
                        let keep = if sh.beta == 0.0 { 0.0 } else { sh.beta * c[ci] };
                        c[ci] = sh.alpha * acc as f32 + keep;
                    }
                }
            }
        }
    }

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
            .map(|i| cpu::conv_out_size(im[i], k[i], p[i], s[i], d[i]).unwrap())
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

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "{what}[{i}]: {a} vs {b}"
            );
        }
    }

    /// The chunk's column buffer as the im2col kernels lay it out: one image after another.
    fn columns_of(g: &ConvGeom, x: &[f32], n0: usize, images: usize) -> Vec<f32> {
        let (id, cl) = (g.im_dim(), g.col_buffer_len());
        let mut col = vec![f32::NAN; images * cl];
        for i in 0..images {
            let xi = &x[(n0 + i) * id..(n0 + i + 1) * id];
            cpu::im2col(g, xi, &mut col[i * cl..(i + 1) * cl]);
        }
        col
    }

    #[test]
    fn product_plans_reproduce_the_cpu_convolution() {
        let configs = [
            (
                geom(3, 4, 1, &[7, 6], &[3, 3], &[1, 1], &[1, 1], &[1, 1]),
                3,
            ),
            (
                geom(4, 6, 2, &[9, 8], &[3, 2], &[2, 0], &[2, 3], &[1, 2]),
                3,
            ),
            // More groups than images: batched over groups, looped over images.
            (
                geom(6, 6, 6, &[5, 4], &[3, 3], &[1, 1], &[1, 1], &[1, 1]),
                2,
            ),
            (
                geom(4, 8, 4, &[3, 5], &[1, 1], &[0, 0], &[1, 1], &[1, 1]),
                3,
            ),
            (
                geom(2, 4, 2, &[3, 3], &[1, 1], &[0, 0], &[1, 1], &[1, 1]),
                5,
            ),
            (
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
                2,
            ),
            (geom(3, 2, 1, &[11], &[3], &[2], &[3], &[2]), 4),
        ];
        for (g, num) in configs {
            let (id, od, wl, cl) = (g.im_dim(), g.col_dim(), g.weight_len(), g.col_buffer_len());
            let x = values(num * id, 0.3);
            let w = values(wl, 1.9);
            let dy = values(num * od, 2.6);
            let mut want_y = vec![0f32; num * od];
            cpu::conv_forward(&g, num, &x, &w, None, &mut want_y);
            let mut want_dx = vec![0f32; num * id];
            cpu::conv_backward_input(&g, num, &dy, &w, &mut want_dx);
            let mut want_dw = vec![0.5f32; wl];
            cpu::conv_weight_grad(&g, num, &x, &dy, &mut want_dw, None, &mut Vec::new());
            for chunk in [1, 2, num] {
                let what = format!("{g:?}, {num} images, chunks of {chunk}");
                let mut y = vec![f32::NAN; num * od];
                let mut dx = vec![f32::NAN; num * id];
                let mut dw = vec![0.5f32; wl];
                for n0 in (0..num).step_by(chunk) {
                    let b = chunk.min(num - n0);
                    let (src, cols) = if g.is_1x1() {
                        (x.clone(), Products::columns(&g, Some(n0 * id)))
                    } else {
                        (columns_of(&g, &x, n0, b), Products::columns(&g, None))
                    };
                    run_on_host(&Products::forward(&g, b, n0, cols), &w, &src, &mut y);
                    if g.is_1x1() {
                        run_on_host(&Products::backward_input(&g, b, n0, cols), &w, &dy, &mut dx);
                    } else {
                        let mut col = vec![f32::NAN; b * cl];
                        run_on_host(
                            &Products::backward_input(&g, b, n0, cols),
                            &w,
                            &dy,
                            &mut col,
                        );
                        for i in 0..b {
                            let out = &mut dx[(n0 + i) * id..(n0 + i + 1) * id];
                            cpu::col2im(&g, &col[i * cl..(i + 1) * cl], out);
                        }
                    }
                    if b > 1 {
                        let mut part = vec![f32::NAN; b * wl];
                        run_on_host(
                            &Products::weight_grad(&g, b, n0, cols, true),
                            &dy,
                            &src,
                            &mut part,
                        );
                        for (i, d) in dw.iter_mut().enumerate() {
                            *d += (0..b).map(|z| part[z * wl + i]).sum::<f32>();
                        }
                    } else {
                        run_on_host(
                            &Products::weight_grad(&g, b, n0, cols, false),
                            &dy,
                            &src,
                            &mut dw,
                        );
                    }
                }
                assert_close(&y, &want_y, &format!("forward, {what}"));
                assert_close(&dx, &want_dx, &format!("input gradient, {what}"));
                assert_close(&dw, &want_dw, &format!("weight gradient, {what}"));
            }
        }
    }

    #[test]
    fn launches_batch_the_larger_dimension() {
        let g = geom(6, 6, 6, &[5, 4], &[3, 3], &[1, 1], &[1, 1], &[1, 1]);
        let p = Products::forward(&g, 2, 0, Products::columns(&g, None));
        let l = p.launches();
        assert_eq!(
            l.len(),
            2,
            "one launch per image, batched over the 6 groups"
        );
        assert!(l.iter().all(|l| l.shape.batch == 6));
        let p = Products::forward(&g, 8, 0, Products::columns(&g, None));
        assert_eq!(
            p.launches().len(),
            6,
            "one launch per group, batched over 8 images"
        );
    }

    #[test]
    fn chunks_respect_the_budget_and_the_grid() {
        assert_eq!(chunk_images(1000, 10_000, 64), 10);
        assert_eq!(chunk_images(1000, 10_000, 4), 4);
        assert_eq!(chunk_images(1 << 30, COL_BUDGET, 8), 1);
        assert_eq!(chunk_images(1, COL_BUDGET, 1 << 20), MAX_BATCH);
        assert_eq!(chunk_images(0, 16, 0), 1);
    }
}
