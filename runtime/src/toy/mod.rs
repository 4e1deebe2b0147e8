//! The toy world: tiny models with Stable Diffusion 1.x's and CLIP's real architectures, trained here from
//! scratch on the synthetic clips, so the demo shows a real edit without a download and the end-to-end
//! tests can check that an edit did what the prompt asked.
//!
//! [`train`] runs the whole recipe, seeded: a BPE tokenizer learnt from the captions, a CLIP model trained
//! contrastively on frames and captions, an AutoencoderKL trained to reconstruct frames, and a
//! UNet2DConditionModel trained to denoise their latents conditioned on CLIP's text tower (which becomes
//! the pipeline's frozen text encoder, as in SD). Every stage uses the project's training loop
//! ([`Trainer`]) with every parameter trainable. The result is written in the diffusers / transformers
//! folder layouts (fp16 safetensors and real `config.json` files), so it loads through exactly the code
//! that loads real weights. [`evaluate`] measures a saved folder; the committed weights' figures are in
//! their `metrics.json`.
//!
//! The committed folder is compiled into the binary; [`toy_dir`] writes it once into the cache and
//! `load_sd("toy")` / `load_clip("toy")` load it from there.

pub mod bpe;
pub mod controlnet;
mod eval;
pub mod probe;
pub mod world;

use crate::config::clip::ClipConfig;
use crate::error::{Error, Result};
use crate::fsutil::{write_atomic, write_bytes_atomic, write_dir_atomic};
use crate::models::clip::ClipModel;
use crate::models::nn::{Builder, InitMode};
use crate::models::{AutoencoderKL, ClipTokenizer, UNet2DConditionModel};
use crate::pipelines::train::Trainer;
use crate::progress::Progress;
use crate::rng::Noise;
use crate::weights::safetensors_io;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use vidtune_kernels::optim::{mse, AdamW};
use vidtune_kernels::schedulers::ddpm;
use world::{frame_bank, Batches, FrameBank};

pub use eval::{evaluate, Metrics};

/// One training stage's optimisation settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub steps: i64,
    pub batch: usize,
    pub lr: f64,
    pub warmup: i64,
}

impl Stage {
    fn to_json(self) -> Value {
        json!({"steps": self.steps, "batch": self.batch, "lr": self.lr, "warmup": self.warmup})
    }
}

/// Everything that determines the toy models.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    pub seed: u64,
    /// Frame size (square).
    pub size: i64,
    pub frames: usize,
    pub train_clips: usize,
    pub eval_clips: usize,
    pub clip: Stage,
    pub vae: Stage,
    /// Side of the random crops the VAE trains on (it is fully convolutional but for its mid attention).
    pub vae_crop: i64,
    /// Weight of the KL term (per latent element) against the per-pixel MSE.
    pub kl_weight: f64,
    pub unet: Stage,
    /// Probability of training the UNet on the empty prompt (for classifier-free guidance).
    pub uncond_prob: f64,
    /// The ControlNet on subject masks, trained last against the frozen UNet ([`controlnet`]).
    pub controlnet: Stage,
    /// Probability of the empty prompt in the ControlNet's training (see [`controlnet`]).
    pub control_uncond_prob: f64,
}

impl Recipe {
    /// The recipe of the committed weights.
    pub fn standard() -> Recipe {
        Recipe {
            seed: 2024,
            size: 64,
            frames: 8,
            train_clips: 640,
            eval_clips: 48,
            clip: Stage { steps: 1200, batch: 64, lr: 1e-3, warmup: 100 },
            vae: Stage { steps: 1500, batch: 16, lr: 1e-3, warmup: 50 },
            vae_crop: 32,
            kl_weight: 1e-5,
            unet: Stage { steps: 4000, batch: 32, lr: 5e-4, warmup: 200 },
            uncond_prob: 0.1,
            controlnet: Stage { steps: 3000, batch: 32, lr: 5e-4, warmup: 100 },
            control_uncond_prob: 0.1,
        }
    }

    /// A few steps of everything (tests and trying the command).
    pub fn quick() -> Recipe {
        Recipe {
            train_clips: 16,
            eval_clips: 4,
            frames: 4,
            clip: Stage { steps: 3, batch: 8, lr: 1e-3, warmup: 0 },
            vae: Stage { steps: 3, batch: 4, lr: 1e-3, warmup: 0 },
            unet: Stage { steps: 3, batch: 8, lr: 5e-4, warmup: 0 },
            controlnet: Stage { steps: 3, batch: 8, lr: 3e-4, warmup: 0 },
            ..Recipe::standard()
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "seed": self.seed, "size": self.size, "frames": self.frames,
            "train_clips": self.train_clips, "eval_clips": self.eval_clips,
            "clip": self.clip.to_json(), "vae": self.vae.to_json(), "vae_crop": self.vae_crop,
            "kl_weight": self.kl_weight, "unet": self.unet.to_json(), "uncond_prob": self.uncond_prob,
            "controlnet": self.controlnet.to_json(), "control_uncond_prob": self.control_uncond_prob,
        })
    }
}

/// CLIP (vision + text) of the toy world: 64 wide, 2 layers, 32-pixel images in patches of 4.
pub fn clip_config(vocab_size: i64) -> Value {
    let n = vocab_size;
    json!({
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": 64,
        "logit_scale_init_value": 2.6592,
        "text_config": {
            "model_type": "clip_text_model", "vocab_size": n, "hidden_size": 64, "intermediate_size": 256,
            "num_hidden_layers": 3, "num_attention_heads": 4, "max_position_embeddings": 77,
            "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 64,
            "bos_token_id": n - 2, "eos_token_id": n - 1, "pad_token_id": n - 1
        },
        "vision_config": {
            "model_type": "clip_vision_model", "hidden_size": 64, "intermediate_size": 256,
            "num_hidden_layers": 3, "num_attention_heads": 4, "num_channels": 3, "image_size": 32,
            "patch_size": 4, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 64
        }
    })
}

/// The AutoencoderKL: three levels (latents at 1/4 of the frame), 32/64/64 channels, SD's mid attention.
pub fn vae_config(scaling_factor: f64, size: i64) -> Value {
    json!({
        "_class_name": "AutoencoderKL",
        "_diffusers_version": "0.31.0",
        "act_fn": "silu",
        "block_out_channels": [32, 64, 64],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 1,
        "norm_num_groups": 16,
        "sample_size": size,
        "scaling_factor": scaling_factor
    })
}

/// The UNet: SD1.x's block types, two levels (32, 64 channels), cross-attention to the 64-wide text.
pub fn unet_config(sample_size: i64) -> Value {
    json!({
        "_class_name": "UNet2DConditionModel",
        "_diffusers_version": "0.31.0",
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [32, 64],
        "center_input_sample": false,
        "cross_attention_dim": 64,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 1,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-5,
        "norm_num_groups": 8,
        "out_channels": 4,
        "sample_size": sample_size,
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    })
}

fn model_index() -> Value {
    json!({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.31.0",
        "feature_extractor": [null, null],
        "safety_checker": [null, null],
        "requires_safety_checker": false,
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]
    })
}

fn preprocessor_config() -> Value {
    json!({
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": true, "size": {"shortest_edge": 32},
        "do_center_crop": true, "crop_size": {"height": 32, "width": 32},
        "do_rescale": true, "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3
    })
}

pub(crate) fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn save_tensors(path: &Path, vars: &VarStore, keep: impl Fn(&str) -> bool) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = vars
        .variables()
        .into_iter()
        .filter(|(n, _)| keep(n))
        .map(|(n, t)| (n, t.detach().to_kind(Kind::Half)))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors_io::write(path, &tensors, meta)
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::Invalid(e.to_string()))? + "\n";
    write_bytes_atomic(path, text.as_bytes())
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))
}

/// Token ids `[N, 77]` of `texts`.
pub(crate) fn token_ids(tok: &ClipTokenizer, texts: &[String]) -> Result<Tensor> {
    let rows = texts.iter().map(|t| Ok(Tensor::from_slice(&tok.encode(t)?.ids))).collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&rows, 0))
}

/// CLIP pixel values of every frame of `bank`.
pub(crate) fn clip_pixels(clip: &ClipModel, bank: &FrameBank) -> Result<Tensor> {
    let s = bank.frames.size();
    let (h, w) = (s[2] as usize, s[3] as usize);
    let rows = (0..s[0])
        .map(|i| {
            let px = Vec::<u8>::try_from(bank.frames.get(i).permute([1, 2, 0]).contiguous().flatten(0, -1))?;
            clip.processor.preprocess(&px, w, h, clip.config.vision_config.image_size)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&rows, 0))
}

fn all_params(vars: &VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vars.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn adam(stage: &Stage) -> AdamW {
    AdamW { lr: stage.lr, weight_decay: 1e-4, ..AdamW::default() }
}

/// A training report line per stage.
#[derive(Debug, Clone)]
pub struct StageLog {
    pub name: String,
    pub first_loss: f64,
    pub last_loss: f64,
    pub seconds: f64,
}

fn run_stage(
    name: &str,
    stage: &Stage,
    params: Vec<(String, Tensor)>,
    mut loss_at: impl FnMut(i64) -> Result<Tensor>,
) -> Result<StageLog> {
    let mut trainer = Trainer::new(params, adam(stage), 1.0)?;
    trainer.warmup = stage.warmup;
    let mut progress = Progress::new(name, stage.steps as u64);
    let (mut first, mut avg) = (f64::NAN, f64::NAN);
    for step in 0..stage.steps {
        let (l, _) = trainer.step(&loss_at(step)?)?;
        if step == 0 {
            first = l;
            avg = l;
        }
        avg = 0.98 * avg + 0.02 * l;
        progress.set_message(format!("loss {avg:.4}"));
        progress.step()?;
    }
    let seconds = progress.elapsed();
    progress.finish();
    trainer.finish();
    Ok(StageLog { name: name.into(), first_loss: first, last_loss: avg, seconds })
}

/// Trains every toy model by `recipe` on `device` and writes the folder `out` (replaced whole, atomically).
/// Returns the metrics of the saved folder.
pub fn train(recipe: &Recipe, out: &Path, device: Device) -> Result<(Metrics, Vec<StageLog>)> {
    let bank = frame_bank(recipe.train_clips, recipe.frames, recipe.size, recipe.seed, false)?;
    let logs = write_dir_atomic(out, false, |dir| train_into(recipe, &bank, dir, device))?;
    let metrics = evaluate(out, recipe)?;
    write_json(&out.join("metrics.json"), &metrics.to_json())?;
    write_atomic(&out.join("README.md"), |tmp| {
        std::fs::write(tmp, model_card(recipe, &metrics, &logs)).map_err(|e| Error::io(tmp, e))
    })?;
    crate::fsutil::record_owned(out, &["metrics.json", "README.md"])?;
    Ok((metrics, logs))
}

fn train_into(recipe: &Recipe, bank: &FrameBank, dir: &Path, device: Device) -> Result<Vec<StageLog>> {
    let mut logs = vec![];
    // 1. Tokenizer.
    let merges = bpe::train(&bank.clip_captions, 1000);
    let tok_files = |d: &Path| -> Result<()> {
        mkdir(d)?;
        write_json(&d.join("vocab.json"), &merges.vocab_json())?;
        write_bytes_atomic(&d.join("merges.txt"), merges.merges_txt().as_bytes())?;
        write_json(&d.join("tokenizer_config.json"), &bpe::Bpe::tokenizer_config())?;
        write_json(
            &d.join("special_tokens_map.json"),
            &json!({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                    "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}),
        )
    };
    tok_files(&dir.join("tokenizer"))?;
    let tokenizer = ClipTokenizer::from_dir(&dir.join("tokenizer"))?;
    let vocab = tokenizer.vocab_size() as i64;

    // 2. CLIP, contrastive: distinct clips per batch, one random frame of each.
    let clip_json = clip_config(vocab);
    let clip_cfg: ClipConfig = serde_json::from_value(clip_json.clone()).map_err(|e| Error::Invalid(e.to_string()))?;
    let mut clip = ClipModel::random(&clip_cfg, tokenizer.clone(), recipe.seed)?;
    clip.processor = serde_json::from_value(preprocessor_config()).map_err(|e| Error::Invalid(e.to_string()))?;
    if device != Device::Cpu {
        clip.vars.set_device(device);
        clip.device = device;
    }
    let pixels = clip_pixels(&clip, bank)?;
    let clip_ids = token_ids(&tokenizer, &bank.clip_captions)?;
    let per_clip = recipe.frames as i64;
    let mut order = Batches::new(bank.clip_captions.len(), recipe.seed + 1);
    let labels_for = |n: i64| Tensor::arange(n, (Kind::Int64, device));
    logs.push(run_stage("clip", &recipe.clip, all_params(&clip.vars), |_| {
        let clips = order.next(recipe.clip.batch.min(bank.clip_captions.len()));
        let frames: Vec<i64> =
            clips.iter().map(|&c| c * per_clip + (order.uniform() * per_clip as f64) as i64).collect();
        let px = pixels.index_select(0, &Tensor::from_slice(&frames)).to_device(device);
        let ids = clip_ids.index_select(0, &Tensor::from_slice(&clips));
        let logits = clip.logits(&px, &ids)?;
        let labels = labels_for(clips.len() as i64);
        let a = logits.cross_entropy_for_logits(&labels);
        let b = logits.tr().cross_entropy_for_logits(&labels);
        Ok((a + b) / 2.0)
    })?);
    let clip_dir = dir.join("clip");
    tok_files(&clip_dir)?;
    write_json(&clip_dir.join("config.json"), &clip_json)?;
    write_json(&clip_dir.join("preprocessor_config.json"), &preprocessor_config())?;
    save_tensors(&clip_dir.join("model.safetensors"), &clip.vars, |_| true)?;
    // SD's text encoder is CLIP's text tower.
    let te_dir = dir.join("text_encoder");
    mkdir(&te_dir)?;
    let mut te_json = clip_json["text_config"].clone();
    te_json["architectures"] = json!(["CLIPTextModel"]);
    write_json(&te_dir.join("config.json"), &te_json)?;
    save_tensors(&te_dir.join("model.safetensors"), &clip.vars, |n| n.starts_with("text_model."))?;

    // 3. VAE on random crops.
    tch::manual_seed(recipe.seed as i64 + 2);
    let vae_vars = VarStore::new(device);
    let vae_json = vae_config(1.0, recipe.size);
    let vae_cfg = serde_json::from_value(vae_json).map_err(|e| Error::Invalid(e.to_string()))?;
    let vae = AutoencoderKL::new(&Builder::new(vae_vars.root(), InitMode::Random), &vae_cfg)?;
    let mut order = Batches::new(bank.len(), recipe.seed + 3);
    let crop = recipe.vae_crop.min(recipe.size);
    let mut noise = Noise::new(recipe.seed + 4);
    logs.push(run_stage("vae", &recipe.vae, all_params(&vae_vars), |_| {
        let idx = order.next(recipe.vae.batch);
        let (oy, ox) = (
            (order.uniform() * (recipe.size - crop + 1) as f64) as i64,
            (order.uniform() * (recipe.size - crop + 1) as f64) as i64,
        );
        let x = bank.pixels(&idx).narrow(2, oy, crop).narrow(3, ox, crop).to_device(device);
        let d = vae.encode(&x)?;
        let z = d.sample_with(&noise.randn(&d.mean.size(), Kind::Float, device));
        let rec = vae.decode(&z)?;
        let kl = (d.mean.square() + d.logvar.exp() - 1.0 - &d.logvar).mean(Kind::Float) * 0.5;
        Ok(mse(&rec, &x) + kl * recipe.kl_weight)
    })?);
    // Latents of every frame; the scaling factor makes their spread 1, as SD's 0.18215 does.
    let (means, logvars) = controlnet::encode_bank(&vae, bank, device)?;
    let std = means.std(true).double_value(&[]);
    let scaling = round4(1.0 / std.max(1e-6));
    let vae_dir = dir.join("vae");
    mkdir(&vae_dir)?;
    write_json(&vae_dir.join("config.json"), &vae_config(scaling, recipe.size))?;
    save_tensors(&vae_dir.join("diffusion_pytorch_model.safetensors"), &vae_vars, |_| true)?;

    // 4. UNet on the latents, conditioned on the frozen text tower's last hidden state.
    let latent = recipe.size / 4;
    tch::manual_seed(recipe.seed as i64 + 5);
    let unet_vars = VarStore::new(device);
    let unet_cfg = serde_json::from_value(unet_config(latent)).map_err(|e| Error::Invalid(e.to_string()))?;
    let unet = UNet2DConditionModel::new(&Builder::new(unet_vars.root(), InitMode::Random), &unet_cfg, None)?;
    let text = tch::no_grad(|| clip.text.forward(&clip_ids.to_device(device)))?;
    let uncond = tch::no_grad(|| clip.text.forward(&token_ids(&tokenizer, &[String::new()])?.to_device(device)))?;
    let schedule = crate::config::SchedulerConfig::sd_default().noise_schedule()?;
    let n_train = schedule.num_train_timesteps();
    let clip_of = Tensor::from_slice(&bank.clip_of.iter().map(|&c| c as i64).collect::<Vec<_>>());
    let mut order = Batches::new(bank.len(), recipe.seed + 6);
    let mut noise = Noise::new(recipe.seed + 7);
    let ctx = crate::models::attention_processor::AttnContext::default();
    logs.push(run_stage("unet", &recipe.unet, all_params(&unet_vars), |_| {
        let b = recipe.unet.batch;
        let idx = Tensor::from_slice(&order.next(b)).to_device(device);
        let mean = means.index_select(0, &idx);
        let std = (logvars.index_select(0, &idx) * 0.5).exp();
        let z = (mean + std * noise.randn(&[b as i64, 4, latent, latent], Kind::Float, device)) * scaling;
        let eps = noise.randn(&z.size(), Kind::Float, device);
        let t = Tensor::randint(n_train, [b as i64], (Kind::Int64, Device::Cpu)).to_device(device);
        let noisy = ddpm::add_noise(&schedule, &z, &eps, &t)?;
        let mut context = text.index_select(0, &clip_of.to_device(device).index_select(0, &idx));
        let drop = Tensor::rand([b as i64, 1, 1], (Kind::Float, Device::Cpu)).lt(recipe.uncond_prob).to_device(device);
        context = uncond.expand_as(&context).where_self(&drop, &context);
        let pred = unet.forward(&noisy, &t, &context, &ctx)?;
        Ok(mse(&pred, &eps))
    })?);
    let unet_dir = dir.join("unet");
    mkdir(&unet_dir)?;
    write_json(&unet_dir.join("config.json"), &unet_config(latent))?;
    save_tensors(&unet_dir.join("diffusion_pytorch_model.safetensors"), &unet_vars, |_| true)?;

    // 5. The ControlNet on subject masks, against the frozen UNet.
    let frozen = controlnet::Frozen {
        unet: &unet,
        unet_vars: &unet_vars,
        means: &means,
        logvars: &logvars,
        scaling,
        text: &text,
        uncond: &uncond,
    };
    logs.push(controlnet::train_stage(recipe, bank, &frozen, &dir.join(controlnet::FOLDER), device)?);

    let sched_dir = dir.join("scheduler");
    mkdir(&sched_dir)?;
    write_bytes_atomic(
        &sched_dir.join("scheduler_config.json"),
        include_str!("../../configs/sd-v1-4/scheduler/scheduler_config.json").as_bytes(),
    )?;
    write_json(&dir.join("model_index.json"), &model_index())?;
    write_json(
        &dir.join("recipe.json"),
        &json!({"recipe": recipe.to_json(), "device": format!("{device:?}"), "stages": logs.iter().map(StageLog::to_json).collect::<Vec<_>>()}),
    )?;
    Ok(logs)
}

impl StageLog {
    fn to_json(&self) -> Value {
        json!({"stage": self.name, "first_loss": round4(self.first_loss), "last_loss": round4(self.last_loss), "seconds": self.seconds.round()})
    }

    fn from_json(v: &Value) -> Option<StageLog> {
        Some(StageLog {
            name: v.get("stage")?.as_str()?.to_string(),
            first_loss: v.get("first_loss")?.as_f64()?,
            last_loss: v.get("last_loss")?.as_f64()?,
            seconds: v.get("seconds")?.as_f64()?,
        })
    }
}

/// Records a stage trained on its own into the toy folder `dir`: its line in `recipe.json` (replaced if
/// there was one) and the model card.
fn record_stage(dir: &Path, recipe: &Recipe, log: &StageLog) -> Result<()> {
    let path = dir.join("recipe.json");
    let text = crate::fsutil::read_text(&path, "JSON")?;
    let mut record: Value = serde_json::from_str(&text).map_err(|e| Error::bad_file(&path, e.to_string()))?;
    let mut logs: Vec<StageLog> = record["stages"]
        .as_array()
        .map(|a| a.iter().filter_map(StageLog::from_json).filter(|l| l.name != log.name).collect())
        .unwrap_or_default();
    logs.push(log.clone());
    record["recipe"] = recipe.to_json();
    record["stages"] = Value::Array(logs.iter().map(StageLog::to_json).collect());
    write_json(&path, &record)?;
    let metrics_path = dir.join("metrics.json");
    let metrics_text = crate::fsutil::read_text(&metrics_path, "JSON")?;
    let metrics = Metrics::from_json(
        &serde_json::from_str(&metrics_text).map_err(|e| Error::bad_file(&metrics_path, e.to_string()))?,
    )?;
    write_atomic(&dir.join("README.md"), |tmp| {
        std::fs::write(tmp, model_card(recipe, &metrics, &logs)).map_err(|e| Error::io(tmp, e))
    })
}

fn model_card(recipe: &Recipe, m: &Metrics, logs: &[StageLog]) -> String {
    let mut s = String::from(
        "# vidtune toy world\n\nTiny Stable Diffusion 1.x (UNet, AutoencoderKL, CLIP text encoder + BPE tokenizer) and \
         CLIP models trained from scratch by `vidtune toy train` on vidtune's synthetic clips. Diffusers / \
         transformers folder layout, fp16 weights. Not a general-purpose model: it knows coloured shapes \
         moving over plain, striped, gradient and textured backgrounds. `controlnet/` is a ControlNet on subject \
         masks (segmentation maps, the subject white on black) trained against the frozen UNet.\n\n## Recipe\n\n```json\n",
    );
    s += &serde_json::to_string_pretty(&recipe.to_json()).unwrap_or_default();
    s += "\n```\n\n## Training\n\n| stage | first loss | last loss (EMA) | seconds |\n|---|---|---|---|\n";
    for l in logs {
        s += &format!("| {} | {:.4} | {:.4} | {:.0} |\n", l.name, l.first_loss, l.last_loss, l.seconds);
    }
    s += "\n## Held-out metrics\n\n| metric | value |\n|---|---|\n";
    if let Value::Object(map) = m.to_json() {
        for (k, v) in map {
            s += &format!("| {k} | {v} |\n");
        }
    }
    s
}

pub use crate::weights::builtin::{embedded, toy_dir, NAME};

/// The recipe and metrics recorded with the committed toy models.
pub fn committed_metrics() -> Result<Metrics> {
    let dir = toy_dir()?;
    let path = dir.join("metrics.json");
    let text = crate::fsutil::read_text(&path, "JSON")?;
    Metrics::from_json(&serde_json::from_str(&text).map_err(|e| Error::bad_file(&path, e.to_string()))?)
}
