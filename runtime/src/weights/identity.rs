//! Content identities of models. What a model computes is fixed by its config files, tokenizer, scheduler
//! config and weights, so its identity hashes exactly those contents — never paths or modification
//! times. Memo keys and tuned files build on it: editing `vae/config.json` (say, `scaling_factor`) gives a
//! new identity, so the memo misses; moving or copying a folder keeps it, so tuned files still load.
//!
//! Hashing gigabytes of weights takes seconds, so each file's SHA-256 is remembered per (path, size,
//! modification time), in memory and in `<cache>/file-hashes.json`; a file that changes in any of those
//! is hashed again.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

static REMEMBERED: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

fn store_path() -> PathBuf {
    crate::env::cache_dir().join("file-hashes.json")
}

/// `(canonical path, size, modification time)` as one key.
fn stat_key(path: &Path) -> Result<String> {
    let canonical = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    let meta = std::fs::metadata(&canonical).map_err(|e| Error::io(path, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(format!("{}|{}|{mtime}", canonical.display(), meta.len()))
}

/// Files below this size (configs, tokenizers) are hashed every time: a rewrite within the file system's
/// timestamp granularity that keeps the size would otherwise go unseen.
const REMEMBER_FROM: u64 = 4 << 20;

fn sha256_stream(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// The SHA-256 of a file's bytes (hex); for weight-sized files remembered per path, size and
/// modification time.
pub fn file_sha256(path: &Path) -> Result<String> {
    let size = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    if size < REMEMBER_FROM {
        return sha256_stream(path);
    }
    let key = stat_key(path)?;
    let mut guard = REMEMBERED.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(|| {
        std::fs::read_to_string(store_path())
            .ok()
            .and_then(|t| serde_json::from_str::<HashMap<String, String>>(&t).ok())
            .unwrap_or_default()
    });
    if let Some(hash) = map.get(&key) {
        return Ok(hash.clone());
    }
    let hash = sha256_stream(path)?;
    map.insert(key, hash.clone());
    // Remembering is an optimisation: an unwritable cache only means hashing again next time.
    if let Ok(text) = serde_json::to_string(&*map) {
        if let Err(e) = crate::fsutil::write_bytes_atomic(&store_path(), text.as_bytes()) {
            log::debug!("cannot remember file hashes: {e}");
        }
    }
    Ok(hash)
}

/// A cheap fingerprint of what `path` (a model folder or file) holds now: small files by content, large
/// ones by size and modification time. Loaded models are reused within a process only while their
/// source's fingerprint is unchanged (watch mode reruns reload an edited config).
pub fn fingerprint(path: &Path) -> String {
    let mut h = Sha256::new();
    let mut files = vec![];
    let mut stack = vec![(path.to_path_buf(), 0)];
    while let Some((p, depth)) = stack.pop() {
        if p.is_dir() {
            if depth < 4 {
                if let Ok(rd) = std::fs::read_dir(&p) {
                    stack.extend(rd.filter_map(|e| e.ok()).map(|e| (e.path(), depth + 1)));
                }
            }
        } else if files.len() < 1000 {
            files.push(p);
        }
    }
    files.sort();
    for f in files {
        h.update(f.to_string_lossy().as_bytes());
        let small = std::fs::metadata(&f).is_ok_and(|m| m.len() < REMEMBER_FROM);
        let part = if small { sha256_stream(&f).unwrap_or_default() } else { stat_key(&f).unwrap_or_default() };
        h.update(part.as_bytes());
    }
    format!("{:x}", h.finalize())[..16].to_string()
}

/// Builds a model identity from named parts (files by content, texts as they are).
#[derive(Default)]
pub struct Identity(Sha256);

impl Identity {
    pub fn new(kind: &str) -> Self {
        let mut h = Sha256::new();
        h.update(crate::cache::FORMAT_VERSION.as_bytes());
        h.update([0]);
        h.update(kind.as_bytes());
        Identity(h)
    }

    /// Adds a labelled text.
    pub fn text(mut self, label: &str, text: &str) -> Self {
        for part in [label, text] {
            self.0.update((part.len() as u64).to_le_bytes());
            self.0.update(part.as_bytes());
        }
        self
    }

    /// Adds a file by content, labelled by its name (not its folder).
    pub fn file(self, path: &Path) -> Result<Self> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let hash = file_sha256(path)?;
        Ok(self.text(&name, &hash))
    }

    /// Adds a file if it exists (and that it does not, otherwise).
    pub fn optional_file(self, label: &str, path: &Path) -> Result<Self> {
        if path.is_file() {
            self.file(path).map(|s| s.text(label, "present"))
        } else {
            Ok(self.text(label, "absent"))
        }
    }

    /// Adds every file directly inside `dir`, sorted by name (a tokenizer folder).
    pub fn folder(mut self, dir: &Path) -> Result<Self> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect(),
            Err(_) => vec![],
        };
        files.sort();
        for f in files {
            self = self.file(&f)?;
        }
        Ok(self)
    }

    /// The identity: 32 hex digits.
    pub fn finish(self) -> String {
        format!("{:x}", self.0.finalize())[..32].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_not_paths_make_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a").join("config.json"), dir.path().join("b").join("config.json"));
        for p in [&a, &b] {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "{\"scaling_factor\": 0.18215}").unwrap();
        }
        let id = |p: &Path| Identity::new("t").file(p).unwrap().finish();
        assert_eq!(id(&a), id(&b), "the same bytes elsewhere");
        std::fs::write(&b, "{\"scaling_factor\": 0.5}").unwrap();
        assert_ne!(id(&a), id(&b), "an edited config");
        assert_eq!(file_sha256(&a).unwrap().len(), 64);
    }
}
