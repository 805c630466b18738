//! `crema inspect FILE...`: what a Caffe file holds, whatever its extension says.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::proto::blob::{has_legacy_dims, proto_shape, read_blob, shape_string};
use crate::proto::caffe::{BlobProto, LayerParameter, NetParameter, SolverParameter, SolverState};
use crate::proto::kind::{detect, FileKind};
use crate::proto::{self, TextOptions};
use crate::util::glog::fmt_g;
use crate::util::hash::hash_f32;

/// Describes one file; the text is returned so tests can check it.
pub fn inspect_file(path: &Path, opts: TextOptions) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = path.display().to_string();
    if bytes.is_empty() {
        bail!("{file}: file is empty");
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let kind = match (detect(&bytes, ext), ext) {
        // A truncated or corrupt binary fails detection; decode it as the kind its extension
        // names so that the error says what is wrong with it.
        (FileKind::Unknown, "caffemodel") => FileKind::NetBinary,
        (FileKind::Unknown, "solverstate") => FileKind::SolverState,
        (FileKind::Unknown, "binaryproto") => FileKind::BlobProto,
        (kind, _) => kind,
    };
    match kind {
        kind @ (FileKind::NetText | FileKind::SolverText) => {
            let text = proto::text::ensure_text(&bytes, &file)?;
            // Try the likelier message first; report its error if neither parses.
            let solver_first = kind == FileKind::SolverText;
            let as_net =
                || proto::parse_net_text(text, &file, opts).map(|n| describe_net_text(&file, &n));
            let as_solver = || {
                proto::parse_solver_text(text, &file, opts)
                    .map(|s| describe_solver(&file, path, &s))
            };
            if solver_first {
                as_solver().or_else(|e| as_net().map_err(|_| e))
            } else {
                as_net().or_else(|e| as_solver().map_err(|_| e))
            }
        }
        FileKind::NetBinary => describe_model(&file, &proto::decode_net_binary(&bytes, &file)?),
        FileKind::SolverState => {
            let s: SolverState = proto::binary::decode(&bytes, &file, "solverstate")?;
            describe_solverstate(&file, &s)
        }
        FileKind::BlobProto => {
            let b: BlobProto = proto::binary::decode(&bytes, &file, "binaryproto")?;
            let mut out = format!("{file}: BlobProto (binaryproto)\n");
            out.push_str(&format!("  {}\n", blob_summary(&b)?));
            Ok(out)
        }
        FileKind::BlobProtoVector => {
            let v: crate::proto::caffe::BlobProtoVector =
                proto::binary::decode(&bytes, &file, "BlobProtoVector")?;
            let mut out = format!("{file}: BlobProtoVector with {} blob(s)\n", v.blobs.len());
            for (i, b) in v.blobs.iter().enumerate() {
                out.push_str(&format!("  #{i}: {}\n", blob_summary(b)?));
            }
            Ok(out)
        }
        FileKind::Unknown => bail!(
            "{file}: not a Caffe file crema can read (neither prototxt text nor a binary \
             caffemodel, solverstate or binaryproto)"
        ),
    }
}

fn rule_text(l: &LayerParameter) -> String {
    let mut parts = Vec::new();
    for (word, rules) in [("include", &l.include), ("exclude", &l.exclude)] {
        for r in rules.iter() {
            let mut s = Vec::new();
            if let Some(p) = r.phase {
                s.push(if p == 0 {
                    "TRAIN".to_string()
                } else {
                    "TEST".to_string()
                });
            }
            if let Some(v) = r.min_level {
                s.push(format!("level>={v}"));
            }
            if let Some(v) = r.max_level {
                s.push(format!("level<={v}"));
            }
            for st in &r.stage {
                s.push(format!("stage={st}"));
            }
            for st in &r.not_stage {
                s.push(format!("not_stage={st}"));
            }
            parts.push(format!("{word} {{{}}}", s.join(" ")));
        }
    }
    parts.join(" ")
}

fn describe_net_text(file: &str, net: &NetParameter) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{file}: net '{}' (prototxt), {} layer(s)",
        net.name(),
        net.layer.len()
    );
    if net.force_backward() {
        out.push_str("  force_backward: true\n");
    }
    for l in &net.layer {
        let _ = write!(
            out,
            "  {:<20} {:<18} [{}] -> [{}]",
            l.name(),
            l.r#type(),
            l.bottom.join(", "),
            l.top.join(", ")
        );
        if !l.param.is_empty() {
            let ps: Vec<String> = l
                .param
                .iter()
                .map(|p| {
                    let mut s = format!(
                        "lr_mult {} decay_mult {}",
                        fmt_g(p.lr_mult() as f64),
                        fmt_g(p.decay_mult() as f64)
                    );
                    if let Some(n) = &p.name {
                        s = format!("'{n}' {s}");
                    }
                    s
                })
                .collect();
            let _ = write!(out, "  params: {}", ps.join("; "));
        }
        if !l.loss_weight.is_empty() {
            let w: Vec<String> = l.loss_weight.iter().map(|&w| fmt_g(w as f64)).collect();
            let _ = write!(out, "  loss_weight {}", w.join(" "));
        }
        if !l.propagate_down.is_empty() {
            let _ = write!(out, "  propagate_down {:?}", l.propagate_down);
        }
        let rules = rule_text(l);
        if !rules.is_empty() {
            let _ = write!(out, "  {rules}");
        }
        if !l.blobs.is_empty() {
            let _ = write!(out, "  ({} stored blob(s))", l.blobs.len());
        }
        out.push('\n');
    }
    out
}

fn describe_solver(file: &str, path: &Path, s: &SolverParameter) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{file}: solver (prototxt)");
    let mut row = |k: &str, v: String, set: bool| {
        let _ = writeln!(
            out,
            "  {k:<22} {v}{}",
            if set { "" } else { "   (default)" }
        );
    };
    let net_source = if let Some(n) = &s.net {
        format!("net: {n}")
    } else if s.net_param.is_some() {
        "net_param (inline)".to_string()
    } else {
        let mut v = Vec::new();
        if let Some(n) = &s.train_net {
            v.push(format!("train_net: {n}"));
        }
        if s.train_net_param.is_some() {
            v.push("train_net_param (inline)".into());
        }
        for t in &s.test_net {
            v.push(format!("test_net: {t}"));
        }
        if !s.test_net_param.is_empty() {
            v.push(format!(
                "{} test_net_param (inline)",
                s.test_net_param.len()
            ));
        }
        if v.is_empty() {
            "(none given)".into()
        } else {
            v.join(", ")
        }
    };
    row("nets", net_source, true);
    row("type", s.r#type().to_string(), s.r#type.is_some());
    row("base_lr", fmt_g(s.base_lr() as f64), s.base_lr.is_some());
    row(
        "lr_policy",
        s.lr_policy().to_string(),
        s.lr_policy.is_some(),
    );
    match s.lr_policy() {
        "step" => {
            row("gamma", fmt_g(s.gamma() as f64), s.gamma.is_some());
            row("stepsize", s.stepsize().to_string(), s.stepsize.is_some());
        }
        "exp" => row("gamma", fmt_g(s.gamma() as f64), s.gamma.is_some()),
        "inv" | "poly" | "sigmoid" => {
            if s.lr_policy() != "poly" {
                row("gamma", fmt_g(s.gamma() as f64), s.gamma.is_some());
            }
            if s.lr_policy() == "sigmoid" {
                row("stepsize", s.stepsize().to_string(), s.stepsize.is_some());
            } else {
                row("power", fmt_g(s.power() as f64), s.power.is_some());
            }
        }
        "multistep" => {
            row("gamma", fmt_g(s.gamma() as f64), s.gamma.is_some());
            row(
                "stepvalue",
                format!("{:?}", s.stepvalue),
                !s.stepvalue.is_empty(),
            );
        }
        _ => {}
    }
    row("momentum", fmt_g(s.momentum() as f64), s.momentum.is_some());
    if s.r#type() == "Adam" {
        row(
            "momentum2",
            fmt_g(s.momentum2() as f64),
            s.momentum2.is_some(),
        );
    }
    if s.r#type() == "RMSProp" {
        row(
            "rms_decay",
            fmt_g(s.rms_decay() as f64),
            s.rms_decay.is_some(),
        );
    }
    if matches!(s.r#type(), "AdaGrad" | "RMSProp" | "AdaDelta" | "Adam") {
        row("delta", fmt_g(s.delta() as f64), s.delta.is_some());
    }
    row(
        "weight_decay",
        fmt_g(s.weight_decay() as f64),
        s.weight_decay.is_some(),
    );
    row(
        "regularization_type",
        s.regularization_type().to_string(),
        s.regularization_type.is_some(),
    );
    row(
        "clip_gradients",
        fmt_g(s.clip_gradients() as f64),
        s.clip_gradients.is_some(),
    );
    row("max_iter", s.max_iter().to_string(), s.max_iter.is_some());
    row(
        "iter_size",
        s.iter_size().to_string(),
        s.iter_size.is_some(),
    );
    row("display", s.display().to_string(), s.display.is_some());
    row(
        "average_loss",
        s.average_loss().to_string(),
        s.average_loss.is_some(),
    );
    row(
        "test_iter",
        format!("{:?}", s.test_iter),
        !s.test_iter.is_empty(),
    );
    row(
        "test_interval",
        s.test_interval().to_string(),
        s.test_interval.is_some(),
    );
    row(
        "test_initialization",
        s.test_initialization().to_string(),
        s.test_initialization.is_some(),
    );
    row(
        "test_compute_loss",
        s.test_compute_loss().to_string(),
        s.test_compute_loss.is_some(),
    );
    row("snapshot", s.snapshot().to_string(), s.snapshot.is_some());
    let prefix = match &s.snapshot_prefix {
        Some(p) => p.clone(),
        None => crate::solver::default_snapshot_prefix(path),
    };
    row("snapshot_prefix", prefix, s.snapshot_prefix.is_some());
    row(
        "snapshot_format",
        format!("{:?}", s.snapshot_format()).to_uppercase(),
        s.snapshot_format.is_some(),
    );
    row(
        "snapshot_diff",
        s.snapshot_diff().to_string(),
        s.snapshot_diff.is_some(),
    );
    row(
        "snapshot_after_train",
        s.snapshot_after_train().to_string(),
        s.snapshot_after_train.is_some(),
    );
    // `caffe train` uses the GPU only when solver_mode is written (or --gpu is given).
    let mode = if s.solver_mode.is_some() {
        format!("{:?}", s.solver_mode()).to_uppercase()
    } else {
        "CPU (unset: caffe train runs on the CPU unless --gpu is given)".into()
    };
    row("solver_mode", mode, s.solver_mode.is_some());
    row(
        "device_id",
        s.device_id().to_string(),
        s.device_id.is_some(),
    );
    row(
        "random_seed",
        s.random_seed().to_string(),
        s.random_seed.is_some(),
    );
    if !s.weights.is_empty() {
        row("weights", s.weights.join(", "), true);
    }
    out
}

fn stats(data: &[f32]) -> String {
    if data.is_empty() {
        return "empty".into();
    }
    let (mut lo, mut hi, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0f64);
    let mut nonfinite = 0usize;
    for &v in data {
        if !v.is_finite() {
            nonfinite += 1;
            continue;
        }
        lo = lo.min(v);
        hi = hi.max(v);
        sum += v as f64;
    }
    let finite = data.len() - nonfinite;
    let mean = if finite > 0 {
        sum / finite as f64
    } else {
        f64::NAN
    };
    let mut s = format!(
        "min {} max {} mean {}",
        fmt_g(lo as f64),
        fmt_g(hi as f64),
        fmt_g(mean)
    );
    if nonfinite > 0 {
        s.push_str(&format!(" ({nonfinite} non-finite)"));
    }
    s
}

fn blob_summary(b: &BlobProto) -> Result<String> {
    let v = read_blob(b)?;
    let legacy = if has_legacy_dims(b) {
        " (legacy 4-D)"
    } else {
        ""
    };
    let mut s = format!(
        "shape {}{legacy}  {}  hash {}",
        shape_string(&v.shape),
        stats(&v.data),
        hash_f32(&v.data)
    );
    if v.diff.is_some() {
        s.push_str("  +diff");
    }
    Ok(s)
}

/// The listing of a caffemodel's layers and blobs; a blob that does not decode (its count
/// disagrees with its shape, say) is an error naming the layer and blob, not a listing line.
fn describe_model(file: &str, net: &NetParameter) -> Result<String> {
    let mut out = String::new();
    let nblobs: usize = net.layer.iter().map(|l| l.blobs.len()).sum();
    let _ = writeln!(
        out,
        "{file}: caffemodel '{}', {} layer(s), {nblobs} blob(s)",
        net.name(),
        net.layer.len()
    );
    for l in &net.layer {
        if l.blobs.is_empty() {
            let _ = writeln!(out, "  {:<20} {:<18} (no blobs)", l.name(), l.r#type());
            continue;
        }
        let _ = writeln!(out, "  {:<20} {}", l.name(), l.r#type());
        for (i, b) in l.blobs.iter().enumerate() {
            let line = blob_summary(b)
                .with_context(|| format!("{file}: layer '{}' blob {i}", l.name()))?;
            let _ = writeln!(out, "    blob {i}: {line}");
        }
    }
    Ok(out)
}

fn describe_solverstate(file: &str, s: &SolverState) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(out, "{file}: solverstate");
    let _ = writeln!(out, "  iter          {}", s.iter());
    let _ = writeln!(out, "  current_step  {}", s.current_step());
    let _ = writeln!(out, "  learned_net   {}", s.learned_net());
    let _ = writeln!(out, "  history       {} blob(s)", s.history.len());
    for (i, h) in s.history.iter().enumerate() {
        let shape = proto_shape(h)?;
        let v = read_blob(h)?;
        let _ = writeln!(
            out,
            "    #{i}: shape {}  {}",
            shape_string(&shape),
            stats(&v.data)
        );
    }
    Ok(out)
}
