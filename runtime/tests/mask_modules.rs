//! The mask modules and mask-guided sampling: zero-initialised modules leave the model unchanged, every
//! new processor equals a naive reference, models with mask modules refuse to run without masks, and
//! `keep_background`, `strength`, first-frame conditioning and shared noise do what they say.

mod common;
use common::random_tiny;

use std::rc::Rc;
use tch::{Kind, Tensor};
use vidtune_kernels_tests::assert_close_rel;
use vidtune_runtime::masks::Masks;
use vidtune_runtime::models::attention_processor::{Attention, AttnContext, AttnProcessor};
use vidtune_runtime::models::nn::{Builder, InitMode};
use vidtune_runtime::pipelines::invert::{invert, InvertOptions};
use vidtune_runtime::pipelines::sample::{sample_latents, FirstFrame, SampleOptions};
use vidtune_runtime::pipelines::stats;
use vidtune_runtime::pipelines::tune::{tune_clips, LossWeights, TuneClip, TuneOptions};
use vidtune_runtime::synthetic::{synthetic_clip, Shape, SyntheticSpec};
use vidtune_runtime::video::call::{Pyramid, VideoCall};
use vidtune_runtime::video::conditioning::subject_token_positions;
use vidtune_runtime::video::processors::first_frame::FirstFrameAttention;
use vidtune_runtime::video::processors::masked_cross::MaskedCross;
use vidtune_runtime::video::processors::mca::MaskFeatures;
use vidtune_runtime::video::processors::{ModuleSpec, Role};
use vidtune_runtime::video::{inflate, Conditioning, VideoSpec};
use vidtune_runtime::StableDiffusion;
use vidtune_runtime::Video;

fn clip(frames: usize) -> (Video, Masks) {
    let c = synthetic_clip(&SyntheticSpec {
        frames,
        width: 64,
        height: 64,
        shape: Some(Shape::Square),
        seed: 5,
        ..Default::default()
    })
    .unwrap();
    (c.video, c.masks)
}

fn cpu() -> (Kind, tch::Device) {
    (Kind::Float, tch::Device::Cpu)
}

#[test]
fn untuned_mask_modules_leave_the_model_unchanged() {
    tch::manual_seed(0);
    let sd = random_tiny();
    let (video, masks) = clip(3);
    let x = Tensor::randn([1, 4, 3, 8, 8], cpu());
    let t = Tensor::from(500i64);
    let text = sd.encode_prompt("a red square").unwrap();
    let plain = inflate(sd.clone(), &VideoSpec::default(), 7).unwrap();
    let cond = Conditioning::text(&text);
    let reference = tch::no_grad(|| plain.forward(&x, &t, &cond, false)).unwrap();
    let mca = VideoSpec { mask: Some(ModuleSpec::named(Role::Mask, "mca").unwrap()), ..VideoSpec::default() };
    let with_mca = inflate(sd.clone(), &mca, 7).unwrap();
    let masked_cond = Conditioning::text(&text).with_masks(Some(masks.tensor()));
    let out = tch::no_grad(|| with_mca.forward(&x, &t, &masked_cond, false)).unwrap();
    let d = (&out - &reference).abs().max().double_value(&[]);
    assert!(d < 1e-6, "an untuned MCA changed the output by {d}");
    // The new layers exist and are what tuned files carry.
    assert!(with_mca.new_parameters().iter().any(|n| n.starts_with("mask_encoder.")));
    assert!(with_mca.new_parameters().iter().any(|n| n.contains(".attn_mask.")));
    // Masked cross-attention without subject tokens is plain cross-attention.
    let masked = VideoSpec { cross: ModuleSpec::named(Role::Cross, "masked").unwrap(), ..VideoSpec::default() };
    let with_masked = inflate(sd.clone(), &masked, 7).unwrap();
    let out = tch::no_grad(|| with_masked.forward(&x, &t, &masked_cond, false)).unwrap();
    // Its product is computed in another order than the plain kernel's: float32 rounding, no more.
    let d = (&out - &reference).abs().max().double_value(&[]);
    assert!(d < 1e-5, "masked cross-attention without subject tokens changed the output by {d}");
    // With a subject it changes the output.
    let mut subject = Conditioning::text(&text).with_masks(Some(masks.tensor()));
    subject.subject_tokens = vec![subject_token_positions(&sd.tokenizer, "a red square", "red square").unwrap()];
    let out = tch::no_grad(|| with_masked.forward(&x, &t, &subject, false)).unwrap();
    assert!((&out - &reference).abs().max().double_value(&[]) > 1e-6);
    drop(video);
}

#[test]
fn models_with_mask_modules_refuse_to_run_without_masks() {
    let sd = random_tiny();
    let model = inflate(sd.clone(), &VideoSpec::mask_guided(), 0).unwrap();
    let x = Tensor::randn([1, 4, 2, 8, 8], cpu());
    let text = sd.encode_prompt("x").unwrap();
    let e = model.forward(&x, &Tensor::from(10i64), &Conditioning::text(&text), false).unwrap_err().to_string();
    assert!(e.contains("needs the subject's masks") && e.contains("masks: …"), "{e}");
    let (video, _) = clip(2);
    let e = invert(&model, &video, &InvertOptions::steps(2)).unwrap_err().to_string();
    assert!(e.contains("needs the subject's masks"), "{e}");
}

fn layer(dim: i64, heads: i64, context: Option<i64>) -> (tch::nn::VarStore, Attention) {
    tch::manual_seed(4);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let a = Attention::new(&Builder::new(vs.root(), InitMode::Random), dim, context, heads, dim / heads, false);
    (vs, a)
}

/// Explicit multi-head attention of one query set over one key/value set with an additive bias per
/// (query, key): `[Lq, C]`, `[Lk, C]`, `[Lq, Lk]`.
fn naive_attention(a: &Attention, q_in: &Tensor, kv_in: &Tensor, bias: &Tensor) -> Tensor {
    let q = a.to_q.forward(q_in);
    let (k, v) = (a.to_k.forward(kv_in), a.to_v.forward(kv_in));
    let d = q.size()[1] / a.heads;
    let heads: Vec<Tensor> = (0..a.heads)
        .map(|h| {
            let (qh, kh, vh) = (q.narrow(1, h * d, d), k.narrow(1, h * d, d), v.narrow(1, h * d, d));
            let s = qh.matmul(&kh.transpose(0, 1)) / (d as f64).sqrt() + bias;
            s.softmax(-1, Kind::Float).matmul(&vh)
        })
        .collect();
    a.to_out.forward(&Tensor::cat(&heads, 1))
}

#[test]
fn mask_aware_first_frame_attention_equals_a_naive_reference() {
    let (_vs, a) = layer(8, 2, None);
    let (f, h, w) = (3, 2, 3);
    let x = Tensor::randn([f, h * w, 8], cpu());
    let m = Tensor::rand([f, 1, h, w], cpu());
    let strength = 3.0;
    let spec = ModuleSpec::parse(&format!("first_frame:mask={strength}")).unwrap();
    let p = FirstFrameAttention::new(&spec);
    let ctx = AttnContext {
        frames: f,
        spatial: Some((h, w)),
        data: VideoCall {
            masks: Some(Rc::new(Pyramid { levels: vec![m.shallow_clone()] })),
            ..VideoCall::new(1, f, tch::Device::Cpu)
        }
        .into_data(),
        ..Default::default()
    };
    let got = tch::no_grad(|| p.forward(&a, &x, None, &ctx)).unwrap();
    let tokens = m.view([f, h * w]);
    for i in 0..f {
        let bias = (tokens.get(i).unsqueeze(1) - tokens.get(0).unsqueeze(0)).abs() * -strength;
        let want = tch::no_grad(|| naive_attention(&a, &x.get(i), &x.get(0), &bias));
        assert_close_rel(&got.get(i), &want, 1e-5, &format!("mask-aware first-frame attention, frame {i}"));
    }
}

#[test]
fn mask_cross_attention_equals_a_naive_reference() {
    let (_vs, a) = layer(8, 2, Some(6));
    let (f, h, w, lk) = (2, 2, 2, 5);
    let x = Tensor::randn([f, h * w, 8], cpu());
    let text = Tensor::randn([f, lk, 6], cpu());
    let m = Tensor::rand([f, 1, h, w], cpu());
    let spec = ModuleSpec::parse_role(Role::Cross, "masked:strength=0.8").unwrap();
    let p = MaskedCross::new(&spec);
    let subject = vec![1i64, 2];
    let ctx = AttnContext {
        frames: f,
        spatial: Some((h, w)),
        timestep: Some(500.0),
        data: VideoCall {
            masks: Some(Rc::new(Pyramid { levels: vec![m.shallow_clone()] })),
            subject_tokens: Some(Rc::new(vec![subject.clone()])),
            ..VideoCall::new(1, f, tch::Device::Cpu)
        }
        .into_data(),
        ..Default::default()
    };
    let got = tch::no_grad(|| p.forward(&a, &x, Some(&text), &ctx)).unwrap();
    let region = m.view([f, h * w]);
    for i in 0..f {
        // Per head the modulation depends on the head's scores: recompute them head by head.
        let q = a.to_q.forward(&x.get(i));
        let (k, v) = (a.to_k.forward(&text.get(i)), a.to_v.forward(&text.get(i)));
        let d = 4;
        let heads: Vec<Tensor> = (0..2)
            .map(|hd| {
                let (qh, kh, vh) = (q.narrow(1, hd * d, d), k.narrow(1, hd * d, d), v.narrow(1, hd * d, d));
                let s = qh.matmul(&kh.transpose(0, 1)) / (d as f64).sqrt();
                let mut rows = vec![];
                for qi in 0..h * w {
                    let row: Vec<f64> = (0..lk).map(|j| s.double_value(&[qi, j])).collect();
                    let (max, min) = row.iter().fold((f64::MIN, f64::MAX), |(x, y), &z| (x.max(z), y.min(z)));
                    let mq = region.double_value(&[i, qi]);
                    let modulated: Vec<f32> = row
                        .iter()
                        .enumerate()
                        .map(|(j, &sv)| {
                            let sv2 = if subject.contains(&(j as i64)) {
                                sv + 0.8 * (mq * (max - sv) - (1.0 - mq) * (sv - min))
                            } else {
                                sv
                            };
                            sv2 as f32
                        })
                        .collect();
                    rows.push(Tensor::from_slice(&modulated));
                }
                Tensor::stack(&rows, 0).softmax(-1, Kind::Float).matmul(&vh)
            })
            .collect();
        let want = tch::no_grad(|| a.to_out.forward(&Tensor::cat(&heads, 1)));
        assert_close_rel(&got.get(i), &want, 1e-5, &format!("mask cross-attention, frame {i}"));
    }
    // Outside its timestep range it is plain cross-attention.
    let late = MaskedCross::new(&ModuleSpec::parse_role(Role::Cross, "masked:end=0.2").unwrap());
    let plain = vidtune_runtime::models::attention_processor::PlainAttention;
    let (a1, a2) = tch::no_grad(|| {
        (late.forward(&a, &x, Some(&text), &ctx).unwrap(), plain.forward(&a, &x, Some(&text), &ctx).unwrap())
    });
    assert_close_rel(&a1, &a2, 1e-6, "masked cross-attention outside its range");
}

/// A model whose only mask module is `mca`, with every MCA output projection given weights, as tuning
/// would (untuned, they are zero and MCA adds nothing).
fn trained_mca_model(sd: &Rc<StableDiffusion>) -> vidtune_runtime::video::VideoModel {
    let spec = VideoSpec { mask: Some(ModuleSpec::named(Role::Mask, "mca").unwrap()), ..VideoSpec::default() };
    let model = inflate(sd.clone(), &spec, 3).unwrap();
    tch::manual_seed(11);
    tch::no_grad(|| {
        for (name, mut v) in model.vars.variables() {
            if name.contains("attn_mask.to_out") {
                v.copy_(&(Tensor::randn(v.size(), cpu()) * 0.1));
            }
        }
    });
    model
}

/// Video latents `[1, 4, F, 8, 8]` whose frames differ, their masks, and the conditioning of a call.
fn differing_call(sd: &StableDiffusion, frames: usize) -> (Tensor, Conditioning) {
    let (_, masks) = clip(frames);
    tch::manual_seed(12);
    let x = Tensor::randn([1, 4, frames as i64, 8, 8], cpu());
    let text = sd.encode_prompt("a red square").unwrap();
    (x, Conditioning::text(&text).with_masks(Some(masks.tensor())))
}

#[test]
fn the_mca_stage_equals_a_naive_reference_under_a_unet_calls_context() {
    let sd = random_tiny();
    let model = trained_mca_model(&sd);
    let (x, cond) = differing_call(&sd, 3);
    // The context exactly as `VideoModel::forward` builds it: the text repeated per frame and promised
    // as such, the mask features of the call.
    let call = model.unet_call(&x, &Tensor::from(500i64), &cond, false).unwrap();
    assert!(call.ctx.repeated_text.is_some(), "a video call promises its repeated text");
    let block = &model.unet.down_blocks[0].attentions[0].transformer_blocks[0];
    let stage = &block.stages[0];
    assert_eq!(stage.name(), "mca");
    let f = 3;
    let (h, w) = (8, 8);
    let dim = block.attn1.to_q.weight.size()[0];
    let hidden = Tensor::randn([f, h * w, dim], cpu());
    let width = vidtune_runtime::video::processors::mca::feature_width(dim, 0.25);
    let ctx = AttnContext { spatial: Some((h, w)), ..call.ctx.clone() };
    let features = ctx.data.get::<MaskFeatures>().unwrap().0.at(h, w).unwrap().shallow_clone();
    assert_eq!(features.size(), [f, width, h, w]);
    let got = tch::no_grad(|| stage.forward(&hidden, &ctx)).unwrap();
    let (_, attn) = stage.attentions()[0];
    let vars = model.vars.variables();
    let norm_w = &vars["down_blocks.0.attentions.0.transformer_blocks.0.norm_mask.weight"];
    let norm_b = &vars["down_blocks.0.attentions.0.transformer_blocks.0.norm_mask.bias"];
    for i in 0..f {
        let q_in = features.get(i).view([width, h * w]).transpose(0, 1);
        let v_in = hidden.get(i).layer_norm([dim], Some(norm_w), Some(norm_b), 1e-5, false);
        let zero = Tensor::zeros([h * w, h * w], cpu());
        let want = tch::no_grad(|| naive_attention(attn, &q_in, &v_in, &zero) + hidden.get(i));
        assert_close_rel(&got.get(i), &want, 1e-5, &format!("MCA, frame {i}"));
    }
}

/// Attention of each frame's queries over the same frame's context, by an explicit loop: what MCA's
/// attention means, with no layout shortcut.
#[derive(Debug)]
struct NaivePerFrame;

impl AttnProcessor for NaivePerFrame {
    fn name(&self) -> String {
        "naive_per_frame".into()
    }

    fn forward(
        &self,
        a: &Attention,
        hidden: &Tensor,
        context: Option<&Tensor>,
        _: &AttnContext,
    ) -> vidtune_runtime::Result<Tensor> {
        let source = context.expect("MCA attends to the video features");
        let (n, lq, lk) = (hidden.size()[0], hidden.size()[1], source.size()[1]);
        let zero = Tensor::zeros([lq, lk], cpu()).to_kind(hidden.kind());
        let frames: Vec<Tensor> = (0..n).map(|i| naive_attention(a, &hidden.get(i), &source.get(i), &zero)).collect();
        Ok(Tensor::stack(&frames, 0))
    }
}

#[test]
fn an_mca_model_gives_each_frame_attention_over_its_own_features_through_the_whole_unet() {
    let sd = random_tiny();
    let model = trained_mca_model(&sd);
    let (x, cond) = differing_call(&sd, 3);
    let t = Tensor::from(500i64);
    let got = tch::no_grad(|| model.forward(&x, &t, &cond, false)).unwrap();
    // The same model with every MCA attention computed frame by frame.
    let mut swapped = 0;
    for (name, attn) in model.unet.attention_layers() {
        if name.ends_with(".attn_mask") {
            attn.set_processor(Box::new(NaivePerFrame));
            swapped += 1;
        }
    }
    assert!(swapped >= 2, "the model has {swapped} MCA layers");
    let want = tch::no_grad(|| model.forward(&x, &t, &cond, false)).unwrap();
    let frames = got.size()[2];
    for i in 0..frames {
        let (g, w) = (got.select(2, i), want.select(2, i));
        let d = (&g - &w).abs().max().double_value(&[]) / w.abs().max().double_value(&[]);
        eprintln!("frame {i}: relative difference to the per-frame reference {d:.3e}");
        assert_close_rel(&g, &w, 1e-5, &format!("the whole UNet with MCA, frame {i}"));
    }
}

#[test]
fn modules_that_read_a_context_compute_the_same_under_a_unet_calls_promise() {
    // Each module that takes keys and values from something (masked cross-attention from the text,
    // first-frame and fine-coarse attention from the hidden states) gives the same result under the
    // context a UNet call builds as under one that promises nothing: the promise is only ever a
    // shortcut for the text.
    let sd = random_tiny();
    let (x, cond) = differing_call(&sd, 3);
    let mut subject = cond.clone();
    subject.subject_tokens = vec![subject_token_positions(&sd.tokenizer, "a red square", "red square").unwrap()];
    for (spatial, cross) in [("first_frame:mask=2", "masked:strength=0.8"), ("ffam:2", "plain")] {
        let spec = VideoSpec {
            spatial: ModuleSpec::parse(spatial).unwrap(),
            cross: ModuleSpec::parse_role(Role::Cross, cross).unwrap(),
            ..VideoSpec::default()
        };
        let model = inflate(sd.clone(), &spec, 3).unwrap();
        let call = model.unet_call(&x, &Tensor::from(500i64), &subject, false).unwrap();
        let block = &model.unet.down_blocks[0].attentions[0].transformer_blocks[0];
        let dim = block.attn1.to_q.weight.size()[0];
        let (h, w) = (8, 8);
        let hidden = Tensor::randn([3, h * w, dim], cpu());
        let promised = AttnContext { spatial: Some((h, w)), ..call.ctx.clone() };
        let plain = AttnContext { repeated_text: None, ..promised.clone() };
        for (layer, source) in [(&block.attn1, None), (&block.attn2, Some(&call.text))] {
            let (a, b) = tch::no_grad(|| {
                (layer.forward(&hidden, source, &promised).unwrap(), layer.forward(&hidden, source, &plain).unwrap())
            });
            assert_close_rel(&a, &b, 1e-6, &format!("{} under a UNet call's context", layer.processor_name()));
        }
    }
}

/// The tiny random model (Tune-A-Video's modules), the 3-frame square clip's masks and its 4-step inversion.
fn inverted_square() -> (vidtune_runtime::video::VideoModel, Masks, vidtune_runtime::pipelines::common::Latents) {
    let model = inflate(random_tiny(), &VideoSpec::default(), 0).unwrap();
    let (video, masks) = clip(3);
    let inv = invert(&model, &video, &InvertOptions::steps(4)).unwrap();
    (model, masks, inv)
}

#[test]
fn keep_background_ends_on_the_clips_own_latents_outside_the_masks() {
    let (model, masks, inv) = inverted_square();
    let o = SampleOptions {
        steps: 4,
        seed: Some(1),
        guidance: 3.0,
        masks: Some(masks.clone()),
        keep_background: true,
        feather: 0,
        ..Default::default()
    };
    let (x, _) = sample_latents(&model, "a blue square", Some(&inv), &o).unwrap();
    let region = vidtune_runtime::pipelines::sample::edit_region(&masks, 8, 8, 0).unwrap();
    let outside = region.ones_like() - &region;
    let d = ((&x - &inv.source) * &outside).abs().max().double_value(&[]);
    assert_eq!(d, 0.0, "the background must be the clip's own latents");
    let inside = ((&x - &inv.source) * &region).abs().max().double_value(&[]);
    assert!(inside > 1e-3, "the subject was not edited");
    // renoise redraws the subject from fresh noise; the background stays the clip's.
    let (y, _) =
        sample_latents(&model, "a blue square", Some(&inv), &SampleOptions { renoise: 1.0, ..o.clone() }).unwrap();
    assert_eq!(((&y - &inv.source) * &outside).abs().max().double_value(&[]), 0.0);
    assert!(((&y - &x) * &region).abs().max().double_value(&[]) > 1e-3);
    let e = sample_latents(
        &model,
        "x",
        Some(&inv),
        &SampleOptions { renoise: 0.5, masks: None, keep_background: false, ..o.clone() },
    )
    .unwrap_err();
    assert!(e.to_string().contains("renoise would be ignored"), "{e}");
    // Without masks it is refused; with other steps than the inversion's too.
    let e = sample_latents(&model, "x", Some(&inv), &SampleOptions { masks: None, ..o.clone() }).unwrap_err();
    assert!(e.to_string().contains("needs the subject's masks"), "{e}");
    let e = sample_latents(&model, "x", Some(&inv), &SampleOptions { steps: 5, ..o.clone() }).unwrap_err();
    assert!(e.to_string().contains("follows the inversion's 4 steps"), "{e}");
}

#[test]
fn strength_runs_part_of_the_schedule_from_the_inversion() {
    let sd = random_tiny();
    let model = inflate(sd, &VideoSpec::default(), 0).unwrap();
    let (video, _) = clip(2);
    let inv = invert(&model, &video, &InvertOptions::steps(10)).unwrap();
    let before = stats().sample_steps;
    let o = SampleOptions { steps: 10, strength: 0.3, seed: Some(1), guidance: 1.0, ..Default::default() };
    let (x, _) = sample_latents(&model, "", Some(&inv), &o).unwrap();
    assert_eq!(stats().sample_steps - before, 3);
    // With the inversion's prompt and no guidance, fewer steps from lower down stray less from the clip.
    let (full, _) = sample_latents(&model, "", Some(&inv), &SampleOptions { strength: 1.0, ..o.clone() }).unwrap();
    let err = |y: &Tensor| (y - &inv.source).abs().mean(Kind::Float).double_value(&[]);
    assert!(err(&x) < err(&full), "strength 0.3 {} vs 1.0 {}", err(&x), err(&full));
}

#[test]
fn first_frame_is_held_and_shared_noise_mixes_it_in() {
    let sd = random_tiny();
    let model = inflate(sd, &VideoSpec::default(), 0).unwrap();
    let (video, _) = clip(3);
    let inv = invert(&model, &video, &InvertOptions::steps(3)).unwrap();
    let o = SampleOptions { steps: 3, seed: Some(2), first_frame: Some(FirstFrame::Source), ..Default::default() };
    let (x, _) = sample_latents(&model, "a square", Some(&inv), &o).unwrap();
    assert!(x.narrow(2, 0, 1).allclose(&inv.source.narrow(2, 0, 1), 0.0, 0.0, false), "frame 0 must stay the source's");
    // Shared noise: frames 1.. of the starting latents are α·z₀ + (1 − α)·noise.
    let z = Tensor::randn([1, 4, 1, 2, 2], cpu());
    let x0 = Tensor::randn([1, 4, 3, 2, 2], cpu());
    let mixed = vidtune_runtime::pipelines::first_frame::share_noise(&x0, &z, 0.2, false);
    assert_close_rel(&mixed.narrow(2, 1, 2), &(&z * 0.2 + x0.narrow(2, 1, 2) * 0.8), 1e-6, "shared noise");
    assert!(mixed.narrow(2, 0, 1).equal(&x0.narrow(2, 0, 1)));
    let vp = vidtune_runtime::pipelines::first_frame::share_noise(&x0, &z, 0.2, true);
    let scale = (0.2f64 * 0.2 + 0.8 * 0.8).sqrt();
    assert_close_rel(&(vp.narrow(2, 1, 2) * scale), &mixed.narrow(2, 1, 2), 1e-6, "variance-preserving shared noise");
}

/// Three 16² masks of a 4² square: at (2, 2), moved 4 columns right, then 6 rows down and 4 right.
fn moving_square() -> Tensor {
    let m = Tensor::zeros([3, 1, 16, 16], cpu());
    for (f, (y, x)) in [(2, 2), (2, 6), (8, 6)].into_iter().enumerate() {
        let _ = m.get(f as i64).narrow(1, y, 4).narrow(2, x, 4).fill_(1.0);
    }
    m
}

#[test]
fn the_first_frame_is_carried_along_the_masks_and_shared_noise_follows_it() {
    use vidtune_kernels::masks::translate;
    use vidtune_runtime::pipelines::first_frame::{carry_along, share_noise_following};
    let masks = moving_square();
    let z = Tensor::randn([1, 4, 1, 8, 8], cpu());
    let c = carry_along(&z, &masks, 8, 8).unwrap();
    assert_eq!(c.moved.size(), [1, 4, 3, 8, 8]);
    // At latent resolution (half the masks') the square moves by (0, 2) and (3, 2).
    for (f, (dy, dx)) in [(0, (0, 0)), (1, (0, 2)), (2, (3, 2))] {
        assert!(c.moved.narrow(2, f, 1).equal(&translate(&z, dy, dx)), "frame {f} moved by ({dy}, {dx})");
    }
    let inside = c.masks.view([3, 8, 8]);
    assert_eq!(inside.sum(Kind::Float).double_value(&[]), 12.0, "three 2² squares at latent resolution");
    assert_eq!(inside.get(2).narrow(0, 4, 2).narrow(1, 3, 2).sum(Kind::Float).double_value(&[]), 4.0);

    let x = Tensor::randn([1, 4, 3, 8, 8], cpu());
    let alpha = 0.3;
    let mixed = share_noise_following(&x, &z, alpha, false, &masks).unwrap();
    assert!(mixed.narrow(2, 0, 1).equal(&x.narrow(2, 0, 1)), "frame 0 is left alone");
    let at = |t: &Tensor, f: i64, y: i64, xx: i64| t.narrow(2, f, 1).narrow(3, y, 1).narrow(4, xx, 1).flatten(0, -1);
    // Frame 2: inside its mask the moved first frame, in frame 0's old place (not its own) fresh noise,
    // elsewhere the first frame where it is.
    let near = |a: &Tensor, b: &Tensor, what: &str| assert_close_rel(a, b, 1e-6, what);
    near(&at(&mixed, 2, 4, 3), &(at(&x, 2, 4, 3) * (1.0 - alpha) + at(&c.moved, 2, 4, 3) * alpha), "inside");
    near(&at(&mixed, 2, 1, 1), &at(&x, 2, 1, 1), "where the subject was");
    near(&at(&mixed, 2, 7, 7), &(at(&x, 2, 7, 7) * (1.0 - alpha) + at(&z, 0, 7, 7) * alpha), "background");
    // Without masks moving, it is the plain shared noise.
    let still = masks.get(0).unsqueeze(0).expand([3, 1, 16, 16], false).contiguous();
    let plain = vidtune_runtime::pipelines::first_frame::share_noise(&x, &z, alpha, true);
    assert_close_rel(&share_noise_following(&x, &z, alpha, true, &still).unwrap(), &plain, 1e-6, "still masks");
}

#[test]
fn subject_guide_keeps_the_carried_first_frame_inside_the_masks_and_needs_them() {
    let (model, masks, inv) = inverted_square();
    let o = SampleOptions {
        steps: 4,
        seed: Some(2),
        first_frame: Some(FirstFrame::Source),
        masks: Some(masks.clone()),
        ..Default::default()
    };
    let (plain, _) = sample_latents(&model, "a red square", Some(&inv), &o).unwrap();
    let guided_o = SampleOptions { subject_guide: 1.0, ..o.clone() };
    let (guided, _) = sample_latents(&model, "a red square", Some(&inv), &guided_o).unwrap();
    let (lh, lw) = (plain.size()[3], plain.size()[4]);
    let c = vidtune_runtime::pipelines::first_frame::carry_along(&inv.source.narrow(2, 0, 1), masks.tensor(), lh, lw)
        .unwrap();
    let err = |y: &Tensor| ((y - &c.moved) * &c.masks).abs().sum(Kind::Float).double_value(&[]);
    assert!(err(&guided) < 0.5 * err(&plain), "guided {} vs plain {}", err(&guided), err(&plain));
    // A share of 0 changes nothing.
    let (off, _) =
        sample_latents(&model, "a red square", Some(&inv), &SampleOptions { subject_guide: 0.0, ..o.clone() }).unwrap();
    assert!(off.equal(&plain));
    for (bad, want) in [
        (SampleOptions { first_frame: None, ..guided_o.clone() }, "subject_guide would be ignored"),
        (SampleOptions { masks: None, ..guided_o.clone() }, "subject_guide would be ignored"),
        (
            SampleOptions { subject_guide: 1.5, ..guided_o.clone() },
            "subject_guide must be a share of the steps in [0, 1], got 1.5",
        ),
        (SampleOptions { shared_noise_follow: true, ..o.clone() }, "shared_noise_follow would be ignored"),
    ] {
        let e = sample_latents(&model, "x", Some(&inv), &bad).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn few_shot_tuning_with_masks_losses_and_first_frame_runs_and_is_refused_without_masks() {
    let sd = random_tiny();
    let model = inflate(sd, &VideoSpec::mask_guided(), 0).unwrap();
    let (a, ma) = clip(2);
    let (b, mb) = clip(3);
    let clips = vec![
        TuneClip { video: a.clone(), prompt: "a red square".into(), masks: Some(ma), controls: vec![] },
        TuneClip { video: b, prompt: "a blue square".into(), masks: Some(mb), controls: vec![] },
    ];
    let o = TuneOptions {
        steps: 3,
        lr: 1e-3,
        first_frame: true,
        loss: LossWeights { all: 1.0, fg: 2.0, bg: 0.5 },
        subject: Some("square".into()),
        ..Default::default()
    };
    let tuned = tune_clips(&model, &clips, &o).unwrap();
    let record = tuned.record.as_ref().unwrap();
    assert_eq!((record.clips, record.losses.len()), (2, 3));
    assert!(tuned.trained.iter().any(|n| n.starts_with("mask_encoder.")), "the mask encoder trains");
    assert!(tuned.trained.iter().any(|n| n.contains(".attn_mask.")), "MCA trains");
    let e = tune_clips(&model, &[TuneClip { video: a, prompt: "x".into(), masks: None, controls: vec![] }], &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("need the subject's masks of every clip"), "{e}");
}
