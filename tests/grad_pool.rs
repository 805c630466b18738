//! Numeric gradient checks for the pooling group: Pooling (MAX, AVE, padded, ceil/floor,
//! global, non-square), Softmax (several axes), SoftmaxWithLoss (every normalization, ignore
//! labels), SigmoidCrossEntropyLoss and EuclideanLoss (both bottoms).

use crema::blob::BlobRef;
use crema::rng::CaffeRng;
use crema::util::gradcheck::GradCheck;

fn dims(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| format!("dim: {d}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One Input per (name, shape), then `layer` (named "L").
fn net(inputs: &[(&str, &[usize])], layer: &str) -> String {
    let mut s = String::from("name: \"g\"\nforce_backward: true\n");
    for (name, shape) in inputs {
        s += &format!(
            "layer {{ name: \"in_{name}\" type: \"Input\" top: \"{name}\" input_param {{ shape {{ {} }} }} }}\n",
            dims(shape)
        );
    }
    s + layer
}

/// Distinct values 0.05 apart in random order, so that a ±0.01 step never changes which
/// element of a MAX window wins.
fn distinct(blob: &BlobRef, rng: &mut CaffeRng) {
    let n = blob.count();
    let mut v: Vec<f32> = (0..n).map(|i| i as f32 * 0.05 - n as f32 * 0.025).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u32 + 1) as usize;
        v.swap(i, j);
    }
    blob.set_data(&v).unwrap();
}

fn check_pool(shape: &[usize], param: &str, tops: &str) {
    let text = net(
        &[("x", shape)],
        &format!("layer {{ name: \"L\" type: \"Pooling\" bottom: \"x\" {tops} pooling_param {{ {param} }} }}"),
    );
    let r = GradCheck {
        threshold: 2e-3,
        ..Default::default()
    }
    .check(&text, "L", |name, b, rng| {
        if name == "x" {
            distinct(b, rng)
        }
    })
    .unwrap_or_else(|e| panic!("{param}: {e:#}"));
    assert!(r.checked > 0);
}

#[test]
fn pooling_max() {
    let t = "top: \"y\"";
    check_pool(&[2, 2, 7, 8], "pool: MAX kernel_size: 3 stride: 2", t);
    check_pool(
        &[2, 2, 7, 7],
        "pool: MAX kernel_size: 3 stride: 2 pad: 1",
        t,
    );
    check_pool(
        &[2, 2, 7, 9],
        "pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR",
        t,
    );
    check_pool(
        &[2, 2, 7, 9],
        "pool: MAX kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR",
        t,
    );
    check_pool(
        &[2, 2, 6, 5],
        "pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
        t,
    );
    check_pool(&[2, 3, 5, 7], "pool: MAX global_pooling: true", t);
    // Overlapping windows (stride 1) share argmaxes, whose gradients add.
    check_pool(&[1, 2, 5, 6], "pool: MAX kernel_size: 3 stride: 1", t);
    // With the mask as a second top.
    check_pool(
        &[2, 2, 7, 7],
        "pool: MAX kernel_size: 3 stride: 2 pad: 1",
        "top: \"y\" top: \"mask\"",
    );
}

#[test]
fn pooling_ave() {
    let t = "top: \"y\"";
    check_pool(&[2, 2, 7, 8], "pool: AVE kernel_size: 3 stride: 2", t);
    // Ceil adds a last window that is cut at H + pad: its divisor is smaller.
    check_pool(
        &[2, 2, 6, 6],
        "pool: AVE kernel_size: 3 stride: 2 pad: 1",
        t,
    );
    check_pool(
        &[2, 2, 7, 9],
        "pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR",
        t,
    );
    check_pool(
        &[2, 2, 7, 9],
        "pool: AVE kernel_size: 2 stride: 2 round_mode: FLOOR",
        t,
    );
    check_pool(
        &[2, 2, 6, 5],
        "pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 2",
        t,
    );
    check_pool(&[2, 3, 5, 7], "pool: AVE global_pooling: true", t);
}

fn check_softmax(shape: &[usize], axis: i32) {
    let text = net(
        &[("x", shape)],
        &format!("layer {{ name: \"L\" type: \"Softmax\" bottom: \"x\" top: \"y\" softmax_param {{ axis: {axis} }} }}"),
    );
    GradCheck {
        threshold: 2e-3,
        input_range: (-2.0, 2.0),
        ..Default::default()
    }
    .check(&text, "L", |_, _, _| {})
    .unwrap_or_else(|e| panic!("softmax {shape:?} axis {axis}: {e:#}"));
}

#[test]
fn softmax_axes() {
    check_softmax(&[3, 5], 1);
    check_softmax(&[2, 5, 3, 2], 1);
    check_softmax(&[2, 3, 4, 2], 2);
    check_softmax(&[2, 3, 5], -1);
}

/// Labels in [0, classes), every `ignore_every`-th replaced by `ignore`.
fn labels(b: &BlobRef, rng: &mut CaffeRng, classes: u32, ignore: Option<(i32, usize)>) {
    let v: Vec<f32> = (0..b.count())
        .map(|i| match ignore {
            Some((l, every)) if i % every == 1 => l as f32,
            _ => rng.below(classes) as f32,
        })
        .collect();
    b.set_data(&v).unwrap();
}

fn check_swl(
    score: &[usize],
    label: &[usize],
    classes: u32,
    params: &str,
    ignore: Option<(i32, usize)>,
) {
    let text = net(
        &[("score", score), ("label", label)],
        &format!("layer {{ name: \"L\" type: \"SoftmaxWithLoss\" bottom: \"score\" bottom: \"label\" top: \"loss\" {params} }}"),
    );
    let r = GradCheck {
        threshold: 1e-3,
        input_range: (-2.0, 2.0),
        skip_bottoms: vec!["label".into()],
        ..Default::default()
    }
    .check(&text, "L", |name, b, rng| {
        if name == "label" {
            labels(b, rng, classes, ignore)
        }
    })
    .unwrap_or_else(|e| panic!("SoftmaxWithLoss {params}: {e:#}"));
    assert!(r.checked > 0);
}

#[test]
fn softmax_with_loss_normalizations() {
    check_swl(&[5, 4], &[5], 4, "", None);
    check_swl(&[5, 4], &[5], 4, "loss_weight: 3", None);
    for norm in ["FULL", "VALID", "BATCH_SIZE", "NONE"] {
        let p = format!("loss_param {{ ignore_label: 255 normalization: {norm} }}");
        check_swl(&[7, 3], &[7], 3, &p, Some((255, 3)));
        check_swl(&[2, 4, 3, 2], &[2, 1, 3, 2], 4, &p, Some((255, 4)));
    }
    check_swl(&[6, 5], &[6], 5, "loss_param { normalize: false }", None);
    check_swl(
        &[6, 5],
        &[6],
        5,
        "loss_param { normalize: true ignore_label: -1 }",
        Some((-1, 2)),
    );
    // Class axis 2: labels per (outer, inner) = 3·2 positions.
    check_swl(&[3, 2, 4], &[3, 2], 4, "softmax_param { axis: 2 }", None);
}

fn check_sigmoid_ce(shape: &[usize], params: &str, ignore: Option<(i32, usize)>) {
    let text = net(
        &[("x", shape), ("t", shape)],
        &format!("layer {{ name: \"L\" type: \"SigmoidCrossEntropyLoss\" bottom: \"x\" bottom: \"t\" top: \"loss\" {params} }}"),
    );
    GradCheck {
        threshold: 1e-3,
        input_range: (-4.0, 4.0),
        skip_bottoms: vec!["t".into()],
        ..Default::default()
    }
    .check(&text, "L", |name, b, rng| {
        if name == "t" {
            let v: Vec<f32> = (0..b.count())
                .map(|i| match ignore {
                    Some((l, every)) if i % every == 0 => l as f32,
                    _ => rng.uniform(0.0, 1.0),
                })
                .collect();
            b.set_data(&v).unwrap();
        }
    })
    .unwrap_or_else(|e| panic!("SigmoidCrossEntropyLoss {params}: {e:#}"));
}

#[test]
fn sigmoid_cross_entropy_loss() {
    check_sigmoid_ce(&[3, 5], "", None);
    check_sigmoid_ce(&[2, 3, 2, 3], "loss_weight: 0.5", None);
    check_sigmoid_ce(
        &[4, 3],
        "loss_param { ignore_label: -1 normalization: VALID }",
        Some((-1, 3)),
    );
    check_sigmoid_ce(
        &[4, 3],
        "loss_param { ignore_label: -1 normalization: FULL }",
        Some((-1, 4)),
    );
    check_sigmoid_ce(&[4, 3], "loss_param { normalization: NONE }", None);
}

#[test]
fn euclidean_loss_both_bottoms() {
    for (a, b) in [
        (&[4usize, 6][..], &[4usize, 6][..]),
        (&[3, 2, 5][..], &[3, 10][..]),
    ] {
        let text = net(
            &[("a", a), ("b", b)],
            "layer { name: \"L\" type: \"EuclideanLoss\" bottom: \"a\" bottom: \"b\" top: \"loss\" loss_weight: 2 }",
        );
        let r = GradCheck {
            threshold: 1e-3,
            ..Default::default()
        }
        .check(&text, "L", |_, _, _| {})
        .unwrap();
        assert_eq!(r.checked, 2 * a.iter().product::<usize>());
    }
}
