//! Eltwise: SUM (with per-bottom `coeff`), PROD (`stable_prod_grad` picks the gradient form)
//! or MAX (Caffe's tie rule, gradient routed to the winning bottom) over bottoms of one shape.
//!
//! In place (the top is bottom 0) Caffe's SUM would zero its input before reading it and every
//! backward would read an already overwritten top diff; here the aliased inputs are copied
//! aside first, so in place gives the out-of-place results.

use anyhow::{bail, Result};

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::eltwise as ew;
use crate::blob::{read, same, write, BlobRef, Buf};
use crate::proto::caffe::{eltwise_parameter::EltwiseOp, LayerParameter};
use crate::rng::CaffeRng;

pub struct EltwiseLayer {
    base: LayerBase,
    op: EltwiseOp,
    coeff: Vec<f32>,
    stable_prod_grad: bool,
    /// Winning bottom per element (MAX).
    arg: Vec<u32>,
    /// Copies of bottom data that the top overwrote (in place), per bottom.
    kept: Vec<Option<Vec<f32>>>,
}

impl EltwiseLayer {
    pub fn new(param: &LayerParameter) -> Result<Self> {
        let p = param.eltwise_param.clone().unwrap_or_default();
        let op = p.operation();
        if op != EltwiseOp::Sum && !p.coeff.is_empty() {
            // Caffe rejects coefficients for PROD and silently ignores them for MAX.
            bail!(
                "layer '{}': Eltwise only takes coefficients (coeff) for summation, not for {}",
                param.name(),
                op.as_str_name()
            );
        }
        Ok(EltwiseLayer {
            base: LayerBase::new(param),
            op,
            coeff: p.coeff.clone(),
            stable_prod_grad: p.stable_prod_grad(),
            arg: Vec::new(),
            kept: Vec::new(),
        })
    }
}

/// Borrows each bottom's data, or its kept copy where there is one.
fn with_inputs<R>(bufs: &[Buf], kept: &[Option<Vec<f32>>], f: impl FnOnce(&[&[f32]]) -> R) -> R {
    let guards: Vec<Option<std::cell::Ref<'_, Vec<f32>>>> = bufs
        .iter()
        .zip(kept)
        .map(|(b, k)| if k.is_some() { None } else { Some(read(b)) })
        .collect();
    let xs: Vec<&[f32]> = guards
        .iter()
        .zip(kept)
        .map(|(g, k)| match (g, k) {
            (Some(g), _) => &g[..],
            (None, Some(k)) => &k[..],
            (None, None) => unreachable!("every input is either borrowed or kept"),
        })
        .collect();
    f(&xs)
}

impl Layer for EltwiseLayer {
    fn type_name(&self) -> &'static str {
        "Eltwise"
    }
    fn base(&self) -> &LayerBase {
        &self.base
    }
    fn base_mut(&mut self) -> &mut LayerBase {
        &mut self.base
    }
    fn bottom_arity(&self) -> Arity {
        Arity::Min(2)
    }
    fn top_arity(&self) -> Arity {
        Arity::Exact(1)
    }

    fn setup(&mut self, _rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        if self.op == EltwiseOp::Sum {
            if self.coeff.is_empty() {
                self.coeff = vec![1.0; bottom.len()];
            } else if self.coeff.len() != bottom.len() {
                bail!(
                    "layer '{}': Eltwise SUM takes one coefficient per bottom ({} bottoms, {} coeff)",
                    self.name(),
                    bottom.len(),
                    self.coeff.len()
                );
            }
        }
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let shape = bottom[0].shape();
        for (i, b) in bottom.iter().enumerate().skip(1) {
            if b.shape() != shape {
                bail!(
                    "layer '{}': Eltwise bottoms must have the same shape; bottom[0]: {}, bottom[{i}]: {}",
                    self.name(),
                    bottom[0].shape_string(),
                    b.shape_string()
                );
            }
        }
        if !std::rc::Rc::ptr_eq(&top[0], &bottom[0]) {
            top[0].reshape(&shape)?;
        }
        if self.op == EltwiseOp::Max {
            self.arg.resize(bottom[0].count(), 0);
        }
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let ybuf = top[0].data_buf();
        let bufs: Vec<Buf> = bottom.iter().map(|b| b.data_buf()).collect();
        self.kept = bufs
            .iter()
            .map(|b| {
                if same(b, &ybuf) {
                    Some(read(b).clone())
                } else {
                    None
                }
            })
            .collect();
        let (op, coeff, arg) = (self.op, &self.coeff, &mut self.arg);
        with_inputs(&bufs, &self.kept, |xs| {
            let mut y = write(&ybuf);
            match op {
                EltwiseOp::Sum => ew::sum_forward(xs, coeff, &mut y),
                EltwiseOp::Prod => ew::prod_forward(xs, &mut y),
                EltwiseOp::Max => ew::max_forward(xs, &mut y, arg),
            }
        });
        Ok(())
    }

    fn backward(
        &mut self,
        _: &mut Ctx,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        let dybuf = top[0].diff_buf();
        // A bottom diff that is the top diff (in place) would be overwritten while later
        // bottoms still read it.
        let dy_copy: Option<Vec<f32>> = if bottom.iter().any(|b| same(&b.diff_buf(), &dybuf)) {
            Some(read(&dybuf).clone())
        } else {
            None
        };
        let dy_guard = if dy_copy.is_none() {
            Some(read(&dybuf))
        } else {
            None
        };
        let dy: &[f32] = match (&dy_copy, &dy_guard) {
            (Some(c), _) => c,
            (None, Some(g)) => g,
            (None, None) => unreachable!("top diff is either copied or borrowed"),
        };
        let ybuf = top[0].data_buf();
        let bufs: Vec<Buf> = bottom.iter().map(|b| b.data_buf()).collect();
        for (i, b) in bottom.iter().enumerate() {
            if !pd[i] {
                continue;
            }
            let dxbuf = b.diff_buf();
            match self.op {
                EltwiseOp::Sum => ew::sum_backward(dy, self.coeff[i], &mut write(&dxbuf)),
                EltwiseOp::Max => ew::max_backward(dy, &self.arg, i, &mut write(&dxbuf)),
                EltwiseOp::Prod => {
                    let stable = self.stable_prod_grad;
                    // y is the top data; with bottom 0 in place it is bottom 0's buffer, which
                    // is fine to read alongside the kept copy.
                    let y = read(&ybuf);
                    with_inputs(&bufs, &self.kept, |xs| {
                        ew::prod_backward(dy, xs, &y, i, stable, &mut write(&dxbuf));
                    });
                }
            }
        }
        drop(dy_guard);
        Ok(())
    }
}
