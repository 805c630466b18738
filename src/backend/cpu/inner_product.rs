//! InnerProduct arithmetic: `m` rows of `k` inputs to `n` outputs through a weight matrix
//! stored `n x k` (Caffe's default) or `k x n` (`transpose: true`).

use std::cell::RefCell;

use rayon::prelude::*;

use super::blas::sgemm;
use super::scratch;

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
    if !transpose && m >= MIN_ROWS_TO_TRANSPOSE && n > 1 && n * k <= MAX_WEIGHTS_TO_TRANSPOSE {
        // With w stored n x k both operands of the product run along k, a layout the gemm
        // crate multiplies at a fraction of its rate (CIFAR-10's ip1, 100 x 1024 -> 64: 0.29
        // ms, against 0.16 for the transposed copy and the product together).
        scratch::with(&WEIGHTS_T, n * k, |wt| {
            transposed(&w[..n * k], n, k, wt);
            sgemm(false, false, m, n, k, 1.0, x, wt, 0.0, y);
        });
    } else {
        sgemm(false, !transpose, m, n, k, 1.0, x, w, 0.0, y);
    }
    if let (Some(b), true) = (bias, n > 0) {
        let add = |row: &mut [f32]| row.iter_mut().zip(b).for_each(|(v, bi)| *v += bi);
        if m * n >= PAR_MIN {
            y[..m * n].par_chunks_mut(n).for_each(add);
        } else {
            y[..m * n].chunks_mut(n).for_each(add);
        }
    }
}

/// Batches of fewer rows use the weights as stored: transposing them would cost more than
/// the product gains.
const MIN_ROWS_TO_TRANSPOSE: usize = 16;
/// Nor are weights transposed that do not fit in L2 (512 KiB): read from memory, the copy
/// costs what the product gains (LeNet's ip1, 500 x 800: 0.61-0.67 ms forward in the net as
/// stored, 0.69-0.78 transposed).
const MAX_WEIGHTS_TO_TRANSPOSE: usize = 1 << 17;

thread_local! {
    static WEIGHTS_T: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `dst = src^T`, `src` `rows x cols`, in square blocks so that both sides stay in cache.
fn transposed(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const B: usize = 16;
    let block = |c0: usize, out: &mut [f32]| {
        for r0 in (0..rows).step_by(B) {
            for (ci, o) in out.chunks_exact_mut(rows).enumerate() {
                let c = c0 + ci;
                for r in r0..(r0 + B).min(rows) {
                    o[r] = src[r * cols + c];
                }
            }
        }
    };
    if rows * cols >= PAR_MIN {
        dst[..rows * cols]
            .par_chunks_mut(B * rows)
            .enumerate()
            .for_each(|(i, out)| block(i * B, out));
    } else {
        dst[..rows * cols]
            .chunks_mut(B * rows)
            .enumerate()
            .for_each(|(i, out)| block(i * B, out));
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
        // Small; a batch whose forward transposes the weights first; one whose transpose
        // runs in parallel.
        for (m, n, k) in [(3, 4, 5), (20, 37, 19), (17, 300, 230)] {
            check_shape(m, n, k);
        }
    }

    fn check_shape(m: usize, n: usize, k: usize) {
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-5 * (1.0 + b.abs());
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
                assert!(close(y[i * n + j], want), "{m}x{n}x{k}");
                assert!(close(yt[i * n + j], want), "{m}x{n}x{k}");
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
                assert!(close(dx[i * k + p], want) && close(dxt[i * k + p], want));
            }
            for j in 0..n {
                let want: f32 = 1.0 + (0..m).map(|i| dy[i * n + j] * x[i * k + p]).sum::<f32>();
                assert!(close(dw[j * k + p], want) && close(dwt[p * n + j], want));
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
