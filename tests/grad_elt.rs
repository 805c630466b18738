//! Numeric gradient checks for the element-wise and shape layers (group "elt"), plus checks
//! that in-place runs give the out-of-place numbers and that bad configurations fail cleanly.

use crema::blob::BlobRef;
use crema::net::{BuildOptions, Net};
use crema::proto::caffe::{NetState, Phase};
use crema::proto::{parse_net_text, TextOptions};
use crema::rng::CaffeRng;
use crema::util::gradcheck::GradCheck;

/// A net with one Input per `(name, shape)` and the layer under test (named "L") after it.
fn net(inputs: &[(&str, &[usize])], layer: &str) -> String {
    let mut s =
        String::from("name: \"t\"\nforce_backward: true\nlayer { name: \"in\" type: \"Input\"");
    for (n, _) in inputs {
        s += &format!(" top: \"{n}\"");
    }
    s += " input_param {";
    for (_, shape) in inputs {
        s += " shape {";
        for d in shape.iter() {
            s += &format!(" dim: {d}");
        }
        s += " }";
    }
    s += " } }\n";
    s += &format!("layer {{ name: \"L\" {layer} }}\n");
    s
}

fn no_fill(_: &str, _: &BlobRef, _: &mut CaffeRng) {}

fn check(text: &str, gc: &GradCheck) {
    check_with(text, gc, no_fill);
}

fn check_with(text: &str, gc: &GradCheck, fill: impl Fn(&str, &BlobRef, &mut CaffeRng)) {
    let r = gc
        .check(text, "L", fill)
        .unwrap_or_else(|e| panic!("{e:#}\nnet:\n{text}"));
    assert!(r.checked > 0, "nothing was checked:\n{text}");
}

/// Caffe's own checks mostly use 1e-2 relative to max(|gradient|, 1), which lets a 1% error in
/// a gradient of size 0.25 through; these layers are smooth enough for 1e-3.
fn tight() -> GradCheck {
    GradCheck {
        threshold: 1e-3,
        ..Default::default()
    }
}

fn kink(k: f32) -> GradCheck {
    GradCheck {
        kink: Some(k),
        ..tight()
    }
}

/// Maps every value of a blob through `f`.
fn remap(b: &BlobRef, f: impl Fn(usize, f32) -> f32) {
    let v: Vec<f32> = b
        .data_vec()
        .iter()
        .enumerate()
        .map(|(i, &x)| f(i, x))
        .collect();
    b.set_data(&v).unwrap();
}

const X: &[usize] = &[2, 3, 5];
const X4: &[usize] = &[2, 3, 4, 5];

// ---- activations ----

#[test]
fn relu() {
    for slope in [
        "",
        "relu_param { negative_slope: 0.1 }",
        "relu_param { negative_slope: -0.3 }",
    ] {
        check(
            &net(
                &[("x", X)],
                &format!("type: \"ReLU\" bottom: \"x\" top: \"y\" {slope}"),
            ),
            &kink(0.02),
        );
    }
}

#[test]
fn elu() {
    for p in ["", "elu_param { alpha: 0.5 }", "elu_param { alpha: 2.5 }"] {
        check(
            &net(
                &[("x", X)],
                &format!("type: \"ELU\" bottom: \"x\" top: \"y\" {p}"),
            ),
            &kink(0.02),
        );
    }
}

#[test]
fn sigmoid_tanh_bnll_swish() {
    let gc = GradCheck {
        input_range: (-4.0, 4.0),
        ..tight()
    };
    for l in [
        "type: \"Sigmoid\"",
        "type: \"TanH\"",
        "type: \"BNLL\"",
        "type: \"Swish\"",
        "type: \"Swish\" swish_param { beta: 1.7 }",
    ] {
        check(
            &net(&[("x", X4)], &format!("{l} bottom: \"x\" top: \"y\"")),
            &gc,
        );
    }
}

#[test]
fn abs_val() {
    check(
        &net(&[("x", X)], "type: \"AbsVal\" bottom: \"x\" top: \"y\""),
        &kink(0.02),
    );
}

#[test]
fn clip() {
    // Inputs kept away from the clip points, where the gradient jumps.
    check_with(
        &net(
            &[("x", X)],
            "type: \"Clip\" bottom: \"x\" top: \"y\" clip_param { min: -0.5 max: 0.6 }",
        ),
        &GradCheck {
            input_range: (-1.5, 1.5),
            ..tight()
        },
        |_, b, _| {
            remap(b, |_, x| {
                if (x + 0.5).abs() < 0.05 || (x - 0.6).abs() < 0.05 {
                    x + 0.12
                } else {
                    x
                }
            })
        },
    );
}

#[test]
fn power() {
    let positive = || GradCheck {
        input_range: (0.4, 1.5),
        step: 1e-3,
        ..tight()
    };
    for (p, gc) in [
        ("power: 2 scale: 0.7 shift: 0.3", tight()),
        ("power: 2", tight()),
        ("power: 3 scale: -1.3", tight()),
        ("power: 0.5 scale: 1.2 shift: 0.4", positive()),
        ("power: -1.5", positive()),
        ("power: 1 scale: 2.5 shift: -1", tight()),
        ("power: 0 scale: 2 shift: 1", tight()),
        ("power: 3 scale: 0 shift: 2", tight()),
        ("", tight()),
    ] {
        check(
            &net(
                &[("x", X)],
                &format!("type: \"Power\" bottom: \"x\" top: \"y\" power_param {{ {p} }}"),
            ),
            &gc,
        );
    }
}

#[test]
fn exp() {
    for p in [
        "",
        "exp_param { base: 2 scale: 0.5 shift: 0.3 }",
        "exp_param { scale: -1.1 shift: 0.7 }",
    ] {
        check(
            &net(
                &[("x", X)],
                &format!("type: \"Exp\" bottom: \"x\" top: \"y\" {p}"),
            ),
            &tight(),
        );
    }
}

#[test]
fn log() {
    let positive = GradCheck {
        input_range: (0.3, 2.0),
        ..tight()
    };
    for p in [
        "",
        "log_param { base: 10 }",
        "log_param { base: 2 scale: 2 shift: 0.5 }",
    ] {
        check(
            &net(
                &[("x", X)],
                &format!("type: \"Log\" bottom: \"x\" top: \"y\" {p}"),
            ),
            &positive,
        );
    }
}

#[test]
fn dropout_train_and_test() {
    // The check reseeds the net's random source every forward, so the mask is fixed.
    check(
        &net(
            &[("x", X4)],
            "type: \"Dropout\" bottom: \"x\" top: \"y\" dropout_param { dropout_ratio: 0.3 }",
        ),
        &tight(),
    );
    check(
        &net(&[("x", X)], "type: \"Dropout\" bottom: \"x\" top: \"y\""),
        &GradCheck {
            phase: Phase::Test,
            ..tight()
        },
    );
}

// ---- Eltwise ----

/// Values far from each other across bottoms (no max ties, no near-zero factors).
fn spread(name: &str, b: &BlobRef, _: &mut CaffeRng) {
    let k = match name {
        "a" => 0,
        "b" => 1,
        _ => 2,
    };
    remap(b, |i, _| {
        let v = ((i * 3 + k * 5) % 7) as f32 * 0.25 + 0.3;
        if (i + k) % 2 == 0 {
            v
        } else {
            -v
        }
    });
}

#[test]
fn eltwise() {
    let three: &[(&str, &[usize])] = &[("a", X), ("b", X), ("c", X)];
    let gc = tight();
    for l in [
        "eltwise_param { operation: SUM }",
        "eltwise_param { operation: SUM coeff: 1.5 coeff: -0.5 coeff: 2 }",
        "eltwise_param { operation: PROD }",
        "eltwise_param { operation: PROD stable_prod_grad: false }",
        "eltwise_param { operation: MAX }",
    ] {
        let layer =
            format!("type: \"Eltwise\" bottom: \"a\" bottom: \"b\" bottom: \"c\" top: \"y\" {l}");
        check_with(&net(three, &layer), &gc, spread);
        let layer = format!("type: \"Eltwise\" bottom: \"a\" bottom: \"b\" top: \"y\" {l}")
            .replace(" coeff: 2", "");
        check_with(&net(&three[..2], &layer), &gc, spread);
    }
}

// ---- shape layers ----

#[test]
fn concat_and_slice() {
    let gc = tight();
    check(
        &net(
            &[("a", &[2, 3, 4]), ("b", &[2, 5, 4])],
            "type: \"Concat\" bottom: \"a\" bottom: \"b\" top: \"y\"",
        ),
        &gc,
    );
    check(
        &net(
            &[("a", &[2, 3, 4]), ("b", &[1, 3, 4]), ("c", &[3, 3, 4])],
            "type: \"Concat\" bottom: \"a\" bottom: \"b\" bottom: \"c\" top: \"y\" concat_param { axis: 0 }",
        ),
        &gc,
    );
    check(
        &net(
            &[("a", &[2, 3, 1]), ("b", &[2, 3, 3])],
            "type: \"Concat\" bottom: \"a\" bottom: \"b\" top: \"y\" concat_param { concat_dim: 2 }",
        ),
        &gc,
    );
    check(
        &net(
            &[("a", X)],
            "type: \"Concat\" bottom: \"a\" top: \"y\" concat_param { axis: -1 }",
        ),
        &gc,
    );
    check(
        &net(&[("x", &[2, 7, 3])], "type: \"Slice\" bottom: \"x\" top: \"p\" top: \"q\" top: \"r\" slice_param { slice_point: 2 slice_point: 3 }"),
        &gc,
    );
    check(
        &net(
            &[("x", &[3, 2, 6])],
            "type: \"Slice\" bottom: \"x\" top: \"p\" top: \"q\" slice_param { axis: -1 }",
        ),
        &gc,
    );
    check(
        &net(
            &[("x", &[4, 3, 2])],
            "type: \"Slice\" bottom: \"x\" top: \"p\" top: \"q\" slice_param { slice_dim: 0 }",
        ),
        &gc,
    );
    check(
        &net(&[("x", X)], "type: \"Slice\" bottom: \"x\" top: \"p\""),
        &gc,
    );
}

#[test]
fn flatten_reshape() {
    let gc = tight();
    check(
        &net(&[("x", X4)], "type: \"Flatten\" bottom: \"x\" top: \"y\""),
        &gc,
    );
    check(
        &net(
            &[("x", X4)],
            "type: \"Flatten\" bottom: \"x\" top: \"y\" flatten_param { axis: 2 end_axis: 3 }",
        ),
        &gc,
    );
    check(
        &net(
            &[("x", X4)],
            "type: \"Reshape\" bottom: \"x\" top: \"y\" reshape_param { shape { dim: 0 dim: -1 dim: 4 } }",
        ),
        &gc,
    );
    check(
        &net(
            &[("x", X4)],
            "type: \"Reshape\" bottom: \"x\" top: \"y\" reshape_param { shape { dim: 1 dim: 3 } axis: 1 num_axes: 1 }",
        ),
        &gc,
    );
}

#[test]
fn crop() {
    let gc = tight();
    check(
        &net(
            &[("x", &[2, 3, 7, 6]), ("r", &[2, 3, 4, 3])],
            "type: \"Crop\" bottom: \"x\" bottom: \"r\" top: \"y\" crop_param { offset: 2 }",
        ),
        &gc,
    );
    check(
        &net(
            &[("x", &[3, 4, 5]), ("r", &[2, 2, 3])],
            "type: \"Crop\" bottom: \"x\" bottom: \"r\" top: \"y\" crop_param { axis: 0 offset: 1 offset: 2 offset: 1 }",
        ),
        &gc,
    );
    check(
        &net(
            &[("x", &[2, 3, 5, 5]), ("r", &[1, 1, 3, 2])],
            "type: \"Crop\" bottom: \"x\" bottom: \"r\" top: \"y\"",
        ),
        &gc,
    );
}

#[test]
fn tile() {
    let gc = tight();
    check(
        &net(
            &[("x", X)],
            "type: \"Tile\" bottom: \"x\" top: \"y\" tile_param { tiles: 3 }",
        ),
        &gc,
    );
    check(
        &net(
            &[("x", X)],
            "type: \"Tile\" bottom: \"x\" top: \"y\" tile_param { axis: 0 tiles: 2 }",
        ),
        &gc,
    );
    check(
        &net(
            &[("x", X)],
            "type: \"Tile\" bottom: \"x\" top: \"y\" tile_param { axis: -1 tiles: 4 }",
        ),
        &gc,
    );
}

#[test]
fn reduction() {
    for op in ["SUM", "ASUM", "SUMSQ", "MEAN"] {
        for extra in ["", "axis: 1 coeff: -1.5", "axis: -1 coeff: 0.5"] {
            let l =
                format!("type: \"Reduction\" bottom: \"x\" top: \"y\" reduction_param {{ operation: {op} {extra} }}");
            check(&net(&[("x", X)], &l), &kink(0.02));
        }
    }
}

#[test]
fn silence() {
    check(
        &net(
            &[("x", X), ("z", &[3])],
            "type: \"Silence\" bottom: \"x\" bottom: \"z\"",
        ),
        &tight(),
    );
}

#[test]
fn embed_params() {
    let indices = |name: &str, b: &BlobRef, _: &mut CaffeRng| {
        if name == "x" {
            remap(b, |i, _| ((i * 5) % 7) as f32);
        }
    };
    for p in [
        "num_output: 4 input_dim: 7 weight_filler { type: \"gaussian\" std: 0.5 } bias_filler { type: \"uniform\" min: -1 max: 1 }",
        "num_output: 3 input_dim: 7 bias_term: false weight_filler { type: \"uniform\" min: -1 max: 1 }",
    ] {
        check_with(
            &net(&[("x", &[2, 5])], &format!("type: \"Embed\" bottom: \"x\" top: \"y\" embed_param {{ {p} }}")),
            &tight(),
            indices,
        );
    }
}

// ---- in place equals out of place ----

struct Run {
    tops: Vec<Vec<f32>>,
    diffs: Vec<Vec<f32>>,
}

/// Builds `text`, sets inputs (deterministic values) and the output's diff, runs forward and
/// backward and returns the output data and the inputs' diffs.
fn run(text: &str, out: &str, inputs: &[&str], phase: Phase) -> anyhow::Result<Run> {
    let param = parse_net_text(text, "<test>", TextOptions::default())?;
    let state = NetState {
        phase: Some(phase as i32),
        ..Default::default()
    };
    let mut rng = CaffeRng::new(5);
    let mut net = Net::new(&param, &state, &mut rng, BuildOptions { verbose: false })?;
    for (k, name) in inputs.iter().enumerate() {
        let b = net.blob_by_name(name).unwrap().clone();
        let v: Vec<f32> = (0..b.count())
            .map(|i| ((i * 7 + k * 3) % 11) as f32 * 0.35 - 1.6)
            .collect();
        b.set_data(&v)?;
    }
    net.forward(&mut CaffeRng::new(9))?;
    let o = net.blob_by_name(out).unwrap().clone();
    let top = o.data_vec();
    let d: Vec<f32> = (0..o.count())
        .map(|i| ((i * 5) % 13) as f32 * 0.2 - 1.1)
        .collect();
    o.set_diff(&d)?;
    for l in (0..net.layers.len()).rev() {
        net.backward_layer(&mut CaffeRng::new(9), l)?;
    }
    let diffs = inputs
        .iter()
        .map(|n| net.blob_by_name(n).unwrap().diff_vec())
        .collect();
    Ok(Run {
        tops: vec![top],
        diffs,
    })
}

/// The layer fed by a Power (identity, so the input blob stays intact) run in place on the
/// Power's output versus on a separate top.
fn in_place_matches(layer: &str, phase: Phase) {
    let pre = "name: \"t\"\nforce_backward: true\nlayer { name: \"in\" type: \"Input\" top: \"x\" input_param { shape { dim: 3 dim: 4 dim: 5 } } }\nlayer { name: \"p\" type: \"Power\" bottom: \"x\" top: \"h\" }\n";
    let a = run(
        &format!("{pre}layer {{ name: \"L\" {layer} bottom: \"h\" top: \"h\" }}\n"),
        "h",
        &["x"],
        phase,
    )
    .unwrap_or_else(|e| panic!("{layer}: {e:#}"));
    let b = run(
        &format!("{pre}layer {{ name: \"L\" {layer} bottom: \"h\" top: \"y\" }}\n"),
        "y",
        &["x"],
        phase,
    )
    .unwrap_or_else(|e| panic!("{layer}: {e:#}"));
    assert_eq!(a.tops, b.tops, "{layer}: forward differs in place");
    assert_eq!(a.diffs, b.diffs, "{layer}: backward differs in place");
}

#[test]
fn in_place_layers_match_out_of_place() {
    for l in [
        "type: \"ReLU\"",
        "type: \"ReLU\" relu_param { negative_slope: 0.2 }",
        "type: \"ReLU\" relu_param { negative_slope: -0.2 }",
        "type: \"ELU\" elu_param { alpha: 0.7 }",
        "type: \"ELU\" elu_param { alpha: -0.7 }",
        "type: \"Sigmoid\"",
        "type: \"TanH\"",
        "type: \"AbsVal\"",
        "type: \"BNLL\"",
        "type: \"Clip\" clip_param { min: -0.5 max: 0.9 }",
        "type: \"Swish\" swish_param { beta: 0.8 }",
        "type: \"Power\" power_param { power: 2 scale: 1.5 shift: 0.2 }",
        "type: \"Power\" power_param { power: 3 }",
        "type: \"Power\" power_param { power: 3 shift: 0.1 }",
        "type: \"Exp\" exp_param { base: 3 scale: 0.5 shift: 0.1 }",
        "type: \"Log\" log_param { shift: 2 }",
        "type: \"Dropout\" dropout_param { dropout_ratio: 0.4 }",
    ] {
        in_place_matches(l, Phase::Train);
    }
    in_place_matches("type: \"Dropout\"", Phase::Test);
}

#[test]
fn eltwise_in_place_matches() {
    let pre = "name: \"t\"\nforce_backward: true\nlayer { name: \"in\" type: \"Input\" top: \"a\" top: \"b\" input_param { shape { dim: 2 dim: 3 dim: 4 } shape { dim: 2 dim: 3 dim: 4 } } }\nlayer { name: \"p\" type: \"Power\" bottom: \"a\" top: \"h\" }\n";
    for op in [
        "SUM coeff: 2 coeff: -1",
        "PROD",
        "PROD stable_prod_grad: false",
        "MAX",
    ] {
        let l = format!(
            "type: \"Eltwise\" bottom: \"h\" bottom: \"b\" eltwise_param {{ operation: {op} }}"
        );
        let a = run(
            &format!("{pre}layer {{ name: \"L\" {l} top: \"h\" }}\n"),
            "h",
            &["a", "b"],
            Phase::Train,
        )
        .unwrap();
        let b = run(
            &format!("{pre}layer {{ name: \"L\" {l} top: \"y\" }}\n"),
            "y",
            &["a", "b"],
            Phase::Train,
        )
        .unwrap();
        assert_eq!(a.tops, b.tops, "{op}: forward differs in place");
        assert_eq!(a.diffs, b.diffs, "{op}: backward differs in place");
    }
}

// ---- values and errors ----

#[test]
fn dropout_scales_at_train_time() {
    let text = "name: \"t\"\nlayer { name: \"in\" type: \"Input\" top: \"x\" input_param { shape { dim: 1000 } } }\nlayer { name: \"L\" type: \"Dropout\" bottom: \"x\" top: \"y\" dropout_param { dropout_ratio: 0.25 } }\n";
    let param = parse_net_text(text, "<test>", TextOptions::default()).unwrap();
    let state = NetState {
        phase: Some(Phase::Train as i32),
        ..Default::default()
    };
    let mut rng = CaffeRng::new(1);
    let mut net = Net::new(&param, &state, &mut rng, BuildOptions { verbose: false }).unwrap();
    net.set_input("x", &vec![1.0; 1000]).unwrap();
    net.forward(&mut rng).unwrap();
    let y = net.blob_by_name("y").unwrap().data_vec();
    let kept = y.iter().filter(|&&v| v != 0.0).count();
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    assert!((650..850).contains(&kept), "{kept} of 1000 kept");
}

#[test]
fn dummy_data_fills() {
    let text = "name: \"t\"\nlayer { name: \"L\" type: \"DummyData\" top: \"a\" top: \"b\" top: \"c\" dummy_data_param { data_filler { type: \"constant\" value: 3 } data_filler { type: \"uniform\" min: 1 max: 2 } data_filler { type: \"constant\" } shape { dim: 2 dim: 3 } shape { dim: 4 } shape { dim: 1 dim: 1 dim: 2 } } }\n";
    let param = parse_net_text(text, "<test>", TextOptions::default()).unwrap();
    let state = NetState {
        phase: Some(Phase::Train as i32),
        ..Default::default()
    };
    let mut rng = CaffeRng::new(1);
    let mut net = Net::new(&param, &state, &mut rng, BuildOptions { verbose: false }).unwrap();
    let (a, b, c) = (
        net.blob_by_name("a").unwrap().clone(),
        net.blob_by_name("b").unwrap().clone(),
        net.blob_by_name("c").unwrap().clone(),
    );
    assert_eq!(a.data_vec(), vec![3.0; 6]);
    assert_eq!(
        b.data_vec(),
        vec![0.0; 4],
        "non-constant tops wait for forward"
    );
    assert_eq!(c.shape(), vec![1, 1, 2]);
    net.forward(&mut rng).unwrap();
    let b1 = b.data_vec();
    assert!(b1.iter().all(|&v| (1.0..=2.0).contains(&v)));
    net.forward(&mut rng).unwrap();
    assert_ne!(b.data_vec(), b1, "refilled every forward");
    assert_eq!(a.data_vec(), vec![3.0; 6]);

    // Legacy dims, one filler for all.
    let text = "name: \"t\"\nlayer { name: \"L\" type: \"DummyData\" top: \"a\" top: \"b\" dummy_data_param { num: 2 channels: 3 channels: 1 height: 4 width: 5 } }\n";
    let param = parse_net_text(text, "<test>", TextOptions::default()).unwrap();
    let net = Net::new(&param, &state, &mut rng, BuildOptions { verbose: false }).unwrap();
    assert_eq!(net.blob_by_name("b").unwrap().shape(), vec![2, 1, 4, 5]);
}

fn build_err(text: &str) -> String {
    let param = match parse_net_text(text, "<test>", TextOptions::default()) {
        Ok(p) => p,
        Err(e) => return format!("{e:#}"),
    };
    let state = NetState {
        phase: Some(Phase::Train as i32),
        ..Default::default()
    };
    match Net::new(
        &param,
        &state,
        &mut CaffeRng::new(1),
        BuildOptions { verbose: false },
    ) {
        Ok(_) => panic!("expected an error building:\n{text}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn configuration_errors_name_the_layer() {
    let two = |l: &str, s1: &str, s2: &str| {
        format!("name: \"t\"\nlayer {{ name: \"in\" type: \"Input\" top: \"a\" top: \"b\" input_param {{ shape {{ {s1} }} shape {{ {s2} }} }} }}\nlayer {{ name: \"L\" {l} }}\n")
    };
    let e = build_err(&two(
        "type: \"Eltwise\" bottom: \"a\" bottom: \"b\" top: \"y\"",
        "dim: 2 dim: 3",
        "dim: 3 dim: 2",
    ));
    assert!(
        e.contains("'L'") && e.contains("2 3") && e.contains("3 2"),
        "{e}"
    );
    let e = build_err(&two(
        "type: \"Eltwise\" bottom: \"a\" bottom: \"b\" top: \"y\" eltwise_param { operation: PROD coeff: 1 coeff: 2 }",
        "dim: 2",
        "dim: 2",
    ));
    assert!(e.contains("coefficients"), "{e}");
    let e = build_err(&two(
        "type: \"Concat\" bottom: \"a\" bottom: \"b\" top: \"y\" concat_param { axis: 1 concat_dim: 1 }",
        "dim: 2",
        "dim: 2",
    ));
    assert!(e.contains("not both"), "{e}");
    let e = build_err(&two(
        "type: \"Concat\" bottom: \"a\" bottom: \"b\" top: \"y\"",
        "dim: 2 dim: 3",
        "dim: 3 dim: 3",
    ));
    assert!(e.contains("except at concat_axis"), "{e}");
    let e = build_err(&two(
        "type: \"Reshape\" bottom: \"a\" top: \"a\" reshape_param { shape { dim: -1 } }",
        "dim: 2",
        "dim: 2",
    ));
    assert!(e.contains("in-place"), "{e}");
    let e = build_err(&two(
        "type: \"Reshape\" bottom: \"a\" top: \"y\" reshape_param { shape { dim: -1 dim: -1 } }",
        "dim: 2",
        "dim: 2",
    ));
    assert!(e.contains("multiple -1"), "{e}");
    let e = build_err(&two(
        "type: \"Reshape\" bottom: \"a\" top: \"y\" reshape_param { shape { dim: 4 dim: -1 } }",
        "dim: 6",
        "dim: 2",
    ));
    assert!(e.contains("divisible"), "{e}");
    let e = build_err(&two(
        "type: \"Flatten\" bottom: \"a\" top: \"a\"",
        "dim: 2",
        "dim: 2",
    ));
    assert!(e.contains("in-place"), "{e}");
    let e = build_err(&two(
        "type: \"Slice\" bottom: \"a\" top: \"p\" top: \"q\"",
        "dim: 2 dim: 3",
        "dim: 2",
    ));
    assert!(e.contains("evenly divide"), "{e}");
    let e = build_err(&two(
        "type: \"Crop\" bottom: \"a\" bottom: \"b\" top: \"y\" crop_param { axis: 0 offset: 1 }",
        "dim: 4",
        "dim: 4",
    ));
    assert!(e.contains("invalid crop"), "{e}");
    let e = build_err(&two(
        "type: \"Tile\" bottom: \"a\" top: \"y\"",
        "dim: 2",
        "dim: 2",
    ));
    assert!(e.contains("tiles"), "{e}");
    let e = build_err(&two(
        "type: \"Clip\" bottom: \"a\" top: \"y\" clip_param { min: 1 }",
        "dim: 2",
        "dim: 2",
    ));
    assert!(e.contains("clip_param.max"), "{e}");
    let e = build_err(&two(
        "type: \"Log\" bottom: \"a\" top: \"y\" log_param { base: -2 }",
        "dim: 2",
        "dim: 2",
    ));
    assert!(e.contains("positive"), "{e}");
    let e = build_err("name: \"t\"\nlayer { name: \"L\" type: \"DummyData\" top: \"a\" top: \"b\" top: \"c\" dummy_data_param { data_filler { type: \"constant\" } data_filler { type: \"constant\" } shape { dim: 2 } } }\n");
    assert!(e.contains("data fillers"), "{e}");
    let e = build_err("name: \"t\"\nlayer { name: \"L\" type: \"DummyData\" top: \"a\" dummy_data_param { data_filler { type: \"bogus\" } shape { dim: 2 } } }\n");
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn threshold_forward_and_no_backward() {
    let text = "name: \"t\"\nforce_backward: true\nlayer { name: \"in\" type: \"Input\" top: \"x\" input_param { shape { dim: 4 } } }\nlayer { name: \"L\" type: \"Threshold\" bottom: \"x\" top: \"y\" threshold_param { threshold: 0.5 } }\n";
    let param = parse_net_text(text, "<test>", TextOptions::default()).unwrap();
    let state = NetState {
        phase: Some(Phase::Train as i32),
        ..Default::default()
    };
    let mut rng = CaffeRng::new(1);
    let mut net = Net::new(&param, &state, &mut rng, BuildOptions { verbose: false }).unwrap();
    net.set_input("x", &[0.2, 0.5, 0.7, -1.0]).unwrap();
    net.forward(&mut rng).unwrap();
    assert_eq!(
        net.blob_by_name("y").unwrap().data_vec(),
        vec![0.0, 0.0, 1.0, 0.0]
    );
    let e = net.backward(&mut rng).unwrap_err();
    assert!(format!("{e:#}").contains("no backward"), "{e:#}");
}

#[test]
fn embed_rejects_bad_indices() {
    let text = "name: \"t\"\nlayer { name: \"in\" type: \"Input\" top: \"x\" input_param { shape { dim: 3 } } }\nlayer { name: \"L\" type: \"Embed\" bottom: \"x\" top: \"y\" embed_param { num_output: 2 input_dim: 4 } }\n";
    let param = parse_net_text(text, "<test>", TextOptions::default()).unwrap();
    let state = NetState {
        phase: Some(Phase::Train as i32),
        ..Default::default()
    };
    let mut rng = CaffeRng::new(1);
    let mut net = Net::new(&param, &state, &mut rng, BuildOptions { verbose: false }).unwrap();
    assert_eq!(net.blob_by_name("y").unwrap().shape(), vec![3, 2]);
    net.set_input("x", &[0.0, 3.0, 1.0]).unwrap();
    net.forward(&mut rng).unwrap();
    net.set_input("x", &[0.0, 4.0, 1.0]).unwrap();
    assert!(format!("{:#}", net.forward(&mut rng).unwrap_err()).contains("input_dim"));
    net.set_input("x", &[0.5, 1.0, 1.0]).unwrap();
    assert!(net.forward(&mut rng).is_err());
}

#[test]
fn reduction_values() {
    let text = "name: \"t\"\nlayer { name: \"in\" type: \"Input\" top: \"x\" input_param { shape { dim: 2 dim: 3 } } }\nlayer { name: \"L\" type: \"Reduction\" bottom: \"x\" top: \"y\" reduction_param { operation: MEAN axis: 1 coeff: 2 } }\nlayer { name: \"M\" type: \"Reduction\" bottom: \"x\" top: \"z\" reduction_param { operation: SUMSQ } }\n";
    let param = parse_net_text(text, "<test>", TextOptions::default()).unwrap();
    let state = NetState {
        phase: Some(Phase::Train as i32),
        ..Default::default()
    };
    let mut rng = CaffeRng::new(1);
    let mut net = Net::new(&param, &state, &mut rng, BuildOptions { verbose: false }).unwrap();
    net.set_input("x", &[1.0, 2.0, 3.0, -4.0, 5.0, 6.0])
        .unwrap();
    net.forward(&mut rng).unwrap();
    let y = net.blob_by_name("y").unwrap().data_vec();
    assert!(
        (y[0] - 4.0).abs() < 1e-6 && (y[1] - 14.0 / 3.0).abs() < 1e-6,
        "{y:?}"
    );
    let z = net.blob_by_name("z").unwrap();
    assert_eq!(z.shape(), Vec::<usize>::new());
    assert_eq!(z.data_vec(), vec![91.0]);
}

/// Split (inserted by the net, but a valid layer to write): backward sums its tops' diffs.
#[test]
fn split_gradient() {
    check(
        &net(
            &[("x", &[2, 3, 4])],
            r#"type: "Split" bottom: "x" top: "a" top: "b" top: "c""#,
        ),
        &tight(),
    );
}
