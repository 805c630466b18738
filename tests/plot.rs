//! `crema plot`: the log parser against real Caffe logs (values checked against the fixtures'
//! JSON summaries, which were extracted from the same logs independently), and the PNG it draws
//! (decoded again: size, curves present inside both panels, in each log's colour).

use std::path::{Path, PathBuf};
use std::process::Command;

use crema::cli::logparse::{parse_log_file, parse_log_text, MetricKind, ParsedLog};
use crema::cli::plot::{log_colour, run_plot, LossScale, PlotArgs, Rendered, HEIGHT, WIDTH};
use crema::util::glog::{header, Level};
use serde_json::Value;

/// `$CREMA_SHARED/fixtures/caffe` (default: `../shared` next to the repository).
fn fixtures() -> PathBuf {
    let shared = match std::env::var_os("CREMA_SHARED") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    let p = shared.join("fixtures/caffe");
    assert!(
        p.join("e2e_lmdb/logs").is_dir(),
        "fixture folder {} is missing (set CREMA_SHARED to the shared folder)",
        p.display()
    );
    p
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1.0)
}

fn test_value(log: &ParsedLog, name: &str, iter: u64) -> Option<f64> {
    log.test_output(0, name)?
        .points
        .iter()
        .find(|p| p.iter == iter)
        .map(|p| p.value)
}

/// Every train loss, train output, learning rate and test output that the fixtures' summaries
/// list is what the parser reads from the log, and nothing is left over.
#[test]
fn parses_caffe_training_logs() {
    let dir = fixtures().join("e2e_lmdb");
    let mut summaries: Vec<PathBuf> = std::fs::read_dir(dir.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("_losses.json"))
        .collect();
    summaries.sort();
    assert!(summaries.len() >= 5, "{summaries:?}");
    for summary in summaries {
        let want = json(&summary);
        let log_path = dir.join(want["log"].as_str().unwrap());
        let log = parse_log_file(&log_path).unwrap();
        let what = log_path.display();

        let train = want["train"].as_array().unwrap();
        // One point per displayed iteration, plus the `Iteration N, loss = L` after the last.
        assert_eq!(log.train_loss.len(), train.len() + 1, "{what}");
        for t in train {
            let iter = t["iter"].as_u64().unwrap();
            let loss = t["loss"].as_f64().unwrap();
            let got = log
                .train_loss_at(iter)
                .unwrap_or_else(|| panic!("{what}: no train loss at {iter}"));
            assert!(
                close(got, loss),
                "{what}: train loss at {iter}: {got} != {loss}"
            );
            for (name, v) in t["outputs"].as_object().unwrap() {
                let s = log.train_output(name).unwrap();
                let p = s.points.iter().find(|p| p.iter == iter).unwrap();
                assert!(
                    close(p.value, v.as_f64().unwrap()),
                    "{what}: train {name} at {iter}"
                );
            }
            let lr = log.lr.iter().find(|p| p.iter == iter).unwrap();
            assert!(
                close(lr.value, t["lr"].as_f64().unwrap()),
                "{what}: lr at {iter}"
            );
        }
        let fin = &want["final"];
        let (fin_iter, fin_loss) = (
            fin["iter"].as_u64().unwrap(),
            fin["loss_forward_only_after_snapshot"].as_f64().unwrap(),
        );
        assert!(
            close(log.train_loss.last().unwrap().value, fin_loss),
            "{what}: final loss"
        );
        assert_eq!(log.train_loss.last().unwrap().iter, fin_iter, "{what}");

        let test = want["test"].as_array().unwrap();
        for t in test {
            let iter = t["iter"].as_u64().unwrap();
            for name in ["accuracy", "loss"] {
                let got = test_value(&log, name, iter)
                    .unwrap_or_else(|| panic!("{what}: no test {name} at {iter}"));
                assert!(
                    close(got, t[name].as_f64().unwrap()),
                    "{what}: test {name} at {iter}"
                );
            }
        }
        // One test net, two outputs, classified by name.
        assert_eq!(log.test_outputs.len(), 2, "{what}");
        assert!(log
            .test_outputs
            .iter()
            .all(|s| s.net == 0 && s.points.len() == test.len()));
        assert_eq!(
            log.test_series(MetricKind::Accuracy)
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["accuracy"]
        );
        assert_eq!(
            log.test_series(MetricKind::Loss)
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["loss"]
        );
    }
}

/// The values the brief names, read from the summary rather than written here.
#[test]
fn sgd_first_train_loss_and_accuracy_at_iteration_10() {
    let dir = fixtures().join("e2e_lmdb");
    let want = json(&dir.join("logs/sgd_losses.json"));
    let log = parse_log_file(&dir.join("logs/train_sgd.log")).unwrap();
    let first = &want["train"][0];
    assert_eq!(first["iter"].as_u64(), Some(0));
    assert_eq!(log.train_loss[0].iter, 0);
    assert!(close(
        log.train_loss[0].value,
        first["loss"].as_f64().unwrap()
    ));
    let at10 = want["test"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["iter"].as_u64() == Some(10))
        .unwrap();
    assert!(close(
        test_value(&log, "accuracy", 10).unwrap(),
        at10["accuracy"].as_f64().unwrap()
    ));
}

#[test]
fn parses_frozen_logs() {
    let dir = fixtures().join("frozen");
    let summary = json(&dir.join("summary.json"));
    for variant in ["frozen_bn_default", "frozen_bn_global"] {
        let log = parse_log_file(&dir.join(format!("train_{variant}.log"))).unwrap();
        let want = summary[variant]["test_outputs"].as_array().unwrap();
        assert!(!want.is_empty());
        for t in want {
            let iter = t["iter"].as_u64().unwrap();
            for name in ["accuracy", "loss"] {
                assert!(
                    close(
                        test_value(&log, name, iter).unwrap(),
                        t[name].as_f64().unwrap()
                    ),
                    "{variant} {name} {iter}"
                );
            }
        }
        assert!(!log.train_loss.is_empty());
    }
}

/// crema's own header (util::glog) parses, and two test nets stay apart.
#[test]
fn parses_crema_logs_with_two_test_nets() {
    let h = |line| header(Level::Info, "src/solver/mod.rs", line);
    let mut text = String::new();
    text += &format!("{}Solving LeNet\n", h(1));
    text += "name: \"LeNet\"\nlayer {\n  name: \"loss\"\n}\n"; // a prototxt dump between log lines
    for it in [0u64, 10] {
        text += &format!("{}Iteration {it}, Testing net (#0)\n", h(2));
        text += &format!("{}    Test net output #0: accuracy = 0.{}\n", h(3), it + 1);
        text += &format!("{}Iteration {it}, Testing net (#1)\n", h(2));
        text += &format!("{}    Test net output #0: accuracy = 0.{}\n", h(3), it + 2);
        text += &format!(
            "{}    Test net output #1: loss = 1.5 (* 1 = 1.5 loss)\n",
            h(3)
        );
        text += &format!(
            "{}Iteration {it} (0 iter/s, 0.1s/10 iters), loss = {}\n",
            h(4),
            2.0 - it as f64 / 10.0
        );
        text += &format!("{}    Train net output #0: loss = 2 (* 1 = 2 loss)\n", h(5));
        text += &format!("{}Iteration {it}, lr = 0.01\n", h(6));
    }
    let log = parse_log_text(&text);
    assert_eq!(
        log.train_loss
            .iter()
            .map(|p| (p.iter, p.value))
            .collect::<Vec<_>>(),
        [(0, 2.0), (10, 1.0)]
    );
    let a0 = log.test_output(0, "accuracy").unwrap();
    let a1 = log.test_output(1, "accuracy").unwrap();
    assert_eq!(
        a0.points.iter().map(|p| p.value).collect::<Vec<_>>(),
        [0.1, 0.11]
    );
    assert_eq!(
        a1.points.iter().map(|p| p.value).collect::<Vec<_>>(),
        [0.2, 0.12]
    );
    assert!(log.test_output(0, "loss").is_none());
    assert_eq!(log.test_output(1, "loss").unwrap().points.len(), 2);
}

fn distance(a: [u8; 3], b: (u8, u8, u8)) -> i32 {
    (a[0] as i32 - b.0 as i32).abs()
        + (a[1] as i32 - b.1 as i32).abs()
        + (a[2] as i32 - b.2 as i32).abs()
}

/// Checks the decoded picture against what `render` says it drew.
fn check_picture(png: &Path, rendered: &Rendered, logs: usize) {
    let img = image::open(png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
    assert_eq!((rendered.width, rendered.height), (WIDTH, HEIGHT));
    assert_eq!(rendered.panels.len(), 2);
    let px = |x: i32, y: i32| -> Option<[u8; 3]> {
        (x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height())
            .then(|| img.get_pixel(x as u32, y as u32).0)
    };
    let (top, bottom) = (&rendered.panels[0], &rendered.panels[1]);
    assert!(
        top.area.3 <= bottom.area.1,
        "loss panel above the accuracy panel: {:?} {:?}",
        top.area,
        bottom.area
    );
    for panel in &rendered.panels {
        let (x0, y0, x1, y1) = panel.area;
        assert!(
            x0 >= 0
                && y0 >= 0
                && x1 <= WIDTH as i32
                && y1 <= HEIGHT as i32
                && x1 - x0 > 300
                && y1 - y0 > 200,
            "{:?}",
            panel.area
        );
        // Coloured pixels (neither white, grey nor black) inside the plotting area: curves.
        let mut coloured = 0;
        for y in y0..y1 {
            for x in x0..x1 {
                let [r, g, b] = px(x, y).unwrap();
                let (hi, lo) = (r.max(g).max(b), r.min(g).min(b));
                if hi - lo > 60 {
                    coloured += 1;
                }
            }
        }
        assert!(
            coloured > 500,
            "{}: only {coloured} coloured pixels",
            panel.title
        );
        // Every log has curves here, and most of each curve's points show its colour.
        for i in 0..logs {
            assert!(
                panel.series.iter().any(|s| s.colour == log_colour(i)),
                "{}: no curve of log {i}",
                panel.title
            );
        }
        for s in &panel.series {
            assert!(!s.pixels.is_empty(), "{}", s.label);
            let hits = s
                .pixels
                .iter()
                .filter(|&&(x, y)| {
                    assert!(
                        x >= x0 - 1 && x <= x1 + 1 && y >= y0 - 1 && y <= y1 + 1,
                        "{}: point ({x},{y}) outside {:?}",
                        s.label,
                        panel.area
                    );
                    (-3..=3).any(|dy| {
                        (-3..=3).any(|dx| {
                            px(x + dx, y + dy).is_some_and(|c| distance(c, s.colour) < 40)
                        })
                    })
                })
                .count();
            assert!(
                hits * 10 >= s.pixels.len() * 6,
                "{}: {hits} of {} points drawn",
                s.label,
                s.pixels.len()
            );
        }
    }
}

#[test]
fn draws_two_panels_with_every_logs_curves() {
    let f = fixtures();
    let logs = vec![
        f.join("e2e_lmdb/logs/train_sgd.log"),
        f.join("e2e_lmdb/logs/train_adam.log"),
        f.join("frozen/train_frozen_bn_default.log"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("curves.png");
    let args = PlotArgs {
        logs: logs.clone(),
        output: out.clone(),
        title: Some("e2e".into()),
        loss_scale: LossScale::Auto,
    };
    let r = run_plot(&args).unwrap();
    check_picture(&out, &r, logs.len());
    // Loss: train and test loss of every log; accuracy: test accuracy of every log.
    let labels = |i: usize| {
        r.panels[i]
            .series
            .iter()
            .map(|s| s.label.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        labels(0),
        [
            "train_sgd.log: train loss",
            "train_sgd.log: test loss",
            "train_adam.log: train loss",
            "train_adam.log: test loss",
            "train_frozen_bn_default.log: train loss",
            "train_frozen_bn_default.log: test loss",
        ]
    );
    assert_eq!(
        labels(1),
        [
            "train_sgd.log: test accuracy",
            "train_adam.log: test accuracy",
            "train_frozen_bn_default.log: test accuracy"
        ]
    );
    // The first test loss (76) is ~50 times the later losses: log scale.
    assert!(r.panels[0].log_scale);

    // One log, linear scale, default title.
    let out1 = tmp.path().join("one.png");
    let args = PlotArgs {
        logs: logs[..1].to_vec(),
        output: out1.clone(),
        title: None,
        loss_scale: LossScale::Linear,
    };
    let r1 = run_plot(&args).unwrap();
    assert!(!r1.panels[0].log_scale);
    check_picture(&out1, &r1, 1);
}

#[test]
fn a_log_without_accuracy_still_draws() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("train.log");
    let text: String = (0..20)
        .map(|i| format!("I0101 00:00:00.000000 1 solver.cpp:239] Iteration {} (1 iter/s, 1s/10 iters), loss = {}\n", i * 10, 3.0 / (i + 1) as f64))
        .collect();
    std::fs::write(&log, text).unwrap();
    let out = tmp.path().join("c.png");
    let r = run_plot(&PlotArgs {
        logs: vec![log],
        output: out.clone(),
        title: None,
        loss_scale: LossScale::Auto,
    })
    .unwrap();
    assert_eq!(r.panels[0].series.len(), 1);
    assert!(r.panels[1].series.is_empty());
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT));
}

#[test]
fn empty_garbage_and_missing_logs_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let good = fixtures().join("e2e_lmdb/logs/train_sgd.log");
    let empty = tmp.path().join("empty.log");
    std::fs::write(&empty, "").unwrap();
    let garbage = tmp.path().join("garbage.log");
    let mut bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    bytes.extend_from_slice(
        b"\nname: \"LeNet\"\nIteration x\nTest net output #: = \nI0101 garbage] Iteration 5 (\n",
    );
    std::fs::write(&garbage, bytes).unwrap();
    let missing = tmp.path().join("missing.log");
    let out = tmp.path().join("out.png");
    for bad in [&empty, &garbage, &missing] {
        let args = PlotArgs {
            logs: vec![good.clone(), bad.clone()],
            output: out.clone(),
            title: None,
            loss_scale: LossScale::Auto,
        };
        let err = format!("{:#}", run_plot(&args).unwrap_err());
        assert!(err.contains(&bad.display().to_string()), "{err}");
    }
    assert!(!out.exists(), "nothing is drawn when a log is bad");
    // An output that is not a PNG is refused before drawing.
    let args = PlotArgs {
        logs: vec![good],
        output: tmp.path().join("out.txt"),
        title: None,
        loss_scale: LossScale::Auto,
    };
    assert!(format!("{:#}", run_plot(&args).unwrap_err()).contains("out.txt"));
}

#[test]
fn command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixtures();
    let out = tmp.path().join("curves.png");
    let run = Command::new(env!("CARGO_BIN_EXE_crema"))
        .arg("plot")
        .arg(f.join("e2e_lmdb/logs/train_sgd.log"))
        .arg(f.join("e2e_lmdb/logs/train_nesterov.log"))
        .arg("-o")
        .arg(&out)
        .args(["--title", "SGD vs Nesterov"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(image::image_dimensions(&out).unwrap(), (WIDTH, HEIGHT));

    let garbage = tmp.path().join("notalog.txt");
    std::fs::write(&garbage, "hello\nworld\n").unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_crema"))
        .arg("plot")
        .arg(&garbage)
        .arg("-o")
        .arg(tmp.path().join("x.png"))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("notalog.txt") && stderr.contains("no training or test lines"),
        "{stderr}"
    );
}

/// Extreme, non-finite and single values neither panic nor hang, whatever the loss scale.
#[test]
fn extreme_values_draw() {
    let tmp = tempfile::tempdir().unwrap();
    let h = "I0101 00:00:00.000000 1 solver.cpp:239] ";
    let cases = [
        vec![
            "Iteration 0 (1 iter/s, 1s/1 iters), loss = 1e308",
            "Iteration 1 (1 iter/s, 1s/1 iters), loss = -1e308",
        ],
        vec![
            "Iteration 0 (1 iter/s, 1s/1 iters), loss = 3.40282e+38",
            "Iteration 1 (1 iter/s, 1s/1 iters), loss = 1e-38",
        ],
        vec!["Iteration 7 (1 iter/s, 1s/1 iters), loss = 0"],
        vec!["Iteration 7 (1 iter/s, 1s/1 iters), loss = 2.5"],
        vec![
            "Iteration 0 (1 iter/s, 1s/1 iters), loss = nan",
            "Iteration 5, Testing net (#0)",
            "    Test net output #0: accuracy = -inf",
        ],
        vec![
            "Iteration 18446744073709551615 (1 iter/s, 1s/1 iters), loss = 1",
            "Iteration 0 (1 iter/s, 1s/1 iters), loss = 2",
        ],
        vec![
            "Iteration 3, Testing net (#0)",
            "    Test net output #0: acc = 7",
            "    Test net output #1: acc = -3",
        ],
    ];
    for (i, lines) in cases.iter().enumerate() {
        let log = tmp.path().join(format!("case{i}.log"));
        std::fs::write(
            &log,
            lines
                .iter()
                .map(|l| format!("{h}{l}\n"))
                .collect::<String>(),
        )
        .unwrap();
        for scale in [LossScale::Auto, LossScale::Linear, LossScale::Log] {
            let out = tmp.path().join(format!("case{i}.png"));
            let args = PlotArgs {
                logs: vec![log.clone()],
                output: out.clone(),
                title: None,
                loss_scale: scale,
            };
            let r = run_plot(&args).unwrap_or_else(|e| panic!("case {i} {scale:?}: {e:#}"));
            assert_eq!(image::image_dimensions(&out).unwrap(), (WIDTH, HEIGHT));
            assert_eq!(r.panels.len(), 2);
        }
    }
}
