//! The freeze audit: for every parameter blob of the built nets, will the solver change it,
//! will a forward pass change it, does a gradient reach it, and why. Computed from the built
//! nets (not the prototxt text), so it sees what Caffe's rules make of the file: BatchNorm
//! taking use_global_stats from the phase, default lr_mult 1 on unnamed params, sharing.

pub mod freeze;
pub mod verify;

use std::fmt::Write as _;

use crate::net::Net;
use crate::solver::update::SolverKind;
use crate::util::glog::fmt_g;

/// An answer with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub yes: bool,
    pub why: String,
}

impl Answer {
    fn yes(why: impl Into<String>) -> Self {
        Answer {
            yes: true,
            why: why.into(),
        }
    }
    fn no(why: impl Into<String>) -> Self {
        Answer {
            yes: false,
            why: why.into(),
        }
    }
    fn text(&self) -> String {
        format!("{} ({})", if self.yes { "yes" } else { "no" }, self.why)
    }
}

/// One parameter blob.
#[derive(Debug, Clone)]
pub struct Row {
    pub net: String,
    pub layer: String,
    pub layer_type: String,
    pub index: usize,
    pub role: String,
    pub shape: Vec<usize>,
    pub lr_mult: f32,
    pub decay_mult: f32,
    /// Name of the owner (layer, index) when this blob aliases another.
    pub shared_from: Option<(String, usize)>,
    pub solver: Answer,
    pub forward: Answer,
    pub gradient: Answer,
    /// The user froze it (lr_mult 0 written or `--freeze`).
    pub frozen_by_user: bool,
}

impl Row {
    /// Whether any process will change this blob's bytes.
    pub fn changes(&self) -> bool {
        self.solver.yes || self.forward.yes
    }
}

#[derive(Debug, Clone, Default)]
pub struct Audit {
    pub rows: Vec<Row>,
    pub warnings: Vec<String>,
    /// Lines describing what `--freeze` changed.
    pub freeze_changes: Vec<String>,
}

/// Solver facts the audit needs.
#[derive(Debug, Clone)]
pub struct SolverFacts {
    pub kind: SolverKind,
    pub base_lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Per learnable of the train net: whether restored history is non-zero.
    pub history_nonzero: Vec<bool>,
}

/// Caffe's names for a layer's parameter blobs.
pub fn role(layer_type: &str, index: usize) -> String {
    let r = match (layer_type, index) {
        ("Convolution" | "Deconvolution" | "InnerProduct" | "Embed", 0) => "weights",
        ("Convolution" | "Deconvolution" | "InnerProduct" | "Embed", 1) => "bias",
        ("BatchNorm", 0) => "running mean (sum)",
        ("BatchNorm", 1) => "running variance (sum)",
        ("BatchNorm", 2) => "moving-average factor",
        ("Scale", 0) => "scale",
        ("Scale", 1) => "bias",
        ("Bias", 0) => "bias",
        ("PReLU", 0) => "slopes",
        _ => return format!("param {index}"),
    };
    r.to_string()
}

fn phase_word(net: &Net) -> &'static str {
    crate::net::phase_name(net.phase)
}

/// Audits the train net (with the solver's facts) and any test nets.
pub fn audit(train: &Net, tests: &[&Net], solver: Option<&SolverFacts>) -> Audit {
    let mut a = Audit::default();
    audit_net(&mut a, "train", train, solver);
    for (i, t) in tests.iter().enumerate() {
        audit_test_net(&mut a, &format!("test#{i}"), t, train);
        // A test net BatchNorm that computes batch statistics writes into the train net's
        // running statistics, which the test net shares (Caffe's ShareTrainedLayersWith).
        for e in &t.layers {
            if e.layer.type_name() == "BatchNorm" && !e.layer.forward_writes_params().is_empty() {
                a.warnings.push(format!(
                    "{} (BatchNorm) in test net #{i} has use_global_stats false: every test forward normalises with batch statistics and overwrites the running mean and variance it shares with the train net. Remove use_global_stats: false from its TEST copy (the TEST default is true).",
                    e.param.name()
                ));
            }
        }
    }
    a
}

fn audit_net(a: &mut Audit, label: &str, net: &Net, solver: Option<&SolverFacts>) {
    audit_net_filtered(a, label, net, solver, None)
}

/// Test nets alias the train net's parameters: only their blobs that a test forward writes
/// (or that the train net lacks) get rows of their own.
fn audit_test_net(a: &mut Audit, label: &str, net: &Net, train: &Net) {
    audit_net_filtered(a, label, net, None, Some(train))
}

fn audit_net_filtered(
    a: &mut Audit,
    label: &str,
    net: &Net,
    solver: Option<&SolverFacts>,
    train: Option<&Net>,
) {
    let start = a.rows.len();
    for p in &net.params {
        let e = &net.layers[p.layer];
        if let Some(t) = train {
            let in_train = t.layer_index(e.param.name()).is_some();
            if in_train && !e.layer.forward_writes_params().contains(&p.index) {
                continue;
            }
        }
        let ty = e.layer.type_name().to_string();
        let learn = &net.learnable[p.learnable_id];
        let spec = e.param.param.get(p.index);
        let frozen_by_user = spec
            .map(|s| s.lr_mult.is_some() && s.lr_mult() == 0.0)
            .unwrap_or(false);
        let shared_from = p.owner.map(|o| {
            let op = &net.params[o];
            (net.layers[op.layer].param.name().to_string(), op.index)
        });
        let lr = learn.lr_mult;
        let solver_answer = match solver {
            None => Answer::no(format!(
                "{} net: the solver updates only the train net",
                phase_word(net)
            )),
            Some(s) => {
                let hist = s
                    .history_nonzero
                    .get(p.learnable_id)
                    .copied()
                    .unwrap_or(false);
                let momentum_moves = matches!(s.kind, SolverKind::Sgd | SolverKind::Nesterov)
                    && hist
                    && s.momentum != 0.0;
                if p.owner.is_some() {
                    let (ol, oi) = shared_from.clone().unwrap();
                    if lr != 0.0 && s.base_lr != 0.0 || momentum_moves {
                        Answer::yes(format!(
                            "shared with {ol} param {oi}, which the solver updates"
                        ))
                    } else {
                        Answer::no(format!("shared with {ol} param {oi}, which is frozen"))
                    }
                } else if lr == 0.0 {
                    if momentum_moves {
                        Answer::yes(format!(
                            "lr_mult 0, but restored {} momentum history keeps moving it",
                            s.kind.name()
                        ))
                    } else {
                        Answer::no("lr_mult 0")
                    }
                } else if s.base_lr == 0.0 {
                    if momentum_moves {
                        Answer::yes(format!(
                            "base_lr 0, but restored {} momentum history keeps moving it",
                            s.kind.name()
                        ))
                    } else {
                        Answer::no("base_lr 0")
                    }
                } else {
                    Answer::yes(format!("lr = base_lr x {}", fmt_g(lr as f64)))
                }
            }
        };
        let writes = e.layer.forward_writes_params();
        let forward_answer = if writes.contains(&p.index) {
            Answer::yes(format!(
                "use_global_stats is false in {}: every forward overwrites it",
                phase_word(net)
            ))
        } else if ty == "BatchNorm" {
            Answer::no("use_global_stats: statistics are read, not written")
        } else {
            Answer::no("forward only reads it")
        };
        let grad = if !e.need_backward {
            Answer::no("the layer does not need backward")
        } else if !e.layer.base().param_needs_grad(p.index) {
            Answer::no("lr_mult 0: its gradient is not computed")
        } else if ty == "BatchNorm" {
            Answer::no("BatchNorm statistics have no gradient")
        } else {
            Answer::yes("backward reaches the layer")
        };
        a.rows.push(Row {
            net: label.to_string(),
            layer: e.param.name().to_string(),
            layer_type: ty,
            index: p.index,
            role: role(e.layer.type_name(), p.index),
            shape: p.blob.shape(),
            lr_mult: lr,
            decay_mult: learn.decay_mult,
            shared_from,
            solver: solver_answer,
            forward: forward_answer,
            gradient: grad,
            frozen_by_user,
        });
    }
    if let Some(solver) = solver {
        warnings_for_train_net(a, net, start, solver);
    }
}

fn warnings_for_train_net(a: &mut Audit, net: &Net, start: usize, s: &SolverFacts) {
    let rows: Vec<Row> = a.rows[start..].to_vec();
    let layer_rows = |name: &str| {
        rows.iter()
            .filter(|r| r.layer == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    // Which layer produced each blob (for "right after" relations).
    let producer = |blob: usize, before: usize| -> Option<usize> {
        (0..before)
            .rev()
            .find(|&li| net.layers[li].tops.contains(&blob))
    };
    let mut frozen_bn: Vec<String> = Vec::new();
    for (li, e) in net.layers.iter().enumerate() {
        let name = e.param.name();
        if e.layer.type_name() == "BatchNorm" {
            let writes = !e.layer.forward_writes_params().is_empty();
            let upstream_frozen = e.bottoms.iter().any(|&b| {
                producer(b, li).is_some_and(|p| {
                    let r = layer_rows(net.layers[p].param.name());
                    !r.is_empty() && r.iter().all(|r| !r.solver.yes)
                })
            });
            let user_froze = layer_rows(name).iter().any(|r| r.frozen_by_user);
            let looks_frozen =
                !e.need_backward || upstream_frozen || user_froze || s.base_lr == 0.0;
            if writes && looks_frozen {
                let mut why = Vec::new();
                if layer_rows(name).iter().all(|r| r.lr_mult == 0.0) {
                    why.push("every param has lr_mult 0");
                }
                if !e.need_backward {
                    why.push("backward is off");
                }
                if s.base_lr == 0.0 {
                    why.push("base_lr is 0");
                }
                a.warnings.push(format!(
                    "{name} (BatchNorm): {}, but use_global_stats is false in TRAIN: each forward normalises with batch statistics and overwrites the running mean and variance. To freeze it, set batch_norm_param {{ use_global_stats: true }}.",
                    if why.is_empty() { "it looks frozen".to_string() } else { why.join(" and ") }
                ));
            }
            if !writes || looks_frozen {
                frozen_bn.push(name.to_string());
            }
        }
        if matches!(e.layer.type_name(), "Scale" | "Bias") {
            let after_frozen_bn = e.bottoms.iter().find_map(|&b| {
                producer(b, li)
                    .filter(|&p| frozen_bn.contains(&net.layers[p].param.name().to_string()))
            });
            if let Some(p) = after_frozen_bn {
                // lr_mult, not the current base_lr, decides: base_lr 0 today is often a test.
                let trains: Vec<Row> = layer_rows(name)
                    .into_iter()
                    .filter(|r| r.lr_mult != 0.0)
                    .collect();
                if !trains.is_empty() {
                    let list: Vec<String> = trains
                        .iter()
                        .map(|r| format!("{} (lr_mult {})", r.role, fmt_g(r.lr_mult as f64)))
                        .collect();
                    let when = if s.base_lr == 0.0 {
                        " as soon as base_lr is above 0"
                    } else {
                        ""
                    };
                    a.warnings.push(format!(
                        "{name} ({}) comes right after frozen BatchNorm {} but its {} will train{when}. To freeze it too, give each of its params param {{ lr_mult: 0 decay_mult: 0 }}.",
                        e.layer.type_name(),
                        net.layers[p].param.name(),
                        list.join(" and ")
                    ));
                }
            }
        }
    }
    // Sharing between a frozen and a trainable layer.
    for r in &rows {
        if let Some((owner, oi)) = &r.shared_from {
            let owner_row = rows.iter().find(|o| &o.layer == owner && o.index == *oi);
            if let Some(o) = owner_row {
                if r.frozen_by_user != o.frozen_by_user {
                    let (frozen, other) = if r.frozen_by_user {
                        (&r.layer, owner)
                    } else {
                        (owner, &r.layer)
                    };
                    a.warnings.push(format!(
                        "{} param {} is shared between {frozen} (frozen) and {other} (trainable as written): one blob cannot be both; it is {} for both.",
                        owner,
                        oi,
                        if o.solver.yes { "trained" } else { "frozen" }
                    ));
                }
            }
        }
    }
    // Weight decay without a gradient shrinks the blob toward zero.
    if s.weight_decay != 0.0 {
        for r in rows.iter().filter(|r| r.shared_from.is_none()) {
            if r.solver.yes && r.decay_mult != 0.0 && !r.gradient.yes && r.layer_type != "BatchNorm"
            {
                a.warnings.push(format!(
                    "{} param {} ({}): weight decay {} applies but no gradient reaches it ({}): every iteration shrinks it toward 0. Set decay_mult: 0 (and lr_mult: 0 to freeze it).",
                    r.layer,
                    r.index,
                    r.role,
                    fmt_g((s.weight_decay * r.decay_mult) as f64),
                    r.gradient.why
                ));
            }
        }
    }
}

impl Audit {
    /// (trainable, frozen, frozen-but-changing) over the train net's owner blobs (or every
    /// net's, when auditing a single non-train net).
    pub fn counts(&self) -> (usize, usize, usize) {
        let owners = |train_only: bool| -> Vec<&Row> {
            self.rows
                .iter()
                .filter(|r| r.shared_from.is_none() && (!train_only || r.net == "train"))
                .collect()
        };
        let mut set = owners(true);
        if set.is_empty() {
            set = owners(false);
        }
        let (mut t, mut f, mut fc) = (0, 0, 0);
        for r in set {
            if r.solver.yes && r.lr_mult != 0.0 {
                t += 1;
            } else if r.changes() {
                fc += 1;
            } else {
                f += 1;
            }
        }
        (t, f, fc)
    }

    /// The report a person reads before training.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.freeze_changes.is_empty() {
            out.push_str("--freeze changed:\n");
            for c in &self.freeze_changes {
                let _ = writeln!(out, "  {c}");
            }
        }
        let _ = writeln!(
            out,
            "{:<7} {:<18} {:<16} {:>2} {:<24} {:<16} {:>5} {:>5}  {:<40}  {:<40}  gradient reaches it?",
            "net",
            "layer",
            "type",
            "#",
            "role",
            "shape",
            "lr",
            "decay",
            "changed by solver?",
            "changed by forward?"
        );
        for r in &self.rows {
            let shape = r
                .shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x");
            let mut solver = r.solver.text();
            if let Some((o, i)) = &r.shared_from {
                if !solver.contains("shared") {
                    solver = format!("{solver}; shares {o} param {i}");
                }
            }
            let _ = writeln!(
                out,
                "{:<7} {:<18} {:<16} {:>2} {:<24} {:<16} {:>5} {:>5}  {:<40}  {:<40}  {}",
                r.net,
                r.layer,
                r.layer_type,
                r.index,
                r.role,
                shape,
                fmt_g(r.lr_mult as f64),
                fmt_g(r.decay_mult as f64),
                solver,
                r.forward.text(),
                r.gradient.text()
            );
        }
        if !self.warnings.is_empty() {
            out.push_str("Warnings:\n");
            for w in &self.warnings {
                let _ = writeln!(out, "  * {w}");
            }
        }
        let (t, f, fc) = self.counts();
        let _ = writeln!(
            out,
            "Summary: {t} blobs trainable, {f} frozen, {fc} frozen-but-changing."
        );
        out
    }
}
