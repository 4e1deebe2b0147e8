//! Memoisation of the expensive steps (tuning, inversion), by content: the key hashes everything the
//! result depends on (base weights identity, modules, clip frames, prompt, options, seed, format version).
//! Results live in memory for the process and on disk under the user cache dir (`VIDTUNE_CACHE`,
//! default `~/.cache/vidtune/memo`), bounded in size (`VIDTUNE_CACHE_MAX_GB`, default 20) with
//! least-recently-used eviction; each disk entry is verified against the SHA-256 recorded beside it.
//!
//! Rerunning a script whose edit prompt changed therefore reuses tuning and inversion.

use crate::error::{Error, Result};
use crate::fsutil::write_bytes_atomic;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Bump when what a cached entry contains changes meaning, or when the same inputs now compute something
/// else (memo/3: MCA reads each frame's own features; entries of MCA models made before are wrong).
pub const FORMAT_VERSION: &str = "memo/3";

/// Builds a content key from parts.
#[derive(Debug, Default)]
pub struct KeyBuilder(Sha256);

impl KeyBuilder {
    pub fn new(kind: &str) -> Self {
        let mut h = Sha256::new();
        h.update(FORMAT_VERSION.as_bytes());
        h.update([0]);
        h.update(kind.as_bytes());
        KeyBuilder(h)
    }

    pub fn text(mut self, s: &str) -> Self {
        self.0.update((s.len() as u64).to_le_bytes());
        self.0.update(s.as_bytes());
        self
    }

    /// Adds a tensor's dtype, shape and bytes.
    pub fn tensor(mut self, t: &Tensor) -> Self {
        let t = t.detach().to_device(tch::Device::Cpu).contiguous();
        self.0.update(format!("{:?}{:?}", t.kind(), t.size()).as_bytes());
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        if t.f_copy_data_u8(&mut bytes, numel).is_ok() {
            self.0.update(&bytes);
        }
        self
    }

    pub fn finish(self) -> String {
        format!("{:x}", self.0.finalize())[..32].to_string()
    }
}

/// The disk memo's size without `VIDTUNE_CACHE_MAX_GB`.
pub const DEFAULT_MAX_GB: f64 = 20.0;

/// `VIDTUNE_CACHE_MAX_GB`: a finite number of gigabytes ≥ 0 (0: no disk memo).
pub fn parse_max_gb(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(gb) if gb.is_finite() && gb >= 0.0 => Ok(gb),
        Ok(gb) => Err(format!("must be a number of gigabytes ≥ 0 (0 turns the disk memo off), got {gb}")),
        Err(_) => Err("is not a number of gigabytes (0 turns the disk memo off)".to_string()),
    }
}

/// Whether a file name is one of the memo's: `<32 hex digits>.<ext>` (and its `.sha256`). Eviction and
/// `clear` touch nothing else, whatever else the folder holds.
fn is_entry_name(name: &str) -> bool {
    let (key, rest) = name.split_at(name.len().min(32));
    key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit()) && rest.starts_with('.') && rest.len() > 1
}

/// `entry.ext` → `entry.ext.sha256`.
fn checksum_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

use crate::fsutil::sha256_file;

/// Hits and misses of this process, for `:cache`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounters {
    pub memory_hits: u64,
    pub disk_hits: u64,
    pub misses: u64,
}

/// What the disk cache holds.
#[derive(Debug, Clone, Default)]
pub struct DiskUsage {
    pub dir: PathBuf,
    pub entries: usize,
    pub bytes: u64,
    pub max_bytes: u64,
}

/// The on-disk part of the memo: files `<key>.<ext>` with a `<key>.<ext>.sha256` beside.
#[derive(Debug)]
pub struct DiskCache {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

impl DiskCache {
    /// The user's cache (honours `VIDTUNE_CACHE` and `VIDTUNE_CACHE_MAX_GB`). A size that is not a
    /// number ≥ 0 is reported and turns the disk memo off; 0 turns it off too. Off means nothing is stored
    /// and nothing already there is deleted.
    pub fn from_env() -> Self {
        let dir = crate::env::cache_dir().join("memo");
        match std::env::var("VIDTUNE_CACHE_MAX_GB") {
            Err(_) => DiskCache { dir, max_bytes: (DEFAULT_MAX_GB * 1e9) as u64 },
            Ok(text) => match parse_max_gb(&text) {
                Ok(gb) => DiskCache { dir, max_bytes: (gb * 1e9) as u64 },
                Err(why) => {
                    crate::progress::warn(format!("VIDTUNE_CACHE_MAX_GB={text:?}: {why}; the disk memo is off"));
                    DiskCache { dir, max_bytes: 0 }
                }
            },
        }
    }

    /// Whether results are stored on disk (a size above 0).
    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    /// The path of an entry (whether or not it exists).
    pub fn path(&self, key: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{key}.{ext}"))
    }

    /// The entry's path if present and intact (a corrupt entry is removed); marks it recently used.
    pub fn get(&self, key: &str, ext: &str) -> Option<PathBuf> {
        let path = self.path(key, ext);
        let sum = checksum_path(&path);
        if !self.enabled() || !path.exists() {
            return None;
        }
        let recorded = std::fs::read_to_string(&sum).ok();
        // An entry without its checksum is being stored by another process ([`DiskCache::put`] writes the
        // checksum after the entry): a miss, left alone unless it has been so for long (a crash between).
        let young = || {
            std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().map_or(true, |age| age < std::time::Duration::from_secs(600)))
        };
        if recorded.is_none() && young() {
            return None;
        }
        match (recorded, sha256_file(&path)) {
            (Some(r), Ok(actual)) if r.trim() == actual => {
                if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
                Some(path)
            }
            _ => {
                log::warn!("cache entry {} failed verification; recomputing", path.display());
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(&sum);
                None
            }
        }
    }

    /// Stores the entry `key.ext` that `write` writes (given a private file beside it), keeping the first
    /// one stored: the file is published under the entry's name with a hard link, which is atomic and
    /// fails when the name exists, on local disks and NFS alike, with no lock. When another process (on
    /// this node or another sharing the folder) stored the entry first, theirs stays and this file is
    /// dropped; the next lookup is a hit on theirs. The publisher then writes the checksum, and eviction
    /// runs.
    pub fn put(&self, key: &str, ext: &str, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        if !self.enabled() || self.get(key, ext).is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let path = self.path(key, ext);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        // Hidden, and not an entry's name: never listed, evicted or verified as one.
        let part = self.dir.join(format!(".{key}.{}-{nanos}.part.{ext}", std::process::id()));
        if let Err(e) = write(&part) {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
        let published = match std::fs::hard_link(&part, &path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            // A filesystem without hard links: a rename, unless the entry appeared meanwhile.
            Err(_) if path.exists() => false,
            Err(_) => std::fs::rename(&part, &path).map(|_| true).map_err(|e| Error::io(&path, e))?,
        };
        let _ = std::fs::remove_file(&part);
        if published {
            self.commit(&path)
        } else {
            Ok(())
        }
    }

    /// Records an entry written at `path` (by the caller, atomically): its checksum, then eviction.
    pub fn commit(&self, path: &Path) -> Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        let sum = sha256_file(path)?;
        write_bytes_atomic(&checksum_path(path), sum.as_bytes())?;
        self.evict()
    }

    fn entries(&self) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return vec![] };
        rd.filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && !p.to_string_lossy().ends_with(".sha256")
                    && p.file_name().is_some_and(|n| is_entry_name(&n.to_string_lossy()))
            })
            .filter_map(|p| {
                let m = std::fs::metadata(&p).ok()?;
                Some((p, m.len(), m.modified().ok()?))
            })
            .collect()
    }

    /// Removes least-recently-used entries until the cache fits (nothing when the memo is off).
    pub fn evict(&self) -> Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort_by_key(|e| e.2);
        for (path, size, _) in entries {
            if total <= self.max_bytes {
                break;
            }
            let _ = std::fs::remove_file(checksum_path(&path));
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            total -= size;
        }
        Ok(())
    }

    pub fn usage(&self) -> DiskUsage {
        let entries = self.entries();
        DiskUsage {
            dir: self.dir.clone(),
            entries: entries.len(),
            bytes: entries.iter().map(|e| e.1).sum(),
            max_bytes: self.max_bytes,
        }
    }

    /// Deletes every entry.
    pub fn clear(&self) -> Result<usize> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return Ok(0) };
        let mut n = 0;
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_file() && is_entry_name(&e.file_name().to_string_lossy()) {
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                if !p.to_string_lossy().ends_with(".sha256") {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

/// An in-process memo of values of type `V` by key.
#[derive(Debug)]
pub struct MemoryCache<V> {
    entries: RefCell<HashMap<String, V>>,
}

impl<V: Clone> Default for MemoryCache<V> {
    fn default() -> Self {
        MemoryCache { entries: RefCell::new(HashMap::new()) }
    }
}

impl<V: Clone> MemoryCache<V> {
    pub fn get(&self, key: &str) -> Option<V> {
        self.entries.borrow().get(key).cloned()
    }

    pub fn insert(&self, key: &str, value: V) {
        self.entries.borrow_mut().insert(key.to_string(), value);
    }

    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&self) {
        self.entries.borrow_mut().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_change_with_every_part() {
        let t = Tensor::from_slice(&[1.0f32, 2.0]);
        let a = KeyBuilder::new("tune").text("a").tensor(&t).finish();
        assert_eq!(a, KeyBuilder::new("tune").text("a").tensor(&t).finish());
        assert_ne!(a, KeyBuilder::new("tune").text("b").tensor(&t).finish());
        assert_ne!(a, KeyBuilder::new("invert").text("a").tensor(&t).finish());
        assert_ne!(a, KeyBuilder::new("tune").text("a").tensor(&Tensor::from_slice(&[1.0f32, 2.5])).finish());
        // Text boundaries are part of the key.
        assert_ne!(
            KeyBuilder::new("k").text("ab").text("c").finish(),
            KeyBuilder::new("k").text("a").text("bc").finish()
        );
    }

    #[test]
    fn disk_entries_verify_and_evict() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache { dir: dir.path().to_path_buf(), max_bytes: 25 };
        std::fs::create_dir_all(&cache.dir).unwrap();
        let [a, b, c] = ["a", "b", "c"].map(|k| k.repeat(32));
        std::fs::write(dir.path().join("notes.txt"), "not an entry").unwrap();
        for (i, key) in [&a, &b, &c].iter().enumerate() {
            let p = cache.path(key, "bin");
            write_bytes_atomic(&p, &[i as u8; 10]).unwrap();
            let t = std::time::SystemTime::now() - std::time::Duration::from_secs(100 - i as u64);
            std::fs::File::options().append(true).open(&p).unwrap().set_modified(t).unwrap();
            cache.commit(&p).unwrap();
        }
        // 30 bytes > 25: the oldest ("a") went.
        assert!(cache.get(&a, "bin").is_none());
        assert!(cache.get(&b, "bin").is_some() && cache.get(&c, "bin").is_some());
        // A corrupted entry is detected and dropped.
        std::fs::write(cache.path(&c, "bin"), [9u8; 10]).unwrap();
        assert!(cache.get(&c, "bin").is_none());
        assert!(!cache.path(&c, "bin").exists());
        assert_eq!(cache.clear().unwrap(), 1);
        assert!(dir.path().join("notes.txt").exists(), "a file the memo did not write is never removed");
    }

    #[test]
    fn the_first_stored_entry_is_kept_and_one_being_stored_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache { dir: dir.path().to_path_buf(), max_bytes: 1000 };
        let key = "f".repeat(32);
        let write = |bytes: u8| move |p: &Path| std::fs::write(p, [bytes; 10]).map_err(|e| Error::io(p, e));
        cache.put(&key, "bin", write(1)).unwrap();
        // A second writer (another worker that computed the same entry, its floats summed otherwise)
        // keeps the first's bytes, which still verify.
        cache.put(&key, "bin", write(2)).unwrap();
        let path = cache.get(&key, "bin").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), [1u8; 10]);
        // While the first publisher has not written the checksum yet, a lookup misses, and a second
        // writer's publication fails on the existing name: the entry stays as it is.
        std::fs::remove_file(checksum_path(&path)).unwrap();
        assert!(cache.get(&key, "bin").is_none(), "without its checksum yet: a miss");
        cache.put(&key, "bin", write(3)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), [1u8; 10]);
        assert!(path.exists(), "an entry being stored is not deleted");
        std::fs::write(checksum_path(&path), sha256_file(&path).unwrap()).unwrap();
        assert!(cache.get(&key, "bin").is_some(), "its checksum written: a hit");
        // No temporaries are left.
        let names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert!(names.iter().all(|n| !n.contains(".part.")), "{names:?}");
        // One left without a checksum for long (a crash in between) is dropped.
        std::fs::remove_file(checksum_path(&path)).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options().append(true).open(&path).unwrap().set_modified(old).unwrap();
        assert!(cache.get(&key, "bin").is_none() && !path.exists());
    }

    #[test]
    fn a_memo_of_size_zero_stores_nothing_and_deletes_nothing() {
        for (text, ok) in
            [("20", true), ("0", true), ("0.5", true), ("-1", false), ("nan", false), ("inf", false), ("abc", false)]
        {
            assert_eq!(parse_max_gb(text).is_ok(), ok, "{text}");
        }
        let dir = tempfile::tempdir().unwrap();
        let full = DiskCache { dir: dir.path().to_path_buf(), max_bytes: 1000 };
        let key = "d".repeat(32);
        let p = full.path(&key, "bin");
        write_bytes_atomic(&p, &[1u8; 10]).unwrap();
        full.commit(&p).unwrap();
        let off = DiskCache { dir: dir.path().to_path_buf(), max_bytes: 0 };
        assert!(!off.enabled() && off.get(&key, "bin").is_none(), "off reads nothing");
        off.evict().unwrap();
        let other = off.path(&"e".repeat(32), "bin");
        write_bytes_atomic(&other, &[2u8; 10]).unwrap();
        off.commit(&other).unwrap();
        assert!(p.exists() && full.get(&key, "bin").is_some(), "an earlier entry survives a memo that is off");
    }
}
