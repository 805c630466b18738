//! Layers: one file per Caffe layer type. A layer owns its parameter blobs, its configuration
//! and its shape logic; the arithmetic is in `crate::backend`.
//!
//! The contract follows Caffe's `layer.hpp`: `setup` once (check the configuration, create
//! parameter blobs unless they were given, shape the tops), `reshape` before every forward
//! (batch shapes may change), `forward`, and `backward` with an explicit `propagate_down` per
//! bottom. Parameter diffs accumulate (`+=`) across backward calls, as Caffe's do (iter_size
//! relies on it); bottom diffs are overwritten.

use anyhow::{bail, Result};

use crate::backend::cuda::gpu::Gpu;
use crate::blob::BlobRef;
use crate::proto::caffe::{LayerParameter, Phase};
use crate::rng::CaffeRng;

pub mod abs_val;
pub mod accuracy;
pub mod argmax;
pub mod batch_norm;
pub mod bias;
pub mod bnll;
pub mod clip;
pub mod concat;
pub mod convolution;
pub mod crop;
pub mod data;
pub mod deconvolution;
pub mod dropout;
pub mod dummy_data;
pub mod eltwise;
pub mod elu;
pub mod embed;
pub mod euclidean_loss;
pub mod exp;
pub mod flatten;
pub mod hdf5_data;
pub mod image_data;
pub mod inner_product;
pub mod input;
pub mod log;
pub mod lrn;
pub mod mvn;
pub mod neuron;
pub mod pooling;
pub mod power;
pub mod prelu;
pub mod reduction;
pub mod relu;
pub mod reshape;
pub mod scale;
pub mod sigmoid;
pub mod sigmoid_cross_entropy_loss;
pub mod silence;
pub mod slice;
pub mod softmax;
pub mod softmax_loss;
pub mod split;
pub mod swish;
pub mod tanh;
pub mod threshold;
pub mod tile;

/// What a forward or backward pass may need besides blobs.
pub struct Ctx<'a> {
    pub rng: &'a mut CaffeRng,
    /// The GPU the net runs on; `None` on the CPU backend.
    pub gpu: Option<&'a Gpu>,
}

impl<'a> Ctx<'a> {
    pub fn cpu(rng: &'a mut CaffeRng) -> Self {
        Ctx { rng, gpu: None }
    }
}

/// How many bottoms or tops a layer accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    Any,
    Exact(usize),
    Min(usize),
    Range(usize, usize),
}

impl Arity {
    fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Any => true,
            Arity::Exact(k) => n == k,
            Arity::Min(k) => n >= k,
            Arity::Range(a, b) => n >= a && n <= b,
        }
    }

    fn describe(self) -> String {
        match self {
            Arity::Any => "any number of".into(),
            Arity::Exact(k) => format!("exactly {k}"),
            Arity::Min(k) => format!("at least {k}"),
            Arity::Range(a, b) => format!("{a} to {b}"),
        }
    }
}

/// State every layer has: its (own, possibly amended) LayerParameter, its parameter blobs and
/// which of them need a gradient.
pub struct LayerBase {
    pub param: LayerParameter,
    pub blobs: Vec<BlobRef>,
    pub param_propagate_down: Vec<bool>,
}

impl LayerBase {
    pub fn new(param: &LayerParameter) -> Self {
        LayerBase {
            param: param.clone(),
            blobs: Vec::new(),
            param_propagate_down: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        self.param.name()
    }

    pub fn phase(&self) -> Phase {
        self.param.phase()
    }

    /// Whether parameter blob `i` wants a gradient (lr_mult != 0 or force_backward).
    pub fn param_needs_grad(&self, i: usize) -> bool {
        self.param_propagate_down.get(i).copied().unwrap_or(true)
    }
}

pub trait Layer {
    /// Caffe's type string ("Convolution").
    fn type_name(&self) -> &'static str;
    fn base(&self) -> &LayerBase;
    fn base_mut(&mut self) -> &mut LayerBase;

    fn bottom_arity(&self) -> Arity {
        Arity::Any
    }
    fn top_arity(&self) -> Arity {
        Arity::Any
    }
    /// Loss layers create anonymous tops when fewer were declared.
    fn auto_top_blobs(&self) -> bool {
        false
    }
    /// Whether `force_backward` may send a gradient to this bottom (not to labels).
    fn allow_force_backward(&self, _bottom: usize) -> bool {
        true
    }

    /// One-time configuration: checks parameters, creates parameter blobs if none were given
    /// (filling them from `rng`), and shapes the tops.
    fn setup(&mut self, rng: &mut CaffeRng, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()>;
    /// Adapts the tops (and internal buffers) to the bottoms' current shapes.
    fn reshape(&mut self, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()>;
    fn forward(&mut self, ctx: &mut Ctx, bottom: &[BlobRef], top: &[BlobRef]) -> Result<()>;
    /// Gradients: bottom diffs where `propagate_down[i]`, parameter diffs (accumulated) where
    /// `base().param_needs_grad(j)`.
    fn backward(
        &mut self,
        ctx: &mut Ctx,
        top: &[BlobRef],
        propagate_down: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()>;

    /// The CUDA arithmetic, on device memory (`Mem::device`, `Mem::device_out`). Layers with
    /// no device arithmetic of their own run their CPU code: their blobs are copied to the
    /// host and back as they are read (counted in `gpu::traffic`). Only the data layers, which
    /// produce their tops on the host by nature, keep that default.
    fn forward_gpu(
        &mut self,
        ctx: &mut Ctx,
        _gpu: &Gpu,
        bottom: &[BlobRef],
        top: &[BlobRef],
    ) -> Result<()> {
        self.forward(ctx, bottom, top)
    }

    fn backward_gpu(
        &mut self,
        ctx: &mut Ctx,
        _gpu: &Gpu,
        top: &[BlobRef],
        propagate_down: &[bool],
        bottom: &[BlobRef],
    ) -> Result<()> {
        self.backward(ctx, top, propagate_down, bottom)
    }

    /// Whether `forward_gpu`/`backward_gpu` run on the device (false: the CPU code with
    /// copies). `crema train --gpu` names the layers for which this is false.
    fn runs_on_gpu(&self) -> bool {
        false
    }

    /// Indices of parameter blobs this layer's forward pass overwrites (BatchNorm's running
    /// statistics when it uses batch statistics). The freeze audit asks this; it must agree
    /// with what `forward` does.
    fn forward_writes_params(&self) -> Vec<usize> {
        Vec::new()
    }

    fn name(&self) -> &str {
        self.base().name()
    }
    fn blobs(&self) -> &[BlobRef] {
        &self.base().blobs
    }
    /// The layer's own copy of its LayerParameter, with what setup added (BatchNorm's
    /// ParamSpecs, a loss layer's default loss_weight): what snapshots save.
    fn layer_param(&self) -> &LayerParameter {
        &self.base().param
    }
    /// The layer as `Any`, for the layers `net::fuse` runs together (BatchNorm, Scale, ReLU);
    /// `None` for the others.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
    /// Data layers: total time forward spent waiting for input (prefetch queue empty, or
    /// reading files for layers without a prefetch thread), so benchmarks can report the
    /// share of time spent waiting for data. `None` for other layers.
    fn data_wait(&self) -> Option<std::time::Duration> {
        None
    }
}

/// Forward on the backend `ctx` names.
pub fn forward_on(
    layer: &mut dyn Layer,
    ctx: &mut Ctx,
    bottom: &[BlobRef],
    top: &[BlobRef],
) -> Result<()> {
    match ctx.gpu {
        Some(g) => layer.forward_gpu(ctx, g, bottom, top),
        None => layer.forward(ctx, bottom, top),
    }
}

/// Backward on the backend `ctx` names.
pub fn backward_on(
    layer: &mut dyn Layer,
    ctx: &mut Ctx,
    top: &[BlobRef],
    propagate_down: &[bool],
    bottom: &[BlobRef],
) -> Result<()> {
    match ctx.gpu {
        Some(g) => layer.backward_gpu(ctx, g, top, propagate_down, bottom),
        None => layer.backward(ctx, top, propagate_down, bottom),
    }
}

/// Checks the bottom and top counts a layer accepts (Caffe's `CheckBlobCounts`).
pub fn check_blob_counts(layer: &dyn Layer, bottoms: usize, tops: usize) -> Result<()> {
    let (b, t) = (layer.bottom_arity(), layer.top_arity());
    if !b.accepts(bottoms) {
        bail!(
            "layer '{}' ({}) takes {} bottom blob(s), got {bottoms}",
            layer.name(),
            layer.type_name(),
            b.describe()
        );
    }
    if !t.accepts(tops) {
        bail!(
            "layer '{}' ({}) produces {} top blob(s), got {tops}",
            layer.name(),
            layer.type_name(),
            t.describe()
        );
    }
    Ok(())
}

/// Every layer type crema runs, for error messages and the README table (MemoryData, which
/// Caffe offers only through its C++/Python API, is recognised but refused with advice).
pub const KNOWN_TYPES: &[&str] = &[
    "AbsVal",
    "Accuracy",
    "ArgMax",
    "BNLL",
    "BatchNorm",
    "Bias",
    "Clip",
    "Concat",
    "Convolution",
    "Crop",
    "Data",
    "Deconvolution",
    "Dropout",
    "DummyData",
    "ELU",
    "Eltwise",
    "Embed",
    "EuclideanLoss",
    "Exp",
    "Flatten",
    "HDF5Data",
    "ImageData",
    "InnerProduct",
    "Input",
    "LRN",
    "Log",
    "MVN",
    "PReLU",
    "Pooling",
    "Power",
    "ReLU",
    "Reduction",
    "Reshape",
    "Scale",
    "Sigmoid",
    "SigmoidCrossEntropyLoss",
    "Silence",
    "Slice",
    "Softmax",
    "SoftmaxWithLoss",
    "Split",
    "Swish",
    "TanH",
    "Threshold",
    "Tile",
];

/// Creates the layer for `param.type` (the layer registry).
pub fn create_layer(param: &LayerParameter) -> Result<Box<dyn Layer>> {
    Ok(match param.r#type() {
        "AbsVal" => Box::new(abs_val::AbsValLayer::new(param)),
        "Accuracy" => Box::new(accuracy::AccuracyLayer::new(param)),
        "ArgMax" => Box::new(argmax::ArgMaxLayer::new(param)?),
        "BNLL" => Box::new(bnll::BnllLayer::new(param)),
        "BatchNorm" => Box::new(batch_norm::BatchNormLayer::new(param)),
        "Bias" => Box::new(bias::BiasLayer::new(param)),
        "Clip" => Box::new(clip::ClipLayer::new(param)?),
        "Concat" => Box::new(concat::ConcatLayer::new(param)?),
        "Convolution" => Box::new(convolution::ConvolutionLayer::new(param)),
        "Crop" => Box::new(crop::CropLayer::new(param)),
        "Data" => Box::new(data::DataLayer::new(param)),
        "Deconvolution" => Box::new(deconvolution::DeconvolutionLayer::new(param)),
        "Dropout" => Box::new(dropout::DropoutLayer::new(param)?),
        "DummyData" => Box::new(dummy_data::DummyDataLayer::new(param)),
        "ELU" => Box::new(elu::EluLayer::new(param)),
        "Eltwise" => Box::new(eltwise::EltwiseLayer::new(param)?),
        "Embed" => Box::new(embed::EmbedLayer::new(param)?),
        "EuclideanLoss" => Box::new(euclidean_loss::EuclideanLossLayer::new(param)),
        "Exp" => Box::new(exp::ExpLayer::new(param)?),
        "Flatten" => Box::new(flatten::FlattenLayer::new(param)),
        "HDF5Data" => hdf5_data::create(param)?,
        "ImageData" => Box::new(image_data::ImageDataLayer::new(param)),
        "InnerProduct" => Box::new(inner_product::InnerProductLayer::new(param)),
        "Input" => Box::new(input::InputLayer::new(param)?),
        "LRN" => Box::new(lrn::LrnLayer::new(param)?),
        "Log" => Box::new(log::LogLayer::new(param)?),
        "MVN" => Box::new(mvn::MvnLayer::new(param)),
        "MemoryData" => bail!(
            "layer '{}': MemoryData is not supported: Caffe fills it from C++ or Python code \
             (MemoryDataLayer::Reset), so it cannot be fed from the command line. Use an Input layer and \
             set its blobs through the API (Net::set_input), or store the data in an LMDB (Data layer) \
             or HDF5 file (HDF5Data layer)",
            param.name()
        ),
        "PReLU" => Box::new(prelu::PReluLayer::new(param)),
        "Pooling" => Box::new(pooling::PoolingLayer::new(param)?),
        "Power" => Box::new(power::PowerLayer::new(param)),
        "ReLU" => Box::new(relu::ReluLayer::new(param)),
        "Reduction" => Box::new(reduction::ReductionLayer::new(param)),
        "Reshape" => Box::new(reshape::ReshapeLayer::new(param)?),
        "Scale" => Box::new(scale::ScaleLayer::new(param)),
        "Sigmoid" => Box::new(sigmoid::SigmoidLayer::new(param)),
        "SigmoidCrossEntropyLoss" => Box::new(sigmoid_cross_entropy_loss::SigmoidCrossEntropyLossLayer::new(param)?),
        "Silence" => Box::new(silence::SilenceLayer::new(param)),
        "Slice" => Box::new(slice::SliceLayer::new(param)?),
        "Softmax" => Box::new(softmax::SoftmaxLayer::new(param)),
        "SoftmaxWithLoss" => Box::new(softmax_loss::SoftmaxWithLossLayer::new(param)?),
        "Split" => Box::new(split::SplitLayer::new(param)),
        "Swish" => Box::new(swish::SwishLayer::new(param)),
        "TanH" => Box::new(tanh::TanhLayer::new(param)),
        "Threshold" => Box::new(threshold::ThresholdLayer::new(param)),
        "Tile" => Box::new(tile::TileLayer::new(param)?),
        other => bail!(
            "layer '{}': unknown layer type '{other}' (known types: {})",
            param.name(),
            KNOWN_TYPES.join(", ")
        ),
    })
}

/// Checks that a layer given stored blobs (from a net_param with blobs) got the count and
/// shapes it expects, with Caffe's wording.
pub fn check_given_blobs(layer: &str, blobs: &[BlobRef], expected: &[Vec<usize>]) -> Result<()> {
    if blobs.len() != expected.len() {
        bail!(
            "layer '{layer}': {} parameter blob(s) given, {} expected",
            blobs.len(),
            expected.len()
        );
    }
    for (i, (b, e)) in blobs.iter().zip(expected).enumerate() {
        if &b.shape() != e {
            bail!(
                "layer '{layer}': incorrect shape of param {i}: expected shape {}; instead, shape was {}",
                crate::proto::blob::shape_string(e),
                b.shape_string()
            );
        }
    }
    Ok(())
}
