//! AbsVal: `y = |x|`; backward `dx = dy * sign(x)` needs the input, kept when in place.

use anyhow::Result;
use cudarc::driver::CudaSlice;

use super::{neuron, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::activation as act;
use crate::backend::cuda::gpu::Gpu;
use crate::blob::BlobRef;
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct AbsValLayer {
    base: LayerBase,
    kept: Vec<f32>,
    /// The input kept on the device when the layer runs in place on the GPU.
    kept_gpu: Option<CudaSlice<f32>>,
    used_kept: bool,
}

impl AbsValLayer {
    pub fn new(param: &LayerParameter) -> Self {
        AbsValLayer {
            base: LayerBase::new(param),
            kept: Vec::new(),
            kept_gpu: None,
            used_kept: false,
        }
    }
}

impl Layer for AbsValLayer {
    fn type_name(&self) -> &'static str {
        "AbsVal"
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
        self.used_kept =
            neuron::forward(&bottom[0], &top[0], Some(&mut self.kept), act::abs_forward);
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
        let kept = if self.used_kept {
            Some(&self.kept[..])
        } else {
            None
        };
        neuron::backward(&top[0], &bottom[0], kept, act::abs_backward);
        Ok(())
    }

    fn forward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<()> {
        self.used_kept =
            neuron::forward_gpu(g, &bottom[0], &top[0], Some(&mut self.kept_gpu), |io| {
                g.kernels().activation_absval_fwd(g.stream(), io)
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
        let kept = if self.used_kept {
            self.kept_gpu.as_ref()
        } else {
            None
        };
        neuron::backward_gpu(g, &top[0], &bottom[0], kept, |d, x| {
            g.kernels().activation_absval_bwd(g.stream(), d, x)
        })
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
