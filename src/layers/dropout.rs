//! Dropout (inverted): in TRAIN `y = x * mask * scale` with `mask ~ Bernoulli(1 - ratio)` drawn
//! from the net's random source and `scale = 1 / (1 - ratio)`; in TEST the identity. Backward
//! applies the same mask and scale (identity in TEST). In place needs nothing kept.
//!
//! On the GPU the mask comes from the counter-based generator of kernels/dropout.cu (Caffe's GPU
//! rule, `random word > UINT_MAX * ratio`), not from the CPU's Bernoulli draws: the layer takes
//! one 64-bit seed from the net's random source at its first TRAIN pass (two `next_u32` draws,
//! the high word first) and draws pass k with offset k, so a run is reproducible from the
//! solver's random_seed and `kernels::dropout_mask_host` reproduces any pass's mask on the host.
//! The mask stays on the device for backward.

use anyhow::{anyhow, bail, Result};
use cudarc::driver::{CudaSlice, DevicePtrMut};

use super::{neuron, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::activation as act;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::ops;
use crate::blob::{read, same, write, BlobRef};
use crate::proto::caffe::{LayerParameter, Phase};
use crate::rng::CaffeRng;

pub struct DropoutLayer {
    base: LayerBase,
    ratio: f32,
    scale: f32,
    /// 0 or 1 per element, from the last TRAIN forward.
    mask: Vec<f32>,
    /// The same on the device (GPU runs).
    mask_gpu: Option<CudaSlice<f32>>,
    /// The GPU generator's seed, drawn at the first TRAIN pass, and the passes drawn so far.
    seed: Option<u64>,
    draws: u64,
}

impl DropoutLayer {
    pub fn new(param: &LayerParameter) -> Result<Self> {
        let ratio = param
            .dropout_param
            .as_ref()
            .map(|p| p.dropout_ratio())
            .unwrap_or(0.5);
        if !(0.0..1.0).contains(&ratio) {
            bail!(
                "layer '{}': dropout_ratio must be in [0, 1), got {ratio}",
                param.name()
            );
        }
        let scale = (1.0 / (1.0 - ratio as f64)) as f32;
        Ok(DropoutLayer {
            base: LayerBase::new(param),
            ratio,
            scale,
            mask: Vec::new(),
            mask_gpu: None,
            seed: None,
            draws: 0,
        })
    }

    fn train(&self) -> bool {
        self.base.phase() == Phase::Train
    }
}

/// Copies `src` into `dst` unless they are one buffer.
fn copy_buf(src: &crate::blob::Buf, dst: &crate::blob::Buf) {
    if !same(src, dst) {
        write(dst).copy_from_slice(&read(src));
    }
}

impl Layer for DropoutLayer {
    fn type_name(&self) -> &'static str {
        "Dropout"
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
        self.mask.resize(bottom[0].count(), 0.0);
        neuron::reshape(&bottom[0], &top[0])
    }

    fn forward(&mut self, ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        if !self.train() {
            copy_buf(&bottom[0].data_buf(), &top[0].data_buf());
            return Ok(());
        }
        let keep = 1.0 - self.ratio;
        for m in self.mask.iter_mut() {
            *m = if ctx.rng.bernoulli(keep) { 1.0 } else { 0.0 };
        }
        let (mask, scale) = (&self.mask, self.scale);
        neuron::forward(&bottom[0], &top[0], None, |io| {
            act::dropout_forward(io, mask, scale)
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
        if !self.train() {
            copy_buf(&top[0].diff_buf(), &bottom[0].diff_buf());
            return Ok(());
        }
        let (mask, scale) = (&self.mask, self.scale);
        neuron::backward(&top[0], &bottom[0], Some(&[]), |d, _| {
            act::dropout_backward(d, mask, scale)
        });
        Ok(())
    }

    fn forward_gpu(
        &mut self,
        ctx: &mut Ctx,
        g: &Gpu,
        bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<()> {
        if !self.train() {
            return ops::copy(g, &bottom[0].data_buf(), &top[0].data_buf());
        }
        let seed = *self
            .seed
            .get_or_insert_with(|| ((ctx.rng.next_u32() as u64) << 32) | ctx.rng.next_u32() as u64);
        let offset = self.draws;
        self.draws += 1;
        let (ratio, scale) = (self.ratio, self.scale);
        let mask = ops::scratch(g, &mut self.mask_gpu, bottom[0].count())?;
        neuron::forward_gpu(g, &bottom[0], &top[0], None, |io| {
            let mask: &mut dyn DevicePtrMut<f32> = mask;
            g.kernels()
                .dropout_fwd(g.stream(), io, Some(mask), seed, offset, ratio, scale)
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
        let (dy, dx) = (top[0].diff_buf(), bottom[0].diff_buf());
        if !self.train() {
            return ops::copy(g, &dy, &dx);
        }
        let mask = self
            .mask_gpu
            .as_ref()
            .ok_or_else(|| anyhow!("layer '{}': Dropout backward before a forward", self.name()))?;
        let scale = self.scale;
        ops::with_io(g, &dy, &dx, |d| {
            g.kernels().dropout_bwd_mask(g.stream(), d, mask, scale)
        })
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
