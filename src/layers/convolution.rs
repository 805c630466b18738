//! Convolution (Caffe's `ConvolutionLayer` / `BaseConvolutionLayer`): N-D spatial
//! convolution with pad, stride, dilation and groups; several bottom/top pairs share the
//! weights. The configuration and shape logic here is shared with Deconvolution, which is
//! the same gemm formulation with the roles of bottom and top swapped.

use std::rc::Rc;

use anyhow::{bail, Result};

use super::{check_given_blobs, Arity, Ctx, Layer, LayerBase};
use crate::backend::cpu::conv::{self as cpu, ConvGeom};
use crate::backend::cuda::conv::ConvGpu;
use crate::backend::cuda::gpu::Gpu;
use crate::blob::{read, write, Blob, BlobRef};
use crate::proto::blob::shape_string;
use crate::proto::caffe::{ConvolutionParameter, LayerParameter};
use crate::rng::CaffeRng;

/// What Convolution and Deconvolution share: the parsed `convolution_param`, the parameter
/// blobs' shapes, and the current geometry.
pub(crate) struct ConvCore {
    /// Deconvolution: the bottom is the column side and the top the image side.
    reverse: bool,
    channel_axis: usize,
    num_axes: usize,
    /// The bottom's channels.
    channels: usize,
    num_output: usize,
    group: usize,
    bias_term: bool,
    kernel: Vec<usize>,
    pad: Vec<usize>,
    stride: Vec<usize>,
    dilation: Vec<usize>,
    force_nd: bool,
    /// Images per bottom (product of the axes before the channel axis).
    pub num: usize,
    pub geom: ConvGeom,
    /// Weight-gradient scratch (per-chunk partial sums), kept between passes.
    pub partials: Vec<f32>,
}

/// One value per spatial axis from a repeated field (0 values: `default`, 1: all axes, or
/// one per axis), with Caffe's wording when the count is wrong.
fn per_axis(
    layer: &str,
    what: &str,
    values: &[u32],
    n: usize,
    default: Option<usize>,
) -> Result<Vec<usize>> {
    match (values.len(), default) {
        (0, Some(d)) => Ok(vec![d; n]),
        (1, _) => Ok(vec![values[0] as usize; n]),
        (k, _) if k == n && k > 0 => Ok(values.iter().map(|&v| v as usize).collect()),
        (k, _) => bail!(
            "layer '{layer}': {what} must be specified once, or once per spatial dimension ({what} specified {k} times; {n} spatial dims)"
        ),
    }
}

/// The 2-D `*_h`/`*_w` form of a field, if used (exclusive with the repeated form).
fn hw_form(
    layer: &str,
    what: &str,
    h: Option<u32>,
    w: Option<u32>,
    repeated: usize,
    n: usize,
) -> Result<Option<Vec<usize>>> {
    if h.is_none() && w.is_none() {
        return Ok(None);
    }
    if n != 2 {
        bail!(
            "layer '{layer}': {what}_h & {what}_w can only be used for 2D convolution (the input has {n} spatial dims)"
        );
    }
    if repeated != 0 {
        bail!("layer '{layer}': either {what} or {what}_h/w should be specified; not both");
    }
    Ok(Some(vec![h.unwrap_or(0) as usize, w.unwrap_or(0) as usize]))
}

impl ConvCore {
    /// Caffe's `BaseConvolutionLayer::LayerSetUp`: parses the configuration against the first
    /// bottom's shape and creates (or checks) the parameter blobs.
    pub fn setup(
        base: &mut LayerBase,
        reverse: bool,
        rng: &mut CaffeRng,
        bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<ConvCore> {
        let name = base.name().to_string();
        if bottom.len() != top.len() {
            bail!(
                "layer '{name}': needs one top per bottom ({} bottoms, {} tops)",
                bottom.len(),
                top.len()
            );
        }
        let p: ConvolutionParameter = base.param.convolution_param.clone().unwrap_or_default();
        let b0 = &bottom[0];
        let channel_axis = b0
            .canonical_axis(p.axis())
            .map_err(|e| anyhow::anyhow!("layer '{name}': {e}"))?;
        let num_axes = b0.num_axes();
        let n = num_axes - channel_axis - 1;

        let kernel = match hw_form(
            &name,
            "kernel",
            p.kernel_h,
            p.kernel_w,
            p.kernel_size.len(),
            n,
        )? {
            Some(k) => k,
            None => {
                if p.kernel_size.is_empty() && n > 0 {
                    bail!("layer '{name}': kernel_size (or kernel_h and kernel_w) is required");
                }
                // No spatial axes (an inner product over channels): nothing to size.
                per_axis(&name, "kernel_size", &p.kernel_size, n, Some(1))?
            }
        };
        if kernel.contains(&0) {
            bail!("layer '{name}': filter dimensions must be nonzero (kernel {kernel:?})");
        }
        let stride = match hw_form(&name, "stride", p.stride_h, p.stride_w, p.stride.len(), n)? {
            Some(s) => s,
            None => per_axis(&name, "stride", &p.stride, n, Some(1))?,
        };
        if stride.contains(&0) {
            bail!("layer '{name}': stride dimensions must be nonzero (stride {stride:?})");
        }
        let pad = match hw_form(&name, "pad", p.pad_h, p.pad_w, p.pad.len(), n)? {
            Some(s) => s,
            None => per_axis(&name, "pad", &p.pad, n, Some(0))?,
        };
        let dilation = per_axis(&name, "dilation", &p.dilation, n, Some(1))?;

        let channels = b0.shape()[channel_axis];
        let num_output = p.num_output() as usize;
        if num_output == 0 {
            bail!("layer '{name}': num_output must be positive");
        }
        let group = p.group() as usize;
        if group == 0 {
            bail!("layer '{name}': group must be positive");
        }
        if !channels.is_multiple_of(group) {
            bail!("layer '{name}': the input's {channels} channels are not a multiple of group {group}");
        }
        if !num_output.is_multiple_of(group) {
            bail!("layer '{name}': number of output ({num_output}) should be multiples of group ({group})");
        }
        // Weights are (conv output channels, conv input channels / group, kernel...), where a
        // deconvolution's "conv" runs from its top to its bottom.
        let (out_c, in_c) = if reverse {
            (channels, num_output)
        } else {
            (num_output, channels)
        };
        let mut weight_shape = vec![out_c, in_c / group];
        weight_shape.extend_from_slice(&kernel);
        let bias_term = p.bias_term();
        let mut expected = vec![weight_shape.clone()];
        if bias_term {
            expected.push(vec![num_output]);
        }
        if !base.blobs.is_empty() {
            check_given_blobs(&name, &base.blobs, &expected)?;
        } else {
            let w = Blob::with_shape(&weight_shape)?;
            crate::filler::fill(&w, &p.weight_filler.clone().unwrap_or_default(), rng)
                .map_err(|e| anyhow::anyhow!("layer '{name}': weight filler: {e}"))?;
            base.blobs.push(w);
            if bias_term {
                let b = Blob::with_shape(&[num_output])?;
                crate::filler::fill(&b, &p.bias_filler.clone().unwrap_or_default(), rng)
                    .map_err(|e| anyhow::anyhow!("layer '{name}': bias filler: {e}"))?;
                base.blobs.push(b);
            }
        }
        Ok(ConvCore {
            reverse,
            channel_axis,
            num_axes,
            channels,
            num_output,
            group,
            bias_term,
            kernel,
            pad,
            stride,
            dilation,
            force_nd: p.force_nd_im2col(),
            num: 0,
            geom: ConvGeom::default(),
            partials: Vec::new(),
        })
    }

    pub fn bias_term(&self) -> bool {
        self.bias_term
    }

    /// Caffe's `BaseConvolutionLayer::Reshape`: checks the bottoms, computes the output
    /// shape and shapes the tops.
    pub fn reshape(&mut self, name: &str, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let shape = bottom[0].shape();
        if shape.len() != self.num_axes {
            bail!(
                "layer '{name}': bottom num_axes may not change (was {}, now {} with shape {})",
                self.num_axes,
                shape.len(),
                shape_string(&shape)
            );
        }
        if shape[self.channel_axis] != self.channels {
            bail!(
                "layer '{name}': input size incompatible with convolution kernel: bottom shape {} has {} channels, the layer was set up for {}",
                shape_string(&shape),
                shape[self.channel_axis],
                self.channels
            );
        }
        for (i, b) in bottom.iter().enumerate().skip(1) {
            if b.shape() != shape {
                bail!(
                    "layer '{name}': all inputs must have the same shape: bottom 0 is {}, bottom {i} is {}",
                    shape_string(&shape),
                    b.shape_string()
                );
            }
        }
        for (i, (b, t)) in bottom.iter().zip(top).enumerate() {
            if Rc::ptr_eq(b, t) {
                bail!("layer '{name}': cannot run in place (bottom {i} is also top {i})");
            }
        }
        let spatial_in = &shape[self.channel_axis + 1..];
        let mut spatial_out = Vec::with_capacity(spatial_in.len());
        for (i, &input) in spatial_in.iter().enumerate() {
            let (k, p, s, d) = (
                self.kernel[i],
                self.pad[i],
                self.stride[i],
                self.dilation[i],
            );
            let out = if self.reverse {
                cpu::deconv_out_size(input, k, p, s, d)
            } else {
                cpu::conv_out_size(input, k, p, s, d)
            };
            match out {
                Some(o) => spatial_out.push(o),
                None if self.reverse => bail!(
                    "layer '{name}': output size of spatial axis {i} is below 1: stride {s} * (input {input} - 1) + dilated kernel {} - 2 * pad {p} (bottom shape {})",
                    d * (k - 1) + 1,
                    shape_string(&shape)
                ),
                None => bail!(
                    "layer '{name}': kernel larger than the padded input on spatial axis {i}: dilated kernel {} > input {input} + 2 * pad {p} (bottom shape {})",
                    d * (k - 1) + 1,
                    shape_string(&shape)
                ),
            }
        }
        let mut top_shape = shape[..self.channel_axis].to_vec();
        top_shape.push(self.num_output);
        top_shape.extend_from_slice(&spatial_out);
        for t in top {
            t.reshape(&top_shape)?;
        }
        self.num = shape[..self.channel_axis].iter().product();
        let (im_channels, col_channels, im_shape, col_shape) = if self.reverse {
            (
                self.num_output,
                self.channels,
                spatial_out,
                spatial_in.to_vec(),
            )
        } else {
            (
                self.channels,
                self.num_output,
                spatial_in.to_vec(),
                spatial_out,
            )
        };
        self.geom = ConvGeom {
            im_channels,
            col_channels,
            group: self.group,
            im_shape,
            col_shape,
            kernel: self.kernel.clone(),
            pad: self.pad.clone(),
            stride: self.stride.clone(),
            dilation: self.dilation.clone(),
            force_nd: self.force_nd,
        };
        Ok(())
    }
}

pub struct ConvolutionLayer {
    base: LayerBase,
    core: Option<ConvCore>,
    /// Device scratch (column buffer, partial sums) of the GPU path.
    gpu: ConvGpu,
}

impl ConvolutionLayer {
    pub fn new(param: &LayerParameter) -> Self {
        ConvolutionLayer {
            base: LayerBase::new(param),
            core: None,
            gpu: ConvGpu::default(),
        }
    }
}

/// The core once set up (layers are always set up before reshape/forward/backward).
pub(crate) fn core_of<'a>(core: &'a mut Option<ConvCore>, name: &str) -> Result<&'a mut ConvCore> {
    core.as_mut()
        .ok_or_else(|| anyhow::anyhow!("layer '{name}' used before setup"))
}

impl Layer for ConvolutionLayer {
    fn type_name(&self) -> &'static str {
        "Convolution"
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
        self.core = Some(ConvCore::setup(&mut self.base, false, rng, bottom, top)?);
        Ok(())
    }

    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let name = self.base.name().to_string();
        core_of(&mut self.core, &name)?.reshape(&name, bottom, top)
    }

    fn forward(&mut self, _ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()> {
        let name = self.base.name().to_string();
        let core = core_of(&mut self.core, &name)?;
        let wbuf = self.base.blobs[0].data_buf();
        let w = read(&wbuf);
        let bbuf = core.bias_term().then(|| self.base.blobs[1].data_buf());
        let bias = bbuf.as_ref().map(read);
        for (b, t) in bottom.iter().zip(top) {
            let (xb, yb) = (b.data_buf(), t.data_buf());
            cpu::conv_forward(
                &core.geom,
                core.num,
                &read(&xb),
                &w,
                bias.as_deref().map(|v| &v[..]),
                &mut write(&yb),
            );
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
        let want_b = core.bias_term() && self.base.param_needs_grad(1);
        let want_w = self.base.param_needs_grad(0);
        let dbb = want_b.then(|| self.base.blobs[1].diff_buf());
        let wbuf = self.base.blobs[0].data_buf();
        let dwbuf = self.base.blobs[0].diff_buf();
        for (i, (t, b)) in top.iter().zip(bottom).enumerate() {
            let dyb = t.diff_buf();
            let dy = read(&dyb);
            let mut db = dbb.as_ref().map(write);
            if want_w {
                // The bias gradient comes along with the weights' (from the same pass over dy
                // where the kernels allow).
                let xb = b.data_buf();
                cpu::conv_weight_grad(
                    g,
                    core.num,
                    &read(&xb),
                    &dy,
                    &mut write(&dwbuf),
                    db.as_mut().map(|d| &mut d[..]),
                    &mut core.partials,
                );
            } else if let Some(db) = db.as_deref_mut() {
                cpu::channel_bias_grad(core.num, g.col_channels, g.col_spatial(), &dy, db);
            }
            if propagate_down.get(i).copied().unwrap_or(false) {
                let dxb = b.diff_buf();
                cpu::conv_backward_input(g, core.num, &dy, &read(&wbuf), &mut write(&dxb));
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
        let wb = self.base.blobs[0].data_buf();
        let w = wb.device(g)?;
        let bb = core.bias_term().then(|| self.base.blobs[1].data_buf());
        let bias = bb.as_ref().map(|b| b.device(g)).transpose()?;
        for (b, t) in bottom.iter().zip(top) {
            let (xb, yb) = (b.data_buf(), t.data_buf());
            let x = xb.device(g)?;
            let mut y = yb.device_out(g)?;
            self.gpu
                .forward(g, &core.geom, core.num, &x, &w, bias.as_deref(), &mut y)?;
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
                    geom.col_channels,
                    geom.col_spatial(),
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
                let xb = b.data_buf();
                let x = xb.device(g)?;
                let mut dw = dwbuf.device_mut(g)?;
                self.gpu.weight_grad(g, geom, core.num, &x, &dy, &mut dw)?;
            }
            if propagate_down.get(i).copied().unwrap_or(false) {
                let dxb = b.diff_buf();
                let w = wbuf.device(g)?;
                let mut dx = dxb.device_out(g)?;
                self.gpu
                    .backward_input(g, geom, core.num, &dy, &w, &mut dx)?;
            }
        }
        Ok(())
    }
}
