//! LRN: local response normalisation of 4-D (num, channels, height, width) blobs, across
//! channels (`scale = k + alpha/n * sum x^2`, `y = x * scale^-beta`) or within each channel
//! (Caffe's composition of square, AVE pooling, power and product; `k` unused).

use anyhow::{bail, Result};

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::lrn as k;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::kernels::Io;
use crate::backend::cuda::ops::{self, DeviceBuf};
use crate::blob::{read, same, write, BlobRef};
use crate::proto::caffe::lrn_parameter::NormRegion;
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct LrnLayer {
    base: LayerBase,
    size: usize,
    alpha: f32,
    beta: f32,
    k: f32,
    region: NormRegion,
    channels: usize,
    height: usize,
    width: usize,
    /// ACROSS_CHANNELS: the scale per element. WITHIN_CHANNEL: the pooled squares.
    scale: Vec<f32>,
    /// WITHIN_CHANNEL: (1 + alpha*pooled)^-beta.
    power: Vec<f32>,
    /// The same two on the GPU path, and backward's scratch (ACROSS: dy * y / scale;
    /// WITHIN: the gradient reaching the pooled squares).
    scale_dev: DeviceBuf<f32>,
    power_dev: DeviceBuf<f32>,
    scratch_dev: DeviceBuf<f32>,
}

impl LrnLayer {
    pub fn new(param: &LayerParameter) -> Result<Self> {
        let p = param.lrn_param.unwrap_or_default();
        let size = p.local_size() as usize;
        if size % 2 != 1 {
            bail!(
                "layer '{}': LRN only supports odd values for local_size (got {size})",
                param.name()
            );
        }
        let region = match p.norm_region {
            None => NormRegion::AcrossChannels,
            Some(v) => NormRegion::try_from(v).map_err(|_| {
                anyhow::anyhow!("layer '{}': unknown LRN norm_region {v}", param.name())
            })?,
        };
        // `engine` only selects an implementation (Caffe's or cuDNN's); both compute the same.
        Ok(LrnLayer {
            base: LayerBase::new(param),
            size,
            alpha: p.alpha(),
            beta: p.beta(),
            k: p.k(),
            region,
            channels: 0,
            height: 0,
            width: 0,
            scale: Vec::new(),
            power: Vec::new(),
            scale_dev: DeviceBuf::default(),
            power_dev: DeviceBuf::default(),
            scratch_dev: DeviceBuf::default(),
        })
    }
}

impl Layer for LrnLayer {
    fn type_name(&self) -> &'static str {
        "LRN"
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
        // Caffe's LRN reads the bottom after writing the top (in both regions), so in-place
        // computation would give wrong numbers there; refuse it instead.
        if std::rc::Rc::ptr_eq(&bottom[0], &top[0]) {
            bail!(
                "layer '{}': LRN cannot be computed in place (top and bottom '{}' are the same blob)",
                self.name(),
                self.base.param.bottom[0]
            );
        }
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let shape = bottom[0].shape();
        if shape.len() != 4 {
            bail!(
                "layer '{}': LRN input must have 4 axes (num, channels, height, width), got shape {}",
                self.name(),
                bottom[0].shape_string()
            );
        }
        (self.channels, self.height, self.width) = (shape[1], shape[2], shape[3]);
        top[0].reshape(&shape)?;
        let count = bottom[0].count();
        self.scale.resize(count, 0.0);
        if self.region == NormRegion::WithinChannel {
            self.power.resize(count, 0.0);
        }
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        if same(&xb, &yb) {
            bail!("layer '{}': LRN cannot be computed in place", self.name());
        }
        let (x, mut y) = (read(&xb), write(&yb));
        let plane = self.height * self.width;
        match self.region {
            NormRegion::AcrossChannels => k::lrn_across_forward(
                &x,
                self.channels,
                plane,
                self.size,
                self.alpha,
                self.beta,
                self.k,
                &mut self.scale,
                &mut y,
            ),
            NormRegion::WithinChannel => k::lrn_within_forward(
                &x,
                self.height,
                self.width,
                self.size,
                self.alpha,
                self.beta,
                &mut self.scale,
                &mut self.power,
                &mut y,
            ),
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
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        let (dyb, dxb) = (top[0].diff_buf(), bottom[0].diff_buf());
        let (x, dy, mut dx) = (read(&xb), read(&dyb), write(&dxb));
        let plane = self.height * self.width;
        match self.region {
            // Caffe's cross-channel backward writes the bottom diff whatever propagate_down says.
            NormRegion::AcrossChannels => k::lrn_across_backward(
                &x,
                &read(&yb),
                &self.scale,
                &dy,
                self.channels,
                plane,
                self.size,
                self.alpha,
                self.beta,
                &mut dx,
            ),
            NormRegion::WithinChannel => {
                if pd[0] {
                    k::lrn_within_backward(
                        &x,
                        &self.scale,
                        &self.power,
                        &dy,
                        self.height,
                        self.width,
                        self.size,
                        self.alpha,
                        self.beta,
                        &mut dx,
                    )
                }
            }
        }
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
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        if same(&xb, &yb) {
            bail!("layer '{}': LRN cannot be computed in place", self.name());
        }
        let count = bottom[0].count();
        if count == 0 {
            return Ok(());
        }
        let (kern, s) = (g.kernels(), g.stream());
        let plane = self.height * self.width;
        let num = count / (self.channels * plane);
        let scale = self.scale_dev.get(g, count)?;
        match self.region {
            NormRegion::AcrossChannels => {
                {
                    let x = xb.device(g)?;
                    let (size, alpha, k) = (self.size, self.alpha, self.k);
                    kern.lrn_across_scale(
                        s,
                        &*x,
                        scale,
                        num,
                        self.channels,
                        plane,
                        size,
                        alpha,
                        k,
                    )?;
                }
                let scale = &*scale;
                ops::with_io(g, &xb, &yb, |io| {
                    kern.lrn_across_output(s, io, scale, self.beta)
                })
            }
            NormRegion::WithinChannel => {
                let power = self.power_dev.get(g, count)?;
                let x = xb.device(g)?;
                let mut y = yb.device_out(g)?;
                kern.lrn_within_fwd(
                    s,
                    &*x,
                    scale,
                    power,
                    &mut *y,
                    num * self.channels,
                    self.height,
                    self.width,
                    self.size,
                    self.alpha,
                    self.beta,
                )
            }
        }
    }

    fn backward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        let count = bottom[0].count();
        // WITHIN_CHANNEL honours propagate_down; Caffe's cross-channel backward writes the
        // bottom diff whatever it says.
        if count == 0 || (self.region == NormRegion::WithinChannel && !pd[0]) {
            return Ok(());
        }
        let (kern, s) = (g.kernels(), g.stream());
        let plane = self.height * self.width;
        let num = count / (self.channels * plane);
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        let (dyb, dxb) = (top[0].diff_buf(), bottom[0].diff_buf());
        let x = xb.device(g)?;
        let dy = dyb.device(g)?;
        let mut dx = dxb.device_out(g)?;
        let scale = self.scale_dev.current("LRN scale")?;
        let scratch = self.scratch_dev.get(g, count)?;
        match self.region {
            NormRegion::AcrossChannels => {
                let y = yb.device(g)?;
                kern.lrn_across_ratio(s, &*dy, &*y, scale, scratch)?;
                kern.lrn_across_bwd(
                    s,
                    &*x,
                    scale,
                    scratch,
                    Io::Separate(&*dy, &mut *dx),
                    num,
                    self.channels,
                    plane,
                    self.size,
                    self.alpha,
                    self.beta,
                )
            }
            NormRegion::WithinChannel => {
                let power = self.power_dev.current("LRN power")?;
                kern.lrn_within_dpool(
                    s, &*x, scale, power, &*dy, scratch, count, self.alpha, self.beta,
                )?;
                kern.lrn_within_bwd(
                    s,
                    &*x,
                    power,
                    &*dy,
                    scratch,
                    &mut *dx,
                    num * self.channels,
                    self.height,
                    self.width,
                    self.size,
                )
            }
        }
    }
}
