//! Log lines in glog's format, because Caffe users' log parsers (`parse_log.py`, plotting
//! scripts, grep pipelines) read the header fields by position:
//! `I1127 17:22:10.435340 24862 solver.cpp:218] message`.

use std::sync::atomic::{AtomicI32, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info = 0,
    Warning = 1,
    Error = 2,
}

impl Level {
    fn letter(self) -> char {
        match self {
            Level::Info => 'I',
            Level::Warning => 'W',
            Level::Error => 'E',
        }
    }
}

/// Lines below this level are dropped; like glog, `GLOG_minloglevel` sets it (0 info, 1 warning,
/// 2 error, 3 nothing).
static MIN_LEVEL: AtomicI32 = AtomicI32::new(-1);

fn min_level() -> i32 {
    let v = MIN_LEVEL.load(Ordering::Relaxed);
    if v >= 0 {
        return v;
    }
    let v = std::env::var("GLOG_minloglevel")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    MIN_LEVEL.store(v, Ordering::Relaxed);
    v
}

/// Overrides the minimum level for this process (`--quiet` style switches, tests).
pub fn set_min_level(level: i32) {
    MIN_LEVEL.store(level, Ordering::Relaxed);
}

fn thread_id() -> i64 {
    // glog prints the kernel thread id; parsers only need a token without spaces.
    unsafe { libc::syscall(libc::SYS_gettid) as i64 }
}

/// The header glog puts before every line.
pub fn header(level: Level, file: &str, line: u32) -> String {
    let now = chrono::Local::now();
    let base = file.rsplit('/').next().unwrap_or(file);
    format!(
        "{}{} {} {}:{}] ",
        level.letter(),
        now.format("%m%d %H:%M:%S%.6f"),
        thread_id(),
        base,
        line
    )
}

/// Writes one message; every line of a multi-line message gets its own header (parsers crash
/// on header-less and empty lines).
pub fn log(level: Level, file: &str, line: u32, msg: &str) {
    if (level as i32) < min_level() {
        return;
    }
    let head = header(level, file, line);
    let mut out = String::with_capacity(msg.len() + 64);
    for l in msg.lines().filter(|l| !l.trim().is_empty()) {
        out.push_str(&head);
        out.push_str(l);
        out.push('\n');
    }
    if out.is_empty() {
        return;
    }
    // Through the progress line's writer, which wipes the line first when one is drawn.
    super::progress::write_over(&out);
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::util::glog::log($crate::util::glog::Level::Info, file!(), line!(), &format!($($arg)*)) };
}
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::util::glog::log($crate::util::glog::Level::Warning, file!(), line!(), &format!($($arg)*)) };
}
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::util::glog::log($crate::util::glog::Level::Error, file!(), line!(), &format!($($arg)*)) };
}

/// Formats a float as C++ `ostream <<` does by default (`%g` with 6 significant digits), which
/// is what Caffe's logs contain and what parsers expect.
pub fn fmt_g(v: f64) -> String {
    fmt_g_prec(v, 6)
}

/// `%.<prec>g`.
pub fn fmt_g_prec(v: f64, prec: usize) -> String {
    if v.is_nan() {
        return if v.is_sign_negative() {
            "-nan".into()
        } else {
            "nan".into()
        };
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let prec = prec.max(1);
    // Exponent after rounding to `prec` significant digits decides the notation.
    let sci = format!("{:.*e}", prec - 1, v);
    let (mant, exp) = sci.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    if exp < -4 || exp >= prec as i32 {
        let mant = trim_zeros(mant);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{:.*}", decimals, v)).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::fmt_g;

    #[test]
    fn formats_like_ostream() {
        assert_eq!(fmt_g(0.00992565), "0.00992565");
        assert_eq!(fmt_g(1e-5), "1e-05");
        assert_eq!(fmt_g(3.718281), "3.71828");
        assert_eq!(fmt_g(100.0), "100");
        assert_eq!(fmt_g(1234567.0), "1.23457e+06");
        assert_eq!(fmt_g(0.0001), "0.0001");
        assert_eq!(fmt_g(-0.5), "-0.5");
        assert_eq!(fmt_g(999999.5), "1e+06");
    }
}
