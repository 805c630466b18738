//! `crema convert` and `crema compute-mean` make what Caffe's tools make: checked against the
//! convert_imageset fixture (LMDBs and means written by Caffe) and by reading MNIST back.

use std::path::{Path, PathBuf};
use std::process::Command;

use crema::proto::blob::read_blob;
use prost::Message;

/// The shared folder (`CREMA_SHARED`, or `../shared` beside the repository).
fn shared_dir() -> PathBuf {
    match std::env::var_os("CREMA_SHARED") {
        Some(s) => PathBuf::from(s),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    }
}

fn shared() -> PathBuf {
    shared_dir().join("fixtures/caffe/convert_imageset")
}

fn crema(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_crema"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

#[test]
fn imageset_and_mean_equal_caffes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("raw_lmdb");
    let r = crema(
        &[
            "convert",
            "imageset",
            "./",
            "list.txt",
            out.to_str().unwrap(),
        ],
        &shared(),
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let ours = crema::data::lmdb::read_all(&out).unwrap();
    let theirs = crema::data::lmdb::read_all(&shared().join("raw_lmdb")).unwrap();
    assert_eq!(ours.len(), theirs.len());
    for ((ka, va), (kb, vb)) in ours.iter().zip(&theirs) {
        assert_eq!(ka, kb, "keys in Caffe's %08d_<path> form");
        let (a, b) = (
            crema::proto::caffe::Datum::decode(&va[..]).unwrap(),
            crema::proto::caffe::Datum::decode(&vb[..]).unwrap(),
        );
        assert_eq!(a, b, "record {}", String::from_utf8_lossy(ka));
    }
    // Refuses to overwrite.
    let again = crema(
        &[
            "convert",
            "imageset",
            "./",
            "list.txt",
            out.to_str().unwrap(),
        ],
        &shared(),
    );
    assert!(!again.status.success());

    let mean = tmp.path().join("mean.binaryproto");
    let r = crema(
        &[
            "compute-mean",
            out.to_str().unwrap(),
            mean.to_str().unwrap(),
        ],
        &shared(),
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let ours = crema::proto::read_binary_proto_file(&mean).unwrap();
    let theirs = crema::proto::read_binary_proto_file(&shared().join("mean.binaryproto")).unwrap();
    assert_eq!(
        (ours.num, ours.channels, ours.height, ours.width),
        (theirs.num, theirs.channels, theirs.height, theirs.width)
    );
    let (a, b) = (read_blob(&ours).unwrap(), read_blob(&theirs).unwrap());
    let max_err = a
        .data
        .iter()
        .zip(&b.data)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        max_err <= 1e-4,
        "mean differs from compute_image_mean's by {max_err}"
    );
}

#[test]
fn mnist_round_trips_through_an_lmdb() {
    let tmp = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mnist/data");
    let out = tmp.path().join("mnist_test_lmdb");
    let r = crema(
        &[
            "convert",
            "mnist",
            data.join("t10k-images-idx3-ubyte.gz").to_str().unwrap(),
            data.join("t10k-labels-idx1-ubyte.gz").to_str().unwrap(),
            out.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let recs = crema::data::lmdb::read_all(&out).unwrap();
    assert_eq!(recs.len(), 1500);
    assert_eq!(recs[7].0, b"00000007");
    let d = crema::proto::caffe::Datum::decode(&recs[7].1[..]).unwrap();
    assert_eq!(
        (d.channels(), d.height(), d.width(), d.data().len()),
        (1, 28, 28, 784)
    );
    assert!((0..10).contains(&d.label()));
    assert!(d.data().iter().any(|&p| p > 200), "real digits have ink");
    let bad = crema(
        &[
            "convert",
            "mnist",
            data.join("t10k-labels-idx1-ubyte.gz").to_str().unwrap(),
            data.join("t10k-labels-idx1-ubyte.gz").to_str().unwrap(),
            tmp.path().join("x").to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an MNIST image file"));
}
