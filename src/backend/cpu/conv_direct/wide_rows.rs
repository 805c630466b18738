//! Row tiles with 512-bit vectors (`Tiles::WideRows`): 16 outputs of a row per vector
//! instead of 8. A forward tap of 8 channels x 3 vectors is then 24 multiply-adds of 16
//! lanes for 3 loads and 8 broadcasts, where the 256-bit tiles do 24 of 8 lanes for as many:
//! on ResNet-20's 16-channel layers (144 taps), whose tiles are short enough that their
//! loads, stores and loop overheads show, the forward and input gradient ran 6-11% faster
//! (docs/cpu-perf.md, entry 25).
//!
//! The forward adds every output's products in tap order, as the 256-bit tiles do: the same
//! bits. The weight gradient sums 16 lanes per weight, then adds lane `l` and `l + 8` and
//! the 8 results as `lane_sum` does: its own rounding, fixed by the shapes (`lanes_sum`).

use std::arch::x86_64::*;

use super::{FwdTile, WgradTile, LANES, WIDE_LANES};

/// The mask of a vector's first `len` lanes.
#[inline(always)]
fn lane_mask(len: usize) -> __mmask16 {
    debug_assert!(len <= WIDE_LANES);
    ((1u32 << len) - 1) as __mmask16
}

/// `R` channels x `V` vectors of 16 outputs: for every tap k of `t.taps` in order,
/// `acc[i][j] += a[k][i] * image[offs[k] + vector j]`; then the vectors' real lanes stored
/// (or added to, in a later pass over the taps).
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
pub(super) unsafe fn fwd<const R: usize, const V: usize>(t: FwdTile) {
    let mut src = [t.im.as_ptr(); V];
    let mut dst = [0usize; V];
    let mut mask = [0 as __mmask16; V];
    for j in 0..V {
        let v = t.vecs[j];
        src[j] = t.im.as_ptr().add(v.src);
        dst[j] = v.dst;
        mask[j] = lane_mask(v.len);
        debug_assert!((t.rows - 1) * t.ystride + v.dst + v.len <= t.y.len());
    }
    let y = t.y.as_mut_ptr();
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    if t.accumulate {
        for (i, row) in acc.iter_mut().enumerate().take(t.rows) {
            for j in 0..V {
                row[j] = _mm512_maskz_loadu_ps(mask[j], y.add(i * t.ystride + dst[j]));
            }
        }
    }
    let (ap, op) = (t.a.as_ptr(), t.offs.as_ptr());
    for run in 0..t.taps.count {
        let k0 = t.taps.first + run * t.taps.stride;
        for k in k0..k0 + t.taps.len {
            let o = *op.add(k);
            let mut b = [_mm512_setzero_ps(); V];
            for j in 0..V {
                b[j] = _mm512_loadu_ps(src[j].add(o));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*ap.add(k * R + i));
                for j in 0..V {
                    row[j] = _mm512_fmadd_ps(ai, b[j], row[j]);
                }
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(t.rows) {
        for j in 0..V {
            _mm512_mask_storeu_ps(y.add(i * t.ystride + dst[j]), mask[j], row[j]);
        }
    }
}

/// `R` (8) channels x `T` taps: `acc[i][j] += dy[vector][row i] * (image[offs[j] + vector]
/// masked to the vector's real lanes)` over the visit's vectors; the accumulators come from
/// `state` (`[row][tap][16]` with 3 taps per row) or zero, and go back there or, their lanes
/// added as `lanes_sum` adds 16, to `out`.
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
pub(super) unsafe fn wgrad<const R: usize, const T: usize, const MASKED: bool>(
    t: &WgradTile,
    state: &mut [f32],
    out: Option<&mut [f32]>,
    stride: usize,
) {
    // The lane sums below transpose 8 rows at once.
    const { assert!(R == 8) };
    let sst = state.len() / (R * WIDE_LANES);
    let at = |i: usize, j: usize| (i * sst + j) * WIDE_LANES;
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    if !t.first {
        for i in 0..R {
            for j in 0..T {
                acc[i][j] = _mm512_loadu_ps(state[at(i, j)..][..WIDE_LANES].as_ptr());
            }
        }
    }
    let im = t.im.as_ptr();
    let b0: [*const f32; T] = std::array::from_fn(|j| im.add(t.offs[j]));
    let (lo, span) = (t.real_rows.start, t.real_rows.len() as u32);
    for v in 0..t.srcs.len() {
        if t.vrows.get_unchecked(v).wrapping_sub(lo) >= span {
            continue;
        }
        let d = t.dy.as_ptr().add(v * R * WIDE_LANES);
        let src = *t.srcs.get_unchecked(v);
        let mut b = [_mm512_setzero_ps(); T];
        if MASKED {
            let mask = lane_mask(*t.lens.get_unchecked(v) as usize);
            for j in 0..T {
                b[j] = _mm512_maskz_loadu_ps(mask, b0[j].add(src));
            }
        } else {
            for j in 0..T {
                b[j] = _mm512_loadu_ps(b0[j].add(src));
            }
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let di = _mm512_loadu_ps(d.add(i * WIDE_LANES));
            for j in 0..T {
                row[j] = _mm512_fmadd_ps(di, b[j], row[j]);
            }
        }
    }
    let Some(out) = out else {
        for i in 0..R {
            for j in 0..T {
                _mm512_storeu_ps(state[at(i, j)..][..WIDE_LANES].as_mut_ptr(), acc[i][j]);
            }
        }
        return;
    };
    for j in 0..T {
        // Lane l plus lane l + 8, then the 8-lane sums of all rows at once.
        let halves: [__m256; 8] = std::array::from_fn(|i| {
            let a = acc[i][j];
            let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a)));
            _mm256_add_ps(_mm512_castps512_ps256(a), hi)
        });
        let mut sums = [0f32; LANES];
        _mm256_storeu_ps(sums.as_mut_ptr(), super::avx512::lane_sums8(halves));
        out[j * stride..][..t.rows].copy_from_slice(&sums[..t.rows]);
    }
}
