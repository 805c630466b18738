//! Direct 2-D convolution on x86-64 with AVX2 and FMA: the products of the im2col + GEMM
//! formulation (`conv.rs`) computed straight from the prepared image (zero-padded, split
//! into column phases for strided convolutions), without writing a column buffer. For a
//! 16-channel 3x3 layer the column buffer is 9 times the image and writing it cost a third of
//! the convolution (docs/cpu-perf.md).
//!
//! Every column-buffer row (channel c, kernel offset ki, kj) is, for output row `oy`, a
//! contiguous run of the prepared image starting at `tap(c, ki, kj) + oy * stride_h * wq`, so a
//! vector of 8 consecutive outputs of one row reads 8 consecutive values at a per-tap offset.
//! - Forward, row tiles: a tile of output channels x vectors (8 x 3 with AVX-512VL's 32
//!   registers, 4 x 2 with AVX2) accumulates `W[m][k] * image` over the taps k in order, one
//!   fused multiply-add per tap and value.
//! - Forward and weight gradient, wide row tiles (`wide_rows.rs`, AVX-512): the same with
//!   vectors of 16 outputs, for rows of 16 or 32.
//! - Forward, channel tiles (`channels.rs`, AVX-512VL): vectors of 8 output channels x single
//!   output positions, each position's input broadcast; for layers where columns of padding
//!   weigh (`Tiles::choose`).
//! - Input gradient (stride 1): the forward of the output gradient with the kernel flipped and
//!   transposed, padded by `dilation * (kernel - 1) - pad`.
//! - Weight gradient, row tiles: a tile of output channels x taps (8 x 3, or 4 x 2)
//!   accumulates `dy * image` over every output vector of a chunk of images, lane by lane,
//!   then adds the 8 lanes in a fixed order.
//! - Weight gradient, channel tiles (`wgrad_channels.rs`, AVX-512VL): vectors of 8 output
//!   channels x the taps of whole kernel rows, one sequential sum per weight over the
//!   positions that read the image; for kernels 5 wide or more where columns of padding
//!   weigh (`Tiles::choose_weight_grad`). Its order is its own: other rounding than the row
//!   tiles'.
//!
//! Products with kernel rows that read only the zero padding, at the top and bottom of an
//! image, are left out (`EdgeClass`): they cannot change the sums. Those with padding columns
//! are left out by the channel tiles only: a vector along a row has real inputs in some lanes
//! for every kernel column. Either way every forward output adds its products in tap order,
//! so the two forward tiles give the same bits.
//!
//! The order of every sum depends on the shapes only (images are independent; weight-gradient
//! chunks are fixed by `conv::weight_grad_chunks`), so results do not depend on the thread
//! count. They differ from the GEMM path's in rounding only (other summation order, fused
//! multiply-adds).

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::ops::Range;
use std::sync::OnceLock;

use super::conv::{prepare_2d, with_prepared, ConvGeom, Prepared};
use super::scratch;
use super::wide::Wide;

mod channels;
mod wgrad_channels;
mod wide_rows;

/// Values per vector (256-bit registers).
const LANES: usize = 8;
/// Values per vector of the wide row tiles (512-bit registers, `Tiles::WideRows`).
const WIDE_LANES: usize = 16;
/// The most taps per forward pass over a tile (the block's weights for them: 32 KiB with 8
/// channels). Longer reductions run in several equal passes, each adding to the outputs of the
/// last; splitting shorter ones cost more than it saved (docs/cpu-perf.md).
const MAX_TAPS_PER_PASS: usize = 1024;

/// The instruction sets the kernels are compiled for. Both use 256-bit vectors; with
/// AVX-512VL there are 32 of them instead of 16, which holds a tile of 8 channels x 3 vectors
/// (24 accumulators) instead of 4 x 2: twice the multiply-adds per value loaded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Isa {
    Avx2,
    Avx512,
}

impl Isa {
    /// This CPU's (checked once), if it has AVX2 and FMA.
    fn detect() -> Option<Isa> {
        static ISA: OnceLock<Option<Isa>> = OnceLock::new();
        *ISA.get_or_init(|| {
            if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
                None
            } else if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
                Some(Isa::Avx512)
            } else {
                Some(Isa::Avx2)
            }
        })
    }

    /// Output channels per tile.
    fn rows(self) -> usize {
        match self {
            Isa::Avx2 => 4,
            Isa::Avx512 => 8,
        }
    }

    /// Vectors (forward) or taps (weight gradient) per tile.
    fn vecs(self) -> usize {
        match self {
            Isa::Avx2 => 2,
            Isa::Avx512 => 3,
        }
    }
}

/// Whether this CPU has the instructions the kernels use.
pub fn cpu_supported() -> bool {
    Isa::detect().is_some()
}

/// The tiles this CPU's weight gradient of `g` runs (`handles(g)` must hold).
pub fn weight_grad_tiles(g: &ConvGeom) -> Tiles {
    Tiles::choose_weight_grad(
        g,
        Isa::detect().expect("conv_direct used on a CPU without AVX2 and FMA"),
    )
}

/// Whether this CPU can run the channel tiles (`Tiles::Channels`, AVX-512VL).
pub fn channel_tiles_supported() -> bool {
    Isa::detect() == Some(Isa::Avx512)
}

/// Whether the direct kernels take this convolution's weight gradient: 2-D (not forced to the
/// N-D path) with a kernel larger than 1x1 (a 1x1 convolution's column buffer is the image
/// itself, or a subsampled copy of it: cheap next to the GEMM).
pub fn handles(g: &ConvGeom) -> bool {
    g.kernel.len() == 2
        && !g.force_nd
        && g.kernel_count() > 1
        && cpu_supported()
        && g.col_spatial() > 0
}

/// Whether the direct kernels take the forward too: they need enough taps per output to keep
/// the tiles busy. The 256-bit row tiles lost to the GEMM on LeNet's first layer (25 taps)
/// and were even on CIFAR-10's (75); the wide ones beat it by a quarter on ResNet-20's (27
/// taps, 32x32 outputs).
pub fn forward_pays(g: &ConvGeom) -> bool {
    if !handles(g) {
        return false;
    }
    let wide = Isa::detect().is_some_and(|isa| Tiles::choose(g, isa) == Tiles::WideRows);
    g.kernel_dim() >= if wide { 24 } else { 64 }
}

/// The geometry whose forward is this convolution's input gradient (stride 1 only: the
/// flipped kernel over the output gradient padded by `dilation * (kernel - 1) - pad`), if the
/// direct kernels take it.
pub fn input_grad_geom(g: &ConvGeom) -> Option<ConvGeom> {
    if !handles(g) {
        return None;
    }
    let mut pad = Vec::with_capacity(2);
    for i in 0..2 {
        // Only where the output is the input's size: otherwise the flipped kernel runs over a
        // border of zeros (LeNet's 5x5 without padding: 2.25 times the work).
        if g.stride[i] != 1 || g.col_shape[i] != g.im_shape[i] {
            return None;
        }
        pad.push((g.dilation[i] * (g.kernel[i] - 1)).checked_sub(g.pad[i])?);
    }
    // The input gradient's channels are the tiles' rows: too few leave them mostly empty.
    if g.im_channels / g.group < Isa::detect()?.rows() {
        return None;
    }
    let t = ConvGeom {
        im_channels: g.col_channels,
        col_channels: g.im_channels,
        group: g.group,
        im_shape: g.col_shape.clone(),
        col_shape: g.im_shape.clone(),
        kernel: g.kernel.clone(),
        pad,
        stride: vec![1, 1],
        dilation: g.dilation.clone(),
        force_nd: false,
    };
    (t.im_spatial() > 0 && forward_pays(&t)).then_some(t)
}

/// The weights of `input_grad_geom(g)`: `W'[c][m][ki][kj] = W[m][c][kh-1-ki][kw-1-kj]` within
/// each group.
pub fn flip_weights(g: &ConvGeom, w: &[f32], out: &mut Vec<f32>) {
    let (cg, mg) = (g.im_channels / g.group, g.col_channels / g.group);
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let kc = kh * kw;
    out.clear();
    out.resize(g.weight_len(), 0.0);
    for gi in 0..g.group {
        for c in 0..cg {
            for m in 0..mg {
                let src = ((gi * mg + m) * cg + c) * kc;
                let dst = ((gi * cg + c) * mg + m) * kc;
                for t in 0..kc {
                    out[dst + t] = w[src + kc - 1 - t];
                }
            }
        }
    }
}

/// One vector of outputs: where its 8 inputs start in the prepared image (tap 0), where its
/// outputs start in an output channel, how many of the 8 are real (the last vector of a row
/// may be short), and its output row.
#[derive(Clone, Copy)]
struct OutVec {
    src: usize,
    dst: usize,
    len: usize,
    row: usize,
}

/// Output rows (or columns) whose inputs are real (not padding) for the same kernel rows (or
/// columns) `k`: at the edges of an image, some kernel rows only ever read the zero padding,
/// and their taps can be left out. Adding a product with a padding zero never changes a sum
/// that starts at +0 (`s + (+-0) = s`, and such a sum is never -0), so leaving them out gives
/// the same bits; only a non-finite weight or output gradient, whose product with 0 is NaN,
/// could tell, and it makes its output non-finite either way.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EdgeClass {
    out: Range<usize>,
    k: Range<usize>,
}

impl EdgeClass {
    /// The classes of one dimension, in order: `n_out` outputs `stride` apart, a kernel of
    /// `kernel` taps `dilation` apart, over `size` real inputs after `pad` of padding.
    fn of(
        n_out: usize,
        stride: usize,
        dilation: usize,
        pad: usize,
        size: usize,
        kernel: usize,
    ) -> Vec<EdgeClass> {
        let mut classes: Vec<EdgeClass> = Vec::new();
        for o in 0..n_out {
            // Padded input `o * stride + k * dilation` is real when it lies in [pad, pad + size).
            let lo = first_reaching(o * stride, dilation, pad).min(kernel);
            let k = lo..first_reaching(o * stride, dilation, pad + size).clamp(lo, kernel);
            match classes.last_mut() {
                Some(last) if last.k == k => last.out.end = o + 1,
                _ => classes.push(EdgeClass { out: o..o + 1, k }),
            }
        }
        classes
    }
}

/// What one pass needs besides the data: the prepared layout, tap offsets, output vectors.
struct Plan {
    pr: Prepared,
    /// Values of one prepared image, with room for a vector read past the last row.
    pr_len: usize,
    /// Per group, the prepared-image offset of every tap (c, ki, kj) in the weights' order.
    offs: Vec<usize>,
    /// Outputs per vector of the row tiles: `LANES`, or `WIDE_LANES` for the wide ones.
    lanes: usize,
    /// Output vectors of one image, row by row.
    vectors: Vec<OutVec>,
    /// Output vectors per row.
    row_vectors: usize,
    /// The output rows in classes of equal kernel rows, top to bottom.
    classes: Vec<EdgeClass>,
    /// The output columns in classes of equal kernel columns, left to right.
    col_classes: Vec<EdgeClass>,
    /// Per kernel row, the output rows that read real inputs through it.
    ki_rows: Vec<Range<usize>>,
}

/// The least `t >= 0` with `a + t * step >= target` (`step > 0`).
fn first_reaching(a: usize, step: usize, target: usize) -> usize {
    target.saturating_sub(a).div_ceil(step)
}

impl Plan {
    /// The plan of `g` with row vectors of `lanes` outputs (the channel tiles use none).
    fn new(g: &ConvGeom, lanes: usize) -> Plan {
        let pr = Prepared::new(g);
        let (kh, kw) = (g.kernel[0], g.kernel[1]);
        let (dh, dw, sh) = (g.dilation[0], g.dilation[1], g.stride[0]);
        let mut offs = Vec::with_capacity(g.im_channels * kh * kw);
        for c in 0..g.im_channels {
            for ki in 0..kh {
                for kj in 0..kw {
                    offs.push(pr.at(c, ki * dh, kj * dw));
                }
            }
        }
        let (oh, ow) = (g.col_shape[0], g.col_shape[1]);
        let mut vectors = Vec::with_capacity(oh * ow.div_ceil(lanes));
        for oy in 0..oh {
            for x in (0..ow).step_by(lanes) {
                vectors.push(OutVec {
                    src: oy * sh * pr.wq + x,
                    dst: oy * ow + x,
                    len: lanes.min(ow - x),
                    row: oy,
                });
            }
        }
        let (pad, h) = (g.pad[0], g.im_shape[0]);
        let classes = EdgeClass::of(oh, sh, dh, pad, h, kh);
        let col_classes = EdgeClass::of(ow, g.stride[1], dw, g.pad[1], g.im_shape[1], kw);
        let ki_rows = (0..kh)
            .map(|ki| {
                let lo = first_reaching(ki * dh, sh, pad).min(oh);
                lo..first_reaching(ki * dh, sh, pad + h).clamp(lo, oh)
            })
            .collect();
        Plan {
            pr,
            pr_len: pr.len() + WIDE_LANES,
            offs,
            lanes,
            vectors,
            row_vectors: ow.div_ceil(lanes),
            classes,
            col_classes,
            ki_rows,
        }
    }

    /// Prepares one image into `buf` (`pr_len` values), the slack zeroed.
    fn prepare(&self, g: &ConvGeom, im: &[f32], buf: &mut [f32]) {
        prepare_2d(g, self.pr, im, buf);
        buf[self.pr.len()..self.pr_len].fill(0.0);
    }

    /// Prepares as many images of `x` (`g.im_dim()` values each) as `buf` holds, one after
    /// the other, `pr_len` values apart.
    fn prepare_images(&self, g: &ConvGeom, x: &[f32], buf: &mut [f32]) {
        let id = g.im_dim();
        for (n, im) in buf.chunks_exact_mut(self.pr_len).enumerate() {
            self.prepare(g, &x[n * id..(n + 1) * id], im);
        }
    }
}

/// Forward weights packed for the tiles: per group, per block of `rows` output channels, per
/// tap, the block's weights (zeros past the last channel).
pub struct PackedWeights {
    data: Vec<f32>,
    isa: Isa,
    rows: usize,
    blocks: usize,
    kdim: usize,
}

impl PackedWeights {
    /// Packs `w` (`g.weight_len()` values) in blocks of `rows` output channels.
    fn new(g: &ConvGeom, w: &[f32], isa: Isa, rows: usize) -> PackedWeights {
        let r = rows;
        let (mg, kdim) = (g.col_channels / g.group, g.kernel_dim());
        let blocks = mg.div_ceil(r);
        let mut data = vec![0f32; g.group * blocks * kdim * r];
        for gi in 0..g.group {
            for m in 0..mg {
                let (b, i) = (m / r, m % r);
                let row = &w[(gi * mg + m) * kdim..(gi * mg + m + 1) * kdim];
                let base = (gi * blocks + b) * kdim * r;
                for (k, &v) in row.iter().enumerate() {
                    data[base + k * r + i] = v;
                }
            }
        }
        PackedWeights {
            data,
            isa,
            rows,
            blocks,
            kdim,
        }
    }

    fn block(&self, gi: usize, b: usize) -> &[f32] {
        let n = self.kdim * self.rows;
        &self.data[(gi * self.blocks + b) * n..][..n]
    }
}

/// How the direct kernels lay a convolution over the vector registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tiles {
    /// Vectors of 8 outputs along a row, a few output channels each (`FwdTile`,
    /// `WgradTile`): every kernel column is run, padding columns included.
    Rows,
    /// The same with vectors of 16 outputs (`wide_rows.rs`): half the loads and
    /// instructions per multiply-add, for rows that fill them. Needs AVX-512F.
    WideRows,
    /// Vectors of 8 output channels, `vectors` of them, at single output positions
    /// (`channels.rs`, `wgrad_channels.rs`): only the taps that read the image are run.
    /// Needs AVX-512VL's 32 registers.
    Channels { vectors: usize },
}

/// `force_tiles`' choice: 0 none, 1 rows, 2 channels, 3 wide rows. Global, not per thread:
/// the weight gradient's chunks run on the pool's threads.
static FORCED_TILES: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Benchmarks compare the tiles on one shape: `Some(tiles)` makes the plans and weight
/// gradients from now on use them (row, wide row or channel tiles; the vectors of channels
/// are chosen by shape) where the CPU has the instructions; `None`: chosen by shape, as in
/// training.
pub fn force_tiles(tiles: Option<Tiles>) {
    let v = match tiles {
        None => 0,
        Some(Tiles::Rows) => 1,
        Some(Tiles::Channels { .. }) => 2,
        Some(Tiles::WideRows) => 3,
    };
    FORCED_TILES.store(v, std::sync::atomic::Ordering::Relaxed);
}

fn forced_tiles() -> Option<Tiles> {
    match FORCED_TILES.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Some(Tiles::Rows),
        2 => Some(Tiles::Channels { vectors: 0 }),
        3 => Some(Tiles::WideRows),
        _ => None,
    }
}

impl Tiles {
    /// The tiles for a forward over `g` on this CPU: channel tiles where the columns of
    /// padding are a twentieth of the products or more and the reduction long enough that
    /// the tiles' value-by-value stores to NCHW cost little (docs/cpu-perf.md, entry 23:
    /// CIFAR-10's 5x5 layers at 8x8 and 16x16 and ResNet-20's 3x3 at 8x8 gain 3-13%;
    /// ResNet-20's at 16x16, 4% padding columns and 288 taps, lose 5-7%).
    fn choose(g: &ConvGeom, isa: Isa) -> Tiles {
        let pays = channels::padding_column_share(g) >= 0.05 && g.kernel_dim() >= 512;
        Tiles::channels_if(g, isa, pays)
    }

    /// Channel tiles where `pays` and the CPU and the channel count allow, else row tiles
    /// (`Tiles::rows_for`), unless `force_tiles` says otherwise.
    fn channels_if(g: &ConvGeom, isa: Isa, pays: bool) -> Tiles {
        let wide = isa == Isa::Avx512;
        match (forced_tiles(), channels::vectors_for(g, isa)) {
            (Some(Tiles::Rows), _) => Tiles::Rows,
            (Some(Tiles::WideRows), _) if wide => Tiles::WideRows,
            (Some(Tiles::Channels { .. }), Some(vectors)) => Tiles::Channels { vectors },
            (None, Some(vectors)) if pays => Tiles::Channels { vectors },
            (Some(_), _) => Tiles::Rows,
            (None, _) => Tiles::rows_for(g, isa),
        }
    }

    /// The row tiles for `g` on `isa`: wide ones (16 outputs a vector) where the CPU has
    /// AVX-512F and they leave no more lanes empty than vectors of 8 would (rows of 16 or
    /// 32 outputs fill them; rows of 8 or 24 would waste a half or a quarter).
    fn rows_for(g: &ConvGeom, isa: Isa) -> Tiles {
        let ow = g.col_shape[1];
        if isa == Isa::Avx512 && ow.div_ceil(WIDE_LANES) * WIDE_LANES <= ow.div_ceil(LANES) * LANES
        {
            Tiles::WideRows
        } else {
            Tiles::Rows
        }
    }

    /// The tiles for a weight gradient over `g` on this CPU: channel tiles where columns of
    /// padding are a twentieth of the products or more and the kernel is 5 wide or more
    /// (docs/cpu-perf.md, entry 24: CIFAR-10's 5x5 layers gain 6-12%; on ResNet-20's 3x3
    /// layers, with tiles of 2 or 3 kernel rows, they were level or slower, 1.5x with 16
    /// channels).
    fn choose_weight_grad(g: &ConvGeom, isa: Isa) -> Tiles {
        let pays = channels::padding_column_share(g) >= 0.05 && g.kernel[1] >= 5;
        Tiles::channels_if(g, isa, pays)
    }

    /// Output channels per block of packed weights.
    fn rows(self, isa: Isa) -> usize {
        match self {
            Tiles::Rows | Tiles::WideRows => isa.rows(),
            Tiles::Channels { vectors } => vectors * LANES,
        }
    }

    /// Outputs per row vector (the plan's `lanes`; the channel tiles use none).
    fn lanes(self) -> usize {
        match self {
            Tiles::WideRows => WIDE_LANES,
            _ => LANES,
        }
    }
}

/// A forward pass over a batch: one plan, run a few images at a time (from any thread).
pub struct ForwardPlan {
    plan: Plan,
    isa: Isa,
    tiles: Tiles,
}

/// The taps a forward tile runs over, in the weights' order: `count` runs of `len`
/// consecutive taps, the first starting at `first`, each `stride` after the one before.
#[derive(Clone, Copy)]
struct Taps {
    first: usize,
    len: usize,
    stride: usize,
    count: usize,
}

impl Taps {
    /// The taps of channels `c0..c0 + cn` (of a group) in kernel rows `ki`, every column.
    fn of(c0: usize, cn: usize, ki: &Range<usize>, kh: usize, kw: usize) -> Taps {
        let kc = kh * kw;
        if ki.start == 0 && ki.end == kh {
            Taps {
                first: c0 * kc,
                len: cn * kc,
                stride: 0,
                count: 1,
            }
        } else {
            Taps {
                first: c0 * kc + ki.start * kw,
                len: ki.len() * kw,
                stride: kc,
                count: cn,
            }
        }
    }

    /// The last tap, if any.
    fn last(&self) -> Option<usize> {
        (self.len > 0 && self.count > 0)
            .then(|| self.first + (self.count - 1) * self.stride + self.len - 1)
    }
}

impl ForwardPlan {
    /// The plan for `g` (`handles(g)` must hold), with the tiles that suit its shape.
    pub fn new(g: &ConvGeom) -> ForwardPlan {
        let isa = Isa::detect().expect("conv_direct used on a CPU without AVX2 and FMA");
        ForwardPlan::with_tiles(g, isa, Tiles::choose(g, isa))
    }

    fn with_tiles(g: &ConvGeom, isa: Isa, tiles: Tiles) -> ForwardPlan {
        ForwardPlan {
            plan: Plan::new(g, tiles.lanes()),
            isa,
            tiles,
        }
    }

    /// The tiles this plan runs.
    pub fn tiles(&self) -> Tiles {
        self.tiles
    }

    /// `w` (`g.weight_len()` values) packed for this plan's tiles.
    pub fn pack(&self, g: &ConvGeom, w: &[f32]) -> PackedWeights {
        PackedWeights::new(g, w, self.isa, self.tiles.rows(self.isa))
    }

    /// `y = W * im2col(x)` for `images` images (`x`: `images * g.im_dim()` values, `y`:
    /// `images * g.col_dim()`), no bias; `w` from `self.pack`. Every output adds its products
    /// in tap order (those with padding left out, see `EdgeClass`), whatever the tiles, the
    /// images per call and the threads.
    pub fn run(&self, g: &ConvGeom, w: &PackedWeights, images: usize, x: &[f32], y: &mut [f32]) {
        assert_eq!(w.rows, self.tiles.rows(self.isa));
        match self.tiles {
            Tiles::Rows | Tiles::WideRows => self.run_rows(g, w, images, x, y),
            Tiles::Channels { vectors } => channels::run(&self.plan, vectors, g, w, images, x, y),
        }
    }

    /// `run` with row tiles.
    ///
    /// The images' output vectors are grouped by row class (`EdgeClass`), so a tile's vectors
    /// need the same kernel rows and the tile skips the others; with several images the
    /// border classes hold enough vectors to fill whole tiles. Every output still adds its
    /// products in tap order, whatever the images and tiles, so the bits are those of an
    /// image on its own.
    fn run_rows(&self, g: &ConvGeom, w: &PackedWeights, images: usize, x: &[f32], y: &mut [f32]) {
        let plan = &self.plan;
        let (cg, mg, kdim, p) = g.group_dims();
        let (id, od, kh, kw) = (g.im_dim(), g.col_dim(), g.kernel[0], g.kernel[1]);
        assert!(x.len() >= images * id && y.len() >= images * od);
        assert_eq!(w.kdim, kdim);
        let (isa, r, nv) = (w.isa, w.isa.rows(), w.isa.vecs());
        // With fewer vectors per row than a tile takes, border classes would run short tiles;
        // one class of every row, every tap, runs full ones.
        let all = [EdgeClass {
            out: 0..g.col_shape[0],
            k: 0..kh,
        }];
        let classes = if images * plan.row_vectors >= nv {
            &plan.classes[..]
        } else {
            &all[..]
        };
        let mut vecs = Vec::with_capacity(images * plan.vectors.len());
        let mut spans = Vec::with_capacity(classes.len());
        for cl in classes {
            let start = vecs.len();
            let rv = plan.row_vectors;
            for n in 0..images {
                vecs.extend(
                    plan.vectors[cl.out.start * rv..cl.out.end * rv]
                        .iter()
                        .map(|v| OutVec {
                            src: n * plan.pr_len + v.src,
                            dst: n * od + v.dst,
                            ..*v
                        }),
                );
            }
            spans.push((start..vecs.len(), &cl.k));
        }
        // Channels per pass over the tiles' taps.
        let per_pass = cg.div_ceil(kdim.div_ceil(MAX_TAPS_PER_PASS));
        with_prepared(images * plan.pr_len, |buf| {
            plan.prepare_images(g, x, buf);
            for gi in 0..g.group {
                let offs = &plan.offs[gi * kdim..(gi + 1) * kdim];
                for b in 0..w.blocks {
                    let rows = r.min(mg - b * r);
                    let y0 = (gi * mg + b * r) * p;
                    for (span, ki) in &spans {
                        for c0 in (0..cg).step_by(per_pass) {
                            let taps = Taps::of(c0, per_pass.min(cg - c0), ki, kh, kw);
                            for chunk in vecs[span.clone()].chunks(nv) {
                                let t = FwdTile {
                                    taps,
                                    a: w.block(gi, b),
                                    offs,
                                    im: buf,
                                    vecs: chunk,
                                    y: &mut y[y0..],
                                    ystride: p,
                                    rows,
                                    accumulate: c0 > 0,
                                };
                                // SAFETY: the CPU has the ISA's instructions (`Isa::detect`);
                                // every tap offset plus a vector start stays within the
                                // prepared images plus slack (the output-size formula bounds
                                // every read of a real output, and a short vector reads at most
                                // `plan.lanes - 1` values past its row, within the slack of
                                // `WIDE_LANES`); outputs are written for
                                // `rows` channels and `len` values per vector, in `y`.
                                unsafe { t.run(isa, plan.lanes) };
                            }
                        }
                    }
                }
            }
        });
    }
}

/// One forward tile: `rows` output channels x `vecs.len()` vectors.
struct FwdTile<'a> {
    taps: Taps,
    /// Packed weights of the block: `[k][rows of the ISA]`.
    a: &'a [f32],
    offs: &'a [usize],
    im: &'a [f32],
    vecs: &'a [OutVec],
    /// The block's first output channel (of the first image); channel i at `i * ystride`.
    y: &'a mut [f32],
    ystride: usize,
    rows: usize,
    /// Add to the outputs (a later pass over the taps) instead of overwriting them.
    accumulate: bool,
}

impl FwdTile<'_> {
    /// Runs the tile with the kernels of `isa`, vectors of `lanes` outputs (`WIDE_LANES`:
    /// `wide_rows.rs`, AVX-512F).
    unsafe fn run(self, isa: Isa, lanes: usize) {
        if let Some(last) = self.taps.last() {
            debug_assert!(self.a.len() > last * isa.rows() && self.offs.len() > last);
            for v in self.vecs {
                debug_assert!(v.src + self.offs[last] + lanes <= self.im.len());
                debug_assert!(v.len <= lanes);
            }
        }
        if lanes == WIDE_LANES {
            debug_assert!(isa == Isa::Avx512);
            return match self.vecs.len() {
                3 => wide_rows::fwd::<8, 3>(self),
                2 => wide_rows::fwd::<8, 2>(self),
                _ => wide_rows::fwd::<8, 1>(self),
            };
        }
        match (isa, self.vecs.len()) {
            (Isa::Avx512, 3) => avx512::fwd::<8, 3>(self),
            (Isa::Avx512, 2) => avx512::fwd::<8, 2>(self),
            (Isa::Avx512, _) => avx512::fwd::<8, 1>(self),
            (Isa::Avx2, 2) => avx2::fwd::<4, 2>(self),
            (Isa::Avx2, _) => avx2::fwd::<4, 1>(self),
        }
    }

    /// Stores the accumulators of channel `i`, vector `j`.
    #[inline(always)]
    fn store(&mut self, i: usize, j: usize, v: &[f32; LANES]) {
        let ov = self.vecs[j];
        let at = i * self.ystride + ov.dst;
        if ov.len == LANES {
            // A fixed-size copy: vector moves, not a `memcpy` call per vector.
            let out: &mut [f32; LANES] = (&mut self.y[at..at + LANES]).try_into().unwrap();
            *out = *v;
        } else {
            self.y[at..at + ov.len].copy_from_slice(&v[..ov.len]);
        }
    }

    /// The current outputs of channel `i`, vector `j` (lanes past a short vector's end 0).
    #[inline(always)]
    fn load(&self, i: usize, j: usize) -> [f32; LANES] {
        let ov = self.vecs[j];
        let at = i * self.ystride + ov.dst;
        let mut v = [0f32; LANES];
        v[..ov.len].copy_from_slice(&self.y[at..at + ov.len]);
        v
    }
}

/// Packs one output vector's dy for a weight-gradient tile: `rows` rows of the block
/// (`d`: the block's first row, rows `p` apart) at the vector's position, `L` values each,
/// zeros past the vector's end and in the rows past `rows`.
#[inline(always)]
fn pack_dy_vector<const L: usize>(d: &[f32], p: usize, v: OutVec, rows: usize, dst: &mut [f32]) {
    for (i, o) in dst.chunks_exact_mut(L).enumerate() {
        if i < rows && v.len == L {
            let src: &[f32; L] = d[i * p + v.dst..][..L].try_into().unwrap();
            o.copy_from_slice(src);
        } else if i < rows {
            for (l, ol) in o.iter_mut().enumerate() {
                *ol = if l < v.len { d[i * p + v.dst + l] } else { 0.0 };
            }
        } else {
            o.fill(0.0);
        }
    }
}

thread_local! {
    static WGRAD_STATE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static WGRAD_DY: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Outputs a weight-gradient tile runs over between loading and storing its accumulators:
/// every tap block runs over the visit's packed dy (8 rows of 4 bytes per output, 128 KiB,
/// in L2). Shorter visits, their dy in L1, cost more in the tiles' set-up and accumulator
/// reloads than they saved (docs/cpu-perf.md, entry 25). Visits cut the chunk's sequence of
/// output vectors (image by image, row by row) anywhere, inside an image or across images.
const WGRAD_OUTPUTS_PER_VISIT: usize = 4096;

/// Weight gradient of a chunk of images, transposed (`[group][tap][m]`, like
/// `conv::weight_grad_one`'s partials) and overwritten: `part[gi][k][m] = sum over the images
/// and output positions of dy[m][pos] * im2col(x)[k][pos]`.
///
/// For each block of output channels, the chunk's output vectors are visited 4096 outputs at
/// a time: their dy rows of the block are packed vector by vector (`[vector][row][lanes]`,
/// zeros past a row's end) so that the kernel reads them at fixed distances, then every tap
/// block runs over them, its accumulators (a vector of lanes each) kept in memory between
/// visits. The last visit adds each accumulator's lanes and writes the sums.
///
/// With `bias` (`g.col_channels` values, overwritten), also the sums of dy per output channel
/// (a convolution's bias gradient), taken from the packed vectors instead of another pass
/// over dy: per channel, the lanes summed vector by vector in the visits' order, then added as
/// the accumulators' lanes are.
pub fn weight_grad_chunk(
    g: &ConvGeom,
    num: usize,
    x: &[f32],
    dy: &[f32],
    part: &mut [f32],
    bias: Option<&mut [f32]>,
) {
    let isa = Isa::detect().expect("conv_direct used on a CPU without AVX2 and FMA");
    match Tiles::choose_weight_grad(g, isa) {
        Tiles::Rows => weight_grad_chunk_isa::<LANES>(isa, g, num, x, dy, part, bias),
        Tiles::WideRows => weight_grad_chunk_isa::<WIDE_LANES>(isa, g, num, x, dy, part, bias),
        Tiles::Channels { vectors } => wgrad_channels::weight_grad_chunk(
            &Plan::new(g, LANES),
            vectors,
            g,
            num,
            x,
            dy,
            part,
            bias,
        ),
    }
}

/// `weight_grad_chunk` with the row tiles of `isa` (which the CPU must have), vectors of `L`
/// outputs (`WIDE_LANES` on AVX-512 only): the tests run every instruction set the CPU has.
fn weight_grad_chunk_isa<const L: usize>(
    isa: Isa,
    g: &ConvGeom,
    num: usize,
    x: &[f32],
    dy: &[f32],
    part: &mut [f32],
    mut bias: Option<&mut [f32]>,
) {
    assert!(L == LANES || isa == Isa::Avx512);
    let plan = Plan::new(g, L);
    let (mg, kdim, p) = (g.col_channels / g.group, g.kernel_dim(), g.col_spatial());
    let (id, od) = (g.im_dim(), g.col_dim());
    assert!(x.len() >= num * id && dy.len() >= num * od && part.len() >= g.weight_len());
    let (r, nt) = (isa.rows(), isa.vecs());
    let nvec = plan.vectors.len();
    let tap_blocks = kdim.div_ceil(nt);
    // The chunk's output vectors in order: (image, vector of the image).
    let total = num * nvec;
    let visits = total.div_ceil(WGRAD_OUTPUTS_PER_VISIT / L).max(1);
    let per_visit = total.div_ceil(visits);
    let srcs: Vec<usize> = (0..total)
        .map(|t| (t / nvec) * plan.pr_len + plan.vectors[t % nvec].src)
        .collect();
    let vrows: Vec<u32> = (0..total)
        .map(|t| plan.vectors[t % nvec].row as u32)
        .collect();
    // Per tap block, the output rows where one of its taps reads real inputs (a range: the
    // rows of consecutive kernel rows overlap); the other rows' products are all zero (see
    // `EdgeClass`) and are left out.
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let block_rows: Vec<Range<u32>> = (0..tap_blocks)
        .map(|tb| {
            let mut ranges = (tb * nt..kdim.min(tb * nt + nt))
                .map(|k| &plan.ki_rows[k / kw % kh])
                .filter(|r| !r.is_empty());
            let Some(first) = ranges.next() else {
                return 0..0;
            };
            let (lo, hi) = ranges.fold((first.start, first.end), |(lo, hi), r| {
                (lo.min(r.start), hi.max(r.end))
            });
            lo as u32..hi as u32
        })
        .collect();
    let masked = plan.vectors.iter().any(|v| v.len < L);
    let lens: Vec<u8> = if masked {
        (0..total)
            .map(|t| plan.vectors[t % nvec].len as u8)
            .collect()
    } else {
        Vec::new()
    };
    // Per-thread buffers, written before they are read: the accumulators between visits,
    // and the visit's packed dy (on a cache line boundary, so no vector of it straddles two).
    let state_len = if visits > 1 {
        tap_blocks * r * nt * L
    } else {
        0
    };
    let packed_len = per_visit * r * L;
    scratch::with(&WGRAD_STATE, state_len, |state| {
        scratch::with_aligned(&WGRAD_DY, packed_len, |packed| {
            with_prepared(num * plan.pr_len, |buf| {
                plan.prepare_images(g, x, buf);
                for gi in 0..g.group {
                    let offs = &plan.offs[gi * kdim..(gi + 1) * kdim];
                    let out = &mut part[gi * kdim * mg..(gi + 1) * kdim * mg];
                    for m0 in (0..mg).step_by(r) {
                        let rows = r.min(mg - m0);
                        let mut dy_lanes = [[0f32; L]; 8];
                        let want_bias = bias.is_some();
                        for t0 in (0..total).step_by(per_visit) {
                            let t1 = total.min(t0 + per_visit);
                            // A copy: the AVX2 build moves a vector per row instead of two halves.
                            Wide::detected().run(
                                #[inline(always)]
                                || {
                                    for t in t0..t1 {
                                        let (n, v) = (t / nvec, plan.vectors[t % nvec]);
                                        let d = &dy[n * od + (gi * mg + m0) * p..];
                                        let dst =
                                            &mut packed[(t - t0) * r * L..(t - t0 + 1) * r * L];
                                        pack_dy_vector::<L>(d, p, v, rows, dst);
                                        if want_bias {
                                            for (sums, row) in
                                                dy_lanes.iter_mut().zip(dst.chunks(L))
                                            {
                                                for (s, v) in sums.iter_mut().zip(row) {
                                                    *s += *v;
                                                }
                                            }
                                        }
                                    }
                                },
                            );
                            let (first, last) = (t0 == 0, t1 == total);
                            for tb in 0..tap_blocks {
                                let k0 = tb * nt;
                                let t = WgradTile {
                                    im: buf,
                                    dy: &packed[..(t1 - t0) * r * L],
                                    srcs: &srcs[t0..t1],
                                    vrows: &vrows[t0..t1],
                                    real_rows: block_rows[tb].clone(),
                                    lens: if masked { &lens[t0..t1] } else { &[] },
                                    offs: &offs[k0..kdim.min(k0 + nt)],
                                    first,
                                    rows,
                                };
                                let state = if visits > 1 {
                                    &mut state[tb * r * nt * L..(tb + 1) * r * nt * L]
                                } else {
                                    &mut []
                                };
                                let out = if last {
                                    Some(&mut out[k0 * mg + m0..])
                                } else {
                                    None
                                };
                                // SAFETY: the CPU has the ISA's instructions (and AVX-512F
                                // for `WIDE_LANES`); image reads stay within the prepared
                                // images plus slack (as in the forward), dy reads within
                                // `packed`; `state` holds the tile's `r * nt` accumulators
                                // where there are several visits; the sums go to `rows`
                                // channels x the block's taps of `out`, `mg` apart.
                                unsafe { t.run::<L>(isa, state, out, mg) };
                            }
                        }
                        if let Some(b) = bias.as_deref_mut() {
                            for (i, lanes) in dy_lanes.iter().take(rows).enumerate() {
                                b[gi * mg + m0 + i] = lanes_sum(lanes);
                            }
                        }
                    }
                }
            });
        });
    });
}

/// The 8 lanes of an accumulator added in a fixed order.
fn lane_sum(v: &[f32; LANES]) -> f32 {
    ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))
}

/// The lanes of an accumulator of `L` lanes added in a fixed order: 8 as `lane_sum` adds
/// them; 16 (the wide row tiles) first lane `l` and `l + 8`, then those 8 so.
fn lanes_sum<const L: usize>(v: &[f32; L]) -> f32 {
    match L {
        LANES => lane_sum(v[..LANES].try_into().unwrap()),
        WIDE_LANES => lane_sum(&std::array::from_fn(|l| v[l] + v[l + LANES])),
        _ => unreachable!("row vectors have 8 or 16 lanes"),
    }
}

/// A vector's first `len` lanes set, as 8 lanes of 256 bits: `LANE_MASKS[8 - len..][..8]`.
static LANE_MASKS: [u32; 2 * LANES] = [!0, !0, !0, !0, !0, !0, !0, !0, 0, 0, 0, 0, 0, 0, 0, 0];

/// One weight-gradient tile: the ISA's rows x `offs.len()` taps over the output vectors of
/// one visit.
struct WgradTile<'a> {
    /// The chunk's prepared images.
    im: &'a [f32],
    /// The visit's packed dy: `[vector][row][lanes]`.
    dy: &'a [f32],
    /// Per output vector: its start in `im` (image and position).
    srcs: &'a [usize],
    /// Per output vector, its output row.
    vrows: &'a [u32],
    /// The output rows where the taps read real inputs; the other vectors are skipped.
    real_rows: Range<u32>,
    /// Per output vector, its real lanes; empty where every vector is full.
    lens: &'a [u8],
    offs: &'a [usize],
    /// The chunk's first visit: the accumulators start at zero instead of `state`.
    first: bool,
    /// The block's real output channels (the sums written).
    rows: usize,
}

impl WgradTile<'_> {
    /// Adds the tile's products to the accumulators of `L` lanes (`state`: `[row][tap][L]`,
    /// the ISA's rows x vecs accumulators, empty where the chunk is one visit); with `out`,
    /// the last visit, writes the accumulators' lane sums instead: tap j of row i at
    /// `out[j * stride + i]`.
    unsafe fn run<const L: usize>(
        &self,
        isa: Isa,
        state: &mut [f32],
        out: Option<&mut [f32]>,
        stride: usize,
    ) {
        let acc_len = isa.rows() * isa.vecs() * L;
        debug_assert!(state.is_empty() || state.len() == acc_len);
        debug_assert!(state.len() == acc_len || (self.first && out.is_some()));
        debug_assert!(self.dy.len() >= self.srcs.len() * isa.rows() * L);
        debug_assert!(self.lens.is_empty() || self.lens.len() == self.srcs.len());
        debug_assert!(self.vrows.len() == self.srcs.len());
        if let Some(o) = &out {
            debug_assert!(o.len() > (self.offs.len() - 1) * stride + self.rows - 1);
        }
        let m = !self.lens.is_empty();
        if L == WIDE_LANES {
            debug_assert!(isa == Isa::Avx512);
            return match (self.offs.len(), m) {
                (3, false) => wide_rows::wgrad::<8, 3, false>(self, state, out, stride),
                (2, false) => wide_rows::wgrad::<8, 2, false>(self, state, out, stride),
                (_, false) => wide_rows::wgrad::<8, 1, false>(self, state, out, stride),
                (3, true) => wide_rows::wgrad::<8, 3, true>(self, state, out, stride),
                (2, true) => wide_rows::wgrad::<8, 2, true>(self, state, out, stride),
                (_, true) => wide_rows::wgrad::<8, 1, true>(self, state, out, stride),
            };
        }
        match (isa, self.offs.len(), m) {
            (Isa::Avx512, 3, false) => avx512::wgrad::<8, 3, false>(self, state, out, stride),
            (Isa::Avx512, 2, false) => avx512::wgrad::<8, 2, false>(self, state, out, stride),
            (Isa::Avx512, _, false) => avx512::wgrad::<8, 1, false>(self, state, out, stride),
            (Isa::Avx512, 3, true) => avx512::wgrad::<8, 3, true>(self, state, out, stride),
            (Isa::Avx512, 2, true) => avx512::wgrad::<8, 2, true>(self, state, out, stride),
            (Isa::Avx512, _, true) => avx512::wgrad::<8, 1, true>(self, state, out, stride),
            (Isa::Avx2, 2, false) => avx2::wgrad::<4, 2, false>(self, state, out, stride),
            (Isa::Avx2, _, false) => avx2::wgrad::<4, 1, false>(self, state, out, stride),
            (Isa::Avx2, 2, true) => avx2::wgrad::<4, 2, true>(self, state, out, stride),
            (Isa::Avx2, _, true) => avx2::wgrad::<4, 1, true>(self, state, out, stride),
        }
    }
}

/// The kernels, compiled once per instruction set (the same source; `$features` decides the
/// registers the compiler may use).
macro_rules! kernels {
    ($isa:ident, $features:literal) => {
        mod $isa {
            use super::*;

            /// `R` channels x `V` vectors: for every tap k of `t.taps` in order, `acc[i][j] +=
            /// a[k][i] * image[offs[k] + vector j]`.
            #[target_feature(enable = $features)]
            pub unsafe fn fwd<const R: usize, const V: usize>(mut t: FwdTile) {
                let mut src = [t.im.as_ptr(); V];
                for j in 0..V {
                    src[j] = t.im.as_ptr().add(t.vecs[j].src);
                }
                let mut acc = [[_mm256_setzero_ps(); V]; R];
                if t.accumulate {
                    for (i, row) in acc.iter_mut().enumerate().take(t.rows) {
                        for j in 0..V {
                            row[j] = _mm256_loadu_ps(t.load(i, j).as_ptr());
                        }
                    }
                }
                let (ap, op) = (t.a.as_ptr(), t.offs.as_ptr());
                for run in 0..t.taps.count {
                    let k0 = t.taps.first + run * t.taps.stride;
                    for k in k0..k0 + t.taps.len {
                        let o = *op.add(k);
                        let mut b = [_mm256_setzero_ps(); V];
                        for j in 0..V {
                            b[j] = _mm256_loadu_ps(src[j].add(o));
                        }
                        for (i, row) in acc.iter_mut().enumerate() {
                            let ai = _mm256_broadcast_ss(&*ap.add(k * R + i));
                            for j in 0..V {
                                row[j] = _mm256_fmadd_ps(ai, b[j], row[j]);
                            }
                        }
                    }
                }
                for (i, row) in acc.iter().enumerate().take(t.rows) {
                    for j in 0..V {
                        let mut v = [0f32; LANES];
                        _mm256_storeu_ps(v.as_mut_ptr(), row[j]);
                        t.store(i, j, &v);
                    }
                }
            }

            /// `R` channels x `T` taps: `acc[i][j] += dy[vector][row i] * (image[offs[j] +
            /// vector] masked to the vector's real lanes)` over the visit's vectors; the
            /// accumulators come from `state` (`[row][tap][8]` with the ISA's `vecs()` taps
            /// per row) or zero, and go back there or, lanes added, to `out`.
            #[target_feature(enable = $features)]
            pub unsafe fn wgrad<const R: usize, const T: usize, const MASKED: bool>(
                t: &WgradTile,
                state: &mut [f32],
                out: Option<&mut [f32]>,
                stride: usize,
            ) {
                let sst = state.len() / (R * LANES);
                let at = |i: usize, j: usize| (i * sst + j) * LANES;
                let mut acc = [[_mm256_setzero_ps(); T]; R];
                if !t.first {
                    for i in 0..R {
                        for j in 0..T {
                            acc[i][j] = _mm256_loadu_ps(state[at(i, j)..][..LANES].as_ptr());
                        }
                    }
                }
                let im = t.im.as_ptr();
                let mut b0 = [im; T];
                for j in 0..T {
                    b0[j] = im.add(t.offs[j]);
                }
                let (lo, span) = (t.real_rows.start, t.real_rows.len() as u32);
                for v in 0..t.srcs.len() {
                    if t.vrows.get_unchecked(v).wrapping_sub(lo) >= span {
                        continue;
                    }
                    let d = t.dy.as_ptr().add(v * R * LANES);
                    let src = *t.srcs.get_unchecked(v);
                    let mut b = [_mm256_setzero_ps(); T];
                    for j in 0..T {
                        b[j] = _mm256_loadu_ps(b0[j].add(src));
                    }
                    if MASKED {
                        let len = *t.lens.get_unchecked(v) as usize;
                        let mask =
                            _mm256_loadu_ps(LANE_MASKS.as_ptr().add(LANES - len).cast::<f32>());
                        for j in 0..T {
                            b[j] = _mm256_and_ps(b[j], mask);
                        }
                    }
                    for i in 0..R {
                        let di = _mm256_loadu_ps(d.add(i * LANES));
                        for j in 0..T {
                            acc[i][j] = _mm256_fmadd_ps(di, b[j], acc[i][j]);
                        }
                    }
                }
                let Some(out) = out else {
                    for i in 0..R {
                        for j in 0..T {
                            _mm256_storeu_ps(state[at(i, j)..][..LANES].as_mut_ptr(), acc[i][j]);
                        }
                    }
                    return;
                };
                for j in 0..T {
                    let mut sums = [0f32; R];
                    if R == 8 {
                        let col: [__m256; 8] = std::array::from_fn(|i| acc[i][j]);
                        _mm256_storeu_ps(sums.as_mut_ptr(), lane_sums8(col));
                    } else {
                        for i in 0..R {
                            let mut v = [0f32; LANES];
                            _mm256_storeu_ps(v.as_mut_ptr(), acc[i][j]);
                            sums[i] = lane_sum(&v);
                        }
                    }
                    let o = &mut out[j * stride..];
                    o[..t.rows].copy_from_slice(&sums[..t.rows]);
                }
            }

            /// `lane_sum` of 8 accumulators at once, the sums in order: the same additions
            /// (operands swapped at most), by transposing halves, pairs and single lanes.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn lane_sums8(a: [__m256; 8]) -> __m256 {
                // h[i] = lanes 0..4 + lanes 4..8 of a[i] (v0+v4, v1+v5, v2+v6, v3+v7), the
                // halves of a[i] and a[i + 4] side by side.
                let h: [__m256; 4] = std::array::from_fn(|i| {
                    _mm256_add_ps(
                        _mm256_permute2f128_ps::<0x20>(a[i], a[i + 4]),
                        _mm256_permute2f128_ps::<0x31>(a[i], a[i + 4]),
                    )
                });
                // q = (h0 + h2, h1 + h3) per accumulator: rows (0, 1 | 4, 5) and (2, 3 | 6, 7).
                let q01 = _mm256_add_ps(
                    _mm256_shuffle_ps::<0b01_00_01_00>(h[0], h[1]),
                    _mm256_shuffle_ps::<0b11_10_11_10>(h[0], h[1]),
                );
                let q23 = _mm256_add_ps(
                    _mm256_shuffle_ps::<0b01_00_01_00>(h[2], h[3]),
                    _mm256_shuffle_ps::<0b11_10_11_10>(h[2], h[3]),
                );
                // q0 + q1 per accumulator, rows 0..4 | 4..8.
                _mm256_add_ps(
                    _mm256_shuffle_ps::<0b10_00_10_00>(q01, q23),
                    _mm256_shuffle_ps::<0b11_01_11_01>(q01, q23),
                )
            }
        }
    };
}

kernels!(avx2, "avx2,fma");
kernels!(avx512, "avx2,fma,avx512f,avx512vl");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::conv::conv_out_size;

    #[allow(clippy::too_many_arguments)]
    fn geom(
        c: usize,
        m: usize,
        group: usize,
        hw: [usize; 2],
        k: [usize; 2],
        p: [usize; 2],
        s: [usize; 2],
        d: [usize; 2],
    ) -> ConvGeom {
        ConvGeom {
            im_channels: c,
            col_channels: m,
            group,
            im_shape: hw.to_vec(),
            col_shape: (0..2)
                .map(|i| conv_out_size(hw[i], k[i], p[i], s[i], d[i]).unwrap())
                .collect(),
            kernel: k.to_vec(),
            pad: p.to_vec(),
            stride: s.to_vec(),
            dilation: d.to_vec(),
            force_nd: false,
        }
    }

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.7133).sin()).collect()
    }

    /// The row tiles' weight-gradient order with vectors of `L` outputs, spelled out one
    /// value at a time: for every weight (group, tap k, output channel m), `L` lanes, lane l
    /// summing with fused multiply-adds, image by image and output vector by output vector
    /// (`L` outputs of a row from column x, lane l taking column x + l; a lane past a short
    /// vector's end adds `0 * 0`), then the lanes added as `lanes_sum` does. This order is
    /// part of crema's results: faster kernels must keep it.
    fn weight_grad_model<const L: usize>(
        g: &ConvGeom,
        num: usize,
        x: &[f32],
        dy: &[f32],
    ) -> Vec<f32> {
        let plan = Plan::new(g, L);
        let (mg, kdim, p) = (g.col_channels / g.group, g.kernel_dim(), g.col_spatial());
        let mut prepared = vec![0f32; num * plan.pr_len];
        plan.prepare_images(g, x, &mut prepared);
        let mut part = vec![0f32; g.weight_len()];
        for gi in 0..g.group {
            for k in 0..kdim {
                let off = plan.offs[gi * kdim + k];
                for m in 0..mg {
                    let mut lanes = [0f32; L];
                    for n in 0..num {
                        let d = &dy[n * g.col_dim() + (gi * mg + m) * p..];
                        let im = &prepared[n * plan.pr_len..];
                        for v in &plan.vectors {
                            for (l, acc) in lanes.iter_mut().enumerate() {
                                *acc = if l < v.len {
                                    d[v.dst + l].mul_add(im[off + v.src + l], *acc)
                                } else {
                                    0f32.mul_add(0.0, *acc)
                                };
                            }
                        }
                    }
                    part[(gi * kdim + k) * mg + m] = lanes_sum(&lanes);
                }
            }
        }
        part
    }

    /// The channel tiles' weight-gradient order (`wgrad_channels.rs`), one weight at a time:
    /// visit by visit, then column class by column class, row, image and column, a fused
    /// multiply-add each, padding included (its products are zero); and the bias sums, per
    /// channel in image, row, column order.
    fn weight_grad_channels_model(
        g: &ConvGeom,
        num: usize,
        x: &[f32],
        dy: &[f32],
    ) -> (Vec<f32>, Vec<f32>) {
        let plan = Plan::new(g, LANES);
        let (mg, kdim, p) = (g.col_channels / g.group, g.kernel_dim(), g.col_spatial());
        let (oh, ow, sh, wq) = (g.col_shape[0], g.col_shape[1], g.stride[0], plan.pr.wq);
        let mut prepared = vec![0f32; num * plan.pr_len];
        plan.prepare_images(g, x, &mut prepared);
        let visits = wgrad_channels::visits(num, oh, ow);
        let mut part = vec![0f32; g.weight_len()];
        for gi in 0..g.group {
            for k in 0..kdim {
                let off = plan.offs[gi * kdim + k];
                for m in 0..mg {
                    let mut acc = 0f32;
                    for v in &visits {
                        for cl in &plan.col_classes {
                            for oy in v.rows.clone() {
                                for n in v.images.clone() {
                                    let d = &dy[n * g.col_dim() + (gi * mg + m) * p..];
                                    let im = &prepared[n * plan.pr_len + oy * sh * wq..];
                                    for ox in cl.out.clone() {
                                        acc = d[oy * ow + ox].mul_add(im[off + ox], acc);
                                    }
                                }
                            }
                        }
                    }
                    part[(gi * kdim + k) * mg + m] = acc;
                }
            }
        }
        let bias = (0..g.col_channels)
            .map(|c| {
                (0..num)
                    .flat_map(|n| dy[n * g.col_dim() + c * p..][..p].iter())
                    .fold(0f32, |s, v| s + v)
            })
            .collect();
        (part, bias)
    }

    /// The forward's summation order, one output at a time: every tap k in the weights'
    /// order, padding included, added with a fused multiply-add to a sum that starts at 0.
    fn forward_model(g: &ConvGeom, num: usize, x: &[f32], w: &[f32]) -> Vec<f32> {
        let plan = Plan::new(g, LANES);
        let (mg, kdim, p) = (g.col_channels / g.group, g.kernel_dim(), g.col_spatial());
        let mut prepared = vec![0f32; plan.pr_len];
        let mut y = vec![0f32; num * g.col_dim()];
        for n in 0..num {
            plan.prepare(g, &x[n * g.im_dim()..], &mut prepared);
            for gi in 0..g.group {
                for m in 0..mg {
                    let wm = &w[(gi * mg + m) * kdim..][..kdim];
                    for v in &plan.vectors {
                        for l in 0..v.len {
                            let mut acc = 0f32;
                            for (k, &wk) in wm.iter().enumerate() {
                                let off = plan.offs[gi * kdim + k];
                                acc = wk.mul_add(prepared[off + v.src + l], acc);
                            }
                            y[n * g.col_dim() + (gi * mg + m) * p + v.dst + l] = acc;
                        }
                    }
                }
            }
        }
        y
    }

    #[test]
    fn forward_keeps_its_summation_order() {
        let Some(isa) = Isa::detect() else {
            println!("SKIPPED: this CPU lacks AVX2/FMA, the direct kernels never run");
            return;
        };
        // Every instruction set the CPU has (an AVX-512 CPU runs the AVX2 build too).
        let mut tiles = vec![(Isa::Avx2, Tiles::Rows)];
        if isa == Isa::Avx512 {
            tiles.push((isa, Tiles::Rows));
            tiles.push((isa, Tiles::WideRows));
            tiles.extend((2..=4).map(|vectors| (isa, Tiles::Channels { vectors })));
        } else {
            println!("SKIPPED (AVX-512 row, wide row and channel tiles): this CPU lacks AVX-512VL");
        }
        let cases = [
            // CIFAR-10's 5x5 layers at 8x8 and 16x16 (row classes of 1 and 2 vectors a row).
            (5, geom(8, 16, 1, [8, 8], [5, 5], [2, 2], [1, 1], [1, 1])),
            (3, geom(4, 9, 1, [16, 16], [5, 5], [2, 2], [1, 1], [1, 1])),
            (2, geom(6, 40, 1, [8, 8], [5, 5], [2, 2], [1, 1], [1, 1])),
            // Stride 2 with phase planes, dilation, groups, asymmetric padding.
            (4, geom(6, 10, 2, [11, 13], [3, 3], [1, 2], [2, 2], [1, 1])),
            (3, geom(6, 26, 2, [11, 13], [3, 3], [1, 2], [2, 2], [1, 1])),
            (2, geom(5, 8, 1, [10, 9], [3, 3], [3, 1], [1, 1], [2, 1])),
            (2, geom(5, 17, 1, [10, 9], [3, 3], [1, 3], [1, 1], [1, 2])),
            // Padding wider than the kernel: the edge rows and columns read padding only.
            (3, geom(3, 5, 1, [3, 20], [2, 3], [3, 1], [1, 1], [1, 1])),
            (3, geom(3, 11, 1, [3, 4], [2, 3], [3, 4], [1, 1], [1, 1])),
            // Taps over several passes (kdim 1134 > MAX_TAPS_PER_PASS), border classes.
            (2, geom(14, 9, 1, [9, 9], [9, 9], [4, 4], [1, 1], [1, 1])),
            // Channel tiles over several passes (kdim 4150 > channels::MAX_TAPS_PER_PASS).
            (1, geom(166, 10, 1, [4, 5], [5, 5], [2, 2], [1, 1], [1, 1])),
        ];
        for (num, g) in cases {
            assert!(handles(&g), "{g:?}");
            let x = values(num * g.im_dim(), 0.6);
            let w = values(g.weight_len(), 2.3);
            let want = forward_model(&g, num, &x, &w);
            for &(isa, t) in &tiles {
                if matches!(t, Tiles::Channels { .. }) && g.col_channels / g.group <= LANES {
                    continue;
                }
                let plan = ForwardPlan::with_tiles(&g, isa, t);
                let packed = plan.pack(&g, &w);
                // All images in one call (border classes of whole tiles), and one at a time
                // (row tiles: one class where a row has fewer vectors than a tile).
                let mut all = vec![f32::NAN; num * g.col_dim()];
                plan.run(&g, &packed, num, &x, &mut all);
                let mut each = vec![f32::NAN; num * g.col_dim()];
                for (xn, yn) in x.chunks(g.im_dim()).zip(each.chunks_mut(g.col_dim())) {
                    plan.run(&g, &packed, 1, xn, yn);
                }
                for (what, got) in [("together", &all), ("one by one", &each)] {
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{isa:?} {t:?} {g:?} {what} at {i}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn channel_weight_grad_keeps_its_summation_order() {
        if Isa::detect() != Some(Isa::Avx512) {
            println!("SKIPPED: this CPU lacks AVX-512VL, the channel tiles never run");
            return;
        }
        let cases = [
            // CIFAR-10's 5x5 layers: 8x8 (two images a visit), 16x16 (visits of rows).
            (5, geom(8, 32, 1, [8, 8], [5, 5], [2, 2], [1, 1], [1, 1])),
            (3, geom(4, 24, 1, [16, 16], [5, 5], [2, 2], [1, 1], [1, 1])),
            // Kernels wider than a tile (9 columns: two tiles a row), channels that fill no
            // block, groups, stride 2 (phase planes), dilation, asymmetric padding.
            (3, geom(3, 20, 1, [9, 11], [7, 9], [3, 4], [1, 1], [1, 1])),
            (2, geom(6, 26, 2, [11, 13], [3, 3], [1, 2], [2, 2], [1, 1])),
            (3, geom(5, 17, 1, [10, 9], [3, 3], [1, 3], [1, 1], [1, 2])),
            // Padding wider than the kernel: edge rows and columns read padding only.
            (4, geom(3, 11, 1, [3, 4], [2, 3], [3, 4], [1, 1], [1, 1])),
            // One output row wider than a visit (rows one at a time).
            (1, geom(2, 16, 1, [3, 150], [3, 3], [1, 1], [1, 1], [1, 1])),
        ];
        for (num, g) in cases {
            assert!(handles(&g), "{g:?}");
            let x = values(num * g.im_dim(), 0.4);
            let mut dy = values(num * g.col_dim(), 1.9);
            for v in dy.iter_mut().step_by(7) {
                *v = -0.0;
            }
            let (want, want_bias) = weight_grad_channels_model(&g, num, &x, &dy);
            let plan = Plan::new(&g, LANES);
            for vectors in 2..=4 {
                let mut got = vec![f32::NAN; g.weight_len()];
                let mut bias = vec![f32::NAN; g.col_channels];
                wgrad_channels::weight_grad_chunk(
                    &plan,
                    vectors,
                    &g,
                    num,
                    &x,
                    &dy,
                    &mut got,
                    Some(&mut bias),
                );
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{vectors} {g:?} at {i}: {a} vs {b}"
                    );
                }
                for (i, (a, b)) in bias.iter().zip(&want_bias).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{vectors} {g:?} bias {i}");
                }
            }
        }
    }

    #[test]
    fn channel_and_wide_weight_grads_are_as_accurate_as_the_row_tiles() {
        if Isa::detect() != Some(Isa::Avx512) {
            println!("SKIPPED: this CPU lacks AVX-512VL, the channel and wide tiles never run");
            return;
        }
        // CIFAR-10's conv3 over 25 images (one chunk of a batch of 100 on 4+ threads): each
        // weight sums 1600 products. Against a double-precision sum, the channel tiles'
        // sequential sums and the wide row tiles' 16-lane sums may not be worse than twice
        // the row tiles' 8-lane sums.
        let (num, g) = (25, geom(32, 64, 1, [8, 8], [5, 5], [2, 2], [1, 1], [1, 1]));
        let x = values(num * g.im_dim(), 0.4);
        let dy = values(num * g.col_dim(), 1.9);
        let plan = Plan::new(&g, LANES);
        let mut want = vec![0f64; g.weight_len()];
        let (kdim, p) = (g.kernel_dim(), g.col_spatial());
        let mut prepared = vec![0f32; plan.pr_len];
        for n in 0..num {
            plan.prepare(&g, &x[n * g.im_dim()..], &mut prepared);
            for k in 0..kdim {
                for m in 0..g.col_channels {
                    let d = &dy[n * g.col_dim() + m * p..][..p];
                    for v in &plan.vectors {
                        for l in 0..v.len {
                            want[k * g.col_channels + m] +=
                                d[v.dst + l] as f64 * prepared[plan.offs[k] + v.src + l] as f64;
                        }
                    }
                }
            }
        }
        let error = |got: &[f32]| {
            let scale = want.iter().fold(0f64, |a, w| a.max(w.abs()));
            got.iter()
                .zip(&want)
                .fold(0f64, |e, (a, w)| e.max((*a as f64 - w).abs() / scale))
        };
        let mut rows = vec![0f32; g.weight_len()];
        weight_grad_chunk_isa::<LANES>(Isa::Avx512, &g, num, &x, &dy, &mut rows, None);
        let mut wide = vec![0f32; g.weight_len()];
        weight_grad_chunk_isa::<WIDE_LANES>(Isa::Avx512, &g, num, &x, &dy, &mut wide, None);
        let mut chan = vec![0f32; g.weight_len()];
        wgrad_channels::weight_grad_chunk(&plan, 4, &g, num, &x, &dy, &mut chan, None);
        let (er, ew, ec) = (error(&rows), error(&wide), error(&chan));
        println!(
            "relative error: row tiles {er:.2e}, wide row tiles {ew:.2e}, channel tiles {ec:.2e}"
        );
        let bound = 2.0 * er.max(1e-7);
        assert!(
            er < 1e-5 && ew <= bound && ec <= bound,
            "rows {er:e}, wide rows {ew:e}, channels {ec:e}"
        );
    }

    #[test]
    fn weight_grad_keeps_its_summation_order() {
        let Some(best) = Isa::detect() else {
            println!("SKIPPED: this CPU lacks AVX2/FMA, the direct kernels never run");
            return;
        };
        // The row tiles of every instruction set the CPU has, and the wide ones.
        let wide = best == Isa::Avx512;
        if !wide {
            println!("SKIPPED (AVX-512 row and wide row tiles): this CPU lacks AVX-512VL");
        }
        let cases = [
            // ResNet-like: many vectors per image (visits inside an image), 8x8 planes
            // (several images per visit), stride 2 (phase planes).
            (3, geom(16, 16, 1, [32, 32], [3, 3], [1, 1], [1, 1], [1, 1])),
            (9, geom(8, 16, 1, [8, 8], [3, 3], [1, 1], [1, 1], [1, 1])),
            (4, geom(16, 32, 1, [32, 32], [3, 3], [1, 1], [2, 2], [1, 1])),
            // Odd sizes: short vectors, channels not a multiple of the tile, taps not a
            // multiple of 3, groups, dilation, asymmetric stride and padding.
            (3, geom(5, 11, 1, [13, 11], [3, 2], [1, 0], [1, 1], [1, 1])),
            (2, geom(6, 10, 2, [9, 21], [5, 3], [2, 1], [1, 2], [1, 1])),
            (5, geom(9, 10, 1, [7, 10], [3, 3], [2, 2], [1, 1], [2, 2])),
            (2, geom(4, 3, 1, [17, 19], [4, 4], [0, 3], [3, 2], [1, 2])),
            (1, geom(3, 20, 1, [28, 28], [5, 5], [0, 0], [1, 1], [1, 1])),
            (7, geom(2, 9, 1, [3, 5], [2, 2], [0, 0], [1, 1], [1, 1])),
            // Rows left out: CIFAR-10's conv3 shape (tap blocks across kernel rows), and
            // padding wider than the kernel (tap blocks whose rows read nothing).
            (4, geom(8, 16, 1, [8, 8], [5, 5], [2, 2], [1, 1], [1, 1])),
            (3, geom(3, 5, 1, [3, 20], [2, 3], [3, 1], [1, 1], [1, 1])),
        ];
        for (num, g) in cases {
            assert!(handles(&g), "{g:?}");
            let x = values(num * g.im_dim(), 0.4);
            let mut dy = values(num * g.col_dim(), 1.9);
            // Zeros of both signs: a sum of -0 products differs from +0 only through
            // the lanes' order, which the model pins down too.
            for v in dy.iter_mut().step_by(7) {
                *v = -0.0;
            }
            weight_grad_order_case::<LANES>(Isa::Avx2, num, &g, &x, &dy);
            if wide {
                weight_grad_order_case::<LANES>(Isa::Avx512, num, &g, &x, &dy);
                weight_grad_order_case::<WIDE_LANES>(Isa::Avx512, num, &g, &x, &dy);
            }
        }
    }

    /// `weight_grad_keeps_its_summation_order` for the row tiles of `isa` with vectors of
    /// `L` outputs, on one case: the weights and the bias sums against the models, and the
    /// weights the same bits without the bias.
    fn weight_grad_order_case<const L: usize>(
        isa: Isa,
        num: usize,
        g: &ConvGeom,
        x: &[f32],
        dy: &[f32],
    ) {
        let want = weight_grad_model::<L>(g, num, x, dy);
        let mut got = vec![f32::NAN; g.weight_len()];
        let mut bias = vec![f32::NAN; g.col_channels];
        weight_grad_chunk_isa::<L>(isa, g, num, x, dy, &mut got, Some(&mut bias));
        let mut alone = vec![f32::NAN; g.weight_len()];
        weight_grad_chunk_isa::<L>(isa, g, num, x, dy, &mut alone, None);
        for (i, ((a, b), c)) in got.iter().zip(&want).zip(&alone).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{isa:?} {L} lanes {g:?} num {num} at {i}: {a} vs {b}"
            );
            assert_eq!(a.to_bits(), c.to_bits(), "{g:?} without the bias at {i}");
        }
        // The bias sums: per channel, `L` lanes over the output vectors in order (a lane past
        // a short vector's end adds 0), then the lanes as `lanes_sum` adds them.
        let (mg, p) = (g.col_channels / g.group, g.col_spatial());
        let plan = Plan::new(g, L);
        for (c, got) in bias.iter().enumerate() {
            let mut lanes = [0f32; L];
            for n in 0..num {
                let d = &dy[n * g.col_dim() + c * p..];
                for v in &plan.vectors {
                    for (l, s) in lanes.iter_mut().enumerate() {
                        *s += if l < v.len { d[v.dst + l] } else { 0.0 };
                    }
                }
            }
            let want = lanes_sum(&lanes);
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{isa:?} {L} lanes {g:?} bias {c} (of {mg} a group)"
            );
        }
    }
}
