//! The layer configurations the selftest runs: every layer type that does arithmetic, in the
//! configurations whose code paths differ (in place or not, groups, dilation, strides, global
//! pooling, ignore_label, normalization modes...), each at two or more shapes with odd sizes.

use super::{Check, Fill, LayerCase};
use crate::proto::caffe::Phase;

/// Known layer types the selftest does not run, and why.
pub const EXCLUDED: &[(&str, &str)] = &[
    (
        "Data",
        "produces batches on the host (its upload is counted in the traffic log)",
    ),
    (
        "ImageData",
        "produces batches on the host (its upload is counted in the traffic log)",
    ),
    (
        "HDF5Data",
        "produces batches on the host (its upload is counted in the traffic log)",
    ),
    (
        "DummyData",
        "fills its tops once on the host; no per-pass arithmetic",
    ),
    ("Input", "holds what the caller sets; no arithmetic"),
    (
        "Flatten",
        "its top shares the bottom's memory; no arithmetic",
    ),
    (
        "Reshape",
        "its top shares the bottom's memory; no arithmetic",
    ),
];

const X: Fill = Fill::UNIT;

fn bt(bottoms: &[&str], tops: &[&str]) -> String {
    let mut s = String::new();
    for b in bottoms {
        s += &format!(" bottom: \"{b}\"");
    }
    for t in tops {
        s += &format!(" top: \"{t}\"");
    }
    s
}

/// A one-bottom, one-top layer: separate and in place.
fn neuron(out: &mut Vec<LayerCase>, ty: &'static str, config: &str, param: &str, input: Fill) {
    let shapes: &[&[&[usize]]] = &[&[&[2, 3, 5, 7]], &[&[3, 17]], &[&[1, 1, 1, 1]]];
    out.push(LayerCase::new(
        ty,
        config,
        format!("type: \"{ty}\"{} {param}", bt(&["x"], &["y"])),
        &[("x", input)],
        shapes,
    ));
    out.push(LayerCase::new(
        ty,
        format!("{config} in place").trim(),
        format!("type: \"{ty}\"{} {param}", bt(&["x"], &["x"])),
        &[("x", input)],
        &shapes[..2],
    ));
}

pub fn layer_cases() -> Vec<LayerCase> {
    let mut v = Vec::new();
    let c = &mut v;

    // ---- element-wise activations -----------------------------------------------------------
    neuron(c, "AbsVal", "", "", X);
    neuron(c, "BNLL", "", "", Fill::Range(-4.0, 4.0));
    neuron(c, "ELU", "alpha 1", "", X);
    neuron(c, "ELU", "alpha 0.3", "elu_param { alpha: 0.3 }", X);
    neuron(c, "Exp", "base e", "", X);
    neuron(
        c,
        "Exp",
        "base 2 scale 0.5 shift 0.1",
        "exp_param { base: 2 scale: 0.5 shift: 0.1 }",
        X,
    );
    neuron(c, "Log", "base e", "", Fill::Range(0.1, 3.0));
    neuron(
        c,
        "Log",
        "base 10 scale 2 shift 3",
        "log_param { base: 10 scale: 2 shift: 3 }",
        X,
    );
    neuron(
        c,
        "Power",
        "power 1 scale 2 shift 0.5",
        "power_param { power: 1 scale: 2 shift: 0.5 }",
        X,
    );
    neuron(c, "Power", "power 2", "power_param { power: 2 }", X);
    neuron(
        c,
        "Power",
        "power 0.5 shift 2",
        "power_param { power: 0.5 shift: 2 }",
        X,
    );
    neuron(
        c,
        "Power",
        "power 3 scale -1.5",
        "power_param { power: 3 scale: -1.5 }",
        X,
    );
    neuron(c, "ReLU", "slope 0", "", X);
    neuron(
        c,
        "ReLU",
        "slope 0.1",
        "relu_param { negative_slope: 0.1 }",
        X,
    );
    neuron(c, "Sigmoid", "", "", Fill::Range(-5.0, 5.0));
    neuron(c, "TanH", "", "", Fill::Range(-3.0, 3.0));
    neuron(c, "Swish", "beta 1", "", Fill::Range(-4.0, 4.0));
    neuron(
        c,
        "Swish",
        "beta 0.5",
        "swish_param { beta: 0.5 }",
        Fill::Range(-4.0, 4.0),
    );
    neuron(
        c,
        "Clip",
        "[-0.5, 0.3]",
        "clip_param { min: -0.5 max: 0.3 }",
        X,
    );
    c.push(
        LayerCase::new(
            "Threshold",
            "threshold 0.2",
            format!(
                "type: \"Threshold\"{} threshold_param {{ threshold: 0.2 }}",
                bt(&["x"], &["y"])
            ),
            &[("x", X)],
            &[&[&[2, 3, 5, 7]], &[&[13]]],
        )
        .check(Check::ForwardOnly),
    );

    // ---- Dropout ------------------------------------------------------------------------------
    for (ratio, inplace) in [(0.5f32, false), (0.3, true)] {
        let top = if inplace { "x" } else { "y" };
        let param = format!("dropout_param {{ dropout_ratio: {ratio} }}");
        c.push(
            LayerCase::new(
                "Dropout",
                &format!(
                    "TRAIN ratio {ratio}{}",
                    if inplace { " in place" } else { "" }
                ),
                format!("type: \"Dropout\"{} {param}", bt(&["x"], &[top])),
                &[("x", Fill::Range(0.5, 1.5))],
                &[&[&[4, 3, 17, 19]], &[&[2, 1001]]],
            )
            .check(Check::DropoutTrain { ratio }),
        );
        c.push(
            LayerCase::new(
                "Dropout",
                &format!(
                    "TEST ratio {ratio}{}",
                    if inplace { " in place" } else { "" }
                ),
                format!("type: \"Dropout\"{} {param}", bt(&["x"], &[top])),
                &[("x", X)],
                &[&[&[2, 3, 5, 7]], &[&[3, 17]]],
            )
            .phase(Phase::Test),
        );
    }

    // ---- normalisation ------------------------------------------------------------------------
    let bn_params = [X, Fill::Range(0.5, 1.5), Fill::Range(0.5, 2.0)];
    let bn_shapes: &[&[&[usize]]] = &[&[&[2, 3, 5, 7]], &[&[4, 5]], &[&[3, 2, 1, 9]]];
    c.push(
        LayerCase::new(
            "BatchNorm",
            "batch statistics",
            format!(
                "type: \"BatchNorm\"{} batch_norm_param {{ moving_average_fraction: 0.9 eps: 1e-5 }}",
                bt(&["x"], &["y"])
            ),
            &[("x", X)],
            bn_shapes,
        )
        .params(&bn_params)
        .tolerance(1e-3),
    );
    c.push(
        LayerCase::new(
            "BatchNorm",
            "batch statistics in place",
            format!("type: \"BatchNorm\"{}", bt(&["x"], &["x"])),
            &[("x", X)],
            &bn_shapes[..2],
        )
        .params(&bn_params)
        .tolerance(1e-3),
    );
    c.push(
        LayerCase::new(
            "BatchNorm",
            "global statistics",
            format!(
                "type: \"BatchNorm\"{} batch_norm_param {{ use_global_stats: true eps: 1e-4 }}",
                bt(&["x"], &["y"])
            ),
            &[("x", X)],
            bn_shapes,
        )
        .params(&bn_params),
    );
    c.push(
        LayerCase::new(
            "BatchNorm",
            "TEST phase (global statistics)",
            format!("type: \"BatchNorm\"{}", bt(&["x"], &["y"])),
            &[("x", X)],
            &bn_shapes[..2],
        )
        .params(&bn_params)
        .phase(Phase::Test),
    );
    for (config, param) in [
        (
            "across channels 5",
            "lrn_param { local_size: 5 alpha: 0.1 beta: 0.75 k: 1 }",
        ),
        (
            "across channels 3 k 2",
            "lrn_param { local_size: 3 alpha: 0.5 beta: 0.5 k: 2 }",
        ),
        (
            "within channel 3",
            "lrn_param { local_size: 3 alpha: 0.2 beta: 0.75 norm_region: WITHIN_CHANNEL }",
        ),
    ] {
        c.push(
            LayerCase::new(
                "LRN",
                config,
                format!("type: \"LRN\"{} {param}", bt(&["x"], &["y"])),
                &[("x", X)],
                &[&[&[2, 7, 5, 6]], &[&[1, 3, 9, 11]], &[&[3, 1, 4, 3]]],
            )
            .tolerance(1e-3),
        );
    }
    for (config, param) in [
        ("mean and variance", ""),
        ("mean only", "mvn_param { normalize_variance: false }"),
        (
            "across channels",
            "mvn_param { across_channels: true eps: 1e-6 }",
        ),
    ] {
        c.push(
            LayerCase::new(
                "MVN",
                config,
                format!("type: \"MVN\"{} {param}", bt(&["x"], &["y"])),
                &[("x", X)],
                &[&[&[2, 3, 5, 7]], &[&[3, 2, 1, 13]]],
            )
            .tolerance(1e-3),
        );
    }

    // ---- parameter layers ---------------------------------------------------------------------
    let conv_shapes: &[&[&[usize]]] = &[&[&[2, 4, 7, 9]], &[&[1, 4, 11, 6]], &[&[3, 4, 5, 5]]];
    for ty in ["Convolution", "Deconvolution"] {
        for (config, param) in [
            ("k3 p1 s1", "num_output: 6 kernel_size: 3 pad: 1"),
            ("k3 s2 group 2 dilation 2", "num_output: 6 kernel_size: 3 stride: 2 group: 2 dilation: 2"),
            ("k1 no bias", "num_output: 5 kernel_size: 1 bias_term: false"),
            ("k2x3 s1x2 p1x0 group 4", "num_output: 8 kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0 group: 4"),
        ] {
            c.push(LayerCase::new(
                ty,
                config,
                format!("type: \"{ty}\"{} convolution_param {{ {param} }}", bt(&["x"], &["y"])),
                &[("x", X)],
                conv_shapes,
            ));
        }
    }
    for (config, param, shapes) in [
        ("axis 1", "num_output: 5", [&[3usize, 7][..], &[2, 3, 4, 5]]),
        (
            "transpose",
            "num_output: 9 transpose: true",
            [&[3, 7], &[1, 130]],
        ),
        (
            "axis 2 no bias",
            "num_output: 4 axis: 2 bias_term: false",
            [&[2, 3, 5], &[1, 5, 33]],
        ),
    ] {
        c.push(LayerCase::new(
            "InnerProduct",
            config,
            format!(
                "type: \"InnerProduct\"{} inner_product_param {{ {param} }}",
                bt(&["x"], &["y"])
            ),
            &[("x", X)],
            &[&[shapes[0]], &[shapes[1]]],
        ));
    }
    for (config, param) in [
        ("per channel", ""),
        ("channel shared", "prelu_param { channel_shared: true }"),
    ] {
        c.push(LayerCase::new(
            "PReLU",
            config,
            format!("type: \"PReLU\"{} {param}", bt(&["x"], &["y"])),
            &[("x", X)],
            &[&[&[2, 3, 5, 7]], &[&[4, 5]]],
        ));
        c.push(LayerCase::new(
            "PReLU",
            &format!("{config} in place"),
            format!("type: \"PReLU\"{} {param}", bt(&["x"], &["x"])),
            &[("x", X)],
            &[&[&[2, 3, 5, 7]], &[&[1, 2, 3]]],
        ));
    }
    c.push(LayerCase::new(
        "Scale",
        "learned, bias",
        format!(
            "type: \"Scale\"{} scale_param {{ bias_term: true }}",
            bt(&["x"], &["y"])
        ),
        &[("x", X)],
        &[&[&[2, 3, 5, 7]], &[&[4, 5]]],
    ));
    c.push(LayerCase::new(
        "Scale",
        "learned, in place",
        format!(
            "type: \"Scale\"{} scale_param {{ axis: 1 num_axes: 2 }}",
            bt(&["x"], &["x"])
        ),
        &[("x", X)],
        &[&[&[2, 3, 5, 7]], &[&[3, 2, 3]]],
    ));
    c.push(LayerCase::new(
        "Scale",
        "second bottom, axis 0",
        format!(
            "type: \"Scale\"{} scale_param {{ axis: 0 }}",
            bt(&["x", "s"], &["y"])
        ),
        &[("x", X), ("s", X)],
        &[&[&[2, 3, 5, 7], &[2, 3]], &[&[3, 17], &[3]]],
    ));
    c.push(LayerCase::new(
        "Bias",
        "learned",
        format!("type: \"Bias\"{}", bt(&["x"], &["y"])),
        &[("x", X)],
        &[&[&[2, 3, 5, 7]], &[&[4, 5]]],
    ));
    c.push(LayerCase::new(
        "Bias",
        "second bottom, 2 axes",
        format!(
            "type: \"Bias\"{} bias_param {{ axis: 1 num_axes: 2 }}",
            bt(&["x", "b"], &["y"])
        ),
        &[("x", X), ("b", X)],
        &[&[&[2, 3, 5, 7], &[3, 5]], &[&[3, 4, 1], &[4, 1]]],
    ));
    c.push(
        LayerCase::new(
            "Embed",
            "bias",
            format!(
                "type: \"Embed\"{} embed_param {{ num_output: 6 input_dim: 10 }}",
                bt(&["i"], &["y"])
            ),
            &[("i", Fill::Labels(10))],
            &[&[&[4]], &[&[2, 7]]],
        )
        .propagate_down(&[false]),
    );
    c.push(
        LayerCase::new(
            "Embed",
            "no bias",
            format!(
                "type: \"Embed\"{} embed_param {{ num_output: 3 input_dim: 5 bias_term: false }}",
                bt(&["i"], &["y"])
            ),
            &[("i", Fill::Labels(5))],
            &[&[&[9]], &[&[3, 1, 2]]],
        )
        .propagate_down(&[false]),
    );

    // ---- pooling and softmax ------------------------------------------------------------------
    let pool_shapes: &[&[&[usize]]] = &[&[&[2, 3, 7, 9]], &[&[1, 2, 6, 6]], &[&[2, 1, 5, 13]]];
    for (config, param, tops) in [
        (
            "MAX k3 s2",
            "pool: MAX kernel_size: 3 stride: 2",
            &["y"][..],
        ),
        (
            "MAX k2 s2 with mask top",
            "pool: MAX kernel_size: 2 stride: 2",
            &["y", "m"][..],
        ),
        (
            "MAX k3 s1 p1",
            "pool: MAX kernel_size: 3 stride: 1 pad: 1",
            &["y"][..],
        ),
        (
            "AVE k3 s2 p1",
            "pool: AVE kernel_size: 3 stride: 2 pad: 1",
            &["y"][..],
        ),
        (
            "AVE k2x3 s2x1",
            "pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1",
            &["y"][..],
        ),
        ("global AVE", "pool: AVE global_pooling: true", &["y"][..]),
        ("global MAX", "pool: MAX global_pooling: true", &["y"][..]),
    ] {
        c.push(LayerCase::new(
            "Pooling",
            config,
            format!(
                "type: \"Pooling\"{} pooling_param {{ {param} }}",
                bt(&["x"], tops)
            ),
            &[("x", X)],
            pool_shapes,
        ));
    }
    for (config, param, shapes) in [
        (
            "axis 1",
            "",
            &[&[&[2usize, 5, 3, 4][..]][..], &[&[3, 7]]][..],
        ),
        (
            "axis 1, 70 classes",
            "",
            &[&[&[4, 70][..]][..], &[&[2, 129]]][..],
        ),
        (
            "axis 2",
            "softmax_param { axis: 2 }",
            &[&[&[2, 3, 4, 5][..]][..], &[&[1, 2, 67]]][..],
        ),
    ] {
        c.push(LayerCase::new(
            "Softmax",
            config,
            format!("type: \"Softmax\"{} {param}", bt(&["x"], &["y"])),
            &[("x", Fill::Range(-3.0, 3.0))],
            shapes,
        ));
    }

    // ---- losses and metrics -------------------------------------------------------------------
    let scores = Fill::Range(-3.0, 3.0);
    for (config, param, tops) in [
        ("VALID", "", &["loss"][..]),
        (
            "VALID ignore_label 2, prob top",
            "loss_weight: 1 loss_weight: 0 loss_param { ignore_label: 2 }",
            &["loss", "prob"][..],
        ),
        (
            "FULL ignore_label 0",
            "loss_param { ignore_label: 0 normalization: FULL }",
            &["loss"][..],
        ),
        (
            "BATCH_SIZE",
            "loss_param { normalization: BATCH_SIZE }",
            &["loss"][..],
        ),
        ("NONE", "loss_param { normalization: NONE }", &["loss"][..]),
    ] {
        c.push(LayerCase::new(
            "SoftmaxWithLoss",
            config,
            format!(
                "type: \"SoftmaxWithLoss\"{} {param}",
                bt(&["x", "label"], tops)
            ),
            &[("x", scores), ("label", Fill::Labels(5))],
            &[
                &[&[6, 5], &[6]],
                &[&[2, 5, 3, 3], &[2, 1, 3, 3]],
                &[&[3, 5, 1, 7], &[3, 7]],
            ],
        ));
    }
    c.push(
        LayerCase::new(
            "SigmoidCrossEntropyLoss",
            "",
            format!(
                "type: \"SigmoidCrossEntropyLoss\"{}",
                bt(&["x", "t"], &["loss"])
            ),
            &[("x", Fill::Range(-4.0, 4.0)), ("t", Fill::Range(0.0, 1.0))],
            &[&[&[4, 7], &[4, 7]], &[&[2, 3, 5, 5], &[2, 3, 5, 5]]],
        )
        .propagate_down(&[true, false]),
    );
    c.push(LayerCase::new(
        "SigmoidCrossEntropyLoss",
        "ignore_label 1, BATCH_SIZE",
        format!(
            "type: \"SigmoidCrossEntropyLoss\"{} loss_param {{ ignore_label: 1 normalization: BATCH_SIZE }}",
            bt(&["x", "t"], &["loss"])
        ),
        &[("x", Fill::Range(-4.0, 4.0)), ("t", Fill::Labels(2))],
        &[&[&[4, 7], &[4, 7]], &[&[3, 1, 5], &[3, 1, 5]]],
    )
    .propagate_down(&[true, false]));
    c.push(
        LayerCase::new(
            "EuclideanLoss",
            "",
            format!("type: \"EuclideanLoss\"{}", bt(&["a", "b"], &["loss"])),
            &[("a", X), ("b", X)],
            &[&[&[4, 7], &[4, 7]], &[&[3, 2, 5, 1], &[3, 2, 5, 1]]],
        )
        .propagate_down(&[true, true]),
    );
    for (config, param) in [
        ("top 1", ""),
        (
            "top 3, ignore_label 1",
            "accuracy_param { top_k: 3 ignore_label: 1 }",
        ),
    ] {
        c.push(
            LayerCase::new(
                "Accuracy",
                config,
                format!(
                    "type: \"Accuracy\"{} {param}",
                    bt(&["x", "label"], &["acc"])
                ),
                &[("x", scores), ("label", Fill::Labels(6))],
                &[&[&[9, 6], &[9]], &[&[2, 6, 3, 4], &[2, 1, 3, 4]]],
            )
            .check(Check::ForwardOnly),
        );
    }
    c.push(
        LayerCase::new(
            "Accuracy",
            "per-class top",
            format!(
                "type: \"Accuracy\"{}",
                bt(&["x", "label"], &["acc", "per_class"])
            ),
            &[("x", scores), ("label", Fill::Labels(6))],
            &[&[&[9, 6], &[9]], &[&[1, 6, 3, 5], &[1, 1, 3, 5]]],
        )
        .check(Check::ForwardOnly),
    );
    for (config, param) in [
        ("top 1", ""),
        (
            "top 2 with values",
            "argmax_param { top_k: 2 out_max_val: true }",
        ),
        ("axis 1", "argmax_param { axis: 1 }"),
    ] {
        c.push(
            LayerCase::new(
                "ArgMax",
                config,
                format!("type: \"ArgMax\"{} {param}", bt(&["x"], &["y"])),
                &[("x", X)],
                &[&[&[3, 7]], &[&[2, 5, 3, 4]]],
            )
            .check(Check::ForwardOnly),
        );
    }

    // ---- combining, splitting, copying --------------------------------------------------------
    for (config, param, n) in [
        (
            "SUM coeffs 1 -0.5 2",
            "operation: SUM coeff: 1 coeff: -0.5 coeff: 2",
            3,
        ),
        ("SUM", "operation: SUM", 2),
        ("PROD", "operation: PROD", 3),
        (
            "PROD unstable gradient",
            "operation: PROD stable_prod_grad: false",
            2,
        ),
        ("MAX", "operation: MAX", 3),
    ] {
        let names = ["a", "b", "c"];
        let inputs: Vec<(&'static str, Fill)> = names[..n].iter().map(|&n| (n, X)).collect();
        let s1: Vec<&[usize]> = vec![&[2, 3, 5, 7]; n];
        let s2: Vec<&[usize]> = vec![&[13]; n];
        let mut case = LayerCase::new(
            "Eltwise",
            config,
            format!(
                "type: \"Eltwise\"{} eltwise_param {{ {param} }}",
                bt(&names[..n], &["y"])
            ),
            &inputs,
            &[&s1, &s2],
        );
        if n == 3 {
            case = case.propagate_down(&[true, false, true]);
        }
        c.push(case);
    }
    c.push(LayerCase::new(
        "Concat",
        "axis 1",
        format!("type: \"Concat\"{}", bt(&["a", "b", "c"], &["y"])),
        &[("a", X), ("b", X), ("c", X)],
        &[
            &[&[2, 1, 3, 4], &[2, 4, 3, 4], &[2, 2, 3, 4]],
            &[&[3, 5], &[3, 1], &[3, 7]],
        ],
    ));
    c.push(
        LayerCase::new(
            "Concat",
            "axis 0",
            format!(
                "type: \"Concat\"{} concat_param {{ axis: 0 }}",
                bt(&["a", "b"], &["y"])
            ),
            &[("a", X), ("b", X)],
            &[&[&[2, 3, 5], &[1, 3, 5]], &[&[3, 7], &[5, 7]]],
        )
        .propagate_down(&[false, true]),
    );
    c.push(LayerCase::new(
        "Slice",
        "axis 1 at 1, 3",
        format!(
            "type: \"Slice\"{} slice_param {{ axis: 1 slice_point: 1 slice_point: 3 }}",
            bt(&["x"], &["a", "b", "c"])
        ),
        &[("x", X)],
        &[&[&[2, 5, 3, 4]], &[&[3, 7]]],
    ));
    c.push(LayerCase::new(
        "Slice",
        "axis 0 in halves",
        format!(
            "type: \"Slice\"{} slice_param {{ axis: 0 }}",
            bt(&["x"], &["a", "b"])
        ),
        &[("x", X)],
        &[&[&[4, 3, 5]], &[&[2, 9]]],
    ));
    c.push(LayerCase::new(
        "Split",
        "3 tops",
        format!("type: \"Split\"{}", bt(&["x"], &["a", "b", "c"])),
        &[("x", X)],
        &[&[&[2, 3, 5, 7]], &[&[13]]],
    ));
    c.push(LayerCase::new(
        "Silence",
        "2 bottoms",
        format!("type: \"Silence\"{}", bt(&["a", "b"], &[])),
        &[("a", X), ("b", X)],
        &[&[&[2, 3, 5], &[7]], &[&[1], &[3, 3]]],
    ));
    c.push(
        LayerCase::new(
            "Crop",
            "axis 2 offsets 1, 2",
            format!(
                "type: \"Crop\"{} crop_param {{ axis: 2 offset: 1 offset: 2 }}",
                bt(&["x", "r"], &["y"])
            ),
            &[("x", X), ("r", X)],
            &[
                &[&[2, 3, 7, 9], &[2, 3, 4, 5]],
                &[&[1, 2, 5, 5], &[1, 2, 3, 3]],
            ],
        )
        .propagate_down(&[true, false]),
    );
    c.push(
        LayerCase::new(
            "Crop",
            "axis 1 offset 1",
            format!(
                "type: \"Crop\"{} crop_param {{ axis: 1 offset: 1 }}",
                bt(&["x", "r"], &["y"])
            ),
            &[("x", X), ("r", X)],
            &[&[&[2, 5, 4, 3], &[2, 3, 2, 2]], &[&[3, 7, 2], &[3, 5, 1]]],
        )
        .propagate_down(&[true, false]),
    );
    for (config, param) in [
        ("axis 1 x3", "axis: 1 tiles: 3"),
        ("axis 0 x2", "axis: 0 tiles: 2"),
    ] {
        c.push(LayerCase::new(
            "Tile",
            config,
            format!(
                "type: \"Tile\"{} tile_param {{ {param} }}",
                bt(&["x"], &["y"])
            ),
            &[("x", X)],
            &[&[&[2, 3, 5]], &[&[1, 7, 2, 3]]],
        ));
    }
    for (config, param) in [
        ("SUM all", "operation: SUM"),
        ("ASUM axis 1", "operation: ASUM axis: 1"),
        (
            "SUMSQ axis 2 coeff 0.5",
            "operation: SUMSQ axis: 2 coeff: 0.5",
        ),
        ("MEAN axis -1", "operation: MEAN axis: -1"),
    ] {
        c.push(LayerCase::new(
            "Reduction",
            config,
            format!(
                "type: \"Reduction\"{} reduction_param {{ {param} }}",
                bt(&["x"], &["y"])
            ),
            &[("x", X)],
            &[&[&[2, 3, 5, 7]], &[&[3, 4, 1]]],
        ));
    }
    v
}
