//! Times the CPU pooling kernels on the pooling layers of CIFAR-10 quick and LeNet (forward
//! and backward), portable against AVX2, interleaved, on `RAYON_NUM_THREADS` threads: best and
//! worst of 7 rounds, by wall time or, with `CREMA_BENCH_CPU=1`, by process CPU time (stable on
//! a loaded machine when run with one thread). `CREMA_BENCH_ONLY=pool3` keeps the matching shapes.

use crema::backend::cpu::pooling::*;

#[path = "common/clock.rs"]
mod clock;

/// One round: ms per call (mean of 5 calls).
fn round(f: &mut dyn FnMut()) -> f64 {
    clock::ms_per_call(5, f)
}

fn geom(planes: usize, hw: usize, k: usize, s: usize) -> PoolGeom {
    let o = pooled_extent(hw, k, 0, s, true, false) as usize;
    PoolGeom {
        planes,
        height: hw,
        width: hw,
        pooled_height: o,
        pooled_width: o,
        kernel_h: k,
        kernel_w: k,
        stride_h: s,
        stride_w: s,
        pad_h: 0,
        pad_w: 0,
    }
}

fn main() {
    let cases = [
        ("cifar pool1 MAX", true, geom(100 * 32, 32, 3, 2)),
        ("cifar pool2 AVE", false, geom(100 * 32, 16, 3, 2)),
        ("cifar pool3 AVE", false, geom(100 * 64, 8, 3, 2)),
        ("lenet pool1 MAX", true, geom(64 * 20, 24, 2, 2)),
        ("lenet pool2 MAX", true, geom(64 * 50, 8, 2, 2)),
    ];
    let best = PoolKernels::best();
    if best == PoolKernels::Portable {
        println!("SKIPPED: this CPU has only the portable kernels");
        return;
    }
    println!("threads {}, kernels {best:?}", rayon::current_num_threads());
    let only = std::env::var("CREMA_BENCH_ONLY").unwrap_or_default();
    let mut totals = [0.0; 4];
    for (name, max, g) in cases {
        if !name.contains(only.as_str()) {
            continue;
        }
        let n_in = g.planes * g.height * g.width;
        let n_out = g.planes * g.pooled_height * g.pooled_width;
        let x: Vec<f32> = (0..n_in).map(|i| (i as f32 * 0.37).sin()).collect();
        let dy: Vec<f32> = (0..n_out).map(|i| (i as f32 * 0.13).cos()).collect();
        let (mut y, mut mask, mut dx) = (vec![0f32; n_out], vec![0i32; n_out], vec![0f32; n_in]);
        max_pool_forward(&x, &mut y, &mut mask, &g);
        // [kernels][fwd, bwd] -> per-round times
        let mut t = vec![[Vec::new(), Vec::new()]; 2];
        for _ in 0..7 {
            for (ki, k) in [PoolKernels::Portable, best].into_iter().enumerate() {
                let mut fwd = || {
                    if max {
                        max_pool_forward_with(k, &x, &mut y, &mut mask, &g)
                    } else {
                        ave_pool_forward_with(k, &x, &mut y, &g)
                    }
                };
                t[ki][0].push(round(&mut fwd));
                let mut bwd = || {
                    if max {
                        max_pool_backward_with(k, &dy, &mask, &mut dx, &g)
                    } else {
                        ave_pool_backward_with(k, &dy, &mut dx, &g)
                    }
                };
                t[ki][1].push(round(&mut bwd));
            }
        }
        let stat = |v: &Vec<f64>| {
            let lo = v.iter().cloned().fold(f64::MAX, f64::min);
            let hi = v.iter().cloned().fold(0.0, f64::max);
            (lo, hi)
        };
        let mut line = format!("{name:16}");
        for (d, dir) in ["fwd", "bwd"].iter().enumerate() {
            let (o, oh) = stat(&t[0][d]);
            let (n, nh) = stat(&t[1][d]);
            totals[d * 2] += o;
            totals[d * 2 + 1] += n;
            line += &format!(
                "  {dir} old {o:6.3} (..{oh:6.3}) new {n:6.3} (..{nh:6.3}) ms  x{:5.1}",
                o / n
            );
        }
        println!("{line}");
    }
    println!(
        "total            fwd old {:.2} new {:.2} ms (x{:.1})  bwd old {:.2} new {:.2} ms (x{:.1})",
        totals[0],
        totals[1],
        totals[0] / totals[1],
        totals[2],
        totals[3],
        totals[2] / totals[3]
    );
}
