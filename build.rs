//! Compiles `proto/caffe.proto` without protoc: protox parses it into a descriptor set, which
//! prost-build turns into Rust types and which is also embedded for prost-reflect's text parser.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=proto/caffe.proto");
    let fds = protox::compile(["caffe.proto"], ["proto"]).expect("proto/caffe.proto must compile");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::write(
        out.join("caffe_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )
    .expect("write descriptor set");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("generate Rust types from caffe.proto");
}
