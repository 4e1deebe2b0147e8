//! `vidtune doctor`: what this build found on this machine, a verdict on each (ok / warn / note), what to
//! do next where something is missing, memory and disk figures, and a speed estimate for real SD1.x work
//! from a short matrix-multiply benchmark.

use std::time::Duration;
use vidtune_runtime::env;

#[derive(Clone, Copy, PartialEq)]
enum Verdict {
    Ok,
    Warn,
    Note,
}

struct Report {
    next: Vec<String>,
    warnings: usize,
}

impl Report {
    fn row(&mut self, verdict: Verdict, name: &str, value: impl std::fmt::Display) {
        let tag = match verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => {
                self.warnings += 1;
                "warn"
            }
            Verdict::Note => "note",
        };
        println!("{name:<14} {tag}  {value}");
    }

    fn next(&mut self, what: impl Into<String>) {
        self.next.push(what.into());
    }
}

/// `MemTotal` and `MemAvailable` of /proc/meminfo, in bytes.
fn memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// Free bytes on the file system holding `path` (or its nearest existing parent).
fn disk_free(path: &std::path::Path) -> Option<u64> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        p = p.parent()?.to_path_buf();
    }
    let c = std::ffi::CString::new(p.to_string_lossy().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; `c` is a valid NUL-terminated path.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        st
    };
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Matrix-multiply throughput (GFLOP/s) on `device` in `kind`, over about a quarter of a second.
fn matmul_gflops(device: tch::Device, kind: tch::Kind) -> Option<f64> {
    let n = if device.is_cuda() { 4096 } else { 768 };
    Some(vidtune_runtime::flops::matmul_peak(device, kind, n, Duration::from_millis(250)))
}

/// GFLOP of one step of Tune-A-Video's job on SD1.x at 8 frames of 512²: a tuning step (forward and the
/// backward of ~74 M trained parameters, about two forwards per frame) and a sampling step with
/// guidance (two forwards per frame) both come to 2 × 8 × 803 GFLOP (the UNet's forward at 64×64 latents).
const SD_STEP_GFLOP: f64 = 2.0 * 8.0 * 803.0;

/// What to tell a CPU user whose bf16 products run at `bf16` GFLOP/s against fp32's `fp32`: bf16 weights
/// where they are clearly faster (half again as fast or more), nothing otherwise.
fn bf16_advice(fp32: f64, bf16: f64) -> Option<String> {
    (bf16 >= 1.5 * fp32).then(|| {
        format!(
            "this CPU multiplies bf16 matrices {:.1}× as fast as fp32: load SD-size models in bf16 \
             (`load_sd(path, #{{dtype: \"bf16\"}})`; `vidtune bench --dtype bf16` times it), within the README's \
             bf16 quality band; fp32 stays the default, and small models such as the toy one run slower in bf16",
            bf16 / fp32
        )
    })
}

fn duration(secs: f64) -> String {
    match secs {
        s if s < 1.0 => format!("{:.0} ms", s * 1000.0),
        s if s < 120.0 => format!("{s:.1} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

pub fn run() -> anyhow::Result<()> {
    let mut r = Report { next: vec![], warnings: 0 };
    r.row(Verdict::Ok, "vidtune", vidtune_runtime::VERSION);
    let lib = env::libtorch_lib_dir().map(|p| p.display().to_string()).unwrap_or_else(|| "unknown".into());
    match env::libtorch_version() {
        Some(v) => r.row(Verdict::Ok, "libtorch", format!("{v} ({lib})")),
        None => r.row(Verdict::Warn, "libtorch", format!("version unknown ({lib})")),
    }
    let cuda = tch::Cuda::is_available();
    if cuda {
        let n = tch::Cuda::device_count();
        let cudnn = if tch::Cuda::cudnn_is_available() { "cuDNN available" } else { "no cuDNN" };
        let devices = (0..n).map(|i| format!("cuda:{i}")).collect::<Vec<_>>().join(", ");
        r.row(Verdict::Ok, "CUDA", format!("{n} device(s): {devices}; {cudnn}"));
    } else {
        r.row(Verdict::Note, "CUDA", "not available (models run on the CPU)");
        r.next("real SD1.x tuning needs a CUDA GPU (see the README's hardware table); the toy model and tiny configs run here");
    }
    vidtune_runtime::cpu::settle_threads();
    match vidtune_runtime::cpu::threads() {
        Some(t) => r.row(Verdict::Ok, "threads", t),
        None => r.row(Verdict::Ok, "threads", format!("{} intra-op", tch::get_num_threads())),
    }
    r.row(Verdict::Ok, "CPU math", vidtune_runtime::cpu::mkl_summary());
    ffmpeg_row(&mut r);
    match env::onnxruntime_dylib() {
        Some(p) if p.exists() => r.row(Verdict::Ok, "ONNX Runtime", p.display()),
        Some(p) => {
            r.row(Verdict::Warn, "ONNX Runtime", format!("missing: {}", p.display()));
            r.next("SAM segmentation needs ONNX Runtime: pip install onnxruntime, or set ORT_DYLIB_PATH");
        }
        None => {
            r.row(Verdict::Note, "ONNX Runtime", "not found (the built-in segmenter works without it)");
            r.next(
                "for SAM segmentation: pip install onnxruntime into the project's environment, or set ORT_DYLIB_PATH",
            );
        }
    }
    let hub = env::hf_hub_cache();
    let repos = std::fs::read_dir(&hub)
        .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with("models--")).count())
        .unwrap_or(0);
    if repos > 0 {
        r.row(Verdict::Ok, "weights", format!("{repos} model repo(s) in {}", hub.display()));
    } else {
        r.row(
            Verdict::Note,
            "weights",
            format!("no Hugging Face cache at {} (the toy model is built in)", hub.display()),
        );
        r.next(format!(
            "to edit real clips, get SD1.x weights: {}",
            vidtune_runtime::weights::hub::download_command(
                "CompVis/stable-diffusion-v1-4",
                vidtune_runtime::weights::hub::SD_FILES
            )
        ));
    }
    let cache = env::cache_dir();
    match disk_free(&cache) {
        Some(free) if free < 10 << 30 => {
            r.row(Verdict::Warn, "disk", format!("{} free under {}", gib(free), cache.display()));
            r.next(
                "free disk space or set VIDTUNE_CACHE elsewhere: SD1.x weights take ~5 GB, tuned files ~150 MB each",
            );
        }
        Some(free) => r.row(Verdict::Ok, "disk", format!("{} free under {}", gib(free), cache.display())),
        None => r.row(Verdict::Note, "disk", format!("free space unknown under {}", cache.display())),
    }
    match memory() {
        Some((total, avail)) if avail < 10 << 30 => {
            r.row(Verdict::Warn, "memory", format!("{} available of {}", gib(avail), gib(total)));
            r.next(
                "SD1.x in fp32 on the CPU needs about 10 GiB free at 8 × 512² (tuning, with the gradient \
                 checkpointing tune turns on when memory is short); bf16 weights need half as much",
            );
        }
        Some((total, avail)) => r.row(Verdict::Ok, "memory", format!("{} available of {}", gib(avail), gib(total))),
        None => r.row(Verdict::Note, "memory", "unknown"),
    }
    let (verdict, pages) = huge_pages();
    r.row(verdict, "huge pages", pages);
    let (device, kind) =
        if cuda { (tch::Device::Cuda(0), tch::Kind::BFloat16) } else { (tch::Device::Cpu, tch::Kind::Float) };
    match tch::no_grad(|| matmul_gflops(device, kind)) {
        Some(g) => {
            // On the CPU, bf16 too: with AMX or AVX-512 BF16 its products can be several times fp32's.
            let bf16 = if cuda { None } else { tch::no_grad(|| matmul_gflops(device, tch::Kind::BFloat16)) };
            let advice = bf16.and_then(|b| bf16_advice(g, b).map(|text| (b, text)));
            let best = advice.as_ref().map_or(g, |(b, _)| *b);
            let step = SD_STEP_GFLOP / best;
            // Inversion runs one forward per frame a step, without guidance: half a step.
            let job = step * (500.0 + 50.0 + 25.0);
            let verdict = if job > 3600.0 { Verdict::Warn } else { Verdict::Ok };
            let measured = match bf16 {
                Some(b) => format!("{g:.0} GFLOP/s (Float matmul on {device:?}), bf16 {b:.0} GFLOP/s"),
                None => format!("{g:.0} GFLOP/s ({kind:?} matmul on {device:?})"),
            };
            let precision = if advice.is_some() { " in bf16" } else { "" };
            r.row(
                verdict,
                "speed",
                format!(
                    "{measured}: SD1.x at 8 × 512²{precision} ≈ {} a step, Tune-A-Video's job (tune 500, invert 50, \
                     sample 50) ≈ {} at best",
                    duration(step),
                    duration(job)
                ),
            );
            if let Some((_, text)) = advice {
                r.next(text);
            }
        }
        None => r.row(Verdict::Note, "speed", "not measured"),
    }
    println!();
    if r.next.is_empty() {
        println!("everything vidtune uses is here.");
    } else {
        println!("next steps:");
        for n in &r.next {
            println!("  - {n}");
        }
    }
    if r.warnings > 0 {
        println!("{} warning(s) above.", r.warnings);
    }
    Ok(())
}

#[cfg(feature = "ffmpeg")]
fn ffmpeg_row(r: &mut Report) {
    use vidtune_runtime::media::ffmpeg;
    let encoders: Vec<String> = ["libx264", "mpeg4", "libvpx-vp9"]
        .iter()
        .map(|e| format!("{e} {}", if ffmpeg::has_encoder(e) { "yes" } else { "no" }))
        .collect();
    let verdict = if ffmpeg::has_encoder("libx264") { Verdict::Ok } else { Verdict::Note };
    r.row(verdict, "FFmpeg", format!("{}; encoders: {}", ffmpeg::version(), encoders.join(", ")));
}

#[cfg(not(feature = "ffmpeg"))]
fn ffmpeg_row(r: &mut Report) {
    r.row(Verdict::Note, "FFmpeg", "not built in (feature `ffmpeg` off): GIF and PNG directories only");
    r.next("to read and write mp4: build with the ffmpeg feature (./dev.sh does, with Debian's libav*-dev)");
}

/// Whether libtorch's large buffers get transparent huge pages: vidtune's setting
/// (`runtime::memory::enable_huge_pages`) and the kernel's mode.
fn huge_pages() -> (Verdict, String) {
    let var = vidtune_runtime::memory::HUGE_PAGES_VAR;
    let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok().and_then(|t| {
        let start = t.find('[')?;
        let end = t[start..].find(']')? + start;
        Some(t[start + 1..end].to_string())
    });
    match (std::env::var(var).ok().as_deref(), mode.as_deref()) {
        (Some("1"), Some("never")) => (
            Verdict::Note,
            format!("asked for ({var}=1), but the kernel's mode is never: buffers fault in 4 kB at a time"),
        ),
        (Some("1"), Some(mode)) => {
            (Verdict::Ok, format!("libtorch's buffers of 2 MB and more ({var}=1; the kernel's mode: {mode})"))
        }
        (Some("1"), None) => (Verdict::Note, format!("asked for ({var}=1); the kernel's mode is unknown")),
        (value, _) => {
            (Verdict::Note, format!("off ({var}={}): large buffers fault in 4 kB at a time", value.unwrap_or("unset")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bf16_advice;

    #[test]
    fn bf16_is_advised_only_where_it_is_clearly_faster() {
        // An AMX Xeon (bf16 1371 against fp32 329 GFLOP/s) and one without native bf16 (150 against 300).
        let advice = bf16_advice(329.0, 1371.0).expect("4.2× faster is advised");
        assert!(
            advice.contains("4.2× as fast as fp32") && advice.contains(r#"load_sd(path, #{dtype: "bf16"})"#),
            "{advice}"
        );
        assert_eq!(bf16_advice(300.0, 150.0), None);
        assert_eq!(bf16_advice(300.0, 440.0), None);
        assert!(bf16_advice(300.0, 450.0).is_some());
    }
}
