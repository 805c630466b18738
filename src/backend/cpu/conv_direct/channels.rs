//! Forward tiles whose vectors run over output channels (`Tiles::Channels`): `V` vectors of
//! 8 output channels x `P` single output positions, each position's input broadcast from the
//! prepared image. A tile's positions share their row and column classes (`EdgeClass`), or
//! nearly, so it runs only the taps that read the image: the row tiles cannot leave out a
//! kernel column, since a vector along a row reads real input in some lanes for every one.
//! On 8x8 outputs with a 5x5 kernel and pad 2, those columns are 15% of the products.
//!
//! The outputs go to NCHW value by value (`V * 8 * P` stores a tile, against `V * 8 * P`
//! multiply-adds per tap), so the tiles pay on long reductions only (`Tiles::choose`).
//! Needs AVX-512VL: `V * P` = 24 accumulators, `V` weight vectors and a broadcast take 29
//! of its 32 vector registers.

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::conv::{with_prepared, ConvGeom};
use super::{EdgeClass, Isa, PackedWeights, Plan, LANES};

/// The most taps per pass over a tile's outputs (512 KiB of weights with 4 vectors).
const MAX_TAPS_PER_PASS: usize = 4096;

/// The most positions in a tile (with 3 vectors of channels; 6 with 4, 8 with 2).
const MAX_POSITIONS: usize = 8;

/// Positions per tile with `vectors` vectors of channels: 24 accumulators where the
/// registers allow (2 x 12 spills the positions' addresses; 2 x 8 does not).
fn positions(vectors: usize) -> usize {
    match vectors {
        4 => 6,
        _ => 8,
    }
}

/// The vectors of channels per tile for `g` on `isa`, if channel tiles can run it: the
/// choice of 4, 3 or 2 that leaves the fewest empty channels in the last block of a group
/// (4 on a tie); none without AVX-512VL or with fewer than 9 channels a group.
pub(super) fn vectors_for(g: &ConvGeom, isa: Isa) -> Option<usize> {
    let cv = (g.col_channels / g.group).div_ceil(LANES);
    if isa != Isa::Avx512 || cv < 2 {
        return None;
    }
    [4, 3, 2]
        .into_iter()
        .min_by_key(|&v| cv.div_ceil(v) * v - cv)
}

/// The share of the row tiles' products (rows of padding already left out) that read a
/// column of padding: what channel tiles save.
pub(super) fn padding_column_share(g: &ConvGeom) -> f64 {
    let (ow, kw) = (g.col_shape[1], g.kernel[1]);
    let classes = EdgeClass::of(ow, g.stride[1], g.dilation[1], g.pad[1], g.im_shape[1], kw);
    let padding: usize = classes.iter().map(|c| c.out.len() * (kw - c.k.len())).sum();
    padding as f64 / (ow * kw).max(1) as f64
}

/// One output position of a call: where its input starts in the prepared images (tap 0),
/// where its output is (image and position, in an output channel), and its row and column
/// classes.
#[derive(Clone, Copy)]
struct Position {
    src: usize,
    dst: usize,
    row_class: usize,
    col_class: usize,
}

/// The union of ranges, the empty ones left out (their positions read padding only, so any
/// taps give them their zero).
fn hull(a: &Range<usize>, b: &Range<usize>) -> Range<usize> {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.clone(),
        (_, true) => a.clone(),
        _ => a.start.min(b.start)..a.end.max(b.end),
    }
}

/// `ForwardPlan::run` with channel tiles of `vectors` vectors.
///
/// The positions of the call's images are ordered class by class (row class, then column
/// class, then image) and cut into tiles of `positions(vectors)`; a tile runs the kernel
/// rows and columns any of its positions needs (a tile that straddles two classes runs the
/// union, whose extra products read padding). Every output still adds its products in tap
/// order, starting from +0, so the bits are those of the row tiles and of the model.
pub(super) fn run(
    plan: &Plan,
    vectors: usize,
    g: &ConvGeom,
    w: &PackedWeights,
    images: usize,
    x: &[f32],
    y: &mut [f32],
) {
    let (cg, mg, kdim, p) = g.group_dims();
    let (id, od, kh, kw) = (g.im_dim(), g.col_dim(), g.kernel[0], g.kernel[1]);
    let (ow, sh, wq) = (g.col_shape[1], g.stride[0], plan.pr.wq);
    assert!(x.len() >= images * id && y.len() >= images * od);
    assert_eq!(w.kdim, kdim);
    assert_eq!(w.rows, vectors * LANES);
    let np = positions(vectors);
    let mut all = Vec::with_capacity(images * p);
    for (row_class, rc) in plan.classes.iter().enumerate() {
        for (col_class, cc) in plan.col_classes.iter().enumerate() {
            for n in 0..images {
                for oy in rc.out.clone() {
                    for ox in cc.out.clone() {
                        all.push(Position {
                            src: n * plan.pr_len + oy * sh * wq + ox,
                            dst: n * od + oy * ow + ox,
                            row_class,
                            col_class,
                        });
                    }
                }
            }
        }
    }
    // Channels per pass over the taps. The tiles read the weights from L2 (128 bytes a tap
    // with 4 vectors): shorter passes, their weights in L1, cost more in the outputs' loads
    // and stores between passes than they saved (CIFAR-10 conv3: 256 taps a pass, 7.4-7.7 ms
    // against 4.8-5.2 ms in one pass of 800).
    let per_pass = cg.div_ceil(kdim.div_ceil(MAX_TAPS_PER_PASS));
    let mut taps = Vec::with_capacity(kh * kw);
    with_prepared(images * plan.pr_len, |buf| {
        plan.prepare_images(g, x, buf);
        for gi in 0..g.group {
            let offs = &plan.offs[gi * kdim..(gi + 1) * kdim];
            for b in 0..w.blocks {
                let rows = w.rows.min(mg - b * w.rows);
                let y0 = (gi * mg + b * w.rows) * p;
                for c0 in (0..cg).step_by(per_pass) {
                    let mut hulls = (0..0, 0..0);
                    for chunk in all.chunks(np) {
                        let (mut ki, mut kj) = (0..0, 0..0);
                        for q in chunk {
                            ki = hull(&ki, &plan.classes[q.row_class].k);
                            kj = hull(&kj, &plan.col_classes[q.col_class].k);
                        }
                        if (&ki, &kj) != (&hulls.0, &hulls.1) {
                            // The hull's taps of a channel: consecutive tiles mostly share it.
                            taps.clear();
                            for i in ki.clone() {
                                for j in kj.clone() {
                                    let k = i * kw + j;
                                    taps.push((offs[k], k * w.rows));
                                }
                            }
                            hulls = (ki, kj);
                        }
                        let last = chunk[chunk.len() - 1];
                        let mut t = ChannelTile {
                            a: w.block(gi, b),
                            taps: &taps,
                            im: buf,
                            src: [last.src; MAX_POSITIONS],
                            dst: [last.dst; MAX_POSITIONS],
                            n: chunk.len(),
                            channels: c0..cg.min(c0 + per_pass),
                            channel_offset: plan.pr.hp * plan.pr.wq,
                            channel_taps: kh * kw,
                            y: &mut y[y0..],
                            ystride: p,
                            rows,
                            accumulate: c0 > 0,
                        };
                        for (i, q) in chunk.iter().enumerate() {
                            (t.src[i], t.dst[i]) = (q.src, q.dst);
                        }
                        // SAFETY: the plan was made for AVX-512VL (`vectors_for`); tap
                        // offsets plus a position's start stay within the prepared images
                        // (the output-size formula bounds every read of a real output); the
                        // block's weights hold `w.rows` values per tap.
                        unsafe { t.run(vectors) };
                    }
                }
            }
        }
    });
}

/// One channel tile: `V` vectors of 8 output channels x `n` positions (the last repeated to
/// fill the tile), over the taps `taps` of every channel of `channels`.
struct ChannelTile<'a> {
    /// Packed weights of the block: `[k][V * 8]`.
    a: &'a [f32],
    /// The taps run in each channel, in order: their offset in the prepared image for the
    /// group's first channel, and their weights' offset in `a` for that channel.
    taps: &'a [(usize, usize)],
    im: &'a [f32],
    src: [usize; MAX_POSITIONS],
    /// Per position, its output in channel 0 of the block (image and position).
    dst: [usize; MAX_POSITIONS],
    /// Real positions; those past them repeat the last one and are not stored.
    n: usize,
    channels: Range<usize>,
    /// From one input channel to the next: values in the prepared image, taps.
    channel_offset: usize,
    channel_taps: usize,
    /// The block's first output channel; channel i at `i * ystride`.
    y: &'a mut [f32],
    ystride: usize,
    /// The block's real channels (the outputs stored).
    rows: usize,
    /// Add to the outputs (a later pass over the taps) instead of overwriting them.
    accumulate: bool,
}

impl ChannelTile<'_> {
    unsafe fn run(self, vectors: usize) {
        if let (Some(c), Some(&(o, k))) = (self.channels.clone().last(), self.taps.last()) {
            debug_assert!(self.a.len() >= (c * self.channel_taps + 1) * vectors * LANES + k);
            for &s in &self.src {
                debug_assert!(s + c * self.channel_offset + o < self.im.len());
            }
        }
        match vectors {
            4 => tile::<4, 6>(self),
            3 => tile::<3, 8>(self),
            _ => tile::<2, 8>(self),
        }
    }

    /// The current outputs of position `i`, channels `8 j..8 j + 8` (0 past the block's).
    #[inline(always)]
    fn load(&self, i: usize, j: usize) -> [f32; LANES] {
        std::array::from_fn(|l| {
            let ch = j * LANES + l;
            if ch < self.rows {
                self.y[ch * self.ystride + self.dst[i]]
            } else {
                0.0
            }
        })
    }

    /// Stores the outputs of position `i`, channels `8 j..8 j + 8` (those of the block).
    #[inline(always)]
    fn store(&mut self, i: usize, j: usize, v: &[f32; LANES]) {
        for (l, &value) in v.iter().enumerate() {
            let ch = j * LANES + l;
            if ch < self.rows {
                self.y[ch * self.ystride + self.dst[i]] = value;
            }
        }
    }
}

/// `V` vectors of channels x `P` positions: for every tap k of the tile in order,
/// `acc[i][j] += a[k][8 j..8 j + 8] * image[src[i] + offs[k]]` (channel by channel, the
/// tile's taps of each).
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
unsafe fn tile<const V: usize, const P: usize>(mut t: ChannelTile) {
    let mut acc = [[_mm256_setzero_ps(); V]; P];
    if t.accumulate {
        for (i, pos) in acc.iter_mut().enumerate().take(t.n) {
            for (j, a) in pos.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(t.load(i, j).as_ptr());
            }
        }
    }
    let im = t.im.as_ptr();
    let s: [*const f32; P] = std::array::from_fn(|i| im.add(t.src[i]));
    for c in t.channels.clone() {
        let (oc, wc) = (
            c * t.channel_offset,
            t.a.as_ptr().add(c * t.channel_taps * V * LANES),
        );
        for &(o, k) in t.taps {
            let o = oc + o;
            let wk = wc.add(k);
            let wv: [__m256; V] = std::array::from_fn(|j| _mm256_loadu_ps(wk.add(j * LANES)));
            for (i, pos) in acc.iter_mut().enumerate() {
                let xi = _mm256_broadcast_ss(&*s[i].add(o));
                for j in 0..V {
                    pos[j] = _mm256_fmadd_ps(wv[j], xi, pos[j]);
                }
            }
        }
    }
    for (i, pos) in acc.iter().enumerate().take(t.n) {
        for (j, a) in pos.iter().enumerate() {
            let mut v = [0f32; LANES];
            _mm256_storeu_ps(v.as_mut_ptr(), *a);
            t.store(i, j, &v);
        }
    }
}
