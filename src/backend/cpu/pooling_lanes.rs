//! AVX2 pooling of 8 planes at once, one per lane, for planes too narrow to fill a vector with
//! output columns (`pooling_simd`). The planes are transposed so that one position of all 8
//! is one vector; then the portable loops (`pooling.rs`) run unchanged on vectors: every lane
//! does exactly the scalar operations in the scalar order, so the bits are the portable ones.

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::pooling::{ave_window, max_window, PoolGeom};

/// Planes per call (lanes of a 256-bit vector).
pub const PLANES: usize = 8;

#[derive(Default)]
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    m: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn with_scratch<R>(
    na: usize,
    nb: usize,
    f: impl FnOnce(&mut [f32], &mut [f32], &mut [f32]) -> R,
) -> R {
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        for (v, n) in [(&mut s.a, na), (&mut s.b, nb), (&mut s.m, nb)] {
            if v.len() < n {
                v.resize(n, 0.0);
            }
        }
        f(&mut s.a[..na], &mut s.b[..nb], &mut s.m[..nb])
    })
}

/// Transposes 8 vectors (rows) into 8 vectors (columns).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// `out[i·8 + j] = src[j·n + i]`: 8 planes of `n` into `n` vectors.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn to_lanes(src: &[f32], n: usize, out: &mut [f32]) {
    assert!(src.len() == PLANES * n && out.len() == PLANES * n);
    let full = n / PLANES * PLANES;
    for i0 in (0..full).step_by(PLANES) {
        let r: [__m256; 8] = std::array::from_fn(|j| _mm256_loadu_ps(src.as_ptr().add(j * n + i0)));
        for (i, c) in transpose8(r).into_iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add((i0 + i) * PLANES), c);
        }
    }
    for i in full..n {
        for j in 0..PLANES {
            out[i * PLANES + j] = src[j * n + i];
        }
    }
}

/// The inverse of `to_lanes`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn from_lanes(src: &[f32], n: usize, out: &mut [f32]) {
    assert!(src.len() == PLANES * n && out.len() == PLANES * n);
    let full = n / PLANES * PLANES;
    for i0 in (0..full).step_by(PLANES) {
        let r: [__m256; 8] =
            std::array::from_fn(|i| _mm256_loadu_ps(src.as_ptr().add((i0 + i) * PLANES)));
        for (j, c) in transpose8(r).into_iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(j * n + i0), c);
        }
    }
    for i in full..n {
        for j in 0..PLANES {
            out[j * n + i] = src[i * PLANES + j];
        }
    }
}

/// 8 planes of `max_pool_forward`.
pub fn max_planes(x: &[f32], y: &mut [f32], mask: &mut [i32], g: &PoolGeom) {
    let (ni, no) = (g.height * g.width, g.pooled_height * g.pooled_width);
    // SAFETY: the dispatch checked AVX2.
    with_scratch(ni * PLANES, no * PLANES, |xt, yt, mt| unsafe {
        max_lanes(x, xt, yt, mt, y, mask, g)
    })
}

#[target_feature(enable = "avx2")]
unsafe fn max_lanes(
    x: &[f32],
    xt: &mut [f32],
    yt: &mut [f32],
    mt: &mut [f32],
    y: &mut [f32],
    mask: &mut [i32],
    g: &PoolGeom,
) {
    let (ni, no) = (g.height * g.width, g.pooled_height * g.pooled_width);
    to_lanes(x, ni, xt);
    let xp = xt.as_ptr();
    for ph in 0..g.pooled_height {
        let (hs, he) = max_window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height);
        for pw in 0..g.pooled_width {
            let (ws, we) = max_window(pw, g.stride_w, g.pad_w, g.kernel_w, g.width);
            let mut best = _mm256_set1_ps(-f32::MAX);
            let mut arg = _mm256_set1_epi32(-1);
            assert!(he == hs || (he - 1) * g.width + we <= ni);
            for h in hs..he {
                for i in h * g.width + ws..h * g.width + we {
                    let v = _mm256_loadu_ps(xp.add(i * PLANES));
                    let gt = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(v, best));
                    best = _mm256_max_ps(v, best);
                    arg = _mm256_blendv_epi8(arg, _mm256_set1_epi32(i as i32), gt);
                }
            }
            let o = (ph * g.pooled_width + pw) * PLANES;
            _mm256_storeu_ps(yt.as_mut_ptr().add(o), best);
            _mm256_storeu_ps(mt.as_mut_ptr().add(o), _mm256_castsi256_ps(arg));
        }
    }
    from_lanes(yt, no, y);
    // The argmaxes travel as float bit patterns through the same transpose.
    let m = std::slice::from_raw_parts_mut(mask.as_mut_ptr() as *mut f32, mask.len());
    from_lanes(mt, no, m);
}

/// 8 planes of `ave_pool_forward`.
pub fn ave_planes(x: &[f32], y: &mut [f32], g: &PoolGeom) {
    let (ni, no) = (g.height * g.width, g.pooled_height * g.pooled_width);
    // SAFETY: the dispatch checked AVX2.
    with_scratch(ni * PLANES, no * PLANES, |xt, yt, _| unsafe {
        ave_lanes(x, xt, yt, y, g)
    })
}

#[target_feature(enable = "avx2")]
unsafe fn ave_lanes(x: &[f32], xt: &mut [f32], yt: &mut [f32], y: &mut [f32], g: &PoolGeom) {
    let (ni, no) = (g.height * g.width, g.pooled_height * g.pooled_width);
    to_lanes(x, ni, xt);
    let xp = xt.as_ptr();
    for ph in 0..g.pooled_height {
        let (hs, he, hext) = ave_window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height);
        for pw in 0..g.pooled_width {
            let (ws, we, wext) = ave_window(pw, g.stride_w, g.pad_w, g.kernel_w, g.width);
            let mut sum = _mm256_setzero_ps();
            assert!(he == hs || (he - 1) * g.width + we <= ni);
            for h in hs..he {
                for i in h * g.width + ws..h * g.width + we {
                    sum = _mm256_add_ps(sum, _mm256_loadu_ps(xp.add(i * PLANES)));
                }
            }
            let size = _mm256_set1_ps((hext * wext) as f32);
            let o = (ph * g.pooled_width + pw) * PLANES;
            _mm256_storeu_ps(yt.as_mut_ptr().add(o), _mm256_div_ps(sum, size));
        }
    }
    from_lanes(yt, no, y);
}

/// 8 planes of `ave_pool_backward`.
pub fn ave_back_planes(dy: &[f32], dx: &mut [f32], g: &PoolGeom) {
    let (ni, no) = (g.height * g.width, g.pooled_height * g.pooled_width);
    // SAFETY: the dispatch checked AVX2.
    with_scratch(ni * PLANES, no * PLANES, |dxt, dyt, _| unsafe {
        ave_back_lanes(dy, dyt, dxt, dx, g)
    })
}

#[target_feature(enable = "avx2")]
unsafe fn ave_back_lanes(
    dy: &[f32],
    dyt: &mut [f32],
    dxt: &mut [f32],
    dx: &mut [f32],
    g: &PoolGeom,
) {
    let (ni, no) = (g.height * g.width, g.pooled_height * g.pooled_width);
    to_lanes(dy, no, dyt);
    dxt.fill(0.0);
    let dp = dxt.as_mut_ptr();
    for ph in 0..g.pooled_height {
        let (hs, he, hext) = ave_window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height);
        for pw in 0..g.pooled_width {
            let (ws, we, wext) = ave_window(pw, g.stride_w, g.pad_w, g.kernel_w, g.width);
            let o = (ph * g.pooled_width + pw) * PLANES;
            let share = _mm256_div_ps(
                _mm256_loadu_ps(dyt.as_ptr().add(o)),
                _mm256_set1_ps((hext * wext) as f32),
            );
            assert!(he == hs || (he - 1) * g.width + we <= ni);
            for h in hs..he {
                for i in h * g.width + ws..h * g.width + we {
                    let at = dp.add(i * PLANES);
                    _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), share));
                }
            }
        }
    }
    from_lanes(dxt, ni, dx);
}
