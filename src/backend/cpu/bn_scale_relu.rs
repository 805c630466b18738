//! BatchNorm, then an in-place per-channel Scale (with or without bias), then optionally an
//! in-place ReLU, computed in one pass forward and two backward (`net::fuse` finds the
//! chains). Unfused, the three layers make 10 passes over the blob forward and 12 backward;
//! here 5 and 7 (BatchNorm's two statistics passes included).
//!
//! Every value is computed with the same operations in the same order as the three layers'
//! own kernels (`batch_norm`, `scale`, `activation`), so the results are the same bits; only
//! the passes are merged.

use rayon::prelude::*;

use super::activation::{relu, relu_grad};
use super::sums::Lanes;

/// Below this many elements a single thread is faster than spawning (as in `batch_norm`).
const PAR_MIN: usize = 1 << 15;

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
    let sp = d.spatial;
    let len = d.num * d.channels * sp;
    if len == 0 || sp == 0 {
        return;
    }
    let plane = |p: usize, out: &mut [f32], keep: &mut [f32]| {
        let c = p % d.channels;
        let (mu, sd, s) = (mean[c], std[c], affine.scale[c]);
        let b = affine.bias.map(|b| b[c]);
        for (o, k) in out.iter_mut().zip(keep.iter_mut()) {
            let n = (*o - mu) / sd;
            *k = n;
            // Rounded product, then the bias: as the Scale layer computes it.
            let z = match b {
                Some(b) => s * n + b,
                None => s * n,
            };
            *o = match relu_slope {
                Some(slope) => relu(z, slope),
                None => z,
            };
        }
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

/// Backward: from the chain's top diff `dy` (the ReLU's or the Scale's), its top data `y` (the
/// ReLU's sign test reads it, as the in-place ReLU does) and `x_norm`, the Scale's parameter
/// gradients and the BatchNorm's bottom diff `dx` (`dy` itself when `dx` is None: in place;
/// otherwise `dy` is left holding the BatchNorm's top diff, as the unfused layers leave it).
/// `batch_stats`: the BatchNorm used this batch's statistics (training mode) rather than
/// stored ones.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    d: Dims,
    std: &[f32],
    scale: &[f32],
    relu_slope: Option<f32>,
    batch_stats: bool,
    y: &[f32],
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
    let g = |v: f32, yv: f32| match relu_slope {
        Some(slope) => relu_grad(v, yv, slope),
        None => v,
    };
    let need_sums = batch_stats || grads.scale.is_some() || grads.bias.is_some();
    let mut sums = vec![ChannelSums::default(); ch];
    if need_sums {
        let dy: &[f32] = dy;
        let channel = |c: usize, out: &mut ChannelSums| {
            let s = scale[c];
            let (mut a, mut b, mut e, mut f) = (
                Lanes::default(),
                Lanes::default(),
                Lanes::default(),
                Lanes::default(),
            );
            let mut dyp = vec![0f32; sp];
            let mut dz = vec![0f32; sp];
            for n in 0..d.num {
                let r = (n * ch + c) * sp..(n * ch + c + 1) * sp;
                for ((p, z), (&v, &yv)) in dyp
                    .iter_mut()
                    .zip(dz.iter_mut())
                    .zip(dy[r.clone()].iter().zip(&y[r.clone()]))
                {
                    *p = g(v, yv);
                    *z = *p * s;
                }
                let xn = &x_norm[r];
                a.add(&dyp);
                b.add_dot(&dyp, xn);
                e.add(&dz);
                f.add_dot(&dz, xn);
            }
            *out = ChannelSums {
                dy: a.total() as f32,
                dy_xn: b.total() as f32,
                dz: e.total() as f32,
                dz_xn: f.total() as f32,
            };
        };
        if len >= PAR_MIN && ch > 1 {
            sums.par_iter_mut()
                .enumerate()
                .for_each(|(c, o)| channel(c, o));
        } else {
            sums.iter_mut().enumerate().for_each(|(c, o)| channel(c, o));
        }
    }
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
    // Plane p: dy becomes the BatchNorm's top diff (`scale * relu'(dy)`, what the Scale and
    // the ReLU leave in T's diff when they run in place), then the bottom diff is computed
    // from it, into dx or over it.
    let plane = |p: usize, dy: &mut [f32], dx: Option<&mut [f32]>| {
        let c = p % ch;
        let r = p * sp..(p + 1) * sp;
        let (s, sd, cs) = (scale[c], std[c], sums[c]);
        let f = |dz: f32, xn: f32| {
            if batch_stats {
                (dz + (xn * cs.dz_xn + cs.dz) * neg_inv_m) / sd
            } else {
                dz / sd
            }
        };
        let (ys, xns) = (&y[r.clone()], &x_norm[r]);
        match dx {
            Some(dx) => {
                for ((o, v), (&yv, &xn)) in dx.iter_mut().zip(dy.iter_mut()).zip(ys.iter().zip(xns))
                {
                    *v = g(*v, yv) * s;
                    *o = f(*v, xn);
                }
            }
            None => {
                for (v, (&yv, &xn)) in dy.iter_mut().zip(ys.iter().zip(xns)) {
                    *v = f(g(*v, yv) * s, xn);
                }
            }
        }
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
