//! Tuned files: only what tuning changed (the trained tensors and the new temporal layers, plus the
//! attention modules' persistent state), with metadata naming the base model, the modules per layer, the
//! options and the seed. A few tens of MB where Tune-A-Video saves the whole 4–5 GB pipeline.

use super::{inflate, VideoModel, VideoSpec};
use crate::error::{Error, Result};
use crate::sd::StableDiffusion;
use crate::video::processors::{ModuleSpec, Role};
use crate::weights::safetensors_io;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;
use tch::Tensor;

/// The file format tag; bump when the layout changes.
pub const FORMAT: &str = "vidtune-tuned/1";
const PROCESSOR_STATE: &str = ".processor.";

/// What a tuning run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneRecord {
    pub prompt: String,
    pub steps: i64,
    pub steps_done: i64,
    pub lr: f64,
    pub train: Vec<String>,
    pub seed: u64,
    pub frames: i64,
    pub width: i64,
    pub height: i64,
    pub losses: Vec<f64>,
    pub interrupted: bool,
    /// Clips tuned on (few-shot tuning has several).
    #[serde(default = "one")]
    pub clips: usize,
}

fn one() -> usize {
    1
}

fn spec_json(spec: &VideoSpec) -> serde_json::Value {
    let optional = |m: &Option<ModuleSpec>| m.as_ref().map(|m| m.to_string()).unwrap_or_else(|| "none".into());
    serde_json::json!({
        "spatial": spec.spatial.to_string(),
        "cross": spec.cross.to_string(),
        "temporal": optional(&spec.temporal),
        "mask": optional(&spec.mask),
        "layers": spec.layers.iter().map(|(p, m)| serde_json::json!([p, m.to_string()])).collect::<Vec<_>>(),
    })
}

fn spec_from_json(v: &serde_json::Value) -> Result<VideoSpec> {
    let s = |k: &str| {
        v.get(k).and_then(|x| x.as_str()).ok_or_else(|| Error::Invalid(format!("tuned file: spec lacks {k}")))
    };
    let layers = v
        .get("layers")
        .and_then(|l| l.as_array())
        .map(|arr| {
            arr.iter()
                .map(|pair| {
                    let p = pair.get(0).and_then(|x| x.as_str()).unwrap_or_default();
                    let m = pair.get(1).and_then(|x| x.as_str()).unwrap_or_default();
                    Ok((p.to_string(), ModuleSpec::parse(m)?))
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?
        .unwrap_or_default();
    // Files written before the cross and mask roles existed have neither.
    let or = |k: &str, d: &'static str| v.get(k).and_then(|x| x.as_str()).unwrap_or(d);
    Ok(VideoSpec {
        spatial: ModuleSpec::parse(s("spatial")?)?,
        cross: ModuleSpec::parse_role(Role::Cross, or("cross", "plain"))?,
        temporal: super::parse_optional(Role::Temporal, s("temporal")?)?,
        mask: super::parse_optional(Role::Mask, or("mask", "none"))?,
        layers,
    })
}

/// The tensors a tuned file holds for `model`.
pub fn tuned_tensors(model: &VideoModel) -> Vec<(String, Tensor)> {
    let vars = model.vars.variables();
    let mut names: Vec<String> = model.new_parameters();
    names.extend(model.trained.iter().cloned());
    names.sort();
    names.dedup();
    let mut out: Vec<(String, Tensor)> =
        names.into_iter().filter_map(|n| vars.get(&n).map(|t| (n, t.detach()))).collect();
    for (layer, attn) in model.unet.attention_layers() {
        for (k, t) in attn.processor_state() {
            out.push((format!("{layer}{PROCESSOR_STATE}{k}"), t));
        }
    }
    out
}

/// Writes the tuned file; returns its size in bytes.
pub fn save_tuned(model: &VideoModel, path: &Path) -> Result<u64> {
    save_tuned_with(model, path, &[])
}

/// [`save_tuned`] with more metadata (e.g. the run record of the script that tuned it).
pub fn save_tuned_with(model: &VideoModel, path: &Path, extra: &[(String, String)]) -> Result<u64> {
    let tensors = tuned_tensors(model);
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert("vidtune_version".to_string(), crate::VERSION.to_string());
    meta.insert("base_identity".to_string(), model.base.identity.clone());
    meta.insert("base_source".to_string(), model.base.source.clone());
    meta.insert("spec".to_string(), spec_json(&model.spec).to_string());
    meta.insert("trained".to_string(), serde_json::to_string(&model.trained).unwrap_or_default());
    let modules: BTreeMap<String, String> = model.modules().into_iter().collect();
    meta.insert("modules".to_string(), serde_json::to_string(&modules).unwrap_or_default());
    if let Some(r) = &model.record {
        meta.insert("record".to_string(), serde_json::to_string(r).unwrap_or_default());
    }
    for (k, v) in extra {
        meta.entry(k.clone()).or_insert_with(|| v.clone());
    }
    safetensors_io::save(path, &tensors, meta)?;
    Ok(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
}

/// Loads a tuned file onto `base`; refuses a file tuned on another base model.
pub fn load_tuned(base: Rc<StableDiffusion>, path: &Path) -> Result<VideoModel> {
    let meta = safetensors_io::read_metadata(path)?;
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(Error::bad_file(
            path,
            format!("not a vidtune tuned file (format {:?}, expected {FORMAT})", meta.get("format")),
        ));
    }
    let identity = meta.get("base_identity").cloned().unwrap_or_default();
    if identity != base.identity {
        return Err(Error::Invalid(format!(
            "{} was tuned on {} (identity {identity}), but this model is {} (identity {}); load the same base model",
            path.display(),
            meta.get("base_source").map(String::as_str).unwrap_or("another model"),
            base.source,
            base.identity
        )));
    }
    let spec_value: serde_json::Value = serde_json::from_str(meta.get("spec").map(String::as_str).unwrap_or("{}"))
        .map_err(|e| Error::bad_file(path, format!("invalid spec metadata: {e}")))?;
    let spec = spec_from_json(&spec_value)?;
    let mut model = inflate(base, &spec, 0)?;
    let tensors = crate::weights::read_safetensors(path)?;
    let vars = model.vars.variables();
    let kind = model.kind();
    let mut states: BTreeMap<String, Vec<(String, Tensor)>> = BTreeMap::new();
    for (name, t) in tensors {
        if let Some((layer, key)) = name.split_once(PROCESSOR_STATE) {
            states.entry(layer.to_string()).or_default().push((key.to_string(), t));
            continue;
        }
        let mut var = vars
            .get(&name)
            .map(|v| v.shallow_clone())
            .ok_or_else(|| Error::bad_file(path, format!("has {name}, which this model does not have")))?;
        if var.size() != t.size() {
            return Err(Error::bad_file(path, format!("{name}: file {:?} vs model {:?}", t.size(), var.size())));
        }
        tch::no_grad(|| var.set_data(&t.to_device(var.device()).to_kind(kind)));
    }
    for (layer, attn) in model.unet.attention_layers() {
        if let Some(state) = states.get(&layer) {
            attn.load_processor_state(state)?;
        }
    }
    model.trained = meta.get("trained").and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    model.identity = crate::cache::KeyBuilder::new("tuned-file")
        .text(&model.base.identity)
        .text(&format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&bytes)))
        .finish();
    model.record = meta.get("record").and_then(|r| serde_json::from_str(r).ok());
    Ok(model)
}
