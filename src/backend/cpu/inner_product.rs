//! InnerProduct arithmetic: `m` rows of `k` inputs to `n` outputs through a weight matrix
//! stored `n x k` (Caffe's default) or `k x n` (`transpose: true`).

use rayon::prelude::*;

use super::blas::sgemm;

/// Below this many values, row/column loops stay on one thread.
const PAR_MIN: usize = 1 << 16;
/// Columns per task in the bias gradient.
const COL_BLOCK: usize = 256;

/// `y = x * op(w) (+ 1 * bias^T)`; `x` is `m x k`, `y` `m x n`.
#[allow(clippy::too_many_arguments)]
pub fn ip_forward(
    m: usize,
    n: usize,
    k: usize,
    transpose: bool,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    sgemm(false, !transpose, m, n, k, 1.0, x, w, 0.0, y);
    if let (Some(b), true) = (bias, n > 0) {
        let add = |row: &mut [f32]| row.iter_mut().zip(b).for_each(|(v, bi)| *v += bi);
        if m * n >= PAR_MIN {
            y[..m * n].par_chunks_mut(n).for_each(add);
        } else {
            y[..m * n].chunks_mut(n).for_each(add);
        }
    }
}

/// Weight gradient, accumulated: `dw += dy^T x` (`n x k`), or `x^T dy` (`k x n`) when
/// transposed.
pub fn ip_weight_grad(
    m: usize,
    n: usize,
    k: usize,
    transpose: bool,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) {
    if transpose {
        sgemm(true, false, k, n, m, 1.0, x, dy, 1.0, dw);
    } else {
        sgemm(true, false, n, k, m, 1.0, dy, x, 1.0, dw);
    }
}

/// Bias gradient, accumulated: `db[j] += sum_i dy[i][j]`, rows added in order.
pub fn ip_bias_grad(m: usize, n: usize, dy: &[f32], db: &mut [f32]) {
    let block = |(bi, out): (usize, &mut [f32])| {
        let off = bi * COL_BLOCK;
        for i in 0..m {
            let row = &dy[i * n + off..i * n + off + out.len()];
            out.iter_mut().zip(row).for_each(|(d, v)| *d += v);
        }
    };
    if m * n >= PAR_MIN {
        db[..n]
            .par_chunks_mut(COL_BLOCK)
            .enumerate()
            .for_each(block);
    } else {
        db[..n].chunks_mut(COL_BLOCK).enumerate().for_each(block);
    }
}

/// Input gradient, overwritten: `dx = dy * w` (`m x k`), or `dy * w^T` when transposed.
pub fn ip_backward_input(
    m: usize,
    n: usize,
    k: usize,
    transpose: bool,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) {
    sgemm(false, transpose, m, k, n, 1.0, dy, w, 0.0, dx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_and_gradients_match_definitions() {
        let (m, n, k) = (3, 4, 5);
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.3).sin()).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.7).cos()).collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.1).collect();
        let dy: Vec<f32> = (0..m * n).map(|i| (i as f32 * 0.2).cos()).collect();
        // w as n x k; wt the same matrix stored k x n.
        let mut wt = vec![0f32; n * k];
        for j in 0..n {
            for p in 0..k {
                wt[p * n + j] = w[j * k + p];
            }
        }
        let mut y = vec![0f32; m * n];
        let mut yt = vec![0f32; m * n];
        ip_forward(m, n, k, false, &x, &w, Some(&b), &mut y);
        ip_forward(m, n, k, true, &x, &wt, Some(&b), &mut yt);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum::<f32>() + b[j];
                assert!((y[i * n + j] - want).abs() < 1e-5);
                assert!((yt[i * n + j] - want).abs() < 1e-5);
            }
        }
        let (mut dx, mut dxt) = (vec![0f32; m * k], vec![0f32; m * k]);
        ip_backward_input(m, n, k, false, &dy, &w, &mut dx);
        ip_backward_input(m, n, k, true, &dy, &wt, &mut dxt);
        let (mut dw, mut dwt) = (vec![1f32; n * k], vec![1f32; n * k]);
        ip_weight_grad(m, n, k, false, &x, &dy, &mut dw);
        ip_weight_grad(m, n, k, true, &x, &dy, &mut dwt);
        for p in 0..k {
            for i in 0..m {
                let want: f32 = (0..n).map(|j| dy[i * n + j] * w[j * k + p]).sum();
                assert!(
                    (dx[i * k + p] - want).abs() < 1e-5 && (dxt[i * k + p] - want).abs() < 1e-5
                );
            }
            for j in 0..n {
                let want: f32 = 1.0 + (0..m).map(|i| dy[i * n + j] * x[i * k + p]).sum::<f32>();
                assert!(
                    (dw[j * k + p] - want).abs() < 1e-5 && (dwt[p * n + j] - want).abs() < 1e-5
                );
            }
        }
        let mut db = vec![0.5f32; n];
        ip_bias_grad(m, n, &dy, &mut db);
        for j in 0..n {
            let want: f32 = 0.5 + (0..m).map(|i| dy[i * n + j]).sum::<f32>();
            assert!((db[j] - want).abs() < 1e-6);
        }
    }
}
