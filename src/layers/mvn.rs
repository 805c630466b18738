//! MVN: subtracts the mean of each (n, c) plane (of each image with across_channels) and, with
//! normalize_variance, divides by its standard deviation plus eps. As in Caffe the input is
//! read through the legacy 4-D view (at most 4 axes, missing axes count 1) and the top takes
//! that 4-D shape.

use anyhow::{bail, Result};

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::mvn as k;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::ops::{self, DeviceBuf};
use crate::blob::{map_buf, read, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct MvnLayer {
    base: LayerBase,
    normalize_variance: bool,
    across_channels: bool,
    eps: f32,
    /// Length of one normalised row.
    dim: usize,
    /// sqrt(var) + eps per row, for backward.
    std: Vec<f32>,
    /// The same on the GPU path.
    std_dev: DeviceBuf<f32>,
}

impl MvnLayer {
    pub fn new(param: &LayerParameter) -> Self {
        let p = param.mvn_param.unwrap_or_default();
        MvnLayer {
            base: LayerBase::new(param),
            normalize_variance: p.normalize_variance(),
            across_channels: p.across_channels(),
            eps: p.eps(),
            dim: 0,
            std: Vec::new(),
            std_dev: DeviceBuf::default(),
        }
    }
}

impl Layer for MvnLayer {
    fn type_name(&self) -> &'static str {
        "MVN"
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
        let shape = bottom[0].shape();
        if shape.len() > 4 {
            bail!(
                "layer '{}': MVN takes blobs with at most 4 axes (num, channels, height, width), got shape {}",
                self.name(),
                bottom[0].shape_string()
            );
        }
        let legacy: Vec<usize> = (0..4).map(|i| shape.get(i).copied().unwrap_or(1)).collect();
        let rows = if self.across_channels {
            legacy[0]
        } else {
            legacy[0] * legacy[1]
        };
        self.dim = bottom[0].count().checked_div(rows).unwrap_or(0);
        self.std.resize(rows, 0.0);
        top[0].reshape(&legacy)?;
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let (dim, nv, eps) = (self.dim, self.normalize_variance, self.eps);
        let std = &mut self.std;
        map_buf(&bottom[0].data_buf(), &top[0].data_buf(), |x, y| {
            k::mvn_forward(x, dim, nv, eps, y, std)
        });
        Ok(())
    }

    fn backward(
        &mut self,
        _: &mut Ctx,
        top: &[BlobRef],
        _pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        // Caffe writes the bottom diff whatever propagate_down says. In place, the top diff is
        // copied aside first (Caffe would read it after overwriting it).
        let (dim, nv) = (self.dim, self.normalize_variance);
        let yb = top[0].data_buf();
        let y = read(&yb);
        let std = &self.std;
        map_buf(&top[0].diff_buf(), &bottom[0].diff_buf(), |dy, dx| {
            k::mvn_backward(&y, dy, dim, nv, std, dx)
        });
        Ok(())
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }

    fn forward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<()> {
        let (dim, nv, eps) = (self.dim, self.normalize_variance, self.eps);
        let rows = self.std.len();
        if rows * dim == 0 {
            return Ok(());
        }
        let std = self.std_dev.get(g, rows)?;
        ops::with_io(g, &bottom[0].data_buf(), &top[0].data_buf(), |io| {
            g.kernels().mvn_fwd(g.stream(), io, std, rows, dim, nv, eps)
        })
    }

    fn backward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        top: &[BlobRef],
        _pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        // Caffe writes the bottom diff whatever propagate_down says. In place, each row's sums
        // are taken before any of its values is overwritten (see mvn.cu).
        let (dim, nv) = (self.dim, self.normalize_variance);
        let rows = self.std.len();
        if rows * dim == 0 {
            return Ok(());
        }
        let std = self.std_dev.current("MVN std")?;
        let yb = top[0].data_buf();
        let y = yb.device(g)?;
        ops::with_io(g, &top[0].diff_buf(), &bottom[0].diff_buf(), |io| {
            g.kernels().mvn_bwd(g.stream(), &*y, io, std, rows, dim, nv)
        })
    }
}
