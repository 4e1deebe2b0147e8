//! `vidtune sweep`: a script run over a grid of parameters, one point per combination of the axes'
//! values, each point an independent `vidtune run SCRIPT --set … --out DIR/points/<key>` process.
//!
//! - `DIR/sweep.json`: the script, its fixed parameters, the axes and the points, in grid order.
//! - `DIR/points/<key>/`: the point's outputs (the script's paths inside it), `log.txt` (everything the
//!   run printed) and `point.json` (its parameters, status — running, done, failed or cancelled —,
//!   exit code, seconds, and the error's last lines), each written atomically.
//! - Running a sweep again runs only the points that are not done: missing, failed, cancelled, or
//!   "running" in a process of this machine that no longer exists.
//! - `--jobs N` runs N points at a time, each with its share of the CPU threads; a run that dies costs
//!   only its point.
//!
//! `vidtune sweep status DIR` lists the points; `vidtune sweep collect DIR` writes the table of every
//! point (parameters, status, seconds, the scores its run returned — `value.json`, the script's value —,
//! outputs, error) as `results.{md,csv,html,json}` in DIR, and `sheet.png`, a row of frames per point.
//!
//! `point.rs` runs and records one point (and holds the local backend's workers); `slurm.rs` is the Slurm
//! backend (batch scripts, sbatch, squeue); `report.rs` the tables.

use anyhow::{anyhow, bail, Context};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod point;
mod report;
mod slurm;

pub use point::run_error;
use point::{describe, eta, run_local, run_point, Workers};
pub use report::table;
use report::{collect, counts, status};
pub use slurm::batch_script;
use slurm::{run_slurm, squeue};

#[derive(clap::Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub action: Option<SweepAction>,
    /// The script each point runs
    pub script: Option<PathBuf>,
    /// The sweep's folder (sweep.json, points/<key>/)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// An axis of the grid: --axis seed=1,2,3 (the script reads it with param("seed", …)); the grid is
    /// the product of the axes
    #[arg(long = "axis", value_name = "NAME=V1,V2,…")]
    pub axes: Vec<String>,
    /// Parameters every point gets, as for `run`
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Points run at a time: local workers, each with its share of the CPU threads (default 1), or
    /// the Slurm array's throttle (%N; default none)
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// local (worker processes here) or slurm (a job array through sbatch, followed with squeue)
    #[arg(long, default_value = "local", value_parser = ["local", "slurm"])]
    pub backend: String,
    /// Options passed to sbatch as they are: --slurm-args="--partition=gpu --gres=gpu:1 --time=1:00:00"
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub slurm_args: Option<String>,
    /// With --backend slurm: write and print the batch script and the sbatch command, submit nothing
    #[arg(long)]
    pub dry_run: bool,
    /// A script every point needs run first, once per combination of the --stage-by axes (e.g. the tune
    /// of a clip that several seeds sample from): its results reach the points through the memo; with
    /// Slurm, its own array, which the points' array waits for (--dependency=afterok)
    #[arg(long, value_name = "SCRIPT")]
    pub stage: Option<PathBuf>,
    /// The axes the stage depends on: --stage-by clip,lr (default: none, one stage run for the sweep)
    #[arg(long, value_name = "NAME,…")]
    pub stage_by: Vec<String>,
    /// Only the points of the grid for which this Rhai expression over the axes is true:
    /// --where 'seed < 3 || recipe == "mask-guided"' (values typed as --set types them)
    #[arg(long = "where", value_name = "EXPR")]
    pub filter: Option<String>,
    /// Local workers, one per device: --devices cuda:0,cuda:1 (each worker sees only its GPU; repeat one
    /// for two workers on it; cpu for a CPU worker)
    #[arg(long, value_name = "DEV,…", value_delimiter = ',', conflicts_with = "jobs")]
    pub devices: Vec<String>,
    /// Runs the sweep recorded in DIR again, as it was given (script, axes, parameters, stage), with this
    /// backend: only the points that are not done
    #[arg(long, value_name = "DIR", conflicts_with_all = ["script", "dir", "axes", "set", "stage", "stage_by", "filter"])]
    pub resume: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum SweepAction {
    /// What is done, running, failed or missing
    Status { dir: PathBuf },
    /// The table of every point with the scores its script returned, written as results.{md,csv,html,json}
    /// in DIR; sheet.png, the frames of each point's clip; and the failures with their errors
    Collect { dir: PathBuf },
    /// Runs one point of a sweep (what each Slurm array task runs)
    #[command(hide = true)]
    RunPoint {
        dir: PathBuf,
        #[arg(long)]
        index: usize,
        /// A stage run's index, not a point's
        #[arg(long)]
        stage: bool,
    },
}

/// One point of the grid: its parameters in axis order, and the folder name they give.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub key: String,
    pub params: Vec<(String, String)>,
    /// A shared stage's point (`--stage`), run before the points that need it.
    pub stage: bool,
}

impl Point {
    /// Its folder: `DIR/points/<key>`, or `DIR/stages/<key>` for a stage.
    pub fn folder(&self, dir: &Path) -> PathBuf {
        dir.join(if self.stage { "stages" } else { "points" }).join(&self.key)
    }

    /// The stage point `self` needs: its parameters on the axes `by`.
    fn stage_key(&self, by: &[String]) -> String {
        point_key(&self.params.iter().filter(|(k, _)| by.contains(k)).cloned().collect::<Vec<_>>())
    }
}

/// The stage points of `points`: one per distinct combination of their values on the axes `by`, in grid
/// order.
pub fn stage_points(points: &[Point], by: &[String]) -> Vec<Point> {
    let mut out: Vec<Point> = vec![];
    for p in points {
        let params: Vec<(String, String)> = p.params.iter().filter(|(k, _)| by.contains(k)).cloned().collect();
        let key = point_key(&params);
        if !out.iter().any(|s| s.key == key) {
            out.push(Point { key, params, stage: true });
        }
    }
    out
}

/// The points of `grid` for which `filter`, a Rhai expression over the axes (typed as `--set` types
/// values), is true.
pub fn filter_points(points: Vec<Point>, filter: &str) -> anyhow::Result<Vec<Point>> {
    let engine = rhai::Engine::new();
    let ast = engine.compile_expression(filter).map_err(|e| anyhow!("--where {filter:?}: {e}"))?;
    let mut kept = vec![];
    for p in points {
        let mut scope = rhai::Scope::new();
        for (k, v) in &p.params {
            let (_, value) = crate::cli::parse_set(&format!("{k}={v}")).map_err(|e| anyhow!(e))?;
            scope.push_dynamic(k.clone(), value);
        }
        let keep = engine
            .eval_ast_with_scope::<rhai::Dynamic>(&mut scope, &ast)
            .map_err(|e| anyhow!("--where {filter:?} on {}: {e}", describe(&p)))?;
        let keep = keep.as_bool().map_err(|t| anyhow!("--where {filter:?}: gives {t}, expected true or false"))?;
        if keep {
            kept.push(p);
        }
    }
    if kept.is_empty() {
        bail!("--where {filter:?} leaves no point of the grid");
    }
    Ok(kept)
}

/// `CUDA_VISIBLE_DEVICES` for a worker on `device` (`cuda:N`, `cuda`, `cpu`): its GPU alone, or none.
pub fn visible_devices(device: &str) -> anyhow::Result<String> {
    match device.trim() {
        "cpu" => Ok(String::new()),
        "cuda" | "gpu" => Ok("0".into()),
        d => d
            .strip_prefix("cuda:")
            .filter(|n| n.parse::<usize>().is_ok())
            .map(str::to_string)
            .ok_or_else(|| anyhow!("--devices {d}: expected cuda:N, cuda or cpu")),
    }
}

/// The grid of `axes` (`NAME=V1,V2,…`), in order (the last axis varies fastest).
pub fn grid(axes: &[String]) -> anyhow::Result<Vec<Point>> {
    let mut parsed: Vec<(String, Vec<String>)> = vec![];
    for a in axes {
        let (name, values) = a.split_once('=').ok_or_else(|| anyhow!("--axis {a:?}: expected NAME=V1,V2,…"))?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("--axis {a:?}: the name must be a script parameter name (letters, digits, _)");
        }
        if parsed.iter().any(|(n, _)| n == name) {
            bail!("--axis {name} is given twice");
        }
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
        if values.iter().any(String::is_empty) {
            bail!("--axis {a:?}: an empty value");
        }
        parsed.push((name.to_string(), values));
    }
    let mut points: Vec<Vec<(String, String)>> = vec![vec![]];
    for (name, values) in &parsed {
        points = points
            .into_iter()
            .flat_map(|p| values.iter().map(move |v| [p.clone(), vec![(name.clone(), v.clone())]].concat()))
            .collect();
    }
    let mut seen = std::collections::BTreeSet::new();
    points
        .into_iter()
        .map(|params| {
            let key = point_key(&params);
            if !seen.insert(key.clone()) {
                bail!("two points of the grid share the folder {key:?}: give distinct values");
            }
            Ok(Point { key, params, stage: false })
        })
        .collect()
}

/// A point's folder name: `name=value` pairs joined by `_`, characters other than letters, digits and
/// `.-=+` replaced, and long names cut with a hash of the whole.
pub(crate) fn point_key(params: &[(String, String)]) -> String {
    if params.is_empty() {
        return "all".into();
    }
    let text = params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("_");
    let safe: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() || "._-=+".contains(c) { c } else { '~' }).collect();
    let safe = safe.trim_start_matches('.').to_string();
    if safe.len() <= 80 && safe == text {
        return safe;
    }
    let hash = vidtune_runtime::cache::KeyBuilder::new("sweep-point").text(&text).finish();
    format!("{}-{}", &safe.chars().take(60).collect::<String>(), &hash[..12])
}

/// The status of a point, from its `point.json` (missing when there is none).
#[derive(Debug, Clone, PartialEq)]
pub struct PointState {
    pub status: String,
    pub seconds: Option<f64>,
    pub error: Option<String>,
}

/// A point's status (`vidtune eval` reads its points' this way).
pub fn point_state(dir: &Path, point: &Point) -> PointState {
    read_state(dir, point)
}

fn read_state(dir: &Path, point: &Point) -> PointState {
    let path = point.folder(dir).join("point.json");
    let missing = PointState { status: "missing".into(), seconds: None, error: None };
    let Ok(text) = std::fs::read_to_string(&path) else { return missing };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else { return missing };
    let mut status = json["status"].as_str().unwrap_or("missing").to_string();
    // A run this machine no longer has died without a word: its point is missing.
    if status == "running" {
        let here = json["host"].as_str() == Some(&host());
        let alive = json["pid"].as_u64().is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        // A Slurm task on another node: gone when squeue no longer lists it.
        let task_gone = json["slurm_task"].as_str().is_some_and(|t| squeue(t).is_some_and(|s| s.is_empty()));
        if (here && !alive) || (!here && task_gone) {
            status = "missing".into();
        }
    }
    PointState { status, seconds: json["seconds"].as_f64(), error: json["error"].as_str().map(str::to_string) }
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

pub(crate) fn write_point(dir: &Path, point: &Point, fields: serde_json::Value) -> anyhow::Result<()> {
    let mut json = serde_json::json!({
        "key": point.key,
        "params": point.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>(),
    });
    if let (Some(obj), Some(extra)) = (json.as_object_mut(), fields.as_object()) {
        obj.extend(extra.clone());
    }
    let path = point.folder(dir).join("point.json");
    vidtune_runtime::fsutil::write_bytes_atomic(&path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    Ok(())
}

/// Records a sweep that a script runs in its own session (`sweep(axes, f, #{dir})`): `DIR/sweep.json`
/// with its points, so that `vidtune sweep status` and `collect` read it as they read one run from the
/// command line. Its points are not run again from here: the script runs them.
pub(crate) fn write_script_record(dir: &Path, script: &str, points: &[Point]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("points")).with_context(|| dir.display().to_string())?;
    let record =
        serde_json::json!({"script": script, "in_script": true, "set": [], "axes": [], "points": points_json(points)});
    vidtune_runtime::fsutil::write_bytes_atomic(
        &dir.join("sweep.json"),
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )?;
    Ok(())
}

/// What `DIR/sweep.json` records: the record, the grid's points and the stage's points.
struct Sweep {
    record: serde_json::Value,
    points: Vec<Point>,
    stages: Vec<Point>,
    /// The axes the stage depends on.
    stage_by: Vec<String>,
}

impl Sweep {
    /// Refuses a sweep a script's `sweep()` ran in its own session: only that script runs its points.
    fn runnable_here(&self, dir: &Path) -> anyhow::Result<()> {
        if self.record["in_script"].as_bool() == Some(true) {
            bail!(
                "{}: this sweep was run by the script {} (its sweep() function); run that script again",
                dir.display(),
                self.record["script"].as_str().unwrap_or("?")
            );
        }
        Ok(())
    }

    /// The stage point `point` needs, if the sweep has a stage.
    fn stage_of(&self, point: &Point) -> Option<&Point> {
        let key = point.stage_key(&self.stage_by);
        self.stages.iter().find(|s| s.key == key)
    }
}

fn parse_points(list: &serde_json::Value, stage: bool) -> Vec<Point> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let params = p["params"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|kv| Some((kv[0].as_str()?.to_string(), kv[1].as_str()?.to_string())))
                .collect();
            Point { key: p["key"].as_str().unwrap_or_default().to_string(), params, stage }
        })
        .collect()
}

fn points_json(points: &[Point]) -> serde_json::Value {
    points.iter().map(|p| serde_json::json!({"key": p.key, "params": p.params})).collect()
}

/// The sweep recorded in `DIR/sweep.json`.
fn read_sweep(dir: &Path) -> anyhow::Result<Sweep> {
    let path = dir.join("sweep.json");
    let text = vidtune_runtime::fsutil::read_text(&path, "sweep record")
        .map_err(|e| anyhow!("{e} (is {} a sweep's folder?)", dir.display()))?;
    let record: serde_json::Value = serde_json::from_str(&text).with_context(|| path.display().to_string())?;
    if !record["points"].is_array() {
        bail!("{}: no points", path.display());
    }
    let points = parse_points(&record["points"], false);
    let stages = parse_points(&record["stage"]["points"], true);
    let stage_by =
        record["stage"]["by"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
    Ok(Sweep { record, points, stages, stage_by })
}

pub fn run(args: &SweepArgs) -> anyhow::Result<std::process::ExitCode> {
    match &args.action {
        Some(SweepAction::Status { dir }) => status(dir).map(|_| std::process::ExitCode::SUCCESS),
        Some(SweepAction::Collect { dir }) => collect(dir).map(|_| std::process::ExitCode::SUCCESS),
        Some(SweepAction::RunPoint { dir, index, stage }) => run_point(dir, *index, *stage),
        None => match &args.resume {
            Some(dir) => resume(args, dir),
            None => run_grid(args),
        },
    }
}

/// `--resume DIR`: the recorded sweep, given again with this run's backend options.
fn resume(args: &SweepArgs, dir: &Path) -> anyhow::Result<std::process::ExitCode> {
    let sweep = read_sweep(dir)?;
    sweep.runnable_here(dir)?;
    let r = &sweep.record;
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
    };
    if r["command"].is_array() {
        return run_recorded(args, dir);
    }
    let mut again = args.clone();
    again.resume = None;
    again.dir = Some(dir.to_path_buf());
    again.script = r["script"].as_str().map(PathBuf::from);
    again.axes = strings(&r["axes"]);
    again.set = strings(&r["set"]);
    again.filter = r["where"].as_str().map(String::from);
    again.stage = r["stage"]["script"].as_str().map(PathBuf::from);
    again.stage_by = strings(&r["stage"]["by"]);
    run_grid(&again)
}

fn run_grid(args: &SweepArgs) -> anyhow::Result<std::process::ExitCode> {
    let script = args.script.as_ref().ok_or_else(|| anyhow!("sweep: give a script (or status DIR / collect DIR)"))?;
    let dir = args.dir.as_ref().ok_or_else(|| anyhow!("sweep: give --dir DIR, the sweep's folder"))?;
    let mut points = grid(&args.axes)?;
    if let Some(f) = &args.filter {
        points = filter_points(points, f)?;
    }
    check_backend(args)?;
    let fixed = crate::cli::parse_sets(&args.set).map_err(|e| anyhow!(e))?;
    let script = checked_script(script, &fixed, points.first())?;
    let stage_by: Vec<String> = args.stage_by.iter().flat_map(|s| s.split(',')).map(|s| s.trim().to_string()).collect();
    let axis_names: Vec<&String> =
        points.first().map(|p| p.params.iter().map(|(k, _)| k).collect()).unwrap_or_default();
    if let Some(a) = stage_by.iter().find(|a| !axis_names.contains(a)) {
        bail!("--stage-by {a}: not an axis of the sweep ({axis_names:?})");
    }
    let stages = match &args.stage {
        Some(stage) => {
            let stages = stage_points(&points, &stage_by);
            // The stage reads the axes it is run by, and whichever fixed parameters it declares.
            let code = vidtune_runtime::fsutil::read_text(stage, "stage script")?;
            let declared = crate::cli::declared_params(&code).0;
            let fixed: Vec<_> = fixed.iter().filter(|(k, _)| declared.contains(k)).cloned().collect();
            Some((checked_script(stage, &fixed, stages.first())?, stages))
        }
        None if !stage_by.is_empty() => bail!("--stage-by needs --stage SCRIPT"),
        None => None,
    };
    std::fs::create_dir_all(dir.join("points")).with_context(|| dir.display().to_string())?;
    let record = serde_json::json!({
        "script": script,
        "set": args.set,
        "axes": args.axes,
        "where": args.filter,
        "points": points_json(&points),
        "stage": stages.as_ref().map(|(s, p)| serde_json::json!({"script": s, "by": stage_by, "points": points_json(p)})),
    });
    vidtune_runtime::fsutil::write_bytes_atomic(
        &dir.join("sweep.json"),
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )?;
    run_recorded(args, dir)
}

/// The backend options, checked before anything is written: the devices' names, and the Slurm options
/// given only with Slurm.
fn check_backend(args: &SweepArgs) -> anyhow::Result<Vec<(String, String)>> {
    let devices = args
        .devices
        .iter()
        .map(|d| visible_devices(d).map(|v| (d.trim().to_string(), v)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !devices.is_empty() && args.backend != "local" {
        bail!("--devices is for --backend local (with Slurm, ask for GPUs with --slurm-args=\"--gres=gpu:1\")");
    }
    if args.backend != "slurm" && (args.dry_run || args.slurm_args.is_some()) {
        bail!("--dry-run and --slurm-args are for --backend slurm");
    }
    Ok(devices)
}

/// A sweep whose points each run a vidtune command rather than a script: `command`'s arguments with
/// `{out}` replaced by the point's folder and `{NAME}` by its parameter NAME. Recorded in `dir` and run
/// with `args`' backend options (`vidtune eval` spreads its videos over workers or a Slurm array this way).
pub fn run_command(
    dir: &Path,
    command: &[String],
    points: &[Point],
    args: &SweepArgs,
) -> anyhow::Result<std::process::ExitCode> {
    check_backend(args)?;
    std::fs::create_dir_all(dir.join("points")).with_context(|| dir.display().to_string())?;
    let record = serde_json::json!({"command": command, "set": [], "axes": [], "points": points_json(points)});
    vidtune_runtime::fsutil::write_bytes_atomic(
        &dir.join("sweep.json"),
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )?;
    run_recorded(args, dir)
}

/// Runs the sweep recorded in `dir` with `args`' backend: the points not done.
fn run_recorded(args: &SweepArgs, dir: &Path) -> anyhow::Result<std::process::ExitCode> {
    let devices = check_backend(args)?;
    let sweep = read_sweep(dir)?;
    if args.backend == "slurm" {
        return run_slurm(args, dir, &sweep);
    }
    let not_done = |list: &[Point]| list.iter().filter(|p| read_state(dir, p).status != "done").count();
    let jobs = if devices.is_empty() { args.jobs.unwrap_or(1).max(1) } else { devices.len() };
    // The workers share the threads this process would run (auto: the cores other programs leave free).
    vidtune_runtime::cpu::settle_threads();
    let cores = vidtune_runtime::cpu::threads().map_or_else(vidtune_runtime::cpu::available_cores, |t| t.count);
    let threads = (cores / jobs.min(not_done(&sweep.points).max(1))).max(1);
    let workers = Workers { jobs, threads, devices };
    println!(
        "sweep of {} points in {}: {} to run ({} done){}, {jobs} at a time, {threads} thread(s) each{}",
        sweep.points.len(),
        dir.display(),
        not_done(&sweep.points),
        sweep.points.len() - not_done(&sweep.points),
        if sweep.stages.is_empty() {
            String::new()
        } else {
            format!(", after {} of {} stage runs", not_done(&sweep.stages), sweep.stages.len())
        },
        if workers.devices.is_empty() {
            String::new()
        } else {
            format!(" on {}", workers.devices.iter().map(|(d, _)| d.as_str()).collect::<Vec<_>>().join(", "))
        },
    );
    // Stages first, then the points whose stage is done.
    let stage_failures = run_local(dir, &sweep.stages, &workers, &|_| None)?;
    let point_failures = run_local(dir, &sweep.points, &workers, &|p: &Point| {
        let stage = sweep.stage_of(p)?;
        (read_state(dir, stage).status != "done").then(|| format!("its stage {} is not done", stage.key))
    })?;
    let failed = stage_failures + point_failures;
    println!(
        "{} done, {failed} not; `vidtune sweep collect {}` tables them",
        sweep.points.len() - not_done(&sweep.points),
        dir.display()
    );
    if vidtune_runtime::progress::cancel_requested() {
        return Ok(std::process::ExitCode::from(crate::signals::exit_status()));
    }
    Ok(if not_done(&sweep.points) > 0 { std::process::ExitCode::from(1) } else { std::process::ExitCode::SUCCESS })
}

/// `script`, absolute, once its parameters are checked: the fixed ones and the axes of `point`.
fn checked_script(script: &Path, fixed: &[(String, rhai::Dynamic)], point: Option<&Point>) -> anyhow::Result<PathBuf> {
    let code = vidtune_runtime::fsutil::read_text(script, "script")?;
    let absolute = std::fs::canonicalize(script).with_context(|| script.display().to_string())?;
    let axes: Vec<(String, rhai::Dynamic)> = point
        .map(|p| p.params.iter().map(|(k, v)| (k.clone(), rhai::Dynamic::from(v.clone()))).collect())
        .unwrap_or_default();
    crate::cli::check_sets(&code, &absolute.display().to_string(), &[fixed.to_vec(), axes].concat())
        .map_err(|e| anyhow!(e))?;
    Ok(absolute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_the_product_of_the_axes_with_safe_distinct_folders() {
        let g = grid(&["seed=1,2".into(), "prompt=a red car,a/b".into()]).unwrap();
        let keys: Vec<&str> = g.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys.len(), 4);
        assert_eq!(keys[0].split('-').next().unwrap(), "seed=1_prompt=a~red~car");
        assert!(keys.iter().all(|k| !k.contains('/') && !k.contains(' ')), "{keys:?}");
        assert_eq!(g[3].params, [("seed".to_string(), "2".to_string()), ("prompt".to_string(), "a/b".to_string())]);
        assert_eq!(grid(&["seed=1,2".into()]).unwrap()[1].key, "seed=2");
        for (bad, says) in [("seed", "NAME=V1"), ("seed=1,", "empty value"), ("a b=1", "parameter name")] {
            let e = grid(&[bad.into()]).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(grid(&["s=1".into(), "s=2".into()]).unwrap_err().to_string().contains("twice"));
        assert!(grid(&["s=1,1".into()]).unwrap_err().to_string().contains("share the folder"));
    }

    #[test]
    fn devices_become_visible_gpus_and_filters_keep_points() {
        assert_eq!(visible_devices("cuda:1").unwrap(), "1");
        assert_eq!(visible_devices("cuda").unwrap(), "0");
        assert_eq!(visible_devices("cpu").unwrap(), "");
        for bad in ["cuda:x", "tpu", "cuda:"] {
            assert!(visible_devices(bad).unwrap_err().to_string().contains("expected cuda:N"), "{bad}");
        }
        let g = grid(&["seed=1,2,3".into(), "method=a,b".into()]).unwrap();
        let kept = filter_points(g.clone(), "seed < 3 && method == \"b\" || seed == 3").unwrap();
        let keys: Vec<&str> = kept.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["seed=1_method=b", "seed=2_method=b", "seed=3_method=a", "seed=3_method=b"]);
        assert!(filter_points(g.clone(), "seed > 9").unwrap_err().to_string().contains("leaves no point"));
        assert!(filter_points(g, "seeds > 1").unwrap_err().to_string().contains("seeds"));
    }

    #[test]
    fn a_runs_error_is_its_script_error_or_its_panic_without_the_backtrace() {
        let script = "note: random weights\nthread 'main' panicked at a.rs:1:2:\nboom\nstack backtrace:\n   0: f\n\
                      s.rhai:3:16: tune: internal error: boom\n3 | tune(m)\n  |   ^\n";
        assert_eq!(run_error(script).unwrap(), "s.rhai:3:16: tune: internal error: boom\n3 | tune(m)\n  |   ^");
        let panic =
            "note: x\nthread 'main' (7) panicked at src/a.rs:1:2:\nindex out of range\nstack backtrace:\n   0: f\n";
        assert_eq!(run_error(panic).unwrap(), "thread 'main' (7) panicked at src/a.rs:1:2:\nindex out of range");
        assert_eq!(run_error("a\nb\n").unwrap(), "a\nb");
        assert_eq!(run_error("\n"), None);
    }
}
