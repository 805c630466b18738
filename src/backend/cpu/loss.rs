//! Losses and classification read-outs: softmax cross-entropy (over a probability array laid
//! out `outer × classes × inner`), sigmoid cross-entropy, Euclidean, accuracy and arg-max,
//! with Caffe's order of operations (`softmax_loss_layer.cpp`,
//! `sigmoid_cross_entropy_loss_layer.cpp`, `euclidean_loss_layer.cpp`, `accuracy_layer.cpp`,
//! `argmax_layer.cpp`).
//!
//! Labels are floats read the way Caffe reads them, `static_cast<int>` (truncation toward
//! zero). Loss sums run serially in f32 in Caffe's order, so they reproduce Caffe's rounding;
//! element-wise work and independent rows use threads.

use std::cmp::Ordering;

use rayon::prelude::*;

/// Elements below which threads cost more than they save.
const PARALLEL_WORK: usize = 1 << 15;
/// Fixed chunk for element-wise work and partial sums: independent of the thread count.
const CHUNK: usize = 1 << 13;

/// A float label as Caffe's `static_cast<int>` reads it; `None` where that cast is undefined
/// (NaN, infinities, values outside the int range).
#[inline]
pub fn label_value(v: f32) -> Option<i32> {
    let t = v.trunc();
    if t.is_finite() && t >= i32::MIN as f32 && t < 2147483648.0 {
        Some(t as i32)
    } else {
        None
    }
}

/// The first label that is neither `ignore` nor a class index in `[0, classes)`: its position
/// and raw value.
pub fn find_bad_label(labels: &[f32], classes: usize, ignore: Option<i32>) -> Option<(usize, f32)> {
    labels
        .iter()
        .enumerate()
        .find_map(|(i, &v)| match label_value(v) {
            Some(l) if ignore == Some(l) => None,
            Some(l) if l >= 0 && (l as usize) < classes => None,
            _ => Some((i, v)),
        })
}

#[inline]
fn ignored(v: f32, ignore: Option<i32>) -> bool {
    ignore.is_some() && label_value(v) == ignore
}

/// Softmax cross-entropy: `(−Σ log(max(p[label], FLT_MIN)), number of non-ignored labels)`
/// over the `outer × inner` labels. Labels must have been checked (`find_bad_label`).
pub fn softmax_loss_forward(
    prob: &[f32],
    labels: &[f32],
    outer: usize,
    classes: usize,
    inner: usize,
    ignore: Option<i32>,
) -> (f32, usize) {
    assert_eq!(
        prob.len(),
        outer * classes * inner,
        "softmax loss: probabilities do not match the dims"
    );
    assert_eq!(
        labels.len(),
        outer * inner,
        "softmax loss: label count does not match the dims"
    );
    let dim = classes * inner;
    let mut loss = 0f32;
    let mut count = 0usize;
    for i in 0..outer {
        for j in 0..inner {
            let v = labels[i * inner + j];
            if ignored(v, ignore) {
                continue;
            }
            let l = label_value(v).expect("labels are checked before the loss") as usize;
            // std::max(p, FLT_MIN) as Caffe writes it: a NaN probability stays NaN (Rust's
            // f32::max would hide it and training would go on with garbage).
            let p = prob[i * dim + l * inner + j];
            loss -= if p < f32::MIN_POSITIVE {
                f32::MIN_POSITIVE
            } else {
                p
            }
            .ln();
            count += 1;
        }
    }
    (loss, count)
}

/// Unscaled softmax cross-entropy gradient: `dx = p − onehot(label)`, zero over all classes
/// where the label is ignored. Returns the number of non-ignored labels.
pub fn softmax_loss_backward(
    prob: &[f32],
    labels: &[f32],
    dx: &mut [f32],
    outer: usize,
    classes: usize,
    inner: usize,
    ignore: Option<i32>,
) -> usize {
    assert_eq!(
        prob.len(),
        outer * classes * inner,
        "softmax loss: probabilities do not match the dims"
    );
    assert_eq!(
        dx.len(),
        prob.len(),
        "softmax loss: gradient does not match the probabilities"
    );
    assert_eq!(
        labels.len(),
        outer * inner,
        "softmax loss: label count does not match the dims"
    );
    let dim = classes * inner;
    if dim == 0 {
        return 0;
    }
    let block = |(i, (d, p)): (usize, (&mut [f32], &[f32]))| -> usize {
        d.copy_from_slice(p);
        let mut count = 0;
        for j in 0..inner {
            let v = labels[i * inner + j];
            if ignored(v, ignore) {
                for c in 0..classes {
                    d[c * inner + j] = 0.0;
                }
            } else {
                let l = label_value(v).expect("labels are checked before the loss") as usize;
                d[l * inner + j] -= 1.0;
                count += 1;
            }
        }
        count
    };
    if prob.len() >= PARALLEL_WORK && outer > 1 {
        dx.par_chunks_mut(dim)
            .zip(prob.par_chunks(dim))
            .enumerate()
            .map(block)
            .sum()
    } else {
        dx.chunks_mut(dim)
            .zip(prob.chunks(dim))
            .enumerate()
            .map(block)
            .sum()
    }
}

/// `x *= alpha` (Caffe's `caffe_scal`).
pub fn scale(x: &mut [f32], alpha: f32) {
    let f = |c: &mut [f32]| c.iter_mut().for_each(|v| *v *= alpha);
    if x.len() >= PARALLEL_WORK {
        x.par_chunks_mut(CHUNK).for_each(f);
    } else {
        f(x);
    }
}

/// `y = alpha * x` (Caffe's `caffe_cpu_axpby` with beta 0).
pub fn scaled_copy(x: &[f32], alpha: f32, y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "scaled_copy: lengths differ");
    let f = |(y, x): (&mut [f32], &[f32])| y.iter_mut().zip(x).for_each(|(y, &x)| *y = alpha * x);
    if x.len() >= PARALLEL_WORK {
        y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(f);
    } else {
        f((y, x));
    }
}

/// Caffe's sigmoid, `0.5·tanh(0.5·x) + 0.5` (stable at both ends).
pub fn sigmoid_forward(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "sigmoid: lengths differ");
    let f = |(y, x): (&mut [f32], &[f32])| {
        y.iter_mut()
            .zip(x)
            .for_each(|(y, &x)| *y = 0.5 * (0.5 * x).tanh() + 0.5)
    };
    if x.len() >= PARALLEL_WORK {
        y.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(f);
    } else {
        f((y, x));
    }
}

/// Sigmoid cross-entropy from logits `x` and targets `t`, in Caffe's stable form
/// `−Σ [x·(t − [x ≥ 0]) − log(1 + exp(x − 2·x·[x ≥ 0]))]`, skipping targets equal to
/// `ignore`. Returns (summed loss, number of non-ignored targets).
pub fn sigmoid_cross_entropy_forward(x: &[f32], t: &[f32], ignore: Option<i32>) -> (f32, usize) {
    assert_eq!(
        x.len(),
        t.len(),
        "sigmoid cross-entropy: input and target counts differ"
    );
    let mut loss = 0f32;
    let mut count = 0usize;
    for (&x, &t) in x.iter().zip(t) {
        if ignored(t, ignore) {
            continue;
        }
        let pos = if x >= 0.0 { 1f32 } else { 0f32 };
        loss -= x * (t - pos) - (1.0 + (x - 2.0 * x * pos).exp()).ln();
        count += 1;
    }
    (loss, count)
}

/// Unscaled sigmoid cross-entropy gradient `dx = sigmoid(x) − t`, zero where `t` is ignored.
pub fn sigmoid_cross_entropy_backward(sig: &[f32], t: &[f32], dx: &mut [f32], ignore: Option<i32>) {
    assert_eq!(
        sig.len(),
        t.len(),
        "sigmoid cross-entropy: input and target counts differ"
    );
    assert_eq!(
        sig.len(),
        dx.len(),
        "sigmoid cross-entropy: gradient count differs"
    );
    let f = |((d, s), t): ((&mut [f32], &[f32]), &[f32])| {
        for ((d, &s), &t) in d.iter_mut().zip(s).zip(t) {
            *d = if ignored(t, ignore) { 0.0 } else { s - t };
        }
    };
    if sig.len() >= PARALLEL_WORK {
        dx.par_chunks_mut(CHUNK)
            .zip(sig.par_chunks(CHUNK))
            .zip(t.par_chunks(CHUNK))
            .for_each(f);
    } else {
        f(((dx, sig), t));
    }
}

/// `diff = a − b`; returns `Σ diff²`, accumulated in f64 over fixed chunks (so the result is
/// the same whatever the thread count, and at least as accurate as BLAS's sdot).
pub fn euclidean_forward(a: &[f32], b: &[f32], diff: &mut [f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "euclidean: input counts differ");
    assert_eq!(a.len(), diff.len(), "euclidean: diff count differs");
    let f = |((d, a), b): ((&mut [f32], &[f32]), &[f32])| -> f64 {
        let mut s = 0f64;
        for ((d, &a), &b) in d.iter_mut().zip(a).zip(b) {
            *d = a - b;
            s += (*d as f64) * (*d as f64);
        }
        s
    };
    let partials: Vec<f64> = if a.len() >= PARALLEL_WORK {
        diff.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .map(f)
            .collect()
    } else {
        diff.chunks_mut(CHUNK)
            .zip(a.chunks(CHUNK))
            .zip(b.chunks(CHUNK))
            .map(f)
            .collect()
    };
    partials.iter().sum::<f64>() as f32
}

/// Top-k accuracy over `outer × classes × inner` scores and `outer × inner` labels (checked
/// beforehand). A label counts as correct when fewer than `top_k` other classes score at
/// least as high as it (ties count against it, as in Caffe). Returns (number correct, number
/// of non-ignored labels); `per_class`, when given (length `classes`), receives each class's
/// accuracy (0 for classes without samples).
#[allow(clippy::too_many_arguments)]
pub fn accuracy_forward(
    scores: &[f32],
    labels: &[f32],
    outer: usize,
    classes: usize,
    inner: usize,
    top_k: usize,
    ignore: Option<i32>,
    per_class: Option<&mut [f32]>,
) -> (f32, usize) {
    assert_eq!(
        scores.len(),
        outer * classes * inner,
        "accuracy: scores do not match the dims"
    );
    assert_eq!(
        labels.len(),
        outer * inner,
        "accuracy: label count does not match the dims"
    );
    let dim = classes * inner;
    let mut correct = 0f32;
    let mut count = 0usize;
    let mut class_correct = vec![0f32; classes];
    let mut class_count = vec![0usize; classes];
    for i in 0..outer {
        for j in 0..inner {
            let v = labels[i * inner + j];
            if ignored(v, ignore) {
                continue;
            }
            let l = label_value(v).expect("labels are checked before accuracy") as usize;
            class_count[l] += 1;
            let truth = scores[i * dim + l * inner + j];
            // The true class itself is counted, hence the start at -1.
            let mut better = -1i64;
            let mut k = 0;
            while k < classes && better < top_k as i64 {
                if scores[i * dim + k * inner + j] >= truth {
                    better += 1;
                }
                k += 1;
            }
            if better < top_k as i64 {
                correct += 1.0;
                class_correct[l] += 1.0;
            }
            count += 1;
        }
    }
    if let Some(pc) = per_class {
        assert_eq!(pc.len(), classes, "accuracy: per-class output length");
        for ((o, &c), &n) in pc.iter_mut().zip(&class_correct).zip(&class_count) {
            *o = if n == 0 { 0.0 } else { c / n as f32 };
        }
    }
    (correct, count)
}

/// Caffe's ArgMax order, `std::greater` on (value, index) pairs: higher values first, and
/// among equal values the higher index first. NaN sorts above every number so the order is
/// total.
#[inline]
fn argmax_order(a: (f32, usize), b: (f32, usize)) -> Ordering {
    let by_value = match (a.0.is_nan(), b.0.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal),
    };
    // Descending: the greater pair comes first.
    by_value.then(a.1.cmp(&b.1)).reverse()
}

fn top_k_of_row(row: &mut Vec<(f32, usize)>, out: &mut [(f32, usize)]) {
    let k = out.len();
    if k == 1 {
        let mut best = row[0];
        for &c in &row[1..] {
            if argmax_order(c, best) == Ordering::Less {
                best = c;
            }
        }
        out[0] = best;
        return;
    }
    if k < row.len() {
        row.select_nth_unstable_by(k - 1, |a, b| argmax_order(*a, *b));
        row.truncate(k);
    }
    row.sort_unstable_by(|a, b| argmax_order(*a, *b));
    out.copy_from_slice(&row[..k]);
}

/// Caffe's ArgMax. Each of the `x.len() / dim` rows holds `dim` values `axis_dist` apart
/// (`axis_dist` = 1 when no axis is given and the row is all of one item). With `has_axis`
/// the top replaces the axis by `top_k` entries: indices, or values when `out_max_val`.
/// Without it the top is `N × 1 × top_k` indices, or `N × 2 × top_k` (indices then values)
/// when `out_max_val`.
pub fn argmax_forward(
    x: &[f32],
    y: &mut [f32],
    dim: usize,
    axis_dist: usize,
    top_k: usize,
    out_max_val: bool,
    has_axis: bool,
) {
    assert!(
        dim > 0 && axis_dist > 0 && top_k >= 1 && top_k <= dim,
        "argmax: bad dims"
    );
    assert_eq!(
        x.len() % (dim * axis_dist),
        0,
        "argmax: input length does not match the dims"
    );
    let num = x.len() / dim;
    let per_row = if out_max_val && !has_axis {
        2 * top_k
    } else {
        top_k
    };
    assert_eq!(
        y.len(),
        num * per_row,
        "argmax: output length does not match the dims"
    );
    let at = |i: usize, j: usize| (i / axis_dist * dim + j) * axis_dist + i % axis_dist;
    let mut best = vec![(0f32, 0usize); num * top_k];
    let run = |(i, out): (usize, &mut [(f32, usize)])| {
        let mut row: Vec<(f32, usize)> = (0..dim).map(|j| (x[at(i, j)], j)).collect();
        top_k_of_row(&mut row, out);
    };
    if x.len() >= PARALLEL_WORK && num > 1 {
        best.par_chunks_mut(top_k).enumerate().for_each(run);
    } else {
        best.chunks_mut(top_k).enumerate().for_each(run);
    }
    for i in 0..num {
        for j in 0..top_k {
            let (v, idx) = best[i * top_k + j];
            let pos = (i / axis_dist * top_k + j) * axis_dist + i % axis_dist;
            if out_max_val {
                if has_axis {
                    y[pos] = v;
                } else {
                    y[2 * i * top_k + j] = idx as f32;
                    y[2 * i * top_k + top_k + j] = v;
                }
            } else {
                y[pos] = idx as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_truncate_like_static_cast() {
        assert_eq!(label_value(2.7), Some(2));
        assert_eq!(label_value(-0.5), Some(0));
        assert_eq!(label_value(-1.5), Some(-1));
        assert_eq!(label_value(f32::NAN), None);
        assert_eq!(label_value(3e9), None);
        assert_eq!(
            find_bad_label(&[0., 2.9, 255., 3.], 3, Some(255)),
            Some((3, 3.))
        );
        assert_eq!(find_bad_label(&[0., 2.9, -1.], 3, None), Some((2, -1.)));
    }

    #[test]
    fn argmax_ties_prefer_the_higher_index() {
        // One row of 5 values; ties between indices 1 and 3 (value 5) and 0 and 4 (value 1).
        let x = vec![1., 5., 2., 5., 1.];
        let mut y = vec![0f32; 1];
        argmax_forward(&x, &mut y, 5, 1, 1, false, false);
        assert_eq!(y, vec![3.]);
        let mut y = vec![0f32; 10];
        argmax_forward(&x, &mut y, 5, 1, 5, true, false);
        assert_eq!(y, vec![3., 1., 2., 4., 0., 5., 5., 2., 1., 1.]);
        // Axis 1 of a 2x3x2 blob: rows are strided by 2.
        let x = vec![0., 9., 3., 1., 2., 4., 7., 7., 7., 8., 6., 5.];
        let mut y = vec![0f32; 4];
        argmax_forward(&x, &mut y, 3, 2, 1, false, true);
        assert_eq!(y, vec![1., 0., 1., 1.]);
        argmax_forward(&x, &mut y, 3, 2, 1, true, true);
        assert_eq!(y, vec![3., 9., 7., 8.]);
    }

    #[test]
    fn accuracy_ties_count_against() {
        // Two samples, 3 classes: sample 0 ties its true class with another (wrong at top-1),
        // sample 1 is right.
        let s = vec![0.5, 0.5, 0.1, 0.2, 0.9, 0.3];
        let l = vec![0., 1.];
        let mut pc = vec![0f32; 3];
        let (c, n) = accuracy_forward(&s, &l, 2, 3, 1, 1, None, Some(&mut pc));
        assert_eq!((c, n), (1.0, 2));
        assert_eq!(pc, vec![0., 1., 0.]);
        let (c, _) = accuracy_forward(&s, &l, 2, 3, 1, 2, None, None);
        assert_eq!(c, 2.0);
    }
}
