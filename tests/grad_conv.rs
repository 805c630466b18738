//! Numeric gradient checks for Convolution, Deconvolution and InnerProduct in several
//! configurations, plus configuration errors.

use crema::net::{BuildOptions, Net};
use crema::proto::caffe::NetState;
use crema::proto::{parse_net_text, TextOptions};
use crema::rng::CaffeRng;
use crema::util::gradcheck::GradCheck;

const FILLERS: &str =
    r#"weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }"#;

/// A net with one Input per shape (tops "d0", "d1", ...) feeding `layer`.
fn net(shapes: &[&[usize]], layer: &str) -> String {
    let mut s = String::from("name: \"g\"\nforce_backward: true\n");
    for (i, shape) in shapes.iter().enumerate() {
        let dims: String = shape.iter().map(|d| format!("dim: {d} ")).collect();
        s += &format!(
            "layer {{ name: \"in{i}\" type: \"Input\" top: \"d{i}\" input_param {{ shape {{ {dims} }} }} }}\n"
        );
    }
    s + layer
}

fn conv(kind: &str, bottoms: usize, params: &str) -> String {
    let mut s = format!("layer {{ name: \"L\" type: \"{kind}\" ");
    for i in 0..bottoms {
        s += &format!("bottom: \"d{i}\" top: \"t{i}\" ");
    }
    s + &format!("convolution_param {{ {params} {FILLERS} }} }}")
}

fn check(shapes: &[&[usize]], layer: &str) {
    let text = net(shapes, layer);
    let r = GradCheck::default()
        .check(&text, "L", |_, _, _| {})
        .unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    assert!(r.checked > 0);
}

fn build_err(shapes: &[&[usize]], layer: &str) -> String {
    let param = parse_net_text(&net(shapes, layer), "<test>", TextOptions::default()).unwrap();
    let mut rng = CaffeRng::new(1);
    match Net::new(
        &param,
        &NetState::default(),
        &mut rng,
        BuildOptions { verbose: false },
    ) {
        Ok(_) => panic!("expected an error for {layer}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn conv_group2() {
    check(
        &[&[2, 4, 6, 5]],
        &conv(
            "Convolution",
            1,
            "num_output: 6 kernel_size: 3 pad: 1 group: 2",
        ),
    );
}

#[test]
fn conv_dilation2() {
    check(
        &[&[2, 3, 9, 8]],
        &conv(
            "Convolution",
            1,
            "num_output: 3 kernel_size: 3 pad: 1 dilation: 2",
        ),
    );
}

#[test]
fn conv_stride2_pad() {
    check(
        &[&[2, 3, 7, 8]],
        &conv(
            "Convolution",
            1,
            "num_output: 4 kernel_size: 3 stride: 2 pad: 2",
        ),
    );
}

#[test]
fn conv_1x1_and_no_bias() {
    check(
        &[&[2, 5, 4, 3]],
        &conv("Convolution", 1, "num_output: 3 kernel_size: 1"),
    );
    check(
        &[&[2, 5, 4, 3]],
        &conv(
            "Convolution",
            1,
            "num_output: 3 kernel_size: 1 bias_term: false",
        ),
    );
}

#[test]
fn conv_non_square_hw_form() {
    check(
        &[&[2, 2, 7, 6]],
        &conv(
            "Convolution",
            1,
            "num_output: 3 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
        ),
    );
}

#[test]
fn conv_3d_nd_path() {
    check(
        &[&[2, 2, 4, 5, 4]],
        &conv("Convolution", 1, "num_output: 3 kernel_size: 3 kernel_size: 2 kernel_size: 2 pad: 1 pad: 0 pad: 1 stride: 1 stride: 2 stride: 1"),
    );
}

#[test]
fn conv_1d_and_forced_nd() {
    check(
        &[&[2, 3, 11]],
        &conv(
            "Convolution",
            1,
            "num_output: 2 kernel_size: 3 stride: 2 pad: 1 dilation: 2",
        ),
    );
    check(
        &[&[2, 3, 6, 7]],
        &conv(
            "Convolution",
            1,
            "num_output: 2 kernel_size: 3 stride: 2 pad: 1 force_nd_im2col: true",
        ),
    );
}

#[test]
fn conv_two_pairs_share_weights_and_axis2() {
    check(
        &[&[2, 3, 5, 5], &[2, 3, 5, 5]],
        &conv("Convolution", 2, "num_output: 2 kernel_size: 3 pad: 1"),
    );
    // Channel axis 2: the first two axes are both "images".
    check(
        &[&[2, 2, 3, 5, 4]],
        &conv("Convolution", 1, "num_output: 2 kernel_size: 2 axis: 2"),
    );
}

#[test]
fn deconv_stride() {
    check(
        &[&[2, 3, 3, 4]],
        &conv(
            "Deconvolution",
            1,
            "num_output: 4 kernel_size: 3 stride: 2 pad: 1",
        ),
    );
}

#[test]
fn deconv_group_dilation_no_bias() {
    check(
        &[&[2, 4, 3, 3]],
        &conv(
            "Deconvolution",
            1,
            "num_output: 2 kernel_size: 2 stride: 3 dilation: 2 group: 2 bias_term: false",
        ),
    );
    check(
        &[&[2, 3, 4, 3]],
        &conv("Deconvolution", 1, "num_output: 2 kernel_size: 1"),
    );
}

#[test]
fn inner_product_axis2_and_transpose() {
    let ip = |params: &str| {
        format!("layer {{ name: \"L\" type: \"InnerProduct\" bottom: \"d0\" top: \"t\" inner_product_param {{ {params} {FILLERS} }} }}")
    };
    check(&[&[2, 3, 4, 5]], &ip("num_output: 3 axis: 2"));
    check(&[&[3, 4, 3]], &ip("num_output: 5 transpose: true"));
    check(
        &[&[2, 3, 4]],
        &ip("num_output: 2 axis: -1 transpose: true bias_term: false"),
    );
}

#[test]
fn shapes_and_configuration_errors() {
    let param = parse_net_text(
        &net(
            &[&[2, 3, 9, 9]],
            &conv(
                "Deconvolution",
                1,
                "num_output: 3 kernel_size: 4 stride: 2 pad: 1",
            ),
        ),
        "<t>",
        TextOptions::default(),
    )
    .unwrap();
    let mut rng = CaffeRng::new(1);
    let n = Net::new(
        &param,
        &NetState::default(),
        &mut rng,
        BuildOptions { verbose: false },
    )
    .unwrap();
    assert_eq!(n.blob_by_name("t0").unwrap().shape(), vec![2, 3, 18, 18]);
    assert_eq!(n.layers[1].layer.blobs()[0].shape(), vec![3, 3, 4, 4]);

    let e = build_err(
        &[&[1, 1, 3, 3]],
        &conv("Convolution", 1, "num_output: 1 kernel_size: 5 pad: 0"),
    );
    assert!(e.contains("kernel larger than the padded input"), "{e}");
    let e = build_err(
        &[&[1, 1, 5, 5]],
        &conv(
            "Convolution",
            1,
            "num_output: 1 kernel_size: 3 kernel_h: 3 kernel_w: 3",
        ),
    );
    assert!(e.contains("not both"), "{e}");
    let e = build_err(
        &[&[1, 1, 5, 5, 5]],
        &conv("Convolution", 1, "num_output: 1 kernel_h: 3 kernel_w: 3"),
    );
    assert!(e.contains("2D"), "{e}");
    let e = build_err(
        &[&[1, 1, 5, 5]],
        &conv(
            "Convolution",
            1,
            "num_output: 1 kernel_size: 3 stride: 1 stride: 1 stride: 1",
        ),
    );
    assert!(e.contains("once per spatial dimension"), "{e}");
    let e = build_err(
        &[&[1, 3, 5, 5]],
        &conv("Convolution", 1, "num_output: 2 kernel_size: 3 group: 2"),
    );
    assert!(e.contains("group"), "{e}");
    let e = build_err(&[&[1, 3, 5, 5]], &conv("Convolution", 1, "num_output: 2"));
    assert!(e.contains("kernel_size"), "{e}");
    let e = build_err(
        &[&[1, 3, 5, 5]],
        &conv("Convolution", 1, "num_output: 2 kernel_size: 3 stride_h: 2"),
    );
    assert!(e.contains("stride dimensions must be nonzero"), "{e}");
}
