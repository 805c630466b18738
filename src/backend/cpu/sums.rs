//! Double-precision sums of float data in a fixed order that still vectorises: the values go
//! round-robin into `LANES` partial sums (value `i` of a run into lane `i % LANES`), and the
//! lanes are added in lane order at the end. One sequential double accumulator would be
//! latency-bound (one add per 3-4 cycles); independent lanes run at memory speed. The order
//! depends only on the lengths of the runs, never on threads.

use std::ops::Range;

use rayon::prelude::*;

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

/// How many blocks of images (more generally, of the outer index) a per-channel sum over a
/// batch is split into: each block's partial sums are made on one thread, then merged in
/// block order. Fixed by the batch alone, so the results do not depend on the thread count.
pub const IMAGE_BLOCKS: usize = 8;

/// The images of block `b` of a batch of `num`.
pub fn image_block(num: usize, b: usize) -> Range<usize> {
    let per = num.div_ceil(IMAGE_BLOCKS).max(1);
    (b * per).min(num)..((b + 1) * per).min(num)
}

/// Adding one partial sum into another: the sum of a block of images into the sums of the
/// blocks before it.
pub trait Merge {
    fn merge(&mut self, other: &Self);
}

impl Merge for Lanes {
    fn merge(&mut self, other: &Self) {
        for (a, &b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }
}

impl<A: Merge, B: Merge> Merge for (A, B) {
    fn merge(&mut self, other: &Self) {
        self.0.merge(&other.0);
        self.1.merge(&other.1);
    }
}

/// Per-channel sums over a batch of `num` images, block of images by block of images:
/// `add(images, c0, sums)` adds those images' values of channels `c0..c0 + sums.len()` to
/// `sums`, and the blocks' sums are merged in block order (`IMAGE_BLOCKS`). A thread works
/// through whole images rather than whole channels, the way the layers before and after
/// split a batch, so it reads what it wrote itself and the data stays in its cache instead of
/// crossing to another core's. The channels are split too when there are fewer blocks than
/// threads; that changes which thread adds what, never the order of the sums.
pub fn block_sums<S, F>(num: usize, channels: usize, parallel: bool, add: F) -> Vec<S>
where
    S: Default + Clone + Send + Merge,
    F: Fn(Range<usize>, usize, &mut [S]) + Sync,
{
    let mut parts = vec![S::default(); IMAGE_BLOCKS * channels];
    if channels == 0 {
        return parts;
    }
    if parallel {
        let blocks = num.min(IMAGE_BLOCKS);
        let split = rayon::current_num_threads().div_ceil(blocks).min(channels);
        let chunk = channels.div_ceil(split.max(1));
        parts
            .par_chunks_mut(channels)
            .enumerate()
            .for_each(|(b, row)| {
                if split > 1 {
                    row.par_chunks_mut(chunk)
                        .enumerate()
                        .for_each(|(k, out)| add(image_block(num, b), k * chunk, out));
                } else {
                    add(image_block(num, b), 0, row);
                }
            });
    } else {
        for (b, row) in parts.chunks_mut(channels).enumerate() {
            add(image_block(num, b), 0, row);
        }
    }
    let (total, rest) = parts.split_at_mut(channels);
    for block in rest.chunks(channels) {
        for (t, s) in total.iter_mut().zip(block) {
            t.merge(s);
        }
    }
    parts.truncate(channels);
    parts
}

/// For data viewed as (outer, dim, inner): per position `d` of `dim`, the totals of `a` and of
/// `a * b` over (outer, inner), `(sum a, sum a*b)`, made as `block_sums` makes them (blocks of
/// the outer index). Each row's two sums are taken together, so the second reads a row the
/// first just brought into cache.
pub fn sum_and_dot(
    a: &[f32],
    b: &[f32],
    outer: usize,
    dim: usize,
    inner: usize,
    parallel: bool,
) -> Vec<(f64, f64)> {
    let row = |o: usize, d: usize| (o * dim + d) * inner..(o * dim + d + 1) * inner;
    let sums = block_sums(
        outer,
        dim,
        parallel,
        |rows, d0, out: &mut [(Lanes, Lanes)]| {
            for o in rows {
                for (j, (sum, dot)) in out.iter_mut().enumerate() {
                    let r = row(o, d0 + j);
                    sum.add(&a[r.clone()]);
                    dot.add_dot(&a[r.clone()], &b[r]);
                }
            }
        },
    );
    sums.iter().map(|(s, d)| (s.total(), d.total())).collect()
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

    /// Blocks of images are summed on their own, then merged in block order: values chosen so
    /// that one run over all images, or the blocks merged in another order, give other totals
    /// (a one in the same lane as +-2^60 is absorbed or not depending on the order).
    #[test]
    fn block_sums_merge_in_block_order() {
        let big = 2f32.powi(60);
        let num = 2 * IMAGE_BLOCKS;
        // One value per image and channel (spatial 1: lane 0 only).
        let mut x = vec![[0f32; 2]; num];
        x[0][0] = 1.0;
        x[2][0] = big;
        x[3][0] = -big;
        x[0][1] = big;
        x[2][1] = 1.0;
        x[num - 2][1] = -big;
        let block = |b: usize, c: usize| {
            let mut l = Lanes::default();
            for n in image_block(num, b) {
                l.add(&[x[n][c]]);
            }
            l
        };
        let model = |c: usize, order: &[usize]| {
            let mut t = block(order[0], c);
            for &b in &order[1..] {
                t.merge(&block(b, c));
            }
            t.total()
        };
        let forward: Vec<usize> = (0..IMAGE_BLOCKS).collect();
        let mut reversed = vec![0];
        reversed.extend((1..IMAGE_BLOCKS).rev());
        let one_run = |c: usize| {
            let mut l = Lanes::default();
            for v in &x {
                l.add(&[v[c]]);
            }
            l.total()
        };
        assert_ne!(
            model(0, &forward),
            one_run(0),
            "the data do not tell blocks from one run"
        );
        assert_ne!(
            model(1, &forward),
            model(1, &reversed),
            "the data do not show the order"
        );
        for (threads, parallel) in [(1, false), (2, true), (3, true)] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool.install(|| {
                block_sums(num, 2, parallel, |images, c0, out: &mut [Lanes]| {
                    for n in images {
                        for (j, s) in out.iter_mut().enumerate() {
                            s.add(&[x[n][c0 + j]]);
                        }
                    }
                })
            });
            for (c, g) in got.iter().enumerate() {
                assert_eq!(
                    g.total(),
                    model(c, &forward),
                    "channel {c}, {threads} threads"
                );
            }
        }
    }
}
