//! Atomic writes: nothing the runtime writes is ever seen half-written. Files are written to a hidden
//! temporary sibling (same directory, same extension, so encoders that pick the format by extension still
//! work) and renamed into place; directories are built beside the target and swapped in.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn sibling(path: &Path, tag: &str) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{}: not a file name", path.display())))?
        .to_string_lossy();
    let unique = format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    Ok(path.with_file_name(format!(".{name}.{tag}-{unique}{ext}")))
}

fn ensure_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))
        }
        _ => Ok(()),
    }
}

/// Calls `write` with a temporary path next to `path`, then renames it onto `path`. The temporary file is
/// removed when `write` fails.
pub fn write_atomic<T>(path: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    ensure_parent(path)?;
    let tmp = sibling(path, "tmp")?;
    match write(&tmp) {
        Ok(value) => {
            std::fs::rename(&tmp, path).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                Error::io(path, e)
            })?;
            Ok(value)
        }
        Err(err) => {
            let _ = std::fs::remove_file(&tmp);
            Err(err)
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |tmp| std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e)))
}

/// Fills a fresh temporary directory with `write`, then swaps it in for the directory `path` (a previous
/// directory there is replaced whole; a file there is an error).
pub fn write_dir_atomic<T>(path: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if path.is_file() {
        return Err(Error::Invalid(format!("{}: is a file, expected a directory", path.display())));
    }
    ensure_parent(path)?;
    let tmp = sibling(path, "tmp")?;
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let value = match write(&tmp) {
        Ok(value) => value,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(err);
        }
    };
    let old = if path.exists() {
        let old = sibling(path, "old")?;
        std::fs::rename(path, &old).map_err(|e| Error::io(path, e))?;
        Some(old)
    } else {
        None
    };
    if let Err(e) = std::fs::rename(&tmp, path) {
        if let Some(old) = &old {
            let _ = std::fs::rename(old, path);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::io(path, e));
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.txt");
        std::fs::write(&target, "old").unwrap();
        let r: Result<()> = write_atomic(&target, |tmp| {
            std::fs::write(tmp, "half").unwrap();
            Err(Error::Invalid("boom".into()))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "temporary file left behind");
    }

    #[test]
    fn directory_swap_replaces_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("frames");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("stale.png"), "x").unwrap();
        write_dir_atomic(&target, |tmp| std::fs::write(tmp.join("00000.png"), "y").map_err(|e| Error::io(tmp, e)))
            .unwrap();
        let names: Vec<_> = std::fs::read_dir(&target).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("00000.png")]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
