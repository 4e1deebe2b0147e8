//! Writing files and folders so that nothing is ever seen half-written and nothing vidtune did not write
//! is ever deleted.
//!
//! - **Files** are written to a hidden temporary sibling (same directory, same extension, so encoders that
//!   pick the format by extension still work) and renamed into place.
//! - **Folders** (frames, masks, model folders) are built beside the target and swapped in. A folder
//!   vidtune writes carries a manifest (`.vidtune-manifest.json`) naming the files it wrote. Saving into an
//!   existing folder replaces it only when it holds nothing but those files (or nothing at all); a folder
//!   with other content is refused with an error naming it, unless the caller passes `overwrite`, which
//!   writes the new files beside the others (each file atomically) and still deletes only vidtune's own
//!   earlier files.
//! - **Leftovers**: temporaries are named `.NAME.tmp-PID-N…`; those of processes that no longer run (a
//!   killed save) are removed the next time NAME is written.
//!
//! **Invariant:** vidtune never deletes a file it did not write.

use crate::error::{Error, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The manifest of a folder vidtune wrote: the relative paths of its files.
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
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
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

fn sibling(path: &Path, tag: &str) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{}: not a file name", path.display())))?
        .to_string_lossy();
    let unique = format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    Ok(path.with_file_name(format!(".{name}.{tag}-{unique}{ext}")))
}

/// Whether process `pid` is running.
fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    if Path::new("/proc/self").exists() {
        return Path::new(&format!("/proc/{pid}")).exists();
    }
    true // without /proc, never guess that a process is gone
}

/// Removes the temporaries (`.NAME.tmp-PID-N…`, `.NAME.old-PID-N…`) that processes which no longer run
/// left beside `path`. Returns how many were removed.
pub fn remove_stale_temporaries(path: &Path) -> usize {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { return 0 };
    let Ok(entries) = std::fs::read_dir(parent) else { return 0 };
    let name = name.to_string_lossy();
    let mut removed = 0;
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&format!(".{name}.")) else { continue };
        let (is_tmp, rest) = match (rest.strip_prefix("tmp-"), rest.strip_prefix("old-")) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            _ => continue,
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if alive(pid) {
            continue;
        }
        let p = entry.path();
        // A `tmp` folder is a private folder this module created: all of it is vidtune's. An `old` folder
        // is a target being swapped out: its manifest says what is vidtune's.
        let ok = match (p.is_dir(), is_tmp) {
            (true, true) => std::fs::remove_dir_all(&p).is_ok(),
            (true, false) => remove_owned_tree(&p).is_ok() && !p.exists(),
            (false, _) => std::fs::remove_file(&p).is_ok(),
        };
        if ok {
            removed += 1;
            log::info!("removed {}, left by an interrupted save", p.display());
        }
    }
    removed
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
    if path.is_dir() {
        return Err(Error::Invalid(format!("{}: is a folder, expected a file name", path.display())));
    }
    ensure_parent(path)?;
    remove_stale_temporaries(path);
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

/// Every file below `dir`, as paths relative to it (folders are not listed, their files are).
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

/// The files a folder's manifest says vidtune wrote (empty without a manifest).
pub fn owned_files(dir: &Path) -> BTreeSet<PathBuf> {
    let Ok(text) = std::fs::read_to_string(dir.join(MANIFEST)) else { return BTreeSet::new() };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return BTreeSet::new() };
    v.get("files")
        .and_then(|f| f.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str()).map(PathBuf::from).filter(|p| p.is_relative()).collect())
        .unwrap_or_default()
}

fn write_manifest(dir: &Path, files: &BTreeSet<PathBuf>) -> Result<()> {
    let list: Vec<String> = files.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let json = serde_json::json!({
        "written_by": format!("vidtune {}", crate::VERSION),
        "note": "the files vidtune wrote into this folder; saving here again replaces only these",
        "files": list,
    });
    write_bytes_atomic(&dir.join(MANIFEST), serde_json::to_string_pretty(&json).unwrap_or_default().as_bytes())
}

/// Records files vidtune wrote into a folder after [`write_dir_atomic`] (e.g. a report written once the
/// folder exists), so later saves treat them as vidtune's.
pub fn record_owned(dir: &Path, files: &[&str]) -> Result<()> {
    let mut owned = owned_files(dir);
    owned.extend(files.iter().map(PathBuf::from));
    write_manifest(dir, &owned)
}

/// Deletes the files of `dir` that its manifest names, the manifest, then the folders left empty. Files
/// vidtune did not write stay, and so does every folder that still holds one.
fn remove_owned_tree(dir: &Path) -> Result<()> {
    for rel in owned_files(dir) {
        let _ = std::fs::remove_file(dir.join(rel));
    }
    let _ = std::fs::remove_file(dir.join(MANIFEST));
    remove_empty_dirs(dir);
    Ok(())
}

/// Removes `dir` and its sub-folders bottom-up where they are empty.
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

/// Fills a fresh temporary folder with `write`, then puts it at `path` following the ownership rules of
/// this module (see the module documentation). Returns what `write` returned.
pub fn write_dir_atomic<T>(path: &Path, overwrite: bool, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let path = resolve(path)?;
    if path.is_file() {
        return Err(Error::Invalid(format!("{}: is a file, expected a folder", path.display())));
    }
    ensure_parent(&path)?;
    remove_stale_temporaries(&path);
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
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let finish = |tmp: &Path| -> Result<()> {
        let written = relative_files(tmp)?;
        write_manifest(tmp, &written)?;
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
        remove_owned_tree(&tmp)?;
        let _ = std::fs::remove_dir_all(&tmp); // our own temporary folder: everything in it is ours
    }
    outcome
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
    std::fs::rename(path, &old).map_err(|e| Error::io(path, e))?;
    if let Err(e) = std::fs::rename(tmp, path) {
        let _ = std::fs::rename(&old, path);
        return Err(Error::io(path, e));
    }
    remove_owned_tree(&old)?;
    if old.exists() {
        log::warn!("{} kept: it holds files vidtune did not write", old.display());
    }
    Ok(())
}

/// Moves the new files into `path` one by one (each rename is atomic), removes vidtune's earlier files
/// that the new set does not replace, and records the new manifest. Other files are left alone.
fn merge_into(tmp: &Path, path: &Path, written: &BTreeSet<PathBuf>) -> Result<()> {
    let earlier = owned_files(path);
    for rel in written {
        let (from, to) = (tmp.join(rel), path.join(rel));
        ensure_parent(&to)?;
        std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
    }
    for rel in earlier.difference(written) {
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
    fn temporaries_of_dead_processes_are_removed_on_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("clip.gif");
        // A pid that cannot be running (above Linux's pid_max).
        let dead = dir.path().join(".clip.gif.tmp-4999999-0.gif");
        let dead_dir = dir.path().join(".clip.gif.tmp-4999998-3");
        std::fs::write(&dead, "half").unwrap();
        std::fs::create_dir(&dead_dir).unwrap();
        let mine = dir.path().join(format!(".clip.gif.tmp-{}-99.gif", std::process::id()));
        std::fs::write(&mine, "in progress").unwrap();
        write_bytes_atomic(&target, b"gif").unwrap();
        assert!(!dead.exists() && !dead_dir.exists());
        assert!(mine.exists(), "a running process's temporary is left alone");
    }
}
