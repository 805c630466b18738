//! Dropout in TRAIN draws a random mask, and the backends draw theirs differently (the CPU from
//! the net's random source, the GPU from a counter-based Philox generator), so their outputs
//! cannot be compared element by element. Two checks replace that comparison:
//! - the dropout kernels against the host mirror of their Philox mask
//!   (`kernels::dropout_mask_host`) and the CPU's dropout arithmetic with that mask: exact;
//! - the layer on either backend against the mask it drew: every output is 0 or `x * scale`,
//!   the kept fraction is 1 - ratio within five standard deviations, and backward applies the
//!   forward's mask.

use anyhow::{anyhow, Context, Result};
use cudarc::driver::DevicePtrMut;

use super::{matches, max_rel_error, Built, Draw, Measured, Row, Side, Status, SEED};
use crate::backend::cpu::activation::{self as act, Io as HostIo};
use crate::backend::cuda::gpu::{download, upload, Gpu};
use crate::backend::cuda::kernels::{dropout_mask_host, dropout_threshold, Io};
use crate::rng::CaffeRng;

/// The layer in TRAIN on `side`, checked against its own mask (see the module docs).
pub(super) fn run_train_layer(
    case: &super::LayerCase,
    shapes: &[Vec<usize>],
    side: &Side,
    ratio: f32,
    perturb: f32,
) -> Result<Measured> {
    let mut b = Built::new(case, shapes, side)?;
    let mut draw = Draw {
        rng: CaffeRng::new(SEED + 1),
    };
    let (name, fill) = case.inputs[0];
    let input = b
        .net
        .blob_by_name(name)
        .cloned()
        .ok_or_else(|| anyhow!("no input '{name}'"))?;
    draw.set_data(fill, [&input, &input])?;
    let x = input.data_vec();
    b.forward().context("forward")?;
    let top = b.tops()[0].clone();
    let mut y = top.data_vec();
    if perturb != 0.0 {
        y[0] = y[0] * (1.0 + perturb) + perturb;
    }
    let scale = (1.0 / (1.0 - ratio as f64)) as f32;
    // The drawn mask, read off the output (inputs are never zero).
    let mask: Vec<f32> = y
        .iter()
        .map(|&v| if v != 0.0 { 1.0 } else { 0.0 })
        .collect();
    let mut expect = vec![0f32; x.len()];
    act::dropout_forward(HostIo::Separate(&x, &mut expect), &mask, scale);
    let forward = max_rel_error(&expect, &y);
    let n = mask.len() as f64;
    let kept = mask.iter().sum::<f32>() as f64 / n;
    let p = 1.0 - ratio as f64;
    let sigma = (p * (1.0 - p) / n).sqrt();
    let note = ((kept - p).abs() > 5.0 * sigma + 1.0 / n).then(|| {
        format!(
            "kept fraction {kept:.4}, expected {p:.4} (5 sigma = {:.4})",
            5.0 * sigma
        )
    });
    draw.set_diff([&top, &top])?;
    let dy = top.diff_vec();
    b.backward(&[true]).context("backward")?;
    let mut dx = input.diff_vec();
    if perturb != 0.0 {
        dx[0] = dx[0] * (1.0 + perturb) + perturb;
    }
    let mut expect = vec![0f32; dy.len()];
    act::dropout_backward(HostIo::Separate(&dy, &mut expect), &mask, scale);
    Ok(Measured {
        forward,
        backward: Some(max_rel_error(&expect, &dx)),
        host: b.computes_on_host(),
        note,
        backward_wrote: dx != dy,
    })
}

/// Runs the three dropout kernels for one size and compares them with the host mirror.
fn kernel_errors(g: &Gpu, n: usize, ratio: f32, seed: u64, offset: u64) -> Result<(f32, f32)> {
    let k = g.kernels();
    let s = g.stream();
    let scale = (1.0 / (1.0 - ratio as f64)) as f32;
    let mut rng = CaffeRng::new(seed ^ n as u64);
    let x: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let dy: Vec<f32> = (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let mask_host = dropout_mask_host(seed, offset, n, dropout_threshold(ratio));

    let mut xd = g.alloc_zeros(n)?;
    upload(g, &x, &mut xd)?;
    let mut yd = g.alloc_zeros(n)?;
    let mut md = g.alloc_zeros(n)?;
    k.dropout_fwd(
        s,
        Io::Separate(&xd, &mut yd),
        Some(&mut md as &mut dyn DevicePtrMut<f32>),
        seed,
        offset,
        ratio,
        scale,
    )?;
    let (mut y, mut m) = (vec![0f32; n], vec![0f32; n]);
    download(&yd, &mut y)?;
    download(&md, &mut m)?;
    let mut y_host = vec![0f32; n];
    act::dropout_forward(HostIo::Separate(&x, &mut y_host), &mask_host, scale);
    let forward = max_rel_error(&mask_host, &m).max(max_rel_error(&y_host, &y));

    let mut dyd = g.alloc_zeros(n)?;
    upload(g, &dy, &mut dyd)?;
    let mut dxd = g.alloc_zeros(n)?;
    k.dropout_bwd(s, Io::Separate(&dyd, &mut dxd), seed, offset, ratio, scale)?;
    let mut dx = vec![0f32; n];
    download(&dxd, &mut dx)?;
    let mut dx_host = vec![0f32; n];
    act::dropout_backward(HostIo::Separate(&dy, &mut dx_host), &mask_host, scale);
    let mut backward = max_rel_error(&dx_host, &dx);
    // The stored-mask form, in place.
    k.dropout_bwd_mask(s, Io::InPlace(&mut dyd), &md, scale)?;
    download(&dyd, &mut dx)?;
    backward = backward.max(max_rel_error(&dx_host, &dx));
    Ok((forward, backward))
}

/// Rows for the dropout kernels against the Philox host mirror.
pub(super) fn kernel_rows(g: &Gpu, filter: &Option<String>) -> Vec<Row> {
    if !matches(filter, "dropout-kernel") {
        return Vec::new();
    }
    let mut rows = Vec::new();
    for (n, ratio, seed, offset) in [
        (1usize, 0.5f32, 7u64, 0u64),
        (7, 0.5, 7, 1),
        (4099, 0.3, 0x1234_5678_9abc, 5),
        (100_003, 0.9, u64::MAX - 3, 1 << 33),
    ] {
        let config = format!("ratio {ratio} seed {seed:#x} offset {offset}");
        let row = match kernel_errors(g, n, ratio, seed, offset) {
            Ok((f, b)) => Row {
                op: "dropout-kernel".into(),
                config,
                shape: n.to_string(),
                forward: Some(f),
                backward: Some(b),
                tolerance: 0.0,
                status: if f == 0.0 && b == 0.0 {
                    Status::Pass
                } else {
                    Status::Fail
                },
                note: "vs the host mirror of the Philox mask: exact".into(),
            },
            Err(e) => Row {
                op: "dropout-kernel".into(),
                config,
                shape: n.to_string(),
                forward: None,
                backward: None,
                tolerance: 0.0,
                status: Status::Fail,
                note: format!("{e:#}"),
            },
        };
        rows.push(row);
    }
    rows
}
