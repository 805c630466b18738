//! Scale and Bias arithmetic: a factor or an offset broadcast along `dim` positions of a blob
//! viewed as (outer, dim, inner), and the reductions of their gradients.
//!
//! Each gradient entry `d` is reduced over (outer, inner) in a fixed order (blocks of `outer`,
//! each over `sums::Lanes`, merged in order: `sums::block_sums`), so results do not depend on
//! the thread count.

use rayon::prelude::*;

use super::sums::{block_sums, sum_and_dot, Lanes};

/// Below this many elements a single thread is faster than spawning.
const PAR_MIN: usize = 1 << 15;

/// Runs `f(row, out_row)` over the `inner`-long rows of `out` (row = o * dim + d).
fn per_row<F>(out: &mut [f32], inner: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if inner == 0 || out.is_empty() {
        return;
    }
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(inner)
            .enumerate()
            .for_each(|(i, r)| f(i, r));
    } else {
        out.chunks_mut(inner).enumerate().for_each(|(i, r)| f(i, r));
    }
}

/// `y[o,d,i] = scale[d] * x[o,d,i] (+ bias[d])`. The product is rounded before the bias is
/// added, as Caffe's separate scale and bias passes do.
pub fn scale_forward(
    x: &[f32],
    scale: &[f32],
    bias: Option<&[f32]>,
    dim: usize,
    inner: usize,
    y: &mut [f32],
) {
    per_row(y, inner, |r, out| {
        let d = r % dim;
        let s = scale[d];
        let xs = &x[r * inner..(r + 1) * inner];
        match bias {
            Some(b) => {
                let b = b[d];
                for (o, &v) in out.iter_mut().zip(xs) {
                    *o = s * v + b;
                }
            }
            None => {
                for (o, &v) in out.iter_mut().zip(xs) {
                    *o = s * v;
                }
            }
        }
    });
}

/// In-place forward: `keep` gets the input (the scale gradient needs it), `data` becomes
/// `scale[d] * data (+ bias[d])`, in one pass.
pub fn scale_forward_keep(
    data: &mut [f32],
    keep: &mut [f32],
    scale: &[f32],
    bias: Option<&[f32]>,
    dim: usize,
    inner: usize,
) {
    let keep = &mut keep[..data.len()];
    if inner == 0 || data.is_empty() {
        return;
    }
    let row = |r: usize, out: &mut [f32], k: &mut [f32]| {
        let d = r % dim;
        let (s, b) = (scale[d], bias.map(|b| b[d]));
        for (o, k) in out.iter_mut().zip(k.iter_mut()) {
            *k = *o;
            // Rounded product, then the bias: as in `scale_forward`.
            *o = match b {
                Some(b) => s * *o + b,
                None => s * *o,
            };
        }
    };
    if data.len() >= PAR_MIN {
        data.par_chunks_mut(inner)
            .zip(keep.par_chunks_mut(inner))
            .enumerate()
            .for_each(|(r, (o, k))| row(r, o, k));
    } else {
        for (r, (o, k)) in data
            .chunks_mut(inner)
            .zip(keep.chunks_mut(inner))
            .enumerate()
        {
            row(r, o, k);
        }
    }
}

/// `data[o,d,i] *= scale[d]` (in-place layers: the bottom diff is the top diff).
pub fn scale_inplace(data: &mut [f32], scale: &[f32], dim: usize, inner: usize) {
    per_row(data, inner, |r, row| {
        let s = scale[r % dim];
        row.iter_mut().for_each(|v| *v *= s);
    });
}

/// `y[o,d,i] = x[o,d,i] + bias[d]`.
pub fn bias_forward(x: &[f32], bias: &[f32], dim: usize, inner: usize, y: &mut [f32]) {
    per_row(y, inner, |r, out| {
        let b = bias[r % dim];
        for (o, &v) in out.iter_mut().zip(&x[r * inner..(r + 1) * inner]) {
            *o = v + b;
        }
    });
}

/// `data[o,d,i] += bias[d]` (in-place).
pub fn bias_inplace(data: &mut [f32], bias: &[f32], dim: usize, inner: usize) {
    per_row(data, inner, |r, row| {
        let b = bias[r % dim];
        row.iter_mut().for_each(|v| *v += b);
    });
}

/// `g[d] (+)= sum over (o, i) of a[o,d,i] * b[o,d,i]`, or of `a` alone when `b` is None;
/// `accumulate` adds to `g`, otherwise `g` is overwritten.
pub fn broadcast_grad(
    a: &[f32],
    b: Option<&[f32]>,
    outer: usize,
    dim: usize,
    inner: usize,
    g: &mut [f32],
    accumulate: bool,
) {
    let row = |o: usize, d: usize| (o * dim + d) * inner..(o * dim + d + 1) * inner;
    let sums = block_sums(
        outer,
        dim,
        a.len() >= PAR_MIN,
        |rows, d0, out: &mut [Lanes]| {
            for o in rows {
                for (j, s) in out.iter_mut().enumerate() {
                    let r = row(o, d0 + j);
                    match b {
                        Some(b) => s.add_dot(&a[r.clone()], &b[r]),
                        None => s.add(&a[r]),
                    }
                }
            }
        },
    );
    for (out, s) in g.iter_mut().zip(&sums) {
        let t = s.total() as f32;
        *out = if accumulate { *out + t } else { t };
    }
}

/// Both reductions of a learned Scale with a bias in one pass over `dy`: `gb[d] (+)= sum of
/// dy` and `gs[d] (+)= sum of dy * x` (each with its own `accumulate`), as two
/// `broadcast_grad` calls would give them.
#[allow(clippy::too_many_arguments)]
pub fn bias_and_scale_grad(
    dy: &[f32],
    x: &[f32],
    outer: usize,
    dim: usize,
    inner: usize,
    (gb, acc_b): (&mut [f32], bool),
    (gs, acc_s): (&mut [f32], bool),
) {
    let sums = sum_and_dot(dy, x, outer, dim, inner, dy.len() >= PAR_MIN);
    for ((b, s), &(tb, ts)) in gb[..dim].iter_mut().zip(&mut gs[..dim]).zip(&sums) {
        let (tb, ts) = (tb as f32, ts as f32);
        *b = if acc_b { *b + tb } else { tb };
        *s = if acc_s { *s + ts } else { ts };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_indexing() {
        // outer 2, dim 3, inner 2.
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut y = vec![0f32; 12];
        scale_forward(&x, &[1., 2., 3.], Some(&[0., 0., 1.]), 3, 2, &mut y);
        assert_eq!(&y[..6], &[0., 1., 4., 6., 13., 16.]);
        assert_eq!(&y[6..], &[6., 7., 16., 18., 31., 34.]);
        let mut g = vec![1f32; 3];
        broadcast_grad(&x, None, 2, 3, 2, &mut g, true);
        assert_eq!(
            g,
            vec![
                1. + 0. + 1. + 6. + 7.,
                1. + 2. + 3. + 8. + 9.,
                1. + 4. + 5. + 10. + 11.
            ]
        );
        // The one-pass pair gives what the two reductions give.
        let (mut b1, mut s1) = (vec![1f32; 3], vec![2f32; 3]);
        broadcast_grad(&x, None, 2, 3, 2, &mut b1, true);
        broadcast_grad(&x, Some(&y), 2, 3, 2, &mut s1, false);
        let (mut b2, mut s2) = (vec![1f32; 3], vec![2f32; 3]);
        bias_and_scale_grad(&x, &y, 2, 3, 2, (&mut b2, true), (&mut s2, false));
        assert_eq!((b1, s1), (b2, s2));
    }
}
