//! The host-side solver (`solver.cpp`, `sgd_solver.cpp`): builds the train and test nets from
//! a SolverParameter, runs Caffe's iteration loop (test, forward/backward x iter_size, smoothed
//! loss, display, update, snapshot), and writes Caffe-format snapshots.
//!
//! Frozen blobs are skipped: a parameter whose local learning rate is 0 gets no regularization,
//! no history write and no update when nothing would change (zero gradient and zero history).
//! Where Caffe would still change something (SGD/Nesterov momentum restored from a snapshot,
//! or an adaptive solver's history fed by weight decay), crema does exactly what Caffe does, so
//! weights and solverstates stay Caffe's.
//!
//! With a GPU (`set_gpu`), weights, gradients and history stay on the device and the update runs
//! there (`device`); the loop reads back only what it logs.

pub mod device;
pub mod lr_policy;
pub mod signals;
pub mod snapshot;
pub mod train;
pub mod update;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{bail, Context, Result};

use crate::blob::{Buf, Mem};
use crate::net::filter::merge_state;
use crate::net::{BuildOptions, Net};
use crate::proto::caffe::{NetParameter, NetState, Phase, SolverParameter};
use crate::proto::{read_net_text, TextOptions};
use crate::rng::CaffeRng;
use update::{Hyper, SolverKind};

/// Reads any new signal into `pending` and returns what is pending, without consuming it.
fn poll_action(
    source: &Option<Box<dyn Fn() -> Action>>,
    pending: &std::cell::Cell<Action>,
) -> Action {
    if let Some(f) = source {
        let a = f();
        // A stop request outranks a snapshot request seen earlier.
        if a != Action::None && pending.get() != Action::Stop {
            pending.set(a);
        }
    }
    pending.get()
}

/// What to do when asked to stop or snapshot (Caffe's SolverAction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    Stop,
    Snapshot,
}

pub struct Solver {
    pub param: SolverParameter,
    pub kind: SolverKind,
    pub net: Net,
    pub test_nets: Vec<Net>,
    pub iter: i32,
    pub current_step: i32,
    /// One buffer per learnable parameter and history set (set-major: all h1, then all h2).
    /// On the GPU they live on the device; snapshots copy them down, restores up.
    pub history: Vec<Buf>,
    pub rng: CaffeRng,
    pub snapshot_prefix: String,
    losses: Vec<f32>,
    pub smoothed_loss: f32,
    /// Polled between iterations (signal handlers set it).
    pub action_source: Option<Box<dyn Fn() -> Action>>,
    /// An action polled but not yet acted on (a signal seen during testing is kept for the
    /// end of the iteration).
    pending_action: std::cell::Cell<Action>,
    /// Whether the last iteration was followed by a snapshot (Solve avoids a duplicate).
    last_snapshot_iter: Option<i32>,
    pub verbose: bool,
    /// Called after each iteration's update (the freeze verifier and tests hook in here).
    pub on_iteration: Option<IterationHook>,
    /// When set, every displayed train iteration and test pass is recorded here (for tests and
    /// tools that compare runs without parsing logs).
    pub record: Option<TrainRecord>,
    /// What `--freeze` changed, for the audit.
    pub freeze_changes: Vec<String>,
    /// The GPU the nets run on (`None`: the CPU).
    pub gpu: Option<std::rc::Rc<crate::backend::cuda::gpu::Gpu>>,
    /// Draw the terminal progress line during `solve` (`crema train` sets it when stderr is a
    /// terminal).
    pub show_progress: bool,
    progress: Option<crate::util::progress::ProgressLine>,
    /// Time spent in test passes during the current `solve`, kept apart from training time.
    testing: std::time::Duration,
    /// Device scratch of the gradient-clipping reduction (allocated at its first use).
    clip_scratch: Option<device::ClipScratch>,
    /// Log the host<->device bytes each iteration moved (`CREMA_GPU_TRAFFIC=1`; GPU runs only).
    pub log_traffic: bool,
}

/// A hook run after each iteration's update (`Solver::on_iteration`).
pub type IterationHook = Box<dyn FnMut(&Solver)>;

/// A net's outputs by name, as one log line shows them.
pub type NamedOutputs = Vec<(String, f32)>;

/// Values a run produced, as its log shows them.
#[derive(Debug, Clone, Default)]
pub struct TrainRecord {
    /// (iteration, smoothed loss, train outputs by name) per displayed iteration.
    pub train: Vec<(i32, f32, NamedOutputs)>,
    /// (iteration, test net index, outputs by name) per test pass.
    pub test: Vec<(i32, usize, NamedOutputs)>,
    /// The forward-only loss logged after the last iteration.
    pub final_loss: Option<(i32, f32)>,
}

/// Where the solver's nets come from, resolved to parameters.
fn load_net(path: &str, opts: TextOptions) -> Result<NetParameter> {
    read_net_text(Path::new(path), opts).with_context(|| format!("reading net {path}"))
}

/// The snapshot prefix Caffe derives when the solver names none: the solver file without its
/// extension, or `dir/<stem>` if that names a directory.
pub fn default_snapshot_prefix(solver_path: &Path) -> String {
    let stem = solver_path.with_extension("");
    if stem.is_dir() {
        let name = solver_path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        stem.join(name).display().to_string()
    } else {
        stem.display().to_string()
    }
}

pub struct SolverOptions {
    pub text: TextOptions,
    pub verbose: bool,
    /// Path of the solver file, for the default snapshot prefix.
    pub solver_file: Option<PathBuf>,
    /// `--freeze` patterns applied to every net before it is built.
    pub freeze: Vec<String>,
}

impl Default for SolverOptions {
    fn default() -> Self {
        SolverOptions {
            text: TextOptions::default(),
            verbose: true,
            solver_file: None,
            freeze: Vec::new(),
        }
    }
}

impl Solver {
    pub fn new(param: SolverParameter, opts: &SolverOptions) -> Result<Solver> {
        let kind = SolverKind::from_param(&param)?;
        kind.check(&param)?;
        let mut rng = if param.random_seed() >= 0 {
            CaffeRng::new(param.random_seed() as u64)
        } else {
            CaffeRng::from_entropy()
        };
        if param.average_loss() < 1 {
            bail!("average_loss should be non-negative and at least 1");
        }
        if param.iter_size() < 1 {
            bail!("iter_size must be at least 1");
        }
        let verbose = opts.verbose;
        let build = BuildOptions { verbose };

        // Train net: exactly one of train_net_param, train_net, net_param, net.
        let sources = [
            param.train_net_param.is_some(),
            param.train_net.is_some(),
            param.net_param.is_some(),
            param.net.is_some(),
        ];
        let n = sources.iter().filter(|&&b| b).count();
        if n == 0 {
            bail!("SolverParameter must specify a train net using one of these fields: net, net_param, train_net, train_net_param");
        }
        if n > 1 {
            bail!("SolverParameter must not contain more than one of these fields specifying a train_net: net, net_param, train_net, train_net_param");
        }
        let train_param = if let Some(p) = &param.train_net_param {
            if verbose {
                crate::info!("Creating training net specified in train_net_param.");
            }
            p.clone()
        } else if let Some(f) = &param.train_net {
            if verbose {
                crate::info!("Creating training net from train_net file: {f}");
            }
            load_net(f, opts.text)?
        } else if let Some(p) = &param.net_param {
            if verbose {
                crate::info!("Creating training net specified in net_param.");
            }
            p.clone()
        } else {
            let f = param.net.as_ref().unwrap();
            if verbose {
                crate::info!("Creating training net from net file: {f}");
            }
            load_net(f, opts.text)?
        };
        let mut train_param = train_param;
        let freeze_changes = if opts.freeze.is_empty() {
            Vec::new()
        } else {
            crate::audit::freeze::apply_freeze(&mut train_param, &opts.freeze, true)?
        };
        let train_state = merge_state(
            NetState {
                phase: Some(Phase::Train as i32),
                ..Default::default()
            },
            train_param.state.as_ref(),
            param.train_state.as_ref(),
        );
        let net = Net::new(&train_param, &train_state, &mut rng, build)
            .context("building the train net")?;

        // Test nets: test_net_param, then test_net files, then the generic net once per
        // remaining test_iter entry.
        let generic = param
            .net_param
            .clone()
            .map(Ok)
            .or_else(|| param.net.as_ref().map(|f| load_net(f, opts.text)));
        let mut test_params: Vec<(String, NetParameter)> = Vec::new();
        for p in &param.test_net_param {
            test_params.push(("test_net_param".into(), p.clone()));
        }
        for f in &param.test_net {
            test_params.push((format!("test_net file {f}"), load_net(f, opts.text)?));
        }
        let specific = test_params.len();
        if let Some(g) = generic {
            let g = g?;
            let n = param.test_iter.len().saturating_sub(specific);
            for _ in 0..n {
                test_params.push(("net".into(), g.clone()));
            }
            if param.test_iter.len() < specific {
                bail!("test_iter must be specified for each test network.");
            }
        } else if param.test_iter.len() != specific {
            bail!(
                "test_iter must be specified for each test network: {} test net(s), {} test_iter value(s)",
                specific,
                param.test_iter.len()
            );
        }
        if !param.test_state.is_empty() && param.test_state.len() != test_params.len() {
            bail!("test_state must be unspecified or specified once per test net.");
        }
        if !test_params.is_empty() && param.test_interval.is_none() && verbose {
            crate::warn!("test_interval not set: test nets are built but testing never runs");
        }
        let mut test_nets = Vec::new();
        for (_, tp) in test_params.iter_mut() {
            crate::audit::freeze::apply_freeze(tp, &opts.freeze, false)?;
        }
        for (i, (what, tp)) in test_params.iter().enumerate() {
            if verbose {
                crate::info!("Creating test net (#{i}) specified by {what}");
            }
            let st = merge_state(
                NetState {
                    phase: Some(Phase::Test as i32),
                    ..Default::default()
                },
                tp.state.as_ref(),
                param.test_state.get(i),
            );
            let tn = Net::new(tp, &st, &mut rng, build)
                .with_context(|| format!("building test net #{i}"))?;
            tn.share_trained_layers_with(&net)?;
            test_nets.push(tn);
        }

        let sets = kind.history_sets();
        let mut history = Vec::new();
        for _ in 0..sets {
            for l in &net.learnable {
                history.push(Rc::new(Mem::zeros(l.blob.count())));
            }
        }
        let snapshot_prefix = match (&param.snapshot_prefix, &opts.solver_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => default_snapshot_prefix(f),
            (None, None) => String::new(),
        };
        if verbose {
            crate::info!("Solver scaffolding done.");
        }
        Ok(Solver {
            param,
            kind,
            net,
            test_nets,
            iter: 0,
            current_step: 0,
            history,
            rng,
            snapshot_prefix,
            losses: Vec::new(),
            smoothed_loss: 0.0,
            action_source: None,
            pending_action: std::cell::Cell::new(Action::None),
            last_snapshot_iter: None,
            verbose,
            on_iteration: None,
            record: None,
            freeze_changes,
            gpu: None,
            show_progress: false,
            progress: None,
            testing: std::time::Duration::ZERO,
            clip_scratch: None,
            log_traffic: false,
        })
    }

    /// Runs the train and test nets on `gpu` (`None`: the CPU).
    pub fn set_gpu(&mut self, gpu: Option<std::rc::Rc<crate::backend::cuda::gpu::Gpu>>) {
        crate::cli::backend::place(&mut self.net, &gpu);
        for tn in &mut self.test_nets {
            crate::cli::backend::place(tn, &gpu);
        }
        self.gpu = gpu;
    }

    pub fn hyper(&self) -> Hyper {
        Hyper {
            momentum: self.param.momentum(),
            momentum2: self.param.momentum2(),
            delta: self.param.delta(),
            rms_decay: self.param.rms_decay(),
            iter: self.iter,
        }
    }

    /// The history buffers of learnable `i` (one per history set).
    pub fn history_of(&self, i: usize) -> impl Iterator<Item = &Buf> {
        let n = self.net.learnable.len();
        (0..self.kind.history_sets()).map(move |s| &self.history[s * n + i])
    }

    /// Whether every history set of learnable `i` holds only zeros. Memory known to be zero
    /// is not read; otherwise the values are read on the host (a copy down on the GPU, which
    /// only the audit, before training, pays: the GPU update asks [`Mem::is_known_zero`]).
    pub fn history_is_zero(&self, i: usize) -> bool {
        self.history_of(i)
            .all(|h| h.is_known_zero() || h.borrow().iter().all(|&v| v == 0.0))
    }

    /// The freeze audit of this solver's nets as they stand (after weights and any restore).
    pub fn audit(&self) -> crate::audit::Audit {
        let facts = crate::audit::SolverFacts {
            kind: self.kind,
            base_lr: self.param.base_lr(),
            momentum: self.param.momentum(),
            weight_decay: self.param.weight_decay(),
            history_nonzero: (0..self.net.learnable.len())
                .map(|i| !self.history_is_zero(i))
                .collect(),
        };
        let tests: Vec<&Net> = self.test_nets.iter().collect();
        let mut a = crate::audit::audit(&self.net, &tests, Some(&facts));
        a.freeze_changes = self.freeze_changes.clone();
        a
    }

    /// Loads weights (comma lists allowed, applied in order) into the train and test nets,
    /// logging a load report.
    pub fn load_weights(&self, files: &[String]) -> Result<()> {
        for f in files {
            let model = crate::proto::read_net_binary(Path::new(f))
                .with_context(|| format!("loading weights {f}"))?;
            if self.verbose {
                crate::info!("Copying trained layers from {f}");
            }
            let report = self
                .net
                .copy_trained_layers_from(&model)
                .with_context(|| format!("loading weights {f} into the train net"))?;
            if self.verbose {
                for line in report.lines(f) {
                    crate::info!("{line}");
                }
            }
            for tn in &self.test_nets {
                tn.copy_trained_layers_from(&model)
                    .with_context(|| format!("loading weights {f} into a test net"))?;
            }
        }
        Ok(())
    }
}
