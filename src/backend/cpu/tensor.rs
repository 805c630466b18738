//! Data movement along axes: Concat/Slice (copy a block in or out at an axis offset), Tile
//! (repeat along an axis; backward sums the copies in tile order) and Crop (an N-D window).
//! Work is split by output rows, so every output element is written by one thread in a fixed
//! order: results do not depend on the thread count.

use rayon::prelude::*;

use super::activation::PAR_MIN;

/// Runs `f(row_index, row)` over consecutive rows of `row_len` values of `y`, in parallel when
/// `y` is large.
fn rows(y: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if row_len == 0 {
        return;
    }
    if y.len() >= PAR_MIN && y.len() / row_len > 1 {
        y.par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    } else {
        y.chunks_mut(row_len)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    }
}

/// Writes `src`, shaped (outer, src_axis, inner), into `dst`, shaped (outer, dst_axis, inner),
/// at positions [offset, offset + src_axis) of the axis (Concat forward, Slice backward).
pub fn axis_insert(
    src: &[f32],
    dst: &mut [f32],
    outer: usize,
    src_axis: usize,
    dst_axis: usize,
    offset: usize,
    inner: usize,
) {
    let (s_row, d_row) = (src_axis * inner, dst_axis * inner);
    assert!(
        offset + src_axis <= dst_axis,
        "axis_insert: block does not fit"
    );
    assert!(
        src.len() >= outer * s_row && dst.len() >= outer * d_row,
        "axis_insert: buffers too small"
    );
    rows(&mut dst[..outer * d_row], d_row, |o, row| {
        row[offset * inner..offset * inner + s_row]
            .copy_from_slice(&src[o * s_row..(o + 1) * s_row]);
    });
}

/// Reads positions [offset, offset + dst_axis) of the axis of `src`, shaped
/// (outer, src_axis, inner), into `dst`, shaped (outer, dst_axis, inner) (Slice forward,
/// Concat backward).
pub fn axis_extract(
    src: &[f32],
    dst: &mut [f32],
    outer: usize,
    src_axis: usize,
    offset: usize,
    dst_axis: usize,
    inner: usize,
) {
    let (s_row, d_row) = (src_axis * inner, dst_axis * inner);
    assert!(
        offset + dst_axis <= src_axis,
        "axis_extract: block does not fit"
    );
    assert!(
        src.len() >= outer * s_row && dst.len() >= outer * d_row,
        "axis_extract: buffers too small"
    );
    rows(&mut dst[..outer * d_row], d_row, |o, row| {
        let s = o * s_row + offset * inner;
        row.copy_from_slice(&src[s..s + d_row]);
    });
}

/// `y` (outer, tiles * inner) holds `tiles` copies of each row of `x` (outer, inner).
pub fn tile_forward(x: &[f32], y: &mut [f32], outer: usize, inner: usize, tiles: usize) {
    rows(&mut y[..outer * inner * tiles], inner * tiles, |o, row| {
        let src = &x[o * inner..(o + 1) * inner];
        for t in 0..tiles {
            row[t * inner..(t + 1) * inner].copy_from_slice(src);
        }
    });
}

/// `dx[o] = dy[o, 0] + dy[o, 1] + ...`, summed in tile order.
pub fn tile_backward(dy: &[f32], dx: &mut [f32], outer: usize, inner: usize, tiles: usize) {
    rows(&mut dx[..outer * inner], inner, |o, row| {
        let base = o * inner * tiles;
        row.copy_from_slice(&dy[base..base + inner]);
        for t in 1..tiles {
            let s = base + t * inner;
            for (d, g) in row.iter_mut().zip(&dy[s..s + inner]) {
                *d += g;
            }
        }
    });
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// `y` = the window of `x` starting at `offsets` with `y_shape` (same number of axes, at least
/// one; the window must fit).
pub fn crop_forward(
    x: &[f32],
    x_shape: &[usize],
    y: &mut [f32],
    y_shape: &[usize],
    offsets: &[usize],
) {
    let nd = y_shape.len();
    assert!(
        nd >= 1 && x_shape.len() == nd && offsets.len() == nd,
        "crop: axis counts differ"
    );
    let xs = strides(x_shape);
    let last = y_shape[nd - 1];
    let outer_dims = &y_shape[..nd - 1];
    rows(y, last, |r, row| {
        let mut rem = r;
        let mut src = offsets[nd - 1];
        for d in (0..nd - 1).rev() {
            let i = rem % outer_dims[d];
            rem /= outer_dims[d];
            src += (i + offsets[d]) * xs[d];
        }
        row.copy_from_slice(&x[src..src + last]);
    });
}

/// Crop's backward: `dx` is zero outside the window and `dy` inside.
pub fn crop_backward(
    dy: &[f32],
    y_shape: &[usize],
    dx: &mut [f32],
    x_shape: &[usize],
    offsets: &[usize],
) {
    let nd = x_shape.len();
    assert!(
        nd >= 1 && y_shape.len() == nd && offsets.len() == nd,
        "crop: axis counts differ"
    );
    let ys = strides(y_shape);
    let (xlast, ylast, olast) = (x_shape[nd - 1], y_shape[nd - 1], offsets[nd - 1]);
    rows(dx, xlast, |r, row| {
        let mut rem = r;
        let mut src = 0usize;
        let mut inside = true;
        for d in (0..nd - 1).rev() {
            let i = rem % x_shape[d];
            rem /= x_shape[d];
            if i < offsets[d] || i >= offsets[d] + y_shape[d] {
                inside = false;
                break;
            }
            src += (i - offsets[d]) * ys[d];
        }
        row.fill(0.0);
        if inside && ylast > 0 {
            row[olast..olast + ylast].copy_from_slice(&dy[src..src + ylast]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_slice_round_trip() {
        // a: (2, 1, 3), b: (2, 2, 3) -> (2, 3, 3)
        let a: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let b: Vec<f32> = (0..12).map(|v| 100.0 + v as f32).collect();
        let mut y = vec![0f32; 18];
        axis_insert(&a, &mut y, 2, 1, 3, 0, 3);
        axis_insert(&b, &mut y, 2, 2, 3, 1, 3);
        assert_eq!(&y[0..9], &[0., 1., 2., 100., 101., 102., 103., 104., 105.]);
        let mut b2 = vec![0f32; 12];
        axis_extract(&y, &mut b2, 2, 3, 1, 2, 3);
        assert_eq!(b, b2);
    }

    #[test]
    fn crop_window_and_gradient() {
        // x: 1 x 3 x 4, window 1 x 2 x 2 at (0, 1, 2)
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut y = vec![0f32; 4];
        crop_forward(&x, &[1, 3, 4], &mut y, &[1, 2, 2], &[0, 1, 2]);
        assert_eq!(y, [6., 7., 10., 11.]);
        let mut dx = vec![9f32; 12];
        crop_backward(
            &[1., 2., 3., 4.],
            &[1, 2, 2],
            &mut dx,
            &[1, 3, 4],
            &[0, 1, 2],
        );
        assert_eq!(dx, [0., 0., 0., 0., 0., 0., 1., 2., 0., 0., 3., 4.]);
    }

    #[test]
    fn tile_sums_copies() {
        let x = [1f32, 2., 3., 4.];
        let mut y = vec![0f32; 12];
        tile_forward(&x, &mut y, 2, 2, 3);
        assert_eq!(&y[..6], &[1., 2., 1., 2., 1., 2.]);
        let mut dx = vec![0f32; 4];
        tile_backward(&y, &mut dx, 2, 2, 3);
        assert_eq!(dx, [3., 6., 9., 12.]);
    }
}
