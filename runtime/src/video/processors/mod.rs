//! The library of attention modules, one file each. A module is chosen per layer by name; adding one is a
//! file plus a line in [`REGISTRY`].
//!
//! Spatial modules replace `attn1` (self-attention within a frame): `self`, `sparse_causal`,
//! `first_frame`, `full`, `ffam`. The temporal module `stam` runs on `attn_temp`.

pub mod ffam;
pub mod first_frame;
pub mod full;
pub mod sparse_causal;
pub mod stam;

use crate::error::{Error, Result};
use crate::models::attention_processor::{AttnProcessor, PlainAttention};

/// The largest pooling ratio of `ffam:R` (beyond the latent frame's side it changes nothing).
pub const MAX_RATIO: i64 = 64;

/// A module choice: its name and optional parameters (`ffam:2` → name `ffam`, ratio 2).
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleSpec {
    pub name: String,
    pub ratio: Option<i64>,
}

impl ModuleSpec {
    /// Parses `name` or `name:ratio`.
    pub fn parse(text: &str) -> Result<Self> {
        let (name, arg) = match text.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (text.trim(), None),
        };
        let ratio = match arg {
            Some(a) => Some(a.parse::<i64>().ok().filter(|r| (1..=MAX_RATIO).contains(r)).ok_or_else(|| {
                Error::Invalid(format!(
                    "module {text:?}: the ratio after ':' must be a positive integer, at most {MAX_RATIO}"
                ))
            })?),
            None => None,
        };
        let spec = ModuleSpec { name: name.to_string(), ratio };
        make(&spec)?;
        Ok(spec)
    }
}

impl std::fmt::Display for ModuleSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.ratio {
            Some(r) => write!(f, "{}:{r}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

type Maker = fn(&ModuleSpec) -> Result<Box<dyn AttnProcessor>>;

/// Spatial modules by name.
pub const REGISTRY: &[(&str, Maker)] = &[
    ("self", |_| Ok(Box::new(PlainAttention))),
    ("sparse_causal", |_| Ok(Box::new(sparse_causal::SparseCausal))),
    ("first_frame", |_| Ok(Box::new(first_frame::FirstFrame))),
    ("full", |_| Ok(Box::new(full::FullFrames))),
    ("ffam", |s| Ok(Box::new(ffam::FineCoarse::new(s.ratio.unwrap_or(2))))),
];

/// Builds the processor of a spatial module.
pub fn make(spec: &ModuleSpec) -> Result<Box<dyn AttnProcessor>> {
    match REGISTRY.iter().find(|(n, _)| *n == spec.name) {
        Some((_, f)) => f(spec),
        None => Err(Error::Invalid(format!(
            "unknown spatial attention module {:?}; expected one of {}",
            spec.name,
            REGISTRY.iter().map(|(n, _)| format!("{n:?}")).collect::<Vec<_>>().join(", ")
        ))),
    }
}
