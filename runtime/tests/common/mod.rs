//! What the runtime's test files share: turns on libtorch's process-wide generator, and the models and
//! load options most tests start from. (Each test file uses part of it.)
#![allow(dead_code)]

use std::rc::Rc;
use vidtune_runtime::{load_sd, SdLoadOptions, StableDiffusion};

/// Seeded draws come from libtorch's process-wide generator: the tests of a file that draw take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the turn until dropped (a failed test's poisoned turn is taken over, not propagated).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Load options for the CPU in float32.
pub fn cpu() -> SdLoadOptions {
    SdLoadOptions { device: "cpu".into(), dtype: Some("fp32".into()), ..Default::default() }
}

/// `random:tiny` on the CPU (seed 0).
pub fn random_tiny() -> Rc<StableDiffusion> {
    Rc::new(load_sd("random:tiny", &SdLoadOptions { device: "cpu".into(), ..Default::default() }).unwrap())
}
