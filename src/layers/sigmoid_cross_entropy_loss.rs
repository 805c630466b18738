//! SigmoidCrossEntropyLoss: cross-entropy between sigmoid(x) and targets in [0, 1] of the same
//! count, in Caffe's overflow-free form. Caffe master semantics: targets equal to
//! `loss_param.ignore_label` (compared after truncation to int) are skipped, and the sum is
//! divided per `loss_param.normalization` — BATCH_SIZE when neither `normalization` nor the
//! legacy `normalize` is given (unlike SoftmaxWithLoss's VALID).

use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

use super::softmax_loss::{
    default_loss_weight, ignore_label, loss_normalizer, loss_reshape, normalization_mode,
};
use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::loss as ops;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::kernels::{sum_chunks, Io as DeviceIo};
use crate::backend::cuda::ops as dev;
use crate::blob::{read, write, BlobRef};
use crate::proto::caffe::loss_parameter::NormalizationMode;
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct SigmoidCrossEntropyLossLayer {
    base: LayerBase,
    ignore: Option<i32>,
    normalization: NormalizationMode,
    /// sigmoid(x) from the last forward, for backward.
    sigmoid: Vec<f32>,
    /// The divisor of the last forward (Caffe reuses it in backward).
    normalizer: f32,
    outer: usize,
    inner: usize,
    /// GPU runs: the sigmoid, per-chunk loss sums and valid counts, and the valid count of the
    /// last forward (backward derives the normalizer from it on the device).
    sigmoid_gpu: Option<CudaSlice<f32>>,
    partial_loss: Option<CudaSlice<f64>>,
    partial_count: Option<CudaSlice<f64>>,
    valid_gpu: Option<CudaSlice<f32>>,
}

impl SigmoidCrossEntropyLossLayer {
    pub fn new(param: &LayerParameter) -> Result<Self> {
        Ok(SigmoidCrossEntropyLossLayer {
            base: LayerBase::new(param),
            ignore: ignore_label(param),
            normalization: normalization_mode(param, NormalizationMode::BatchSize)?,
            sigmoid: Vec::new(),
            normalizer: 1.0,
            outer: 0,
            inner: 0,
            sigmoid_gpu: None,
            partial_loss: None,
            partial_count: None,
            valid_gpu: None,
        })
    }
}

impl Layer for SigmoidCrossEntropyLossLayer {
    fn type_name(&self) -> &'static str {
        "SigmoidCrossEntropyLoss"
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
    fn allow_force_backward(&self, bottom: usize) -> bool {
        bottom != 1
    }

    fn setup(&mut self, _rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        default_loss_weight(&mut self.base);
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let name = self.name().to_string();
        loss_reshape(&name, bottom, top)?;
        if bottom[0].count() != bottom[1].count() {
            bail!(
                "layer '{name}': SIGMOID_CROSS_ENTROPY_LOSS layer inputs must have the same count (shapes {} and {})",
                bottom[0].shape_string(),
                bottom[1].shape_string()
            );
        }
        self.outer = bottom[0].shape()[0];
        self.inner = bottom[0].count_from(1);
        self.sigmoid.resize(bottom[0].count(), 0.0);
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let x = bottom[0].data_buf();
        let x = read(&x);
        ops::sigmoid_forward(&x, &mut self.sigmoid);
        let (loss, valid) =
            ops::sigmoid_cross_entropy_forward(&x, &read(&bottom[1].data_buf()), self.ignore);
        self.normalizer = loss_normalizer(self.normalization, self.outer, self.inner, valid);
        write(&top[0].data_buf())[0] = loss / self.normalizer;
        Ok(())
    }

    fn backward(
        &mut self,
        _ctx: &mut Ctx,
        top: &[BlobRef],
        propagate_down: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if propagate_down[1] {
            bail!(
                "layer '{}': SigmoidCrossEntropyLoss cannot backpropagate to label inputs",
                self.name()
            );
        }
        if !propagate_down[0] {
            return Ok(());
        }
        let dx = bottom[0].diff_buf();
        let mut dx = write(&dx);
        ops::sigmoid_cross_entropy_backward(
            &self.sigmoid,
            &read(&bottom[1].data_buf()),
            &mut dx,
            self.ignore,
        );
        let weight = read(&top[0].diff_buf())[0] / self.normalizer;
        ops::scale(&mut dx, weight);
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
        let (xb, tb, lb) = (
            bottom[0].data_buf(),
            bottom[1].data_buf(),
            top[0].data_buf(),
        );
        let (x, t) = (xb.device(g)?, tb.device(g)?);
        let sig = dev::scratch(g, &mut self.sigmoid_gpu, n)?;
        k.activation_sigmoid_fwd(s, DeviceIo::Separate(&*x, sig))?;
        let chunks = sum_chunks(n);
        let pl = dev::scratch(g, &mut self.partial_loss, chunks)?;
        let pc = dev::scratch(g, &mut self.partial_count, chunks)?;
        let chunks = k.loss_sigmoid_ce_fwd_partials(s, &*x, &*t, pl, pc, n, self.ignore)?;
        let valid = dev::scratch(g, &mut self.valid_gpu, 1)?;
        let mut loss = lb.device_out(g)?;
        k.loss_softmax_fwd_finish(
            s,
            &*pl,
            &*pc,
            chunks,
            &mut *loss,
            valid,
            self.normalization as i32,
            self.outer,
            self.inner,
        )
    }

    fn backward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        top: &[BlobRef],
        propagate_down: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if propagate_down[1] {
            bail!(
                "layer '{}': SigmoidCrossEntropyLoss cannot backpropagate to label inputs",
                self.name()
            );
        }
        if !propagate_down[0] {
            return Ok(());
        }
        let (Some(sig), Some(valid)) = (self.sigmoid_gpu.as_ref(), self.valid_gpu.as_ref()) else {
            bail!("layer '{}': backward before a forward", self.name());
        };
        let (tb, wb, dxb) = (
            bottom[1].data_buf(),
            top[0].diff_buf(),
            bottom[0].diff_buf(),
        );
        let (t, w) = (tb.device(g)?, wb.device(g)?);
        let mut dx = dxb.device_out(g)?;
        g.kernels().loss_sigmoid_ce_bwd(
            g.stream(),
            sig,
            &*t,
            &*w,
            valid,
            &mut *dx,
            self.outer,
            self.inner,
            self.ignore,
            self.normalization as i32,
        )
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
