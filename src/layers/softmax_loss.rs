//! SoftmaxWithLoss: softmax over `softmax_param.axis` followed by the multinomial logistic
//! loss of integer labels (one per position of the other axes), normalized as
//! `loss_param.normalization` says, with `ignore_label` positions skipped. An optional second
//! top shares the probabilities. Also holds the loss-layer helpers other losses share.

use anyhow::{bail, Result};

use super::softmax::split_at_axis;
use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::{loss as ops, softmax as sm};
use crate::blob::{read, write, Blob, BlobRef};
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
    if let Some((i, v)) = ops::find_bad_label(labels, classes, ignore) {
        match ignore {
            Some(ig) => bail!(
                "layer '{layer}': label {v} at position {i} is not a class index in [0, {classes}) nor the ignore_label {ig}"
            ),
            None => bail!("layer '{layer}': label {v} at position {i} is not a class index in [0, {classes})"),
        }
    }
    Ok(())
}

pub struct SoftmaxWithLossLayer {
    base: LayerBase,
    axis: i32,
    ignore: Option<i32>,
    normalization: NormalizationMode,
    prob: BlobRef,
    /// (outer, classes, inner) of the current input.
    dims: (usize, usize, usize),
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
}
