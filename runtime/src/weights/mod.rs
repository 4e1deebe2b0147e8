//! Weights on disk: diffusers / transformers folders (safetensors, `fp16` variants, sharded indexes), the
//! Hugging Face cache layout, single-file SD1.x checkpoints (converted by key mapping), and the load
//! report that names missing, unused and wrongly-shaped tensors.
//!
//! **Invariant:** pickle formats (`.bin`, `.ckpt`, `.pt`, `.pth`) are never opened: unpickling can run
//! arbitrary code. They are refused with instructions to convert.

pub mod builtin;
pub mod hub;
pub mod identity;
pub mod random;
pub mod report;
pub mod safetensors_io;
pub mod sd_files;
pub mod single_file;
pub mod source;
pub mod t2i_adapter_layout;

pub use report::{apply_weights, LoadReport};

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Tensors by name.
pub type TensorMap = HashMap<String, Tensor>;

const PICKLE_EXTENSIONS: [&str; 4] = ["bin", "ckpt", "pt", "pth"];

/// The error for a pickle checkpoint, with the one-line conversion.
pub fn refuse_pickle(path: &Path) -> Error {
    Error::bad_file(
        path,
        "is a pickle checkpoint, which vidtune does not open (loading pickles can run arbitrary code). Convert it \
         to safetensors once, in Python: `from safetensors.torch import save_file; import torch; \
         sd = torch.load(PATH, map_location=\"cpu\", weights_only=True); save_file(sd.get(\"state_dict\", sd), \
         OUT)` — or load the model in diffusers and call `save_pretrained(DIR, safe_serialization=True)`",
    )
}

/// Reads every tensor of a `.safetensors` file.
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
    if PICKLE_EXTENSIONS.contains(&ext.as_str()) {
        return Err(refuse_pickle(path));
    }
    if !path.exists() {
        return Err(Error::NotFound(path.to_path_buf()));
    }
    crate::fsutil::check_readable(path, u64::MAX, "safetensors")?;
    let named = Tensor::read_safetensors(path)
        .map_err(|e| Error::bad_file(path, format!("not a readable safetensors file ({e})")))?;
    for (name, t) in &named {
        crate::error::ensure_finite(&format!("{}: tensor {name:?}", path.display()), t)?;
    }
    Ok(named.into_iter().collect())
}

/// The weight files of one component folder (`unet/`, `text_encoder/`, …): `stem.safetensors`, its
/// `variant` (`stem.fp16.safetensors`), or a sharded index (`stem.safetensors.index[.fp16].json`). Without a
/// requested variant the plain file wins and a lone variant file is used. Pickle-only folders are refused.
pub fn component_files(dir: &Path, stem: &str, variant: Option<&str>) -> Result<Vec<PathBuf>> {
    let plain = dir.join(format!("{stem}.safetensors"));
    let index = dir.join(format!("{stem}.safetensors.index.json"));
    let mut candidates: Vec<(PathBuf, PathBuf)> = vec![];
    let variants: Vec<String> = match variant {
        Some(v) => vec![v.to_string()],
        None => vec![],
    };
    for v in &variants {
        candidates.push((
            dir.join(format!("{stem}.{v}.safetensors")),
            dir.join(format!("{stem}.safetensors.index.{v}.json")),
        ));
    }
    if let Some(v) = variant {
        let (file, idx) = &candidates[0];
        if !file.exists() && !idx.exists() {
            let has_plain = plain.exists() || index.exists();
            return Err(Error::bad_file(
                dir,
                format!(
                    "has no {} weights (variant {v:?}: {} or {}){}",
                    v,
                    file.file_name().unwrap_or_default().to_string_lossy(),
                    idx.file_name().unwrap_or_default().to_string_lossy(),
                    if has_plain { "; it has the plain files: drop the variant option" } else { "" }
                ),
            ));
        }
    }
    candidates.push((plain.clone(), index.clone()));
    if variant.is_none() {
        candidates.push((
            dir.join(format!("{stem}.fp16.safetensors")),
            dir.join(format!("{stem}.safetensors.index.fp16.json")),
        ));
    }
    for (file, index) in &candidates {
        if file.exists() {
            return Ok(vec![file.clone()]);
        }
        if index.exists() {
            return shard_files(index);
        }
    }
    for ext in PICKLE_EXTENSIONS {
        let p = dir.join(format!("{stem}.{ext}"));
        if p.exists() {
            return Err(refuse_pickle(&p));
        }
    }
    let looked: Vec<String> = candidates
        .iter()
        .flat_map(|(f, i)| [f, i])
        .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned())
        .collect();
    Err(Error::bad_file(dir, format!("no weights found; looked for {}", looked.join(", "))))
}

/// The shard files an `*.safetensors.index.json` names.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = crate::fsutil::read_text(index, "shard index")?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::bad_file(index, format!("invalid index: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::bad_file(index, "invalid index: no weight_map"))?;
    let mut files: Vec<String> = map.values().filter_map(|f| f.as_str().map(str::to_string)).collect();
    files.sort();
    files.dedup();
    let dir = index.parent().unwrap_or(Path::new("."));
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// Reads and merges the tensors of several files (shards).
pub fn read_all(files: &[PathBuf]) -> Result<TensorMap> {
    let mut out = TensorMap::new();
    for f in files {
        out.extend(read_safetensors(f)?);
    }
    Ok(out)
}
