//! Caffe's schema and every file format built on it: text prototxt, binary caffemodel,
//! solverstate and binaryproto, and the upgrades of old (V0, V1, legacy-input) nets.

pub mod binary;
pub mod blob;
pub mod files;
pub mod kind;
pub mod printer;
pub mod text;
pub mod upgrade;

/// Types generated from `proto/caffe.proto` (package `caffe`).
#[allow(clippy::all, missing_docs)]
pub mod caffe {
    include!(concat!(env!("OUT_DIR"), "/caffe.rs"));
}

use std::sync::OnceLock;

use prost_reflect::DescriptorPool;

static DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/caffe_descriptor.bin"));

/// The reflection view of `caffe.proto`, for text parsing and generic printing.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(DESCRIPTOR_SET).expect("embedded caffe descriptor set is valid")
    })
}

pub use files::{
    decode_net_binary, parse_net_text, parse_solver_text, read_binary_proto_file,
    read_blob_proto_vector, read_net_binary, read_net_text, read_solver_text, read_solverstate,
    write_binary_atomic, write_bytes_atomic,
};
pub use text::TextOptions;
