//! The CUDA backend's foundation: finding a GPU ([`device`]), compiling the kernels in
//! `kernels/*.cu` with NVRTC at run time ([`compile`]), and typed launch wrappers for every
//! kernel entry point ([`kernels`]).
//!
//! It is always compiled: cudarc loads libcuda and libnvrtc at run time, so a build needs no
//! CUDA toolkit and a machine without a GPU gets clear errors instead of a failed build or a
//! panic. Layers do not call it yet; wiring it into the Net (device-resident blobs, per-layer
//! dispatch) is the next step, and needs a GPU to test.

pub mod compile;
pub mod device;
pub mod gpu;
pub mod kernels;

pub use device::CudaError;
