//! Pooling: MAX or AVE over 2-D windows of a 4-D (num, channels, height, width) input, with
//! Caffe's output-size rounding (ceil by default), last-window clipping and AVE divisor rule
//! (see `crate::backend::cpu::pooling`). A MAX layer may have a second top that receives the
//! argmax positions (flat `h·W + w` within each plane) as floats.

use anyhow::{bail, Result};

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::pooling::{self as ops, PoolGeom};
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::ops::DeviceBuf;
use crate::blob::{read, write, BlobRef};
use crate::proto::caffe::pooling_parameter::{PoolMethod, RoundMode};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct PoolingLayer {
    base: LayerBase,
    method: PoolMethod,
    global: bool,
    ceil: bool,
    kernel: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
    geom: Option<PoolGeom>,
    /// MAX argmax per output, kept for backward whether or not a mask top exists.
    mask: Vec<i32>,
    /// The same on the GPU path.
    mask_dev: DeviceBuf<i32>,
}

impl PoolingLayer {
    /// Reads and checks the configuration (Caffe's `PoolingLayer::LayerSetUp` rules, minus
    /// what needs the input's shape).
    pub fn new(param: &LayerParameter) -> Result<Self> {
        let name = param.name();
        let p = param.pooling_param.unwrap_or_default();
        let method = match PoolMethod::try_from(p.pool.unwrap_or(0)) {
            Ok(m) => m,
            Err(_) => bail!(
                "layer '{name}': unknown pooling method {}",
                p.pool.unwrap_or(0)
            ),
        };
        if method == PoolMethod::Stochastic {
            bail!(
                "layer '{name}': STOCHASTIC pooling exists only on the GPU in Caffe (its CPU code is NOT_IMPLEMENTED); \
                 crema's CPU backend does not provide it either: use MAX or AVE"
            );
        }
        let global = p.global_pooling();
        let has_any_kernel =
            p.kernel_size.is_some() || p.kernel_h.is_some() || p.kernel_w.is_some();
        let mut kernel = (0, 0);
        if global {
            if has_any_kernel {
                bail!("layer '{name}': with global_pooling: true the filter size cannot be specified (kernel_size, kernel_h, kernel_w)");
            }
        } else if p.kernel_size.is_some() {
            if p.kernel_h.is_some() || p.kernel_w.is_some() {
                bail!(
                    "layer '{name}': filter size is kernel_size OR kernel_h and kernel_w; not both"
                );
            }
            kernel = (p.kernel_size() as usize, p.kernel_size() as usize);
        } else if p.kernel_h.is_some() && p.kernel_w.is_some() {
            kernel = (p.kernel_h() as usize, p.kernel_w() as usize);
        } else if p.kernel_h.is_some() || p.kernel_w.is_some() {
            bail!("layer '{name}': for non-square filters both kernel_h and kernel_w are required");
        } else {
            bail!("layer '{name}': pooling needs kernel_size (or kernel_h and kernel_w), or global_pooling: true");
        }
        if !global && (kernel.0 == 0 || kernel.1 == 0) {
            bail!(
                "layer '{name}': filter dimensions cannot be zero (kernel {}x{})",
                kernel.0,
                kernel.1
            );
        }
        let pad = match (p.pad.is_some(), p.pad_h.is_some(), p.pad_w.is_some()) {
            (false, true, true) => (p.pad_h() as usize, p.pad_w() as usize),
            (_, false, false) => (p.pad() as usize, p.pad() as usize),
            _ => bail!("layer '{name}': pad is pad OR pad_h and pad_w are required"),
        };
        let stride = match (
            p.stride.is_some(),
            p.stride_h.is_some(),
            p.stride_w.is_some(),
        ) {
            (false, true, true) => (p.stride_h() as usize, p.stride_w() as usize),
            (_, false, false) => (p.stride() as usize, p.stride() as usize),
            _ => bail!("layer '{name}': stride is stride OR stride_h and stride_w are required"),
        };
        if global && (pad != (0, 0) || stride != (1, 1)) {
            bail!(
                "layer '{name}': with global_pooling: true only pad = 0 and stride = 1 are allowed (got pad {}x{}, stride {}x{})",
                pad.0,
                pad.1,
                stride.0,
                stride.1
            );
        }
        if stride.0 == 0 || stride.1 == 0 {
            bail!(
                "layer '{name}': stride cannot be zero (stride {}x{})",
                stride.0,
                stride.1
            );
        }
        if !global && (pad.0 >= kernel.0 || pad.1 >= kernel.1) {
            bail!(
                "layer '{name}': pad must be smaller than the kernel (pad {}x{}, kernel {}x{})",
                pad.0,
                pad.1,
                kernel.0,
                kernel.1
            );
        }
        let ceil = match RoundMode::try_from(p.round_mode.unwrap_or(0)) {
            Ok(RoundMode::Ceil) => true,
            Ok(RoundMode::Floor) => false,
            Err(_) => bail!(
                "layer '{name}': unknown round_mode {}",
                p.round_mode.unwrap_or(0)
            ),
        };
        Ok(PoolingLayer {
            base: LayerBase::new(param),
            method,
            global,
            ceil,
            kernel,
            stride,
            pad,
            geom: None,
            mask: Vec::new(),
            mask_dev: DeviceBuf::default(),
        })
    }

    fn geom(&self) -> Result<&PoolGeom> {
        self.geom
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("layer '{}': pooling used before reshape", self.name()))
    }
}

impl Layer for PoolingLayer {
    fn type_name(&self) -> &'static str {
        "Pooling"
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
        // Only MAX has a mask to give out.
        if self.method == PoolMethod::Max {
            Arity::Range(1, 2)
        } else {
            Arity::Exact(1)
        }
    }

    fn setup(&mut self, _rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let name = self.name().to_string();
        let shape = bottom[0].shape();
        if shape.len() != 4 {
            bail!(
                "layer '{name}': input must have 4 axes, corresponding to (num, channels, height, width); got shape {}",
                bottom[0].shape_string()
            );
        }
        for t in top {
            if std::rc::Rc::ptr_eq(t, &bottom[0]) {
                bail!("layer '{name}': Pooling cannot run in place");
            }
        }
        let (num, channels, height, width) = (shape[0], shape[1], shape[2], shape[3]);
        if self.global {
            self.kernel = (height, width);
        }
        let (kh, kw) = self.kernel;
        if kh == 0 || kw == 0 {
            bail!(
                "layer '{name}': global pooling of an empty input (shape {}): filter dimensions cannot be zero",
                bottom[0].shape_string()
            );
        }
        let (sh, sw) = self.stride;
        let (ph, pw) = self.pad;
        let clip = ph > 0 || pw > 0;
        let out_h = ops::pooled_extent(height, kh, ph, sh, self.ceil, clip);
        let out_w = ops::pooled_extent(width, kw, pw, sw, self.ceil, clip);
        if out_h < 1 || out_w < 1 {
            bail!(
                "layer '{name}': kernel {kh}x{kw} (pad {ph}x{pw}, stride {sh}x{sw}) does not fit the {height}x{width} input \
                 of shape {}: no output window",
                bottom[0].shape_string()
            );
        }
        let geom = PoolGeom {
            planes: num * channels,
            height,
            width,
            pooled_height: out_h as usize,
            pooled_width: out_w as usize,
            kernel_h: kh,
            kernel_w: kw,
            stride_h: sh,
            stride_w: sw,
            pad_h: ph,
            pad_w: pw,
        };
        let out_shape = [num, channels, geom.pooled_height, geom.pooled_width];
        for t in top {
            t.reshape(&out_shape)?;
        }
        if self.method == PoolMethod::Max {
            self.mask
                .resize(geom.planes * geom.pooled_height * geom.pooled_width, -1);
        }
        self.geom = Some(geom);
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let g = *self.geom()?;
        let x = bottom[0].data_buf();
        let y = top[0].data_buf();
        match self.method {
            PoolMethod::Max => {
                ops::max_pool_forward(&read(&x), &mut write(&y), &mut self.mask, &g);
                if let Some(t) = top.get(1) {
                    let m = t.data_buf();
                    for (o, &i) in write(&m).iter_mut().zip(&self.mask) {
                        *o = i as f32;
                    }
                }
            }
            PoolMethod::Ave => ops::ave_pool_forward(&read(&x), &mut write(&y), &g),
            PoolMethod::Stochastic => bail!(
                "layer '{}': STOCHASTIC pooling is not available on the CPU",
                self.name()
            ),
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
        if !propagate_down[0] {
            return Ok(());
        }
        let g = *self.geom()?;
        let dy = top[0].diff_buf();
        let dx = bottom[0].diff_buf();
        match self.method {
            PoolMethod::Max => ops::max_pool_backward(&read(&dy), &self.mask, &mut write(&dx), &g),
            PoolMethod::Ave => ops::ave_pool_backward(&read(&dy), &mut write(&dx), &g),
            PoolMethod::Stochastic => bail!(
                "layer '{}': STOCHASTIC pooling is not available on the CPU",
                self.name()
            ),
        }
        Ok(())
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }

    fn forward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        gpu: &Gpu,
        bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<()> {
        let g = *self.geom()?;
        let outputs = g.planes * g.pooled_height * g.pooled_width;
        if outputs == 0 {
            return Ok(());
        }
        let (k, s) = (gpu.kernels(), gpu.stream());
        let xb = bottom[0].data_buf();
        let x = xb.device(gpu)?;
        let yb = top[0].data_buf();
        let mut y = yb.device_out(gpu)?;
        // Global pooling (one window per plane) has its own warp-per-plane kernels.
        let spatial = g.height * g.width;
        match self.method {
            PoolMethod::Max => {
                let mask = self.mask_dev.get(gpu, outputs)?;
                let mb = top.get(1).map(|t| t.data_buf());
                let mut top_mask = mb.as_ref().map(|b| b.device_out(gpu)).transpose()?;
                let top_mask = top_mask.as_deref_mut().map(|m| m as _);
                if self.global {
                    k.pooling_global_max_fwd(
                        s,
                        &*x,
                        &mut *y,
                        Some(mask),
                        top_mask,
                        g.planes,
                        spatial,
                    )
                } else {
                    k.pooling_max_fwd(s, &*x, &mut *y, Some(mask), top_mask, &g)
                }
            }
            PoolMethod::Ave => {
                if self.global {
                    k.pooling_global_ave_fwd(s, &*x, &mut *y, g.planes, spatial)
                } else {
                    k.pooling_ave_fwd(s, &*x, &mut *y, &g)
                }
            }
            PoolMethod::Stochastic => bail!(
                "layer '{}': STOCHASTIC pooling is not available",
                self.name()
            ),
        }
    }

    fn backward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        gpu: &Gpu,
        top: &[BlobRef],
        propagate_down: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if !propagate_down[0] {
            return Ok(());
        }
        let g = *self.geom()?;
        if g.planes * g.height * g.width == 0 {
            return Ok(());
        }
        let (k, s) = (gpu.kernels(), gpu.stream());
        let dyb = top[0].diff_buf();
        let dy = dyb.device(gpu)?;
        let dxb = bottom[0].diff_buf();
        let mut dx = dxb.device_out(gpu)?;
        match self.method {
            PoolMethod::Max => {
                let mask = self.mask_dev.current("pooling mask")?;
                k.pooling_max_bwd(s, &*dy, mask, &mut *dx, &g)
            }
            PoolMethod::Ave => k.pooling_ave_bwd(s, &*dy, &mut *dx, &g),
            PoolMethod::Stochastic => bail!(
                "layer '{}': STOCHASTIC pooling is not available",
                self.name()
            ),
        }
    }
}
