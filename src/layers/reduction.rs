//! Reduction: SUM, ASUM (sum of |x|), SUMSQ or MEAN over all axes from `axis` on (default 0:
//! everything, giving a scalar), times `coeff`. The top keeps the axes before `axis`.

use anyhow::{anyhow, Result};
use cudarc::driver::CudaSlice;

use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::reduction::{self as red, ReduceOp};
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::kernels::reduction_partials_len;
use crate::backend::cuda::ops;
use crate::blob::{read, write, BlobRef};
use crate::proto::caffe::{reduction_parameter::ReductionOp, LayerParameter};
use crate::rng::CaffeRng;

pub struct ReductionLayer {
    base: LayerBase,
    op: ReductionOp,
    axis: usize,
    num: usize,
    dim: usize,
    /// `coeff`, divided by `dim` for MEAN (as Caffe folds it).
    coeff: f32,
    /// Per-chunk row sums (GPU runs).
    partial_gpu: Option<CudaSlice<f64>>,
}

impl ReductionLayer {
    pub fn new(param: &LayerParameter) -> Self {
        let op = param
            .reduction_param
            .as_ref()
            .map(|p| p.operation())
            .unwrap_or(ReductionOp::Sum);
        ReductionLayer {
            base: LayerBase::new(param),
            op,
            axis: 0,
            num: 0,
            dim: 0,
            coeff: 1.0,
            partial_gpu: None,
        }
    }

    /// The op as kernels/reduction.cu numbers it.
    fn gpu_op(&self) -> i32 {
        match self.backend_op() {
            ReduceOp::Sum => 0,
            ReduceOp::Asum => 1,
            ReduceOp::SumSq => 2,
        }
    }

    fn backend_op(&self) -> ReduceOp {
        match self.op {
            ReductionOp::Sum | ReductionOp::Mean => ReduceOp::Sum,
            ReductionOp::Asum => ReduceOp::Asum,
            ReductionOp::Sumsq => ReduceOp::SumSq,
        }
    }
}

impl Layer for ReductionLayer {
    fn type_name(&self) -> &'static str {
        "Reduction"
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
        if std::rc::Rc::ptr_eq(&bottom[0], &top[0]) {
            anyhow::bail!("layer '{}': Reduction does not work in place", self.name());
        }
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let p = self.base.param.reduction_param.unwrap_or_default();
        let b = &bottom[0];
        self.axis = b
            .canonical_axis(p.axis())
            .map_err(|e| anyhow!("layer '{}': reduction axis: {e}", self.name()))?;
        top[0].reshape(&b.shape()[..self.axis])?;
        self.num = b.count_range(0, self.axis);
        self.dim = b.count_from(self.axis);
        self.coeff = p.coeff();
        if self.op == ReductionOp::Mean {
            self.coeff /= self.dim as f32;
        }
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        red::reduction_forward(
            &read(&xb),
            &mut write(&yb),
            self.num,
            self.dim,
            self.backend_op(),
            self.coeff,
        );
        Ok(())
    }

    fn backward(
        &mut self,
        _: &mut Ctx,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if !pd[0] {
            return Ok(());
        }
        let (xb, dyb, dxb) = (
            bottom[0].data_buf(),
            top[0].diff_buf(),
            bottom[0].diff_buf(),
        );
        red::reduction_backward(
            &read(&xb),
            &read(&dyb),
            &mut write(&dxb),
            self.num,
            self.dim,
            self.backend_op(),
            self.coeff,
        );
        Ok(())
    }

    fn forward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<()> {
        let (num, dim, op, coeff) = (self.num, self.dim, self.gpu_op(), self.coeff);
        let (xb, yb) = (bottom[0].data_buf(), top[0].data_buf());
        let x = xb.device(g)?;
        let partial = ops::scratch(g, &mut self.partial_gpu, reduction_partials_len(num, dim))?;
        let mut y = yb.device_out(g)?;
        g.kernels()
            .reduction_forward(g.stream(), &*x, partial, &mut *y, num, dim, op, coeff)
    }

    fn backward_gpu(
        &mut self,
        _: &mut Ctx,
        g: &Gpu,
        top: &[BlobRef],
        pd: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        if !pd[0] {
            return Ok(());
        }
        let (xb, dyb, dxb) = (
            bottom[0].data_buf(),
            top[0].diff_buf(),
            bottom[0].diff_buf(),
        );
        let (x, dy) = (xb.device(g)?, dyb.device(g)?);
        let mut dx = dxb.device_out(g)?;
        g.kernels().reduction_bwd(
            g.stream(),
            &*x,
            &*dy,
            &mut *dx,
            self.num,
            self.dim,
            self.gpu_op(),
            self.coeff,
        )
    }

    fn runs_on_gpu(&self) -> bool {
        true
    }
}
