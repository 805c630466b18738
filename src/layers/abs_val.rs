//! AbsVal: `y = |x|`; backward `dx = dy * sign(x)` needs the input, kept when in place.

use anyhow::Result;

use super::{neuron, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::activation as act;
use crate::blob::BlobRef;
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct AbsValLayer {
    base: LayerBase,
    kept: Vec<f32>,
    used_kept: bool,
}

impl AbsValLayer {
    pub fn new(param: &LayerParameter) -> Self {
        AbsValLayer {
            base: LayerBase::new(param),
            kept: Vec::new(),
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
}
