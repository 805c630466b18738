//! The float32 GEMM rate crema's CPU backend gets from the `gemm` crate (the same threaded entry
//! point the layers use), on `RAYON_NUM_THREADS` threads: the denominator of the arithmetic
//! floor bench/cpu.sh reports. Usage: `sgemm_rate [n] [repeats]` (default 2048, 5); prints
//! `sgemm <n> <best GFLOP/s> <median GFLOP/s>`.
use std::time::Instant;

use crema::backend::cpu::blas::sgemm;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("sgemm_rate: arguments are integers: [n] [repeats]")
        })
        .collect();
    let n = args.first().copied().unwrap_or(2048);
    let repeats = args.get(1).copied().unwrap_or(5).max(1);
    let a: Vec<f32> = (0..n * n).map(|i| (i as f32 * 0.37).sin()).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i as f32 * 0.11).cos()).collect();
    let mut c = vec![0f32; n * n];
    let flop = 2.0 * (n as f64).powi(3);
    sgemm(false, false, n, n, n, 1.0, &a, &b, 0.0, &mut c);
    let mut rates: Vec<f64> = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            sgemm(false, false, n, n, n, 1.0, &a, &b, 0.0, &mut c);
            flop / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    rates.sort_by(|x, y| x.total_cmp(y));
    println!(
        "sgemm {n} {:.1} {:.1}",
        rates[repeats - 1],
        rates[repeats / 2]
    );
}
