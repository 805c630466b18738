//! BatchNorm -> Scale -> ReLU chains run fused on the CPU (`net::fuse`) give the same bits as
//! the three layers run one by one: every blob's data and diff, every parameter's diff and
//! BatchNorm's running statistics, over two forward-backward passes (so accumulation is
//! covered), in the variants of the pattern and whatever the thread count.

use crema::net::fuse::Kind;
use crema::net::{BuildOptions, Net};
use crema::proto::caffe::{NetState, Phase};
use crema::proto::{parse_net_text, TextOptions};
use crema::rng::CaffeRng;

/// conv -> BatchNorm -> Scale (-> ReLU) -> InnerProduct -> loss, with the chain's options.
fn net_text(batch: usize, bn_in_place: bool, bn: &str, scale: &str, relu: Option<&str>) -> String {
    let bn_top = if bn_in_place { "conv1" } else { "bn1" };
    let relu = relu.map_or(String::new(), |p| {
        format!(r#"layer {{ name: "relu1" type: "ReLU" bottom: "{bn_top}" top: "{bn_top}" {p} }}"#)
    });
    format!(
        r#"
name: "chain"
layer {{ name: "data" type: "Input" top: "data" top: "target"
  input_param {{ shape {{ dim: {batch} dim: 3 dim: 6 dim: 7 }} shape {{ dim: {batch} dim: 4 }} }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 5 kernel_size: 3 pad: 1 weight_filler {{ type: "gaussian" std: 0.4 }} bias_filler {{ type: "constant" value: 0.2 }} }} }}
layer {{ name: "bn1" type: "BatchNorm" bottom: "conv1" top: "{bn_top}" {bn} }}
layer {{ name: "scale1" type: "Scale" bottom: "{bn_top}" top: "{bn_top}" {scale} }}
{relu}
layer {{ name: "ip1" type: "InnerProduct" bottom: "{bn_top}" top: "ip1"
  inner_product_param {{ num_output: 4 weight_filler {{ type: "gaussian" std: 0.3 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip1" bottom: "target" top: "loss" }}
"#
    )
}

fn build(text: &str) -> Net {
    crema::util::glog::set_min_level(2);
    let p = parse_net_text(text, "chain.prototxt", TextOptions::default()).unwrap();
    let state = NetState {
        phase: Some(Phase::Train as i32),
        ..Default::default()
    };
    Net::new(
        &p,
        &state,
        &mut CaffeRng::new(5),
        BuildOptions { verbose: false },
    )
    .unwrap()
}

/// Everything a pass leaves behind: blobs' data and diffs, parameters' data and diffs. The
/// diff of a residual join's sum ("s") is an intermediate the fused join does not write; the
/// gradients computed from it are compared.
fn state(net: &Net) -> Vec<Vec<u32>> {
    let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let mut out = Vec::new();
    for (b, name) in net.blobs.iter().zip(&net.blob_names) {
        out.push(bits(b.data_vec()));
        if name != "s" {
            out.push(bits(b.diff_vec()));
        }
    }
    for p in &net.params {
        out.push(bits(p.blob.data_vec()));
        out.push(bits(p.blob.diff_vec()));
    }
    out
}

/// Two forward-backward passes with the inputs set, with or without fusion, on `threads`.
fn run(text: &str, fused: bool, threads: usize, global_stats_set: bool) -> (Vec<Vec<u32>>, usize) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut net = build(text);
        net.cpu_fusion = fused;
        let n = net.blob_by_name("data").unwrap().count();
        let t = net.blob_by_name("target").unwrap().count();
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 97) as f32 / 20.0 - 2.3)
            .collect();
        let y: Vec<f32> = (0..t).map(|i| (i as f32 * 0.7).sin()).collect();
        net.set_input("data", &x).unwrap();
        net.set_input("target", &y).unwrap();
        if global_stats_set {
            // Stored statistics for global mode: mean 0.1, variance 2, factor 1.
            let li = net.layer_index("bn1").unwrap();
            let b = net.layers[li].layer.blobs();
            b[0].fill_data(0.1);
            b[1].fill_data(2.0);
            b[2].fill_data(1.0);
        }
        let mut rng = CaffeRng::new(9);
        for _ in 0..2 {
            net.forward_backward(&mut rng).unwrap();
        }
        (state(&net), net.fused_chains().len())
    })
}

/// Two convolutions summed (Eltwise SUM, `sum` options) into "s", a ReLU in place on it, then
/// `consumers` InnerProduct + loss pairs reading "s" (two or more: the net splits "s").
fn join_text(sum: &str, relu: &str, consumers: usize) -> String {
    let mut t = String::from(
        r#"
name: "join"
layer { name: "data" type: "Input" top: "data" top: "target"
  input_param { shape { dim: 3 dim: 3 dim: 6 dim: 7 } shape { dim: 3 dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "c1"
  convolution_param { num_output: 5 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.4 } } }
layer { name: "conv2" type: "Convolution" bottom: "data" top: "c2"
  convolution_param { num_output: 5 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
"#,
    );
    t += &format!(
        r#"layer {{ name: "sum" type: "Eltwise" bottom: "c1" bottom: "c2" top: "s" {sum} }}
layer {{ name: "relu" type: "ReLU" bottom: "s" top: "s" {relu} }}
"#
    );
    for k in 0..consumers {
        t += &format!(
            r#"layer {{ name: "ip{k}" type: "InnerProduct" bottom: "s" top: "ip{k}"
  inner_product_param {{ num_output: 4 weight_filler {{ type: "gaussian" std: 0.2 }} }} }}
layer {{ name: "loss{k}" type: "EuclideanLoss" bottom: "ip{k}" bottom: "target" top: "loss{k}" }}
"#
        );
    }
    t
}

#[test]
fn fused_joins_give_the_same_bits() {
    let cases = [
        // The ResNet pattern.
        join_text("", "", 2),
        // Coefficients, a leaky ReLU, three consumers.
        join_text(
            "eltwise_param { operation: SUM coeff: 1 coeff: -0.5 }",
            "relu_param { negative_slope: 0.1 }",
            3,
        ),
        // No Split after the ReLU.
        join_text("", "", 1),
        // Only the first input gets a gradient.
        join_text("propagate_down: true propagate_down: false", "", 2),
    ];
    for (i, text) in cases.iter().enumerate() {
        let (want, _) = run(text, false, 1, false);
        let (got, chains) = run(text, true, 1, false);
        assert_eq!(chains, 1, "case {i}: the join was not found");
        assert_eq!(got, want, "case {i}: fused and unfused differ");
        let (three, _) = run(text, true, 3, false);
        assert_eq!(
            three, got,
            "case {i}: fused result depends on the thread count"
        );
    }
    // A PROD is no join.
    let prod = join_text("eltwise_param { operation: PROD }", "", 2);
    assert!(build(&prod).fused_chains().is_empty());
}

#[test]
fn fused_chains_give_the_same_bits() {
    let cases = [
        // The ResNet pattern: everything in place, scale with bias, ReLU.
        net_text(4, true, "", "scale_param { bias_term: true }", Some("")),
        // BatchNorm not in place; no bias; a leaky ReLU.
        net_text(3, false, "", "", Some("relu_param { negative_slope: 0.1 }")),
        // No ReLU after the Scale.
        net_text(4, true, "", "scale_param { bias_term: true }", None),
        // Global statistics.
        net_text(
            4,
            true,
            "batch_norm_param { use_global_stats: true }",
            "scale_param { bias_term: true }",
            Some(""),
        ),
        // A batch of several images per block of the per-channel sums (`sums::block_sums`),
        // the last block short.
        net_text(20, true, "", "scale_param { bias_term: true }", Some("")),
        // A frozen scale (no gradient) with a learned bias, and a batch of one image (where
        // Caffe overwrites rather than accumulates a learned scale's gradient).
        net_text(
            1,
            true,
            "",
            "param { lr_mult: 0 } param { lr_mult: 1 } scale_param { bias_term: true }",
            Some(""),
        ),
    ];
    for (i, text) in cases.iter().enumerate() {
        let global = text.contains("use_global_stats");
        let (want, _) = run(text, false, 1, global);
        let (got, chains) = run(text, true, 1, global);
        assert_eq!(chains, 1, "case {i}: the chain was not found");
        assert_eq!(got.len(), want.len());
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g, w,
                "case {i}: buffer {j} differs between fused and unfused"
            );
        }
        let (three, _) = run(text, true, 3, global);
        assert_eq!(
            three, got,
            "case {i}: fused result depends on the thread count"
        );
    }
}

#[test]
fn chains_need_the_pattern() {
    // A Scale that is not in place on the BatchNorm's top, and a ReLU with a negative slope,
    // are left alone (the ReLU) or keep the chain from forming (the Scale).
    let not_in_place = net_text(2, true, "", "", None).replace(
        r#"layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1"  }"#,
        r#"layer { name: "scale1" type: "Scale" bottom: "conv1" top: "scaled"  }"#,
    );
    assert!(not_in_place.contains("top: \"scaled\""));
    let fixed = not_in_place.replace(
        r#"bottom: "conv1" top: "ip1""#,
        r#"bottom: "scaled" top: "ip1""#,
    );
    assert!(build(&fixed).fused_chains().is_empty());
    let negative = net_text(2, true, "", "", Some("relu_param { negative_slope: -0.5 }"));
    let net = build(&negative);
    assert_eq!(net.fused_chains().len(), 1);
    match net.fused_chains()[0].kind {
        Kind::Normalize(n) => assert_eq!(n.relu, None),
        other => panic!("found {other:?}"),
    }
}
