//! BatchNorm (BVLC's 3-blob layer): normalises each channel (axis 1) by batch statistics in
//! training mode, or by stored running statistics in global mode. The running statistics are
//! written by the training-mode forward, never by the solver: blob 0 is the mean sum, blob 1
//! the variance sum, blob 2 (shape `[1]`) the factor they are divided by.

use anyhow::{bail, Result};

use super::neuron::with_io;
use super::{check_given_blobs, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::batch_norm as k;
use crate::backend::cpu::bn_scale_relu::Dims;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::kernels::{channel_partials_len, ChannelTerm, Io};
use crate::backend::cuda::ops::{self, DeviceBuf};
use crate::blob::{read, write, Blob, BlobRef};
use crate::proto::caffe::{LayerParameter, ParamSpec, Phase};
use crate::rng::CaffeRng;

pub struct BatchNormLayer {
    base: LayerBase,
    use_global_stats: bool,
    moving_average_fraction: f32,
    eps: f32,
    channels: usize,
    /// (num, spatial) of the current bottom.
    num: usize,
    spatial: usize,
    /// Statistics used by the last forward, and sqrt(var + eps) per channel for backward.
    mean: Vec<f32>,
    var: Vec<f32>,
    std: Vec<f32>,
    /// The normalised output, kept because a later in-place layer may overwrite the top.
    x_norm: Vec<f32>,
    /// The same on the GPU path, with the per-channel reduction scratch.
    dev: BatchNormGpu,
}

/// BatchNorm's device memory: the statistics of the last forward, sqrt(var + eps), the
/// normalised output, the per-channel sums backward needs, and the reductions' partials.
#[derive(Default)]
struct BatchNormGpu {
    mean: DeviceBuf<f32>,
    var: DeviceBuf<f32>,
    std: DeviceBuf<f32>,
    x_norm: DeviceBuf<f32>,
    sum_dyy: DeviceBuf<f32>,
    sum_dy: DeviceBuf<f32>,
    partial: DeviceBuf<f64>,
}

impl BatchNormLayer {
    pub fn new(param: &LayerParameter) -> Self {
        let p = param.batch_norm_param.unwrap_or_default();
        // Global statistics by default in TEST, batch statistics in TRAIN, unless set.
        let use_global_stats = match p.use_global_stats {
            Some(v) => v,
            None => param.phase() == Phase::Test,
        };
        BatchNormLayer {
            base: LayerBase::new(param),
            use_global_stats,
            moving_average_fraction: p.moving_average_fraction(),
            eps: p.eps(),
            channels: 0,
            num: 0,
            spatial: 0,
            mean: Vec::new(),
            var: Vec::new(),
            std: Vec::new(),
            x_norm: Vec::new(),
            dev: BatchNormGpu::default(),
        }
    }

    /// Whether a forward pass changes the stored statistics (training mode). An audit of
    /// frozen layers asks this rather than re-deriving the phase rules.
    pub fn updates_statistics(&self) -> bool {
        !self.use_global_stats
    }

    /// Training mode: normalise by this batch's statistics and fold them into the running sums.
    fn forward_training_stats(&mut self, x: &[f32]) {
        let (num, c, sp) = (self.num, self.channels, self.spatial);
        k::bn_batch_stats(x, num, c, sp, &mut self.mean, &mut self.var);
        let b = &self.base.blobs;
        let (b0, b1, b2) = (b[0].data_buf(), b[1].data_buf(), b[2].data_buf());
        let (mut mean_sum, mut var_sum, mut factor) = (write(&b0), write(&b1), write(&b2));
        k::bn_update_running(
            &self.mean,
            &self.var,
            num * sp,
            self.moving_average_fraction,
            &mut mean_sum,
            &mut var_sum,
            &mut factor[0],
        );
    }

    /// Global mode: normalise by the stored statistics, which are left untouched.
    fn forward_global_stats(&mut self) {
        let b = &self.base.blobs;
        let (b0, b1, b2) = (b[0].data_buf(), b[1].data_buf(), b[2].data_buf());
        k::bn_global_stats(
            &read(&b0),
            &read(&b1),
            read(&b2)[0],
            &mut self.mean,
            &mut self.var,
        );
    }

    /// The first half of `forward`: the statistics it normalises with (this batch's, folded
    /// into the running sums, in training mode; the stored ones in global mode) and
    /// `std = sqrt(var + eps)`. `net::fuse` then normalises itself.
    pub(crate) fn take_statistics(&mut self, bottom: &BlobRef) {
        if self.use_global_stats {
            self.forward_global_stats();
        } else {
            self.forward_training_stats(&read(&bottom.data_buf()));
        }
        k::bn_std(&self.var, self.eps, &mut self.std);
    }

    /// For `net::fuse`: the blob's (num, channels, spatial), the mean and std of the last
    /// `take_statistics`, the kept normalised output, and whether the statistics were this
    /// batch's.
    pub(crate) fn fusion_state(&mut self) -> (Dims, &[f32], &[f32], &mut Vec<f32>, bool) {
        let d = Dims {
            num: self.num,
            channels: self.channels,
            spatial: self.spatial,
        };
        let batch = !self.use_global_stats;
        (d, &self.mean, &self.std, &mut self.x_norm, batch)
    }
}

impl Layer for BatchNormLayer {
    fn type_name(&self) -> &'static str {
        "BatchNorm"
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
    fn forward_writes_params(&self) -> Vec<usize> {
        if self.updates_statistics() {
            vec![0, 1, 2]
        } else {
            Vec::new()
        }
    }
    fn top_arity(&self) -> Arity {
        Arity::Exact(1)
    }
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn setup(&mut self, _rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let x = &bottom[0];
        if x.num_axes() == 0 {
            bail!(
                "layer '{}': BatchNorm needs an input with at least one axis, got a scalar",
                self.name()
            );
        }
        self.channels = if x.num_axes() == 1 { 1 } else { x.shape()[1] };
        let c = self.channels;
        let expected = [vec![c], vec![c], vec![1]];
        if self.base.blobs.is_empty() {
            // Statistics start at zero: an untrained layer in global mode gives x / sqrt(eps).
            self.base.blobs = expected
                .iter()
                .map(|s| Blob::with_shape(s))
                .collect::<Result<_>>()?;
        } else {
            if self.base.blobs.len() == 5 {
                bail!(
                    "layer '{}': 5 parameter blobs given; this looks like an NVIDIA-Caffe BatchNorm (with scale and bias inside), which is not compatible with BVLC's 3-blob BatchNorm",
                    self.name()
                );
            }
            check_given_blobs(self.name(), &self.base.blobs, &expected)?;
        }
        // Statistics are never learned: the layer's own copy gets lr_mult 0 for each blob that
        // has no ParamSpec, and an explicit non-zero lr_mult is refused.
        for i in 0..self.base.blobs.len() {
            if self.base.param.param.len() == i {
                self.base.param.param.push(ParamSpec {
                    lr_mult: Some(0.0),
                    ..Default::default()
                });
            } else if self.base.param.param[i].lr_mult() != 0.0 {
                bail!("layer '{}': Cannot configure batch normalization statistics as layer parameters.", self.name());
            }
        }
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let x = &bottom[0];
        let shape = x.shape();
        let c = if shape.len() == 1 {
            1
        } else {
            shape.get(1).copied().unwrap_or(0)
        };
        if shape.is_empty() || c != self.channels {
            bail!(
                "layer '{}': BatchNorm was set up for {} channels, input shape is {}",
                self.name(),
                self.channels,
                x.shape_string()
            );
        }
        let num = shape[0];
        if num == 0 || c == 0 {
            bail!(
                "layer '{}': BatchNorm needs a non-empty input, got shape {}",
                self.name(),
                x.shape_string()
            );
        }
        self.num = num;
        self.spatial = x.count() / (num * c);
        top[0].reshape(&shape)?;
        self.mean.resize(c, 0.0);
        self.var.resize(c, 0.0);
        self.std.resize(c, 0.0);
        self.x_norm.resize(x.count(), 0.0);
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        // The statistics are taken from the bottom before the top is written, so in-place works.
        self.take_statistics(&bottom[0]);
        let (num, c, sp) = (self.num, self.channels, self.spatial);
        let (mean, std, x_norm) = (&self.mean, &self.std, &mut self.x_norm);
        with_io(&bottom[0].data_buf(), &top[0].data_buf(), |io| {
            k::bn_normalize(io, num, c, sp, mean, std, x_norm)
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
        // Caffe writes the bottom diff whatever propagate_down says.
        let (c, sp) = (self.channels, self.spatial);
        let (num, global) = (self.num, self.use_global_stats);
        let (std, y) = (&self.std, &self.x_norm);
        with_io(&top[0].diff_buf(), &bottom[0].diff_buf(), |d| {
            if global {
                k::bn_backward_global(d, std, c, sp);
            } else {
                k::bn_backward_train(d, y, std, num, c, sp);
            }
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
        let (kern, s) = (g.kernels(), g.stream());
        let (num, c, sp) = (self.num, self.channels, self.spatial);
        let count = num * c * sp;
        let d = &mut self.dev;
        let (mean, var, std) = (d.mean.get(g, c)?, d.var.get(g, c)?, d.std.get(g, c)?);
        let x_norm = d.x_norm.get(g, count)?;
        {
            let xb = bottom[0].data_buf();
            let x = xb.device(g)?;
            let b = &self.base.blobs;
            let (b0, b1, b2) = (b[0].data_buf(), b[1].data_buf(), b[2].data_buf());
            if self.use_global_stats {
                // The stored statistics are only read: a frozen layer's blobs never change.
                let (mean_sum, var_sum, factor) = (b0.device(g)?, b1.device(g)?, b2.device(g)?);
                kern.batchnorm_global_stats(s, &*mean_sum, &*var_sum, &*factor, mean, var, c)?;
            } else {
                // Two passes, as Caffe: the mean, then the mean of (x - mean)^2.
                let m = (num * sp) as f64;
                let partial = d.partial.get(g, channel_partials_len(c, num, sp))?;
                let chunks =
                    kern.batchnorm_channel_partials(s, ChannelTerm::Sum(&*x), partial, num, c, sp)?;
                kern.batchnorm_channel_finish(s, partial, mean, c, chunks, m)?;
                let chunks = kern.batchnorm_channel_partials(
                    s,
                    ChannelTerm::SquaredDeviation(&*x, mean),
                    partial,
                    num,
                    c,
                    sp,
                )?;
                kern.batchnorm_channel_finish(s, partial, var, c, chunks, m)?;
                let (mut mean_sum, mut var_sum, mut factor) =
                    (b0.device_mut(g)?, b1.device_mut(g)?, b2.device_mut(g)?);
                kern.batchnorm_update_running(
                    s,
                    mean,
                    var,
                    &mut *mean_sum,
                    &mut *var_sum,
                    &mut *factor,
                    c,
                    num * sp,
                    self.moving_average_fraction,
                )?;
            }
            kern.batchnorm_std(s, var, std, c, self.eps)?;
            // x_norm from the bottom before the top is written, so in-place works.
            kern.batchnorm_normalize(s, Io::Separate(&*x, x_norm), mean, std, num, c, sp)?;
        }
        let yb = top[0].data_buf();
        let mut y = yb.device_out(g)?;
        ops::copy_slice(g, x_norm, &mut y, x_norm.len())
    }

    fn backward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        top: &[BlobRef],
        _pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        // Caffe writes the bottom diff whatever propagate_down says.
        let (kern, s) = (g.kernels(), g.stream());
        let (num, c, sp) = (self.num, self.channels, self.spatial);
        let d = &mut self.dev;
        let std = d.std.current("BatchNorm std")?;
        let (dyb, dxb) = (top[0].diff_buf(), bottom[0].diff_buf());
        if self.use_global_stats {
            return ops::with_io(g, &dyb, &dxb, |io| {
                kern.batchnorm_bwd_global(s, io, std, num, c, sp)
            });
        }
        let y = d.x_norm.current("BatchNorm x_norm")?;
        let (sum_dyy, sum_dy) = (d.sum_dyy.get(g, c)?, d.sum_dy.get(g, c)?);
        let partial = d.partial.get(g, channel_partials_len(c, num, sp))?;
        {
            let dy = dyb.device(g)?;
            let chunks = kern.batchnorm_channel_partials(
                s,
                ChannelTerm::Product(&*dy, y),
                partial,
                num,
                c,
                sp,
            )?;
            kern.batchnorm_channel_finish(s, partial, sum_dyy, c, chunks, 1.0)?;
            let chunks =
                kern.batchnorm_channel_partials(s, ChannelTerm::Sum(&*dy), partial, num, c, sp)?;
            kern.batchnorm_channel_finish(s, partial, sum_dy, c, chunks, 1.0)?;
        }
        ops::with_io(g, &dyb, &dxb, |io| {
            kern.batchnorm_bwd_train(s, io, y, std, sum_dyy, sum_dy, num, c, sp)
        })
    }
}
