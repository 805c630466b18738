//! AVX2 pooling kernels: the portable ones' results (`pooling.rs`), bit for bit, 8 output
//! columns at a time.
//!
//! Each input row is first copied into `stride_w` column phases (phase r holds padded columns
//! r, r + s, r + 2s, ...), with the padding and the columns past the image filled with a value
//! that cannot change a result: −∞ for MAX (never strictly greater than the running maximum,
//! which starts at −FLT_MAX) and +0 for AVE (a sum that starts at +0 is never −0, and adding +0
//! to anything else leaves it unchanged). Then tap `kw` of 8 consecutive output columns is one
//! contiguous load from phase `kw % s`, every window has the same shape, and each lane visits
//! its taps in the portable order (rows, then columns), so:
//! - MAX keeps the portable rule per lane: `max(v, best)` is `v > best ? v : best` (false for
//!   NaN), and the argmax takes the tap's index under the same strict compare;
//! - AVE adds the same values in the same order, and divides by the same divisor.
//!
//! Backward is not here: AVE goes 8 planes at a time (`pooling_lanes`), which beat a gather by
//! columns (each padded column c lies in windows `c / s − m`, m = 0..=(k − 1 − c % s) / s, the
//! same for every lane in phase space); MAX stays portable, since that gather, comparing each
//! window's argmax with the element, was 4x slower than the portable scatter.

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::pooling::{ave_window, max_window, PoolGeom};

const LANES: usize = 8;

/// Whether this CPU runs these kernels (checked once by the caller's dispatch).
pub fn cpu_supported() -> bool {
    is_x86_feature_detected!("avx2")
}

/// The per-geometry layout shared by every plane of one call.
pub struct Plan {
    /// 8-column groups per output row.
    groups: usize,
    /// Columns per phase row of the forward copy: enough for every group's last tap.
    fwd_len: usize,
    /// Offset of tap `kw` in a copied input row: `(kw % s)·fwd_len + kw / s`.
    taps: Vec<usize>,
    /// `pw·s − pad` per output column (padded to whole groups): the argmax of tap 0 of row 0.
    col_index: Vec<i32>,
    /// AVE divisor's column extent per output column (1 past the last).
    col_extent: Vec<i32>,
}

impl Plan {
    pub fn new(g: &PoolGeom) -> Plan {
        let (s, k, pad) = (g.stride_w, g.kernel_w, g.pad_w);
        let groups = g.pooled_width.div_ceil(LANES);
        let lead = (k - 1) / s;
        let col_index = (0..groups * LANES)
            .map(|pw| (pw * s) as i32 - pad as i32)
            .collect();
        let col_extent = (0..groups * LANES)
            .map(|pw| {
                if pw < g.pooled_width {
                    ave_window(pw, s, pad, k, g.width).2 as i32
                } else {
                    1
                }
            })
            .collect();
        let fwd_len = groups * LANES + lead;
        Plan {
            groups,
            fwd_len,
            taps: (0..k).map(|kw| (kw % s) * fwd_len + kw / s).collect(),
            col_index,
            col_extent,
        }
    }
}

/// Per-thread buffer; its pads are written once per geometry (the key) and kept, since
/// every plane writes the same non-pad positions.
#[derive(Default)]
struct Scratch {
    key: Option<(u32, PoolGeom)>,
    a: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn with_scratch<R>(
    kind: u32,
    g: &PoolGeom,
    init: impl FnOnce(&mut Scratch),
    f: impl FnOnce(&mut Scratch) -> R,
) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let key = Some((kind, PoolGeom { planes: 0, ..*g }));
        if s.key != key {
            init(&mut s);
            s.key = key;
        }
        f(&mut s)
    })
}

/// `[lo, hi)` of phase-`r` columns `i` whose padded column `i·s + r` is in the image.
fn image_cols(r: usize, s: usize, pad: usize, width: usize) -> (usize, usize) {
    let first = |c: usize| if r >= c { 0 } else { (c - r).div_ceil(s) };
    (first(pad), first(pad + width))
}

/// Copies the image part of each row of `x` into its phases (`s` rows of `len` per input row).
#[target_feature(enable = "avx2")]
unsafe fn split_phases(x: &[f32], g: &PoolGeom, len: usize, out: &mut [f32]) {
    let (s, pad, w) = (g.stride_w, g.pad_w, g.width);
    if s == 2 {
        // Even columns go to phase pad % 2 from column pad / 2, odd ones to the other phase
        // from column (pad + 1) / 2.
        let (ev, od) = (w.div_ceil(2), w / 2);
        let (e_at, o_at) = (
            (pad % 2) * len + pad / 2,
            ((pad + 1) % 2) * len + pad.div_ceil(2),
        );
        if pad / 2 + ev <= len && pad.div_ceil(2) + od <= len {
            for (row, ph) in x.chunks_exact(w).zip(out.chunks_exact_mut(2 * len)) {
                let (e, o) = if e_at < o_at {
                    let (a, b) = ph.split_at_mut(o_at);
                    (&mut a[e_at..e_at + ev], &mut b[..od])
                } else {
                    let (a, b) = ph.split_at_mut(e_at);
                    (&mut b[..ev], &mut a[o_at..o_at + od])
                };
                deinterleave(row, e, o);
            }
            return;
        }
    }
    for (row, ph) in x.chunks_exact(w).zip(out.chunks_exact_mut(s * len)) {
        for r in 0..s {
            let (lo, hi) = image_cols(r, s, pad, w);
            let hi = hi.min(len);
            if lo >= hi {
                continue;
            }
            let dst = &mut ph[r * len + lo..r * len + hi];
            let first = lo * s + r - pad;
            if s == 1 {
                dst.copy_from_slice(&row[first..first + dst.len()]);
            } else {
                for (d, &v) in dst.iter_mut().zip(row[first..].iter().step_by(s)) {
                    *d = v;
                }
            }
        }
    }
}

/// `even[j] = row[2j]`, `odd[j] = row[2j + 1]`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn deinterleave(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let w = row.len();
    assert!(even.len() == w.div_ceil(2) && odd.len() == w / 2);
    let mut j = 0;
    while 2 * j + 2 * LANES <= w {
        let a = _mm256_loadu_ps(row.as_ptr().add(2 * j));
        let b = _mm256_loadu_ps(row.as_ptr().add(2 * j + LANES));
        // [a0 a2 b0 b2 | a4 a6 b4 b6], then the middle 64-bit halves swapped.
        let e = _mm256_shuffle_ps::<0x88>(a, b);
        let o = _mm256_shuffle_ps::<0xDD>(a, b);
        let e = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(e)));
        let o = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(o)));
        _mm256_storeu_ps(even.as_mut_ptr().add(j), e);
        _mm256_storeu_ps(odd.as_mut_ptr().add(j), o);
        j += LANES;
    }
    while 2 * j + LANES <= w {
        let a = _mm_loadu_ps(row.as_ptr().add(2 * j));
        let b = _mm_loadu_ps(row.as_ptr().add(2 * j + LANES / 2));
        _mm_storeu_ps(even.as_mut_ptr().add(j), _mm_shuffle_ps::<0x88>(a, b));
        _mm_storeu_ps(odd.as_mut_ptr().add(j), _mm_shuffle_ps::<0xDD>(a, b));
        j += LANES / 2;
    }
    for (c, &v) in row.iter().enumerate().skip(2 * j) {
        if c % 2 == 0 {
            even[c / 2] = v;
        } else {
            odd[c / 2] = v;
        }
    }
}

/// Stores the first `n` (at most 8) lanes of `v` and `m` at `y` and `mask`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_lanes(y: &mut [f32], v: __m256, mask: Option<(&mut [i32], __m256i)>, n: usize) {
    if n >= LANES {
        _mm256_storeu_ps(y.as_mut_ptr(), v);
        if let Some((mk, m)) = mask {
            _mm256_storeu_si256(mk.as_mut_ptr() as *mut __m256i, m);
        }
    } else {
        let mut t = [0f32; LANES];
        _mm256_storeu_ps(t.as_mut_ptr(), v);
        y[..n].copy_from_slice(&t[..n]);
        if let Some((mk, m)) = mask {
            let mut t = [0i32; LANES];
            _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, m);
            mk[..n].copy_from_slice(&t[..n]);
        }
    }
}

/// One plane of `max_pool_forward`.
pub fn max_plane(x: &[f32], y: &mut [f32], mask: &mut [i32], g: &PoolGeom, p: &Plan) {
    let len = g.height * g.stride_w * p.fwd_len;
    with_scratch(
        0,
        g,
        |s| {
            s.a.clear();
            s.a.resize(len, f32::NEG_INFINITY);
        },
        |s| {
            // SAFETY: the dispatch checked AVX2 (`cpu_supported`).
            unsafe { max_rows(x, &mut s.a, y, mask, g, p) }
        },
    )
}

#[target_feature(enable = "avx2")]
unsafe fn max_rows(
    x: &[f32],
    ph_buf: &mut [f32],
    y: &mut [f32],
    mask: &mut [i32],
    g: &PoolGeom,
    p: &Plan,
) {
    split_phases(x, g, p.fwd_len, ph_buf);
    let ph_buf = &*ph_buf;
    for ph in 0..g.pooled_height {
        let rows = max_window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height);
        let mut grp = 0;
        // Two groups at a time: two independent chains of compares hide their latency.
        while grp + 2 <= p.groups {
            max_groups::<2>(ph_buf, y, mask, g, p, ph, rows, grp);
            grp += 2;
        }
        if grp < p.groups {
            max_groups::<1>(ph_buf, y, mask, g, p, ph, rows, grp);
        }
    }
}

/// Output row `ph`, groups `grp..grp + G`.
#[inline]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn max_groups<const G: usize>(
    ph_buf: &[f32],
    y: &mut [f32],
    mask: &mut [i32],
    g: &PoolGeom,
    p: &Plan,
    ph: usize,
    (hs, he): (usize, usize),
    grp: usize,
) {
    let w = g.width;
    let row_len = g.stride_w * p.fwd_len;
    let one = _mm256_set1_epi32(1);
    let next_row = _mm256_set1_epi32(w as i32 - p.taps.len() as i32);
    let pw0 = grp * LANES;
    let mut best = [_mm256_set1_ps(-f32::MAX); G];
    let mut arg = [_mm256_set1_epi32(-1); G];
    let mut idx = [_mm256_setzero_si256(); G];
    for (j, idx) in idx.iter_mut().enumerate() {
        *idx = _mm256_add_epi32(
            _mm256_loadu_si256(p.col_index.as_ptr().add(pw0 + j * LANES) as *const __m256i),
            _mm256_set1_epi32((hs * w) as i32),
        );
    }
    assert!(he * row_len <= ph_buf.len() && pw0 + G * LANES + p.taps[p.taps.len() - 1] <= row_len);
    for h in hs..he {
        let row = ph_buf.as_ptr().add(h * row_len + pw0);
        for &t in &p.taps {
            for j in 0..G {
                let v = _mm256_loadu_ps(row.add(t + j * LANES));
                let gt = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(v, best[j]));
                best[j] = _mm256_max_ps(v, best[j]);
                arg[j] = _mm256_blendv_epi8(arg[j], idx[j], gt);
                idx[j] = _mm256_add_epi32(idx[j], one);
            }
        }
        for idx in idx.iter_mut() {
            *idx = _mm256_add_epi32(*idx, next_row);
        }
    }
    let pwd = g.pooled_width;
    for j in 0..G {
        let at = pw0 + j * LANES;
        let o = ph * pwd + at;
        store_lanes(
            &mut y[o..],
            best[j],
            Some((&mut mask[o..], arg[j])),
            pwd - at,
        );
    }
}

/// One plane of `ave_pool_forward`.
pub fn ave_plane(x: &[f32], y: &mut [f32], g: &PoolGeom, p: &Plan) {
    let len = g.height * g.stride_w * p.fwd_len;
    with_scratch(
        1,
        g,
        |s| {
            s.a.clear();
            s.a.resize(len, 0.0);
        },
        |s| {
            // SAFETY: the dispatch checked AVX2.
            unsafe { ave_rows(x, &mut s.a, y, g, p) }
        },
    )
}

#[target_feature(enable = "avx2")]
unsafe fn ave_rows(x: &[f32], ph_buf: &mut [f32], y: &mut [f32], g: &PoolGeom, p: &Plan) {
    split_phases(x, g, p.fwd_len, ph_buf);
    let ph_buf = &*ph_buf;
    for ph in 0..g.pooled_height {
        let mut grp = 0;
        while grp + 2 <= p.groups {
            ave_groups::<2>(ph_buf, y, g, p, ph, grp);
            grp += 2;
        }
        if grp < p.groups {
            ave_groups::<1>(ph_buf, y, g, p, ph, grp);
        }
    }
}

/// Output row `ph`, groups `grp..grp + G`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn ave_groups<const G: usize>(
    ph_buf: &[f32],
    y: &mut [f32],
    g: &PoolGeom,
    p: &Plan,
    ph: usize,
    grp: usize,
) {
    let (hs, he, hext) = ave_window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height);
    let row_len = g.stride_w * p.fwd_len;
    let pw0 = grp * LANES;
    let mut sum = [_mm256_setzero_ps(); G];
    assert!(he * row_len <= ph_buf.len() && pw0 + G * LANES + p.taps[p.taps.len() - 1] <= row_len);
    for h in hs..he {
        let row = ph_buf.as_ptr().add(h * row_len + pw0);
        for &t in &p.taps {
            for (j, sum) in sum.iter_mut().enumerate() {
                *sum = _mm256_add_ps(*sum, _mm256_loadu_ps(row.add(t + j * LANES)));
            }
        }
    }
    let hext = _mm256_set1_epi32(hext as i32);
    let pwd = g.pooled_width;
    for (j, sum) in sum.into_iter().enumerate() {
        let at = pw0 + j * LANES;
        let wext = _mm256_loadu_si256(p.col_extent.as_ptr().add(at) as *const __m256i);
        let div = _mm256_cvtepi32_ps(_mm256_mullo_epi32(hext, wext));
        let o = ph * pwd + at;
        store_lanes(&mut y[o..], _mm256_div_ps(sum, div), None, pwd - at);
    }
}

#[cfg(test)]
mod tests {
    use super::super::pooling::*;

    /// Values from a small set (many ties), with NaN, ±∞ and ±0 mixed in.
    fn data(n: usize, seed: u64, special: bool) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = (s >> 33) as u32;
                match r % 23 {
                    0 if special => f32::NAN,
                    1 if special => f32::NEG_INFINITY,
                    2 if special => f32::INFINITY,
                    3 => -0.0,
                    4 => 0.0,
                    5 => -f32::MAX,
                    _ => ((r >> 8) % 7) as f32 * 0.37 - 1.1,
                }
            })
            .collect()
    }

    /// Exact bits, except that every NaN is one: which NaN a sum of two NaNs gives depends on
    /// the operand order the compiler picks (Rust leaves it unspecified), in either path.
    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter()
            .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn geom(
        planes: usize,
        (h, w): (usize, usize),
        (kh, kw): (usize, usize),
        (sh, sw): (usize, usize),
        (ph, pw): (usize, usize),
        ceil: bool,
    ) -> Option<PoolGeom> {
        let clip = ph > 0 || pw > 0;
        let oh = pooled_extent(h, kh, ph, sh, ceil, clip);
        let ow = pooled_extent(w, kw, pw, sw, ceil, clip);
        (oh >= 1 && ow >= 1).then_some(PoolGeom {
            planes,
            height: h,
            width: w,
            pooled_height: oh as usize,
            pooled_width: ow as usize,
            kernel_h: kh,
            kernel_w: kw,
            stride_h: sh,
            stride_w: sw,
            pad_h: ph,
            pad_w: pw,
        })
    }

    /// Runs all four ops both ways and asserts equal bits.
    fn same_bits(g: &PoolGeom, seed: u64) {
        let (n_in, n_out) = (
            g.planes * g.height * g.width,
            g.planes * g.pooled_height * g.pooled_width,
        );
        let kinds = [PoolKernels::Portable, PoolKernels::Avx2];
        for special in [false, true] {
            let x = data(n_in, seed, special);
            let dy = data(n_out, seed ^ 0x55, special);
            let mut outs = Vec::new();
            for k in kinds {
                let (mut y, mut m) = (vec![7f32; n_out], vec![7i32; n_out]);
                max_pool_forward_with(k, &x, &mut y, &mut m, g);
                let mut dx = vec![7f32; n_in];
                max_pool_backward_with(k, &dy, &m, &mut dx, g);
                let mut ya = vec![7f32; n_out];
                ave_pool_forward_with(k, &x, &mut ya, g);
                let mut dxa = vec![7f32; n_in];
                ave_pool_backward_with(k, &dy, &mut dxa, g);
                // MAX selects (no arithmetic), so its top is compared bit for bit, NaNs included.
                let y: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
                outs.push((y, m, bits(&dx), bits(&ya), bits(&dxa)));
            }
            let (a, b) = (&outs[0], &outs[1]);
            let what = format!("{g:?} special {special}");
            assert_eq!(a.0, b.0, "MAX top, {what}");
            assert_eq!(a.1, b.1, "MAX argmax, {what}");
            assert_eq!(a.2, b.2, "MAX bottom diff, {what}");
            assert_eq!(a.3, b.3, "AVE top, {what}");
            assert_eq!(a.4, b.4, "AVE bottom diff, {what}");
        }
    }

    #[test]
    fn avx2_matches_portable_bit_for_bit() {
        if !super::cpu_supported() {
            println!("SKIPPED: this CPU has no AVX2");
            return;
        }
        let mut cases = 0;
        let sizes = [1, 2, 3, 5, 8, 9, 16, 17, 24, 32, 33];
        for (si, &w) in sizes.iter().enumerate() {
            let h = sizes[(si * 7 + 3) % sizes.len()];
            for k in [1, 2, 3, 5] {
                for s in [1, 2, 3] {
                    for p in [0, 1, 2] {
                        if p >= k {
                            continue;
                        }
                        for ceil in [true, false] {
                            for (hh, kh, sh, ph) in [(w, k, s, p), (h, (k + 1) % 4 + 1, 1, 0)] {
                                let ph = ph.min(kh - 1);
                                if let Some(g) = geom(11, (hh, w), (kh, k), (sh, s), (ph, p), ceil)
                                {
                                    same_bits(&g, cases);
                                    cases += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        // Global pooling and the timing nets' shapes, large enough to run in parallel.
        for (planes, hw, k, s) in [
            (5, 8, 8, 1),
            (4, 7, 7, 1),
            (40, 32, 3, 2),
            (40, 16, 3, 2),
            (40, 8, 3, 2),
            (40, 24, 2, 2),
            (40, 8, 2, 2),
        ] {
            let g = geom(planes, (hw, hw), (k, k), (s, s), (0, 0), true).unwrap();
            same_bits(&g, cases);
            cases += 1;
        }
        assert!(cases > 500, "only {cases} shapes");
    }
}
