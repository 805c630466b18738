//! ImageData against real Caffe: every case folder of `$CREMA_IMAGEDATA_FIXTURES` (default
//! `../shared/fixtures/caffe/imagedata`) holds a `net.prototxt` whose paths are relative to the
//! fixture folder (Caffe resolves them against the current directory) and the tops of six
//! forward passes. Every value must match exactly, JPEG images included: crema's JPEG decoder
//! reproduces libjpeg-turbo (which OpenCV uses) bit for bit; the largest JPEG difference is
//! printed per case to make a regression easy to size.
//!
//! This binary holds a single test because it changes the process's current directory.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use crema::net::{BuildOptions, Net};
use crema::proto::caffe::{NetState, Phase};
use crema::proto::{read_net_text, TextOptions};
use crema::rng::CaffeRng;
use crema::util::npy::read_npy_f32;

fn fixtures_dir() -> PathBuf {
    match std::env::var("CREMA_IMAGEDATA_FIXTURES") {
        Ok(p) => PathBuf::from(p),
        Err(_) => match std::env::var_os("CREMA_SHARED") {
            Some(shared) => PathBuf::from(shared).join("fixtures/caffe/imagedata"),
            None => {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/caffe/imagedata")
            }
        },
    }
}

/// Which list entries are JPEG, in list order, for the case's source list.
fn jpeg_flags(root: &Path, net_text: &str) -> Result<Vec<bool>> {
    let source = net_text
        .split("source:")
        .nth(1)
        .and_then(|s| s.split('"').nth(1))
        .ok_or_else(|| anyhow!("no source in net.prototxt"))?;
    let list = std::fs::read_to_string(root.join(source))?;
    Ok(list
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let p = l
                .rsplit_once(' ')
                .map(|(p, _)| p)
                .unwrap_or(l)
                .to_ascii_lowercase();
            p.ends_with(".jpg") || p.ends_with(".jpeg")
        })
        .collect())
}

fn scale_of(net_text: &str) -> f32 {
    net_text
        .split("scale:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// Compares one pass; returns the largest difference seen on JPEG items (in grey levels).
fn compare_pass(
    what: &str,
    got: &[f32],
    want: &[f32],
    shape: &[usize],
    items: &[usize],
    jpeg: &[bool],
    scale: f32,
) -> Result<f32> {
    if got.len() != want.len() {
        bail!("{what}: {} values, reference has {}", got.len(), want.len());
    }
    let per = got.len() / shape[0];
    let mut worst_jpeg = 0f32;
    for (b, &item) in items.iter().enumerate() {
        let is_jpeg = jpeg[item];
        for i in b * per..(b + 1) * per {
            let diff = (got[i] - want[i]).abs();
            if is_jpeg {
                let levels = diff / scale.abs();
                worst_jpeg = worst_jpeg.max(levels);
                if diff != 0.0 {
                    bail!("{what}: item {b} (list entry {item}, JPEG) differs by {levels} grey levels at {i}");
                }
            } else if got[i].to_bits() != want[i].to_bits() && diff != 0.0 {
                bail!(
                    "{what}: item {b} (list entry {item}, PNG) at {i}: got {}, want {}",
                    got[i],
                    want[i]
                );
            }
        }
    }
    Ok(worst_jpeg)
}

fn run_case(root: &Path, case: &str) -> Result<f32> {
    let rel = Path::new(case).join("net.prototxt");
    let text = std::fs::read_to_string(root.join(&rel))?;
    let jpeg = jpeg_flags(root, &text)?;
    let scale = scale_of(&text);
    let param = read_net_text(&rel, TextOptions::default())?;
    let state = NetState {
        phase: Some(Phase::Test as i32),
        ..Default::default()
    };
    let mut rng = CaffeRng::new(1);
    let mut net = Net::new(&param, &state, &mut rng, BuildOptions { verbose: false })?;
    let n = jpeg.len();
    let mut worst = 0f32;
    for k in 0..6 {
        net.forward(&mut rng)?;
        let (dshape, want_data) = read_npy_f32(&root.join(case).join(format!("pass{k}_data.npy")))?;
        let (_, want_label) = read_npy_f32(&root.join(case).join(format!("pass{k}_label.npy")))?;
        let data = net
            .blob_by_name("data")
            .ok_or_else(|| anyhow!("no data blob"))?;
        let label = net
            .blob_by_name("label")
            .ok_or_else(|| anyhow!("no label blob"))?;
        if data.shape() != dshape {
            bail!(
                "pass {k}: data shape {:?}, reference {:?}",
                data.shape(),
                dshape
            );
        }
        if label.data_vec() != want_label {
            bail!(
                "pass {k}: labels {:?}, reference {:?}",
                label.data_vec(),
                want_label
            );
        }
        let batch = dshape[0];
        let items: Vec<usize> = (0..batch).map(|b| (k * batch + b) % n).collect();
        let w = compare_pass(
            &format!("pass {k} data"),
            &data.data_vec(),
            &want_data,
            &dshape,
            &items,
            &jpeg,
            scale,
        )?;
        worst = worst.max(w);
    }
    Ok(worst)
}

#[test]
fn imagedata_cases_match_caffe() {
    crema::util::glog::set_min_level(2);
    let root = fixtures_dir();
    if !root.exists() {
        panic!(
            "fixture folder {} not found (set CREMA_IMAGEDATA_FIXTURES)",
            root.display()
        );
    }
    let root = root.canonicalize().unwrap();
    // Caffe resolves the prototxts' relative paths against the current directory.
    std::env::set_current_dir(&root).unwrap();
    let mut cases: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("net.prototxt").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no case folders in {}", root.display());
    let mut failed = Vec::new();
    for case in &cases {
        match run_case(&root, case).with_context(|| case.clone()) {
            Ok(worst) => println!("ok   {case} (max JPEG difference {worst} grey levels)"),
            Err(e) => {
                println!("FAIL {case}: {e:#}");
                failed.push(case.clone());
            }
        }
    }
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}
