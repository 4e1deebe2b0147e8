//! Configuration files of diffusers and transformers, deserialized with their exact field names and the
//! Python defaults. Unknown fields are tolerated (and listed at debug level); configs describing a model
//! that vidtune cannot run (e.g. an SDXL UNet) are refused with the reason.

pub mod adapter;
pub mod clip;
pub mod controlnet;
pub mod pipeline;
pub mod scheduler;
pub mod unet;
pub mod vae;

pub use clip::ClipTextConfig;
pub use controlnet::ControlNetConfig;
pub use pipeline::{ModelIndex, TokenizerConfig};
pub use scheduler::SchedulerConfig;
pub use unet::UNet2DConditionConfig;
pub use vae::AutoencoderKLConfig;

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// A field that diffusers accepts as one value or one value per block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    /// The value for block `i` (the single value for every block).
    pub fn get(&self, i: usize) -> Option<T> {
        match self {
            OneOrMany::One(v) => Some(v.clone()),
            OneOrMany::Many(v) => v.get(i).cloned(),
        }
    }

    /// Every value as a list of `n` (the single value repeated).
    pub fn expand(&self, n: usize) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v.clone(); n],
            OneOrMany::Many(v) => v.clone(),
        }
    }

    pub fn is_many(&self) -> bool {
        matches!(self, OneOrMany::Many(_))
    }
}

/// Implemented by configs that keep the fields they do not know.
pub trait ExtraFields {
    fn extra(&self) -> &BTreeMap<String, serde_json::Value>;

    /// Structural checks run when the file is read (sizes, head and group counts), so that a config that
    /// parses but describes no buildable model is refused naming the field, not met by a panic later.
    fn validate(&self) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// The largest width (channels, hidden size) a config may ask for: far above every SD1.x / CLIP model,
/// far below what would make building it exhaust memory.
pub const MAX_WIDTH: i64 = 16384;

/// `field` must be in `1..=max`.
pub(crate) fn check_count(field: &str, value: i64, max: i64) -> std::result::Result<(), String> {
    if value < 1 || value > max {
        return Err(format!("{field} must be between 1 and {max}, got {value}"));
    }
    Ok(())
}

/// Every value of `field` must be in `1..=max`.
pub(crate) fn check_counts(field: &str, values: &[i64], max: i64) -> std::result::Result<(), String> {
    if values.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    for (i, &v) in values.iter().enumerate() {
        check_count(&format!("{field}[{i}]"), v, max)?;
    }
    Ok(())
}

/// `groups` must divide every channel count of `field`.
pub(crate) fn check_groups(groups: i64, field: &str, channels: &[i64]) -> std::result::Result<(), String> {
    check_count("norm_num_groups", groups, MAX_WIDTH)?;
    if let Some((i, c)) = channels.iter().enumerate().find(|(_, &c)| c % groups != 0) {
        return Err(format!(
            "norm_num_groups {groups} does not divide {field}[{i}] = {c} (GroupNorm needs channels divisible by groups)"
        ));
    }
    Ok(())
}

/// `field` must be a finite number above 0.
pub(crate) fn check_positive_float(field: &str, value: f64) -> std::result::Result<(), String> {
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("{field} must be a finite number above 0, got {value}"));
    }
    Ok(())
}

/// Reads and parses a JSON config; logs unknown fields at debug level.
pub fn read_config<T: DeserializeOwned + ExtraFields>(path: &Path) -> Result<T> {
    let text = crate::fsutil::read_text(path, "config")?;
    parse_config(&text, path)
}

/// Parses a JSON config named `path` in errors.
pub fn parse_config<T: DeserializeOwned + ExtraFields>(text: &str, path: &Path) -> Result<T> {
    let config: T = serde_json::from_str(text).map_err(|e| Error::bad_file(path, format!("invalid config: {e}")))?;
    config.validate().map_err(|e| Error::bad_file(path, format!("invalid config: {e}")))?;
    let unknown: Vec<&String> = config.extra().keys().filter(|k| !k.starts_with('_')).collect();
    if !unknown.is_empty() {
        log::debug!("{}: fields not used by vidtune: {unknown:?}", path.display());
    }
    Ok(config)
}
