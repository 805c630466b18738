//! Element-wise activations (Caffe's neuron layers), forward and backward.
//!
//! Every op is per element, so splitting the work across threads cannot change a result; the
//! chunks are fixed-size anyway. Where Caffe's C++ promotes to double (a `0.5` or `1.` literal in
//! the expression) the same promotion is done here so the rounding is Caffe's. `std::max` /
//! `std::min` are mirrored by [`cmax`] / [`cmin`] so NaNs travel the way they do in Caffe.

use rayon::prelude::*;

/// Below this many elements one thread does the work (spawning costs more than it saves).
pub const PAR_MIN: usize = 1 << 15;
/// Elements per parallel task.
pub const CHUNK: usize = 1 << 13;

/// The input and output of an element-wise op: two buffers, or one buffer read and then
/// overwritten element by element (an in-place layer, where top and bottom are one blob).
pub enum Io<'a> {
    Separate(&'a [f32], &'a mut [f32]),
    InPlace(&'a mut [f32]),
}

impl Io<'_> {
    pub fn len(&self) -> usize {
        match self {
            Io::Separate(_, y) => y.len(),
            Io::InPlace(y) => y.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `out[i] = f(in[i])`.
    pub fn map(self, f: impl Fn(f32) -> f32 + Sync) {
        self.drive(&[], &[], |x, y, _, _| match x {
            Some(x) => y.iter_mut().zip(x).for_each(|(o, &v)| *o = f(v)),
            None => y.iter_mut().for_each(|o| *o = f(*o)),
        });
    }

    /// `out[i] = f(in[i], a[i])`.
    pub fn map_with(self, a: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
        assert_eq!(
            a.len(),
            self.len(),
            "element-wise op: operand and output sizes differ"
        );
        self.drive(a, &[], |x, y, a, _| match x {
            Some(x) => y
                .iter_mut()
                .zip(x)
                .zip(a)
                .for_each(|((o, &v), &a)| *o = f(v, a)),
            None => y.iter_mut().zip(a).for_each(|(o, &a)| *o = f(*o, a)),
        });
    }

    /// `out[i] = f(in[i], a[i], b[i])`.
    pub fn map_with2(self, a: &[f32], b: &[f32], f: impl Fn(f32, f32, f32) -> f32 + Sync) {
        assert_eq!(
            a.len(),
            self.len(),
            "element-wise op: operand and output sizes differ"
        );
        assert_eq!(
            b.len(),
            self.len(),
            "element-wise op: operand and output sizes differ"
        );
        self.drive(a, b, |x, y, a, b| match x {
            Some(x) => y
                .iter_mut()
                .zip(x)
                .zip(a)
                .zip(b)
                .for_each(|(((o, &v), &a), &b)| *o = f(v, a, b)),
            None => y
                .iter_mut()
                .zip(a)
                .zip(b)
                .for_each(|((o, &a), &b)| *o = f(*o, a, b)),
        });
    }

    /// Splits the work into fixed chunks (in parallel when large) and runs
    /// `kernel(input or None when in place, output, a, b)` on each, with `a` and `b` cut to the
    /// chunk (empty operands stay empty).
    fn drive(
        self,
        a: &[f32],
        b: &[f32],
        kernel: impl Fn(Option<&[f32]>, &mut [f32], &[f32], &[f32]) + Sync,
    ) {
        let n = self.len();
        let run = |x: Option<&[f32]>, y: &mut [f32], start: usize| {
            kernel(x, y, part(a, start, y.len()), part(b, start, y.len()));
        };
        match self {
            Io::Separate(x, y) => {
                assert_eq!(
                    x.len(),
                    y.len(),
                    "element-wise op: input and output sizes differ"
                );
                if n >= PAR_MIN {
                    y.par_chunks_mut(CHUNK)
                        .zip(x.par_chunks(CHUNK))
                        .enumerate()
                        .for_each(|(c, (y, x))| run(Some(x), y, c * CHUNK));
                } else {
                    run(Some(x), y, 0);
                }
            }
            Io::InPlace(y) => {
                if n >= PAR_MIN {
                    y.par_chunks_mut(CHUNK)
                        .enumerate()
                        .for_each(|(c, y)| run(None, y, c * CHUNK));
                } else {
                    run(None, y, 0);
                }
            }
        }
    }
}

/// `s[start..start + n]`, or `s` itself when empty (an absent operand).
fn part(s: &[f32], start: usize, n: usize) -> &[f32] {
    if s.is_empty() {
        s
    } else {
        &s[start..start + n]
    }
}

/// `y[i] = f(i)` over a plain output.
pub fn fill_with(y: &mut [f32], f: impl Fn(usize) -> f32 + Sync) {
    if y.len() >= PAR_MIN {
        y.par_chunks_mut(CHUNK).enumerate().for_each(|(c, y)| {
            for (j, v) in y.iter_mut().enumerate() {
                *v = f(c * CHUNK + j);
            }
        });
    } else {
        for (i, v) in y.iter_mut().enumerate() {
            *v = f(i);
        }
    }
}

/// `std::max(a, b)`: `(a < b) ? b : a`.
#[inline]
pub fn cmax(a: f32, b: f32) -> f32 {
    if a < b {
        b
    } else {
        a
    }
}

/// `std::min(a, b)`: `(b < a) ? b : a`.
#[inline]
pub fn cmin(a: f32, b: f32) -> f32 {
    if b < a {
        b
    } else {
        a
    }
}

#[inline]
fn ind(c: bool) -> f32 {
    if c {
        1.0
    } else {
        0.0
    }
}

/// Caffe's sigmoid: `0.5 * tanh(0.5 * x) + 0.5`, evaluated in double.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    (0.5 * (0.5 * x as f64).tanh() + 0.5) as f32
}

// ---- ReLU ----

/// `max(x, 0) + slope * min(x, 0)`.
#[inline]
pub fn relu(x: f32, slope: f32) -> f32 {
    cmax(x, 0.0) + slope * cmin(x, 0.0)
}

/// `dy * ((x > 0) + slope * (x <= 0))`.
#[inline]
pub fn relu_grad(dy: f32, x: f32, slope: f32) -> f32 {
    dy * (ind(x > 0.0) + slope * ind(x <= 0.0))
}

/// `y = max(x, 0) + slope * min(x, 0)`.
pub fn relu_forward(io: Io, slope: f32) {
    io.map(|x| relu(x, slope));
}

/// `dx = dy * ((x > 0) + slope * (x <= 0))`; `x` is the bottom data.
pub fn relu_backward(d: Io, x: &[f32], slope: f32) {
    d.map_with(x, |dy, x| relu_grad(dy, x, slope));
}

// ---- ELU ----

/// `y = max(x, 0) + alpha * (exp(min(x, 0)) - 1)`.
pub fn elu_forward(io: Io, alpha: f32) {
    io.map(|x| cmax(x, 0.0) + alpha * (cmin(x, 0.0).exp() - 1.0));
}

/// `dx = dy * ((x > 0) + (alpha + y) * (x <= 0))`.
pub fn elu_backward(d: Io, x: &[f32], y: &[f32], alpha: f32) {
    d.map_with2(x, y, |dy, x, y| {
        dy * (ind(x > 0.0) + (alpha + y) * ind(x <= 0.0))
    });
}

// ---- Sigmoid ----

pub fn sigmoid_forward(io: Io) {
    io.map(sigmoid);
}

/// `dx = dy * y * (1 - y)` (the last factor in double, as in Caffe).
pub fn sigmoid_backward(d: Io, y: &[f32]) {
    d.map_with(y, |dy, y| ((dy * y) as f64 * (1.0 - y as f64)) as f32);
}

// ---- TanH ----

pub fn tanh_forward(io: Io) {
    io.map(f32::tanh);
}

/// `dx = dy * (1 - y^2)`.
pub fn tanh_backward(d: Io, y: &[f32]) {
    d.map_with(y, |dy, y| dy * (1.0 - y * y));
}

// ---- AbsVal ----

pub fn abs_forward(io: Io) {
    io.map(f32::abs);
}

/// `dx = dy * sign(x)` with sign(0) = 0.
pub fn abs_backward(d: Io, x: &[f32]) {
    d.map_with(x, |dy, x| dy * (ind(0.0 < x) - ind(x < 0.0)));
}

// ---- Power: y = (shift + scale * x)^power ----

/// Caffe's forward: when `power * scale == 0` the output ignores the input.
pub fn power_forward(io: Io, power: f32, scale: f32, shift: f32) {
    if power * scale == 0.0 {
        let v = if power == 0.0 { 1.0 } else { shift.powf(power) };
        io.map(|_| v);
        return;
    }
    io.map(|x| {
        let mut v = x;
        if scale != 1.0 {
            v *= scale;
        }
        if shift != 0.0 {
            v += shift;
        }
        if power != 1.0 {
            v = v.powf(power);
        }
        v
    });
}

/// Caffe's backward with its special cases: constant derivative when `power * scale == 0` or
/// `power == 1`; `2*scale*(shift + scale*x)` form for `power == 2`; `power * y / x` when
/// `shift == 0`; else `power*scale * y / (shift + scale*x)`. All times `dy`.
pub fn power_backward(d: Io, x: &[f32], y: &[f32], power: f32, scale: f32, shift: f32) {
    let diff_scale = power * scale;
    if diff_scale == 0.0 || power == 1.0 {
        d.map(|dy| dy * diff_scale);
    } else if power == 2.0 {
        let (a, b) = (diff_scale * scale, diff_scale * shift);
        d.map_with(x, |dy, x| {
            let mut g = a * x;
            if shift != 0.0 {
                g += b;
            }
            dy * g
        });
    } else if shift == 0.0 {
        d.map_with2(x, y, |dy, x, y| dy * ((y / x) * power));
    } else {
        d.map_with2(x, y, |dy, x, y| {
            let mut g = x;
            if scale != 1.0 {
                g *= scale;
            }
            g += shift;
            g = y / g;
            if diff_scale != 1.0 {
                g *= diff_scale;
            }
            dy * g
        });
    }
}

// ---- Exp: y = base^(shift + scale * x) = outer * exp(inner * x) ----

/// `(inner_scale, outer_scale)` as Caffe's ExpLayer computes them (base -1 means e).
pub fn exp_scales(base: f32, scale: f32, shift: f32) -> (f32, f32) {
    let log_base = if base == -1.0 { 1.0 } else { base.ln() };
    let inner = log_base * scale;
    let outer = if shift == 0.0 {
        1.0
    } else if base != -1.0 {
        base.powf(shift)
    } else {
        shift.exp()
    };
    (inner, outer)
}

pub fn exp_forward(io: Io, inner: f32, outer: f32) {
    io.map(|x| {
        let mut v = if inner == 1.0 {
            x.exp()
        } else {
            (inner * x).exp()
        };
        if outer != 1.0 {
            v *= outer;
        }
        v
    });
}

/// `dx = y * dy * inner`.
pub fn exp_backward(d: Io, y: &[f32], inner: f32) {
    d.map_with(y, |dy, y| {
        let g = y * dy;
        if inner != 1.0 {
            g * inner
        } else {
            g
        }
    });
}

// ---- Log: y = log_base(shift + scale * x) ----

/// `(base_scale, backward_num_scale)` = `(1 / ln(base), scale / ln(base))` (base -1 means e).
pub fn log_scales(base: f32, scale: f32) -> (f32, f32) {
    let log_base = if base == -1.0 { 1.0 } else { base.ln() };
    (1.0 / log_base, scale / log_base)
}

pub fn log_forward(io: Io, scale: f32, shift: f32, base_scale: f32) {
    io.map(|x| {
        let mut v = x;
        if scale != 1.0 {
            v *= scale;
        }
        if shift != 0.0 {
            v += shift;
        }
        v = v.ln();
        if base_scale != 1.0 {
            v *= base_scale;
        }
        v
    });
}

/// `dx = dy * num_scale * (shift + scale * x)^-1`.
pub fn log_backward(d: Io, x: &[f32], scale: f32, shift: f32, num_scale: f32) {
    d.map_with(x, |dy, x| {
        let mut g = x;
        if scale != 1.0 {
            g *= scale;
        }
        if shift != 0.0 {
            g += shift;
        }
        g = g.powf(-1.0);
        if num_scale != 1.0 {
            g *= num_scale;
        }
        dy * g
    });
}

// ---- BNLL: y = log(1 + exp(x)) ----

/// Caffe's threshold on the exponent in BNLL's backward.
const BNLL_THRESHOLD: f32 = 50.0;

pub fn bnll_forward(io: Io) {
    io.map(|x| {
        if x > 0.0 {
            (x as f64 + (1.0 + (-x).exp() as f64).ln()) as f32
        } else {
            (1.0 + x.exp() as f64).ln() as f32
        }
    });
}

/// `dx = dy * e / (e + 1)` with `e = exp(min(x, 50))`.
pub fn bnll_backward(d: Io, x: &[f32]) {
    d.map_with(x, |dy, x| {
        let e = cmin(x, BNLL_THRESHOLD).exp();
        ((dy * e) as f64 / (e as f64 + 1.0)) as f32
    });
}

// ---- Threshold ----

/// `y = (x > t) ? 1 : 0`.
pub fn threshold_forward(io: Io, t: f32) {
    io.map(|x| ind(x > t));
}

// ---- Clip ----

/// `y = max(min, min(x, max))` with `std::` semantics (NaN becomes `min`).
pub fn clip_forward(io: Io, lo: f32, hi: f32) {
    io.map(|x| cmax(lo, cmin(x, hi)));
}

/// `dx = dy * (lo <= x <= hi)`.
pub fn clip_backward(d: Io, x: &[f32], lo: f32, hi: f32) {
    d.map_with(x, |dy, x| dy * ind(x >= lo && x <= hi));
}

// ---- Swish: y = x * sigmoid(beta * x) ----

/// Writes `y` and the sigmoid `s` (kept for backward).
pub fn swish_forward(io: Io, s: &mut [f32], beta: f32) {
    // s first (from the input), then y = x * s: both passes read the input before it is
    // overwritten, since the second pass reads element i only to write element i.
    match io {
        Io::Separate(x, y) => {
            fill_with(s, |i| sigmoid(beta * x[i]));
            Io::Separate(x, y).map_with(s, |x, s| x * s);
        }
        Io::InPlace(y) => {
            {
                let y: &[f32] = y;
                fill_with(s, |i| sigmoid(beta * y[i]));
            }
            Io::InPlace(y).map_with(s, |x, s| x * s);
        }
    }
}

/// `dx = dy * (beta*y + s * (1 - beta*y))` (in double where Caffe's `1.` promotes).
pub fn swish_backward(d: Io, y: &[f32], s: &[f32], beta: f32) {
    d.map_with2(y, s, |dy, y, s| {
        let by = beta * y;
        (dy as f64 * (by as f64 + s as f64 * (1.0 - by as f64))) as f32
    });
}

// ---- Dropout ----

/// `y = x * mask * scale`.
pub fn dropout_forward(io: Io, mask: &[f32], scale: f32) {
    io.map_with(mask, |x, m| x * m * scale);
}

/// `dx = dy * mask * scale`.
pub fn dropout_backward(d: Io, mask: &[f32], scale: f32) {
    d.map_with(mask, |dy, m| dy * m * scale);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_place_and_separate_agree_across_chunks() {
        let n = PAR_MIN + 1234;
        let x: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.013).sin() * 3.0).collect();
        let mut y = vec![0f32; n];
        relu_forward(Io::Separate(&x, &mut y), 0.1);
        let mut z = x.clone();
        relu_forward(Io::InPlace(&mut z), 0.1);
        assert_eq!(y, z);
        assert_eq!(y[n - 1], cmax(x[n - 1], 0.0) + 0.1 * cmin(x[n - 1], 0.0));
        let mut s = vec![0f32; n];
        let mut w = x.clone();
        swish_forward(Io::InPlace(&mut w), &mut s, 1.5);
        let mut w2 = vec![0f32; n];
        let mut s2 = vec![0f32; n];
        swish_forward(Io::Separate(&x, &mut w2), &mut s2, 1.5);
        assert_eq!(w, w2);
        assert_eq!(s, s2);
        assert_eq!(s[7], sigmoid(1.5 * x[7]));
    }

    #[test]
    fn std_min_max_nan_rules() {
        let mut y = [f32::NAN];
        clip_forward(Io::InPlace(&mut y), -1.0, 2.0);
        assert_eq!(y[0], -1.0);
        let mut y = [f32::NAN];
        relu_forward(Io::InPlace(&mut y), 0.0);
        assert!(y[0].is_nan());
    }

    #[test]
    fn power_special_cases() {
        let x = [0.5f32, 2.0];
        let mut y = [0f32; 2];
        power_forward(Io::Separate(&x, &mut y), 0.0, 2.0, 3.0);
        assert_eq!(y, [1.0, 1.0]);
        power_forward(Io::Separate(&x, &mut y), 2.0, 0.0, 3.0);
        assert_eq!(y, [9.0, 9.0]);
        let dy = [1.0f32, 1.0];
        let mut dx = [0f32; 2];
        power_forward(Io::Separate(&x, &mut y), 2.0, 3.0, 1.0);
        power_backward(Io::Separate(&dy, &mut dx), &x, &y, 2.0, 3.0, 1.0);
        // d/dx (1 + 3x)^2 = 6 (1 + 3x)
        assert_eq!(dx, [15.0, 42.0]);
    }
}
