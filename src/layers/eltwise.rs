//! Eltwise: SUM (with per-bottom `coeff`), PROD (`stable_prod_grad` picks the gradient form)
//! or MAX (Caffe's tie rule, gradient routed to the winning bottom) over bottoms of one shape.
//!
//! In place (the top is bottom 0) Caffe's SUM would zero its input before reading it and every
//! backward would read an already overwritten top diff; here the aliased inputs are copied
//! aside first, so in place gives the out-of-place results. The GPU path does the same with
//! device copies, and runs each op as the CPU does, one two-operand kernel per bottom in
//! bottom order (kernels/eltwise.cu), so every element sees the same rounded operations.

use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;
use std::cell::Ref;

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::eltwise as ew;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::kernels::Io as DeviceIo;
use crate::backend::cuda::ops;
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
    /// GPU runs: the winning bottom per element (MAX), the top's data before an in-place
    /// forward overwrote it, and the top diff copied aside when a bottom diff is the top diff.
    arg_gpu: Option<CudaSlice<i32>>,
    kept_gpu: Option<CudaSlice<f32>>,
    dy_gpu: Option<CudaSlice<f32>>,
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
            arg_gpu: None,
            kept_gpu: None,
            dy_gpu: None,
        })
    }
}

impl EltwiseLayer {
    /// The coefficients of a SUM (one per bottom, after reshape); None for PROD and MAX.
    pub(crate) fn sum_coefficients(&self) -> Option<&[f32]> {
        (self.op == EltwiseOp::Sum).then_some(&self.coeff[..])
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

/// Each bottom's data on the device, or the kept copy for a bottom that is the top (in place).
fn inputs_gpu<'a>(
    g: &Gpu,
    bufs: &'a [Buf],
    ybuf: &Buf,
    kept: Option<&'a CudaSlice<f32>>,
) -> Result<Vec<DeviceInput<'a>>> {
    bufs.iter()
        .map(|b| {
            if same(b, ybuf) {
                kept.map(DeviceInput::Kept).ok_or_else(|| {
                    anyhow::anyhow!("Eltwise: an in-place input was not kept by the forward pass")
                })
            } else {
                Ok(DeviceInput::Blob(b.device(g)?))
            }
        })
        .collect()
}

/// A bottom's data on the device: borrowed from its blob, or the layer's kept copy.
enum DeviceInput<'a> {
    Blob(Ref<'a, CudaSlice<f32>>),
    Kept(&'a CudaSlice<f32>),
}

impl std::ops::Deref for DeviceInput<'_> {
    type Target = CudaSlice<f32>;
    fn deref(&self) -> &CudaSlice<f32> {
        match self {
            DeviceInput::Blob(r) => r,
            DeviceInput::Kept(k) => k,
        }
    }
}

impl Layer for EltwiseLayer {
    fn type_name(&self) -> &'static str {
        "Eltwise"
    }
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
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

    fn forward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<()> {
        let (k, s) = (g.kernels(), g.stream());
        let ybuf = top[0].data_buf();
        let bufs: Vec<Buf> = bottom.iter().map(|b| b.data_buf()).collect();
        if bufs.iter().any(|b| same(b, &ybuf)) {
            ops::keep(g, &ybuf, &mut self.kept_gpu)?;
        }
        let n = ybuf.len();
        let arg = if self.op == EltwiseOp::Max {
            Some(ops::scratch(g, &mut self.arg_gpu, n)?)
        } else {
            None
        };
        let xs = inputs_gpu(g, &bufs, &ybuf, self.kept_gpu.as_ref())?;
        let mut y = ybuf.device_out(g)?;
        match self.op {
            EltwiseOp::Sum => {
                for (i, x) in xs.iter().enumerate() {
                    k.eltwise_sum_fwd(s, &**x, &mut *y, self.coeff[i], i > 0)?;
                }
            }
            EltwiseOp::Prod => {
                k.eltwise_prod_fwd(s, &*xs[0], &*xs[1], &mut *y)?;
                for x in &xs[2..] {
                    k.eltwise_prod_fwd_into(s, &**x, &mut *y)?;
                }
            }
            EltwiseOp::Max => {
                let arg = arg.expect("MAX has an argmax buffer");
                k.eltwise_max_first(s, &*xs[0], &*xs[1], &mut *y, arg)?;
                for (i, x) in xs.iter().enumerate().skip(2) {
                    k.eltwise_max_next(s, &**x, &mut *y, arg, i)?;
                }
            }
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
        let (k, s) = (g.kernels(), g.stream());
        let dybuf = top[0].diff_buf();
        // A bottom diff that is the top diff (in place) would be overwritten while later
        // bottoms still read it.
        let dy_aliased = bottom.iter().any(|b| same(&b.diff_buf(), &dybuf));
        if dy_aliased {
            ops::keep(g, &dybuf, &mut self.dy_gpu)?;
        }
        let dy_ref = if dy_aliased {
            None
        } else {
            Some(dybuf.device(g)?)
        };
        let dy: &CudaSlice<f32> = match (&dy_ref, &self.dy_gpu) {
            (Some(r), _) => r,
            (None, Some(c)) => c,
            (None, None) => unreachable!("the top diff is either copied or borrowed"),
        };
        let ybuf = top[0].data_buf();
        let bufs: Vec<Buf> = bottom.iter().map(|b| b.data_buf()).collect();
        let prod = self.op == EltwiseOp::Prod;
        let xs = if prod {
            inputs_gpu(g, &bufs, &ybuf, self.kept_gpu.as_ref())?
        } else {
            Vec::new()
        };
        let y = if prod && !self.stable_prod_grad {
            Some(ybuf.device(g)?)
        } else {
            None
        };
        for (i, b) in bottom.iter().enumerate() {
            if !pd[i] {
                continue;
            }
            let dxbuf = b.diff_buf();
            let mut dx = dxbuf.device_out(g)?;
            match self.op {
                EltwiseOp::Sum => {
                    k.eltwise_sum_bwd(s, DeviceIo::Separate(dy, &mut *dx), self.coeff[i])?
                }
                EltwiseOp::Max => {
                    let arg = self.arg_gpu.as_ref().ok_or_else(|| {
                        anyhow::anyhow!(
                            "layer '{}': Eltwise backward before a forward",
                            self.name()
                        )
                    })?;
                    k.eltwise_max_bwd(s, DeviceIo::Separate(dy, &mut *dx), arg, i)?
                }
                EltwiseOp::Prod if self.stable_prod_grad => {
                    // The product of the other inputs in input order, then times dy.
                    let others: Vec<&CudaSlice<f32>> = xs
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != i)
                        .map(|(_, x)| &**x)
                        .collect();
                    if others.len() == 1 {
                        let n = dx.len();
                        ops::copy_slice(g, others[0], &mut dx, n)?;
                    } else {
                        k.eltwise_prod_fwd(s, others[0], others[1], &mut *dx)?;
                        for x in &others[2..] {
                            k.eltwise_prod_fwd_into(s, *x, &mut *dx)?;
                        }
                    }
                    k.eltwise_prod_fwd_into(s, dy, &mut *dx)?;
                }
                EltwiseOp::Prod => {
                    let y = y.as_ref().expect("the quotient form reads the top");
                    k.eltwise_prod_bwd_quotient(s, DeviceIo::Separate(dy, &mut *dx), &**y, &*xs[i])?
                }
            }
        }
        Ok(())
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
