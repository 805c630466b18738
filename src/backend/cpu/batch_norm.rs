//! BatchNorm arithmetic over blobs laid out as (num, channels, spatial): per-channel batch
//! statistics, normalisation, the running-statistics update and both backward formulas.
//!
//! Per-channel reductions are made block of images by block of images in a fixed order
//! (`sums::block_sums`: `sums::Lanes` over each block's planes, the blocks merged in order),
//! so the result does not depend on the thread count; blocks are spread over threads when
//! the blob is large enough to pay for it.

use rayon::prelude::*;

use super::activation::Io;
use super::sums::{block_sums, sum_and_dot, Lanes};
use super::wide::Wide;

/// Below this many elements a single thread is faster than spawning.
const PAR_MIN: usize = 1 << 15;

/// Runs `f(plane_index, out_plane)` over the (n, c) planes of `out` (each `spatial` long).
fn per_plane<F>(out: &mut [f32], spatial: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if spatial == 0 || out.is_empty() {
        return;
    }
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(spatial)
            .enumerate()
            .for_each(|(i, p)| f(i, p));
    } else {
        out.chunks_mut(spatial)
            .enumerate()
            .for_each(|(i, p)| f(i, p));
    }
}

/// Batch mean and biased variance of every channel (two passes: the variance is the mean of
/// `(x - mean)^2`, as Caffe computes it).
pub fn bn_batch_stats(
    x: &[f32],
    num: usize,
    channels: usize,
    spatial: usize,
    mean: &mut [f32],
    var: &mut [f32],
) {
    batch_stats_at(Wide::detected(), x, num, channels, spatial, mean, var)
}

fn batch_stats_at(
    wide: Wide,
    x: &[f32],
    num: usize,
    channels: usize,
    spatial: usize,
    mean: &mut [f32],
    var: &mut [f32],
) {
    let m = (num * spatial) as f64;
    let plane = |n: usize, c: usize| {
        let base = (n * channels + c) * spatial;
        &x[base..base + spatial]
    };
    let big = x.len() >= PAR_MIN;
    let sums = block_sums(num, channels, big, |images, c0, out: &mut [Lanes]| {
        wide.run(
            #[inline(always)]
            || {
                for n in images.clone() {
                    for (j, s) in out.iter_mut().enumerate() {
                        s.add(plane(n, c0 + j));
                    }
                }
            },
        )
    });
    for (o, s) in mean.iter_mut().zip(&sums) {
        *o = (s.total() / m) as f32;
    }
    let mean: &[f32] = mean;
    let squares = block_sums(num, channels, big, |images, c0, out: &mut [Lanes]| {
        wide.run(
            #[inline(always)]
            || {
                for n in images.clone() {
                    for (j, s) in out.iter_mut().enumerate() {
                        let (c, mean_c) = (c0 + j, mean[c0 + j]);
                        s.add_map(
                            plane(n, c),
                            #[inline(always)]
                            |v| {
                                let d = (v - mean_c) as f64;
                                d * d
                            },
                        );
                    }
                }
            },
        )
    });
    for (o, s) in var.iter_mut().zip(&squares) {
        *o = (s.total() / m) as f32;
    }
}

/// The statistics global mode uses: the stored sums divided by the stored factor
/// (`s = 0` when the factor is 0, so an untrained layer normalises with mean 0, variance 0).
pub fn bn_global_stats(
    mean_sum: &[f32],
    var_sum: &[f32],
    factor: f32,
    mean: &mut [f32],
    var: &mut [f32],
) {
    let s = if factor == 0.0 { 0.0 } else { 1.0 / factor };
    for (m, &b) in mean.iter_mut().zip(mean_sum) {
        *m = s * b;
    }
    for (v, &b) in var.iter_mut().zip(var_sum) {
        *v = s * b;
    }
}

/// Moving-average update of the stored statistics, done by every training-mode forward:
/// `factor = maf*factor + 1`, `mean_sum = maf*mean_sum + mean`,
/// `var_sum = maf*var_sum + m/(m-1)*var` (the unbiasing factor is 1 when `m == 1`).
pub fn bn_update_running(
    mean: &[f32],
    var: &[f32],
    m: usize,
    maf: f32,
    mean_sum: &mut [f32],
    var_sum: &mut [f32],
    factor: &mut f32,
) {
    *factor = *factor * maf + 1.0;
    for (b, &v) in mean_sum.iter_mut().zip(mean) {
        *b = *b * maf + v;
    }
    let correction = if m > 1 {
        m as f32 / (m - 1) as f32
    } else {
        1.0
    };
    for (b, &v) in var_sum.iter_mut().zip(var) {
        *b = *b * maf + correction * v;
    }
}

/// `std[c] = sqrt(var[c] + eps)`.
pub fn bn_std(var: &[f32], eps: f32, std: &mut [f32]) {
    for (s, &v) in std.iter_mut().zip(var) {
        *s = (v + eps).sqrt();
    }
}

/// Runs `f(plane_index, input_plane, output_plane)` over the (n, c) planes of an element-wise
/// op, in parallel for large blobs; in place the input is the output (read before written).
fn per_plane_io<F>(io: Io, spatial: usize, f: F)
where
    F: Fn(usize, Option<&[f32]>, &mut [f32]) + Sync + Send,
{
    if spatial == 0 || io.is_empty() {
        return;
    }
    let par = io.len() >= PAR_MIN;
    match io {
        Io::Separate(x, y) => {
            if par {
                y.par_chunks_mut(spatial)
                    .zip(x.par_chunks(spatial))
                    .enumerate()
                    .for_each(|(i, (o, x))| f(i, Some(x), o));
            } else {
                for (i, (o, x)) in y.chunks_mut(spatial).zip(x.chunks(spatial)).enumerate() {
                    f(i, Some(x), o);
                }
            }
        }
        Io::InPlace(y) => per_plane(y, spatial, |i, o| f(i, None, o)),
    }
}

/// `y = (x - mean[c]) / std[c]`, written both to the layer's output and to `x_norm` (kept for
/// backward, since a later in-place layer may overwrite the output) in one pass.
#[allow(clippy::too_many_arguments)]
pub fn bn_normalize(
    io: Io,
    num: usize,
    channels: usize,
    spatial: usize,
    mean: &[f32],
    std: &[f32],
    x_norm: &mut [f32],
) {
    let len = io.len();
    debug_assert_eq!(len, num * channels * spatial);
    if spatial == 0 || len == 0 {
        return;
    }
    let x_norm = &mut x_norm[..len];
    let plane = |p: usize, x: Option<&[f32]>, out: &mut [f32], keep: &mut [f32]| {
        let c = p % channels;
        let (mu, sd) = (mean[c], std[c]);
        let n = |v: f32| (v - mu) / sd;
        match x {
            Some(x) => {
                for ((o, k), &v) in out.iter_mut().zip(keep.iter_mut()).zip(x) {
                    *o = n(v);
                    *k = *o;
                }
            }
            None => {
                for (o, k) in out.iter_mut().zip(keep.iter_mut()) {
                    *o = n(*o);
                    *k = *o;
                }
            }
        }
    };
    let par = len >= PAR_MIN;
    match io {
        Io::Separate(x, y) if par => y
            .par_chunks_mut(spatial)
            .zip(x_norm.par_chunks_mut(spatial))
            .zip(x.par_chunks(spatial))
            .enumerate()
            .for_each(|(p, ((o, k), x))| plane(p, Some(x), o, k)),
        Io::Separate(x, y) => {
            let planes = y.chunks_mut(spatial).zip(x_norm.chunks_mut(spatial));
            for (p, ((o, k), x)) in planes.zip(x.chunks(spatial)).enumerate() {
                plane(p, Some(x), o, k);
            }
        }
        Io::InPlace(y) if par => y
            .par_chunks_mut(spatial)
            .zip(x_norm.par_chunks_mut(spatial))
            .enumerate()
            .for_each(|(p, (o, k))| plane(p, None, o, k)),
        Io::InPlace(y) => {
            for (p, (o, k)) in y
                .chunks_mut(spatial)
                .zip(x_norm.chunks_mut(spatial))
                .enumerate()
            {
                plane(p, None, o, k);
            }
        }
    }
}

/// Training-mode gradient: `dx = (dy - mean(dy) - mean(dy*y)*y) / std`, the means taken over
/// the `num*spatial` positions of each channel; `y` is the normalised output. In place (`dy`
/// and `dx` one buffer) the sums are taken before any value is overwritten.
pub fn bn_backward_train(
    d: Io,
    y: &[f32],
    std: &[f32],
    num: usize,
    channels: usize,
    spatial: usize,
) {
    let (sum_dy_y, sum_dy): (Vec<f32>, Vec<f32>) = {
        let dy: &[f32] = match &d {
            Io::Separate(dy, _) => dy,
            Io::InPlace(dy) => dy,
        };
        sum_and_dot(dy, y, num, channels, spatial, dy.len() >= PAR_MIN)
            .into_iter()
            .map(|(sum, dot)| (dot as f32, sum as f32))
            .unzip()
    };
    let neg_inv_m = -1.0 / (num * spatial) as f32;
    per_plane_io(d, spatial, |p, dy, out| {
        let c = p % channels;
        let ys = &y[p * spatial..(p + 1) * spatial];
        let (a, b, sd) = (sum_dy_y[c], sum_dy[c], std[c]);
        let f = |g: f32, v: f32| (g + (v * a + b) * neg_inv_m) / sd;
        match dy {
            Some(dy) => {
                for ((o, &g), &v) in out.iter_mut().zip(dy).zip(ys) {
                    *o = f(g, v);
                }
            }
            None => {
                for (o, &v) in out.iter_mut().zip(ys) {
                    *o = f(*o, v);
                }
            }
        }
    });
}

/// Global-mode gradient (statistics are constants): `dx = dy / std[c]`.
pub fn bn_backward_global(d: Io, std: &[f32], channels: usize, spatial: usize) {
    per_plane_io(d, spatial, |p, dy, out| {
        let sd = std[p % channels];
        match dy {
            Some(dy) => {
                for (o, &g) in out.iter_mut().zip(dy) {
                    *o = g / sd;
                }
            }
            None => out.iter_mut().for_each(|o| *o /= sd),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::wide::bits;

    #[test]
    fn stats_and_running_update() {
        // num 2, channels 2, spatial 2: channel 0 = {1,2,3,4}, channel 1 = {0,0,2,2}.
        let x = [1., 2., 0., 0., 3., 4., 2., 2.];
        let (mut mean, mut var) = ([0f32; 2], [0f32; 2]);
        bn_batch_stats(&x, 2, 2, 2, &mut mean, &mut var);
        assert_eq!(mean, [2.5, 1.0]);
        assert_eq!(var, [1.25, 1.0]);
        let (mut ms, mut vs, mut f) = ([1f32, 1.], [0f32, 0.], 2f32);
        bn_update_running(&mean, &var, 4, 0.5, &mut ms, &mut vs, &mut f);
        assert_eq!(f, 2.0);
        assert_eq!(ms, [3.0, 1.5]);
        assert!((vs[0] - 1.25 * 4.0 / 3.0).abs() < 1e-6);
        let (mut gm, mut gv) = ([0f32; 2], [0f32; 2]);
        bn_global_stats(&ms, &vs, 0.0, &mut gm, &mut gv);
        assert_eq!(gm, [0.0, 0.0]);
    }

    #[test]
    fn statistics_merge_blocks_of_images_in_order() {
        // Against a plain model: each channel's planes summed block of images by block of
        // images (`sums::image_block`), the blocks' lanes added in block order. Batches with
        // several images per block, a short last block, empty blocks and fewer blocks than
        // threads, on 1, 2, 3 and 5 threads; all but the first large enough to run in
        // parallel.
        use crate::backend::cpu::sums::{image_block, Merge, IMAGE_BLOCKS};
        for (num, ch, sp) in [
            (2, 40, 64),
            (20, 7, 300),
            (9, 64, 64),
            (3, 5, 4096),
            (5, 2000, 4),
        ] {
            // Exponents over 81 binades, so that even the double sums round (and the order of
            // the additions shows).
            let x: Vec<f32> = (0..num * ch * sp)
                .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 2f32.powi((i * 31 % 81) as i32 - 40))
                .collect();
            let m = (num * sp) as f64;
            let channel_sum = |c: usize, f: &dyn Fn(f32) -> f64| {
                let mut total = Lanes::default();
                for b in 0..IMAGE_BLOCKS {
                    let mut part = Lanes::default();
                    for n in image_block(num, b) {
                        let base = (n * ch + c) * sp;
                        part.add_map(&x[base..base + sp], f);
                    }
                    total.merge(&part);
                }
                total.total()
            };
            let (mut want_mean, mut want_var) = (vec![0f32; ch], vec![0f32; ch]);
            for c in 0..ch {
                let mean_c = (channel_sum(c, &|v| v as f64) / m) as f32;
                want_mean[c] = mean_c;
                let sq = |v: f32| ((v - mean_c) as f64) * ((v - mean_c) as f64);
                want_var[c] = (channel_sum(c, &sq) / m) as f32;
            }
            for threads in [1, 2, 3, 5] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let (mut mean, mut var) = (vec![0f32; ch], vec![0f32; ch]);
                pool.install(|| bn_batch_stats(&x, num, ch, sp, &mut mean, &mut var));
                assert_eq!(
                    bits(&mean),
                    bits(&want_mean),
                    "{num}x{ch}x{sp} on {threads}"
                );
                assert_eq!(bits(&var), bits(&want_var), "{num}x{ch}x{sp} on {threads}");
            }
        }
    }

    #[test]
    fn statistics_have_the_same_bits_in_every_build() {
        let levels = Wide::available();
        println!("builds compared: {levels:?}");
        // Planes with and without a remainder past the 16 lanes, one too short for a lane run.
        for (num, ch, sp) in [
            (3, 4, 37),
            (2, 3, 64),
            (5, 2, 7),
            (2, 40, 1024),
            (20, 3, 600),
        ] {
            let x: Vec<f32> = (0..num * ch * sp)
                .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 0.0137 + (i % ch) as f32)
                .collect();
            let run = |w: Wide| {
                let (mut mean, mut var) = (vec![0f32; ch], vec![0f32; ch]);
                batch_stats_at(w, &x, num, ch, sp, &mut mean, &mut var);
                (bits(&mean), bits(&var))
            };
            let base = run(Wide::Base);
            for &w in &levels {
                assert_eq!(run(w), base, "{w:?} {num}x{ch}x{sp}");
            }
        }
    }
}
