//! ArgMax: the indices (and optionally values) of the `top_k` largest entries, either along
//! `argmax_param.axis` or, without an axis, over everything after the first axis. Output
//! shapes follow Caffe: with an axis, the input shape with that axis replaced by `top_k`
//! (values instead of indices when `out_max_val`); without, `(N, 1, top_k)` indices or
//! `(N, 2, top_k)` indices-then-values, padded with 1s to the input's axis count (at least
//! 3). Ties go to the higher index (Caffe sorts (value, index) pairs with `std::greater`).
//! Not differentiable.

use anyhow::{bail, Context, Result};

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::loss as ops;
use crate::backend::cuda::gpu::Gpu;
use crate::blob::{read, write, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct ArgMaxLayer {
    base: LayerBase,
    out_max_val: bool,
    top_k: usize,
    axis: Option<i32>,
    /// (dim, axis_dist) of the current input: values per row and their spacing.
    dims: (usize, usize),
}

impl ArgMaxLayer {
    pub fn new(param: &LayerParameter) -> Result<Self> {
        let p = param.argmax_param.unwrap_or_default();
        if p.top_k() < 1 {
            bail!("layer '{}': top k must not be less than 1", param.name());
        }
        Ok(ArgMaxLayer {
            base: LayerBase::new(param),
            out_max_val: p.out_max_val(),
            top_k: p.top_k() as usize,
            axis: p.axis,
            dims: (0, 0),
        })
    }
}

impl Layer for ArgMaxLayer {
    fn type_name(&self) -> &'static str {
        "ArgMax"
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
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let name = self.name().to_string();
        let b = &bottom[0];
        if std::rc::Rc::ptr_eq(b, &top[0]) {
            bail!("layer '{name}': ArgMax cannot run in place");
        }
        if b.num_axes() == 0 {
            bail!("layer '{name}': the input is a scalar; ArgMax needs a first (batch) axis");
        }
        let in_shape = b.shape();
        let shape = match self.axis {
            Some(axis) => {
                let a = b
                    .canonical_axis(axis)
                    .with_context(|| format!("layer '{name}': argmax axis"))?;
                let dim = in_shape[a];
                if self.top_k > dim {
                    bail!(
                        "layer '{name}': top_k ({}) must be less than or equal to the dimension of the axis ({dim} for axis {axis} of shape {})",
                        self.top_k,
                        b.shape_string()
                    );
                }
                self.dims = (dim, b.count_from(a) / dim.max(1));
                let mut s = in_shape.clone();
                s[a] = self.top_k;
                s
            }
            None => {
                let dim = b.count_from(1);
                if self.top_k > dim {
                    bail!(
                        "layer '{name}': top_k ({}) must be less than or equal to the dimension of the flattened input per instance ({dim} for shape {})",
                        self.top_k,
                        b.shape_string()
                    );
                }
                self.dims = (dim, 1);
                let mut s = vec![1; in_shape.len().max(3)];
                s[0] = in_shape[0];
                s[2] = self.top_k;
                if self.out_max_val {
                    s[1] = 2;
                }
                s
            }
        };
        top[0].reshape(&shape)
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let (dim, axis_dist) = self.dims;
        if bottom[0].count() == 0 {
            return Ok(());
        }
        ops::argmax_forward(
            &read(&bottom[0].data_buf()),
            &mut write(&top[0].data_buf()),
            dim,
            axis_dist,
            self.top_k,
            self.out_max_val,
            self.axis.is_some(),
        );
        Ok(())
    }

    fn backward(
        &mut self,
        _ctx: &mut Ctx,
        _top: &[BlobRef],
        propagate_down: &[bool],
        _bottom: &[BlobRef],
    ) -> Result<()> {
        if propagate_down.iter().any(|&p| p) {
            bail!("layer '{}': ArgMax has no gradient", self.name());
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
        let (dim, axis_dist) = self.dims;
        if bottom[0].count() == 0 {
            return Ok(());
        }
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        let x = xb.device(g)?;
        let mut y = yb.device_out(g)?;
        g.kernels().loss_argmax(
            g.stream(),
            &*x,
            &mut *y,
            dim,
            axis_dist,
            self.top_k,
            self.out_max_val,
            self.axis.is_some(),
        )
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
