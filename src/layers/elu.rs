//! ELU: `y = max(x, 0) + alpha * (exp(min(x, 0)) - 1)`.
//!
//! Backward reads the bottom data's sign and the output; in place the "bottom" is the output,
//! whose sign is the input's for alpha >= 0. For a negative alpha in place the input is kept.

use anyhow::Result;
use cudarc::driver::CudaSlice;

use super::{neuron, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::activation as act;
use crate::backend::cuda::gpu::Gpu;
use crate::blob::{read, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct EluLayer {
    base: LayerBase,
    alpha: f32,
    kept: Vec<f32>,
    /// The input kept on the device when the layer runs in place on the GPU.
    kept_gpu: Option<CudaSlice<f32>>,
    used_kept: bool,
}

impl EluLayer {
    pub fn new(param: &LayerParameter) -> Self {
        let alpha = param.elu_param.as_ref().map(|p| p.alpha()).unwrap_or(1.0);
        EluLayer {
            base: LayerBase::new(param),
            alpha,
            kept: Vec::new(),
            kept_gpu: None,
            used_kept: false,
        }
    }
}

impl Layer for EluLayer {
    fn type_name(&self) -> &'static str {
        "ELU"
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
        let alpha = self.alpha;
        let keep = if alpha < 0.0 {
            Some(&mut self.kept)
        } else {
            None
        };
        self.used_kept =
            neuron::forward(&bottom[0], &top[0], keep, |io| act::elu_forward(io, alpha));
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
        let alpha = self.alpha;
        let kept = if self.used_kept {
            Some(&self.kept[..])
        } else {
            None
        };
        let yb = top[0].data_buf();
        let y = read(&yb);
        neuron::backward(&top[0], &bottom[0], kept, |d, x| {
            act::elu_backward(d, x, &y, alpha)
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
        let alpha = self.alpha;
        let keep = if alpha < 0.0 {
            Some(&mut self.kept_gpu)
        } else {
            None
        };
        self.used_kept = neuron::forward_gpu(g, &bottom[0], &top[0], keep, |io| {
            g.kernels().activation_elu_fwd(g.stream(), io, alpha)
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
        let alpha = self.alpha;
        let kept = if self.used_kept {
            self.kept_gpu.as_ref()
        } else {
            None
        };
        let yb = top[0].data_buf();
        let y = yb.device(g)?;
        neuron::backward_gpu(g, &top[0], &bottom[0], kept, |d, x| {
            g.kernels().activation_elu_bwd(g.stream(), d, x, &*y, alpha)
        })
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
