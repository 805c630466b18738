//! Reads Caffe's and crema's training logs (glog format) into series: the training loss of
//! every displayed iteration, every train and test net output, and the learning rate.
//!
//! Lines it understands (the header `I1127 17:22:10.435340 24862 solver.cpp:218] ` is optional,
//! so logs that went through other tools still parse):
//!
//! - `Iteration N (x iter/s, ys/d iters), loss = L`: the smoothed training loss at N. Caffe
//!   before 2016 wrote `Iteration N, loss = L` instead, and current Caffe writes that form once
//!   more after the last iteration (the loss at `max_iter`); both are taken as training loss.
//! - `    Train net output #i: name = v[ (* w = x loss)]`: after the line above.
//! - `Iteration N, Testing net (#k)`, then `    Test net output #i: name = v[ ...]`.
//! - `Iteration N, lr = R`.
//!
//! Everything else (net prototxt dumps, layer set-up, warnings) is skipped. Values may be `nan`
//! or `inf`; they are kept, and a plot leaves them out.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// One value at one iteration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub iter: u64,
    pub value: f64,
}

/// What a net output measures, from its name: one containing "loss" is a loss, one containing
/// "acc" (or named `top-5`, `top_1`, `top5`) an accuracy; case-insensitive. The part after the
/// last `/` decides first, so GoogLeNet's `loss3/top-1` is an accuracy and `loss3/loss3` a loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MetricKind {
    Loss,
    Accuracy,
    Other,
}

impl MetricKind {
    pub fn of_name(name: &str) -> MetricKind {
        let last = name.rsplit('/').next().unwrap_or(name);
        for part in [last, name] {
            let p = part.to_ascii_lowercase();
            if p.contains("loss") {
                return MetricKind::Loss;
            }
            if p.contains("acc") || is_top_k(&p) {
                return MetricKind::Accuracy;
            }
        }
        MetricKind::Other
    }
}

/// `top-5`, `top_1`, `top5`.
fn is_top_k(p: &str) -> bool {
    p.strip_prefix("top")
        .map(|r| r.strip_prefix(['-', '_']).unwrap_or(r))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()))
}

/// One net output over the run: `net` is the test net's number (`Testing net (#k)`), 0 for the
/// train net.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub net: usize,
    pub name: String,
    pub kind: MetricKind,
    pub points: Vec<Point>,
}

/// Everything read from one log, in the order the log has it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedLog {
    /// `Iteration N (...), loss = L` (and `Iteration N, loss = L`).
    pub train_loss: Vec<Point>,
    /// `Train net output #i: name = v`, one series per name.
    pub train_outputs: Vec<Series>,
    /// `Test net output #i: name = v`, one series per (test net, name).
    pub test_outputs: Vec<Series>,
    /// `Iteration N, lr = R`.
    pub lr: Vec<Point>,
}

impl ParsedLog {
    /// Whether nothing at all was recognised.
    pub fn is_empty(&self) -> bool {
        self.train_loss.is_empty()
            && self.train_outputs.is_empty()
            && self.test_outputs.is_empty()
            && self.lr.is_empty()
    }

    /// Test series of one kind, in order of first appearance.
    pub fn test_series(&self, kind: MetricKind) -> impl Iterator<Item = &Series> {
        self.test_outputs.iter().filter(move |s| s.kind == kind)
    }

    /// The test output `name` of test net `net`.
    pub fn test_output(&self, net: usize, name: &str) -> Option<&Series> {
        self.test_outputs
            .iter()
            .find(|s| s.net == net && s.name == name)
    }

    /// The train output `name`.
    pub fn train_output(&self, name: &str) -> Option<&Series> {
        self.train_outputs.iter().find(|s| s.name == name)
    }

    /// The training loss shown at iteration `iter` (the first, if the log shows it twice).
    pub fn train_loss_at(&self, iter: u64) -> Option<f64> {
        self.train_loss
            .iter()
            .find(|p| p.iter == iter)
            .map(|p| p.value)
    }
}

/// Reads and parses a log file. A file that cannot be read, or in which no line is recognised,
/// is an error naming the file.
pub fn parse_log_file(path: &Path) -> Result<ParsedLog> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let parsed = parse_log_text(&String::from_utf8_lossy(&bytes));
    if parsed.is_empty() {
        bail!(
            "{}: no training or test lines found (expected a Caffe or crema training log with \
             lines such as 'Iteration 20 (...), loss = 2.3' or 'Test net output #0: accuracy = 0.9')",
            path.display()
        );
    }
    Ok(parsed)
}

/// Parses a log's text; lines that are not understood are skipped.
pub fn parse_log_text(text: &str) -> ParsedLog {
    let mut log = ParsedLog::default();
    // The iteration the next train outputs belong to (the last display line's), and the
    // iteration and test net the next test outputs belong to (the last `Testing net` line's).
    let mut train_iter: Option<u64> = None;
    let mut test_at: Option<(u64, usize)> = None;
    for line in text.lines() {
        let msg = glog_message(line).unwrap_or(line).trim();
        if let Some(rest) = msg.strip_prefix("Iteration ") {
            let Some((iter, rest)) = leading_u64(rest) else {
                continue;
            };
            if let Some(rest) = rest.strip_prefix(" (") {
                // `Iteration N (... iter/s, ...s/d iters), loss = L`
                if let Some(v) = rest
                    .rsplit_once("), loss = ")
                    .and_then(|(_, v)| parse_value(v))
                {
                    log.train_loss.push(Point { iter, value: v });
                    train_iter = Some(iter);
                }
            } else if let Some(rest) = rest.strip_prefix(", ") {
                if let Some(v) = rest.strip_prefix("loss = ").and_then(parse_value) {
                    log.train_loss.push(Point { iter, value: v });
                    train_iter = Some(iter);
                } else if let Some(v) = rest.strip_prefix("lr = ").and_then(parse_value) {
                    log.lr.push(Point { iter, value: v });
                } else if let Some(k) = rest.strip_prefix("Testing net (#") {
                    if let Some((net, tail)) = leading_u64(k) {
                        if tail.starts_with(')') {
                            test_at = usize::try_from(net).ok().map(|net| (iter, net));
                        }
                    }
                }
            }
        } else if let Some(rest) = msg.strip_prefix("Train net output #") {
            if let (Some(iter), Some((name, v))) = (train_iter, parse_output(rest)) {
                push(&mut log.train_outputs, 0, name, Point { iter, value: v });
            }
        } else if let Some(rest) = msg.strip_prefix("Test net output #") {
            if let (Some((iter, net)), Some((name, v))) = (test_at, parse_output(rest)) {
                push(&mut log.test_outputs, net, name, Point { iter, value: v });
            }
        }
    }
    log
}

fn push(series: &mut Vec<Series>, net: usize, name: &str, p: Point) {
    match series.iter_mut().find(|s| s.net == net && s.name == name) {
        Some(s) => s.points.push(p),
        None => series.push(Series {
            net,
            name: name.to_string(),
            kind: MetricKind::of_name(name),
            points: vec![p],
        }),
    }
}

/// The message of a glog line (`<L><mmdd> <hh:mm:ss.uuuuuu> <tid> <file>:<line>] <message>`),
/// or None when the line has no such header.
pub fn glog_message(line: &str) -> Option<&str> {
    let b = line.as_bytes();
    if b.len() < 6
        || !matches!(b[0], b'I' | b'W' | b'E' | b'F')
        || !b[1..5].iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let mut parts = line[5..].splitn(2, ' ');
    if !parts.next()?.is_empty() {
        return None; // the date must be followed by a space
    }
    let rest = parts.next()?.trim_start();
    let (time, rest) = rest.split_once(' ')?;
    if !time.contains(':')
        || !time
            .bytes()
            .all(|c| c.is_ascii_digit() || c == b':' || c == b'.')
    {
        return None;
    }
    let rest = rest.trim_start();
    let (tid, rest) = rest.split_once(' ')?;
    if tid.is_empty() || !tid.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (loc, msg) = rest
        .split_once("] ")
        .or_else(|| rest.strip_suffix(']').map(|l| (l, "")))?;
    if loc.contains(' ') || !loc.contains(':') {
        return None;
    }
    Some(msg)
}

/// `123rest` → (123, "rest").
fn leading_u64(s: &str) -> Option<(u64, &str)> {
    let end = s
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    Some((s[..end].parse().ok()?, &s[end..]))
}

/// `i: name = v[ (* w = x loss)]` (after `... net output #`) → (name, v).
fn parse_output(s: &str) -> Option<(&str, f64)> {
    let (_, rest) = leading_u64(s)?;
    let rest = rest.strip_prefix(": ")?;
    let (name, rest) = rest.split_once(" = ")?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    Some((name, parse_value(rest)?))
}

/// The number at the start of `s` (up to whitespace), as C++'s ostream prints it: `0.5`,
/// `1e-05`, `nan`, `-nan`, `inf`, `-inf`.
fn parse_value(s: &str) -> Option<f64> {
    let tok = s.split_whitespace().next()?;
    let (neg, body) = match tok.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, tok.strip_prefix('+').unwrap_or(tok)),
    };
    let v = match body.to_ascii_lowercase().as_str() {
        "nan" | "nan(ind)" => f64::NAN,
        "inf" | "infinity" => f64::INFINITY,
        b if b.starts_with(|c: char| c.is_ascii_digit() || c == '.') => b.parse().ok()?,
        _ => return None,
    };
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_caffe_lines_and_skips_the_rest() {
        let text = "\
I1127 17:34:44.134992  4124 solver.cpp:45] Initializing solver from parameters: 
test_iter: 2
net: \"Iteration 5 (x), loss = 3\"
I1127 17:34:44.138445  4124 solver.cpp:347] Iteration 0, Testing net (#0)
I1127 17:34:44.140080  4124 solver.cpp:414]     Test net output #0: accuracy = 0.11
I1127 17:34:44.140096  4124 solver.cpp:414]     Test net output #1: loss = 76.3531 (* 1 = 76.3531 loss)
I1127 17:34:44.140769  4124 solver.cpp:239] Iteration 0 (-7.89246e-35 iter/s, 0.002s/1 iters), loss = 2.83709
I1127 17:34:44.140777  4124 solver.cpp:258]     Train net output #0: accuracy = 0.15
I1127 17:34:44.140782  4124 solver.cpp:258]     Train net output #1: loss = 2.83709 (* 1 = 2.83709 loss)
I1127 17:34:44.140794  4124 sgd_solver.cpp:112] Iteration 0, lr = 0.01
I1127 17:34:44.141268  4124 solver.cpp:239] Iteration 1 (1 iter/s, 0s/1 iters), loss = nan
W1127 17:34:44.141268  4124 solver.cpp:239] Iteration 2, Testing net (#1)
I1127 17:34:44.140080  4124 solver.cpp:414]     Test net output #0: top5_acc = 1e-05
Iteration 3, loss = -inf
";
        let log = parse_log_text(text);
        // The prototxt line quoting a display line is text inside a dump, but it has no header
        // and does not start with "Iteration": skipped.
        assert_eq!(log.train_loss.len(), 3);
        assert_eq!(
            log.train_loss[0],
            Point {
                iter: 0,
                value: 2.83709
            }
        );
        assert!(log.train_loss[1].value.is_nan());
        assert_eq!(log.train_loss[2].value, f64::NEG_INFINITY);
        assert_eq!(
            log.lr,
            vec![Point {
                iter: 0,
                value: 0.01
            }]
        );
        assert_eq!(
            log.train_output("accuracy").unwrap().points,
            vec![Point {
                iter: 0,
                value: 0.15
            }]
        );
        let acc = log.test_output(0, "accuracy").unwrap();
        assert_eq!(
            (acc.kind, acc.points.clone()),
            (
                MetricKind::Accuracy,
                vec![Point {
                    iter: 0,
                    value: 0.11
                }]
            )
        );
        let loss = log.test_output(0, "loss").unwrap();
        assert_eq!(
            (loss.kind, loss.points[0].value),
            (MetricKind::Loss, 76.3531)
        );
        let top5 = log.test_output(1, "top5_acc").unwrap();
        assert_eq!(
            (top5.kind, top5.points.clone()),
            (
                MetricKind::Accuracy,
                vec![Point {
                    iter: 2,
                    value: 1e-5
                }]
            )
        );
    }

    #[test]
    fn garbage_is_empty_and_does_not_panic() {
        for text in [
            "",
            "\n\n",
            "Iteration",
            "Iteration 99999999999999999999999 (x), loss = 1",
            "Iteration 1 (, loss = ",
            "Iteration 1, Testing net (#",
            "Iteration 1, Testing net (#99999999999999999999)",
            "Test net output #",
            "Test net output #0: = 1",
            "I1127",
            "I1127 17:34:44.140080",
            "I1127 17:34:44.140080  4124 solver.cpp:414]",
            "\u{0}\u{ffff}Iteration 1 (é), loss = ü",
        ] {
            assert!(parse_log_text(text).is_empty(), "{text:?}");
        }
        // Test outputs before any `Testing net` line have no iteration: skipped.
        assert!(parse_log_text("Test net output #0: accuracy = 0.5").is_empty());
    }

    #[test]
    fn glog_headers() {
        assert_eq!(
            glog_message("I1127 17:22:10.435340 24862 solver.cpp:218] hello"),
            Some("hello")
        );
        assert_eq!(
            glog_message("E0101 00:00:00.000000     7 a.cpp:1] x ] y"),
            Some("x ] y")
        );
        assert_eq!(glog_message("  name: \"x\""), None);
        assert_eq!(glog_message("I1127 hello"), None);
        assert_eq!(glog_message("Iteration 5"), None);
    }

    #[test]
    fn kinds() {
        assert_eq!(MetricKind::of_name("loss3/loss3"), MetricKind::Loss);
        assert_eq!(MetricKind::of_name("loss3/top-1"), MetricKind::Accuracy);
        assert_eq!(MetricKind::of_name("loss1/top_5"), MetricKind::Accuracy);
        assert_eq!(MetricKind::of_name("loss2/other"), MetricKind::Loss);
        assert_eq!(MetricKind::of_name("top"), MetricKind::Other);
        assert_eq!(MetricKind::of_name("Accuracy"), MetricKind::Accuracy);
        assert_eq!(MetricKind::of_name("prob"), MetricKind::Other);
    }
}
