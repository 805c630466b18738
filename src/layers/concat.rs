//! Concat: joins bottoms along `axis` (or the legacy `concat_dim`; giving both is an error);
//! all other dims must agree. Backward copies each bottom's part of the top diff back. A single
//! bottom is passed through by sharing data and diff.

use anyhow::{bail, Result};

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::tensor;
use crate::backend::cuda::gpu::Gpu;
use crate::blob::{read, write, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct ConcatLayer {
    base: LayerBase,
    axis: usize,
}

impl ConcatLayer {
    pub fn new(param: &LayerParameter) -> Result<Self> {
        if let Some(p) = &param.concat_param {
            if p.axis.is_some() && p.concat_dim.is_some() {
                bail!(
                    "layer '{}': Either axis or concat_dim should be specified; not both.",
                    param.name()
                );
            }
        }
        Ok(ConcatLayer {
            base: LayerBase::new(param),
            axis: 0,
        })
    }

    fn resolve_axis(&self, b: &BlobRef) -> Result<usize> {
        let p = self.base.param.concat_param.unwrap_or_default();
        if p.concat_dim.is_some() {
            let d = p.concat_dim() as i64;
            if d > i32::MAX as i64 {
                bail!(
                    "layer '{}': concat_dim {d} does not fit an int32 axis",
                    self.name()
                );
            }
            if d as usize >= b.num_axes() {
                bail!(
                    "layer '{}': concat_dim {d} out of range for bottom shape {}",
                    self.name(),
                    b.shape_string()
                );
            }
            Ok(d as usize)
        } else {
            b.canonical_axis(p.axis())
                .map_err(|e| anyhow::anyhow!("layer '{}': concat axis: {e}", self.name()))
        }
    }
}

impl Layer for ConcatLayer {
    fn type_name(&self) -> &'static str {
        "Concat"
    }
    fn base(&self) -> &LayerBase {
        &self.base
    }
    fn base_mut(&mut self) -> &mut LayerBase {
        &mut self.base
    }
    fn bottom_arity(&self) -> Arity {
        Arity::Min(1)
    }
    fn top_arity(&self) -> Arity {
        Arity::Exact(1)
    }

    fn setup(&mut self, _rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        if bottom.len() > 1 && std::rc::Rc::ptr_eq(&top[0], &bottom[0]) {
            bail!(
                "layer '{}': Concat of several bottoms does not work in place",
                self.name()
            );
        }
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let axis = self.resolve_axis(&bottom[0])?;
        self.axis = axis;
        let mut shape = bottom[0].shape();
        for (i, b) in bottom.iter().enumerate().skip(1) {
            let s = b.shape();
            if s.len() != shape.len() {
                bail!(
                    "layer '{}': All inputs must have the same #axes; bottom[0] is {}, bottom[{i}] is {}",
                    self.name(),
                    bottom[0].shape_string(),
                    b.shape_string()
                );
            }
            for j in 0..s.len() {
                if j != axis && s[j] != shape[j] {
                    bail!(
                        "layer '{}': All inputs must have the same shape, except at concat_axis ({axis}); bottom[0] is {}, bottom[{i}] is {}",
                        self.name(),
                        bottom[0].shape_string(),
                        b.shape_string()
                    );
                }
            }
            shape[axis] += s[axis];
        }
        if bottom.len() == 1 && !std::rc::Rc::ptr_eq(&top[0], &bottom[0]) {
            top[0].share_data(&bottom[0]);
            top[0].share_diff(&bottom[0]);
        }
        top[0].reshape(&shape)
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        if bottom.len() == 1 {
            return Ok(());
        }
        let axis = self.axis;
        let outer = top[0].count_range(0, axis);
        let inner = top[0].count_from(axis + 1);
        let top_axis = top[0].dim(axis as isize);
        let yb = top[0].data_buf();
        let mut y = write(&yb);
        let mut offset = 0;
        for b in bottom {
            let n = b.dim(axis as isize);
            let xb = b.data_buf();
            tensor::axis_insert(&read(&xb), &mut y, outer, n, top_axis, offset, inner);
            offset += n;
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
        if bottom.len() == 1 {
            return Ok(());
        }
        let axis = self.axis;
        let outer = top[0].count_range(0, axis);
        let inner = top[0].count_from(axis + 1);
        let top_axis = top[0].dim(axis as isize);
        let dyb = top[0].diff_buf();
        let dy = read(&dyb);
        let mut offset = 0;
        for (i, b) in bottom.iter().enumerate() {
            let n = b.dim(axis as isize);
            if pd[i] {
                let dxb = b.diff_buf();
                tensor::axis_extract(&dy, &mut write(&dxb), outer, top_axis, offset, n, inner);
            }
            offset += n;
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
        if bottom.len() == 1 {
            return Ok(());
        }
        let axis = self.axis;
        let outer = top[0].count_range(0, axis);
        let inner = top[0].count_from(axis + 1);
        let top_axis = top[0].dim(axis as isize);
        let yb = top[0].data_buf();
        let mut y = yb.device_out(g)?;
        let mut offset = 0;
        for b in bottom {
            let n = b.dim(axis as isize);
            let xb = b.data_buf();
            let x = xb.device(g)?;
            g.kernels().tensor_axis_insert(
                g.stream(),
                &*x,
                &mut *y,
                outer,
                n,
                top_axis,
                offset,
                inner,
            )?;
            offset += n;
        }
        Ok(())
    }

    fn backward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if bottom.len() == 1 {
            return Ok(());
        }
        let axis = self.axis;
        let outer = top[0].count_range(0, axis);
        let inner = top[0].count_from(axis + 1);
        let top_axis = top[0].dim(axis as isize);
        let dyb = top[0].diff_buf();
        let dy = dyb.device(g)?;
        let mut offset = 0;
        for (i, b) in bottom.iter().enumerate() {
            let n = b.dim(axis as isize);
            if pd[i] {
                let dxb = b.diff_buf();
                let mut dx = dxb.device_out(g)?;
                g.kernels().tensor_axis_extract(
                    g.stream(),
                    &*dy,
                    &mut *dx,
                    outer,
                    top_axis,
                    offset,
                    n,
                    inner,
                )?;
            }
            offset += n;
        }
        Ok(())
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
