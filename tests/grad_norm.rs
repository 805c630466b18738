//! Gradient checks and behaviour tests for the normalisation group: BatchNorm, Scale, Bias,
//! LRN, MVN, PReLU.

use anyhow::Result;
use crema::blob::BlobRef;
use crema::net::{BuildOptions, Net};
use crema::proto::caffe::{NetState, Phase};
use crema::proto::{parse_net_text, TextOptions};
use crema::rng::CaffeRng;
use crema::util::gradcheck::GradCheck;

fn no_fill(_: &str, _: &BlobRef, _: &mut CaffeRng) {}

/// A net with one Input per (name, shape) and the layer `L` under test.
fn net(inputs: &[(&str, &[usize])], layer: &str) -> String {
    let mut s = String::from("name: \"t\"\nforce_backward: true\n");
    for (name, shape) in inputs {
        let dims: String = shape.iter().map(|d| format!(" dim: {d}")).collect();
        s += &format!(
            "layer {{ name: \"in_{name}\" type: \"Input\" top: \"{name}\" input_param {{ shape {{{dims} }} }} }}\n"
        );
    }
    s + layer + "\n"
}

fn check(gc: &GradCheck, text: &str) {
    let r = gc
        .check(text, "L", no_fill)
        .unwrap_or_else(|e| panic!("{e:#}\nnet:\n{text}"));
    assert!(r.checked > 0);
}

fn build(text: &str, phase: Phase, seed: u64) -> Result<Net> {
    let param = parse_net_text(text, "<test>", TextOptions::default())?;
    let state = NetState {
        phase: Some(phase as i32),
        ..Default::default()
    };
    Net::new(
        &param,
        &state,
        &mut CaffeRng::new(seed),
        BuildOptions { verbose: false },
    )
}

fn random(n: usize, rng: &mut CaffeRng) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

// ---------------------------------------------------------------------------------------------
// BatchNorm

#[test]
fn batch_norm_train_gradients() {
    let gc = GradCheck::default();
    for shape in [&[2usize, 3, 4, 5][..], &[5, 3], &[3, 2, 3], &[1, 2, 1, 3]] {
        let layer = r#"layer { name: "L" type: "BatchNorm" bottom: "x" top: "y" }"#;
        check(&gc, &net(&[("x", shape)], layer));
    }
    // Explicit training mode in the TEST phase, non-default eps.
    let gc = GradCheck {
        phase: Phase::Test,
        ..Default::default()
    };
    let layer = r#"layer { name: "L" type: "BatchNorm" bottom: "x" top: "y"
        batch_norm_param { use_global_stats: false eps: 1e-3 } }"#;
    check(&gc, &net(&[("x", &[3, 2, 2, 3])], layer));
}

/// Global mode depends on the stored statistics, which Caffe never differentiates; the generic
/// checker would perturb them too, so this one checks the bottom gradient only.
fn check_bottom_only(text: &str, phase: Phase) {
    let mut net = build(text, phase, 5).unwrap();
    let mut rng = CaffeRng::new(9);
    let x = net.blob_by_name("x").unwrap().clone();
    let xv = random(x.count(), &mut rng);
    x.set_data(&xv).unwrap();
    net.forward(&mut rng).unwrap();
    let y = net.blob_by_name("y").unwrap().clone();
    let w = random(y.count(), &mut rng);
    y.set_diff(&w).unwrap();
    let li = net.layer_index("L").unwrap();
    net.backward_layer(&mut rng, li).unwrap();
    let analytic = x.diff_vec();
    let step = 1e-2f32;
    let objective = |v: &[f32], net: &mut Net| -> f64 {
        x.set_data(v).unwrap();
        net.forward(&mut CaffeRng::new(1)).unwrap();
        y.data_vec()
            .iter()
            .zip(&w)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum()
    };
    for i in 0..x.count() {
        let mut v = xv.clone();
        v[i] += step;
        let plus = objective(&v, &mut net);
        v[i] -= 2.0 * step;
        let minus = objective(&v, &mut net);
        let numeric = ((plus - minus) / (2.0 * step as f64)) as f32;
        let scale = analytic[i].abs().max(numeric.abs()).max(1.0);
        assert!(
            (analytic[i] - numeric).abs() / scale < 1e-2,
            "at {i}: analytic {}, numeric {numeric}",
            analytic[i]
        );
    }
}

#[test]
fn batch_norm_global_gradients() {
    // Stored sums with factor 2: mean = sums/2, var = var sums/2.
    let layer = r#"layer { name: "L" type: "BatchNorm" bottom: "x" top: "y"
        blobs { shape { dim: 3 } data: 0.2 data: -0.4 data: 1.0 }
        blobs { shape { dim: 3 } data: 1.0 data: 0.5 data: 3.0 }
        blobs { shape { dim: 1 } data: 2.0 } }"#;
    check_bottom_only(&net(&[("x", &[2, 3, 2, 3])], layer), Phase::Test);
    check_bottom_only(&net(&[("x", &[4, 3])], layer), Phase::Test);
    let layer_train = layer.replace(
        "top: \"y\"",
        "top: \"y\" batch_norm_param { use_global_stats: true }",
    );
    check_bottom_only(&net(&[("x", &[2, 3, 5])], &layer_train), Phase::Train);
}

#[test]
fn batch_norm_statistics_and_param_specs() {
    let text = net(
        &[("x", &[4, 2, 3])],
        r#"layer { name: "L" type: "BatchNorm" bottom: "x" top: "y"
        batch_norm_param { moving_average_fraction: 0.5 } }"#,
    );
    let mut net = build(&text, Phase::Train, 1).unwrap();
    let li = net.layer_index("L").unwrap();
    {
        let lp = net.layers[li].layer.layer_param();
        assert_eq!(lp.param.len(), 3);
        assert!(lp
            .param
            .iter()
            .all(|p| p.lr_mult() == 0.0 && p.decay_mult.is_none()));
        // The net's own copy has no specs: the layer still "needs backward" (Caffe's quirk).
        assert!(net.layers[li].param.param.is_empty());
        assert!(net.learnable.iter().all(|l| l.lr_mult == 0.0));
    }
    let mut rng = CaffeRng::new(2);
    let x = random(24, &mut rng);
    net.set_input("x", &x).unwrap();
    net.forward(&mut rng).unwrap();
    net.forward(&mut rng).unwrap();
    let blobs = net.layers[li].layer.blobs().to_vec();
    // Two updates with maf 0.5: factor = 0.5*1 + 1; sums = 1.5 * batch statistic.
    assert_eq!(blobs[2].data_vec(), vec![1.5]);
    let m = 12f64;
    for c in 0..2 {
        let vals: Vec<f64> = (0..4)
            .flat_map(|n| (0..3).map(move |s| (n * 2 + c) * 3 + s))
            .map(|i| x[i] as f64)
            .collect();
        let mean = vals.iter().sum::<f64>() / m;
        let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m;
        assert!((blobs[0].data_vec()[c] as f64 - 1.5 * mean).abs() < 1e-5);
        assert!((blobs[1].data_vec()[c] as f64 - 1.5 * var * m / (m - 1.0)).abs() < 1e-5);
    }

    // TEST phase: global statistics, nothing written.
    let mut test = build(&text, Phase::Test, 1).unwrap();
    let lt = test.layer_index("L").unwrap();
    test.set_input("x", &x).unwrap();
    test.forward(&mut rng).unwrap();
    let b = test.layers[lt].layer.blobs().to_vec();
    assert!(b.iter().all(|b| b.data_vec().iter().all(|&v| v == 0.0)));
    // Untrained statistics (factor 0): y = x / sqrt(eps).
    let y = test.blob_by_name("y").unwrap().data_vec();
    assert!((y[5] - x[5] / 1e-5f32.sqrt()).abs() < 1e-3 * y[5].abs().max(1.0));

    let bad = net_text_with_param("param { lr_mult: 1 }");
    let err = build(&bad, Phase::Train, 1)
        .err()
        .expect("lr_mult 1 must be refused");
    assert!(format!("{err:#}")
        .contains("Cannot configure batch normalization statistics as layer parameters."));
    // A ParamSpec without lr_mult means lr_mult 1: refused too, as in Caffe.
    assert!(build(
        &net_text_with_param("param { name: \"a\" }"),
        Phase::Train,
        1
    )
    .is_err());
    // Explicit zero specs are accepted, missing ones appended.
    let ok = build(
        &net_text_with_param("param { lr_mult: 0 decay_mult: 0 }"),
        Phase::Train,
        1,
    )
    .unwrap();
    let lp = ok.layers[ok.layer_index("L").unwrap()]
        .layer
        .layer_param()
        .clone();
    assert_eq!(lp.param.len(), 3);
    assert_eq!(lp.param[0].decay_mult(), 0.0);
    assert!(lp.param[2].decay_mult.is_none());
}

fn net_text_with_param(spec: &str) -> String {
    net(
        &[("x", &[2, 2])],
        &format!(r#"layer {{ name: "L" type: "BatchNorm" bottom: "x" top: "y" {spec} }}"#),
    )
}

#[test]
fn batch_norm_reports_whether_it_updates_statistics() {
    use crema::layers::batch_norm::BatchNormLayer;
    use crema::proto::caffe::{BatchNormParameter, LayerParameter};
    let mut p = LayerParameter {
        name: Some("bn".into()),
        r#type: Some("BatchNorm".into()),
        ..Default::default()
    };
    p.phase = Some(Phase::Train as i32);
    assert!(BatchNormLayer::new(&p).updates_statistics());
    p.phase = Some(Phase::Test as i32);
    assert!(!BatchNormLayer::new(&p).updates_statistics());
    p.batch_norm_param = Some(BatchNormParameter {
        use_global_stats: Some(false),
        ..Default::default()
    });
    assert!(BatchNormLayer::new(&p).updates_statistics());
    p.phase = Some(Phase::Train as i32);
    p.batch_norm_param = Some(BatchNormParameter {
        use_global_stats: Some(true),
        ..Default::default()
    });
    assert!(!BatchNormLayer::new(&p).updates_statistics());
}

// ---------------------------------------------------------------------------------------------
// In-place equivalence: an in-place layer must give the same top, bottom diff and param diffs
// as the same layer writing a separate top.

fn inplace_matches(shape: &[usize], layer_body: &str, phase: Phase) {
    let sep = net(
        &[("x", shape)],
        &format!(r#"layer {{ name: "L" bottom: "x" top: "y" {layer_body} }}"#),
    );
    let inp = net(
        &[("x", shape)],
        &format!(r#"layer {{ name: "L" bottom: "x" top: "x" {layer_body} }}"#),
    );
    let mut a = build(&sep, phase, 3).unwrap();
    let mut b = build(&inp, phase, 3).unwrap();
    let mut rng = CaffeRng::new(4);
    let n: usize = shape.iter().product();
    let x = random(n, &mut rng);
    let dy = random(n, &mut rng);
    a.set_input("x", &x).unwrap();
    b.set_input("x", &x).unwrap();
    a.forward(&mut CaffeRng::new(1)).unwrap();
    b.forward(&mut CaffeRng::new(1)).unwrap();
    let (ya, yb) = (
        a.blob_by_name("y").unwrap().clone(),
        b.blob_by_name("x").unwrap().clone(),
    );
    assert_eq!(ya.data_vec(), yb.data_vec(), "{layer_body}: forward");
    ya.set_diff(&dy).unwrap();
    yb.set_diff(&dy).unwrap();
    a.clear_param_diffs();
    b.clear_param_diffs();
    a.backward(&mut CaffeRng::new(1)).unwrap();
    b.backward(&mut CaffeRng::new(1)).unwrap();
    assert_eq!(
        a.blob_by_name("x").unwrap().diff_vec(),
        yb.diff_vec(),
        "{layer_body}: bottom diff"
    );
    let (la, lb) = (a.layer_index("L").unwrap(), b.layer_index("L").unwrap());
    for (pa, pb) in a.layers[la]
        .layer
        .blobs()
        .iter()
        .zip(b.layers[lb].layer.blobs())
    {
        assert_eq!(pa.diff_vec(), pb.diff_vec(), "{layer_body}: param diff");
        assert_eq!(pa.data_vec(), pb.data_vec(), "{layer_body}: param data");
    }
}

#[test]
fn in_place_layers_match_separate_tops() {
    inplace_matches(&[2, 3, 4], r#"type: "BatchNorm""#, Phase::Train);
    inplace_matches(&[2, 3, 4], r#"type: "BatchNorm""#, Phase::Test);
    inplace_matches(
        &[2, 3, 4],
        r#"type: "Scale" scale_param { bias_term: true filler { type: "uniform" } }"#,
        Phase::Train,
    );
    inplace_matches(
        &[3, 2, 2],
        r#"type: "Bias" bias_param { filler { type: "uniform" } }"#,
        Phase::Train,
    );
    inplace_matches(&[2, 3, 2, 2], r#"type: "MVN""#, Phase::Train);
    inplace_matches(&[2, 3, 2, 2], r#"type: "PReLU""#, Phase::Train);
    inplace_matches(
        &[2, 3, 2, 2],
        r#"type: "PReLU" prelu_param { channel_shared: true }"#,
        Phase::Train,
    );
}

// ---------------------------------------------------------------------------------------------
// Scale and Bias

#[test]
fn scale_gradients() {
    let gc = GradCheck::default();
    let x = &[2usize, 3, 4, 5][..];
    let uniform = r#"filler { type: "uniform" min: -1 max: 1 }"#;
    for params in [
        format!("axis: 1 {uniform}"),
        format!("axis: 1 bias_term: true {uniform} bias_filler {{ type: \"uniform\" }}"),
        format!("axis: 0 {uniform}"),
        format!("axis: 2 num_axes: 2 {uniform} bias_term: true"),
        format!("axis: -1 {uniform}"),
        format!("num_axes: 0 bias_term: true {uniform}"),
        format!("axis: 2 num_axes: 0 {uniform}"),
        format!("axis: 0 num_axes: 2 {uniform}"),
        format!("axis: 1 num_axes: -1 {uniform} bias_term: true"),
        format!("axis: 0 num_axes: -1 {uniform}"),
    ] {
        let layer = format!(
            r#"layer {{ name: "L" type: "Scale" bottom: "x" top: "y" scale_param {{ {params} }} }}"#
        );
        check(&gc, &net(&[("x", x)], &layer));
    }
    // Scale (and bias) from a second bottom.
    for (s, params) in [
        (&[3usize][..], "axis: 1 bias_term: true"),
        (&[3, 4][..], "axis: 1"),
        (&[2, 3][..], "axis: 0 bias_term: true"),
        (&[4, 5][..], "axis: -2"),
    ] {
        let layer = format!(
            r#"layer {{ name: "L" type: "Scale" bottom: "x" bottom: "s" top: "y" scale_param {{ {params} }} }}"#
        );
        check(&gc, &net(&[("x", x), ("s", s)], &layer));
    }
}

#[test]
fn scale_param_diff_accumulation_matches_caffe() {
    // Caffe overwrites a learned scale's diff in the element-wise case and when outer == 1
    // with a vector scale; it accumulates otherwise.
    for (shape, params, accumulates) in [
        (&[2usize, 3, 4][..], "axis: 1", true),
        (&[1, 3, 4][..], "axis: 1", false),
        (&[1, 3, 4][..], "axis: 0 num_axes: -1", false),
        (&[1, 3, 4][..], "num_axes: 0", true),
        (&[2, 3][..], "axis: 1", true),
    ] {
        let text = net(
            &[("x", shape)],
            &format!(
                r#"layer {{ name: "L" type: "Scale" bottom: "x" top: "y" scale_param {{ {params} bias_term: true }} }}"#
            ),
        );
        let mut n = build(&text, Phase::Train, 1).unwrap();
        let mut rng = CaffeRng::new(3);
        let count: usize = shape.iter().product();
        n.set_input("x", &random(count, &mut rng)).unwrap();
        n.forward(&mut rng).unwrap();
        n.blob_by_name("y")
            .unwrap()
            .set_diff(&random(count, &mut rng))
            .unwrap();
        n.clear_param_diffs();
        n.backward(&mut rng).unwrap();
        let li = n.layer_index("L").unwrap();
        let blobs = n.layers[li].layer.blobs().to_vec();
        let once: Vec<Vec<f32>> = blobs.iter().map(|b| b.diff_vec()).collect();
        n.backward(&mut rng).unwrap();
        let scale_twice = blobs[0].diff_vec();
        let want: Vec<f32> = once[0]
            .iter()
            .map(|v| if accumulates { 2.0 * v } else { *v })
            .collect();
        assert_eq!(scale_twice, want, "{params} on {shape:?}");
        // The bias always accumulates.
        let bias_twice = blobs[1].diff_vec();
        assert_eq!(
            bias_twice,
            once[1].iter().map(|v| 2.0 * v).collect::<Vec<_>>()
        );
    }
}

#[test]
fn bias_gradients() {
    let gc = GradCheck::default();
    let x = &[2usize, 3, 4, 5][..];
    for params in [
        "axis: 1",
        "axis: 0 num_axes: 2",
        "axis: 2 num_axes: -1",
        "num_axes: 0",
        "axis: -1",
    ] {
        let layer = format!(
            r#"layer {{ name: "L" type: "Bias" bottom: "x" top: "y" bias_param {{ {params} filler {{ type: "uniform" }} }} }}"#
        );
        check(&gc, &net(&[("x", x)], &layer));
    }
    for (b, params) in [
        (&[3usize][..], "axis: 1"),
        (&[3, 4, 5][..], "axis: 1"),
        (&[2][..], "axis: 0"),
    ] {
        let layer = format!(
            r#"layer {{ name: "L" type: "Bias" bottom: "x" bottom: "b" top: "y" bias_param {{ {params} }} }}"#
        );
        check(&gc, &net(&[("x", x), ("b", b)], &layer));
    }
}

#[test]
fn scale_and_bias_configuration_errors() {
    let bad = [
        r#"layer { name: "L" type: "Scale" bottom: "x" top: "y" scale_param { axis: 4 } }"#,
        r#"layer { name: "L" type: "Scale" bottom: "x" top: "y" scale_param { axis: 2 num_axes: 3 } }"#,
        r#"layer { name: "L" type: "Scale" bottom: "x" top: "y" scale_param { num_axes: -2 } }"#,
        r#"layer { name: "L" type: "Bias" bottom: "x" top: "y" bias_param { axis: 3 num_axes: 2 } }"#,
    ];
    for layer in bad {
        assert!(
            build(&net(&[("x", &[2, 3, 4, 5])], layer), Phase::Train, 1).is_err(),
            "{layer}"
        );
    }
    // Second bottom not matching bottom[0]'s axes.
    let layer = r#"layer { name: "L" type: "Scale" bottom: "x" bottom: "s" top: "y" }"#;
    assert!(build(
        &net(&[("x", &[2, 3, 4]), ("s", &[4])], layer),
        Phase::Train,
        1
    )
    .is_err());
    let layer = r#"layer { name: "L" type: "Bias" bottom: "x" bottom: "s" top: "y" bias_param { axis: 1 } }"#;
    assert!(build(
        &net(&[("x", &[2, 3, 4]), ("s", &[3, 5])], layer),
        Phase::Train,
        1
    )
    .is_err());
}

// ---------------------------------------------------------------------------------------------
// LRN

#[test]
fn lrn_gradients() {
    let gc = GradCheck::default();
    for (shape, params) in [
        (
            &[2usize, 7, 3, 4][..],
            "local_size: 5 alpha: 0.5 beta: 0.75 k: 2",
        ),
        (&[2, 3, 2, 3][..], "local_size: 3"),
        (&[1, 2, 3, 3][..], "local_size: 5 alpha: 2 beta: 0.5"),
        (
            &[2, 3, 5, 4][..],
            "local_size: 3 norm_region: WITHIN_CHANNEL alpha: 2",
        ),
        (
            &[1, 2, 3, 3][..],
            "local_size: 5 norm_region: WITHIN_CHANNEL alpha: 3 beta: 0.6",
        ),
        (
            &[2, 2, 4, 1][..],
            "local_size: 3 norm_region: WITHIN_CHANNEL k: 7",
        ),
    ] {
        let layer = format!(
            r#"layer {{ name: "L" type: "LRN" bottom: "x" top: "y" lrn_param {{ {params} }} }}"#
        );
        check(&gc, &net(&[("x", shape)], &layer));
    }
}

/// WITHIN_CHANNEL, checked against a direct evaluation of Caffe's composition (square, AVE
/// pooling with pad (n-1)/2 whose divisor counts padded positions, power, product).
#[test]
fn lrn_within_channel_matches_composition() {
    let (h, w, n, alpha, beta) = (4usize, 3usize, 3usize, 2.0f32, 0.75f32);
    let text = net(
        &[("x", &[1, 1, h, w])],
        &format!(
            r#"layer {{ name: "L" type: "LRN" bottom: "x" top: "y" lrn_param {{ local_size: {n} alpha: {alpha} beta: {beta} norm_region: WITHIN_CHANNEL k: 5 }} }}"#
        ),
    );
    let mut net = build(&text, Phase::Train, 1).unwrap();
    let mut rng = CaffeRng::new(7);
    let x = random(h * w, &mut rng);
    net.set_input("x", &x).unwrap();
    net.forward(&mut rng).unwrap();
    let y = net.blob_by_name("y").unwrap().data_vec();
    let pad = (n - 1) / 2;
    for ph in 0..h {
        for pw in 0..w {
            let mut s = 0f32;
            for hh in ph as isize - pad as isize..=(ph + pad) as isize {
                for ww in pw as isize - pad as isize..=(pw + pad) as isize {
                    if hh >= 0 && ww >= 0 && (hh as usize) < h && (ww as usize) < w {
                        let v = x[hh as usize * w + ww as usize];
                        s += v * v;
                    }
                }
            }
            let want = x[ph * w + pw] * (1.0 + alpha * s / (n * n) as f32).powf(-beta);
            let got = y[ph * w + pw];
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1e-3),
                "({ph},{pw}): {got} vs {want}"
            );
        }
    }
}

#[test]
fn lrn_configuration_errors() {
    let even =
        r#"layer { name: "L" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 4 } }"#;
    assert!(build(&net(&[("x", &[1, 3, 2, 2])], even), Phase::Train, 1).is_err());
    let three_d = r#"layer { name: "L" type: "LRN" bottom: "x" top: "y" }"#;
    assert!(build(&net(&[("x", &[1, 3, 2])], three_d), Phase::Train, 1).is_err());
    let in_place = r#"layer { name: "L" type: "LRN" bottom: "x" top: "x" }"#;
    assert!(build(&net(&[("x", &[1, 3, 2, 2])], in_place), Phase::Train, 1).is_err());
}

// ---------------------------------------------------------------------------------------------
// MVN

#[test]
fn mvn_gradients() {
    let gc = GradCheck::default();
    for nv in [true, false] {
        for ac in [true, false] {
            for shape in [&[2usize, 3, 4, 5][..], &[3, 4], &[2, 2, 3]] {
                let layer = format!(
                    r#"layer {{ name: "L" type: "MVN" bottom: "x" top: "y" mvn_param {{ normalize_variance: {nv} across_channels: {ac} }} }}"#
                );
                check(&gc, &net(&[("x", shape)], &layer));
            }
        }
    }
}

#[test]
fn mvn_top_takes_the_legacy_4d_shape() {
    let text = net(
        &[("x", &[3, 4])],
        r#"layer { name: "L" type: "MVN" bottom: "x" top: "y" mvn_param { across_channels: true } }"#,
    );
    let mut net = build(&text, Phase::Train, 1).unwrap();
    assert_eq!(net.blob_by_name("y").unwrap().shape(), vec![3, 4, 1, 1]);
    net.set_input("x", &[1., 2., 3., 6., 0., 0., 1., 1., -1., 1., -1., 1.])
        .unwrap();
    net.forward(&mut CaffeRng::new(1)).unwrap();
    let y = net.blob_by_name("y").unwrap().data_vec();
    // Row 0: mean 3, deviations -2,-1,0,3, std sqrt(14/4).
    let sd = (14f32 / 4.0).sqrt() + 1e-9;
    assert!((y[0] + 2.0 / sd).abs() < 1e-6 && (y[3] - 3.0 / sd).abs() < 1e-6);
    assert_eq!(&y[8..], &[-1., 1., -1., 1.]);
    let five = net_text_5d();
    assert!(build(&five, Phase::Train, 1).is_err());
}

fn net_text_5d() -> String {
    net(
        &[("x", &[1, 2, 1, 2, 2])],
        r#"layer { name: "L" type: "MVN" bottom: "x" top: "y" }"#,
    )
}

// ---------------------------------------------------------------------------------------------
// PReLU

#[test]
fn prelu_gradients() {
    // Points within the step of the kink at 0 are skipped.
    let gc = GradCheck {
        kink: Some(0.02),
        ..Default::default()
    };
    for (shape, params) in [
        (&[2usize, 3, 4, 5][..], ""),
        (&[2, 3, 4, 5][..], "channel_shared: true"),
        (
            &[3, 4][..],
            r#"filler { type: "uniform" min: -0.5 max: 0.5 }"#,
        ),
        (
            &[2, 3, 3][..],
            r#"channel_shared: true filler { type: "constant" value: -0.3 }"#,
        ),
    ] {
        let layer = format!(
            r#"layer {{ name: "L" type: "PReLU" bottom: "x" top: "y" prelu_param {{ {params} }} }}"#
        );
        check(&gc, &net(&[("x", shape)], &layer));
    }
}

#[test]
fn prelu_slope_diff_accumulates_and_shapes() {
    let text = net(
        &[("x", &[2, 3, 2])],
        r#"layer { name: "L" type: "PReLU" bottom: "x" top: "y" }"#,
    );
    let mut n = build(&text, Phase::Train, 1).unwrap();
    let li = n.layer_index("L").unwrap();
    let slope = n.layers[li].layer.blobs()[0].clone();
    assert_eq!(slope.shape(), vec![3]);
    assert_eq!(slope.data_vec(), vec![0.25; 3]);
    n.set_input("x", &[-1., 2., -3., 4., -5., 6., 1., -2., 3., -4., 5., -6.])
        .unwrap();
    n.forward(&mut CaffeRng::new(1)).unwrap();
    assert_eq!(
        &n.blob_by_name("y").unwrap().data_vec()[..4],
        &[-0.25, 2., -0.75, 4.]
    );
    n.blob_by_name("y").unwrap().fill_diff(1.0);
    n.clear_param_diffs();
    n.backward(&mut CaffeRng::new(1)).unwrap();
    n.backward(&mut CaffeRng::new(1)).unwrap();
    // Channel 0 holds -1, 2, 1, -2: sum of negatives -3, twice.
    assert_eq!(slope.diff_vec()[0], -6.0);
    let shared = net(
        &[("x", &[2, 3])],
        r#"layer { name: "L" type: "PReLU" bottom: "x" top: "y" prelu_param { channel_shared: true } }"#,
    );
    let s = build(&shared, Phase::Train, 1).unwrap();
    assert_eq!(
        s.layers[s.layer_index("L").unwrap()].layer.blobs()[0].shape(),
        Vec::<usize>::new()
    );
    let one_axis = net(
        &[("x", &[4])],
        r#"layer { name: "L" type: "PReLU" bottom: "x" top: "y" }"#,
    );
    assert!(build(&one_axis, Phase::Train, 1).is_err());
}

// ---------------------------------------------------------------------------------------------
// Determinism: blobs large enough to be split over threads give the same bits on 1 or 3.

fn run_layer_outputs(shape: &[usize], layer_body: &str) -> Vec<Vec<f32>> {
    let text = net(
        &[("x", shape)],
        &format!(r#"layer {{ name: "L" bottom: "x" top: "y" {layer_body} }}"#),
    );
    let mut n = build(&text, Phase::Train, 3).unwrap();
    let mut rng = CaffeRng::new(4);
    let count: usize = shape.iter().product();
    n.set_input("x", &random(count, &mut rng)).unwrap();
    n.forward(&mut rng).unwrap();
    let y = n.blob_by_name("y").unwrap().clone();
    y.set_diff(&random(y.count(), &mut rng)).unwrap();
    n.clear_param_diffs();
    n.backward(&mut rng).unwrap();
    let li = n.layer_index("L").unwrap();
    let mut out = vec![y.data_vec(), n.blob_by_name("x").unwrap().diff_vec()];
    for b in n.layers[li].layer.blobs() {
        out.push(b.data_vec());
        out.push(b.diff_vec());
    }
    out
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let shape = [4usize, 8, 33, 35];
    for body in [
        r#"type: "BatchNorm""#,
        r#"type: "Scale" scale_param { bias_term: true filler { type: "uniform" } }"#,
        r#"type: "Scale" scale_param { num_axes: 0 filler { type: "uniform" } }"#,
        r#"type: "Bias" bias_param { filler { type: "uniform" } }"#,
        r#"type: "LRN" lrn_param { local_size: 5 }"#,
        r#"type: "LRN" lrn_param { local_size: 5 norm_region: WITHIN_CHANNEL }"#,
        r#"type: "MVN" mvn_param { across_channels: true }"#,
        r#"type: "PReLU" prelu_param { channel_shared: true }"#,
    ] {
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| run_layer_outputs(&shape, body))
        };
        let (one, three) = (run(1), run(3));
        for (a, b) in one.iter().zip(&three) {
            assert!(
                a.iter().zip(b).all(|(u, v)| u.to_bits() == v.to_bits()),
                "{body}"
            );
        }
    }
}
