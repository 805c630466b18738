//! Exp: `y = base^(shift + scale * x)` (base -1 means e), as `outer * exp(inner * x)` with
//! Caffe's precomputed factors. Backward needs only the output.

use anyhow::{bail, Result};

use super::{neuron, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::activation as act;
use crate::backend::cuda::gpu::Gpu;
use crate::blob::{read, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct ExpLayer {
    base: LayerBase,
    inner: f32,
    outer: f32,
}

impl ExpLayer {
    pub fn new(param: &LayerParameter) -> Result<Self> {
        let p = param.exp_param.unwrap_or_default();
        let base = p.base();
        let valid = base == -1.0 || base > 0.0;
        if !valid {
            bail!(
                "layer '{}': exp_param base must be strictly positive (or -1 for e), got {base}",
                param.name()
            );
        }
        let (inner, outer) = act::exp_scales(base, p.scale(), p.shift());
        if !base.ln().is_finite() && base != -1.0 {
            bail!(
                "layer '{}': log(base) = log({base}) is not finite",
                param.name()
            );
        }
        Ok(ExpLayer {
            base: LayerBase::new(param),
            inner,
            outer,
        })
    }
}

impl Layer for ExpLayer {
    fn type_name(&self) -> &'static str {
        "Exp"
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
        neuron::reshape(&bottom[0], &top[0])
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let (inner, outer) = (self.inner, self.outer);
        neuron::forward(&bottom[0], &top[0], None, |io| {
            act::exp_forward(io, inner, outer)
        });
        Ok(())
    }

    fn backward(
        &mut self,
        _: &mut Ctx,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if !pd[0] {
            return Ok(());
        }
        let inner = self.inner;
        let yb = top[0].data_buf();
        let y = read(&yb);
        neuron::backward(&top[0], &bottom[0], Some(&[]), |d, _| {
            act::exp_backward(d, &y, inner)
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
        let (inner, outer) = (self.inner, self.outer);
        neuron::forward_gpu(g, &bottom[0], &top[0], None, |io| {
            g.kernels().activation_exp_fwd(g.stream(), io, inner, outer)
        })?;
        Ok(())
    }

    fn backward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if !pd[0] {
            return Ok(());
        }
        let inner = self.inner;
        neuron::backward_gpu_from_output(g, &top[0], &bottom[0], |d, y| {
            g.kernels().activation_exp_bwd(g.stream(), d, y, inner)
        })
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
