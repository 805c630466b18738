//! Shared by the fixture harnesses: where the fixtures are, and their GPU variant.
//!
//! The GPU variant runs when `CREMA_TEST_GPU=<id>` names a usable GPU; otherwise it prints
//! "SKIPPED: GPU variant (...)" with the reason and checks nothing (no pass is claimed for it).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::rc::Rc;

use crema::backend::cuda::gpu::Gpu;

/// `$CREMA_SHARED/fixtures/caffe`, or `../shared/fixtures/caffe` beside the crate.
pub fn caffe_fixtures() -> PathBuf {
    match std::env::var_os("CREMA_SHARED") {
        Some(s) => PathBuf::from(s).join("fixtures/caffe"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/caffe"),
    }
}

/// The GPU the variant runs on, or why it does not run.
pub fn test_gpu() -> Result<Rc<Gpu>, String> {
    let id = match std::env::var("CREMA_TEST_GPU") {
        Ok(v) if !v.trim().is_empty() => v,
        _ => return Err("CREMA_TEST_GPU not set".into()),
    };
    // A value that is not a number is a mistake to report, not a reason to skip.
    let id: usize = id
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("CREMA_TEST_GPU={id} is not a device number"));
    let g = Gpu::open(id)
        .and_then(|g| {
            g.load_kernels()?;
            Ok(g)
        })
        .map_err(|e| format!("no GPU: {e:#}"))?;
    Ok(Rc::new(g))
}

/// The GPU to run on, or `None` after printing the skip line.
pub fn gpu_or_skip(what: &str) -> Option<Rc<Gpu>> {
    match test_gpu() {
        Ok(g) => {
            println!("GPU variant of {what} on {}", g.describe());
            Some(g)
        }
        Err(why) => {
            println!("SKIPPED: GPU variant of {what} ({why})");
            None
        }
    }
}
