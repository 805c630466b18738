//! Sigmoid: `y = 0.5 * tanh(0.5 * x) + 0.5` (Caffe's form); backward `dx = dy * y * (1 - y)`
//! needs only the output, so in place costs nothing.

use anyhow::Result;

use super::{neuron, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::activation as act;
use crate::backend::cuda::gpu::Gpu;
use crate::blob::{read, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct SigmoidLayer {
    base: LayerBase,
}

impl SigmoidLayer {
    pub fn new(param: &LayerParameter) -> Self {
        SigmoidLayer {
            base: LayerBase::new(param),
        }
    }
}

impl Layer for SigmoidLayer {
    fn type_name(&self) -> &'static str {
        "Sigmoid"
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
        neuron::forward(&bottom[0], &top[0], None, act::sigmoid_forward);
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
        let yb = top[0].data_buf();
        let y = read(&yb);
        neuron::backward(&top[0], &bottom[0], Some(&[]), |d, _| {
            act::sigmoid_backward(d, &y)
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
        neuron::forward_gpu(g, &bottom[0], &top[0], None, |io| {
            g.kernels().activation_sigmoid_fwd(g.stream(), io)
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
        neuron::backward_gpu_from_output(g, &top[0], &bottom[0], |d, y| {
            g.kernels().activation_sigmoid_bwd(g.stream(), d, y)
        })
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
