//! Accuracy: the fraction of (non-ignored) labels whose class is among the `top_k` highest
//! scores along `accuracy_param.axis`, counted pessimistically (a class scoring equal to the
//! true one counts as better). An optional second top gives the accuracy per class. Not
//! differentiable: a request to propagate a gradient through it is an error, as in Caffe.

use anyhow::{bail, Context, Result};
use cudarc::driver::{CudaSlice, DevicePtrMut};

use super::softmax_loss::check_labels;
use super::softmax_loss::check_labels_gpu;
use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::loss as ops;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::ops as dev;
use crate::blob::{read, write, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct AccuracyLayer {
    base: LayerBase,
    top_k: usize,
    axis: i32,
    ignore: Option<i32>,
    /// (outer, classes, inner) of the current input.
    dims: (usize, usize, usize),
    /// GPU runs: per position, whether it is correct and its label (-1 when ignored); the label
    /// check's result.
    correct_gpu: Option<CudaSlice<f32>>,
    labels_gpu: Option<CudaSlice<i32>>,
    label_check: Option<CudaSlice<u64>>,
}

impl AccuracyLayer {
    pub fn new(param: &LayerParameter) -> Self {
        let p = param.accuracy_param.unwrap_or_default();
        AccuracyLayer {
            base: LayerBase::new(param),
            top_k: p.top_k() as usize,
            axis: p.axis(),
            ignore: p.ignore_label,
            dims: (0, 0, 0),
            correct_gpu: None,
            labels_gpu: None,
            label_check: None,
        }
    }
}

impl Layer for AccuracyLayer {
    fn type_name(&self) -> &'static str {
        "Accuracy"
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

    fn setup(&mut self, _rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let name = self.name().to_string();
        for (i, b) in bottom.iter().enumerate() {
            if top.iter().any(|t| std::rc::Rc::ptr_eq(t, b)) {
                bail!("layer '{name}': Accuracy cannot write in place of bottom {i}");
            }
        }
        let (scores, labels) = (&bottom[0], &bottom[1]);
        if scores.num_axes() == 0 {
            bail!("layer '{name}': the score input is a scalar; it needs a class axis");
        }
        if labels.count() == 0 || self.top_k > scores.count() / labels.count() {
            bail!(
                "layer '{name}': top_k must be less than or equal to the number of classes (top_k {}, scores {}, labels {})",
                self.top_k,
                scores.shape_string(),
                labels.shape_string()
            );
        }
        let axis = scores
            .canonical_axis(self.axis)
            .with_context(|| format!("layer '{name}': accuracy axis"))?;
        let (outer, classes, inner) = (
            scores.count_range(0, axis),
            scores.shape()[axis],
            scores.count_from(axis + 1),
        );
        if outer * inner != labels.count() {
            bail!(
                "layer '{name}': number of labels must match number of predictions; e.g., if label axis == 1 and \
                 prediction shape is (N, C, H, W), label count (number of labels) must be N*H*W, with integer values \
                 in {{0, 1, ..., C-1}} (prediction shape {}, axis {}, label shape {})",
                scores.shape_string(),
                self.axis,
                labels.shape_string()
            );
        }
        self.dims = (outer, classes, inner);
        top[0].reshape(&[])?;
        if let Some(t) = top.get(1) {
            t.reshape(&[classes])?;
        }
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let (outer, classes, inner) = self.dims;
        let labels = bottom[1].data_buf();
        let labels = read(&labels);
        check_labels(self.name(), &labels, classes, self.ignore)?;
        let scores = bottom[0].data_buf();
        let scores = read(&scores);
        let per_class = top.get(1).map(|t| t.data_buf());
        let mut per_class = per_class.as_ref().map(write);
        let (correct, count) = ops::accuracy_forward(
            &scores,
            &labels,
            outer,
            classes,
            inner,
            self.top_k,
            self.ignore,
            per_class.as_deref_mut().map(|v| v.as_mut_slice()),
        );
        write(&top[0].data_buf())[0] = if count == 0 {
            0.0
        } else {
            correct / count as f32
        };
        Ok(())
    }

    fn backward(
        &mut self,
        _ctx: &mut Ctx,
        _top: &[BlobRef],
        propagate_down: &[bool],
        _bottom: &[BlobRef],
    ) -> Result<()> {
        if let Some(i) = propagate_down.iter().position(|&p| p) {
            bail!("layer '{}': Accuracy has no gradient (asked to propagate to bottom {i}); it cannot be used as a loss", self.name());
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
        let (outer, classes, inner) = self.dims;
        let positions = outer * inner;
        let labels = bottom[1].data_buf();
        {
            let sb = bottom[0].data_buf();
            let (scores, l) = (sb.device(g)?, labels.device(g)?);
            let correct = dev::scratch(g, &mut self.correct_gpu, positions)?;
            let label_out = dev::scratch(g, &mut self.labels_gpu, positions)?;
            k.loss_accuracy_terms(
                s,
                &*scores,
                &*l,
                correct,
                label_out,
                outer,
                classes,
                inner,
                self.top_k,
                self.ignore,
            )?;
            let ab = top[0].data_buf();
            let mut accuracy = ab.device_out(g)?;
            let pb = top.get(1).map(|t| t.data_buf());
            let mut per_class = match &pb {
                Some(b) => Some(b.device_out(g)?),
                None => None,
            };
            k.loss_accuracy_finish(
                s,
                &*correct,
                &*label_out,
                positions,
                &mut *accuracy,
                per_class
                    .as_deref_mut()
                    .map(|p| p as &mut dyn DevicePtrMut<f32>),
                classes,
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
        )
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
