//! The six update rules, in Caffe's order per parameter: normalize (1/iter_size), regularize
//! (L2 or L1 weight decay), compute the update value into the diff, then `w -= diff`.
//! Operations follow Caffe's CPU path (scale then add, as its BLAS axpby does) so trajectories
//! match Caffe's.

use anyhow::{bail, Result};

use crate::proto::caffe::SolverParameter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolverKind {
    Sgd,
    Nesterov,
    AdaGrad,
    RmsProp,
    AdaDelta,
    Adam,
}

impl SolverKind {
    pub fn from_param(p: &SolverParameter) -> Result<Self> {
        Ok(match p.r#type() {
            "SGD" => SolverKind::Sgd,
            "Nesterov" => SolverKind::Nesterov,
            "AdaGrad" => SolverKind::AdaGrad,
            "RMSProp" => SolverKind::RmsProp,
            "AdaDelta" => SolverKind::AdaDelta,
            "Adam" => SolverKind::Adam,
            other => bail!(
                "Unknown solver type: {other} (known types: SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam)"
            ),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SolverKind::Sgd => "SGD",
            SolverKind::Nesterov => "Nesterov",
            SolverKind::AdaGrad => "AdaGrad",
            SolverKind::RmsProp => "RMSProp",
            SolverKind::AdaDelta => "AdaDelta",
            SolverKind::Adam => "Adam",
        }
    }

    /// History blobs per parameter (AdaDelta and Adam keep two).
    pub fn history_sets(self) -> usize {
        match self {
            SolverKind::AdaDelta | SolverKind::Adam => 2,
            _ => 1,
        }
    }

    /// Whether the step is proportional to the local rate, so that lr 0 never moves the
    /// weights whatever the history holds (all but SGD/Nesterov, whose momentum does).
    pub fn rate_scales_step(self) -> bool {
        !matches!(self, SolverKind::Sgd | SolverKind::Nesterov)
    }

    /// Checks Caffe's per-solver constraints.
    pub fn check(self, p: &SolverParameter) -> Result<()> {
        match self {
            SolverKind::AdaGrad if p.momentum() != 0.0 => {
                bail!("Momentum cannot be used with AdaGrad.")
            }
            SolverKind::RmsProp => {
                if p.momentum() != 0.0 {
                    bail!("Momentum cannot be used with RMSProp.");
                }
                if !(0.0..1.0).contains(&p.rms_decay()) {
                    bail!("rms_decay should lie between 0 and 1.");
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Hyper-parameters the rules read.
#[derive(Debug, Clone, Copy)]
pub struct Hyper {
    pub momentum: f32,
    pub momentum2: f32,
    pub delta: f32,
    pub rms_decay: f32,
    /// The iteration being applied (Adam's t = iter + 1).
    pub iter: i32,
}

/// `y = a*x + b*y` as Caffe's CPU axpby (scale, then add).
fn axpby(a: f32, x: &[f32], b: f32, y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = *yi * b + a * xi;
    }
}

/// Normalize and regularize a gradient in place.
pub fn normalize_regularize(
    iter_size: i32,
    local_decay: f32,
    l1: bool,
    data: &[f32],
    diff: &mut [f32],
) {
    if iter_size > 1 {
        let s = 1.0 / iter_size as f32;
        diff.iter_mut().for_each(|g| *g *= s);
    }
    if local_decay != 0.0 {
        if l1 {
            for (g, &w) in diff.iter_mut().zip(data) {
                let sign = if w > 0.0 {
                    1.0
                } else if w < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                *g += local_decay * sign;
            }
        } else {
            for (g, &w) in diff.iter_mut().zip(data) {
                *g += local_decay * w;
            }
        }
    }
}

/// Turns the (normalized, regularized) gradient in `diff` into the step, updating history.
/// `h2` is the second history set for AdaDelta and Adam.
pub fn compute_update_value(
    kind: SolverKind,
    hp: &Hyper,
    local_rate: f32,
    diff: &mut [f32],
    h1: &mut [f32],
    h2: &mut [f32],
) {
    match kind {
        SolverKind::Sgd => {
            axpby(local_rate, diff, hp.momentum, h1);
            diff.copy_from_slice(h1);
        }
        SolverKind::Nesterov => {
            for i in 0..diff.len() {
                let prev = h1[i];
                let h = h1[i] * hp.momentum + local_rate * diff[i];
                h1[i] = h;
                diff[i] = -hp.momentum * prev + (1.0 + hp.momentum) * h;
            }
        }
        SolverKind::AdaGrad => {
            for i in 0..diff.len() {
                let g = diff[i];
                h1[i] += g * g;
                diff[i] = local_rate * (g / (h1[i].sqrt() + hp.delta));
            }
        }
        SolverKind::RmsProp => {
            let rho = hp.rms_decay;
            for i in 0..diff.len() {
                let g = diff[i];
                h1[i] = h1[i] * rho + (1.0 - rho) * (g * g);
                diff[i] = local_rate * (g / (h1[i].sqrt() + hp.delta));
            }
        }
        SolverKind::AdaDelta => {
            let mu = hp.momentum;
            for i in 0..diff.len() {
                let g = diff[i];
                h1[i] = h1[i] * mu + (1.0 - mu) * (g * g);
                let u = g * ((h2[i] + hp.delta) / (h1[i] + hp.delta)).sqrt();
                h2[i] = h2[i] * mu + (1.0 - mu) * (u * u);
                diff[i] = local_rate * u;
            }
        }
        SolverKind::Adam => {
            let (b1, b2) = (hp.momentum, hp.momentum2);
            let t = hp.iter + 1;
            let correction =
                ((1.0 - (b2 as f64).powi(t)).sqrt() / (1.0 - (b1 as f64).powi(t))) as f32;
            let scale = local_rate * correction;
            for i in 0..diff.len() {
                let g = diff[i];
                h1[i] = h1[i] * b1 + (1.0 - b1) * g;
                h2[i] = h2[i] * b2 + (1.0 - b2) * (g * g);
                diff[i] = scale * (h1[i] / (h2[i].sqrt() + hp.delta));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp() -> Hyper {
        Hyper {
            momentum: 0.9,
            momentum2: 0.999,
            delta: 1e-8,
            rms_decay: 0.99,
            iter: 0,
        }
    }

    #[test]
    fn sgd_momentum_accumulates() {
        let mut d = vec![1.0f32];
        let mut h = vec![0.5f32];
        compute_update_value(SolverKind::Sgd, &hp(), 0.1, &mut d, &mut h, &mut []);
        assert!((h[0] - (0.45 + 0.1)).abs() < 1e-7 && d[0] == h[0]);
    }

    #[test]
    fn adam_first_step_is_lr_times_sign() {
        let mut d = vec![0.3f32, -2.0];
        let (mut m, mut v) = (vec![0f32; 2], vec![0f32; 2]);
        compute_update_value(SolverKind::Adam, &hp(), 0.01, &mut d, &mut m, &mut v);
        assert!(
            (d[0] - 0.01).abs() < 1e-6 && (d[1] + 0.01).abs() < 1e-6,
            "{d:?}"
        );
    }

    #[test]
    fn regularization_l1_and_l2() {
        let w = [2.0f32, -1.0, 0.0];
        let mut g = [1.0f32; 3];
        normalize_regularize(2, 0.1, false, &w, &mut g);
        assert_eq!(g, [0.7, 0.4, 0.5]);
        let mut g = [0.0f32; 3];
        normalize_regularize(1, 0.1, true, &w, &mut g);
        assert_eq!(g, [0.1, -0.1, 0.0]);
    }
}
