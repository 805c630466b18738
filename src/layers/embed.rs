//! Embed: each bottom value is an integer index in [0, input_dim) selecting a row of the
//! (input_dim, num_output) weight table (plus a bias of num_output); the top has the bottom's
//! shape with num_output appended. Gradients go to the weights and bias only: the indices have
//! none (Caffe fails when asked for one, and so does this layer).

use anyhow::{bail, Result};
use cudarc::driver::{CudaSlice, DevicePtr};

use super::{check_given_blobs, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::{blas, embed};
use crate::backend::cuda::gpu::{self, Gpu};
use crate::backend::cuda::kernels::channel_partials_len;
use crate::backend::cuda::ops::DeviceBuf;
use crate::blob::{read, write, Blob, BlobRef};
use crate::filler::fill;
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct EmbedLayer {
    base: LayerBase,
    num_output: usize,
    input_dim: usize,
    bias_term: bool,
    ones: Vec<f32>,
    /// GPU path: the index check's answer, each table row's first use, and the bias
    /// gradient's partial sums.
    bad_index: DeviceBuf<u64>,
    first_use: DeviceBuf<i32>,
    bias_partials: DeviceBuf<f64>,
}

impl EmbedLayer {
    pub fn new(param: &LayerParameter) -> Result<Self> {
        let p = param.embed_param.clone().unwrap_or_default();
        if p.num_output() == 0 {
            bail!(
                "layer '{}': EmbedLayer num_output must be positive",
                param.name()
            );
        }
        if p.input_dim() == 0 {
            bail!(
                "layer '{}': EmbedLayer input_dim must be positive",
                param.name()
            );
        }
        Ok(EmbedLayer {
            base: LayerBase::new(param),
            num_output: p.num_output() as usize,
            input_dim: p.input_dim() as usize,
            bias_term: p.bias_term(),
            ones: Vec::new(),
            bad_index: DeviceBuf::default(),
            first_use: DeviceBuf::default(),
            bias_partials: DeviceBuf::default(),
        })
    }

    /// Indices must be integers inside the table (Caffe only checks this in debug builds and
    /// reads out of bounds otherwise).
    fn check_indices(&self, idx: &[f32]) -> Result<()> {
        for (i, &v) in idx.iter().enumerate() {
            if !(v >= 0.0 && (v as usize) < self.input_dim && v.fract() == 0.0) {
                bail!(
                    "layer '{}': input {i} is {v}, not an integer index in [0, {}) (input_dim)",
                    self.name(),
                    self.input_dim
                );
            }
        }
        Ok(())
    }

    /// The GPU form of [`EmbedLayer::check_indices`]: the device finds the first bad index (one
    /// value read back), and only then is that one input copied down for the message.
    fn check_indices_gpu(&mut self, g: &Gpu, idx: &CudaSlice<f32>, m: usize) -> Result<()> {
        let scratch = self.bad_index.get(g, 1)?;
        let Some(i) =
            g.kernels()
                .embed_find_bad_index(g.stream(), idx, m, self.input_dim, scratch)?
        else {
            return Ok(());
        };
        let mut v = [0f32];
        g.stream()
            .memcpy_dtoh(&idx.slice(i..i + 1), &mut v[..])
            .and_then(|_| g.stream().synchronize())
            .map_err(|e| anyhow::anyhow!("reading a bad embed index back: {e}"))?;
        gpu::record_download(4);
        bail!(
            "layer '{}': input {i} is {}, not an integer index in [0, {}) (input_dim)",
            self.name(),
            v[0],
            self.input_dim
        )
    }
}

impl Layer for EmbedLayer {
    fn type_name(&self) -> &'static str {
        "Embed"
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
    fn allow_force_backward(&self, _bottom: usize) -> bool {
        false
    }

    fn setup(&mut self, rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        if std::rc::Rc::ptr_eq(&bottom[0], &top[0]) {
            bail!("layer '{}': Embed does not work in place", self.name());
        }
        let (k, n) = (self.input_dim, self.num_output);
        let mut expected = vec![vec![k, n]];
        if self.bias_term {
            expected.push(vec![n]);
        }
        if !self.base.blobs.is_empty() {
            check_given_blobs(self.name(), &self.base.blobs, &expected)?;
        } else {
            let p = self.base.param.embed_param.clone().unwrap_or_default();
            let w = Blob::with_shape(&expected[0])?;
            fill(&w, &p.weight_filler.clone().unwrap_or_default(), rng)
                .map_err(|e| anyhow::anyhow!("layer '{}': weight_filler: {e}", self.name()))?;
            self.base.blobs.push(w);
            if self.bias_term {
                let b = Blob::with_shape(&expected[1])?;
                fill(&b, &p.bias_filler.clone().unwrap_or_default(), rng)
                    .map_err(|e| anyhow::anyhow!("layer '{}': bias_filler: {e}", self.name()))?;
                self.base.blobs.push(b);
            }
        }
        self.reshape(bottom, top)
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let mut shape = bottom[0].shape();
        shape.push(self.num_output);
        top[0].reshape(&shape)?;
        if self.bias_term {
            self.ones.resize(bottom[0].count(), 1.0);
        }
        Ok(())
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let xb = bottom[0].data_buf();
        let idx = read(&xb);
        self.check_indices(&idx)?;
        let wb = self.base.blobs[0].data_buf();
        let bias_buf = if self.bias_term {
            Some(self.base.blobs[1].data_buf())
        } else {
            None
        };
        let bias = bias_buf.as_ref().map(read);
        let yb = top[0].data_buf();
        embed::embed_forward(
            &idx,
            &read(&wb),
            bias.as_deref().map(|v| &v[..]),
            &mut write(&yb),
            self.num_output,
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
        if pd[0] {
            bail!(
                "layer '{}': Can't backpropagate to EmbedLayer input (the indices)",
                self.name()
            );
        }
        let xb = bottom[0].data_buf();
        let idx = read(&xb);
        let dyb = top[0].diff_buf();
        let dy = read(&dyb);
        let n = self.num_output;
        if self.base.param_needs_grad(0) {
            self.check_indices(&idx)?;
            let dwb = self.base.blobs[0].diff_buf();
            embed::embed_backward_weights(&idx, &dy, &mut write(&dwb), n);
        }
        if self.bias_term && self.base.param_needs_grad(1) {
            let m = idx.len();
            let dbb = self.base.blobs[1].diff_buf();
            blas::sgemv(true, m, n, 1.0, &dy, &self.ones[..m], 1.0, &mut write(&dbb));
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
        let m = bottom[0].count();
        if m == 0 {
            return Ok(());
        }
        let xb = bottom[0].data_buf();
        let idx = xb.device(g)?;
        self.check_indices_gpu(g, &idx, m)?;
        let wb = self.base.blobs[0].data_buf();
        let w = wb.device(g)?;
        let bb = self.bias_term.then(|| self.base.blobs[1].data_buf());
        let bias = bb.as_ref().map(|b| b.device(g)).transpose()?;
        let yb = top[0].data_buf();
        let mut y = yb.device_out(g)?;
        g.kernels().embed_fwd(
            g.stream(),
            &*idx,
            &*w,
            bias.as_deref().map(|b| b as &dyn DevicePtr<f32>),
            &mut *y,
            m,
            self.input_dim,
            self.num_output,
        )
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
            bail!(
                "layer '{}': Can't backpropagate to EmbedLayer input (the indices)",
                self.name()
            );
        }
        let (k, s) = (g.kernels(), g.stream());
        let (m, n) = (bottom[0].count(), self.num_output);
        if m == 0 {
            return Ok(());
        }
        let xb = bottom[0].data_buf();
        let idx = xb.device(g)?;
        let dyb = top[0].diff_buf();
        let dy = dyb.device(g)?;
        if self.base.param_needs_grad(0) {
            self.check_indices_gpu(g, &idx, m)?;
            let dwb = self.base.blobs[0].diff_buf();
            let mut dw = dwb.device_mut(g)?;
            let first = self.first_use.get(g, self.input_dim)?;
            s.memset_zeros(first)?;
            k.embed_first_use(s, &*idx, first, m, self.input_dim)?;
            k.embed_bwd_weights(s, &*idx, first, &*dy, &mut *dw, m, self.input_dim, n)?;
        }
        if self.bias_term && self.base.param_needs_grad(1) && m > 0 {
            let dbb = self.base.blobs[1].diff_buf();
            let mut db = dbb.device_mut(g)?;
            let partial = self.bias_partials.get(g, channel_partials_len(n, m, 1))?;
            let chunks = k.scale_grad_partials(s, &*dy, None, partial, m, n, 1)?;
            k.scale_grad_finish(s, partial, &mut *db, n, chunks, true)?;
        }
        Ok(())
    }
}
