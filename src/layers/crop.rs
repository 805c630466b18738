//! Crop: cuts bottom 0 to bottom 1's shape on the axes from `axis` on (default 2), at `offset`
//! (one value for all cropped axes, or one per cropped axis; default 0). Backward writes the
//! top diff into the window and zeros elsewhere; bottom 1 only gives a shape (zero gradient).
//!
//! On the GPU a crop is one block copy per axis that shrinks (the Concat/Slice kernels, see
//! [`crop_steps`]), through two device buffers when several axes shrink: any number of axes,
//! and no geometry to upload.

use anyhow::{anyhow, bail, Result};
use cudarc::driver::CudaSlice;

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::tensor;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::ops;
use crate::blob::{read, write, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct CropLayer {
    base: LayerBase,
    offsets: Vec<usize>,
    /// Intermediate results of GPU crops along several axes.
    stage_gpu: [Option<CudaSlice<f32>>; 2],
}

impl CropLayer {
    pub fn new(param: &LayerParameter) -> Self {
        CropLayer {
            base: LayerBase::new(param),
            offsets: Vec::new(),
            stage_gpu: [None, None],
        }
    }
}

/// One block copy of a GPU crop: an array viewed as (outer, large, inner) and one viewed as
/// (outer, small, inner), the small one being axis positions [offset, offset + small) of the
/// large one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisCopy {
    pub outer: usize,
    pub large: usize,
    pub small: usize,
    pub offset: usize,
    pub inner: usize,
}

/// The block copies that crop `xs` to `ys` at `offsets`, one per axis that shrinks, in axis
/// order: forward extracts each from the previous result; backward inserts them, in reverse
/// order, each into zeros (the shape between two copies is the same both ways).
pub fn crop_steps(xs: &[usize], ys: &[usize], offsets: &[usize]) -> Vec<AxisCopy> {
    let mut cur = xs.to_vec();
    let mut steps = Vec::new();
    for d in 0..xs.len() {
        if ys[d] != xs[d] {
            steps.push(AxisCopy {
                outer: cur[..d].iter().product(),
                large: xs[d],
                small: ys[d],
                offset: offsets[d],
                inner: cur[d + 1..].iter().product(),
            });
            cur[d] = ys[d];
        }
    }
    steps
}

/// Runs `steps` copies from `src` to `dst` through the layer's two intermediate buffers
/// (src -> a -> b -> a ... -> dst), allocated only when more than one copy is needed, each
/// large enough for `count` values (the bottom's count).
fn chain(
    g: &Gpu,
    stages: &mut [Option<CudaSlice<f32>>; 2],
    count: usize,
    steps: usize,
    src: &CudaSlice<f32>,
    dst: &mut CudaSlice<f32>,
    mut copy: impl FnMut(usize, &CudaSlice<f32>, &mut CudaSlice<f32>) -> Result<()>,
) -> Result<()> {
    let [a, b] = stages;
    let a = ops::scratch(g, a, if steps > 1 { count } else { 0 })?;
    let b = ops::scratch(g, b, if steps > 2 { count } else { 0 })?;
    for step in 0..steps {
        let last = step + 1 == steps;
        let (from, to): (&CudaSlice<f32>, &mut CudaSlice<f32>) = match (step, last) {
            (0, true) => (src, &mut *dst),
            (0, false) => (src, &mut *a),
            (s, true) if s % 2 == 1 => (&*a, &mut *dst),
            (_, true) => (&*b, &mut *dst),
            (s, false) if s % 2 == 1 => (&*a, &mut *b),
            (_, false) => (&*b, &mut *a),
        };
        copy(step, from, to)?;
    }
    Ok(())
}

impl Layer for CropLayer {
    fn type_name(&self) -> &'static str {
        "Crop"
    }
    fn base(&self) -> &LayerBase {
        &self.base
    }
    fn base_mut(&mut self) -> &mut LayerBase {
        &mut self.base
    }
    fn bottom_arity(&self) -> Arity {
        Arity::Exact(2)
    }
    fn top_arity(&self) -> Arity {
        Arity::Exact(1)
    }

    fn setup(&mut self, _rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        if bottom.iter().any(|b| std::rc::Rc::ptr_eq(b, &top[0])) {
            bail!("layer '{}': Crop does not work in place", self.name());
        }
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let p = self.base.param.crop_param.clone().unwrap_or_default();
        let (a, b) = (&bottom[0], &bottom[1]);
        let nd = a.num_axes();
        if nd != b.num_axes() {
            bail!(
                "layer '{}': Crop bottoms must have the same number of axes: {} vs {}",
                self.name(),
                a.shape_string(),
                b.shape_string()
            );
        }
        let start = a
            .canonical_axis(p.axis())
            .map_err(|e| anyhow!("layer '{}': crop axis: {e}", self.name()))?;
        if start >= nd {
            bail!(
                "layer '{}': crop axis {} bigger than input dim ({})",
                self.name(),
                p.axis(),
                a.shape_string()
            );
        }
        if p.offset.len() > 1 && start + p.offset.len() != nd {
            bail!(
                "layer '{}': number of offset values specified ({}) must be equal to the number of dimensions following axis {start} of {}",
                self.name(),
                p.offset.len(),
                a.shape_string()
            );
        }
        let (sa, sb) = (a.shape(), b.shape());
        let mut shape = sa.clone();
        let mut offsets = vec![0usize; nd];
        for i in start..nd {
            let off = match p.offset.len() {
                0 => 0,
                1 => p.offset[0] as usize,
                _ => p.offset[i - start] as usize,
            };
            if sa[i] < off || sa[i] - off < sb[i] {
                bail!(
                    "layer '{}': invalid crop parameters in dimension {i}: offset {off} and size {} do not fit in {} (bottom shapes {} and {})",
                    self.name(),
                    sb[i],
                    sa[i],
                    a.shape_string(),
                    b.shape_string()
                );
            }
            shape[i] = sb[i];
            offsets[i] = off;
        }
        self.offsets = offsets;
        top[0].reshape(&shape)
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        tensor::crop_forward(
            &read(&xb),
            &bottom[0].shape(),
            &mut write(&yb),
            &top[0].shape(),
            &self.offsets,
        );
        Ok(())
    }

    fn backward(
        &mut self,
        _: &mut Ctx,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if pd[0] {
            let (dyb, dxb) = (top[0].diff_buf(), bottom[0].diff_buf());
            tensor::crop_backward(
                &read(&dyb),
                &top[0].shape(),
                &mut write(&dxb),
                &bottom[0].shape(),
                &self.offsets,
            );
        }
        if pd[1] {
            bottom[1].fill_diff(0.0);
        }
        Ok(())
    }

    fn forward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<()> {
        let steps = crop_steps(&bottom[0].shape(), &top[0].shape(), &self.offsets);
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        let x = xb.device(g)?;
        let mut y = yb.device_out(g)?;
        if steps.is_empty() {
            return ops::copy_slice(g, &x, &mut y, top[0].count());
        }
        let (k, s) = (g.kernels(), g.stream());
        let count = bottom[0].count();
        chain(
            g,
            &mut self.stage_gpu,
            count,
            steps.len(),
            &x,
            &mut y,
            |i, from, to| {
                let c = steps[i];
                k.tensor_axis_extract(s, from, to, c.outer, c.large, c.offset, c.small, c.inner)
            },
        )
    }

    fn backward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if pd[0] {
            let mut steps = crop_steps(&bottom[0].shape(), &top[0].shape(), &self.offsets);
            steps.reverse();
            let (dyb, dxb) = (top[0].diff_buf(), bottom[0].diff_buf());
            let dy = dyb.device(g)?;
            let mut dx = dxb.device_out(g)?;
            if steps.is_empty() {
                ops::copy_slice(g, &dy, &mut dx, bottom[0].count())?;
            } else {
                let (k, s) = (g.kernels(), g.stream());
                let count = bottom[0].count();
                // The window grows back axis by axis, each time into zeros.
                chain(
                    g,
                    &mut self.stage_gpu,
                    count,
                    steps.len(),
                    &dy,
                    &mut dx,
                    |i, from, to| {
                        let c = steps[i];
                        g.zero(to)?;
                        k.tensor_axis_insert(
                            s, from, to, c.outer, c.small, c.large, c.offset, c.inner,
                        )
                    },
                )?;
            }
        }
        if pd[1] {
            ops::zero(g, &bottom[1].diff_buf())?;
        }
        Ok(())
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GPU's chain of block copies, replayed with the CPU's copies, against the CPU crop.
    fn replay(xs: &[usize], ys: &[usize], offsets: &[usize]) {
        let count = |s: &[usize]| s.iter().product::<usize>();
        let x: Vec<f32> = (0..count(xs)).map(|v| v as f32 + 1.0).collect();
        let steps = crop_steps(xs, ys, offsets);
        assert_eq!(
            steps.len(),
            (0..xs.len()).filter(|&d| xs[d] != ys[d]).count()
        );
        let mut cur = x.clone();
        for c in &steps {
            let mut next = vec![0f32; c.outer * c.small * c.inner];
            tensor::axis_extract(
                &cur, &mut next, c.outer, c.large, c.offset, c.small, c.inner,
            );
            cur = next;
        }
        let mut want = vec![0f32; count(ys)];
        tensor::crop_forward(&x, xs, &mut want, ys, offsets);
        assert_eq!(cur, want, "forward {xs:?} -> {ys:?} at {offsets:?}");

        let dy: Vec<f32> = (0..count(ys)).map(|v| -(v as f32) - 0.5).collect();
        let mut cur = dy.clone();
        for c in steps.iter().rev() {
            let mut next = vec![0f32; c.outer * c.large * c.inner];
            tensor::axis_insert(
                &cur, &mut next, c.outer, c.small, c.large, c.offset, c.inner,
            );
            cur = next;
        }
        let mut want = vec![7f32; count(xs)];
        tensor::crop_backward(&dy, ys, &mut want, xs, offsets);
        assert_eq!(cur, want, "backward {xs:?} -> {ys:?} at {offsets:?}");
    }

    #[test]
    fn gpu_copy_chain_matches_the_cpu_crop() {
        replay(&[2, 3, 5, 7], &[2, 3, 3, 4], &[0, 0, 1, 2]);
        replay(&[2, 3, 5, 7], &[2, 3, 5, 4], &[0, 0, 0, 3]);
        replay(&[2, 3, 5, 7], &[2, 3, 2, 7], &[0, 0, 3, 0]);
        replay(&[4, 3, 5, 7, 2], &[3, 1, 5, 4, 1], &[1, 2, 0, 0, 1]);
        replay(&[6], &[4], &[2]);
        replay(&[2, 3], &[2, 3], &[0, 0]);
    }
}
