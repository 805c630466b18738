//! Arithmetic. `cpu` is the reference backend (and the fallback where no GPU is present);
//! its ops are plain functions over slices with the same signatures a device kernel takes, so
//! a test can run an op on both and compare. `cuda` holds the GPU backend's kernels, their
//! run-time compilation and typed launch wrappers (not yet wired into the layers).

pub mod cpu;
pub mod cuda;
