//! The progress line of `crema train`: drawn when stderr is a terminal (here a pseudo-terminal),
//! wiped before every log line so that what the terminal shows parses exactly as the plain log
//! does; never drawn into pipes or files, and off with `--no-progress` or `CREMA_NO_PROGRESS`.
//! Runs the e2e_lmdb fixture in place: no snapshots, so nothing is written there.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crema::cli::logparse::{glog_message, parse_log_text};

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

/// A 20-iteration run of the fixture net that tests and displays but writes no snapshot.
fn solver_file(dir: &Path) -> PathBuf {
    let net = fixture().join("train_val.prototxt");
    let text = format!(
        "net: \"{}\"\ntest_iter: 2\ntest_interval: 10\ndisplay: 2\nrandom_seed: 1701\nmax_iter: 20\n\
         base_lr: 0.01\nmomentum: 0.9\nlr_policy: \"fixed\"\nsnapshot: 0\nsnapshot_after_train: false\n",
        net.display()
    );
    let path = dir.join("solver.prototxt");
    std::fs::write(&path, text).unwrap();
    path
}

fn train(solver: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_crema"));
    c.current_dir(fixture())
        .env("GLOG_minloglevel", "0")
        .env_remove("CREMA_NO_PROGRESS")
        .args(["train", "--solver"])
        .arg(solver)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

/// Runs `cmd` with stderr on a pseudo-terminal 200 columns wide; returns (success, bytes the
/// terminal received).
fn run_on_pty(mut cmd: Command) -> (bool, String) {
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: 50,
        ws_col: 200,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes the two descriptors; the name buffer and termios are optional.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty failed: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    cmd.stderr(Stdio::from(slave));
    let mut child = cmd.spawn().unwrap();
    // The Command holds the only other copy of the terminal's slave side: dropping it lets the
    // master read end (EIO) once the child exits.
    drop(cmd);
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    });
    let ok = child.wait().unwrap().success();
    let out = reader.join().unwrap();
    (ok, String::from_utf8_lossy(&out).into_owned())
}

/// What a terminal shows: on each line, the text after the last carriage return (the terminal
/// turns `\n` into `\r\n`, which is not a redraw).
fn visible_lines(raw: &str) -> Vec<String> {
    raw.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .map(|l| l.rsplit('\r').next().unwrap_or("").trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn piped_log(solver: &Path) -> String {
    let out = train(solver, &[]).stderr(Stdio::piped()).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stderr).unwrap()
}

/// Logged by a data layer's prefetch thread (as Caffe's does) whenever its cursor wraps.
const ASYNC_NOTE: &str = "Restarting data prefetching from start.";

#[test]
fn a_terminal_gets_a_progress_line_and_intact_log_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let solver = solver_file(tmp.path());
    let (ok, raw) = run_on_pty(train(&solver, &[]));
    assert!(ok, "{raw}");
    assert!(
        raw.contains("\riteration 20/20, ")
            && raw.contains(" iter/s, ")
            && raw.contains(" images/s, ETA "),
        "no progress line drawn:\n{raw:?}"
    );
    let shown = visible_lines(&raw);
    for l in &shown {
        assert!(
            glog_message(l).is_some(),
            "a line on the terminal is not a clean glog line: {l:?}"
        );
    }
    // What the terminal shows reads exactly as the piped log: same losses, same test outputs.
    let piped = piped_log(&solver);
    let from_terminal = parse_log_text(&shown.join("\n"));
    let from_pipe = parse_log_text(&piped);
    assert_eq!(
        from_terminal.train_loss.len(),
        11,
        "iterations 0, 2, ..., 20"
    );
    assert_eq!(from_terminal, from_pipe);
    // Line for line, except the prefetch thread's notes that its cursor wrapped: it reads
    // ahead of training, so how many wraps it logs before the process ends is up to timing.
    let synchronous = |l: &&str| !l.trim().is_empty() && !l.contains(ASYNC_NOTE);
    let piped_lines = piped.lines().filter(synchronous).count();
    let shown_lines = shown.iter().map(String::as_str).filter(synchronous).count();
    assert_eq!(shown_lines, piped_lines);
}

#[test]
fn pipes_never_get_the_progress_line() {
    let tmp = tempfile::tempdir().unwrap();
    let log = piped_log(&solver_file(tmp.path()));
    assert!(!log.contains('\r'), "{log:?}");
    assert!(!log.contains("ETA"), "{log}");
    // The closing summary is there instead.
    assert!(
        log.contains("] Trained 20 iterations (400 images) in ")
            && log.contains("% of training time)"),
        "{log}"
    );
}

#[test]
fn the_progress_line_can_be_turned_off() {
    let tmp = tempfile::tempdir().unwrap();
    let solver = solver_file(tmp.path());
    let (ok, raw) = run_on_pty(train(&solver, &["--no-progress"]));
    assert!(ok, "{raw}");
    assert!(raw.contains("Optimization Done."), "{raw}");
    assert!(!raw.contains("ETA"), "--no-progress still drew: {raw:?}");

    let mut cmd = train(&solver, &[]);
    cmd.env("CREMA_NO_PROGRESS", "1");
    let (ok, raw) = run_on_pty(cmd);
    assert!(ok, "{raw}");
    assert!(raw.contains("Optimization Done."), "{raw}");
    assert!(
        !raw.contains("ETA"),
        "CREMA_NO_PROGRESS=1 still drew: {raw:?}"
    );
}
