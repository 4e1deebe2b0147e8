//! The inflated UNet, the attention-module library, tuning, inversion, sampling, tuned files and the
//! memo — against the 2-D model, naive references, an independent Python implementation of Tune-A-Video,
//! and themselves.

mod common;
use common::{cpu, serial};

use std::rc::Rc;
use tch::{Kind, Tensor};
use vidtune_kernels_tests::{assert_close_rel, fixtures_dir, load_fixture};
use vidtune_runtime::models::attention_processor::{Attention, AttnContext, AttnProcessor, RepeatedRows};
use vidtune_runtime::models::nn::{Builder, InitMode};
use vidtune_runtime::pipelines::cached::{invert_cached, set_disk_cache, tune_cached};
use vidtune_runtime::pipelines::invert::{invert, InvertOptions};
use vidtune_runtime::pipelines::sample::{sample, SampleOptions};
use vidtune_runtime::pipelines::stats;
use vidtune_runtime::pipelines::tune::{tune, tune_clips_owned, TuneClip, TuneOptions};
use vidtune_runtime::pipelines::tune_memory::{resolve_checkpointing, step_memory};
use vidtune_runtime::synthetic::{synthetic_clip, Shape, SyntheticSpec};
use vidtune_runtime::video::processors::{self, ModuleSpec};
use vidtune_runtime::video::tuned::{load_tuned, save_tuned};
use vidtune_runtime::video::{inflate, Conditioning, VideoModel, VideoSpec};
use vidtune_runtime::Video;
use vidtune_runtime::{load_sd, SdLoadOptions, StableDiffusion};

fn fixture_model() -> Rc<StableDiffusion> {
    Rc::new(load_sd(fixtures_dir().join("tiny-conv/pipeline").to_str().unwrap(), &cpu()).unwrap())
}

fn spec(spatial: &str, temporal: Option<&str>) -> VideoSpec {
    VideoSpec::with(spatial, temporal.unwrap_or("none")).unwrap()
}

#[test]
fn one_frame_inflated_unet_equals_the_image_unet() {
    let _serial = serial();
    let base = fixture_model();
    let video = inflate(base, &spec("self", None), 0).unwrap();
    let f = load_fixture("tiny-conv/unet.safetensors");
    // The fixture's 2 samples as 2 one-frame clips.
    let latents = f["sample"].unsqueeze(2);
    let out = tch::no_grad(|| {
        video.forward(&latents, &f["timesteps"], &Conditioning::text(&f["encoder_hidden_states"]), false)
    })
    .unwrap();
    assert_close_rel(&out.squeeze_dim(2), &f["out"], 1e-4, "F = 1 inflated UNet");
    // Inflating shares the base's storage: nothing was copied.
    let base_vars = video.base.unet.vars.variables();
    let shared = video
        .vars
        .variables()
        .iter()
        .filter(|(k, v)| base_vars.get(*k).is_some_and(|b| b.data_ptr() == v.data_ptr()))
        .count();
    assert_eq!(shared, base_vars.len());
}

#[test]
fn frame_mixing_modules_reduce_to_self_attention_on_identical_frames() {
    let _serial = serial();
    let base = fixture_model();
    let f = load_fixture("tiny-conv/unet.safetensors");
    let frame = f["sample"].narrow(0, 0, 1).unsqueeze(2);
    let clip = frame.expand([1, 4, 4, 8, 8], true).contiguous();
    let ctx = f["encoder_hidden_states"].narrow(0, 0, 1);
    let t = Tensor::from(400i64);
    let run = |m: &str| {
        let v = inflate(base.clone(), &spec(m, None), 0).unwrap();
        tch::no_grad(|| v.forward(&clip, &t, &Conditioning::text(&ctx), false)).unwrap()
    };
    let reference = run("self");
    for m in ["sparse_causal", "first_frame", "full", "ffam:2", "vidtome:ratio=0"] {
        assert_close_rel(&run(m), &reference, 1e-5, &format!("{m} on identical frames"));
    }
    // On different frames ffam with r = 1 is full attention, and the modules really differ.
    let moving = Tensor::randn([1, 4, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
    let run2 = |m: &str| {
        let v = inflate(base.clone(), &spec(m, None), 0).unwrap();
        tch::no_grad(|| v.forward(&moving, &t, &Conditioning::text(&ctx), false)).unwrap()
    };
    assert_close_rel(&run2("ffam:1"), &run2("full"), 1e-5, "ffam r=1 vs full");
    // Token merging that merges nothing: the chunk attends jointly (full attention over a chunk of the
    // whole clip), or each frame alone (chunks of one frame).
    assert_close_rel(&run2("vidtome:ratio=0,chunk=3"), &run2("full"), 1e-5, "vidtome, nothing merged, vs full");
    assert_close_rel(&run2("vidtome:ratio=0,chunk=1"), &run2("self"), 1e-5, "vidtome, one-frame chunks, vs self");
    let d = (run2("vidtome:ratio=0.5,chunk=3") - run2("full")).abs().max().double_value(&[]);
    assert!(d > 1e-6, "merging half the tokens should change the result ({d})");
    let d = (run2("sparse_causal") - run2("self")).abs().max().double_value(&[]);
    assert!(d > 1e-6, "sparse-causal should differ from self on moving frames ({d})");
}

/// A single attention layer with random weights.
fn layer(dim: i64, heads: i64) -> (tch::nn::VarStore, Attention) {
    tch::manual_seed(4);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let a = Attention::new(&Builder::new(vs.root(), InitMode::Random), dim, None, heads, dim / heads, false);
    (vs, a)
}

/// Explicit multi-head softmax attention of frame-`i` queries over the given key/value frames.
fn naive(a: &Attention, x: &Tensor, frames: i64, kv_frames: impl Fn(i64) -> Vec<Tensor>) -> Tensor {
    let heads = a.heads;
    let outs: Vec<Tensor> = (0..frames)
        .map(|i| {
            let q = a.to_q.forward(&x.get(i));
            let kv = Tensor::cat(&kv_frames(i), 0);
            let (k, v) = (a.to_k.forward(&kv), a.to_v.forward(&kv));
            let d = q.size()[1] / heads;
            let mut per_head = vec![];
            for h in 0..heads {
                let (qh, kh, vh) = (q.narrow(1, h * d, d), k.narrow(1, h * d, d), v.narrow(1, h * d, d));
                let w = (qh.matmul(&kh.transpose(0, 1)) / (d as f64).sqrt()).softmax(-1, Kind::Float);
                per_head.push(w.matmul(&vh));
            }
            a.to_out.forward(&Tensor::cat(&per_head, 1))
        })
        .collect();
    Tensor::stack(&outs, 0)
}

#[test]
fn each_spatial_module_equals_a_naive_reference() {
    let _serial = serial();
    let (_vs, a) = layer(8, 2);
    let (f, h, w) = (4, 2, 4);
    let x = Tensor::randn([f, h * w, 8], (Kind::Float, tch::Device::Cpu));
    let frame = |j: i64| x.get(j);
    let pooled = |j: i64| {
        let g = x.get(j).transpose(0, 1).reshape([8, h, w]);
        g.reshape([8, 1, 2, 2, 2]).mean_dim([2i64, 4].as_slice(), false, Kind::Float).reshape([8, 2]).transpose(0, 1)
    };
    let ctx = AttnContext { frames: f, spatial: Some((h, w)), ..Default::default() };
    let cases: Vec<(&str, Box<dyn Fn(i64) -> Vec<Tensor>>)> = vec![
        ("self", Box::new(move |i| vec![frame(i)])),
        ("sparse_causal", Box::new(move |i| vec![frame(0), frame((i - 1).max(0))])),
        ("first_frame", Box::new(move |_| vec![frame(0)])),
        ("full", Box::new(move |_| (0..f).map(frame).collect())),
        (
            "ffam:2",
            Box::new(move |i| std::iter::once(frame(i)).chain((0..f).filter(|&j| j != i).map(pooled)).collect()),
        ),
    ];
    for (name, kv) in cases {
        let p = processors::make(&ModuleSpec::parse(name).unwrap()).unwrap();
        let got = tch::no_grad(|| p.forward(&a, &x, None, &ctx)).unwrap();
        let want = tch::no_grad(|| naive(&a, &x, f, kv));
        assert_close_rel(&got, &want, 1e-5, name);
    }
}

#[test]
fn stam_equals_its_definition() {
    let _serial = serial();
    use vidtune_runtime::video::processors::stam::Stam;
    let (_vs, a) = layer(8, 2);
    let stam = Stam::default();
    stam.prepare(&a);
    let z = Tensor::randn([6, 5, 8], (Kind::Float, tch::Device::Cpu)) + 2.0;
    let centred = vidtune_kernels::attention::instance_center(&z);
    assert!(centred.mean_dim(1, false, Kind::Float).abs().max().double_value(&[]) < 1e-6, "zero temporal mean");
    let (wv, wo) = stam.normalized_weights(&a, false);
    for w in [&wv, &wo] {
        let top = Tensor::linalg_eigvalsh(&w.transpose(0, 1).matmul(w).to_kind(Kind::Double), "L")
            .max()
            .sqrt()
            .double_value(&[]);
        assert!((top - 1.0).abs() < 1e-3, "normalised weight's largest singular value {top}");
    }
    // STAM(z) attention term = Linear̄(softmax(q kᵀ/√d) · IC(z) W̄v), by hand, per sequence and head.
    let got = tch::no_grad(|| stam.forward(&a, &centred, None, &AttnContext::default())).unwrap();
    let q = a.to_q.forward(&centred);
    let k = a.to_k.forward(&centred);
    let v = centred.matmul(&wv.transpose(0, 1));
    let d = 4;
    let heads: Vec<Tensor> = (0..2)
        .map(|h| {
            let w =
                (q.narrow(2, h * d, d).matmul(&k.narrow(2, h * d, d).transpose(1, 2)) / 2.0).softmax(-1, Kind::Float);
            w.matmul(&v.narrow(2, h * d, d))
        })
        .collect();
    let want = Tensor::cat(&heads, 2).matmul(&wo.transpose(0, 1)) + a.to_out.bias.as_ref().unwrap();
    assert_close_rel(&got, &want, 1e-5, "STAM attention");
}

#[test]
fn tune_a_video_folder_equals_an_independent_python_implementation() {
    let _serial = serial();
    let f = load_fixture("tiny-conv/tav.safetensors");
    let sd = Rc::new(load_sd(fixtures_dir().join("tiny-conv/tav_pipeline").to_str().unwrap(), &cpu()).unwrap());
    let model = VideoModel::from_video_base(sd).unwrap();
    assert!(model.modules().iter().any(|(n, m)| n.ends_with("attn1") && m == "sparse_causal"));
    let out = tch::no_grad(|| {
        model.forward(&f["sample"], &f["timestep"], &Conditioning::text(&f["encoder_hidden_states"]), false)
    })
    .unwrap();
    assert_close_rel(&out, &f["out"], 1e-4, "Tune-A-Video inflated UNet");
    let image_model = fixture_model();
    let e = VideoModel::from_video_base(image_model).unwrap_err().to_string();
    assert!(e.contains("is an image model") && e.contains("inflate"), "{e}");
}

fn tiny_clip(frames: usize, seed: u64) -> Video {
    let spec = SyntheticSpec { shape: Some(Shape::Circle), frames, width: 32, height: 32, seed, ..Default::default() };
    synthetic_clip(&spec).unwrap().video
}

fn random_tiny() -> Rc<StableDiffusion> {
    Rc::new(load_sd("random:tiny", &SdLoadOptions { seed: 11, ..cpu() }).unwrap())
}

#[test]
fn inversion_then_sampling_reconstructs_the_clip_latents() {
    let _serial = serial();
    // The fixture model (a smooth random UNet whose noise predictions vary slowly, like a trained one's);
    // a raw random network's do not, and DDIM inversion assumes they do.
    let base = fixture_model();
    let model = inflate(base.clone(), &VideoSpec::default(), 0).unwrap();
    let clip = tiny_clip(4, 1);
    let inv = invert(&model, &clip, &InvertOptions::steps(50)).unwrap();
    assert_eq!(inv.latents.size(), vec![1, 4, 4, 16, 16]);
    // Sample back with the null prompt and no guidance; compare in latent space.
    let mut ddim = base.scheduler.ddim().unwrap();
    ddim.set_timesteps(50).unwrap();
    let mut x = inv.latents.shallow_clone();
    let emb = base.encode_prompt("").unwrap();
    for &t in ddim.timesteps() {
        let eps = tch::no_grad(|| model.forward(&x, &Tensor::from(t), &Conditioning::text(&emb), false)).unwrap();
        x = ddim.step(&eps, t, &x, 0.0, None, false).unwrap().prev_sample;
    }
    let dist = vidtune_runtime::pipelines::encode_video(&base, &clip).unwrap();
    let source = vidtune_runtime::pipelines::to_video_latents(&(dist.mean * base.vae.model.scaling_factor()));
    let rel = (&x - &source).norm().double_value(&[]) / source.norm().double_value(&[]);
    eprintln!("inversion + sampling reconstruction: relative error {rel:.2e}");
    // Bound: 2% relative error in latent space after 50 inversion + 50 sampling steps.
    assert!(rel < 0.02, "reconstruction relative error {rel}");
    // And through the public sampler (decoded): the clip comes back close to the source frames.
    let (video, _) =
        sample(&model, "", Some(&inv), &SampleOptions { steps: 50, guidance: 1.0, ..Default::default() }).unwrap();
    assert_eq!((video.len(), video.width(), video.height()), (4, 32, 32));
}

#[test]
fn tuning_lowers_the_loss_and_keeps_frozen_tensors() {
    let _serial = serial();
    let base = random_tiny();
    let model = inflate(base.clone(), &VideoSpec::default(), 0).unwrap();
    let clip = tiny_clip(4, 2);
    let before: Vec<(String, Tensor)> = base.unet.vars.variables().into_iter().map(|(k, v)| (k, v.copy())).collect();
    let model_before: Vec<(String, Tensor)> = model.vars.variables().into_iter().map(|(k, v)| (k, v.copy())).collect();
    let opts = TuneOptions { steps: 40, lr: 1e-3, seed: 5, ..Default::default() };
    let tuned = tune(&model, &clip, "a circle", &opts).unwrap();
    let losses = &tuned.record.as_ref().unwrap().losses;
    let head: f64 = losses[..10].iter().sum::<f64>() / 10.0;
    let tail: f64 = losses[losses.len() - 10..].iter().sum::<f64>() / 10.0;
    assert!(tail < head, "loss did not go down: first 10 mean {head}, last 10 mean {tail}");
    // Frozen tensors are bit-identical (in the base and the tuned model), trained ones moved.
    let tuned_vars = tuned.vars.variables();
    for (name, old) in &before {
        assert!(base.unet.vars.variables()[name].equal(old), "base changed: {name}");
        let trained = tuned.trained.contains(name);
        assert_eq!(!tuned_vars[name].equal(old), trained, "{name}: changed = trained?");
    }
    assert!(tuned
        .trained
        .iter()
        .all(|n| n.contains("attn1.to_q") || n.contains("attn2.to_q") || n.contains("attn_temp")));
    // The input model is unchanged.
    let model_after = model.vars.variables();
    assert!(model_before.iter().all(|(k, v)| model_after[k].equal(v)), "tuning changed its input model");
    // Tuning a model given up for it (trained in place, without the copy) gives the same tensors, and
    // the base it shares its frozen and query tensors with is still unchanged.
    let fresh = inflate(base.clone(), &VideoSpec::default(), 0).unwrap();
    let clips = [TuneClip { video: clip.clone(), prompt: "a circle".into(), masks: None, controls: vec![] }];
    let owned = tune_clips_owned(fresh, &clips, &opts).unwrap();
    let owned_vars = owned.vars.variables();
    assert_eq!(owned_vars.len(), tuned_vars.len());
    assert!(tuned_vars.iter().all(|(k, v)| owned_vars[k].equal(v)), "tuning in place differs from a tuned copy");
    assert_eq!(owned.trained, tuned.trained);
    assert!(before.iter().all(|(k, v)| base.unet.vars.variables()[k].equal(v)), "tuning in place changed the base");

    // A tuned file reloads to identical outputs, and holds only what changed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.vidtune.safetensors");
    let bytes = save_tuned(&tuned, &path).unwrap();
    let back = load_tuned(base.clone(), &path).unwrap();
    let x = Tensor::randn([1, 4, 4, 4, 4], (Kind::Float, tch::Device::Cpu));
    let emb = base.encode_prompt("a circle").unwrap();
    let t = Tensor::from(500i64);
    let a = tch::no_grad(|| tuned.forward(&x, &t, &Conditioning::text(&emb), false)).unwrap();
    let b = tch::no_grad(|| back.forward(&x, &t, &Conditioning::text(&emb), false)).unwrap();
    assert!(a.equal(&b), "reloaded tuned model differs");
    let total_bytes: i64 = base.unet.vars.variables().values().map(|v| v.numel() as i64 * 4).sum();
    assert!((bytes as i64) < total_bytes / 2, "tuned file {bytes} B vs UNet {total_bytes} B");
    assert_eq!(back.record, tuned.record);

    // Another base model is refused.
    let other = Rc::new(load_sd("random:tiny", &SdLoadOptions { seed: 12, ..cpu() }).unwrap());
    let e = load_tuned(other, &path).unwrap_err().to_string();
    assert!(e.contains("was tuned on random:tiny") && e.contains("load the same base model"), "{e}");
}

#[test]
fn stam_and_ffam_tune_and_reload() {
    let _serial = serial();
    let base = random_tiny();
    let model = inflate(base.clone(), &spec("ffam:2", Some("stam")), 0).unwrap();
    assert!(model.new_parameters().iter().all(|n| n.contains("attn_temp")), "STAM adds no norm_temp");
    let clip = tiny_clip(3, 4);
    let tuned = tune(&model, &clip, "a circle", &TuneOptions { steps: 3, lr: 1e-3, ..Default::default() }).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ei2.vidtune.safetensors");
    save_tuned(&tuned, &path).unwrap();
    let back = load_tuned(base.clone(), &path).unwrap();
    assert_eq!(back.spec, tuned.spec);
    let x = Tensor::randn([1, 4, 3, 4, 4], (Kind::Float, tch::Device::Cpu));
    let emb = base.encode_prompt("a circle").unwrap();
    let t = Tensor::from(100i64);
    let a = tch::no_grad(|| tuned.forward(&x, &t, &Conditioning::text(&emb), false)).unwrap();
    let b = tch::no_grad(|| back.forward(&x, &t, &Conditioning::text(&emb), false)).unwrap();
    assert!(a.equal(&b), "STAM state did not round-trip");
}

#[test]
fn memoised_tuning_and_inversion_skip_work_for_a_new_edit_prompt() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    set_disk_cache(vidtune_runtime::cache::DiskCache { dir: dir.path().to_path_buf(), max_bytes: 1 << 30 });
    let base = random_tiny();
    let model = inflate(base.clone(), &VideoSpec::default(), 0).unwrap();
    let clip = tiny_clip(3, 7);
    let opts = TuneOptions { steps: 3, ..Default::default() };
    let inv_opts = InvertOptions { steps: 4, ..Default::default() };
    let edit = |prompt: &str, clip: &Video, opts: &TuneOptions| {
        let tuned = tune_cached(&model, clip, "a circle moving", opts, true).unwrap().value;
        let inv = invert_cached(&tuned, clip, &inv_opts, true).unwrap().value;
        sample(&tuned, prompt, Some(&inv), &SampleOptions { steps: 2, seed: Some(1), ..Default::default() }).unwrap()
    };
    let s0 = stats();
    edit("a red circle", &clip, &opts);
    let s1 = stats();
    assert_eq!((s1.tune_steps - s0.tune_steps, s1.invert_steps - s0.invert_steps), (3, 4));
    edit("a blue circle", &clip, &opts);
    let s2 = stats();
    assert_eq!(
        (s2.tune_steps - s1.tune_steps, s2.invert_steps - s1.invert_steps),
        (0, 0),
        "a new edit prompt re-tuned"
    );
    assert_eq!(s2.sample_steps - s1.sample_steps, 2);
    edit("a blue circle", &tiny_clip(3, 8), &opts);
    let s3 = stats();
    assert_eq!((s3.tune_steps - s2.tune_steps, s3.invert_steps - s2.invert_steps), (3, 4), "a new clip must re-tune");
    edit("a blue circle", &clip, &TuneOptions { lr: 1e-4, ..opts.clone() });
    let s4 = stats();
    assert_eq!(s4.tune_steps - s3.tune_steps, 3, "a new option must re-tune");
    // Disk entries were written and verify.
    let entries = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(entries >= 6, "{entries} files in the disk cache");
}

#[test]
fn bad_video_inputs_are_named() {
    let _serial = serial();
    let base = random_tiny();
    let e = ModuleSpec::parse("causal").unwrap_err().to_string();
    assert!(e.contains("unknown spatial attention module \"causal\"") && e.contains("\"sparse_causal\""), "{e}");
    assert!(ModuleSpec::parse("ffam:0").unwrap_err().to_string().contains("positive integer"));
    let e = VideoSpec::with("self", "lstm").unwrap_err().to_string();
    assert!(e.contains("unknown temporal module \"lstm\"") && e.contains("\"stam\""), "{e}");
    let model = inflate(base.clone(), &VideoSpec::default(), 0).unwrap();
    let e = tune(
        &model,
        &tiny_clip(2, 1),
        "x",
        &TuneOptions { train: vec!["attn3.to_q".into()], steps: 1, ..Default::default() },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no parameter matches the train patterns [\"attn3.to_q\"]"), "{e}");
    let odd = tiny_clip(2, 1).resize(36, 32, vidtune_runtime::Fit::Resize).unwrap();
    let e = invert(&model, &odd, &InvertOptions::default()).unwrap_err().to_string();
    assert!(e.contains("36x32 is not a multiple of 8"), "{e}");
    let e = load_tuned(base, std::path::Path::new("/nonexistent/t.safetensors")).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/t.safetensors"), "{e}");
}

#[test]
fn bf16_tuning_reduces_the_loss_on_the_toy_world() {
    let _serial = serial();
    // bf16 weights train through fp32 master copies (and float16 ones through a loss scaler as well).
    let sd = Rc::new(load_sd("toy", &SdLoadOptions { dtype: Some("bf16".into()), ..cpu() }).unwrap());
    assert_eq!(sd.dtype, Kind::BFloat16);
    let model = inflate(sd, &VideoSpec::default(), 0).unwrap();
    let clip = synthetic_clip(&SyntheticSpec {
        frames: 4,
        width: 64,
        height: 64,
        shape: Some(Shape::Circle),
        seed: 21,
        ..Default::default()
    })
    .unwrap();
    let opts = TuneOptions { steps: 60, lr: 3e-4, ..Default::default() };
    let tuned = tune(&model, &clip.video, &clip.caption, &opts).unwrap();
    assert_eq!(tuned.kind(), Kind::BFloat16);
    let losses = &tuned.record.as_ref().unwrap().losses;
    assert_eq!(losses.len(), 60);
    assert!(losses.iter().all(|l| l.is_finite()));
    // The denoising loss on the clip at fixed timesteps and noise, before and after: per-step losses
    // swing with the random timestep, this does not.
    let base = &model.base;
    let latents = vidtune_runtime::pipelines::to_video_latents(
        &(vidtune_runtime::pipelines::encode_video(base, &clip.video).unwrap().mean * base.vae.model.scaling_factor()),
    )
    .to_kind(Kind::BFloat16);
    let schedule = base.scheduler.noise_schedule().unwrap();
    let text = base.encode_prompt(&clip.caption).unwrap();
    // The same noise for both models, drawn once.
    tch::manual_seed(5);
    let noises: Vec<Tensor> = (0..5)
        .map(|_| Tensor::randn(latents.size(), (Kind::Float, tch::Device::Cpu)).to_kind(Kind::BFloat16))
        .collect();
    let eval = |m: &VideoModel| -> f64 {
        let mut total = 0.0;
        for (t, eps) in [100i64, 300, 500, 700, 900].into_iter().zip(&noises) {
            let ts = Tensor::from_slice(&[t]);
            let noisy = vidtune_kernels::schedulers::ddpm::add_noise(&schedule, &latents, eps, &ts).unwrap();
            let pred = tch::no_grad(|| m.forward(&noisy, &ts, &Conditioning::text(&text), false)).unwrap();
            total +=
                (pred.to_kind(Kind::Float) - eps.to_kind(Kind::Float)).square().mean(Kind::Float).double_value(&[]);
        }
        total / 5.0
    };
    let (before, after) = (eval(&model), eval(&tuned));
    eprintln!("bf16 tuning: fixed-noise loss {before:.4} before, {after:.4} after 60 steps");
    assert!(after < 0.9 * before, "bf16 tuning did not reduce the loss: {before:.4} → {after:.4}");
}

#[test]
fn the_text_projected_once_per_clip_is_the_text_projected_per_frame() {
    let _serial = serial();
    let video = inflate(fixture_model(), &spec("sparse_causal", Some("temporal")), 0).unwrap();
    let attn = &video.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2;
    tch::manual_seed(4);
    let (clips, frames) = (2, 3);
    let text = Tensor::randn([clips, 7, attn.to_k.in_dim()], (Kind::Float, tch::Device::Cpu));
    let per_frame = text.repeat_interleave_self_int(frames, 0, None);
    let hidden = Tensor::randn([clips * frames, 5, attn.to_q.in_dim()], (Kind::Float, tch::Device::Cpu));
    let plain = AttnContext { frames, ..Default::default() };
    let repeated = AttnContext {
        frames,
        repeated_text: Some(Rc::new(RepeatedRows { tensor: per_frame.shallow_clone(), repeats: frames })),
        ..Default::default()
    };
    let (k1, v1) = tch::no_grad(|| attn.key_value(&hidden, Some(&per_frame), &plain));
    let (k2, v2) = tch::no_grad(|| attn.key_value(&hidden, Some(&per_frame), &repeated));
    assert_eq!(k2.size(), [clips * frames, 7, attn.to_k.out_dim()]);
    assert_close_rel(&k2, &k1, 1e-6, "keys");
    assert_close_rel(&v2, &v1, 1e-6, "values");
    // Another source of the same shape whose rows differ frame by frame (a mask-guided stage's video
    // features) is projected row by row under the same context: the promise is about the text alone.
    let features = Tensor::randn(per_frame.size(), (Kind::Float, tch::Device::Cpu));
    let (kf, vf) = tch::no_grad(|| attn.key_value(&hidden, Some(&features), &repeated));
    assert!(kf.equal(&tch::no_grad(|| attn.to_k.forward(&features))), "features were read as repeated rows");
    assert!(vf.equal(&tch::no_grad(|| attn.to_v.forward(&features))));
    // Self-attention ignores the promise: its source is the hidden states.
    let attn1 = &video.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1;
    let (ks, _) = tch::no_grad(|| attn1.key_value(&hidden, None, &repeated));
    assert!(ks.equal(&tch::no_grad(|| attn1.to_k.forward(&hidden))));
}

/// `gated` (a temporal attention with a learned gate per frame position) is a module whose processor needs
/// data of its own in every call — the positions of the call's frames in the whole clip — and it lives in
/// its own file plus one registry line: its hook prepares the positions from the call, and its stage
/// reads them. Here, in a window starting at frame 1, frame `i` changes by `gate[1 + i]` times what
/// Tune-A-Video's temporal attention changes it by.
#[test]
fn a_module_with_per_call_data_of_its_own_gates_each_frame_by_its_position_in_the_clip() {
    let _g = serial();
    let sd = Rc::new(load_sd("random:tiny", &cpu()).unwrap());
    let model = inflate(sd.clone(), &spec("sparse_causal", Some("gated:positions=4")), 5).unwrap();
    let gate_name = "down_blocks.0.attentions.0.transformer_blocks.0.gate_temp.weight";
    let vars = model.vars.variables();
    assert_eq!(vars[gate_name].size(), [4], "one gate per position");
    tch::manual_seed(3);
    tch::no_grad(|| {
        for (name, mut v) in model.vars.variables() {
            if name.contains("attn_temp.to_out") {
                v.copy_(&(Tensor::randn(v.size(), (Kind::Float, tch::Device::Cpu)) * 0.1));
            }
        }
    });
    let (f, h, w) = (3i64, 8i64, 8i64);
    let x = Tensor::randn([1, 4, 7, h, w], (Kind::Float, tch::Device::Cpu));
    let text = sd.encode_prompt("a red square").unwrap();
    let cond = Conditioning::text(&text).window(1, f);
    let window = x.narrow(2, 1, f);
    let call = model.unet_call(&window, &Tensor::from(500i64), &cond, false).unwrap();
    let block = &model.unet.down_blocks[0].attentions[0].transformer_blocks[0];
    let stage = &block.stages[0];
    assert_eq!(stage.name(), "gated");
    let dim = block.attn1.to_q.weight.size()[0];
    let hidden = Tensor::randn([f, h * w, dim], (Kind::Float, tch::Device::Cpu));
    let ungated = tch::no_grad(|| stage.forward(&hidden, &call.ctx)).unwrap() - &hidden;
    assert!(ungated.abs().max().double_value(&[]) > 1e-3, "the temporal attention changes the frames");
    let gates = [0.0f32, 1.0, 0.5, 2.0];
    tch::no_grad(|| vars[gate_name].shallow_clone().copy_(&Tensor::from_slice(&gates)));
    let got = tch::no_grad(|| stage.forward(&hidden, &call.ctx)).unwrap() - &hidden;
    for i in 0..f {
        let want = ungated.get(i) * gates[1 + i as usize] as f64;
        assert_close_rel(&got.get(i), &want, 1e-5, &format!("frame {i} of the window (clip frame {})", 1 + i));
    }
    // Tuning trains the gates by default, and the whole model runs.
    assert!(processors::entry(processors::Role::Temporal, "gated").unwrap().trains.contains(&"gate_temp"));
    let out = tch::no_grad(|| model.forward(&window, &Tensor::from(500i64), &cond, false)).unwrap();
    assert_eq!(out.size(), window.size());
}

#[test]
fn a_clip_is_encoded_once_per_model_and_a_changed_clip_again() {
    use vidtune_runtime::pipelines::common::encode_video;
    let sd = load_sd("random:tiny", &cpu()).unwrap();
    let clip = |seed| {
        synthetic_clip(&SyntheticSpec { frames: 2, width: 32, height: 32, seed, ..Default::default() }).unwrap().video
    };
    let (a, b) = (clip(1), clip(2));
    let first = encode_video(&sd, &a).unwrap();
    // The same frames (another value holding them): the kept posterior, not a new encoding.
    let again = encode_video(&sd, &Video::new(a.frames().copy(), a.fps()).unwrap()).unwrap();
    assert_eq!(again.mean.data_ptr(), first.mean.data_ptr());
    assert!(again.logvar.equal(&first.logvar));
    // Other frames are encoded, and equal what the VAE gives them directly.
    let other = encode_video(&sd, &b).unwrap();
    assert_ne!(other.mean.data_ptr(), first.mean.data_ptr());
    let direct = tch::no_grad(|| sd.vae.model.encode(b.frames())).unwrap();
    assert!(other.mean.equal(&direct.mean) && other.logvar.equal(&direct.logvar));
    // Another model instance keeps its own.
    let sd2 = load_sd("random:tiny", &cpu()).unwrap();
    assert_ne!(encode_video(&sd2, &a).unwrap().mean.data_ptr(), first.mean.data_ptr());
}

#[test]
fn a_steps_memory_estimate_follows_its_frames_window_and_precision() {
    let _serial = serial();
    let base = random_tiny();
    let model = inflate(base.clone(), &VideoSpec::default(), 0).unwrap();
    let clips = |frames: usize| {
        [TuneClip { video: tiny_clip(frames, 3), prompt: "a circle".into(), masks: None, controls: vec![] }]
    };
    let opts = TuneOptions::default();
    let m = |frames: usize, o: &TuneOptions| step_memory(&model, &clips(frames), o).unwrap();
    // Linear in the frames a step sees: the activations, above the trained tensors' fixed share.
    let per_frame = (m(8, &opts) - m(4, &opts)) / 4.0;
    let fixed = m(4, &opts) - 4.0 * per_frame;
    assert!(per_frame > 0.0 && fixed > 0.0, "{per_frame} per frame, {fixed} fixed");
    // The fixed share: 16 bytes (gradient, two moments, a copy) per trained value.
    let trained: i64 = tune(&model, &tiny_clip(2, 3), "a circle", &TuneOptions { steps: 1, ..opts.clone() })
        .unwrap()
        .trained
        .iter()
        .map(|n| model.vars.variables()[n].numel() as i64)
        .sum();
    assert!((fixed - 16.0 * trained as f64).abs() < 1e-3 * fixed, "{fixed} against {trained} trained values");
    // A window of 4 frames steps over 4 frames of an 8-frame clip.
    assert_eq!(m(8, &TuneOptions { window: Some(4), ..opts.clone() }), m(4, &opts));
    // bf16 keeps half the bytes per activation.
    let bf16 = TuneOptions { precision: Some(Kind::BFloat16), ..opts.clone() };
    assert!((m(8, &bf16) - (fixed + 4.0 * per_frame)).abs() < 1e-6 * fixed);
    // A tiny model fits: the default stays off on the CPU; a setting is kept as it is.
    let off = resolve_checkpointing(&model, &clips(4), &opts).unwrap();
    assert!(!off.on && off.reason.is_none(), "{off:?}");
    let on = resolve_checkpointing(&model, &clips(4), &TuneOptions { checkpointing: Some(true), ..opts }).unwrap();
    assert!(on.on && on.reason.is_none());
}
