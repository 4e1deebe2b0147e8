//! Memory and time of `co_denoise` against clip length: one process per length (peak RSS only grows
//! within a process), the toy models at 64², windows of 8 frames moved by 4, 10 DDIM steps with guidance.
//!
//!   for f in 32 64 128; do cargo run --release -p vidtune-runtime --example co_denoise_bench -- $f; done

use std::rc::Rc;
use std::time::Instant;
use vidtune_runtime::pipelines::codenoise::{PromptSchedule, WindowOptions};
use vidtune_runtime::pipelines::sample::{co_denoise, SampleOptions};
use vidtune_runtime::video::{inflate, VideoSpec};
use vidtune_runtime::{load_sd, SdLoadOptions};

/// Peak resident memory of this process (Linux `VmHWM`), in MB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() -> vidtune_runtime::Result<()> {
    let frames: i64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let sd = Rc::new(load_sd("toy", &SdLoadOptions { device: "cpu".into(), ..Default::default() })?);
    let model = inflate(sd, &VideoSpec::default(), 0)?;
    let before = peak_rss_mb();
    let o = SampleOptions {
        steps: 10,
        seed: Some(1),
        frames: Some(frames),
        windows: Some(WindowOptions { stride: 4, ..WindowOptions::new(8) }),
        ..Default::default()
    };
    let t = Instant::now();
    let (video, _) = co_denoise(&model, &PromptSchedule::single("a red circle moving right"), None, &o)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "| {frames} | {secs:.1} s | {:.1} ms | {:.0} MB | {:.0} MB |",
        1000.0 * secs / frames as f64,
        before,
        peak_rss_mb()
    );
    assert_eq!(video.len() as i64, frames);
    Ok(())
}
