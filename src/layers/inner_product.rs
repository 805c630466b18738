//! InnerProduct (Caffe's `InnerProductLayer`): the axes from `axis` on are flattened into
//! `K` inputs, mapped to `num_output` outputs; weights are `(num_output, K)`, or
//! `(K, num_output)` with `transpose: true`.

use std::rc::Rc;

use anyhow::{anyhow, bail, Result};

use super::{check_given_blobs, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::inner_product as cpu;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::kernels::{channel_partials_len, Io};
use crate::backend::cuda::ops::DeviceBuf;
use crate::blob::{read, write, Blob, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct InnerProductLayer {
    base: LayerBase,
    axis: usize,
    /// Rows (product of the axes before `axis`), inputs per row, outputs per row.
    m: usize,
    k: usize,
    n: usize,
    bias_term: bool,
    transpose: bool,
    /// GPU path: per-chunk partial sums of the bias gradient.
    bias_partials: DeviceBuf<f64>,
}

impl InnerProductLayer {
    pub fn new(param: &LayerParameter) -> Self {
        InnerProductLayer {
            base: LayerBase::new(param),
            axis: 1,
            m: 0,
            k: 0,
            n: 0,
            bias_term: true,
            transpose: false,
            bias_partials: DeviceBuf::default(),
        }
    }
}

impl Layer for InnerProductLayer {
    fn type_name(&self) -> &'static str {
        "InnerProduct"
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

    fn setup(&mut self, rng: &mut CaffeRng, bottom: &[BlobRef], _top: &[BlobRef]) -> Result<()> {
        let name = self.base.name().to_string();
        let p = self
            .base
            .param
            .inner_product_param
            .clone()
            .unwrap_or_default();
        self.n = p.num_output() as usize;
        if self.n == 0 {
            bail!("layer '{name}': num_output must be positive");
        }
        self.bias_term = p.bias_term();
        self.transpose = p.transpose();
        self.axis = bottom[0]
            .canonical_axis(p.axis())
            .map_err(|e| anyhow!("layer '{name}': {e}"))?;
        self.k = bottom[0].count_from(self.axis);
        let weight_shape = if self.transpose {
            vec![self.k, self.n]
        } else {
            vec![self.n, self.k]
        };
        let mut expected = vec![weight_shape.clone()];
        if self.bias_term {
            expected.push(vec![self.n]);
        }
        if !self.base.blobs.is_empty() {
            check_given_blobs(&name, &self.base.blobs, &expected)?;
        } else {
            let w = Blob::with_shape(&weight_shape)?;
            crate::filler::fill(&w, &p.weight_filler.clone().unwrap_or_default(), rng)
                .map_err(|e| anyhow!("layer '{name}': weight filler: {e}"))?;
            self.base.blobs.push(w);
            if self.bias_term {
                let b = Blob::with_shape(&[self.n])?;
                crate::filler::fill(&b, &p.bias_filler.clone().unwrap_or_default(), rng)
                    .map_err(|e| anyhow!("layer '{name}': bias filler: {e}"))?;
                self.base.blobs.push(b);
            }
        }
        Ok(())
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let name = self.base.name();
        let shape = bottom[0].shape();
        if self.axis >= shape.len().max(1) {
            bail!(
                "layer '{name}': axis {} out of range for bottom shape {}",
                self.axis,
                bottom[0].shape_string()
            );
        }
        let k = bottom[0].count_from(self.axis);
        if k != self.k {
            bail!(
                "layer '{name}': input size incompatible with inner product parameters: bottom shape {} gives {k} inputs from axis {}, the weights take {}",
                bottom[0].shape_string(),
                self.axis,
                self.k
            );
        }
        if Rc::ptr_eq(&bottom[0], &top[0]) {
            bail!("layer '{name}': cannot run in place");
        }
        self.m = bottom[0].count_range(0, self.axis);
        let mut top_shape = shape[..self.axis].to_vec();
        top_shape.push(self.n);
        top[0].reshape(&top_shape)
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let (xb, yb, wb) = (
            bottom[0].data_buf(),
            top[0].data_buf(),
            self.base.blobs[0].data_buf(),
        );
        let bb = self.bias_term.then(|| self.base.blobs[1].data_buf());
        let bias = bb.as_ref().map(read);
        cpu::ip_forward(
            self.m,
            self.n,
            self.k,
            self.transpose,
            &read(&xb),
            &read(&wb),
            bias.as_deref().map(|v| &v[..]),
            &mut write(&yb),
        );
        Ok(())
    }

    fn backward(
        &mut self,
        _ctx: &mut Ctx,
        top: &[BlobRef],
        propagate_down: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        let dyb = top[0].diff_buf();
        let dy = read(&dyb);
        if self.base.param_needs_grad(0) {
            let (xb, dwb) = (bottom[0].data_buf(), self.base.blobs[0].diff_buf());
            cpu::ip_weight_grad(
                self.m,
                self.n,
                self.k,
                self.transpose,
                &read(&xb),
                &dy,
                &mut write(&dwb),
            );
        }
        if self.bias_term && self.base.param_needs_grad(1) {
            let dbb = self.base.blobs[1].diff_buf();
            cpu::ip_bias_grad(self.m, self.n, &dy, &mut write(&dbb));
        }
        if propagate_down[0] {
            let (wb, dxb) = (self.base.blobs[0].data_buf(), bottom[0].diff_buf());
            cpu::ip_backward_input(
                self.m,
                self.n,
                self.k,
                self.transpose,
                &dy,
                &read(&wb),
                &mut write(&dxb),
            );
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
        let (k, s) = (g.kernels(), g.stream());
        let (m, n, kk) = (self.m, self.n, self.k);
        if m == 0 {
            return Ok(());
        }
        let yb = top[0].data_buf();
        let mut y = yb.device_out(g)?;
        if kk == 0 {
            // No inputs per row: the product is zero (the bias alone remains).
            s.memset_zeros(&mut *y)?;
        } else {
            let (xb, wb) = (bottom[0].data_buf(), self.base.blobs[0].data_buf());
            let (x, w) = (xb.device(g)?, wb.device(g)?);
            // y = x * op(w), as cpu::ip_forward.
            k.sgemm(
                s,
                false,
                !self.transpose,
                m,
                n,
                kk,
                1.0,
                &*x,
                &*w,
                0.0,
                &mut *y,
            )?;
        }
        if self.bias_term {
            let bb = self.base.blobs[1].data_buf();
            let bias = bb.device(g)?;
            k.scale_bias_fwd(s, Io::InPlace(&mut *y), &*bias, m, n, 1)?;
        }
        Ok(())
    }

    fn backward_gpu(
        &mut self,
        _ctx: &mut Ctx,
        g: &Gpu,
        top: &[BlobRef],
        propagate_down: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        let (k, s) = (g.kernels(), g.stream());
        let (m, n, kk) = (self.m, self.n, self.k);
        if m == 0 {
            return Ok(());
        }
        let dyb = top[0].diff_buf();
        let dy = dyb.device(g)?;
        if self.base.param_needs_grad(0) && kk > 0 {
            let (xb, dwb) = (bottom[0].data_buf(), self.base.blobs[0].diff_buf());
            let x = xb.device(g)?;
            let mut dw = dwb.device_mut(g)?;
            // Accumulated: dw += dy^T x (n x k), or x^T dy (k x n) when transposed.
            if self.transpose {
                k.sgemm(s, true, false, kk, n, m, 1.0, &*x, &*dy, 1.0, &mut *dw)?;
            } else {
                k.sgemm(s, true, false, n, kk, m, 1.0, &*dy, &*x, 1.0, &mut *dw)?;
            }
        }
        if self.bias_term && self.base.param_needs_grad(1) {
            let dbb = self.base.blobs[1].diff_buf();
            let mut db = dbb.device_mut(g)?;
            let partial = self.bias_partials.get(g, channel_partials_len(n, m, 1))?;
            let chunks = k.scale_grad_partials(s, &*dy, None, partial, m, n, 1)?;
            k.scale_grad_finish(s, partial, &mut *db, n, chunks, true)?;
        }
        if propagate_down[0] && kk > 0 {
            let (wb, dxb) = (self.base.blobs[0].data_buf(), bottom[0].diff_buf());
            let w = wb.device(g)?;
            let mut dx = dxb.device_out(g)?;
            k.sgemm(
                s,
                false,
                self.transpose,
                m,
                kk,
                n,
                1.0,
                &*dy,
                &*w,
                0.0,
                &mut *dx,
            )?;
        }
        Ok(())
    }
}
