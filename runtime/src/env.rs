//! Where things are on this machine: libtorch, ONNX Runtime, the Hugging Face cache, our cache.

use std::path::{Path, PathBuf};

/// The libtorch library directory this build linked against (baked in by the build script).
pub fn libtorch_lib_dir() -> Option<PathBuf> {
    option_env!("VIDTUNE_LIBTORCH_LIB").map(PathBuf::from)
}

/// libtorch's version: PyTorch's `torch/version.py` beside the libraries, or a standalone libtorch's
/// `build-version` file.
pub fn libtorch_version() -> Option<String> {
    let lib = libtorch_lib_dir()?;
    let torch = lib.parent()?;
    if let Ok(text) = std::fs::read_to_string(torch.join("version.py")) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("__version__") {
                return Some(rest.trim_start_matches([' ', '=', ':']).trim_matches([' ', '\'', '"']).to_string());
            }
        }
    }
    std::fs::read_to_string(torch.join("build-version")).ok().map(|s| s.trim().to_string())
}

/// The ONNX Runtime shared library: `ORT_DYLIB_PATH`, else the `onnxruntime` wheel installed beside
/// torch in the same Python environment.
pub fn onnxruntime_dylib() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Some(PathBuf::from(p));
    }
    let site = libtorch_lib_dir()?.parent()?.parent()?.to_path_buf();
    find_versioned(&site.join("onnxruntime").join("capi"), "libonnxruntime.so")
}

fn find_versioned(dir: &Path, stem: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(stem)))
        .collect();
    found.sort();
    found.pop()
}

/// The Hugging Face hub cache: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_hub_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    dirs::home_dir().unwrap_or_default().join(".cache").join("huggingface").join("hub")
}

/// vidtune's own cache: `VIDTUNE_CACHE`, else the user cache dir (`~/.cache/vidtune`).
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("VIDTUNE_CACHE") {
        return PathBuf::from(p);
    }
    dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("vidtune")
}
