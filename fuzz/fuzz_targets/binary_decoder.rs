//! Binary decoding: arbitrary bytes as a caffemodel (with upgrades), a solverstate, a
//! binaryproto (BlobProto and BlobProtoVector), every blob read the way a loader reads it, and
//! kind detection. Errors are fine; panics, hangs and huge allocations are bugs.
#![no_main]

use crema::proto::binary::decode;
use crema::proto::blob::{legacy_shape_string, proto_shape, read_blob, shape_equals, shape_string};
use crema::proto::caffe::{BlobProto, BlobProtoVector, SolverState};
use crema::proto::decode_net_binary;
use crema::proto::kind::detect;
use libfuzzer_sys::fuzz_target;

fn blob(b: &BlobProto) {
    if let Ok(shape) = proto_shape(b) {
        let _ = shape_string(&shape);
        let _ = legacy_shape_string(&shape);
        let _ = shape_equals(b, &shape);
        if let Ok(v) = read_blob(b) {
            assert_eq!(v.data.len(), shape.iter().product::<usize>());
            assert_eq!(v.shape, shape);
        }
    }
    let _ = shape_equals(b, &[1, 2, 3, 4, 5]);
    let _ = shape_equals(b, &[]);
}

fuzz_target!(|data: &[u8]| {
    // Upgrade notes would flood the fuzzer's output.
    crema::util::glog::set_min_level(3);
    for ext in ["caffemodel", "solverstate", "binaryproto", "prototxt", ""] {
        let _ = detect(data, ext);
    }
    if let Ok(net) = decode_net_binary(data, "fuzz") {
        assert!(net.layers.is_empty(), "V1 layers left after the upgrade");
        for l in &net.layer {
            l.blobs.iter().for_each(blob);
        }
    }
    if let Ok(s) = decode::<SolverState>(data, "fuzz", "solverstate") {
        s.history.iter().for_each(blob);
    }
    if let Ok(b) = decode::<BlobProto>(data, "fuzz", "binaryproto") {
        blob(&b);
    }
    if let Ok(v) = decode::<BlobProtoVector>(data, "fuzz", "BlobProtoVector") {
        v.blobs.iter().for_each(blob);
    }
});
