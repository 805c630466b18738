//! numpy `.npy` files (the fixtures' format) as f32 arrays.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Reads a .npy of float32, float64 or integer values as (shape, f32 values, C order).
pub fn read_npy_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..])
        .with_context(|| format!("{}: not a .npy file", path.display()))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    if npy.order() != npyz::Order::C {
        bail!(
            "{}: Fortran-ordered arrays are not supported",
            path.display()
        );
    }
    let dtype = npy.dtype();
    let descr = match &dtype {
        npyz::DType::Plain(t) => t.to_string(),
        _ => bail!("{}: structured arrays are not supported", path.display()),
    };
    let values: Vec<f32> = match &descr[1..] {
        "f4" => npy.into_vec::<f32>()?,
        "f8" => npy
            .into_vec::<f64>()?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        "i4" => npy
            .into_vec::<i32>()?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        "i8" => npy
            .into_vec::<i64>()?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        "u1" => npy
            .into_vec::<u8>()?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        "b1" => npy
            .into_vec::<bool>()?
            .into_iter()
            .map(|v| v as u8 as f32)
            .collect(),
        other => bail!("{}: unsupported dtype {other}", path.display()),
    };
    Ok((shape, values))
}
