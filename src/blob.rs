//! `Blob`: an N-D array of data plus its gradient (diff), as in Caffe.
//!
//! Data and diff live in reference-counted buffers so that blobs can alias one another the
//! way Caffe's do: in-place layers use one blob for bottom and top, Flatten/Reshape/Split tops
//! share their bottom's memory, shared parameters alias their owner, and test nets alias the
//! train net's weights. Aliasing is explicit (`share_data`, `share_diff`); nothing is copied
//! behind the user's back.

use std::cell::{Ref, RefCell, RefMut};
use std::rc::Rc;

use anyhow::{bail, Result};

use crate::proto::blob::{checked_count, shape_string};

/// A buffer of f32 values that several blobs may share.
pub type Buf = Rc<RefCell<Vec<f32>>>;

/// Elements one blob may hold (16 Gi floats = 64 GiB): larger shapes are refused before any
/// allocation, since they come from a corrupt or mistyped prototxt.
pub const MAX_ALLOC_COUNT: usize = 1 << 34;

#[derive(Debug)]
pub struct Blob {
    shape: RefCell<Vec<usize>>,
    data: RefCell<Buf>,
    diff: RefCell<Buf>,
}

/// Blobs are handled through shared references; their contents have interior mutability.
pub type BlobRef = Rc<Blob>;

fn new_buf(n: usize) -> Buf {
    Rc::new(RefCell::new(vec![0.0; n]))
}

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
            data: RefCell::new(Rc::new(RefCell::new(data))),
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
            let b = buf.borrow();
            let mut v = b.borrow_mut();
            if v.len() != count {
                v.resize(count, 0.0);
            }
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
        self.data_buf().borrow_mut().fill(v);
    }

    pub fn fill_diff(&self, v: f32) {
        self.diff_buf().borrow_mut().fill(v);
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
}
