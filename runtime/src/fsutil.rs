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
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The manifest of a folder vidtune wrote into: the files it wrote, with their sizes and hashes.
pub const MANIFEST: &str = ".vidtune-manifest.json";

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

// ─── hashing ────────────────────────────────────────────────────────────────────────────────────────

/// The SHA-256 of a file, hex, read in blocks (never the whole file at once).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

// ─── bounded reads ────────────────────────────────────────────────────────────────────────────────

/// The largest script, config, JSON or tokenizer file vidtune reads (far above any real one).
pub const TEXT_MAX_BYTES: u64 = 64 << 20;

/// Checks that `path` is a regular file (not a FIFO, device, socket or folder) of at most `max` bytes,
/// before anything reads it. `what` names the file in errors ("script", "config").
pub fn check_readable(path: &Path, max: u64, what: &str) -> Result<std::fs::Metadata> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::bad_file(path, format!("is a folder, expected a {what} file")));
    }
    if !meta.is_file() {
        return Err(Error::bad_file(
            path,
            format!("is not a regular file (a pipe, device or socket); vidtune reads a {what} only from a file"),
        ));
    }
    if meta.len() > max {
        return Err(Error::bad_file(
            path,
            format!("has {} bytes, more than the {} a {what} may have", meta.len(), human_bytes(max)),
        ));
    }
    Ok(meta)
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

/// Reads a regular file of at most `max` bytes ([`check_readable`]); a file that grows while it is read
/// is cut at the limit and refused.
pub fn read_limited(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    check_readable(path, max, what)?;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    f.take(max + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(Error::bad_file(path, format!("grew past the {} a {what} may have", human_bytes(max))));
    }
    Ok(bytes)
}

/// [`read_limited`] as UTF-8 text, up to [`TEXT_MAX_BYTES`].
pub fn read_text(path: &Path, what: &str) -> Result<String> {
    utf8(read_limited(path, TEXT_MAX_BYTES, what)?, path, what)
}

/// Text from a stream (a piped script, named `path` in errors), up to [`TEXT_MAX_BYTES`].
pub fn read_text_from(reader: impl Read, path: &Path, what: &str) -> Result<String> {
    let mut bytes = Vec::new();
    reader.take(TEXT_MAX_BYTES + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > TEXT_MAX_BYTES {
        return Err(Error::bad_file(
            path,
            format!("is longer than the {} a {what} may have", human_bytes(TEXT_MAX_BYTES)),
        ));
    }
    utf8(bytes, path, what)
}

fn utf8(bytes: Vec<u8>, path: &Path, what: &str) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        Error::bad_file(
            path,
            format!("is not UTF-8 text (byte {} is not), so it is not a {what}", e.utf8_error().valid_up_to()),
        )
    })
}

// ─── temporaries, recorded before they exist ──────────────────────────────────────────────────────

/// Where the records of temporaries in progress live.
fn pending_dir() -> PathBuf {
    crate::env::cache_dir().join("pending")
}

/// The start time of process `pid` (clock ticks since boot, field 22 of `/proc/PID/stat`), which tells a
/// running process from a later one that reuses its pid.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The record of one temporary: written before the temporary is created, removed when it is gone (the
/// guard's drop). A record whose process no longer runs names a temporary that is safe to remove.
struct Pending(Option<PathBuf>);

impl Pending {
    /// Records `tmp` (`kind`: "file", "dir" for a folder this module creates, "old" for a target being
    /// swapped out). Without a writable cache the temporary goes unrecorded: a killed save then leaves it
    /// behind, never the reverse.
    fn record(tmp: &Path, kind: &str) -> Pending {
        let pid = std::process::id();
        let Some(start) = process_start(pid) else { return Pending(None) };
        let dir = pending_dir();
        if std::fs::create_dir_all(&dir).is_err() {
            return Pending(None);
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let record = dir.join(format!("{pid}-{start}-{n}.json"));
        let json = serde_json::json!({"pid": pid, "start": start, "kind": kind, "path": tmp});
        // Not through write_atomic: a record is small, and its own temporary would need a record.
        let staged = dir.join(format!(".{pid}-{start}-{n}.partial"));
        let ok = std::fs::write(&staged, json.to_string()).is_ok() && std::fs::rename(&staged, &record).is_ok();
        if !ok {
            let _ = std::fs::remove_file(&staged);
            log::debug!("no record for {}: {} is not writable", tmp.display(), dir.display());
            return Pending(None);
        }
        Pending(Some(record))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Removes the temporaries that recorded saves of processes which no longer run left behind (a killed
/// save), and their records. Only paths a record names are touched. Returns how many were removed.
pub fn remove_stale_temporaries() -> usize {
    let dir = pending_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let record = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&record) else { continue };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        let (Some(pid), Some(start), Some(kind), Some(path)) = (
            v["pid"].as_u64().and_then(|p| u32::try_from(p).ok()),
            v["start"].as_u64(),
            v["kind"].as_str(),
            v["path"].as_str().map(PathBuf::from),
        ) else {
            continue;
        };
        if !Path::new("/proc/self/stat").exists() || process_start(pid) == Some(start) {
            continue; // running (or, without /proc, not known to be gone)
        }
        if path.is_absolute() {
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                let gone = match (kind, meta.is_dir(), meta.file_type().is_symlink()) {
                    (_, _, true) => false,
                    ("file", false, _) => std::fs::remove_file(&path).is_ok(),
                    ("dir", true, _) => std::fs::remove_dir_all(&path).is_ok(),
                    ("old", true, _) => {
                        remove_owned_tree(&path);
                        !path.exists()
                    }
                    _ => false,
                };
                if gone {
                    removed += 1;
                    log::info!("removed {}, left by an interrupted save", path.display());
                }
            }
        }
        let _ = std::fs::remove_file(&record);
    }
    removed
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

// ─── manifests ────────────────────────────────────────────────────────────────────────────────────

/// One file of a manifest: what it was when vidtune wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    bytes: u64,
    sha256: String,
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

fn write_manifest(dir: &Path, files: &BTreeMap<PathBuf, Written>) -> Result<()> {
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
fn describe(dir: &Path, rel: &Path) -> Result<Written> {
    let path = dir.join(rel);
    let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
    Ok(Written { bytes: meta.len(), sha256: sha256_file(&path)? })
}

/// An exclusive lock on a folder (flock on its descriptor) while its manifest is read and rewritten, so
/// two processes saving into one folder keep both records.
struct DirLock {
    _held: Option<std::fs::File>,
}

impl DirLock {
    fn take(dir: &Path) -> DirLock {
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

/// Deletes the files of `dir` that vidtune provably wrote, its manifest, then the folders left empty.
/// Files vidtune did not write stay, and so does every folder that still holds one.
fn remove_owned_tree(dir: &Path) {
    for rel in owned_files(dir) {
        let _ = std::fs::remove_file(dir.join(rel));
    }
    let _ = std::fs::remove_file(dir.join(MANIFEST));
    remove_empty_dirs(dir);
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

    fn write_frames(n: usize) -> impl FnOnce(&Path) -> Result<()> {
        move |dir: &Path| {
            for i in 0..n {
                std::fs::write(dir.join(format!("{i:05}.png")), "y").map_err(|e| Error::io(dir, e))?;
            }
            Ok(())
        }
    }

    fn names(dir: &Path) -> Vec<String> {
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

    #[test]
    fn only_recorded_temporaries_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("clip.gif");
        // A temporary recorded by a process that is gone (pid above Linux's pid_max), a folder too.
        let dead = dir.path().join(".clip.gif.vidtune-tmp-4999999-0.gif");
        let dead_dir = dir.path().join(".clip.gif.vidtune-tmp-4999999-1");
        std::fs::write(&dead, "half").unwrap();
        std::fs::create_dir(&dead_dir).unwrap();
        std::fs::write(dead_dir.join("00000.png"), "half").unwrap();
        std::fs::create_dir_all(pending_dir()).unwrap();
        for (i, (p, kind)) in [(&dead, "file"), (&dead_dir, "dir")].into_iter().enumerate() {
            let record = serde_json::json!({"pid": 4999999u32, "start": 1, "kind": kind, "path": p});
            std::fs::write(
                pending_dir().join(format!("4999999-1-{}-{i}.json", std::process::id())),
                record.to_string(),
            )
            .unwrap();
        }
        // Lookalikes nobody recorded: a user's folder and file.
        let backup = dir.path().join(".clip.gif.tmp-999999-backup");
        std::fs::create_dir(&backup).unwrap();
        std::fs::write(backup.join("thesis.tex"), "years").unwrap();
        let notes = dir.path().join(".clip.gif.old-999999-notes");
        std::fs::write(&notes, "mine").unwrap();
        let lookalike = dir.path().join(".clip.gif.vidtune-tmp-4999998-0.gif");
        std::fs::write(&lookalike, "mine too").unwrap();
        write_bytes_atomic(&target, b"gif").unwrap();
        assert!(!dead.exists() && !dead_dir.exists());
        assert!(backup.join("thesis.tex").exists() && notes.exists() && lookalike.exists());
        // A temporary of this (running) process is recorded while it exists, and left alone.
        let during = write_atomic(&target, |tmp| {
            remove_stale_temporaries();
            Ok(tmp.exists() || std::fs::write(tmp, "x").is_ok())
        });
        assert!(during.unwrap());
    }
}
