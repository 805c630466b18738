//! `crema audit`: the freeze audit without training, for a solver's nets or one net.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::audit::{audit, Audit, SolverFacts};
use crate::net::{BuildOptions, Net};
use crate::proto::caffe::{NetState, Phase};
use crate::proto::{read_net_binary, read_net_text, read_solver_text, TextOptions};
use crate::rng::CaffeRng;
use crate::solver::update::SolverKind;
use crate::solver::{Solver, SolverOptions};

pub struct AuditArgs {
    pub solver: Option<PathBuf>,
    pub model: Option<PathBuf>,
    pub phase: Phase,
    pub weights: Option<String>,
    pub snapshot: Option<PathBuf>,
    pub freeze: Vec<String>,
    pub text: TextOptions,
}

pub fn run_audit(args: &AuditArgs) -> Result<Audit> {
    let weights: Vec<String> = args
        .weights
        .as_deref()
        .map(|w| {
            w.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    match (&args.solver, &args.model) {
        (Some(s), None) => {
            let param = read_solver_text(s, args.text)?;
            let opts = SolverOptions { text: args.text, verbose: false, solver_file: Some(s.clone()), freeze: args.freeze.clone() };
            let mut solver = Solver::new(param, &opts)?;
            solver.load_weights(&weights)?;
            if let Some(st) = &args.snapshot {
                solver.restore(st)?;
            }
            Ok(solver.audit())
        }
        (None, Some(m)) => {
            let mut param = read_net_text(m, args.text)?;
            let changes = crate::audit::freeze::apply_freeze(&mut param, &args.freeze, true)?;
            let state = NetState { phase: Some(args.phase as i32), ..Default::default() };
            let net = Net::new(&param, &state, &mut CaffeRng::new(1), BuildOptions { verbose: false })?;
            for w in &weights {
                net.copy_trained_layers_from(&read_net_binary(std::path::Path::new(w))?)?;
            }
            // One net without a solver: the solver column assumes a positive base_lr.
            let facts = SolverFacts { kind: SolverKind::Sgd, base_lr: 1.0, momentum: 0.0, weight_decay: 0.0, history_nonzero: Vec::new() };
            let mut a = if args.phase == Phase::Train { audit(&net, &[], Some(&facts)) } else { audit(&net, &[], None) };
            a.freeze_changes = changes;
            Ok(a)
        }
        _ => bail!("give either --solver (the solver's train and test nets) or --model with --phase (one net)"),
    }
}
