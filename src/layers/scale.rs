//! Scale: multiplies `bottom[0]` by a factor broadcast over a range of its axes, learned (blob 0,
//! filler default constant 1) or taken from `bottom[1]`; with `bias_term` a bias (filler default
//! constant 0) is added and is the layer's LAST blob (blob 1 when learned, blob 0 with two
//! bottoms), as Caffe's internal Bias layer arranges it.

use anyhow::Result;
use cudarc::driver::{CudaSlice, DevicePtr};

use super::bias::{broadcast_dims, param_shape};
use super::{check_given_blobs, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::scale as k;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::kernels::channel_partials_len;
use crate::backend::cuda::ops::{self, DeviceBuf};
use crate::blob::{read, same, write, Blob, BlobRef};
use crate::proto::caffe::{FillerParameter, LayerParameter};
use crate::rng::CaffeRng;

pub struct ScaleLayer {
    base: LayerBase,
    /// Index of the bias blob, with bias_term.
    bias_index: Option<usize>,
    outer: usize,
    dim: usize,
    inner: usize,
    /// The input of an in-place forward, which the scale gradient needs.
    temp: Vec<f32>,
    /// The same on the GPU path, and the gradient reductions' partials.
    temp_dev: DeviceBuf<f32>,
    partial: DeviceBuf<f64>,
}

impl ScaleLayer {
    pub fn new(param: &LayerParameter) -> Self {
        ScaleLayer {
            base: LayerBase::new(param),
            bias_index: None,
            outer: 0,
            dim: 0,
            inner: 0,
            temp: Vec::new(),
            temp_dev: DeviceBuf::default(),
            partial: DeviceBuf::default(),
        }
    }

    /// For `net::fuse`: the (outer, dim, inner) view of the bottom and the bias blob's index.
    pub(crate) fn broadcast(&self) -> ((usize, usize, usize), Option<usize>) {
        ((self.outer, self.dim, self.inner), self.bias_index)
    }

    /// For `net::fuse`, whose forward does not copy the input of an in-place Scale: sets it
    /// (the BatchNorm's normalised output) when this layer's own backward is to run.
    pub(crate) fn set_input(&mut self, x: &[f32]) {
        self.temp.clear();
        self.temp.extend_from_slice(x);
    }

    /// Caffe's rule for a learned scale's gradient (see `backward`): accumulated, or
    /// overwritten.
    pub(crate) fn accumulates_scale_grad(&self) -> bool {
        let (outer, dim, inner) = (self.outer, self.dim, self.inner);
        !(outer == 1 && (inner == 1 || dim > 1))
    }

    fn axis(&self) -> i32 {
        self.base
            .param
            .scale_param
            .as_ref()
            .map(|p| p.axis())
            .unwrap_or(1)
    }
}

impl Layer for ScaleLayer {
    fn type_name(&self) -> &'static str {
        "Scale"
    }
    fn base(&self) -> &LayerBase {
        &self.base
    }
    fn base_mut(&mut self) -> &mut LayerBase {
        &mut self.base
    }
    fn bottom_arity(&self) -> Arity {
        Arity::Range(1, 2)
    }
    fn top_arity(&self) -> Arity {
        Arity::Exact(1)
    }
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn setup(&mut self, rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let p = self.base.param.scale_param.clone().unwrap_or_default();
        let name = self.name().to_string();
        let learned = bottom.len() == 1;
        let mut expected = Vec::new();
        if learned {
            expected.push(param_shape(&name, &bottom[0], p.axis(), p.num_axes())?);
        }
        if p.bias_term() {
            // The bias covers the same axes as the scale: bottom[1]'s when the scale is a bottom.
            let num_axes = if learned {
                p.num_axes()
            } else {
                bottom[1].num_axes() as i32
            };
            expected.push(param_shape(&name, &bottom[0], p.axis(), num_axes)?);
            self.bias_index = Some(expected.len() - 1);
        }
        if self.base.blobs.is_empty() {
            // Scale first, then bias: the order the fillers draw random numbers in Caffe.
            for (i, shape) in expected.iter().enumerate() {
                let b = Blob::with_shape(shape)?;
                let filler = if learned && i == 0 {
                    p.filler.clone().unwrap_or(FillerParameter {
                        r#type: Some("constant".into()),
                        value: Some(1.0),
                        ..Default::default()
                    })
                } else {
                    p.bias_filler.clone().unwrap_or_default()
                };
                crate::filler::fill(&b, &filler, rng)?;
                self.base.blobs.push(b);
            }
        } else {
            check_given_blobs(&name, &self.base.blobs, &expected)?;
        }
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let scale_shape = if bottom.len() > 1 {
            bottom[1].shape()
        } else {
            self.base.blobs[0].shape()
        };
        let (o, d, i) = broadcast_dims(self.name(), &bottom[0], self.axis(), &scale_shape)?;
        (self.outer, self.dim, self.inner) = (o, d, i);
        if let Some(bi) = self.bias_index {
            let bias_shape = self.base.blobs[bi].shape();
            let dims = broadcast_dims(self.name(), &bottom[0], self.axis(), &bias_shape)?;
            if dims != (o, d, i) {
                anyhow::bail!(
                    "layer '{}': bias shape {} does not cover the same axes as scale shape {}",
                    self.name(),
                    self.base.blobs[bi].shape_string(),
                    crate::proto::blob::shape_string(&scale_shape)
                );
            }
        }
        top[0].reshape(&bottom[0].shape())?;
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let scale_buf = if bottom.len() > 1 {
            bottom[1].data_buf()
        } else {
            self.base.blobs[0].data_buf()
        };
        let bias_buf = self.bias_index.map(|i| self.base.blobs[i].data_buf());
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        let scale = read(&scale_buf);
        let bias = bias_buf.as_ref().map(read);
        if same(&xb, &yb) {
            let mut y = write(&yb);
            self.temp.resize(y.len(), 0.0);
            k::scale_forward_keep(
                &mut y,
                &mut self.temp,
                &scale,
                bias.as_deref().map(|v| v.as_slice()),
                self.dim,
                self.inner,
            );
        } else {
            k::scale_forward(
                &read(&xb),
                &scale,
                bias.as_deref().map(|v| v.as_slice()),
                self.dim,
                self.inner,
                &mut write(&yb),
            );
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
        let (outer, dim, inner) = (self.outer, self.dim, self.inner);
        let dyb = top[0].diff_buf();
        let in_place = same(&bottom[0].data_buf(), &top[0].data_buf());
        let learned = bottom.len() == 1;
        let bias_grad = self.bias_index.filter(|&bi| self.base.param_needs_grad(bi));
        let scale_grad = (learned && self.base.param_needs_grad(0)) || (!learned && pd[1]);
        // Caffe accumulates a learned scale's gradient except when it writes the result
        // straight into the diff: the element-wise case (outer == inner == 1) and the
        // outer == 1 case with a vector scale. A bottom's gradient is always overwritten.
        let accumulate = learned && self.accumulates_scale_grad();
        let xb = bottom[0].data_buf();
        let x = read(&xb);
        let xs: &[f32] = if in_place { &self.temp } else { &x };
        match (bias_grad, learned && scale_grad) {
            (Some(bi), true) => {
                // The usual learned scale and bias: both sums in one pass over dy.
                let (gb, gs) = (
                    self.base.blobs[bi].diff_buf(),
                    self.base.blobs[0].diff_buf(),
                );
                k::bias_and_scale_grad(
                    &read(&dyb),
                    xs,
                    outer,
                    dim,
                    inner,
                    (&mut write(&gb), true),
                    (&mut write(&gs), accumulate),
                );
            }
            _ => {
                if let Some(bi) = bias_grad {
                    let gb = self.base.blobs[bi].diff_buf();
                    k::broadcast_grad(&read(&dyb), None, outer, dim, inner, &mut write(&gb), true);
                }
                if scale_grad {
                    let gb = if learned {
                        self.base.blobs[0].diff_buf()
                    } else {
                        bottom[1].diff_buf()
                    };
                    k::broadcast_grad(
                        &read(&dyb),
                        Some(xs),
                        outer,
                        dim,
                        inner,
                        &mut write(&gb),
                        accumulate,
                    );
                }
            }
        }
        drop(x);
        if pd[0] {
            let scale_buf = if learned {
                self.base.blobs[0].data_buf()
            } else {
                bottom[1].data_buf()
            };
            let scale = read(&scale_buf);
            let dxb = bottom[0].diff_buf();
            if same(&dyb, &dxb) {
                k::scale_inplace(&mut write(&dxb), &scale, dim, inner);
            } else {
                k::scale_forward(&read(&dyb), &scale, None, dim, inner, &mut write(&dxb));
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
        let (outer, dim, inner) = (self.outer, self.dim, self.inner);
        if outer * dim * inner == 0 {
            return Ok(());
        }
        let scale_buf = if bottom.len() > 1 {
            bottom[1].data_buf()
        } else {
            self.base.blobs[0].data_buf()
        };
        let bias_buf = self.bias_index.map(|i| self.base.blobs[i].data_buf());
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        if same(&xb, &yb) {
            // Backward's scale gradient needs the input the forward overwrites.
            let x = xb.device(g)?;
            let temp = self.temp_dev.get(g, x.len())?;
            ops::copy_slice(g, &x, temp, x.len())?;
        }
        let scale = scale_buf.device(g)?;
        let bias = bias_buf.as_ref().map(|b| b.device(g)).transpose()?;
        ops::with_io(g, &xb, &yb, |io| {
            g.kernels().scale_fwd(
                g.stream(),
                io,
                &*scale,
                bias.as_deref().map(|b| b as &dyn DevicePtr<f32>),
                outer,
                dim,
                inner,
            )
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
        let (outer, dim, inner) = (self.outer, self.dim, self.inner);
        let learned = bottom.len() == 1;
        // Caffe accumulates a learned scale's gradient except when it writes the result
        // straight into the diff (see backward); a bottom's gradient is always overwritten.
        let accumulate = learned && !(outer == 1 && (inner == 1 || dim > 1));
        let want_scale = (learned && self.base.param_needs_grad(0)) || (!learned && pd[1]);
        if outer * dim * inner == 0 {
            // Nothing to sum (no device memory to touch): an overwritten gradient is zero.
            if want_scale && !accumulate {
                let gb = if learned {
                    self.base.blobs[0].diff_buf()
                } else {
                    bottom[1].diff_buf()
                };
                gb.fill(0.0);
            }
            return Ok(());
        }
        let (kern, s) = (g.kernels(), g.stream());
        let dyb = top[0].diff_buf();
        let in_place = same(&bottom[0].data_buf(), &top[0].data_buf());
        let partial_len = channel_partials_len(dim, outer, inner);
        if let Some(bi) = self.bias_index {
            if self.base.param_needs_grad(bi) {
                let gb = self.base.blobs[bi].diff_buf();
                let dy = dyb.device(g)?;
                let mut gd = gb.device_mut(g)?;
                let partial = self.partial.get(g, partial_len)?;
                let chunks = kern.scale_grad_partials(s, &*dy, None, partial, outer, dim, inner)?;
                kern.scale_grad_finish(s, partial, &mut *gd, dim, chunks, true)?;
            }
        }
        if want_scale {
            let gb = if learned {
                self.base.blobs[0].diff_buf()
            } else {
                bottom[1].diff_buf()
            };
            let xb = bottom[0].data_buf();
            let x = xb.device(g)?;
            let xs: &CudaSlice<f32> = if in_place {
                self.temp_dev.current("Scale input copy")?
            } else {
                &x
            };
            let dy = dyb.device(g)?;
            // A bottom's gradient is overwritten: no upload of its stale values.
            let mut gd = if accumulate {
                gb.device_mut(g)?
            } else {
                gb.device_out(g)?
            };
            let partial = self.partial.get(g, partial_len)?;
            let chunks = kern.scale_grad_partials(s, &*dy, Some(xs), partial, outer, dim, inner)?;
            kern.scale_grad_finish(s, partial, &mut *gd, dim, chunks, accumulate)?;
        }
        if pd[0] {
            let scale_buf = if learned {
                self.base.blobs[0].data_buf()
            } else {
                bottom[1].data_buf()
            };
            let scale = scale_buf.device(g)?;
            ops::with_io(g, &dyb, &bottom[0].diff_buf(), |io| {
                kern.scale_fwd(s, io, &*scale, None, outer, dim, inner)
            })?;
        }
        Ok(())
    }
}
