//! The CUDA backend: finding a GPU ([`device`]), compiling the kernels in `kernels/*.cu` with
//! NVRTC at run time ([`compile`]), typed launch wrappers for every kernel entry point
//! ([`kernels`]), an open device with its stream and copy accounting ([`gpu`]), and the glue the
//! layers' `forward_gpu`/`backward_gpu` use ([`ops`]), the pinned staging buffers the data
//! layers upload their batches through ([`staging`]), and the convolution arithmetic that
//! Convolution and Deconvolution share ([`conv`]). Blob memory (`crate::blob::Mem`) keeps a
//! device copy next to the host one.
//!
//! It is always compiled: cudarc loads libcuda and libnvrtc at run time, so a build needs no
//! CUDA toolkit and a machine without a GPU gets clear errors instead of a failed build or a
//! panic.

pub mod compile;
pub mod conv;
pub mod device;
pub mod gpu;
pub mod kernels;
pub mod ops;
pub mod staging;

pub use device::CudaError;
