//! Deconvolution (Caffe's `DeconvolutionLayer`): the transposed convolution. Its forward is
//! a convolution's input gradient and its input gradient a convolution's forward; weights are
//! `(C_in, num_output / group, kernel...)` and each output size is
//! `stride (in - 1) + dilation (k - 1) + 1 - 2 pad`.

use anyhow::Result;

use super::convolution::{core_of, ConvCore};
use super::{Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::conv as cpu;
use crate::backend::cuda::conv::ConvGpu;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::kernels::Io;
use crate::blob::{read, write, BlobRef};
use crate::proto::caffe::LayerParameter;
use crate::rng::CaffeRng;

pub struct DeconvolutionLayer {
    base: LayerBase,
    core: Option<ConvCore>,
    /// Device scratch (column buffer, partial sums) of the GPU path.
    gpu: ConvGpu,
}

impl DeconvolutionLayer {
    pub fn new(param: &LayerParameter) -> Self {
        DeconvolutionLayer {
            base: LayerBase::new(param),
            core: None,
            gpu: ConvGpu::default(),
        }
    }
}

impl Layer for DeconvolutionLayer {
    fn type_name(&self) -> &'static str {
        "Deconvolution"
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
        Arity::Min(1)
    }

    fn setup(&mut self, rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        self.core = Some(ConvCore::setup(&mut self.base, true, rng, bottom, top)?);
        Ok(())
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let name = self.base.name().to_string();
        core_of(&mut self.core, &name)?.reshape(&name, bottom, top)
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let name = self.base.name().to_string();
        let core = core_of(&mut self.core, &name)?;
        let g = &core.geom;
        let wbuf = self.base.blobs[0].data_buf();
        let w = read(&wbuf);
        for (b, t) in bottom.iter().zip(top) {
            let (xb, yb) = (b.data_buf(), t.data_buf());
            let mut y = write(&yb);
            cpu::conv_backward_input(g, core.num, &read(&xb), &w, &mut y);
            if core.bias_term() {
                let bb = self.base.blobs[1].data_buf();
                cpu::add_channel_bias(core.num, g.im_channels, g.im_spatial(), &read(&bb), &mut y);
            }
        }
        Ok(())
    }

    fn backward(
        &mut self,
        _ctx: &mut Ctx,
        top: &[BlobRef],
        propagate_down: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        let name = self.base.name().to_string();
        let core = core_of(&mut self.core, &name)?;
        let g = &core.geom;
        if core.bias_term() && self.base.param_needs_grad(1) {
            let dbb = self.base.blobs[1].diff_buf();
            let mut db = write(&dbb);
            for t in top {
                let dyb = t.diff_buf();
                cpu::channel_bias_grad(
                    core.num,
                    g.im_channels,
                    g.im_spatial(),
                    &read(&dyb),
                    &mut db,
                );
            }
        }
        let want_w = self.base.param_needs_grad(0);
        let wbuf = self.base.blobs[0].data_buf();
        let dwbuf = self.base.blobs[0].diff_buf();
        for (i, (t, b)) in top.iter().zip(bottom).enumerate() {
            let dyb = t.diff_buf();
            let dy = read(&dyb);
            if want_w {
                // The top gradient is the image side, the bottom data the column side.
                let xb = b.data_buf();
                cpu::conv_weight_grad(
                    g,
                    core.num,
                    &dy,
                    &read(&xb),
                    &mut write(&dwbuf),
                    None,
                    &mut core.partials,
                );
            }
            if propagate_down.get(i).copied().unwrap_or(false) {
                let dxb = b.diff_buf();
                cpu::conv_forward(g, core.num, &dy, &read(&wbuf), None, &mut write(&dxb));
            }
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
        let name = self.base.name().to_string();
        let core = core_of(&mut self.core, &name)?;
        let geom = &core.geom;
        let wb = self.base.blobs[0].data_buf();
        let w = wb.device(g)?;
        let bb = core.bias_term().then(|| self.base.blobs[1].data_buf());
        let bias = bb.as_ref().map(|b| b.device(g)).transpose()?;
        for (b, t) in bottom.iter().zip(top) {
            let (xb, yb) = (b.data_buf(), t.data_buf());
            let x = xb.device(g)?;
            let mut y = yb.device_out(g)?;
            self.gpu.backward_input(g, geom, core.num, &x, &w, &mut y)?;
            if let Some(bias) = bias.as_deref() {
                g.kernels().scale_bias_fwd(
                    g.stream(),
                    Io::InPlace(&mut *y),
                    bias,
                    core.num,
                    geom.im_channels,
                    geom.im_spatial(),
                )?;
            }
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
        let name = self.base.name().to_string();
        let core = core_of(&mut self.core, &name)?;
        let geom = &core.geom;
        if core.bias_term() && self.base.param_needs_grad(1) {
            let dbb = self.base.blobs[1].diff_buf();
            let mut db = dbb.device_mut(g)?;
            for t in top {
                let dyb = t.diff_buf();
                let dy = dyb.device(g)?;
                self.gpu.bias_grad(
                    g,
                    core.num,
                    geom.im_channels,
                    geom.im_spatial(),
                    &dy,
                    &mut db,
                )?;
            }
        }
        let want_w = self.base.param_needs_grad(0);
        let wbuf = self.base.blobs[0].data_buf();
        let dwbuf = self.base.blobs[0].diff_buf();
        for (i, (t, b)) in top.iter().zip(bottom).enumerate() {
            let dyb = t.diff_buf();
            let dy = dyb.device(g)?;
            if want_w {
                // The top gradient is the image side, the bottom data the column side.
                let xb = b.data_buf();
                let x = xb.device(g)?;
                let mut dw = dwbuf.device_mut(g)?;
                self.gpu.weight_grad(g, geom, core.num, &dy, &x, &mut dw)?;
            }
            if propagate_down.get(i).copied().unwrap_or(false) {
                let dxb = b.diff_buf();
                let w = wbuf.device(g)?;
                let mut dx = dxb.device_out(g)?;
                self.gpu
                    .forward(g, geom, core.num, &dy, &w, None, &mut dx)?;
            }
        }
        Ok(())
    }
}
