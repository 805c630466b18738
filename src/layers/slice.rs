//! Slice: splits the bottom along `axis` (or the legacy `slice_dim`; both is an error) at
//! `slice_point`s, or into equal parts when none are given. Backward copies each top's diff
//! back into place. A single top is passed through by sharing data and diff.

use anyhow::{bail, Result};

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::tensor;
use crate::backend::cuda::gpu::Gpu;
use crate::blob::{read, write, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct SliceLayer {
    base: LayerBase,
    axis: usize,
    slice_points: Vec<usize>,
}

impl SliceLayer {
    pub fn new(param: &LayerParameter) -> Result<Self> {
        let p = param.slice_param.clone().unwrap_or_default();
        if p.axis.is_some() && p.slice_dim.is_some() {
            bail!(
                "layer '{}': Either axis or slice_dim should be specified; not both.",
                param.name()
            );
        }
        Ok(SliceLayer {
            base: LayerBase::new(param),
            axis: 0,
            slice_points: p.slice_point.iter().map(|&v| v as usize).collect(),
        })
    }

    fn resolve_axis(&self, b: &BlobRef) -> Result<usize> {
        let p = self.base.param.slice_param.clone().unwrap_or_default();
        if p.slice_dim.is_some() {
            let d = p.slice_dim() as i64;
            if d > i32::MAX as i64 || d as usize >= b.num_axes() {
                bail!(
                    "layer '{}': slice_dim {d} out of range for bottom shape {}",
                    self.name(),
                    b.shape_string()
                );
            }
            Ok(d as usize)
        } else {
            b.canonical_axis(p.axis())
                .map_err(|e| anyhow::anyhow!("layer '{}': slice axis: {e}", self.name()))
        }
    }
}

impl Layer for SliceLayer {
    fn type_name(&self) -> &'static str {
        "Slice"
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
        Arity::Min(1)
    }

    fn setup(&mut self, _rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        if top.len() > 1 && std::rc::Rc::ptr_eq(&top[0], &bottom[0]) {
            bail!(
                "layer '{}': Slice into several tops does not work in place",
                self.name()
            );
        }
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let axis = self.resolve_axis(&bottom[0])?;
        self.axis = axis;
        let shape = bottom[0].shape();
        let n = shape[axis];
        let sizes: Vec<usize> = if !self.slice_points.is_empty() {
            if self.slice_points.len() != top.len() - 1 {
                bail!(
                    "layer '{}': {} slice_point(s) given for {} tops (need one fewer than the tops)",
                    self.name(),
                    self.slice_points.len(),
                    top.len()
                );
            }
            if top.len() > n {
                bail!(
                    "layer '{}': {} tops cannot slice an axis of size {n}",
                    self.name(),
                    top.len()
                );
            }
            let mut prev = 0;
            let mut sizes = Vec::new();
            for &p in &self.slice_points {
                if p <= prev {
                    bail!(
                        "layer '{}': slice_point values must be increasing and positive, got {:?}",
                        self.name(),
                        self.slice_points
                    );
                }
                sizes.push(p - prev);
                prev = p;
            }
            if prev > n {
                bail!(
                    "layer '{}': slice_point {prev} is beyond axis {axis} of bottom shape {}",
                    self.name(),
                    bottom[0].shape_string()
                );
            }
            sizes.push(n - prev);
            sizes
        } else {
            if !n.is_multiple_of(top.len()) {
                bail!(
                    "layer '{}': Number of top blobs ({}) should evenly divide input slice axis ({n}) of bottom shape {}",
                    self.name(),
                    top.len(),
                    bottom[0].shape_string()
                );
            }
            vec![n / top.len(); top.len()]
        };
        if top.len() == 1 {
            if !std::rc::Rc::ptr_eq(&top[0], &bottom[0]) {
                top[0].share_data(&bottom[0]);
                top[0].share_diff(&bottom[0]);
            }
            return top[0].reshape(&shape);
        }
        for (t, &s) in top.iter().zip(&sizes) {
            let mut ts = shape.clone();
            ts[axis] = s;
            t.reshape(&ts)?;
        }
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        if top.len() == 1 {
            return Ok(());
        }
        let axis = self.axis;
        let outer = bottom[0].count_range(0, axis);
        let inner = bottom[0].count_from(axis + 1);
        let n = bottom[0].dim(axis as isize);
        let xb = bottom[0].data_buf();
        let x = read(&xb);
        let mut offset = 0;
        for t in top {
            let k = t.dim(axis as isize);
            let yb = t.data_buf();
            tensor::axis_extract(&x, &mut write(&yb), outer, n, offset, k, inner);
            offset += k;
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
        if !pd[0] || top.len() == 1 {
            return Ok(());
        }
        let axis = self.axis;
        let outer = bottom[0].count_range(0, axis);
        let inner = bottom[0].count_from(axis + 1);
        let n = bottom[0].dim(axis as isize);
        let dxb = bottom[0].diff_buf();
        let mut dx = write(&dxb);
        let mut offset = 0;
        for t in top {
            let k = t.dim(axis as isize);
            let dyb = t.diff_buf();
            tensor::axis_insert(&read(&dyb), &mut dx, outer, k, n, offset, inner);
            offset += k;
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
        if top.len() == 1 {
            return Ok(());
        }
        let axis = self.axis;
        let outer = bottom[0].count_range(0, axis);
        let inner = bottom[0].count_from(axis + 1);
        let n = bottom[0].dim(axis as isize);
        let xb = bottom[0].data_buf();
        let x = xb.device(g)?;
        let mut offset = 0;
        for t in top {
            let k = t.dim(axis as isize);
            let yb = t.data_buf();
            let mut y = yb.device_out(g)?;
            g.kernels().tensor_axis_extract(
                g.stream(),
                &*x,
                &mut *y,
                outer,
                n,
                offset,
                k,
                inner,
            )?;
            offset += k;
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
        if !pd[0] || top.len() == 1 {
            return Ok(());
        }
        let axis = self.axis;
        let outer = bottom[0].count_range(0, axis);
        let inner = bottom[0].count_from(axis + 1);
        let n = bottom[0].dim(axis as isize);
        let dxb = bottom[0].diff_buf();
        let mut dx = dxb.device_out(g)?;
        let mut offset = 0;
        for t in top {
            let k = t.dim(axis as isize);
            let dyb = t.diff_buf();
            let dy = dyb.device(g)?;
            g.kernels().tensor_axis_insert(
                g.stream(),
                &*dy,
                &mut *dx,
                outer,
                k,
                n,
                offset,
                inner,
            )?;
            offset += k;
        }
        Ok(())
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
