//! `--freeze PATTERN[,PATTERN...]`: freezes layers by name or glob without editing the
//! prototxt: lr_mult 0 and decay_mult 0 on every param, use_global_stats true on BatchNorm.

use anyhow::{bail, Result};

use crate::proto::caffe::{BatchNormParameter, LayerParameter, NetParameter, ParamSpec};

/// Glob match with `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Parameter blobs a layer of this type creates (so ParamSpecs can be written for each).
fn param_blob_count(l: &LayerParameter) -> usize {
    match l.r#type() {
        "Convolution" | "Deconvolution" => {
            1 + l
                .convolution_param
                .as_ref()
                .map(|c| c.bias_term())
                .unwrap_or(true) as usize
        }
        "InnerProduct" => {
            1 + l
                .inner_product_param
                .as_ref()
                .map(|c| c.bias_term())
                .unwrap_or(true) as usize
        }
        "Embed" => {
            1 + l
                .embed_param
                .as_ref()
                .map(|c| c.bias_term())
                .unwrap_or(true) as usize
        }
        "BatchNorm" => 3,
        "Scale" => {
            let bias = l
                .scale_param
                .as_ref()
                .map(|c| c.bias_term())
                .unwrap_or(false) as usize;
            if l.bottom.len() > 1 {
                bias
            } else {
                1 + bias
            }
        }
        "Bias" => (l.bottom.len() < 2) as usize,
        "PReLU" => 1,
        _ => 0,
    }
}

/// Freezes every layer matching a pattern; returns what changed, one line per layer. With
/// `require_match`, a pattern that matches nothing is an error (a typo would otherwise freeze
/// nothing silently); test nets, which may lack train-only layers, pass false.
pub fn apply_freeze(
    net: &mut NetParameter,
    patterns: &[String],
    require_match: bool,
) -> Result<Vec<String>> {
    let mut changes = Vec::new();
    for pat in patterns {
        if require_match && !net.layer.iter().any(|l| glob_match(pat, l.name())) {
            bail!("--freeze {pat}: no layer of net '{}' matches", net.name());
        }
    }
    for l in net.layer.iter_mut() {
        if !patterns.iter().any(|p| glob_match(p, l.name())) {
            continue;
        }
        let n = param_blob_count(l).max(l.param.len());
        let mut what = Vec::new();
        while l.param.len() < n {
            l.param.push(ParamSpec::default());
        }
        for (i, p) in l.param.iter_mut().enumerate() {
            if p.lr_mult() != 0.0 || p.decay_mult() != 0.0 {
                what.push(format!(
                    "param {i}: lr_mult {} -> 0, decay_mult {} -> 0",
                    p.lr_mult(),
                    p.decay_mult()
                ));
            }
            p.lr_mult = Some(0.0);
            p.decay_mult = Some(0.0);
        }
        if l.r#type() == "BatchNorm" {
            let bn = l
                .batch_norm_param
                .get_or_insert_with(BatchNormParameter::default);
            if bn.use_global_stats != Some(true) {
                what.push(format!(
                    "use_global_stats {} -> true",
                    match bn.use_global_stats {
                        Some(v) => v.to_string(),
                        None => "(from phase)".to_string(),
                    }
                ));
            }
            bn.use_global_stats = Some(true);
        }
        if what.is_empty() {
            changes.push(format!("{} ({}): already frozen", l.name(), l.r#type()));
        } else {
            changes.push(format!(
                "{} ({}): {}",
                l.name(),
                l.r#type(),
                what.join("; ")
            ));
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("res2*", "res2_1a_1_bn"));
        assert!(glob_match("conv?", "conv1"));
        assert!(!glob_match("conv?", "conv10"));
        assert!(glob_match("*bn", "res2_1a_1_bn"));
        assert!(glob_match("conv1", "conv1"));
        assert!(!glob_match("conv1", "conv1_b"));
    }
}
