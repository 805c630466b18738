//! Swish: `y = x * sigmoid(beta * x)`; the sigmoid is kept for backward, which needs it and
//! the output only (so in place costs nothing more).

use anyhow::{anyhow, Result};
use cudarc::driver::CudaSlice;

use super::{neuron, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::activation as act;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::ops;
use crate::blob::{read, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct SwishLayer {
    base: LayerBase,
    beta: f32,
    sigmoid: Vec<f32>,
    /// The sigmoid on the device (GPU runs).
    sigmoid_gpu: Option<CudaSlice<f32>>,
}

impl SwishLayer {
    pub fn new(param: &LayerParameter) -> Self {
        let beta = param.swish_param.as_ref().map(|p| p.beta()).unwrap_or(1.0);
        SwishLayer {
            base: LayerBase::new(param),
            beta,
            sigmoid: Vec::new(),
            sigmoid_gpu: None,
        }
    }
}

impl Layer for SwishLayer {
    fn type_name(&self) -> &'static str {
        "Swish"
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
        self.sigmoid.resize(bottom[0].count(), 0.0);
        neuron::reshape(&bottom[0], &top[0])
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let (beta, s) = (self.beta, &mut self.sigmoid);
        neuron::forward(&bottom[0], &top[0], None, |io| {
            act::swish_forward(io, s, beta)
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
        let (beta, s) = (self.beta, &self.sigmoid);
        let yb = top[0].data_buf();
        let y = read(&yb);
        neuron::backward(&top[0], &bottom[0], Some(&[]), |d, _| {
            act::swish_backward(d, &y, s, beta)
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
        let beta = self.beta;
        let sig = ops::scratch(g, &mut self.sigmoid_gpu, bottom[0].count())?;
        neuron::forward_gpu(g, &bottom[0], &top[0], None, |io| {
            g.kernels().activation_swish_fwd(g.stream(), io, sig, beta)
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
        let beta = self.beta;
        let sig = self
            .sigmoid_gpu
            .as_ref()
            .ok_or_else(|| anyhow!("layer '{}': Swish backward before a forward", self.name()))?;
        neuron::backward_gpu_from_output(g, &top[0], &bottom[0], |d, y| {
            g.kernels()
                .activation_swish_bwd(g.stream(), d, y, sig, beta)
        })
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
