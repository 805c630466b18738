//! Local response normalisation over (num, channels, height, width) blobs.
//!
//! ACROSS_CHANNELS: `scale = k + alpha/n * sum of x^2 over the n channels centred on c`
//! (zero padded), `y = x * scale^-beta`.
//! WITHIN_CHANNEL: Caffe composes it from layers (x^2, AVE pooling with kernel n and pad
//! (n-1)/2, Power(shift 1, scale alpha, power -beta), Eltwise PROD); the functions here do the
//! same arithmetic in one pass, including the pooling divisor rule (`k` is not used).
//!
//! Every output element depends only on its own window, so work is split over (n, c) planes
//! without changing any result.

use rayon::prelude::*;

/// Below this many elements a single thread is faster than spawning.
const PAR_MIN: usize = 1 << 15;

fn per_plane<F>(out: &mut [f32], plane: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if plane == 0 || out.is_empty() {
        return;
    }
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(plane)
            .enumerate()
            .for_each(|(i, p)| f(i, p));
    } else {
        out.chunks_mut(plane).enumerate().for_each(|(i, p)| f(i, p));
    }
}

/// The channels [lo, hi) of the window of `size` (odd) channels centred on `c`.
fn channel_window(c: usize, channels: usize, size: usize) -> (usize, usize) {
    let pre = (size - 1) / 2;
    (c.saturating_sub(pre), (c + pre + 1).min(channels))
}

/// ACROSS_CHANNELS forward: fills `scale` (kept for backward) and `y`. `plane` = height*width.
#[allow(clippy::too_many_arguments)]
pub fn lrn_across_forward(
    x: &[f32],
    channels: usize,
    plane: usize,
    size: usize,
    alpha: f32,
    beta: f32,
    k: f32,
    scale: &mut [f32],
    y: &mut [f32],
) {
    let alpha_over_size = alpha / size as f32;
    per_plane(scale, plane, |p, out| {
        let (n, c) = (p / channels, p % channels);
        let (lo, hi) = channel_window(c, channels, size);
        // Channel-major accumulation keeps the reads contiguous; each element still sums its
        // window in ascending channel order.
        out.fill(0.0);
        for cc in lo..hi {
            let xs = &x[(n * channels + cc) * plane..(n * channels + cc + 1) * plane];
            for (o, &v) in out.iter_mut().zip(xs) {
                *o += v * v;
            }
        }
        for o in out.iter_mut() {
            *o = k + alpha_over_size * *o;
        }
    });
    let scale = &*scale;
    per_plane(y, plane, |p, out| {
        let r = p * plane..(p + 1) * plane;
        for ((o, &s), &v) in out.iter_mut().zip(&scale[r.clone()]).zip(&x[r]) {
            *o = s.powf(-beta) * v;
        }
    });
}

/// ACROSS_CHANNELS backward:
/// `dx_c = dy_c * scale_c^-beta - (2*alpha*beta/n) * x_c * sum over the window around c of
/// dy_c' * y_c' / scale_c'` (the window is symmetric, so the channels whose window holds c are
/// the channels in the window around c).
#[allow(clippy::too_many_arguments)]
pub fn lrn_across_backward(
    x: &[f32],
    y: &[f32],
    scale: &[f32],
    dy: &[f32],
    channels: usize,
    plane: usize,
    size: usize,
    alpha: f32,
    beta: f32,
    dx: &mut [f32],
) {
    let mut ratio = vec![0f32; dy.len()];
    per_plane(&mut ratio, plane, |p, out| {
        let r = p * plane..(p + 1) * plane;
        for (((o, &g), &t), &s) in out
            .iter_mut()
            .zip(&dy[r.clone()])
            .zip(&y[r.clone()])
            .zip(&scale[r])
        {
            *o = g * t / s;
        }
    });
    let cache_ratio = 2.0 * alpha * beta / size as f32;
    let ratio = &ratio;
    per_plane(dx, plane, |p, out| {
        let (n, c) = (p / channels, p % channels);
        let (lo, hi) = channel_window(c, channels, size);
        out.fill(0.0);
        for cc in lo..hi {
            let rs = &ratio[(n * channels + cc) * plane..(n * channels + cc + 1) * plane];
            for (o, &v) in out.iter_mut().zip(rs) {
                *o += v;
            }
        }
        let r = p * plane..(p + 1) * plane;
        for (((o, &g), &s), &v) in out
            .iter_mut()
            .zip(&dy[r.clone()])
            .zip(&scale[r.clone()])
            .zip(&x[r])
        {
            *o = g * s.powf(-beta) - cache_ratio * (v * *o);
        }
    });
}

/// Caffe's AVE-pooling divisor for output index `o` along one axis of length `len`: the window
/// starts at `o*stride - pad`, is cut at `len + pad` (padding counts, positions past it do
/// not); returns (divisor extent, first in-image index, end in-image index).
fn ave_window(o: usize, len: usize, kernel: usize, pad: usize) -> (usize, usize, usize) {
    let start = o as isize - pad as isize;
    let end = (start + kernel as isize).min((len + pad) as isize);
    let extent = (end - start) as usize;
    (
        extent,
        start.max(0) as usize,
        end.min(len as isize) as usize,
    )
}

/// WITHIN_CHANNEL forward. Per (n, c) plane of `height x width`:
/// `pooled = (sum of x^2 over the in-image part of the size x size window) / pool_size`,
/// `power = (1 + alpha*pooled)^-beta`, `y = x * power`; `pooled` and `power` are kept for
/// backward.
#[allow(clippy::too_many_arguments)]
pub fn lrn_within_forward(
    x: &[f32],
    height: usize,
    width: usize,
    size: usize,
    alpha: f32,
    beta: f32,
    pooled: &mut [f32],
    power: &mut [f32],
    y: &mut [f32],
) {
    let plane = height * width;
    let pad = (size - 1) / 2;
    per_plane(pooled, plane, |p, out| {
        let xs = &x[p * plane..(p + 1) * plane];
        for ph in 0..height {
            let (eh, hs, he) = ave_window(ph, height, size, pad);
            for pw in 0..width {
                let (ew, ws, we) = ave_window(pw, width, size, pad);
                let mut s = 0f32;
                for h in hs..he {
                    for w in ws..we {
                        let v = xs[h * width + w];
                        s += v * v;
                    }
                }
                out[ph * width + pw] = s / (eh * ew) as f32;
            }
        }
    });
    let pooled = &*pooled;
    per_plane(power, plane, |p, out| {
        for (o, &v) in out.iter_mut().zip(&pooled[p * plane..(p + 1) * plane]) {
            *o = (alpha * v + 1.0).powf(-beta);
        }
    });
    let power = &*power;
    per_plane(y, plane, |p, out| {
        let r = p * plane..(p + 1) * plane;
        for ((o, &v), &q) in out.iter_mut().zip(&x[r.clone()]).zip(&power[r]) {
            *o = v * q;
        }
    });
}

/// WITHIN_CHANNEL backward, through the composition: product (`dy*power` to x, `dy*x` to
/// power), power (`* -beta*alpha*power / (1 + alpha*pooled)`), AVE pooling (each window's
/// gradient / pool_size spread over its in-image positions), square (`* 2x`), and the split's
/// sum of both paths.
#[allow(clippy::too_many_arguments)]
pub fn lrn_within_backward(
    x: &[f32],
    pooled: &[f32],
    power: &[f32],
    dy: &[f32],
    height: usize,
    width: usize,
    size: usize,
    alpha: f32,
    beta: f32,
    dx: &mut [f32],
) {
    let plane = height * width;
    let pad = (size - 1) / 2;
    let diff_scale = -beta * alpha;
    per_plane(dx, plane, |p, out| {
        let r = p * plane..(p + 1) * plane;
        let (xs, ps, qs, gs) = (&x[r.clone()], &pooled[r.clone()], &power[r.clone()], &dy[r]);
        // Gradient reaching the pooled values.
        let dpool: Vec<f32> = (0..plane)
            .map(|i| (qs[i] / (alpha * ps[i] + 1.0)) * diff_scale * (gs[i] * xs[i]))
            .collect();
        // Pooling backward scatters into the squares' gradient, accumulated in `out`.
        out.fill(0.0);
        for ph in 0..height {
            let (eh, hs, he) = ave_window(ph, height, size, pad);
            for pw in 0..width {
                let (ew, ws, we) = ave_window(pw, width, size, pad);
                let g = dpool[ph * width + pw] / (eh * ew) as f32;
                for h in hs..he {
                    for w in ws..we {
                        out[h * width + w] += g;
                    }
                }
            }
        }
        for i in 0..plane {
            out[i] = gs[i] * qs[i] + out[i] * (2.0 * xs[i]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ave_divisor_counts_padding() {
        // Kernel 3, pad 1 on a length-4 axis: every window counts 3 positions.
        for o in 0..4 {
            assert_eq!(ave_window(o, 4, 3, 1).0, 3);
        }
        assert_eq!(ave_window(0, 4, 3, 1), (3, 0, 2));
        assert_eq!(ave_window(3, 4, 3, 1), (3, 2, 4));
        // Length 1 with kernel 5, pad 2: still the full 5 (padding on both sides).
        assert_eq!(ave_window(0, 1, 5, 2), (5, 0, 1));
    }

    #[test]
    fn across_window_edges() {
        assert_eq!(channel_window(0, 7, 5), (0, 3));
        assert_eq!(channel_window(6, 7, 5), (4, 7));
        assert_eq!(channel_window(0, 1, 3), (0, 1));
    }
}
