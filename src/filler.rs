//! Parameter initialisation (`FillerParameter`), with Caffe's formulas and fan rules.

use anyhow::{bail, Result};

use crate::blob::Blob;
use crate::proto::caffe::{filler_parameter::VarianceNorm, FillerParameter};
use crate::rng::CaffeRng;

/// Fills `blob`'s data as `p` says.
pub fn fill(blob: &Blob, p: &FillerParameter, rng: &mut CaffeRng) -> Result<()> {
    let shape = blob.shape();
    let count = blob.count();
    if count == 0 {
        bail!("cannot fill an empty blob (shape {})", blob.shape_string());
    }
    let buf = blob.data_buf();
    let mut d = buf.borrow_mut();
    let ty = p.r#type();
    if p.sparse() >= 0 && ty != "gaussian" {
        bail!("filler '{ty}' does not support 'sparse' (only gaussian does)");
    }
    let fan_in = count / shape.first().copied().unwrap_or(1).max(1);
    let fan_out = if shape.len() > 1 {
        count / shape[1].max(1)
    } else {
        count
    };
    let n = || match p.variance_norm() {
        VarianceNorm::FanIn => fan_in as f32,
        VarianceNorm::FanOut => fan_out as f32,
        VarianceNorm::Average => (fan_in + fan_out) as f32 / 2.0,
    };
    match ty {
        "constant" => d.fill(p.value()),
        "uniform" => {
            for v in d.iter_mut() {
                *v = rng.uniform(p.min(), p.max());
            }
        }
        "gaussian" => {
            for v in d.iter_mut() {
                *v = rng.gaussian(p.mean(), p.std());
            }
            if p.sparse() >= 0 {
                if shape.len() < 2 {
                    bail!("sparse gaussian filler needs a blob with at least 2 axes");
                }
                let keep = p.sparse() as f32 / shape[0] as f32;
                for v in d.iter_mut() {
                    if !rng.bernoulli(keep) {
                        *v = 0.0;
                    }
                }
            }
        }
        "xavier" => {
            let scale = (3.0 / n()).sqrt();
            for v in d.iter_mut() {
                *v = rng.uniform(-scale, scale);
            }
        }
        "msra" => {
            let std = (2.0 / n()).sqrt();
            for v in d.iter_mut() {
                *v = rng.gaussian(0.0, std);
            }
        }
        "bilinear" => {
            if shape.len() != 4 || shape[2] != shape[3] {
                bail!("bilinear filler needs a 4-D blob with square kernels, got {}", blob.shape_string());
            }
            let k = shape[3];
            let f = (k as f32 / 2.0).ceil();
            let c = (k as f32 - 1.0) / (2.0 * f);
            for (i, v) in d.iter_mut().enumerate() {
                let x = (i % k) as f32;
                let y = ((i / k) % k) as f32;
                *v = (1.0 - (x / f - c).abs()) * (1.0 - (y / f - c).abs());
            }
        }
        "positive_unitball" => {
            for v in d.iter_mut() {
                *v = rng.uniform(0.0, 1.0);
            }
            let rows = shape.first().copied().unwrap_or(1).max(1);
            let dim = count / rows;
            for row in d.chunks_mut(dim) {
                let s: f32 = row.iter().sum();
                for v in row.iter_mut() {
                    *v /= s;
                }
            }
        }
        other => bail!(
            "unknown filler type '{other}' (known: constant, uniform, gaussian, xavier, msra, bilinear, positive_unitball)"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filler(ty: &str) -> FillerParameter {
        FillerParameter {
            r#type: Some(ty.into()),
            ..Default::default()
        }
    }

    #[test]
    fn xavier_bounds_and_bilinear_values() {
        let b = Blob::with_shape(&[10, 4, 3, 3]).unwrap();
        let mut rng = CaffeRng::new(3);
        fill(&b, &filler("xavier"), &mut rng).unwrap();
        let lim = (3.0f32 / 36.0).sqrt();
        assert!(b.data_vec().iter().all(|v| v.abs() <= lim));
        assert!(b.data_vec().iter().any(|v| v.abs() > lim * 0.9));
        let b = Blob::with_shape(&[1, 1, 4, 4]).unwrap();
        fill(&b, &filler("bilinear"), &mut rng).unwrap();
        // K=4: f=2, c=0.75; weights per axis 0.25, 0.75, 0.75, 0.25.
        let d = b.data_vec();
        assert!((d[0] - 0.0625).abs() < 1e-7 && (d[5] - 0.5625).abs() < 1e-7);
        let b = Blob::with_shape(&[3, 5]).unwrap();
        fill(&b, &filler("positive_unitball"), &mut rng).unwrap();
        let d = b.data_vec();
        assert!((d[5..10].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(fill(&b, &filler("nope"), &mut rng).is_err());
    }
}
