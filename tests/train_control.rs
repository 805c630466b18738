//! `crema train` as a process: resuming continues exactly, a non-finite loss stops training
//! with a clear message and intact snapshots, signals act between iterations, and a kill never
//! leaves a half-written snapshot. Runs on copies of the e2e_lmdb fixture (LMDB-fed, so no
//! optional features), with the copy as working directory as Caffe users run it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The shared folder (`CREMA_SHARED`, or `../shared` beside the repository).
fn shared_dir() -> PathBuf {
    match std::env::var_os("CREMA_SHARED") {
        Some(s) => PathBuf::from(s),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    }
}

fn fixture() -> PathBuf {
    shared_dir().join("fixtures/caffe/e2e_lmdb")
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// A fresh copy of the fixture with an empty snap/ and a solver written from `solver`.
fn workdir(solver: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("run");
    copy_dir(&fixture(), &work);
    std::fs::remove_dir_all(work.join("snap")).unwrap();
    std::fs::create_dir_all(work.join("snap")).unwrap();
    std::fs::write(work.join("solver.prototxt"), solver).unwrap();
    (tmp, work)
}

fn crema(work: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crema"));
    c.current_dir(work).env("GLOG_minloglevel", "0");
    c
}

fn solver(max_iter: i32, extra: &str) -> String {
    format!(
        "net: \"train_val.prototxt\"\ntest_iter: 2\ntest_interval: 10\ndisplay: 1\nsnapshot_prefix: \"snap/r\"\n\
         random_seed: 1701\nmax_iter: {max_iter}\ntype: \"SGD\"\nbase_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\n\
         lr_policy: \"step\"\ngamma: 0.1\nstepsize: 15\n{extra}"
    )
}

#[test]
fn resuming_from_a_snapshot_continues_exactly() {
    // 400 records at batch 20: iteration 20 ends an epoch, so the data order of the resumed
    // run (whose cursor restarts, as in Caffe) equals the continuous run's.
    let (_t1, straight) = workdir(&solver(40, ""));
    let out = crema(&straight)
        .args([
            "train",
            "--solver",
            "solver.prototxt",
            "--weights",
            "init.caffemodel",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (_t2, split) = workdir(&solver(20, ""));
    let out = crema(&split)
        .args([
            "train",
            "--solver",
            "solver.prototxt",
            "--weights",
            "init.caffemodel",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(split.join("solver.prototxt"), solver(40, "")).unwrap();
    let out = crema(&split)
        .args([
            "train",
            "--solver",
            "solver.prototxt",
            "--snapshot",
            "snap/r_iter_20.solverstate",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Restoring previous solver status from snap/r_iter_20.solverstate"),
        "{err}"
    );
    // --weights and --snapshot together are refused, as by caffe.
    let both = crema(&split)
        .args([
            "train",
            "--solver",
            "solver.prototxt",
            "--snapshot",
            "snap/r_iter_20.solverstate",
            "--weights",
            "init.caffemodel",
        ])
        .output()
        .unwrap();
    assert!(!both.status.success());

    let a = straight.join("snap/r_iter_40.caffemodel");
    let b = split.join("snap/r_iter_40.caffemodel");
    let d = crema::cli::diff::diff(&a, &b, 0.0).unwrap();
    assert!(d.same, "resumed run differs:\n{}", d.report);
    let sa = crema::proto::read_solverstate(&straight.join("snap/r_iter_40.solverstate")).unwrap();
    let sb = crema::proto::read_solverstate(&split.join("snap/r_iter_40.solverstate")).unwrap();
    assert_eq!(sa.iter(), 40);
    assert_eq!(sa.history, sb.history, "momentum history identical");
}

#[test]
fn non_finite_loss_stops_with_the_iteration_and_keeps_snapshots() {
    let (_t, work) =
        workdir(&solver(200, "snapshot: 1\n").replace("base_lr: 0.01", "base_lr: 1e6"));
    let out = crema(&work)
        .args([
            "train",
            "--solver",
            "solver.prototxt",
            "--weights",
            "init.caffemodel",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "training must fail");
    assert!(
        err.contains("at iteration") && err.contains("Training stopped"),
        "{err}"
    );
    assert!(err.contains("first non-finite output is blob"), "{err}");
    let snaps: Vec<PathBuf> = std::fs::read_dir(work.join("snap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "caffemodel"))
        .collect();
    assert!(!snaps.is_empty(), "earlier snapshots were written");
    for s in snaps {
        crema::proto::read_net_binary(&s).unwrap_or_else(|e| panic!("{}: {e:#}", s.display()));
    }
}

fn wait_for(child_err: &Path, needle: &str, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if std::fs::read_to_string(child_err)
            .unwrap_or_default()
            .contains(needle)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn sigint_snapshots_and_sighup_stops_between_iterations() {
    let (_t, work) = workdir(&solver(1_000_000, ""));
    let log = work.join("train.log");
    let mut child = crema(&work)
        .args([
            "train",
            "--solver",
            "solver.prototxt",
            "--weights",
            "init.caffemodel",
            "--sigint_effect",
            "snapshot",
            "--sighup_effect",
            "stop",
        ])
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    assert!(
        wait_for(&log, "Iteration 3 ", Duration::from_secs(120)),
        "training did not start"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(
        wait_for(&log, "Snapshotting solver state", Duration::from_secs(60)),
        "SIGINT did not snapshot"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{text}");
    assert!(text.contains("Optimization stopped early."), "{text}");
    let snaps = std::fs::read_dir(work.join("snap"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "solverstate")
        })
        .count();
    assert!(snaps >= 2, "one snapshot for SIGINT, one at the early stop");
}

#[test]
fn killing_a_run_never_leaves_a_truncated_snapshot() {
    let (_t, work) =
        workdir(&solver(1_000_000, "snapshot: 1\n").replace("display: 1", "display: 0"));
    for round in 0..4u64 {
        let mut child = crema(&work)
            .args([
                "train",
                "--solver",
                "solver.prototxt",
                "--weights",
                "init.caffemodel",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Different moments in the write cycle each round.
        std::thread::sleep(Duration::from_millis(700 + 137 * round));
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        child.wait().unwrap();
        for e in std::fs::read_dir(work.join("snap")).unwrap() {
            let p = e.unwrap().path();
            match p.extension().and_then(|x| x.to_str()) {
                Some("caffemodel") => {
                    crema::proto::read_net_binary(&p)
                        .unwrap_or_else(|e| panic!("round {round}: {}: {e:#}", p.display()));
                }
                Some("solverstate") => {
                    crema::proto::read_solverstate(&p)
                        .unwrap_or_else(|e| panic!("round {round}: {}: {e:#}", p.display()));
                }
                _ => {}
            }
        }
    }
}

/// Caffe's device rule: `solver_mode: GPU` on a machine without a usable GPU trains on the CPU
/// after one warning line; an explicit `--gpu` that cannot be honoured is an error naming why.
/// (On a machine with a GPU this test checks nothing about the fallback and says so.)
#[test]
fn solver_mode_gpu_falls_back_and_explicit_gpu_fails_without_a_gpu() {
    let probe = Command::new(env!("CARGO_BIN_EXE_crema"))
        .args(["device_query"])
        .output()
        .unwrap();
    if probe.status.success() {
        println!("SKIPPED: a GPU is present here, so the no-GPU fallback cannot be observed");
        return;
    }
    let (_t, work) = workdir(&solver(1, "solver_mode: GPU\ndevice_id: 0\n"));
    let out = crema(&work)
        .args(["train", "--solver", "solver.prototxt"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("solver_mode is GPU") && l.contains("training on the CPU"))
        .collect();
    assert_eq!(warnings.len(), 1, "one fallback warning expected:\n{log}");
    assert!(
        warnings[0].starts_with('W'),
        "a glog warning line: {}",
        warnings[0]
    );
    assert!(log.contains("Optimization Done"), "{log}");

    for flag in [&["--gpu=0"][..], &["--gpu", "0,1"][..]] {
        let out = crema(&work)
            .args(["train", "--solver", "solver.prototxt"])
            .args(flag)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "--gpu without a GPU must fail: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = crema(&work)
        .args(["train", "--solver", "solver.prototxt", "-gpu", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--gpu 0")
            && (err.contains("no CUDA driver") || err.contains("no GPU") || err.contains("NVRTC")),
        "the error says which piece is missing: {err}"
    );
}

#[test]
fn the_wait_policy_changes_no_result_and_a_bad_value_is_refused() {
    // Idle workers polling (the default) or sleeping: the same weights, bit for bit, on
    // three threads (two of them polling under the default).
    let mut models = Vec::new();
    for policy in ["active", "passive"] {
        let (tmp, work) = workdir(&solver(12, ""));
        let out = crema(&work)
            .env("CREMA_WAIT_POLICY", policy)
            .env("RAYON_NUM_THREADS", "3")
            .args([
                "train",
                "--solver",
                "solver.prototxt",
                "--weights",
                "init.caffemodel",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{policy}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        models.push((tmp, work.join("snap/r_iter_12.caffemodel")));
    }
    let d = crema::cli::diff::diff(&models[0].1, &models[1].1, 0.0).unwrap();
    assert!(d.same, "the wait policy changed the weights:\n{}", d.report);

    let (_t, work) = workdir(&solver(2, ""));
    let out = crema(&work)
        .env("CREMA_WAIT_POLICY", "spin")
        .args(["train", "--solver", "solver.prototxt"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("CREMA_WAIT_POLICY must be 'active' or 'passive', not 'spin'"),
        "{err}"
    );
}
