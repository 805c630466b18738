//! EuclideanLoss: `Σ (a − b)² / (2·N)`, N = the first dimension. Both inputs may receive a
//! gradient (`+w/N·(a − b)` and `−w/N·(a − b)`), so force_backward reaches both as in Caffe.

use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

use super::softmax_loss::{default_loss_weight, loss_reshape};
use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::loss as ops;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::kernels::sum_chunks;
use crate::backend::cuda::ops as dev;
use crate::blob::{read, write, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct EuclideanLossLayer {
    base: LayerBase,
    /// a − b from the last forward.
    diff: Vec<f32>,
    /// GPU runs: the same on the device, and the per-chunk sums of its squares.
    diff_gpu: Option<CudaSlice<f32>>,
    partial_gpu: Option<CudaSlice<f64>>,
}

impl EuclideanLossLayer {
    pub fn new(param: &LayerParameter) -> Self {
        EuclideanLossLayer {
            base: LayerBase::new(param),
            diff: Vec::new(),
            diff_gpu: None,
            partial_gpu: None,
        }
    }
}

impl Layer for EuclideanLossLayer {
    fn type_name(&self) -> &'static str {
        "EuclideanLoss"
    }
    fn base(&self) -> &LayerBase {
        &self.base
    }
    fn base_mut(&mut self) -> &mut LayerBase {
        &mut self.base
    }
    fn bottom_arity(&self) -> Arity {
        Arity::Exact(2)
    }
    fn top_arity(&self) -> Arity {
        Arity::Exact(1)
    }
    fn auto_top_blobs(&self) -> bool {
        true
    }

    fn setup(&mut self, _rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        default_loss_weight(&mut self.base);
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let name = self.name().to_string();
        loss_reshape(&name, bottom, top)?;
        if bottom[0].count_from(1) != bottom[1].count_from(1) {
            bail!(
                "layer '{name}': inputs must have the same dimension (shapes {} and {})",
                bottom[0].shape_string(),
                bottom[1].shape_string()
            );
        }
        self.diff.resize(bottom[0].count(), 0.0);
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let dot = ops::euclidean_forward(
            &read(&bottom[0].data_buf()),
            &read(&bottom[1].data_buf()),
            &mut self.diff,
        );
        let num = bottom[0].shape()[0] as f32;
        write(&top[0].data_buf())[0] = dot / num / 2.0;
        Ok(())
    }

    fn backward(
        &mut self,
        _ctx: &mut Ctx,
        top: &[BlobRef],
        propagate_down: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        let w = read(&top[0].diff_buf())[0];
        for (i, b) in bottom.iter().enumerate() {
            if !propagate_down[i] {
                continue;
            }
            let sign = if i == 0 { 1.0 } else { -1.0 };
            let alpha = sign * w / b.shape()[0] as f32;
            ops::scaled_copy(&self.diff, alpha, &mut write(&b.diff_buf()));
        }
        Ok(())
    }

    fn forward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<()> {
        let (k, s) = (g.kernels(), g.stream());
        let n = bottom[0].count();
        let (ab, bb, lb) = (
            bottom[0].data_buf(),
            bottom[1].data_buf(),
            top[0].data_buf(),
        );
        let (a, b) = (ab.device(g)?, bb.device(g)?);
        let diff = dev::scratch(g, &mut self.diff_gpu, n)?;
        let partial = dev::scratch(g, &mut self.partial_gpu, sum_chunks(n))?;
        let chunks = k.loss_euclidean_fwd_partials(s, &*a, &*b, diff, partial, n)?;
        let mut loss = lb.device_out(g)?;
        let num = bottom[0].shape()[0] as f32;
        k.loss_euclidean_fwd_finish(s, &*partial, chunks, &mut *loss, num)
    }

    fn backward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        top: &[BlobRef],
        propagate_down: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if !propagate_down.iter().any(|&p| p) {
            return Ok(());
        }
        let diff = self
            .diff_gpu
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("layer '{}': backward before a forward", self.name()))?;
        let wb = top[0].diff_buf();
        let w = wb.device(g)?;
        for (i, b) in bottom.iter().enumerate() {
            if !propagate_down[i] {
                continue;
            }
            let sign = if i == 0 { 1.0 } else { -1.0 };
            let dxb = b.diff_buf();
            let mut dx = dxb.device_out(g)?;
            g.kernels().loss_weighted_copy(
                g.stream(),
                diff,
                &*w,
                &mut *dx,
                sign,
                b.shape()[0] as f32,
            )?;
        }
        Ok(())
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
