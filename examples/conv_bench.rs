//! Times the CPU convolution kernels on the layer shapes of LeNet, CIFAR-10 quick and
//! ResNet-20 (forward, weight gradient, input gradient), on `RAYON_NUM_THREADS` threads: each
//! shape through the im2col + GEMM path and through the direct kernels where they apply
//! (`CREMA_BENCH_PATH=gemm` or `direct` for one of them), interleaved. `CREMA_BENCH_PATH=tiles`
//! compares the direct kernels' row, wide row and channel tiles instead (on a CPU with
//! AVX-512VL).
//! x86-64 only, like the direct kernels.

use crema::backend::cpu::conv::*;
use crema::backend::cpu::conv_direct::{force_tiles, Tiles};

fn geom(c: usize, m: usize, hw: usize, k: usize, p: usize, s: usize) -> ConvGeom {
    let o = conv_out_size(hw, k, p, s, 1).unwrap();
    ConvGeom {
        im_channels: c,
        col_channels: m,
        group: 1,
        im_shape: vec![hw, hw],
        col_shape: vec![o, o],
        kernel: vec![k, k],
        pad: vec![p, p],
        stride: vec![s, s],
        dilation: vec![1, 1],
        force_nd: false,
    }
}

#[path = "common/clock.rs"]
mod clock;

/// Best of 5 (3 calls each), in ms: wall time, or process CPU time with CREMA_BENCH_CPU=1
/// (stable on a loaded machine when run with one thread).
fn time(f: &mut dyn FnMut()) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..5 {
        best = best.min(clock::ms_per_call(3, f));
    }
    best
}

fn main() {
    let cases = [
        ("lenet conv1", 64, geom(1, 20, 28, 5, 0, 1)),
        ("lenet conv2", 64, geom(20, 50, 12, 5, 0, 1)),
        ("cifar conv1", 100, geom(3, 32, 32, 5, 2, 1)),
        ("cifar conv2", 100, geom(32, 32, 16, 5, 2, 1)),
        ("cifar conv3", 100, geom(32, 64, 8, 5, 2, 1)),
        ("res20 conv1", 128, geom(3, 16, 32, 3, 1, 1)),
        ("res20 16-16", 128, geom(16, 16, 32, 3, 1, 1)),
        ("res20 16-32s2", 128, geom(16, 32, 32, 3, 1, 2)),
        ("res20 32-32", 128, geom(32, 32, 16, 3, 1, 1)),
        ("res20 32-64s2", 128, geom(32, 64, 16, 3, 1, 2)),
        ("res20 64-64", 128, geom(64, 64, 8, 3, 1, 1)),
        ("res20 proj 16-32s2", 128, geom(16, 32, 32, 1, 0, 2)),
        ("res20 proj 32-64s2", 128, geom(32, 64, 16, 1, 0, 2)),
    ];
    println!("threads {}", rayon::current_num_threads());
    let only = std::env::var("CREMA_BENCH_ONLY").unwrap_or_default();
    // (name, GEMM only, forced forward tiles)
    let paths: Vec<(&str, bool, Option<Tiles>)> = match std::env::var("CREMA_BENCH_PATH").as_deref()
    {
        Ok("gemm") => vec![("gemm", true, None)],
        Ok("direct") => vec![("direct", false, None)],
        Ok("tiles") => vec![
            ("rows", false, Some(Tiles::Rows)),
            ("wide", false, Some(Tiles::WideRows)),
            ("chan", false, Some(Tiles::Channels { vectors: 0 })),
        ],
        _ => vec![("gemm", true, None), ("direct", false, None)],
    };
    let mut totals = vec![(0.0, 0.0, 0.0); paths.len()];
    for (name, num, g) in cases {
        if !name.contains(only.as_str()) {
            continue;
        }
        let x: Vec<f32> = (0..num * g.im_dim())
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let w: Vec<f32> = (0..g.weight_len())
            .map(|i| (i as f32 * 0.11).cos())
            .collect();
        let b = vec![0.1f32; g.col_channels];
        let dy: Vec<f32> = (0..num * g.col_dim())
            .map(|i| (i as f32 * 0.13).cos())
            .collect();
        let mut y = vec![0f32; num * g.col_dim()];
        let mut dx = vec![0f32; num * g.im_dim()];
        let mut dw = vec![0f32; g.weight_len()];
        let mut db = vec![0f32; g.col_channels];
        let mut partials = Vec::new();
        let gflop = 2.0 * (num * g.col_channels * g.kernel_dim() * g.col_spatial()) as f64 / 1e9;
        for (pi, &(path, gemm_only, tiles)) in paths.iter().enumerate() {
            set_gemm_only(gemm_only);
            force_tiles(tiles);
            let f = time(&mut || conv_forward(&g, num, &x, &w, Some(&b), &mut y));
            let wg = time(&mut || {
                conv_weight_grad(&g, num, &x, &dy, &mut dw, Some(&mut db), &mut partials);
            });
            let d = time(&mut || conv_backward_input(&g, num, &dy, &w, &mut dx));
            println!(
                "{name:14} {path:6} fwd {f:7.2} ms ({:5.1} GF/s)  wgrad {wg:7.2} ms ({:5.1})  dgrad {d:7.2} ms ({:5.1})",
                gflop / f * 1e3,
                gflop / wg * 1e3,
                gflop / d * 1e3
            );
            totals[pi].0 += f;
            totals[pi].1 += wg;
            totals[pi].2 += d;
        }
    }
    for (&(path, _, _), (tf, tw, td)) in paths.iter().zip(totals) {
        println!("total {path:6} fwd {tf:.1} ms, wgrad {tw:.1} ms, dgrad {td:.1} ms");
    }
}
