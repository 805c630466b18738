//! The dense layers' CUDA paths against their CPU paths (Convolution, Deconvolution,
//! InnerProduct, Embed, BatchNorm, Scale, Bias, Pooling, LRN, MVN, PReLU). Each configuration is
//! built twice from one prototxt with one seed (so with the same parameters), one net placed on
//! the GPU; both get the same random inputs and top gradients for two forward/backward passes
//! (so accumulated parameter gradients and BatchNorm's running statistics are compared after
//! two updates), and every blob of the net (data and diff, tops, bottoms and parameters) must
//! agree. Needs a GPU: elsewhere each test prints SKIPPED and returns. `crema selftest` is the
//! broader check; this one is for working on these layers.

use std::rc::Rc;

use crema::backend::cuda::device;
use crema::backend::cuda::gpu::Gpu;
use crema::blob::BlobRef;
use crema::net::{BuildOptions, Net};
use crema::proto::caffe::{NetState, Phase};
use crema::proto::{parse_net_text, TextOptions};
use crema::rng::CaffeRng;

/// Relative tolerance: float sums in different orders (gemm tiles, tree reductions) stay well
/// inside it; an indexing or formula error does not.
const RTOL: f32 = 1e-4;

fn gpu() -> Option<Rc<Gpu>> {
    if !device::driver_present() {
        println!("SKIPPED: no GPU (no CUDA driver)");
        return None;
    }
    match Gpu::open(0) {
        Ok(g) => Some(Rc::new(g)),
        Err(e) => {
            println!("SKIPPED: no GPU ({e:#})");
            None
        }
    }
}

/// A net with one Input per (name, shape) and the layers under test.
fn net_text(inputs: &[(&str, &[usize])], layers: &str) -> String {
    let mut s = String::from("name: \"t\"\nforce_backward: true\n");
    for (name, shape) in inputs {
        let dims: String = shape.iter().map(|d| format!(" dim: {d}")).collect();
        s += &format!(
            "layer {{ name: \"in_{name}\" type: \"Input\" top: \"{name}\" input_param {{ shape {{{dims} }} }} }}\n"
        );
    }
    s + layers + "\n"
}

fn build(text: &str, phase: Phase) -> Net {
    let param = parse_net_text(text, "<test>", TextOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    let state = NetState {
        phase: Some(phase as i32),
        ..Default::default()
    };
    Net::new(
        &param,
        &state,
        &mut CaffeRng::new(7),
        BuildOptions { verbose: false },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{text}"))
}

/// How an input is filled: uniform in [-1, 1), or integer indices in [0, n).
#[derive(Clone, Copy)]
enum Fill {
    Uniform,
    Indices(usize),
}

fn values(n: usize, fill: Fill, rng: &mut CaffeRng) -> Vec<f32> {
    (0..n)
        .map(|_| match fill {
            Fill::Uniform => rng.uniform(-1.0, 1.0),
            Fill::Indices(k) => (rng.uniform(0.0, k as f32).floor()).min(k as f32 - 1.0),
        })
        .collect()
}

fn compare(what: &str, cpu: &[f32], gpu: &[f32], text: &str) {
    assert_eq!(cpu.len(), gpu.len(), "{what}: lengths differ\n{text}");
    let scale = cpu.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (a, b)) in cpu.iter().zip(gpu).enumerate() {
        let ok = (a - b).abs() <= RTOL * (a.abs() + 0.1 * scale) || (a.is_nan() && b.is_nan());
        assert!(ok, "{what}[{i}]: CPU {a}, GPU {b}\n{text}");
    }
}

fn all_blobs(net: &Net) -> Vec<(String, BlobRef)> {
    let mut out: Vec<(String, BlobRef)> = net
        .blob_names
        .iter()
        .cloned()
        .zip(net.blobs.iter().cloned())
        .collect();
    for e in &net.layers {
        for (i, b) in e.layer.blobs().iter().enumerate() {
            out.push((format!("{} param {i}", e.param.name()), b.clone()));
        }
    }
    out
}

/// Runs `layers` on CPU and GPU with the given inputs and compares everything. `prepare` may
/// set parameter blobs (applied to both nets identically).
fn check_with(
    g: &Rc<Gpu>,
    inputs: &[(&str, &[usize], Fill)],
    layers: &str,
    phase: Phase,
    prepare: impl Fn(&Net, &mut CaffeRng),
) {
    let shapes: Vec<(&str, &[usize])> = inputs.iter().map(|(n, s, _)| (*n, *s)).collect();
    let text = net_text(&shapes, layers);
    let mut cpu = build(&text, phase);
    let mut dev = build(&text, phase);
    dev.gpu = Some(g.clone());
    for net in [&cpu, &dev] {
        prepare(net, &mut CaffeRng::new(11));
    }
    let mut rng = CaffeRng::new(3);
    for pass in 0..2 {
        let feeds: Vec<(String, Vec<f32>)> = inputs
            .iter()
            .map(|(n, s, f)| (n.to_string(), values(s.iter().product(), *f, &mut rng)))
            .collect();
        for net in [&cpu, &dev] {
            for (n, v) in &feeds {
                net.blob_by_name(n).unwrap().set_data(v).unwrap();
            }
        }
        cpu.forward(&mut CaffeRng::new(1))
            .unwrap_or_else(|e| panic!("{e:#}\n{text}"));
        dev.forward(&mut CaffeRng::new(1))
            .unwrap_or_else(|e| panic!("{e:#}\n{text}"));
        // Top gradients for the blobs no layer consumes.
        for &o in &cpu.outputs {
            let d = values(cpu.blobs[o].count(), Fill::Uniform, &mut rng);
            cpu.blobs[o].set_diff(&d).unwrap();
            dev.blobs[o].set_diff(&d).unwrap();
        }
        cpu.backward(&mut CaffeRng::new(1))
            .unwrap_or_else(|e| panic!("{e:#}\n{text}"));
        dev.backward(&mut CaffeRng::new(1))
            .unwrap_or_else(|e| panic!("{e:#}\n{text}"));
        for ((name, a), (_, b)) in all_blobs(&cpu).iter().zip(all_blobs(&dev)) {
            compare(
                &format!("pass {pass}: {name} data"),
                &a.data_vec(),
                &b.data_vec(),
                &text,
            );
            compare(
                &format!("pass {pass}: {name} diff"),
                &a.diff_vec(),
                &b.diff_vec(),
                &text,
            );
        }
    }
}

fn check(g: &Rc<Gpu>, inputs: &[(&str, &[usize])], layers: &str) {
    let inputs: Vec<(&str, &[usize], Fill)> = inputs
        .iter()
        .map(|(n, s)| (*n, *s, Fill::Uniform))
        .collect();
    check_with(g, &inputs, layers, Phase::Train, |_, _| {});
}

#[test]
fn convolution_and_deconvolution() {
    let Some(g) = gpu() else { return };
    let convs = [
        // (input shape, convolution_param)
        (&[2usize, 3, 7, 6][..], "num_output: 4 kernel_size: 3 pad: 1"),
        (&[3, 4, 9, 8], "num_output: 6 kernel_h: 3 kernel_w: 2 pad_h: 2 stride_h: 2 stride_w: 3 dilation: 1 dilation: 2 group: 2"),
        (&[2, 6, 5, 5], "num_output: 6 kernel_size: 3 group: 6 bias_term: false"),
        (&[4, 4, 3, 5], "num_output: 8 kernel_size: 1 group: 2"),
        (&[2, 3, 7, 6], "num_output: 4 kernel_size: 3 pad: 1 stride: 2 force_nd_im2col: true"),
        (&[2, 2, 4, 5, 6], "num_output: 3 kernel_size: 2 kernel_size: 3 kernel_size: 2 pad: 1 pad: 0 pad: 1 stride: 1 stride: 2 stride: 2 dilation: 2 dilation: 1 dilation: 1"),
        (&[3, 2, 11], "num_output: 2 kernel_size: 3 pad: 2 stride: 3 dilation: 2"),
        (&[5, 3], "num_output: 4"),
        (&[1, 2, 2, 3, 4], "num_output: 3 kernel_size: 3 pad: 1 axis: 2"),
    ];
    for (shape, p) in convs {
        for ty in ["Convolution", "Deconvolution"] {
            let layer = format!(
                r#"layer {{ name: "L" type: "{ty}" bottom: "x" top: "y"
                   convolution_param {{ {p} weight_filler {{ type: "gaussian" std: 0.5 }}
                                        bias_filler {{ type: "uniform" min: -1 max: 1 }} }} }}"#
            );
            check(&g, &[("x", shape)], &layer);
        }
    }
    // Two bottoms sharing the weights.
    let layer = r#"layer { name: "L" type: "Convolution" bottom: "x" bottom: "z" top: "y" top: "w"
        convolution_param { num_output: 3 kernel_size: 2 weight_filler { type: "xavier" } } }"#;
    check(&g, &[("x", &[2, 2, 5, 4]), ("z", &[2, 2, 5, 4])], layer);
}

#[test]
fn inner_product_and_embed() {
    let Some(g) = gpu() else { return };
    for (shape, p) in [
        (&[4usize, 3, 2, 5][..], "num_output: 7"),
        (&[4, 3, 2, 5], "num_output: 5 axis: 2 transpose: true"),
        (&[130, 70], "num_output: 129 bias_term: false"),
        (&[1, 300], "num_output: 3"),
    ] {
        let layer = format!(
            r#"layer {{ name: "L" type: "InnerProduct" bottom: "x" top: "y"
               inner_product_param {{ {p} weight_filler {{ type: "gaussian" std: 0.3 }}
                                      bias_filler {{ type: "uniform" min: -1 max: 1 }} }} }}"#
        );
        check(&g, &[("x", shape)], &layer);
    }
    for bias in ["true", "false"] {
        let layer = format!(
            r#"layer {{ name: "L" type: "Embed" bottom: "x" top: "y"
               embed_param {{ num_output: 5 input_dim: 11 bias_term: {bias}
                              weight_filler {{ type: "uniform" min: -1 max: 1 }}
                              bias_filler {{ type: "uniform" min: -1 max: 1 }} }} }}"#
        );
        // No gradient reaches the indices (Embed refuses force_backward for them).
        check_with(
            &g,
            &[("x", &[4, 9], Fill::Indices(11))],
            &layer,
            Phase::Train,
            |_, _| {},
        );
    }
}

#[test]
fn embed_rejects_a_bad_index_on_the_gpu() {
    let Some(g) = gpu() else { return };
    let text = net_text(
        &[("x", &[3])],
        r#"layer { name: "L" type: "Embed" bottom: "x" top: "y"
           embed_param { num_output: 2 input_dim: 4 } }"#,
    );
    let mut net = build(&text, Phase::Train);
    net.gpu = Some(g);
    net.blob_by_name("x")
        .unwrap()
        .set_data(&[1.0, 4.0, 2.0])
        .unwrap();
    let e = format!("{:#}", net.forward(&mut CaffeRng::new(1)).unwrap_err());
    assert!(e.contains("input 1 is 4"), "{e}");
}

#[test]
fn batch_norm_scale_bias() {
    let Some(g) = gpu() else { return };
    for shape in [&[2usize, 3, 4, 5][..], &[5, 3], &[3, 2, 3], &[1, 2, 1, 3]] {
        check(
            &g,
            &[("x", shape)],
            r#"layer { name: "L" type: "BatchNorm" bottom: "x" top: "y" }"#,
        );
        // In place, followed by a learned scale with bias (the usual pair), also in place.
        check(
            &g,
            &[("x", shape)],
            r#"layer { name: "L" type: "BatchNorm" bottom: "x" top: "x" }
               layer { name: "S" type: "Scale" bottom: "x" top: "x"
                 scale_param { bias_term: true filler { type: "uniform" min: -1 max: 1 }
                               bias_filler { type: "uniform" min: -1 max: 1 } } }"#,
        );
    }
    // Global statistics: the stored sums are read, never written.
    let set_stats = |net: &Net, rng: &mut CaffeRng| {
        let e = &net.layers[net.layer_index("L").unwrap()];
        let b = e.layer.blobs();
        let c = b[0].count();
        b[0].set_data(&values(c, Fill::Uniform, rng)).unwrap();
        let var: Vec<f32> = values(c, Fill::Uniform, rng)
            .iter()
            .map(|v| v + 1.5)
            .collect();
        b[1].set_data(&var).unwrap();
        b[2].set_data(&[2.5]).unwrap();
    };
    check_with(
        &g,
        &[("x", &[2, 3, 4, 5], Fill::Uniform)],
        r#"layer { name: "L" type: "BatchNorm" bottom: "x" top: "y" }"#,
        Phase::Test,
        set_stats,
    );
    check_with(
        &g,
        &[("x", &[2, 3, 4, 5], Fill::Uniform)],
        r#"layer { name: "L" type: "BatchNorm" bottom: "x" top: "y"
           batch_norm_param { use_global_stats: true } }"#,
        Phase::Train,
        set_stats,
    );
    for (shapes, p) in [
        (vec![("x", &[2usize, 3, 4][..])], "axis: 1 num_axes: 2"),
        (vec![("x", &[2, 3, 4])], "axis: 0 num_axes: -1"),
        (vec![("x", &[2, 3, 4])], "num_axes: 0"),
        (vec![("x", &[1, 3, 4])], "axis: 1 num_axes: 1"),
        (vec![("x", &[1, 6])], "axis: 1"),
        (vec![("x", &[2, 3, 4]), ("s", &[3])], ""),
        (vec![("x", &[2, 3, 4]), ("s", &[3, 4])], "bias_term: true"),
    ] {
        let bottoms: String = shapes
            .iter()
            .map(|(n, _)| format!(" bottom: \"{n}\""))
            .collect();
        for ty in ["Scale", "Bias"] {
            let param = if ty == "Scale" {
                format!("scale_param {{ {p} filler {{ type: \"uniform\" min: -1 max: 1 }} bias_filler {{ type: \"uniform\" min: -1 max: 1 }} }}")
            } else {
                let p = p.replace("bias_term: true", "");
                format!("bias_param {{ {p} filler {{ type: \"uniform\" min: -1 max: 1 }} }}")
            };
            let layer = format!(r#"layer {{ name: "L" type: "{ty}"{bottoms} top: "y" {param} }}"#);
            check(&g, &shapes, &layer);
        }
    }
}

#[test]
fn pooling_lrn_mvn_prelu() {
    let Some(g) = gpu() else { return };
    for p in [
        "pool: MAX kernel_size: 3 stride: 2",
        "pool: MAX kernel_size: 3 stride: 2 pad: 1",
        "pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0 round_mode: FLOOR",
        "pool: AVE kernel_size: 3 stride: 2 pad: 1",
        "pool: AVE kernel_size: 2 stride: 3",
        "pool: MAX global_pooling: true",
        "pool: AVE global_pooling: true",
    ] {
        let layer = format!(
            r#"layer {{ name: "L" type: "Pooling" bottom: "x" top: "y" pooling_param {{ {p} }} }}"#
        );
        check(&g, &[("x", &[2, 3, 7, 6])], &layer);
    }
    check(
        &g,
        &[("x", &[2, 3, 7, 6])],
        r#"layer { name: "L" type: "Pooling" bottom: "x" top: "y" top: "m"
           pooling_param { pool: MAX kernel_size: 2 stride: 2 } }"#,
    );
    for p in [
        "local_size: 5 alpha: 0.3 beta: 0.75 k: 2",
        "local_size: 3 alpha: 1.5 beta: 0.5",
        "local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL",
        "local_size: 5 alpha: 2 beta: 0.6 norm_region: WITHIN_CHANNEL",
    ] {
        let layer = format!(
            r#"layer {{ name: "L" type: "LRN" bottom: "x" top: "y" lrn_param {{ {p} }} }}"#
        );
        check(&g, &[("x", &[2, 7, 4, 5])], &layer);
    }
    for p in [
        "",
        "normalize_variance: false",
        "across_channels: true",
        "across_channels: true normalize_variance: false eps: 0.01",
    ] {
        for (shape, top) in [
            (&[2usize, 3, 4, 5][..], "y"),
            (&[3, 2, 300], "x"),
            (&[4, 3], "y"),
        ] {
            let layer = format!(
                r#"layer {{ name: "L" type: "MVN" bottom: "x" top: "{top}" mvn_param {{ {p} }} }}"#
            );
            check(&g, &[("x", shape)], &layer);
        }
    }
    for p in ["", "channel_shared: true"] {
        for top in ["y", "x"] {
            let layer = format!(
                r#"layer {{ name: "L" type: "PReLU" bottom: "x" top: "{top}"
                   prelu_param {{ {p} filler {{ type: "uniform" min: -1 max: 1 }} }} }}"#
            );
            check(&g, &[("x", &[2, 3, 4, 5])], &layer);
            check(&g, &[("x", &[3, 4])], &layer);
        }
    }
}
