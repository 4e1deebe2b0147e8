//! The `vidtune` command line.

use clap::{Parser, Subcommand};
use rhai::Dynamic;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "vidtune", version, about = "One-shot, text-driven video editing with Stable Diffusion 1.x", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// libtorch's CPU threads: a number; all (the cores this process may use: its CPU affinity and
    /// quota); or auto (those cores less the ones other programs keep busy, looked at up to the first
    /// model call: on a busy machine, fewer threads run faster). Default: VIDTUNE_THREADS, else auto;
    /// `run --from` uses the recorded run's count
    #[arg(long, global = true, value_name = "N|auto|all")]
    threads: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a .rhai script
    Run {
        /// The script
        #[arg(required_unless_present = "from")]
        file: Option<PathBuf>,
        /// Script parameters, read with param("name", default): --set steps=10 --set prompt="a red car"
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Rerun a saved result from its run record: a sidecar (out/edit.json), a PNG frame or an mp4 that
        /// vidtune saved; the recorded script, parameters and seeds (--set changes parameters)
        #[arg(long, value_name = "RESULT", conflicts_with = "file")]
        from: Option<PathBuf>,
        /// The folder the run writes its outputs under (their paths inside it as the script gives them);
        /// with --from the default is the first free rerun-N here, so the run it came from is never
        /// written over. The script's value, when it is a map, a number or an array (its scores, say), goes
        /// to DIR/value.json, which `sweep collect` tables
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Run a script and rerun it whenever it, or a file it reads, is saved
    Watch {
        /// The script
        file: PathBuf,
        /// Script parameters, as for `run`
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
    },
    /// Interactive session (the default without a command)
    Repl,
    /// Show libtorch, CUDA, FFmpeg, ONNX Runtime and where model weights are looked for
    Doctor,
    /// Time Tune-A-Video's job (tune, invert, sample) stage by stage: speed, memory, GFLOP/s; with
    /// --compare official, the same job through the official Tune-A-Video code, and the ratios
    Bench(crate::bench::BenchOptions),
    /// Run a script over a grid of parameters (--axis seed=1,2 --axis prompt=…), one `run` per point under
    /// DIR/points/<key>/, N at a time; again, only what is not done; `sweep status DIR`, `sweep collect DIR`
    Sweep(crate::sweep::SweepArgs),
    /// Run edit recipes over a suite (toy:dev, toy:test, or LOVEU-TGVE-2023's layout) and table how they
    /// do per kind of edit
    Eval(crate::eval::EvalOptions),
    /// The toy world's models: train them from scratch, or measure a trained folder
    Toy {
        #[command(subcommand)]
        action: ToyAction,
    },
}

#[derive(Subcommand, Debug)]
enum ToyAction {
    /// Train the tiny SD1.x and CLIP models on synthetic clips and write a diffusers-layout folder
    Train {
        /// Where to write the folder (replaced whole when training succeeds)
        #[arg(long, default_value = "toy-models")]
        out: PathBuf,
        /// A few steps of everything, to try the command (the models learn nothing)
        #[arg(long)]
        quick: bool,
        /// Train only the ControlNet, into the existing toy folder --out (its SD models stay frozen as
        /// they are; `controlnet/` is replaced)
        #[arg(long)]
        controlnet_only: bool,
        /// cpu, cuda, cuda:N, auto
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Measure a toy folder on held-out clips and compare with the metrics.json it carries
    Eval {
        /// The folder (default: the toy models built into this binary)
        dir: Option<PathBuf>,
        /// Evaluate with the quick recipe's held-out set (for folders made with --quick)
        #[arg(long)]
        quick: bool,
    },
}

fn toy(action: ToyAction) -> anyhow::Result<()> {
    use vidtune_runtime::toy;
    match action {
        ToyAction::Train { out, quick, controlnet_only, device } => {
            let recipe = if quick { toy::Recipe::quick() } else { toy::Recipe::standard() };
            let device = vidtune_runtime::device::parse_device(&device)?;
            if controlnet_only {
                let l = toy::controlnet::train_into_folder(&recipe, &out, device)?;
                println!("{}: loss {:.4} -> {:.4} in {:.0} s", l.name, l.first_loss, l.last_loss, l.seconds);
                println!("wrote {}", out.join(toy::controlnet::FOLDER).display());
                return Ok(());
            }
            let (metrics, logs) = toy::train(&recipe, &out, device)?;
            for l in logs {
                println!("{:>5}: loss {:.4} -> {:.4} in {:.0} s", l.name, l.first_loss, l.last_loss, l.seconds);
            }
            println!("{}", serde_json::to_string_pretty(&metrics.to_json())?);
            println!("wrote {}", out.display());
            Ok(())
        }
        ToyAction::Eval { dir, quick } => {
            let recipe = if quick { toy::Recipe::quick() } else { toy::Recipe::standard() };
            let dir = match dir {
                Some(d) => d,
                None => toy::toy_dir()?,
            };
            let measured = toy::evaluate(&dir, &recipe)?;
            println!("{}", serde_json::to_string_pretty(&measured.to_json())?);
            let path = dir.join("metrics.json");
            if let Ok(text) = std::fs::read_to_string(&path) {
                let recorded = toy::Metrics::from_json(&serde_json::from_str(&text)?)?;
                let diffs = measured.differences(&recorded);
                if diffs.is_empty() {
                    println!("agrees with {} within the stated tolerances", path.display());
                } else {
                    anyhow::bail!("differs from {}: {}", path.display(), diffs.join("; "));
                }
            }
            Ok(())
        }
    }
}

/// Parses `name=value`: integers, floats and booleans keep their type, a JSON array or object
/// (`[[5, "changed"], [10, "none"]]`) becomes a Rhai array or map, anything else is a string.
pub fn parse_set(item: &str) -> Result<(String, Dynamic), String> {
    let (name, value) = item.split_once('=').ok_or_else(|| format!("--set {item}: expected NAME=VALUE"))?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(format!("--set {item}: {name:?} is not a variable name"));
    }
    let value = value.trim();
    let dynamic = if let Ok(i) = value.parse::<i64>() {
        Dynamic::from(i)
    } else if let Ok(f) = value.parse::<f64>() {
        Dynamic::from(f)
    } else if let Ok(b) = value.parse::<bool>() {
        Dynamic::from(b)
    } else if let Some(json) = (value.starts_with('[') || value.starts_with('{'))
        .then(|| serde_json::from_str::<serde_json::Value>(value).ok())
        .flatten()
    {
        json_to_dynamic(&json)
    } else {
        let unquoted = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        Dynamic::from(unquoted.to_string())
    };
    Ok((name.to_string(), dynamic))
}

pub(crate) fn parse_sets(items: &[String]) -> Result<Vec<(String, Dynamic)>, String> {
    items.iter().map(|s| parse_set(s)).collect()
}

/// `vidtune run`: Ctrl-C cancels the running primitive (the loops stop at their next step, files already
/// written stay, temporaries are removed) and the run ends with 130; SIGTERM likewise with 143
/// ([`crate::signals`]).
/// The names a script reads with `param("name", …)`, and whether it may read others: a `param` call with
/// a computed name, or an `import` (whose module may call `param`).
pub fn declared_params(code: &str) -> (std::collections::BTreeSet<String>, bool) {
    let mut names = std::collections::BTreeSet::new();
    let mut open_ended = code.contains("import ");
    let mut rest = code;
    while let Some(i) = rest.find("param(") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "param(".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // another name ending in "param"
        }
        let arg = rest.trim_start();
        match arg.strip_prefix('"').and_then(|a| a.find('"').map(|end| &a[..end])) {
            Some(name) if !name.contains('\\') => {
                names.insert(name.to_string());
            }
            _ => open_ended = true,
        }
    }
    (names, open_ended)
}

/// Refuses `--set` names that `code` never reads, before it runs, with the nearest name it does read.
/// A script that may read names it does not spell out is checked after the run instead (a warning).
pub(crate) fn check_sets(code: &str, script: &str, sets: &[(String, Dynamic)]) -> Result<(), String> {
    let (names, open_ended) = declared_params(code);
    if open_ended {
        return Ok(());
    }
    let known: Vec<&str> = names.iter().map(String::as_str).collect();
    for (name, _) in sets {
        if names.contains(name) {
            continue;
        }
        let hint = match crate::opts::did_you_mean(name, &known) {
            Some(n) => format!(" (did you mean {n:?}?)"),
            None => String::new(),
        };
        let list =
            if known.is_empty() { "it reads none".to_string() } else { format!("it reads {}", known.join(", ")) };
        return Err(format!("--set {name}: {script} never reads param({name:?}, …){hint}; {list}"));
    }
    Ok(())
}

fn run_script(file: &std::path::Path, params: &[(String, Dynamic)], out: Option<PathBuf>) -> ExitCode {
    crate::signals::install(crate::signals::Mode::Run);
    if !params.is_empty() {
        if let Ok(code) = vidtune_runtime::fsutil::read_text(file, "script") {
            if let Err(e) = check_sets(&code, &file.display().to_string(), params) {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let mut session = crate::Session::new();
    for (k, v) in params {
        session.set_param(k, v.clone());
    }
    if let Some(out) = &out {
        *session.host().out_root.borrow_mut() = Some(out.clone());
    }
    let result = session.run_file(file);
    if let (Some(out), Ok(value)) = (&out, &result) {
        if let Err(e) = save_value(out, value) {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    }
    for name in session.unused_params() {
        eprintln!("warning: --set {name} was given but the script never reads param({name:?}, …)");
    }
    // The session's models and clips are freed before the status is decided, so that a signal arriving
    // while they are still counts.
    drop(session);
    exit_status(result)
}

/// Writes a run's value to `out/value.json` when it is data — a map (scores), a number, a boolean or an
/// array — and not a clip, a model, nothing, or a string alone (what a script ending with a save returns:
/// the saved file's path).
fn save_value(out: &std::path::Path, value: &Dynamic) -> anyhow::Result<()> {
    fn is_data(v: &Dynamic) -> bool {
        v.is_bool()
            || v.is_int()
            || v.is_float()
            || v.is_string()
            || v.read_lock::<rhai::Array>().is_some_and(|a| a.iter().all(is_data))
            || v.read_lock::<rhai::Map>().is_some_and(|m| m.values().all(|x| x.is_unit() || is_data(x)))
    }
    if value.is_string() || !is_data(value) {
        return Ok(());
    }
    let text = serde_json::to_string_pretty(&crate::opts::to_json(value))?;
    vidtune_runtime::fsutil::write_output_bytes(&out.join("value.json"), text.as_bytes())?;
    Ok(())
}

/// A script run's exit status: 0, 1 for an error, 130 / 143 when interrupted (even when the script
/// caught the cancellation and went on).
fn exit_status<T>(result: Result<T, crate::diagnostics::ScriptError>) -> ExitCode {
    let interrupted = crate::signals::quit_requested() || vidtune_runtime::progress::cancel_requested();
    match result {
        Ok(_) if interrupted => ExitCode::from(crate::signals::exit_status()),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            crate::repl::print_error(&e);
            ExitCode::from(if e.cancelled || interrupted { crate::signals::exit_status() } else { 1 })
        }
    }
}

/// What `run --from` reads from a run record.
pub struct RecordedRun {
    /// The script's name and text.
    pub name: String,
    pub code: String,
    pub params: Vec<(String, Dynamic)>,
    /// The seeds its calls drew, in order.
    pub seeds: Vec<u64>,
    /// libtorch's CPU threads in that run (results can differ in the last bits between counts).
    pub threads: Option<usize>,
}

/// Reads a run record from a sidecar, a PNG frame or a video vidtune saved.
pub fn read_run_record(path: &std::path::Path) -> anyhow::Result<RecordedRun> {
    let no_record = || {
        anyhow::anyhow!(
            "{}: no run record (results saved by a script carry one; sidecars with #{{sidecar: true}})",
            path.display()
        )
    };
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
    let embedded = |pairs: Vec<(String, String)>| -> anyhow::Result<serde_json::Value> {
        let text = pairs.into_iter().find(|(k, _)| k == "vidtune").map(|(_, v)| v).ok_or_else(no_record)?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: the run record is not JSON: {e}", path.display()))
    };
    let json: serde_json::Value = match ext.as_str() {
        "png" => embedded(vidtune_runtime::media::image::png_text(path)?)?,
        #[cfg(feature = "ffmpeg")]
        "mp4" | "mov" | "mkv" | "webm" => embedded(vidtune_runtime::media::ffmpeg::read_metadata(path)?)?,
        _ => {
            let text = vidtune_runtime::fsutil::read_text(path, "sidecar")?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", path.display()))?;
            json.get("record").cloned().ok_or_else(no_record)?
        }
    };
    let record = &json;
    let script = record.get("script").filter(|s| !s.is_null()).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: the result was made in an interactive session, not by a script; nothing to rerun",
            path.display()
        )
    })?;
    let name = script.get("path").and_then(|p| p.as_str()).unwrap_or("script").to_string();
    let code = script
        .get("text")
        .and_then(|t| t.as_str())
        .ok_or_else(|| anyhow::anyhow!("{}: the run record has no script text", path.display()))?
        .to_string();
    let params = record
        .get("params")
        .and_then(|p| p.as_object())
        .map(|m| m.iter().map(|(k, v)| (k.clone(), json_to_dynamic(v))).collect())
        .unwrap_or_default();
    let seeds = record
        .get("calls")
        .and_then(|c| c.as_array())
        .map(|calls| {
            calls
                .iter()
                .filter(|c| c.get("seed_given").and_then(|g| g.as_bool()) == Some(false))
                .filter_map(|c| c.get("seed").and_then(|s| s.as_u64()))
                .collect()
        })
        .unwrap_or_default();
    let threads = record.get("threads").and_then(|t| t.as_u64()).map(|t| t as usize).filter(|t| *t > 0);
    Ok(RecordedRun { name, code, params, seeds, threads })
}

fn json_to_dynamic(v: &serde_json::Value) -> Dynamic {
    match v {
        serde_json::Value::Bool(b) => Dynamic::from(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from(i),
            None => Dynamic::from(n.as_f64().unwrap_or(0.0)),
        },
        serde_json::Value::String(s) => Dynamic::from(s.clone()),
        serde_json::Value::Array(a) => Dynamic::from(a.iter().map(json_to_dynamic).collect::<rhai::Array>()),
        serde_json::Value::Object(m) => {
            Dynamic::from(m.iter().map(|(k, v)| (k.as_str().into(), json_to_dynamic(v))).collect::<rhai::Map>())
        }
        serde_json::Value::Null => Dynamic::UNIT,
    }
}

/// `vidtune run --from SIDECAR.json`: the recorded script with its parameters (overridden by `--set`) and,
/// where its calls drew random seeds, the same seeds.
fn rerun(from: &std::path::Path, out: Option<PathBuf>, overrides: &[(String, Dynamic)]) -> ExitCode {
    let RecordedRun { name, code, mut params, seeds, threads } = match read_run_record(from) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = check_sets(&code, &name, overrides) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    for (k, v) in overrides {
        params.retain(|(name, _)| name != k);
        params.push((k.clone(), v.clone()));
    }
    let out = out.unwrap_or_else(free_rerun_dir);
    let recorded_threads = threads.filter(|_| !vidtune_runtime::cpu::threads_given());
    if let Some(n) = recorded_threads {
        vidtune_runtime::cpu::set_threads(n, vidtune_runtime::cpu::ThreadSource::Record);
    }
    crate::signals::install(crate::signals::Mode::Run);
    let mut session = crate::Session::new();
    for (k, v) in &params {
        session.set_param(k, v.clone());
    }
    session.host().replay_seeds.borrow_mut().extend(seeds);
    *session.host().out_root.borrow_mut() = Some(out.clone());
    let threads_said = recorded_threads.map(|n| format!(", {n} thread(s) as recorded")).unwrap_or_default();
    println!(
        "rerunning {name} from {} ({} parameters{threads_said}); its outputs go under {}/",
        from.display(),
        params.len(),
        out.display()
    );
    let result = session.run_source(&code, &name);
    drop(session);
    exit_status(result)
}

/// The first `rerun-N` (from 1) that does not exist in the current folder.
fn free_rerun_dir() -> PathBuf {
    (1..).map(|n| PathBuf::from(format!("rerun-{n}"))).find(|p| !p.exists()).expect("a free name")
}

/// The whole program; `main` only calls this.
pub fn main() -> ExitCode {
    // Before anything allocates a tensor or starts a thread.
    vidtune_runtime::memory::enable_huge_pages();
    vidtune_runtime::memory::tune_allocator();
    let cli = Cli::parse();
    if let Err(e) = vidtune_runtime::cpu::apply_threads(cli.threads.as_deref()) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let outcome = match cli.command {
        None | Some(Command::Repl) => match crate::repl::run() {
            Ok(()) if crate::signals::quit_requested() => return ExitCode::from(crate::signals::exit_status()),
            other => other,
        },
        Some(Command::Doctor) => crate::doctor::run(),
        Some(Command::Bench(o)) => crate::bench::run(&o).map(|_| ()),
        Some(Command::Toy { action }) => toy(action),
        Some(Command::Sweep(a)) => {
            crate::signals::install(crate::signals::Mode::Run);
            match crate::sweep::run(&a) {
                Ok(status) => return status,
                Err(e) => Err(e),
            }
        }
        Some(Command::Eval(o)) => {
            crate::signals::install(crate::signals::Mode::Run);
            crate::eval::run(&o)
        }
        Some(Command::Run { file, set, from, out }) => match (parse_sets(&set), file, from) {
            (Ok(params), Some(file), _) => return run_script(&file, &params, out),
            (Ok(params), None, Some(from)) => return rerun(&from, out, &params),
            (Ok(_), None, None) => Err(anyhow::anyhow!("run: give a script, or --from a sidecar")),
            (Err(e), ..) => Err(anyhow::anyhow!(e)),
        },
        Some(Command::Watch { file, set }) => {
            match parse_sets(&set)
                .map_err(|e| anyhow::anyhow!(e))
                .and_then(|params| crate::watch::watch(&file, &params))
            {
                Ok(status) => return ExitCode::from(status),
                Err(e) => Err(e),
            }
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_set;

    #[test]
    fn set_values_keep_their_type() {
        assert!(parse_set("steps=10").unwrap().1.is_int());
        assert!(parse_set("lr=3e-5").unwrap().1.is_float());
        assert!(parse_set("half=true").unwrap().1.is_bool());
        assert_eq!(parse_set("prompt=\"a red car\"").unwrap().1.to_string(), "a red car");
        let c = parse_set("candidates=[[5, \"changed\"], [7.5, \"none\"]]").unwrap().1.into_array().unwrap();
        let first = c[0].clone().into_array().unwrap();
        assert_eq!((first[0].as_int(), first[1].to_string().as_str()), (Ok(5), "changed"));
        assert!(c[1].clone().into_array().unwrap()[0].is_float());
        assert_eq!(parse_set("m={\"a\": 1}").unwrap().1.cast::<rhai::Map>()["a"].as_int(), Ok(1));
        assert_eq!(parse_set("p=[not json").unwrap().1.to_string(), "[not json");
        assert!(parse_set("nonsense").is_err());
        assert!(parse_set("a b=1").is_err());
    }
}
