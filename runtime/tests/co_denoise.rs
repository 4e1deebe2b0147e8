//! Co-denoising: one window is the plain loop, windows are the model run on slices of the clip (masks
//! and first frames included) merged per frame, batching windows changes nothing, and prompts can change
//! along the clip.

mod common;
use common::{random_tiny, serial};

use std::rc::Rc;
use tch::{Kind, Tensor};
use vidtune_kernels::codenoise::Weighting;
use vidtune_kernels_tests::assert_close;
use vidtune_runtime::masks::Masks;
use vidtune_runtime::pipelines::codenoise::{Anchor, PromptSchedule, PromptSpan, WindowOptions};
use vidtune_runtime::pipelines::invert::{invert, InvertOptions, Latents};
use vidtune_runtime::pipelines::sample::{co_denoise, sample_latents, sample_schedule_latents, SampleOptions};
use vidtune_runtime::synthetic::{synthetic_clip, Shape, SyntheticSpec};
use vidtune_runtime::video::{inflate, VideoModel, VideoSpec};
use vidtune_runtime::StableDiffusion;
use vidtune_runtime::Video;

fn clip(frames: usize) -> (Video, Masks) {
    let c = synthetic_clip(&SyntheticSpec {
        frames,
        width: 32,
        height: 32,
        shape: Some(Shape::Circle),
        seed: 3,
        ..Default::default()
    })
    .unwrap();
    (c.video, c.masks)
}

fn windows(window: i64, stride: i64, weights: Weighting, batch: i64) -> Option<WindowOptions> {
    Some(WindowOptions { stride, weights, batch, anchor: Anchor::Window, ..WindowOptions::new(window) })
}

fn opts(seed: u64) -> SampleOptions {
    SampleOptions { steps: 3, guidance: 4.0, seed: Some(seed), ..Default::default() }
}

/// Frames `start..start + len` of inverted latents (no trajectory).
fn slice(l: &Latents, start: i64, len: i64) -> Latents {
    Latents {
        latents: l.latents.narrow(2, start, len),
        source: l.source.narrow(2, start, len),
        trajectory: None,
        clip: None,
        ..l.clone()
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn one_window_over_the_whole_clip_is_sample_and_invert() {
    let _serial = serial();
    let sd = random_tiny();
    let model = inflate(sd, &VideoSpec::default(), 1).unwrap();
    let (video, _) = clip(6);
    let inv = invert(&model, &video, &InvertOptions { steps: 3, ..Default::default() }).unwrap();
    for window in [6, 10] {
        let o = InvertOptions { steps: 3, windows: windows(window, 2, Weighting::Triangular, 1), ..Default::default() };
        let inv_w = invert(&model, &video, &o).unwrap();
        assert!(max_diff(&inv_w.latents, &inv.latents) < 1e-6, "invert, window {window}");
    }
    let (plain, _) = sample_latents(&model, "a red circle", Some(&inv), &opts(1)).unwrap();
    for weights in [Weighting::Uniform, Weighting::Triangular, Weighting::Gaussian { sigma: 0.25 }] {
        let o = SampleOptions { windows: windows(6, 3, weights, 2), ..opts(1) };
        let (co, _) = sample_schedule_latents(&model, &PromptSchedule::single("a red circle"), Some(&inv), &o).unwrap();
        assert!(max_diff(&co, &plain) < 1e-6, "{weights}: {}", max_diff(&co, &plain));
    }
}

#[test]
fn side_by_side_windows_are_the_clip_halves_sampled_alone_masks_and_subject_included() {
    let _serial = serial();
    // Mask-guided cross-attention and mask cross-attention read each window's own masks; sparse-causal
    // attention each window's own first frame. Windows that do not overlap are then the halves of the clip
    // sampled on their own.
    let sd = random_tiny();
    let model = inflate(sd, &VideoSpec::mask_guided(), 2).unwrap();
    let (video, masks) = clip(6);
    let inv =
        invert(&model, &video, &InvertOptions { steps: 3, masks: Some(masks.clone()), ..Default::default() }).unwrap();
    let base = SampleOptions { masks: Some(masks.clone()), subject: Some("red circle".into()), ..opts(4) };
    let o = SampleOptions { windows: windows(3, 3, Weighting::Uniform, 1), ..base.clone() };
    let (co, _) = sample_schedule_latents(&model, &PromptSchedule::single("a red circle"), Some(&inv), &o).unwrap();
    let halves: Vec<Tensor> = [0, 3]
        .iter()
        .map(|&start| {
            let o = SampleOptions { masks: Some(masks.slice_frames(start, 3).unwrap()), ..base.clone() };
            sample_latents(&model, "a red circle", Some(&slice(&inv, start, 3)), &o).unwrap().0
        })
        .collect();
    let want = Tensor::cat(&halves, 2);
    assert!(max_diff(&co, &want) < 1e-5, "{}", max_diff(&co, &want));
    // Overlapping windows differ from the plain loop (the seams are merged), and every frame is denoised.
    let o = SampleOptions { windows: windows(4, 2, Weighting::Triangular, 1), ..base.clone() };
    let (overlap, _) =
        sample_schedule_latents(&model, &PromptSchedule::single("a red circle"), Some(&inv), &o).unwrap();
    let (plain, _) = sample_latents(&model, "a red circle", Some(&inv), &base).unwrap();
    assert!(max_diff(&overlap, &plain) > 1e-4);
    assert!(overlap.isfinite().all().int64_value(&[]) == 1);
}

#[test]
fn batched_windows_equal_windows_one_by_one() {
    let _serial = serial();
    let sd = random_tiny();
    let model = inflate(sd, &VideoSpec::default(), 3).unwrap();
    let prompts = PromptSchedule::single("a blue square");
    let one = SampleOptions { frames: Some(10), windows: windows(4, 2, Weighting::Triangular, 1), ..opts(7) };
    let (a, _) = sample_schedule_latents(&model, &prompts, None, &one).unwrap();
    for batch in [2, 3, 16] {
        let o = SampleOptions { windows: windows(4, 2, Weighting::Triangular, batch), ..one.clone() };
        let (b, _) = sample_schedule_latents(&model, &prompts, None, &o).unwrap();
        assert_close(&b, &a, 1e-5, &format!("batch {batch}"));
    }
}

fn model_with(sd: &Rc<StableDiffusion>) -> VideoModel {
    inflate(sd.clone(), &VideoSpec::default(), 5).unwrap()
}

#[test]
fn prompts_along_the_clip_condition_their_windows() {
    let _serial = serial();
    let sd = random_tiny();
    let model = model_with(&sd);
    let o = SampleOptions { frames: Some(8), windows: windows(4, 4, Weighting::Uniform, 1), ..opts(9) };
    let red = PromptSchedule::single("a red circle");
    let blue = PromptSchedule::single("a blue circle");
    let story = PromptSchedule(vec![
        PromptSpan { first: 0, last: 3, prompt: "a red circle".into() },
        PromptSpan { first: 4, last: 7, prompt: "a blue circle".into() },
    ]);
    let (r, _) = sample_schedule_latents(&model, &red, None, &o).unwrap();
    let (b, _) = sample_schedule_latents(&model, &blue, None, &o).unwrap();
    let (s, _) = sample_schedule_latents(&model, &story, None, &o).unwrap();
    // Side-by-side windows: the first half is the red clip's, the second the blue clip's.
    assert!(max_diff(&s.narrow(2, 0, 4), &r.narrow(2, 0, 4)) < 1e-6);
    assert!(max_diff(&s.narrow(2, 4, 4), &b.narrow(2, 4, 4)) < 1e-6);
    assert!(max_diff(&r, &b) > 1e-4);
    // A frame without a prompt is named; several prompts need windows.
    let gap = PromptSchedule(vec![PromptSpan { first: 0, last: 5, prompt: "a red circle".into() }]);
    let err = sample_schedule_latents(&model, &gap, None, &o).unwrap_err().to_string();
    assert!(err.contains("frame 6 of 8 has no prompt"), "{err}");
    let err = sample_schedule_latents(&model, &story, None, &opts(9)).unwrap_err().to_string();
    assert!(err.contains("need windows"), "{err}");
}

#[test]
fn co_denoise_decodes_every_frame_of_a_clip_longer_than_its_window() {
    let _serial = serial();
    let sd = random_tiny();
    let model = model_with(&sd);
    let (video, _) = clip(11);
    let inv = invert(
        &model,
        &video,
        &InvertOptions { steps: 2, windows: windows(4, 3, Weighting::Uniform, 1), ..Default::default() },
    )
    .unwrap();
    let o = SampleOptions { steps: 2, windows: windows(4, 3, Weighting::Gaussian { sigma: 0.25 }, 2), ..opts(2) };
    let (out, _) = co_denoise(&model, &PromptSchedule::single("a red circle"), Some(&inv), &o).unwrap();
    assert_eq!(out.len(), 11);
    assert_eq!((out.width(), out.height()), (32, 32));
    // Every frame was denoised: its latent is finite and moved from the inverted noise it started from
    // as far as the others did (an uncovered frame keeps its noise, or becomes 0 / NaN in the merge).
    let (x, _) = sample_schedule_latents(&model, &PromptSchedule::single("a red circle"), Some(&inv), &o).unwrap();
    assert!(bool::try_from(x.isfinite().all()).unwrap(), "a frame's latent is not finite");
    let moved: Vec<f64> = (0..11)
        .map(|k| {
            let (a, b) = (x.select(2, k), inv.latents.select(2, k));
            (&a - &b).square().mean(Kind::Float).sqrt().double_value(&[])
                / b.square().mean(Kind::Float).sqrt().double_value(&[])
        })
        .collect();
    let mut sorted = moved.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[5];
    eprintln!("each frame's latent moved from its noise by {moved:.3?} of the noise");
    assert!(median > 0.1, "the frames barely moved from their noise: {moved:?}");
    for (k, m) in moved.iter().enumerate() {
        assert!(*m >= 0.5 * median, "frame {k} moved {m:.3} of its noise, the median frame {median:.3}");
    }
}

#[test]
fn tuning_on_windows_trains_on_slices_and_a_window_over_the_clip_is_plain_tuning() {
    let _serial = serial();
    use vidtune_runtime::pipelines::tune::{tune_clips, TuneClip, TuneOptions};
    let sd = random_tiny();
    let model = inflate(sd, &VideoSpec::mask_guided(), 6).unwrap();
    let (video, masks) = clip(6);
    let clips = [TuneClip { video, prompt: "a red circle".into(), masks: Some(masks), controls: vec![] }];
    let o = TuneOptions { steps: 3, lr: 1e-3, ..Default::default() };
    let plain = tune_clips(&model, &clips, &o).unwrap();
    let whole = tune_clips(&model, &clips, &TuneOptions { window: Some(16), ..o.clone() }).unwrap();
    let windowed = tune_clips(&model, &clips, &TuneOptions { window: Some(3), ..o.clone() }).unwrap();
    // The same draws and the same frames: the same losses (Adam's first steps turn float noise in
    // near-zero gradients into whole steps, so the weights are compared through the losses).
    let losses = |m: &VideoModel| m.record.as_ref().unwrap().losses.clone();
    for (a, b) in losses(&plain).iter().zip(losses(&whole)) {
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1e-3), "a window over the whole clip changed tuning: {a} vs {b}");
    }
    let first = (losses(&plain)[0] - losses(&windowed)[0]).abs();
    assert!(first > 1e-6, "windows of 3 frames trained on the whole clip");
    assert_eq!(windowed.record.as_ref().unwrap().steps_done, 3);
    let err = tune_clips(&model, &clips, &TuneOptions { window: Some(0), ..o }).unwrap_err().to_string();
    assert!(err.contains("window"), "{err}");
}

#[test]
fn average_fusion_is_eq_11_and_one_sample_is_plain_sampling() {
    use vidtune_runtime::pipelines::fuse::{fuse, fuse_latents, FuseOptions};
    let _serial = serial();
    // Eq. 11 element by element.
    let samples: Vec<Tensor> =
        (0..3).map(|i| Tensor::full([1, 2, 2, 1, 2], i as f64 + 1.0, (Kind::Float, tch::Device::Cpu))).collect();
    let m = Tensor::from_slice(&[1.0f32, 0.0, 0.25, 0.5]).view([1, 1, 2, 1, 2]);
    let got = fuse_latents(&samples, &m, 0.5, 2.0).unwrap();
    let want: Vec<f32> = [1.0f32, 0.0, 0.25, 0.5].iter().map(|&mm| 0.5 * 2.0 * (1.0 - mm) + 2.0 * 1.0 * mm).collect();
    let want = Tensor::from_slice(&want).view([1, 1, 2, 1, 2]).expand([1, 2, 2, 1, 2], false);
    assert_close(&got, &want, 1e-6, "Eq. 11");

    let sd = random_tiny();
    let model = inflate(sd, &VideoSpec::default(), 8).unwrap();
    let (_, masks) = clip(4);
    let o = SampleOptions { masks: Some(masks), steps: 4, ..opts(5) };
    let one = FuseOptions { samples: 1, at: 2, ..Default::default() };
    let (fused, _) = fuse(&model, "a red circle", &o, &one).unwrap();
    let (plain, _) = vidtune_runtime::pipelines::sample::sample(&model, "a red circle", None, &o).unwrap();
    assert!(max_diff(fused.frames(), plain.frames()) < 1e-4, "{}", max_diff(fused.frames(), plain.frames()));
    let (three, _) = fuse(&model, "a red circle", &o, &FuseOptions { samples: 3, ..one }).unwrap();
    assert_eq!(three.len(), 4);
    assert!(max_diff(three.frames(), plain.frames()) > 1e-3, "three samples fused like one");
    let err = fuse(&model, "a red circle", &SampleOptions { masks: None, ..o.clone() }, &one).unwrap_err();
    assert!(err.to_string().contains("needs the subject's masks"), "{err}");
    let err = fuse(&model, "a red circle", &o, &FuseOptions { at: 4, ..one }).unwrap_err();
    assert!(err.to_string().contains("at must be between 1 and steps − 1 (3)"), "{err}");
}

#[test]
fn a_global_anchor_gives_every_window_the_clips_first_frame() {
    use vidtune_runtime::pipelines::codenoise::Windowed;
    use vidtune_runtime::pipelines::denoise::NoisePredictor;
    use vidtune_runtime::video::Conditioning;
    let _serial = serial();
    let sd = random_tiny();
    let t = Tensor::from(700i64);
    let text = sd.encode_prompt("a red circle").unwrap();
    for spec in [VideoSpec::mask_guided(), VideoSpec::dynamic_mask()] {
        let model = inflate(sd.clone(), &spec, 9).unwrap();
        let (_, masks) = clip(6);
        tch::manual_seed(11);
        let x = Tensor::randn([2, 4, 6, 4, 4], (Kind::Float, tch::Device::Cpu));
        let cond = Conditioning::text(&Tensor::cat(&[&text, &text], 0)).with_masks(Some(masks.tensor()));
        let options = WindowOptions { stride: 3, anchor: Anchor::Global, ..WindowOptions::new(3) };
        let global = |x: &Tensor, cond: &Conditioning, batch: i64| {
            let w = Windowed::new(&model, WindowOptions { batch, ..options.clone() }, None).unwrap();
            tch::no_grad(|| w.predict(x, &t, cond)).unwrap()
        };
        let own = |x: &Tensor, cond: &Conditioning| {
            let w = Windowed::new(&model, WindowOptions { anchor: Anchor::Window, ..options.clone() }, None).unwrap();
            tch::no_grad(|| w.predict(x, &t, cond)).unwrap()
        };
        let got = global(&x, &cond, 1);
        let theirs = own(&x, &cond);
        // The first window is the plain call either way; the second attends to another first frame.
        let first = tch::no_grad(|| model.predict(&x.narrow(2, 0, 3), &t, &cond.window(0, 3))).unwrap();
        assert!(max_diff(&got.narrow(2, 0, 3), &first) < 1e-6);
        assert!(max_diff(&theirs.narrow(2, 0, 3), &first) < 1e-6);
        assert!(max_diff(&theirs.narrow(2, 3, 3), &got.narrow(2, 3, 3)) > 1e-4, "{}", spec.describe());
        // When the second window repeats the first (frames, masks), the clip's first frame is the
        // window's own, and both anchors agree: the recorded keys, values and mask shares are the ones
        // the window would compute.
        let twice = Tensor::cat(&[x.narrow(2, 0, 3), x.narrow(2, 0, 3)], 2);
        let m = masks.tensor().narrow(0, 0, 3);
        let cond2 = Conditioning::text(&cond.text).with_masks(Some(&Tensor::cat(&[&m, &m], 0)));
        let (a, b) = (global(&twice, &cond2, 1), own(&twice, &cond2));
        assert!(max_diff(&a, &b) < 1e-5, "{}: {}", spec.describe(), max_diff(&a, &b));
        assert!(max_diff(&a.narrow(2, 3, 3), &first) < 1e-5);
    }
    // Without masks windows batch; the recorded first frame is repeated over the batch.
    let model = inflate(sd.clone(), &VideoSpec::default(), 9).unwrap();
    tch::manual_seed(12);
    let x = Tensor::randn([2, 4, 9, 4, 4], (Kind::Float, tch::Device::Cpu));
    let cond = Conditioning::text(&Tensor::cat(&[&text, &text], 0));
    let run = |batch: i64| {
        let options = WindowOptions { stride: 3, batch, anchor: Anchor::Global, ..WindowOptions::new(3) };
        let w = Windowed::new(&model, options, None).unwrap();
        tch::no_grad(|| w.predict(&x, &t, &cond)).unwrap()
    };
    let (one, two) = (run(1), run(2));
    assert!(max_diff(&one, &two) < 1e-5, "{}", max_diff(&one, &two));
}

#[test]
fn windows_spread_over_a_device_list_and_replicas_predict_like_the_model() {
    use vidtune_runtime::pipelines::denoise::NoisePredictor;
    use vidtune_runtime::video::processors::{ModuleSpec, Role};
    use vidtune_runtime::video::Conditioning;
    let _serial = serial();
    let sd = random_tiny();
    let t = Tensor::from(500i64);
    let text = sd.encode_prompt("a red circle").unwrap();
    let stam = VideoSpec { temporal: Some(ModuleSpec::named(Role::Temporal, "stam").unwrap()), ..VideoSpec::default() };
    // Every tensor, the mask encoder (mca) and the modules' state (stam's spectral norms) are carried over.
    for spec in [VideoSpec::mask_guided(), stam] {
        let model = inflate(sd.clone(), &spec, 4).unwrap();
        let replica = model.replica(tch::Device::Cpu).unwrap();
        let (ours, theirs) = (model.vars.variables(), replica.vars.variables());
        assert_eq!(ours.len(), theirs.len());
        for (name, t) in &ours {
            assert!(t.equal(&theirs[name]), "{name}");
        }
        let (_, masks) = clip(4);
        tch::manual_seed(3);
        let x = Tensor::randn([2, 4, 4, 4, 4], (Kind::Float, tch::Device::Cpu));
        let cond = Conditioning::text(&Tensor::cat(&[&text, &text], 0)).with_masks(Some(masks.tensor()));
        let a = tch::no_grad(|| model.predict(&x, &t, &cond)).unwrap();
        let b = tch::no_grad(|| replica.predict(&x, &t, &cond.to_device(tch::Device::Cpu))).unwrap();
        assert!(max_diff(&a, &b) == 0.0, "{}: {}", spec.describe(), max_diff(&a, &b));
    }
    // The CPU device list of one (or the CPU named twice) is the plain windowed loop.
    let model = model_with(&sd);
    let prompts = PromptSchedule::single("a blue square");
    let plain = SampleOptions { frames: Some(10), windows: windows(4, 2, Weighting::Uniform, 2), ..opts(8) };
    let (want, _) = sample_schedule_latents(&model, &prompts, None, &plain).unwrap();
    for devices in [vec![tch::Device::Cpu], vec![tch::Device::Cpu, tch::Device::Cpu]] {
        let mut w = plain.windows.clone().unwrap();
        w.devices = devices.clone();
        let o = SampleOptions { windows: Some(w), ..plain.clone() };
        let (got, _) = sample_schedule_latents(&model, &prompts, None, &o).unwrap();
        assert!(max_diff(&got, &want) == 0.0, "{devices:?}");
    }
}

#[test]
fn an_observer_sees_every_step_and_can_stop_the_loop() {
    use vidtune_runtime::pipelines::denoise::{observed, Flow};
    let _serial = serial();
    let sd = random_tiny();
    let model = model_with(&sd);
    let prompts = PromptSchedule::single("a red circle");
    let o = SampleOptions { steps: 4, frames: Some(6), windows: windows(4, 2, Weighting::Uniform, 1), ..opts(3) };
    let mut seen = vec![];
    let (full, _) = observed(
        &mut |v| {
            seen.push((v.step, v.steps, v.t, v.x.size(), v.x0.map(|x| x.size())));
            Ok(Flow::Continue)
        },
        || sample_schedule_latents(&model, &prompts, None, &o),
    )
    .unwrap();
    assert_eq!(seen.len(), 4);
    for (i, (step, steps, t, x, x0)) in seen.iter().enumerate() {
        assert_eq!((*step, *steps), (i + 1, 4));
        assert_eq!(x, &full.size());
        assert_eq!(x0.as_ref(), Some(&full.size()), "walking down, the step's x̂₀ is shown");
        assert!(i == 0 || *t < seen[i - 1].2, "timesteps descend");
    }
    // Stopping after two steps returns the latents there: what `until: 2` gives.
    let (stopped, _) = observed(&mut |v| Ok(if v.step == 2 { Flow::Stop } else { Flow::Continue }), || {
        sample_schedule_latents(&model, &prompts, None, &o)
    })
    .unwrap();
    let (until, _) =
        sample_schedule_latents(&model, &prompts, None, &SampleOptions { until: Some(2), ..o.clone() }).unwrap();
    assert!(max_diff(&stopped, &until) == 0.0);
    assert!(max_diff(&stopped, &full) > 1e-4);
    // Outside `observed` nothing is called; an error from the observer ends the loop with it.
    let err = observed(&mut |_| Err(vidtune_runtime::Error::Invalid("on_step: boom".into())), || {
        sample_schedule_latents(&model, &prompts, None, &o)
    })
    .unwrap_err();
    assert!(err.to_string().contains("boom"));
    let (again, _) = sample_schedule_latents(&model, &prompts, None, &o).unwrap();
    assert!(max_diff(&again, &full) == 0.0);
}
