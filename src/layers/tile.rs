//! Tile: repeats the bottom `tiles` times along `axis` (each block [axis..] is copied whole);
//! backward sums the copies.

use anyhow::{anyhow, bail, Result};

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::tensor;
use crate::backend::cuda::gpu::Gpu;
use crate::blob::{read, write, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct TileLayer {
    base: LayerBase,
    tiles: usize,
    axis: usize,
}

impl TileLayer {
    pub fn new(param: &LayerParameter) -> Result<Self> {
        let p = param.tile_param.unwrap_or_default();
        if p.tiles.is_none() {
            bail!(
                "layer '{}': Number of tiles must be specified (tile_param.tiles)",
                param.name()
            );
        }
        if p.tiles() <= 0 {
            bail!(
                "layer '{}': Number of tiles must be positive, got {}",
                param.name(),
                p.tiles()
            );
        }
        Ok(TileLayer {
            base: LayerBase::new(param),
            tiles: p.tiles() as usize,
            axis: 0,
        })
    }
}

impl Layer for TileLayer {
    fn type_name(&self) -> &'static str {
        "Tile"
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
        if std::rc::Rc::ptr_eq(&bottom[0], &top[0]) {
            bail!("layer '{}': Tile does not work in place", self.name());
        }
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let p = self.base.param.tile_param.unwrap_or_default();
        self.axis = bottom[0]
            .canonical_axis(p.axis())
            .map_err(|e| anyhow!("layer '{}': tile axis: {e}", self.name()))?;
        let mut shape = bottom[0].shape();
        shape[self.axis] *= self.tiles;
        top[0].reshape(&shape)
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let outer = bottom[0].count_range(0, self.axis);
        let inner = bottom[0].count_from(self.axis);
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        tensor::tile_forward(&read(&xb), &mut write(&yb), outer, inner, self.tiles);
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
        let outer = bottom[0].count_range(0, self.axis);
        let inner = bottom[0].count_from(self.axis);
        let (dyb, dxb) = (top[0].diff_buf(), bottom[0].diff_buf());
        tensor::tile_backward(&read(&dyb), &mut write(&dxb), outer, inner, self.tiles);
        Ok(())
    }

    fn forward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<()> {
        let outer = bottom[0].count_range(0, self.axis);
        let inner = bottom[0].count_from(self.axis);
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        let x = xb.device(g)?;
        let mut y = yb.device_out(g)?;
        g.kernels()
            .tensor_tile_fwd(g.stream(), &*x, &mut *y, outer, inner, self.tiles)
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
        let outer = bottom[0].count_range(0, self.axis);
        let inner = bottom[0].count_from(self.axis);
        let (dyb, dxb) = (top[0].diff_buf(), bottom[0].diff_buf());
        let dy = dyb.device(g)?;
        let mut dx = dxb.device_out(g)?;
        g.kernels()
            .tensor_tile_bwd(g.stream(), &*dy, &mut *dx, outer, inner, self.tiles)
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
