//! Clocks shared by the benchmark examples (`#[path]`-included; not an example itself).

use std::time::Instant;

/// Process CPU time in ms: stable on a loaded machine when the benchmark runs one thread.
pub fn cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// Ms per call of `f` over `calls` calls: wall time, or process CPU time with
/// `CREMA_BENCH_CPU=1`.
#[allow(dead_code)]
pub fn ms_per_call(calls: usize, f: &mut dyn FnMut()) -> f64 {
    let use_cpu = std::env::var("CREMA_BENCH_CPU").is_ok();
    let (t, c) = (Instant::now(), cpu_ms());
    for _ in 0..calls {
        f();
    }
    let e = if use_cpu {
        cpu_ms() - c
    } else {
        t.elapsed().as_secs_f64() * 1e3
    };
    e / calls as f64
}
