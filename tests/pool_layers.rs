//! Forward behaviour and configuration errors of the pooling group's layers where no Caffe
//! fixture covers them: ArgMax shapes and ties, Accuracy on another axis, Softmax in place,
//! SigmoidCrossEntropyLoss values, and the errors Caffe raises (or would, in a debug build).

use anyhow::Result;
use crema::net::{BuildOptions, Net};
use crema::proto::caffe::{NetState, Phase};
use crema::proto::{parse_net_text, TextOptions};
use crema::rng::CaffeRng;

fn build(text: &str) -> Result<Net> {
    let p = parse_net_text(text, "<test>", TextOptions::default())?;
    let state = NetState {
        phase: Some(Phase::Train as i32),
        ..Default::default()
    };
    Net::new(
        &p,
        &state,
        &mut CaffeRng::new(1),
        BuildOptions { verbose: false },
    )
}

fn input(name: &str, shape: &[usize]) -> String {
    let d: Vec<String> = shape.iter().map(|d| format!("dim: {d}")).collect();
    format!("layer {{ name: \"in_{name}\" type: \"Input\" top: \"{name}\" input_param {{ shape {{ {} }} }} }}\n", d.join(" "))
}

fn err_of(r: Result<impl Sized>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn argmax_shapes_and_ties() {
    // x: 2 x 3 x 2, values chosen with ties.
    let x = [0., 9., 3., 1., 2., 4., 7., 7., 7., 8., 6., 5.];
    let cases: &[(&str, Vec<usize>, Vec<f32>)] = &[
        // Over all of (3, 2) per item: item 0 max 9 at 1; item 1 ties 7 at 0, 1, 2 → 8 at 3.
        ("", vec![2, 1, 1], vec![1., 3.]),
        ("out_max_val: true", vec![2, 2, 1], vec![1., 9., 3., 8.]),
        ("top_k: 3", vec![2, 1, 3], vec![1., 5., 2., 3., 2., 1.]),
        ("axis: 1", vec![2, 1, 2], vec![1., 0., 1., 1.]),
        (
            "axis: 1 out_max_val: true top_k: 2",
            vec![2, 2, 2],
            vec![3., 9., 2., 4., 7., 8., 7., 7.],
        ),
        ("axis: -1", vec![2, 3, 1], vec![1., 0., 1., 1., 1., 0.]),
    ];
    for (p, shape, want) in cases {
        let text = input("x", &[2, 3, 2])
            + &format!("layer {{ name: \"L\" type: \"ArgMax\" bottom: \"x\" top: \"y\" argmax_param {{ {p} }} }}");
        let mut net = build(&text).unwrap();
        net.set_input("x", &x).unwrap();
        net.forward(&mut CaffeRng::new(1)).unwrap();
        let y = net.blob_by_name("y").unwrap();
        assert_eq!(&y.shape(), shape, "{p}");
        assert_eq!(&y.data_vec(), want, "{p}");
    }
    // A 4-D input without axis gives (N, 1, top_k, 1).
    let text = input("x", &[2, 3, 2, 2]) + "layer { name: \"L\" type: \"ArgMax\" bottom: \"x\" top: \"y\" argmax_param { top_k: 2 } }";
    let net = build(&text).unwrap();
    assert_eq!(net.blob_by_name("y").unwrap().shape(), vec![2, 1, 2, 1]);
    let text = input("x", &[2, 3]) + "layer { name: \"L\" type: \"ArgMax\" bottom: \"x\" top: \"y\" argmax_param { top_k: 4 } }";
    assert!(err_of(build(&text)).contains("top_k"));
}

#[test]
fn accuracy_on_axis_2_with_ignore() {
    // Scores 1 x 2 x 3 (2 positions, 3 classes on axis 2); labels 1 x 2.
    let text = input("s", &[1, 2, 3])
        + &input("l", &[1, 2])
        + "layer { name: \"L\" type: \"Accuracy\" bottom: \"s\" bottom: \"l\" top: \"a\" top: \"pc\" \
           accuracy_param { axis: 2 ignore_label: 7 } }";
    let mut net = build(&text).unwrap();
    net.set_input("s", &[0.1, 0.7, 0.2, 0.3, 0.3, 0.4]).unwrap();
    net.set_input("l", &[1., 7.]).unwrap();
    net.forward(&mut CaffeRng::new(1)).unwrap();
    assert_eq!(net.blob_by_name("a").unwrap().data_vec(), vec![1.0]);
    assert_eq!(
        net.blob_by_name("pc").unwrap().data_vec(),
        vec![0.0, 1.0, 0.0]
    );
    // A tie with the true class counts against it.
    net.set_input("s", &[0.7, 0.7, 0.2, 0.3, 0.3, 0.4]).unwrap();
    net.forward(&mut CaffeRng::new(1)).unwrap();
    assert_eq!(net.blob_by_name("a").unwrap().data_vec(), vec![0.0]);
    // Every label ignored: accuracy 0, not NaN.
    net.set_input("l", &[7., 7.]).unwrap();
    net.forward(&mut CaffeRng::new(1)).unwrap();
    assert_eq!(net.blob_by_name("a").unwrap().data_vec(), vec![0.0]);
    // A label outside the classes is an error naming the layer and the value.
    net.set_input("l", &[3., 1.]).unwrap();
    let e = err_of(net.forward(&mut CaffeRng::new(1)));
    assert!(e.contains("'L'") && e.contains("label 3"), "{e}");
}

#[test]
fn softmax_in_place_matches() {
    let x: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 * 0.3 - 1.5).collect();
    let dy: Vec<f32> = (0..24).map(|i| ((i * 5) % 7) as f32 * 0.2 - 0.6).collect();
    let mut results = Vec::new();
    for top in ["y", "x"] {
        let text = String::from("force_backward: true\n")
            + &input("x", &[2, 4, 3])
            + &format!("layer {{ name: \"L\" type: \"Softmax\" bottom: \"x\" top: \"{top}\" softmax_param {{ axis: 1 }} }}");
        let mut net = build(&text).unwrap();
        net.set_input("x", &x).unwrap();
        net.forward(&mut CaffeRng::new(1)).unwrap();
        let y = net.blob_by_name(top).unwrap();
        let out = y.data_vec();
        y.set_diff(&dy).unwrap();
        net.backward(&mut CaffeRng::new(1)).unwrap();
        results.push((out, net.blob_by_name("x").unwrap().diff_vec()));
    }
    assert_eq!(results[0], results[1]);
}

#[test]
fn softmax_with_loss_second_top_and_all_ignored() {
    let text = input("s", &[2, 3])
        + &input("l", &[2])
        + "layer { name: \"L\" type: \"SoftmaxWithLoss\" bottom: \"s\" bottom: \"l\" top: \"loss\" top: \"prob\" \
           loss_weight: 1 loss_weight: 0 loss_param { ignore_label: -1 } }";
    let mut net = build(&text).unwrap();
    net.set_input("s", &[0., 0., 0., 1., 2., 3.]).unwrap();
    net.set_input("l", &[-1., -1.]).unwrap();
    let loss = net.forward(&mut CaffeRng::new(1)).unwrap();
    assert_eq!(loss, 0.0);
    let p = net.blob_by_name("prob").unwrap().data_vec();
    assert!((p[0] - 1.0 / 3.0).abs() < 1e-7 && (p[3] + p[4] + p[5] - 1.0).abs() < 1e-6);
    net.set_input("l", &[0., 3.]).unwrap();
    let e = err_of(net.forward(&mut CaffeRng::new(1)));
    assert!(
        e.contains("'L'") && e.contains("label 3") && e.contains("[0, 3)"),
        "{e}"
    );
}

#[test]
fn sigmoid_cross_entropy_values() {
    // Default normalization divides by the batch size (2), not the element count.
    let text = input("x", &[2, 2])
        + &input("t", &[2, 2])
        + "layer { name: \"L\" type: \"SigmoidCrossEntropyLoss\" bottom: \"x\" bottom: \"t\" top: \"loss\" }";
    let mut net = build(&text).unwrap();
    let x = [-30.0f32, 0.5, 2.0, 40.0];
    let t = [0.0f32, 1.0, 0.25, 1.0];
    net.set_input("x", &x).unwrap();
    net.set_input("t", &t).unwrap();
    let loss = net.forward(&mut CaffeRng::new(1)).unwrap();
    let want: f64 = x
        .iter()
        .zip(&t)
        .map(|(&x, &t)| {
            let (x, t) = (x as f64, t as f64);
            x.max(0.0) - x * t + (1.0 + (-x.abs()).exp()).ln()
        })
        .sum::<f64>()
        / 2.0;
    assert!(
        (loss as f64 - want).abs() < 1e-5 * want.max(1.0),
        "{loss} vs {want}"
    );
}

#[test]
fn configuration_errors() {
    let pool = |shape: &[usize], p: &str| {
        build(&(input("x", shape) + &format!("layer {{ name: \"P\" type: \"Pooling\" bottom: \"x\" top: \"y\" pooling_param {{ {p} }} }}")))
    };
    let e = err_of(pool(&[1, 1, 4, 4], "pool: STOCHASTIC kernel_size: 2"));
    assert!(e.contains("'P'") && e.contains("STOCHASTIC"), "{e}");
    assert!(err_of(pool(&[1, 1, 4, 4], "kernel_size: 2 pad: 2")).contains("pad must be smaller"));
    assert!(err_of(pool(&[1, 4, 4], "kernel_size: 2")).contains("4 axes"));
    assert!(err_of(pool(&[1, 1, 4, 4], "kernel_size: 2 kernel_h: 3")).contains("not both"));
    assert!(err_of(pool(&[1, 1, 4, 4], "kernel_h: 3")).contains("both kernel_h and kernel_w"));
    assert!(err_of(pool(&[1, 1, 4, 4], "pad_h: 1 kernel_size: 3")).contains("pad_h and pad_w"));
    assert!(
        err_of(pool(&[1, 1, 4, 4], "global_pooling: true kernel_size: 2"))
            .contains("cannot be specified")
    );
    assert!(err_of(pool(&[1, 1, 4, 4], "global_pooling: true stride: 2")).contains("stride = 1"));
    assert!(err_of(pool(&[1, 1, 2, 2], "kernel_size: 4")).contains("no output window"));
    let two_tops = input("x", &[1, 1, 4, 4])
        + "layer { name: \"P\" type: \"Pooling\" bottom: \"x\" top: \"y\" top: \"m\" pooling_param { pool: AVE kernel_size: 2 } }";
    assert!(err_of(build(&two_tops)).contains("top blob"));
    // A kernel that overhangs the input by less than a stride still gives one window (Caffe).
    let net = pool(&[1, 1, 2, 2], "kernel_size: 3 stride: 2").unwrap();
    assert_eq!(net.blob_by_name("y").unwrap().shape(), vec![1, 1, 1, 1]);

    // Gradients to labels are refused.
    let swl = String::from("force_backward: true\n")
        + &input("s", &[2, 3])
        + &input("l", &[2])
        + "layer { name: \"S\" type: \"SoftmaxWithLoss\" bottom: \"s\" bottom: \"l\" top: \"loss\" propagate_down: true propagate_down: true }";
    let mut net = build(&swl).unwrap();
    net.set_input("l", &[0., 1.]).unwrap();
    net.forward(&mut CaffeRng::new(1)).unwrap();
    let e = err_of(net.backward(&mut CaffeRng::new(1)));
    assert!(e.contains("'S'") && e.contains("label"), "{e}");
    let sizes = input("s", &[2, 3])
        + &input("l", &[3])
        + "layer { name: \"S\" type: \"SoftmaxWithLoss\" bottom: \"s\" bottom: \"l\" }";
    assert!(err_of(build(&sizes)).contains("same first dimension"));
    let sizes = input("s", &[2, 3, 2])
        + &input("l", &[2])
        + "layer { name: \"S\" type: \"SoftmaxWithLoss\" bottom: \"s\" bottom: \"l\" }";
    assert!(err_of(build(&sizes)).contains("number of labels"));

    // Accuracy has no backward: force_backward makes the net ask for one.
    let acc = String::from("force_backward: true\n")
        + &input("s", &[2, 3])
        + &input("l", &[2])
        + "layer { name: \"A\" type: \"Accuracy\" bottom: \"s\" bottom: \"l\" top: \"acc\" }";
    let mut net = build(&acc).unwrap();
    net.forward(&mut CaffeRng::new(1)).unwrap();
    let e = err_of(net.backward(&mut CaffeRng::new(1)));
    assert!(e.contains("'A'") && e.contains("no gradient"), "{e}");
    let acc = input("s", &[2, 3]) + &input("l", &[2]) + "layer { name: \"A\" type: \"Accuracy\" bottom: \"s\" bottom: \"l\" top: \"acc\" accuracy_param { top_k: 4 } }";
    assert!(err_of(build(&acc)).contains("top_k"));
}
