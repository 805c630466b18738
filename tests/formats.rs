//! File-format layer against real Caffe's files (issue #2): binary round trips, blobs against
//! numpy dumps, every fixture prototxt, the seed user's files, Caffe's V1 upgrade output, bad
//! input, and `crema inspect` exit codes.
//!
//! The fixtures are read from `$CREMA_SHARED/fixtures/caffe` (default: `../shared` next to the
//! crate), so any other folder of the same layout can be run through the same harness. Nothing
//! is written there: generated files go to a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crema::proto::blob::{has_legacy_dims, proto_shape, read_blob, shape_equals, shape_string};
use crema::proto::caffe::{BlobProto, BlobShape, LayerParameter, NetParameter, SolverState};
use crema::proto::printer::message_to_prototxt;
use crema::proto::text::{line_col, parse};
use crema::proto::{self, TextOptions};
use prost::Message;

// ---------------------------------------------------------------------------------------------
// Helpers

fn shared_dir() -> PathBuf {
    match std::env::var_os("CREMA_SHARED") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    }
}

fn fixtures() -> PathBuf {
    let dir = shared_dir().join("fixtures/caffe");
    assert!(
        dir.is_dir(),
        "fixture folder {} is missing (set CREMA_SHARED to the shared folder)",
        dir.display()
    );
    dir
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Every file under `dir`, recursively, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read_dir {}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect()
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn is_solver_file(p: &Path) -> bool {
    file_name(p).contains("solver")
}

/// A float32 .npy file: shape and values in C order.
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        npy.order(),
        npyz::Order::C,
        "{}: expected C order",
        path.display()
    );
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let data = npy
        .into_vec::<f32>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (shape, data)
}

fn layer<'a>(net: &'a NetParameter, name: &str) -> &'a LayerParameter {
    net.layer
        .iter()
        .find(|l| l.name() == name)
        .unwrap_or_else(|| panic!("net '{}' has no layer '{name}'", net.name()))
}

/// Bitwise equality of float slices (the numpy dumps are exact copies of the stored values).
fn assert_bits_eq(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(
            x.to_bits(),
            y.to_bits(),
            "{what}: value {i} differs: {x} vs {y}"
        );
    }
}

/// Asserts two nets are the same message, showing both as prototxt when they are not.
fn assert_same_net(got: &NetParameter, want: &NetParameter, what: &str) {
    if got != want {
        let show = |n: &NetParameter| message_to_prototxt(n, "caffe.NetParameter").unwrap();
        let (g, w) = (show(got), show(want));
        let first = g
            .lines()
            .zip(w.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(g.lines().count().min(w.lines().count()));
        panic!(
            "{what}: nets differ (first differing prototxt line {})\n--- crema:\n{g}\n--- Caffe:\n{w}",
            first + 1
        );
    }
}

fn crema() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crema"));
    c.env("GLOG_minloglevel", "1");
    c
}

fn inspect(args: &[&Path]) -> Output {
    let mut c = crema();
    c.arg("inspect");
    c.args(args);
    c.output().expect("run crema inspect")
}

fn utf8(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Byte offset of the only occurrence of `needle` in `hay`.
fn unique_offset(hay: &str, needle: &str) -> usize {
    assert_eq!(
        hay.matches(needle).count(),
        1,
        "'{needle}' must occur exactly once"
    );
    hay.find(needle).unwrap()
}

fn strict() -> TextOptions {
    TextOptions::default()
}

fn lenient() -> TextOptions {
    TextOptions {
        allow_unknown_fields: true,
    }
}

// ---------------------------------------------------------------------------------------------
// Binary round trips

#[test]
fn every_caffemodel_round_trips_and_its_blobs_read() {
    let files = with_ext(&fixtures(), "caffemodel");
    assert!(
        files.len() >= 15,
        "expected the fixture caffemodels, found {}",
        files.len()
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let raw =
            NetParameter::decode(&bytes[..]).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let again = NetParameter::decode(&raw.encode_to_vec()[..]).unwrap();
        assert_eq!(
            raw,
            again,
            "{}: decode/encode/decode changed the message",
            f.display()
        );
        // Caffe and python protobuf write fields in number order, packed, as prost does, and
        // crema's schema knows every field they wrote: re-encoding gives the very same bytes.
        assert!(
            raw.encode_to_vec() == bytes,
            "{}: re-encoding changed the bytes",
            f.display()
        );

        let net = proto::read_net_binary(f).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            net.layers.is_empty() && net.input.is_empty(),
            "{}: not upgraded",
            f.display()
        );
        let blobs: Vec<&BlobProto> = net.layer.iter().flat_map(|l| &l.blobs).collect();
        assert!(!blobs.is_empty(), "{}: no blobs", f.display());
        for b in blobs {
            let v = read_blob(b).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
            assert_eq!(v.data.len(), v.shape.iter().product::<usize>());
        }
    }
}

#[test]
fn every_solverstate_round_trips_and_its_history_reads() {
    let files = with_ext(&fixtures(), "solverstate");
    assert!(
        files.len() >= 10,
        "expected the fixture solverstates, found {}",
        files.len()
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let raw =
            SolverState::decode(&bytes[..]).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let again = SolverState::decode(&raw.encode_to_vec()[..]).unwrap();
        assert_eq!(
            raw,
            again,
            "{}: decode/encode/decode changed the message",
            f.display()
        );
        assert!(
            raw.encode_to_vec() == bytes,
            "{}: re-encoding changed the bytes",
            f.display()
        );

        let s = proto::read_solverstate(f).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(s.iter() > 0, "{}: iter", f.display());
        // Snapshots are named <prefix>_iter_N.solverstate and record the caffemodel beside them.
        let iter_in_name: i32 = file_name(f)
            .rsplit("_iter_")
            .next()
            .and_then(|t| t.strip_suffix(".solverstate"))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{}: unexpected name", f.display()));
        assert_eq!(s.iter(), iter_in_name, "{}", f.display());
        assert!(s
            .learned_net()
            .ends_with(&format!("_iter_{iter_in_name}.caffemodel")));
        assert!(!s.history.is_empty(), "{}: no history", f.display());
        for h in &s.history {
            read_blob(h).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
        }
    }
}

#[test]
fn every_binaryproto_reads() {
    let files = with_ext(&fixtures(), "binaryproto");
    assert!(!files.is_empty());
    for f in &files {
        let b = proto::read_binary_proto_file(f).unwrap_or_else(|e| panic!("{e:#}"));
        let v = read_blob(&b).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
        // The mean files have a .npy twin holding the same values (minus the leading 1 axis).
        let npy = f.with_extension("npy");
        if npy.exists() {
            let (shape, data) = read_npy(&npy);
            assert_eq!(v.data.len(), data.len(), "{}", f.display());
            assert!(
                shape_equals(&b, &shape) || v.shape.ends_with(&shape),
                "{}",
                f.display()
            );
            assert_bits_eq(&v.data, &data, &f.display().to_string());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Blobs against the numpy dumps beside them

/// `<prefix><layer>_<k>.npy` files in `dir`, as (layer, k, path).
fn param_npys(dir: &Path, prefix: &str) -> Vec<(String, usize, PathBuf)> {
    let mut out = Vec::new();
    for p in with_ext(dir, "npy") {
        if p.parent() != Some(dir) {
            continue;
        }
        let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
        let Some(rest) = stem.strip_prefix(prefix) else {
            continue;
        };
        let (layer, k) = rest.rsplit_once('_').expect("<layer>_<k>");
        out.push((layer.to_string(), k.parse().expect("blob index"), p));
    }
    out
}

/// Every blob of every layer of `model` has a `.npy` twin, and they are equal: shape by Caffe's
/// `ShapeEquals` (legacy 4-D dims or `shape`), values bit for bit.
fn check_blobs_against_npys(model: &Path, npys: &[(String, usize, PathBuf)]) {
    let net = proto::read_net_binary(model).unwrap_or_else(|e| panic!("{e:#}"));
    let nblobs: usize = net.layer.iter().map(|l| l.blobs.len()).sum();
    assert_eq!(
        nblobs,
        npys.len(),
        "{}: blob count vs .npy files",
        model.display()
    );
    for (lname, k, path) in npys {
        let l = layer(&net, lname);
        let b = l
            .blobs
            .get(*k)
            .unwrap_or_else(|| panic!("{}: {lname} has no blob {k}", model.display()));
        let (shape, data) = read_npy(path);
        assert!(
            shape_equals(b, &shape),
            "{}: {lname} blob {k} shape {:?} does not match {} {:?}",
            model.display(),
            proto_shape(b).unwrap(),
            path.display(),
            shape
        );
        // read_blob's shape: the npy shape itself, or with legacy dims its 4-D padding.
        let v = read_blob(b).unwrap();
        if has_legacy_dims(b) {
            let pad = 4 - shape.len();
            assert!(
                v.shape.len() == 4
                    && v.shape[pad..] == shape[..]
                    && v.shape[..pad].iter().all(|&d| d == 1),
                "{}: {lname} blob {k}: legacy shape {:?} vs {:?}",
                model.display(),
                v.shape,
                shape
            );
        } else {
            assert_eq!(v.shape, shape, "{}: {lname} blob {k}", model.display());
        }
        assert_bits_eq(
            &v.data,
            &data,
            &format!("{} {lname} blob {k}", model.display()),
        );
    }
}

#[test]
fn e2e_init_blobs_equal_npy() {
    let dir = fixtures().join("e2e_hdf5");
    let npys = param_npys(&dir, "init_");
    assert_eq!(npys.len(), 9, "conv1 2 + bn1 3 + scale1 2 + ip1 2");
    check_blobs_against_npys(&dir.join("init.caffemodel"), &npys);
    // The modern encoding: exact shapes, no legacy dims.
    let net = proto::read_net_binary(&dir.join("init.caffemodel")).unwrap();
    for (lname, k, path) in &npys {
        let v = read_blob(&layer(&net, lname).blobs[*k]).unwrap();
        assert_eq!(v.shape, read_npy(path).0, "{lname} blob {k}");
    }
}

#[test]
fn v1_upgrade_blobs_equal_npy_in_all_three_models() {
    let dir = fixtures().join("v1_upgrade");
    let npys = param_npys(&dir, "param_");
    assert_eq!(npys.len(), 6, "conv1, ip1, ip2: weight and bias each");
    for model in [
        "v1.caffemodel",
        "upgraded.caffemodel",
        "resaved_by_pycaffe.caffemodel",
    ] {
        check_blobs_against_npys(&dir.join(model), &npys);
    }
}

// ---------------------------------------------------------------------------------------------
// Every fixture prototxt

#[test]
fn every_fixture_prototxt_parses() {
    let files = with_ext(&fixtures(), "prototxt");
    assert!(
        files.len() >= 80,
        "expected the fixture prototxts, found {}",
        files.len()
    );
    let (mut nets, mut solvers) = (0, 0);
    for f in &files {
        if is_solver_file(f) {
            let s = proto::read_solver_text(f, strict()).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(
                s.solver_type.is_none(),
                "{}: solver_type not upgraded",
                f.display()
            );
            assert!(
                s.net.is_some()
                    || s.net_param.is_some()
                    || s.train_net.is_some()
                    || s.train_net_param.is_some(),
                "{}: solver names no net",
                f.display()
            );
            assert!(!s.lr_policy().is_empty(), "{}: no lr_policy", f.display());
            solvers += 1;
        } else {
            let n = proto::read_net_text(f, strict()).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(!n.layer.is_empty(), "{}: no layers", f.display());
            assert!(
                n.layers.is_empty() && n.input.is_empty() && n.input_dim.is_empty(),
                "{}: not upgraded",
                f.display()
            );
            assert!(
                n.layer.iter().all(|l| !l.r#type().is_empty()),
                "{}: a layer has no type",
                f.display()
            );
            nets += 1;
        }
    }
    assert!(
        solvers >= 10 && nets >= 60,
        "{nets} nets, {solvers} solvers"
    );
}

// ---------------------------------------------------------------------------------------------
// The seed user's files (tests/data/seed_*.prototxt, copied from the post)
//
// The copy of the post in shared/seed/ lost its line breaks: the net is one line and the solver
// reads `test_iter: 100test_interval: 10...`. The files keep every character of the post, in
// order, comments included; only the line breaks that must have been there are restored: after
// each `#` comment (which otherwise swallows the rest of the net) and between solver fields.

fn seed_net() -> (PathBuf, String) {
    let p = data_dir().join("seed_net.prototxt");
    let t = std::fs::read_to_string(&p).unwrap();
    (p, t)
}

#[test]
fn seed_files_are_the_posts_text() {
    let post = std::fs::read_to_string(shared_dir().join("seed/000_470a31cfd358bfac.txt")).unwrap();
    let (_, net) = seed_net();
    let solver = std::fs::read_to_string(data_dir().join("seed_solver.prototxt")).unwrap();
    // Each restored line break replaced the space that followed a comment.
    let net_line = net.trim_end().replace('\n', " ");
    assert!(
        post.lines().any(|l| l == net_line),
        "seed_net.prototxt is not the post's net"
    );
    let solver_line = solver.trim_end().replace('\n', "");
    assert!(
        post.lines().any(|l| l == solver_line),
        "seed_solver.prototxt is not the post's solver"
    );
    assert!(
        net.contains("#pair_size: 3\n")
            && net.contains("#-------------- TEACHER --------------------\n")
    );
}

#[test]
fn seed_net_fails_strictly_at_color() {
    let (path, text) = seed_net();
    let off = unique_offset(&text, "color: true");
    let (line, col) = line_col(&text, off);
    // Cross-check line_col by hand: the line is the number of newlines before, plus one.
    assert_eq!(line, text[..off].matches('\n').count() + 1);
    let line_start = text[..off].rfind('\n').map_or(0, |i| i + 1);
    assert_eq!(col, text[line_start..off].chars().count() + 1);

    let err = format!("{:#}", proto::read_net_text(&path, strict()).unwrap_err());
    let want = format!("{}:{line}:{col}: ", path.display());
    assert!(
        err.starts_with(&want),
        "error should start with {want:?}, got:\n{err}"
    );
    assert!(
        err.contains("field 'color' not found in 'caffe.TransformationParameter'"),
        "error should name the field and the message:\n{err}"
    );
    // The source line and a caret under the field follow.
    let mut lines = err.lines().skip(1);
    let src = lines.next().unwrap();
    assert_eq!(src.trim_start(), text.lines().nth(line - 1).unwrap());
    let caret = lines.next().unwrap();
    assert_eq!(
        caret.find('^').unwrap() - 4,
        col - 1,
        "caret under column {col}"
    );
}

#[test]
fn seed_net_parses_with_allow_unknown_fields() {
    let (path, text) = seed_net();
    let parsed = parse::<NetParameter>(&text, "caffe.NetParameter", "seed", lenient()).unwrap();
    let dropped: Vec<(&str, &str, usize, usize)> = parsed
        .dropped
        .iter()
        .map(|d| (d.field.as_str(), d.message.as_str(), d.line, d.col))
        .collect();
    let at = |s: &str| line_col(&text, unique_offset(&text, s));
    let tp = "caffe.TransformationParameter";
    let want = vec![
        ("color", tp, at("color: true").0, at("color: true").1),
        (
            "contrast",
            tp,
            at("contrast: true").0,
            at("contrast: true").1,
        ),
        (
            "brightness",
            tp,
            at("brightness: true").0,
            at("brightness: true").1,
        ),
    ];
    assert_eq!(dropped, want);

    let net = proto::read_net_text(&path, lenient()).unwrap_or_else(|e| panic!("{e:#}"));
    let names: Vec<&str> = net.layer.iter().map(|l| l.name()).collect();
    assert_eq!(
        names,
        [
            "data",
            "data",
            "conv1",
            "res2_1a_1_bn",
            "res2_1a_1_scale",
            "res2_1a_1_relu",
            "pool_5",
            "fc100",
            "tea_soft_loss",
            "teacher_accuracy"
        ]
    );
    // The known fields around the dropped ones are all kept.
    let train = &net.layer[0];
    assert_eq!(train.include[0].phase, Some(0));
    let t = train.transform_param.as_ref().unwrap();
    assert_eq!(
        (t.scale, t.mirror, t.crop_size),
        (Some(0.017), Some(true), Some(32))
    );
    assert_eq!(t.mean_value, vec![115.0, 126.0, 130.0]);
    let idp = train.image_data_param.as_ref().unwrap();
    assert_eq!((idp.batch_size, idp.shuffle), (Some(64), Some(true)));
    assert_eq!(
        net.layer[1].image_data_param.as_ref().unwrap().batch_size,
        Some(100)
    );
    let bn = layer(&net, "res2_1a_1_bn");
    assert_eq!(bn.param.len(), 2, "two ParamSpecs: no BatchNorm upgrade");
    assert!(bn.batch_norm_param.is_none());
    assert_eq!(bn.propagate_down, vec![false]);
    assert_eq!(
        layer(&net, "tea_soft_loss").propagate_down,
        vec![false, false]
    );
    assert_eq!(layer(&net, "tea_soft_loss").loss_weight, vec![0.0]);
    let pool = layer(&net, "pool_5").pooling_param.as_ref().unwrap();
    assert_eq!((pool.pool, pool.global_pooling), (Some(1), Some(true)));
}

#[test]
fn seed_solver_parses() {
    let s = proto::read_solver_text(&data_dir().join("seed_solver.prototxt"), strict())
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(s.test_iter, vec![100]);
    assert_eq!(
        (s.test_interval, s.display, s.max_iter, s.snapshot),
        (Some(10), Some(10000), Some(80000), Some(5000))
    );
    assert_eq!(
        (s.base_lr, s.momentum, s.weight_decay, s.power),
        (Some(0.0), Some(0.0), Some(0.0), Some(1.0))
    );
    assert_eq!((s.lr_policy(), s.r#type()), ("poly", "SGD"));
    assert_eq!(
        s.solver_mode,
        Some(1),
        "solver_mode: GPU written explicitly"
    );
    assert_eq!(s.random_seed, Some(10086));
    assert!(s.net.is_none() && s.snapshot_prefix.is_none());
}

#[test]
fn inspect_seed_files() {
    let (net, text) = seed_net();
    let (line, col) = line_col(&text, unique_offset(&text, "color: true"));
    let out = inspect(&[&net]);
    assert!(!out.status.success());
    let err = utf8(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:{line}:{col}: field 'color' not found",
            net.display()
        )),
        "{err}"
    );

    let out = crema()
        .arg("inspect")
        .arg("--allow-unknown-fields")
        .arg(&net)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", utf8(&out.stderr));
    let so = utf8(&out.stdout);
    assert!(
        so.contains("10 layer(s)") && so.contains("res2_1a_1_bn"),
        "{so}"
    );

    let solver = data_dir().join("seed_solver.prototxt");
    let out = inspect(&[&solver]);
    assert!(out.status.success(), "{}", utf8(&out.stderr));
    let so = utf8(&out.stdout);
    assert!(
        so.contains("solver (prototxt)") && so.contains("poly"),
        "{so}"
    );
}

// ---------------------------------------------------------------------------------------------
// Caffe's V1 upgrade

#[test]
fn v1_deploy_upgrades_to_caffes_output() {
    let dir = fixtures().join("v1_upgrade");
    let ours = proto::read_net_text(&dir.join("v1_deploy.prototxt"), strict()).unwrap();
    let caffe = proto::read_net_text(&dir.join("upgraded_deploy.prototxt"), strict()).unwrap();
    assert_eq!(ours.layer.len(), 10, "Input + 9 V1 layers");
    assert_same_net(&ours, &caffe, "v1_deploy.prototxt");
}

#[test]
fn v1_train_val_upgrades_to_caffes_output() {
    let dir = fixtures().join("v1_upgrade");
    let ours = proto::read_net_text(&dir.join("v1_train_val.prototxt"), strict()).unwrap();
    let caffe = proto::read_net_text(&dir.join("upgraded_train_val.prototxt"), strict()).unwrap();
    assert_eq!(ours.layer.len(), 9);
    assert_same_net(&ours, &caffe, "v1_train_val.prototxt");
}

#[test]
fn v1_layer_without_type_gets_no_type() {
    // UpgradeV1LayerParameter sets `type` only when the V1 layer has one.
    let net = proto::parse_net_text("layers { name: \"x\" top: \"x\" }\n", "t", strict()).unwrap();
    assert_eq!(
        (net.layer[0].name(), net.layer[0].r#type.as_deref()),
        ("x", None)
    );
    let net = proto::parse_net_text("layers { name: \"x\" type: NONE }\n", "t", strict()).unwrap();
    assert_eq!(net.layer[0].r#type.as_deref(), Some(""));
}

#[test]
fn upgraded_prototxts_need_no_upgrade() {
    // Caffe's output is current format: parsing it raw (no upgrade) gives the same message.
    let dir = fixtures().join("v1_upgrade");
    for f in ["upgraded_deploy.prototxt", "upgraded_train_val.prototxt"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        let raw = parse::<NetParameter>(&text, "caffe.NetParameter", f, strict())
            .unwrap()
            .message;
        let upgraded = proto::parse_net_text(&text, f, strict()).unwrap();
        assert_eq!(raw, upgraded, "{f}");
    }
}

#[test]
fn v1_caffemodel_upgrades_to_caffes_upgraded_caffemodel() {
    let dir = fixtures().join("v1_upgrade");
    let v1_bytes = std::fs::read(dir.join("v1.caffemodel")).unwrap();
    let raw_v1 = NetParameter::decode(&v1_bytes[..]).unwrap();
    assert!(raw_v1.layer.is_empty() && raw_v1.layers.len() == 9 && !raw_v1.input_dim.is_empty());

    let ours = proto::decode_net_binary(&v1_bytes, "v1.caffemodel").unwrap();
    // `upgrade_net_proto_binary` wrote the upgraded file: read it raw, without crema's upgrade.
    let caffe =
        NetParameter::decode(&std::fs::read(dir.join("upgraded.caffemodel")).unwrap()[..]).unwrap();
    assert!(caffe.layers.is_empty() && caffe.input.is_empty());
    assert_same_net(&ours, &caffe, "v1.caffemodel");

    // Blob by blob, as a loader sees them: legacy 4-D dims survive, data is identical.
    let mut compared = 0;
    for (a, b) in ours.layer.iter().zip(&caffe.layer) {
        assert_eq!((a.name(), a.r#type()), (b.name(), b.r#type()));
        assert_eq!(a.blobs.len(), b.blobs.len(), "{}", a.name());
        for (x, y) in a.blobs.iter().zip(&b.blobs) {
            let (vx, vy) = (read_blob(x).unwrap(), read_blob(y).unwrap());
            assert_eq!(vx.shape, vy.shape, "{}", a.name());
            assert_eq!(vx.shape.len(), 4, "legacy rule gives 4-D");
            assert_bits_eq(&vx.data, &vy.data, a.name());
            compared += 1;
        }
    }
    assert_eq!(compared, 6);
    // And the legacy shapes match the modern blob shapes as Caffe's ShapeEquals does.
    let modern = proto::read_net_binary(&dir.join("resaved_by_pycaffe.caffemodel")).unwrap();
    for l in &ours.layer {
        for (k, b) in l.blobs.iter().enumerate() {
            let m = &layer(&modern, l.name()).blobs[k];
            let target = proto_shape(m).unwrap();
            assert!(
                shape_equals(b, &target),
                "{} blob {k}: legacy vs {:?}",
                l.name(),
                target
            );
            assert!(
                target.len() < 4 || l.name() == "conv1",
                "resaved shapes are not padded"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input: a clear error, never a panic or a huge allocation

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn init_model_bytes() -> Vec<u8> {
    std::fs::read(fixtures().join("e2e_hdf5/init.caffemodel")).unwrap()
}

#[test]
fn truncated_caffemodel_is_an_error() {
    let d = tmp();
    let bytes = init_model_bytes();
    let p = write(d.path(), "half.caffemodel", &bytes[..bytes.len() / 2]);
    let e = format!("{:#}", proto::read_net_binary(&p).unwrap_err());
    assert!(
        e.contains("half.caffemodel") && e.contains("truncated or corrupt"),
        "{e}"
    );
    // Every cut point, not just the half: an error or (at a field boundary) a shorter net.
    for cut in (0..bytes.len()).step_by(97) {
        if let Ok(n) = proto::decode_net_binary(&bytes[..cut], "cut") {
            assert!(n.layer.iter().map(|l| l.blobs.len()).sum::<usize>() <= 9);
        }
    }
    let ss = std::fs::read(fixtures().join("e2e_hdf5/snap/sgd_iter_50.solverstate")).unwrap();
    let p = write(d.path(), "half.solverstate", &ss[..ss.len() / 2]);
    let e = format!("{:#}", proto::read_solverstate(&p).unwrap_err());
    assert!(
        e.contains("half.solverstate") && e.contains("not a valid binary solverstate"),
        "{e}"
    );
}

#[test]
fn blob_count_mismatch_is_an_error() {
    let bp = BlobProto {
        shape: Some(BlobShape { dim: vec![2, 3] }),
        data: vec![1.0; 5],
        ..Default::default()
    };
    let e = read_blob(&bp).unwrap_err().to_string();
    assert!(e.contains("holds 5 values") && e.contains("needs 6"), "{e}");
    // Legacy dims count as well: 1x1x2x2 needs 4.
    let legacy = BlobProto {
        num: Some(1),
        channels: Some(1),
        height: Some(2),
        width: Some(2),
        data: vec![0.0; 3],
        ..Default::default()
    };
    let e = read_blob(&legacy).unwrap_err().to_string();
    assert!(
        e.contains("holds 3 values") && e.contains("1 1 2 2 (4)"),
        "{e}"
    );
    // A diff of the wrong size too.
    let bad_diff = BlobProto {
        shape: Some(BlobShape { dim: vec![2] }),
        data: vec![0.0; 2],
        diff: vec![0.0; 3],
        ..Default::default()
    };
    assert!(read_blob(&bad_diff)
        .unwrap_err()
        .to_string()
        .contains("diff holds 3 values"));

    // Through a file and `crema inspect`: an error naming the layer and blob, and exit 1.
    let net = NetParameter {
        name: Some("bad".into()),
        layer: vec![LayerParameter {
            name: Some("ip".into()),
            r#type: Some("InnerProduct".into()),
            blobs: vec![bp],
            ..Default::default()
        }],
        ..Default::default()
    };
    let d = tmp();
    let p = write(d.path(), "bad_blob.caffemodel", &net.encode_to_vec());
    let out = inspect(&[&p]);
    let se = utf8(&out.stderr);
    assert!(!out.status.success(), "{se}");
    assert!(
        se.contains("layer 'ip' blob 0") && se.contains("blob data holds 5 values"),
        "{se}"
    );
}

#[test]
fn overflowing_and_huge_shapes_are_refused_before_allocating() {
    for dim in [
        vec![i64::MAX, 2],
        vec![1 << 32, 1 << 32],
        vec![100_000, 100_000, 100_000],
    ] {
        let bp = BlobProto {
            shape: Some(BlobShape { dim: dim.clone() }),
            data: vec![1.0, 2.0],
            ..Default::default()
        };
        let e = read_blob(&bp).unwrap_err().to_string();
        assert!(e.contains("too many elements"), "{dim:?}: {e}");
    }
    // Within the limit but far more than the data holds: the count is checked before any copy.
    let bp = BlobProto {
        shape: Some(BlobShape {
            dim: vec![100_000, 100_000],
        }),
        data: vec![1.0; 3],
        ..Default::default()
    };
    let e = read_blob(&bp).unwrap_err().to_string();
    assert!(
        e.contains("holds 3 values") && e.contains("needs 10000000000"),
        "{e}"
    );
    // The shape printer itself never overflows (it is also used on shapes that were refused).
    assert_eq!(
        shape_string(&[usize::MAX, 2]),
        format!("{} 2 (overflow)", usize::MAX)
    );
    assert_eq!(shape_string(&[4, 3, 3, 3]), "4 3 3 3 (108)");
    let neg = BlobProto {
        shape: Some(BlobShape { dim: vec![4, -1] }),
        ..Default::default()
    };
    assert!(read_blob(&neg)
        .unwrap_err()
        .to_string()
        .contains("negative dimension -1"));
    let neg_legacy = BlobProto {
        num: Some(-2),
        ..Default::default()
    };
    assert!(read_blob(&neg_legacy)
        .unwrap_err()
        .to_string()
        .contains("negative dimension -2"));

    // In a file: `crema inspect` reports it and does not try to allocate 10^15 floats.
    let net = NetParameter {
        layer: vec![LayerParameter {
            name: Some("huge".into()),
            blobs: vec![BlobProto {
                shape: Some(BlobShape {
                    dim: vec![100_000, 100_000, 100_000],
                }),
                data: vec![0.5],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let d = tmp();
    let p = write(d.path(), "huge.caffemodel", &net.encode_to_vec());
    let out = inspect(&[&p]);
    assert!(!out.status.success());
    assert!(utf8(&out.stderr).contains("blob shape 100000 100000 100000 has too many elements"));
    let st = SolverState {
        iter: Some(1),
        history: net.layer[0].blobs.clone(),
        ..Default::default()
    };
    let p = write(d.path(), "huge.solverstate", &st.encode_to_vec());
    let e = format!(
        "{:#}",
        proto::read_solverstate(&p)
            .map(|s| read_blob(&s.history[0]).map(|_| ()))
            .unwrap()
            .unwrap_err()
    );
    assert!(e.contains("too many elements"), "{e}");
    let out = inspect(&[&p]);
    assert!(!out.status.success());
    assert!(
        utf8(&out.stderr).contains("too many elements"),
        "{}",
        utf8(&out.stderr)
    );
}

#[test]
fn empty_file_is_an_error() {
    let d = tmp();
    let m = write(d.path(), "empty.caffemodel", b"");
    let t = write(d.path(), "empty.prototxt", b"");
    let e = format!("{:#}", proto::read_net_binary(&m).unwrap_err());
    assert!(e.contains("empty.caffemodel: file is empty"), "{e}");
    let e = format!("{:#}", proto::read_solverstate(&m).unwrap_err());
    assert!(e.contains("file is empty"), "{e}");
    let e = format!("{:#}", proto::read_net_text(&t, strict()).unwrap_err());
    assert!(e.contains("empty.prototxt: file is empty"), "{e}");
    let e = format!("{:#}", proto::read_solver_text(&t, strict()).unwrap_err());
    assert!(e.contains("file is empty"), "{e}");
    let out = inspect(&[&m]);
    assert!(!out.status.success() && utf8(&out.stderr).contains("file is empty"));
}

#[test]
fn text_given_as_caffemodel_is_an_error() {
    let d = tmp();
    let src = std::fs::read(fixtures().join("v1_upgrade/upgraded_deploy.prototxt")).unwrap();
    let p = write(d.path(), "deploy.caffemodel", &src);
    let e = format!("{:#}", proto::read_net_binary(&p).unwrap_err());
    assert!(
        e.contains("deploy.caffemodel: this is a text file, not a binary caffemodel"),
        "{e}"
    );
    let e = format!("{:#}", proto::read_solverstate(&p).unwrap_err());
    assert!(e.contains("not a binary solverstate"), "{e}");
    let e = format!("{:#}", proto::read_binary_proto_file(&p).unwrap_err());
    assert!(e.contains("not a binary binaryproto"), "{e}");
}

#[test]
fn binary_given_as_prototxt_is_an_error() {
    let d = tmp();
    let p = write(d.path(), "model.prototxt", &init_model_bytes());
    let e = format!("{:#}", proto::read_net_text(&p, strict()).unwrap_err());
    assert!(
        e.contains("model.prototxt: this is a binary file, not a text prototxt"),
        "{e}"
    );
    let e = format!("{:#}", proto::read_solver_text(&p, lenient()).unwrap_err());
    assert!(e.contains("binary file, not a text prototxt"), "{e}");
    // Binary that happens to be valid UTF-8 (control bytes, no high bytes) is refused too.
    let tiny = SolverState {
        iter: Some(5),
        learned_net: Some("a".into()),
        ..Default::default()
    }
    .encode_to_vec();
    assert!(std::str::from_utf8(&tiny).is_ok());
    let p = write(d.path(), "tiny.prototxt", &tiny);
    let e = format!("{:#}", proto::read_solver_text(&p, strict()).unwrap_err());
    assert!(
        e.contains("tiny.prototxt: this is a binary file, not a text prototxt"),
        "{e}"
    );
    // Invalid UTF-8 alone is enough.
    let p = write(d.path(), "latin1.prototxt", b"name: \"caf\xe9\"\n");
    let e = format!("{:#}", proto::read_net_text(&p, strict()).unwrap_err());
    assert!(e.contains("binary file"), "{e}");
}

/// Parses `src` strictly as a net and returns the error text.
fn net_error(src: &str) -> String {
    format!(
        "{:#}",
        proto::parse_net_text(src, "bad.prototxt", strict()).unwrap_err()
    )
}

#[test]
fn unterminated_block_names_a_line() {
    let src = "name: \"n\"\nlayer {\n  name: \"a\"\n  type: \"ReLU\"\n  relu_param {\n    negative_slope: 0.1\n\n";
    let e = net_error(src);
    // No position from the parser: the error points at the last non-blank line.
    assert!(e.starts_with("bad.prototxt:6:"), "{e}");
    assert!(
        e.contains("2 block(s) opened with '{' are not closed"),
        "{e}"
    );
    assert!(
        e.contains("negative_slope: 0.1"),
        "the source line is shown: {e}"
    );
    // Braces in strings and comments do not count.
    let e = net_error("layer {\n  name: \"{{\" # {\n");
    assert!(e.contains("1 block(s)"), "{e}");
    // Also with allow_unknown_fields, and when the unclosed block is an unknown field.
    let e = format!(
        "{:#}",
        proto::parse_net_text(
            "layer {\n  name: \"a\"\n  fancy_param {\n    x: 1\n",
            "bad.prototxt",
            lenient()
        )
        .unwrap_err()
    );
    assert!(
        e.starts_with("bad.prototxt:3:3: ") && e.contains("fancy_param"),
        "{e}"
    );
    assert!(e.contains("a block it opens is not closed"), "{e}");
}

#[test]
fn positions_count_characters_after_multibyte_text() {
    // Users write comments and names in their own language (the seed post is in Chinese).
    let src =
        "# 中文注释 数据层\nlayer { name: \"数据\" type: \"ReLU\" foo: 1 bar { a: \"é\" } }\n";
    let e = net_error(src);
    // 'layer { name: "数据" type: "ReLU" ' is 32 characters (38 bytes).
    assert!(
        e.starts_with("bad.prototxt:2:33: field 'foo' not found"),
        "{e}"
    );
    let parsed = parse::<NetParameter>(src, "caffe.NetParameter", "t", lenient()).unwrap();
    let got: Vec<(&str, usize, usize)> = parsed
        .dropped
        .iter()
        .map(|d| (d.field.as_str(), d.line, d.col))
        .collect();
    assert_eq!(got, [("foo", 2, 33), ("bar", 2, 40)]);
    assert_eq!(parsed.message.layer[0].name(), "数据");
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!("layer {}", "{ x ".repeat(50_000));
    let e = net_error(&deep);
    assert!(
        e.starts_with("bad.prototxt:1:9: "),
        "{}",
        &e[..200.min(e.len())]
    );
    let e = format!(
        "{:#}",
        proto::parse_net_text(&deep, "bad.prototxt", lenient()).unwrap_err()
    );
    assert!(
        e.contains("cannot skip unknown field 'x'"),
        "{}",
        &e[..200.min(e.len())]
    );
    // A closed unknown block is skipped however deep it is.
    let closed = format!(
        "foo {}{}\nname: \"n\"\n",
        "{ x ".repeat(50_000),
        "}".repeat(50_000)
    );
    let n = proto::parse_net_text(&closed, "ok", lenient()).unwrap();
    assert_eq!(n.name(), "n");
    // Binary: 100000 nested unknown groups hit prost's recursion limit.
    let group_start = [0xc3u8, 0x3e]; // field 1000, wire type 3
    let bytes = group_start.repeat(100_000);
    let e = format!(
        "{:#}",
        proto::decode_net_binary(&bytes, "deep.caffemodel").unwrap_err()
    );
    assert!(
        e.contains("deep.caffemodel: not a valid binary caffemodel")
            && e.contains("recursion limit"),
        "{e}"
    );
}

#[test]
fn unknown_enum_value_is_an_error() {
    let src = "layer {\n  name: \"p\"\n  type: \"Pooling\"\n  pooling_param { pool: MAXX kernel_size: 2 }\n}\n";
    let (line, col) = line_col(src, unique_offset(src, "MAXX"));
    let e = net_error(src);
    assert!(
        e.starts_with(&format!("bad.prototxt:{line}:{col}: ")),
        "{e}"
    );
    assert!(
        e.contains("MAXX") && e.contains("caffe.PoolingParameter.PoolMethod"),
        "{e}"
    );
    // allow_unknown_fields is about fields, not values.
    assert!(proto::parse_net_text(src, "bad.prototxt", lenient()).is_err());
    let e = format!(
        "{:#}",
        proto::parse_solver_text("solver_mode: TPU\n", "s.prototxt", strict()).unwrap_err()
    );
    assert!(
        e.starts_with("s.prototxt:1:14: ") && e.contains("TPU"),
        "{e}"
    );
}

#[test]
fn negative_unsigned_value_is_an_error() {
    let src = "layer {\n  name: \"c\"\n  type: \"Convolution\"\n  convolution_param {\n    num_output: -3\n  }\n}\n";
    let e = net_error(src);
    // Column 17 is the '-' of "    num_output: -3".
    assert!(e.starts_with("bad.prototxt:5:17: "), "{e}");
    assert!(
        e.contains("unsigned 32-bit integer") && e.contains("-3 is out of range"),
        "{e}"
    );
    assert!(e.contains("num_output: -3"), "source line shown: {e}");
    // An int32 field accepts it (and the error above is not about the field itself).
    let ok = proto::parse_net_text(
        "layer { name: \"c\" convolution_param { axis: -3 } }",
        "ok",
        strict(),
    )
    .unwrap();
    assert_eq!(
        ok.layer[0].convolution_param.as_ref().unwrap().axis,
        Some(-3)
    );
    // Out of range for the type.
    let e = net_error("layer { convolution_param { num_output: 4294967296 } }");
    assert!(
        e.starts_with("bad.prototxt:1:41: ") && e.contains("4294967296 is out of range"),
        "{e}"
    );
}

#[test]
fn other_text_errors_name_line_and_column() {
    let e = net_error("name: \"n\"\nlayer {\n  nme: \"a\"\n}\n");
    assert!(
        e.starts_with("bad.prototxt:3:3: field 'nme' not found in 'caffe.LayerParameter'"),
        "{e}"
    );
    let e = net_error("layer {\n  name: \"a\";;\n}\n");
    assert!(
        e.starts_with("bad.prototxt:2:13: ") && e.contains("found ';'"),
        "{e}"
    );
    let e = net_error("layer {\n  name: \"unterminated\n}\n");
    assert!(
        e.starts_with("bad.prototxt:2:") && e.contains("invalid string character"),
        "{e}"
    );
    let e = net_error("input_dim: 1\ninput_dim: 2\ninput: \"data\"\nlayer { name: \"x\" }\n");
    assert!(e.contains("1 input(s) but 2 input_dim values"), "{e}");
    let e = net_error("layers { name: \"a\" type: RELU }\nlayer { name: \"b\" }\n");
    assert!(e.contains("both 'layer' and 'layers'"), "{e}");
    let e = format!(
        "{:#}",
        proto::parse_solver_text(
            "solver_type: ADAM\ntype: \"Adam\"\n",
            "s.prototxt",
            strict()
        )
        .unwrap_err()
    );
    assert!(e.contains("cannot be both specified"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// `crema inspect`

#[test]
fn inspect_describes_every_fixture_file() {
    let mut n = 0;
    for f in walk(&fixtures()) {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        let want = match ext {
            "caffemodel" => ": caffemodel '",
            "solverstate" => ": solverstate",
            "binaryproto" => ": BlobProto (binaryproto)",
            "prototxt" if is_solver_file(&f) => ": solver (prototxt)",
            "prototxt" => ": net '",
            _ => continue,
        };
        let out = inspect(&[&f]);
        let (so, se) = (utf8(&out.stdout), utf8(&out.stderr));
        assert!(
            out.status.success(),
            "crema inspect {} failed:\n{se}",
            f.display()
        );
        assert!(
            so.starts_with(&format!("{}{want}", f.display())),
            "{}: got\n{so}",
            f.display()
        );
        n += 1;
    }
    assert!(n >= 110, "{n} files inspected");
}

#[test]
fn inspect_fails_on_bad_files() {
    let d = tmp();
    let bytes = init_model_bytes();
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            write(d.path(), "half.caffemodel", &bytes[..bytes.len() / 2]),
            "truncated or corrupt",
        ),
        (write(d.path(), "empty.caffemodel", b""), "file is empty"),
        (
            write(
                d.path(),
                "garbage.bin",
                &[0xff, 0xff, 0xff, 0xff, 0x00, 0x07],
            ),
            "not a Caffe file",
        ),
        (
            write(d.path(), "open.prototxt", b"layer {\n  name: \"a\"\n"),
            "not closed",
        ),
        (
            write(
                d.path(),
                "enum.prototxt",
                b"layer { pooling_param { pool: MAXX } }\n",
            ),
            "MAXX",
        ),
    ];
    for (p, msg) in &cases {
        let out = inspect(&[p]);
        let se = utf8(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {se}", p.display());
        assert!(
            se.contains("error: ") && se.contains(&p.display().to_string()) && se.contains(msg),
            "{}: {se}",
            p.display()
        );
    }
    // A bad file among good ones: the good ones are still described, the exit code is 1.
    let good = fixtures().join("e2e_hdf5/init.caffemodel");
    let out = inspect(&[&good, &cases[0].0]);
    assert_eq!(out.status.code(), Some(1));
    assert!(utf8(&out.stdout).contains("init.caffemodel: caffemodel"));
    // A missing file.
    let out = inspect(&[&d.path().join("nope.caffemodel")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(utf8(&out.stderr).contains("cannot read"));
}

#[test]
fn kind_detection_ignores_extensions() {
    use crema::proto::kind::{detect, FileKind};
    let f = fixtures();
    let read = |p: &str| std::fs::read(f.join(p)).unwrap();
    assert_eq!(
        detect(&read("e2e_hdf5/init.caffemodel"), "bin"),
        FileKind::NetBinary
    );
    assert_eq!(
        detect(&read("v1_upgrade/v1.caffemodel"), "bin"),
        FileKind::NetBinary
    );
    assert_eq!(
        detect(&read("e2e_hdf5/snap/sgd_iter_50.solverstate"), "bin"),
        FileKind::SolverState
    );
    assert_eq!(
        detect(&read("imagedata/mean.binaryproto"), "bin"),
        FileKind::BlobProto
    );
    assert_eq!(
        detect(&read("e2e_hdf5/solver_sgd.prototxt"), "txt"),
        FileKind::SolverText
    );
    assert_eq!(
        detect(&read("e2e_hdf5/train_val.prototxt"), "txt"),
        FileKind::NetText
    );
    assert_eq!(
        detect(&read("v1_upgrade/v1_deploy.prototxt"), "txt"),
        FileKind::NetText
    );
}
