//! Dropout (inverted): in TRAIN `y = x * mask * scale` with `mask ~ Bernoulli(1 - ratio)` drawn
//! from the net's random source and `scale = 1 / (1 - ratio)`; in TEST the identity. Backward
//! applies the same mask and scale (identity in TEST). In place needs nothing kept.

use anyhow::{bail, Result};

use super::{neuron, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::activation as act;
use crate::blob::{read, same, write, BlobRef};
use crate::proto::caffe::{LayerParameter, Phase};
use crate::rng::CaffeRng;

pub struct DropoutLayer {
    base: LayerBase,
    ratio: f32,
    scale: f32,
    /// 0 or 1 per element, from the last TRAIN forward.
    mask: Vec<f32>,
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
}
