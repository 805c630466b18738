//! Prototxt parsing: arbitrary bytes through `ensure_text`, then parsed as a NetParameter and as
//! a SolverParameter, strictly and with `allow_unknown_fields`, then upgraded. Errors are fine;
//! panics, hangs, stack overflows and huge allocations are bugs.
#![no_main]

use crema::proto::caffe::{NetParameter, SolverParameter};
use crema::proto::text::{ensure_text, line_col, parse};
use crema::proto::upgrade::{upgrade_net, upgrade_solver};
use crema::proto::TextOptions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Upgrade notes would flood the fuzzer's output.
    crema::util::glog::set_min_level(3);
    let Ok(text) = ensure_text(data, "fuzz") else { return };
    // Positions anywhere in the text (errors point at arbitrary offsets).
    let _ = line_col(text, data.len() / 2);
    for allow_unknown_fields in [false, true] {
        let opts = TextOptions { allow_unknown_fields };
        match parse::<NetParameter>(text, "caffe.NetParameter", "fuzz", opts) {
            Ok(p) => {
                let mut net = p.message;
                let _ = upgrade_net(&mut net, "fuzz");
            }
            Err(e) => check_error(&e.to_string()),
        }
        match parse::<SolverParameter>(text, "caffe.SolverParameter", "fuzz", opts) {
            Ok(p) => {
                let mut s = p.message;
                let _ = upgrade_solver(&mut s, "fuzz");
                let nets = s.net_param.iter_mut().chain(s.train_net_param.iter_mut()).chain(s.test_net_param.iter_mut());
                for n in nets {
                    let _ = upgrade_net(n, "fuzz");
                }
            }
            Err(e) => check_error(&e.to_string()),
        }
    }
});

/// Every parse error is located: `fuzz:LINE:COL: ...`, except unset `required` fields, which
/// are found after parsing (Caffe's parser does not locate them either).
fn check_error(msg: &str) {
    if msg.starts_with("fuzz: message of type") && msg.contains("is missing required fields") {
        return;
    }
    let rest = msg.strip_prefix("fuzz:").unwrap_or_else(|| panic!("error without file name: {msg}"));
    let mut parts = rest.splitn(3, ':');
    let line: usize = parts.next().and_then(|l| l.parse().ok()).unwrap_or_else(|| panic!("no line: {msg}"));
    let col: usize = parts.next().and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no column: {msg}"));
    assert!(line >= 1 && col >= 1, "{msg}");
}
