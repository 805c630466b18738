//! Glue between blobs' memory and the kernel wrappers, shared by the layers' GPU paths.

use anyhow::{anyhow, Result};
use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};

use super::gpu::{alloc_on, Gpu};
use super::kernels::Io;
use crate::blob::{same, Buf};

/// Runs an element-wise kernel from `input` into `output`, which may be the same memory (an
/// in-place layer): the kernel then reads and overwrites one buffer.
pub fn with_io(g: &Gpu, input: &Buf, output: &Buf, f: impl FnOnce(Io) -> Result<()>) -> Result<()> {
    if same(input, output) {
        let mut y = output.device_mut(g)?;
        f(Io::InPlace(&mut *y))
    } else {
        let x = input.device(g)?;
        let mut y = output.device_out(g)?;
        f(Io::Separate(&*x, &mut *y))
    }
}

/// A layer's own device buffer (a mask, a kept input, partial sums) of `n` values, allocated
/// (zeroed) only when `n` changes, so that a steady run allocates nothing per iteration. An
/// empty request gets one value (the driver refuses empty allocations).
pub fn scratch<'a, T: DeviceRepr + ValidAsZeroBits>(
    g: &Gpu,
    slot: &'a mut Option<CudaSlice<T>>,
    n: usize,
) -> Result<&'a mut CudaSlice<T>> {
    let n = n.max(1);
    if slot.as_ref().is_none_or(|d| d.len() != n) {
        *slot = Some(alloc_on(g.stream(), n)?);
    }
    Ok(slot.as_mut().expect("scratch was just allocated"))
}

/// Copies the first `n` values of `src` into `dst`, on the device.
pub fn copy_slice(g: &Gpu, src: &CudaSlice<f32>, dst: &mut CudaSlice<f32>, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    if src.len() < n || dst.len() < n {
        anyhow::bail!(
            "device copy of {n} values between buffers of {} and {}",
            src.len(),
            dst.len()
        );
    }
    g.stream()
        .memcpy_dtod(&src.slice(0..n), &mut dst.slice_mut(0..n))
        .map_err(|e| anyhow!("copying {} bytes on the GPU: {e}", n * 4))
}

/// `dst = src` for two blob buffers of one length, on the device; nothing when they are one
/// buffer.
pub fn copy(g: &Gpu, src: &Buf, dst: &Buf) -> Result<()> {
    if same(src, dst) {
        return Ok(());
    }
    let n = src.len();
    let x = src.device(g)?;
    let mut y = dst.device_out(g)?;
    copy_slice(g, &x, &mut y, n)
}

/// Keeps a device copy of `src` in `slot` (an in-place layer's input, before the output
/// overwrites it).
pub fn keep(g: &Gpu, src: &Buf, slot: &mut Option<CudaSlice<f32>>) -> Result<()> {
    let n = src.len();
    let x = src.device(g)?;
    let kept = scratch(g, slot, n)?;
    copy_slice(g, &x, kept, n)
}

/// Zeroes a blob buffer on the device.
pub fn zero(g: &Gpu, buf: &Buf) -> Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let mut d = buf.device_out(g)?;
    g.zero(&mut d)
}
