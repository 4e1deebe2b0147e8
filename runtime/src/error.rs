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
    #[error(transparent)]
    Kernel(#[from] vidtune_kernels::KernelError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
