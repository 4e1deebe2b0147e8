//! `vidtune bench`: Tune-A-Video's job — inflate, tune, DDIM-invert, sample with guidance — on a model
//! or on a random model of a given shape (`tiny`, `medium`, SD1.4's `sd14`), stage by stage: time,
//! steps/s, peak resident memory, and the achieved GFLOP/s against the work the models did (linear
//! layers, convolutions and attention products, counted as they run; a tuning step's backward is taken
//! as one more forward, Tune-A-Video training a small part of the UNet), its share of the machine's
//! measured matrix-product rate, and on the CPU where the time went. A table on the terminal and JSON. A
//! benchmark, not a test: the test suite only checks that it runs on the tiny shape.

mod gpu_memory;
mod official;

use gpu_memory::GpuPoll;
use official::{official_figures, print_comparison};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;
use vidtune_runtime::device::dtype_name;
use vidtune_runtime::flops::Work;
use vidtune_runtime::options::GUIDANCE;
use vidtune_runtime::pipelines::invert::{invert, InvertOptions};
use vidtune_runtime::pipelines::sample::{sample, SampleOptions};
use vidtune_runtime::pipelines::tune::{tune_clips_owned, TuneClip, TuneOptions};
use vidtune_runtime::pipelines::tune_memory::resolve_checkpointing;
use vidtune_runtime::synthetic::{synthetic_clip, SyntheticSpec};
use vidtune_runtime::video::processors::ModuleSpec;
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
    /// The spatial attention module of every attn1 (Tune-A-Video's sparse_causal; e.g. vidtome:ratio=0.5
    /// for cross-frame token merging)
    #[arg(long, default_value = "sparse_causal")]
    pub spatial: String,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// The model's dtype: fp32, fp16 or bf16 (default: fp32 on the CPU, half on CUDA)
    #[arg(long)]
    pub dtype: Option<String>,
    /// Tuning precision: fp32, bf16 or fp16 (default: the model's dtype), float32 master weights
    #[arg(long)]
    pub precision: Option<String>,
    /// Gradient checkpointing while tuning: true or false (default: on CUDA; on the CPU when a step
    /// without it would not fit in memory)
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
    /// one-function library compiled with `cc` and preloaded) and the same thread count; and the same job:
    /// checkpointing as vidtune tunes, in the form that trains every trainable tensor (the official
    /// reentrant checkpointing leaves the down blocks untrained)
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
    /// The process's CPU time during the stage over all its threads, in user mode and in the kernel
    /// (`getrusage`), and its minor page faults: memory touched for the first time, or again after it
    /// went back to the system. In a virtual machine a fresh page can cost tens of microseconds.
    pub cpu: CpuUse,
}

/// CPU time and page faults of the process, from `getrusage(RUSAGE_SELF)`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CpuUse {
    pub user_seconds: f64,
    pub kernel_seconds: f64,
    pub page_faults: i64,
}

impl CpuUse {
    fn now() -> CpuUse {
        // SAFETY: getrusage fills the zeroed struct it is given and reads nothing else.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
            return CpuUse::default();
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        CpuUse { user_seconds: secs(u.ru_utime), kernel_seconds: secs(u.ru_stime), page_faults: u.ru_minflt as i64 }
    }

    fn since(self, start: CpuUse) -> CpuUse {
        CpuUse {
            user_seconds: self.user_seconds - start.user_seconds,
            kernel_seconds: self.kernel_seconds - start.kernel_seconds,
            page_faults: self.page_faults - start.page_faults,
        }
    }
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
    device: tch::Device,
    f: impl FnOnce() -> vidtune_runtime::Result<T>,
) -> anyhow::Result<(T, Stage)> {
    peak_rss_mb(true);
    let gpu = GpuPoll::start(device);
    let cpu = CpuUse::now();
    let start = Instant::now();
    let (out, profile) = vidtune_runtime::flops::profiling(!device.is_cuda(), || {
        let out = f();
        if let tch::Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
        out
    });
    let seconds = start.elapsed().as_secs_f64();
    let cpu = CpuUse::now().since(cpu);
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
        cpu,
    };
    Ok((out?, s))
}

pub fn run(o: &BenchOptions) -> anyhow::Result<Vec<Stage>> {
    if o.compare.is_some() && o.spatial != "sparse_causal" {
        anyhow::bail!("--compare runs the official code's Tune-A-Video modules: drop --spatial {}", o.spatial);
    }
    let spec = match o.model.as_str() {
        "tiny" | "medium" | "sd14" => format!("random:{}", o.model),
        other => other.to_string(),
    };
    let precision = o.precision.as_deref().map(vidtune_runtime::device::parse_dtype).transpose()?;
    let device = vidtune_runtime::device::parse_device(&o.device)?;
    // The threads are decided before anything is timed (auto looks at the load first).
    vidtune_runtime::cpu::settle_threads();
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
    let video_spec = VideoSpec { spatial: ModuleSpec::parse(&o.spatial)?, ..VideoSpec::default() };
    let (model, inflate_stage) = stage("inflate", 0, 1.0, device, || inflate(sd.clone(), &video_spec, 0))?;
    let clips = [TuneClip { video: clip.clone(), prompt: prompt.into(), masks: None, controls: vec![] }];
    let mut tune_opts =
        TuneOptions { steps: o.tune_steps, precision, checkpointing: o.checkpointing, ..Default::default() };
    // Decided once, as tuning would, so that the table, the work count and the official run agree.
    let choice = resolve_checkpointing(&model, &clips, &tune_opts)?;
    if let Some(reason) = &choice.reason {
        vidtune_runtime::progress::warn(reason);
    }
    let checkpointing = choice.on;
    tune_opts.checkpointing = Some(checkpointing);
    // A tuning step: the forward, and a backward of about the same cost (Tune-A-Video trains the
    // attention queries and the temporal layers, so most weight gradients are never formed). With
    // checkpointing the counter sees the forward twice (the recompute), so the backward adds half.
    let factor = if checkpointing { 1.5 } else { 2.0 };
    // The inflated model has no use untuned here: it is tuned in place, as the official code tunes its
    // one UNet, without the copy of the temporal layers that `tune_clips` keeps the original with.
    let (tuned, tune_stage) =
        stage("tune", o.tune_steps, factor, device, || tune_clips_owned(model, &clips, &tune_opts))?;
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
        Some(which) => Some(official_figures(o, which, checkpointing)?),
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
            "spatial": o.spatial,
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
    println!(
        "\nCPU time, all threads (kernel time is mostly memory faulted in: pages touched for the first time, or \
         again after they went back to the system):\n"
    );
    println!("| stage | user | kernel | page faults |\n|---|---|---|---|");
    for s in stages {
        println!(
            "| {} | {:.2} s | {:.2} s ({:.0} %) | {} |",
            s.name,
            s.cpu.user_seconds,
            s.cpu.kernel_seconds,
            100.0 * s.cpu.kernel_seconds / (s.cpu.user_seconds + s.cpu.kernel_seconds).max(1e-9),
            s.cpu.page_faults
        );
    }
}
