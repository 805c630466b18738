//! Wider builds of the CPU loops that are bound by arithmetic at baseline x86-64.
//!
//! crema is compiled for baseline x86-64 (SSE2: 4 floats or 2 doubles per register) so that
//! the binary runs on any x86-64 CPU. The BatchNorm loops do several double-precision
//! operations and a division per value; at 2 doubles per instruction they run below memory
//! speed once their blob is in cache (docs/cpu-perf.md). `run` compiles a loop a second
//! time with AVX2 (and AVX-512) enabled and picks the build once, by what the CPU has.
//!
//! The bits do not change: the wider builds do the same IEEE operations on the same values in
//! the same order (vector lanes are independent, and Rust never contracts `a * b + c` into a
//! fused multiply-add), so every result is identical on every CPU. The tests check it.

use std::sync::OnceLock;

/// The instruction sets a loop can be built for, narrowest first (`available` compares them
/// by this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wide {
    /// Baseline x86-64 (or another architecture): the loop as compiled.
    Base,
    Avx2,
    Avx512,
}

impl Wide {
    /// The widest build this CPU runs (detected once).
    pub fn detected() -> Wide {
        static LEVEL: OnceLock<Wide> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("avx2")
                {
                    return Wide::Avx512;
                }
                if is_x86_feature_detected!("avx2") {
                    return Wide::Avx2;
                }
            }
            Wide::Base
        })
    }

    /// Every build this CPU runs, narrowest first (for tests that compare them).
    pub fn available() -> Vec<Wide> {
        [Wide::Base, Wide::Avx2, Wide::Avx512]
            .into_iter()
            .filter(|&w| w as u8 <= Wide::detected() as u8)
            .collect()
    }

    /// Runs `f` compiled for this level. `f` should be a loop whose body is inlined into it
    /// (`#[inline(always)]` helpers): what it calls out of line keeps the baseline build.
    #[inline(always)]
    pub fn run<R>(self, f: impl FnOnce() -> R) -> R {
        match self {
            Wide::Base => f(),
            // SAFETY: a level above Base comes from `detected()` (or `available()`), which
            // checked that the CPU has its instructions.
            #[cfg(target_arch = "x86_64")]
            Wide::Avx2 => unsafe { on_avx2(f) },
            #[cfg(target_arch = "x86_64")]
            Wide::Avx512 => unsafe { on_avx512(f) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => f(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn on_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512dq")]
unsafe fn on_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// The bit patterns of a run of floats: what the tests compare between builds.
#[cfg(test)]
pub(crate) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}
