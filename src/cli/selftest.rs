//! `crema selftest [--gpu N] [--filter PATTERN]`: every layer that does arithmetic, in a few
//! configurations and several shapes (odd sizes included), and the six solvers' updates, run
//! on the CPU backend (the reference) and on the GPU from the same parameters and inputs; one
//! row per configuration and shape with the largest error of its forward and backward passes.
//!
//! Error measure: for reference value `r` (CPU) and GPU value `g`, `|g - r| / max(1, |r|)`:
//! relative where values exceed 1, absolute below (so values near zero, where relative errors
//! are meaningless, are held to an absolute bound). A NaN on one side only, or on different
//! sides, counts as infinite; equal infinities and NaN on both sides agree. A row's error is the
//! largest over every compared value: the layer's tops and parameters after forward (BatchNorm's
//! running statistics), then its bottom and parameter gradients after backward (parameter
//! gradients are pre-filled, so accumulation `+=` is checked; bottoms that get no gradient are
//! pre-filled too and must come back untouched).
//!
//! A layer whose GPU path is still the trait's default (the CPU code, its blobs copied to the
//! host and back) is compared all the same but marked `host`: it is not a GPU pass.
//!
//! Exit status: 0 when nothing failed, 1 when a row failed, 2 when the selftest cannot run
//! (no driver, no device, no NVRTC: the reason is printed).

mod cases;
mod dropout;
mod solver;

use std::fmt::Write as _;
use std::rc::Rc;

use anyhow::{anyhow, bail, Context, Result};

use crate::backend::cuda::gpu::Gpu;
use crate::blob::{same, BlobRef};
use crate::layers::{backward_on, Ctx};
use crate::net::{BuildOptions, Net};
use crate::proto::caffe::{NetState, Phase};
use crate::proto::{parse_net_text, TextOptions};
use crate::rng::CaffeRng;

pub use cases::{layer_cases, EXCLUDED};

pub struct SelftestArgs {
    pub gpu: usize,
    /// Only rows whose layer type (or "solver", "dropout-kernel") contains this, any case.
    pub filter: Option<String>,
}

/// Where a configuration runs.
#[derive(Clone)]
pub enum Side {
    Cpu,
    Gpu(Rc<Gpu>),
}

impl Side {
    fn gpu(&self) -> Option<&Rc<Gpu>> {
        match self {
            Side::Cpu => None,
            Side::Gpu(g) => Some(g),
        }
    }
}

/// `|got - reference| / max(1, |reference|)` at its largest (see the module docs).
pub fn max_rel_error(reference: &[f32], got: &[f32]) -> f32 {
    if reference.len() != got.len() {
        return f32::INFINITY;
    }
    let mut worst = 0f32;
    for (&r, &g) in reference.iter().zip(got) {
        let e = if r.is_nan() || g.is_nan() {
            if r.is_nan() && g.is_nan() {
                0.0
            } else {
                f32::INFINITY
            }
        } else if r == g {
            // Equal infinities included.
            0.0
        } else {
            let e = (g - r).abs() / r.abs().max(1.0);
            if e.is_nan() {
                f32::INFINITY
            } else {
                e
            }
        };
        worst = worst.max(e);
    }
    worst
}

/// How a value is drawn for an input or a parameter.
#[derive(Debug, Clone, Copy)]
pub enum Fill {
    /// Uniform in [lo, hi).
    Range(f32, f32),
    /// Integers 0..k as floats (labels, indices).
    Labels(u32),
    Const(f32),
}

impl Fill {
    pub const UNIT: Fill = Fill::Range(-1.0, 1.0);

    fn values(self, n: usize, rng: &mut CaffeRng) -> Vec<f32> {
        (0..n)
            .map(|_| match self {
                Fill::Range(lo, hi) => rng.uniform(lo, hi),
                Fill::Labels(k) => rng.below(k) as f32,
                Fill::Const(v) => v,
            })
            .collect()
    }

    /// Labels get no gradient.
    fn takes_gradient(self) -> bool {
        !matches!(self, Fill::Labels(_))
    }
}

/// What a configuration checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    /// Forward and backward against the CPU.
    Both,
    /// Forward only (the layer has no gradient: Accuracy, ArgMax, Threshold).
    ForwardOnly,
    /// Dropout in TRAIN: the two backends draw different masks (CPU: the net's random source;
    /// GPU: Philox), so each run is checked against the mask it drew (`y` is 0 or `x * scale`,
    /// the kept fraction is right, backward applies the forward's mask). The kernels themselves
    /// are compared with the host mirror of their Philox mask in `dropout`.
    DropoutTrain { ratio: f32 },
}

/// One configuration of one layer type, with the input shapes it runs at.
#[derive(Debug, Clone)]
pub struct LayerCase {
    pub layer_type: &'static str,
    /// What distinguishes this configuration (for the report).
    pub config: String,
    /// The layer's prototxt after `name: "L"`: type, bottoms, tops, parameters.
    pub body: String,
    /// Input blob names with how their values are drawn.
    pub inputs: Vec<(&'static str, Fill)>,
    /// One shape per input, per variant.
    pub shapes: Vec<Vec<Vec<usize>>>,
    /// How each parameter blob is drawn (default: uniform in [-1, 1)).
    pub params: Vec<Fill>,
    /// propagate_down per bottom (default: every bottom not filled with labels).
    pub propagate_down: Option<Vec<bool>>,
    pub phase: Phase,
    pub check: Check,
    pub tolerance: f32,
}

/// Default tolerance: float32 arithmetic in another order (tiled GEMMs, tree reductions).
pub const TOLERANCE: f32 = 1e-4;

impl LayerCase {
    pub fn new(
        layer_type: &'static str,
        config: &str,
        body: String,
        inputs: &[(&'static str, Fill)],
        shapes: &[&[&[usize]]],
    ) -> LayerCase {
        LayerCase {
            layer_type,
            config: config.to_string(),
            body,
            inputs: inputs.to_vec(),
            shapes: shapes
                .iter()
                .map(|v| v.iter().map(|s| s.to_vec()).collect())
                .collect(),
            params: Vec::new(),
            propagate_down: None,
            phase: Phase::Train,
            check: Check::Both,
            tolerance: TOLERANCE,
        }
    }

    pub fn params(mut self, p: &[Fill]) -> Self {
        self.params = p.to_vec();
        self
    }

    pub fn propagate_down(mut self, pd: &[bool]) -> Self {
        self.propagate_down = Some(pd.to_vec());
        self
    }

    pub fn phase(mut self, p: Phase) -> Self {
        self.phase = p;
        self
    }

    pub fn check(mut self, c: Check) -> Self {
        self.check = c;
        self
    }

    pub fn tolerance(mut self, t: f32) -> Self {
        self.tolerance = t;
        self
    }

    /// The net: one Input layer holding every input, then the layer "L".
    fn net_text(&self, shapes: &[Vec<usize>]) -> String {
        let mut s = String::from("name: \"selftest\"\nlayer { name: \"in\" type: \"Input\"");
        for (n, _) in &self.inputs {
            let _ = write!(s, " top: \"{n}\"");
        }
        s += " input_param {";
        for shape in shapes {
            s += " shape {";
            for d in shape {
                let _ = write!(s, " dim: {d}");
            }
            s += " }";
        }
        s += " } }\n";
        let _ = writeln!(s, "layer {{ name: \"L\" {} }}", self.body);
        s
    }

    fn pd(&self) -> Vec<bool> {
        self.propagate_down.clone().unwrap_or_else(|| {
            self.inputs
                .iter()
                .map(|(_, f)| f.takes_gradient())
                .collect()
        })
    }
}

fn shapes_text(shapes: &[Vec<usize>]) -> String {
    shapes
        .iter()
        .map(|s| {
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

const SEED: u64 = 1701;

struct Built {
    net: Net,
    li: usize,
}

impl Built {
    fn new(case: &LayerCase, shapes: &[Vec<usize>], side: &Side) -> Result<Built> {
        let text = case.net_text(shapes);
        let param = parse_net_text(&text, "<selftest>", TextOptions::default())?;
        let state = NetState {
            phase: Some(case.phase as i32),
            ..Default::default()
        };
        let mut net = Net::new(
            &param,
            &state,
            &mut CaffeRng::new(SEED),
            BuildOptions { verbose: false },
        )?;
        net.gpu = side.gpu().cloned();
        let li = net
            .layer_index("L")
            .ok_or_else(|| anyhow!("the selftest net has no layer L"))?;
        Ok(Built { net, li })
    }

    fn bottoms(&self) -> Vec<BlobRef> {
        let e = &self.net.layers[self.li];
        e.bottoms
            .iter()
            .map(|&i| self.net.blobs[i].clone())
            .collect()
    }

    fn tops(&self) -> Vec<BlobRef> {
        let e = &self.net.layers[self.li];
        e.tops.iter().map(|&i| self.net.blobs[i].clone()).collect()
    }

    fn params(&self) -> Vec<BlobRef> {
        self.net.layers[self.li].layer.blobs().to_vec()
    }

    /// A GPU net whose layer computes on the host (its GPU path is the CPU default).
    fn computes_on_host(&self) -> bool {
        self.net.gpu.is_some() && !self.net.layers[self.li].layer.runs_on_gpu()
    }

    fn forward(&mut self) -> Result<()> {
        self.net.forward(&mut CaffeRng::new(SEED + 2))?;
        Ok(())
    }

    fn backward(&mut self, pd: &[bool]) -> Result<()> {
        let bottom = self.bottoms();
        let top = self.tops();
        let e = &mut self.net.layers[self.li];
        let n = e.layer.blobs().len();
        e.layer.base_mut().param_propagate_down = vec![true; n];
        let mut rng = CaffeRng::new(SEED + 3);
        let mut ctx = Ctx {
            rng: &mut rng,
            gpu: self.net.gpu.as_deref(),
        };
        backward_on(e.layer.as_mut(), &mut ctx, &top, pd, &bottom)
    }
}

/// Values drawn once and set into both nets: inputs, parameters, top diffs, pre-filled diffs.
struct Draw {
    rng: CaffeRng,
}

impl Draw {
    fn set_data(&mut self, fill: Fill, blobs: [&BlobRef; 2]) -> Result<()> {
        let v = fill.values(blobs[0].count(), &mut self.rng);
        for b in blobs {
            b.set_data(&v)?;
        }
        Ok(())
    }

    fn set_diff(&mut self, blobs: [&BlobRef; 2]) -> Result<()> {
        let v = Fill::UNIT.values(blobs[0].count(), &mut self.rng);
        for b in blobs {
            b.set_diff(&v)?;
        }
        Ok(())
    }
}

/// The errors of one configuration at one shape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    pub forward: f32,
    /// None when the configuration checks forward only.
    pub backward: Option<f32>,
    /// The candidate's layer computes on the host (its GPU path is the CPU default).
    pub host: bool,
    /// Why a check failed besides the error bound (Dropout's kept fraction).
    pub note: Option<String>,
    /// The reference's backward changed at least one gradient (so the comparison compared
    /// something computed, not two untouched pre-fills).
    pub backward_wrote: bool,
}

/// Runs `case` at `shapes` on `reference` and `candidate` and measures how far the candidate is
/// from the reference. `perturb` scales the candidate's first output value by (1 + perturb)
/// before comparing: the unit tests use it to show that a difference is caught.
pub fn run_case(
    case: &LayerCase,
    shapes: &[Vec<usize>],
    reference: &Side,
    candidate: &Side,
    perturb: f32,
) -> Result<Measured> {
    if let Check::DropoutTrain { ratio } = case.check {
        return dropout::run_train_layer(case, shapes, candidate, ratio, perturb);
    }
    let mut a = Built::new(case, shapes, reference).context("reference net")?;
    let mut b = Built::new(case, shapes, candidate).context("candidate net")?;
    let mut draw = Draw {
        rng: CaffeRng::new(SEED + 1),
    };
    for (name, fill) in &case.inputs {
        let (x, y) = (
            a.net.blob_by_name(name).cloned(),
            b.net.blob_by_name(name).cloned(),
        );
        let (x, y) = x.zip(y).ok_or_else(|| anyhow!("no input '{name}'"))?;
        draw.set_data(*fill, [&x, &y])?;
    }
    let (pa, pb) = (a.params(), b.params());
    for (j, (x, y)) in pa.iter().zip(&pb).enumerate() {
        let fill = case.params.get(j).copied().unwrap_or(Fill::UNIT);
        draw.set_data(fill, [x, y])?;
    }
    a.forward().context("reference forward")?;
    b.forward().context("candidate forward")?;
    let (ta, tb) = (a.tops(), b.tops());
    let mut got: Vec<Vec<f32>> = tb.iter().map(|t| t.data_vec()).collect();
    if perturb != 0.0 {
        if let Some(v) = got.iter_mut().find(|v| !v.is_empty()) {
            v[0] = v[0] * (1.0 + perturb) + perturb;
        }
    }
    let mut forward = 0f32;
    for (t, g) in ta.iter().zip(&got) {
        forward = forward.max(max_rel_error(&t.data_vec(), g));
    }
    for (x, y) in pa.iter().zip(&pb) {
        forward = forward.max(max_rel_error(&x.data_vec(), &y.data_vec()));
    }
    let mut m = Measured {
        forward,
        backward: None,
        host: b.computes_on_host(),
        note: None,
        backward_wrote: false,
    };
    if case.check == Check::ForwardOnly {
        return Ok(m);
    }
    for (x, y) in ta.iter().zip(&tb) {
        draw.set_diff([x, y])?;
    }
    let (ba, bb) = (a.bottoms(), b.bottoms());
    for (x, y) in ba.iter().zip(&bb) {
        // A bottom shared with a top (in place) holds the top diff just set.
        if ta.iter().any(|t| same(&t.diff_buf(), &x.diff_buf())) {
            continue;
        }
        draw.set_diff([x, y])?;
    }
    for (x, y) in pa.iter().zip(&pb) {
        draw.set_diff([x, y])?;
    }
    let pd = case.pd();
    let before: Vec<Vec<f32>> = ba.iter().chain(&pa).map(|x| x.diff_vec()).collect();
    a.backward(&pd).context("reference backward")?;
    b.backward(&pd).context("candidate backward")?;
    let mut backward = 0f32;
    let mut first = true;
    for (k, (x, y)) in ba.iter().zip(&bb).chain(pa.iter().zip(&pb)).enumerate() {
        let want = x.diff_vec();
        let mut got = y.diff_vec();
        if perturb != 0.0 && first && !got.is_empty() {
            got[0] = got[0] * (1.0 + perturb) + perturb;
            first = false;
        }
        m.backward_wrote |= want != before[k];
        backward = backward.max(max_rel_error(&want, &got));
    }
    m.backward = Some(backward);
    Ok(m)
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Row {
    pub op: String,
    pub config: String,
    pub shape: String,
    pub forward: Option<f32>,
    pub backward: Option<f32>,
    pub tolerance: f32,
    pub status: Status,
    pub note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    /// Agrees with the CPU, but the layer computed on the host: not a GPU pass.
    Host,
}

impl Status {
    fn text(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Host => "host",
        }
    }
}

impl Row {
    fn from_measured(op: &str, config: &str, shape: String, tol: f32, m: Result<Measured>) -> Row {
        match m {
            Ok(m) => {
                let within = m.forward <= tol && m.backward.is_none_or(|b| b <= tol);
                let status = if !within || m.note.is_some() {
                    Status::Fail
                } else if m.host {
                    Status::Host
                } else {
                    Status::Pass
                };
                let mut note = m.note.unwrap_or_default();
                if m.host && note.is_empty() {
                    note = "GPU path not written: computed on the host".into();
                }
                Row {
                    op: op.into(),
                    config: config.into(),
                    shape,
                    forward: Some(m.forward),
                    backward: m.backward,
                    tolerance: tol,
                    status,
                    note,
                }
            }
            Err(e) => Row {
                op: op.into(),
                config: config.into(),
                shape,
                forward: None,
                backward: None,
                tolerance: tol,
                status: Status::Fail,
                note: format!("{e:#}").replace('\n', " "),
            },
        }
    }
}

fn err_text(e: Option<f32>) -> String {
    match e {
        Some(e) => format!("{e:.2e}"),
        None => "-".into(),
    }
}

/// One row as the table prints it (no header).
fn row_line(r: &Row) -> String {
    render(std::slice::from_ref(r))
        .lines()
        .nth(1)
        .unwrap_or("")
        .to_string()
}

/// The report's table: a header and one line per row.
pub fn render(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<24} {:<36} {:<26} {:>9} {:>9} {:>8}  result",
        "op", "config", "shape", "fwd err", "bwd err", "tol"
    );
    for r in rows {
        let _ = write!(
            s,
            "{:<24} {:<36} {:<26} {:>9} {:>9} {:>8.0e}  {}",
            r.op,
            r.config,
            r.shape,
            err_text(r.forward),
            err_text(r.backward),
            r.tolerance,
            r.status.text()
        );
        if !r.note.is_empty() {
            let _ = write!(s, "  ({})", r.note);
        }
        s.push('\n');
    }
    s
}

fn matches(filter: &Option<String>, what: &str) -> bool {
    filter
        .as_ref()
        .is_none_or(|f| what.to_lowercase().contains(&f.to_lowercase()))
}

/// Every layer row for `candidate` against the CPU, printing each as it is done.
pub fn layer_rows(candidate: &Side, filter: &Option<String>, print: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    for case in layer_cases() {
        if !matches(filter, case.layer_type) {
            continue;
        }
        for shapes in &case.shapes {
            let m = run_case(&case, shapes, &Side::Cpu, candidate, 0.0);
            let row = Row::from_measured(
                case.layer_type,
                &case.config,
                shapes_text(shapes),
                case.tolerance,
                m,
            );
            if print {
                println!("{}", row_line(&row));
            }
            rows.push(row);
        }
    }
    rows
}

/// Counts and the closing lines.
pub fn summary(rows: &[Row]) -> (String, bool) {
    let count = |s: Status| rows.iter().filter(|r| r.status == s).count();
    let (pass, fail, host) = (
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Host),
    );
    let mut s = format!(
        "selftest: {} rows: {pass} pass on the GPU, {fail} fail, {host} computed on the host \
         (GPU path not written yet; they agree with the CPU but are not GPU passes)\n",
        rows.len()
    );
    let host_ops: Vec<&str> = {
        let mut v: Vec<&str> = rows
            .iter()
            .filter(|r| r.status == Status::Host)
            .map(|r| r.op.as_str())
            .collect();
        v.dedup();
        v
    };
    if !host_ops.is_empty() {
        let _ = writeln!(s, "host: {}", host_ops.join(", "));
    }
    if fail > 0 {
        let failed: Vec<String> = rows
            .iter()
            .filter(|r| r.status == Status::Fail)
            .map(|r| format!("{} [{}] {}", r.op, r.config, r.shape))
            .collect();
        let _ = writeln!(s, "FAILED: {}", failed.join("; "));
        s += "RESULT: FAIL\n";
    } else {
        s += "RESULT: PASS\n";
    }
    (s, fail == 0)
}

/// `crema selftest`: returns the exit status (see the module docs).
pub fn run_selftest(args: &SelftestArgs) -> Result<u8> {
    let g = match Gpu::open(args.gpu).and_then(|g| {
        g.load_kernels()?;
        Ok(g)
    }) {
        Ok(g) => Rc::new(g),
        Err(e) => {
            eprintln!(
                "crema selftest: cannot run on GPU {}: {e:#}. The selftest compares the GPU with the \
                 CPU and needs a usable GPU.",
                args.gpu
            );
            return Ok(2);
        }
    };
    println!("crema selftest on {} against the CPU backend", g.describe());
    println!("error = max |gpu - cpu| / max(1, |cpu|) over every compared value");
    println!();
    let side = Side::Gpu(g.clone());
    let mut rows = Vec::new();
    print!("{}", render(&[]));
    rows.extend(layer_rows(&side, &args.filter, true));
    for r in dropout::kernel_rows(&g, &args.filter) {
        println!("{}", row_line(&r));
        rows.push(r);
    }
    for r in solver::rows(&side, &args.filter) {
        println!("{}", row_line(&r));
        rows.push(r);
    }
    if rows.is_empty() {
        bail!(
            "--filter {}: no layer type or check matches",
            args.filter.as_deref().unwrap_or("")
        );
    }
    println!();
    let (text, ok) = summary(&rows);
    print!("{text}");
    Ok(if ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_measure_is_relative_above_one_and_absolute_below() {
        assert_eq!(max_rel_error(&[1.0, -2.0, 0.0], &[1.0, -2.0, 0.0]), 0.0);
        assert!((max_rel_error(&[100.0], &[100.01]) - 1e-4).abs() < 1e-6);
        assert!((max_rel_error(&[1e-3], &[2e-3]) - 1e-3).abs() < 1e-7);
        assert_eq!(max_rel_error(&[1.0], &[f32::NAN]), f32::INFINITY);
        assert_eq!(max_rel_error(&[f32::NAN], &[f32::NAN]), 0.0);
        assert_eq!(max_rel_error(&[f32::INFINITY], &[f32::INFINITY]), 0.0);
        assert_eq!(max_rel_error(&[f32::INFINITY], &[1.0]), f32::INFINITY);
        assert_eq!(max_rel_error(&[1.0, 2.0], &[1.0]), f32::INFINITY);
    }

    /// Every configuration builds and runs on the CPU, and the CPU agrees with itself exactly:
    /// the machinery compares what it should (a non-zero error here would be a selftest bug).
    #[test]
    fn cpu_against_cpu_is_exact_for_every_layer_case() {
        let rows = layer_rows(&Side::Cpu, &None, false);
        assert!(rows.len() > 100, "only {} rows", rows.len());
        let bad: Vec<Row> = rows
            .iter()
            .filter(|r| {
                r.status != Status::Pass
                    || r.forward != Some(0.0)
                    || r.backward.is_some_and(|b| b != 0.0)
            })
            .cloned()
            .collect();
        assert!(bad.is_empty(), "{}", render(&bad));
        println!("{}", render(&rows));
        let (text, ok) = summary(&rows);
        assert!(ok && text.contains("0 fail"), "{text}");
    }

    #[test]
    fn a_perturbed_result_fails() {
        let cases = layer_cases();
        for ty in ["Convolution", "SoftmaxWithLoss", "ReLU", "Dropout"] {
            let case = cases
                .iter()
                .find(|c| c.layer_type == ty && c.check != Check::ForwardOnly)
                .unwrap_or_else(|| panic!("no {ty} case"));
            let m = run_case(case, &case.shapes[0], &Side::Cpu, &Side::Cpu, 1e-3).unwrap();
            assert!(m.forward > case.tolerance, "{ty}: forward {m:?}");
            assert!(m.backward.unwrap() > case.tolerance, "{ty}: backward {m:?}");
            let row = Row::from_measured(ty, &case.config, String::new(), case.tolerance, Ok(m));
            assert_eq!(
                row.status,
                Status::Fail,
                "{ty}: {}",
                render(std::slice::from_ref(&row))
            );
        }
        let failing = Row::from_measured("X", "", String::new(), 1e-4, Err(anyhow!("boom")));
        let (text, ok) = summary(&[failing]);
        assert!(
            !ok && text.contains("RESULT: FAIL") && text.contains("X []"),
            "{text}"
        );
    }

    /// Every backward comparison compares gradients the reference computed.
    #[test]
    fn every_backward_case_computes_a_gradient() {
        for case in layer_cases() {
            if case.check == Check::ForwardOnly {
                continue;
            }
            // In place, TEST-phase Dropout is the identity: its backward leaves the shared diff
            // as it is, correctly.
            let identity = case.phase == Phase::Test && case.config.contains("in place");
            for shapes in &case.shapes {
                let m = run_case(&case, shapes, &Side::Cpu, &Side::Cpu, 0.0).unwrap();
                assert!(
                    m.backward_wrote != identity,
                    "{} [{}] {shapes:?}",
                    case.layer_type,
                    case.config
                );
            }
        }
    }

    #[test]
    fn host_rows_are_not_gpu_passes() {
        let m = Measured {
            forward: 0.0,
            backward: Some(0.0),
            host: true,
            note: None,
            backward_wrote: true,
        };
        let row = Row::from_measured("LRN", "c", String::new(), 1e-4, Ok(m));
        assert_eq!(row.status, Status::Host);
        let (text, ok) = summary(&[row]);
        assert!(ok, "host rows agree with the CPU: not failures");
        assert!(
            text.contains("0 pass on the GPU") && text.contains("1 computed on the host"),
            "{text}"
        );
    }

    #[test]
    fn every_known_layer_type_is_covered_or_excluded_with_a_reason() {
        let cases = layer_cases();
        for ty in crate::layers::KNOWN_TYPES {
            let covered = cases.iter().any(|c| c.layer_type == *ty);
            let excluded = EXCLUDED.iter().any(|(t, why)| t == ty && !why.is_empty());
            assert!(
                covered != excluded,
                "{ty}: covered {covered}, excluded {excluded}"
            );
        }
        for c in &cases {
            assert!(
                c.shapes.len() >= 2 || c.check != Check::Both,
                "{}: one shape",
                c.layer_type
            );
        }
    }

    #[test]
    fn filter_selects_by_type() {
        let rows = layer_rows(&Side::Cpu, &Some("relu".into()), false);
        assert!(!rows.is_empty());
        assert!(rows.iter().all(|r| r.op.to_lowercase().contains("relu")));
    }
}
