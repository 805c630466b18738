//! The solver's update on the GPU: the same steps as the host path in `train.rs` (clip,
//! normalize, regularize, update value, `w -= step`), done by the fused kernels of
//! `kernels/solver.cu` on memory that stays on the device: weights, gradients and history.
//!
//! Nothing is read back, with one exception: when `clip_gradients` is set and the solver logs,
//! the squared norm (4 bytes) comes down once per iteration for Caffe's clipping line. The
//! clipping itself is decided on the device from that sum, so a quiet solver reads nothing.
//!
//! Frozen blobs: the host path skips a blob whose local rate is 0 when its gradient, its weight
//! decay term and its history are all zero, which it finds out by reading them. Reading them
//! here would be a copy per blob per iteration, so the GPU path asks only what is known without
//! reading: a gradient or history buffer that was filled with zeros and not written since
//! (`Mem::is_known_zero`; a layer that computes no parameter gradient, the usual frozen case,
//! leaves the diff the solver cleared in that state), and a zero `local_decay`. When that does
//! not settle it, the update runs; with a zero rate, gradient and history it changes nothing
//! (momentum x 0 + 0 x g = 0, and the step is 0), so skipping is only a saving, never a change
//! of results. A blob whose layer does compute a gradient despite lr_mult 0 is updated as Caffe
//! would: momentum restored from a snapshot moves it, exactly as on the host.

use anyhow::{anyhow, Result};
use cudarc::driver::CudaSlice;

use super::update::SolverKind;
use super::Solver;
use crate::backend::cuda::gpu::{self, Gpu, Traffic};
use crate::backend::cuda::kernels::{sum_chunks, Update};

/// Device memory of the clipping reduction: one f64 partial per chunk of every learnable blob,
/// and the squared norm.
pub struct ClipScratch {
    partials: CudaSlice<f64>,
    sumsq: CudaSlice<f32>,
}

impl ClipScratch {
    fn new(g: &Gpu, blob_counts: impl Iterator<Item = usize>) -> Result<ClipScratch> {
        let chunks: usize = blob_counts.map(sum_chunks).sum::<usize>().max(1);
        let partials = g.stream().alloc_zeros::<f64>(chunks).map_err(|e| {
            anyhow!(
                "allocating the gradient-clipping scratch ({} bytes) on the GPU: {e}",
                chunks * 8
            )
        })?;
        Ok(ClipScratch {
            partials,
            sumsq: g.alloc_zeros(1)?,
        })
    }
}

impl Solver {
    /// `ApplyUpdate` on the device (rate already computed and logged by the caller).
    pub(super) fn apply_update_gpu(&mut self, g: &Gpu, rate: f32, l1: bool) -> Result<()> {
        self.clip_gradients_gpu(g)?;
        let k = g.kernels();
        let s = g.stream();
        let n = self.net.learnable.len();
        let hp = self.hyper();
        for i in 0..n {
            let l = &self.net.learnable[i];
            let local_rate = rate * l.lr_mult;
            let local_decay = self.param.weight_decay() * l.decay_mult;
            let data_buf = l.blob.data_buf();
            let diff_buf = l.blob.diff_buf();
            if local_rate == 0.0
                && local_decay == 0.0
                && diff_buf.is_known_zero()
                && self.history_of(i).all(|h| h.is_known_zero())
            {
                continue;
            }
            let u = Update {
                local_rate,
                local_decay,
                l1,
                iter_size: self.param.iter_size(),
                // The step is local_rate x (...): with rate 0 the history moves as Caffe's and
                // the weights must not (see train.rs).
                apply: !(local_rate == 0.0 && self.kind.rate_scales_step()),
            };
            let what = || format!("solver update of learnable parameter {i}");
            let mut w = data_buf.device_mut(g)?;
            let mut d = diff_buf.device_mut(g)?;
            let mut h1 = self.history[i].device_mut(g)?;
            match self.kind {
                SolverKind::Sgd => k.solver_sgd(s, &mut *w, &mut *d, &mut *h1, &u, hp.momentum),
                SolverKind::Nesterov => {
                    k.solver_nesterov(s, &mut *w, &mut *d, &mut *h1, &u, hp.momentum)
                }
                SolverKind::AdaGrad => {
                    k.solver_adagrad(s, &mut *w, &mut *d, &mut *h1, &u, hp.delta)
                }
                SolverKind::RmsProp => {
                    k.solver_rmsprop(s, &mut *w, &mut *d, &mut *h1, &u, hp.rms_decay, hp.delta)
                }
                SolverKind::AdaDelta => {
                    let mut h2 = self.history[n + i].device_mut(g)?;
                    k.solver_adadelta(
                        s,
                        &mut *w,
                        &mut *d,
                        &mut *h1,
                        &mut *h2,
                        &u,
                        hp.momentum,
                        hp.delta,
                    )
                }
                SolverKind::Adam => {
                    let mut h2 = self.history[n + i].device_mut(g)?;
                    k.solver_adam(
                        s,
                        &mut *w,
                        &mut *d,
                        &mut *h1,
                        &mut *h2,
                        &u,
                        hp.momentum,
                        hp.momentum2,
                        hp.delta,
                        hp.iter,
                    )
                }
            }
            .map_err(|e| e.context(what()))?;
        }
        Ok(())
    }

    /// Caffe's `ClipGradients` on the device: the global L2 norm of every learnable gradient
    /// (fixed-order reduction), then every gradient scaled by clip / norm when norm > clip, the
    /// comparison made by the scaling kernel itself.
    fn clip_gradients_gpu(&mut self, g: &Gpu) -> Result<()> {
        let clip = self.param.clip_gradients();
        if clip < 0.0 {
            return Ok(());
        }
        if self.clip_scratch.is_none() {
            let counts = self.net.learnable.iter().map(|l| l.blob.count());
            self.clip_scratch = Some(ClipScratch::new(g, counts)?);
        }
        let scratch = self.clip_scratch.as_mut().expect("allocated above");
        let k = g.kernels();
        let s = g.stream();
        // Gradients known to be zero add nothing: they are neither read nor scaled.
        let grads: Vec<_> = self
            .net
            .learnable
            .iter()
            .map(|l| l.blob.diff_buf())
            .filter(|d| !d.is_known_zero())
            .collect();
        let mut used = 0;
        for d in &grads {
            let x = d.device(g)?;
            let mut rest = scratch.partials.slice_mut(used..);
            used += k.solver_sumsq_partials(s, &*x, &mut rest)?;
        }
        k.solver_sumsq_finish(s, &scratch.partials, used, &mut scratch.sumsq)?;
        for d in &grads {
            let mut x = d.device_mut(g)?;
            k.solver_clip_scale(s, &mut *x, &scratch.sumsq, clip)?;
        }
        if self.verbose {
            // The log line needs the norm on the host: 4 bytes, counted like every copy.
            let mut sumsq = [0f32];
            gpu::download(&scratch.sumsq, &mut sumsq)?;
            let norm = sumsq[0].sqrt();
            if norm > clip {
                self.log_clipping(norm, clip, clip / norm);
            }
        }
        Ok(())
    }
}

/// The `CREMA_GPU_TRAFFIC` log line of one iteration: what moved between host and device
/// during its forward/backward passes and update, and during the test pass run before it.
pub fn traffic_line(iter: i32, train: &Traffic, test: Option<&Traffic>) -> String {
    let part = |t: &Traffic| {
        format!(
            "up {} B in {} copies, down {} B in {} copies",
            t.h2d_bytes, t.h2d_copies, t.d2h_bytes, t.d2h_copies
        )
    };
    match test {
        Some(t) => format!(
            "GPU traffic, iteration {iter}: {} (of which the test pass: {})",
            part(train),
            part(t)
        ),
        None => format!("GPU traffic, iteration {iter}: {}", part(train)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_line_names_both_directions_and_the_test_pass() {
        let t = Traffic {
            h2d_bytes: 200_960,
            h2d_copies: 2,
            d2h_bytes: 4,
            d2h_copies: 1,
        };
        assert_eq!(
            traffic_line(7, &t, None),
            "GPU traffic, iteration 7: up 200960 B in 2 copies, down 4 B in 1 copies"
        );
        let line = traffic_line(7, &t, Some(&Traffic::default()));
        assert!(
            line.ends_with("(of which the test pass: up 0 B in 0 copies, down 0 B in 0 copies)")
        );
    }
}
