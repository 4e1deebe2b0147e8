//! # vidtune-kernels
//!
//! Stateless tensor math on tch: image and mask operations, scheduler arithmetic, attention variants,
//! co-denoise windows and their merge, losses and metrics. **No weights, no I/O, no global state**: every
//! function takes tensors (and plain numbers) and returns tensors, so each can be tested against a naive
//! reference or a Python output in isolation. Random draws are inputs (the caller owns the generator).

pub mod attention;
pub mod codenoise;
pub mod conv;
pub mod edges;
pub mod error;
pub mod fusion;
pub mod image;
pub mod masks;
pub mod merge;
pub mod metrics;
pub mod optim;
pub mod pil;
pub mod schedulers;

pub use error::{KernelError, Result};
