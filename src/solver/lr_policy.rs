//! Learning-rate policies (`SGDSolver::GetLearningRate`).

use anyhow::{bail, Result};

use crate::proto::caffe::SolverParameter;

/// The rate at `iter`; `current_step` is the step counter the `step` and `multistep` policies
/// keep (and a solverstate persists). Returns the rate and, for multistep, whether the step
/// advanced (Caffe logs that).
pub fn learning_rate(
    p: &SolverParameter,
    iter: i32,
    current_step: &mut i32,
) -> Result<(f32, bool)> {
    let base = p.base_lr() as f64;
    let gamma = p.gamma() as f64;
    let power = p.power() as f64;
    let it = iter as f64;
    let mut advanced = false;
    let rate = match p.lr_policy() {
        "fixed" => base,
        "step" => {
            if p.stepsize() <= 0 {
                bail!("lr_policy 'step' needs a positive stepsize");
            }
            *current_step = iter / p.stepsize();
            base * gamma.powi(*current_step)
        }
        "exp" => base * gamma.powf(it),
        "inv" => base * (1.0 + gamma * it).powf(-power),
        "multistep" => {
            if (*current_step as usize) < p.stepvalue.len() && iter >= p.stepvalue[*current_step as usize] {
                *current_step += 1;
                advanced = true;
            }
            base * gamma.powi(*current_step)
        }
        "poly" => {
            if p.max_iter() <= 0 {
                bail!("lr_policy 'poly' needs a positive max_iter");
            }
            base * (1.0 - it / p.max_iter() as f64).powf(power)
        }
        "sigmoid" => base / (1.0 + (-gamma * (it - p.stepsize() as f64)).exp()),
        "" => bail!("Unknown learning rate policy: (lr_policy is not set; use fixed, step, exp, inv, multistep, poly or sigmoid)"),
        other => bail!("Unknown learning rate policy: {other} (known: fixed, step, exp, inv, multistep, poly, sigmoid)"),
    };
    Ok((rate as f32, advanced))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solver(policy: &str) -> SolverParameter {
        SolverParameter {
            lr_policy: Some(policy.into()),
            base_lr: Some(0.1),
            gamma: Some(0.5),
            power: Some(2.0),
            stepsize: Some(10),
            max_iter: Some(100),
            stepvalue: vec![5, 8],
            ..Default::default()
        }
    }

    #[test]
    fn policies_match_caffe_formulas() {
        let mut cs = 0;
        let r = |p: &str, it: i32, cs: &mut i32| learning_rate(&solver(p), it, cs).unwrap().0;
        assert_eq!(r("fixed", 7, &mut cs), 0.1);
        assert!((r("step", 25, &mut cs) - 0.025).abs() < 1e-9);
        assert_eq!(cs, 2);
        assert!((r("exp", 2, &mut cs) - 0.025).abs() < 1e-9);
        assert!((r("inv", 2, &mut cs) - 0.1 / 4.0).abs() < 1e-9);
        assert!((r("poly", 50, &mut cs) - 0.025).abs() < 1e-9);
        assert!((r("sigmoid", 10, &mut cs) - 0.05).abs() < 1e-9);
        // multistep advances at most one step per call.
        let mut cs = 0;
        assert!((r("multistep", 9, &mut cs) - 0.05).abs() < 1e-9);
        assert!((r("multistep", 9, &mut cs) - 0.025).abs() < 1e-9);
        assert!(learning_rate(&solver("cosine"), 1, &mut cs).is_err());
    }
}
