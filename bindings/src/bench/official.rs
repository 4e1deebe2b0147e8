//! `vidtune bench --compare official`: the same job through the official Tune-A-Video code
//! (`examples/bench/official_tav.py`, carried in the binary), with vidtune's process settings on request
//! (`--same-settings`), and the stage-by-stage ratios.

use super::{BenchOptions, Stage};
use std::path::PathBuf;
use vidtune_runtime::memory;

/// The official code's figures: run now (`official`) or read from its JSON.
/// `checkpointing`: what vidtune's tuning did, which `--same-settings` has the official run do too.
pub(super) fn official_figures(
    o: &BenchOptions,
    which: &str,
    checkpointing: bool,
) -> anyhow::Result<serde_json::Value> {
    if which != "official" {
        let text = std::fs::read_to_string(which).map_err(|e| anyhow::anyhow!("--compare {which}: {e}"))?;
        return serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("--compare {which}: not JSON: {e}"));
    }
    let dir = o.official_dir.clone().or_else(|| std::env::var_os("TUNE_A_VIDEO_DIR").map(PathBuf::from)).ok_or_else(
        || {
            anyhow::anyhow!(
                "--compare official needs a checkout of showlab/Tune-A-Video: --official-dir DIR or TUNE_A_VIDEO_DIR \
                 (set-up: examples/bench/official_tav.py)"
            )
        },
    )?;
    if !dir.join("tuneavideo").is_dir() {
        anyhow::bail!("--official-dir {}: not a Tune-A-Video checkout (no tuneavideo/ folder)", dir.display());
    }
    if !matches!(o.model.as_str(), "medium" | "sd14") {
        anyhow::bail!("--compare official runs the medium and sd14 configs (the official UNet has four levels)");
    }
    let python = o
        .official_python
        .clone()
        .or_else(|| std::env::var_os("VIDTUNE_OFFICIAL_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"));
    // A folder of our own for the script and its JSON, removed afterwards.
    let work = std::env::temp_dir().join(format!("vidtune-official-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let script = work.join("official_tav.py");
    std::fs::write(&script, OFFICIAL_SCRIPT)?;
    let out = work.join("official.json");
    let device = match vidtune_runtime::device::parse_device(&o.device)? {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    };
    let mut command = std::process::Command::new(&python);
    command
        .arg(&script)
        .args(["--tav", &dir.to_string_lossy(), "--config", &o.model, "--device", &device])
        .args(["--frames", &o.frames.to_string(), "--size", &o.size.to_string()])
        .args(["--tune-steps", &o.tune_steps.to_string(), "--steps", &o.steps.to_string()])
        .args(["--precision", &o.official_precision, "--json", &out.to_string_lossy()]);
    let settings = if o.same_settings {
        // The same job too: every trainable tensor trained, and checkpointing as vidtune tunes.
        command.arg(if checkpointing { "--train-all" } else { "--no-checkpointing" });
        Some(same_settings(&mut command, &work).map(|s| {
            let how =
                if checkpointing { "with checkpointing that trains every tensor" } else { "without checkpointing" };
            format!("{s}; the same job: tuning {how}")
        }))
    } else {
        // As it ships: without the huge pages vidtune asked for itself.
        if memory::huge_pages_set_here() {
            command.env_remove(memory::HUGE_PAGES_VAR);
        }
        None
    };
    let figures = match settings.transpose() {
        Err(e) => Err(e),
        Ok(settings) => {
            match &settings {
                Some(s) => println!("\nthe official code ({}), with vidtune's process settings: {s}", python.display()),
                None => println!("\nthe official code ({}):", python.display()),
            }
            let status = command.status().map_err(|e| anyhow::anyhow!("{}: {e}", python.display()))?;
            if status.success() {
                std::fs::read_to_string(&out)
                    .map_err(anyhow::Error::from)
                    .and_then(|t| Ok(serde_json::from_str::<serde_json::Value>(&t)?))
                    .map(|mut v| {
                        if let (Some(s), Some(map)) = (settings, v.as_object_mut()) {
                            map.insert("same_settings".into(), s.into());
                        }
                        v
                    })
            } else {
                Err(anyhow::anyhow!("the official code failed ({status}); its output is above"))
            }
        }
    };
    for f in [&script, &out, &work.join(MKL_ANSWER_LIB), &work.join("mkl_answer.c")] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir(&work);
    figures
}

const MKL_ANSWER_LIB: &str = "libvidtune_mkl_answer.so";

/// Gives the official run vidtune's process settings (`--same-settings`); returns them in words. The
/// allocator's are glibc's variables; MKL's answer, on an AMD CPU where vidtune gives it, is a library
/// compiled here into `work` and preloaded; the threads are vidtune's count. A user's own `MALLOC_*`
/// variables, `VIDTUNE_MALLOC=default` and `VIDTUNE_MKL=default` carry over as they are.
fn same_settings(command: &mut std::process::Command, work: &std::path::Path) -> anyhow::Result<String> {
    use vidtune_runtime::cpu::{mkl_dispatch, MklDispatch};
    let mut said = vec![];
    let user_malloc = std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("MALLOC_"));
    if !user_malloc && std::env::var("VIDTUNE_MALLOC").map_or(true, |v| v != "default") {
        let env = vidtune_runtime::memory::allocator_env();
        said.push(env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "));
        command.envs(env);
    }
    if memory::huge_pages_set_here() {
        // Inherited already; said, since it is one of vidtune's settings.
        said.push(format!("{}=1", memory::HUGE_PAGES_VAR));
    }
    if mkl_dispatch() == MklDispatch::AmdAvx512 {
        let source = work.join("mkl_answer.c");
        let lib = work.join(MKL_ANSWER_LIB);
        std::fs::write(&source, "int mkl_serv_intel_cpu_true(void) { return 1; }\n")?;
        let compiled = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&lib)
            .arg(&source)
            .status()
            .map_err(|e| anyhow::anyhow!("--same-settings compiles MKL's answer for this AMD CPU with cc: {e}"))?;
        if !compiled.success() {
            anyhow::bail!("--same-settings: cc could not compile MKL's answer ({compiled})");
        }
        let preload = match std::env::var_os("LD_PRELOAD") {
            Some(p) if !p.is_empty() => format!("{}:{}", lib.display(), p.to_string_lossy()),
            _ => lib.display().to_string(),
        };
        command.env("LD_PRELOAD", preload);
        said.push("MKL's AVX-512 kernels (its vendor check answered by a preloaded library)".into());
    }
    let threads = tch::get_num_threads();
    command.args(["--threads", &threads.to_string()]);
    said.push(format!("{threads} threads"));
    Ok(said.join("; "))
}

/// The official runner, carried in the binary so `--compare official` works from anywhere.
const OFFICIAL_SCRIPT: &str = include_str!("../../../examples/bench/official_tav.py");

/// Seconds of the official run's stages by name (its `load` covers vidtune's load and inflate).
fn official_seconds(off: &serde_json::Value, name: &str) -> Option<f64> {
    off["stages"].as_array()?.iter().find(|s| s["name"] == name)?["seconds"].as_f64()
}

pub(super) fn print_comparison(stages: &[Stage], off: &serde_json::Value) {
    let ours = |names: &[&str]| stages.iter().filter(|s| names.contains(&s.name)).map(|s| s.seconds).sum::<f64>();
    if let Some(same) = off["same_settings"].as_str() {
        println!("\nthe official run had vidtune's process settings: {same}");
    }
    if let (Some(trained), Some(trainable)) = (off["trained_tensors"].as_u64(), off["trainable_tensors"].as_u64()) {
        if trained < trainable {
            println!(
                "the official tuning trained {trained} of its {trainable} trainable tensors: its reentrant checkpointing \
                 gives the down blocks no gradient (showlab/Tune-A-Video issues #18, #69), so its backward pass stops \
                 at the mid block and its tuning step does less than vidtune's; --same-settings runs the same job"
            );
        }
    }
    // How close each program comes to the matrix-product peak, both at vidtune's count of the work (the
    // official code does a little more: the text projected for every frame, and in tuning the clip encoded
    // at every step), so the official figure is a lower bound.
    println!(
        "\n| stage | official | vidtune | speed-up | of the peak: official | vidtune |\n|---|---|---|---|---|---|"
    );
    let mut total = (0.0, 0.0);
    for (name, mine) in [
        ("load", vec!["load", "inflate"]),
        ("tune", vec!["tune"]),
        ("invert", vec!["invert"]),
        ("sample", vec!["sample"]),
    ] {
        let Some(theirs) = official_seconds(off, name) else { continue };
        let v = ours(&mine);
        total = (total.0 + theirs, total.1 + v);
        let share = stages.iter().find(|s| s.name == name).and_then(|s| s.share_of_peak);
        let (at_theirs, at_ours) = match share {
            Some(x) => (format!("{:.0} %", 100.0 * x * v / theirs), format!("{:.0} %", 100.0 * x)),
            None => ("–".into(), "–".into()),
        };
        println!("| {name} | {theirs:.2} s | {v:.2} s | {:.2}× | {at_theirs} | {at_ours} |", theirs / v);
    }
    println!("| total | {:.2} s | {:.2} s | {:.2}× | | |", total.0, total.1, total.0 / total.1);
    let peak = |xs: Vec<f64>| xs.into_iter().fold(0.0f64, f64::max);
    let their_rss = peak(
        off["stages"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["peak_rss_mb"].as_f64()).collect())
            .unwrap_or_default(),
    );
    let our_rss = peak(stages.iter().filter_map(|s| s.peak_rss_mb).collect());
    if their_rss > 0.0 && our_rss > 0.0 {
        println!("peak RSS: official {their_rss:.0} MB, vidtune {our_rss:.0} MB ({:.2}×)", our_rss / their_rss);
    }
}
