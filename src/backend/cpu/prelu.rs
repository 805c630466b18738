//! PReLU: `y = max(x, 0) + a[c] * min(x, 0)` with one learned slope per channel (or one shared
//! slope), over blobs viewed as (num, channels, dim).

use rayon::prelude::*;

/// Below this many elements a single thread is faster than spawning.
const PAR_MIN: usize = 1 << 15;

fn per_plane<F>(out: &mut [f32], dim: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if dim == 0 || out.is_empty() {
        return;
    }
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(dim)
            .enumerate()
            .for_each(|(i, p)| f(i, p));
    } else {
        out.chunks_mut(dim).enumerate().for_each(|(i, p)| f(i, p));
    }
}

/// The slope index of plane `p` (channel `p % channels`, or 0 when shared).
fn slope_index(p: usize, channels: usize, shared: bool) -> usize {
    if shared {
        0
    } else {
        p % channels
    }
}

pub fn prelu_forward(
    x: &[f32],
    slope: &[f32],
    channels: usize,
    dim: usize,
    shared: bool,
    y: &mut [f32],
) {
    per_plane(y, dim, |p, out| {
        let a = slope[slope_index(p, channels, shared)];
        for (o, &v) in out.iter_mut().zip(&x[p * dim..(p + 1) * dim]) {
            *o = v.max(0.0) + a * v.min(0.0);
        }
    });
}

/// `slope_diff[c] += sum of dy*x where x <= 0` over the channel's positions (all positions
/// when shared). Channels are reduced independently, then (when shared) added in channel
/// order, so the split over threads never changes the sum.
pub fn prelu_slope_grad(
    x: &[f32],
    dy: &[f32],
    num: usize,
    channels: usize,
    dim: usize,
    shared: bool,
    slope_diff: &mut [f32],
) {
    let reduce = |c: usize| -> f64 {
        let mut s = 0f64;
        for n in 0..num {
            let base = (n * channels + c) * dim;
            for i in base..base + dim {
                if x[i] <= 0.0 {
                    s += dy[i] as f64 * x[i] as f64;
                }
            }
        }
        s
    };
    let per_channel: Vec<f64> = if x.len() >= PAR_MIN && channels > 1 {
        (0..channels).into_par_iter().map(reduce).collect()
    } else {
        (0..channels).map(reduce).collect()
    };
    if shared {
        slope_diff[0] += per_channel.iter().sum::<f64>() as f32;
    } else {
        for (g, s) in slope_diff.iter_mut().zip(per_channel) {
            *g += s as f32;
        }
    }
}

/// `dx = dy * (x > 0 ? 1 : a[c])`.
pub fn prelu_input_grad(
    x: &[f32],
    dy: &[f32],
    slope: &[f32],
    channels: usize,
    dim: usize,
    shared: bool,
    dx: &mut [f32],
) {
    per_plane(dx, dim, |p, out| {
        let a = slope[slope_index(p, channels, shared)];
        let r = p * dim..(p + 1) * dim;
        for ((o, &g), &v) in out.iter_mut().zip(&dy[r.clone()]).zip(&x[r]) {
            *o = if v > 0.0 { g } else { g * a };
        }
    });
}
