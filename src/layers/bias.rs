//! Bias: adds a bias broadcast over a range of `bottom[0]`'s axes, learned (blob 0, shape
//! `bottom0.shape[axis .. axis+num_axes]`) or taken from `bottom[1]`. Also the shape rules
//! Scale shares.

use anyhow::{bail, Result};

use super::{check_given_blobs, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::scale as k;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::kernels::channel_partials_len;
use crate::backend::cuda::ops::{self, DeviceBuf};
use crate::blob::{read, write, Blob, BlobRef};
use crate::proto::caffe::{FillerParameter, LayerParameter};
use crate::rng::CaffeRng;

/// Shape of a learned scale/bias blob: `x.shape[axis .. axis+num_axes]`, `num_axes == -1`
/// meaning to the end.
pub(crate) fn param_shape(layer: &str, x: &Blob, axis: i32, num_axes: i32) -> Result<Vec<usize>> {
    let a = x
        .canonical_axis(axis)
        .map_err(|e| anyhow::anyhow!("layer '{layer}': {e}"))?;
    if num_axes < -1 {
        bail!(
            "layer '{layer}': num_axes must be non-negative, or -1 to extend to the end of bottom[0] (got {num_axes})"
        );
    }
    let shape = x.shape();
    let end = if num_axes == -1 {
        shape.len()
    } else {
        a + num_axes as usize
    };
    if end > shape.len() {
        bail!(
            "layer '{layer}': parameter blob's shape extends past bottom[0]'s shape {} when applied starting with bottom[0] axis = {a} (num_axes {num_axes})",
            x.shape_string()
        );
    }
    Ok(shape[a..end].to_vec())
}

/// (outer, dim, inner) of `x` for a broadcast operand of shape `p`. A 0-axis operand uses
/// axis 0 whatever `axis` says (the result is the same and the loops are simplest).
pub(crate) fn broadcast_dims(
    layer: &str,
    x: &Blob,
    axis: i32,
    p: &[usize],
) -> Result<(usize, usize, usize)> {
    let a = if p.is_empty() {
        0
    } else {
        x.canonical_axis(axis)
            .map_err(|e| anyhow::anyhow!("layer '{layer}': {e}"))?
    };
    let shape = x.shape();
    if a + p.len() > shape.len() || shape[a..a + p.len()] != *p {
        bail!(
            "layer '{layer}': operand of shape {} does not match bottom[0]'s shape {} starting at axis {a}",
            crate::proto::blob::shape_string(p),
            x.shape_string()
        );
    }
    Ok((
        x.count_range(0, a),
        p.iter().product(),
        x.count_from(a + p.len()),
    ))
}

pub struct BiasLayer {
    base: LayerBase,
    outer: usize,
    dim: usize,
    inner: usize,
    /// GPU path: the gradient reduction's partials.
    partial: DeviceBuf<f64>,
}

impl BiasLayer {
    pub fn new(param: &LayerParameter) -> Self {
        BiasLayer {
            base: LayerBase::new(param),
            outer: 0,
            dim: 0,
            inner: 0,
            partial: DeviceBuf::default(),
        }
    }

    fn axis(&self) -> i32 {
        self.base
            .param
            .bias_param
            .as_ref()
            .map(|p| p.axis())
            .unwrap_or(1)
    }
}

impl Layer for BiasLayer {
    fn type_name(&self) -> &'static str {
        "Bias"
    }
    fn base(&self) -> &LayerBase {
        &self.base
    }
    fn base_mut(&mut self) -> &mut LayerBase {
        &mut self.base
    }
    fn bottom_arity(&self) -> Arity {
        Arity::Range(1, 2)
    }
    fn top_arity(&self) -> Arity {
        Arity::Exact(1)
    }

    fn setup(&mut self, rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let p = self.base.param.bias_param.clone().unwrap_or_default();
        let name = self.name().to_string();
        if bottom.len() == 1 {
            let shape = param_shape(&name, &bottom[0], p.axis(), p.num_axes())?;
            if self.base.blobs.is_empty() {
                let b = Blob::with_shape(&shape)?;
                // No filler means FillerParameter's defaults: constant 0.
                let filler: FillerParameter = p.filler.clone().unwrap_or_default();
                crate::filler::fill(&b, &filler, rng)?;
                self.base.blobs.push(b);
            } else {
                check_given_blobs(&name, &self.base.blobs, &[shape])?;
            }
        } else {
            check_given_blobs(&name, &self.base.blobs, &[])?;
        }
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let operand = if bottom.len() > 1 {
            bottom[1].shape()
        } else {
            self.base.blobs[0].shape()
        };
        let (o, d, i) = broadcast_dims(self.name(), &bottom[0], self.axis(), &operand)?;
        (self.outer, self.dim, self.inner) = (o, d, i);
        top[0].reshape(&bottom[0].shape())?;
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let bias_buf = if bottom.len() > 1 {
            bottom[1].data_buf()
        } else {
            self.base.blobs[0].data_buf()
        };
        let bias = read(&bias_buf);
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        if crate::blob::same(&xb, &yb) {
            k::bias_inplace(&mut write(&yb), &bias, self.dim, self.inner);
        } else {
            k::bias_forward(&read(&xb), &bias, self.dim, self.inner, &mut write(&yb));
        }
        Ok(())
    }

    fn backward(
        &mut self,
        _: &mut Ctx,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        let dyb = top[0].diff_buf();
        let dxb = bottom[0].diff_buf();
        // In place, the bottom diff already is the top diff.
        if pd[0] && !crate::blob::same(&dyb, &dxb) {
            write(&dxb).copy_from_slice(&read(&dyb));
        }
        let learned = bottom.len() == 1;
        if (learned && self.base.param_needs_grad(0)) || (!learned && pd[1]) {
            let gb = if learned {
                self.base.blobs[0].diff_buf()
            } else {
                bottom[1].diff_buf()
            };
            // A learned bias accumulates its gradient; a bottom's gradient is overwritten.
            k::broadcast_grad(
                &read(&dyb),
                None,
                self.outer,
                self.dim,
                self.inner,
                &mut write(&gb),
                learned,
            );
        }
        Ok(())
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }

    fn forward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<()> {
        let (outer, dim, inner) = (self.outer, self.dim, self.inner);
        if outer * dim * inner == 0 {
            return Ok(());
        }
        let bias_buf = if bottom.len() > 1 {
            bottom[1].data_buf()
        } else {
            self.base.blobs[0].data_buf()
        };
        let bias = bias_buf.device(g)?;
        ops::with_io(g, &bottom[0].data_buf(), &top[0].data_buf(), |io| {
            g.kernels()
                .scale_bias_fwd(g.stream(), io, &*bias, outer, dim, inner)
        })
    }

    fn backward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        let (outer, dim, inner) = (self.outer, self.dim, self.inner);
        let learned = bottom.len() == 1;
        let want_bias = (learned && self.base.param_needs_grad(0)) || (!learned && pd[1]);
        let gb = if learned {
            self.base.blobs[0].diff_buf()
        } else {
            bottom[1].diff_buf()
        };
        if outer * dim * inner == 0 {
            // Nothing to sum (no device memory to touch): a bottom's gradient is zero.
            if want_bias && !learned {
                gb.fill(0.0);
            }
            return Ok(());
        }
        let dyb = top[0].diff_buf();
        // In place, the bottom diff already is the top diff.
        if pd[0] {
            ops::copy(g, &dyb, &bottom[0].diff_buf())?;
        }
        if want_bias {
            let (kern, s) = (g.kernels(), g.stream());
            let dy = dyb.device(g)?;
            // A learned bias accumulates its gradient; a bottom's gradient is overwritten.
            let mut gd = if learned {
                gb.device_mut(g)?
            } else {
                gb.device_out(g)?
            };
            let partial = self
                .partial
                .get(g, channel_partials_len(dim, outer, inner))?;
            let chunks = kern.scale_grad_partials(s, &*dy, None, partial, outer, dim, inner)?;
            kern.scale_grad_finish(s, partial, &mut *gd, dim, chunks, learned)?;
        }
        Ok(())
    }
}
