//! The solvers' updates on the GPU against the CPU: two solvers built from the same parameters
//! and net, given the same weights and, at each of three steps, the same gradients; after every
//! step their weights, update values (left in the diffs) and histories must agree. The net's
//! parameters cover lr_mult and decay_mult values (1/1, 2/0, 0.5/2, a frozen 0/0 blob with a
//! zero gradient that both skip, a 0/1 blob that decay still reaches), and the configurations
//! cover L1 and L2, iter_size, gradient clipping that scales and one that does not, and a
//! changing learning rate.

use anyhow::{Context, Result};

use super::{matches, max_rel_error, Row, Side, Status};
use crate::proto::{parse_solver_text, TextOptions};
use crate::rng::CaffeRng;
use crate::solver::{Solver, SolverOptions};

const NET: &str = r#"net_param {
  name: "solver_selftest"
  layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } } }
  layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
          param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
          convolution_param { num_output: 4 kernel_size: 3 } }
  layer { name: "ip" type: "InnerProduct" bottom: "c" top: "y"
          param { lr_mult: 0.5 decay_mult: 2 } param { lr_mult: 0 decay_mult: 0 }
          inner_product_param { num_output: 7 } }
  layer { name: "scale" type: "Scale" bottom: "y" top: "z"
          param { lr_mult: 0 decay_mult: 1 } param { lr_mult: 1 decay_mult: 1 }
          scale_param { bias_term: true } }
}
random_seed: 1701
max_iter: 10
"#;

/// The learnable with lr_mult 0 and decay_mult 0 whose gradient stays zero: both skip it.
const FROZEN: usize = 3;

/// Per solver type: its own hyper-parameters.
fn solver_params(kind: &str) -> &'static str {
    match kind {
        "SGD" | "Nesterov" => "base_lr: 0.01 momentum: 0.9",
        "AdaGrad" => "base_lr: 0.01 delta: 1e-6",
        "RMSProp" => "base_lr: 0.01 rms_decay: 0.98 delta: 1e-6",
        "AdaDelta" => "base_lr: 1.0 momentum: 0.95 delta: 1e-6",
        _ => "base_lr: 0.001 momentum: 0.9 momentum2: 0.999 delta: 1e-8",
    }
}

const CONFIGS: &[(&str, &str)] = &[
    ("L2 decay, iter_size 1", "weight_decay: 0.005 regularization_type: \"L2\" lr_policy: \"fixed\""),
    (
        "L1 decay, iter_size 3, clip 0.5",
        "weight_decay: 0.01 regularization_type: \"L1\" iter_size: 3 clip_gradients: 0.5 lr_policy: \"fixed\"",
    ),
    (
        "L2, iter_size 2, clip 1e6, lr step",
        "weight_decay: 0.002 iter_size: 2 clip_gradients: 1e6 lr_policy: \"step\" gamma: 0.5 stepsize: 1",
    ),
];

const STEPS: i32 = 3;
const TOLERANCE: f32 = 1e-5;

fn build(kind: &str, config: &str, side: &Side) -> Result<Solver> {
    let text = format!("type: \"{kind}\" {} {config}\n{NET}", solver_params(kind));
    let param = parse_solver_text(&text, "<selftest solver>", TextOptions::default())?;
    let opts = SolverOptions {
        verbose: false,
        ..Default::default()
    };
    let mut s = Solver::new(param, &opts)?;
    if let Side::Gpu(g) = side {
        s.set_gpu(Some(g.clone()));
    }
    Ok(s)
}

/// The largest error over `STEPS` updates of `kind` with `config`.
pub fn compare(kind: &str, config: &str, candidate: &Side) -> Result<f32> {
    let mut a = build(kind, config, &Side::Cpu).context("reference solver")?;
    let mut b = build(kind, config, candidate).context("candidate solver")?;
    let mut rng = CaffeRng::new(99);
    let mut draw =
        |n: usize, lo: f32, hi: f32| -> Vec<f32> { (0..n).map(|_| rng.uniform(lo, hi)).collect() };
    for (x, y) in a.net.learnable.iter().zip(&b.net.learnable) {
        let v = draw(x.blob.count(), -1.0, 1.0);
        x.blob.set_data(&v)?;
        y.blob.set_data(&v)?;
    }
    let mut worst = 0f32;
    for _ in 0..STEPS {
        for (i, (x, y)) in a.net.learnable.iter().zip(&b.net.learnable).enumerate() {
            if i == FROZEN {
                x.blob.fill_diff(0.0);
                y.blob.fill_diff(0.0);
            } else {
                let v = draw(x.blob.count(), -0.5, 0.5);
                x.blob.set_diff(&v)?;
                y.blob.set_diff(&v)?;
            }
        }
        a.apply_update(false).context("reference update")?;
        b.apply_update(false).context("candidate update")?;
        a.iter += 1;
        b.iter += 1;
        for (x, y) in a.net.learnable.iter().zip(&b.net.learnable) {
            worst = worst.max(max_rel_error(&x.blob.data_vec(), &y.blob.data_vec()));
            worst = worst.max(max_rel_error(&x.blob.diff_vec(), &y.blob.diff_vec()));
        }
        for (x, y) in a.history.iter().zip(&b.history) {
            worst = worst.max(max_rel_error(&x.borrow(), &y.borrow()));
        }
    }
    Ok(worst)
}

pub const KINDS: &[&str] = &["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"];

/// One row per solver type and configuration.
pub(super) fn rows(candidate: &Side, filter: &Option<String>) -> Vec<Row> {
    let mut rows = Vec::new();
    for kind in KINDS {
        let op = format!("solver {kind}");
        if !matches(filter, &op) {
            continue;
        }
        for (config, text) in CONFIGS {
            let (err, status, note) = match compare(kind, text, candidate) {
                Ok(e) if e <= TOLERANCE => (Some(e), Status::Pass, String::new()),
                Ok(e) => (Some(e), Status::Fail, String::new()),
                Err(e) => (None, Status::Fail, format!("{e:#}")),
            };
            rows.push(Row {
                op: op.clone(),
                config: config.to_string(),
                shape: format!("{STEPS} steps"),
                forward: err,
                backward: None,
                tolerance: TOLERANCE,
                status,
                note: if note.is_empty() {
                    "weights, update values, history".into()
                } else {
                    note
                },
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_solver_configuration_runs_and_the_cpu_agrees_with_itself() {
        let rows = rows(&Side::Cpu, &None);
        assert_eq!(rows.len(), KINDS.len() * CONFIGS.len());
        for r in &rows {
            assert_eq!(
                r.status,
                Status::Pass,
                "{}",
                super::super::render(std::slice::from_ref(r))
            );
            assert_eq!(r.forward, Some(0.0));
        }
    }

    /// The configurations do what their names say: the clipping one clips, the frozen blob is
    /// left alone, and the weights move.
    #[test]
    fn configurations_exercise_what_they_name() {
        let mut s = build("SGD", CONFIGS[1].1, &Side::Cpu).unwrap();
        let before: Vec<Vec<f32>> = s.net.learnable.iter().map(|l| l.blob.data_vec()).collect();
        for l in &s.net.learnable {
            l.blob.set_diff(&vec![1.0; l.blob.count()]).unwrap();
        }
        s.net.learnable[FROZEN].blob.fill_diff(0.0);
        s.apply_update(false).unwrap();
        let l = &s.net.learnable;
        assert_eq!(
            l[FROZEN].blob.data_vec(),
            before[FROZEN],
            "frozen blob moved"
        );
        assert!(s.history_is_zero(FROZEN), "frozen blob's history written");
        assert_ne!(l[0].blob.data_vec(), before[0], "weights did not move");
        // Clipped: the update of a weight with gradient 1/3 (iter_size 3) is far below lr/3.
        let step = (l[1].blob.data_vec()[0] - before[1][0]).abs();
        assert!(step > 0.0 && step < 0.02 / 3.0 * 0.5, "step {step}");
    }
}
