//! 2-D max and average pooling over independent H×W planes (one per (num, channel) pair),
//! with Caffe's window rules (`pooling_layer.cpp`):
//! - MAX windows are clamped to the image; the first strictly greater element wins, so ties
//!   keep the earliest position in row-major order. The argmax is a flat `h·W + w` index
//!   within the plane, −1 where the window held nothing greater than −FLT_MAX.
//! - AVE windows are clamped to `H + pad` before the divisor is taken, so padded positions
//!   count but positions past the trailing pad do not; the sum then covers only the image.
//!
//! Planes are independent, so splitting them across threads never changes a result. On x86-64
//! with AVX2 the same bits come 8 at a time: forward by 8 output columns of a plane
//! (`pooling_simd`) when rows are at least 16 wide, otherwise (and for AVE backward) by 8 planes
//! at once (`pooling_lanes`). MAX backward, one add per output, stays portable. The portable
//! kernels here stay for other CPUs and as the reference the vector ones are tested against.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::{pooling_lanes as lanes, pooling_simd as simd};

/// Which kernels run the planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKernels {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl PoolKernels {
    /// The fastest this CPU has (checked once).
    pub fn best() -> PoolKernels {
        #[cfg(target_arch = "x86_64")]
        {
            static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
            if *AVX2.get_or_init(super::pooling_simd::cpu_supported) {
                return PoolKernels::Avx2;
            }
        }
        PoolKernels::Portable
    }
}

/// Work (window elements visited) below which threads cost more than they save.
const PARALLEL_WORK: usize = 1 << 15;

/// The geometry of one pooling op: `planes` = num·channels input planes of
/// `height`×`width`, each giving a `pooled_height`×`pooled_width` output plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeom {
    pub planes: usize,
    pub height: usize,
    pub width: usize,
    pub pooled_height: usize,
    pub pooled_width: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
}

impl PoolGeom {
    fn in_plane(&self) -> usize {
        self.height * self.width
    }

    fn out_plane(&self) -> usize {
        self.pooled_height * self.pooled_width
    }

    fn parallel(&self) -> bool {
        self.planes > 1
            && self.planes * self.out_plane() * self.kernel_h * self.kernel_w >= PARALLEL_WORK
    }

    fn check(&self, x_len: usize, y_len: usize) {
        assert_eq!(
            x_len,
            self.planes * self.in_plane(),
            "pooling: input length does not match the geometry"
        );
        assert_eq!(
            y_len,
            self.planes * self.out_plane(),
            "pooling: output length does not match the geometry"
        );
    }
}

/// Caffe's pooled extent along one axis: `round((size + 2·pad − kernel) / stride) + 1` with
/// float division, `round` = ceil or floor; then, when the layer has any padding (`clip`, true
/// if pad_h or pad_w is non-zero, even for the other axis), the last window is dropped if it
/// would start at or past `size + pad`. May be zero or negative for a kernel larger than the
/// padded input; the caller rejects that.
pub fn pooled_extent(
    size: usize,
    kernel: usize,
    pad: usize,
    stride: usize,
    ceil: bool,
    clip: bool,
) -> i64 {
    let span = (size + 2 * pad) as i64 - kernel as i64;
    let q = span as f32 / stride as f32;
    let mut out = (if ceil { q.ceil() } else { q.floor() }) as i64 + 1;
    if clip && (out - 1) * stride as i64 >= (size + pad) as i64 {
        out -= 1;
    }
    out
}

/// MAX window rows (or columns) of output position `p`, clamped to the image: may be empty,
/// even past the image (an unpadded ceil-mode window with kernel < stride can start there).
#[inline]
pub(super) fn max_window(
    p: usize,
    stride: usize,
    pad: usize,
    kernel: usize,
    size: usize,
) -> (usize, usize) {
    let start = (p * stride) as isize - pad as isize;
    let end = (start + kernel as isize).min(size as isize);
    let start = start.max(0).min(end);
    (start as usize, end as usize)
}

/// AVE window of output position `p`: the image range to sum, and the extent counted in the
/// divisor (which includes padding up to `size + pad`).
#[inline]
pub(super) fn ave_window(
    p: usize,
    stride: usize,
    pad: usize,
    kernel: usize,
    size: usize,
) -> (usize, usize, isize) {
    let start = (p * stride) as isize - pad as isize;
    let end = (start + kernel as isize).min((size + pad) as isize);
    let extent = end - start;
    let end = end.min(size as isize);
    let start = start.max(0).min(end);
    (start as usize, end as usize, extent)
}

fn max_plane(x: &[f32], y: &mut [f32], mask: &mut [i32], g: &PoolGeom) {
    for ph in 0..g.pooled_height {
        let (hs, he) = max_window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height);
        for pw in 0..g.pooled_width {
            let (ws, we) = max_window(pw, g.stride_w, g.pad_w, g.kernel_w, g.width);
            let mut best = -f32::MAX;
            let mut arg = -1i32;
            for h in hs..he {
                let base = h * g.width + ws;
                for (w, &v) in x[base..h * g.width + we].iter().enumerate() {
                    // Select rather than branch: the winner is data-dependent and unpredictable.
                    let gt = v > best;
                    best = if gt { v } else { best };
                    arg = if gt { (base + w) as i32 } else { arg };
                }
            }
            let o = ph * g.pooled_width + pw;
            y[o] = best;
            mask[o] = arg;
        }
    }
}

fn max_back_plane(dy: &[f32], mask: &[i32], dx: &mut [f32]) {
    dx.fill(0.0);
    for (&d, &m) in dy.iter().zip(mask) {
        // −1 marks a window that held no element (Caffe would write out of bounds).
        if m >= 0 {
            dx[m as usize] += d;
        }
    }
}

fn ave_plane(x: &[f32], y: &mut [f32], g: &PoolGeom) {
    for ph in 0..g.pooled_height {
        let (hs, he, hext) = ave_window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height);
        for pw in 0..g.pooled_width {
            let (ws, we, wext) = ave_window(pw, g.stride_w, g.pad_w, g.kernel_w, g.width);
            let pool_size = (hext * wext) as f32;
            let mut sum = 0f32;
            for h in hs..he {
                for &v in &x[h * g.width + ws..h * g.width + we] {
                    sum += v;
                }
            }
            y[ph * g.pooled_width + pw] = sum / pool_size;
        }
    }
}

fn ave_back_plane(dy: &[f32], dx: &mut [f32], g: &PoolGeom) {
    dx.fill(0.0);
    for ph in 0..g.pooled_height {
        let (hs, he, hext) = ave_window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height);
        for pw in 0..g.pooled_width {
            let (ws, we, wext) = ave_window(pw, g.stride_w, g.pad_w, g.kernel_w, g.width);
            let share = dy[ph * g.pooled_width + pw] / (hext * wext) as f32;
            for h in hs..he {
                for v in &mut dx[h * g.width + ws..h * g.width + we] {
                    *v += share;
                }
            }
        }
    }
}

/// Work (window elements) per parallel task: small planes are grouped so that a task is worth
/// sending to a thread.
const TASK_WORK: usize = 1 << 13;

/// Planes per parallel task: whole groups of 8 where they go 8 at a time.
fn planes_per_task(g: &PoolGeom, by_eight: bool) -> usize {
    let n = (TASK_WORK / (g.out_plane() * g.kernel_h * g.kernel_w).max(1)).max(1);
    if by_eight {
        n.next_multiple_of(8)
    } else {
        n
    }
}

/// Forward output rows narrower than this go through `pooling_lanes` (8 planes at once) rather
/// than `pooling_simd` (8 columns at once): one-thread CPU time on Zen 4, CIFAR pool1 (16 wide)
/// 1.25 ms by columns, 2.05 by planes; LeNet pool1 (12 wide) 0.36 and 0.30; 8 wide: equal.
#[cfg(target_arch = "x86_64")]
const LANES_BELOW_WIDTH: usize = 16;

/// The chosen kernels, with what they precompute for this geometry.
enum Planned {
    Portable,
    /// With whether planes go 8 at a time through `pooling_lanes`.
    #[cfg(target_arch = "x86_64")]
    Avx2(simd::Plan, bool),
}

impl Planned {
    /// Whether planes go 8 at a time.
    fn by_planes(&self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Planned::Avx2(_, by_planes) => *by_planes,
            _ => false,
        }
    }

    fn new(k: PoolKernels, g: &PoolGeom) -> Planned {
        match k {
            PoolKernels::Portable => Planned::Portable,
            #[cfg(target_arch = "x86_64")]
            PoolKernels::Avx2 => {
                assert!(simd::cpu_supported(), "pooling: this CPU has no AVX2");
                Planned::Avx2(simd::Plan::new(g), g.pooled_width < LANES_BELOW_WIDTH)
            }
        }
    }
}

/// Max pooling: `y` gets each window's maximum, `mask` its in-plane argmax (−1 if none).
pub fn max_pool_forward(x: &[f32], y: &mut [f32], mask: &mut [i32], g: &PoolGeom) {
    max_pool_forward_with(PoolKernels::best(), x, y, mask, g)
}

/// `max_pool_forward` through the given kernels (all give the same bits).
pub fn max_pool_forward_with(
    k: PoolKernels,
    x: &[f32],
    y: &mut [f32],
    mask: &mut [i32],
    g: &PoolGeom,
) {
    g.check(x.len(), y.len());
    assert_eq!(
        mask.len(),
        y.len(),
        "pooling: mask length does not match the output"
    );
    let (ip, op) = (g.in_plane(), g.out_plane());
    if op == 0 {
        return;
    }
    let plan = Planned::new(k, g);
    let run = |mut x: &[f32], mut y: &mut [f32], mut mask: &mut [i32]| {
        #[cfg(target_arch = "x86_64")]
        if let Planned::Avx2(_, true) = plan {
            let (ni, no) = (ip * lanes::PLANES, op * lanes::PLANES);
            while x.len() >= ni {
                let (x8, xr) = x.split_at(ni);
                let (y8, yr) = std::mem::take(&mut y).split_at_mut(no);
                let (m8, mr) = std::mem::take(&mut mask).split_at_mut(no);
                lanes::max_planes(x8, y8, m8, g);
                (x, y, mask) = (xr, yr, mr);
            }
        }
        for ((x, y), m) in x.chunks(ip).zip(y.chunks_mut(op)).zip(mask.chunks_mut(op)) {
            match &plan {
                Planned::Portable => max_plane(x, y, m, g),
                #[cfg(target_arch = "x86_64")]
                Planned::Avx2(p, _) => simd::max_plane(x, y, m, g, p),
            }
        }
    };
    if g.parallel() {
        let n = planes_per_task(g, plan.by_planes());
        x.par_chunks(ip * n)
            .zip(y.par_chunks_mut(op * n))
            .zip(mask.par_chunks_mut(op * n))
            .for_each(|((x, y), m)| run(x, y, m));
    } else {
        run(x, y, mask);
    }
}

/// Max pooling backward: `dx` (overwritten) gets each `dy` at its window's argmax; windows
/// that overlap on one argmax add up. `mask` must come from `max_pool_forward` with the same
/// geometry.
pub fn max_pool_backward(dy: &[f32], mask: &[i32], dx: &mut [f32], g: &PoolGeom) {
    max_pool_backward_with(PoolKernels::best(), dy, mask, dx, g)
}

/// `max_pool_backward` through the given kernels (all give the same bits).
pub fn max_pool_backward_with(
    k: PoolKernels,
    dy: &[f32],
    mask: &[i32],
    dx: &mut [f32],
    g: &PoolGeom,
) {
    g.check(dx.len(), dy.len());
    assert_eq!(
        mask.len(),
        dy.len(),
        "pooling: mask length does not match the output"
    );
    let (ip, op) = (g.in_plane(), g.out_plane());
    if op == 0 {
        dx.fill(0.0);
        return;
    }
    // A scatter of one add per output beats every gather tried (see pooling_simd).
    let _ = k;
    let run = |dx: &mut [f32], dy: &[f32], mask: &[i32]| {
        for ((dx, dy), m) in dx.chunks_mut(ip).zip(dy.chunks(op)).zip(mask.chunks(op)) {
            max_back_plane(dy, m, dx);
        }
    };
    if g.parallel() {
        let n = planes_per_task(g, false);
        dx.par_chunks_mut(ip * n)
            .zip(dy.par_chunks(op * n))
            .zip(mask.par_chunks(op * n))
            .for_each(|((dx, dy), m)| run(dx, dy, m));
    } else {
        run(dx, dy, mask);
    }
}

/// Average pooling with Caffe's divisor rule (see the module comment).
pub fn ave_pool_forward(x: &[f32], y: &mut [f32], g: &PoolGeom) {
    ave_pool_forward_with(PoolKernels::best(), x, y, g)
}

/// `ave_pool_forward` through the given kernels (all give the same bits).
pub fn ave_pool_forward_with(k: PoolKernels, x: &[f32], y: &mut [f32], g: &PoolGeom) {
    g.check(x.len(), y.len());
    let (ip, op) = (g.in_plane(), g.out_plane());
    if op == 0 {
        return;
    }
    let plan = Planned::new(k, g);
    let run = |mut x: &[f32], mut y: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if let Planned::Avx2(_, true) = plan {
            let (ni, no) = (ip * lanes::PLANES, op * lanes::PLANES);
            while x.len() >= ni {
                let (x8, xr) = x.split_at(ni);
                let (y8, yr) = std::mem::take(&mut y).split_at_mut(no);
                lanes::ave_planes(x8, y8, g);
                (x, y) = (xr, yr);
            }
        }
        for (x, y) in x.chunks(ip).zip(y.chunks_mut(op)) {
            match &plan {
                Planned::Portable => ave_plane(x, y, g),
                #[cfg(target_arch = "x86_64")]
                Planned::Avx2(p, _) => simd::ave_plane(x, y, g, p),
            }
        }
    };
    if g.parallel() {
        let n = planes_per_task(g, plan.by_planes());
        x.par_chunks(ip * n)
            .zip(y.par_chunks_mut(op * n))
            .for_each(|(x, y)| run(x, y));
    } else {
        run(x, y);
    }
}

/// Average pooling backward: `dx` (overwritten) gets `dy / pool_size` at every in-image
/// element of each window.
pub fn ave_pool_backward(dy: &[f32], dx: &mut [f32], g: &PoolGeom) {
    ave_pool_backward_with(PoolKernels::best(), dy, dx, g)
}

/// `ave_pool_backward` through the given kernels (all give the same bits). With AVX2, planes
/// go 8 at a time through `pooling_lanes` (the rest through the portable loop): 3-4x faster
/// than the portable loop on the CIFAR shapes, and faster than a vector gather by columns.
pub fn ave_pool_backward_with(k: PoolKernels, dy: &[f32], dx: &mut [f32], g: &PoolGeom) {
    g.check(dx.len(), dy.len());
    let (ip, op) = (g.in_plane(), g.out_plane());
    if op == 0 {
        dx.fill(0.0);
        return;
    }
    let by_eight = k != PoolKernels::Portable;
    let run = |mut dx: &mut [f32], mut dy: &[f32]| {
        #[cfg(target_arch = "x86_64")]
        if by_eight {
            assert!(simd::cpu_supported(), "pooling: this CPU has no AVX2");
            let (ni, no) = (ip * lanes::PLANES, op * lanes::PLANES);
            while dy.len() >= no {
                let (dx8, dxr) = std::mem::take(&mut dx).split_at_mut(ni);
                let (dy8, dyr) = dy.split_at(no);
                lanes::ave_back_planes(dy8, dx8, g);
                (dx, dy) = (dxr, dyr);
            }
        }
        for (dx, dy) in dx.chunks_mut(ip).zip(dy.chunks(op)) {
            ave_back_plane(dy, dx, g);
        }
    };
    if g.parallel() {
        let n = planes_per_task(g, by_eight);
        dx.par_chunks_mut(ip * n)
            .zip(dy.par_chunks(op * n))
            .for_each(|(dx, dy)| run(dx, dy));
    } else {
        run(dx, dy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(h: usize, w: usize, k: usize, s: usize, p: usize, ceil: bool) -> PoolGeom {
        let clip = p > 0;
        PoolGeom {
            planes: 1,
            height: h,
            width: w,
            pooled_height: pooled_extent(h, k, p, s, ceil, clip) as usize,
            pooled_width: pooled_extent(w, k, p, s, ceil, clip) as usize,
            kernel_h: k,
            kernel_w: k,
            stride_h: s,
            stride_w: s,
            pad_h: p,
            pad_w: p,
        }
    }

    #[test]
    fn extents_follow_caffe() {
        // 6x6, k3 s2: ceil(3/2)+1 = 3; floor gives 2.
        assert_eq!(pooled_extent(6, 3, 0, 2, true, false), 3);
        assert_eq!(pooled_extent(6, 3, 0, 2, false, false), 2);
        // 6x6, k3 s2 p1: ceil(5/2)+1 = 4; last start 6 < 6+1 so kept.
        assert_eq!(pooled_extent(6, 3, 1, 2, true, true), 4);
        // 5, k2 s2 p1: ceil(5/2)+1 = 4; last start 6 >= 5+1: clipped to 3.
        assert_eq!(pooled_extent(5, 2, 1, 2, true, true), 3);
        // Clipping also applies to an unpadded axis when the other one is padded.
        assert_eq!(pooled_extent(5, 1, 0, 3, true, false), 3);
        assert_eq!(pooled_extent(5, 1, 0, 3, true, true), 2);
        // Kernel larger than the input by less than a stride still gives one window.
        assert_eq!(pooled_extent(2, 3, 0, 2, true, false), 1);
        assert_eq!(pooled_extent(2, 4, 0, 1, true, false), -1);
    }

    #[test]
    fn ave_divisor_counts_padding_up_to_h_plus_pad() {
        // 5x5 ones, k3 s2 p1: 3 outputs per axis; windows [-1,2), [1,4), [3,6) → extents clipped
        // to h+pad = 6: 3, 3, 3, and in-image sizes 2, 3, 2.
        let g = geom(5, 5, 3, 2, 1, true);
        assert_eq!((g.pooled_height, g.pooled_width), (3, 3));
        let x = vec![1f32; 25];
        let mut y = vec![0f32; 9];
        ave_pool_forward(&x, &mut y, &g);
        assert_eq!(
            y,
            vec![
                4. / 9.,
                6. / 9.,
                4. / 9.,
                6. / 9.,
                1.,
                6. / 9.,
                4. / 9.,
                6. / 9.,
                4. / 9.
            ]
        );
        // 4 wide, k3 s2 p1: ceil(3/2)+1 = 3 windows [-1,2), [1,4), [3,5): the first divides by
        // 3 (leading pad counted), the last one's extent stops at 4+1 = 5, so it divides by 2.
        let g = geom(1, 4, 3, 2, 1, true);
        let g = PoolGeom {
            height: 1,
            pooled_height: 1,
            kernel_h: 1,
            pad_h: 0,
            stride_h: 1,
            ..g
        };
        assert_eq!(g.pooled_width, 3);
        let x = vec![1., 2., 3., 4.];
        let mut y = vec![0f32; 3];
        ave_pool_forward(&x, &mut y, &g);
        assert_eq!(y, vec![3. / 3., 9. / 3., 4. / 2.]);
    }

    #[test]
    fn max_ties_keep_first_and_backward_adds_overlaps() {
        let g = geom(3, 3, 2, 1, 0, true);
        let x = vec![1., 1., 0., 1., 1., 0., 0., 0., 0.];
        let mut y = vec![0f32; 4];
        let mut m = vec![0i32; 4];
        max_pool_forward(&x, &mut y, &mut m, &g);
        assert_eq!(y, vec![1.; 4]);
        assert_eq!(m, vec![0, 1, 3, 4]);
        let mut dx = vec![9f32; 9];
        max_pool_backward(&[1., 2., 3., 4.], &m, &mut dx, &g);
        assert_eq!(dx, vec![1., 2., 0., 3., 4., 0., 0., 0., 0.]);
        let x = vec![0., 5., 0., 0., 0., 0., 0., 0., 0.];
        max_pool_forward(&x, &mut y, &mut m, &g);
        assert_eq!(m, vec![1, 1, 3, 4]);
        max_pool_backward(&[1., 2., 3., 4.], &m, &mut dx, &g);
        assert_eq!(dx, vec![0., 3., 0., 3., 4., 0., 0., 0., 0.]);
    }

    #[test]
    fn parallel_and_serial_agree() {
        let g = PoolGeom {
            planes: 64,
            ..geom(17, 13, 3, 2, 1, true)
        };
        let x: Vec<f32> = (0..g.planes * 17 * 13)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.001 - 0.5)
            .collect();
        let n = g.planes * g.pooled_height * g.pooled_width;
        assert!(g.parallel());
        let (mut y1, mut m1) = (vec![0f32; n], vec![0i32; n]);
        max_pool_forward(&x, &mut y1, &mut m1, &g);
        let mut y2 = vec![0f32; n];
        let mut m2 = vec![0i32; n];
        let ip = 17 * 13;
        let op = g.pooled_height * g.pooled_width;
        for p in 0..g.planes {
            let gp = PoolGeom { planes: 1, ..g };
            max_pool_forward(
                &x[p * ip..(p + 1) * ip],
                &mut y2[p * op..(p + 1) * op],
                &mut m2[p * op..(p + 1) * op],
                &gp,
            );
        }
        assert_eq!(y1, y2);
        assert_eq!(m1, m2);
    }
}
