//! Argument spelling compatibility: Caffe's tools use gflags, so users type `-solver x`,
//! `-gpu=0` and `--sigint_effect stop`. clap wants `--solver`; this rewrites the former into
//! the latter before clap sees them.

/// Rewrites single-dash long flags (`-solver`, `-gpu=0`) to double-dash. Single letters (`-h`,
/// `-o`) and negative numbers are left alone.
pub fn normalize_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            if i == 0 || a.starts_with("--") || !a.starts_with('-') {
                return a;
            }
            let body = &a[1..];
            let name = body.split('=').next().unwrap_or("");
            let is_flag_name = name.len() >= 2
                && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if is_flag_name {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::normalize_args;

    #[test]
    fn gflags_spellings_become_clap_spellings() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            normalize_args(v(&[
                "crema",
                "train",
                "-solver",
                "s.prototxt",
                "-gpu=0",
                "-o",
                "-1.5",
                "--weights",
                "w"
            ])),
            v(&[
                "crema",
                "train",
                "--solver",
                "s.prototxt",
                "--gpu=0",
                "-o",
                "-1.5",
                "--weights",
                "w"
            ])
        );
    }
}
