//! `crema device_query`: Caffe's `caffe device_query`, describing the GPUs the CUDA driver sees
//! (and the NVRTC that would compile crema's kernels for them).

use anyhow::{bail, Result};

use crate::backend::cuda::device::{self, DeviceInfo};

/// Parses `--gpu`: `0`, `0,1` or `all` (Caffe's spellings). None means device 0.
pub fn parse_gpus(spec: Option<&str>) -> Result<Option<Vec<usize>>> {
    let Some(spec) = spec else {
        return Ok(Some(vec![0]));
    };
    if spec.trim() == "all" {
        return Ok(None);
    }
    let mut ids = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<usize>() {
            Ok(v) => ids.push(v),
            Err(_) => bail!("--gpu: '{part}' is not a device number (write 0, 0,1 or all)"),
        }
    }
    if ids.is_empty() {
        bail!("--gpu: no device given (write 0, 0,1 or all)");
    }
    Ok(Some(ids))
}

/// The report for the requested devices; an error (never a panic) when there is no driver, no
/// device, or no device with a requested number.
pub fn device_query(spec: Option<&str>) -> Result<String> {
    let ids = match parse_gpus(spec)? {
        Some(ids) => ids,
        None => (0..device::device_count()?).collect(),
    };
    let mut out = String::new();
    out.push_str(&format!(
        "Querying GPUs {}\n",
        ids.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for id in ids {
        let info = DeviceInfo::query(id)?;
        out.push_str(&info.render());
        out.push_str(&device::nvrtc_summary(Some(info.arch())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_spellings() {
        assert_eq!(parse_gpus(None).unwrap(), Some(vec![0]));
        assert_eq!(parse_gpus(Some("1")).unwrap(), Some(vec![1]));
        assert_eq!(parse_gpus(Some("0, 2")).unwrap(), Some(vec![0, 2]));
        assert_eq!(parse_gpus(Some("all")).unwrap(), None);
        assert!(parse_gpus(Some("x")).is_err());
    }

    #[test]
    fn no_driver_is_an_error_not_a_panic() {
        if device::driver_present() {
            return; // a machine with a GPU driver: nothing to check here
        }
        let e = device_query(Some("0")).unwrap_err().to_string();
        assert!(e.contains("no CUDA driver found"), "{e}");
    }
}
