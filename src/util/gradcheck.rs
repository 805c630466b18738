//! Numeric gradient checking (finite differences) for any layer, in the manner of Caffe's
//! `GradientChecker`: the analytic gradients from `backward` must match central differences
//! of an objective computed from `forward`, for every bottom that takes a gradient and every
//! parameter blob.
//!
//! The objective is the net's weighted loss plus `sum(top * r)` over the tested layer's
//! non-loss tops, with `r` fixed random weights; so any layer can be checked, loss or not.

use anyhow::{anyhow, bail, Result};

use crate::blob::BlobRef;
use crate::net::{BuildOptions, Net};
use crate::proto::caffe::{NetState, Phase};
use crate::proto::{parse_net_text, TextOptions};
use crate::rng::CaffeRng;

pub struct GradCheck {
    /// Finite-difference step.
    pub step: f32,
    /// Allowed |analytic - numeric| / max(|analytic|, |numeric|, 1).
    pub threshold: f32,
    /// Elements per blob to check (chosen at random; all when the blob is smaller).
    pub max_checks_per_blob: usize,
    /// Skip points within this distance of a kink (ReLU at 0, max ties), as Caffe does.
    pub kink: Option<f32>,
    pub seed: u64,
    pub phase: Phase,
    /// Bottom names that get no gradient (labels).
    pub skip_bottoms: Vec<String>,
    /// Value range for random inputs.
    pub input_range: (f32, f32),
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck {
            step: 1e-2,
            threshold: 1e-2,
            max_checks_per_blob: 60,
            kink: None,
            seed: 1701,
            phase: Phase::Train,
            skip_bottoms: Vec::new(),
            input_range: (-1.0, 1.0),
        }
    }
}

/// The largest error found, for reporting.
#[derive(Debug, Clone, Default)]
pub struct GradReport {
    pub checked: usize,
    pub max_rel_error: f32,
}

impl GradCheck {
    /// Checks the layer named `layer` in the net `net_text` (Input layers feed it; inputs are
    /// filled with uniform random values unless `fill` sets them).
    pub fn check(
        &self,
        net_text: &str,
        layer: &str,
        fill: impl Fn(&str, &BlobRef, &mut CaffeRng),
    ) -> Result<GradReport> {
        let param = parse_net_text(net_text, "<gradcheck>", TextOptions::default())?;
        let state = NetState {
            phase: Some(self.phase as i32),
            ..Default::default()
        };
        let mut rng = CaffeRng::new(self.seed);
        let mut net = Net::new(&param, &state, &mut rng, BuildOptions { verbose: false })?;
        let li = net
            .layer_index(layer)
            .ok_or_else(|| anyhow!("no layer '{layer}'"))?;
        for &i in &net.inputs.clone() {
            let b = net.blobs[i].clone();
            let name = net.blob_names[i].clone();
            let mut v = vec![0f32; b.count()];
            for x in v.iter_mut() {
                *x = rng.uniform(self.input_range.0, self.input_range.1);
            }
            b.set_data(&v)?;
            fill(&name, &b, &mut rng);
        }
        // Fixed random weights for the non-loss tops of the tested layer.
        net.forward(&mut CaffeRng::new(self.seed + 1))?;
        let e = &net.layers[li];
        let mut weights: Vec<Option<Vec<f32>>> = Vec::new();
        for (t, &tid) in e.tops.iter().enumerate() {
            if e.loss_weights[t] != 0.0 {
                weights.push(None);
            } else {
                let n = net.blobs[tid].count();
                weights.push(Some((0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()));
            }
        }
        let objective = |net: &mut Net| -> Result<f64> {
            let loss = net.forward(&mut CaffeRng::new(self.seed + 1))? as f64;
            let e = &net.layers[li];
            let mut s = loss;
            for (t, w) in weights.iter().enumerate() {
                if let Some(w) = w {
                    let d = net.blobs[e.tops[t]].data_vec();
                    s += d
                        .iter()
                        .zip(w)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>();
                }
            }
            Ok(s)
        };
        // Analytic gradients.
        objective(&mut net)?;
        for l in &net.learnable {
            l.blob.fill_diff(0.0);
        }
        {
            let e = &net.layers[li];
            for (t, w) in weights.iter().enumerate() {
                if let Some(w) = w {
                    net.blobs[e.tops[t]].set_diff(w)?;
                }
            }
        }
        let mut rng_b = CaffeRng::new(self.seed + 1);
        for l in (0..=li).rev() {
            net.backward_layer(&mut rng_b, l)?;
        }
        // What to check: the tested layer's bottoms (minus skipped) and its params.
        let e = &net.layers[li];
        let mut targets: Vec<(String, BlobRef, Vec<f32>)> = Vec::new();
        for (b, &bid) in e.bottoms.iter().enumerate() {
            let name = net.blob_names[bid].clone();
            if self.skip_bottoms.contains(&name) || !e.bottom_need_backward[b] {
                continue;
            }
            let blob = net.blobs[bid].clone();
            targets.push((format!("bottom '{name}'"), blob.clone(), blob.diff_vec()));
        }
        for (j, p) in e.layer.blobs().iter().enumerate() {
            if e.layer.base().param_needs_grad(j) {
                targets.push((format!("param {j}"), p.clone(), p.diff_vec()));
            }
        }
        if targets.is_empty() {
            bail!("layer '{layer}' has nothing to check");
        }
        let mut report = GradReport::default();
        let mut pick = CaffeRng::new(self.seed + 2);
        for (what, blob, analytic) in targets {
            let n = blob.count();
            let idx: Vec<usize> = if n <= self.max_checks_per_blob {
                (0..n).collect()
            } else {
                (0..self.max_checks_per_blob)
                    .map(|_| pick.below(n as u32) as usize)
                    .collect()
            };
            for i in idx {
                let orig = blob.data_vec()[i];
                if let Some(k) = self.kink {
                    if orig.abs() < k {
                        continue;
                    }
                }
                let set = |v: f32| {
                    let buf = blob.data_buf();
                    buf.borrow_mut()[i] = v;
                };
                set(orig + self.step);
                let plus = objective(&mut net)?;
                set(orig - self.step);
                let minus = objective(&mut net)?;
                set(orig);
                let numeric = ((plus - minus) / (2.0 * self.step as f64)) as f32;
                let a = analytic[i];
                let scale = a.abs().max(numeric.abs()).max(1.0);
                let rel = (a - numeric).abs() / scale;
                report.checked += 1;
                report.max_rel_error = report.max_rel_error.max(rel);
                if rel > self.threshold {
                    bail!(
                        "layer '{layer}': gradient of {what} at {i}: analytic {a}, numeric {numeric} (relative error {rel})"
                    );
                }
            }
        }
        Ok(report)
    }
}
