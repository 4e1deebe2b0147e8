//! The runtime's error type: every variant names the input it is about (a path, an option, a tensor).

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// A file or directory the user named does not exist.
    #[error("no such file or directory: {}", .0.display())]
    NotFound(PathBuf),
    /// Reading or writing a path failed.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A file exists but is not what the caller needs (not a video, a corrupt image, …).
    #[error("{}: {message}", path.display())]
    BadFile { path: PathBuf, message: String },
    /// An option or argument is outside what is allowed; the message lists the allowed values.
    #[error("{0}")]
    Invalid(String),
    /// A feature was compiled out (e.g. FFmpeg).
    #[error("{0}")]
    Unsupported(String),
    /// The user interrupted a long operation.
    #[error("cancelled")]
    Cancelled,
    #[error("{}", trim_torch_message(&.0.to_string()))]
    Kernel(#[from] vidtune_kernels::KernelError),
    #[error("{}", trim_torch_message(&.0.to_string()))]
    Torch(#[from] tch::TchError),
}

/// libtorch's messages carry a C++ stack trace ("Exception raised from … frame #0: …"): keep the first
/// line, unless `RUST_BACKTRACE` asks for everything.
pub fn trim_torch_message(message: &str) -> String {
    if std::env::var("RUST_BACKTRACE").is_ok_and(|v| !v.is_empty() && v != "0") {
        return message.to_string();
    }
    // A panic of tch's `unwrap` shows the error in Debug form: escaped line breaks on one line.
    let message = message.replace("\\n", "\n");
    let message = message.as_str();
    let first = message.lines().map(str::trim_end).find(|l| !l.trim().is_empty()).unwrap_or(message);
    let first = first.split(" Exception raised from ").next().unwrap_or(first);
    if message.lines().filter(|l| !l.trim().is_empty()).count() > 1 {
        format!("{first} (libtorch's C++ trace hidden; RUST_BACKTRACE=1 shows it)")
    } else {
        first.to_string()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Refuses a floating-point tensor holding NaN or an infinity, naming it (`what`) and saying how much of
/// it is bad. One `isfinite().all()`, so cheap enough wherever data enters: loads, latents, outputs.
pub fn ensure_finite(what: &str, t: &tch::Tensor) -> Result<()> {
    if !t.is_floating_point() || t.numel() == 0 {
        return Ok(());
    }
    if t.isfinite().all().int64_value(&[]) == 1 {
        return Ok(());
    }
    let bad = t.isfinite().logical_not().sum(tch::Kind::Int64).int64_value(&[]);
    let nan = t.isnan().sum(tch::Kind::Int64).int64_value(&[]);
    Err(Error::Invalid(format!(
        "{what} holds {bad} non-finite value(s) of {} ({nan} NaN, {} infinite)",
        t.numel(),
        bad - nan
    )))
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(path)
        } else {
            Error::Io { path, source }
        }
    }

    /// A file that exists but cannot be used, with the reason.
    pub fn bad_file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::BadFile { path: path.into(), message: message.to_string() }
    }
}

/// Shorthand for `Err(Error::Invalid(format!(...)))`.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => {
        Err($crate::error::Error::Invalid(format!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::trim_torch_message;

    #[test]
    fn cpp_traces_are_cut_to_their_first_line() {
        let raw = "shape '[2, 3]' is invalid for input of size 5\nException raised from infer_size_impl at \
                   /pytorch/aten/src/ATen/InferSize.h:90 (most recent call first):\nframe #0: c10::Error::Error() + 0x9\n";
        if std::env::var_os("RUST_BACKTRACE").is_none() {
            let t = trim_torch_message(raw);
            assert!(t.starts_with("shape '[2, 3]' is invalid for input of size 5 ("), "{t}");
            assert!(!t.contains("frame #0"), "{t}");
        }
        assert_eq!(trim_torch_message("one line"), "one line");
    }
}
