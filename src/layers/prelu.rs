//! PReLU: `y = max(x, 0) + a * min(x, 0)` with a learned slope per channel (axis 1), or one
//! slope for all channels with channel_shared (filler default constant 0.25).

use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::prelu as k;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::kernels::channel_partials_len;
use crate::backend::cuda::ops::{self, DeviceBuf};
use crate::blob::{map_buf, read, same, write, Blob, BlobRef};
use crate::proto::caffe::{FillerParameter, LayerParameter};
use crate::rng::CaffeRng;

pub struct PReluLayer {
    base: LayerBase,
    channel_shared: bool,
    num: usize,
    channels: usize,
    dim: usize,
    /// The input of an in-place forward, which backward needs.
    bottom_memory: Vec<f32>,
    /// The same on the GPU path, and the slope gradient's partials.
    bottom_memory_dev: DeviceBuf<f32>,
    partial: DeviceBuf<f64>,
}

impl PReluLayer {
    pub fn new(param: &LayerParameter) -> Self {
        let shared = param
            .prelu_param
            .as_ref()
            .map(|p| p.channel_shared())
            .unwrap_or(false);
        PReluLayer {
            base: LayerBase::new(param),
            channel_shared: shared,
            num: 0,
            channels: 0,
            dim: 0,
            bottom_memory: Vec::new(),
            bottom_memory_dev: DeviceBuf::default(),
            partial: DeviceBuf::default(),
        }
    }
}

impl Layer for PReluLayer {
    fn type_name(&self) -> &'static str {
        "PReLU"
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

    fn setup(&mut self, rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let x = &bottom[0];
        if x.num_axes() < 2 {
            bail!(
                "layer '{}': PReLU needs a bottom with at least 2 axes, got shape {}",
                self.name(),
                x.shape_string()
            );
        }
        let channels = x.shape()[1];
        let p = self.base.param.prelu_param.clone().unwrap_or_default();
        if self.base.blobs.is_empty() {
            let shape: &[usize] = if self.channel_shared {
                &[]
            } else {
                &[channels]
            };
            let b = Blob::with_shape(shape)?;
            let filler = p.filler.clone().unwrap_or(FillerParameter {
                r#type: Some("constant".into()),
                value: Some(0.25),
                ..Default::default()
            });
            crate::filler::fill(&b, &filler, rng)?;
            self.base.blobs.push(b);
        } else if self.base.blobs.len() != 1 {
            bail!(
                "layer '{}': {} parameter blob(s) given, 1 expected",
                self.name(),
                self.base.blobs.len()
            );
        }
        // Like Caffe, only the count is checked: a stored shared slope may be [] or [1].
        let want = if self.channel_shared { 1 } else { channels };
        if self.base.blobs[0].count() != want {
            bail!(
                "layer '{}': Negative slope size is inconsistent with prototxt config (slope shape {}, {} expected)",
                self.name(),
                self.base.blobs[0].shape_string(),
                if self.channel_shared {
                    "1 value (channel_shared)".to_string()
                } else {
                    format!("{channels} values, one per channel")
                }
            );
        }
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let x = &bottom[0];
        if x.num_axes() < 2 {
            bail!(
                "layer '{}': PReLU needs a bottom with at least 2 axes, got shape {}",
                self.name(),
                x.shape_string()
            );
        }
        let shape = x.shape();
        if !self.channel_shared && shape[1] != self.base.blobs[0].count() {
            bail!(
                "layer '{}': input has {} channels, the slopes {}",
                self.name(),
                shape[1],
                self.base.blobs[0].count()
            );
        }
        (self.num, self.channels, self.dim) = (shape[0], shape[1], x.count_from(2));
        top[0].reshape(&shape)?;
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let slope_buf = self.base.blobs[0].data_buf();
        let slope = read(&slope_buf);
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        let (c, dim, shared) = (self.channels, self.dim, self.channel_shared);
        if same(&xb, &yb) {
            self.bottom_memory.clear();
            self.bottom_memory.extend_from_slice(&read(&xb));
            k::prelu_forward(&self.bottom_memory, &slope, c, dim, shared, &mut write(&yb));
        } else {
            k::prelu_forward(&read(&xb), &slope, c, dim, shared, &mut write(&yb));
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
        let (num, c, dim, shared) = (self.num, self.channels, self.dim, self.channel_shared);
        let xb = bottom[0].data_buf();
        let in_place = same(&xb, &top[0].data_buf());
        let xg = read(&xb);
        let x: &[f32] = if in_place { &self.bottom_memory } else { &xg };
        let dyb = top[0].diff_buf();
        // The slope gradient first: in place, the input gradient overwrites the top diff.
        if self.base.param_needs_grad(0) {
            let gb = self.base.blobs[0].diff_buf();
            k::prelu_slope_grad(x, &read(&dyb), num, c, dim, shared, &mut write(&gb));
        }
        if pd[0] {
            let slope_buf = self.base.blobs[0].data_buf();
            let slope = read(&slope_buf);
            map_buf(&dyb, &bottom[0].diff_buf(), |dy, dx| {
                k::prelu_input_grad(x, dy, &slope, c, dim, shared, dx)
            });
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
        if bottom[0].count() == 0 {
            return Ok(());
        }
        let (c, dim, shared) = (self.channels, self.dim, self.channel_shared);
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        if same(&xb, &yb) {
            // Backward needs the input the forward overwrites.
            let x = xb.device(g)?;
            let keep = self.bottom_memory_dev.get(g, x.len())?;
            ops::copy_slice(g, &x, keep, x.len())?;
        }
        let sb = self.base.blobs[0].data_buf();
        let slope = sb.device(g)?;
        ops::with_io(g, &xb, &yb, |io| {
            g.kernels()
                .prelu_fwd(g.stream(), io, &*slope, c, dim, shared)
        })
    }

    fn backward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if bottom[0].count() == 0 {
            return Ok(());
        }
        let (kern, s) = (g.kernels(), g.stream());
        let (num, c, dim, shared) = (self.num, self.channels, self.dim, self.channel_shared);
        let xb = bottom[0].data_buf();
        let in_place = same(&xb, &top[0].data_buf());
        let xg = xb.device(g)?;
        let x: &CudaSlice<f32> = if in_place {
            self.bottom_memory_dev.current("PReLU input copy")?
        } else {
            &xg
        };
        let dyb = top[0].diff_buf();
        // The slope gradient first: in place, the input gradient overwrites the top diff.
        if self.base.param_needs_grad(0) {
            let gb = self.base.blobs[0].diff_buf();
            let dy = dyb.device(g)?;
            let mut gd = gb.device_mut(g)?;
            let partial = self.partial.get(g, channel_partials_len(c, num, dim))?;
            let chunks = kern.prelu_slope_partials(s, x, &*dy, partial, num, c, dim)?;
            if shared {
                kern.prelu_slope_finish_shared(s, partial, &mut *gd, c * chunks)?;
            } else {
                kern.scale_grad_finish(s, partial, &mut *gd, c, chunks, true)?;
            }
        }
        if pd[0] {
            let sb = self.base.blobs[0].data_buf();
            let slope = sb.device(g)?;
            ops::with_io(g, &dyb, &bottom[0].diff_buf(), |io| {
                kern.prelu_bwd(s, x, io, &*slope, c, dim, shared)
            })?;
        }
        Ok(())
    }
}
