//! `vidtune bench`: Tune-A-Video's job — inflate, tune, DDIM-invert, sample with guidance — on a model
//! or on a random model of a given shape (`tiny`, `medium`, SD1.4's `sd14`), stage by stage: time,
//! steps/s, peak resident memory, and the achieved GFLOP/s against the work the models did (linear
//! layers, convolutions and attention products, counted as they run; a tuning step's backward is taken
//! as one more forward, Tune-A-Video training a small part of the UNet). A table on the terminal and
//! JSON. A benchmark, not a test: the test suite only checks that it runs on the tiny shape.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;
use vidtune_runtime::media::synthetic::{synthetic_clip, SyntheticSpec};
use vidtune_runtime::pipelines::invert::{invert, InvertOptions};
use vidtune_runtime::pipelines::sample::{sample, SampleOptions};
use vidtune_runtime::pipelines::tune::{tune_clips, TuneClip, TuneOptions};
use vidtune_runtime::sd::{load_sd, SdLoadOptions};
use vidtune_runtime::video::{inflate, VideoSpec};

/// What `vidtune bench` runs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `tiny`, `medium`, `sd14` (random weights of that shape), or a model as `load_sd` takes it.
    pub model: String,
    pub frames: usize,
    pub size: i64,
    pub tune_steps: i64,
    pub steps: i64,
    pub device: String,
    pub dtype: Option<String>,
    pub json: Option<PathBuf>,
}

/// One stage's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stage {
    pub name: &'static str,
    pub seconds: f64,
    pub steps: i64,
    pub steps_per_second: Option<f64>,
    /// Peak resident memory of the process during the stage (the high-water mark is reset before it).
    pub peak_rss_mb: Option<f64>,
    pub gflop: f64,
    pub gflop_per_second: Option<f64>,
}

/// The process's resident high-water mark in MB (Linux), after resetting it when `reset`.
fn peak_rss_mb(reset: bool) -> Option<f64> {
    if reset {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        return None;
    }
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<f64>().ok().map(|kb| kb / 1024.0)
}

fn stage<T>(
    name: &'static str,
    steps: i64,
    backward_factor: f64,
    f: impl FnOnce() -> vidtune_runtime::Result<T>,
) -> anyhow::Result<(T, Stage)> {
    peak_rss_mb(true);
    let start = Instant::now();
    let (out, flop) = vidtune_runtime::flops::counting(f);
    let seconds = start.elapsed().as_secs_f64();
    let gflop = flop as f64 * backward_factor / 1e9;
    let per_s = |x: f64| (seconds > 0.0 && x > 0.0).then(|| x / seconds);
    let s = Stage {
        name,
        seconds,
        steps,
        steps_per_second: per_s(steps as f64),
        peak_rss_mb: peak_rss_mb(false),
        gflop,
        gflop_per_second: per_s(gflop),
    };
    Ok((out?, s))
}

pub fn run(o: &BenchOptions) -> anyhow::Result<Vec<Stage>> {
    let spec = match o.model.as_str() {
        "tiny" | "medium" | "sd14" => format!("random:{}", o.model),
        other => other.to_string(),
    };
    let load = SdLoadOptions { device: o.device.clone(), dtype: o.dtype.clone(), ..Default::default() };
    let (sd, load_stage) = stage("load", 0, 1.0, || load_sd(&spec, &load))?;
    let sd = Rc::new(sd);
    let clip = synthetic_clip(&SyntheticSpec {
        frames: o.frames,
        width: o.size,
        height: o.size,
        seed: 1,
        ..Default::default()
    })?
    .video;
    let prompt = "a red circle moving on a striped background";
    let (model, inflate_stage) = stage("inflate", 0, 1.0, || inflate(sd.clone(), &VideoSpec::default(), 0))?;
    let clips = [TuneClip { video: clip.clone(), prompt: prompt.into(), masks: None }];
    let tune_opts = TuneOptions { steps: o.tune_steps, ..Default::default() };
    // A tuning step: the forward, and a backward of about the same cost (Tune-A-Video trains the
    // attention queries and the temporal layers, so most weight gradients are never formed).
    let (tuned, tune_stage) = stage("tune", o.tune_steps, 2.0, || tune_clips(&model, &clips, &tune_opts))?;
    let inv_opts = InvertOptions { steps: o.steps, prompt: String::new(), ..Default::default() };
    let (latents, invert_stage) = stage("invert", o.steps, 1.0, || tch::no_grad(|| invert(&tuned, &clip, &inv_opts)))?;
    let sample_opts = SampleOptions { steps: o.steps, guidance: 7.5, seed: Some(33), ..Default::default() };
    let (_, sample_stage) = stage("sample", o.steps, 1.0, || {
        tch::no_grad(|| sample(&tuned, "a blue circle moving on a striped background", Some(&latents), &sample_opts))
    })?;
    let stages = vec![load_stage, inflate_stage, tune_stage, invert_stage, sample_stage];
    print_table(o, &spec, &stages);
    if let Some(path) = &o.json {
        let json = serde_json::json!({
            "model": spec,
            "frames": o.frames,
            "size": o.size,
            "tune_steps": o.tune_steps,
            "steps": o.steps,
            "device": o.device,
            "dtype": format!("{:?}", sd.dtype),
            "threads": tch::get_num_threads(),
            "vidtune_version": vidtune_runtime::VERSION,
            "libtorch_version": vidtune_runtime::env::libtorch_version(),
            "stages": stages,
            "total_seconds": stages.iter().map(|s| s.seconds).sum::<f64>(),
        });
        vidtune_runtime::fsutil::write_bytes_atomic(path, serde_json::to_string_pretty(&json)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(stages)
}

fn print_table(o: &BenchOptions, spec: &str, stages: &[Stage]) {
    println!(
        "\n{spec}: {} frames at {}², tune {}, invert {}, sample {} (guidance 7.5), {} on {}\n",
        o.frames,
        o.size,
        o.tune_steps,
        o.steps,
        o.steps,
        o.dtype.as_deref().unwrap_or("default dtype"),
        o.device
    );
    println!("| stage | time | steps/s | peak RSS | GFLOP | GFLOP/s |");
    println!("|---|---|---|---|---|---|");
    let opt = |v: Option<f64>, digits: usize| v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "–".into());
    for s in stages {
        println!(
            "| {} | {:.2} s | {} | {} MB | {:.1} | {} |",
            s.name,
            s.seconds,
            opt(s.steps_per_second, 2),
            opt(s.peak_rss_mb, 0),
            s.gflop,
            opt(s.gflop_per_second, 1)
        );
    }
    let total: f64 = stages.iter().map(|s| s.seconds).sum();
    println!("| total | {total:.2} s | | | | |");
}
