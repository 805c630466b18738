//! BLAS-like helpers over row-major slices.

use gemm::Parallelism;

/// Work below this many multiply-adds runs on one thread: spawning costs more than it saves.
const PARALLEL_THRESHOLD: usize = 1 << 18;

/// `C = alpha * op(A) * op(B) + beta * C`, row-major, like `cblas_sgemm(CblasRowMajor, ...)`.
/// `op(A)` is m x k, `op(B)` is k x n, C is m x n. With `beta == 0` C is not read (NaNs in it
/// do not propagate), as BLAS specifies.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    sgemm_impl(
        worth_threads(m, n, k),
        trans_a,
        trans_b,
        m,
        n,
        k,
        alpha,
        a,
        b,
        beta,
        c,
    )
}

/// Whether a product of this size is worth spreading over threads.
pub fn worth_threads(m: usize, n: usize, k: usize) -> bool {
    m * n * k >= PARALLEL_THRESHOLD
}

/// `sgemm` on the calling thread only: for callers that already run one product per rayon
/// task (per-image convolution), where nested parallelism would only add overhead. Gives the
/// same bits as `sgemm` (threads split rows and columns of C, never the k reduction).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_serial(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    sgemm_impl(false, trans_a, trans_b, m, n, k, alpha, a, b, beta, c)
}

#[allow(clippy::too_many_arguments)]
fn sgemm_impl(
    parallel: bool,
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    let lda = if trans_a { m } else { k };
    let ldb = if trans_b { k } else { n };
    #[rustfmt::skip]
    sgemm_ld(parallel, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, n);
}

/// Values a row-major matrix of `rows` rows of `cols` values takes with leading dimension `ld`.
fn extent(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    }
}

/// `sgemm` with explicit leading dimensions (the distance between rows of A, B and C as
/// stored, `>=` their row lengths), on threads when `parallel`. Same bits for either choice.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_ld(
    parallel: bool,
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let (a_rows, a_cols) = if trans_a { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if trans_b { (n, k) } else { (k, n) };
    assert!(
        lda >= a_cols && ldb >= b_cols && ldc >= n,
        "sgemm: leading dimension below the row length"
    );
    let (na, nb, nc) = (
        extent(a_rows, a_cols, lda),
        extent(b_rows, b_cols, ldb),
        extent(m, n, ldc),
    );
    assert!(a.len() >= na, "sgemm: A has {} values, needs {na}", a.len());
    assert!(b.len() >= nb, "sgemm: B has {} values, needs {nb}", b.len());
    assert!(c.len() >= nc, "sgemm: C has {} values, needs {nc}", c.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in c[..nc].chunks_mut(ldc) {
            let row = &mut row[..n];
            if beta == 0.0 {
                row.fill(0.0);
            } else {
                row.iter_mut().for_each(|v| *v *= beta);
            }
        }
        return;
    }
    // Strides (column stride, row stride) of op(A) and op(B) in their row-major storage.
    let (a_cs, a_rs) = if trans_a {
        (lda as isize, 1)
    } else {
        (1, lda as isize)
    };
    let (b_cs, b_rs) = if trans_b {
        (ldb as isize, 1)
    } else {
        (1, ldb as isize)
    };
    let par = if parallel {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // gemm computes dst = alpha_g * dst + beta_g * lhs * rhs.
    let read_dst = beta != 0.0;
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            read_dst,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            par,
        );
    }
}

/// `y = alpha * A x + beta * y` (or `A^T x` when `trans`), A is m x n row-major.
#[allow(clippy::too_many_arguments)]
pub fn sgemv(
    trans: bool,
    m: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    x: &[f32],
    beta: f32,
    y: &mut [f32],
) {
    if trans {
        sgemm(true, false, n, 1, m, alpha, a, x, beta, y);
    } else {
        sgemm(false, false, m, 1, n, alpha, a, x, beta, y);
    }
}

/// Dot product accumulated in f32 in index order (deterministic).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `y += alpha * x`.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `x *= alpha`.
pub fn scal(alpha: f32, x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v *= alpha);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(ta: bool, tb: bool, m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += av as f64 * bv as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn leading_dimensions_above_the_row_length() {
        // Every operand stored with 3 unused values after each row (NaN: never read).
        let (m, n, k, gap) = (5, 4, 6, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let pad = |v: &[f32], cols: usize| -> Vec<f32> {
            v.chunks(cols)
                .flat_map(|r| r.iter().copied().chain([f32::NAN; 3]))
                .collect()
        };
        for ta in [false, true] {
            for tb in [false, true] {
                let (a_cols, b_cols) = (if ta { m } else { k }, if tb { k } else { n });
                let mut want = vec![0.5f32; m * n];
                sgemm(ta, tb, m, n, k, 1.5, &a, &b, 2.0, &mut want);
                let mut c = pad(&vec![0.5f32; m * n], n);
                #[rustfmt::skip]
                sgemm_ld(false, ta, tb, m, n, k, 1.5, &pad(&a, a_cols), a_cols + gap,
                         &pad(&b, b_cols), b_cols + gap, 2.0, &mut c, n + gap);
                for (r, row) in c.chunks(n + gap).enumerate() {
                    assert_eq!(&row[..n], &want[r * n..(r + 1) * n], "{ta} {tb}");
                    assert!(row[n..].iter().all(|v| v.is_nan()), "gap written");
                }
            }
        }
    }

    #[test]
    fn sgemm_all_transposes_and_beta() {
        let (m, n, k) = (7, 5, 9);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        for ta in [false, true] {
            for tb in [false, true] {
                let want = naive(ta, tb, m, n, k, &a, &b);
                let mut c = vec![1f32; m * n];
                sgemm(ta, tb, m, n, k, 2.0, &a, &b, 0.5, &mut c);
                for (x, w) in c.iter().zip(&want) {
                    assert!((x - (2.0 * w + 0.5)).abs() < 1e-5, "{ta} {tb}");
                }
                let mut c = vec![f32::NAN; m * n];
                sgemm(ta, tb, m, n, k, 1.0, &a, &b, 0.0, &mut c);
                assert!(c.iter().all(|v| v.is_finite()));
            }
        }
    }
}
