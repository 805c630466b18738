//! Embed: a table lookup. Each of `m` indices picks a row of the (k, n) weight matrix.
//! Indices must already be checked (integers in [0, k)).

use rayon::prelude::*;

use super::activation::PAR_MIN;

/// `y[i, :] = w[idx[i], :] (+ bias)`.
pub fn embed_forward(idx: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32], n: usize) {
    if n == 0 {
        return;
    }
    let row = |i: usize, out: &mut [f32]| {
        let r = idx[i] as usize;
        out.copy_from_slice(&w[r * n..(r + 1) * n]);
        if let Some(b) = bias {
            for (o, v) in out.iter_mut().zip(b) {
                *o += v;
            }
        }
    };
    let y = &mut y[..idx.len() * n];
    if y.len() >= PAR_MIN {
        y.par_chunks_mut(n)
            .enumerate()
            .for_each(|(i, out)| row(i, out));
    } else {
        y.chunks_mut(n).enumerate().for_each(|(i, out)| row(i, out));
    }
}

/// `dw[idx[i], :] += dy[i, :]`, accumulated in input order for every weight (inputs that share
/// an index add up in that order). Parallel over blocks of table rows, each task scanning the
/// indices for its own rows, so each weight has one writer.
pub fn embed_backward_weights(idx: &[f32], dy: &[f32], dw: &mut [f32], n: usize) {
    if n == 0 {
        return;
    }
    const ROWS: usize = 64;
    let block = |b: usize, dw: &mut [f32]| {
        let (r0, r1) = (b * ROWS, b * ROWS + dw.len() / n);
        for (i, &v) in idx.iter().enumerate() {
            let r = v as usize;
            if r < r0 || r >= r1 {
                continue;
            }
            let dst = &mut dw[(r - r0) * n..(r - r0 + 1) * n];
            for (d, g) in dst.iter_mut().zip(&dy[i * n..(i + 1) * n]) {
                *d += g;
            }
        }
    };
    if idx.len() * n >= PAR_MIN && dw.len() > ROWS * n {
        dw.par_chunks_mut(ROWS * n)
            .enumerate()
            .for_each(|(b, dw)| block(b, dw));
    } else {
        dw.chunks_mut(ROWS * n)
            .enumerate()
            .for_each(|(b, dw)| block(b, dw));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_accumulate() {
        let w = [1f32, 2., 3., 4., 5., 6.]; // k = 3, n = 2
        let idx = [2f32, 0., 2.];
        let mut y = [0f32; 6];
        embed_forward(&idx, &w, Some(&[0.5, -0.5]), &mut y, 2);
        assert_eq!(y, [5.5, 5.5, 1.5, 1.5, 5.5, 5.5]);
        let mut dw = [1f32; 6];
        embed_backward_weights(&idx, &[1., 2., 3., 4., 5., 6.], &mut dw, 2);
        assert_eq!(dw, [4., 5., 1., 1., 7., 9.]);
    }

    #[test]
    fn parallel_blocks_match_serial() {
        let (k, n, m) = (300, 7, 5000);
        let idx: Vec<f32> = (0..m).map(|i| ((i * 37) % k) as f32).collect();
        let dy: Vec<f32> = (0..m * n).map(|i| (i as f32 * 0.01).sin()).collect();
        let mut a = vec![0f32; k * n];
        embed_backward_weights(&idx, &dy, &mut a, n);
        let mut b = vec![0f32; k * n];
        for i in 0..m {
            let r = idx[i] as usize;
            for j in 0..n {
                b[r * n + j] += dy[i * n + j];
            }
        }
        assert_eq!(a, b);
    }
}
