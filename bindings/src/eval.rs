//! `vidtune eval`: recipes over an edit suite — the built-in toy suite (`toy:dev`, `toy:test`) or a
//! folder in the LOVEU-TGVE-2023 layout — written in the challenge's result layout, judged per kind of
//! edit, and tabled (`results.md` / `.csv` / `.html` / `.json`).
//!
//! A recipe is a preset name (`auto`, `mask-guided`, `tune-a-video`, `ei2`, `dynamic-mask`: the built-in
//! `scripts/edit.rhai` with that `method`; `zero-shot` and `video-p2p`: the built-in `scripts/zero-shot.rhai`
//! and `scripts/video-p2p.rhai`) or a
//! `.rhai` script. Each case runs the script in a fresh
//! session with the parameters `video`, `masks` (when the suite has them), `prompt`, `edit`, `subject`,
//! `edit_type` (and `type`), `click_x` / `click_y`, `frames`, `size`, `model` and `out`; it returns the
//! edited Video. Sessions share the process's models and memo, so a video's tuning serves its edits.
//!
//! `--jobs N` (or `--backend slurm`) makes the videos the points of a sweep (`crate::sweep`) in
//! `OUT/.sweep/<key>/`: each runs this program on the video's cases (`--report FILE`) with its share of
//! the CPU threads, and the reports are merged in the suite's order. A video whose process fails counts
//! its cases failed; running the same evaluation again runs only the videos not done.

use anyhow::{anyhow, bail, Context};
use rhai::Dynamic;
use std::path::{Path, PathBuf};
use vidtune_runtime::eval::run::{run_suite, save_reports, table, Report, RunOptions};
use vidtune_runtime::eval::{loveu, toy_suite, CaseInput, EditType, Selection, Suite};
use vidtune_runtime::media::Video;
use vidtune_runtime::models::clip::ClipModel;

/// The recommended recipe script, built in.
pub const EDIT_SCRIPT: &str = include_str!("../../scripts/edit.rhai");
/// Recipe names that run [`EDIT_SCRIPT`] with that `method`.
pub const BUILTIN_RECIPES: [&str; 5] = ["auto", "mask-guided", "tune-a-video", "ei2", "dynamic-mask"];
/// The zero-shot recipe (no tuning, attention fusion), built in as `zero-shot`.
pub const ZERO_SHOT_SCRIPT: &str = include_str!("../../scripts/zero-shot.rhai");
/// Video-P2P's recipe (tuning, null-text inversion, prompt-to-prompt with the source branch), built in as
/// `video-p2p`.
pub const VIDEO_P2P_SCRIPT: &str = include_str!("../../scripts/video-p2p.rhai");

#[derive(clap::Args, Debug, Clone)]
pub struct EvalOptions {
    /// The suite: toy:dev, toy:test (toy:dev:all, toy:test:8: more of the split's videos), or a folder (or
    /// its CSV) in the LOVEU-TGVE-2023 layout
    #[arg(required_unless_present = "write_suite")]
    pub suite: Option<String>,
    /// Recipes, each a row of the table: auto, mask-guided, tune-a-video, ei2, dynamic-mask, zero-shot,
    /// video-p2p, or a .rhai script (repeat, or separate with commas)
    #[arg(long, value_delimiter = ',', default_value = "auto")]
    pub recipe: Vec<String>,
    /// Where results go (default: out/eval/<suite>): <split>/<video>/<type>/00000.jpg… with a GIF beside
    /// each, sheets/, results.{md,csv,html,json}; with several recipes, a folder per recipe
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The Stable Diffusion model the recipes load (default: the built-in toy model)
    #[arg(long, default_value = "toy")]
    pub model: String,
    /// CLIP model for CLIP-T and CLIP-F (default: toy for toy suites, else openai/clip-vit-large-patch14
    /// where it is in the Hugging Face cache); "none" skips them
    #[arg(long)]
    pub clip: Option<String>,
    /// PickScore model (yuvalkirstain/PickScore_v1, or a folder) for the PickScore column
    #[arg(long)]
    pub pickscore: Option<String>,
    /// Only these cases: split/video/type names or parts of them (comma-separated)
    #[arg(long, value_delimiter = ',')]
    pub cases: Vec<String>,
    /// Only these edit types: colour, object, background, style, multiple (comma-separated)
    #[arg(long, value_delimiter = ',')]
    pub types: Vec<String>,
    /// At most this many cases
    #[arg(long)]
    pub limit: Option<usize>,
    /// Frames of each suite video (folders; default: all)
    #[arg(long)]
    pub frames: Option<usize>,
    /// Keep one frame in every N (folders)
    #[arg(long)]
    pub every: Option<usize>,
    /// Resize suite videos to SIZE² (folders; default: their size)
    #[arg(long)]
    pub size: Option<i64>,
    /// Recipe parameters, as for `run`: --set steps=300
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Worker processes (default: one), or with --backend slurm the array's throttle; the videos are the
    /// points of a sweep in OUT/.sweep/ (a video's edits in one process, where its tuning is memoised), and
    /// running the same evaluation again runs only the videos not done
    #[arg(long)]
    pub jobs: Option<usize>,
    /// local (worker processes here) or slurm (a job array through sbatch, a task per video), as for
    /// `vidtune sweep`
    #[arg(long, default_value = "local", value_parser = ["local", "slurm"])]
    pub backend: String,
    /// Local workers, one per device, as for `vidtune sweep`: --devices cuda:0,cuda:1 runs a video on each
    /// GPU at a time
    #[arg(long, value_name = "DEV,…", value_delimiter = ',', conflicts_with = "jobs")]
    pub devices: Vec<String>,
    /// Options passed to sbatch as they are, with --backend slurm (partition, gres, time)
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub slurm_args: Option<String>,
    /// Write a suite (toy:dev, toy:test) in the LOVEU-TGVE-2023 layout to DIR, to look at or edit
    #[arg(long, num_args = 2, value_names = ["SUITE", "DIR"], conflicts_with = "suite")]
    pub write_suite: Option<Vec<String>>,
    /// Internal: run as one point of the evaluation's sweep (a video's cases), writing the report to this
    /// file instead of the tables
    #[arg(long, hide = true, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// Reads a suite by name.
pub fn load_suite(name: &str, opts: &EvalOptions) -> anyhow::Result<Suite> {
    let (base, widen) = toy_suite::Widen::strip(name);
    if let Some(parsed) = toy_suite::Split::parse_suite(base) {
        let (split, count) = parsed?;
        let suite = toy_suite::toy_suite(split, count)?;
        return Ok(match widen {
            Some(w) => w.apply(suite)?,
            None => suite,
        });
    }
    if let Some(w) = widen {
        anyhow::bail!("suite {name}: {} widens a toy suite (toy:dev:all{0}), not a folder", w.suffix());
    }
    let read = loveu::ReadOptions { frames: opts.frames, every: opts.every, size: opts.size };
    Ok(loveu::read_suite(Path::new(name), &read)?)
}

/// A recipe: a built-in method or a script.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub name: String,
    /// The script's name (for errors) and text.
    pub source: String,
    pub code: String,
    /// The built-in method, for [`EDIT_SCRIPT`].
    pub method: Option<String>,
}

impl Recipe {
    pub fn parse(name: &str) -> anyhow::Result<Recipe> {
        if BUILTIN_RECIPES.contains(&name) {
            return Ok(Recipe {
                name: name.into(),
                source: "scripts/edit.rhai".into(),
                code: EDIT_SCRIPT.into(),
                method: Some(name.into()),
            });
        }
        for (builtin, code) in [("zero-shot", ZERO_SHOT_SCRIPT), ("video-p2p", VIDEO_P2P_SCRIPT)] {
            if name == builtin {
                let source = format!("scripts/{builtin}.rhai");
                return Ok(Recipe { name: name.into(), source, code: code.into(), method: None });
            }
        }
        let path = Path::new(name);
        if path.extension().is_some_and(|e| e == "rhai") || path.exists() {
            let code = vidtune_runtime::fsutil::read_text(path, "recipe script")?;
            let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| name.into());
            return Ok(Recipe { name: stem, source: name.into(), code, method: None });
        }
        bail!(
            "unknown recipe {name:?}; expected {}, zero-shot, video-p2p or a .rhai script",
            BUILTIN_RECIPES.join(", ")
        )
    }

    /// Runs the recipe on one case in a fresh session; the script's value must be the edited Video.
    pub fn run(&self, input: &CaseInput, model: &str, extra: &[(String, Dynamic)]) -> vidtune_runtime::Result<Video> {
        let (v, e) = (input.video, input.edit);
        let mut s = crate::Session::new();
        s.set_param("video", Dynamic::from(v.video.clone()));
        if let Some(m) = &v.masks {
            s.set_param("masks", Dynamic::from(m.clone()));
        }
        s.set_param("prompt", v.caption.clone());
        s.set_param("edit", e.prompt.clone());
        s.set_param("edit_type", e.kind.name().to_string());
        s.set_param("type", e.kind.name().to_string());
        if let Some(subject) = &e.subject {
            s.set_param("subject", subject.clone());
        }
        if let Some((x, y)) = v.click {
            s.set_param("click_x", x.round() as i64);
            s.set_param("click_y", y.round() as i64);
        }
        s.set_param("frames", v.video.len() as i64);
        s.set_param("size", v.video.width().max(v.video.height()));
        s.set_param("model", model.to_string());
        s.set_param("out", input.out.display().to_string());
        if let Some(m) = &self.method {
            s.set_param("method", m.clone());
            s.set_param("save", false);
        }
        for (k, val) in extra {
            s.set_param(k, val.clone());
        }
        let value = s.run_source(&self.code, &self.source).map_err(|err| {
            if err.cancelled {
                vidtune_runtime::Error::Cancelled
            } else {
                vidtune_runtime::Error::Invalid(format!("recipe {}: {err}", self.name))
            }
        })?;
        let type_name = value.type_name().to_string();
        value.try_cast::<Video>().ok_or_else(|| {
            vidtune_runtime::Error::Invalid(format!(
                "recipe {}: the script's last value is {type_name}, expected the edited Video (end the script with it)",
                self.name
            ))
        })
    }
}

fn selection(opts: &EvalOptions) -> anyhow::Result<Selection> {
    let types = opts.types.iter().map(|t| EditType::parse(t)).collect::<Result<Vec<_>, _>>()?;
    Ok(Selection { cases: opts.cases.clone(), types, limit: opts.limit })
}

/// The CLIP model for CLIP-T / CLIP-F, if any.
fn clip_model(opts: &EvalOptions, toy: bool) -> anyhow::Result<Option<ClipModel>> {
    let name = match opts.clip.as_deref() {
        Some("none") => return Ok(None),
        Some(n) => n.to_string(),
        None if toy => "toy".into(),
        None => {
            let name = "openai/clip-vit-large-patch14";
            match ClipModel::load(name, "cpu", None) {
                Ok(m) => return Ok(Some(m)),
                Err(e) => {
                    eprintln!("note: no CLIP-T / CLIP-F ({name}: {e}); give --clip PATH");
                    return Ok(None);
                }
            }
        }
    };
    Ok(Some(ClipModel::load(&name, "cpu", None).with_context(|| format!("--clip {name}"))?))
}

/// `vidtune eval`.
pub fn run(opts: &EvalOptions) -> anyhow::Result<()> {
    if let Some(w) = &opts.write_suite {
        let (name, dir) = (&w[0], PathBuf::from(&w[1]));
        let suite = load_suite(name, opts)?;
        loveu::write_suite(&suite, &dir)?;
        println!("wrote {} ({} videos) to {}", suite.name, suite.videos.len(), dir.display());
        return Ok(());
    }
    if let Some((reports, out)) = evaluate(opts)? {
        finish(&reports, &out)?;
    }
    Ok(())
}

/// Runs the recipes over the suite and writes what `vidtune eval` writes (the LOVEU layout, the sheets,
/// the results files); the reports and the output folder, or nothing for one point of a sweep (its report
/// goes to its `--report` file).
pub fn evaluate(opts: &EvalOptions) -> anyhow::Result<Option<(Vec<Report>, PathBuf)>> {
    let name = opts.suite.clone().ok_or_else(|| anyhow!("eval: give a suite (toy:dev, toy:test or a folder)"))?;
    let recipes = opts.recipe.iter().map(|r| Recipe::parse(r)).collect::<anyhow::Result<Vec<_>>>()?;
    let sel = selection(opts)?;
    let mut extra = crate::cli::parse_sets(&opts.set).map_err(|e| anyhow!(e))?;
    // The recipe chooses with the CLIP that scores, unless told otherwise.
    if let Some(c) = opts.clip.as_deref().filter(|c| *c != "none") {
        if !extra.iter().any(|(k, _)| k == "clip") {
            extra.insert(0, ("clip".into(), Dynamic::from(c.to_string())));
        }
    }
    let out = opts.out.clone().unwrap_or_else(|| PathBuf::from("out/eval").join(name.replace([':', '/'], "-")));
    let suite = load_suite(&name, opts)?;
    let toy = suite.videos.iter().all(|v| v.truth.is_some());
    let jobs = opts.jobs.unwrap_or(1).max(1);
    if opts.report.is_none() && (jobs > 1 || opts.backend == "slurm" || !opts.devices.is_empty()) {
        let reports = run_on_sweep(opts, &suite, &recipes, &out, &sel)?;
        save_reports(&reports, &out)?;
        return Ok(Some((reports, out)));
    }
    if opts.backend != "slurm" && opts.slurm_args.is_some() {
        bail!("--slurm-args is for --backend slurm");
    }
    let clip = clip_model(opts, toy)?;
    let pick = match &opts.pickscore {
        Some(p) => Some(ClipModel::load(p, "cpu", None).with_context(|| format!("--pickscore {p}"))?),
        None => None,
    };
    let several = recipes.len() > 1;
    let mut reports: Vec<Report> = vec![];
    for r in &recipes {
        let dir = if several { out.join(&r.name) } else { out.clone() };
        let run_opts = RunOptions {
            out: dir,
            selection: sel.clone(),
            clip: clip.as_ref(),
            pick: pick.as_ref(),
            save: opts.report.is_none(),
        };
        let previous = if several { vec![] } else { reports.clone() };
        let report = if suite.videos.is_empty() {
            Report { suite: suite.name.clone(), recipe: r.name.clone(), cases: vec![] }
        } else {
            run_suite(&suite, &r.name, &run_opts, &previous, &mut |input| r.run(input, &opts.model, &extra))?
        };
        reports.push(report);
    }
    if let Some(path) = &opts.report {
        let json = serde_json::json!(reports.iter().map(Report::to_json).collect::<Vec<_>>());
        vidtune_runtime::fsutil::write_bytes_atomic(path, json.to_string().as_bytes())?;
        return Ok(None);
    }
    save_reports(&reports, &out)?;
    Ok(Some((reports, out)))
}

fn finish(reports: &[Report], out: &Path) -> anyhow::Result<()> {
    print!("{}", table(reports).to_pretty());
    for r in reports {
        for c in r.cases.iter().filter(|c| c.error.is_some()) {
            println!("failed: {}: {}", c.id, c.error.as_deref().unwrap_or(""));
        }
    }
    println!("results: {}", out.join("results.md").display());
    Ok(())
}

/// Runs the suite as a sweep over its videos (`--jobs N` local workers, or a Slurm array): a point per
/// video with its selected cases, each this program with `--report`, in `OUT/.sweep/<key>` (keyed by the
/// command and the recipes' texts, so a changed evaluation starts afresh and the same one resumes). The
/// reports merged in the suite's order; the cases of a video whose process failed carry its error.
fn run_on_sweep(
    opts: &EvalOptions,
    suite: &Suite,
    recipes: &[Recipe],
    out: &Path,
    sel: &Selection,
) -> anyhow::Result<Vec<Report>> {
    use crate::sweep::{point_key, Point};
    let cases = suite.cases(sel)?;
    let ids: Vec<String> = cases.iter().map(|c| suite.case_id(*c)).collect();
    // A point per video: its selected cases, by id.
    let mut points: Vec<Point> = vec![];
    for (c, id) in cases.iter().zip(&ids) {
        let v = &suite.videos[c.video];
        let video = format!("{}/{}", v.split, v.name);
        match points.iter_mut().find(|p| p.params[0].1 == video) {
            Some(p) => p.params[1].1 = format!("{},{id}", p.params[1].1),
            None => points.push(Point {
                key: point_key(&[("video".into(), video.replace('/', "-"))]),
                params: vec![("video".into(), video), ("cases".into(), id.clone())],
                stage: false,
            }),
        }
    }
    // Two videos whose names differ only in / and - get folders of their own.
    let mut seen = std::collections::BTreeSet::new();
    for p in &mut points {
        if !seen.insert(p.key.clone()) {
            p.key = point_key(&p.params[..1]);
        }
    }
    // Paths stay as given: the points' processes start in this folder (Slurm's tasks too, in the folder
    // they were submitted from), and errors name the files as the user did.
    let absolute = |p: &str| p.to_string();
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let suite_name = opts.suite.clone().unwrap_or_default();
    let mut command: Vec<String> = vec!["eval".into(), absolute(&suite_name)];
    command.extend(["--recipe".into(), opts.recipe.iter().map(|r| absolute(r)).collect::<Vec<_>>().join(",")]);
    command.extend(["--out".into(), absolute(&out.display().to_string()), "--model".into(), opts.model.clone()]);
    for (flag, v) in [("--clip", &opts.clip), ("--pickscore", &opts.pickscore)] {
        if let Some(v) = v {
            command.extend([flag.to_string(), absolute(v)]);
        }
    }
    for (flag, v) in [("--frames", opts.frames), ("--every", opts.every)] {
        if let Some(v) = v {
            command.extend([flag.to_string(), v.to_string()]);
        }
    }
    if let Some(s) = opts.size {
        command.extend(["--size".into(), s.to_string()]);
    }
    for s in &opts.set {
        command.extend(["--set".into(), s.clone()]);
    }
    command.extend(["--cases".into(), "{cases}".into(), "--report".into(), "{out}/report.json".into()]);
    let mut key = vidtune_runtime::cache::KeyBuilder::new("eval-sweep").text(&command.join("\n"));
    for r in recipes {
        key = key.text(&r.code);
    }
    for p in &points {
        key = key.text(&p.params[1].1);
    }
    let dir = out.join(".sweep").join(&key.finish()[..16]);
    let args = crate::sweep::SweepArgs {
        action: None,
        script: None,
        dir: None,
        axes: vec![],
        set: vec![],
        jobs: opts.jobs,
        backend: opts.backend.clone(),
        slurm_args: opts.slurm_args.clone(),
        dry_run: false,
        stage: None,
        stage_by: vec![],
        filter: None,
        devices: opts.devices.clone(),
        resume: None,
    };
    crate::sweep::run_command(&dir, &command, &points, &args)?;
    if vidtune_runtime::progress::cancel_requested() {
        return Err(vidtune_runtime::Error::Cancelled.into());
    }
    // Merge: each recipe's cases from every video, in the suite's order.
    let mut reports: Vec<Report> =
        recipes.iter().map(|r| Report { suite: suite.name.clone(), recipe: r.name.clone(), cases: vec![] }).collect();
    for p in &points {
        let state = crate::sweep::point_state(&dir, p);
        let path = p.folder(&dir).join("report.json");
        let parts = match std::fs::read_to_string(&path) {
            Ok(text) if state.status == "done" => {
                let json: serde_json::Value =
                    serde_json::from_str(&text).with_context(|| path.display().to_string())?;
                json.as_array().into_iter().flatten().map(Report::from_json).collect::<Result<Vec<_>, _>>()?
            }
            _ => {
                // Its cases failed with the process.
                let why = format!(
                    "the process for {} did not finish ({}): {}",
                    p.params[0].1,
                    state.status,
                    state.error.unwrap_or_default().lines().next().unwrap_or_default()
                );
                let failed = cases
                    .iter()
                    .zip(&ids)
                    .filter(|(_, id)| p.params[1].1.split(',').any(|c| c == id.as_str()))
                    .map(|(c, id)| {
                        let e = &suite.videos[c.video].edits[c.edit];
                        vidtune_runtime::eval::run::CaseResult::new(id.clone(), e, Some(why.clone()))
                    })
                    .collect::<Vec<_>>();
                reports
                    .iter()
                    .map(|r| Report { suite: r.suite.clone(), recipe: r.recipe.clone(), cases: failed.clone() })
                    .collect()
            }
        };
        for (report, part) in reports.iter_mut().zip(parts) {
            report.cases.extend(part.cases);
        }
    }
    for r in &mut reports {
        r.cases.sort_by_key(|c| ids.iter().position(|id| *id == c.id).unwrap_or(usize::MAX));
    }
    Ok(reports)
}
