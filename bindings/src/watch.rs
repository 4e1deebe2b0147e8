//! `vidtune watch FILE.rhai`: run the script, then rerun it whenever it or a file it read is saved.
//!
//! Parent directories are watched (not the files), so editors that save by writing a temporary file and
//! renaming it over the original are seen; events are debounced; editor droppings (`.swp`, `~`, `4913`)
//! are ignored; files the script wrote itself never trigger a rerun. A failing run prints its error and
//! the watch goes on.

use crate::repl::print_error;
use crate::session::Session;
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use rhai::Dynamic;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use vidtune_runtime::cache::CacheCounters;
use vidtune_runtime::pipelines::cached::memo_status;
use vidtune_runtime::pipelines::{stats, Stats};

/// Debounce window: saves that come within it are one change.
const DEBOUNCE: Duration = Duration::from_millis(200);

fn is_editor_dropping(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.ends_with('~') || name.ends_with(".swp") || name.ends_with(".swx") || name == "4913" || name.starts_with(".#")
}

/// Local wall-clock time as `HH:MM:SS`.
fn clock() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let t = now as libc::time_t;
    // SAFETY: localtime_r writes into the zeroed struct we own and reads only `t`.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    };
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// Runs `script` once in a fresh session; returns the files it depends on.
fn run_once(script: &Path, params: &[(String, Dynamic)]) -> BTreeSet<PathBuf> {
    // An editor saving by rename leaves the file missing for a moment.
    for _ in 0..20 {
        if script.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut session = Session::new();
    for (k, v) in params {
        session.set_param(k, v.clone());
    }
    let start = Instant::now();
    let (steps_before, memo_before) = (stats(), memo_status().0);
    let result = session.run_file(script);
    let secs = start.elapsed().as_secs_f64();
    let work = run_summary(steps_before, stats(), memo_before, memo_status().0);
    match result {
        Ok(_) => println!("── ok in {secs:.2} s{work}"),
        Err(e) if e.cancelled => println!("── cancelled after {secs:.2} s; still watching"),
        Err(e) => {
            print_error(&e);
            println!("── failed after {secs:.2} s");
        }
    }
    let mut deps: BTreeSet<PathBuf> = session.dependencies().into_iter().collect();
    deps.insert(script.to_path_buf());
    deps
}

/// What a run did: the steps each pipeline ran and the memo's hits, ` · tune 0, sample 20 steps · memo 2
/// hits, 1 computed` (empty when it ran none).
fn run_summary(before: Stats, after: Stats, memo_before: CacheCounters, memo_after: CacheCounters) -> String {
    let steps: Vec<String> = [
        ("tune", after.tune_steps - before.tune_steps),
        ("invert", after.invert_steps - before.invert_steps),
        ("sample", after.sample_steps - before.sample_steps),
        ("t2i", after.t2i_steps - before.t2i_steps),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(name, n)| format!("{name} {n}"))
    .collect();
    let hits = (memo_after.memory_hits + memo_after.disk_hits) - (memo_before.memory_hits + memo_before.disk_hits);
    let computed = memo_after.misses - memo_before.misses;
    let mut out = String::new();
    if !steps.is_empty() {
        out.push_str(&format!(" · {} steps", steps.join(", ")));
    }
    if hits + computed > 0 {
        out.push_str(&format!(" · memo {hits} hit{}, {computed} computed", if hits == 1 { "" } else { "s" }));
    }
    out
}

/// The watched files by name (relative to the script's folder where they are inside it), at most eight.
fn file_list(script: &Path, files: &BTreeSet<PathBuf>) -> String {
    let base = script.parent().unwrap_or(Path::new("/"));
    let mut names: Vec<String> =
        files.iter().map(|f| f.strip_prefix(base).unwrap_or(f).display().to_string()).take(8).collect();
    if files.len() > 8 {
        names.push(format!("+{} more", files.len() - 8));
    }
    names.join(", ")
}

/// Watches until interrupted: a Ctrl-C cancels the current run, a second within
/// [`crate::signals::QUIT_WINDOW`] (or SIGTERM) ends the watch, whose exit status it returns (130 / 143).
pub fn watch(script: &Path, params: &[(String, Dynamic)]) -> anyhow::Result<u8> {
    let script = std::path::absolute(script)?;
    if !script.is_file() {
        anyhow::bail!("{}: no such script", script.display());
    }
    crate::signals::install(crate::signals::Mode::Watch);
    let (tx, rx) = mpsc::channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(DEBOUNCE, None, tx)?;
    let mut watched_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut reason = String::from("start");
    loop {
        println!("── {} · {reason} · running {}", clock(), script.display());
        let files = run_once(&script, params);
        if crate::signals::quit_requested() {
            return Ok(crate::signals::exit_status());
        }
        let dirs: BTreeSet<PathBuf> = files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
        for gone in watched_dirs.difference(&dirs) {
            let _ = debouncer.unwatch(gone);
        }
        for dir in dirs.difference(&watched_dirs) {
            if let Err(e) = debouncer.watch(dir, RecursiveMode::NonRecursive) {
                eprintln!("warning: cannot watch {}: {e}", dir.display());
            }
        }
        watched_dirs = dirs;
        let n = files.len();
        println!(
            "── watching {n} file{}: {}; Ctrl-C cancels a run, twice quits",
            if n == 1 { "" } else { "s" },
            file_list(&script, &files)
        );
        let Some(changed) = wait_for_change(&rx, &files)? else {
            return Ok(crate::signals::exit_status());
        };
        reason = format!(
            "changed: {}",
            changed.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy()).collect::<Vec<_>>().join(", ")
        );
    }
}

/// The watched files that changed; `None` when the watch was asked to quit meanwhile.
fn wait_for_change(
    rx: &mpsc::Receiver<DebounceEventResult>,
    files: &BTreeSet<PathBuf>,
) -> anyhow::Result<Option<Vec<PathBuf>>> {
    loop {
        if crate::signals::quit_requested() {
            return Ok(None);
        }
        let received = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(e) => return Err(e.into()),
        };
        let events = match received {
            Ok(events) => events,
            Err(errors) => {
                for e in errors {
                    eprintln!("warning: watch error: {e}");
                }
                continue;
            }
        };
        let mut changed = BTreeSet::new();
        for event in events {
            if event.kind.is_access() || event.kind.is_remove() {
                continue;
            }
            for path in &event.paths {
                if !is_editor_dropping(path) && files.contains(path) {
                    changed.insert(path.clone());
                }
            }
        }
        if !changed.is_empty() {
            return Ok(Some(changed.into_iter().collect()));
        }
    }
}
