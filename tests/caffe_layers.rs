//! Every layer case recorded from real Caffe (`$CREMA_LAYER_FIXTURES`, default
//! `../shared/fixtures/caffe/layers`), run through one data-driven harness: build the case's
//! net, set inputs and params from the .npy files, forward, compare tops and stored
//! statistics, set top diffs, backward, compare bottom and param diffs. A new case folder is
//! picked up without edits. Tolerances are the fixtures README's: forward 1e-5, gradients 1e-4
//! (max abs error over max abs reference, 1e-6 absolute floor).
//!
//! With `CREMA_TEST_GPU=<id>` every case runs on that GPU too, with the same tolerances (these
//! are Caffe's numbers); without it the GPU variant says SKIPPED and why.

mod common;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{anyhow, bail, Context, Result};
use crema::backend::cuda::gpu::Gpu;
use crema::net::{BuildOptions, Net};
use crema::proto::caffe::{NetState, Phase};
use crema::proto::{read_net_text, TextOptions};
use crema::rng::CaffeRng;
use crema::util::npy::read_npy_f32;

fn fixtures_dir() -> PathBuf {
    match std::env::var("CREMA_LAYER_FIXTURES") {
        Ok(p) => PathBuf::from(p),
        Err(_) => common::caffe_fixtures().join("layers"),
    }
}

/// Max abs error relative to the reference's max abs value (with an absolute floor).
fn compare(what: &str, got: &[f32], want: &[f32], tol: f32) -> Result<()> {
    if got.len() != want.len() {
        bail!("{what}: {} values, reference has {}", got.len(), want.len());
    }
    let mut max_err = 0f32;
    let mut at = 0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let e = (g - w).abs();
        if e > max_err || e.is_nan() {
            max_err = if e.is_nan() { f32::INFINITY } else { e };
            at = i;
        }
    }
    let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max_err > 1e-6 && max_err > tol * max_ref {
        bail!(
            "{what}: max abs error {max_err} at index {at} (got {}, want {}), max abs reference {max_ref}, tolerance {tol} relative",
            got[at],
            want[at]
        );
    }
    Ok(())
}

fn npy(dir: &Path, name: &str) -> Result<Option<Vec<f32>>> {
    let p = dir.join(name);
    if !p.exists() {
        return Ok(None);
    }
    Ok(Some(read_npy_f32(&p)?.1))
}

fn run_case(dir: &Path, gpu: Option<&Rc<Gpu>>) -> Result<()> {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json"))?)?;
    let phase = match meta["phase"].as_str() {
        Some("TEST") => Phase::Test,
        _ => Phase::Train,
    };
    let param = read_net_text(&dir.join("case.prototxt"), TextOptions::default())?;
    let state = NetState {
        phase: Some(phase as i32),
        ..Default::default()
    };
    let mut rng = CaffeRng::new(meta["seed"].as_u64().unwrap_or(1));
    let mut net = Net::new(&param, &state, &mut rng, BuildOptions { verbose: false })?;
    net.gpu = gpu.cloned();
    let li = net
        .layer_index("L")
        .ok_or_else(|| anyhow!("case has no layer 'L'"))?;

    let names = |key: &str| -> Vec<String> {
        meta[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|b| b["name"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let bottoms = names("bottoms");
    let tops = names("tops");
    for (k, name) in bottoms.iter().enumerate() {
        let v =
            npy(dir, &format!("bottom{k}.npy"))?.ok_or_else(|| anyhow!("bottom{k}.npy missing"))?;
        net.set_input(name, &v)?;
    }
    let params = net.layers[li].layer.blobs().to_vec();
    for (k, p) in params.iter().enumerate() {
        if let Some(v) = npy(dir, &format!("param{k}.npy"))? {
            p.set_data(&v).with_context(|| format!("param{k}.npy"))?;
        }
    }
    let passes = meta["n_forward_passes"].as_u64().unwrap_or(1).max(1);
    for pass in 1..passes {
        net.forward(&mut rng)?;
        for (k, name) in tops.iter().enumerate() {
            if let Some(want) = npy(dir, &format!("pass{pass}_top{k}.npy"))? {
                let got = net.blob_by_name(name).unwrap().data_vec();
                compare(&format!("pass {pass} top{k} '{name}'"), &got, &want, 1e-5)?;
            }
        }
        for (k, p) in params.iter().enumerate() {
            if let Some(want) = npy(dir, &format!("pass{pass}_param{k}_after.npy"))? {
                compare(
                    &format!("pass {pass} param{k} after forward"),
                    &p.data_vec(),
                    &want,
                    1e-5,
                )?;
            }
        }
    }
    net.forward(&mut rng)?;
    for (k, name) in tops.iter().enumerate() {
        let want =
            npy(dir, &format!("top{k}.npy"))?.ok_or_else(|| anyhow!("top{k}.npy missing"))?;
        let got = net
            .blob_by_name(name)
            .ok_or_else(|| anyhow!("no top '{name}'"))?
            .data_vec();
        compare(&format!("top{k} '{name}'"), &got, &want, 1e-5)?;
    }
    for (k, p) in params.iter().enumerate() {
        if let Some(want) = npy(dir, &format!("param{k}_after.npy"))? {
            compare(
                &format!("param{k} after forward (stored statistics)"),
                &p.data_vec(),
                &want,
                1e-5,
            )?;
        }
    }

    // Backward, where the case recorded one.
    let mut any_diff = false;
    for (k, name) in tops.iter().enumerate() {
        if let Some(d) = npy(dir, &format!("top{k}_diff.npy"))? {
            net.blob_by_name(name).unwrap().set_diff(&d)?;
            any_diff = true;
        }
    }
    if !any_diff {
        return Ok(());
    }
    for p in &params {
        p.fill_diff(0.0);
    }
    net.backward(&mut rng)?;
    let no_diff: Vec<String> = meta["no_diff_bottoms"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for (k, name) in bottoms.iter().enumerate() {
        if no_diff.contains(name) {
            continue;
        }
        if let Some(want) = npy(dir, &format!("bottom{k}_diff.npy"))? {
            let got = net.blob_by_name(name).unwrap().diff_vec();
            compare(&format!("bottom{k}_diff '{name}'"), &got, &want, 1e-4)?;
        }
    }
    for (k, p) in params.iter().enumerate() {
        if let Some(want) = npy(dir, &format!("param{k}_diff.npy"))? {
            compare(&format!("param{k}_diff"), &p.diff_vec(), &want, 1e-4)?;
        }
    }
    Ok(())
}

fn cases() -> Vec<PathBuf> {
    let root = fixtures_dir();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read layer fixtures at {}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("case.prototxt").exists())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases under {}", root.display());
    cases
}

/// Runs every case on the CPU (`gpu` None) or a GPU, printing ok/FAIL per case.
fn run_all(gpu: Option<&Rc<Gpu>>) {
    crema::util::glog::set_min_level(1);
    let cases = cases();
    let backend = if gpu.is_some() { "GPU" } else { "CPU" };
    let mut failures = Vec::new();
    for c in &cases {
        let name = c.file_name().unwrap().to_string_lossy().to_string();
        match run_case(c, gpu) {
            Ok(()) => println!("ok    {name}"),
            Err(e) => {
                println!("FAIL  {name}: {e:#}");
                failures.push(format!("{name}: {e:#}"));
            }
        }
    }
    println!(
        "{} of {} layer cases pass on the {backend}",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} case(s) failed on the {backend}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_caffe_layer_case_matches() {
    run_all(None);
}

#[test]
fn every_caffe_layer_case_matches_on_the_gpu() {
    if let Some(g) = common::gpu_or_skip("the Caffe layer cases") {
        run_all(Some(&g));
    }
}
