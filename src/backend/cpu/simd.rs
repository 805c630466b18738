//! Run-time choice of wider vector instructions for the element-wise and reduction loops.
//!
//! crema is built for baseline x86-64 (SSE2: 4 floats or 2 doubles per instruction) so that
//! the one binary runs on any x86-64 CPU. The memory-bound loops of BatchNorm, Scale, ReLU and
//! the like are written so that the compiler vectorises them; `vectorized` runs such a loop
//! compiled again for AVX2 (8 floats, 4 doubles) when the CPU has it. The arithmetic is the
//! same IEEE operations in the same order either way (Rust never contracts a multiply and an
//! add into an FMA on its own, and vectorising does not reorder float sums), so the results
//! are the same bits on every CPU; only the speed differs.

use std::sync::atomic::{AtomicU8, Ordering};

/// 0: not checked yet, 1: baseline only, 2: AVX2 available.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// Whether `vectorized` may use AVX2 (checked once; `CREMA_CPU_BASELINE=1` turns it off, so
/// tests and benchmarks can compare the two builds of a loop).
pub fn avx2() -> bool {
    match LEVEL.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let off = std::env::var_os("CREMA_CPU_BASELINE").is_some_and(|v| v == "1");
            let on = !off && detect();
            LEVEL.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
    }
}

/// Forces the baseline loops (`false`) or lets the CPU decide again (`true`); for tests that
/// compare both in one process.
pub fn allow_avx2(allow: bool) {
    let on = allow && detect();
    LEVEL.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

#[cfg(target_arch = "x86_64")]
fn detect() -> bool {
    is_x86_feature_detected!("avx2")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> bool {
    false
}

/// Runs `f`, compiled for AVX2 when this CPU has it. `f` should be a closure over a loop
/// (it is inlined into an AVX2 copy of this function); call it per chunk of work inside a
/// parallel iterator, not around one, since the worker threads run their own code.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if avx2() {
            // SAFETY: the CPU has AVX2 (checked by `avx2`).
            return unsafe { with_avx2(f) };
        }
    }
    f()
}
