//! `crema selftest` and `CREMA_GPU_TRAFFIC` as a user meets them on a machine without a GPU:
//! the selftest says why it cannot run and exits 2 (never a panic, never a pass), and the
//! traffic log says there is no GPU traffic to log. The selftest's comparison machinery itself
//! is unit-tested in `src/cli/selftest.rs` (CPU against CPU, perturbed results).

use std::process::Command;

use crema::backend::cuda::gpu::Gpu;

fn crema() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crema"));
    c.env("GLOG_minloglevel", "0");
    c
}

/// Why GPU 0 cannot be used here, or `None` when it can (the no-GPU checks then do not apply).
fn no_gpu_reason() -> Option<String> {
    match Gpu::open(0).and_then(|g| {
        g.load_kernels()?;
        Ok(g)
    }) {
        Ok(g) => {
            println!(
                "SKIPPED: {} is usable here; these tests check the no-GPU path",
                g.describe()
            );
            None
        }
        Err(e) => Some(format!("{e:#}")),
    }
}

#[test]
fn selftest_without_a_gpu_says_why_and_exits_2() {
    let Some(reason) = no_gpu_reason() else {
        return;
    };
    for args in [
        &["selftest"][..],
        &["selftest", "--gpu", "0", "--filter", "Convolution"],
    ] {
        let out = crema().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("crema selftest: cannot run on GPU 0"),
            "{stderr}"
        );
        let first = reason.lines().next().unwrap();
        assert!(
            stderr.contains(first),
            "the reason ({first}) is missing: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("PASS"),
            "nothing may pass without a GPU"
        );
    }
    if !crema::backend::cuda::device::driver_present() {
        let out = crema().args(["selftest", "--gpu", "3"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr.contains("no CUDA driver"), "{stderr}");
    }
}

#[test]
fn traffic_log_on_the_cpu_says_there_is_nothing_to_log() {
    if no_gpu_reason().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let net = r#"name: "t"
layer { name: "d" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "gaussian" std: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "p"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
"#;
    std::fs::write(dir.path().join("net.prototxt"), net).unwrap();
    std::fs::write(
        dir.path().join("solver.prototxt"),
        "net: \"net.prototxt\"\nbase_lr: 0.01\nlr_policy: \"fixed\"\nmax_iter: 2\ndisplay: 1\nrandom_seed: 1\nsnapshot_after_train: false\n",
    )
    .unwrap();
    let out = crema()
        .current_dir(dir.path())
        .env("CREMA_GPU_TRAFFIC", "1")
        .args(["train", "--solver", "solver.prototxt"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("CREMA_GPU_TRAFFIC is set, but this run computes on the CPU"),
        "{stderr}"
    );
    assert!(!stderr.contains("GPU traffic, iteration"), "{stderr}");
}
