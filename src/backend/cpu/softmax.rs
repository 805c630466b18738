//! Softmax over the middle axis of an `outer × channels × inner` array, as Caffe's
//! `softmax_layer.cpp` computes it: per (outer, inner) position subtract the channel maximum,
//! exponentiate, divide by the channel sum. Backward: `dx = (dy − Σ_c dy·y)·y`.
//!
//! Work is split either over outer blocks or, when there are few of them, over rows and
//! column ranges of one block; every value is produced by one thread with a fixed order of
//! operations, so results do not depend on the thread count.

use rayon::prelude::*;

/// Elements below which threads cost more than they save.
const PARALLEL_WORK: usize = 1 << 15;
/// Inner positions per task when one block is split across threads.
const INNER_CHUNK: usize = 512;

fn check(len: usize, outer: usize, channels: usize, inner: usize, what: &str) {
    assert_eq!(
        len,
        outer * channels * inner,
        "softmax: {what} length does not match {outer}x{channels}x{inner}"
    );
}

/// Column-wise reduction of the `channels` rows of `src` (rows of length `inner`) into `acc`,
/// for the columns `k0..k0 + acc.len()`.
fn reduce_cols(
    acc: &mut [f32],
    k0: usize,
    src: &[f32],
    channels: usize,
    inner: usize,
    op: impl Fn(f32, f32) -> f32,
) {
    let n = acc.len();
    acc.copy_from_slice(&src[k0..k0 + n]);
    for j in 1..channels {
        let row = &src[j * inner + k0..j * inner + k0 + n];
        for (a, &v) in acc.iter_mut().zip(row) {
            *a = op(*a, v);
        }
    }
}

/// Columns of `src` reduced for every `inner` position of a block, on threads when `par`.
fn reduce(
    scale: &mut [f32],
    par: bool,
    src: &[f32],
    channels: usize,
    inner: usize,
    op: impl Fn(f32, f32) -> f32 + Sync,
) {
    if par {
        scale
            .par_chunks_mut(INNER_CHUNK)
            .enumerate()
            .for_each(|(c, s)| reduce_cols(s, c * INNER_CHUNK, src, channels, inner, &op));
    } else {
        reduce_cols(scale, 0, src, channels, inner, op);
    }
}

/// Row-wise update of one block (rows of length `inner`), on threads when `par`.
fn rows(y: &mut [f32], par: bool, inner: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if par {
        y.par_chunks_mut(inner)
            .enumerate()
            .for_each(|(j, r)| f(j, r));
    } else {
        y.chunks_mut(inner).enumerate().for_each(|(j, r)| f(j, r));
    }
}

fn forward_block(
    x: &[f32],
    y: &mut [f32],
    scale: &mut [f32],
    channels: usize,
    inner: usize,
    par: bool,
) {
    reduce(scale, par, x, channels, inner, f32::max);
    {
        let scale = &*scale;
        rows(y, par, inner, |j, r| {
            let xr = &x[j * inner..(j + 1) * inner];
            for ((v, &a), &m) in r.iter_mut().zip(xr).zip(scale) {
                *v = (a - m).exp();
            }
        });
    }
    reduce(scale, par, y, channels, inner, |a, b| a + b);
    let scale = &*scale;
    rows(y, par, inner, |_, r| {
        for (v, &s) in r.iter_mut().zip(scale) {
            *v /= s;
        }
    });
}

/// `y = softmax(x)` over the channel axis; `x` and `y` are `outer × channels × inner`.
pub fn softmax_forward(x: &[f32], y: &mut [f32], outer: usize, channels: usize, inner: usize) {
    check(x.len(), outer, channels, inner, "input");
    check(y.len(), outer, channels, inner, "output");
    let dim = channels * inner;
    if dim == 0 {
        return;
    }
    let big = x.len() >= PARALLEL_WORK;
    if !big || outer >= 2 * rayon::current_num_threads().max(1) {
        let run = |(x, y): (&[f32], &mut [f32])| {
            let mut scale = vec![0f32; inner];
            forward_block(x, y, &mut scale, channels, inner, false);
        };
        if big {
            x.par_chunks(dim).zip(y.par_chunks_mut(dim)).for_each(run);
        } else {
            x.chunks(dim).zip(y.chunks_mut(dim)).for_each(run);
        }
    } else {
        let mut scale = vec![0f32; inner];
        for (x, y) in x.chunks(dim).zip(y.chunks_mut(dim)) {
            forward_block(x, y, &mut scale, channels, inner, true);
        }
    }
}

fn backward_block(
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    scale: &mut [f32],
    channels: usize,
    inner: usize,
    par: bool,
) {
    if par {
        scale
            .par_chunks_mut(INNER_CHUNK)
            .enumerate()
            .for_each(|(c, s)| dot_cols(s, c * INNER_CHUNK, y, dy, channels, inner));
    } else {
        dot_cols(scale, 0, y, dy, channels, inner);
    }
    let scale = &*scale;
    rows(dx, par, inner, |j, r| {
        let o = j * inner;
        for (((v, &s), &d), &p) in r
            .iter_mut()
            .zip(scale)
            .zip(&dy[o..o + inner])
            .zip(&y[o..o + inner])
        {
            *v = (d - s) * p;
        }
    });
}

/// Strided dot products of `dy` and `y` down the channel rows, for the columns
/// `k0..k0 + acc.len()`, accumulated from zero as BLAS's sdot does.
fn dot_cols(acc: &mut [f32], k0: usize, y: &[f32], dy: &[f32], channels: usize, inner: usize) {
    let n = acc.len();
    acc.fill(0.0);
    for j in 0..channels {
        let r = j * inner + k0..j * inner + k0 + n;
        for ((a, &d), &p) in acc.iter_mut().zip(&dy[r.clone()]).zip(&y[r]) {
            *a += d * p;
        }
    }
}

/// `dx = (dy − Σ_c dy·y)·y` from the softmax output `y` and its gradient `dy`.
pub fn softmax_backward(
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    outer: usize,
    channels: usize,
    inner: usize,
) {
    check(y.len(), outer, channels, inner, "output");
    check(dy.len(), outer, channels, inner, "output gradient");
    check(dx.len(), outer, channels, inner, "input gradient");
    let dim = channels * inner;
    if dim == 0 {
        return;
    }
    let big = y.len() >= PARALLEL_WORK;
    if !big || outer >= 2 * rayon::current_num_threads().max(1) {
        let run = |((y, dy), dx): ((&[f32], &[f32]), &mut [f32])| {
            let mut scale = vec![0f32; inner];
            backward_block(y, dy, dx, &mut scale, channels, inner, false);
        };
        if big {
            y.par_chunks(dim)
                .zip(dy.par_chunks(dim))
                .zip(dx.par_chunks_mut(dim))
                .for_each(run);
        } else {
            y.chunks(dim)
                .zip(dy.chunks(dim))
                .zip(dx.chunks_mut(dim))
                .for_each(run);
        }
    } else {
        let mut scale = vec![0f32; inner];
        for ((y, dy), dx) in y.chunks(dim).zip(dy.chunks(dim)).zip(dx.chunks_mut(dim)) {
            backward_block(y, dy, dx, &mut scale, channels, inner, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_to_one_and_is_shift_invariant() {
        let x = vec![1., 2., 3., 1000., 1001., 1002.];
        let mut y = vec![0f32; 6];
        // outer 1, channels 3, inner 2: column k is x[k], x[2 + k], x[4 + k].
        softmax_forward(&x, &mut y, 1, 3, 2);
        for k in 0..2 {
            let s: f32 = (0..3).map(|j| y[j * 2 + k]).sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
        let mut y2 = vec![0f32; 6];
        softmax_forward(&[1., 2., 3., 4., 5., 6.], &mut y2, 2, 3, 1);
        let mut y3 = vec![0f32; 6];
        softmax_forward(&[1001., 1002., 1003., 4., 5., 6.], &mut y3, 2, 3, 1);
        assert_eq!(y2, y3);
    }

    #[test]
    fn split_paths_agree() {
        // One outer block with a wide inner axis takes the column-split path; compare with the
        // same data computed block by block serially.
        let (c, inner) = (7, 5000);
        let x: Vec<f32> = (0..c * inner)
            .map(|i| ((i * 7919) % 997) as f32 * 0.01 - 5.0)
            .collect();
        let mut y = vec![0f32; x.len()];
        softmax_forward(&x, &mut y, 1, c, inner);
        let mut y2 = vec![0f32; x.len()];
        let mut scale = vec![0f32; inner];
        forward_block(&x, &mut y2, &mut scale, c, inner, false);
        assert_eq!(y, y2);
        let dy: Vec<f32> = (0..c * inner)
            .map(|i| ((i * 31) % 17) as f32 * 0.1 - 0.8)
            .collect();
        let mut dx = vec![0f32; x.len()];
        softmax_backward(&y, &dy, &mut dx, 1, c, inner);
        let mut dx2 = vec![0f32; x.len()];
        backward_block(&y, &dy, &mut dx2, &mut scale, c, inner, false);
        assert_eq!(dx, dx2);
    }
}
