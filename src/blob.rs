//! `Blob`: an N-D array of data plus its gradient (diff), as in Caffe.
//!
//! Data and diff live in reference-counted buffers so that blobs can alias one another the
//! way Caffe's do: in-place layers use one blob for bottom and top, Flatten/Reshape/Split tops
//! share their bottom's memory, shared parameters alias their owner, and test nets alias the
//! train net's weights. Aliasing is explicit (`share_data`, `share_diff`); nothing is copied
//! behind the user's back.

use std::cell::{Cell, Ref, RefCell, RefMut};
use std::rc::Rc;

use anyhow::{bail, Result};
use cudarc::driver::CudaSlice;

use crate::backend::cuda::gpu::{self, Gpu};
use crate::proto::blob::{checked_count, shape_string};

/// A buffer of f32 values that several blobs may share.
pub type Buf = Rc<Mem>;

/// Elements one blob may hold (16 Gi floats = 64 GiB): larger shapes are refused before any
/// allocation, since they come from a corrupt or mistyped prototxt.
pub const MAX_ALLOC_COUNT: usize = 1 << 34;

/// Which copy of a [`Mem`] holds its current values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Logically all zeros; neither copy has been written since (filling costs nothing until
    /// someone looks, which matters for the parameter diffs cleared every iteration).
    Zero,
    /// The host vector; the device copy, if any, is stale.
    Host,
    /// The device copy; the host vector is stale.
    Device,
    /// Both copies agree.
    Synced,
}

/// The memory behind a blob's data or diff: a host vector, and on the GPU backend a device
/// copy. Host access ([`Mem::borrow`], [`read()`], [`write()`]) and device access
/// ([`Mem::device`], [`Mem::device_mut`]) bring the copy they use up to date, and every copy is
/// counted in [`gpu::traffic`], so a GPU run can prove that nothing moves between host and
/// device except what it logs and the data it feeds. A CPU run never allocates device memory.
pub struct Mem {
    host: RefCell<Vec<f32>>,
    device: RefCell<Option<CudaSlice<f32>>>,
    head: Cell<Head>,
}

impl std::fmt::Debug for Mem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mem")
            .field("len", &self.len())
            .field("head", &self.head.get())
            .field("on_device", &self.device.borrow().is_some())
            .finish()
    }
}

impl Mem {
    /// `n` zeros.
    pub fn zeros(n: usize) -> Mem {
        Mem {
            host: RefCell::new(vec![0.0; n]),
            device: RefCell::new(None),
            head: Cell::new(Head::Zero),
        }
    }

    pub fn from_vec(v: Vec<f32>) -> Mem {
        Mem {
            host: RefCell::new(v),
            device: RefCell::new(None),
            head: Cell::new(Head::Host),
        }
    }

    pub fn len(&self) -> usize {
        self.host.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a device copy exists (a GPU run touched this memory).
    pub fn on_device(&self) -> bool {
        self.device.borrow().is_some()
    }

    /// Whether the values are known to be all zeros without looking at them: filled with zero
    /// and not written since. False says nothing (the values may still be zeros). The GPU
    /// solver asks this instead of reading a gradient back to see whether it is zero.
    pub fn is_known_zero(&self) -> bool {
        self.head.get() == Head::Zero
    }

    /// Brings the host vector up to date (a counted device-to-host copy when the device holds
    /// the values). A failed copy means the CUDA context is lost; there is nothing a caller
    /// could do with the values, so crema stops with the driver's error.
    fn sync_to_host(&self) {
        match self.head.get() {
            Head::Zero => {
                self.host.borrow_mut().fill(0.0);
                // A device copy, if any, was never zeroed: it is the stale one now.
                self.head.set(Head::Host);
            }
            Head::Device => {
                let dev = self.device.borrow();
                let dev = dev.as_ref().expect("device head without device memory");
                if let Err(e) = gpu::download(dev, &mut self.host.borrow_mut()) {
                    gpu::fatal(&e);
                }
                self.head.set(Head::Synced);
            }
            Head::Host | Head::Synced => {}
        }
    }

    /// The values, read on the host.
    pub fn borrow(&self) -> Ref<'_, Vec<f32>> {
        self.sync_to_host();
        self.host.borrow()
    }

    /// The values, written on the host (the device copy becomes stale).
    pub fn borrow_mut(&self) -> RefMut<'_, Vec<f32>> {
        self.sync_to_host();
        self.head.set(Head::Host);
        self.host.borrow_mut()
    }

    /// Makes sure a device copy of the right length exists; returns whether it was created
    /// (its contents are then zeros).
    fn ensure_device(&self, g: &Gpu) -> Result<bool> {
        // The driver refuses empty allocations; an empty blob gets one unused value.
        let n = self.len().max(1);
        // Checked through a shared borrow first: a layer may read one buffer twice at once (the
        // same blob as two bottoms, or an in-place layer reading its input and output).
        if self.device.borrow().as_ref().is_some_and(|d| d.len() == n) {
            return Ok(false);
        }
        *self.device.borrow_mut() = Some(g.alloc_zeros(n)?);
        Ok(true)
    }

    /// Brings the device copy up to date (a counted host-to-device copy when the host holds
    /// the values).
    fn sync_to_device(&self, g: &Gpu) -> Result<()> {
        let created = self.ensure_device(g)?;
        match self.head.get() {
            Head::Zero => {
                if !created {
                    let mut dev = self.device.borrow_mut();
                    g.zero(dev.as_mut().expect("device memory was just ensured"))?;
                }
                self.head.set(Head::Device);
            }
            Head::Host => {
                let mut dev = self.device.borrow_mut();
                gpu::upload(
                    g,
                    &self.host.borrow(),
                    dev.as_mut().expect("device memory was just ensured"),
                )?;
                self.head.set(Head::Synced);
            }
            Head::Device | Head::Synced => {}
        }
        Ok(())
    }

    /// The values, read on the device.
    pub fn device(&self, g: &Gpu) -> Result<Ref<'_, CudaSlice<f32>>> {
        self.sync_to_device(g)?;
        Ok(Ref::map(self.device.borrow(), |d| {
            d.as_ref().expect("device memory was just synced")
        }))
    }

    /// The values, read and written on the device (the host vector becomes stale).
    pub fn device_mut(&self, g: &Gpu) -> Result<RefMut<'_, CudaSlice<f32>>> {
        self.sync_to_device(g)?;
        self.head.set(Head::Device);
        Ok(RefMut::map(self.device.borrow_mut(), |d| {
            d.as_mut().expect("device memory was just synced")
        }))
    }

    /// Device memory a kernel is about to overwrite completely: allocated if needed, never
    /// uploaded (whatever the host held is discarded).
    pub fn device_out(&self, g: &Gpu) -> Result<RefMut<'_, CudaSlice<f32>>> {
        self.ensure_device(g)?;
        self.head.set(Head::Device);
        Ok(RefMut::map(self.device.borrow_mut(), |d| {
            d.as_mut().expect("device memory was just ensured")
        }))
    }

    /// Sets every value to `v`; zero costs nothing until the memory is next used.
    pub fn fill(&self, v: f32) {
        if v == 0.0 {
            self.head.set(Head::Zero);
        } else {
            self.borrow_mut().fill(v);
        }
    }

    /// New length: values up to the old length are kept (on whichever side holds them), new
    /// ones are zero. A device copy is resized on the device, never through the host.
    fn resize(&self, n: usize) -> Result<()> {
        let old = self.len();
        if old == n {
            return Ok(());
        }
        self.host.borrow_mut().resize(n, 0.0);
        let mut dev = self.device.borrow_mut();
        match (self.head.get(), dev.as_ref()) {
            (Head::Device | Head::Synced, Some(d)) => {
                let resized = gpu::resized(d, n)?;
                *dev = Some(resized);
            }
            _ => *dev = None,
        }
        Ok(())
    }
}

/// Blob-level aliasing: several blobs may hold the same `Buf`.
fn new_buf(n: usize) -> Buf {
    Rc::new(Mem::zeros(n))
}

#[derive(Debug)]
pub struct Blob {
    shape: RefCell<Vec<usize>>,
    data: RefCell<Buf>,
    diff: RefCell<Buf>,
}

/// Blobs are handled through shared references; their contents have interior mutability.
pub type BlobRef = Rc<Blob>;

impl Blob {
    /// An empty blob (shape `[0]`); layers give their tops a shape in setup.
    pub fn empty() -> BlobRef {
        Rc::new(Blob {
            shape: RefCell::new(vec![0]),
            data: RefCell::new(new_buf(0)),
            diff: RefCell::new(new_buf(0)),
        })
    }

    /// A zero-filled blob of `shape`.
    pub fn with_shape(shape: &[usize]) -> Result<BlobRef> {
        let b = Blob::empty();
        b.reshape(shape)?;
        Ok(b)
    }

    /// A blob holding `data` with `shape` (counts must agree).
    pub fn from_data(shape: &[usize], data: Vec<f32>) -> Result<BlobRef> {
        let count = checked_count(shape)?;
        if count != data.len() {
            bail!(
                "blob of shape {} cannot hold {} values",
                shape_string(shape),
                data.len()
            );
        }
        let n = data.len();
        Ok(Rc::new(Blob {
            shape: RefCell::new(shape.to_vec()),
            data: RefCell::new(Rc::new(Mem::from_vec(data))),
            diff: RefCell::new(new_buf(n)),
        }))
    }

    pub fn shape(&self) -> Vec<usize> {
        self.shape.borrow().clone()
    }

    pub fn num_axes(&self) -> usize {
        self.shape.borrow().len()
    }

    /// `shape(i)` with Caffe's negative-index convention.
    pub fn dim(&self, axis: isize) -> usize {
        let s = self.shape.borrow();
        let i = if axis < 0 {
            s.len() as isize + axis
        } else {
            axis
        };
        s[i as usize]
    }

    pub fn count(&self) -> usize {
        self.shape.borrow().iter().product()
    }

    /// Product of dims in [start, end).
    pub fn count_range(&self, start: usize, end: usize) -> usize {
        self.shape.borrow()[start..end].iter().product()
    }

    /// Product of dims from `start` to the end.
    pub fn count_from(&self, start: usize) -> usize {
        let s = self.shape.borrow();
        s[start.min(s.len())..].iter().product()
    }

    /// Caffe's `CanonicalAxisIndex`: negative axes count from the end; out of range is an error.
    pub fn canonical_axis(&self, axis: i32) -> Result<usize> {
        let n = self.num_axes() as i32;
        if axis < -n || axis >= n.max(1) && !(n == 0 && axis == 0) {
            bail!(
                "axis {axis} out of range for a {n}-D blob of shape {}",
                shape_string(&self.shape())
            );
        }
        Ok(if axis < 0 {
            (axis + n) as usize
        } else {
            axis as usize
        })
    }

    /// Changes the shape. Buffers grow (zero-filled) to the new count; a shared buffer is
    /// resized for every sharer, which is what aliasing means.
    pub fn reshape(&self, shape: &[usize]) -> Result<()> {
        let count = checked_count(shape)?;
        if count > MAX_ALLOC_COUNT {
            bail!(
                "blob shape {} is too large to allocate",
                shape_string(shape)
            );
        }
        *self.shape.borrow_mut() = shape.to_vec();
        for buf in [&self.data, &self.diff] {
            buf.borrow().resize(count)?;
        }
        Ok(())
    }

    pub fn reshape_like(&self, other: &Blob) -> Result<()> {
        self.reshape(&other.shape())
    }

    pub fn data_buf(&self) -> Buf {
        self.data.borrow().clone()
    }

    pub fn diff_buf(&self) -> Buf {
        self.diff.borrow().clone()
    }

    /// Makes this blob use `other`'s data buffer.
    pub fn share_data(&self, other: &Blob) {
        *self.data.borrow_mut() = other.data_buf();
    }

    /// Makes this blob use `other`'s diff buffer.
    pub fn share_diff(&self, other: &Blob) {
        *self.diff.borrow_mut() = other.diff_buf();
    }

    /// Whether two blobs use the same data buffer.
    pub fn shares_data_with(&self, other: &Blob) -> bool {
        Rc::ptr_eq(&self.data.borrow(), &other.data.borrow())
    }

    /// A copy of the data (for tests, logging, snapshots).
    pub fn data_vec(&self) -> Vec<f32> {
        self.data_buf().borrow().clone()
    }

    pub fn diff_vec(&self) -> Vec<f32> {
        self.diff_buf().borrow().clone()
    }

    /// Overwrites the data with `values` (counts must agree).
    pub fn set_data(&self, values: &[f32]) -> Result<()> {
        let buf = self.data_buf();
        let mut d = buf.borrow_mut();
        if d.len() != values.len() {
            bail!(
                "cannot set {} values into a blob of shape {}",
                values.len(),
                shape_string(&self.shape())
            );
        }
        d.copy_from_slice(values);
        Ok(())
    }

    pub fn set_diff(&self, values: &[f32]) -> Result<()> {
        let buf = self.diff_buf();
        let mut d = buf.borrow_mut();
        if d.len() != values.len() {
            bail!(
                "cannot set {} diff values into a blob of shape {}",
                values.len(),
                shape_string(&self.shape())
            );
        }
        d.copy_from_slice(values);
        Ok(())
    }

    pub fn fill_data(&self, v: f32) {
        self.data_buf().fill(v);
    }

    pub fn fill_diff(&self, v: f32) {
        self.diff_buf().fill(v);
    }

    pub fn shape_string(&self) -> String {
        shape_string(&self.shape())
    }
}

/// Borrow helpers: `let x = read(&buf);` reads the contents; `write(&buf)` writes.
pub fn read(buf: &Buf) -> Ref<'_, Vec<f32>> {
    buf.borrow()
}

pub fn write(buf: &Buf) -> RefMut<'_, Vec<f32>> {
    buf.borrow_mut()
}

/// Whether two buffers are the same memory (an in-place layer).
pub fn same(a: &Buf, b: &Buf) -> bool {
    Rc::ptr_eq(a, b)
}

/// Runs `f(input, output)` on two buffers that may be the same one (in-place layers): the
/// input is copied aside first in that case so the arithmetic never sees aliased slices.
pub fn map_buf(input: &Buf, output: &Buf, f: impl FnOnce(&[f32], &mut [f32])) {
    if same(input, output) {
        let copy = input.borrow().clone();
        f(&copy, &mut output.borrow_mut());
    } else {
        f(&input.borrow(), &mut output.borrow_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharing_aliases_and_reshape_refuses_huge() {
        let a = Blob::with_shape(&[2, 3]).unwrap();
        let b = Blob::with_shape(&[6]).unwrap();
        b.share_data(&a);
        a.set_data(&[1., 2., 3., 4., 5., 6.]).unwrap();
        assert_eq!(b.data_vec()[5], 6.0);
        assert!(b.shares_data_with(&a));
        assert!(a.reshape(&[1 << 20, 1 << 20, 1 << 10]).is_err());
        assert_eq!(a.canonical_axis(-1).unwrap(), 1);
        assert!(a.canonical_axis(2).is_err());
    }

    #[test]
    fn zero_fill_is_lazy_and_resize_keeps_values() {
        let m = Mem::from_vec(vec![1.0, 2.0, 3.0]);
        m.fill(0.0);
        assert_eq!(*m.borrow(), vec![0.0; 3]);
        m.borrow_mut()[1] = 5.0;
        m.resize(4).unwrap();
        assert_eq!(*m.borrow(), vec![0.0, 5.0, 0.0, 0.0]);
        m.resize(2).unwrap();
        assert_eq!(*m.borrow(), vec![0.0, 5.0]);
        m.fill(2.5);
        assert_eq!(*m.borrow(), vec![2.5, 2.5]);
        assert!(!m.on_device(), "a CPU run never allocates device memory");
    }
}
