//! Gradient checkpointing and mixed-precision tuning: the gradients a checkpointed backward leaves are
//! the plain backward's, for Tune-A-Video's modules, a module with running state (STAM's spectral norms)
//! and one whose trained mask encoder feeds every block (mask-guided attention); `precision` and
//! `checkpointing` reach the tuning loop.

mod common;
use common::{random_tiny, serial};

use tch::{Kind, Tensor};
use vidtune_runtime::masks::Masks;
use vidtune_runtime::models::checkpoint::Tape;
use vidtune_runtime::pipelines::tune::{trainable_names, tune_clips, TuneClip, TuneOptions, TAV_TRAIN};
use vidtune_runtime::synthetic::{synthetic_clip, Shape, SyntheticSpec};
use vidtune_runtime::video::processors::{ModuleSpec, Role};
use vidtune_runtime::video::{inflate, Conditioning, VideoModel, VideoSpec};
use vidtune_runtime::Video;

fn clip(frames: usize) -> (Video, Masks) {
    let c = synthetic_clip(&SyntheticSpec {
        frames,
        width: 32,
        height: 32,
        shape: Some(Shape::Circle),
        seed: 5,
        ..Default::default()
    })
    .unwrap();
    (c.video, c.masks)
}

/// The trainable parameters of `model` (Tune-A-Video's set and its modules'), made to require
/// gradients, with every other output projection given weights so gradients reach everything.
fn trainables(model: &VideoModel) -> Vec<(String, Tensor)> {
    let mut patterns: Vec<String> = TAV_TRAIN.iter().map(|s| s.to_string()).collect();
    patterns.extend(model.module_trainables());
    let names = trainable_names(model, &patterns).unwrap();
    let vars = model.vars.variables();
    tch::no_grad(|| {
        for (name, mut v) in vars.iter().map(|(n, v)| (n.clone(), v.shallow_clone())) {
            // Zero-initialised outputs (temporal and mask attention) would block every gradient upstream.
            if name.ends_with("to_out.0.weight") && v.abs().sum(Kind::Float).double_value(&[]) == 0.0 {
                v.copy_(&(Tensor::randn(v.size(), (Kind::Float, tch::Device::Cpu)) * 0.1));
            }
        }
    });
    names
        .into_iter()
        .map(|n| {
            let p = vars[&n].shallow_clone();
            let mut p = p.set_requires_grad(true);
            p.zero_grad();
            (n, p)
        })
        .collect()
}

fn grads(params: &[(String, Tensor)]) -> Vec<Tensor> {
    params
        .iter()
        .map(|(n, p)| {
            let g = p.grad();
            assert!(g.defined(), "{n} got no gradient");
            let g = g.copy();
            let mut p = p.shallow_clone();
            p.zero_grad();
            g
        })
        .collect()
}

#[test]
fn checkpointed_gradients_equal_the_plain_backwards() {
    let _serial = serial();
    let sd = random_tiny();
    let text = sd.encode_prompt("a red circle moving").unwrap();
    let (_, masks) = clip(4);
    let stam = VideoSpec { temporal: Some(ModuleSpec::named(Role::Temporal, "stam").unwrap()), ..VideoSpec::default() };
    for spec in [VideoSpec::default(), stam, VideoSpec::mask_guided()] {
        let model = inflate(sd.clone(), &spec, 4).unwrap();
        let params = trainables(&model);
        let tensors: Vec<Tensor> = params.iter().map(|(_, p)| p.shallow_clone()).collect();
        tch::manual_seed(7);
        let x = Tensor::randn([1, 4, 4, 4, 4], (Kind::Float, tch::Device::Cpu));
        let target = Tensor::randn([1, 4, 4, 4, 4], (Kind::Float, tch::Device::Cpu));
        let t = Tensor::from_slice(&[411i64]);
        let cond = Conditioning::text(&text).with_masks(Some(masks.tensor()));
        // Spectral norms iterate in a training forward: both runs start from the same state.
        let state: Vec<Vec<(String, Tensor)>> = model
            .unet
            .attention_layers()
            .iter()
            .map(|(_, a)| a.processor_state().into_iter().map(|(k, t)| (k, t.copy())).collect())
            .collect();
        let restore = || {
            for ((_, a), s) in model.unet.attention_layers().iter().zip(&state) {
                if !s.is_empty() {
                    a.load_processor_state(s).unwrap();
                }
            }
        };

        let pred = model.forward(&x, &t, &cond, true).unwrap();
        let loss = (&pred - &target).square().mean(Kind::Float);
        loss.backward();
        let plain = grads(&params);
        let plain_loss = loss.double_value(&[]);

        restore();
        let mut tape = Tape::new();
        let out = model.forward_checkpointed(&x, &t, &cond, &mut tape).unwrap();
        assert!(tape.len() > 10, "{}: every block is a segment ({} recorded)", spec.describe(), tape.len());
        let loss = (&out.prediction - &target).square().mean(Kind::Float);
        assert!((loss.double_value(&[]) - plain_loss).abs() < 1e-7, "{}: same loss", spec.describe());
        out.backward(tape, &loss, &tensors).unwrap();
        let checkpointed = grads(&params);

        // The gradients returned rather than deposited (what the tuning loop takes), checkpointed and
        // plain: the same, and no `.grad` written.
        restore();
        let mut tape = Tape::new();
        let out = model.forward_checkpointed(&x, &t, &cond, &mut tape).unwrap();
        let loss = (&out.prediction - &target).square().mean(Kind::Float);
        let returned = out.gradients(tape, &loss, &tensors).unwrap();
        restore();
        let pred = model.forward(&x, &t, &cond, true).unwrap();
        let loss = (&pred - &target).square().mean(Kind::Float);
        let returned_plain = vidtune_runtime::pipelines::train::gradients(&loss, &tensors).unwrap();
        // (`grads` above left each `.grad` zeroed.)
        let untouched = |p: &Tensor| !p.grad().defined() || p.grad().abs().max().double_value(&[]) == 0.0;
        assert!(tensors.iter().all(untouched), "{}: a .grad was written", spec.describe());

        for (i, (name, _)) in params.iter().enumerate() {
            let a = &plain[i];
            let scale = a.abs().max().double_value(&[]);
            for (b, how) in [(&checkpointed[i], "deposited"), (&returned[i], "returned"), (&returned_plain[i], "plain")]
            {
                let diff = (a - b).abs().max().double_value(&[]);
                assert!(
                    diff <= 1e-5,
                    "{}: {name}: {how} gradients differ by {diff} (largest {scale})",
                    spec.describe()
                );
            }
        }
        assert!(
            plain.iter().any(|g| g.abs().max().double_value(&[]) > 1e-4),
            "{}: the gradients are not all (near) zero",
            spec.describe()
        );
    }
}

#[test]
fn tuning_with_checkpointing_and_mixed_precision() {
    let _serial = serial();
    let sd = random_tiny();
    let (video, _) = clip(4);
    let model = inflate(sd.clone(), &VideoSpec::default(), 4).unwrap();
    let clips = [TuneClip { video, prompt: "a red circle".into(), masks: None, controls: vec![] }];
    let run = |checkpointing: bool, precision: Option<Kind>| {
        let opts = TuneOptions {
            steps: 3,
            seed: 9,
            lr: 1e-3,
            checkpointing: Some(checkpointing),
            precision,
            sync_every: Some(2),
            ..Default::default()
        };
        tune_clips(&model, &clips, &opts).unwrap()
    };
    let plain = run(false, None);
    let checkpointed = run(true, None);
    let losses = |m: &VideoModel| m.record.as_ref().unwrap().losses.clone();
    assert_eq!(losses(&plain).len(), 3, "every loss is read back, in batches of sync_every");
    for (a, b) in losses(&plain).iter().zip(losses(&checkpointed)) {
        assert!((a - b).abs() < 1e-6, "checkpointed tuning takes the same steps: {a} vs {b}");
    }
    let (pv, cv) = (plain.vars.variables(), checkpointed.vars.variables());
    // AdamW divides each gradient by its own running magnitude, so where the gradients are tiny (the
    // temporal layers, whose output weight starts at zero) the float32 rounding of two equal backward
    // passes shows in the weights at about 1e-5; 3 steps at lr 1e-3 move them by up to 3e-3.
    for name in &plain.trained {
        let d = (&pv[name] - &cv[name]).abs().max().double_value(&[]);
        assert!(d < 1e-4, "{name}: {d}");
    }
    // bf16 trains a half-precision copy; the float32 model gets the trained values, the base keeps its own.
    let bf16 = run(true, Some(Kind::BFloat16));
    assert_eq!(bf16.kind(), Kind::Float);
    assert!(losses(&bf16).iter().all(|l| l.is_finite()));
    let (bv, base) = (bf16.vars.variables(), model.vars.variables());
    let q = plain.trained.iter().find(|n| n.contains("attn1.to_q")).unwrap();
    assert!(!bv[q].equal(&base[q]), "the trained query weights came back");
    // Three AdamW steps of lr 1e-3 move a weight by at most about 3e-3, in float32 masters.
    let moved = (&bv[q] - &base[q]).abs().max().double_value(&[]);
    assert!(moved > 1e-4 && moved < 3.3e-3, "bf16 AdamW moved the query weights by {moved}");
    for (a, b) in losses(&plain).iter().zip(losses(&bf16)) {
        assert!((a - b).abs() < 0.02 * a.abs().max(1e-3), "bf16 losses follow float32's: {a} vs {b}");
    }
    let frozen = plain.vars.variables().keys().find(|n| n.contains("conv1.weight")).unwrap().clone();
    assert!(bv[&frozen].equal(&base[&frozen]), "frozen weights keep their float32 values");
    // Unknown precisions are refused by name.
    let bad = TuneOptions { precision: Some(Kind::Int64), ..Default::default() };
    let err = tune_clips(&model, &clips, &bad).unwrap_err().to_string();
    assert!(err.contains("precision"), "{err}");
}
