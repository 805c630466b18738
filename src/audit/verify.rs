//! Checking the audit against reality: hash every parameter blob before and after training
//! and compare what changed with what the audit predicted.

use anyhow::{bail, Result};

use super::Audit;
use crate::net::Net;
use crate::util::hash::hash_f32;

/// Hashes of every parameter blob, keyed by (layer, index), in net order.
pub fn hash_params(net: &Net) -> Vec<((String, usize), String)> {
    net.params
        .iter()
        .map(|p| {
            (
                (net.layers[p.layer].param.name().to_string(), p.index),
                hash_f32(&p.blob.data_vec()),
            )
        })
        .collect()
}

/// One line per train-net blob: predicted vs observed; an error when they disagree.
pub fn verify(
    audit: &Audit,
    before: &[((String, usize), String)],
    after: &[((String, usize), String)],
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut mismatches = Vec::new();
    for (((layer, idx), h0), (_, h1)) in before.iter().zip(after) {
        let changed = h0 != h1;
        let predicted = audit
            .rows
            .iter()
            .filter(|r| &r.layer == layer && r.index == *idx)
            .any(|r| r.changes());
        let verdict = match (changed, predicted) {
            (true, true) => "changed, as predicted",
            (false, false) => "unchanged, as predicted",
            (true, false) => "CHANGED BUT PREDICTED FROZEN",
            (false, true) => "unchanged (predicted to change)",
        };
        lines.push(format!("{layer} param {idx}: {h0} -> {h1}: {verdict}"));
        if changed && !predicted {
            mismatches.push(format!("{layer} param {idx}"));
        }
    }
    if !mismatches.is_empty() {
        bail!(
            "freeze verification failed: {} blob(s) changed although the audit said nothing would change them: {}. This is a bug in crema; please report it.",
            mismatches.len(),
            mismatches.join(", ")
        );
    }
    Ok(lines)
}
