//! An open GPU: its context, the stream every layer and solver kernel runs on, the compiled
//! kernels, and the accounting of every host/device copy.
//!
//! One stream carries all of a run's work, so kernels are ordered without events; the host
//! waits only when it reads something back (a logged loss, a snapshot), and each such copy is
//! counted in [`traffic`]. Allocation failures name the bytes asked for and the memory free;
//! the layer asking is added by the net's error context.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use cudarc::driver::sys::cudaError_enum;
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DeviceRepr, DriverError, ValidAsZeroBits,
};

use super::device;
use super::kernels::Kernels;

pub struct Gpu {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: Kernels,
}

impl Gpu {
    /// Opens device `ordinal`: the driver, the device and NVRTC must all be present (the error
    /// says which is missing). Kernels compile at first use, or all at once with
    /// [`Gpu::load_kernels`].
    pub fn open(ordinal: usize) -> Result<Gpu> {
        let ctx = device::open(ordinal)?;
        let stream = ctx.default_stream();
        let kernels = Kernels::new(ctx.clone())?;
        Ok(Gpu {
            ordinal,
            ctx,
            stream,
            kernels,
        })
    }

    /// Compiles (or loads from the disk cache) every kernel now, so the first iteration does
    /// not pay for it and a compile error shows before training starts.
    pub fn load_kernels(&self) -> Result<()> {
        self.kernels.load_all()
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    pub fn kernels(&self) -> &Kernels {
        &self.kernels
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Waits for every queued kernel and copy (timing, and before reading pinned memory).
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| anyhow!("waiting for GPU {}: {e}", self.ordinal))
    }

    /// `n` zeros on the device.
    pub fn alloc_zeros(&self, n: usize) -> Result<CudaSlice<f32>> {
        alloc_on(&self.stream, n)
    }

    /// Sets device memory to zero (queued on the stream).
    pub fn zero(&self, d: &mut CudaSlice<f32>) -> Result<()> {
        self.stream
            .memset_zeros(d)
            .map_err(|e| anyhow!("zeroing {} bytes on the GPU: {e}", d.num_bytes()))
    }

    /// (free, total) device memory in bytes.
    pub fn memory(&self) -> Result<(usize, usize)> {
        self.ctx
            .mem_get_info()
            .map_err(|e| anyhow!("reading GPU {} memory: {e}", self.ordinal))
    }

    /// A short description for log lines: "GPU 0 (NVIDIA H100 80GB HBM3, sm_90)".
    pub fn describe(&self) -> String {
        let name = self
            .ctx
            .name()
            .unwrap_or_else(|_| "unknown device".to_string());
        format!("GPU {} ({name}, sm_{})", self.ordinal, self.kernels.arch())
    }
}

fn is_oom(e: &DriverError) -> bool {
    e.0 == cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY
}

/// `n` zeros on `stream`'s device; an out-of-memory error says how much was asked for and how
/// much is free.
pub fn alloc_on<T: DeviceRepr + ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    n: usize,
) -> Result<CudaSlice<T>> {
    let bytes = n * std::mem::size_of::<T>();
    stream.alloc_zeros::<T>(n).map_err(|e| {
        if is_oom(&e) {
            let free = stream
                .context()
                .mem_get_info()
                .map(|(free, total)| {
                    format!(
                        "{} free of {}",
                        human_bytes(free as u64),
                        human_bytes(total as u64)
                    )
                })
                .unwrap_or_else(|_| "free memory unknown".into());
            anyhow!(
                "out of GPU memory: asked for {} ({bytes} bytes), {free}; use a smaller batch_size or a \
                 GPU with more memory",
                human_bytes(bytes as u64)
            )
        } else {
            anyhow!("allocating {bytes} bytes on the GPU: {e}")
        }
    })
}

pub fn human_bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if b as f64 >= 1024.0 * MIB {
        format!("{:.2} GiB", b as f64 / (1024.0 * MIB))
    } else {
        format!("{:.1} MiB", b as f64 / MIB)
    }
}

/// A copy of `d` with `n` values: the first min(len, n) kept, the rest zero.
pub fn resized(d: &CudaSlice<f32>, n: usize) -> Result<CudaSlice<f32>> {
    let stream = d.stream().clone();
    let mut out = alloc_on(&stream, n.max(1))?;
    let keep = d.len().min(n);
    if keep > 0 {
        stream
            .memcpy_dtod(&d.slice(0..keep), &mut out.slice_mut(0..keep))
            .map_err(|e| anyhow!("resizing device memory: {e}"))?;
    }
    Ok(out)
}

/// Host to device, counted.
pub fn upload(g: &Gpu, host: &[f32], dev: &mut CudaSlice<f32>) -> Result<()> {
    let n = host.len().min(dev.len());
    g.stream
        .memcpy_htod(&host[..n], &mut dev.slice_mut(0..n))
        .map_err(|e| anyhow!("copying {} bytes to the GPU: {e}", n * 4))?;
    TRAFFIC.record_h2d(n * 4);
    Ok(())
}

/// Device to host, counted; waits for the copy (and everything queued before it).
pub fn download(dev: &CudaSlice<f32>, host: &mut [f32]) -> Result<()> {
    let n = host.len().min(dev.len());
    let stream = dev.stream();
    stream
        .memcpy_dtoh(&dev.slice(0..n), &mut host[..n])
        .and_then(|_| stream.synchronize())
        .map_err(|e| anyhow!("copying {} bytes from the GPU: {e}", n * 4))?;
    TRAFFIC.record_d2h(n * 4);
    Ok(())
}

/// A device error met where no error can be returned (a host read of device memory): the
/// context is lost, so say what happened and stop.
pub fn fatal(e: &anyhow::Error) -> ! {
    eprintln!("crema: fatal GPU error: {e:#}");
    std::process::exit(1)
}

/// Bytes and copies moved between host and device since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub h2d_bytes: u64,
    pub h2d_copies: u64,
    pub d2h_bytes: u64,
    pub d2h_copies: u64,
}

impl Traffic {
    /// What moved between `earlier` and `self`.
    pub fn since(&self, earlier: &Traffic) -> Traffic {
        Traffic {
            h2d_bytes: self.h2d_bytes - earlier.h2d_bytes,
            h2d_copies: self.h2d_copies - earlier.h2d_copies,
            d2h_bytes: self.d2h_bytes - earlier.d2h_bytes,
            d2h_copies: self.d2h_copies - earlier.d2h_copies,
        }
    }
}

struct Counters {
    h2d_bytes: AtomicU64,
    h2d_copies: AtomicU64,
    d2h_bytes: AtomicU64,
    d2h_copies: AtomicU64,
}

impl Counters {
    fn record_h2d(&self, bytes: usize) {
        self.h2d_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.h2d_copies.fetch_add(1, Ordering::Relaxed);
    }
    fn record_d2h(&self, bytes: usize) {
        self.d2h_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.d2h_copies.fetch_add(1, Ordering::Relaxed);
    }
}

static TRAFFIC: Counters = Counters {
    h2d_bytes: AtomicU64::new(0),
    h2d_copies: AtomicU64::new(0),
    d2h_bytes: AtomicU64::new(0),
    d2h_copies: AtomicU64::new(0),
};

/// Copies counted so far (the data layers' pinned uploads included, see [`record_upload`]).
pub fn traffic() -> Traffic {
    Traffic {
        h2d_bytes: TRAFFIC.h2d_bytes.load(Ordering::Relaxed),
        h2d_copies: TRAFFIC.h2d_copies.load(Ordering::Relaxed),
        d2h_bytes: TRAFFIC.d2h_bytes.load(Ordering::Relaxed),
        d2h_copies: TRAFFIC.d2h_copies.load(Ordering::Relaxed),
    }
}

/// Counts a host-to-device copy made outside [`upload`] (pinned staging buffers).
pub fn record_upload(bytes: usize) {
    TRAFFIC.record_h2d(bytes);
}

/// Counts a device-to-host copy made outside [`download`].
pub fn record_download(bytes: usize) {
    TRAFFIC.record_d2h(bytes);
}
