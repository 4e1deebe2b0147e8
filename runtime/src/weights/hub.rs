//! The Hugging Face cache layout: `HF_HUB_CACHE` (or `$HF_HOME/hub`, or `~/.cache/huggingface/hub`) /
//! `models--ORG--NAME/refs/main` → `snapshots/<commit>/…`. vidtune reads what is there; it never downloads.

use crate::env::hf_hub_cache;
use crate::error::{Error, Result};
use std::path::PathBuf;

/// The files of a diffusers SD1.x repository vidtune reads: the smallest download that loads.
pub const SD_FILES: &[&str] = &[
    "model_index.json",
    "*/config.json",
    "scheduler/*",
    "tokenizer/*",
    "unet/diffusion_pytorch_model*.safetensors",
    "vae/diffusion_pytorch_model*.safetensors",
    "text_encoder/model*.safetensors",
];

/// The files of a transformers CLIP repository (CLIP, PickScore) vidtune reads.
pub const CLIP_FILES: &[&str] = &["*.json", "*.txt", "model.safetensors"];

/// The files vidtune reads from `repo_id`: CLIP's for CLIP and PickScore repositories, else SD's.
pub fn files_for(repo_id: &str) -> &'static [&'static str] {
    let id = repo_id.to_lowercase();
    if id.contains("clip") || id.contains("pickscore") {
        CLIP_FILES
    } else {
        SD_FILES
    }
}

/// The one command that fetches `repo_id`'s `files` into the Hugging Face cache (the README, `doctor`
/// and the not-in-the-cache error all give this one).
pub fn download_command(repo_id: &str, files: &[&str]) -> String {
    let include: Vec<String> = files.iter().map(|f| format!("\"{f}\"")).collect();
    format!("huggingface-cli download {repo_id} --include {}", include.join(" "))
}

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
             with `{}` (or set HF_HOME / HF_HUB_CACHE), or give a folder path",
            repo.display(),
            download_command(repo_id, files_for(repo_id))
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
    use super::*;

    #[test]
    fn repo_ids_versus_paths() {
        assert!(is_repo_id("CompVis/stable-diffusion-v1-4"));
        assert!(is_repo_id("openai/clip-vit-large-patch14"));
        assert!(!is_repo_id("./models/sd"));
        assert!(!is_repo_id("/abs/path"));
        assert!(!is_repo_id("a/b/c"));
        assert!(!is_repo_id("model.safetensors"));
    }

    /// The README gives the same download command as `doctor` and the error: one command, the minimal
    /// file set.
    #[test]
    fn one_download_command() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let flat = readme.replace("\\\n", " ").split_whitespace().collect::<Vec<_>>().join(" ");
        let sd = download_command("CompVis/stable-diffusion-v1-4", SD_FILES);
        assert!(flat.contains(&sd), "the README does not give {sd}");
        assert_eq!(files_for("openai/clip-vit-large-patch14"), CLIP_FILES);
        assert_eq!(files_for("yuvalkirstain/PickScore_v1"), CLIP_FILES);
        assert_eq!(files_for("runwayml/stable-diffusion-v1-5"), SD_FILES);
        let clip = download_command("openai/clip-vit-large-patch14", CLIP_FILES);
        assert!(flat.contains(&clip), "the README does not give {clip}");
    }
}
