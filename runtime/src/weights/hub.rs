//! The Hugging Face cache layout: `HF_HUB_CACHE` (or `$HF_HOME/hub`, or `~/.cache/huggingface/hub`) /
//! `models--ORG--NAME/refs/main` → `snapshots/<commit>/…`. vidtune reads what is there; it never downloads.

use crate::env::hf_hub_cache;
use crate::error::{Error, Result};
use std::path::PathBuf;

/// Whether `s` looks like a repo id (`org/name`), not a path.
pub fn is_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        && !s.starts_with('.')
}

/// The snapshot folder of `repo_id` at `revision` (a branch in `refs/`, or a commit hash).
pub fn snapshot_dir(repo_id: &str, revision: &str) -> Result<PathBuf> {
    let cache = hf_hub_cache();
    let repo = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    if !repo.is_dir() {
        return Err(Error::Invalid(format!(
            "{repo_id} is not in the Hugging Face cache (looked in {}); vidtune does not download weights: fetch them \
             with `huggingface-cli download {repo_id}` (or set HF_HOME / HF_HUB_CACHE), or give a folder path",
            repo.display()
        )));
    }
    let ref_file = repo.join("refs").join(revision);
    let commit = if ref_file.is_file() {
        crate::fsutil::read_text(&ref_file, "hub ref")?.trim().to_string()
    } else {
        revision.to_string()
    };
    let snap = repo.join("snapshots").join(&commit);
    if !snap.is_dir() {
        return Err(Error::Invalid(format!(
            "{repo_id}: revision {revision:?} has no snapshot in the cache ({} missing)",
            snap.display()
        )));
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::is_repo_id;

    #[test]
    fn repo_ids_versus_paths() {
        assert!(is_repo_id("CompVis/stable-diffusion-v1-4"));
        assert!(is_repo_id("openai/clip-vit-large-patch14"));
        assert!(!is_repo_id("./models/sd"));
        assert!(!is_repo_id("/abs/path"));
        assert!(!is_repo_id("a/b/c"));
        assert!(!is_repo_id("model.safetensors"));
    }
}
