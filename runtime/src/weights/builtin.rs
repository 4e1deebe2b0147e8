//! Built-in models, resolved by name before any path: `toy` is the toy world's SD1.x and CLIP models
//! (trained by `vidtune toy train`, committed in `runtime/models/toy` and compiled into the binary by
//! `build.rs`). They are written once into the cache and then load through the ordinary folder loaders,
//! exactly as weights a user brings.

use crate::error::{Error, Result};
use crate::fsutil::replace_cache_dir;
use std::path::{Path, PathBuf};

/// The name that loads the built-in toy models (`load_sd("toy")`, `load_clip("toy")`).
pub const NAME: &str = "toy";

/// The committed toy folder, compiled in: (path inside the folder, bytes).
const EMBEDDED: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/toy_files.rs"));

/// Whether this build carries the toy models.
pub fn embedded() -> bool {
    !EMBEDDED.is_empty()
}

/// The toy models' folder: written once from the copy compiled into the binary into
/// `<cache>/toy-<hash>/`, then reused.
pub fn toy_dir() -> Result<PathBuf> {
    if EMBEDDED.is_empty() {
        return Err(Error::Invalid(
            "this build carries no toy models (runtime/models/toy was missing when it was compiled); train them \
             with `vidtune toy train --out runtime/models/toy` and rebuild, or pass the folder's path"
                .into(),
        ));
    }
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (name, bytes) in EMBEDDED {
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let hash: String = h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
    let dir = crate::env::cache_dir().join(format!("toy-{hash}"));
    // One writer per process; another process writing the same bytes at once is harmless (atomic swap).
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    static CHECKED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = CHECKED.get() {
        return Ok(dir.clone());
    }
    if let Some(damage) = damaged(&dir) {
        if dir.exists() {
            crate::progress::warn(format!("{}: {damage}; writing the built-in toy models again", dir.display()));
        }
        replace_cache_dir(&dir, |tmp| {
            for (name, bytes) in EMBEDDED {
                let path = tmp.join(name);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
            }
            Ok(())
        })?;
        if let Some(damage) = damaged(&dir) {
            return Err(Error::Invalid(format!("{}: written, but {damage}", dir.display())));
        }
    }
    let _ = CHECKED.set(dir.clone());
    Ok(dir)
}

/// What is wrong with the toy folder in the cache, if anything: every built-in file must be there with
/// exactly the bytes compiled in (a bit flip or a truncated copy is found and repaired).
fn damaged(dir: &Path) -> Option<String> {
    for (name, bytes) in EMBEDDED {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Err(_) => return Some(format!("{name} is missing")),
            Ok(found) if found.len() != bytes.len() => {
                return Some(format!("{name} has {} bytes, expected {}", found.len(), bytes.len()))
            }
            Ok(found) if found != *bytes => return Some(format!("{name} differs from the built-in copy")),
            Ok(_) => {}
        }
    }
    None
}

/// The folder of a built-in model name (`"toy"`), unless a file or folder of that name exists (a path
/// always wins); `None` for names that are not built in.
pub fn resolve(spec: &str) -> Result<Option<PathBuf>> {
    if spec == NAME && !Path::new(spec).exists() {
        return toy_dir().map(Some);
    }
    Ok(None)
}
