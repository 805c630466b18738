//! Training end to end against real Caffe: every `solver_*.prototxt` in `$CREMA_TRAIN_FIXTURES`
//! (default `../shared/fixtures/caffe/e2e_lmdb`) trains from `init.caffemodel` with the fixture
//! folder (copied to a temporary directory) as working directory; the per-iteration train loss
//! and outputs, every test output, the final loss, the final snapshot's weights and its
//! solverstate must match Caffe's (`logs/<variant>_losses.json`, `snap/`).
//!
//! Caffe resolves relative paths against the working directory, so this binary changes it;
//! that is why the cases run one after another, under a lock held by whichever test runs them.
//!
//! With `CREMA_TEST_GPU=<id>` every variant trains on that GPU too, against the same numbers
//! and tolerances; without it the GPU variant says SKIPPED and why.

mod common;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use crema::backend::cuda::gpu::Gpu;
use crema::proto::blob::read_blob;
use crema::proto::{read_net_binary, read_solver_text, read_solverstate, TextOptions};
use crema::solver::{Solver, SolverOptions, TrainRecord};

fn fixtures_dirs() -> Vec<PathBuf> {
    match std::env::var("CREMA_TRAIN_FIXTURES") {
        Ok(p) => p.split(':').map(PathBuf::from).collect(),
        Err(_) => {
            let root = common::caffe_fixtures();
            vec![root.join("e2e_lmdb"), root.join("e2e_hdf5")]
        }
    }
}

fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let to = dst.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to)?;
        } else if e.file_name() != "lock.mdb" {
            std::fs::copy(e.path(), &to)?;
        }
    }
    Ok(())
}

fn close(what: &str, got: f32, want: f64, tol: f64) -> Result<()> {
    let err = (got as f64 - want).abs();
    if err > tol * want.abs().max(1e-6) && err > 1e-6 {
        bail!(
            "{what}: crema {got}, Caffe {want} (relative error {:.2e})",
            err / want.abs().max(1e-12)
        );
    }
    Ok(())
}

fn check_record(rec: &TrainRecord, expected: &serde_json::Value) -> Result<()> {
    let train = expected["train"]
        .as_array()
        .ok_or_else(|| anyhow!("no 'train' in losses json"))?;
    if train.len() != rec.train.len() {
        bail!(
            "{} displayed iterations, Caffe logged {}",
            rec.train.len(),
            train.len()
        );
    }
    for (e, (it, loss, outputs)) in train.iter().zip(&rec.train) {
        let eit = e["iter"].as_i64().unwrap_or(-1) as i32;
        if eit != *it {
            bail!("train iteration {it}, Caffe logged {eit}");
        }
        close(
            &format!("iteration {it} loss"),
            *loss,
            e["loss"].as_f64().unwrap(),
            1e-4,
        )?;
        for (name, v) in outputs {
            if let Some(w) = e["outputs"][name].as_f64() {
                close(&format!("iteration {it} train output {name}"), *v, w, 1e-4)?;
            }
        }
    }
    let test = expected["test"]
        .as_array()
        .ok_or_else(|| anyhow!("no 'test' in losses json"))?;
    if test.len() != rec.test.len() {
        bail!(
            "{} test passes, Caffe logged {}",
            rec.test.len(),
            test.len()
        );
    }
    for (e, (it, _, outputs)) in test.iter().zip(&rec.test) {
        for (name, v) in outputs {
            let w = e[name]
                .as_f64()
                .ok_or_else(|| anyhow!("Caffe's test pass at {it} has no {name}"))?;
            close(&format!("iteration {it} test output {name}"), *v, w, 1e-4)?;
        }
    }
    if let Some(f) = expected["final"]["loss_forward_only_after_snapshot"].as_f64() {
        let (_, l) = rec
            .final_loss
            .ok_or_else(|| anyhow!("no final loss line"))?;
        close("final forward-only loss", l, f, 1e-4)?;
    }
    Ok(())
}

fn check_snapshot(
    work: &Path,
    fixture: &Path,
    prefix: &str,
    iter: i32,
    base_lr: f32,
    adaptive: bool,
) -> Result<()> {
    let name = format!("{prefix}_iter_{iter}");
    let ours = read_net_binary(&work.join(format!("{name}.caffemodel")))?;
    let theirs = read_net_binary(&fixture.join(format!("{name}.caffemodel")))?;
    let their_state = read_solverstate(&fixture.join(format!("{name}.solverstate")))?;
    // Learnable parameters are the caffemodel's blobs in order (no sharing in these nets), and
    // the solverstate's history follows the same order.
    let mut k = 0;
    // Set when a bias was noise-driven: the BatchNorm that reads it folds the bias into its
    // running mean (variance and factor are shift-invariant and stay strict).
    let mut noisy_bias_err: Option<f32> = None;
    // Learnable indices whose values (and so solver history) inherit that noise.
    let mut affected: Vec<usize> = Vec::new();
    for tl in &theirs.layer {
        if tl.blobs.is_empty() {
            continue;
        }
        let ol = ours
            .layer
            .iter()
            .find(|l| l.name == tl.name)
            .ok_or_else(|| anyhow!("snapshot lacks layer {}", tl.name()))?;
        for (j, (a, b)) in ol.blobs.iter().zip(&tl.blobs).enumerate() {
            let (a, b) = (read_blob(a)?, read_blob(b)?);
            if a.shape != b.shape {
                bail!(
                    "layer {} blob {j}: shape {:?} vs Caffe's {:?}",
                    tl.name(),
                    a.shape,
                    b.shape
                );
            }
            let max_ref = b.data.iter().fold(0f32, |m, v| m.max(v.abs()));
            let max_err = a
                .data
                .iter()
                .zip(&b.data)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            // A bias right before BatchNorm has an exactly-zero true gradient: what Caffe
            // accumulates for it is rounding noise (its Adam first moment is ~1e-10), and an
            // adaptive solver turns noise into steps of +-lr whose sign depends on summation
            // order. Such a blob can only be held to the size of those steps.
            let first_moment = their_state
                .history
                .get(k)
                .map(read_blob)
                .transpose()?
                .map(|h| h.data.iter().fold(0f32, |m, v| m.max(v.abs())));
            let noise_driven = adaptive && first_moment.is_some_and(|m| m < 1e-6);
            let mut tol = if noise_driven {
                base_lr * iter as f32
            } else {
                1e-4 * max_ref.max(1e-3)
            };
            if tl.r#type() == "BatchNorm" && j == 0 && noisy_bias_err.is_some() {
                // Each of the `iter` training forwards adds the batch mean, bias included.
                tol = tol.max(base_lr * iter as f32 * iter as f32);
                affected.push(k);
            }
            if noise_driven {
                affected.push(k);
                noisy_bias_err = Some(max_err);
            } else if tl.r#type() != "BatchNorm" && j == tl.blobs.len() - 1 {
                noisy_bias_err = None;
            }
            if max_err > tol {
                bail!("layer {} blob {j}: max abs difference {max_err} (max abs value {max_ref}, tolerance {tol})", tl.name());
            }
            k += 1;
        }
    }
    let ours = read_solverstate(&work.join(format!("{name}.solverstate")))?;
    let theirs = their_state;
    if ours.iter() != theirs.iter() || ours.current_step() != theirs.current_step() {
        bail!(
            "solverstate iter/current_step {}/{} vs Caffe's {}/{}",
            ours.iter(),
            ours.current_step(),
            theirs.iter(),
            theirs.current_step()
        );
    }
    if ours.history.len() != theirs.history.len() {
        bail!(
            "{} history blobs, Caffe has {}",
            ours.history.len(),
            theirs.history.len()
        );
    }
    let n = k;
    for (i, (a, b)) in ours.history.iter().zip(&theirs.history).enumerate() {
        let (a, b) = (read_blob(a)?, read_blob(b)?);
        let max_ref = b.data.iter().fold(0f32, |m, v| m.max(v.abs()));
        let max_err = a
            .data
            .iter()
            .zip(&b.data)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        // History of noise-affected blobs: noise-sized values (first moments of a zero
        // gradient) or a relative error of the size their weights carry.
        let rel = if affected.contains(&(i % n.max(1))) {
            1e-2
        } else {
            1e-4
        };
        if a.shape != b.shape || max_err > rel * max_ref.max(1e-6) && max_err > 1e-8 {
            bail!("history blob {i}: shape {:?}/{:?}, max abs difference {max_err} (max abs value {max_ref})", a.shape, b.shape);
        }
    }
    Ok(())
}

fn run_variant(fixture: &Path, solver_file: &str, gpu: Option<&Rc<Gpu>>) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let work = tmp.path().join("run");
    copy_dir(fixture, &work)?;
    // Our snapshots go to a clean folder; Caffe's stay beside them for comparison.
    std::fs::remove_dir_all(work.join("snap")).ok();
    std::fs::create_dir_all(work.join("snap"))?;
    std::env::set_current_dir(&work)?;
    let param = read_solver_text(Path::new(solver_file), TextOptions::default())?;
    let prefix = param.snapshot_prefix().to_string();
    let variant = solver_file
        .trim_start_matches("solver_")
        .trim_end_matches(".prototxt")
        .to_string();
    let opts = SolverOptions {
        verbose: false,
        solver_file: Some(PathBuf::from(solver_file)),
        ..Default::default()
    };
    let mut solver = Solver::new(param, &opts)?;
    solver.set_gpu(gpu.cloned());
    solver.load_weights(&["init.caffemodel".to_string()])?;
    solver.record = Some(TrainRecord::default());
    solver.solve(None)?;
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        fixture.join(format!("logs/{variant}_losses.json")),
    )?)?;
    check_record(solver.record.as_ref().unwrap(), &expected).context("per-iteration values")?;
    let adaptive = solver.kind.rate_scales_step();
    check_snapshot(
        &work,
        fixture,
        &prefix,
        solver.iter,
        solver.param.base_lr(),
        adaptive,
    )
    .context("final snapshot")?;
    Ok(())
}

/// The working directory is the process's: one harness run at a time.
static CWD: Mutex<()> = Mutex::new(());

/// Trains every variant on the CPU (`gpu` None) or a GPU, printing ok/FAIL per variant.
fn run_all(gpu: Option<&Rc<Gpu>>) {
    let _cwd = CWD.lock().unwrap_or_else(|e| e.into_inner());
    crema::util::glog::set_min_level(1);
    let backend = if gpu.is_some() { "GPU" } else { "CPU" };
    let cwd = std::env::current_dir().unwrap();
    let mut failures = Vec::new();
    let mut count = 0;
    for dir in fixtures_dirs() {
        let dir = dir.canonicalize().unwrap_or(dir);
        let mut solvers: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("solver_") && n.ends_with(".prototxt"))
            .collect();
        solvers.sort();
        for s in solvers {
            count += 1;
            let label = format!("{}/{s}", dir.file_name().unwrap().to_string_lossy());
            match run_variant(&dir, &s, gpu) {
                Ok(()) => println!("ok    {label}"),
                Err(e) => {
                    println!("FAIL  {label}: {e:#}");
                    failures.push(format!("{label}: {e:#}"));
                }
            }
            std::env::set_current_dir(&cwd).unwrap();
        }
    }
    assert!(count > 0, "no solver variants found");
    println!(
        "{} of {count} training variants match Caffe on the {backend}",
        count - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} variant(s) failed on the {backend}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_solver_variant_matches_caffe() {
    run_all(None);
}

#[test]
fn every_solver_variant_matches_caffe_on_the_gpu() {
    if let Some(g) = common::gpu_or_skip("the Caffe training variants") {
        run_all(Some(&g));
    }
}
