//! Mean-variance normalisation of contiguous rows (a row is one (n, c) plane, or one whole
//! image with across_channels). Each row is reduced by one thread in a fixed order.

use rayon::prelude::*;

/// Below this many elements a single thread is faster than spawning.
const PAR_MIN: usize = 1 << 15;

/// Forward: `y = x - mean(x)`; with `normalize_variance`, `y /= sqrt(var) + eps` (eps is
/// added to the standard deviation, as Caffe does) and `std[row] = sqrt(var) + eps` is kept
/// for backward (`std` is left alone otherwise).
pub fn mvn_forward(
    x: &[f32],
    dim: usize,
    normalize_variance: bool,
    eps: f32,
    y: &mut [f32],
    std: &mut [f32],
) {
    if dim == 0 || y.is_empty() {
        return;
    }
    let row = |xs: &[f32], ys: &mut [f32], sd: &mut f32| {
        let mean = (xs.iter().map(|&v| v as f64).sum::<f64>() / dim as f64) as f32;
        for (o, &v) in ys.iter_mut().zip(xs) {
            *o = v - mean;
        }
        if normalize_variance {
            let var = (ys.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64) as f32;
            let s = var.sqrt() + eps;
            ys.iter_mut().for_each(|v| *v /= s);
            *sd = s;
        }
    };
    if y.len() >= PAR_MIN {
        y.par_chunks_mut(dim)
            .zip(x.par_chunks(dim))
            .zip(std.par_iter_mut())
            .for_each(|((ys, xs), sd)| row(xs, ys, sd));
    } else {
        y.chunks_mut(dim)
            .zip(x.chunks(dim))
            .zip(std.iter_mut())
            .for_each(|((ys, xs), sd)| row(xs, ys, sd));
    }
}

/// Backward, Caffe's formula: with `normalize_variance`,
/// `dx = (dy - (sum(dy) + y*sum(y*dy)) / dim) / std`; otherwise `dx = dy - mean(dy)`.
pub fn mvn_backward(
    y: &[f32],
    dy: &[f32],
    dim: usize,
    normalize_variance: bool,
    std: &[f32],
    dx: &mut [f32],
) {
    if dim == 0 || dx.is_empty() {
        return;
    }
    let inv_dim = 1.0 / dim as f32;
    let row = |r: usize, out: &mut [f32]| {
        let span = r * dim..(r + 1) * dim;
        let (ys, gs) = (&y[span.clone()], &dy[span]);
        let sum_dy = gs.iter().map(|&v| v as f64).sum::<f64>() as f32;
        if normalize_variance {
            let sum_ydy = ys
                .iter()
                .zip(gs)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>() as f32;
            let s = std[r];
            for ((o, &g), &v) in out.iter_mut().zip(gs).zip(ys) {
                *o = (g - (v * sum_ydy + sum_dy) * inv_dim) / s;
            }
        } else {
            let mean = sum_dy * inv_dim;
            for (o, &g) in out.iter_mut().zip(gs) {
                *o = g - mean;
            }
        }
    };
    if dx.len() >= PAR_MIN {
        dx.par_chunks_mut(dim)
            .enumerate()
            .for_each(|(r, out)| row(r, out));
    } else {
        dx.chunks_mut(dim)
            .enumerate()
            .for_each(|(r, out)| row(r, out));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_normalised() {
        let x = [1f32, 3., 2., 6.];
        let mut y = [0f32; 4];
        let mut std = [0f32; 2];
        mvn_forward(&x, 2, true, 0.0, &mut y, &mut std);
        assert_eq!(y, [-1., 1., -1., 1.]);
        assert_eq!(std, [1.0, 2.0]);
    }
}
