//! Manifests: the files vidtune wrote into a folder, with their sizes and hashes, and the proof that a
//! file is still one of them.

use super::{read::sha256_file, write_bytes_atomic};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

/// The manifest of a folder vidtune wrote into: the files it wrote, with their sizes and hashes.
pub const MANIFEST: &str = ".vidtune-manifest.json";

/// One file of a manifest: what it was when vidtune wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Written {
    pub(super) bytes: u64,
    pub(super) sha256: String,
}

/// `s` as a path inside a folder: only plain names joined by `/` (no root, `.`, `..` or empty parts).
fn plain_relative(s: &str) -> Option<PathBuf> {
    if s.is_empty() || s.contains('\0') || s.contains('\\') {
        return None;
    }
    let p = PathBuf::from(s);
    p.components().all(|c| matches!(c, Component::Normal(_))).then_some(p)
}

/// The entries a folder's manifest claims, keeping only plain relative names with a size and hash.
fn manifest_entries(dir: &Path) -> BTreeMap<PathBuf, Written> {
    let path = dir.join(MANIFEST);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() && m.len() <= MANIFEST_MAX_BYTES => {}
        _ => return BTreeMap::new(),
    }
    let Ok(text) = std::fs::read_to_string(&path) else { return BTreeMap::new() };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return BTreeMap::new() };
    let Some(files) = v.get("files").and_then(|f| f.as_object()) else { return BTreeMap::new() };
    files
        .iter()
        .filter_map(|(name, w)| {
            let rel = plain_relative(name)?;
            let written = Written { bytes: w.get("bytes")?.as_u64()?, sha256: w.get("sha256")?.as_str()?.to_string() };
            Some((rel, written))
        })
        .collect()
}

/// A manifest larger than this is not one vidtune wrote.
const MANIFEST_MAX_BYTES: u64 = 64 << 20;

/// Whether `dir/rel` is a regular file reached through real folders, as `written` describes it.
fn proven(dir: &Path, rel: &Path, written: &Written) -> bool {
    let mut at = dir.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let Ok(meta) = std::fs::symlink_metadata(&at) else { return false };
        let last = i + 1 == parts.len();
        if meta.file_type().is_symlink() || (last && !meta.is_file()) || (!last && !meta.is_dir()) {
            return false;
        }
        if last && meta.len() != written.bytes {
            return false;
        }
    }
    sha256_file(&at).is_ok_and(|h| h == written.sha256)
}

/// The files of `dir` that vidtune provably wrote: named by its manifest and unchanged since (see the
/// module documentation). Empty without a manifest.
pub fn owned_files(dir: &Path) -> BTreeSet<PathBuf> {
    manifest_entries(dir).into_iter().filter(|(rel, w)| proven(dir, rel, w)).map(|(rel, _)| rel).collect()
}

pub(super) fn write_manifest(dir: &Path, files: &BTreeMap<PathBuf, Written>) -> Result<()> {
    let list: serde_json::Map<String, serde_json::Value> = files
        .iter()
        .map(|(p, w)| (p.to_string_lossy().into_owned(), serde_json::json!({"bytes": w.bytes, "sha256": w.sha256})))
        .collect();
    let json = serde_json::json!({
        "written_by": format!("vidtune {}", crate::VERSION),
        "note": "the files vidtune wrote into this folder, as it wrote them; saving here again replaces only these",
        "files": list,
    });
    write_bytes_atomic(&dir.join(MANIFEST), serde_json::to_string_pretty(&json).unwrap_or_default().as_bytes())
}

/// What `dir/rel` is now, to record it as vidtune's.
pub(super) fn describe(dir: &Path, rel: &Path) -> Result<Written> {
    let path = dir.join(rel);
    let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
    Ok(Written { bytes: meta.len(), sha256: sha256_file(&path)? })
}

/// An exclusive lock on a folder (flock on its descriptor) while its manifest is read and rewritten, so
/// two processes saving into one folder keep both records.
pub(super) struct DirLock {
    _held: Option<std::fs::File>,
}

impl DirLock {
    pub(super) fn take(dir: &Path) -> DirLock {
        use std::os::fd::AsRawFd;
        let Ok(f) = std::fs::File::open(dir) else { return DirLock { _held: None } };
        // SAFETY: flock on a descriptor this function owns; released by close on drop.
        let ok = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0;
        DirLock { _held: ok.then_some(f) }
    }
}

/// Records files vidtune wrote into a folder (plain names relative to it, e.g. a report written once the
/// folder exists, or a single saved file), with their sizes and hashes, so later saves treat them as
/// vidtune's. Entries that no longer prove anything are dropped.
pub fn record_owned(dir: &Path, files: &[&str]) -> Result<()> {
    let _lock = DirLock::take(dir);
    let mut entries: BTreeMap<PathBuf, Written> =
        manifest_entries(dir).into_iter().filter(|(rel, w)| proven(dir, rel, w)).collect();
    for f in files {
        let rel = plain_relative(f).ok_or_else(|| Error::Invalid(format!("{f:?}: not a plain file name")))?;
        let w = describe(dir, &rel)?;
        entries.insert(rel, w);
    }
    write_manifest(dir, &entries)
}

/// Deletes the files of `dir` that vidtune provably wrote, its manifest, then the folders left empty.
/// Files vidtune did not write stay, and so does every folder that still holds one.
pub(super) fn remove_owned_tree(dir: &Path) {
    for rel in owned_files(dir) {
        let _ = std::fs::remove_file(dir.join(rel));
    }
    let _ = std::fs::remove_file(dir.join(MANIFEST));
    super::remove_empty_dirs(dir);
}

#[cfg(test)]
mod tests {
    use super::super::tests::{names, write_frames};
    use super::super::write_dir_atomic;
    use super::*;

    #[test]
    fn a_planted_manifest_proves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "precious").unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        let sum = |p: &Path| sha256_file(p).unwrap();
        let planted = serde_json::json!({"files": {
            "../victim.txt": {"bytes": 8, "sha256": sum(&victim)},
            "/etc/passwd": {"bytes": 1, "sha256": "0"},
            "./notes.txt": {"bytes": 4, "sha256": sum(&out.join("notes.txt"))},
            "notes.txt": {"bytes": 4, "sha256": "not its hash"},
        }});
        std::fs::write(out.join(MANIFEST), planted.to_string()).unwrap();
        // The old format, a bare list, proves nothing either.
        let legacy = dir.path().join("legacy");
        std::fs::create_dir(&legacy).unwrap();
        std::fs::write(legacy.join("notes.txt"), "mine").unwrap();
        std::fs::write(legacy.join(MANIFEST), r#"{"files":["../victim.txt","notes.txt"]}"#).unwrap();
        for folder in [&out, &legacy] {
            assert!(owned_files(folder).is_empty(), "{:?}", owned_files(folder));
            for overwrite in [false, true] {
                let r = write_dir_atomic(folder, overwrite, write_frames(1));
                assert_eq!(r.is_ok(), overwrite, "{r:?}");
                assert_eq!(std::fs::read_to_string(folder.join("notes.txt")).unwrap(), "mine");
            }
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        // A file vidtune wrote but someone changed since is no longer vidtune's.
        std::fs::write(out.join("00000.png"), "edited by hand").unwrap();
        assert!(!owned_files(&out).contains(Path::new("00000.png")));
        write_dir_atomic(&out, true, write_frames(0)).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("00000.png")).unwrap(), "edited by hand");
    }

    #[cfg(unix)]
    #[test]
    fn links_in_a_folder_are_never_followed_or_counted_as_ours() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("00000.png"), "y").unwrap();
        let out = dir.path().join("out");
        write_dir_atomic(&out, false, write_frames(1)).unwrap();
        // Swap the written file for a link to an identical file elsewhere, and add a linked folder.
        std::fs::remove_file(out.join("00000.png")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("00000.png"), out.join("00000.png")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, out.join("sub")).unwrap();
        assert!(owned_files(&out).is_empty());
        assert!(write_dir_atomic(&out, false, write_frames(1)).is_err());
        assert_eq!(names(&elsewhere), ["00000.png"]);
    }
}
