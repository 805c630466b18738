//! Embed: each bottom value is an integer index in [0, input_dim) selecting a row of the
//! (input_dim, num_output) weight table (plus a bias of num_output); the top has the bottom's
//! shape with num_output appended. Gradients go to the weights and bias only: the indices have
//! none (Caffe fails when asked for one, and so does this layer).

use anyhow::{bail, Result};

use super::{check_given_blobs, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::{blas, embed};
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
}
