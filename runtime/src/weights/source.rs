//! Where a model comes from, resolved once from what the user typed: a built-in name, a random
//! architecture, a folder, a single file, or a repo id in the Hugging Face cache. Every loader (Stable
//! Diffusion, CLIP) and the bindings' checks resolve through [`ModelSource::resolve`], in one order:
//! `random:*`, built-in names (unless a path of that name exists), folders, files, then repo ids.

use super::{builtin, hub};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// A resolved model source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// `random:KIND`: an architecture with random weights (the kind after the colon).
    Random(String),
    /// A built-in model's folder (`toy`).
    Builtin(PathBuf),
    /// A folder on disk.
    Folder(PathBuf),
    /// A regular file on disk.
    File(PathBuf),
    /// A repo id found in the Hugging Face cache, at the snapshot folder of the revision.
    Hub { repo: String, dir: PathBuf },
}

impl ModelSource {
    /// Resolves `spec` (`revision` picks a Hugging Face cache snapshot). A path that exists but is neither
    /// a folder nor a regular file is refused; a spec that is nothing of the above is not found.
    pub fn resolve(spec: &str, revision: &str) -> Result<ModelSource> {
        if let Some(kind) = spec.strip_prefix("random:") {
            return Ok(ModelSource::Random(kind.to_string()));
        }
        if let Some(dir) = builtin::resolve(spec)? {
            return Ok(ModelSource::Builtin(dir));
        }
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok(ModelSource::Folder(path.to_path_buf()));
        }
        if path.is_file() {
            return Ok(ModelSource::File(path.to_path_buf()));
        }
        if path.exists() {
            crate::fsutil::check_readable(path, u64::MAX, "model")?;
        }
        if hub::is_repo_id(spec) {
            return Ok(ModelSource::Hub { repo: spec.to_string(), dir: hub::snapshot_dir(spec, revision)? });
        }
        Err(Error::NotFound(path.to_path_buf()))
    }

    /// The folder the model's files are in (`None` for random models and single files).
    pub fn folder(&self) -> Option<&Path> {
        match self {
            ModelSource::Builtin(d) | ModelSource::Folder(d) | ModelSource::Hub { dir: d, .. } => Some(d),
            ModelSource::Random(_) | ModelSource::File(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_resolve_in_one_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.safetensors");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(ModelSource::resolve("random:tiny", "main").unwrap(), ModelSource::Random("tiny".into()));
        let d = dir.path().to_string_lossy().to_string();
        assert_eq!(ModelSource::resolve(&d, "main").unwrap(), ModelSource::Folder(dir.path().to_path_buf()));
        assert_eq!(ModelSource::resolve(&file.to_string_lossy(), "main").unwrap(), ModelSource::File(file.clone()));
        let missing = dir.path().join("nothing-here");
        match ModelSource::resolve(&missing.to_string_lossy(), "main") {
            Err(Error::NotFound(p)) => assert_eq!(p, missing),
            other => panic!("expected not found, got {other:?}"),
        }
    }
}
