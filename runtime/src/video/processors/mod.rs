//! The library of video modules, one file each, chosen by name for each role of a transformer block:
//!
//! | role | where it acts | modules |
//! |---|---|---|
//! | spatial | every `attn1` (self-attention of a frame) | `self`, `sparse_causal`, `first_frame`, `full`, `ffam`, `vidtome` |
//! | cross | every `attn2` (attention to the text) | `plain`, `masked` |
//! | temporal | a stage after the feed-forward | `temporal`, `stam`, `gated` |
//! | mask | a stage after the cross-attention, with a model-level mask encoder | `mca` |
//!
//! A module is a file plus a line in [`REGISTRY`]. Its entry (in its file) names the role, documents its parameters
//! (`ffam:4`, `masked:strength=2,end=0.6`) and builds either a **processor**, which swaps the algorithm of
//! an attention the block already has, or a **stage**, which adds layers to every block — created under
//! the block's path with their documented initialisation — and optionally a model-level part (the mask
//! encoder) that prepares per-call data before the UNet runs. A module that needs data of its own in
//! every call gives its entry a `prepare` hook: it gets the call's [`VideoCall`] and puts a value of a
//! type of its own into the call's [`CallData`], which its processor or stage reads back (`gated` does).
//! The table above is checked against the registry by a test.

pub mod ffam;
pub mod first_frame;
pub mod full;
pub mod gated;
pub mod masked_cross;
pub mod mca;
pub mod plain;
pub mod sparse_causal;
pub mod stam;
pub mod temporal;
pub mod vidtome;

use super::call::VideoCall;
use crate::config::UNet2DConditionConfig;
use crate::error::{Error, Result};
use crate::models::attention::{BlockShape, BlockStage};
use crate::models::attention_processor::{AttnProcessor, CallData};
use crate::models::nn::Builder;

/// Where a module acts in a transformer block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Spatial,
    Cross,
    Temporal,
    Mask,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Spatial => "spatial",
            Role::Cross => "cross",
            Role::Temporal => "temporal",
            Role::Mask => "mask",
        }
    }
}

/// A documented parameter of a module.
#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub default: f64,
    pub doc: &'static str,
}

/// A model-level part of a module, run once per UNet call before the blocks (the mask encoder of `mca`
/// turns the call's mask pyramid into features): it puts what its stages read into the call's data.
pub trait ModelStage: std::fmt::Debug {
    fn prepare(&self, call: &VideoCall, data: &mut CallData) -> Result<()>;
}

/// A module's hook, run once per UNet call before the blocks with the call's [`VideoCall`]: it puts the
/// per-call values its processors or stages read into the call's data (by a type of its own).
pub type PrepareFn = fn(&ModuleSpec, &VideoCall, &mut CallData) -> Result<()>;

type ProcessorFn = fn(&ModuleSpec) -> Box<dyn AttnProcessor>;
type StageFn = fn(&Builder, &BlockShape, &ModuleSpec) -> Result<Box<dyn BlockStage>>;
type ModelFn = fn(&Builder, &UNet2DConditionConfig, &ModuleSpec) -> Result<Box<dyn ModelStage>>;

/// How a module is built.
pub enum Build {
    /// Swaps the algorithm of the block's existing attention (`attn1` or `attn2`).
    Processor(ProcessorFn),
    /// Adds a stage to every block, and optionally a model-level part.
    Stage { block: StageFn, model: Option<ModelFn> },
}

/// One module of the library.
pub struct Entry {
    pub role: Role,
    pub name: &'static str,
    pub summary: &'static str,
    pub params: &'static [Param],
    /// Needs the subject's masks in every call (a model using it refuses to run without them).
    pub needs_masks: bool,
    /// Parameters it adds that tuning trains by default (their names contain one of these).
    pub trains: &'static [&'static str],
    /// Prepares its per-call data (`None`: it reads only the context and the [`VideoCall`]).
    pub prepare: Option<PrepareFn>,
    pub build: Build,
}

/// The parameters of a module that takes none.
pub const NO_PARAMS: &[Param] = &[];

/// Every module, by role: each module's file holds its entry.
pub const REGISTRY: &[Entry] = &[
    plain::SELF,
    sparse_causal::ENTRY,
    first_frame::ENTRY,
    full::ENTRY,
    ffam::ENTRY,
    vidtome::ENTRY,
    plain::PLAIN,
    masked_cross::ENTRY,
    temporal::ENTRY,
    stam::ENTRY,
    gated::ENTRY,
    mca::ENTRY,
];

/// The entry of `name` in `role`.
pub fn entry(role: Role, name: &str) -> Result<&'static Entry> {
    REGISTRY.iter().find(|e| e.role == role && e.name == name).ok_or_else(|| {
        let names: Vec<String> = REGISTRY.iter().filter(|e| e.role == role).map(|e| format!("{:?}", e.name)).collect();
        let what = if role == Role::Spatial { "spatial attention".to_string() } else { role.name().to_string() };
        Error::Invalid(format!("unknown {what} module {name:?}; expected one of {}", names.join(", ")))
    })
}

/// A module choice: its name and the parameters given (`ffam:4`, `masked:strength=2,end=0.6`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleSpec {
    pub role: Role,
    pub name: String,
    /// Parameters given, in the order given; the rest take their defaults.
    pub params: Vec<(String, f64)>,
}

/// The largest pooling ratio of `ffam:R` (beyond the latent frame's side it changes nothing).
pub const MAX_RATIO: i64 = 64;

impl ModuleSpec {
    /// Parses `name`, `name:value` (the first parameter) or `name:key=value,key=value` for `role`.
    pub fn parse_role(role: Role, text: &str) -> Result<Self> {
        let (name, args) = match text.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (text.trim(), None),
        };
        let e = entry(role, name)?;
        let mut params = vec![];
        if let Some(args) = args {
            for (i, part) in args.split(',').enumerate() {
                let (key, value) = match part.split_once('=') {
                    Some((k, v)) => (k.trim().to_string(), v.trim()),
                    None if i == 0 && !e.params.is_empty() => (e.params[0].name.to_string(), part.trim()),
                    None => {
                        return Err(Error::Invalid(format!(
                            "module {text:?}: expected key=value after ':' ({})",
                            describe_params(e)
                        )))
                    }
                };
                let Some(p) = e.params.iter().find(|p| p.name == key) else {
                    return Err(Error::Invalid(format!(
                        "module {text:?}: {name} has no parameter {key:?} ({})",
                        describe_params(e)
                    )));
                };
                let v: f64 =
                    value.parse().ok().filter(|v: &f64| v.is_finite()).ok_or_else(|| {
                        Error::Invalid(format!("module {text:?}: {key} must be a number, got {value:?}"))
                    })?;
                check_param(e, p, v).map_err(|why| Error::Invalid(format!("module {text:?}: {why}")))?;
                params.push((p.name.to_string(), v));
            }
        }
        Ok(ModuleSpec { role, name: name.to_string(), params })
    }

    /// A spatial module (`attn1`), the common case.
    pub fn parse(text: &str) -> Result<Self> {
        ModuleSpec::parse_role(Role::Spatial, text)
    }

    /// A module with its defaults.
    pub fn named(role: Role, name: &str) -> Result<Self> {
        entry(role, name)?;
        Ok(ModuleSpec { role, name: name.to_string(), params: vec![] })
    }

    pub fn entry(&self) -> &'static Entry {
        entry(self.role, &self.name).expect("a parsed module is registered")
    }

    /// A parameter's value: given, else its default.
    pub fn get(&self, name: &str) -> f64 {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| self.entry().params.iter().find(|p| p.name == name).map(|p| p.default).unwrap_or(0.0))
    }
}

fn describe_params(e: &Entry) -> String {
    if e.params.is_empty() {
        return format!("{} takes no parameters", e.name);
    }
    let names: Vec<String> = e.params.iter().map(|p| format!("{} (default {})", p.name, p.default)).collect();
    format!("parameters: {}", names.join(", "))
}

/// Range checks of the parameters that have them.
fn check_param(e: &Entry, p: &Param, v: f64) -> std::result::Result<(), String> {
    let ok = match (e.name, p.name) {
        ("ffam", "ratio") => v.fract() == 0.0 && (1.0..=MAX_RATIO as f64).contains(&v),
        ("vidtome", "ratio") => (0.0..=1.0).contains(&v),
        ("vidtome", "chunk") => v.fract() == 0.0 && (1.0..=64.0).contains(&v),
        (_, "start" | "end") => (0.0..=1.0).contains(&v),
        _ => (0.0..=100.0).contains(&v),
    };
    if ok {
        return Ok(());
    }
    Err(match (e.name, p.name) {
        ("ffam", "ratio") => format!("the ratio after ':' must be a positive integer, at most {MAX_RATIO}"),
        ("vidtome", "ratio") => format!("ratio must be between 0 and 1 (a share of the tokens), got {v}"),
        ("vidtome", "chunk") => format!("chunk must be a whole number of frames, 1–64, got {v}"),
        (_, "start" | "end") => format!("{} must be between 0 and 1 (a fraction of the denoising), got {v}", p.name),
        _ => format!("{} must be between 0 and 100, got {v}", p.name),
    })
}

impl std::fmt::Display for ModuleSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)?;
        let e = self.entry();
        match self.params.as_slice() {
            [] => Ok(()),
            [(k, v)] if e.params.first().is_some_and(|p| p.name == k) => write!(f, ":{v}"),
            ps => {
                let parts: Vec<String> = ps.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, ":{}", parts.join(","))
            }
        }
    }
}

/// Builds the processor of a spatial or cross module.
pub fn make(spec: &ModuleSpec) -> Result<Box<dyn AttnProcessor>> {
    match &spec.entry().build {
        Build::Processor(f) => Ok(f(spec)),
        Build::Stage { .. } => {
            Err(Error::Invalid(format!("{} is a {} module, not an attention processor", spec.name, spec.role.name())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_doc_table_lists_every_registered_module_by_role() {
        let source = include_str!("mod.rs");
        for role in [Role::Spatial, Role::Cross, Role::Temporal, Role::Mask] {
            let row = source
                .lines()
                .find(|l| l.starts_with(&format!("//! | {} |", role.name())))
                .unwrap_or_else(|| panic!("no row for {}", role.name()));
            let listed: Vec<&str> = row.rsplit('|').nth(1).unwrap().split('`').skip(1).step_by(2).collect();
            let registered: Vec<&str> = REGISTRY.iter().filter(|e| e.role == role).map(|e| e.name).collect();
            assert_eq!(listed, registered, "the {} row of the table", role.name());
        }
    }

    #[test]
    fn specs_parse_document_and_round_trip() {
        assert_eq!(ModuleSpec::parse("ffam:4").unwrap().get("ratio"), 4.0);
        assert_eq!(ModuleSpec::parse("ffam").unwrap().get("ratio"), 2.0);
        assert_eq!(ModuleSpec::parse("ffam:4").unwrap().to_string(), "ffam:4");
        let m = ModuleSpec::parse_role(Role::Cross, "masked:strength=2,end=0.6").unwrap();
        assert_eq!((m.get("strength"), m.get("end")), (2.0, 0.6));
        assert_eq!(ModuleSpec::parse_role(Role::Cross, &m.to_string()).unwrap(), m);
        let e = ModuleSpec::parse("ffam:bogus=1").unwrap_err().to_string();
        assert!(e.contains("no parameter \"bogus\"") && e.contains("ratio (default 2)"), "{e}");
        let e = ModuleSpec::parse_role(Role::Mask, "mcaa").unwrap_err().to_string();
        assert!(e.contains("unknown mask module \"mcaa\"") && e.contains("\"mca\""), "{e}");
        assert!(ModuleSpec::parse("first_frame:mask=-1").is_err());
    }
}
