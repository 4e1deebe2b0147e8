//! One-shot tuning (Tune-A-Video §4.2): DDPM noise at one random timestep per clip shared by all
//! frames, ε-prediction MSE (v-prediction when the scheduler says so), AdamW on the selected parameters
//! only, gradient clipping, everything else frozen. The VAE posterior and the text embedding are computed
//! once; each step draws a fresh latent sample from the posterior, as the reference does.

use super::common::{check_masks, check_range, encode_video, ensure_frames_fit_with, to_video_latents};
use super::train::{gradients, Trainer};
use super::tune_memory::resolve_checkpointing;
use super::{count, Loop};
use crate::control::{check_control_fits, Control};
use crate::error::{Error, Result};
use crate::masks::Masks;
use crate::media::Video;
use crate::models::checkpoint::Tape;
use crate::options::{CHECKPOINT_EVERY, LR, MAX_GRAD_NORM, TUNE_SEED, TUNE_STEPS, TUNE_WINDOW, WEIGHT_DECAY};
use crate::progress::Progress;
use crate::rng::Noise;
use crate::video::conditioning::subject_token_positions;
use crate::video::tuned::{save_tuned, TuneRecord};
use crate::video::{glob_match, Conditioning, VideoModel};
use std::path::PathBuf;
use tch::{Kind, Tensor};
use vidtune_kernels::masks as kmasks;
use vidtune_kernels::optim::{mse, AdamW};
use vidtune_kernels::schedulers::{ddpm, NoiseSchedule, Prediction};

/// Tune-A-Video's trainable modules: the query projections of self- and cross-attention, and all of the
/// temporal attention (its LayerNorm stays frozen).
pub const TAV_TRAIN: [&str; 3] = ["attn1.to_q", "attn2.to_q", "attn_temp"];

/// Dynamic mask guidance's tuned layers (§IV-A): the self- and cross-attention layers whole, and the new
/// temporal ones.
pub const DYNAMIC_MASK_TRAIN: [&str; 3] = ["attn1", "attn2", "attn_temp"];

/// The parameters a named training preset tunes: Tune-A-Video's (`"tav"`, `"tune-a-video"`; EI²'s, `"ei2"`,
/// is the same set over its own modules: FFAM's and cross-attention's queries, all of STAM), dynamic mask
/// guidance's (`"dynamic-mask"`) or everything (`"all"`); `None` for other names.
pub fn train_preset(name: &str) -> Option<Vec<String>> {
    match name {
        "tav" | "tune-a-video" | "ei2" => Some(TAV_TRAIN.iter().map(|s| s.to_string()).collect()),
        "dynamic-mask" => Some(DYNAMIC_MASK_TRAIN.iter().map(|s| s.to_string()).collect()),
        "all" => Some(vec!["*".into()]),
        _ => None,
    }
}

/// The weights of the loss terms (long-video-four-modules.txt Eq. 20): the plain noise-prediction loss
/// over everything, and the same restricted to the subject's masks (Eq. 15) and to the rest (Eq. 16).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossWeights {
    pub all: f64,
    pub fg: f64,
    pub bg: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        LossWeights { all: 1.0, fg: 0.0, bg: 0.0 }
    }
}

/// One clip of a tuning set: frames, description and (optionally) the subject's masks.
#[derive(Debug, Clone)]
pub struct TuneClip {
    pub video: Video,
    pub prompt: String,
    pub masks: Option<Masks>,
    /// ControlNets and their images (one, or one per frame) the tuned UNet is conditioned on, as it will be
    /// when it samples (random windows of a long clip get their frames).
    pub controls: Vec<Control>,
}

#[derive(Debug, Clone)]
pub struct TuneOptions {
    pub steps: i64,
    pub lr: f64,
    /// Parameter patterns: a module path (`attn1.to_q` matches every `….attn1.to_q.weight`) or a glob. The
    /// layers mask modules add (the mask encoder, MCA) are trained as well.
    pub train: Vec<String>,
    pub seed: u64,
    pub max_grad_norm: f64,
    pub betas: (f64, f64),
    pub weight_decay: f64,
    pub eps: f64,
    /// Save a tuned file every N steps, to `checkpoint_path`.
    pub checkpoint_every: Option<i64>,
    pub checkpoint_path: Option<PathBuf>,
    /// First-frame conditioning (LAMP, dynamic mask guidance Eq. 2): the first latent stays clean and the
    /// loss covers frames 2..N only.
    pub first_frame: bool,
    pub loss: LossWeights,
    /// Words of the prompts naming the subject, for mask cross-attention during tuning.
    pub subject: Option<String>,
    /// Long clips: each step trains on a random window of this many frames, so memory does not depend on
    /// the clip's length.
    pub window: Option<i64>,
    /// The precision of the forward and backward (`None`: the model's). Trainable parameters always
    /// keep float32 master copies; a precision other than the model's trains a copy of the UNet in that
    /// precision (frozen weights in half precision) and writes the trained values back at the end.
    /// float16 uses dynamic loss scaling.
    pub precision: Option<Kind>,
    /// Gradient checkpointing: keep only the inputs of every ResNet and transformer block and recompute
    /// them in the backward pass (less memory, about a third more compute). `None`: on for CUDA; on the
    /// CPU, off unless a step without it would not fit in the memory available ([`super::tune_memory::default_checkpointing`]).
    pub checkpointing: Option<bool>,
    /// Read the loss back from the device every this many steps (`None`: every step on the CPU, every
    /// 25 on an accelerator, so that the device never waits for the host).
    pub sync_every: Option<i64>,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions {
            steps: TUNE_STEPS.integer(),
            lr: LR.number(),
            train: TAV_TRAIN.iter().map(|s| s.to_string()).collect(),
            seed: TUNE_SEED.integer() as u64,
            max_grad_norm: MAX_GRAD_NORM.number(),
            betas: (0.9, 0.999),
            weight_decay: WEIGHT_DECAY.number(),
            eps: 1e-8,
            checkpoint_every: None,
            checkpoint_path: None,
            first_frame: false,
            loss: LossWeights::default(),
            subject: None,
            window: None,
            precision: None,
            checkpointing: None,
            sync_every: None,
        }
    }
}

pub use crate::options::MAX_TUNE_STEPS;

impl TuneOptions {
    /// Refuses values outside their ranges, naming the option and the range.
    pub fn validate(&self) -> Result<()> {
        TUNE_STEPS.check(self.steps as f64)?;
        LR.check(self.lr)?;
        MAX_GRAD_NORM.check(self.max_grad_norm)?;
        WEIGHT_DECAY.check(self.weight_decay)?;
        check_range("betas[0]", self.betas.0, 0.0, 0.999_999, "a number")?;
        check_range("betas[1]", self.betas.1, 0.0, 0.999_999_999, "a number")?;
        check_range("eps", self.eps, f64::MIN_POSITIVE, 1.0, "a number")?;
        if let Some(w) = self.window {
            TUNE_WINDOW.check(w as f64)?;
        }
        if let Some(p) = self.precision {
            if !matches!(p, Kind::Float | Kind::Half | Kind::BFloat16) {
                return Err(Error::Invalid(format!("precision: expected \"fp32\", \"fp16\" or \"bf16\", got {p:?}")));
            }
        }
        if let Some(n) = self.sync_every {
            check_range("sync_every", n as f64, 1.0, MAX_TUNE_STEPS as f64, "an integer")?;
        }
        if let Some(every) = self.checkpoint_every {
            CHECKPOINT_EVERY.check(every as f64)?;
        }
        for (name, w) in [("loss.all", self.loss.all), ("loss.fg", self.loss.fg), ("loss.bg", self.loss.bg)] {
            check_range(name, w, 0.0, 1000.0, "a number")?;
        }
        if self.loss.all + self.loss.fg + self.loss.bg <= 0.0 {
            return Err(Error::Invalid("loss: at least one of all, fg and bg must be above 0".into()));
        }
        Ok(())
    }
}

/// Whether parameter `name` is selected by `pattern`.
pub fn matches(pattern: &str, name: &str) -> bool {
    if pattern.contains('*') {
        return glob_match(pattern, name);
    }
    name.starts_with(&format!("{pattern}.")) || name.contains(&format!(".{pattern}.")) || name == pattern
}

/// The parameters of `model` the patterns select, sorted.
pub fn trainable_names(model: &VideoModel, patterns: &[String]) -> Result<Vec<String>> {
    let mut names: Vec<String> =
        model.vars.variables().into_keys().filter(|n| patterns.iter().any(|p| matches(p, n))).collect();
    names.sort();
    if names.is_empty() {
        return Err(Error::Invalid(format!(
            "no parameter matches the train patterns {patterns:?} (e.g. \"attn1.to_q\", \"attn_temp\", \"*.attn2.to_q.*\")"
        )));
    }
    Ok(names)
}

/// What a tune of `model` with `opts` trains: `opts.train` and what the model's modules train.
pub(crate) fn train_patterns(model: &VideoModel, opts: &TuneOptions) -> Vec<String> {
    let mut patterns = opts.train.clone();
    patterns.extend(model.module_trainables());
    patterns
}

/// Tunes a copy of `model` on `clip` described by `prompt`; returns it (the input model is unchanged).
/// A cancel (Ctrl-C) stops after the current step and returns the model tuned so far.
pub fn tune(model: &VideoModel, clip: &Video, prompt: &str, opts: &TuneOptions) -> Result<VideoModel> {
    tune_clips(
        model,
        &[TuneClip { video: clip.clone(), prompt: prompt.to_string(), masks: None, controls: vec![] }],
        opts,
    )
}

/// Checks a tuning set against the model and the options.
fn check_clips(model: &VideoModel, clips: &[TuneClip], opts: &TuneOptions) -> Result<()> {
    if clips.is_empty() {
        return Err(Error::Invalid("tune: no clips to tune on".into()));
    }
    let needs = model.spec.needs_masks().map(|m| m.name.clone());
    let why = if opts.loss.fg > 0.0 || opts.loss.bg > 0.0 {
        Some("the fg / bg losses".to_string())
    } else if opts.subject.is_some() {
        Some("subject".to_string())
    } else {
        needs.map(|n| format!("this model's {n} module"))
    };
    for (i, c) in clips.iter().enumerate() {
        match (&c.masks, &why) {
            (Some(m), _) => check_masks(m, &c.video, &format!("tune: clip {i}"))?,
            (None, Some(why)) => {
                return Err(Error::Invalid(format!(
                    "tune: {why} need the subject's masks of every clip: pass #{{masks: …}} (clip {i} has none)"
                )))
            }
            (None, None) => {}
        }
        if opts.first_frame && c.video.len() < 2 {
            return Err(Error::Invalid(format!("tune: first_frame needs clips of 2 or more frames (clip {i} has 1)")));
        }
    }
    Ok(())
}

/// What one clip contributes to every step: its posterior, text, masks and subject tokens.
struct Prepared {
    dist: crate::models::autoencoder_kl::LatentDist,
    cond: Conditioning,
    /// `[1, 1, F, h, w]` at latent resolution, for the fg / bg losses.
    latent_masks: Option<Tensor>,
}

fn prepare(model: &VideoModel, clip: &TuneClip, opts: &TuneOptions) -> Result<Prepared> {
    let base = &model.base;
    let frames = opts.window.map_or(clip.video.len() as i64, |w| w.min(clip.video.len() as i64));
    if let Some(w) = opts.window.filter(|&w| w > clip.video.len() as i64) {
        crate::progress::warn(format!(
            "tune: the window of {w} frames is longer than the clip ({} frames); it trains on the whole clip",
            clip.video.len()
        ));
    }
    let (w, h) = (clip.video.width(), clip.video.height());
    ensure_frames_fit_with(base, frames, w, h, "tuning on", true, &clip.controls)?;
    let dist = encode_video(base, &clip.video)?;
    for c in &clip.controls {
        c.check(clip.video.len() as i64, h, w)?;
        check_control_fits(base, c)?;
    }
    let mut cond = Conditioning::text(&base.encode_prompt(&clip.prompt)?)
        .with_masks(clip.masks.as_ref().map(|m| m.tensor()))
        .with_controls(clip.controls.clone());
    if let Some(subject) = &opts.subject {
        cond.subject_tokens = vec![subject_token_positions(&base.tokenizer, &clip.prompt, subject)?];
    }
    let (h, w) = (dist.mean.size()[2], dist.mean.size()[3]);
    let latent_masks = match &clip.masks {
        Some(m) => Some(to_video_latents(&kmasks::resize(m.tensor(), h, w)?).to_device(base.device)),
        None => None,
    };
    Ok(Prepared { dist, cond, latent_masks })
}

/// The step's clip when tuning on several (few-shot): a SplitMix64 draw of its own, so the noise draws
/// of one-clip tuning stay those of the reference.
fn pick(seed: u64, step: i64, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let mut z = seed.wrapping_add((step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) % n as u64) as usize
}

/// The window of a step when tuning on windows: a SplitMix64 draw of its own (another stream than
/// [`pick`]'s), uniform over the starts that keep the window inside the clip.
fn window_start(seed: u64, step: i64, frames: i64, window: i64) -> i64 {
    if frames <= window {
        return 0;
    }
    let draw = pick(seed ^ 0xA076_1D64_78BD_642F, step, (frames - window + 1) as usize);
    draw as i64
}

/// The loss of one step, long-video-four-modules.txt Eq. 20: `all · L + fg · L_fg + bg · L_bg` over the
/// frames that count (all of them, or frames 2..N with `first_frame`). With `Δ = pred − target` and `N`
/// the number of elements of `Δ` (clips × channels × frames × pixels):
/// - `L = Σ Δ² / N`, the MSE;
/// - `L_fg = Σ M ⊙ Δ² / N = ‖M ⊗ Δ‖² / N` for masks `M` in [0, 1] (Eq. 15), broadcast over channels;
/// - `L_bg = Σ (1 − M) ⊙ Δ² / N = ‖(1 − M) ⊗ Δ‖² / N` (Eq. 16).
///
/// The paper writes the squared norms; here they are divided by `N`, the MSE's own normaliser, so the
/// three terms share a scale (for binary masks `L_fg + L_bg = L`) and the weights keep their meaning
/// whatever the clip's size.
fn step_loss(pred: &Tensor, target: &Tensor, masks: Option<&Tensor>, opts: &TuneOptions) -> Tensor {
    let (pred, target, masks) = if opts.first_frame {
        let f = pred.size()[2];
        (pred.narrow(2, 1, f - 1), target.narrow(2, 1, f - 1), masks.map(|m| m.narrow(2, 1, f - 1)))
    } else {
        (pred.shallow_clone(), target.shallow_clone(), masks.map(Tensor::shallow_clone))
    };
    let w = opts.loss;
    let mut loss = mse(&pred, &target) * w.all;
    if let Some(m) = masks {
        let diff = (pred.to_kind(Kind::Float) - target.to_kind(Kind::Float)).square();
        let m = m.to_kind(Kind::Float);
        if w.fg > 0.0 {
            loss = loss + (&diff * &m).mean(Kind::Float) * w.fg;
        }
        if w.bg > 0.0 {
            loss = loss + (&diff * (m.ones_like() - &m)).mean(Kind::Float) * w.bg;
        }
    }
    loss
}

/// The noisy latents a tuning step denoises: `latents` `[B, C, F, h, w]` noised to `t` (DDPM), except
/// with `first_frame` the first frame, which stays clean (the condition the others are denoised under).
fn noised(schedule: &NoiseSchedule, latents: &Tensor, eps: &Tensor, t: &Tensor, first_frame: bool) -> Result<Tensor> {
    let noisy = ddpm::add_noise(schedule, latents, eps, t)?;
    if !first_frame {
        return Ok(noisy);
    }
    let f = noisy.size()[2];
    Ok(Tensor::cat(&[latents.narrow(2, 0, 1), noisy.narrow(2, 1, f - 1)], 2))
}

/// Puts the trained values of a mixed-precision run (the float32 masters) into `tuned`, in its own
/// precision, with the modules' running state. Nothing to do when `tuned` itself trained.
fn write_back(tuned: &VideoModel, replica: Option<&VideoModel>, names: &[String], trainer: &Trainer) -> Result<()> {
    let Some(replica) = replica else { return Ok(()) };
    let vars = tuned.vars.variables();
    let kind = tuned.kind();
    tch::no_grad(|| {
        for (name, value) in names.iter().zip(trainer.values()) {
            // `set_data`: the frozen base model may share this tensor; it must keep its values.
            let mut var = vars[name].shallow_clone();
            var.set_data(&value.to_kind(kind));
        }
    });
    tuned.load_processor_states(replica, |t| t.to_kind(kind))
}

/// The tuning steps edits need: the built-in toy models 150 (at lr 1e-3, the presets' and scripts'
/// setting on toy clips), SD1.x 500 (Tune-A-Video's, at lr 3e-5); below the second figure `tune` warns.
pub const WORKING_STEPS: [(&str, i64, i64); 2] = [("the toy models", 150, 100), ("SD1.x", 500, 200)];

/// The warning for `steps` tuning steps on `sd`, if they are too few for an edit (random models: none).
pub fn few_steps_warning(sd: &crate::sd::StableDiffusion, steps: i64) -> Option<String> {
    if sd.random {
        return None;
    }
    let (what, works, least) = WORKING_STEPS[if sd.source == "toy" { 0 } else { 1 }];
    (steps < least).then(|| {
        format!("tune: {steps} steps; edits on {what} need about {works} (the clip is barely learnt below {least})")
    })
}

/// Tunes a copy of `model` on one clip or several (few-shot: each step draws one), each with its prompt
/// and, for mask modules and the fg / bg losses, its masks. `model` is unchanged.
pub fn tune_clips(model: &VideoModel, clips: &[TuneClip], opts: &TuneOptions) -> Result<VideoModel> {
    let prepared = prepare_clips(model, clips, opts)?;
    train(model.fork()?, prepared, clips, opts)
}

/// [`tune_clips`] training `model` itself, for a model with no further use untuned (a pipeline that
/// inflates to tune, as `vidtune bench` does): the copy [`tune_clips`] makes of the layers the inflation
/// added is not made, 189 MiB less at the peak on SD1.x. The same result as [`tune_clips`]. `model` must
/// share no tensor with another video model (an inflated, loaded or tuned model, not a
/// [`VideoModel::replica`], whose tensors are its source's).
pub fn tune_clips_owned(model: VideoModel, clips: &[TuneClip], opts: &TuneOptions) -> Result<VideoModel> {
    let prepared = prepare_clips(&model, clips, opts)?;
    train(model, prepared, clips, opts)
}

/// The checks, the warning on too few steps, and each clip's encoding and text, once.
fn prepare_clips(model: &VideoModel, clips: &[TuneClip], opts: &TuneOptions) -> Result<Vec<Prepared>> {
    opts.validate()?;
    check_clips(model, clips, opts)?;
    if let Some(w) = few_steps_warning(&model.base, opts.steps) {
        crate::progress::warn(w);
    }
    clips.iter().map(|c| prepare(model, c, opts)).collect()
}

/// The training loop of [`tune_clips`] on `tuned`, the model whose trainable tensors it updates.
fn train(mut tuned: VideoModel, prepared: Vec<Prepared>, clips: &[TuneClip], opts: &TuneOptions) -> Result<VideoModel> {
    let base = tuned.base.clone();
    let patterns = train_patterns(&tuned, opts);
    let names = trainable_names(&tuned, &patterns)?;
    // Known before training, for the tuned files written along the way.
    tuned.trained = names.clone();
    let device = tuned.device();
    // Mixed precision: a copy of the UNet in the training precision; the trained values go back to
    // `tuned` (in the model's precision) at the end.
    let precision = opts.precision.unwrap_or(tuned.kind());
    let replica = (precision != tuned.kind()).then(|| tuned.replica_as(device, Some(precision))).transpose()?;
    let trainee = replica.as_ref().unwrap_or(&tuned);
    let kind = trainee.kind();
    let vars = trainee.vars.variables();
    let params: Vec<(String, Tensor)> = names.iter().map(|n| (n.clone(), vars[n].shallow_clone())).collect();
    let adam =
        AdamW { lr: opts.lr, beta1: opts.betas.0, beta2: opts.betas.1, eps: opts.eps, weight_decay: opts.weight_decay };
    // Only tensors under a name the frozen base model has can share its storage: they get a copy of
    // their own before they change. The layers the inflation added are this model's alone (copied by
    // `fork`, or given up with the model to [`tune_clips_owned`]); a mixed-precision replica is all new.
    let shared = base.unet.vars.variables();
    let copy: Vec<bool> = names.iter().map(|n| replica.is_none() && shared.contains_key(n)).collect();
    let mut trainer = Trainer::new_copying(params, &copy, adam, opts.max_grad_norm)?;
    if replica.is_some() {
        let full = tuned.vars.variables();
        trainer.load_masters(&names.iter().map(|n| full[n].shallow_clone()).collect::<Vec<_>>())?;
    }
    // The text in the trainee's precision, once.
    let prepared: Vec<Prepared> = match &replica {
        Some(_) => prepared.into_iter().map(|p| Prepared { cond: p.cond.to_kind(kind), ..p }).collect(),
        None => prepared,
    };
    // Decided with the replica made, against the memory left.
    let checkpointing = resolve_checkpointing(trainee, clips, opts)?;
    if let Some(reason) = &checkpointing.reason {
        crate::progress::warn(reason);
    }
    let checkpointing = checkpointing.on;
    let sync_every = opts.sync_every.unwrap_or(if device == tch::Device::Cpu { 1 } else { 25 });
    let schedule = base.scheduler.noise_schedule()?;
    let prediction = base.scheduler.prediction()?;
    let n_train = schedule.num_train_timesteps();
    let sf = base.vae.model.scaling_factor();
    let mut noise = Noise::new(opts.seed);
    let mut progress = Progress::new("tune", opts.steps as u64);
    let mut losses = Vec::new();
    let mut interrupted = false;
    for step in 1..=opts.steps {
        crate::failpoint::hit("tune-step");
        let p = &prepared[pick(opts.seed, step, prepared.len())];
        let sample = p.dist.sample_with(&noise.randn(&p.dist.mean.size(), p.dist.mean.kind(), base.device));
        let mut latents = to_video_latents(&(sample * sf)).to_kind(kind);
        let (mut cond, mut latent_masks) = (p.cond.clone(), p.latent_masks.as_ref().map(Tensor::shallow_clone));
        if let Some(w) = opts.window {
            let frames = latents.size()[2];
            let len = w.min(frames);
            let start = window_start(opts.seed, step, frames, len);
            latents = latents.narrow(2, start, len);
            cond = cond.window(start, len);
            latent_masks = latent_masks.map(|m| m.narrow(2, start, len));
        }
        // Drawn in float32 whatever the precision, so every precision sees the same noise.
        let eps = noise.randn(&latents.size(), Kind::Float, base.device).to_kind(kind);
        // Drawn on the host, which then knows the step's timestep without reading it back.
        let t_host = noise.randint(n_train, tch::Device::Cpu);
        cond = cond.at_timestep(t_host.int64_value(&[0]) as f64);
        let t = t_host.to_device(base.device);
        let noisy = noised(&schedule, &latents, &eps, &t, opts.first_frame)?;
        let target = match prediction {
            Prediction::VPrediction => ddpm::get_velocity(&schedule, &latents, &eps, &t)?,
            _ => eps,
        };
        if checkpointing {
            let mut tape = Tape::new();
            let out = trainee.forward_checkpointed(&noisy, &t, &cond, &mut tape)?;
            let loss = step_loss(&out.prediction, &target, latent_masks.as_ref(), opts);
            trainer.step_deferred(&loss, |l, params| out.gradients(tape, l, params))?;
        } else {
            let pred = trainee.forward(&noisy, &t, &cond, true)?;
            let loss = step_loss(&pred, &target, latent_masks.as_ref(), opts);
            trainer.step_deferred(&loss, gradients)?;
        }
        count(Loop::Tune);
        if step % sync_every == 0 || step == opts.steps {
            losses.extend(trainer.flush()?);
            if let Some(l) = losses.last() {
                progress.set_message(format!("loss {l:.4}"));
            }
        }
        if let (Some(every), Some(path)) = (opts.checkpoint_every, &opts.checkpoint_path) {
            if every > 0 && step % every == 0 && step < opts.steps {
                write_back(&tuned, replica.as_ref(), &names, &trainer)?;
                save_tuned(&tuned, path)?;
            }
        }
        if let Err(Error::Cancelled) = progress.step() {
            interrupted = true;
            eprintln!("tuning interrupted after {step} of {} steps; keeping the model tuned so far", opts.steps);
            break;
        }
    }
    losses.extend(trainer.flush()?);
    progress.finish();
    if let Some(scaler) = trainer.scaler.filter(|s| s.skipped > 0) {
        crate::progress::warn(format!(
            "tune: {} of {} steps skipped because their float16 gradients overflowed (loss scale now {}); \
             bf16 or fp32 avoids it",
            scaler.skipped,
            losses.len(),
            scaler.scale
        ));
    }
    write_back(&tuned, replica.as_ref(), &names, &trainer)?;
    let names = trainer.finish();
    drop((vars, replica, prepared));
    // The optimiser's moments, the last step's buffers and a mixed-precision replica are free now: their
    // pages go back to the system, so sampling and inversion after a tune start from the model's size,
    // not from tuning's peak.
    crate::memory::release_freed();
    let s = clips[0].video.frames().size();
    tuned.trained = names;
    let prompts: Vec<&str> = clips.iter().map(|c| c.prompt.as_str()).collect();
    tuned.record = Some(TuneRecord {
        prompt: prompts.join(" | "),
        steps: opts.steps,
        steps_done: losses.len() as i64,
        lr: opts.lr,
        train: patterns,
        seed: opts.seed,
        frames: s[0],
        width: s[3],
        height: s[2],
        losses,
        interrupted,
        clips: clips.len(),
    });
    Ok(tuned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> (Kind, tch::Device) {
        (Kind::Float, tch::Device::Cpu)
    }

    /// `[1, 1, 2, 1, 2]`: two frames of two pixels.
    fn frames(values: [f32; 4]) -> Tensor {
        Tensor::from_slice(&values).view([1, 1, 2, 1, 2])
    }

    fn opts(first_frame: bool) -> TuneOptions {
        TuneOptions { first_frame, loss: LossWeights { all: 1.0, fg: 2.0, bg: 0.5 }, ..Default::default() }
    }

    #[test]
    fn the_fg_bg_loss_equals_a_hand_computation() {
        // Δ² = 1, 4, 9, 16; the mask holds pixels 0 of both frames: Σ M Δ² = 10, Σ (1 − M) Δ² = 20, N = 4.
        let pred = frames([1.0, 2.0, 3.0, 4.0]);
        let target = frames([0.0; 4]);
        let masks = frames([1.0, 0.0, 1.0, 0.0]);
        let loss = step_loss(&pred, &target, Some(&masks), &opts(false)).double_value(&[]);
        // 1 · 30 / 4 + 2 · 10 / 4 + 0.5 · 20 / 4
        assert!((loss - 15.0).abs() < 1e-6, "{loss}");
        // A soft mask weighs each pixel by its share: M = 0.5 everywhere splits Δ² evenly.
        let half = frames([0.5; 4]);
        let loss = step_loss(&pred, &target, Some(&half), &opts(false)).double_value(&[]);
        // 30 / 4 + 2 · 15 / 4 + 0.5 · 15 / 4
        assert!((loss - 16.875).abs() < 1e-6, "{loss}");
        // Over channels the mask is broadcast, and N counts the channels: two equal channels, same loss.
        let two = |t: &Tensor| Tensor::cat(&[t, t], 1);
        let loss = step_loss(&two(&pred), &two(&target), Some(&masks), &opts(false)).double_value(&[]);
        assert!((loss - 15.0).abs() < 1e-6, "{loss}");
        // Without masks only the MSE counts.
        let loss = step_loss(&pred, &target, None, &opts(false)).double_value(&[]);
        assert!((loss - 7.5).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn first_frame_tuning_leaves_frame_0_out_of_the_loss_and_its_gradient() {
        let pred = frames([1.0, 2.0, 3.0, 4.0]).set_requires_grad(true);
        let target = frames([0.0; 4]);
        let masks = frames([1.0, 0.0, 1.0, 0.0]);
        let loss = step_loss(&pred, &target, Some(&masks), &opts(true));
        // Frame 1 alone: Δ² = 9, 16, M = 1, 0, N = 2: 25 / 2 + 2 · 9 / 2 + 0.5 · 16 / 2.
        assert!((loss.double_value(&[]) - 25.5).abs() < 1e-6, "{}", loss.double_value(&[]));
        loss.backward();
        let g = pred.grad().view([4]);
        let g: Vec<f64> = (0..4).map(|i| g.double_value(&[i])).collect();
        // ∂/∂pred = 2Δ/N · (all + fg · M + bg · (1 − M)): frame 0 nothing, frame 1 3 · (1 + 2), 4 · (1 + 0.5).
        assert_eq!(&g[..2], &[0.0, 0.0], "frame 0 contributed a gradient: {g:?}");
        assert!((g[2] - 9.0).abs() < 1e-6 && (g[3] - 6.0).abs() < 1e-6, "{g:?}");
    }

    #[test]
    fn first_frame_tuning_keeps_the_first_latent_clean() {
        let schedule = NoiseSchedule::new(
            1000,
            0.00085,
            0.012,
            vidtune_kernels::schedulers::BetaSchedule::ScaledLinear,
            None,
            false,
        )
        .unwrap();
        tch::manual_seed(3);
        let latents = Tensor::randn([1, 4, 3, 2, 2], cpu());
        let eps = Tensor::randn([1, 4, 3, 2, 2], cpu());
        let t = Tensor::from_slice(&[700i64]);
        let plain = noised(&schedule, &latents, &eps, &t, false).unwrap();
        let held = noised(&schedule, &latents, &eps, &t, true).unwrap();
        assert!(held.narrow(2, 0, 1).equal(&latents.narrow(2, 0, 1)), "frame 0 was noised");
        assert!(held.narrow(2, 1, 2).equal(&plain.narrow(2, 1, 2)), "frames 1.. are noised as without it");
        assert!((plain.narrow(2, 0, 1) - latents.narrow(2, 0, 1)).abs().max().double_value(&[]) > 0.1);
    }
}
