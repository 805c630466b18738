//! BatchNorm, then an in-place per-channel Scale (with or without bias), then optionally an
//! in-place ReLU, computed in one pass forward and two backward (`net::fuse` finds the
//! chains). Unfused, the three layers make 10 passes over the blob forward and 12 backward;
//! here 5 (BatchNorm's two statistics passes included) and 5 (dy and x_norm read twice, the
//! bottom diff written once).
//!
//! Every value is computed with the same operations in the same order as the three layers'
//! own kernels (`batch_norm`, `scale`, `activation`), so the results are the same bits; only
//! the passes are merged.

use rayon::prelude::*;

use super::activation::{relu, relu_grad, PAR_MIN};
use super::sums::{block_sums, Merge, LANES};
use super::wide::Wide;

/// The Scale of a chain: per-channel factors and optional offsets.
#[derive(Clone, Copy)]
pub struct Affine<'a> {
    pub scale: &'a [f32],
    pub bias: Option<&'a [f32]>,
}

/// Shape of the blob: (num, channels, spatial).
#[derive(Clone, Copy)]
pub struct Dims {
    pub num: usize,
    pub channels: usize,
    pub spatial: usize,
}

/// Forward over one buffer that holds the bottom and receives the top (the chain runs in
/// place on the Scale's blob; a BatchNorm that is not in place copies its bottom there
/// first): `x_norm = (x - mean) / std`, then `relu(scale * x_norm + bias)`.
pub fn forward(
    d: Dims,
    mean: &[f32],
    std: &[f32],
    affine: Affine,
    relu_slope: Option<f32>,
    data: &mut [f32],
    x_norm: &mut [f32],
) {
    forward_at(
        Wide::detected(),
        d,
        mean,
        std,
        affine,
        relu_slope,
        data,
        x_norm,
    )
}

#[allow(clippy::too_many_arguments)]
fn forward_at(
    wide: Wide,
    d: Dims,
    mean: &[f32],
    std: &[f32],
    affine: Affine,
    relu_slope: Option<f32>,
    data: &mut [f32],
    x_norm: &mut [f32],
) {
    let sp = d.spatial;
    let len = d.num * d.channels * sp;
    if len == 0 || sp == 0 {
        return;
    }
    let plane = |p: usize, out: &mut [f32], keep: &mut [f32]| {
        let c = p % d.channels;
        let (mu, sd, s) = (mean[c], std[c], affine.scale[c]);
        let b = affine.bias.map(|b| b[c]);
        wide.run(
            #[inline(always)]
            || match (b, relu_slope) {
                (Some(b), Some(slope)) => {
                    plane_forward(mu, sd, out, keep, |n| relu(s * n + b, slope))
                }
                (Some(b), None) => plane_forward(mu, sd, out, keep, |n| s * n + b),
                (None, Some(slope)) => plane_forward(mu, sd, out, keep, |n| relu(s * n, slope)),
                (None, None) => plane_forward(mu, sd, out, keep, |n| s * n),
            },
        )
    };
    let (data, x_norm) = (&mut data[..len], &mut x_norm[..len]);
    if len >= PAR_MIN {
        data.par_chunks_mut(sp)
            .zip(x_norm.par_chunks_mut(sp))
            .enumerate()
            .for_each(|(p, (o, k))| plane(p, o, k));
    } else {
        for (p, (o, k)) in data.chunks_mut(sp).zip(x_norm.chunks_mut(sp)).enumerate() {
            plane(p, o, k);
        }
    }
}

/// One plane of the forward: `x_norm = (x - mean) / std` kept, `out = tail(x_norm)` (the
/// Scale's rounded product, then its bias, then the ReLU: as the layers compute them).
#[inline(always)]
fn plane_forward(mu: f32, sd: f32, out: &mut [f32], keep: &mut [f32], tail: impl Fn(f32) -> f32) {
    for (o, k) in out.iter_mut().zip(keep.iter_mut()) {
        let n = (*o - mu) / sd;
        *k = n;
        *o = tail(n);
    }
}

/// Per-channel sums of the backward pass.
#[derive(Clone, Copy, Default)]
struct ChannelSums {
    /// Of the Scale's top diff (the bias gradient) and of it times x_norm (the scale's).
    dy: f32,
    dy_xn: f32,
    /// Of the BatchNorm's top diff (`scale * dy`) and of it times x_norm.
    dz: f32,
    dz_xn: f32,
}

/// What the backward pass writes besides the bottom diff: the Scale's parameter gradients,
/// each `(diff, accumulate)` when wanted.
pub struct ParamGrads<'a> {
    pub scale: Option<(&'a mut [f32], bool)>,
    pub bias: Option<(&'a mut [f32], bool)>,
}

/// The ReLU's gradient at one value. Its sign test reads the chain's pre-ReLU value
/// `scale * x_norm + bias`, recomputed with the forward's operations: for a slope >= 0 that
/// value is > 0 (or <= 0) exactly when the ReLU's output is, so the test agrees with the
/// in-place ReLU's (which reads its output) without reading the output at all. Adding a zero
/// bias where the Scale has none changes only the sign of a zero, which neither test sees.
#[inline(always)]
fn chain_grad<const RELU: bool>(dy: f32, xn: f32, s: f32, b: f32, slope: f32) -> f32 {
    if RELU {
        relu_grad(dy, s * xn + b, slope)
    } else {
        dy
    }
}

/// Adds images `images` to the four sums of channels `c0..c0 + out.len()`, each plane a run
/// of the fixed-lane double sums of `sums::Lanes` (value i of a plane into lane i % LANES),
/// blocks of images merged as `sums::block_sums` does, so the totals are the bits the
/// layers' own reductions give.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn image_sums<const RELU: bool>(
    d: Dims,
    images: std::ops::Range<usize>,
    c0: usize,
    scale: &[f32],
    bias: impl Fn(usize) -> f32,
    slope: f32,
    dy: &[f32],
    x_norm: &[f32],
    out: &mut [ChainLanes],
) {
    #[inline(always)]
    fn add<const RELU: bool>(
        acc: &mut [[f64; LANES]; 4],
        lane: usize,
        v: f32,
        xn: f32,
        s: f32,
        b: f32,
        slope: f32,
    ) {
        let g = chain_grad::<RELU>(v, xn, s, b, slope);
        let z = g * s;
        acc[0][lane] += g as f64;
        acc[1][lane] += g as f64 * xn as f64;
        acc[2][lane] += z as f64;
        acc[3][lane] += z as f64 * xn as f64;
    }
    let sp = d.spatial;
    for n in images {
        for (j, acc) in out.iter_mut().enumerate() {
            let c = c0 + j;
            let (s, b) = (scale[c], bias(c));
            let r = (n * d.channels + c) * sp..(n * d.channels + c + 1) * sp;
            let (dyr, xr) = (&dy[r.clone()], &x_norm[r]);
            let (dc, xc) = (dyr.chunks_exact(LANES), xr.chunks_exact(LANES));
            let (drem, xrem) = (dc.remainder(), xc.remainder());
            // The full runs on a local copy indexed by constants only (kept in registers);
            // the remainder's run-time lane index would keep the lanes in memory.
            let mut a = acc.0;
            for (dv, xv) in dc.zip(xc) {
                for i in 0..LANES {
                    add::<RELU>(&mut a, i, dv[i], xv[i], s, b, slope);
                }
            }
            acc.0 = a;
            for (i, (&v, &xn)) in drem.iter().zip(xrem).enumerate() {
                add::<RELU>(&mut acc.0, i, v, xn, s, b, slope);
            }
        }
    }
}

/// The lanes of a channel's four backward sums, in the order of `ChannelSums`.
#[derive(Clone, Copy)]
struct ChainLanes([[f64; LANES]; 4]);

impl Default for ChainLanes {
    fn default() -> Self {
        ChainLanes([[0.0; LANES]; 4])
    }
}

impl Merge for ChainLanes {
    fn merge(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            for (x, &y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
    }
}

impl ChainLanes {
    /// The totals: each sum's lanes added in lane order, as `Lanes::total` does.
    fn totals(&self) -> ChannelSums {
        let total = |lanes: &[f64; LANES]| lanes.iter().fold(0.0, |t, &l| t + l) as f32;
        ChannelSums {
            dy: total(&self.0[0]),
            dy_xn: total(&self.0[1]),
            dz: total(&self.0[2]),
            dz_xn: total(&self.0[3]),
        }
    }
}

/// Plane `p` of the bottom diff: the BatchNorm's top diff `dz = scale * relu'(dy)` (what the
/// Scale and the ReLU leave in T's diff when they run in place), then the BatchNorm's
/// gradient from it, into `dx` (leaving `dz` in `dy`) or over `dy`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn plane_grad<const RELU: bool, const BATCH: bool>(
    s: f32,
    b: f32,
    slope: f32,
    sd: f32,
    cs: ChannelSums,
    neg_inv_m: f32,
    x_norm: &[f32],
    dy: &mut [f32],
    dx: Option<&mut [f32]>,
) {
    let f = |z: f32, xn: f32| {
        if BATCH {
            (z + (xn * cs.dz_xn + cs.dz) * neg_inv_m) / sd
        } else {
            z / sd
        }
    };
    match dx {
        Some(dx) => {
            for ((o, v), &xn) in dx.iter_mut().zip(dy.iter_mut()).zip(x_norm) {
                let z = chain_grad::<RELU>(*v, xn, s, b, slope) * s;
                *v = z;
                *o = f(z, xn);
            }
        }
        None => {
            for (v, &xn) in dy.iter_mut().zip(x_norm) {
                *v = f(chain_grad::<RELU>(*v, xn, s, b, slope) * s, xn);
            }
        }
    }
}

/// Backward: from the chain's top diff `dy` (the ReLU's or the Scale's) and `x_norm`, the
/// Scale's parameter gradients and the BatchNorm's bottom diff `dx` (`dy` itself when `dx`
/// is None: in place; otherwise `dy` is left holding the BatchNorm's top diff, as the unfused
/// layers leave it). `batch_stats`: the BatchNorm used this batch's statistics (training
/// mode) rather than stored ones. Two passes, each reading `dy` and `x_norm` once.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    d: Dims,
    std: &[f32],
    affine: Affine,
    relu_slope: Option<f32>,
    batch_stats: bool,
    x_norm: &[f32],
    dy: &mut [f32],
    dx: Option<&mut [f32]>,
    grads: ParamGrads,
) {
    backward_at(
        Wide::detected(),
        d,
        std,
        affine,
        relu_slope,
        batch_stats,
        x_norm,
        dy,
        dx,
        grads,
    )
}

#[allow(clippy::too_many_arguments)]
fn backward_at(
    w: Wide,
    d: Dims,
    std: &[f32],
    affine: Affine,
    relu_slope: Option<f32>,
    batch_stats: bool,
    x_norm: &[f32],
    dy: &mut [f32],
    dx: Option<&mut [f32]>,
    grads: ParamGrads,
) {
    match (relu_slope.is_some(), batch_stats) {
        (true, true) => {
            backward_as::<true, true>(w, d, std, affine, relu_slope, x_norm, dy, dx, grads)
        }
        (true, false) => {
            backward_as::<true, false>(w, d, std, affine, relu_slope, x_norm, dy, dx, grads)
        }
        (false, true) => {
            backward_as::<false, true>(w, d, std, affine, relu_slope, x_norm, dy, dx, grads)
        }
        (false, false) => {
            backward_as::<false, false>(w, d, std, affine, relu_slope, x_norm, dy, dx, grads)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn backward_as<const RELU: bool, const BATCH: bool>(
    wide: Wide,
    d: Dims,
    std: &[f32],
    affine: Affine,
    relu_slope: Option<f32>,
    x_norm: &[f32],
    dy: &mut [f32],
    dx: Option<&mut [f32]>,
    grads: ParamGrads,
) {
    let (ch, sp) = (d.channels, d.spatial);
    let len = d.num * ch * sp;
    if len == 0 || sp == 0 {
        return;
    }
    let slope = relu_slope.unwrap_or(0.0);
    let scale = affine.scale;
    let bias = |c: usize| affine.bias.map_or(0.0, |b| b[c]);
    let need_sums = BATCH || grads.scale.is_some() || grads.bias.is_some();
    let sums: Vec<ChannelSums> = if need_sums {
        let dy: &[f32] = dy;
        let lanes = block_sums(
            d.num,
            ch,
            len >= PAR_MIN,
            |images, c0, out: &mut [ChainLanes]| {
                wide.run(
                    #[inline(always)]
                    || image_sums::<RELU>(d, images, c0, scale, bias, slope, dy, x_norm, out),
                );
            },
        );
        lanes.iter().map(ChainLanes::totals).collect()
    } else {
        vec![ChannelSums::default(); ch]
    };
    if let Some((gb, acc)) = grads.bias {
        for (o, s) in gb.iter_mut().zip(&sums) {
            *o = if acc { *o + s.dy } else { s.dy };
        }
    }
    if let Some((gs, acc)) = grads.scale {
        for (o, s) in gs.iter_mut().zip(&sums) {
            *o = if acc { *o + s.dy_xn } else { s.dy_xn };
        }
    }
    let neg_inv_m = -1.0 / (d.num * sp) as f32;
    let plane = |p: usize, dy: &mut [f32], dx: Option<&mut [f32]>| {
        let c = p % ch;
        let xn = &x_norm[p * sp..(p + 1) * sp];
        let (s, b, sd, cs) = (scale[c], bias(c), std[c], sums[c]);
        wide.run(
            #[inline(always)]
            || plane_grad::<RELU, BATCH>(s, b, slope, sd, cs, neg_inv_m, xn, dy, dx),
        );
    };
    let par = len >= PAR_MIN;
    match dx {
        Some(dx) => {
            let (dx, dy) = (&mut dx[..len], &mut dy[..len]);
            if par {
                dy.par_chunks_mut(sp)
                    .zip(dx.par_chunks_mut(sp))
                    .enumerate()
                    .for_each(|(p, (v, o))| plane(p, v, Some(o)));
            } else {
                for (p, (v, o)) in dy.chunks_mut(sp).zip(dx.chunks_mut(sp)).enumerate() {
                    plane(p, v, Some(o));
                }
            }
        }
        None => {
            let dy = &mut dy[..len];
            if par {
                dy.par_chunks_mut(sp)
                    .enumerate()
                    .for_each(|(p, v)| plane(p, v, None));
            } else {
                for (p, v) in dy.chunks_mut(sp).enumerate() {
                    plane(p, v, None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::wide::bits;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let v = ((i * 7919 + seed * 104729) % 2003) as f32 - 1001.0;
                // Every 11th value exactly 0 so that some pre-ReLU values are 0 (the ReLU's
                // tie) and some gradients are 0.
                if i % 11 == 0 {
                    0.0
                } else {
                    v * 0.00113
                }
            })
            .collect()
    }

    /// Everything forward and backward write, for one build.
    fn run_chain(
        w: Wide,
        d: Dims,
        bias: bool,
        slope: Option<f32>,
        batch: bool,
        out_of_place: bool,
    ) -> Vec<Vec<u32>> {
        let len = d.num * d.channels * d.spatial;
        let mean = values(d.channels, 1);
        let std: Vec<f32> = values(d.channels, 2)
            .iter()
            .map(|v| v.abs() + 0.5)
            .collect();
        let scale = values(d.channels, 3);
        let b = values(d.channels, 4);
        let affine = Affine {
            scale: &scale,
            bias: bias.then_some(&b[..]),
        };
        let mut data = values(len, 5);
        let mut x_norm = vec![0f32; len];
        forward_at(w, d, &mean, &std, affine, slope, &mut data, &mut x_norm);
        let mut dy = values(len, 6);
        let mut dx = vec![0f32; len];
        let (mut gs, mut gb) = (values(d.channels, 7), values(d.channels, 8));
        let grads = ParamGrads {
            scale: Some((&mut gs, true)),
            bias: bias.then_some((&mut gb[..], false)),
        };
        let dx_arg = out_of_place.then_some(&mut dx[..]);
        backward_at(
            w, d, &std, affine, slope, batch, &x_norm, &mut dy, dx_arg, grads,
        );
        vec![
            bits(&data),
            bits(&x_norm),
            bits(&dy),
            bits(&dx),
            bits(&gs),
            bits(&gb),
        ]
    }

    #[test]
    fn every_build_gives_the_same_bits() {
        let levels = Wide::available();
        println!("builds compared: {levels:?}");
        let shapes = [(2, 3, 37), (3, 2, 64), (2, 5, 5), (2, 4, 1024)];
        for (num, channels, spatial) in shapes {
            let d = Dims {
                num,
                channels,
                spatial,
            };
            for (bias, slope, batch, out) in [
                (true, Some(0.0), true, false),
                (false, Some(0.1), true, true),
                (true, None, false, false),
                (false, None, true, true),
                (true, Some(0.0), false, true),
            ] {
                let base = run_chain(Wide::Base, d, bias, slope, batch, out);
                for &w in &levels {
                    let got = run_chain(w, d, bias, slope, batch, out);
                    assert!(
                        got == base,
                        "{w:?} {num}x{channels}x{spatial} {bias} {slope:?} {batch} {out}"
                    );
                }
            }
        }
    }
}
