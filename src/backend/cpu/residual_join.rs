//! The join of a residual block: Eltwise SUM of two inputs, then an in-place ReLU, then the
//! Split that feeds the next block (`net::fuse` finds the pattern). Unfused, the three layers
//! make 5 passes over the blob forward (sum: 3, ReLU: 2, Split: none) and 9 backward (Split's
//! add: 3, ReLU: 3, the sum's two copies: 3); here 3 and 5.
//!
//! Every value is computed with the operations, in the order, of the layers' own kernels
//! (`eltwise`, `activation`), so the results are the same bits.

use rayon::prelude::*;

use super::activation::{relu, relu_grad, CHUNK, PAR_MIN};

/// `y = relu(0 + c0 * a + c1 * b)` (the sum as Eltwise accumulates it from a zeroed top).
pub fn forward(a: &[f32], b: &[f32], coeff: [f32; 2], slope: f32, y: &mut [f32]) {
    let [c0, c1] = coeff;
    let run = |s: usize, y: &mut [f32]| {
        let n = y.len();
        let (a, b) = (&a[s..s + n], &b[s..s + n]);
        for ((o, &u), &v) in y.iter_mut().zip(a).zip(b) {
            let mut t = 0.0f32;
            t += c0 * u;
            t += c1 * v;
            *o = relu(t, slope);
        }
    };
    if y.len() >= PAR_MIN {
        y.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, y)| run(c * CHUNK, y));
    } else {
        run(0, y);
    }
}

/// The sum's input gradients from the Split's top diffs `ds` (added in top order, the first
/// copied: Split's backward) and the ReLU's output `y`: `g = relu'(ds_0 + ds_1 + ...)`, then
/// `dx_k = g` where `c_k` is 1 (Eltwise copies) and `c_k * g` otherwise. Either output may be
/// absent (that input needs no gradient).
pub fn backward(
    ds: &[&[f32]],
    y: &[f32],
    slope: f32,
    coeff: [f32; 2],
    dx0: Option<&mut [f32]>,
    dx1: Option<&mut [f32]>,
) {
    assert!(!ds.is_empty());
    // Chunk by chunk, one slice operation at a time (each a plain loop the compiler
    // vectorises; the chunk stays in cache between them): `g` is built in the first output.
    let grad_into = |s: usize, g: &mut [f32]| {
        let n = g.len();
        g.copy_from_slice(&ds[0][s..s + n]);
        for d in &ds[1..] {
            for (t, &v) in g.iter_mut().zip(&d[s..s + n]) {
                *t += v;
            }
        }
        for (t, &yv) in g.iter_mut().zip(&y[s..s + n]) {
            *t = relu_grad(*t, yv, slope);
        }
    };
    let scale = |c: f32, o: &mut [f32]| {
        if c != 1.0 {
            o.iter_mut().for_each(|v| *v *= c);
        }
    };
    let [c0, c1] = coeff;
    let only_first = dx0.is_some();
    let both = |s: usize, o0: &mut [f32], o1: &mut [f32]| {
        grad_into(s, o0);
        for (q, &g) in o1.iter_mut().zip(o0.iter()) {
            *q = if c1 == 1.0 { g } else { c1 * g };
        }
        scale(c0, o0);
    };
    let one = |s: usize, c: f32, o: &mut [f32]| {
        grad_into(s, o);
        scale(c, o);
    };
    let par = y.len() >= PAR_MIN;
    match (dx0, dx1) {
        (Some(o0), Some(o1)) if par => o0
            .par_chunks_mut(CHUNK)
            .zip(o1.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(c, (p, q))| both(c * CHUNK, p, q)),
        (Some(o0), Some(o1)) => both(0, o0, o1),
        (Some(o), None) | (None, Some(o)) => {
            let c = if only_first { c0 } else { c1 };
            if par {
                o.par_chunks_mut(CHUNK)
                    .enumerate()
                    .for_each(|(k, p)| one(k * CHUNK, c, p));
            } else {
                one(0, c, o);
            }
        }
        (None, None) => {}
    }
}
