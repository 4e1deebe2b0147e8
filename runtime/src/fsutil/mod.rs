//! Writing files and folders so that nothing is ever seen half-written and nothing vidtune did not write
//! is ever deleted or replaced.
//!
//! - **Files** are written to a hidden temporary sibling (same directory, same extension, so encoders that
//!   pick the format by extension still work) and renamed into place.
//! - **Folders** (frames, masks, model folders) are built beside the target and swapped in.
//! - **Ownership is proven, never assumed.** Each folder vidtune writes into carries a manifest
//!   (`.vidtune-manifest.json`) that names the files vidtune wrote there, each with its size and SHA-256.
//!   A file counts as vidtune's only when the manifest names it by a plain relative path (no `..`, no root,
//!   no `.`), every folder on the way is a real folder (not a symbolic link), the file is a regular file,
//!   and its size and hash still match. A planted or stale manifest therefore proves nothing.
//! - **Saving over something.**
//!   - A folder holding only vidtune's files (or nothing) is replaced whole. A folder with other content is
//!     refused with an error naming it, unless the caller passes `overwrite`, which writes the new files
//!     beside the others (each atomically) and still deletes only vidtune's own earlier files.
//!   - A single file ([`write_output`]) replaces an existing file only when vidtune wrote it, or under
//!     [`with_overwrite`]. A script (`.rhai`) and a file passed to [`protect`] (the running script) are
//!     never written over.
//! - **Temporaries** are named `.NAME.vidtune-tmp-PID-N…`, and each one is recorded in
//!   `<cache>/pending/` before it is created. Only recorded temporaries of processes that no longer run (a
//!   killed save) are removed, the next time vidtune writes anything; a file that merely looks like one is
//!   never touched.
//!
//! **Invariant:** vidtune never deletes or replaces a file it did not write, unless told to replace it.

use crate::error::{Error, Result};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

mod manifest;
mod pending;
mod read;

use manifest::{describe, remove_owned_tree, write_manifest, DirLock, Written};
pub use manifest::{owned_files, record_owned, MANIFEST};
pub use pending::remove_stale_temporaries;
use pending::Pending;

/// The record of a folder of temporaries vidtune creates and removes itself (an attention store on disk),
/// made before the folder exists: if the process is killed, a later run's
/// [`remove_stale_temporaries`] removes the folder. The record goes with the guard.
pub struct TempDirRecord(#[allow(dead_code)] Pending);

/// Records the folder `path` is about to be ([`TempDirRecord`]).
pub fn record_temp_dir(path: &Path) -> TempDirRecord {
    TempDirRecord(Pending::record(path, "dir"))
}

impl std::fmt::Debug for TempDirRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TempDirRecord")
    }
}
pub use read::{check_readable, read_limited, read_text, read_text_from, sha256_file, TEXT_MAX_BYTES};

/// Numbers the temporaries (and their records) of this process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `path` made absolute with `.` and `..` resolved, so `"."`, `"../x"` and `"out/"` all name a real
/// folder entry (with a parent and a file name). The parent is created when missing.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.as_os_str().is_empty() {
        return Err(Error::Invalid("an empty path; give a file or folder name".into()));
    }
    if let Ok(real) = std::fs::canonicalize(path) {
        return Ok(real);
    }
    let absolute = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let mut out = PathBuf::new();
    for part in absolute.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    let name = out.file_name().ok_or_else(|| Error::Invalid(format!("{}: not a file name", path.display())))?;
    let name = name.to_os_string();
    let parent = out.parent().unwrap_or(Path::new("/")).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let parent = std::fs::canonicalize(&parent).unwrap_or(parent);
    Ok(parent.join(name))
}

/// The absolute path of a file to write: the parent resolved and created, the name kept as it is (a
/// symbolic link at `path` is replaced by the save, never followed).
fn resolve_file(path: &Path) -> Result<PathBuf> {
    if path.as_os_str().is_empty() {
        return Err(Error::Invalid("an empty path; give a file name".into()));
    }
    let name = path.file_name().ok_or_else(|| Error::Invalid(format!("{}: not a file name", path.display())))?;
    if path.as_os_str().to_string_lossy().ends_with('/') {
        return Err(Error::Invalid(format!("{}: names a folder (trailing /), expected a file name", path.display())));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let parent = std::fs::canonicalize(&parent).map_err(|e| Error::io(&parent, e))?;
    Ok(parent.join(name))
}

fn sibling(path: &Path, tag: &str) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{}: not a file name", path.display())))?
        .to_string_lossy();
    let unique = format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    Ok(path.with_file_name(format!(".{name}.vidtune-{tag}-{unique}{ext}")))
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
/// removed when `write` fails. No ownership rule: for vidtune's own files (memo, stores, caches); what a
/// user asked to save goes through [`write_output`].
pub fn write_atomic<T>(path: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if path.is_dir() {
        return Err(Error::Invalid(format!("{}: is a folder, expected a file name", path.display())));
    }
    ensure_parent(path)?;
    remove_stale_temporaries();
    let path = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let tmp = sibling(&path, "tmp")?;
    let _record = Pending::record(&tmp, "file");
    match write(&tmp) {
        Ok(value) => {
            std::fs::rename(&tmp, &path).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                Error::io(&path, e)
            })?;
            Ok(value)
        }
        Err(err) => {
            let _ = std::fs::remove_file(&tmp);
            Err(err)
        }
    }
}

/// Writes `bytes` to `path` atomically (vidtune's own files; see [`write_atomic`]).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |tmp| std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e)))
}

// ─── single files a user asked for ────────────────────────────────────────────────────────────────

thread_local! {
    static OVERWRITE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with single-file saves allowed to replace files vidtune did not write (a script's
/// `#{overwrite: true}`). Scripts and protected files stay refused.
pub fn with_overwrite<T>(yes: bool, f: impl FnOnce() -> T) -> T {
    let before = OVERWRITE.with(|o| o.replace(yes));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERWRITE.with(|o| o.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

static PROTECTED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Marks a file that no save may replace, even with overwrite (the running script).
pub fn protect(path: &Path) {
    if let Ok(real) = std::fs::canonicalize(path) {
        let mut p = PROTECTED.lock().unwrap_or_else(|e| e.into_inner());
        if !p.contains(&real) {
            p.push(real);
        }
    }
}

/// Why a save may not replace what is at `path` (absolute), if it may not.
fn refuse_replacing(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if meta.is_dir() {
        return Err(Error::Invalid(format!("{}: is a folder, expected a file name", path.display())));
    }
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let is_script =
        [path, real.as_path()].iter().any(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("rhai")));
    let protected = PROTECTED.lock().unwrap_or_else(|e| e.into_inner()).contains(&real);
    if is_script || protected {
        return Err(Error::Invalid(format!(
            "{}: is {}; vidtune never writes over a script, choose another file name",
            path.display(),
            if protected { "the running script" } else { "a script" }
        )));
    }
    if OVERWRITE.with(|o| o.get()) {
        return Ok(());
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else { return Ok(()) };
    if !owned_files(dir).contains(Path::new(name)) {
        return Err(Error::Invalid(format!(
            "{}: exists and vidtune did not write it; choose another name, or pass #{{overwrite: true}} to \
             replace it",
            path.display()
        )));
    }
    Ok(())
}

/// Whether a save to `path` may go ahead: the error [`write_output`] would give, checked before the work
/// (e.g. before a tune that writes checkpoints).
pub fn check_output(path: &Path) -> Result<()> {
    refuse_replacing(&resolve_file(path)?)
}

/// Writes a file a user asked for: atomically, refusing to replace a file vidtune did not write (see the
/// module documentation), and recorded in its folder's manifest so a later save may replace it.
pub fn write_output<T>(path: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let path = resolve_file(path)?;
    refuse_replacing(&path)?;
    let value = write_atomic(&path, write)?;
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        if let Err(e) = record_owned(dir, &[&name.to_string_lossy()]) {
            log::warn!("{} saved, but its folder's manifest could not be updated: {e}", path.display());
        }
    }
    Ok(value)
}

/// [`write_output`] of bytes.
pub fn write_output_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_output(path, |tmp| std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e)))
}

// ─── folders ──────────────────────────────────────────────────────────────────────────────────────

/// Every file below `dir`, as paths relative to it (folders are not listed, their files are; a symbolic
/// link is listed as a file and never followed).
fn relative_files(dir: &Path) -> Result<BTreeSet<PathBuf>> {
    files_until(dir, usize::MAX, &BTreeSet::new())
}

/// The files below `dir` that `skip` does not name, stopping after `limit` of them (a user who saves into
/// their home folder must not wait for a walk of all of it).
fn files_until(dir: &Path, limit: usize, skip: &BTreeSet<PathBuf>) -> Result<BTreeSet<PathBuf>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if out.len() >= limit {
            break;
        }
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            let p = entry.path();
            let kind = entry.file_type().map_err(|e| Error::io(&p, e))?;
            if kind.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap_or(&p).to_path_buf();
                if !skip.contains(&rel) {
                    out.insert(rel);
                }
            }
        }
    }
    Ok(out)
}

/// Removes `dir` and its sub-folders bottom-up where they are empty (links are not followed).
fn remove_empty_dirs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Records every file of a finished temporary folder in its manifest; returns the entries.
fn seal(tmp: &Path) -> Result<BTreeMap<PathBuf, Written>> {
    let mut entries = BTreeMap::new();
    for rel in relative_files(tmp)? {
        if rel.as_os_str() != MANIFEST {
            entries.insert(rel.clone(), describe(tmp, &rel)?);
        }
    }
    write_manifest(tmp, &entries)?;
    Ok(entries)
}

/// Fills a fresh temporary folder with `write`, then puts it at `path` following the ownership rules of
/// this module (see the module documentation). Returns what `write` returned.
pub fn write_dir_atomic<T>(path: &Path, overwrite: bool, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let path = resolve(path)?;
    if path.is_file() {
        return Err(Error::Invalid(format!("{}: is a file, expected a folder", path.display())));
    }
    ensure_parent(&path)?;
    remove_stale_temporaries();
    // Refuse before the work when the folder is not ours.
    let foreign = |dir: &Path| -> Result<Vec<PathBuf>> {
        let mut ours = owned_files(dir);
        ours.insert(PathBuf::from(MANIFEST));
        Ok(files_until(dir, FOREIGN_LIMIT, &ours)?.into_iter().collect())
    };
    if path.is_dir() && !overwrite {
        check_foreign(&path, &foreign(&path)?)?;
    }
    let tmp = sibling(&path, "tmp")?;
    let _record = Pending::record(&tmp, "dir");
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let finish = |tmp: &Path| -> Result<()> {
        let written = seal(tmp)?;
        if !path.is_dir() {
            return std::fs::rename(tmp, &path).map_err(|e| Error::io(&path, e));
        }
        let others = foreign(&path)?;
        if others.is_empty() {
            swap_in(tmp, &path)
        } else if overwrite {
            merge_into(tmp, &path, &written)
        } else {
            check_foreign(&path, &others)
        }
    };
    let outcome = write(&tmp).and_then(|value| finish(&tmp).map(|_| value));
    if outcome.is_err() && tmp.exists() {
        let _ = std::fs::remove_dir_all(&tmp); // our own temporary folder: everything in it is ours
    }
    outcome
}

/// Builds a folder of vidtune's own cache (e.g. the built-in models) with `write` and puts it at `path`,
/// replacing whatever the cache held there whole: everything under such a cache folder is vidtune's.
pub fn replace_cache_dir<T>(path: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    ensure_parent(path)?;
    remove_stale_temporaries();
    let path = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let tmp = sibling(&path, "tmp")?;
    let _record = Pending::record(&tmp, "dir");
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let value = match write(&tmp) {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if std::fs::symlink_metadata(&path).is_ok() {
        let old = sibling(&path, "old")?;
        let _old_record = Pending::record(&old, "dir");
        std::fs::rename(&path, &old).map_err(|e| Error::io(&path, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        let _ = if old.is_dir() { std::fs::remove_dir_all(&old) } else { std::fs::remove_file(&old) };
    } else {
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(value)
}

/// How many foreign files a folder check counts before it stops looking.
const FOREIGN_LIMIT: usize = 1000;

fn check_foreign(path: &Path, foreign: &[PathBuf]) -> Result<()> {
    if foreign.is_empty() {
        return Ok(());
    }
    let examples: Vec<String> = foreign.iter().take(3).map(|p| p.display().to_string()).collect();
    let count = if foreign.len() >= FOREIGN_LIMIT { format!("{FOREIGN_LIMIT}+") } else { foreign.len().to_string() };
    Err(Error::Invalid(format!(
        "{}: the folder holds {count} file(s) vidtune did not write ({}{}); save into a new or empty folder, or \
         pass #{{overwrite: true}} to write beside them (vidtune never deletes files it did not write)",
        path.display(),
        examples.join(", "),
        if foreign.len() > 3 { ", …" } else { "" }
    )))
}

/// Replaces `path` (holding only vidtune's files) by the finished temporary folder.
fn swap_in(tmp: &Path, path: &Path) -> Result<()> {
    let old = sibling(path, "old")?;
    let _record = Pending::record(&old, "old");
    std::fs::rename(path, &old).map_err(|e| Error::io(path, e))?;
    if let Err(e) = std::fs::rename(tmp, path) {
        let _ = std::fs::rename(&old, path);
        return Err(Error::io(path, e));
    }
    remove_owned_tree(&old);
    if old.exists() {
        log::warn!("{} kept: it holds files vidtune did not write", old.display());
    }
    Ok(())
}

/// Moves the new files into `path` one by one (each rename is atomic), removes vidtune's earlier files
/// that the new set does not replace, and records the new manifest. Other files are left alone.
fn merge_into(tmp: &Path, path: &Path, written: &BTreeMap<PathBuf, Written>) -> Result<()> {
    let _lock = DirLock::take(path);
    let earlier = owned_files(path);
    for rel in written.keys() {
        let (from, to) = (tmp.join(rel), path.join(rel));
        ensure_parent(&to)?;
        std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
    }
    for rel in earlier.iter().filter(|r| !written.contains_key(*r)) {
        let _ = std::fs::remove_file(path.join(rel));
    }
    write_manifest(path, written)?;
    let _ = std::fs::remove_file(tmp.join(MANIFEST));
    remove_empty_dirs(tmp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn write_frames(n: usize) -> impl FnOnce(&Path) -> Result<()> {
        move |dir: &Path| {
            for i in 0..n {
                std::fs::write(dir.join(format!("{i:05}.png")), "y").map_err(|e| Error::io(dir, e))?;
            }
            Ok(())
        }
    }

    pub(super) fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

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
    fn a_folder_of_our_own_files_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("frames");
        write_dir_atomic(&target, false, write_frames(3)).unwrap();
        assert_eq!(names(&target), [MANIFEST, "00000.png", "00001.png", "00002.png"]);
        write_dir_atomic(&target, false, write_frames(1)).unwrap();
        assert_eq!(names(&target), [MANIFEST, "00000.png"]);
        assert_eq!(names(dir.path()), ["frames"], "no temporary left beside");
    }

    #[test]
    fn a_folder_with_other_files_is_refused_or_merged_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("notes.txt"), "mine").unwrap();
        let err = write_dir_atomic(&target, false, write_frames(2)).unwrap_err().to_string();
        assert!(err.contains("notes.txt") && err.contains("overwrite"), "{err}");
        assert_eq!(names(&target), ["notes.txt"]);
        assert_eq!(names(dir.path()), ["out"]);
        // With overwrite: beside it; a second save replaces only vidtune's files.
        write_dir_atomic(&target, true, write_frames(3)).unwrap();
        assert_eq!(names(&target), [MANIFEST, "00000.png", "00001.png", "00002.png", "notes.txt"]);
        write_dir_atomic(&target, true, write_frames(1)).unwrap();
        assert_eq!(names(&target), [MANIFEST, "00000.png", "notes.txt"]);
        assert_eq!(std::fs::read_to_string(target.join("notes.txt")).unwrap(), "mine");
    }

    #[test]
    fn dot_and_dot_dot_paths_resolve_to_real_folders() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a");
        std::fs::create_dir(&sub).unwrap();
        assert_eq!(resolve(&sub.join("..").join("x")).unwrap(), std::fs::canonicalize(dir.path()).unwrap().join("x"));
        assert_eq!(resolve(&sub.join(".")).unwrap(), std::fs::canonicalize(&sub).unwrap());
        // A folder with a foreign file, named through "..", is still protected.
        std::fs::write(sub.join("keep.txt"), "x").unwrap();
        assert!(write_dir_atomic(&sub.join("..").join("a"), false, write_frames(1)).is_err());
        assert!(sub.join("keep.txt").exists());
    }

    #[test]
    fn single_files_replace_only_what_vidtune_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("mine.txt");
        std::fs::write(&mine, "user's").unwrap();
        let err = write_output_bytes(&mine, b"ours").unwrap_err().to_string();
        assert!(err.contains("mine.txt") && err.contains("did not write") && err.contains("overwrite"), "{err}");
        assert_eq!(std::fs::read_to_string(&mine).unwrap(), "user's");
        with_overwrite(true, || write_output_bytes(&mine, b"ours")).unwrap();
        assert_eq!(std::fs::read_to_string(&mine).unwrap(), "ours");
        // Written by vidtune now: replaced freely, until someone edits it.
        write_output_bytes(&mine, b"ours again").unwrap();
        std::fs::write(&mine, "edited").unwrap();
        assert!(write_output_bytes(&mine, b"x").is_err());
        // Scripts and protected files are refused even with overwrite.
        let script = dir.path().join("case.rhai");
        std::fs::write(&script, "print(1);").unwrap();
        let run = dir.path().join("run.txt");
        std::fs::write(&run, "print(2);").unwrap();
        protect(&run);
        for p in [&script, &run] {
            let err = with_overwrite(true, || write_output_bytes(p, b"\0\0")).unwrap_err().to_string();
            assert!(err.contains("never writes over a script"), "{err}");
        }
        assert_eq!(std::fs::read_to_string(&script).unwrap(), "print(1);");
        assert!(write_output_bytes(&dir.path().join("new.rhai.json"), b"{}").is_ok());
        assert!(write_output_bytes(&dir.path().join("trailing/"), b"{}").is_err());
    }
}
