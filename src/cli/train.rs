//! `crema train` and `crema test`, with `caffe train` / `caffe test` semantics and logs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::backend;
use crate::net::{BuildOptions, Net};
use crate::proto::caffe::{NetState, Phase};
use crate::proto::{read_net_binary, read_net_text, read_solver_text, TextOptions};
use crate::rng::CaffeRng;
use crate::solver::signals::{install, parse_effect};
use crate::solver::train::SolveOutcome;
use crate::solver::{Solver, SolverOptions};
use crate::util::glog::fmt_g;

pub struct TrainArgs {
    pub solver: PathBuf,
    pub weights: Option<String>,
    pub snapshot: Option<PathBuf>,
    pub gpu: Option<String>,
    pub level: i32,
    pub stages: Vec<String>,
    pub sigint_effect: String,
    pub sighup_effect: String,
    pub text: TextOptions,
    /// `--freeze` patterns.
    pub freeze: Vec<String>,
    /// Refuse to train when a blob the user froze would still change.
    pub strict_freeze: bool,
    /// Verify the audit against blob hashes after this many iterations.
    pub verify_freeze: Option<i32>,
    /// `--no-progress`: no progress line even on a terminal.
    pub no_progress: bool,
}

pub fn run_train(args: &TrainArgs) -> Result<SolveOutcome> {
    if args.weights.is_some() && args.snapshot.is_some() {
        bail!("Give a snapshot to resume training or weights to finetune but not both.");
    }
    let mut param = read_solver_text(&args.solver, args.text)?;
    // --level/--stage apply to the train net only, as in caffe.
    {
        let ts = param.train_state.get_or_insert_with(Default::default);
        ts.level = Some(args.level);
        ts.stage.extend(args.stages.iter().cloned());
    }
    // solver_mode: GPU counts only where the file writes it (Caffe's default is GPU, but a
    // solver that never asked should not print a fallback warning).
    let solver_gpu = (param.solver_mode.is_some()
        && param.solver_mode() == crate::proto::caffe::solver_parameter::SolverMode::Gpu)
        .then(|| param.device_id().max(0) as usize);
    let device = backend::request(args.gpu.as_deref(), solver_gpu)?;

    // --weights replaces the solver's `weights`; --snapshot clears them.
    let weights: Vec<String> = match (&args.weights, &args.snapshot) {
        (Some(w), _) => w
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        (None, Some(_)) => Vec::new(),
        (None, None) => param
            .weights
            .iter()
            .flat_map(|w| w.split(',').map(|s| s.trim().to_string()))
            .filter(|s| !s.is_empty())
            .collect(),
    };
    param.weights.clear();

    let sigint = parse_effect(&args.sigint_effect)?;
    let sighup = parse_effect(&args.sighup_effect)?;
    let opts = SolverOptions {
        text: args.text,
        verbose: true,
        solver_file: Some(args.solver.clone()),
        freeze: args.freeze.clone(),
    };
    let gpu = backend::open(&device)?;
    let mut solver = Solver::new(param, &opts)?;
    solver.set_gpu(gpu);
    if traffic_requested() {
        if solver.gpu.is_some() {
            solver.log_traffic = true;
        } else {
            crate::warn!(
                "{TRAFFIC_ENV} is set, but this run computes on the CPU: no GPU traffic to log"
            );
        }
    }
    solver.check_snapshot_write_permissions()?;
    solver.action_source = Some(install(sigint, sighup)?);
    if !weights.is_empty() {
        solver.load_weights(&weights)?;
    }
    if let Some(s) = &args.snapshot {
        crate::info!("Resuming from {}", s.display());
        crate::info!("Restoring previous solver status from {}", s.display());
        solver.restore(s)?;
    }

    // The audit is printed before anything trains, from the nets as built and restored.
    let audit = solver.audit();
    crate::info!(
        "Freeze audit (what training will change, and why):\n{}",
        audit.render()
    );
    if args.strict_freeze {
        let offenders: Vec<String> = audit
            .rows
            .iter()
            .filter(|r| {
                r.net == "train" && r.shared_from.is_none() && r.frozen_by_user && r.changes()
            })
            .map(|r| format!("{} param {} ({})", r.layer, r.index, r.role))
            .collect();
        if !offenders.is_empty() {
            bail!(
                "--strict-freeze: {} blob(s) you froze would still change: {}. See the audit's warnings above.",
                offenders.len(),
                offenders.join(", ")
            );
        }
    }
    if let Some(n) = args.verify_freeze {
        let before = crate::audit::verify::hash_params(&solver.net);
        let start = solver.iter;
        let audit = audit.clone();
        let mut done = false;
        solver.on_iteration = Some(Box::new(move |s: &Solver| {
            if !done && (s.iter - start >= n || s.iter >= s.param.max_iter()) {
                done = true;
                let after = crate::audit::verify::hash_params(&s.net);
                match crate::audit::verify::verify(&audit, &before, &after) {
                    Ok(lines) => {
                        crate::info!("Freeze verification after {} iteration(s):", s.iter - start);
                        for l in lines {
                            crate::info!("  {l}");
                        }
                    }
                    Err(e) => {
                        crate::error!("{e:#}");
                        std::process::exit(3);
                    }
                }
            }
        }));
    }
    solver.show_progress = crate::util::progress::wanted(args.no_progress);
    crate::info!("Starting Optimization");
    let outcome = solver.solve(None)?;
    Ok(outcome)
}

/// Set to 1 to log, for every training iteration, the bytes copied between host and device.
pub const TRAFFIC_ENV: &str = "CREMA_GPU_TRAFFIC";

fn traffic_requested() -> bool {
    std::env::var(TRAFFIC_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

pub struct TestArgs {
    pub model: PathBuf,
    pub weights: String,
    pub iterations: usize,
    pub gpu: Option<String>,
    pub level: i32,
    pub stages: Vec<String>,
    pub text: TextOptions,
}

/// `caffe test`: forwards the TEST net `iterations` times with trained weights, logs every
/// output per batch and the means.
pub fn run_test(args: &TestArgs) -> Result<Vec<(String, f32)>> {
    if args.weights.is_empty() {
        bail!("Need model weights to score (--weights).");
    }
    let gpu = backend::open(&backend::request(args.gpu.as_deref(), None)?)?;
    let param = read_net_text(&args.model, args.text)?;
    let state = NetState {
        phase: Some(Phase::Test as i32),
        level: Some(args.level),
        stage: args.stages.clone(),
    };
    let mut rng = CaffeRng::new(1701);
    let mut net = Net::new(&param, &state, &mut rng, BuildOptions::default())?;
    backend::place(&mut net, &gpu);
    for w in args
        .weights
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let model =
            read_net_binary(Path::new(w)).with_context(|| format!("loading weights {w}"))?;
        net.copy_trained_layers_from(&model)?;
    }
    crate::info!("Running for {} iterations.", args.iterations);
    let mut scores: Vec<f32> = Vec::new();
    let mut ids: Vec<usize> = Vec::new();
    let mut loss = 0f32;
    for i in 0..args.iterations {
        let iter_loss = net.forward(&mut rng)?;
        loss += iter_loss;
        let mut idx = 0;
        for (j, &o) in net.outputs.iter().enumerate() {
            let name = &net.blob_names[o];
            for v in net.blobs[o].data_vec() {
                if i == 0 {
                    scores.push(v);
                    ids.push(j);
                } else {
                    scores[idx] += v;
                }
                idx += 1;
                crate::info!("Batch {i}, {name} = {}", fmt_g(v as f64));
            }
        }
    }
    loss /= args.iterations.max(1) as f32;
    crate::info!("Loss: {}", fmt_g(loss as f64));
    let mut out = Vec::new();
    for (s, &j) in scores.iter().zip(&ids) {
        let o = net.outputs[j];
        let name = net.blob_names[o].clone();
        let w = net.blob_loss_weight(o);
        let mean = s / args.iterations.max(1) as f32;
        let suffix = if w != 0.0 {
            format!(
                " (* {} = {} loss)",
                fmt_g(w as f64),
                fmt_g((w * mean) as f64)
            )
        } else {
            String::new()
        };
        crate::info!("{name} = {}{suffix}", fmt_g(mean as f64));
        out.push((name, mean));
    }
    Ok(out)
}
