//! A point's run: its process started (`vidtune run SCRIPT …`, or a `run_command` sweep's command) and
//! recorded in `point.json` as running, then as done, failed or cancelled with its error; the local
//! backend's workers; `run-point` (what a Slurm array task runs); the time left.

use super::{host, read_state, read_sweep, write_point, Point};
use anyhow::{anyhow, bail, Context};
use std::path::Path;

/// ", about 3 min left" once some of the work is done: the time per finished point so far (the workers'
/// parallelism included) times what remains.
pub(super) fn eta(started: std::time::Instant, finished: usize, remaining: usize) -> String {
    if finished == 0 || remaining == 0 {
        return String::new();
    }
    let left = started.elapsed().as_secs_f64() / finished as f64 * remaining as f64;
    if left < 90.0 {
        format!(", about {:.0} s left", left.ceil())
    } else if left < 5400.0 {
        format!(", about {:.0} min left", left / 60.0)
    } else {
        format!(", about {:.1} h left", left / 3600.0)
    }
}

/// The local backend's workers: how many run at once, each one's CPU threads, and their devices (one
/// per worker, with its `CUDA_VISIBLE_DEVICES`; none without --devices).
pub(super) struct Workers {
    pub(super) jobs: usize,
    pub(super) threads: usize,
    pub(super) devices: Vec<(String, String)>,
}

/// Runs the points of `list` that are not done, `workers.jobs` at a time; a point for which `blocked`
/// gives a reason is recorded as failed with it instead. The number that did not end done.
pub(super) fn run_local(
    dir: &Path,
    list: &[Point],
    workers: &Workers,
    blocked: &dyn Fn(&Point) -> Option<String>,
) -> anyhow::Result<usize> {
    let todo: Vec<&Point> = list.iter().filter(|p| read_state(dir, p).status != "done").collect();
    let total = todo.len();
    let mut queue = todo.into_iter();
    // (point, its run, when it started, its worker slot)
    let mut running: Vec<(&Point, std::process::Child, std::time::Instant, usize)> = vec![];
    let (mut failed, mut finished) = (0, 0);
    let started = std::time::Instant::now();
    loop {
        while running.len() < workers.jobs && !vidtune_runtime::progress::cancel_requested() {
            let Some(point) = queue.next() else { break };
            if let Some(why) = blocked(point) {
                write_point(dir, point, serde_json::json!({"status": "failed", "error": why}))?;
                println!("failed    {}: {why}", describe(point));
                failed += 1;
                finished += 1;
                continue;
            }
            let slot = (0..workers.jobs).find(|s| running.iter().all(|r| r.3 != *s)).unwrap_or(0);
            let device = workers.devices.get(slot);
            let child = start_point(dir, point, Some(workers.threads), None, device)?;
            running.push((point, child, std::time::Instant::now(), slot));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut i = 0;
        while i < running.len() {
            let Some(exit) = running[i].1.try_wait()? else {
                i += 1;
                continue;
            };
            let (point, _, began, _) = running.remove(i);
            finished += 1;
            let progress = format!("{finished} of {total}{}", eta(started, finished, total - finished));
            if finish_point(dir, point, exit, began.elapsed().as_secs_f64(), &progress)? != "done" {
                failed += 1;
            }
        }
    }
    Ok(failed)
}

/// A point's parameters as `name=value …`, stages marked.
pub(super) fn describe(point: &Point) -> String {
    let params = point.params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
    if point.stage {
        format!("stage {}", if params.is_empty() { "(all)".into() } else { params })
    } else {
        params
    }
}

/// Starts `point`'s run (`vidtune run SCRIPT --out DIR/points/<key> --set …`, its output in `log.txt`) and
/// records it as running.
fn start_point(
    dir: &Path,
    point: &Point,
    threads: Option<usize>,
    slurm_task: Option<String>,
    device: Option<&(String, String)>,
) -> anyhow::Result<std::process::Child> {
    let sweep = read_sweep(dir)?;
    sweep.runnable_here(dir)?;
    let record = &sweep.record;
    let exe = std::env::current_exe().context("finding this program to run points")?;
    let out = point.folder(dir);
    std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
    let log = std::fs::File::create(out.join("log.txt")).with_context(|| out.display().to_string())?;
    let mut cmd = std::process::Command::new(&exe);
    if let Some(command) = record["command"].as_array() {
        for arg in command.iter().filter_map(|a| a.as_str()) {
            let mut arg = arg.replace("{out}", &out.display().to_string());
            for (k, v) in &point.params {
                arg = arg.replace(&format!("{{{k}}}"), v);
            }
            cmd.arg(arg);
        }
        return spawn_point(dir, point, cmd, log, threads, slurm_task, device);
    }
    let script = if point.stage { &record["stage"]["script"] } else { &record["script"] }
        .as_str()
        .ok_or_else(|| anyhow!("{}: no script", dir.display()))?
        .to_string();
    cmd.arg("run").arg(&script).arg("--out").arg(&out);
    let declared = if point.stage {
        Some(crate::cli::declared_params(&vidtune_runtime::fsutil::read_text(Path::new(&script), "stage script")?).0)
    } else {
        None
    };
    for s in record["set"].as_array().into_iter().flatten().filter_map(|s| s.as_str()) {
        let name = s.split_once('=').map_or(s, |(k, _)| k).trim();
        if declared.as_ref().is_none_or(|d| d.contains(name)) {
            cmd.arg("--set").arg(s);
        }
    }
    for (k, v) in &point.params {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    spawn_point(dir, point, cmd, log, threads, slurm_task, device)
}

/// Starts a point's command, its output in `log`, and records it as running.
fn spawn_point(
    dir: &Path,
    point: &Point,
    mut cmd: std::process::Command,
    log: std::fs::File,
    threads: Option<usize>,
    slurm_task: Option<String>,
    device: Option<&(String, String)>,
) -> anyhow::Result<std::process::Child> {
    if let Some(t) = threads {
        cmd.env("VIDTUNE_THREADS", t.to_string());
    }
    if let Some((_, visible)) = device {
        cmd.env("CUDA_VISIBLE_DEVICES", visible);
    }
    cmd.stdout(log.try_clone()?).stderr(log);
    let child = cmd.spawn().context("starting a point's run")?;
    let mut fields = serde_json::json!({"status": "running", "pid": child.id(), "host": host()});
    if let Some((name, _)) = device {
        fields["device"] = name.clone().into();
    }
    if let Some(t) = slurm_task {
        fields["slurm_task"] = t.into();
    }
    write_point(dir, point, fields)?;
    Ok(child)
}

/// Records how `point`'s run ended and prints it; its status.
fn finish_point(
    dir: &Path,
    point: &Point,
    exit: std::process::ExitStatus,
    seconds: f64,
    progress: &str,
) -> anyhow::Result<&'static str> {
    let log = std::fs::read_to_string(point.folder(dir).join("log.txt")).unwrap_or_default();
    let (status, error) = match exit.code() {
        Some(0) => ("done", None),
        Some(130) | Some(143) => ("cancelled", Some("interrupted".to_string())),
        _ => ("failed", Some(run_error(&log).unwrap_or_else(|| format!("the run exited with {exit}")))),
    };
    // The device the run had stays in the record.
    let device = std::fs::read_to_string(point.folder(dir).join("point.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|j| j["device"].clone())
        .unwrap_or_default();
    let mut fields =
        serde_json::json!({"status": status, "exit_code": exit.code(), "seconds": seconds, "error": error});
    if !device.is_null() {
        fields["device"] = device;
    }
    write_point(dir, point, fields)?;
    println!(
        "{status:<9} {} ({seconds:.1} s{}){}",
        describe(point),
        if progress.is_empty() { String::new() } else { format!("; {progress}") },
        error.map(|e| format!(": {e}")).unwrap_or_default()
    );
    Ok(status)
}

/// `vidtune sweep run-point DIR --index K [--stage]`: point K (or stage point K) of the sweep in DIR, run
/// and recorded (a Slurm array task's command).
pub(super) fn run_point(dir: &Path, index: usize, stage: bool) -> anyhow::Result<std::process::ExitCode> {
    let sweep = read_sweep(dir)?;
    let list = if stage { &sweep.stages } else { &sweep.points };
    let point =
        list.get(index).ok_or_else(|| anyhow!("{}: no point {index} ({} points)", dir.display(), list.len()))?;
    if let Some(s) = sweep.stage_of(point).filter(|s| !point.stage && read_state(dir, s).status != "done") {
        let why = format!("its stage {} is not done", s.key);
        write_point(dir, point, serde_json::json!({"status": "failed", "error": why}))?;
        bail!("{why}");
    }
    let task = std::env::var("SLURM_ARRAY_JOB_ID")
        .ok()
        .map(|j| format!("{j}_{}", std::env::var("SLURM_ARRAY_TASK_ID").unwrap_or_default()));
    let started = std::time::Instant::now();
    let mut child = start_point(dir, point, None, task, None)?;
    let exit = child.wait().context("waiting for the point's run")?;
    Ok(match finish_point(dir, point, exit, started.elapsed().as_secs_f64(), "")? {
        "done" => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::from(1),
    })
}

/// A failed run's error, from its output: the last script error (`file:line:col: …` or `error: …`) with
/// the lines that follow it (its code, its notes), else a Rust panic's message (`thread … panicked at`
/// and the line after), else the last lines. Backtraces (`RUST_BACKTRACE`) are left out.
pub fn run_error(log: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let is_script_error = |l: &str| {
        l.starts_with("error: ") || {
            let mut parts = l.splitn(4, ':');
            let (_, line, col, rest) = (parts.next(), parts.next(), parts.next(), parts.next());
            [line, col].iter().all(|p| p.is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())))
                && rest.is_some_and(|r| r.starts_with(' '))
        }
    };
    if let Some(i) = lines.iter().rposition(|l| is_script_error(l)) {
        return Some(lines[i..(i + 6).min(lines.len())].join("\n"));
    }
    if let Some(i) = lines.iter().rposition(|l| l.starts_with("thread '") && l.contains("panicked at")) {
        return Some(lines[i..(i + 2).min(lines.len())].join("\n"));
    }
    (!lines.is_empty()).then(|| lines[lines.len().saturating_sub(6)..].join("\n"))
}
