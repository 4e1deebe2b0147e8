//! # vidtune-runtime
//!
//! The plain Rust API of vidtune: media values and video files, synthetic clips, masks, progress with
//! cooperative cancellation, and (as they land) models with weights and the editing pipelines. The
//! `vidtune` binary and evcxr notebooks both call this crate directly.
//!
//! **Architecture invariant:** nothing here knows about Rhai, the REPL or the terminal; errors are typed
//! ([`Error`]) and name the input they are about.

pub mod env;
pub mod error;
pub mod fsutil;
pub mod masks;
pub mod media;
pub mod progress;

pub use error::{Error, Result};
pub use masks::Masks;
pub use media::{load_video, save_video, Image, LoadOptions, Video};
pub use vidtune_kernels::image::Fit;

/// The vidtune version, recorded in saved files.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
