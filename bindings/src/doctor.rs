//! `vidtune doctor`: what this build found on this machine.

use vidtune_runtime::env;

fn row(name: &str, value: impl std::fmt::Display) {
    println!("{name:<14} {value}");
}

pub fn run() -> anyhow::Result<()> {
    row("vidtune", vidtune_runtime::VERSION);
    let lib = env::libtorch_lib_dir().map(|p| p.display().to_string()).unwrap_or_else(|| "unknown".into());
    row("libtorch", format!("{} ({lib})", env::libtorch_version().unwrap_or_else(|| "version unknown".into())));
    if tch::Cuda::is_available() {
        let n = tch::Cuda::device_count();
        let cudnn = if tch::Cuda::cudnn_is_available() { "cuDNN available" } else { "no cuDNN" };
        row(
            "CUDA",
            format!("{n} device(s): {}; {cudnn}", (0..n).map(|i| format!("cuda:{i}")).collect::<Vec<_>>().join(", ")),
        );
    } else {
        row("CUDA", "not available (models run on the CPU)");
    }
    row("threads", format!("{} intra-op", tch::get_num_threads()));
    ffmpeg_row();
    match env::onnxruntime_dylib() {
        Some(p) if p.exists() => row("ONNX Runtime", p.display()),
        Some(p) => row("ONNX Runtime", format!("missing: {} (set ORT_DYLIB_PATH)", p.display())),
        None => row("ONNX Runtime", "not found (install the onnxruntime wheel or set ORT_DYLIB_PATH)"),
    }
    let hub = env::hf_hub_cache();
    let repos = std::fs::read_dir(&hub)
        .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with("models--")).count())
        .unwrap_or(0);
    let state = if hub.is_dir() { format!("{repos} model repo(s)") } else { "does not exist".into() };
    row("weights", format!("Hugging Face cache {} ({state}); or any diffusers folder path", hub.display()));
    row("cache", env::cache_dir().display());
    Ok(())
}

#[cfg(feature = "ffmpeg")]
fn ffmpeg_row() {
    use vidtune_runtime::media::ffmpeg;
    let encoders: Vec<String> = ["libx264", "mpeg4", "libvpx-vp9"]
        .iter()
        .map(|e| format!("{e} {}", if ffmpeg::has_encoder(e) { "yes" } else { "no" }))
        .collect();
    row("FFmpeg", format!("{}; encoders: {}", ffmpeg::version(), encoders.join(", ")));
}

#[cfg(not(feature = "ffmpeg"))]
fn ffmpeg_row() {
    row("FFmpeg", "not built in (feature `ffmpeg` off): GIF and PNG directories only");
}
