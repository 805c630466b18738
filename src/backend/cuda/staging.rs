//! Uploading the data layers' batches: each batch is written into page-locked (pinned) host
//! memory and copied to the top's device memory by an asynchronous copy queued on the GPU's one
//! stream. A copy from pinned memory is a DMA transfer that does not hold up the host, so the
//! layer returns at once and the net goes on queueing kernels (and the prefetch thread goes on
//! decoding the next batch) while the batch travels; the stream orders the copy before the
//! kernels that read it. Every copy is counted in `gpu::traffic`.
//!
//! Two pinned buffers are used in turn, so that filling the next batch never waits for the
//! copy of the previous one; cudarc's pinned buffers wait, before the host writes them again,
//! for the copy that last read them, so a buffer is never overwritten while in flight.

use anyhow::{anyhow, bail, Result};
use cudarc::driver::PinnedHostSlice;

use super::gpu::{self, Gpu};
use crate::blob::{BlobRef, Buf};
use crate::data::prefetch::Batch;

/// The pinned staging of one top blob.
#[derive(Default)]
pub struct PinnedUpload {
    buffers: [Option<PinnedHostSlice<f32>>; 2],
    next: usize,
}

impl PinnedUpload {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `dst` (already shaped to `values.len()` elements) to `values`, on the device.
    pub fn upload(&mut self, g: &Gpu, values: &[f32], dst: &Buf) -> Result<()> {
        let n = values.len();
        if dst.len() != n {
            bail!(
                "uploading a batch of {n} values into a blob of {} values",
                dst.len()
            );
        }
        if n == 0 {
            dst.device_out(g)?;
            return Ok(());
        }
        let slot = &mut self.buffers[self.next];
        self.next = 1 - self.next;
        if slot.as_ref().is_none_or(|p| p.len() != n) {
            // The copy must cover the whole pinned buffer (cudarc copies its full length), so a
            // batch of another size gets a buffer of its own size. Freeing the old one waits for
            // its last copy.
            *slot = None;
            // SAFETY: the memory is written in full below before any copy reads it.
            let p = unsafe { g.context().alloc_pinned::<f32>(n) }.map_err(|e| {
                anyhow!(
                    "allocating {} of page-locked host memory for a batch: {e}",
                    gpu::human_bytes((n * 4) as u64)
                )
            })?;
            *slot = Some(p);
        }
        let pinned = slot.as_mut().expect("allocated above");
        pinned
            .as_mut_slice()
            .map_err(|e| anyhow!("waiting for the previous batch copy: {e}"))?
            .copy_from_slice(values);
        let mut dev = dst.device_out(g)?;
        g.stream()
            .memcpy_htod(pinned, &mut *dev)
            .map_err(|e| anyhow!("copying a batch of {} bytes to the GPU: {e}", n * 4))?;
        gpu::record_upload(n * 4);
        Ok(())
    }
}

/// The pinned staging of a prefetching data layer: its data top and its label top.
#[derive(Default)]
pub struct BatchUpload {
    data: PinnedUpload,
    label: PinnedUpload,
}

impl BatchUpload {
    /// Shapes the tops as `batch` and sets them on the device (the label only where the layer
    /// has a label top), as the layers' host `forward` does on the host.
    pub fn put(&mut self, g: &Gpu, batch: &Batch, top: &[BlobRef]) -> Result<()> {
        top[0].reshape(&batch.data_shape)?;
        self.data.upload(g, &batch.data, &top[0].data_buf())?;
        if top.len() > 1 {
            top[1].reshape(&[batch.label.len()])?;
            self.label.upload(g, &batch.label, &top[1].data_buf())?;
        }
        Ok(())
    }
}
