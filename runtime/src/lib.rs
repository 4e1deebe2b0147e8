//! # vidtune-runtime
//!
//! The plain Rust API of vidtune: media values and video files, synthetic clips, masks, progress with
//! cooperative cancellation, Stable Diffusion 1.x models with their weight loading, and the pipelines.
//! The `vidtune` binary and evcxr notebooks both call this crate directly.
//!
//! **Architecture invariant:** nothing here knows about Rhai, the REPL or the terminal; errors are typed
//! ([`Error`]) and name the input they are about; models do no I/O (loading lives in `weights` and `sd`).

pub mod cache;
pub mod config;
pub mod cpu;
pub mod device;
pub mod env;
pub mod error;
pub mod flops;
pub mod fsutil;
pub mod load;
pub mod masks;
pub mod media;
pub mod memory;
pub mod models;
pub mod pipelines;
pub mod progress;
pub mod rng;
pub mod score;
pub mod sd;
pub mod segment;
pub mod synthetic;
pub mod toy;
pub mod video;
pub mod weights;

pub use error::{Error, Result};
pub use load::load_sd;
pub use masks::Masks;
pub use media::{load_video, save_video, Image, LoadOptions, Video};
pub use sd::{SdLoadOptions, StableDiffusion};
pub use vidtune_kernels::image::Fit;

/// The vidtune version, recorded in saved files.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
