//! The CPU backend: dense products through the `gemm` crate, the rest with rayon where the
//! work is large enough to pay for threads. Every op is deterministic: the same inputs give
//! the same bits whatever the thread count (no reduction is split across threads in a
//! count-dependent way).

pub mod activation;
pub mod blas;
pub mod eltwise;
pub mod embed;
pub mod reduction;
pub mod tensor;
