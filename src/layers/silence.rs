//! Silence: consumes bottoms (so they are not net outputs) and produces nothing; backward
//! writes zero diffs.

use anyhow::Result;

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::ops;
use crate::blob::BlobRef;
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct SilenceLayer {
    base: LayerBase,
}

impl SilenceLayer {
    pub fn new(param: &LayerParameter) -> Self {
        SilenceLayer {
            base: LayerBase::new(param),
        }
    }
}

impl Layer for SilenceLayer {
    fn type_name(&self) -> &'static str {
        "Silence"
    }
    fn base(&self) -> &LayerBase {
        &self.base
    }
    fn base_mut(&mut self) -> &mut LayerBase {
        &mut self.base
    }
    fn bottom_arity(&self) -> Arity {
        Arity::Min(1)
    }
    fn top_arity(&self) -> Arity {
        Arity::Exact(0)
    }

    fn setup(&mut self, _rng: &mut CaffeRng, _bottom: &[BlobRef], _top: &[BlobRef]) -> Result<()> {
        Ok(())
    }

    fn reshape(&mut self, _bottom: &[BlobRef], _top: &[BlobRef]) -> Result<()> {
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, _bottom: &[BlobRef], _top: &[BlobRef]) -> Result<()> {
        Ok(())
    }

    fn backward(
        &mut self,
        _: &mut Ctx,
        _top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        for (b, &p) in bottom.iter().zip(pd) {
            if p {
                b.fill_diff(0.0);
            }
        }
        Ok(())
    }

    fn backward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        _top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        for (b, &p) in bottom.iter().zip(pd) {
            if p {
                ops::zero(g, &b.diff_buf())?;
            }
        }
        Ok(())
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
