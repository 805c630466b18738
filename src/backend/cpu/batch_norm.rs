//! BatchNorm arithmetic over blobs laid out as (num, channels, spatial): per-channel batch
//! statistics, normalisation, the running-statistics update and both backward formulas.
//!
//! Per-channel reductions run on one thread each in a fixed order (n, then spatial), so the
//! result does not depend on the thread count; channels are spread over threads when the blob
//! is large enough to pay for it.

use rayon::prelude::*;

/// Below this many elements a single thread is faster than spawning.
const PAR_MIN: usize = 1 << 15;

/// Sum over the (n, spatial) positions of channel `c` of `f(index)`, in f64 and fixed order.
fn channel_sum(
    num: usize,
    channels: usize,
    spatial: usize,
    c: usize,
    f: impl Fn(usize) -> f64,
) -> f64 {
    let mut s = 0f64;
    for n in 0..num {
        let base = (n * channels + c) * spatial;
        for i in base..base + spatial {
            s += f(i);
        }
    }
    s
}

/// Runs `f(c, &mut out_a[c], &mut out_b[c])` for every channel, in parallel for large blobs.
fn per_channel<F>(count: usize, a: &mut [f32], b: &mut [f32], f: F)
where
    F: Fn(usize, &mut f32, &mut f32) + Sync + Send,
{
    if count >= PAR_MIN && a.len() > 1 {
        a.par_iter_mut()
            .zip(b.par_iter_mut())
            .enumerate()
            .for_each(|(c, (x, y))| f(c, x, y));
    } else {
        a.iter_mut()
            .zip(b.iter_mut())
            .enumerate()
            .for_each(|(c, (x, y))| f(c, x, y));
    }
}

/// Runs `f(plane_index, out_plane)` over the (n, c) planes of `out` (each `spatial` long).
fn per_plane<F>(out: &mut [f32], spatial: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if spatial == 0 || out.is_empty() {
        return;
    }
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(spatial)
            .enumerate()
            .for_each(|(i, p)| f(i, p));
    } else {
        out.chunks_mut(spatial)
            .enumerate()
            .for_each(|(i, p)| f(i, p));
    }
}

/// Batch mean and biased variance of every channel (two passes: the variance is the mean of
/// `(x - mean)^2`, as Caffe computes it).
pub fn bn_batch_stats(
    x: &[f32],
    num: usize,
    channels: usize,
    spatial: usize,
    mean: &mut [f32],
    var: &mut [f32],
) {
    let m = (num * spatial) as f64;
    per_channel(x.len(), mean, var, |c, mu, v| {
        let mean_c = (channel_sum(num, channels, spatial, c, |i| x[i] as f64) / m) as f32;
        let ss = channel_sum(num, channels, spatial, c, |i| {
            let d = (x[i] - mean_c) as f64;
            d * d
        });
        *mu = mean_c;
        *v = (ss / m) as f32;
    });
}

/// The statistics global mode uses: the stored sums divided by the stored factor
/// (`s = 0` when the factor is 0, so an untrained layer normalises with mean 0, variance 0).
pub fn bn_global_stats(
    mean_sum: &[f32],
    var_sum: &[f32],
    factor: f32,
    mean: &mut [f32],
    var: &mut [f32],
) {
    let s = if factor == 0.0 { 0.0 } else { 1.0 / factor };
    for (m, &b) in mean.iter_mut().zip(mean_sum) {
        *m = s * b;
    }
    for (v, &b) in var.iter_mut().zip(var_sum) {
        *v = s * b;
    }
}

/// Moving-average update of the stored statistics, done by every training-mode forward:
/// `factor = maf*factor + 1`, `mean_sum = maf*mean_sum + mean`,
/// `var_sum = maf*var_sum + m/(m-1)*var` (the unbiasing factor is 1 when `m == 1`).
pub fn bn_update_running(
    mean: &[f32],
    var: &[f32],
    m: usize,
    maf: f32,
    mean_sum: &mut [f32],
    var_sum: &mut [f32],
    factor: &mut f32,
) {
    *factor = *factor * maf + 1.0;
    for (b, &v) in mean_sum.iter_mut().zip(mean) {
        *b = *b * maf + v;
    }
    let correction = if m > 1 {
        m as f32 / (m - 1) as f32
    } else {
        1.0
    };
    for (b, &v) in var_sum.iter_mut().zip(var) {
        *b = *b * maf + correction * v;
    }
}

/// `std[c] = sqrt(var[c] + eps)`.
pub fn bn_std(var: &[f32], eps: f32, std: &mut [f32]) {
    for (s, &v) in std.iter_mut().zip(var) {
        *s = (v + eps).sqrt();
    }
}

/// `y = (x - mean[c]) / std[c]`.
pub fn bn_normalize(
    x: &[f32],
    num: usize,
    channels: usize,
    spatial: usize,
    mean: &[f32],
    std: &[f32],
    y: &mut [f32],
) {
    debug_assert_eq!(x.len(), num * channels * spatial);
    per_plane(y, spatial, |p, out| {
        let c = p % channels;
        let xs = &x[p * spatial..(p + 1) * spatial];
        let (mu, sd) = (mean[c], std[c]);
        for (o, &v) in out.iter_mut().zip(xs) {
            *o = (v - mu) / sd;
        }
    });
}

/// Training-mode gradient: `dx = (dy - mean(dy) - mean(dy*y)*y) / std`, the means taken over
/// the `num*spatial` positions of each channel; `y` is the normalised output.
#[allow(clippy::too_many_arguments)]
pub fn bn_backward_train(
    dy: &[f32],
    y: &[f32],
    std: &[f32],
    num: usize,
    channels: usize,
    spatial: usize,
    dx: &mut [f32],
) {
    let mut sum_dy_y = vec![0f32; channels];
    let mut sum_dy = vec![0f32; channels];
    per_channel(dy.len(), &mut sum_dy_y, &mut sum_dy, |c, a, b| {
        *a = channel_sum(num, channels, spatial, c, |i| dy[i] as f64 * y[i] as f64) as f32;
        *b = channel_sum(num, channels, spatial, c, |i| dy[i] as f64) as f32;
    });
    let neg_inv_m = -1.0 / (num * spatial) as f32;
    per_plane(dx, spatial, |p, out| {
        let c = p % channels;
        let r = p * spatial..(p + 1) * spatial;
        let (a, b, sd) = (sum_dy_y[c], sum_dy[c], std[c]);
        for ((o, &g), &v) in out.iter_mut().zip(&dy[r.clone()]).zip(&y[r]) {
            *o = (g + (v * a + b) * neg_inv_m) / sd;
        }
    });
}

/// Global-mode gradient (statistics are constants): `dx = dy / std[c]`.
pub fn bn_backward_global(
    dy: &[f32],
    std: &[f32],
    channels: usize,
    spatial: usize,
    dx: &mut [f32],
) {
    per_plane(dx, spatial, |p, out| {
        let sd = std[p % channels];
        for (o, &g) in out.iter_mut().zip(&dy[p * spatial..(p + 1) * spatial]) {
            *o = g / sd;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_running_update() {
        // num 2, channels 2, spatial 2: channel 0 = {1,2,3,4}, channel 1 = {0,0,2,2}.
        let x = [1., 2., 0., 0., 3., 4., 2., 2.];
        let (mut mean, mut var) = ([0f32; 2], [0f32; 2]);
        bn_batch_stats(&x, 2, 2, 2, &mut mean, &mut var);
        assert_eq!(mean, [2.5, 1.0]);
        assert_eq!(var, [1.25, 1.0]);
        let (mut ms, mut vs, mut f) = ([1f32, 1.], [0f32, 0.], 2f32);
        bn_update_running(&mean, &var, 4, 0.5, &mut ms, &mut vs, &mut f);
        assert_eq!(f, 2.0);
        assert_eq!(ms, [3.0, 1.5]);
        assert!((vs[0] - 1.25 * 4.0 / 3.0).abs() < 1e-6);
        let (mut gm, mut gv) = ([0f32; 2], [0f32; 2]);
        bn_global_stats(&ms, &vs, 0.0, &mut gm, &mut gv);
        assert_eq!(gm, [0.0, 0.0]);
    }
}
