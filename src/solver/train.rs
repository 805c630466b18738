//! Caffe's training loop (`Solver::Solve`, `Step`, `Test`, `ApplyUpdate`) and its log lines,
//! which log parsers read.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::lr_policy::learning_rate;
use super::update::{compute_update_value, normalize_regularize};
use super::{Action, Solver};
use crate::net::Net;
use crate::util::glog::fmt_g;
use crate::util::progress::ProgressLine;

/// How a `solve` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolveOutcome {
    Done,
    StoppedEarly,
}

/// Per-test-net results of one test pass: (output name, mean value, loss weight).
pub type TestScores = Vec<(String, f32, f32)>;

impl Solver {
    fn log(&self, msg: String) {
        if self.verbose {
            crate::info!("{msg}");
        }
    }

    /// Trains from the current iteration to max_iter (Caffe's `Solve`), optionally resuming.
    pub fn solve(&mut self, resume: Option<&std::path::Path>) -> Result<SolveOutcome> {
        self.log(format!("Solving {}", self.net.name));
        self.log(format!("Learning Rate Policy: {}", self.param.lr_policy()));
        if let Some(r) = resume {
            self.log(format!(
                "Restoring previous solver status from {}",
                r.display()
            ));
            self.restore(r)?;
        }
        let start_iter = self.iter;
        let started = Instant::now();
        let wait_before = data_wait(&self.net);
        self.testing = Duration::ZERO;
        if self.show_progress {
            self.progress = Some(ProgressLine::new(
                self.iter,
                self.param.max_iter(),
                self.images_per_iteration(),
            ));
        }
        let stepped = self.step(self.param.max_iter() - self.iter);
        // Wiped now, not when the solver is dropped: the lines below are the run's last.
        self.progress = None;
        let stopped = stepped?;
        if self.param.snapshot_after_train()
            && (self.param.snapshot() == 0 || self.iter % self.param.snapshot() != 0)
            && self.last_snapshot_iter != Some(self.iter)
        {
            self.snapshot()?;
        }
        if stopped {
            self.log_throughput(
                self.iter - start_iter,
                started.elapsed(),
                data_wait(&self.net).saturating_sub(wait_before),
            );
            self.log("Optimization stopped early.".into());
            return Ok(SolveOutcome::StoppedEarly);
        }
        if self.param.display() > 0 && self.iter % self.param.display() == 0 {
            let loss = self.net.forward(&mut self.rng)?;
            self.update_smoothed_loss(loss, start_iter);
            self.log(format!(
                "Iteration {}, loss = {}",
                self.iter,
                fmt_g(self.smoothed_loss as f64)
            ));
            let (it, l) = (self.iter, self.smoothed_loss);
            if let Some(r) = self.record.as_mut() {
                r.final_loss = Some((it, l));
            }
        }
        if self.param.test_interval() > 0 && self.iter % self.param.test_interval() == 0 {
            self.test_all()?;
        }
        self.log_throughput(
            self.iter - start_iter,
            started.elapsed(),
            data_wait(&self.net).saturating_sub(wait_before),
        );
        self.log("Optimization Done.".into());
        Ok(SolveOutcome::Done)
    }

    /// Images one iteration trains on: the batch of the train net's first input layer (a layer
    /// without bottoms) times iter_size; 0 when the net has none.
    pub fn images_per_iteration(&self) -> usize {
        self.net
            .layers
            .iter()
            .find(|e| e.bottoms.is_empty() && !e.tops.is_empty())
            .and_then(|e| self.net.blobs[e.tops[0]].shape().first().copied())
            .map_or(0, |n| n * self.param.iter_size().max(1) as usize)
    }

    /// The run's closing summary: training time apart from testing, images/s, and the share of
    /// training time the train net spent waiting for its data layers. Worded so that log
    /// parsers skip it (no `Iteration N`, `lr =` or `net output #`).
    fn log_throughput(&self, iters: i32, total: Duration, data_wait: Duration) {
        self.log(throughput_message(
            iters,
            self.images_per_iteration(),
            total,
            self.testing,
            data_wait,
        ));
    }

    fn update_smoothed_loss(&mut self, loss: f32, start_iter: i32) {
        let avg = self.param.average_loss() as usize;
        if self.losses.len() < avg {
            self.losses.push(loss);
            let n = self.losses.len() as f32;
            self.smoothed_loss = (self.smoothed_loss * (n - 1.0) + loss) / n;
        } else {
            let idx = ((self.iter - start_iter) as usize) % avg;
            self.smoothed_loss += (loss - self.losses[idx]) / avg as f32;
            self.losses[idx] = loss;
        }
    }

    /// The pending action, consumed (Stop stays: it ends the run).
    fn take_action(&self) -> Action {
        let a = super::poll_action(&self.action_source, &self.pending_action);
        if a == Action::Snapshot {
            self.pending_action.set(Action::None);
        }
        a
    }

    /// Runs `iters` iterations (Caffe's `Step`); returns true if stopped early.
    pub fn step(&mut self, iters: i32) -> Result<bool> {
        let start_iter = self.iter;
        let stop_iter = self.iter + iters;
        self.losses.clear();
        self.smoothed_loss = 0.0;
        let mut timer = Instant::now();
        let mut iterations_last = self.iter;
        while self.iter < stop_iter {
            let traffic_start = crate::backend::cuda::gpu::traffic();
            let mut test_traffic = None;
            self.net.clear_param_diffs();
            let ti = self.param.test_interval();
            if ti > 0 && self.iter % ti == 0 && (self.iter > 0 || self.param.test_initialization())
            {
                let before = crate::backend::cuda::gpu::traffic();
                self.test_all()?;
                test_traffic = Some(crate::backend::cuda::gpu::traffic().since(&before));
                if super::poll_action(&self.action_source, &self.pending_action) == Action::Stop {
                    return Ok(true);
                }
            }
            let display = self.param.display() > 0 && self.iter % self.param.display() == 0;
            let mut loss = 0f32;
            for _ in 0..self.param.iter_size() {
                loss += self.net.forward_backward(&mut self.rng)?;
            }
            loss /= self.param.iter_size() as f32;
            if !loss.is_finite() {
                bail!("{}", non_finite_message(&self.net, self.iter, loss));
            }
            self.update_smoothed_loss(loss, start_iter);
            if display {
                let lapse = timer.elapsed().as_secs_f32();
                let per_s =
                    (self.iter - iterations_last) as f32 / if lapse > 0.0 { lapse } else { 1.0 };
                self.log(format!(
                    "Iteration {} ({} iter/s, {}s/{} iters), loss = {}",
                    self.iter,
                    fmt_g(per_s as f64),
                    fmt_g(lapse as f64),
                    self.param.display(),
                    fmt_g(self.smoothed_loss as f64)
                ));
                timer = Instant::now();
                iterations_last = self.iter;
                let mut k = 0;
                let mut outputs = Vec::new();
                for &o in &self.net.outputs {
                    let name = &self.net.blob_names[o];
                    let w = self.net.blob_loss_weight(o);
                    for v in self.net.blobs[o].data_vec() {
                        self.log(format!(
                            "    Train net output #{k}: {name} = {}{}",
                            fmt_g(v as f64),
                            loss_suffix(w, v)
                        ));
                        outputs.push((name.clone(), v));
                        k += 1;
                    }
                }
                let (it, l) = (self.iter, self.smoothed_loss);
                if let Some(r) = self.record.as_mut() {
                    r.train.push((it, l, outputs));
                }
            }
            self.apply_update(display)?;
            if self.log_traffic && self.gpu.is_some() {
                let moved = crate::backend::cuda::gpu::traffic().since(&traffic_start);
                self.log(super::device::traffic_line(
                    self.iter,
                    &moved,
                    test_traffic.as_ref(),
                ));
            }
            self.iter += 1;
            if let Some(p) = self.progress.as_mut() {
                p.update(self.iter);
            }
            if let Some(mut f) = self.on_iteration.take() {
                f(self);
                self.on_iteration = Some(f);
            }
            let request = self.take_action();
            if (self.param.snapshot() > 0 && self.iter % self.param.snapshot() == 0)
                || request == Action::Snapshot
            {
                self.snapshot()?;
            }
            if request == Action::Stop {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Caffe's `ApplyUpdate`: rate, clipping, then per parameter normalize / regularize /
    /// update value, then `w -= step`. Frozen blobs are skipped (see the module docs).
    pub fn apply_update(&mut self, display: bool) -> Result<()> {
        let (rate, advanced) = learning_rate(&self.param, self.iter, &mut self.current_step)?;
        if advanced {
            self.log(format!(
                "MultiStep Status: Iteration {}, step = {}",
                self.iter, self.current_step
            ));
        }
        if display {
            self.log(format!(
                "Iteration {}, lr = {}",
                self.iter,
                fmt_g(rate as f64)
            ));
        }
        let l1 = match self.param.regularization_type() {
            "L2" => false,
            "L1" => true,
            other => bail!("Unknown regularization type: {other} (use L1 or L2)"),
        };
        if let Some(g) = self.gpu.clone() {
            return self.apply_update_gpu(&g, rate, l1);
        }
        self.clip_gradients();
        let hp = self.hyper();
        let n = self.net.learnable.len();
        for i in 0..n {
            let l = self.net.learnable[i].clone();
            let local_rate = rate * l.lr_mult;
            let local_decay = self.param.weight_decay() * l.decay_mult;
            let data_buf = l.blob.data_buf();
            let diff_buf = l.blob.diff_buf();
            if local_rate == 0.0 {
                let grad_zero = diff_buf.borrow().iter().all(|&g| g == 0.0);
                let decay_zero = local_decay == 0.0 || data_buf.borrow().iter().all(|&w| w == 0.0);
                if grad_zero && decay_zero && self.history_is_zero(i) {
                    continue;
                }
            }
            let mut diff = diff_buf.borrow_mut();
            {
                let data = data_buf.borrow();
                normalize_regularize(self.param.iter_size(), local_decay, l1, &data, &mut diff);
            }
            let mut h1 = self.history[i].borrow_mut();
            let mut h2 = (self.kind.history_sets() == 2).then(|| self.history[n + i].borrow_mut());
            let h2: &mut [f32] = match h2.as_mut() {
                Some(h) => h.as_mut_slice(),
                None => &mut [],
            };
            compute_update_value(self.kind, &hp, local_rate, &mut diff, &mut h1, h2);
            if local_rate == 0.0 && self.kind.rate_scales_step() {
                // The step is local_rate x (...) = 0: history moved as Caffe's, weights do not.
                continue;
            }
            let mut data = data_buf.borrow_mut();
            for (w, g) in data.iter_mut().zip(diff.iter()) {
                *w -= *g;
            }
        }
        Ok(())
    }

    fn clip_gradients(&mut self) {
        let clip = self.param.clip_gradients();
        if clip < 0.0 {
            return;
        }
        let mut sumsq = 0f32;
        for l in &self.net.learnable {
            let d = l.blob.diff_buf();
            sumsq += d.borrow().iter().map(|g| g * g).sum::<f32>();
        }
        let norm = sumsq.sqrt();
        if norm > clip {
            let scale = clip / norm;
            self.log_clipping(norm, clip, scale);
            for l in &self.net.learnable {
                l.blob
                    .diff_buf()
                    .borrow_mut()
                    .iter_mut()
                    .for_each(|g| *g *= scale);
            }
        }
    }

    /// Caffe's clipping log line.
    pub(super) fn log_clipping(&self, norm: f32, clip: f32, scale: f32) {
        self.log(format!(
            "Gradient clipping: scaling down gradients (L2 norm {} > {}) by scale factor {}",
            fmt_g(norm as f64),
            fmt_g(clip as f64),
            fmt_g(scale as f64)
        ));
    }

    /// Runs every test net (Caffe's `TestAll`).
    pub fn test_all(&mut self) -> Result<Vec<TestScores>> {
        let started = Instant::now();
        let mut all = Vec::new();
        for k in 0..self.test_nets.len() {
            all.push(self.test(k)?);
        }
        self.testing += started.elapsed();
        Ok(all)
    }

    /// One test pass of test net `k`: `test_iter[k]` forwards, mean of every output element.
    pub fn test(&mut self, k: usize) -> Result<TestScores> {
        self.log(format!("Iteration {}, Testing net (#{k})", self.iter));
        let iters = self.param.test_iter[k];
        let mut scores: Vec<f32> = Vec::new();
        let mut ids: Vec<(usize, usize)> = Vec::new();
        let mut loss = 0f32;
        let verbose = self.verbose;
        let net = &mut self.test_nets[k];
        for i in 0..iters {
            if super::poll_action(&self.action_source, &self.pending_action) == Action::Stop {
                if verbose {
                    crate::info!("Test interrupted.");
                }
                return Ok(Vec::new());
            }
            let iter_loss = net.forward(&mut self.rng)?;
            if self.param.test_compute_loss() {
                loss += iter_loss;
            }
            let mut idx = 0;
            for (j, &o) in net.outputs.iter().enumerate() {
                for (e, v) in net.blobs[o].data_vec().into_iter().enumerate() {
                    if i == 0 {
                        scores.push(v);
                        ids.push((j, e));
                    } else {
                        scores[idx] += v;
                    }
                    idx += 1;
                }
            }
        }
        if self.param.test_compute_loss() {
            loss /= iters as f32;
            self.log(format!("Test loss: {}", fmt_g(loss as f64)));
        }
        let net = &self.test_nets[k];
        let mut out = Vec::new();
        for (i, (score, &(j, _))) in scores.iter().zip(&ids).enumerate() {
            let o = net.outputs[j];
            let name = net.blob_names[o].clone();
            let w = net.blob_loss_weight(o);
            let mean = score / iters as f32;
            self.log(format!(
                "    Test net output #{i}: {name} = {}{}",
                fmt_g(mean as f64),
                loss_suffix(w, mean)
            ));
            out.push((name, mean, w));
        }
        let it = self.iter;
        if let Some(r) = self.record.as_mut() {
            r.test
                .push((it, k, out.iter().map(|(n, v, _)| (n.clone(), *v)).collect()));
        }
        Ok(out)
    }
}

/// Total time the data layers of `net` waited for their prefetch threads.
fn data_wait(net: &Net) -> Duration {
    net.layers.iter().filter_map(|e| e.layer.data_wait()).sum()
}

/// `Trained 2000 iterations (128000 images) in 91.20 s: 1403.5 images/s; testing 4.10 s;
/// waiting for data 0.74 s (0.8% of training time)`.
fn throughput_message(
    iters: i32,
    images_per_iter: usize,
    total: Duration,
    testing: Duration,
    data_wait: Duration,
) -> String {
    let training = total.saturating_sub(testing).as_secs_f64();
    let mut s = format!("Trained {iters} iterations");
    let images = iters.max(0) as usize * images_per_iter;
    if images > 0 {
        s.push_str(&format!(" ({images} images)"));
    }
    s.push_str(&format!(" in {training:.2} s"));
    if images > 0 && training > 0.0 {
        s.push_str(&format!(": {:.1} images/s", images as f64 / training));
    }
    s.push_str(&format!("; testing {:.2} s", testing.as_secs_f64()));
    let share = if training > 0.0 {
        100.0 * data_wait.as_secs_f64() / training
    } else {
        0.0
    };
    s.push_str(&format!(
        "; waiting for data {:.2} s ({share:.1}% of training time)",
        data_wait.as_secs_f64()
    ));
    s
}

fn loss_suffix(w: f32, v: f32) -> String {
    if w != 0.0 {
        format!(" (* {} = {} loss)", fmt_g(w as f64), fmt_g((w * v) as f64))
    } else {
        String::new()
    }
}

/// Names the iteration and the first layer whose output is not finite.
fn non_finite_message(net: &Net, iter: i32, loss: f32) -> String {
    let mut first = None;
    'outer: for e in &net.layers {
        for &t in &e.tops {
            if net.blobs[t]
                .data_buf()
                .borrow()
                .iter()
                .any(|v| !v.is_finite())
            {
                first = Some((e.param.name().to_string(), net.blob_names[t].clone()));
                break 'outer;
            }
        }
    }
    let where_ = match first {
        Some((layer, blob)) => {
            format!("; the first non-finite output is blob '{blob}' of layer '{layer}'")
        }
        None => String::new(),
    };
    format!(
        "loss is {loss} at iteration {iter}{where_}. Training stopped; snapshots already written are intact. Lower base_lr or check the data."
    )
}

#[cfg(test)]
mod tests {
    use super::throughput_message;
    use std::time::Duration;

    #[test]
    fn throughput_excludes_testing_and_reports_the_wait_share() {
        let m = throughput_message(
            100,
            64,
            Duration::from_secs(12),
            Duration::from_secs(2),
            Duration::from_millis(500),
        );
        assert_eq!(
            m,
            "Trained 100 iterations (6400 images) in 10.00 s: 640.0 images/s; testing 2.00 s; \
             waiting for data 0.50 s (5.0% of training time)"
        );
        // Log parsers key on these; the summary must carry none of them.
        for key in ["Iteration ", "lr = ", "loss = ", "net output #"] {
            assert!(!m.contains(key), "{m}");
        }
        assert!(crate::cli::logparse::parse_log_text(&m).is_empty());
    }

    #[test]
    fn nets_without_an_input_layer_report_no_images() {
        let m = throughput_message(3, 0, Duration::from_secs(1), Duration::ZERO, Duration::ZERO);
        assert_eq!(
            m,
            "Trained 3 iterations in 1.00 s; testing 0.00 s; waiting for data 0.00 s (0.0% of training time)"
        );
    }
}
