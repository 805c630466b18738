//! Split: one bottom read by several consumers. Tops share the bottom's data (no copy);
//! backward sums the tops' diffs into the bottom's. Inserted automatically by the net.

use anyhow::{bail, Result};

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::ops;
use crate::blob::{read, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct SplitLayer {
    base: LayerBase,
}

impl SplitLayer {
    pub fn new(param: &LayerParameter) -> Self {
        SplitLayer {
            base: LayerBase::new(param),
        }
    }
}

impl Layer for SplitLayer {
    fn type_name(&self) -> &'static str {
        "Split"
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
        Arity::Min(1)
    }

    fn setup(&mut self, _rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        for t in top {
            if std::rc::Rc::ptr_eq(t, &bottom[0]) {
                bail!("layer '{}': Split does not work in place", self.name());
            }
            t.reshape_like(&bottom[0])?;
            t.share_data(&bottom[0]);
        }
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        // Sharing is re-established each pass in case the bottom's buffer was replaced.
        for t in top {
            t.share_data(&bottom[0]);
        }
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
        let out = bottom[0].diff_buf();
        let bufs: Vec<_> = top.iter().map(|t| t.diff_buf()).collect();
        let diffs: Vec<_> = bufs.iter().map(read).collect();
        let views: Vec<&[f32]> = diffs.iter().map(|d| &d[..]).collect();
        crate::backend::cpu::eltwise::add_all(&views, &mut out.borrow_mut());
        Ok(())
    }

    fn forward_gpu(
        &mut self,
        ctx: &mut Ctx,
        _g: &Gpu,
        bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<()> {
        // Sharing memory is all there is to do, on any backend.
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
        if !pd[0] {
            return Ok(());
        }
        // dx = dy_0, then + dy_1, + dy_2, ... in top order, as the CPU adds them.
        let out = bottom[0].diff_buf();
        ops::copy(g, &top[0].diff_buf(), &out)?;
        let mut dx = out.device_mut(g)?;
        for t in &top[1..] {
            let d = t.diff_buf();
            let dy = d.device(g)?;
            g.kernels()
                .eltwise_sum_fwd(g.stream(), &*dy, &mut *dx, 1.0, true)?;
        }
        Ok(())
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
