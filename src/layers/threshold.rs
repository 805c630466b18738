//! Threshold: `y = (x > threshold) ? 1 : 0`. No gradient: Caffe's backward is not
//! implemented and fails, and so does this one when asked for a bottom gradient.

use anyhow::{bail, Result};

use super::{neuron, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::activation as act;
use crate::backend::cuda::gpu::Gpu;
use crate::blob::BlobRef;
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct ThresholdLayer {
    base: LayerBase,
    threshold: f32,
}

impl ThresholdLayer {
    pub fn new(param: &LayerParameter) -> Self {
        let threshold = param
            .threshold_param
            .as_ref()
            .map(|p| p.threshold())
            .unwrap_or(0.0);
        ThresholdLayer {
            base: LayerBase::new(param),
            threshold,
        }
    }
}

impl Layer for ThresholdLayer {
    fn type_name(&self) -> &'static str {
        "Threshold"
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
        let t = self.threshold;
        neuron::forward(&bottom[0], &top[0], None, |io| {
            act::threshold_forward(io, t)
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
        let _ = (top, bottom);
        if pd[0] {
            bail!(
                "layer '{}': Threshold has no backward (not differentiable); Caffe does not implement it either",
                self.name()
            );
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
        let t = self.threshold;
        neuron::forward_gpu(g, &bottom[0], &top[0], None, |io| {
            g.kernels().activation_threshold_fwd(g.stream(), io, t)
        })?;
        Ok(())
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
