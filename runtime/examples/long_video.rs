//! Long clips on the toy world: a held-out clip of 48 frames (the toy models saw 8-frame clips), tuned on
//! random windows of 8 frames with the `mask-guided` preset, inverted and edited window by window —
//! independent windows (stride 8, no overlap) against co-denoising (stride 4) with each weighting.
//!
//! Per setting: the seam ratio (mean frame-to-frame change across the places where windows meet, over
//! the mean change elsewhere; the source clip's own ratio is printed for reference), the per-frame colour
//! hit rate of the edited subject, its IoU with the source masks, the background PSNR, and the time.
//!
//!   cargo run --release -p vidtune-runtime --example long_video -- [frames] [tune_steps] [only rows naming this]

use std::rc::Rc;
use std::time::Instant;
use vidtune_kernels::codenoise::{plan, Weighting};
use vidtune_runtime::pipelines::codenoise::{Anchor, PromptSchedule, WindowOptions};
use vidtune_runtime::pipelines::invert::{invert, InvertOptions};
use vidtune_runtime::pipelines::sample::{co_denoise, SampleOptions};
use vidtune_runtime::pipelines::tune::{tune_clips, TuneClip, TuneOptions};
use vidtune_runtime::synthetic::{Motion, Shape};
use vidtune_runtime::toy::probe::{check_frames_of, frame_changes, seam_ratio};
use vidtune_runtime::toy::world::held_out_clip_of;
use vidtune_runtime::video::{inflate, VideoSpec};
use vidtune_runtime::{load_sd, SdLoadOptions};

fn main() -> vidtune_runtime::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let frames: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(48);
    let tune_steps: i64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(150);
    let sd = Rc::new(load_sd("toy", &SdLoadOptions { device: "cpu".into(), ..Default::default() })?);
    let clip = held_out_clip_of(Shape::Circle, "purple", Motion::Left, "yellow", frames)?;
    let (prompt, to) = (clip.caption.clone(), "green");
    let edit = prompt.replace("purple", to);
    println!("{frames} frames: \"{prompt}\" → \"{edit}\"");

    let t0 = Instant::now();
    let model = inflate(sd.clone(), &VideoSpec::mask_guided(), 0)?;
    let clips = [TuneClip {
        video: clip.video.clone(),
        prompt: prompt.clone(),
        masks: Some(clip.masks.clone()),
        controls: vec![],
    }];
    let opts = TuneOptions { steps: tune_steps, lr: 1e-3, window: Some(8), ..Default::default() };
    let tuned = tune_clips(&model, &clips, &opts)?;
    println!("tuned {tune_steps} steps on windows of 8 frames in {:.1} s", t0.elapsed().as_secs_f64());

    let source_changes = frame_changes(&clip.video);
    println!(
        "\n| setting | seam ratio (source's) | colour hit rate | subject IoU | background PSNR | time |\n|---|---|---|---|---|---|"
    );
    let only: Option<String> = args.get(3).cloned();
    for (name, stride, weights, anchor) in [
        ("independent windows (stride 8)", 8, Weighting::Uniform, Anchor::Window),
        ("co-denoise, uniform (stride 4)", 4, Weighting::Uniform, Anchor::Window),
        ("co-denoise, triangular (stride 4)", 4, Weighting::Triangular, Anchor::Window),
        ("co-denoise, gaussian (stride 4)", 4, Weighting::Gaussian { sigma: 0.25 }, Anchor::Window),
        ("independent windows, global anchor", 8, Weighting::Uniform, Anchor::Global),
        ("co-denoise, uniform, global anchor", 4, Weighting::Uniform, Anchor::Global),
    ] {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let t = Instant::now();
        let windows = WindowOptions { stride, weights, anchor, ..WindowOptions::new(8) };
        let inv = invert(
            &tuned,
            &clip.video,
            &InvertOptions {
                steps: 20,
                prompt: prompt.clone(),
                masks: Some(clip.masks.clone()),
                windows: Some(windows.clone()),
                ..Default::default()
            },
        )?;
        let o = SampleOptions {
            steps: 20,
            guidance: 8.0,
            seed: Some(33),
            negative: prompt.clone(),
            masks: Some(clip.masks.clone()),
            subject: Some(format!("{to} circle")),
            keep_background: true,
            strength: 0.9,
            windows: Some(windows),
            ..Default::default()
        };
        let (out, _) = co_denoise(&tuned, &PromptSchedule::single(&edit), Some(&inv), &o)?;
        let secs = t.elapsed().as_secs_f64();
        let seams = plan(frames as i64, 8, stride)?;
        let ratio = seam_ratio(&frame_changes(&out), &seams);
        let source_ratio = seam_ratio(&source_changes, &seams);
        let check = check_frames_of(&clip.video, &clip.masks, &out, to, 3)?;
        println!(
            "| {name} | {ratio:.2} ({source_ratio:.2}) | {:.0} % | {:.2} | {:.1} dB | {secs:.1} s |",
            100.0 * check.hit_rate,
            check.iou,
            check.background_psnr
        );
    }
    Ok(())
}
