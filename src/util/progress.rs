//! The progress line `crema train` draws for a person watching a terminal: iteration, speed and
//! time left, redrawn in place with `\r`. Log lines must stay exactly Caffe's (parsers read them,
//! and a terminal's scrollback is often saved as a log), so `glog::log` wipes the line before it
//! writes and the next iteration draws it again. Nothing is drawn unless stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Width of the line now on the terminal (0: none). Held while writing to stderr so that a
/// log line from another thread cannot land in the middle of a redraw.
static DRAWN: Mutex<usize> = Mutex::new(0);

/// Redraws closer together than this only cost terminal time.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// Whether `crema train` should draw the line: stderr is a terminal, `--no-progress` was not
/// given and `CREMA_NO_PROGRESS` is unset (or `0`).
pub fn wanted(no_progress_flag: bool) -> bool {
    if no_progress_flag {
        return false;
    }
    if let Some(v) = std::env::var_os("CREMA_NO_PROGRESS") {
        if !v.is_empty() && v != "0" {
            return false;
        }
    }
    std::io::stderr().is_terminal()
}

/// Writes `text` to stderr after wiping the progress line, if one is drawn. `glog::log` sends
/// every log line through here.
pub fn write_over(text: &str) {
    let mut drawn = DRAWN.lock().unwrap_or_else(|e| e.into_inner());
    let wipe = wipe_sequence(*drawn);
    *drawn = 0;
    // eprint! (not a raw stderr handle) so that test harnesses capture it.
    eprint!("{wipe}{text}");
    let _ = std::io::stderr().flush();
}

/// `\r`, spaces over the old line, `\r`: works on any terminal, unlike ANSI erase codes.
fn wipe_sequence(width: usize) -> String {
    if width == 0 {
        return String::new();
    }
    format!("\r{}\r", " ".repeat(width))
}

/// The line of one `solve`. Dropping it wipes the line, so that an error message printed after
/// training starts on a clean line.
pub struct ProgressLine {
    start: Instant,
    start_iter: i32,
    max_iter: i32,
    images_per_iter: usize,
    last_draw: Option<Instant>,
}

impl ProgressLine {
    pub fn new(start_iter: i32, max_iter: i32, images_per_iter: usize) -> ProgressLine {
        ProgressLine {
            start: Instant::now(),
            start_iter,
            max_iter,
            images_per_iter,
            last_draw: None,
        }
    }

    /// Called after each iteration: draws when the line was wiped by a log line, at the last
    /// iteration, and otherwise at most every REDRAW_EVERY.
    pub fn update(&mut self, iter: i32) {
        let now = Instant::now();
        let mut drawn = DRAWN.lock().unwrap_or_else(|e| e.into_inner());
        let due = *drawn == 0
            || iter >= self.max_iter
            || self
                .last_draw
                .is_none_or(|t| now.duration_since(t) >= REDRAW_EVERY);
        if !due {
            return;
        }
        let line = render(
            iter,
            self.max_iter,
            iter - self.start_iter,
            now.duration_since(self.start),
            self.images_per_iter,
        );
        let line = fit_width(&line, terminal_width());
        // Pad over a longer previous line instead of erasing it first: no flicker.
        let pad = drawn.saturating_sub(line.chars().count());
        eprint!("\r{line}{}", " ".repeat(pad));
        let _ = std::io::stderr().flush();
        *drawn = line.chars().count() + pad;
        self.last_draw = Some(now);
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        let mut drawn = DRAWN.lock().unwrap_or_else(|e| e.into_inner());
        if *drawn > 0 {
            eprint!("{}", wipe_sequence(*drawn));
            let _ = std::io::stderr().flush();
            *drawn = 0;
        }
    }
}

/// The line's text. `done` iterations took `elapsed`; the speed and the time left come from
/// the average since the run started, which includes test passes, as the time left does.
pub fn render(
    iter: i32,
    max_iter: i32,
    done: i32,
    elapsed: Duration,
    images_per_iter: usize,
) -> String {
    let mut s = format!("iteration {iter}/{max_iter}");
    let secs = elapsed.as_secs_f64();
    if done > 0 && secs > 0.0 {
        let per_s = done as f64 / secs;
        s.push_str(&format!(", {} iter/s", speed(per_s)));
        if images_per_iter > 0 {
            s.push_str(&format!(
                ", {} images/s",
                speed(per_s * images_per_iter as f64)
            ));
        }
        let left = (max_iter - iter).max(0) as f64 / per_s;
        s.push_str(&format!(", ETA {}", clock(left)));
    } else {
        s.push_str(", ETA --");
    }
    s
}

/// Three significant figures at most: enough to watch, steady enough to read.
fn speed(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `m:ss` under an hour, `h:mm:ss` from there.
pub fn clock(secs: f64) -> String {
    let total = if secs.is_finite() && secs > 0.0 {
        secs.round() as u64
    } else {
        0
    };
    let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// A line longer than the terminal wraps, and `\r` then only returns to the wrapped part.
fn fit_width(line: &str, width: Option<usize>) -> String {
    match width {
        Some(w) if w > 1 && line.chars().count() >= w => line.chars().take(w - 1).collect(),
        _ => line.to_string(),
    }
}

fn terminal_width() -> Option<usize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ only fills the winsize struct passed to it.
    let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_iteration_speed_images_and_time_left() {
        // 100 iterations of 64 images in 10 s: 10 iter/s, 640 images/s, 900 left = 1:30.
        let l = render(100, 1000, 100, Duration::from_secs(10), 64);
        assert_eq!(l, "iteration 100/1000, 10.0 iter/s, 640 images/s, ETA 1:30");
        // Resumed at 500: the speed counts only this run's iterations.
        let l = render(600, 1000, 100, Duration::from_secs(50), 0);
        assert_eq!(l, "iteration 600/1000, 2.00 iter/s, ETA 3:20");
    }

    #[test]
    fn no_speed_before_the_first_iteration() {
        assert_eq!(
            render(0, 10, 0, Duration::ZERO, 64),
            "iteration 0/10, ETA --"
        );
        assert_eq!(
            render(5, 10, 0, Duration::from_secs(3), 64),
            "iteration 5/10, ETA --"
        );
    }

    #[test]
    fn finished_runs_have_nothing_left() {
        assert!(render(10, 10, 10, Duration::from_secs(1), 1).ends_with("ETA 0:00"));
        // Past max_iter (a snapshot resumed beyond it) never shows a negative time.
        assert!(render(12, 10, 2, Duration::from_secs(1), 1).ends_with("ETA 0:00"));
    }

    #[test]
    fn clock_formats() {
        assert_eq!(clock(0.0), "0:00");
        assert_eq!(clock(59.4), "0:59");
        assert_eq!(clock(59.6), "1:00");
        assert_eq!(clock(3599.0), "59:59");
        assert_eq!(clock(3600.0), "1:00:00");
        assert_eq!(clock(90061.0), "25:01:01");
        assert_eq!(clock(f64::INFINITY), "0:00");
        assert_eq!(clock(f64::NAN), "0:00");
    }

    #[test]
    fn speeds_keep_three_figures() {
        assert_eq!(speed(0.123456), "0.12");
        assert_eq!(speed(12.345), "12.3");
        assert_eq!(speed(1234.4), "1234");
    }

    #[test]
    fn long_lines_are_cut_to_the_terminal() {
        assert_eq!(fit_width("abcdef", Some(4)), "abc");
        assert_eq!(fit_width("abc", Some(4)), "abc");
        assert_eq!(fit_width("abcdef", None), "abcdef");
    }

    #[test]
    fn wipe_covers_the_drawn_width() {
        assert_eq!(wipe_sequence(0), "");
        assert_eq!(wipe_sequence(3), "\r   \r");
    }
}
