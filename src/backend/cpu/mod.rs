//! The CPU backend: dense products through the `gemm` crate, the rest with rayon where the
//! work is large enough to pay for threads. Every op is deterministic: the same inputs give
//! the same bits whatever the thread count (no reduction is split across threads in a
//! count-dependent way).

pub mod activation;
pub mod batch_norm;
pub mod blas;
pub mod bn_scale_relu;
pub mod conv;
#[cfg(target_arch = "x86_64")]
pub mod conv_direct;
pub mod eltwise;
pub mod embed;
pub mod inner_product;
pub mod loss;
pub mod lrn;
pub mod mvn;
pub mod pooling;
#[cfg(target_arch = "x86_64")]
pub mod pooling_lanes;
#[cfg(target_arch = "x86_64")]
pub mod pooling_simd;
pub mod prelu;
pub mod reduction;
pub mod residual_join;
pub mod scale;
pub mod scratch;
pub mod softmax;
pub mod sums;
pub mod tensor;
pub mod wide;
pub mod workers;
