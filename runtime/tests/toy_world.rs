//! The toy world end to end: the built-in toy models load through the ordinary loaders and have the
//! figures they were committed with; the training recipe is reproducible; and Tune-A-Video edits of
//! held-out clips (shape / colour / motion combinations the models never saw) change what the prompt asks
//! and keep the rest. Thresholds are measured figures with a margin (see the toy models' README).

mod common;
use common::serial;

use std::rc::Rc;
use vidtune_runtime::models::clip::ClipModel;
use vidtune_runtime::pipelines::t2i::{t2i, T2iOptions};
use vidtune_runtime::score::{score, ScoreOptions};
use vidtune_runtime::synthetic::{caption, mask_sequence, MaskSequenceSpec, Motion, Shape, SyntheticClip, Texture};
use vidtune_runtime::toy::probe::{
    check_edit, check_frames, color_masks, edit_clip, mask_guided_edit, EditSettings, MaskedSettings,
};
use vidtune_runtime::toy::world::{held_out_clip, held_out_clip_of};
use vidtune_runtime::toy::{self, Recipe};
use vidtune_runtime::video::VideoSpec;
use vidtune_runtime::{load_controlnet, load_sd, Control, SdLoadOptions, StableDiffusion};

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
        "controlnet/diffusion_pytorch_model.safetensors",
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
        "controlnet/config.json",
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
fn built_in_toy_models_beat_chance_on_held_out_clips() {
    let _serial = serial();
    let dir = toy::toy_dir().unwrap();
    let measured = toy::evaluate(&dir, &Recipe::standard()).unwrap();
    // What the models can do on the 48 held-out clips, against floors set apart from the recorded
    // figures: chance is 1/8 for the colour and 1/4 for the shape (12 ± 3 of 48 clips); the text must
    // lower the UNet's loss by a tenth.
    assert!(measured.vae_psnr > VAE_PSNR_MIN, "{measured:?}");
    assert!(measured.clip_color_accuracy >= CLIP_COLOR_MIN, "{measured:?}");
    assert!(measured.clip_shape_accuracy >= CLIP_SHAPE_MIN, "{measured:?}");
    assert!(measured.unet_text_gain >= TEXT_GAIN_MIN * measured.unet_loss, "{measured:?}");
    // And they are still the models their README describes (a regression check, not evidence).
    let recorded = toy::committed_metrics().unwrap();
    assert!(measured.differences(&recorded).is_empty(), "{:?}", measured.differences(&recorded));
}

#[test]
fn the_toy_controlnet_puts_the_subject_where_the_mask_is_on_paths_it_never_trained_on() {
    let _serial = serial();
    let sd = toy_sd();
    let net = Rc::new(load_controlnet("toy", &cpu()).unwrap());
    let colors = ["orange", "blue", "pink", "green"];
    let (mut with, mut without) = (vec![], vec![]);
    for (k, (shape, motion)) in toy::controlnet::held_out_pairs().into_iter().enumerate() {
        let spec = MaskSequenceSpec { shape, motion, frames: 1, width: 64, height: 64, seed: 40 };
        let mask = mask_sequence(&spec).unwrap();
        let prompt = caption(shape, colors[k], motion, Texture::Plain, "white");
        // The control image as a script makes it: masks.segmentation_map(), in [0, 1].
        let image = (mask.segmentation_map([255, 255, 255], 8.0).unwrap().frames() + 1.0) / 2.0;
        let iou = |controls: Vec<Control>| {
            let opts = T2iOptions {
                steps: 20,
                guidance: 10.0,
                seed: Some(3),
                width: Some(64),
                height: Some(64),
                controls,
                ..Default::default()
            };
            let img = t2i(&sd, &prompt, &opts).unwrap().image;
            let video = vidtune_runtime::Video::new(img.tensor().unsqueeze(0), 8.0).unwrap();
            color_masks(&video, colors[k]).unwrap().iou(&mask).unwrap().0
        };
        with.push(iou(vec![Control::new(net.clone(), &image).unwrap()]));
        without.push(iou(vec![]));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    // Measured: 0.68 with the ControlNet (0.64, 0.88, 0.31, 0.91), 0.06 without (see the README's table, made
    // by scripts/controlnet-ablation.rhai, for more cases).
    assert!(mean(&with) >= 0.55, "subject IoU with the ControlNet {with:?}");
    assert!(mean(&with) >= mean(&without) + 0.4, "with {with:?}, without {without:?}");
}

#[test]
fn the_toy_clip_names_the_colour_of_clips_with_known_answers() {
    use vidtune_runtime::synthetic::COLORS;
    use vidtune_runtime::toy::world::held_out_combinations;
    let _serial = serial();
    let scorer = ClipModel::load("toy", "cpu", None).unwrap();
    let so = ScoreOptions::default();
    let held = held_out_combinations();
    let mut wrong = vec![];
    for (i, (name, _)) in COLORS.iter().enumerate() {
        // The first held-out combination of this colour, on the next colour's stripes.
        let &(shape, color, motion) = held.iter().find(|(_, c, _)| c == name).unwrap();
        let clip = held_out(shape, color, motion, COLORS[(i + 1) % COLORS.len()].0);
        let alignment =
            |c: &str| score(&scorer, &clip.video, &clip.caption.replacen(color, c, 1), &so).unwrap().text_alignment;
        let best = COLORS.iter().map(|(c, _)| (*c, alignment(c))).max_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0;
        if best != color {
            wrong.push(format!("{}: named {best}", clip.caption));
        }
    }
    assert!(wrong.is_empty(), "the toy CLIP named the wrong colour: {wrong:?}");
}

// Measured (see the toy models' README); the thresholds keep a margin.
// Built-in models: VAE 25.4 dB, colour accuracy 1.0, shape accuracy 0.40, text gain 0.18 of the loss. Edits (tav, the default settings): trajectory
// correlation 0.995 / 0.942, background 21.7 / 20.1 dB, alignment with the edit 80.7 / 82.4 against 19.9 /
// 43.9 with the source prompt; consistency 83.9 with sparse_causal + temporal against 75.5 with self.
const VAE_PSNR_MIN: f64 = 24.0;
const CLIP_COLOR_MIN: f64 = 0.9;
const CLIP_SHAPE_MIN: f64 = 0.33;
const TEXT_GAIN_MIN: f64 = 0.1;
const TRAJECTORY_MIN: f64 = 0.9;
const BACKGROUND_PSNR_MIN: f64 = 18.0;
// Long clips: the seam ratio (change across a window edge over the change inside windows), and the
// largest mean difference (of [−1, 1] pixels) from the source outside the dilated subject of any frame.
// Measured: independent windows 1.24, co-denoised with own anchors 1.13, independent windows on the
// global anchor 1.19, the default (co-denoised, global anchor) 1.11; the source clip 0.94.
const SEAM_MAX: f64 = 1.3;
const BACKGROUND_MEAN_ABS_MAX: f64 = 0.02;

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

/// The `mask-guided` preset on held-out colour edits: the subject where the source's was (IoU ≥ 0.7), the
/// background kept (≥ 25 dB), frames more consistent than Tune-A-Video's edits of the same clips, and the
/// colour changed. The clips are the first two of the test split of `scripts/ablation.rhai` (fixed by a
/// rule before any was run; the preset's settings were chosen on the dev split), not clips picked because
/// they pass. The preset's colour target (the asked colour in ≥ 90 % of frames) is not met on the test
/// split: white circle → yellow comes out red and orange (README, "The ablation"). The colour floor here
/// is the measured mean with a margin, so that it catches a regression and says where the method stands.
#[test]
fn the_mask_guided_preset_keeps_the_subject_and_the_background_of_test_clips() {
    let _serial = serial();
    let sd = toy_sd();
    let scorer = ClipModel::load("toy", "cpu", None).unwrap();
    let (mut hits, mut mine, mut theirs, mut seen) = (0.0, 0.0, 0.0, vec![]);
    let cases = [
        (Shape::Circle, "green", Motion::Right, "purple", "white"),
        (Shape::Circle, "white", Motion::Grow, "green", "yellow"),
    ];
    for (shape, color, motion, bg, to) in cases {
        let clip = held_out(shape, color, motion, bg);
        let edit = clip.caption.replacen(color, to, 1);
        let subject = format!("{to} {}", shape.name());
        let (out, _) = mask_guided_edit(sd.clone(), &clip, &edit, &subject, &MaskedSettings::default()).unwrap();
        let c = check_frames(&clip, &out, to, 3).unwrap();
        let what = format!(
            "{} → {to}: {:?}, IoU {:.2}, background {:.1} dB",
            clip.caption, c.colors, c.iou, c.background_psnr
        );
        eprintln!("mask-guided preset: {what}");
        assert!(c.iou >= 0.7, "subject IoU: {what}");
        assert!(c.background_psnr >= 25.0, "background: {what}");
        let unchanged = c.colors.iter().filter(|k| k.as_str() == color).count();
        assert!(unchanged <= 1, "the subject kept its colour: {what}");
        hits += c.hit_rate;
        let tav_out =
            edit_clip(sd.clone(), &clip.video, &clip.caption, &edit, &tav(), &EditSettings::default()).unwrap();
        let so = ScoreOptions::default();
        mine += score(&scorer, &out, &edit, &so).unwrap().frame_consistency;
        theirs += score(&scorer, &tav_out, &edit, &so).unwrap().frame_consistency;
        seen.push(what);
    }
    let n = cases.len() as f64;
    // Measured: all frames of green circle → white and none of white circle → yellow have the asked colour.
    assert!(hits / n >= 0.4, "colour hit rate {:.2}: {seen:?}", hits / n);
    assert!(mine >= theirs, "frame consistency {:.2} below Tune-A-Video's {:.2}: {seen:?}", mine / n, theirs / n);
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
    let clips = [TuneClip {
        video: clip.video.clone(),
        prompt: clip.caption.clone(),
        masks: Some(clip.masks.clone()),
        controls: vec![],
    }];
    let tuned = tune_clips(&model, &clips, &TuneOptions { steps: 60, lr: 1e-3, window: Some(8), ..Default::default() })
        .unwrap();
    let dilated = clip.masks.dilate(3).unwrap().tensor().to_kind(tch::Kind::Float);
    let outside = dilated.ones_like() - &dilated;
    let mut ratios = vec![];
    // Independent windows (stride 8) with their own anchors; co-denoising (stride 4) with their own
    // anchors; independent windows on the clip's first frame (the global anchor); and the default
    // (stride 4, global anchor).
    let plans = [
        ("independent windows", WindowOptions { stride: 8, anchor: Anchor::Window, ..WindowOptions::new(8) }),
        ("co-denoised, own anchors", WindowOptions { stride: 4, anchor: Anchor::Window, ..WindowOptions::new(8) }),
        ("independent windows, global anchor", WindowOptions { stride: 8, ..WindowOptions::new(8) }),
        ("default: co-denoised, global anchor", WindowOptions::new(8)),
    ];
    for (name, windows) in &plans {
        let windows = Some(windows.clone());
        let masks = Some(clip.masks.clone());
        let io = InvertOptions {
            steps: 20,
            prompt: clip.caption.clone(),
            masks: masks.clone(),
            windows: windows.clone(),
            ..Default::default()
        };
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
        // Every frame was denoised and pasted back: outside the subject each is its source frame.
        let diff = ((out.frames() - clip.video.frames()).abs() * &outside).sum_dim_intlist(
            &[1i64, 2, 3][..],
            false,
            tch::Kind::Float,
        ) / (outside.sum_dim_intlist(&[1i64, 2, 3][..], false, tch::Kind::Float) * 3.0);
        let worst = diff.max().double_value(&[]);
        assert!(worst < BACKGROUND_MEAN_ABS_MAX, "{name}: a frame's background is {worst:.4} away from its source");
        // The seams of the independent plan (every 8 frames) are where all are judged.
        ratios.push(seam_ratio(&frame_changes(&out), &plan(48, 8, 8).unwrap()));
    }
    let source = seam_ratio(&frame_changes(&clip.video), &plan(48, 8, 8).unwrap());
    let shown: Vec<String> = plans.iter().zip(&ratios).map(|((n, _), r)| format!("{n} {r:.2}")).collect();
    eprintln!("seam ratio: {}; source {source:.2}", shown.join(", "));
    let [independent, co, global, default] = ratios[..] else { unreachable!() };
    assert!(co <= SEAM_MAX, "co-denoised seams: {co:.2} times the change inside windows");
    assert!(co < independent, "co-denoising ({co:.2}) did not beat independent windows ({independent:.2})");
    assert!(global <= SEAM_MAX, "the global anchor left seams between independent windows: {global:.2}");
    assert!(global < independent, "the global anchor ({global:.2}) did not beat own anchors ({independent:.2})");
    assert!(default <= SEAM_MAX, "the default co-denoising left seams: {default:.2}");
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
    let clips = [TuneClip { video: clip.clone(), prompt: whole.caption.clone(), masks: Some(masks), controls: vec![] }];
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
    // Measured: 7 of 8 new frames pink, IoU 0.57, seam ratio 1.51 (the clip's own 0.98). The floors keep
    // one frame of colour, 0.07 of IoU and 0.2 of seam ratio as margin.
    assert!(c.hit_rate >= 0.75, "the new frames lost the subject's colour: {:?}", c.colors);
    assert!(c.iou >= 0.5, "the new frames lost the subject where the masks put it: IoU {:.2}", c.iou);
    assert!(seam <= 1.7, "a jump at the junction: {seam:.2} times the change between new frames");
}

/// Null-text inversion (Mokady et al.): on held-out clips, guided sampling (7.5) from the null-text
/// inversion with the source description reconstructs the clip as well as unguided sampling from the plain
/// inversion does (the most an inversion gives back; the toy VAE's round trip, about 24 dB, bounds both),
/// where guided sampling from the plain inversion drifts far below it. Against the VAE's round trip (the
/// inversion's own loss), null-text reaches 30 dB and the plain inversion at 7.5 does not.
#[test]
fn null_text_inversion_retraces_the_clip_under_guidance() {
    use vidtune_runtime::pipelines::invert::{invert, InvertOptions};
    use vidtune_runtime::pipelines::null_text::NullTextOptions;
    use vidtune_runtime::pipelines::sample::{sample, SampleOptions};
    use vidtune_runtime::pipelines::{decode_video, encode_video, to_video_latents};
    let _serial = serial();
    let model = vidtune_runtime::video::inflate(toy_sd(), &tav(), 0).unwrap();
    let held = vidtune_runtime::toy::world::held_out_combinations();
    // One clip here (20 s); the README reports three (`held.iter().step_by(held.len() / 3).take(3)`).
    for (k, &(shape, color, motion)) in held.iter().step_by(held.len() / 3).take(1).enumerate() {
        let clip = held_out_clip_of(shape, color, motion, ["purple", "green", "yellow"][k], 4).unwrap();
        let psnr = |v: &vidtune_runtime::Video| vidtune_kernels::image::psnr(v.frames(), clip.video.frames()).unwrap();
        let z = encode_video(&model.base, &clip.video).unwrap().mean * model.base.vae.model.scaling_factor();
        let round_trip = decode_video(&model.base, &to_video_latents(&z), 8.0).unwrap();
        let vae = psnr(&round_trip);
        // Against the clip as the VAE gives it back: what the inversion itself loses.
        let own = |v: &vidtune_runtime::Video| vidtune_kernels::image::psnr(v.frames(), round_trip.frames()).unwrap();
        let steps = 20;
        let at = |guidance: f64| SampleOptions { steps, guidance, seed: Some(1), ..Default::default() };
        let o = InvertOptions { steps, prompt: clip.caption.clone(), ..Default::default() };
        let plain = invert(&model, &clip.video, &o).unwrap();
        let unguided_video = sample(&model, &clip.caption, Some(&plain), &at(1.0)).unwrap().0;
        let drifted_video = sample(&model, &clip.caption, Some(&plain), &at(7.5)).unwrap().0;
        let (unguided, drifted) = (psnr(&unguided_video), psnr(&drifted_video));
        let o = InvertOptions { null_text: Some(NullTextOptions::default()), ..o };
        let nt = invert(&model, &clip.video, &o).unwrap();
        let null_text_video = sample(&model, &clip.caption, Some(&nt), &at(7.5)).unwrap().0;
        let null_text = psnr(&null_text_video);
        let (own_unguided, own_drifted, own_null_text) =
            (own(&unguided_video), own(&drifted_video), own(&null_text_video));
        eprintln!(
            "{}: VAE {vae:.2} dB; DDIM inversion unguided {unguided:.2} dB, at 7.5 {drifted:.2} dB; null-text at 7.5 \
             {null_text:.2} dB; against the VAE's round trip: unguided {own_unguided:.2}, at 7.5 {own_drifted:.2}, \
             null-text {own_null_text:.2} dB",
            clip.caption
        );
        assert!(
            null_text >= unguided - 0.5,
            "{}: null-text {null_text:.2} dB, unguided {unguided:.2} dB",
            clip.caption
        );
        assert!(null_text >= drifted + 5.0, "{}: null-text {null_text:.2} dB, plain {drifted:.2} dB", clip.caption);
        // The inversion's own loss, measured against the VAE's round trip: 39.16 dB here (34.55 and 34.60 on
        // the README's other two clips), plain DDIM at 7.5 16.33.
        assert!(own_null_text >= 30.0, "{}: null-text {own_null_text:.2} dB of the round trip", clip.caption);
        assert!(own_drifted < 30.0, "{}: plain at 7.5 {own_drifted:.2} dB of the round trip", clip.caption);
        // The memo keeps the two apart: the same latents, sampled with and without the null embeddings.
        use vidtune_runtime::pipelines::cached::sample_cached;
        use vidtune_runtime::pipelines::codenoise::PromptSchedule;
        let prompts = PromptSchedule::single(&clip.caption);
        for (latents, want) in [(&plain, drifted), (&nt, null_text), (&plain, drifted)] {
            let got = psnr(&sample_cached(&model, &prompts, Some(latents), &at(7.5), true).unwrap().value.0);
            assert!((got - want).abs() < 1e-9, "memoised sample {got:.3} dB, computed {want:.3} dB");
        }
    }
}

/// The toy model with Tune-A-Video's modules, the held-out clip at `at` of the held-out combinations on a
/// `background` background (4 frames), and its inversion with the source description over `steps` steps,
/// keeping the attention maps; with the inversion's options.
fn stored_inversion(
    at: usize,
    background: &str,
    steps: i64,
) -> (
    vidtune_runtime::video::VideoModel,
    SyntheticClip,
    vidtune_runtime::pipelines::invert::Latents,
    vidtune_runtime::pipelines::invert::InvertOptions,
) {
    use vidtune_runtime::pipelines::invert::{invert, InvertOptions};
    use vidtune_runtime::pipelines::store::StoreOptions;
    let model = vidtune_runtime::video::inflate(toy_sd(), &tav(), 0).unwrap();
    let (shape, color, motion) = vidtune_runtime::toy::world::held_out_combinations()[at];
    let clip = held_out_clip_of(shape, color, motion, background, 4).unwrap();
    let o = InvertOptions {
        steps,
        prompt: clip.caption.clone(),
        store: Some(StoreOptions::default()),
        ..Default::default()
    };
    let inv = invert(&model, &clip.video, &o).unwrap();
    (model, clip, inv, o)
}

/// Attention fusion (FateZero): the inversion stores the maps of the levels it should (every level but the
/// largest, half precision, per head, rows of probabilities); fusion that replaces nothing, or whose blend
/// mask covers every frame, is the plain sample (the explicit attention path equals the fused kernel); the
/// source's self-attention in place of the edit's changes the sample; a word weight of 1 is the prompt
/// without markup, another changes the sample. (What fusion does to edits is measured by `vidtune eval`:
/// README, "Zero-shot edits".)
#[test]
fn attention_fusion_reads_the_maps_the_inversion_stored() {
    use vidtune_runtime::models::attention_processor::Site;
    use vidtune_runtime::pipelines::fusion::FusionOptions;
    use vidtune_runtime::pipelines::invert::{invert, InvertOptions};
    use vidtune_runtime::pipelines::sample::{sample, SampleOptions};
    use vidtune_runtime::pipelines::store::StoreOptions;
    let _serial = serial();
    let steps = 10;
    let (model, clip, inv, o) =
        stored_inversion(vidtune_runtime::toy::world::held_out_combinations().len() / 2, "purple", steps);
    let color = clip.spec.color.clone().unwrap();
    let color = color.as_str();
    let store = inv.store.clone().unwrap();
    // The toy UNet runs at 16² and 8²: the 8² level's attn1 and attn2 of down block 1, the mid block and
    // the two transformers of up block 0, in call order, for each of the 10 steps.
    assert_eq!((store.steps.len(), store.layers()), (10, 8));
    let sites: Vec<Site> = store.steps[0].iter().map(|m| m.site).collect();
    assert_eq!(sites, [Site::SelfAttn, Site::Cross].repeat(4));
    for m in store.steps.iter().flatten() {
        let keys = if m.site == Site::Cross { 77 } else { 2 * 64 };
        assert_eq!(m.probs.size(), [4, 8, 64, keys]);
        assert_eq!(m.probs.kind(), tch::Kind::Half);
        let sums = m.probs.to_kind(tch::Kind::Float).sum_dim_intlist(-1, false, tch::Kind::Float);
        assert!((sums - 1.0).abs().max().double_value(&[]) < 2e-2);
    }
    let edit = clip.caption.replacen(color, if color == "red" { "blue" } else { "red" }, 1);
    let at = |fusion: Option<FusionOptions>, masks: Option<vidtune_runtime::Masks>| SampleOptions {
        steps,
        guidance: 7.5,
        seed: Some(1),
        fusion,
        masks,
        ..Default::default()
    };
    let run = |o: &SampleOptions| sample(&model, &edit, Some(&inv), o).unwrap().0;
    let plain = run(&at(None, None));
    let gap = |v: &vidtune_runtime::Video| (plain.frames() - v.frames()).abs().max().double_value(&[]);
    let off = FusionOptions { cross_replace: 0.0, self_replace: (0.0, 0.0), ..Default::default() };
    assert!(gap(&run(&at(Some(off), None))) < 1e-3, "fusion that replaces nothing moved a pixel");
    let everywhere = clip.masks.union(&clip.masks.invert().unwrap()).unwrap();
    let own = FusionOptions { cross_replace: 0.0, self_replace: (0.0, 1.0), blend_masks: true, ..Default::default() };
    assert!(gap(&run(&at(Some(own.clone()), Some(everywhere)))) < 1e-3, "a blend mask over everything moved a pixel");
    let source = FusionOptions { blend_masks: false, ..own };
    assert!(gap(&run(&at(Some(source), None))) > 0.05, "the source's self-attention changed nothing");
    // Word weights (prompt-to-prompt's reweighting, written as in A1111): weight 1 is the prompt without
    // markup; another weight changes the sample, alone and with fusion.
    let new = if color == "red" { "blue" } else { "red" };
    let weighted = |w: f64| clip.caption.replacen(color, &format!("({new}:{w})"), 1);
    let by = |prompt: &str, o: &SampleOptions| sample(&model, prompt, Some(&inv), o).unwrap().0;
    assert!(gap(&by(&weighted(1.0), &at(None, None))) < 1e-3, "weight 1 moved a pixel");
    assert!(gap(&by(&weighted(3.0), &at(None, None))) > 0.05, "weight 3 changed nothing");
    let fused = by(&edit, &at(Some(FusionOptions::default()), None));
    let fused_weighted = by(&weighted(3.0), &at(Some(FusionOptions::default()), None));
    assert!((fused.frames() - fused_weighted.frames()).abs().max().double_value(&[]) > 0.05);
    // A store on disk: a file per step, read back a step at a time, the same fusion; removed with the latents.
    let cache = tempfile::tempdir().unwrap();
    let before = std::env::var_os("VIDTUNE_CACHE");
    std::env::set_var("VIDTUNE_CACHE", cache.path());
    let on_disk = StoreOptions { disk: true, ..StoreOptions::default() };
    let inv_disk = invert(&model, &clip.video, &InvertOptions { store: Some(on_disk), ..o.clone() }).unwrap();
    match before {
        Some(v) => std::env::set_var("VIDTUNE_CACHE", v),
        None => std::env::remove_var("VIDTUNE_CACHE"),
    }
    let st = inv_disk.store.clone().unwrap();
    let dir = st.disk.as_ref().unwrap().dir.clone();
    assert!(dir.starts_with(cache.path().join("stores")), "{}", dir.display());
    assert_eq!((st.len(), st.layers(), st.bytes(), st.steps.len()), (10, 8, store.bytes(), 0));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 10);
    let from_disk = sample(&model, &edit, Some(&inv_disk), &at(Some(FusionOptions::default()), None)).unwrap().0;
    assert!(
        (fused.frames() - from_disk.frames()).abs().max().double_value(&[]) < 1e-6,
        "the disk store fused otherwise"
    );
    drop((st, inv_disk));
    assert!(!dir.exists(), "the store's files outlived it");
    // Fusion checks what it reads: the inversion's steps.
    let e = sample(&model, &edit, Some(&inv), &SampleOptions { steps: 20, ..at(Some(FusionOptions::default()), None) })
        .unwrap_err()
        .to_string();
    assert!(e.contains("sample with steps: 10"), "{e}");
}

/// Video-P2P's source branch and prompt-to-prompt's local blend: the source runs beside the edit in one
/// batch, on null-text inversion's embeddings when the latents have them (decoupled guidance). A local
/// blend whose mask is empty (threshold 1) holds the edit on the source — the source branch's sample,
/// which is the plain sample of the source prompt, or with null-text the null-text reconstruction; without
/// the branch, the inversion's trajectory, down to its clean latents. A mask over everything (threshold 0)
/// changes nothing; one in between (0.5: the toy UNet's word maps are broad) gives neither the edit nor the source.
#[test]
fn the_source_branch_runs_beside_the_edit_and_local_blend_holds_it_outside_the_words() {
    use vidtune_runtime::pipelines::fusion::{FusionOptions, LocalBlend};
    use vidtune_runtime::pipelines::invert::{invert, InvertOptions};
    use vidtune_runtime::pipelines::null_text::NullTextOptions;
    use vidtune_runtime::pipelines::sample::{sample, sample_latents, SampleOptions};
    let _serial = serial();
    let steps = 8;
    let (model, clip, inv, o) =
        stored_inversion(vidtune_runtime::toy::world::held_out_combinations().len() / 3, "yellow", steps);
    let color = clip.spec.color.clone().unwrap();
    let color = color.as_str();
    let new = if color == "red" { "blue" } else { "red" };
    let edit = clip.caption.replacen(color, new, 1);
    let noun = clip.caption.split(' ').nth(2).unwrap().to_string();
    let at = |fusion: FusionOptions| SampleOptions {
        steps,
        guidance: 7.5,
        seed: Some(1),
        fusion: Some(fusion),
        ..Default::default()
    };
    let plain = |prompt: &str, l| {
        sample(&model, prompt, Some(l), &SampleOptions { fusion: None, ..at(Default::default()) }).unwrap().0
    };
    let gap = |a: &vidtune_runtime::Video, b: &vidtune_runtime::Video| {
        (a.frames() - b.frames()).abs().max().double_value(&[])
    };
    let off = FusionOptions { cross_replace: 0.0, self_replace: (0.0, 0.0), source_branch: true, ..Default::default() };
    let source = plain(&clip.caption, &inv);
    // The edit branch of the source prompt is the source's own sample: the batch changes nothing.
    let same = sample(&model, &clip.caption, Some(&inv), &at(off.clone())).unwrap().0;
    assert!(gap(&same, &source) < 1e-3, "the source branch beside its own prompt moved a pixel");
    let blend =
        |threshold: f64| LocalBlend { source_words: vec![noun.clone()], threshold, start: 0.0, ..Default::default() };
    let with = |threshold: f64, branch: bool| FusionOptions {
        local_blend: Some(blend(threshold)),
        source_branch: branch,
        ..off.clone()
    };
    let run = |o: FusionOptions| sample(&model, &edit, Some(&inv), &at(o)).unwrap().0;
    let edited = plain(&edit, &inv);
    assert!(gap(&edited, &source) > 0.05, "the edit changed nothing");
    assert!(gap(&run(with(1.0, true)), &source) < 1e-3, "an empty local blend mask left the edit's latents");
    assert!(gap(&run(with(0.0, true)), &edited) < 1e-3, "a local blend mask over everything moved a pixel");
    let between = run(with(0.5, true));
    assert!(gap(&between, &edited) > 0.02 && gap(&between, &source) > 0.02, "local blend at 0.5 is all or nothing");
    // Without the branch, the source is the inversion's trajectory: an empty mask ends on its clean latents.
    let (x, _) = sample_latents(&model, &edit, Some(&inv), &at(with(1.0, false))).unwrap();
    let clean = &inv.trajectory.as_ref().unwrap()[0];
    assert!((x - clean).abs().max().double_value(&[]) < 1e-5, "stored local blend left the trajectory");
    // Decoupled guidance: the source branch reads null-text inversion's embeddings.
    let o =
        InvertOptions { null_text: Some(NullTextOptions { inner_steps: 2, ..Default::default() }), store: None, ..o };
    let nt = invert(&model, &clip.video, &o).unwrap();
    let retraced = plain(&clip.caption, &nt);
    assert!(gap(&retraced, &source) > 0.01, "null-text changed nothing");
    let held_on_source = sample(&model, &edit, Some(&nt), &at(with(1.0, true))).unwrap().0;
    assert!(gap(&held_on_source, &retraced) < 1e-3, "the source branch did not use the null-text embeddings");
    // What it refuses: words the edit lacks; a stored blend without a store.
    let bad = FusionOptions {
        local_blend: Some(LocalBlend { target_words: vec!["zebra".into()], ..blend(0.3) }),
        ..off.clone()
    };
    let e = sample(&model, &edit, Some(&inv), &at(bad)).unwrap_err().to_string();
    assert!(e.contains("\"zebra\"") && e.contains("not all in the edit's prompt"), "{e}");
    let e = sample(&model, &edit, Some(&nt), &at(with(0.3, false))).unwrap_err().to_string();
    assert!(e.contains("invert(…, #{store: true})") && e.contains("source_branch"), "{e}");
}
