//! Softmax over one axis (`softmax_param.axis`, default 1), independently at every position
//! of the other axes. Works in place: backward needs only the output.

use anyhow::{Context, Result};

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::softmax as ops;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::ops as dev;
use crate::blob::{map_buf, read, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct SoftmaxLayer {
    base: LayerBase,
    axis: i32,
    /// (outer, channels, inner) of the current input.
    dims: (usize, usize, usize),
}

/// Splits `blob` around `axis` (Caffe's canonical index) into (outer, channels, inner).
pub fn split_at_axis(blob: &BlobRef, axis: i32, layer: &str) -> Result<(usize, usize, usize)> {
    if blob.num_axes() == 0 {
        anyhow::bail!("layer '{layer}': softmax needs at least one axis, the input is a scalar");
    }
    let a = blob
        .canonical_axis(axis)
        .with_context(|| format!("layer '{layer}': softmax axis"))?;
    Ok((
        blob.count_range(0, a),
        blob.shape()[a],
        blob.count_from(a + 1),
    ))
}

impl SoftmaxLayer {
    pub fn new(param: &LayerParameter) -> Self {
        let axis = param.softmax_param.as_ref().map(|p| p.axis()).unwrap_or(1);
        SoftmaxLayer {
            base: LayerBase::new(param),
            axis,
            dims: (0, 0, 0),
        }
    }
}

impl Layer for SoftmaxLayer {
    fn type_name(&self) -> &'static str {
        "Softmax"
    }
    fn base(&self) -> &LayerBase {
        &self.base
    }
    fn base_mut(&mut self) -> &mut LayerBase {
        &mut self.base
    }
    fn bottom_arity(&self) -> Arity {
        Arity::Exact(1)
    }
    fn top_arity(&self) -> Arity {
        Arity::Exact(1)
    }

    fn setup(&mut self, _rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        self.dims = split_at_axis(&bottom[0], self.axis, self.name())?;
        top[0].reshape_like(&bottom[0])
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let (o, c, i) = self.dims;
        map_buf(&bottom[0].data_buf(), &top[0].data_buf(), |x, y| {
            ops::softmax_forward(x, y, o, c, i)
        });
        Ok(())
    }

    fn backward(
        &mut self,
        _ctx: &mut Ctx,
        top: &[BlobRef],
        propagate_down: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if !propagate_down[0] {
            return Ok(());
        }
        let (o, c, i) = self.dims;
        let y = top[0].data_buf();
        let y = read(&y);
        map_buf(&top[0].diff_buf(), &bottom[0].diff_buf(), |dy, dx| {
            ops::softmax_backward(&y, dy, dx, o, c, i)
        });
        Ok(())
    }

    fn forward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<()> {
        let (o, c, i) = self.dims;
        dev::with_io(g, &bottom[0].data_buf(), &top[0].data_buf(), |io| {
            g.kernels().softmax_forward(g.stream(), io, o, c, i)
        })
    }

    fn backward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        top: &[BlobRef],
        propagate_down: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if !propagate_down[0] {
            return Ok(());
        }
        let (o, c, i) = self.dims;
        let yb = top[0].data_buf();
        let y = yb.device(g)?;
        dev::with_io(g, &top[0].diff_buf(), &bottom[0].diff_buf(), |d| {
            g.kernels().softmax_backward(g.stream(), &*y, d, o, c, i)
        })
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
