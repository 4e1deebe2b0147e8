//! One progress reporter for every long loop, carrying the cooperative cancel flag.
//!
//! On a terminal it draws an indicatif bar with rate and ETA; elsewhere (pipes, CI logs, notebooks) it
//! prints plain periodic lines, never `\r` redraws. Every loop calls [`Progress::step`] (or
//! [`Progress::check`]) so a Ctrl-C, which only sets a flag, stops the work at the next step.

use crate::error::{Error, Result};
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

static CANCEL: AtomicBool = AtomicBool::new(false);
static MODE: AtomicU8 = AtomicU8::new(Mode::Auto as u8);

/// Asks every running loop to stop at its next step (called from a Ctrl-C handler).
pub fn request_cancel() {
    CANCEL.store(true, Ordering::SeqCst);
}

/// Clears a previous cancel request (called before a new evaluation starts).
pub fn clear_cancel() {
    CANCEL.store(false, Ordering::SeqCst);
}

/// Whether a cancel has been requested and not cleared.
pub fn cancel_requested() -> bool {
    CANCEL.load(Ordering::SeqCst)
}

/// Returns `Err(Error::Cancelled)` when a cancel has been requested.
pub fn check_cancel() -> Result<()> {
    if cancel_requested() {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

/// Prints a warning the user should see (on standard error, `warning: …`), whatever the progress mode.
pub fn warn(message: impl std::fmt::Display) {
    eprintln!("warning: {message}");
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Bars on a terminal, lines otherwise.
    Auto = 0,
    /// Always bars.
    Bars = 1,
    /// Always plain periodic lines (notebooks, logs).
    Lines = 2,
    /// Nothing.
    Silent = 3,
}

/// Sets how progress is shown for the whole process.
pub fn set_mode(mode: Mode) {
    MODE.store(mode as u8, Ordering::SeqCst);
}

thread_local! {
    static QUIET: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Runs `f` with the progress reports of the loops it starts silenced (inner loops of a bigger one).
pub fn quietly<T>(f: impl FnOnce() -> T) -> T {
    QUIET.with(|q| q.set(q.get() + 1));
    let out = f();
    QUIET.with(|q| q.set(q.get() - 1));
    out
}

fn mode() -> Mode {
    if QUIET.with(|q| q.get()) > 0 {
        return Mode::Silent;
    }
    match MODE.load(Ordering::SeqCst) {
        1 => Mode::Bars,
        2 => Mode::Lines,
        3 => Mode::Silent,
        _ => {
            // evcxr's cell process (notebooks stream lines, not `\r` redraws).
            if std::env::var_os("EVCXR_IS_RUNTIME").is_none() && std::io::stderr().is_terminal() {
                Mode::Bars
            } else {
                Mode::Lines
            }
        }
    }
}

/// Stages quicker than this (seconds) leave no summary line.
const SUMMARY_AFTER: f64 = 0.5;

/// Minimum time between two plain progress lines.
const LINE_INTERVAL: Duration = Duration::from_secs(2);

/// A progress report for one loop of `total` steps.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    start: Instant,
    last_line: Option<Instant>,
    message: String,
    bar: Option<ProgressBar>,
    mode: Mode,
    finished: bool,
    unit: &'static str,
}

impl Progress {
    pub fn new(label: impl Into<String>, total: u64) -> Self {
        let label = label.into();
        let mode = mode();
        let bar = (mode == Mode::Bars).then(|| {
            let bar = ProgressBar::new(total);
            let style =
                ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {rate} eta {remaining} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&format_rate(rate_of(s.pos(), s.elapsed().as_secs_f64())));
                    })
                    .with_key("remaining", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let secs = s.elapsed().as_secs_f64();
                        let rate = rate_of(s.pos(), secs);
                        let _ = w.write_str(&format_secs(eta_of(s.pos(), s.len().unwrap_or(0), rate)));
                    })
                    .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label.clone());
            bar
        });
        Progress {
            label,
            total,
            done: 0,
            start: Instant::now(),
            last_line: None,
            message: String::new(),
            bar,
            mode,
            finished: false,
            unit: "steps",
        }
    }

    /// What a step is, for the summary line (`frames`, `clips`; `steps` by default).
    pub fn unit(mut self, unit: &'static str) -> Self {
        self.unit = unit;
        self
    }

    /// Errors with [`Error::Cancelled`] when the user asked to stop.
    pub fn check(&self) -> Result<()> {
        check_cancel()
    }

    /// Records one finished step, then checks for cancellation.
    pub fn step(&mut self) -> Result<()> {
        self.inc(1);
        self.check()
    }

    /// Records `n` finished steps.
    pub fn inc(&mut self, n: u64) {
        self.done = (self.done + n).min(self.total.max(self.done + n));
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
        }
        if self.mode == Mode::Lines {
            // Quick loops print nothing; slow ones a line every LINE_INTERVAL and a last one at the end.
            let since = self.last_line.unwrap_or(self.start).elapsed();
            if since >= LINE_INTERVAL || (self.done == self.total && self.last_line.is_some()) {
                self.print_line();
            }
        }
    }

    /// Sets a short status shown after the counts (e.g. the current loss).
    pub fn set_message(&mut self, message: impl Into<String>) {
        self.message = message.into();
        if let Some(bar) = &self.bar {
            bar.set_message(self.message.clone());
        }
    }

    /// Steps done so far.
    pub fn position(&self) -> u64 {
        self.done
    }

    /// Seconds since the loop started.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn print_line(&mut self) {
        self.last_line = Some(Instant::now());
        let rate = rate_of(self.done, self.elapsed());
        let eta = eta_of(self.done, self.total, rate);
        let pct = if self.total > 0 { 100.0 * self.done as f64 / self.total as f64 } else { 100.0 };
        let mut line = format!(
            "[{}] {}/{} {:.0}% · {} · eta {}",
            self.label,
            self.done,
            self.total,
            pct,
            format_rate(rate),
            format_secs(eta)
        );
        if !self.message.is_empty() {
            line.push_str(" · ");
            line.push_str(&self.message);
        }
        eprintln!("{line}");
    }

    /// Ends the report.
    pub fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        // What stays on screen: one line per finished stage that took a noticeable time.
        if self.mode != Mode::Silent && self.done > 0 && self.elapsed() >= SUMMARY_AFTER {
            eprintln!("{}", self.summary());
        }
    }

    /// `tune 40 steps 6.8 s (5.88 it/s) · loss 0.017`, or `… stopped at 12/40 …` when it ended early.
    pub fn summary(&self) -> String {
        let secs = self.elapsed();
        let count = if self.done >= self.total {
            format!("{} {}", self.done, self.unit)
        } else {
            format!("stopped at {}/{}", self.done, self.total)
        };
        let mut line =
            format!("{} {count} {} ({})", self.label, format_duration(secs), format_rate(rate_of(self.done, secs)));
        if !self.message.is_empty() {
            line.push_str(" · ");
            line.push_str(&self.message);
        }
        line
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.end();
    }
}

/// Steps per second so far (0 before the first step).
fn rate_of(done: u64, secs: f64) -> f64 {
    if done == 0 || secs <= 0.0 {
        0.0
    } else {
        done as f64 / secs
    }
}

/// Seconds left at `rate`; unknown (NaN, shown as `?`) before the first step.
fn eta_of(done: u64, total: u64, rate: f64) -> f64 {
    if done == 0 || rate <= 0.0 {
        f64::NAN
    } else {
        total.saturating_sub(done) as f64 / rate
    }
}

/// `5.88 it/s`, or for slow loops the seconds per step: `10.8 s/it`, `2m05s/it`.
fn format_rate(rate: f64) -> String {
    if rate == 0.0 {
        "? it/s".into()
    } else if rate >= 1.0 {
        format!("{rate:.2} it/s")
    } else if rate >= 1.0 / 60.0 {
        format!("{:.1} s/it", 1.0 / rate)
    } else {
        format!("{}/it", format_secs(1.0 / rate))
    }
}

/// A stage's time: `0.42 s`, `6.8 s`, `2m05s`.
fn format_duration(secs: f64) -> String {
    if secs < 1.0 {
        format!("{secs:.2} s")
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        format_secs(secs)
    }
}

fn format_secs(secs: f64) -> String {
    if !secs.is_finite() {
        return "?".into();
    }
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_stops_steps() {
        set_mode(Mode::Silent);
        let mut p = Progress::new("t", 3);
        assert!(p.step().is_ok());
        request_cancel();
        assert!(matches!(p.step(), Err(Error::Cancelled)));
        clear_cancel();
        assert!(p.step().is_ok());
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_secs(42.4), "42s");
        assert_eq!(format_secs(125.0), "2m05s");
        assert_eq!(format_secs(3725.0), "1h02m");
        assert_eq!(format_rate(0.5), "2.0 s/it");
        assert_eq!(format_rate(0.0926), "10.8 s/it");
        assert_eq!(format_rate(0.008), "2m05s/it");
        assert_eq!(format_rate(0.0), "? it/s");
        assert_eq!(format_rate(12.345), "12.35 it/s");
        // Before the first step the time left is unknown, not 0 s.
        assert_eq!(format_secs(eta_of(0, 40, rate_of(0, 3.0))), "?");
        assert_eq!(format_secs(eta_of(10, 40, rate_of(10, 5.0))), "15s");
        assert_eq!(format_duration(6.84), "6.8 s");
        assert_eq!(format_duration(0.421), "0.42 s");
    }

    #[test]
    fn a_finished_stage_leaves_a_summary_line() {
        set_mode(Mode::Silent);
        let mut p = Progress::new("tune", 40);
        for _ in 0..40 {
            p.inc(1);
        }
        p.set_message("loss 0.0170");
        let line = p.summary();
        assert!(line.starts_with("tune 40 steps ") && line.ends_with(" it/s) · loss 0.0170"), "{line}");
        let mut q = Progress::new("invert", 50);
        q.inc(12);
        assert!(q.summary().starts_with("invert stopped at 12/50 "), "{}", q.summary());
    }
}
