//! Reduction of each row of a (num, dim) matrix to one value (Caffe's Reduction layer).
//!
//! Sums are accumulated in f64 over fixed chunks of a row whose partial sums are then added in
//! order: the same bits whatever the thread count (Caffe's BLAS dot accumulates in f32, so the
//! results agree to f32 rounding).

use rayon::prelude::*;

use super::activation::{CHUNK, PAR_MIN};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Sum (also MEAN, whose 1/dim is folded into the coefficient).
    Sum,
    /// Sum of absolute values.
    Asum,
    /// Sum of squares.
    SumSq,
}

fn term(op: ReduceOp, v: f32) -> f64 {
    match op {
        ReduceOp::Sum => v as f64,
        ReduceOp::Asum => v.abs() as f64,
        ReduceOp::SumSq => v as f64 * v as f64,
    }
}

fn row_reduce(op: ReduceOp, row: &[f32]) -> f64 {
    let chunk = |c: &[f32]| c.iter().map(|&v| term(op, v)).sum::<f64>();
    if row.len() >= PAR_MIN {
        let parts: Vec<f64> = row.par_chunks(CHUNK).map(chunk).collect();
        parts.iter().sum()
    } else {
        row.chunks(CHUNK).map(chunk).sum()
    }
}

/// `y[i] = coeff * reduce(x[i, :])` for i in 0..num.
pub fn reduction_forward(
    x: &[f32],
    y: &mut [f32],
    num: usize,
    dim: usize,
    op: ReduceOp,
    coeff: f32,
) {
    let one = |i: usize| {
        let v = if dim == 0 {
            0.0
        } else {
            row_reduce(op, &x[i * dim..(i + 1) * dim]) as f32
        };
        if coeff != 1.0 {
            v * coeff
        } else {
            v
        }
    };
    let y = &mut y[..num];
    if num * dim >= PAR_MIN && num > 1 {
        y.par_iter_mut().enumerate().for_each(|(i, o)| *o = one(i));
    } else {
        y.iter_mut().enumerate().for_each(|(i, o)| *o = one(i));
    }
}

/// `dx[i, j] = d(reduce)/dx * dy[i] * coeff`: the constant for Sum, `sign(x)` times it for Asum,
/// `2 x` times it for SumSq.
pub fn reduction_backward(
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    num: usize,
    dim: usize,
    op: ReduceOp,
    coeff: f32,
) {
    if dim == 0 {
        return;
    }
    let row = |i: usize, d: &mut [f32]| {
        let c = dy[i] * coeff;
        let x = &x[i * dim..(i + 1) * dim];
        match op {
            ReduceOp::Sum => d.fill(c),
            ReduceOp::Asum => {
                for (o, &v) in d.iter_mut().zip(x) {
                    let s = (0.0 < v) as i32 - (v < 0.0) as i32;
                    *o = c * s as f32;
                }
            }
            ReduceOp::SumSq => {
                let c2 = 2.0 * c;
                for (o, &v) in d.iter_mut().zip(x) {
                    *o = c2 * v;
                }
            }
        }
    };
    let dx = &mut dx[..num * dim];
    if num * dim >= PAR_MIN {
        dx.par_chunks_mut(dim)
            .enumerate()
            .for_each(|(i, d)| row(i, d));
    } else {
        dx.chunks_mut(dim).enumerate().for_each(|(i, d)| row(i, d));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_sums_do_not_depend_on_splitting() {
        let n = PAR_MIN * 3 + 5;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
            .collect();
        let mut y = [0f32];
        reduction_forward(&x, &mut y, 1, n, ReduceOp::Sum, 1.0);
        let serial: f64 = x
            .chunks(CHUNK)
            .map(|c| c.iter().map(|&v| v as f64).sum::<f64>())
            .sum();
        assert_eq!(y[0], serial as f32);
        let mut y2 = [0f32; 2];
        reduction_forward(&[1., -2., 3., -4.], &mut y2, 2, 2, ReduceOp::Asum, 0.5);
        assert_eq!(y2, [1.5, 3.5]);
        let mut dx = [0f32; 4];
        reduction_backward(
            &[1., -2., 0., -4.],
            &[1., 2.],
            &mut dx,
            2,
            2,
            ReduceOp::Asum,
            0.5,
        );
        assert_eq!(dx, [0.5, -0.5, 0.0, -1.0]);
    }

    #[test]
    fn same_bits_with_any_thread_count() {
        let (num, dim) = (3, PAR_MIN + 999);
        let x: Vec<f32> = (0..num * dim)
            .map(|i| ((i as f32) * 0.37).sin() * 10.0)
            .collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut y = vec![0f32; num];
                reduction_forward(&x, &mut y, num, dim, ReduceOp::SumSq, 0.3);
                let mut y1 = vec![0f32; 1];
                reduction_forward(&x, &mut y1, 1, num * dim, ReduceOp::Asum, 1.0);
                (y, y1)
            })
        };
        assert_eq!(run(1), run(3));
    }
}
