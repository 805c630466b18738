//! Double-precision sums of float data in a fixed order that still vectorises: the values go
//! round-robin into `LANES` partial sums (value `i` of a run into lane `i % LANES`), and the
//! lanes are added in lane order at the end. One sequential double accumulator would be
//! latency-bound (one add per 3-4 cycles); independent lanes run at memory speed. The order
//! depends only on the lengths of the runs, never on threads.

/// Partial sums (enough independent chains to hide the add latency with 2-wide SSE2 or
/// 4-wide AVX registers).
pub const LANES: usize = 16;

/// A sum in progress over one or more runs of values.
#[derive(Clone, Copy)]
pub struct Lanes([f64; LANES]);

impl Default for Lanes {
    fn default() -> Self {
        Lanes([0.0; LANES])
    }
}

impl Lanes {
    /// Adds `f(a[i], b[i])` for every `i` of the run (`b` is as long as `a` or longer).
    #[inline(always)]
    pub fn add_map2(&mut self, a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f64) {
        let b = &b[..a.len()];
        let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let (ar, br) = (ac.remainder(), bc.remainder());
        // A local copy indexed by constants only stays in registers; the remainder's
        // run-time lane index would keep the lanes in memory for the whole loop.
        let mut acc = self.0;
        for (x, y) in ac.zip(bc) {
            for i in 0..LANES {
                acc[i] += f(x[i], y[i]);
            }
        }
        self.0 = acc;
        for (i, (&x, &y)) in ar.iter().zip(br).enumerate() {
            self.0[i] += f(x, y);
        }
    }

    /// Adds `f(a[i])` for every value of the run.
    #[inline(always)]
    pub fn add_map(&mut self, a: &[f32], f: impl Fn(f32) -> f64) {
        self.add_map2(a, a, |x, _| f(x));
    }

    /// Adds the values of the run.
    #[inline(always)]
    pub fn add(&mut self, a: &[f32]) {
        self.add_map(a, |x| x as f64);
    }

    /// Adds `a[i] * b[i]` (products in double).
    #[inline(always)]
    pub fn add_dot(&mut self, a: &[f32], b: &[f32]) {
        self.add_map2(a, b, |x, y| x as f64 * y as f64);
    }

    /// The total: the lanes added in order.
    #[inline(always)]
    pub fn total(&self) -> f64 {
        let mut s = 0.0;
        for &l in &self.0 {
            s += l;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_sums_match_exact_sums() {
        // Integers are exact in double whatever the order, so the lanes must give the exact
        // totals, over runs of lengths that leave remainders.
        let a: Vec<f32> = (0..1000).map(|i| (i % 37) as f32 - 11.0).collect();
        let b: Vec<f32> = (0..1000).map(|i| (i % 5) as f32).collect();
        let mut s = Lanes::default();
        let mut d = Lanes::default();
        for (ra, rb) in a.chunks(99).zip(b.chunks(99)) {
            s.add(ra);
            d.add_dot(ra, rb);
        }
        let want: f64 = a.iter().map(|&x| x as f64).sum();
        let want_dot: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
        assert_eq!(s.total(), want);
        assert_eq!(d.total(), want_dot);
    }
}
