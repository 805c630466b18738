//! Glue between blobs' memory and the kernel wrappers, shared by the layers' GPU paths.

use anyhow::{anyhow, Result};
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, ValidAsZeroBits};

use super::gpu::{self, Gpu};
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

/// `output = input` on the device (nothing to do when they are the same memory).
pub fn copy(g: &Gpu, input: &Buf, output: &Buf) -> Result<()> {
    if same(input, output) {
        return Ok(());
    }
    let x = input.device(g)?;
    let mut y = output.device_out(g)?;
    copy_slice(g, &x, &mut y)
}

/// The first `x.len()` values of `y` = `x`.
pub fn copy_slice(g: &Gpu, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<()> {
    if x.is_empty() {
        return Ok(());
    }
    let (n, have) = (x.len(), y.len());
    let mut dst = y
        .try_slice_mut(0..n)
        .ok_or_else(|| anyhow!("device copy: {n} values into a buffer of {have}"))?;
    g.stream()
        .memcpy_dtod(x, &mut dst)
        .map_err(|e| anyhow!("copying {} bytes on the GPU: {e}", n * 4))
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
