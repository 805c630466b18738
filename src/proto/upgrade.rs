//! Caffe's upgrade pipeline for old nets and solvers (`UpgradeNetAsNeeded`), applied to text and
//! binary alike and in Caffe's order: V0 -> V1 (padding layers folded into their consumers),
//! deprecated data-transform fields -> `transform_param`, V1 -> current, legacy net inputs ->
//! an `Input` layer, BatchNorm ParamSpecs -> lr_mult 0. Each applied upgrade leaves a note the
//! caller logs, worded as Caffe words it so that users recognise it.

use anyhow::{bail, Result};

use super::caffe::{
    v0_layer_parameter, v1_layer_parameter::LayerType, BlobShape, InputParameter, LayerParameter,
    NetParameter, ParamSpec, PoolingParameter, SolverParameter, TransformationParameter,
    V0LayerParameter, V1LayerParameter,
};

/// A line to log about an applied upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub text: String,
}

fn info(notes: &mut Vec<Note>, text: String) {
    notes.push(Note {
        warning: false,
        text,
    });
}

fn warning(notes: &mut Vec<Note>, text: String) {
    notes.push(Note {
        warning: true,
        text,
    });
}

/// Upgrades `net` in place; `file` names it in the notes.
pub fn upgrade_net(net: &mut NetParameter, file: &str) -> Result<Vec<Note>> {
    let mut notes = Vec::new();
    if net.layers.iter().any(|l| l.layer.is_some()) {
        info(
            &mut notes,
            format!(
            "Attempting to upgrade input file specified using deprecated V0LayerParameter: {file}"
        ),
        );
        upgrade_v0_net(net)?;
        info(
            &mut notes,
            "Successfully upgraded file specified using deprecated V0LayerParameter".into(),
        );
        warning(&mut notes, "Note that future Caffe releases will not support V0NetParameter; use ./build/tools/upgrade_net_proto_text for prototxt and ./build/tools/upgrade_net_proto_binary for model weights upgrade this and any other net protos to the new format.".into());
    }
    if net_needs_data_upgrade(net) {
        info(&mut notes, format!(
            "Attempting to upgrade input file specified using deprecated transformation parameters: {file}"
        ));
        upgrade_data_transformation(net);
        info(
            &mut notes,
            "Successfully upgraded file specified using deprecated data transformation parameters."
                .into(),
        );
        warning(&mut notes, "Note that future Caffe releases will only support transform_param messages for transformation fields.".into());
    }
    if !net.layers.is_empty() {
        if !net.layer.is_empty() {
            bail!("{file}: net has both 'layer' and 'layers' (V1) fields; use one format");
        }
        info(
            &mut notes,
            format!(
            "Attempting to upgrade input file specified using deprecated V1LayerParameter: {file}"
        ),
        );
        let layers = std::mem::take(&mut net.layers);
        for (i, v1) in layers.into_iter().enumerate() {
            let l =
                upgrade_v1_layer(v1).map_err(|e| anyhow::anyhow!("{file}: V1 layer #{i}: {e}"))?;
            net.layer.push(l);
        }
        info(
            &mut notes,
            "Successfully upgraded file specified using deprecated V1LayerParameter".into(),
        );
    }
    if !net.input.is_empty() || !net.input_dim.is_empty() || !net.input_shape.is_empty() {
        info(
            &mut notes,
            format!(
                "Attempting to upgrade input file specified using deprecated input fields: {file}"
            ),
        );
        upgrade_net_input(net).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        info(
            &mut notes,
            "Successfully upgraded file specified using deprecated input fields.".into(),
        );
        warning(
            &mut notes,
            "Note that future Caffe releases will only support input layers and not input fields."
                .into(),
        );
    }
    if net
        .layer
        .iter()
        .any(|l| l.r#type() == "BatchNorm" && l.param.len() == 3)
    {
        info(
            &mut notes,
            format!("Attempting to upgrade batch norm layers using deprecated params: {file}"),
        );
        for l in net
            .layer
            .iter_mut()
            .filter(|l| l.r#type() == "BatchNorm" && l.param.len() == 3)
        {
            for p in &mut l.param {
                p.lr_mult = Some(0.0);
                p.decay_mult = Some(0.0);
            }
        }
        info(
            &mut notes,
            "Successfully upgraded batch norm layers using deprecated params.".into(),
        );
    }
    Ok(notes)
}

/// Moves `solver_type` (enum) into `type` (string).
pub fn upgrade_solver(solver: &mut SolverParameter, file: &str) -> Result<Vec<Note>> {
    let mut notes = Vec::new();
    if let Some(t) = solver.solver_type {
        if solver.r#type.is_some() {
            bail!(
                "{file}: Failed to upgrade solver: old solver_type field (enum) and new type field \
                 (string) cannot be both specified."
            );
        }
        info(&mut notes, format!(
            "Attempting to upgrade input file specified using deprecated 'solver_type' field (enum)': {file}"
        ));
        let name = match t {
            0 => "SGD",
            1 => "Nesterov",
            2 => "AdaGrad",
            3 => "RMSProp",
            4 => "AdaDelta",
            5 => "Adam",
            other => bail!("{file}: unknown solver_type {other}"),
        };
        solver.r#type = Some(name.to_string());
        solver.solver_type = None;
        info(&mut notes, "Successfully upgraded file specified using deprecated 'solver_type' field (enum) to 'type' field (string).".into());
        warning(&mut notes, "Note that future Caffe releases will only support 'type' field (string) for a solver's type.".into());
    }
    Ok(notes)
}

/// The current type string of a V1 enum type (Caffe's `UpgradeV1LayerType`).
pub fn v1_type_name(t: LayerType) -> &'static str {
    match t.as_str_name() {
        "NONE" => "",
        "ABSVAL" => "AbsVal",
        "ACCURACY" => "Accuracy",
        "ARGMAX" => "ArgMax",
        "BNLL" => "BNLL",
        "CONCAT" => "Concat",
        "CONTRASTIVE_LOSS" => "ContrastiveLoss",
        "CONVOLUTION" => "Convolution",
        "DECONVOLUTION" => "Deconvolution",
        "DATA" => "Data",
        "DROPOUT" => "Dropout",
        "DUMMY_DATA" => "DummyData",
        "EUCLIDEAN_LOSS" => "EuclideanLoss",
        "ELTWISE" => "Eltwise",
        "EXP" => "Exp",
        "FLATTEN" => "Flatten",
        "HDF5_DATA" => "HDF5Data",
        "HDF5_OUTPUT" => "HDF5Output",
        "HINGE_LOSS" => "HingeLoss",
        "IM2COL" => "Im2col",
        "IMAGE_DATA" => "ImageData",
        "INFOGAIN_LOSS" => "InfogainLoss",
        "INNER_PRODUCT" => "InnerProduct",
        "LRN" => "LRN",
        "MEMORY_DATA" => "MemoryData",
        "MULTINOMIAL_LOGISTIC_LOSS" => "MultinomialLogisticLoss",
        "MVN" => "MVN",
        "POOLING" => "Pooling",
        "POWER" => "Power",
        "RELU" => "ReLU",
        "SIGMOID" => "Sigmoid",
        "SIGMOID_CROSS_ENTROPY_LOSS" => "SigmoidCrossEntropyLoss",
        "SILENCE" => "Silence",
        "SOFTMAX" => "Softmax",
        "SOFTMAX_LOSS" => "SoftmaxWithLoss",
        "SPLIT" => "Split",
        "SLICE" => "Slice",
        "TANH" => "TanH",
        "WINDOW_DATA" => "WindowData",
        "THRESHOLD" => "Threshold",
        _ => "",
    }
}

fn ensure_param(params: &mut Vec<ParamSpec>, i: usize) -> &mut ParamSpec {
    while params.len() <= i {
        params.push(ParamSpec::default());
    }
    &mut params[i]
}

/// `UpgradeV1LayerParameter`.
fn upgrade_v1_layer(v1: V1LayerParameter) -> Result<LayerParameter> {
    if v1.layer.is_some() {
        bail!("still holds a V0 layer after the V0 upgrade");
    }
    // Like Caffe, a V1 layer without a type gives a layer without one (not `type: ""`).
    let ty = match v1.r#type {
        None => None,
        Some(n) => match LayerType::try_from(n) {
            Ok(t) => Some(v1_type_name(t).to_string()),
            Err(_) => bail!("unknown V1 layer type number {n}"),
        },
    };
    let mut l = LayerParameter {
        name: v1.name,
        r#type: ty,
        bottom: v1.bottom,
        top: v1.top,
        include: v1.include,
        exclude: v1.exclude,
        blobs: v1.blobs,
        loss_weight: v1.loss_weight,
        transform_param: v1.transform_param,
        loss_param: v1.loss_param,
        accuracy_param: v1.accuracy_param,
        argmax_param: v1.argmax_param,
        concat_param: v1.concat_param,
        contrastive_loss_param: v1.contrastive_loss_param,
        convolution_param: v1.convolution_param,
        data_param: v1.data_param,
        dropout_param: v1.dropout_param,
        dummy_data_param: v1.dummy_data_param,
        eltwise_param: v1.eltwise_param,
        exp_param: v1.exp_param,
        hdf5_data_param: v1.hdf5_data_param,
        hdf5_output_param: v1.hdf5_output_param,
        hinge_loss_param: v1.hinge_loss_param,
        image_data_param: v1.image_data_param,
        infogain_loss_param: v1.infogain_loss_param,
        inner_product_param: v1.inner_product_param,
        lrn_param: v1.lrn_param,
        memory_data_param: v1.memory_data_param,
        mvn_param: v1.mvn_param,
        pooling_param: v1.pooling_param,
        power_param: v1.power_param,
        relu_param: v1.relu_param,
        sigmoid_param: v1.sigmoid_param,
        softmax_param: v1.softmax_param,
        slice_param: v1.slice_param,
        tanh_param: v1.tanh_param,
        threshold_param: v1.threshold_param,
        window_data_param: v1.window_data_param,
        ..Default::default()
    };
    for (i, name) in v1.param.into_iter().enumerate() {
        ensure_param(&mut l.param, i).name = Some(name);
    }
    for (i, mode) in v1.blob_share_mode.into_iter().enumerate() {
        ensure_param(&mut l.param, i).share_mode = Some(mode);
    }
    for (i, lr) in v1.blobs_lr.into_iter().enumerate() {
        ensure_param(&mut l.param, i).lr_mult = Some(lr);
    }
    for (i, d) in v1.weight_decay.into_iter().enumerate() {
        ensure_param(&mut l.param, i).decay_mult = Some(d);
    }
    Ok(l)
}

/// Whether a layer (V1 or current: both have the same three data params) still carries the
/// deprecated transformation fields.
macro_rules! has_deprecated_transform {
    ($l:expr) => {{
        let l = $l;
        let any = |s: bool, m: bool, c: bool, r: bool| s || m || c || r;
        l.data_param.as_ref().is_some_and(|p| {
            any(
                p.scale.is_some(),
                p.mean_file.is_some(),
                p.crop_size.is_some(),
                p.mirror.is_some(),
            )
        }) || l.image_data_param.as_ref().is_some_and(|p| {
            any(
                p.scale.is_some(),
                p.mean_file.is_some(),
                p.crop_size.is_some(),
                p.mirror.is_some(),
            )
        }) || l.window_data_param.as_ref().is_some_and(|p| {
            any(
                p.scale.is_some(),
                p.mean_file.is_some(),
                p.crop_size.is_some(),
                p.mirror.is_some(),
            )
        })
    }};
}

fn net_needs_data_upgrade(net: &NetParameter) -> bool {
    // Caffe checks V1 layers only and silently ignores these fields on current layers; crema
    // moves them there too, since ignoring a written field would surprise the user.
    net.layers.iter().any(|l| has_deprecated_transform!(l))
        || net.layer.iter().any(|l| has_deprecated_transform!(l))
}

/// Moves one layer's deprecated (scale, mean_file, crop_size, mirror) into transform_param.
fn move_transform(
    tp: &mut Option<TransformationParameter>,
    scale: &mut Option<f32>,
    mean_file: &mut Option<String>,
    crop_size: &mut Option<u32>,
    mirror: &mut Option<bool>,
) {
    if scale.is_none() && mean_file.is_none() && crop_size.is_none() && mirror.is_none() {
        return;
    }
    let t = tp.get_or_insert_with(Default::default);
    if let Some(v) = scale.take() {
        t.scale = Some(v);
    }
    if let Some(v) = mean_file.take() {
        t.mean_file = Some(v);
    }
    if let Some(v) = crop_size.take() {
        t.crop_size = Some(v);
    }
    if let Some(v) = mirror.take() {
        t.mirror = Some(v);
    }
}

macro_rules! upgrade_transform_fields {
    ($layer:expr) => {{
        let l = $layer;
        if let Some(p) = l.data_param.as_mut() {
            move_transform(
                &mut l.transform_param,
                &mut p.scale,
                &mut p.mean_file,
                &mut p.crop_size,
                &mut p.mirror,
            );
        }
        if let Some(p) = l.image_data_param.as_mut() {
            move_transform(
                &mut l.transform_param,
                &mut p.scale,
                &mut p.mean_file,
                &mut p.crop_size,
                &mut p.mirror,
            );
        }
        if let Some(p) = l.window_data_param.as_mut() {
            move_transform(
                &mut l.transform_param,
                &mut p.scale,
                &mut p.mean_file,
                &mut p.crop_size,
                &mut p.mirror,
            );
        }
    }};
}

fn upgrade_data_transformation(net: &mut NetParameter) {
    for l in net.layers.iter_mut() {
        upgrade_transform_fields!(l);
    }
    for l in net.layer.iter_mut() {
        upgrade_transform_fields!(l);
    }
}

/// `UpgradeNetInput`: net-level `input` + `input_dim`/`input_shape` become one Input layer at
/// the front; inputs without shapes (old caffemodels) are just dropped.
fn upgrade_net_input(net: &mut NetParameter) -> Result<()> {
    let has_shape = !net.input_shape.is_empty();
    let has_dim = !net.input_dim.is_empty();
    if has_shape || has_dim {
        let n = net.input.len();
        let mut input_param = InputParameter::default();
        if has_shape {
            if net.input_shape.len() != n {
                bail!(
                    "net has {n} input(s) but {} input_shape(s); give one shape per input",
                    net.input_shape.len()
                );
            }
            input_param.shape = net.input_shape.clone();
        } else {
            if net.input_dim.len() != 4 * n {
                bail!(
                    "net has {n} input(s) but {} input_dim values; give 4 per input",
                    net.input_dim.len()
                );
            }
            for i in 0..n {
                let dim = net.input_dim[4 * i..4 * i + 4]
                    .iter()
                    .map(|&d| d as i64)
                    .collect();
                input_param.shape.push(BlobShape { dim });
            }
        }
        let layer = LayerParameter {
            name: Some("input".into()),
            r#type: Some("Input".into()),
            top: net.input.clone(),
            input_param: Some(input_param),
            ..Default::default()
        };
        net.layer.insert(0, layer);
    }
    net.input.clear();
    net.input_dim.clear();
    net.input_shape.clear();
    Ok(())
}

/// `UpgradeV0Net`: padding layers folded into their consumers, then every V0 layer rewritten
/// as a V1 layer.
fn upgrade_v0_net(net: &mut NetParameter) -> Result<()> {
    fold_v0_padding(net)?;
    let layers = std::mem::take(&mut net.layers);
    for (i, l) in layers.into_iter().enumerate() {
        net.layers
            .push(upgrade_v0_layer(l).map_err(|e| anyhow::anyhow!("V0 layer #{i}: {e}"))?);
    }
    Ok(())
}

fn v0_type(l: &V1LayerParameter) -> &str {
    l.layer.as_ref().map(|v| v.r#type()).unwrap_or("")
}

fn fold_v0_padding(net: &mut NetParameter) -> Result<()> {
    // For each blob, the padding layer that last produced it (None: produced by another layer).
    let mut producer: std::collections::HashMap<String, Option<usize>> = Default::default();
    let original = net.layers.clone();
    let mut kept = Vec::new();
    for (i, l) in original.iter().enumerate() {
        if v0_type(l) == "padding" {
            for t in &l.top {
                producer.insert(t.clone(), Some(i));
            }
            continue;
        }
        let mut l = l.clone();
        for b in 0..l.bottom.len() {
            if let Some(&Some(src)) = producer.get(&l.bottom[b]) {
                let pad_layer = &original[src];
                let ty = v0_type(&l).to_string();
                if ty != "conv" && ty != "pool" {
                    bail!(
                        "padding layer '{}' feeds layer '{}' of type '{ty}'; only conv and pool can absorb padding",
                        pad_layer.layer.as_ref().map(|v| v.name()).unwrap_or(""),
                        l.layer.as_ref().map(|v| v.name()).unwrap_or("")
                    );
                }
                if l.bottom.len() != 1 || pad_layer.bottom.len() != 1 {
                    bail!("padding layer must have one bottom and feed a one-bottom layer");
                }
                let pad = pad_layer.layer.as_ref().and_then(|v| v.pad).unwrap_or(0);
                if let Some(v0) = l.layer.as_mut() {
                    v0.pad = Some(pad);
                }
                l.bottom[b] = pad_layer.bottom[0].clone();
            }
        }
        for t in &l.top {
            producer.insert(t.clone(), None);
        }
        kept.push(l);
    }
    net.layers = kept;
    Ok(())
}

fn v1_enum_for_v0(ty: &str) -> Result<LayerType> {
    let name = match ty {
        "accuracy" => "ACCURACY",
        "bnll" => "BNLL",
        "concat" => "CONCAT",
        "conv" => "CONVOLUTION",
        "data" => "DATA",
        "dropout" => "DROPOUT",
        "euclidean_loss" => "EUCLIDEAN_LOSS",
        "flatten" => "FLATTEN",
        "hdf5_data" => "HDF5_DATA",
        "hdf5_output" => "HDF5_OUTPUT",
        "im2col" => "IM2COL",
        "images" => "IMAGE_DATA",
        "infogain_loss" => "INFOGAIN_LOSS",
        "innerproduct" => "INNER_PRODUCT",
        "lrn" => "LRN",
        "multinomial_logistic_loss" => "MULTINOMIAL_LOGISTIC_LOSS",
        "pool" => "POOLING",
        "relu" => "RELU",
        "sigmoid" => "SIGMOID",
        "softmax" => "SOFTMAX",
        "softmax_loss" => "SOFTMAX_LOSS",
        "split" => "SPLIT",
        "tanh" => "TANH",
        "window_data" => "WINDOW_DATA",
        other => bail!("unknown V0 layer type '{other}'"),
    };
    Ok(LayerType::from_str_name(name).expect("V1 enum has every V0 type"))
}

fn incompatible(field: &str, ty: &str) -> anyhow::Error {
    anyhow::anyhow!("V0 field '{field}' has no meaning for a layer of type '{ty}'")
}

/// `UpgradeV0LayerParameter`: flat V0 fields move into the typed sub-messages.
fn upgrade_v0_layer(mut l: V1LayerParameter) -> Result<V1LayerParameter> {
    let Some(v0) = l.layer.take() else {
        return Ok(l);
    };
    let v0: V0LayerParameter = v0;
    let ty = v0.r#type().to_string();
    l.name = v0.name.clone();
    l.r#type = Some(v1_enum_for_v0(&ty)? as i32);
    l.blobs = v0.blobs.clone();
    l.blobs_lr = v0.blobs_lr.clone();
    l.weight_decay = v0.weight_decay.clone();
    let is = |t: &str| ty == t;
    if let Some(v) = v0.num_output {
        match ty.as_str() {
            "conv" => l.convolution_param.get_or_insert_default().num_output = Some(v),
            "innerproduct" => l.inner_product_param.get_or_insert_default().num_output = Some(v),
            _ => return Err(incompatible("num_output", &ty)),
        }
    }
    if let Some(v) = v0.biasterm {
        match ty.as_str() {
            "conv" => l.convolution_param.get_or_insert_default().bias_term = Some(v),
            "innerproduct" => l.inner_product_param.get_or_insert_default().bias_term = Some(v),
            _ => return Err(incompatible("biasterm", &ty)),
        }
    }
    if let Some(v) = v0.weight_filler.clone() {
        match ty.as_str() {
            "conv" => l.convolution_param.get_or_insert_default().weight_filler = Some(v),
            "innerproduct" => l.inner_product_param.get_or_insert_default().weight_filler = Some(v),
            _ => return Err(incompatible("weight_filler", &ty)),
        }
    }
    if let Some(v) = v0.bias_filler.clone() {
        match ty.as_str() {
            "conv" => l.convolution_param.get_or_insert_default().bias_filler = Some(v),
            "innerproduct" => l.inner_product_param.get_or_insert_default().bias_filler = Some(v),
            _ => return Err(incompatible("bias_filler", &ty)),
        }
    }
    if let Some(v) = v0.pad {
        match ty.as_str() {
            "conv" => l.convolution_param.get_or_insert_default().pad.push(v),
            "pool" => l.pooling_param.get_or_insert_default().pad = Some(v),
            _ => return Err(incompatible("pad", &ty)),
        }
    }
    if let Some(v) = v0.kernelsize {
        match ty.as_str() {
            "conv" => l
                .convolution_param
                .get_or_insert_default()
                .kernel_size
                .push(v),
            "pool" => l.pooling_param.get_or_insert_default().kernel_size = Some(v),
            _ => return Err(incompatible("kernelsize", &ty)),
        }
    }
    if let Some(v) = v0.group {
        if !is("conv") {
            return Err(incompatible("group", &ty));
        }
        l.convolution_param.get_or_insert_default().group = Some(v);
    }
    if let Some(v) = v0.stride {
        match ty.as_str() {
            "conv" => l.convolution_param.get_or_insert_default().stride.push(v),
            "pool" => l.pooling_param.get_or_insert_default().stride = Some(v),
            _ => return Err(incompatible("stride", &ty)),
        }
    }
    if let Some(v) = v0.pool {
        if !is("pool") {
            return Err(incompatible("pool", &ty));
        }
        let method = match v0_layer_parameter::PoolMethod::try_from(v) {
            Ok(m) => m.as_str_name(),
            Err(_) => bail!("unknown V0 pool method {v}"),
        };
        let p: &mut PoolingParameter = l.pooling_param.get_or_insert_default();
        p.pool =
            super::caffe::pooling_parameter::PoolMethod::from_str_name(method).map(|m| m as i32);
    }
    if let Some(v) = v0.dropout_ratio {
        if !is("dropout") {
            return Err(incompatible("dropout_ratio", &ty));
        }
        l.dropout_param.get_or_insert_default().dropout_ratio = Some(v);
    }
    if v0.local_size.is_some() || v0.alpha.is_some() || v0.beta.is_some() || v0.k.is_some() {
        if !is("lrn") {
            return Err(incompatible("local_size/alpha/beta/k", &ty));
        }
        let p = l.lrn_param.get_or_insert_default();
        p.local_size = v0.local_size.or(p.local_size);
        p.alpha = v0.alpha.or(p.alpha);
        p.beta = v0.beta.or(p.beta);
        p.k = v0.k.or(p.k);
    }
    if let Some(v) = v0.source.clone() {
        match ty.as_str() {
            "data" => l.data_param.get_or_insert_default().source = Some(v),
            "hdf5_data" => l.hdf5_data_param.get_or_insert_default().source = Some(v),
            "images" => l.image_data_param.get_or_insert_default().source = Some(v),
            "window_data" => l.window_data_param.get_or_insert_default().source = Some(v),
            "infogain_loss" => l.infogain_loss_param.get_or_insert_default().source = Some(v),
            _ => return Err(incompatible("source", &ty)),
        }
    }
    macro_rules! data_like {
        ($field:ident, $target:ident) => {
            if let Some(v) = v0.$field.clone() {
                match ty.as_str() {
                    "data" => l.data_param.get_or_insert_default().$target = Some(v),
                    "images" => l.image_data_param.get_or_insert_default().$target = Some(v),
                    "window_data" => l.window_data_param.get_or_insert_default().$target = Some(v),
                    _ => return Err(incompatible(stringify!($field), &ty)),
                }
            }
        };
    }
    data_like!(scale, scale);
    data_like!(meanfile, mean_file);
    data_like!(batchsize, batch_size);
    data_like!(cropsize, crop_size);
    data_like!(mirror, mirror);
    if let Some(v) = v0.rand_skip {
        match ty.as_str() {
            "data" => l.data_param.get_or_insert_default().rand_skip = Some(v),
            "images" => l.image_data_param.get_or_insert_default().rand_skip = Some(v),
            _ => return Err(incompatible("rand_skip", &ty)),
        }
    }
    if let Some(v) = v0.shuffle_images {
        if !is("images") {
            return Err(incompatible("shuffle_images", &ty));
        }
        l.image_data_param.get_or_insert_default().shuffle = Some(v);
    }
    if let Some(v) = v0.new_height {
        if !is("images") {
            return Err(incompatible("new_height", &ty));
        }
        l.image_data_param.get_or_insert_default().new_height = Some(v as u32);
    }
    if let Some(v) = v0.new_width {
        if !is("images") {
            return Err(incompatible("new_width", &ty));
        }
        l.image_data_param.get_or_insert_default().new_width = Some(v as u32);
    }
    if let Some(v) = v0.concat_dim {
        if !is("concat") {
            return Err(incompatible("concat_dim", &ty));
        }
        l.concat_param.get_or_insert_default().concat_dim = Some(v);
    }
    if v0.det_fg_threshold.is_some()
        || v0.det_bg_threshold.is_some()
        || v0.det_fg_fraction.is_some()
        || v0.det_context_pad.is_some()
        || v0.det_crop_mode.is_some()
    {
        if !is("window_data") {
            return Err(incompatible("det_*", &ty));
        }
        let p = l.window_data_param.get_or_insert_default();
        p.fg_threshold = v0.det_fg_threshold.or(p.fg_threshold);
        p.bg_threshold = v0.det_bg_threshold.or(p.bg_threshold);
        p.fg_fraction = v0.det_fg_fraction.or(p.fg_fraction);
        p.context_pad = v0.det_context_pad.or(p.context_pad);
        p.crop_mode = v0.det_crop_mode.clone().or(p.crop_mode.clone());
    }
    if let Some(v) = v0.hdf5_output_param.clone() {
        if !is("hdf5_output") {
            return Err(incompatible("hdf5_output_param", &ty));
        }
        l.hdf5_output_param = Some(v);
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_blobs_lr_and_weight_decay_become_param_specs() {
        let mut net = NetParameter {
            layers: vec![V1LayerParameter {
                name: Some("conv1".into()),
                r#type: Some(LayerType::Convolution as i32),
                blobs_lr: vec![1.0, 2.0],
                weight_decay: vec![1.0, 0.0],
                ..Default::default()
            }],
            ..Default::default()
        };
        let notes = upgrade_net(&mut net, "x").unwrap();
        assert!(notes.iter().any(|n| n.text.contains("V1LayerParameter")));
        let l = &net.layer[0];
        assert_eq!(l.r#type(), "Convolution");
        assert_eq!(l.param.len(), 2);
        assert_eq!(
            (l.param[1].lr_mult, l.param[1].decay_mult),
            (Some(2.0), Some(0.0))
        );
    }

    #[test]
    fn input_dims_become_an_input_layer_at_the_front() {
        let mut net = NetParameter {
            input: vec!["data".into(), "label".into()],
            input_dim: vec![2, 3, 8, 8, 2, 1, 1, 1],
            layer: vec![LayerParameter {
                name: Some("c".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        upgrade_net(&mut net, "x").unwrap();
        assert_eq!(net.layer[0].r#type(), "Input");
        assert_eq!(net.layer[0].top, vec!["data", "label"]);
        assert_eq!(
            net.layer[0].input_param.as_ref().unwrap().shape[1].dim,
            vec![2, 1, 1, 1]
        );
        assert!(net.input.is_empty() && net.input_dim.is_empty());
        net.input = vec!["a".into()];
        net.input_dim = vec![1, 2, 3];
        assert!(upgrade_net(&mut net, "x").is_err());
    }

    #[test]
    fn v0_padding_folds_into_conv() {
        let v0 = |name: &str, ty: &str| V0LayerParameter {
            name: Some(name.into()),
            r#type: Some(ty.into()),
            ..Default::default()
        };
        let mut pad = v0("pad1", "padding");
        pad.pad = Some(2);
        let mut conv = v0("conv1", "conv");
        conv.num_output = Some(8);
        conv.kernelsize = Some(5);
        let mut net = NetParameter {
            layers: vec![
                V1LayerParameter {
                    layer: Some(pad),
                    bottom: vec!["data".into()],
                    top: vec!["pad1".into()],
                    ..Default::default()
                },
                V1LayerParameter {
                    layer: Some(conv),
                    bottom: vec!["pad1".into()],
                    top: vec!["conv1".into()],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        upgrade_net(&mut net, "x").unwrap();
        assert_eq!(net.layer.len(), 1);
        let c = &net.layer[0];
        assert_eq!(c.bottom, vec!["data"]);
        let cp = c.convolution_param.as_ref().unwrap();
        assert_eq!(
            (cp.pad.clone(), cp.kernel_size.clone(), cp.num_output),
            (vec![2], vec![5], Some(8))
        );
    }

    #[test]
    fn solver_type_enum_becomes_string() {
        let mut s = SolverParameter {
            solver_type: Some(5),
            ..Default::default()
        };
        upgrade_solver(&mut s, "s").unwrap();
        assert_eq!(s.r#type(), "Adam");
        let mut s = SolverParameter {
            solver_type: Some(1),
            r#type: Some("SGD".into()),
            ..Default::default()
        };
        assert!(upgrade_solver(&mut s, "s").is_err());
    }
}
