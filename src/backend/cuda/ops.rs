//! Glue between blobs' memory and the kernel wrappers, shared by the layers' GPU paths.

use anyhow::Result;

use super::gpu::Gpu;
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
