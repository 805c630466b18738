//! Choosing where a run computes, as `caffe` does: `--gpu` wins; otherwise the solver's
//! `solver_mode: GPU` (with its `device_id`) asks for a GPU, and a machine without one trains
//! on the CPU after one warning line. An explicit `--gpu` that cannot be honoured is an error.

use std::rc::Rc;

use anyhow::{bail, Context, Result};

use super::device::parse_gpus;
use crate::backend::cuda::device::device_count;
use crate::backend::cuda::gpu::Gpu;
use crate::net::Net;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// No `--gpu`, and no `solver_mode: GPU`.
    Cpu,
    /// `solver_mode: GPU` in the solver file (device_id given or 0): falls back to the CPU.
    SolverGpu(usize),
    /// `--gpu` with one device.
    Flag(usize),
}

/// Parses `--gpu` as caffe takes it: `0`, `0,1`, `all`. crema trains on one GPU; a list of
/// several is refused rather than silently training on the first (Caffe would split each batch
/// across them, which changes the effective batch size).
pub fn parse_gpu_flag(flag: &str) -> Result<usize> {
    let ids = match parse_gpus(Some(flag))? {
        Some(ids) => ids,
        None => (0..device_count().context("--gpu all")?).collect(),
    };
    match ids.as_slice() {
        [one] => Ok(*one),
        many => bail!(
            "--gpu {flag}: crema trains on one GPU, and {} were asked for (multi-GPU training is not \
             supported); name one device, e.g. --gpu {}",
            many.len(),
            many[0]
        ),
    }
}

/// The request a run makes, from the flag and the solver file.
pub fn request(flag: Option<&str>, solver_gpu: Option<usize>) -> Result<Request> {
    Ok(match (flag, solver_gpu) {
        (Some(f), _) => Request::Flag(parse_gpu_flag(f)?),
        (None, Some(id)) => Request::SolverGpu(id),
        (None, None) => Request::Cpu,
    })
}

/// Opens the GPU asked for, logging as caffe does; `None` means the CPU.
pub fn open(req: &Request) -> Result<Option<Rc<Gpu>>> {
    let (id, explicit) = match req {
        Request::Cpu => {
            crate::info!("Use CPU.");
            return Ok(None);
        }
        Request::SolverGpu(id) => (*id, false),
        Request::Flag(id) => (*id, true),
    };
    let opened = Gpu::open(id).and_then(|g| {
        // Compile everything now: a compile error shows before any training.
        g.load_kernels()?;
        Ok(g)
    });
    match opened {
        Ok(g) => {
            crate::info!("Using GPUs {id}");
            crate::info!("{}", g.describe());
            Ok(Some(Rc::new(g)))
        }
        Err(e) if !explicit => {
            crate::warn!("solver_mode is GPU but GPU {id} cannot be used ({e:#}): training on the CPU instead.");
            Ok(None)
        }
        Err(e) => Err(e.context(format!("--gpu {id}"))),
    }
}

/// Puts `net` on `gpu` and says which layers will compute on the host (their blobs then travel
/// to the host and back every pass).
pub fn place(net: &mut Net, gpu: &Option<Rc<Gpu>>) {
    net.gpu = gpu.clone();
    if gpu.is_none() {
        return;
    }
    let host: Vec<String> = net
        .layers
        .iter()
        .filter(|e| !e.layer.runs_on_gpu())
        .map(|e| format!("{} ({})", e.param.name(), e.layer.type_name()))
        .collect();
    if !host.is_empty() && net.verbose {
        crate::info!(
            "{} net: layers computed on the host, their blobs copied to the GPU: {}",
            crate::net::phase_name(net.phase),
            host.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_flag_forms() {
        assert_eq!(parse_gpu_flag("0").unwrap(), 0);
        assert_eq!(parse_gpu_flag(" 3 ").unwrap(), 3);
        let e = parse_gpu_flag("0,1").unwrap_err().to_string();
        assert!(e.contains("one GPU") && e.contains("2 were asked"), "{e}");
        let e = format!("{:#}", parse_gpu_flag("x").unwrap_err());
        assert!(e.contains("'x' is not a device number"), "{e}");
        // Without a driver, `all` says so instead of guessing.
        if !crate::backend::cuda::device::driver_present() {
            let e = format!("{:#}", parse_gpu_flag("all").unwrap_err());
            assert!(e.contains("no CUDA driver"), "{e}");
        }
        assert_eq!(request(None, None).unwrap(), Request::Cpu);
        assert_eq!(request(None, Some(2)).unwrap(), Request::SolverGpu(2));
        assert_eq!(request(Some("1"), Some(2)).unwrap(), Request::Flag(1));
    }
}
