//! SoftmaxWithLoss: softmax over `softmax_param.axis` followed by the multinomial logistic
//! loss of integer labels (one per position of the other axes), normalized as
//! `loss_param.normalization` says, with `ignore_label` positions skipped. An optional second
//! top shares the probabilities. Also holds the loss-layer helpers other losses share.

use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

use super::softmax::split_at_axis;
use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::{loss as ops, softmax as sm};
use crate::backend::cuda::gpu::{record_download, Gpu};
use crate::backend::cuda::kernels::{sum_chunks, Io as DeviceIo};
use crate::backend::cuda::ops as dev;
use crate::blob::{read, write, Blob, BlobRef, Buf};
use crate::proto::caffe::loss_parameter::NormalizationMode;
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

/// The normalization a loss layer uses: `normalization` if given, else the legacy `normalize`
/// (true → VALID, false → BATCH_SIZE), else `default` (VALID for SoftmaxWithLoss, BATCH_SIZE
/// for SigmoidCrossEntropyLoss, as in Caffe).
pub fn normalization_mode(
    param: &LayerParameter,
    default: NormalizationMode,
) -> Result<NormalizationMode> {
    let Some(p) = param.loss_param.as_ref() else {
        return Ok(default);
    };
    if let Some(n) = p.normalization {
        return NormalizationMode::try_from(n).map_err(|_| {
            anyhow::anyhow!("layer '{}': unknown loss normalization {n}", param.name())
        });
    }
    Ok(match p.normalize {
        Some(true) => NormalizationMode::Valid,
        Some(false) => NormalizationMode::BatchSize,
        None => default,
    })
}

/// Caffe's `get_normalizer`: FULL → outer·inner, VALID → `valid`, BATCH_SIZE → outer,
/// NONE → 1; never below 1 (so an all-ignored batch gives loss 0, not NaN).
pub fn loss_normalizer(mode: NormalizationMode, outer: usize, inner: usize, valid: usize) -> f32 {
    let n = match mode {
        NormalizationMode::Full => (outer * inner) as f32,
        NormalizationMode::Valid => valid as f32,
        NormalizationMode::BatchSize => outer as f32,
        NormalizationMode::None => 1.0,
    };
    n.max(1.0)
}

/// `loss_param.ignore_label`, if set.
pub fn ignore_label(param: &LayerParameter) -> Option<i32> {
    param.loss_param.as_ref().and_then(|p| p.ignore_label)
}

/// What every loss layer does in setup: a default `loss_weight: 1` on its own copy of the
/// parameter (Caffe's `LossLayer::LayerSetUp`).
pub fn default_loss_weight(base: &mut LayerBase) {
    if base.param.loss_weight.is_empty() {
        base.param.loss_weight.push(1.0);
    }
}

/// Caffe's `LossLayer::Reshape` checks (equal first dimension) and the scalar loss top.
pub fn loss_reshape(layer: &str, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
    for (i, b) in bottom.iter().enumerate() {
        if b.num_axes() == 0 {
            bail!("layer '{layer}': bottom {i} is a scalar; loss inputs need a first (batch) dimension");
        }
        if std::rc::Rc::ptr_eq(b, &top[0]) {
            bail!("layer '{layer}': a loss layer cannot write its loss in place of bottom {i}");
        }
    }
    if bottom[0].shape()[0] != bottom[1].shape()[0] {
        bail!(
            "layer '{layer}': the data and label should have the same first dimension (shapes {} and {})",
            bottom[0].shape_string(),
            bottom[1].shape_string()
        );
    }
    top[0].reshape(&[])
}

/// Fails with the layer name and the offending value when a label is neither a class index
/// in `[0, classes)` nor the ignore label (Caffe only checks this in debug builds and reads
/// out of bounds otherwise).
pub fn check_labels(
    layer: &str,
    labels: &[f32],
    classes: usize,
    ignore: Option<i32>,
) -> Result<()> {
    match ops::find_bad_label(labels, classes, ignore) {
        Some((i, v)) => Err(bad_label(layer, i, v, classes, ignore)),
        None => Ok(()),
    }
}

fn bad_label(layer: &str, i: usize, v: f32, classes: usize, ignore: Option<i32>) -> anyhow::Error {
    match ignore {
        Some(ig) => anyhow::anyhow!(
            "layer '{layer}': label {v} at position {i} is not a class index in [0, {classes}) nor the ignore_label {ig}"
        ),
        None => anyhow::anyhow!(
            "layer '{layer}': label {v} at position {i} is not a class index in [0, {classes})"
        ),
    }
}

/// The GPU form of [`check_labels`]: the search runs on the device and one value comes back.
/// Reading it waits for the work queued before it, so layers call this after their own kernels
/// (which skip out-of-range labels), where the net reads the loss back anyway: the check then
/// costs a small copy rather than an extra wait. `scratch` is the layer's one-value buffer.
pub fn check_labels_gpu(
    layer: &str,
    g: &Gpu,
    labels: &Buf,
    classes: usize,
    ignore: Option<i32>,
    scratch: &mut Option<CudaSlice<u64>>,
) -> Result<()> {
    let n = labels.len();
    let l = labels.device(g)?;
    let slot = dev::scratch(g, scratch, 1)?;
    let Some(i) = g
        .kernels()
        .loss_find_bad_label(g.stream(), &*l, n, classes, ignore, slot)?
    else {
        return Ok(());
    };
    // The error path: fetch the offending value for the message.
    let mut v = [0f32];
    g.stream()
        .memcpy_dtoh(&l.slice(i..i + 1), &mut v[..])
        .and_then(|_| g.stream().synchronize())
        .map_err(|e| anyhow::anyhow!("layer '{layer}': reading a bad label back: {e}"))?;
    record_download(4);
    Err(bad_label(layer, i, v[0], classes, ignore))
}

pub struct SoftmaxWithLossLayer {
    base: LayerBase,
    axis: i32,
    ignore: Option<i32>,
    normalization: NormalizationMode,
    prob: BlobRef,
    /// (outer, classes, inner) of the current input.
    dims: (usize, usize, usize),
    /// GPU runs: per-chunk loss sums and valid counts, the valid count of the last forward
    /// (backward reads it on the device), and the label check's result.
    partial_loss: Option<CudaSlice<f64>>,
    partial_count: Option<CudaSlice<f64>>,
    valid_gpu: Option<CudaSlice<f32>>,
    label_check: Option<CudaSlice<u64>>,
}

impl SoftmaxWithLossLayer {
    pub fn new(param: &LayerParameter) -> Result<Self> {
        Ok(SoftmaxWithLossLayer {
            base: LayerBase::new(param),
            axis: param.softmax_param.as_ref().map(|p| p.axis()).unwrap_or(1),
            ignore: ignore_label(param),
            normalization: normalization_mode(param, NormalizationMode::Valid)?,
            prob: Blob::empty(),
            dims: (0, 0, 0),
            partial_loss: None,
            partial_count: None,
            valid_gpu: None,
            label_check: None,
        })
    }
}

impl Layer for SoftmaxWithLossLayer {
    fn type_name(&self) -> &'static str {
        "SoftmaxWithLoss"
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
        Arity::Range(1, 2)
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
        self.prob.reshape_like(&bottom[0])?;
        let (outer, classes, inner) = split_at_axis(&bottom[0], self.axis, &name)?;
        if outer * inner != bottom[1].count() {
            bail!(
                "layer '{name}': number of labels must match number of predictions; e.g., if softmax axis == 1 and \
                 prediction shape is (N, C, H, W), label count (number of labels) must be N*H*W, with integer values \
                 in {{0, 1, ..., C-1}} (prediction shape {}, axis {}, label shape {})",
                bottom[0].shape_string(),
                self.axis,
                bottom[1].shape_string()
            );
        }
        self.dims = (outer, classes, inner);
        if let Some(t) = top.get(1) {
            t.reshape_like(&bottom[0])?;
        }
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let (outer, classes, inner) = self.dims;
        let prob = self.prob.data_buf();
        sm::softmax_forward(
            &read(&bottom[0].data_buf()),
            &mut write(&prob),
            outer,
            classes,
            inner,
        );
        let labels = bottom[1].data_buf();
        let labels = read(&labels);
        check_labels(self.name(), &labels, classes, self.ignore)?;
        let (loss, valid) =
            ops::softmax_loss_forward(&read(&prob), &labels, outer, classes, inner, self.ignore);
        let norm = loss_normalizer(self.normalization, outer, inner, valid);
        write(&top[0].data_buf())[0] = loss / norm;
        if let Some(t) = top.get(1) {
            t.share_data(&self.prob);
        }
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
                "layer '{}': SoftmaxWithLoss cannot backpropagate to label inputs",
                self.name()
            );
        }
        if !propagate_down[0] {
            return Ok(());
        }
        let (outer, classes, inner) = self.dims;
        let labels = bottom[1].data_buf();
        let labels = read(&labels);
        check_labels(self.name(), &labels, classes, self.ignore)?;
        let dx = bottom[0].diff_buf();
        let mut dx = write(&dx);
        let valid = ops::softmax_loss_backward(
            &read(&self.prob.data_buf()),
            &labels,
            &mut dx,
            outer,
            classes,
            inner,
            self.ignore,
        );
        let weight =
            read(&top[0].diff_buf())[0] / loss_normalizer(self.normalization, outer, inner, valid);
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
        let (outer, classes, inner) = self.dims;
        let mode = self.normalization as i32;
        let prob = self.prob.data_buf();
        {
            let xb = bottom[0].data_buf();
            let x = xb.device(g)?;
            let mut p = prob.device_out(g)?;
            k.softmax_forward(s, DeviceIo::Separate(&*x, &mut *p), outer, classes, inner)?;
        }
        let labels = bottom[1].data_buf();
        {
            let p = prob.device(g)?;
            let l = labels.device(g)?;
            let chunks = sum_chunks(outer * inner);
            let pl = dev::scratch(g, &mut self.partial_loss, chunks)?;
            let pc = dev::scratch(g, &mut self.partial_count, chunks)?;
            let chunks = k.loss_softmax_fwd_partials(
                s,
                &*p,
                &*l,
                pl,
                pc,
                outer,
                classes,
                inner,
                self.ignore,
            )?;
            let valid = dev::scratch(g, &mut self.valid_gpu, 1)?;
            let lb = top[0].data_buf();
            let mut loss = lb.device_out(g)?;
            k.loss_softmax_fwd_finish(
                s, &*pl, &*pc, chunks, &mut *loss, valid, mode, outer, inner,
            )?;
        }
        let name = self.base.name().to_string();
        check_labels_gpu(
            &name,
            g,
            &labels,
            classes,
            self.ignore,
            &mut self.label_check,
        )?;
        if let Some(t) = top.get(1) {
            t.share_data(&self.prob);
        }
        Ok(())
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
                "layer '{}': SoftmaxWithLoss cannot backpropagate to label inputs",
                self.name()
            );
        }
        if !propagate_down[0] {
            return Ok(());
        }
        // The labels were checked by this pass's forward.
        let (outer, classes, inner) = self.dims;
        let valid = self
            .valid_gpu
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("layer '{}': backward before a forward", self.name()))?;
        let (pb, lb, wb, dxb) = (
            self.prob.data_buf(),
            bottom[1].data_buf(),
            top[0].diff_buf(),
            bottom[0].diff_buf(),
        );
        let (p, l, w) = (pb.device(g)?, lb.device(g)?, wb.device(g)?);
        let mut dx = dxb.device_out(g)?;
        g.kernels().loss_softmax_bwd(
            g.stream(),
            &*p,
            &*l,
            &*w,
            valid,
            &mut *dx,
            outer,
            classes,
            inner,
            self.ignore,
            self.normalization as i32,
        )
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
