//! Weight-gradient tiles whose vectors run over output channels: `V` vectors of 8 output
//! channels x up to `T` taps (whole kernel rows of one input channel, or part of a row),
//! accumulated position by position (`dy` of the position's `8 V` channels, times each tap's
//! input broadcast). A position runs only the taps that read the image: the visit's
//! positions come in runs of one column class and of rows where the same kernel rows read
//! the image, each run with the mask of the tile's taps it needs. The row-vector tiles
//! (`WgradTile`) cannot leave out a kernel column (a vector of 8 outputs along a row reads
//! real input in some lanes for every one), which on CIFAR-10's 8x8 layers is 15% of the
//! products.
//!
//! The order of every sum is fixed by the shapes: per chunk of images (`conv::
//! weight_grad_chunks`), visit by visit (`Visit`), column class by column class, then row,
//! image and column (`weight_grad_channels_model` in the tests spells it out). It is not the
//! row tiles' order, so the two give other rounding; each is independent of the thread
//! count. Needs AVX-512VL: up to 24 accumulators.

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::ops::Range;

use super::super::conv::{with_prepared, ConvGeom};
use super::super::scratch;
use super::{Plan, LANES};

/// Output positions per visit: their packed dy (128 bytes each with 4 vectors, 16 KiB) stays
/// in L1 while every tile runs over them.
const POSITIONS_PER_VISIT: usize = 128;

/// The most taps a tile holds with `vectors` vectors of channels: 24 accumulators, or 18
/// with 2 vectors (a whole 3x3 kernel; its 9 taps' addresses are what the registers allow).
pub(super) fn taps_per_tile(vectors: usize) -> usize {
    match vectors {
        4 => 6,
        3 => 8,
        _ => 9,
    }
}

/// The most taps of any tile.
const MAX_TAPS: usize = 9;

/// A tile's taps within a channel: kernel rows `ki0..ki0 + rows`, columns `kj0..kj0 +
/// cols`; tap t is row `t / cols`, column `t % cols`.
#[derive(Clone, Copy)]
struct TileTaps {
    ki0: usize,
    rows: usize,
    kj0: usize,
    cols: usize,
}

impl TileTaps {
    /// The tiles of one channel's `kh x kw` taps, `nt` taps at most each: whole kernel rows,
    /// as many as fit, or runs of `nt` columns of a row where a row does not fit.
    fn of_kernel(kh: usize, kw: usize, nt: usize) -> Vec<TileTaps> {
        let mut tiles = Vec::new();
        if kw <= nt {
            let per = (nt / kw).min(kh);
            for ki0 in (0..kh).step_by(per) {
                tiles.push(TileTaps {
                    ki0,
                    rows: per.min(kh - ki0),
                    kj0: 0,
                    cols: kw,
                });
            }
        } else {
            for ki0 in 0..kh {
                for kj0 in (0..kw).step_by(nt) {
                    tiles.push(TileTaps {
                        ki0,
                        rows: 1,
                        kj0,
                        cols: nt.min(kw - kj0),
                    });
                }
            }
        }
        tiles
    }

    fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// Tap t's index within the channel (`ki kw + kj`).
    fn tap(&self, t: usize, kw: usize) -> usize {
        (self.ki0 + t / self.cols) * kw + self.kj0 + t % self.cols
    }

    /// The taps (bit t) whose kernel row is in `row_bits` (bit r: row `ki0 + r`) and whose
    /// column is in `cols`.
    fn mask(&self, row_bits: u32, cols: &Range<usize>) -> u32 {
        (0..self.len())
            .filter(|t| row_bits & (1 << (t / self.cols)) != 0)
            .filter(|t| cols.contains(&(self.kj0 + t % self.cols)))
            .fold(0, |m, t| m | 1 << t)
    }
}

/// A part of a chunk whose positions' dy is packed at once: rows `rows` of images `images`
/// (several whole images, or some rows of one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Visit {
    pub images: Range<usize>,
    pub rows: Range<usize>,
}

/// The visits of a chunk of `num` images of `oh x ow` outputs, in order.
pub(super) fn visits(num: usize, oh: usize, ow: usize) -> Vec<Visit> {
    let p = oh * ow;
    if p <= POSITIONS_PER_VISIT {
        let per = (POSITIONS_PER_VISIT / p.max(1)).max(1);
        (0..num)
            .step_by(per)
            .map(|n| Visit {
                images: n..num.min(n + per),
                rows: 0..oh,
            })
            .collect()
    } else {
        let per = (POSITIONS_PER_VISIT / ow).max(1);
        (0..num)
            .flat_map(|n| {
                (0..oh).step_by(per).map(move |r| Visit {
                    images: n..n + 1,
                    rows: r..oh.min(r + per),
                })
            })
            .collect()
    }
}

/// A visit's positions of one column class, row by row (then image, then column): `[q, src]`
/// with `q` the position's index in the visit's packed dy and `src` where its input starts in
/// the chunk's prepared images; `row_starts[i]` is where visit row `rows.start + i` begins.
struct ClassPositions {
    list: Vec<[usize; 2]>,
    row_starts: Vec<usize>,
}

/// One run of a tile: positions `span` of column class `class`, which read real input
/// through the taps of `mask` (bit t: tap t of the tile).
struct Run {
    mask: u32,
    class: usize,
    span: Range<usize>,
}

thread_local! {
    static STATE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PACKED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `super::weight_grad_chunk` with channel tiles of `vectors` vectors: `part[gi][k][m]`
/// overwritten with the chunk's sums, and with `bias` (`g.col_channels` values, overwritten)
/// the sums of dy per output channel, each in the order of the visits' positions (image, row,
/// column).
#[allow(clippy::too_many_arguments)]
pub(super) fn weight_grad_chunk(
    plan: &Plan,
    vectors: usize,
    g: &ConvGeom,
    num: usize,
    x: &[f32],
    dy: &[f32],
    part: &mut [f32],
    mut bias: Option<&mut [f32]>,
) {
    let (cg, mg, kdim, p) = g.group_dims();
    let (id, od, kh, kw) = (g.im_dim(), g.col_dim(), g.kernel[0], g.kernel[1]);
    let (oh, ow, sh, wq) = (g.col_shape[0], g.col_shape[1], g.stride[0], plan.pr.wq);
    assert!(x.len() >= num * id && dy.len() >= num * od && part.len() >= g.weight_len());
    let vl = vectors * LANES;
    let nt = taps_per_tile(vectors);
    // Tiles of a block: per input channel, the same `shapes`.
    let shapes = TileTaps::of_kernel(kh, kw, nt);
    let tiles = cg * shapes.len();
    let tile_len = nt * vl;
    let visits = visits(num, oh, ow);
    let max_positions = visits
        .iter()
        .map(|v| v.images.len() * v.rows.len() * ow)
        .max()
        .unwrap_or(0);
    let mut classes: Vec<ClassPositions> = plan
        .col_classes
        .iter()
        .map(|_| ClassPositions {
            list: Vec::with_capacity(max_positions),
            row_starts: Vec::with_capacity(oh + 1),
        })
        .collect();
    let mut runs = Vec::new();
    let mut run_spans: Vec<Range<usize>> = Vec::with_capacity(shapes.len());
    // Per visit row, per tile shape: the shape's kernel rows that read the image there.
    let mut row_bits: Vec<u32> = Vec::with_capacity(oh);
    scratch::with(&STATE, tiles * tile_len, |state| {
        scratch::with_aligned(&PACKED, max_positions * vl, |packed| {
            with_prepared(num * plan.pr_len, |buf| {
                plan.prepare_images(g, x, buf);
                for gi in 0..g.group {
                    let offs = &plan.offs[gi * kdim..(gi + 1) * kdim];
                    let out = &mut part[gi * kdim * mg..(gi + 1) * kdim * mg];
                    for m0 in (0..mg).step_by(vl) {
                        let rows = vl.min(mg - m0);
                        state.fill(0.0);
                        let mut sums = [0f32; 32];
                        for visit in &visits {
                            let r0 = visit.rows.start;
                            let vrows = visit.rows.len();
                            let count = visit.images.len() * vrows * ow;
                            // The visit's dy, position by position (image, row, column), the
                            // block's channels of each; the bias sums in the same order.
                            let d = &mut packed[..count * vl];
                            for (i, n) in visit.images.clone().enumerate() {
                                let dn = &dy[n * od + (gi * mg + m0) * p..];
                                for oy in visit.rows.clone() {
                                    let q0 = (i * vrows + oy - r0) * ow;
                                    for ox in 0..ow {
                                        let at = (q0 + ox) * vl;
                                        for (ch, s) in sums.iter_mut().enumerate().take(rows) {
                                            let v = dn[ch * p + oy * ow + ox];
                                            d[at + ch] = v;
                                            *s += v;
                                        }
                                        d[at + rows..at + vl].fill(0.0);
                                    }
                                }
                            }
                            for (cl, cp) in plan.col_classes.iter().zip(classes.iter_mut()) {
                                cp.list.clear();
                                cp.row_starts.clear();
                                for oy in visit.rows.clone() {
                                    cp.row_starts.push(cp.list.len());
                                    for (i, n) in visit.images.clone().enumerate() {
                                        let q0 = (i * vrows + oy - r0) * ow;
                                        let s0 = n * plan.pr_len + oy * sh * wq;
                                        cp.list.extend(cl.out.clone().map(|ox| [q0 + ox, s0 + ox]));
                                    }
                                }
                                cp.row_starts.push(cp.list.len());
                            }
                            // Per tile shape, the runs of the visit (the same for every input
                            // channel): column class by column class, its rows cut where the
                            // shape's kernel rows that read the image change.
                            runs.clear();
                            run_spans.clear();
                            for shape in &shapes {
                                let start = runs.len();
                                row_bits.clear();
                                row_bits.extend(visit.rows.clone().map(|oy| {
                                    (0..shape.rows)
                                        .filter(|r| plan.ki_rows[shape.ki0 + r].contains(&oy))
                                        .fold(0u32, |b, r| b | 1 << r)
                                }));
                                for (class, (cl, cp)) in
                                    plan.col_classes.iter().zip(&classes).enumerate()
                                {
                                    let mut i = 0;
                                    while i < row_bits.len() {
                                        let bits = row_bits[i];
                                        let mut j = i + 1;
                                        while j < row_bits.len() && row_bits[j] == bits {
                                            j += 1;
                                        }
                                        let mask = shape.mask(bits, &cl.k);
                                        let span = cp.row_starts[i]..cp.row_starts[j];
                                        if mask != 0 && !span.is_empty() {
                                            runs.push(Run { mask, class, span });
                                        }
                                        i = j;
                                    }
                                }
                                run_spans.push(start..runs.len());
                            }
                            for c in 0..cg {
                                for (si, shape) in shapes.iter().enumerate() {
                                    let tile_runs = &runs[run_spans[si].clone()];
                                    if tile_runs.is_empty() {
                                        continue;
                                    }
                                    let k0 = c * kh * kw;
                                    let mut taps = [offs[k0 + shape.tap(0, kw)]; MAX_TAPS];
                                    for (t, o) in taps.iter_mut().enumerate().take(shape.len()) {
                                        *o = offs[k0 + shape.tap(t, kw)];
                                    }
                                    let ti = c * shapes.len() + si;
                                    let acc = &mut state[ti * tile_len..(ti + 1) * tile_len];
                                    let t = Tile {
                                        dy: d,
                                        im: buf,
                                        taps,
                                        runs: tile_runs,
                                        classes: &classes,
                                    };
                                    // SAFETY: the plan was made for AVX-512VL
                                    // (`channels::vectors_for`); every position's `q` is
                                    // below `count` (its dy in `d`), and `src` plus the
                                    // offset of a tap in its run's mask stays within the
                                    // prepared images (the output-size formula bounds every
                                    // read of a real output); `acc` holds `nt * vl` values.
                                    unsafe { t.run(vectors, shape.len(), acc) };
                                }
                            }
                        }
                        // The sums: tap t of tile (c, shape) is weight `c kh kw + shape.tap(t)`.
                        for c in 0..cg {
                            for (si, shape) in shapes.iter().enumerate() {
                                let ti = c * shapes.len() + si;
                                let acc = &state[ti * tile_len..(ti + 1) * tile_len];
                                for t in 0..shape.len() {
                                    let k = c * kh * kw + shape.tap(t, kw);
                                    out[k * mg + m0..k * mg + m0 + rows]
                                        .copy_from_slice(&acc[t * vl..t * vl + rows]);
                                }
                            }
                        }
                        if let Some(b) = bias.as_deref_mut() {
                            b[gi * mg + m0..gi * mg + m0 + rows].copy_from_slice(&sums[..rows]);
                        }
                    }
                }
            });
        });
    });
}

/// One tile over one visit: its accumulators (`[tap][8 V]`) in and out of `acc`.
struct Tile<'a> {
    /// The visit's packed dy: `[position][8 V]`.
    dy: &'a [f32],
    /// The chunk's prepared images.
    im: &'a [f32],
    /// Per tap, its offset in the prepared image (taps past the tile's repeat the first).
    taps: [usize; MAX_TAPS],
    runs: &'a [Run],
    classes: &'a [ClassPositions],
}

impl Tile<'_> {
    unsafe fn run(self, vectors: usize, ntaps: usize, acc: &mut [f32]) {
        for r in self.runs {
            for &[q, src] in &self.classes[r.class].list[r.span.clone()] {
                debug_assert!((q + 1) * vectors * LANES <= self.dy.len());
                for (t, &o) in self.taps.iter().enumerate() {
                    debug_assert!(r.mask & (1 << t) == 0 || src + o < self.im.len());
                }
            }
        }
        debug_assert!(acc.len() >= taps_per_tile(vectors) * vectors * LANES);
        // The tile's taps (`ntaps`, the rest masked out): instances for the usual kernel
        // widths run their full runs without a test per tap.
        match (vectors, ntaps) {
            (4, 3) => tile::<4, 3>(self, acc),
            (4, 5) => tile::<4, 5>(self, acc),
            (4, _) => tile::<4, 6>(self, acc),
            (3, 3) => tile::<3, 3>(self, acc),
            (3, 5) => tile::<3, 5>(self, acc),
            (3, 6) => tile::<3, 6>(self, acc),
            (3, _) => tile::<3, 8>(self, acc),
            (_, 3) => tile::<2, 3>(self, acc),
            (_, 5) => tile::<2, 5>(self, acc),
            (_, 6) => tile::<2, 6>(self, acc),
            _ => tile::<2, 9>(self, acc),
        }
    }
}

/// `V` vectors of channels x `T` taps: for every run's positions in order, and each tap t of
/// the run's mask, `acc[t][8 j..8 j + 8] += dy[q][8 j..8 j + 8] * image[src + taps[t]]`.
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
unsafe fn tile<const V: usize, const T: usize>(t: Tile, state: &mut [f32]) {
    let mut acc = [[_mm256_setzero_ps(); V]; T];
    for (i, tap) in acc.iter_mut().enumerate() {
        for (j, a) in tap.iter_mut().enumerate() {
            *a = _mm256_loadu_ps(state.as_ptr().add((i * V + j) * LANES));
        }
    }
    let im = t.im.as_ptr();
    let s: [*const f32; T] = std::array::from_fn(|i| im.add(t.taps[i]));
    let dy = t.dy.as_ptr();
    let full = (1u32 << T) - 1;
    for r in t.runs {
        let (mask, positions) = (r.mask, &t.classes[r.class].list[r.span.clone()]);
        if mask == full {
            for &[q, src] in positions {
                let d = dy.add(q * V * LANES);
                let dv: [__m256; V] = std::array::from_fn(|j| _mm256_loadu_ps(d.add(j * LANES)));
                for (i, tap) in acc.iter_mut().enumerate() {
                    let xi = _mm256_broadcast_ss(&*s[i].add(src));
                    for j in 0..V {
                        tap[j] = _mm256_fmadd_ps(xi, dv[j], tap[j]);
                    }
                }
            }
            continue;
        }
        for &[q, src] in positions {
            let d = dy.add(q * V * LANES);
            let dv: [__m256; V] = std::array::from_fn(|j| _mm256_loadu_ps(d.add(j * LANES)));
            for (i, tap) in acc.iter_mut().enumerate() {
                if mask & (1 << i) != 0 {
                    let xi = _mm256_broadcast_ss(&*s[i].add(src));
                    for j in 0..V {
                        tap[j] = _mm256_fmadd_ps(xi, dv[j], tap[j]);
                    }
                }
            }
        }
    }
    for (i, tap) in acc.iter().enumerate() {
        for (j, a) in tap.iter().enumerate() {
            _mm256_storeu_ps(state.as_mut_ptr().add((i * V + j) * LANES), *a);
        }
    }
}
