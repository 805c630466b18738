//! Freezing: the user's story reproduced against real Caffe (`../shared/fixtures/caffe/frozen`),
//! `--freeze` equivalence, the audit's predictions checked against blob hashes for every solver
//! type, and the audit's wording for the seed's net (golden text). The frozen fixture also runs
//! on a GPU when `CREMA_TEST_GPU=<id>` is set (else its GPU variant says SKIPPED and why).

mod common;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;

use anyhow::{Context, Result};
use crema::audit::verify::{hash_params, verify};
use crema::backend::cuda::gpu::Gpu;
use crema::net::{BuildOptions, Net};
use crema::proto::caffe::{LayerParameter, NetParameter, NetState, Phase};
use crema::proto::{parse_net_text, parse_solver_text, read_solver_text, TextOptions};
use crema::rng::CaffeRng;
use crema::solver::{Solver, SolverOptions, TrainRecord};

fn shared() -> PathBuf {
    common::caffe_fixtures()
}

/// The working directory is the process's: one fixture run at a time.
static CWD: Mutex<()> = Mutex::new(());

fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let to = dst.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to)?;
        } else {
            std::fs::copy(e.path(), &to)?;
        }
    }
    Ok(())
}

fn quiet() {
    crema::util::glog::set_min_level(2);
}

/// Trains one frozen variant in a copy of the fixture folder; returns (solver, work dir).
fn train_frozen(variant: &str, work: &Path, gpu: Option<&Rc<Gpu>>) -> Result<Solver> {
    std::env::set_current_dir(work)?;
    let param = read_solver_text(
        Path::new(&format!("solver_{variant}.prototxt")),
        TextOptions::default(),
    )?;
    let opts = SolverOptions {
        verbose: false,
        ..Default::default()
    };
    let mut solver = Solver::new(param, &opts)?;
    solver.set_gpu(gpu.cloned());
    solver.load_weights(&[format!("init_{variant}.caffemodel")])?;
    solver.record = Some(TrainRecord::default());
    solver.solve(None)?;
    Ok(solver)
}

/// The user's story: with BatchNorm left at its default, a net frozen every other way drifts
/// exactly as Caffe's does, and the audit says why; with use_global_stats it stays
/// bit-identical.
#[test]
fn frozen_fixture_matches_caffe_and_the_audit_explains_it() {
    frozen_story(None);
}

#[test]
fn frozen_fixture_matches_caffe_on_the_gpu() {
    if let Some(g) = common::gpu_or_skip("the frozen fixture") {
        frozen_story(Some(&g));
        println!("ok    frozen fixture on the GPU");
    }
}

/// The story on the CPU or a GPU. The `crema diff` exit codes are checked on the CPU run only
/// (they do not depend on the backend, and the binary is not carried to a GPU machine).
fn frozen_story(gpu: Option<&Rc<Gpu>>) {
    let _cwd = CWD.lock().unwrap_or_else(|e| e.into_inner());
    quiet();
    let cwd = std::env::current_dir().unwrap();
    let fixture = shared().join("frozen");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("summary.json")).unwrap())
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("frozen");
    copy_dir(&fixture, &work).unwrap();
    std::fs::remove_dir_all(work.join("snap")).unwrap();
    std::fs::create_dir_all(work.join("snap")).unwrap();

    let result = (|| -> Result<()> {
        // Default BatchNorm: TEST loss drifts like Caffe's.
        let solver = train_frozen("frozen_bn_default", &work, gpu)?;
        let audit = solver.audit();
        assert!(
            audit
                .warnings
                .iter()
                .any(|w| w.starts_with("bn1 (BatchNorm)")
                    && w.contains("use_global_stats is false in TRAIN")),
            "audit must flag bn1:\n{}",
            audit.render()
        );
        let want = summary["frozen_bn_default"]["test_outputs"]
            .as_array()
            .unwrap();
        let got = &solver.record.as_ref().unwrap().test;
        assert_eq!(got.len(), want.len(), "number of test passes");
        for ((it, _, outputs), w) in got.iter().zip(want) {
            assert_eq!(*it as i64, w["iter"].as_i64().unwrap());
            for (name, v) in outputs {
                let e = w[name].as_f64().unwrap();
                assert!(
                    ((*v as f64) - e).abs() <= 1e-4 * e.abs().max(1e-6),
                    "iter {it} {name}: crema {v}, Caffe {e}"
                );
            }
        }
        let first = got
            .first()
            .unwrap()
            .2
            .iter()
            .find(|(n, _)| n == "loss")
            .unwrap()
            .1;
        let last = got
            .last()
            .unwrap()
            .2
            .iter()
            .find(|(n, _)| n == "loss")
            .unwrap()
            .1;
        assert!(
            last > first,
            "the default-BatchNorm TEST loss drifts upward ({first} -> {last})"
        );

        // Global statistics: constant TEST loss, snapshot bit-identical to the initial model.
        let solver = train_frozen("frozen_bn_global", &work, gpu)?;
        let audit = solver.audit();
        assert!(
            audit
                .warnings
                .iter()
                .all(|w| !w.starts_with("bn1 (BatchNorm)")),
            "{}",
            audit.render()
        );
        let (_, _, fc) = audit.counts();
        assert_eq!(fc, 0, "nothing is frozen-but-changing:\n{}", audit.render());
        let losses: Vec<f32> = solver
            .record
            .as_ref()
            .unwrap()
            .test
            .iter()
            .map(|t| t.2.iter().find(|(n, _)| n == "loss").unwrap().1)
            .collect();
        assert!(
            losses.windows(2).all(|w| w[0].to_bits() == w[1].to_bits()),
            "TEST loss constant: {losses:?}"
        );
        let snap = work.join(format!(
            "snap/frozen_bn_global_iter_{}.caffemodel",
            solver.iter
        ));
        let init = work.join("init_frozen_bn_global.caffemodel");
        let d = crema::cli::diff::diff(&snap, &init, 0.0)?;
        assert!(
            d.same,
            "snapshot differs from the initial weights:\n{}",
            d.report
        );
        if gpu.is_some() {
            return Ok(());
        }
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_crema"))
            .args(["diff", snap.to_str().unwrap(), init.to_str().unwrap()])
            .output()?;
        assert_eq!(
            status.status.code(),
            Some(0),
            "crema diff exits 0 on identical models"
        );
        // The default-BatchNorm run's snapshot differs from its initial weights (bn1 only).
        let drifted = work.join(format!(
            "snap/frozen_bn_default_iter_{}.caffemodel",
            solver.iter
        ));
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_crema"))
            .args([
                "diff",
                drifted.to_str().unwrap(),
                work.join("init_frozen_bn_default.caffemodel")
                    .to_str()
                    .unwrap(),
            ])
            .output()?;
        assert_eq!(
            status.status.code(),
            Some(1),
            "crema diff exits 1 on different models"
        );
        let report = String::from_utf8_lossy(&status.stdout);
        assert!(
            report.contains("bn1 blob 0: DIFFERS") && report.contains("conv1 blob 0: identical"),
            "{report}"
        );
        Ok(())
    })();
    std::env::set_current_dir(&cwd).unwrap();
    result.unwrap();
}

/// A small trainable net fed by DummyData, with BatchNorm + Scale, shared params and a loss.
fn toy_net(frozen_conv_bn: bool, bn_global: bool) -> String {
    let conv_params = if frozen_conv_bn {
        "param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }"
    } else {
        ""
    };
    let bn = if bn_global {
        "batch_norm_param { use_global_stats: true }"
    } else {
        ""
    };
    format!(
        r#"
name: "toy"
layer {{ name: "data" type: "DummyData" top: "data"
  dummy_data_param {{ shape {{ dim: 4 dim: 2 dim: 5 dim: 5 }} data_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1" {conv_params}
  convolution_param {{ num_output: 3 kernel_size: 3 weight_filler {{ type: "gaussian" std: 0.3 }} bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" {bn} }}
layer {{ name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param {{ bias_term: true }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" param {{ name: "shared_w" }}
  inner_product_param {{ num_output: 3 bias_term: false weight_filler {{ type: "gaussian" std: 0.2 }} }} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "conv1" top: "ip2" param {{ name: "shared_w" }}
  inner_product_param {{ num_output: 3 bias_term: false }} }}
layer {{ name: "sum" type: "Eltwise" bottom: "ip1" bottom: "ip2" top: "score" }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "score" bottom: "target" top: "loss" }}
layer {{ name: "target" type: "DummyData" top: "target" dummy_data_param {{ shape {{ dim: 4 dim: 3 }} data_filler {{ type: "constant" value: 0.5 }} }} }}
"#
    )
}

/// The target layer must come before the loss; keep the text readable above and fix the order.
fn ordered(text: &str) -> NetParameter {
    let mut p = parse_net_text(text, "toy", TextOptions::default()).unwrap();
    let t = p.layer.iter().position(|l| l.name() == "target").unwrap();
    let target: LayerParameter = p.layer.remove(t);
    p.layer.insert(1, target);
    p
}

/// Gives bn1 unit running statistics (mean 0, variance 1, factor 1): a never-trained BatchNorm
/// with global statistics divides by sqrt(eps), as in Caffe, and the toy net would diverge.
fn init_bn(s: &Solver) {
    let li = s.net.layer_index("bn1").unwrap();
    let b = s.net.layers[li].layer.blobs();
    b[0].fill_data(0.0);
    b[1].fill_data(1.0);
    b[2].fill_data(1.0);
}

fn toy_solver(kind: &str, net: NetParameter, extra: &str) -> Solver {
    let text = format!(
        "type: \"{kind}\" base_lr: 0.05 lr_policy: \"fixed\" max_iter: 4 weight_decay: 0.01 random_seed: 7 display: 0 snapshot_after_train: false {extra}"
    );
    let mut param = parse_solver_text(&text, "toy_solver", TextOptions::default()).unwrap();
    param.net_param = Some(net);
    let s = Solver::new(
        param,
        &SolverOptions {
            verbose: false,
            ..Default::default()
        },
    )
    .unwrap();
    init_bn(&s);
    s
}

#[test]
fn audit_predictions_match_blob_hashes_for_every_solver() {
    quiet();
    for kind in ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"] {
        let extra = match kind {
            "SGD" | "Nesterov" | "AdaDelta" | "Adam" => "momentum: 0.9",
            _ => "",
        };
        for (frozen, global, iter_size) in [(false, false, 1), (true, false, 2), (true, true, 1)] {
            let mut solver = toy_solver(
                kind,
                ordered(&toy_net(frozen, global)),
                &format!("{extra} iter_size: {iter_size}"),
            );
            let audit = solver.audit();
            let before = hash_params(&solver.net);
            solver.solve(None).unwrap();
            let after = hash_params(&solver.net);
            verify(&audit, &before, &after).unwrap_or_else(|e| {
                panic!(
                    "{kind} frozen={frozen} global={global}: {e:#}\n{}",
                    audit.render()
                )
            });
            // The converse: every blob the solver trains did change.
            for (((layer, idx), h0), (_, h1)) in before.iter().zip(&after) {
                let row = audit
                    .rows
                    .iter()
                    .find(|r| r.net == "train" && &r.layer == layer && r.index == *idx)
                    .unwrap();
                if row.solver.yes || row.forward.yes {
                    assert_ne!(
                        h0, h1,
                        "{kind}: {layer} param {idx} predicted to change but did not"
                    );
                }
            }
            if frozen && global {
                for (((layer, idx), h0), (_, h1)) in before.iter().zip(&after) {
                    if layer == "conv1" || layer == "bn1" {
                        assert_eq!(h0, h1, "{kind}: frozen {layer} param {idx} changed");
                    }
                }
            }
        }
    }
}

#[test]
fn restored_momentum_moves_a_blob_frozen_later_and_the_audit_says_so() {
    quiet();
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("toy").display().to_string();
    // Train everything for 4 iterations with momentum and snapshot.
    let mut s = toy_solver(
        "SGD",
        ordered(&toy_net(false, true)),
        &format!("momentum: 0.9 snapshot_prefix: \"{prefix}\""),
    );
    s.solve(None).unwrap();
    s.snapshot().unwrap();
    let state = format!("{prefix}_iter_4.solverstate");
    // Resume with conv1 frozen: its momentum history keeps moving it, as in Caffe.
    let mut s2 = toy_solver("SGD", ordered(&toy_net(true, true)), "momentum: 0.9");
    s2.param.max_iter = Some(6);
    s2.restore(Path::new(&state)).unwrap();
    let audit = s2.audit();
    let row = audit
        .rows
        .iter()
        .find(|r| r.layer == "conv1" && r.index == 0)
        .unwrap();
    assert!(
        row.solver.yes && row.solver.why.contains("momentum"),
        "{}",
        audit.render()
    );
    let before = hash_params(&s2.net);
    s2.solve(None).unwrap();
    let after = hash_params(&s2.net);
    verify(&audit, &before, &after).unwrap();
    assert_ne!(before[1].1, after[1].1, "conv1 weights moved by momentum");
}

#[test]
fn freeze_flag_equals_the_hand_edited_prototxt() {
    quiet();
    let run = |net: NetParameter, freeze: &[&str]| -> Vec<Vec<f32>> {
        let text = "type: \"SGD\" base_lr: 0.05 lr_policy: \"fixed\" max_iter: 3 momentum: 0.9 weight_decay: 0.01 random_seed: 7 display: 0 snapshot_after_train: false";
        let mut param = parse_solver_text(text, "s", TextOptions::default()).unwrap();
        param.net_param = Some(net);
        let opts = SolverOptions {
            verbose: false,
            freeze: freeze.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let mut s = Solver::new(param, &opts).unwrap();
        init_bn(&s);
        if !freeze.is_empty() {
            assert!(s
                .audit()
                .freeze_changes
                .iter()
                .any(|c| c.starts_with("bn1 (BatchNorm)") && c.contains("use_global_stats")));
        }
        s.solve(None).unwrap();
        s.net.params.iter().map(|p| p.blob.data_vec()).collect()
    };
    let by_flag = run(ordered(&toy_net(false, false)), &["conv*", "bn1"]);
    let by_hand = run(ordered(&toy_net(true, true)), &[]);
    assert_eq!(by_flag.len(), by_hand.len());
    for (a, b) in by_flag.iter().zip(&by_hand) {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
    let unfrozen = run(ordered(&toy_net(false, false)), &[]);
    assert_ne!(unfrozen[0], by_flag[0], "without --freeze conv1 trains");
    // A pattern that matches nothing is an error, not a silent no-op.
    let mut param = parse_solver_text(
        "base_lr: 0.1 lr_policy: \"fixed\"",
        "s",
        TextOptions::default(),
    )
    .unwrap();
    param.net_param = Some(ordered(&toy_net(false, false)));
    let err = Solver::new(
        param,
        &SolverOptions {
            verbose: false,
            freeze: vec!["nosuch*".into()],
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(format!("{err:#}").contains("no layer"), "{err:#}");
}

/// The audit's text for the seed's net (ImageData replaced by an Input layer, the seed's own
/// solver), so its wording cannot change unnoticed. Set CREMA_BLESS=1 to rewrite the golden
/// file after an intended change, and review the diff.
#[test]
fn seed_audit_text_is_golden() -> Result<()> {
    quiet();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let opts = TextOptions {
        allow_unknown_fields: true,
    };
    let mut net = parse_net_text(
        &std::fs::read_to_string(root.join("seed_net.prototxt"))?,
        "seed_net.prototxt",
        opts,
    )?;
    net.layer.retain(|l| l.r#type() != "ImageData");
    let input = parse_net_text(
        "layer { name: \"data\" type: \"Input\" top: \"data\" top: \"label\" input_param { shape { dim: 2 dim: 3 dim: 32 dim: 32 } shape { dim: 2 } } }",
        "input",
        TextOptions::default(),
    )?;
    net.layer.splice(0..0, input.layer);
    let mut solver_param = parse_solver_text(
        &std::fs::read_to_string(root.join("seed_solver.prototxt"))?,
        "seed_solver.prototxt",
        opts,
    )?;
    solver_param.net_param = Some(net.clone());
    solver_param.snapshot = Some(0);
    let solver = Solver::new(
        solver_param,
        &SolverOptions {
            verbose: false,
            ..Default::default()
        },
    )?;
    let text = solver.audit().render();
    let golden = root.join("seed_audit.txt");
    if std::env::var("CREMA_BLESS").is_ok() {
        std::fs::write(&golden, &text)?;
    }
    let want = std::fs::read_to_string(&golden)
        .context("tests/data/seed_audit.txt (run with CREMA_BLESS=1 to create)")?;
    assert_eq!(
        text, want,
        "the audit's text changed; if intended, rerun with CREMA_BLESS=1 and review the diff"
    );
    // The essentials, independent of layout.
    assert!(text.contains("res2_1a_1_bn (BatchNorm)") && text.contains("use_global_stats: true"));
    assert!(
        text.contains("res2_1a_1_scale (Scale) comes right after frozen BatchNorm res2_1a_1_bn")
    );
    // The same net in TEST phase alone: BatchNorm reads its statistics.
    let test = Net::new(
        &net,
        &NetState {
            phase: Some(Phase::Test as i32),
            ..Default::default()
        },
        &mut CaffeRng::new(1),
        BuildOptions { verbose: false },
    )?;
    let a = crema::audit::audit(&test, &[], None);
    assert!(a
        .rows
        .iter()
        .filter(|r| r.layer_type == "BatchNorm")
        .all(|r| !r.forward.yes));
    Ok(())
}
