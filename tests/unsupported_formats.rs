//! What crema does not read or write yet (LevelDB sources, HDF5 snapshots) is refused by
//! `crema train` and `crema test` with a message saying what to do instead and a non-zero exit,
//! before anything trains. Runs in a temporary folder next to the e2e_lmdb fixture's data.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture() -> PathBuf {
    let shared = match std::env::var_os("CREMA_SHARED") {
        Some(s) => PathBuf::from(s),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    let dir = shared.join("fixtures/caffe/e2e_lmdb");
    assert!(
        dir.is_dir(),
        "fixture folder {} is missing (set CREMA_SHARED to the shared folder)",
        dir.display()
    );
    dir
}

/// The fixture's net with its TRAIN source replaced, and `backend: LMDB` dropped (LevelDB is
/// the proto's default).
fn leveldb_net(dir: &Path, train_source: &Path) -> PathBuf {
    let text = std::fs::read_to_string(fixture().join("train_val.prototxt")).unwrap();
    let text = text
        .replace(
            "source: \"data/train_lmdb\" backend: LMDB",
            &format!("source: \"{}\"", train_source.display()),
        )
        .replace(
            "source: \"data/test_lmdb\" backend: LMDB",
            &format!("source: \"{}\"", train_source.display()),
        );
    assert!(
        !text.contains("backend: LMDB"),
        "fixture net changed: {text}"
    );
    let path = dir.join("leveldb.prototxt");
    std::fs::write(&path, text).unwrap();
    path
}

fn write_solver(dir: &Path, net: &Path, extra: &str) -> PathBuf {
    let text = format!(
        "net: \"{}\"\ntest_iter: 1\ntest_interval: 10\nmax_iter: 5\nbase_lr: 0.01\nlr_policy: \"fixed\"\n\
         snapshot_prefix: \"{}/snap\"\n{extra}",
        net.display(),
        dir.display()
    );
    let path = dir.join("solver.prototxt");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs crema; returns stderr after checking that it failed before training started.
fn fails(args: &[&str], cwd: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_crema"))
        .args(args)
        .current_dir(cwd)
        .env("GLOG_minloglevel", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?} must exit 1:\n{err}");
    assert!(!err.contains("Starting Optimization"), "{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn leveldb_sources_are_refused_by_train_and_test() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let weights = fixture().join("init.caffemodel");

    // A LevelDB source: crema cannot read it and says how to convert it.
    let missing = dir.join("train_leveldb");
    let net = leveldb_net(dir, &missing);
    let solver = write_solver(dir, &net, "");
    for args in [
        vec!["train", "--solver", s(&solver)],
        vec!["test", "--model", s(&net), "--weights", s(&weights)],
    ] {
        let err = fails(&args, dir);
        assert!(
            err.contains("LevelDB sources are not supported yet")
                && err.contains(s(&missing))
                && err.contains("backend: LMDB")
                && err.contains("convert_imageset --backend=lmdb"),
            "{args:?}:\n{err}"
        );
    }

    // An LMDB read as LevelDB because `backend` was left out: the fix is one line.
    let lmdb = fixture().join("data/train_lmdb");
    let net = leveldb_net(dir, &lmdb);
    let solver = write_solver(dir, &net, "");
    for args in [
        vec!["train", "--solver", s(&solver)],
        vec!["test", "--model", s(&net), "--weights", s(&weights)],
    ] {
        let err = fails(&args, dir);
        assert!(
            err.contains(&format!(
                "{} is an LMDB database: add `backend: LMDB` to data_param",
                lmdb.display()
            )),
            "{args:?}:\n{err}"
        );
    }
}

#[test]
fn hdf5_snapshots_are_refused_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let net = fixture().join("train_val.prototxt");
    let solver = write_solver(dir, &net, "snapshot: 2\nsnapshot_format: HDF5\n");
    let err = fails(&["train", "--solver", s(&solver)], &fixture());
    assert!(
        err.contains("snapshot_format: HDF5 is not supported by crema yet; use BINARYPROTO"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(dir).unwrap().count() == 1,
        "nothing but the solver was written"
    );

    // Resuming from an HDF5 solverstate.
    let solver = write_solver(dir, &net, "");
    let state = dir.join("snap_iter_2.solverstate.h5");
    std::fs::write(&state, b"\x89HDF\r\n\x1a\n").unwrap();
    let err = fails(
        &["train", "--solver", s(&solver), "--snapshot", s(&state)],
        &fixture(),
    );
    assert!(
        err.contains(&format!(
            "{}: HDF5 solverstates are not supported by crema yet",
            state.display()
        )),
        "{err}"
    );
}
