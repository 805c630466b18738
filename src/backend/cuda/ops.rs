//! Glue between blobs' memory and the kernel wrappers, shared by the layers' GPU paths.

use anyhow::{anyhow, Result};
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, ValidAsZeroBits};

use super::gpu::{self, alloc_on, Gpu};
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

/// `buf` from value `offset` on (a matrix or an image inside a batch).
pub fn at<T>(buf: &CudaSlice<T>, offset: usize) -> Result<CudaView<'_, T>> {
    let len = buf.len();
    buf.try_slice(offset..)
        .ok_or_else(|| anyhow!("offset {offset} is past a device buffer of {len} values"))
}

/// `buf` from value `offset` on, to be written.
pub fn at_mut<T>(buf: &mut CudaSlice<T>, offset: usize) -> Result<CudaViewMut<'_, T>> {
    let len = buf.len();
    buf.try_slice_mut(offset..)
        .ok_or_else(|| anyhow!("offset {offset} is past a device buffer of {len} values"))
}

/// A small table of integers (a convolution's N-D geometry) copied to the device, counted in
/// the traffic like every other copy. Layers upload such tables when a shape changes, not per
/// pass.
pub fn upload_table(g: &Gpu, table: &[i32]) -> Result<CudaSlice<i32>> {
    // The driver refuses empty allocations; an empty table is never read.
    let padded: Vec<i32> = if table.is_empty() {
        vec![0]
    } else {
        table.to_vec()
    };
    let mut dev = gpu::alloc_on::<i32>(g.stream(), padded.len())?;
    g.stream()
        .memcpy_htod(&padded[..], &mut dev)
        .map_err(|e| anyhow!("copying {} bytes to the GPU: {e}", padded.len() * 4))?;
    gpu::record_upload(padded.len() * 4);
    Ok(dev)
}

/// A layer's own device memory (statistics, a column buffer, partial sums, a mask): allocated
/// at first use and again only when the size asked for changes, so steady-state passes
/// allocate nothing. Its values are kept between passes (backward reads what forward left).
pub struct DeviceBuf<T> {
    buf: Option<CudaSlice<T>>,
}

impl<T> Default for DeviceBuf<T> {
    fn default() -> Self {
        DeviceBuf { buf: None }
    }
}

impl<T: DeviceRepr + ValidAsZeroBits> DeviceBuf<T> {
    /// The buffer, holding exactly `n` values (one when `n` is 0: the driver refuses empty
    /// allocations); zeros when newly allocated.
    pub fn get(&mut self, g: &Gpu, n: usize) -> Result<&mut CudaSlice<T>> {
        let n = n.max(1);
        if self.buf.as_ref().is_none_or(|b| b.len() != n) {
            self.buf = None; // free the old one before asking for the new
            self.buf = Some(gpu::alloc_on::<T>(g.stream(), n)?);
        }
        Ok(self.buf.as_mut().expect("just allocated"))
    }

    /// The buffer, holding at least `n` values: grown when too small, never shrunk (for scratch
    /// that several passes size differently, such as a column buffer).
    pub fn at_least(&mut self, g: &Gpu, n: usize) -> Result<&mut CudaSlice<T>> {
        if self.buf.as_ref().is_none_or(|b| b.len() < n.max(1)) {
            return self.get(g, n);
        }
        Ok(self.buf.as_mut().expect("checked above"))
    }

    /// The buffer as the last `get` left it (for a backward that reads what forward wrote).
    pub fn current(&self, what: &str) -> Result<&CudaSlice<T>> {
        self.buf
            .as_ref()
            .ok_or_else(|| anyhow!("{what}: backward on the GPU before a forward on the GPU"))
    }
}
