//! Flatten: merges axes [axis, end_axis] (defaults 1 and -1) into one. The top shares the
//! bottom's data and diff, so forward and backward move nothing. In place is forbidden.

use anyhow::{anyhow, bail, Result};

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::ops;
use crate::blob::{read, same, write, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct FlattenLayer {
    base: LayerBase,
}

impl FlattenLayer {
    pub fn new(param: &LayerParameter) -> Self {
        FlattenLayer {
            base: LayerBase::new(param),
        }
    }
}

impl Layer for FlattenLayer {
    fn type_name(&self) -> &'static str {
        "Flatten"
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
        if std::rc::Rc::ptr_eq(&top[0], &bottom[0]) {
            bail!(
                "layer '{}': Flatten layer does not allow in-place computation",
                self.name()
            );
        }
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let p = self.base.param.flatten_param.unwrap_or_default();
        let b = &bottom[0];
        let named =
            |what: &str, e: anyhow::Error| anyhow!("layer '{}': flatten {what}: {e}", self.name());
        let start = b.canonical_axis(p.axis()).map_err(|e| named("axis", e))?;
        let end = b
            .canonical_axis(p.end_axis())
            .map_err(|e| named("end_axis", e))?;
        if end < start {
            bail!(
                "layer '{}': flatten end_axis ({}) comes before axis ({}) for bottom shape {}",
                self.name(),
                p.end_axis(),
                p.axis(),
                b.shape_string()
            );
        }
        let shape = b.shape();
        let mut ts: Vec<usize> = shape[..start].to_vec();
        ts.push(b.count_range(start, end + 1));
        ts.extend_from_slice(&shape[end + 1..]);
        top[0].share_data(b);
        top[0].share_diff(b);
        top[0].reshape(&ts)
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        top[0].share_data(&bottom[0]);
        Ok(())
    }

    fn backward(
        &mut self,
        _: &mut Ctx,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        let (dy, dx) = (top[0].diff_buf(), bottom[0].diff_buf());
        if pd[0] && !same(&dy, &dx) {
            write(&dx).copy_from_slice(&read(&dy));
        }
        Ok(())
    }

    fn forward_gpu(
        &mut self,
        ctx: &mut Ctx,
        _g: &Gpu,
        bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<()> {
        // The top shares the bottom's memory: nothing to compute on any backend.
        self.forward(ctx, bottom, top)
    }

    fn backward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if pd[0] {
            // A no-op unless something gave the top a diff of its own (as the CPU path).
            ops::copy(g, &top[0].diff_buf(), &bottom[0].diff_buf())?;
        }
        Ok(())
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
