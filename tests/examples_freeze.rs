//! `examples/freeze`: the seed's net, broken and fixed, run through the real binary as a user
//! would (from the repository root). Its README shows the audits; they must stay true.

use std::path::Path;
use std::process::{Command, Output};

fn crema(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crema"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("GLOG_minloglevel", "0")
        .output()
        .expect("run crema")
}

fn test_losses(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("Test net output #0: tea_soft_loss = "))
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn broken_net_drifts_and_strict_freeze_refuses_it() {
    let out = crema(&[
        "train",
        "--solver",
        "examples/freeze/solver_broken.prototxt",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let losses = test_losses(&out);
    assert_eq!(losses.len(), 5);
    assert!(
        losses.windows(2).any(|w| w[0] != w[1]),
        "TEST loss drifts: {losses:?}"
    );
    let out = crema(&[
        "train",
        "--solver",
        "examples/freeze/solver_broken.prototxt",
        "--strict-freeze",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "--strict-freeze: 2 blob(s) you froze would still change: res2_1a_1_bn param 0"
        ),
        "{err}"
    );
}

#[test]
fn fixed_net_and_the_freeze_flag_keep_every_blob() {
    for args in [
        vec![
            "train",
            "--solver",
            "examples/freeze/solver_fixed.prototxt",
            "--strict-freeze",
            "--verify-freeze",
            "20",
        ],
        vec![
            "train",
            "--solver",
            "examples/freeze/solver_broken.prototxt",
            "--freeze",
            "res2*",
            "--strict-freeze",
            "--verify-freeze",
            "20",
        ],
    ] {
        let out = crema(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        let losses = test_losses(&out);
        assert_eq!(losses.len(), 5);
        assert!(
            losses.windows(2).all(|w| w[0] == w[1]),
            "{args:?}: TEST loss constant: {losses:?}"
        );
        assert_eq!(
            err.matches("unchanged, as predicted").count(),
            8,
            "{args:?}: {err}"
        );
        assert!(!err.contains("CHANGED"));
    }
}

#[test]
fn readme_shows_the_current_audits() {
    let readme = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/freeze/README.md"),
    )
    .unwrap();
    for v in ["broken", "fixed"] {
        let out = crema(&[
            "audit",
            "--solver",
            &format!("examples/freeze/solver_{v}.prototxt"),
        ]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            readme.contains(text.trim_end()),
            "examples/freeze/README.md is out of date for {v}:\n{text}"
        );
    }
}
