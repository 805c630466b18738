//! Log: `y = log_base(shift + scale * x)` (base -1 means e). Backward needs the input, kept
//! when the layer runs in place.

use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

use super::{neuron, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::activation as act;
use crate::backend::cuda::gpu::Gpu;
use crate::blob::BlobRef;
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct LogLayer {
    base: LayerBase,
    scale: f32,
    shift: f32,
    base_scale: f32,
    num_scale: f32,
    kept: Vec<f32>,
    /// The input kept on the device when the layer runs in place on the GPU.
    kept_gpu: Option<CudaSlice<f32>>,
    used_kept: bool,
}

impl LogLayer {
    pub fn new(param: &LayerParameter) -> Result<Self> {
        let p = param.log_param.unwrap_or_default();
        let base = p.base();
        let valid = base == -1.0 || base > 0.0;
        if !valid {
            bail!(
                "layer '{}': log_param base must be strictly positive (or -1 for e), got {base}",
                param.name()
            );
        }
        let (base_scale, num_scale) = act::log_scales(base, p.scale());
        if !base_scale.is_finite() {
            bail!(
                "layer '{}': 1/log(base) = 1/log({base}) is not finite",
                param.name()
            );
        }
        Ok(LogLayer {
            base: LayerBase::new(param),
            scale: p.scale(),
            shift: p.shift(),
            base_scale,
            num_scale,
            kept: Vec::new(),
            kept_gpu: None,
            used_kept: false,
        })
    }
}

impl Layer for LogLayer {
    fn type_name(&self) -> &'static str {
        "Log"
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
        let (scale, shift, bs) = (self.scale, self.shift, self.base_scale);
        self.used_kept = neuron::forward(&bottom[0], &top[0], Some(&mut self.kept), |io| {
            act::log_forward(io, scale, shift, bs)
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
        let (scale, shift, ns) = (self.scale, self.shift, self.num_scale);
        let kept = if self.used_kept {
            Some(&self.kept[..])
        } else {
            None
        };
        neuron::backward(&top[0], &bottom[0], kept, |d, x| {
            act::log_backward(d, x, scale, shift, ns)
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
        let (scale, shift, bs) = (self.scale, self.shift, self.base_scale);
        self.used_kept =
            neuron::forward_gpu(g, &bottom[0], &top[0], Some(&mut self.kept_gpu), |io| {
                g.kernels()
                    .activation_log_fwd(g.stream(), io, scale, shift, bs)
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
        let (scale, shift, ns) = (self.scale, self.shift, self.num_scale);
        let kept = if self.used_kept {
            self.kept_gpu.as_ref()
        } else {
            None
        };
        neuron::backward_gpu(g, &top[0], &bottom[0], kept, |d, x| {
            g.kernels()
                .activation_log_bwd(g.stream(), d, x, scale, shift, ns)
        })
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
