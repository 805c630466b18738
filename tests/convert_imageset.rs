//! LMDBs made by Caffe's `convert_imageset` (raw, encoded, resized) and the Data layer over them
//! (`$CREMA_CONVERT_IMAGESET_FIXTURES`, default `../shared/fixtures/caffe/convert_imageset`):
//! - every `net_*/net.prototxt` (paths relative to the fixture folder, as Caffe resolves them
//!   against the current directory) reproduces `batch{k}_data.npy` / `batch{k}_label.npy`;
//! - the LMDB records match `summary.json`; encoded records decode to the raw records' pixels
//!   and resized ones to OpenCV's resize; the mean files match their .npy and, recomputed as
//!   `compute_image_mean` does, the records;
//! - `example_raw_datum_00000000.bin` is the first raw record.
//!
//! One test only: it changes the process's current directory.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use crema::data::image::{decode_image, resize_linear, ColorMode, Image};
use crema::data::lmdb::read_all;
use crema::data::transformer::decode_datum;
use crema::net::{BuildOptions, Net};
use crema::proto::caffe::{NetState, Phase};
use crema::proto::{read_net_text, TextOptions};
use crema::rng::CaffeRng;
use crema::util::npy::read_npy_f32;

fn fixtures_dir() -> PathBuf {
    match std::env::var("CREMA_CONVERT_IMAGESET_FIXTURES") {
        Ok(p) => PathBuf::from(p),
        Err(_) => match std::env::var_os("CREMA_SHARED") {
            Some(shared) => PathBuf::from(shared).join("fixtures/caffe/convert_imageset"),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/fixtures/caffe/convert_imageset"),
        },
    }
}

fn run_net(case: &str) -> Result<()> {
    let param = read_net_text(
        &Path::new(case).join("net.prototxt"),
        TextOptions::default(),
    )?;
    let state = NetState {
        phase: Some(Phase::Test as i32),
        ..Default::default()
    };
    let mut rng = CaffeRng::new(1);
    let mut net = Net::new(&param, &state, &mut rng, BuildOptions { verbose: false })?;
    let mut k = 0;
    while Path::new(case).join(format!("batch{k}_data.npy")).exists() {
        net.forward(&mut rng)?;
        let (shape, want) = read_npy_f32(&Path::new(case).join(format!("batch{k}_data.npy")))?;
        let (_, want_label) = read_npy_f32(&Path::new(case).join(format!("batch{k}_label.npy")))?;
        let data = net
            .blob_by_name("data")
            .ok_or_else(|| anyhow!("no data blob"))?;
        let label = net
            .blob_by_name("label")
            .ok_or_else(|| anyhow!("no label blob"))?;
        ensure!(
            data.shape() == shape,
            "batch {k}: shape {:?}, reference {:?}",
            data.shape(),
            shape
        );
        ensure!(
            label.data_vec() == want_label,
            "batch {k}: labels {:?}, reference {want_label:?}",
            label.data_vec()
        );
        let got = data.data_vec();
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            bail!(
                "batch {k}: data differs at {i}: got {}, want {}",
                got[i],
                want[i]
            );
        }
        k += 1;
    }
    ensure!(k > 0, "no batch files");
    Ok(())
}

fn chw_image(c: usize, h: usize, w: usize, chw: &[u8]) -> Image {
    let mut data = vec![0u8; c * h * w];
    for k in 0..c {
        for y in 0..h {
            for x in 0..w {
                data[(y * w + x) * c + k] = chw[(k * h + y) * w + x];
            }
        }
    }
    Image::new(h, w, c, data)
}

/// Checks one LMDB against summary.json and returns its records as images.
fn check_db(name: &str, summary: &serde_json::Value) -> Result<Vec<Image>> {
    let records = read_all(Path::new(name))?;
    let want = summary["records"][name]
        .as_array()
        .ok_or_else(|| anyhow!("summary has no records for {name}"))?;
    ensure!(
        records.len() == want.len(),
        "{} records, summary has {}",
        records.len(),
        want.len()
    );
    let mut images = Vec::new();
    for (i, ((key, value), w)) in records.iter().zip(want).enumerate() {
        let what = format!("{name} record {i}");
        ensure!(
            String::from_utf8_lossy(key) == w["key"].as_str().unwrap_or(""),
            "{what}: key {:?}",
            String::from_utf8_lossy(key)
        );
        let d = decode_datum(value, &what)?;
        ensure!(
            d.label() as i64 == w["label"].as_i64().unwrap(),
            "{what}: label"
        );
        ensure!(
            d.encoded() == w["encoded"].as_bool().unwrap(),
            "{what}: encoded flag"
        );
        ensure!(
            d.channels() as i64 == w["channels"].as_i64().unwrap(),
            "{what}: channels"
        );
        ensure!(
            d.height() as i64 == w["height"].as_i64().unwrap(),
            "{what}: height"
        );
        ensure!(
            d.width() as i64 == w["width"].as_i64().unwrap(),
            "{what}: width"
        );
        let bytes = d.data.clone().unwrap_or_default();
        ensure!(
            bytes.len() as i64 == w["data_len"].as_i64().unwrap(),
            "{what}: data length"
        );
        images.push(if d.encoded() {
            decode_image(&bytes, ColorMode::Color, &what)?
        } else {
            chw_image(
                d.channels() as usize,
                d.height() as usize,
                d.width() as usize,
                &bytes,
            )
        });
    }
    Ok(images)
}

/// `compute_image_mean`: per-element float sums divided by the count, as (C, H, W).
fn mean_of(images: &[Image]) -> Vec<f32> {
    let n = images[0].data.len();
    let mut sum = vec![0f32; n];
    for img in images {
        for (s, v) in sum.iter_mut().zip(img.to_chw()) {
            *s += v as f32;
        }
    }
    sum.iter().map(|s| s / images.len() as f32).collect()
}

fn check_mean(file: &str, computed: &[f32]) -> Result<()> {
    let bp = crema::proto::read_binary_proto_file(Path::new(&format!("{file}.binaryproto")))?;
    let blob = crema::proto::blob::read_blob(&bp)?;
    let (_, npy) = read_npy_f32(Path::new(&format!("{file}.npy")))?;
    ensure!(
        blob.data == npy,
        "{file}.binaryproto differs from {file}.npy"
    );
    ensure!(
        blob.data == computed,
        "{file}: the mean recomputed from the records differs"
    );
    Ok(())
}

fn check_all(root: &Path) -> Result<()> {
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("summary.json"))?)?;
    let raw = check_db("raw_lmdb", &summary).context("raw_lmdb")?;
    let encoded = check_db("encoded_lmdb", &summary).context("encoded_lmdb")?;
    let resized_raw = check_db("resized_raw_lmdb", &summary).context("resized_raw_lmdb")?;
    let resized_encoded =
        check_db("resized_encoded_lmdb", &summary).context("resized_encoded_lmdb")?;
    for (i, (a, b)) in raw.iter().zip(&encoded).enumerate() {
        ensure!(
            a == b,
            "encoded record {i} does not decode to the raw record's pixels"
        );
    }
    for (i, (a, b)) in raw.iter().zip(&resized_raw).enumerate() {
        ensure!(
            &resize_linear(a, 16, 16) == b,
            "record {i}: resize to 16x16 differs from convert_imageset's"
        );
    }
    check_mean("mean", &mean_of(&raw))?;
    check_mean("mean_from_encoded", &mean_of(&encoded))?;
    check_mean("mean16", &mean_of(&resized_raw))?;
    check_mean("mean16_from_encoded", &mean_of(&resized_encoded))?;

    let example = decode_datum(
        &std::fs::read("example_raw_datum_00000000.bin")?,
        "example datum",
    )?;
    let first = decode_datum(&read_all(Path::new("raw_lmdb"))?[0].1, "raw_lmdb record 0")?;
    ensure!(
        example == first,
        "example_raw_datum_00000000.bin differs from raw_lmdb's first record"
    );
    Ok(())
}

#[test]
fn convert_imageset_lmdbs_and_data_layer_match_caffe() {
    crema::util::glog::set_min_level(2);
    let root = fixtures_dir();
    if !root.exists() {
        panic!(
            "fixture folder {} not found (set CREMA_CONVERT_IMAGESET_FIXTURES)",
            root.display()
        );
    }
    let root = root.canonicalize().unwrap();
    std::env::set_current_dir(&root).unwrap();
    let mut failed = Vec::new();
    match check_all(&root) {
        Ok(()) => println!("ok   records, decodes, resizes and means"),
        Err(e) => {
            println!("FAIL records: {e:#}");
            failed.push("records".to_string());
        }
    }
    let mut cases: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("net.prototxt").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no net folders in {}", root.display());
    for case in &cases {
        match run_net(case) {
            Ok(()) => println!("ok   {case}"),
            Err(e) => {
                println!("FAIL {case}: {e:#}");
                failed.push(case.clone());
            }
        }
    }
    assert!(failed.is_empty(), "failed: {failed:?}");
}
