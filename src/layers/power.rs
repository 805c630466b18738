//! Power: `y = (shift + scale * x)^power`, with Caffe's special cases (constant output when
//! `power * scale == 0`; backward forms for `power == 1`, `power == 2`, `shift == 0`). Backward
//! needs the input unless the derivative is constant; it is kept when the layer runs in place.

use anyhow::Result;
use cudarc::driver::CudaSlice;

use super::{neuron, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::activation as act;
use crate::backend::cuda::gpu::Gpu;
use crate::blob::{read, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct PowerLayer {
    base: LayerBase,
    power: f32,
    scale: f32,
    shift: f32,
    kept: Vec<f32>,
    /// The input kept on the device when the layer runs in place on the GPU.
    kept_gpu: Option<CudaSlice<f32>>,
    used_kept: bool,
}

impl PowerLayer {
    pub fn new(param: &LayerParameter) -> Self {
        let p = param.power_param.unwrap_or_default();
        PowerLayer {
            base: LayerBase::new(param),
            power: p.power(),
            scale: p.scale(),
            shift: p.shift(),
            kept: Vec::new(),
            kept_gpu: None,
            used_kept: false,
        }
    }

    fn backward_needs_input(&self) -> bool {
        !(self.power * self.scale == 0.0 || self.power == 1.0)
    }
}

impl Layer for PowerLayer {
    fn type_name(&self) -> &'static str {
        "Power"
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
        let (power, scale, shift) = (self.power, self.scale, self.shift);
        let keep = if self.backward_needs_input() {
            Some(&mut self.kept)
        } else {
            None
        };
        self.used_kept = neuron::forward(&bottom[0], &top[0], keep, |io| {
            act::power_forward(io, power, scale, shift)
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
        let (power, scale, shift) = (self.power, self.scale, self.shift);
        let kept = if self.used_kept {
            Some(&self.kept[..])
        } else {
            None
        };
        let yb = top[0].data_buf();
        let y = read(&yb);
        neuron::backward(&top[0], &bottom[0], kept, |d, x| {
            act::power_backward(d, x, &y, power, scale, shift)
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
        let (power, scale, shift) = (self.power, self.scale, self.shift);
        let keep = if self.backward_needs_input() {
            Some(&mut self.kept_gpu)
        } else {
            None
        };
        self.used_kept = neuron::forward_gpu(g, &bottom[0], &top[0], keep, |io| {
            g.kernels()
                .activation_power_fwd(g.stream(), io, power, scale, shift)
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
        let (power, scale, shift) = (self.power, self.scale, self.shift);
        let kept = if self.used_kept {
            self.kept_gpu.as_ref()
        } else {
            None
        };
        let yb = top[0].data_buf();
        let y = yb.device(g)?;
        neuron::backward_gpu(g, &top[0], &bottom[0], kept, |d, x| {
            g.kernels()
                .activation_power_bwd(g.stream(), d, x, &*y, power, scale, shift)
        })
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
