//! Net construction follows Caffe's rules: split insertion, in-place chains, phase/level/stage
//! filtering, need-backward analysis, parameter sharing, output order, weight loading.

use crema::blob::BlobRef;
use crema::net::{BuildOptions, Net};
use crema::proto::caffe::{LayerParameter, NetParameter, NetState, Phase};
use crema::proto::{parse_net_text, TextOptions};
use crema::rng::CaffeRng;

fn quiet() {
    crema::util::glog::set_min_level(2);
}

fn build_state(text: &str, state: NetState) -> anyhow::Result<Net> {
    quiet();
    let p = parse_net_text(text, "test.prototxt", TextOptions::default())?;
    Net::new(
        &p,
        &state,
        &mut CaffeRng::new(1),
        BuildOptions { verbose: false },
    )
}

fn build(text: &str, phase: Phase) -> anyhow::Result<Net> {
    build_state(
        text,
        NetState {
            phase: Some(phase as i32),
            ..Default::default()
        },
    )
}

const LENET_LIKE: &str = r#"
name: "lenet_like"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 1 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"#;

#[test]
fn splits_are_inserted_where_a_blob_has_several_readers() {
    let net = build(LENET_LIKE, Phase::Test).unwrap();
    let names = net.layer_names();
    assert_eq!(
        names,
        [
            "data",
            "label_data_1_split",
            "ip1",
            "relu1",
            "ip2",
            "ip2_ip2_0_split",
            "accuracy",
            "loss"
        ]
    );
    let split = &net.layers[net.layer_index("ip2_ip2_0_split").unwrap()];
    let bottom = &net.blobs[split.bottoms[0]];
    for &t in &split.tops {
        assert!(
            net.blobs[t].shares_data_with(bottom),
            "split tops alias the bottom's data"
        );
    }
    // In TRAIN the accuracy layer is filtered out and ip2 has one reader: no split for it.
    let train = build(LENET_LIKE, Phase::Train).unwrap();
    assert!(train.layer_index("ip2_ip2_0_split").is_none());
    assert!(train.layer_index("accuracy").is_none());
}

#[test]
fn in_place_layers_reuse_the_bottom_blob() {
    let net = build(LENET_LIKE, Phase::Train).unwrap();
    let relu = &net.layers[net.layer_index("relu1").unwrap()];
    assert_eq!(relu.bottoms, relu.tops);
    assert_eq!(net.blob_names.iter().filter(|n| *n == "ip1").count(), 1);
}

#[test]
fn outputs_are_in_lexical_order_and_loss_has_weight_one() {
    let net = build(LENET_LIKE, Phase::Test).unwrap();
    assert_eq!(net.output_names(), ["accuracy", "loss"]);
    let loss = net.layer_index("loss").unwrap();
    assert_eq!(net.layers[loss].loss_weights, [1.0]);
    assert_eq!(net.layers[loss].layer.layer_param().loss_weight, [1.0]);
    let acc = net.layer_index("accuracy").unwrap();
    assert_eq!(net.layers[acc].loss_weights, [0.0]);
}

#[test]
fn level_and_stage_rules_filter_layers() {
    let text = r#"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "a" type: "ReLU" bottom: "x" top: "a" include { stage: "deploy" } }
layer { name: "b" type: "ReLU" bottom: "x" top: "b" exclude { stage: "deploy" } }
layer { name: "c" type: "ReLU" bottom: "x" top: "c" include { min_level: 2 } }
layer { name: "d" type: "ReLU" bottom: "x" top: "d" include { not_stage: "deploy" max_level: 1 } }
"#;
    let st = |level: i32, stages: &[&str]| NetState {
        phase: Some(Phase::Test as i32),
        level: Some(level),
        stage: stages.iter().map(|s| s.to_string()).collect(),
    };
    let names = |n: Net| n.layer_names();
    assert_eq!(
        names(build_state(text, st(0, &[])).unwrap()),
        ["in", "x_in_0_split", "b", "d"]
    );
    assert_eq!(
        names(build_state(text, st(0, &["deploy"])).unwrap()),
        ["in", "a"]
    );
    assert_eq!(
        names(build_state(text, st(2, &[])).unwrap()),
        ["in", "x_in_0_split", "b", "c"]
    );
    let both = "layer { name: \"in\" type: \"Input\" top: \"x\" include { phase: TEST } exclude { phase: TRAIN } }";
    let err = build(both, Phase::Test).err().unwrap().to_string();
    assert!(err.contains("both include and exclude"), "{err}");
}

#[test]
fn need_backward_follows_lr_mult_propagate_down_and_loss() {
    let text = r#"
layer { name: "in" type: "Input" top: "x" top: "y" input_param { shape { dim: 2 dim: 4 } shape { dim: 2 } } }
layer { name: "frozen" type: "InnerProduct" bottom: "x" top: "h"
  param { lr_mult: 0 } param { lr_mult: 0 } inner_product_param { num_output: 4 } }
layer { name: "train" type: "InnerProduct" bottom: "h" top: "s" inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "y" top: "loss" }
"#;
    let net = build(text, Phase::Train).unwrap();
    let nb = |n: &str| net.layers[net.layer_index(n).unwrap()].need_backward;
    assert!(
        !nb("frozen"),
        "all-frozen layer on the input needs no backward"
    );
    assert!(nb("train"));
    assert!(nb("loss"));
    let train = &net.layers[net.layer_index("train").unwrap()];
    assert_eq!(
        train.bottom_need_backward,
        [false],
        "no gradient flows into the frozen layer's output"
    );
    let loss = &net.layers[net.layer_index("loss").unwrap()];
    assert_eq!(
        loss.bottom_need_backward,
        [true, false],
        "labels get no gradient"
    );

    // force_backward turns everything on except label bottoms.
    let forced = format!("force_backward: true\n{text}");
    let net = build(&forced, Phase::Train).unwrap();
    let loss = &net.layers[net.layer_index("loss").unwrap()];
    assert_eq!(loss.bottom_need_backward, [true, false]);
    assert!(net.layers[net.layer_index("frozen").unwrap()].need_backward);
}

/// The seed's net (the user's "frozen" repro): with its ImageData layers replaced by an Input
/// layer, every layer reports that it needs no backward, as Caffe's log shows, because the only
/// loss has loss_weight 0 and every propagate_down is false.
#[test]
fn seed_net_needs_no_backward_anywhere() {
    quiet();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seed_net.prototxt");
    let text = std::fs::read_to_string(&path).unwrap();
    let opts = TextOptions {
        allow_unknown_fields: true,
    };
    let mut p: NetParameter = parse_net_text(&text, "seed_net.prototxt", opts).unwrap();
    p.layer.retain(|l| l.r#type() != "ImageData");
    let input = parse_net_text(
        "layer { name: \"data\" type: \"Input\" top: \"data\" top: \"label\" input_param { shape { dim: 2 dim: 3 dim: 32 dim: 32 } shape { dim: 2 } } }",
        "input",
        TextOptions::default(),
    )
    .unwrap();
    let mut layers: Vec<LayerParameter> = input.layer;
    layers.append(&mut p.layer);
    p.layer = layers;
    for phase in [Phase::Train, Phase::Test] {
        let net = Net::new(
            &p,
            &NetState {
                phase: Some(phase as i32),
                ..Default::default()
            },
            &mut CaffeRng::new(1),
            BuildOptions { verbose: false },
        )
        .unwrap();
        for e in &net.layers {
            assert!(
                !e.need_backward,
                "{} should not need backward",
                e.param.name()
            );
        }
    }
}

const SHARED: &str = r#"
layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip_a" type: "InnerProduct" bottom: "a" top: "ya"
  param { name: "w" } param { name: "bias" } inner_product_param { num_output: 4 weight_filler { type: "gaussian" } } }
layer { name: "ip_b" type: "InnerProduct" bottom: "b" top: "yb"
  param { name: "w" } param { name: "bias" } inner_product_param { num_output: 4 } }
"#;

#[test]
fn named_params_are_shared() {
    let net = build(SHARED, Phase::Train).unwrap();
    assert_eq!(net.params.len(), 4);
    assert_eq!(
        net.learnable.len(),
        2,
        "sharers are not separately learnable"
    );
    let wa: &BlobRef = &net.layers[1].layer.blobs()[0];
    let wb: &BlobRef = &net.layers[2].layer.blobs()[0];
    assert!(wa.shares_data_with(wb));
    assert_eq!(net.params[2].owner, Some(0));
    // Shapes must agree under STRICT sharing.
    let bad = SHARED.replace("num_output: 4 }", "num_output: 5 }");
    let err = build(&bad, Phase::Train).err().unwrap().to_string();
    assert!(
        err.contains(
            "Cannot share param 'w' owned by layer 'ip_a' with layer 'ip_b'; shape mismatch"
        ),
        "{err}"
    );
    // Conflicting explicit lr_mult on owner and sharer is an error.
    let lr = SHARED
        .replace("param { name: \"w\" } param { name: \"bias\" } inner_product_param { num_output: 4 weight", "param { name: \"w\" lr_mult: 1 } param { name: \"bias\" } inner_product_param { num_output: 4 weight")
        .replace("param { name: \"w\" } param { name: \"bias\" } inner_product_param { num_output: 4 }", "param { name: \"w\" lr_mult: 2 } param { name: \"bias\" } inner_product_param { num_output: 4 }");
    let err = build(&lr, Phase::Train).err().unwrap().to_string();
    assert!(err.contains("mismatched lr_mult"), "{err}");
}

#[test]
fn wiring_errors_name_the_layer() {
    let unknown = "layer { name: \"r\" type: \"ReLU\" bottom: \"nope\" top: \"r\" }";
    let err = build(unknown, Phase::Train).err().unwrap().to_string();
    assert!(
        err.contains("Unknown bottom blob 'nope' (layer 'r', bottom index 0)"),
        "{err}"
    );
    let dup = "layer { name: \"in\" type: \"Input\" top: \"x\" input_param { shape { dim: 1 } } }\nlayer { name: \"in2\" type: \"Input\" top: \"x\" input_param { shape { dim: 1 } } }";
    let err = build(dup, Phase::Train).err().unwrap().to_string();
    assert!(
        err.contains("Top blob 'x' produced by multiple sources"),
        "{err}"
    );
    let ty = "layer { name: \"q\" type: \"Quantum\" }";
    let err = format!("{:#}", build(ty, Phase::Train).err().unwrap());
    assert!(
        err.contains("unknown layer type 'Quantum'") && err.contains("Convolution"),
        "{err}"
    );
    let pd = "layer { name: \"in\" type: \"Input\" top: \"x\" input_param { shape { dim: 1 } } }\nlayer { name: \"r\" type: \"ReLU\" bottom: \"x\" top: \"y\" propagate_down: true propagate_down: false }";
    let err = build(pd, Phase::Train).err().unwrap().to_string();
    assert!(err.contains("propagate_down"), "{err}");
}

#[test]
fn weights_load_by_name_with_a_report_and_caffe_wording_on_mismatch() {
    let net = build(LENET_LIKE, Phase::Train).unwrap();
    let mut saved = net.to_proto(false);
    // A fresh net with a different seed loads the saved weights exactly.
    quiet();
    let p = parse_net_text(LENET_LIKE, "x", TextOptions::default()).unwrap();
    let other = Net::new(
        &p,
        &NetState {
            phase: Some(0),
            ..Default::default()
        },
        &mut CaffeRng::new(99),
        BuildOptions { verbose: false },
    )
    .unwrap();
    saved.layer.push(LayerParameter {
        name: Some("not_in_net".into()),
        ..Default::default()
    });
    let report = other.copy_trained_layers_from(&saved).unwrap();
    assert_eq!(report.ignored, ["not_in_net"]);
    assert_eq!(report.layers.len(), 2);
    let a = net.layers[net.layer_index("ip1").unwrap()].layer.blobs()[0].data_vec();
    let b = other.layers[other.layer_index("ip1").unwrap()]
        .layer
        .blobs()[0]
        .data_vec();
    assert_eq!(a, b);
    // Shape mismatch names both shapes.
    let bigger = LENET_LIKE.replace("num_output: 3", "num_output: 7");
    let p = parse_net_text(&bigger, "x", TextOptions::default()).unwrap();
    let third = Net::new(
        &p,
        &NetState {
            phase: Some(0),
            ..Default::default()
        },
        &mut CaffeRng::new(1),
        BuildOptions { verbose: false },
    )
    .unwrap();
    let err = third
        .copy_trained_layers_from(&saved)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("Cannot copy param 0 weights from layer 'ip2'; shape mismatch.  Source param shape is 3 5 (15); target param shape is 7 5 (35)"), "{err}");
}
