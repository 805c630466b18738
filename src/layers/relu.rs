//! ReLU (leaky with `negative_slope`): `y = max(x, 0) + slope * min(x, 0)`.
//!
//! Backward reads the bottom data's sign; in place that is the output's sign, which is the
//! input's for slope >= 0. For a negative slope in place the sign flips (Caffe then computes a
//! wrong gradient); the input is kept instead so the gradient stays right.

use anyhow::Result;
use cudarc::driver::CudaSlice;

use super::{neuron, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::activation as act;
use crate::backend::cuda::gpu::Gpu;
use crate::blob::BlobRef;
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct ReluLayer {
    base: LayerBase,
    slope: f32,
    kept: Vec<f32>,
    /// The input kept on the device when the layer runs in place on the GPU.
    kept_gpu: Option<CudaSlice<f32>>,
    used_kept: bool,
}

impl ReluLayer {
    pub fn new(param: &LayerParameter) -> Self {
        let slope = param
            .relu_param
            .as_ref()
            .map(|p| p.negative_slope())
            .unwrap_or(0.0);
        ReluLayer {
            base: LayerBase::new(param),
            slope,
            kept: Vec::new(),
            kept_gpu: None,
            used_kept: false,
        }
    }
}

impl ReluLayer {
    /// For `net::fuse`.
    pub(crate) fn slope(&self) -> f32 {
        self.slope
    }
}

impl Layer for ReluLayer {
    fn type_name(&self) -> &'static str {
        "ReLU"
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
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn setup(&mut self, _rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        neuron::reshape(&bottom[0], &top[0])
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let slope = self.slope;
        let keep = if slope < 0.0 {
            Some(&mut self.kept)
        } else {
            None
        };
        self.used_kept =
            neuron::forward(&bottom[0], &top[0], keep, |io| act::relu_forward(io, slope));
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
        let slope = self.slope;
        let kept = if self.used_kept {
            Some(&self.kept[..])
        } else {
            None
        };
        neuron::backward(&top[0], &bottom[0], kept, |d, x| {
            act::relu_backward(d, x, slope)
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
        let slope = self.slope;
        let keep = if slope < 0.0 {
            Some(&mut self.kept_gpu)
        } else {
            None
        };
        self.used_kept = neuron::forward_gpu(g, &bottom[0], &top[0], keep, |io| {
            g.kernels().activation_relu_fwd(g.stream(), io, slope)
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
        let slope = self.slope;
        let kept = if self.used_kept {
            self.kept_gpu.as_ref()
        } else {
            None
        };
        neuron::backward_gpu(g, &top[0], &bottom[0], kept, |d, x| {
            g.kernels().activation_relu_bwd(g.stream(), d, x, slope)
        })
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
