//! `examples/fashion_mnist`: its files parse, its net is examples/mnist's LeNet fed other data and
//! builds and trains a step (on the MNIST digits shipped in the repository, so that the test needs
//! no package), its script tells how to install the data when it is missing, and `crema convert
//! mnist` reads Debian's dataset-fashion-mnist files where that package is installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crema::proto::caffe::solver_parameter::SolverMode;
use crema::proto::{read_net_text, read_solver_text, TextOptions};
use crema::solver::{Solver, SolverOptions};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn crema(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_crema"))
        .args(args)
        .env("GLOG_minloglevel", "1")
        .output()
        .unwrap()
}

/// `crema convert mnist` of an images/labels pair into `out`; returns the LMDB's records.
fn convert(images: &Path, labels: &Path, out: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let r = crema(&[
        "convert",
        "mnist",
        images.to_str().unwrap(),
        labels.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    crema::data::lmdb::read_all(out).unwrap()
}

fn set_sources(net: &mut crema::proto::caffe::NetParameter, source: &str, name: &str) {
    for l in &mut net.layer {
        if let Some(d) = l.data_param.as_mut() {
            d.source = Some(source.to_string());
            l.name = Some(name.to_string());
        }
    }
}

#[test]
fn the_example_is_mnists_lenet_and_trains_a_step() {
    let ex = repo().join("examples/fashion_mnist");
    let mut solver = read_solver_text(&ex.join("lenet_solver.prototxt"), TextOptions::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(solver.solver_mode(), SolverMode::Gpu);
    assert_eq!(
        solver.net.as_deref(),
        Some("examples/fashion_mnist/lenet_train_test.prototxt")
    );
    let mut net = read_net_text(
        &ex.join("lenet_train_test.prototxt"),
        TextOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let test_batch = net
        .layer
        .iter()
        .filter_map(|l| l.data_param.as_ref())
        .find(|d| d.source().ends_with("fashion_test_lmdb"))
        .map(|d| d.batch_size())
        .expect("a TEST data layer reading fashion_test_lmdb");
    assert_eq!(
        solver.test_iter[0] * test_batch as i32,
        10_000,
        "one test pass covers the test set"
    );

    // The same net as examples/mnist but for where the data comes from.
    let mut mnist = read_net_text(
        &repo().join("examples/mnist/lenet_train_test.prototxt"),
        TextOptions::default(),
    )
    .unwrap();
    set_sources(&mut mnist, "", "data");
    let mut same = net.clone();
    set_sources(&mut same, "", "data");
    assert_eq!(same, mnist);

    // Built by the solver and trained one step on the shipped MNIST digits (same format).
    let tmp = tempfile::tempdir().unwrap();
    let digits = repo().join("examples/mnist/data");
    let lmdb = tmp.path().join("digits_lmdb");
    convert(
        &digits.join("t10k-images-idx3-ubyte.gz"),
        &digits.join("t10k-labels-idx1-ubyte.gz"),
        &lmdb,
    );
    set_sources(&mut net, lmdb.to_str().unwrap(), "fashion");
    solver.net = None;
    solver.net_param = Some(net);
    solver.snapshot_after_train = Some(false);
    solver.test_initialization = Some(false);
    let mut s = Solver::new(
        solver,
        &SolverOptions {
            verbose: false,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(s.images_per_iteration(), 64);
    assert!(!s.step(1).unwrap());
    assert_eq!(s.iter, 1);
    let tn = &mut s.test_nets[0];
    let loss = tn.forward(&mut crema::rng::CaffeRng::new(1)).unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
    let acc = tn.blob_by_name("accuracy").unwrap().data_vec();
    assert!((0.0..=1.0).contains(&acc[0]), "{acc:?}");
}

#[test]
fn the_script_says_how_to_install_missing_data() {
    let tmp = tempfile::tempdir().unwrap();
    let absent = tmp.path().join("no-fashion-here");
    let out = Command::new("bash")
        .arg(repo().join("examples/fashion_mnist/train_lenet.sh"))
        .env("FASHION_MNIST_DIR", &absent)
        .env("CREMA", env!("CARGO_BIN_EXE_crema"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "Fashion-MNIST not found: {}/train-images-idx3-ubyte.gz is missing",
            absent.display()
        )) && err.contains("sudo apt-get install dataset-fashion-mnist"),
        "{err}"
    );
    assert!(
        !repo()
            .join("examples/fashion_mnist/fashion_train_lmdb.partial")
            .exists(),
        "nothing converted"
    );
}

#[test]
fn debians_fashion_mnist_files_convert() {
    let pkg = PathBuf::from("/usr/share/datasets/fashion-mnist");
    if !pkg.join("t10k-images-idx3-ubyte.gz").is_file() {
        println!(
            "SKIPPED: dataset-fashion-mnist is not installed ({} missing)",
            pkg.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let recs = convert(
        &pkg.join("t10k-images-idx3-ubyte.gz"),
        &pkg.join("t10k-labels-idx1-ubyte.gz"),
        &tmp.path().join("fashion_test_lmdb"),
    );
    assert_eq!(recs.len(), 10_000);
    // Fashion-MNIST's test set holds 1,000 images of each of its 10 classes.
    let mut per_class = [0usize; 10];
    for (_, v) in &recs {
        let d = <crema::proto::caffe::Datum as prost::Message>::decode(&v[..]).unwrap();
        assert_eq!((d.channels(), d.height(), d.width()), (1, 28, 28));
        per_class[d.label() as usize] += 1;
    }
    assert_eq!(per_class, [1000; 10]);
}
