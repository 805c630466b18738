//! Eltwise (SUM, PROD, MAX over several equal-shaped inputs), forward and backward, in Caffe's
//! order of operations. Work is split into fixed chunks of elements; every element is computed
//! by one thread in the same order, so results do not depend on the thread count.

use rayon::prelude::*;

use super::activation::{CHUNK, PAR_MIN};

/// Runs `f(start, y_chunk)` over `y` in fixed chunks, in parallel when large.
fn chunks(y: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    if y.len() >= PAR_MIN {
        y.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, y)| f(c * CHUNK, y));
    } else {
        f(0, y);
    }
}

/// `y = sum_i coeff[i] * x_i`, accumulated in bottom order from 0 (Caffe: set 0, then axpy).
pub fn sum_forward(xs: &[&[f32]], coeff: &[f32], y: &mut [f32]) {
    assert_eq!(xs.len(), coeff.len());
    chunks(y, |s, y| {
        let n = y.len();
        y.fill(0.0);
        for (x, &c) in xs.iter().zip(coeff) {
            for (o, v) in y.iter_mut().zip(&x[s..s + n]) {
                *o += c * v;
            }
        }
    });
}

/// `y = x_0 + x_1 + ...` added left to right (Split's backward: the copy of the first diff,
/// then the others added), in parallel chunks for large blobs.
pub fn add_all(xs: &[&[f32]], y: &mut [f32]) {
    assert!(!xs.is_empty());
    chunks(y, |s, y| {
        let n = y.len();
        y.copy_from_slice(&xs[0][s..s + n]);
        for x in &xs[1..] {
            for (o, v) in y.iter_mut().zip(&x[s..s + n]) {
                *o += *v;
            }
        }
    });
}

/// `y = x_0 * x_1 * ... ` multiplied left to right.
pub fn prod_forward(xs: &[&[f32]], y: &mut [f32]) {
    assert!(xs.len() >= 2);
    chunks(y, |s, y| {
        let n = y.len();
        for ((o, a), b) in y.iter_mut().zip(&xs[0][s..s + n]).zip(&xs[1][s..s + n]) {
            *o = a * b;
        }
        for x in &xs[2..] {
            for (o, v) in y.iter_mut().zip(&x[s..s + n]) {
                *o *= v;
            }
        }
    });
}

/// Element-wise max with Caffe's tie rule: between inputs 0 and 1 `a > b ? a : b` (ties go to
/// input 1); a later input replaces the running max only when strictly greater. `arg` gets the
/// winning input's index.
pub fn max_forward(xs: &[&[f32]], y: &mut [f32], arg: &mut [u32]) {
    assert!(xs.len() >= 2);
    assert_eq!(y.len(), arg.len());
    let run = |s: usize, y: &mut [f32], arg: &mut [u32]| {
        let n = y.len();
        let (a, b) = (&xs[0][s..s + n], &xs[1][s..s + n]);
        for i in 0..n {
            if a[i] > b[i] {
                y[i] = a[i];
                arg[i] = 0;
            } else {
                y[i] = b[i];
                arg[i] = 1;
            }
        }
        for (k, x) in xs.iter().enumerate().skip(2) {
            let x = &x[s..s + n];
            for i in 0..n {
                if x[i] > y[i] {
                    y[i] = x[i];
                    arg[i] = k as u32;
                }
            }
        }
    };
    if y.len() >= PAR_MIN {
        y.par_chunks_mut(CHUNK)
            .zip(arg.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(c, (y, arg))| run(c * CHUNK, y, arg));
    } else {
        run(0, y, arg);
    }
}

/// `dx = coeff * dy` (a copy when coeff is 1).
pub fn sum_backward(dy: &[f32], coeff: f32, dx: &mut [f32]) {
    chunks(dx, |s, dx| {
        let dy = &dy[s..s + dx.len()];
        if coeff == 1.0 {
            dx.copy_from_slice(dy);
        } else {
            for (o, g) in dx.iter_mut().zip(dy) {
                *o = coeff * g;
            }
        }
    });
}

/// Gradient for input `i` of a product: `dy * prod_{j != i} x_j` (multiplied in input order)
/// when `stable`, else `dy * (y / x_i)`.
pub fn prod_backward(dy: &[f32], xs: &[&[f32]], y: &[f32], i: usize, stable: bool, dx: &mut [f32]) {
    chunks(dx, |s, dx| {
        let n = dx.len();
        if stable {
            let mut first = true;
            for (j, x) in xs.iter().enumerate() {
                if j == i {
                    continue;
                }
                let x = &x[s..s + n];
                if first {
                    dx.copy_from_slice(x);
                    first = false;
                } else {
                    for (o, v) in dx.iter_mut().zip(x) {
                        *o *= v;
                    }
                }
            }
        } else {
            for ((o, a), b) in dx.iter_mut().zip(&y[s..s + n]).zip(&xs[i][s..s + n]) {
                *o = a / b;
            }
        }
        for (o, g) in dx.iter_mut().zip(&dy[s..s + n]) {
            *o *= g;
        }
    });
}

/// Routes `dy` to input `i` where it won the max.
pub fn max_backward(dy: &[f32], arg: &[u32], i: usize, dx: &mut [f32]) {
    chunks(dx, |s, dx| {
        let n = dx.len();
        for ((o, g), &a) in dx.iter_mut().zip(&dy[s..s + n]).zip(&arg[s..s + n]) {
            *o = if a as usize == i { *g } else { 0.0 };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_ties_go_to_input_one_then_strictly_greater() {
        let a = [1.0f32, 2.0, 0.0];
        let b = [1.0f32, 1.0, 3.0];
        let c = [1.0f32, 2.0, 3.5];
        let mut y = [0f32; 3];
        let mut arg = [9u32; 3];
        max_forward(&[&a, &b, &c], &mut y, &mut arg);
        assert_eq!(y, [1.0, 2.0, 3.5]);
        assert_eq!(arg, [1, 0, 2]);
        let mut dx = [7f32; 3];
        max_backward(&[1.0, 2.0, 3.0], &arg, 1, &mut dx);
        assert_eq!(dx, [1.0, 0.0, 0.0]);
    }

    #[test]
    fn large_inputs_chunk_consistently() {
        let n = PAR_MIN * 2 + 17;
        let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.1).sin()).collect();
        let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.07).cos()).collect();
        let mut y = vec![0f32; n];
        sum_forward(&[&a, &b], &[2.0, -1.0], &mut y);
        for i in [0, CHUNK - 1, CHUNK, n - 1] {
            assert_eq!(y[i], 0.0 + 2.0 * a[i] + -b[i]);
        }
        let mut p = vec![0f32; n];
        prod_forward(&[&a, &b, &a], &mut p);
        let mut dx = vec![0f32; n];
        let ones = vec![1f32; n];
        prod_backward(&ones, &[&a, &b, &a], &p, 1, true, &mut dx);
        assert_eq!(dx[n - 1], a[n - 1] * a[n - 1]);
    }
}
