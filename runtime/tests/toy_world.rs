//! The toy world end to end: the built-in toy models load through the ordinary loaders and have the
//! figures they were committed with; the training recipe is reproducible; and Tune-A-Video edits of
//! held-out clips (shape / colour / motion combinations the models never saw) change what the prompt asks
//! and keep the rest. Thresholds are measured figures with a margin (see the toy models' README).

use std::rc::Rc;
use vidtune_runtime::media::synthetic::{Motion, Shape, SyntheticClip};
use vidtune_runtime::models::clip::ClipModel;
use vidtune_runtime::score::{score, ScoreOptions};
use vidtune_runtime::toy::probe::{
    check_edit, check_frames, edit_clip, mask_guided_edit, EditSettings, MaskedSettings,
};
use vidtune_runtime::toy::world::{held_out_clip, held_out_clip_of};
use vidtune_runtime::toy::{self, Recipe};
use vidtune_runtime::video::VideoSpec;
use vidtune_runtime::{load_sd, SdLoadOptions, StableDiffusion};

/// Training, tuning and sampling draw from libtorch's process-wide generator: one test at a time, so each
/// sees exactly its seeds.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn cpu() -> SdLoadOptions {
    SdLoadOptions { device: "cpu".into(), ..Default::default() }
}

fn toy_sd() -> Rc<StableDiffusion> {
    Rc::new(load_sd("toy", &cpu()).expect("the built-in toy models load"))
}

fn held_out(shape: Shape, color: &str, motion: Motion, bg: &str) -> SyntheticClip {
    held_out_clip(shape, color, motion, bg).unwrap()
}

fn tav() -> VideoSpec {
    VideoSpec::with("sparse_causal", "temporal").unwrap()
}

fn per_frame() -> VideoSpec {
    VideoSpec::with("self", "none").unwrap()
}

#[test]
fn quick_recipe_trains_the_same_folder_twice_and_it_loads() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let recipe = Recipe::quick();
    toy::train(&recipe, &a, tch::Device::Cpu).unwrap();
    toy::train(&recipe, &b, tch::Device::Cpu).unwrap();
    for f in [
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "clip/model.safetensors",
    ] {
        let (x, y) = (std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap());
        assert!(x == y, "{f} differs between two runs of the same recipe");
    }
    for f in [
        "model_index.json",
        "unet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
        "clip/config.json",
        "clip/preprocessor_config.json",
        "metrics.json",
        "recipe.json",
        "README.md",
    ] {
        assert!(a.join(f).is_file(), "{f} is missing");
    }
    // Through the loaders of real weights.
    let sd = load_sd(&a.to_string_lossy(), &cpu()).unwrap();
    assert!(!sd.random);
    assert_eq!(sd.vae_scale_factor(), 4);
    let clip = ClipModel::load(&a.join("clip").to_string_lossy(), "cpu", None).unwrap();
    // The trained BPE makes every caption word one token.
    let ids = clip.tokenizer.encode_unpadded("a red circle moving right on a blue striped background").unwrap();
    assert_eq!(ids.len(), 12, "{ids:?}");
    assert_eq!(
        sd.tokenizer.encode_unpadded("a red circle").unwrap(),
        ids[..4].iter().copied().chain([ids[11]]).collect::<Vec<_>>()
    );
}

#[test]
fn built_in_toy_models_have_their_recorded_metrics() {
    let _serial = serial();
    let dir = toy::toy_dir().unwrap();
    let recorded = toy::committed_metrics().unwrap();
    let measured = toy::evaluate(&dir, &Recipe::standard()).unwrap();
    assert!(measured.differences(&recorded).is_empty(), "{:?}", measured.differences(&recorded));
    // What the models can do, on held-out clips.
    assert!(measured.vae_psnr > VAE_PSNR_MIN, "{measured:?}");
    assert!(measured.clip_color_accuracy >= CLIP_COLOR_MIN, "{measured:?}");
    assert!(measured.unet_text_gain > 0.0, "{measured:?}");
}

// Measured (see the toy models' README); the thresholds keep a margin.
// Built-in models: VAE 25.4 dB, colour accuracy 1.0. Edits (tav, the default settings): trajectory
// correlation 0.995 / 0.942, background 21.7 / 20.1 dB, alignment with the edit 80.7 / 82.4 against 19.9 /
// 43.9 with the source prompt; consistency 83.9 with sparse_causal + temporal against 75.5 with self.
const VAE_PSNR_MIN: f64 = 24.0;
const CLIP_COLOR_MIN: f64 = 0.9;
const TRAJECTORY_MIN: f64 = 0.9;
const BACKGROUND_PSNR_MIN: f64 = 18.0;

#[test]
fn held_out_colour_edits_change_the_colour_and_keep_motion_and_background() {
    let _serial = serial();
    let sd = toy_sd();
    let scorer = ClipModel::load("toy", "cpu", None).unwrap();
    let settings = EditSettings::default();
    for (shape, color, motion, bg, to) in [
        (Shape::Circle, "green", Motion::Right, "blue", "red"),
        (Shape::Triangle, "red", Motion::Circle, "purple", "yellow"),
    ] {
        let clip = held_out(shape, color, motion, bg);
        let edit = clip.caption.replacen(color, to, 1);
        let out = edit_clip(sd.clone(), &clip.video, &clip.caption, &edit, &tav(), &settings).unwrap();
        let check = check_edit(&clip, &out, 3).unwrap();
        let what = format!("{} → {to}: {check:?}", clip.caption);
        assert_eq!(check.color, to, "(a) {what}");
        assert!(check.trajectory_corr >= TRAJECTORY_MIN, "(b) {what}");
        assert!(check.background_psnr >= BACKGROUND_PSNR_MIN, "(c) {what}");
        let so = ScoreOptions::default();
        let (a_edit, a_src) = (
            score(&scorer, &out, &edit, &so).unwrap().text_alignment,
            score(&scorer, &out, &clip.caption, &so).unwrap().text_alignment,
        );
        assert!(a_edit > a_src, "(d) toy-CLIP alignment with the edit {a_edit} vs the source prompt {a_src}: {what}");
    }
}

#[test]
fn temporal_modules_keep_frames_more_consistent_than_per_frame_attention() {
    let _serial = serial();
    let sd = toy_sd();
    let scorer = ClipModel::load("toy", "cpu", None).unwrap();
    let settings = EditSettings::default();
    let clip = held_out(Shape::Triangle, "red", Motion::Circle, "purple");
    let edit = clip.caption.replacen("red", "yellow", 1);
    let consistency = |spec: &VideoSpec| {
        let out = edit_clip(sd.clone(), &clip.video, &clip.caption, &edit, spec, &settings).unwrap();
        score(&scorer, &out, &edit, &ScoreOptions::default()).unwrap().frame_consistency
    };
    let (video, frames) = (consistency(&tav()), consistency(&per_frame()));
    assert!(video > frames, "sparse_causal + temporal {video} vs self {frames}");
}

/// The `mask-guided` preset's targets on held-out colour edits: the asked colour in at least 90 % of the
/// frames, the subject where the source's was (IoU ≥ 0.7), the background kept (≥ 25 dB), and frames at
/// least as consistent as Tune-A-Video's edit of the same clip. (The README's ablation reports all eight
/// clips it was measured on, the ones it fails included.)
#[test]
fn the_mask_guided_preset_keeps_the_subject_its_colour_and_the_background() {
    let _serial = serial();
    let sd = toy_sd();
    let scorer = ClipModel::load("toy", "cpu", None).unwrap();
    for (shape, color, motion, bg, to) in [
        (Shape::Circle, "purple", Motion::Left, "yellow", "green"),
        (Shape::Diamond, "pink", Motion::Right, "green", "yellow"),
    ] {
        let clip = held_out(shape, color, motion, bg);
        let edit = clip.caption.replacen(color, to, 1);
        let subject = format!("{to} {}", shape.name());
        let (out, _) = mask_guided_edit(sd.clone(), &clip, &edit, &subject, &MaskedSettings::default()).unwrap();
        let c = check_frames(&clip, &out, to, 3).unwrap();
        let what = format!(
            "{} → {to}: {:?}, IoU {:.2}, background {:.1} dB",
            clip.caption, c.colors, c.iou, c.background_psnr
        );
        assert!(c.hit_rate >= 0.9, "colour: {what}");
        assert!(c.iou >= 0.7, "subject IoU: {what}");
        assert!(c.background_psnr >= 25.0, "background: {what}");
        let tav_out =
            edit_clip(sd.clone(), &clip.video, &clip.caption, &edit, &tav(), &EditSettings::default()).unwrap();
        let so = ScoreOptions::default();
        let (mine, theirs) = (
            score(&scorer, &out, &edit, &so).unwrap().frame_consistency,
            score(&scorer, &tav_out, &edit, &so).unwrap().frame_consistency,
        );
        assert!(mine >= theirs, "frame consistency {mine:.2} below Tune-A-Video's {theirs:.2}: {what}");
    }
}

#[test]
fn co_denoising_a_long_held_out_clip_leaves_no_seams_where_independent_windows_do() {
    use vidtune_kernels::codenoise::plan;
    use vidtune_runtime::pipelines::codenoise::{Anchor, PromptSchedule, WindowOptions};
    use vidtune_runtime::pipelines::invert::{invert, InvertOptions};
    use vidtune_runtime::pipelines::sample::{co_denoise, SampleOptions};
    use vidtune_runtime::pipelines::tune::{tune_clips, TuneClip, TuneOptions};
    use vidtune_runtime::toy::probe::{frame_changes, seam_ratio};
    use vidtune_runtime::video::inflate;
    let _serial = serial();
    let sd = toy_sd();
    // 48 frames of a held-out combination; the toy models saw 8-frame clips.
    let clip = held_out_clip_of(Shape::Circle, "purple", Motion::Left, "yellow", 48).unwrap();
    let edit = clip.caption.replace("purple", "green");
    let model = inflate(sd, &VideoSpec::mask_guided(), 0).unwrap();
    let clips = [TuneClip { video: clip.video.clone(), prompt: clip.caption.clone(), masks: Some(clip.masks.clone()) }];
    let tuned = tune_clips(&model, &clips, &TuneOptions { steps: 60, lr: 1e-3, window: Some(8), ..Default::default() })
        .unwrap();
    let mut ratios = vec![];
    for stride in [8, 4] {
        // Each window its own anchor: what co-denoising adds on its own (a global anchor already evens
        // out independent windows; the README has both).
        let windows = Some(WindowOptions { stride, anchor: Anchor::Window, ..WindowOptions::new(8) });
        let masks = Some(clip.masks.clone());
        let io =
            InvertOptions { steps: 20, prompt: clip.caption.clone(), masks: masks.clone(), windows: windows.clone() };
        let inv = invert(&tuned, &clip.video, &io).unwrap();
        let o = SampleOptions {
            steps: 20,
            guidance: 8.0,
            seed: Some(33),
            negative: clip.caption.clone(),
            masks,
            subject: Some("green circle".into()),
            keep_background: true,
            strength: 0.9,
            windows,
            ..Default::default()
        };
        let (out, _) = co_denoise(&tuned, &PromptSchedule::single(&edit), Some(&inv), &o).unwrap();
        assert_eq!(out.len(), 48);
        let energy = out.frames().abs().sum_dim_intlist(&[1i64, 2, 3][..], false, tch::Kind::Float);
        assert!(energy.min().double_value(&[]) > 0.0, "stride {stride}: a frame was left at zero");
        // The seams of the independent plan (every 8 frames) are where both are judged.
        ratios.push(seam_ratio(&frame_changes(&out), &plan(48, 8, 8).unwrap()));
    }
    let source = seam_ratio(&frame_changes(&clip.video), &plan(48, 8, 8).unwrap());
    let (independent, co) = (ratios[0], ratios[1]);
    eprintln!("seam ratio: independent windows {independent:.2}, co-denoised {co:.2}, source {source:.2}");
    assert!(co <= 1.3, "co-denoised seams: {co:.2} times the change inside windows");
    assert!(co < independent, "co-denoising ({co:.2}) did not beat independent windows ({independent:.2})");
}

#[test]
fn extending_a_held_out_clip_continues_it_past_its_last_frame() {
    use vidtune_runtime::pipelines::extend::extend;
    use vidtune_runtime::pipelines::sample::SampleOptions;
    use vidtune_runtime::pipelines::tune::{tune_clips, TuneClip, TuneOptions};
    use vidtune_runtime::toy::probe::{check_frames_of, frame_changes};
    use vidtune_runtime::video::inflate;
    let _serial = serial();
    let sd = toy_sd();
    // 16 frames of a held-out combination: the first 8 are the clip, the last 8 the truth to continue to.
    let whole = held_out_clip_of(Shape::Diamond, "pink", Motion::Right, "green", 16).unwrap();
    let (clip, truth) = (whole.video.slice(0, 8).unwrap(), whole.video.slice(8, 16).unwrap());
    let (masks, next) = (whole.masks.slice_frames(0, 8).unwrap(), whole.masks.slice_frames(8, 8).unwrap());
    let model = inflate(sd, &VideoSpec::dynamic_mask(), 0).unwrap();
    let clips = [TuneClip { video: clip.clone(), prompt: whole.caption.clone(), masks: Some(masks) }];
    let o = TuneOptions { steps: 80, lr: 1e-3, first_frame: true, ..Default::default() };
    let tuned = tune_clips(&model, &clips, &o).unwrap();
    let so = SampleOptions {
        steps: 20,
        guidance: 4.0,
        seed: Some(3),
        masks: Some(next.clone()),
        subject: Some("pink diamond".into()),
        ..Default::default()
    };
    let (out, _) = extend(&tuned, &clip, &whole.caption, 8, &so).unwrap();
    assert_eq!(out.len(), 16);
    assert!(out.slice(0, 8).unwrap().frames().equal(clip.frames()), "the clip itself is kept as it was");
    let new = out.slice(8, 16).unwrap();
    let c = check_frames_of(&truth, &next, &new, "pink", 3).unwrap();
    let changes = frame_changes(&out);
    let inside = changes[8..].iter().sum::<f64>() / 7.0;
    let seam = changes[7] / inside;
    let truth_seam = frame_changes(&whole.video)[7] / (frame_changes(&whole.video)[8..].iter().sum::<f64>() / 7.0);
    eprintln!("extend: colours {:?}, IoU {:.2}, seam ratio {seam:.2} (truth {truth_seam:.2})", c.colors, c.iou);
    assert!(c.hit_rate >= 0.75, "the new frames lost the subject's colour: {:?}", c.colors);
    assert!(c.iou >= 0.45, "the new frames lost the subject where the masks put it: IoU {:.2}", c.iou);
    assert!(seam <= 2.0, "a jump at the junction: {seam:.2} times the change between new frames");
}
