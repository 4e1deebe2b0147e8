//! Built-in models, resolved by name before any path: `toy` is the toy world's SD1.x and CLIP models
//! (trained by `vidtune toy train`, committed in `runtime/models/toy` and compiled into the binary by
//! `build.rs`). They are written once into the cache and then load through the ordinary folder loaders,
//! exactly as weights a user brings.

use crate::error::{Error, Result};
use crate::fsutil::write_dir_atomic;
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
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if dir.join("model_index.json").exists() {
        return Ok(dir);
    }
    write_dir_atomic(&dir, false, |tmp| {
        for (name, bytes) in EMBEDDED {
            let path = tmp.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    })?;
    Ok(dir)
}

/// The folder of a built-in model name (`"toy"`), unless a file or folder of that name exists (a path
/// always wins); `None` for names that are not built in.
pub fn resolve(spec: &str) -> Result<Option<PathBuf>> {
    if spec == NAME && !Path::new(spec).exists() {
        return toy_dir().map(Some);
    }
    Ok(None)
}
