//! `vidtune bench`: Tune-A-Video's job — inflate, tune, DDIM-invert, sample with guidance — on a model
//! or on a random model of a given shape (`tiny`, `medium`, SD1.4's `sd14`), stage by stage: time,
//! steps/s, peak resident memory, and the achieved GFLOP/s against the work the models did (linear
//! layers, convolutions and attention products, counted as they run; a tuning step's backward is taken
//! as one more forward, Tune-A-Video training a small part of the UNet). A table on the terminal and
//! JSON. A benchmark, not a test: the test suite only checks that it runs on the tiny shape.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;
use vidtune_runtime::device::dtype_name;
use vidtune_runtime::flops::Work;
use vidtune_runtime::options::GUIDANCE;
use vidtune_runtime::pipelines::invert::{invert, InvertOptions};
use vidtune_runtime::pipelines::sample::{sample, SampleOptions};
use vidtune_runtime::pipelines::tune::{tune_clips, TuneClip, TuneOptions};
use vidtune_runtime::synthetic::{synthetic_clip, SyntheticSpec};
use vidtune_runtime::video::{inflate, VideoSpec};
use vidtune_runtime::{load_sd, SdLoadOptions};

/// What `vidtune bench` runs.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// A random model of this shape (tiny, medium, sd14: SD1.4's architecture), or a model path / repo id
    #[arg(long = "config", default_value = "medium")]
    pub model: String,
    #[arg(long, default_value_t = 8)]
    pub frames: usize,
    /// Frame size (square)
    #[arg(long, default_value_t = 128)]
    pub size: i64,
    /// Tuning steps
    #[arg(long, default_value_t = 20)]
    pub tune_steps: i64,
    /// Inversion and sampling steps
    #[arg(long, default_value_t = 20)]
    pub steps: i64,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// The model's dtype: fp32, fp16 or bf16 (default: fp32 on the CPU, half on CUDA)
    #[arg(long)]
    pub dtype: Option<String>,
    /// Tuning precision: fp32, bf16 or fp16 (default: the model's dtype), float32 master weights
    #[arg(long)]
    pub precision: Option<String>,
    /// Gradient checkpointing while tuning: true or false (default: true on CUDA)
    #[arg(long)]
    pub checkpointing: Option<bool>,
    /// Also write the figures as JSON here
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Compare with the official Tune-A-Video code: `official` runs the same job through it (see
    /// --official-dir), or give the JSON an earlier run of examples/bench/official_tav.py wrote
    #[arg(long)]
    pub compare: Option<String>,
    /// A checkout of showlab/Tune-A-Video (default: $TUNE_A_VIDEO_DIR)
    #[arg(long)]
    pub official_dir: Option<PathBuf>,
    /// The Python with the official code's pins (default: $VIDTUNE_OFFICIAL_PYTHON, else python3)
    #[arg(long)]
    pub official_python: Option<PathBuf>,
    /// Precision of the official run: fp32, or bf16 / fp16 autocast (its mixed_precision setting)
    #[arg(long, default_value = "fp32")]
    pub official_precision: String,
    /// Give the official run vidtune's process settings, so that the ratios are the code's: glibc's
    /// allocator settings (as MALLOC_* variables), MKL's AVX-512 answer on AMD CPUs that have it (a
    /// one-function library compiled with `cc` and preloaded) and the same thread count
    #[arg(long)]
    pub same_settings: bool,
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
    /// Peak GPU memory of the process during the stage, as the driver reports it (`nvidia-smi`, polled
    /// every 50 ms: the caching allocator's reserved memory plus the CUDA context), on CUDA. Where the
    /// driver lists processes under pids of another namespace (containers, VMs), the device's use above
    /// what it was before the run's first stage.
    pub peak_gpu_mb: Option<f64>,
    pub gflop: f64,
    pub gflop_per_second: Option<f64>,
    /// The stage's GFLOP/s as a share of the machine's measured matrix-product rate in the dtype it
    /// computes in.
    pub share_of_peak: Option<f64>,
    /// Where the time went, in seconds (the CPU only, where operations are timed as they run): the
    /// forward products by kind, the backward and optimiser of tuning, and the rest (`other`: norms,
    /// activations, element-wise work, copies, host work).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_by_work: Option<std::collections::BTreeMap<&'static str, f64>>,
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

/// Polls the process's GPU memory (driver's figure) while a stage runs; the peak when stopped.
struct GpuPoll {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Option<f64>>,
}

/// One `nvidia-smi` reading in MB: this process's memory when the driver lists it by our pid, else the
/// whole GPU's use (in a container or VM the driver may list processes by pids of another namespace).
#[derive(Debug, Clone, Copy, PartialEq)]
enum GpuReading {
    Process(f64),
    Device(f64),
}

fn nvidia_smi(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("nvidia-smi").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Reads this process's GPU memory from `nvidia-smi`'s process list (`pid, MB` lines), falling back to
/// the device's used memory (`used` lines of `--query-gpu=memory.used`, summed over GPUs).
fn gpu_reading(processes: &str, device_used: Option<&str>) -> Option<GpuReading> {
    let me = std::process::id().to_string();
    let mine: Vec<f64> = processes
        .lines()
        .filter_map(|l| l.split_once(','))
        .filter(|(pid, _)| pid.trim() == me)
        .filter_map(|(_, mb)| mb.trim().parse::<f64>().ok())
        .collect();
    if !mine.is_empty() {
        return Some(GpuReading::Process(mine.iter().sum()));
    }
    let used: Vec<f64> = device_used?.lines().filter_map(|l| l.trim().parse::<f64>().ok()).collect();
    (!used.is_empty()).then(|| GpuReading::Device(used.iter().sum()))
}

fn read_gpu() -> Option<GpuReading> {
    let processes = nvidia_smi(&["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])?;
    let mine = gpu_reading(&processes, None);
    if mine.is_some() {
        return mine;
    }
    gpu_reading(&processes, nvidia_smi(&["--query-gpu=memory.used", "--format=csv,noheader,nounits"]).as_deref())
}

/// The device's use before this process put anything on it, subtracted from device-wide readings.
static GPU_BASELINE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

impl GpuPoll {
    fn start(device: tch::Device) -> Option<GpuPoll> {
        if !device.is_cuda() {
            return None;
        }
        let first = read_gpu()?;
        if let GpuReading::Device(mb) = first {
            GPU_BASELINE.get_or_init(|| mb);
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak: Option<f64> = None;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let mb = match read_gpu() {
                    Some(GpuReading::Process(mb)) => Some(mb),
                    Some(GpuReading::Device(mb)) => Some((mb - GPU_BASELINE.get().copied().unwrap_or(0.0)).max(0.0)),
                    None => None,
                };
                if let Some(mb) = mb {
                    peak = Some(peak.map_or(mb, |p: f64| p.max(mb)));
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            peak
        });
        Some(GpuPoll { stop, handle })
    }

    fn finish(self) -> Option<f64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().ok().flatten()
    }
}

fn stage<T>(
    name: &'static str,
    steps: i64,
    backward_factor: f64,
    device: tch::Device,
    f: impl FnOnce() -> vidtune_runtime::Result<T>,
) -> anyhow::Result<(T, Stage)> {
    peak_rss_mb(true);
    let gpu = GpuPoll::start(device);
    let start = Instant::now();
    let (out, profile) = vidtune_runtime::flops::profiling(!device.is_cuda(), || {
        let out = f();
        if let tch::Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
        out
    });
    let seconds = start.elapsed().as_secs_f64();
    let gflop = profile.flop as f64 * backward_factor / 1e9;
    let time_by_work = profile.seconds.map(|by| {
        let mut map: std::collections::BTreeMap<&'static str, f64> =
            Work::ALL.iter().map(|w| (w.name(), by[*w as usize])).collect();
        map.insert("other", (seconds - by.iter().sum::<f64>()).max(0.0));
        map
    });
    let per_s = |x: f64| (seconds > 0.0 && x > 0.0).then(|| x / seconds);
    let s = Stage {
        name,
        seconds,
        steps,
        steps_per_second: per_s(steps as f64),
        peak_rss_mb: peak_rss_mb(false),
        peak_gpu_mb: gpu.and_then(GpuPoll::finish),
        gflop,
        gflop_per_second: per_s(gflop),
        share_of_peak: None,
        time_by_work,
    };
    Ok((out?, s))
}

pub fn run(o: &BenchOptions) -> anyhow::Result<Vec<Stage>> {
    let spec = match o.model.as_str() {
        "tiny" | "medium" | "sd14" => format!("random:{}", o.model),
        other => other.to_string(),
    };
    let precision = o.precision.as_deref().map(vidtune_runtime::device::parse_dtype).transpose()?;
    let device = vidtune_runtime::device::parse_device(&o.device)?;
    // The machine's matrix-product rate, measured first, on an idle process: in fp32, in bf16 where the
    // processor computes it natively, and in the dtypes the stages compute in.
    let model_kind = match &o.dtype {
        Some(d) => vidtune_runtime::device::parse_dtype(d)?,
        None => vidtune_runtime::device::default_dtype(device),
    };
    let tune_kind = precision.unwrap_or(model_kind);
    let peaks = matmul_peaks(device, &[dtype_name(tune_kind), dtype_name(model_kind)]);
    let load = SdLoadOptions { device: o.device.clone(), dtype: o.dtype.clone(), ..Default::default() };
    let (sd, load_stage) = stage("load", 0, 1.0, device, || load_sd(&spec, &load))?;
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
    let (model, inflate_stage) = stage("inflate", 0, 1.0, device, || inflate(sd.clone(), &VideoSpec::default(), 0))?;
    let clips = [TuneClip { video: clip.clone(), prompt: prompt.into(), masks: None, controls: vec![] }];
    let tune_opts =
        TuneOptions { steps: o.tune_steps, precision, checkpointing: o.checkpointing, ..Default::default() };
    let checkpointing = o.checkpointing.unwrap_or(device.is_cuda());
    // A tuning step: the forward, and a backward of about the same cost (Tune-A-Video trains the
    // attention queries and the temporal layers, so most weight gradients are never formed). With
    // checkpointing the counter sees the forward twice (the recompute), so the backward adds half.
    let factor = if checkpointing { 1.5 } else { 2.0 };
    let (tuned, tune_stage) = stage("tune", o.tune_steps, factor, device, || tune_clips(&model, &clips, &tune_opts))?;
    drop(model);
    let inv_opts = InvertOptions { steps: o.steps, prompt: String::new(), ..Default::default() };
    let (latents, invert_stage) =
        stage("invert", o.steps, 1.0, device, || tch::no_grad(|| invert(&tuned, &clip, &inv_opts)))?;
    let sample_opts =
        SampleOptions { steps: o.steps, guidance: GUIDANCE.number(), seed: Some(33), ..Default::default() };
    let (_, sample_stage) = stage("sample", o.steps, 1.0, device, || {
        tch::no_grad(|| sample(&tuned, "a blue circle moving on a striped background", Some(&latents), &sample_opts))
    })?;
    let mut stages = vec![load_stage, inflate_stage, tune_stage, invert_stage, sample_stage];
    // Each stage's GFLOP/s as a share of the rate of the dtype it computes in.
    let tune_kind = precision.unwrap_or(sd.dtype);
    for s in stages.iter_mut() {
        let kind = if s.name == "tune" { tune_kind } else { sd.dtype };
        let peak = peaks.iter().find(|(k, _)| *k == dtype_name(kind)).map(|(_, g)| *g);
        s.share_of_peak = s.gflop_per_second.zip(peak).map(|(g, p)| g / p);
    }
    let attention = attention_backend(&sd);
    let setup = Setup {
        spec: &spec,
        device: format!("{device:?}").to_lowercase(),
        dtype: format!("{:?}", sd.dtype),
        precision: format!("{:?}", precision.unwrap_or(sd.dtype)),
        checkpointing,
        attention: &attention,
    };
    print_table(o, &setup, &stages, &peaks);
    let official = match &o.compare {
        None => None,
        Some(which) => Some(official_figures(o, which)?),
    };
    if let Some(off) = &official {
        print_comparison(&stages, off);
    }
    if let Some(path) = &o.json {
        let json = serde_json::json!({
            "model": spec,
            "frames": o.frames,
            "size": o.size,
            "tune_steps": o.tune_steps,
            "steps": o.steps,
            "device": format!("{device:?}"),
            "dtype": setup.dtype,
            "precision": setup.precision,
            "checkpointing": checkpointing,
            "attention_backend": attention,
            "threads": tch::get_num_threads(),
            "cpu_math": vidtune_runtime::cpu::mkl_summary(),
            "vidtune_version": vidtune_runtime::VERSION,
            "libtorch_version": vidtune_runtime::env::libtorch_version(),
            "matmul_peak_gflops": peaks.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "stages": stages,
            "total_seconds": stages.iter().map(|s| s.seconds).sum::<f64>(),
            "official": official,
        });
        vidtune_runtime::fsutil::write_bytes_atomic(path, serde_json::to_string_pretty(&json)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(stages)
}

/// Whether the processor has native bf16 products (AVX-512 BF16 or AMX), read from `/proc/cpuinfo`.
fn cpu_has_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|t| {
        t.lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.split_whitespace().any(|f| f == "avx512_bf16" || f == "amx_bf16"))
    })
}

/// The measured matrix-product rate (GFLOP/s) of `device` in fp32, in bf16 where it has it, and in
/// each of `also`: products of 2048² on the CPU (8192² on CUDA), the best of three windows of a quarter
/// of a second each (a busy machine's dips are not the machine's rate).
fn matmul_peaks(device: tch::Device, also: &[&'static str]) -> Vec<(&'static str, f64)> {
    let mut kinds = vec![tch::Kind::Float];
    if device.is_cuda() || cpu_has_bf16() {
        kinds.push(tch::Kind::BFloat16);
    }
    for k in [tch::Kind::Half, tch::Kind::BFloat16] {
        if also.contains(&dtype_name(k)) && !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    let n = if device.is_cuda() { 8192 } else { 2048 };
    let time = std::time::Duration::from_millis(250);
    let best = |k| (0..3).map(|_| vidtune_runtime::flops::matmul_peak(device, k, n, time)).fold(0.0, f64::max);
    kinds.into_iter().map(|k| (dtype_name(k), best(k))).collect()
}

/// How a run was set up, for the table's heading.
struct Setup<'a> {
    spec: &'a str,
    device: String,
    dtype: String,
    precision: String,
    checkpointing: bool,
    attention: &'a str,
}

/// Which kernels the UNet's attention runs: libtorch's own choice for `scaled_dot_product_attention`
/// (a query of the model's dtype and device), and whether the explicit product takes the few-key
/// attentions (`Backend::pick`).
fn attention_backend(sd: &vidtune_runtime::sd::StableDiffusion) -> String {
    let q = tch::Tensor::zeros([2, 8, 64, 40], (sd.dtype, sd.device));
    let choice = tch::Tensor::f_internal_fused_sdp_choice(&q, &q, &q, None::<tch::Tensor>, 0.0, false, None, false);
    let name = match choice {
        Ok(0) => "math (unfused)",
        Ok(1) => "flash",
        Ok(2) => "memory-efficient",
        Ok(3) => "cuDNN",
        Ok(4) => "overrideable",
        _ => "unknown",
    };
    let fused = format!("{name} ({})", if sd.device.is_cuda() { "CUDA" } else { "CPU" });
    let cross = tch::Tensor::zeros([2, 8, 77, 40], (sd.dtype, sd.device));
    match vidtune_kernels::attention::Backend::Auto.pick(&q, &cross) {
        vidtune_kernels::attention::Backend::Math => format!("{fused}; explicit product where keys are few"),
        _ => fused,
    }
}

/// The official code's figures: run now (`official`) or read from its JSON.
fn official_figures(o: &BenchOptions, which: &str) -> anyhow::Result<serde_json::Value> {
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
    let settings = if o.same_settings { Some(same_settings(&mut command, &work)) } else { None };
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
const OFFICIAL_SCRIPT: &str = include_str!("../../examples/bench/official_tav.py");

/// Seconds of the official run's stages by name (its `load` covers vidtune's load and inflate).
fn official_seconds(off: &serde_json::Value, name: &str) -> Option<f64> {
    off["stages"].as_array()?.iter().find(|s| s["name"] == name)?["seconds"].as_f64()
}

fn print_comparison(stages: &[Stage], off: &serde_json::Value) {
    let ours = |names: &[&str]| stages.iter().filter(|s| names.contains(&s.name)).map(|s| s.seconds).sum::<f64>();
    if let Some(same) = off["same_settings"].as_str() {
        println!("\nthe official run had vidtune's process settings: {same}");
    }
    println!("\n| stage | official | vidtune | speed-up |\n|---|---|---|---|");
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
        println!("| {name} | {theirs:.2} s | {v:.2} s | {:.2}× |", theirs / v);
    }
    println!("| total | {:.2} s | {:.2} s | {:.2}× |", total.0, total.1, total.0 / total.1);
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

fn print_table(o: &BenchOptions, setup: &Setup, stages: &[Stage], peaks: &[(&str, f64)]) {
    println!(
        "\n{}: {} frames at {}², tune {}, invert {}, sample {} (guidance {}) on {}; weights {}, tuning in {}{}; \
         attention {}; threads: {}; {}\n",
        setup.spec,
        o.frames,
        o.size,
        o.tune_steps,
        o.steps,
        o.steps,
        GUIDANCE.number(),
        setup.device,
        setup.dtype,
        setup.precision,
        if setup.checkpointing { " with checkpointing" } else { "" },
        setup.attention,
        vidtune_runtime::cpu::threads().map_or_else(|| tch::get_num_threads().to_string(), |t| t.to_string()),
        vidtune_runtime::cpu::mkl_summary()
    );
    let gpu = stages.iter().any(|s| s.peak_gpu_mb.is_some());
    println!(
        "| stage | time | steps/s | peak RSS |{} GFLOP | GFLOP/s | of peak |",
        if gpu { " peak GPU |" } else { "" }
    );
    println!("|---|---|---|---|{}---|---|---|", if gpu { "---|" } else { "" });
    let opt = |v: Option<f64>, digits: usize| v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "–".into());
    for s in stages {
        println!(
            "| {} | {:.2} s | {} | {} MB |{} {:.1} | {} | {} |",
            s.name,
            s.seconds,
            opt(s.steps_per_second, 2),
            opt(s.peak_rss_mb, 0),
            if gpu { format!(" {} MB |", opt(s.peak_gpu_mb, 0)) } else { String::new() },
            s.gflop,
            opt(s.gflop_per_second, 1),
            s.share_of_peak.map_or_else(|| "–".into(), |x| format!("{:.0} %", 100.0 * x)),
        );
    }
    let total: f64 = stages.iter().map(|s| s.seconds).sum();
    println!("| total | {total:.2} s | | | | | |");
    let peaks: Vec<String> = peaks.iter().map(|(k, g)| format!("{k} {g:.0} GFLOP/s")).collect();
    println!("\nmatrix products here ({}): {}", setup.device, peaks.join(", "));
    if stages.iter().any(|s| s.time_by_work.is_some()) {
        println!(
            "\nwhere the time went (forward products timed as they run; tuning's backward and optimiser as wholes; \
             other: norms, activations, element-wise work, copies, host):\n"
        );
        let columns = ["linear", "conv", "attention", "backward", "optimizer", "other"];
        println!("| stage | {} |\n|---|{}", columns.join(" | "), "---|".repeat(columns.len()));
        for s in stages.iter().filter(|s| s.gflop > 0.0) {
            let Some(by) = &s.time_by_work else { continue };
            let cells: Vec<String> = columns
                .iter()
                .map(|c| {
                    let t = by.get(c).copied().unwrap_or(0.0);
                    format!("{t:.2} s ({:.0} %)", 100.0 * t / s.seconds.max(1e-9))
                })
                .collect();
            println!("| {} | {} |", s.name, cells.join(" | "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_memory_is_this_processs_or_else_the_devices() {
        let me = std::process::id();
        let list = format!("{},  300\n{me}, 1200\n", me + 1);
        assert_eq!(gpu_reading(&list, Some("5000")), Some(GpuReading::Process(1200.0)));
        // The driver lists pids of another namespace: the device's use, summed over GPUs.
        let other = format!("{}, 1200\n", me + 1);
        assert_eq!(gpu_reading(&other, Some("5000\n 700\n")), Some(GpuReading::Device(5700.0)));
        assert_eq!(gpu_reading("", Some("")), None);
        assert_eq!(gpu_reading(&other, None), None);
    }
}
