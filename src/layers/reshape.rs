//! Reshape: replaces the bottom's axes [axis, axis + num_axes) with `shape`, where a 0 copies
//! the bottom dim at the same position and one -1 is inferred from the count. The top shares
//! the bottom's data and diff. In place is forbidden.

use anyhow::{bail, Result};

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::ops;
use crate::blob::{read, same, write, BlobRef};
use crate::proto::blob::shape_string;
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct ReshapeLayer {
    base: LayerBase,
    /// The requested dims (0 and -1 included).
    dims: Vec<i64>,
    axis: i32,
    num_axes: i32,
    inferred: Option<usize>,
    copy_axes: Vec<usize>,
    constant_count: usize,
}

impl ReshapeLayer {
    pub fn new(param: &LayerParameter) -> Result<Self> {
        let p = param.reshape_param.clone().unwrap_or_default();
        let dims: Vec<i64> = p.shape.as_ref().map(|s| s.dim.clone()).unwrap_or_default();
        let mut inferred = None;
        let mut copy_axes = Vec::new();
        let mut constant_count = 1usize;
        for (i, &d) in dims.iter().enumerate() {
            match d {
                0 => copy_axes.push(i),
                -1 => {
                    if inferred.is_some() {
                        bail!(
                            "layer '{}': new shape contains multiple -1 dims; at most a single (1) value of -1 may be specified",
                            param.name()
                        );
                    }
                    inferred = Some(i);
                }
                d if d < -1 => {
                    bail!(
                        "layer '{}': reshape dim {d} is invalid (use 0 to copy, -1 to infer)",
                        param.name()
                    )
                }
                d => constant_count = constant_count.saturating_mul(d as usize),
            }
        }
        if p.num_axes() < -1 {
            bail!(
                "layer '{}': num_axes must be >= 0, or -1 for all",
                param.name()
            );
        }
        Ok(ReshapeLayer {
            base: LayerBase::new(param),
            dims,
            axis: p.axis(),
            num_axes: p.num_axes(),
            inferred,
            copy_axes,
            constant_count,
        })
    }
}

impl Layer for ReshapeLayer {
    fn type_name(&self) -> &'static str {
        "Reshape"
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
        if std::rc::Rc::ptr_eq(&top[0], &bottom[0]) {
            bail!(
                "layer '{}': Reshape layer does not allow in-place computation",
                self.name()
            );
        }
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let b = &bottom[0];
        let bs = b.shape();
        let nb = bs.len() as i64;
        let start = if self.axis >= 0 {
            self.axis as i64
        } else {
            nb + self.axis as i64 + 1
        };
        if start < 0 || start > nb {
            bail!(
                "layer '{}': axis {} out of range for bottom shape {}",
                self.name(),
                self.axis,
                b.shape_string()
            );
        }
        let start = start as usize;
        let end = if self.num_axes == -1 {
            bs.len()
        } else {
            start + self.num_axes as usize
        };
        if end > bs.len() {
            bail!(
                "layer '{}': end_axis = axis + num_axes = {end} is out of range for bottom shape {}",
                self.name(),
                b.shape_string()
            );
        }
        let mut ts: Vec<usize> = bs[..start].to_vec();
        ts.extend(self.dims.iter().map(|&d| d.max(0) as usize));
        ts.extend_from_slice(&bs[end..]);
        for &c in &self.copy_axes {
            if start + c >= bs.len() {
                bail!(
                    "layer '{}': new shape contains a 0, but there was no corresponding bottom axis to copy (bottom shape {})",
                    self.name(),
                    b.shape_string()
                );
            }
            ts[start + c] = bs[start + c];
        }
        if let Some(i) = self.inferred {
            let mut explicit = self.constant_count;
            explicit = explicit.saturating_mul(b.count_range(0, start));
            explicit = explicit.saturating_mul(b.count_from(end));
            for &c in &self.copy_axes {
                explicit = explicit.saturating_mul(ts[start + c]);
            }
            if explicit == 0 || !b.count().is_multiple_of(explicit) {
                bail!(
                    "layer '{}': bottom count ({}) must be divisible by the product of the specified dimensions ({explicit}); bottom shape {}",
                    self.name(),
                    b.count(),
                    b.shape_string()
                );
            }
            ts[start + i] = b.count() / explicit;
        }
        let count: usize = ts.iter().product();
        if count != b.count() {
            bail!(
                "layer '{}': output count must match input count: bottom shape {} ({}), top shape {} ({count})",
                self.name(),
                b.shape_string(),
                b.count(),
                shape_string(&ts)
            );
        }
        top[0].share_data(b);
        top[0].share_diff(b);
        top[0].reshape(&ts)
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        top[0].share_data(&bottom[0]);
        Ok(())
    }

    fn backward(
        &mut self,
        _: &mut Ctx,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        let (dy, dx) = (top[0].diff_buf(), bottom[0].diff_buf());
        if pd[0] && !same(&dy, &dx) {
            write(&dx).copy_from_slice(&read(&dy));
        }
        Ok(())
    }

    fn forward_gpu(
        &mut self,
        ctx: &mut Ctx,
        _g: &Gpu,
        bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<()> {
        // The top shares the bottom's memory: nothing to compute on any backend.
        self.forward(ctx, bottom, top)
    }

    fn backward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if pd[0] {
            // A no-op unless something gave the top a diff of its own (as the CPU path).
            ops::copy(g, &top[0].diff_buf(), &bottom[0].diff_buf())?;
        }
        Ok(())
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
