//! Runs kernel sources on the CPU: tests/host_emulation/dense_kernels.cpp includes the .cu files
//! with a small CUDA emulation (cuda_on_host.h) and checks the kernels the dense layers run
//! (sgemm, im2col/col2im, BatchNorm, Scale/Bias, pooling, LRN, MVN, PReLU, Embed), which CI,
//! having no GPU, could otherwise only compile, against direct definitions. Needs a C++20
//! compiler (`CXX`, else `c++`); without one the test says SKIPPED.

use std::path::Path;
use std::process::Command;

#[test]
fn dense_kernels_match_their_definitions_on_the_host() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host_emulation");
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dense_kernels_on_host");
    let compiled = Command::new(&cxx)
        .args([
            "-std=c++20",
            "-O1",
            "-ffp-contract=off",
            "-pthread",
            "-w",
            "-o",
        ])
        .arg(&exe)
        .arg(dir.join("dense_kernels.cpp"))
        .output();
    let compiled = match compiled {
        Ok(out) => out,
        Err(e) => {
            println!("SKIPPED: no C++ compiler ({cxx}: {e})");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&compiled.stderr);
    if !compiled.status.success() {
        if stderr.contains("barrier") && stderr.contains("No such file") {
            println!("SKIPPED: {cxx} has no C++20 <barrier>");
            return;
        }
        panic!("compiling the host emulation with {cxx} failed:\n{stderr}");
    }
    let run = Command::new(&exe)
        .output()
        .expect("running the host emulation");
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "kernel checks failed on the host:\n{}",
        stdout
            .lines()
            .filter(|l| !l.starts_with("ok"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let checks = stdout.lines().filter(|l| l.starts_with("ok")).count();
    assert!(checks >= 120, "only {checks} checks ran:\n{stdout}");
}
