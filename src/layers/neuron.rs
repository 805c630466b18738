//! What Caffe's `NeuronLayer` base class gives its element-wise layers: one bottom, one top of
//! the same shape, in-place allowed. In place, the output overwrites the input element by
//! element without a copy; layers whose backward needs the input keep a copy of it then (on
//! the GPU, a device copy).

use anyhow::Result;
use cudarc::driver::CudaSlice;

use crate::backend::cpu::activation::Io;
use crate::backend::cuda::gpu::Gpu;
use crate::backend::cuda::kernels::Io as DeviceIo;
use crate::backend::cuda::ops;
use crate::blob::{read, same, write, BlobRef, Buf};

/// Shapes the top like the bottom (nothing to do in place).
pub fn reshape(bottom: &BlobRef, top: &BlobRef) -> Result<()> {
    if !std::rc::Rc::ptr_eq(bottom, top) {
        top.reshape_like(bottom)?;
    }
    Ok(())
}

/// Runs `f` on `input` -> `output`, buffers that may be one (in place).
pub fn with_io<R>(input: &Buf, output: &Buf, f: impl FnOnce(Io) -> R) -> R {
    if same(input, output) {
        f(Io::InPlace(&mut write(output)))
    } else {
        f(Io::Separate(&read(input), &mut write(output)))
    }
}

/// Forward from bottom data to top data. When the layer runs in place and `keep` is given, the
/// input is first copied into it (for a backward that needs the input); returns whether it was.
pub fn forward(
    bottom: &BlobRef,
    top: &BlobRef,
    keep: Option<&mut Vec<f32>>,
    f: impl FnOnce(Io),
) -> bool {
    let (x, y) = (bottom.data_buf(), top.data_buf());
    let kept = match keep {
        Some(k) if same(&x, &y) => {
            k.clear();
            k.extend_from_slice(&read(&x));
            true
        }
        _ => false,
    };
    with_io(&x, &y, f);
    kept
}

/// Backward from top diff to bottom diff; `f` also gets the bottom's input data: `kept` when
/// forward kept a copy, else the bottom's data buffer.
pub fn backward(top: &BlobRef, bottom: &BlobRef, kept: Option<&[f32]>, f: impl FnOnce(Io, &[f32])) {
    let (dy, dx) = (top.diff_buf(), bottom.diff_buf());
    match kept {
        Some(x) => with_io(&dy, &dx, |io| f(io, x)),
        None => {
            let xb = bottom.data_buf();
            let x = read(&xb);
            with_io(&dy, &dx, |io| f(io, &x))
        }
    }
}

/// The GPU form of [`forward`]: `f` runs a kernel from bottom data to top data. When the layer
/// runs in place and `keep` is given, the input is first copied into it on the device; returns
/// whether it was.
pub fn forward_gpu(
    g: &Gpu,
    bottom: &BlobRef,
    top: &BlobRef,
    keep: Option<&mut Option<CudaSlice<f32>>>,
    f: impl FnOnce(DeviceIo) -> Result<()>,
) -> Result<bool> {
    let (x, y) = (bottom.data_buf(), top.data_buf());
    let kept = match keep {
        Some(slot) if same(&x, &y) => {
            ops::keep(g, &x, slot)?;
            true
        }
        _ => false,
    };
    ops::with_io(g, &x, &y, f)?;
    Ok(kept)
}

/// The GPU form of [`backward`] for gradients that read the input: `f` gets the diffs and the
/// input, `kept` when forward kept a copy, else the bottom's data.
pub fn backward_gpu(
    g: &Gpu,
    top: &BlobRef,
    bottom: &BlobRef,
    kept: Option<&CudaSlice<f32>>,
    f: impl FnOnce(DeviceIo, &CudaSlice<f32>) -> Result<()>,
) -> Result<()> {
    let (dy, dx) = (top.diff_buf(), bottom.diff_buf());
    match kept {
        Some(x) => ops::with_io(g, &dy, &dx, |io| f(io, x)),
        None => {
            let xb = bottom.data_buf();
            let x = xb.device(g)?;
            ops::with_io(g, &dy, &dx, |io| f(io, &x))
        }
    }
}

/// The GPU form of [`backward`] for gradients that read only the output: `f` gets the diffs and
/// the top's data.
pub fn backward_gpu_from_output(
    g: &Gpu,
    top: &BlobRef,
    bottom: &BlobRef,
    f: impl FnOnce(DeviceIo, &CudaSlice<f32>) -> Result<()>,
) -> Result<()> {
    let yb = top.data_buf();
    let y = yb.device(g)?;
    ops::with_io(g, &top.diff_buf(), &bottom.diff_buf(), |io| f(io, &y))
}
