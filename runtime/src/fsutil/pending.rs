//! Temporaries recorded before they exist: each one is named in `<cache>/pending/`, and only recorded
//! temporaries of processes that no longer run are ever removed.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// Where the records of temporaries in progress live.
pub(super) fn pending_dir() -> PathBuf {
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
pub(super) struct Pending(Option<PathBuf>);

impl Pending {
    /// Records `tmp` (`kind`: "file", "dir" for a folder this module creates, "old" for a target being
    /// swapped out). Without a writable cache the temporary goes unrecorded: a killed save then leaves it
    /// behind, never the reverse.
    pub(super) fn record(tmp: &Path, kind: &str) -> Pending {
        let pid = std::process::id();
        let Some(start) = process_start(pid) else { return Pending(None) };
        let dir = pending_dir();
        if std::fs::create_dir_all(&dir).is_err() {
            return Pending(None);
        }
        let n = super::COUNTER.fetch_add(1, Ordering::Relaxed);
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
                        super::manifest::remove_owned_tree(&path);
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

#[cfg(test)]
mod tests {
    use super::super::{write_atomic, write_bytes_atomic};
    use super::*;

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
