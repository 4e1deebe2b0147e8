//! One-shot tuning (Tune-A-Video §4.2): DDPM noise at one random timestep per clip shared by all
//! frames, ε-prediction MSE (v-prediction when the scheduler says so), AdamW on the selected parameters
//! only, gradient clipping, everything else frozen. The VAE posterior and the text embedding are computed
//! once; each step draws a fresh latent sample from the posterior, as the reference does.

use super::train::Trainer;
use super::{count, encode_video, to_video_latents, Loop};
use crate::error::{Error, Result};
use crate::media::Video;
use crate::progress::Progress;
use crate::rng::Noise;
use crate::video::tuned::{save_tuned, TuneRecord};
use crate::video::{glob_match, VideoModel};
use std::path::PathBuf;
use tch::Tensor;
use vidtune_kernels::optim::{mse, AdamW};
use vidtune_kernels::schedulers::{ddpm, Prediction};

/// Tune-A-Video's trainable modules: the query projections of self- and cross-attention, and all of the
/// temporal attention (its LayerNorm stays frozen).
pub const TAV_TRAIN: [&str; 3] = ["attn1.to_q", "attn2.to_q", "attn_temp"];

#[derive(Debug, Clone)]
pub struct TuneOptions {
    pub steps: i64,
    pub lr: f64,
    /// Parameter patterns: a module path (`attn1.to_q` matches every `….attn1.to_q.weight`) or a glob.
    pub train: Vec<String>,
    pub seed: u64,
    pub max_grad_norm: f64,
    pub betas: (f64, f64),
    pub weight_decay: f64,
    pub eps: f64,
    /// Save a tuned file every N steps, to `checkpoint_path`.
    pub checkpoint_every: Option<i64>,
    pub checkpoint_path: Option<PathBuf>,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions {
            steps: 500,
            lr: 3e-5,
            train: TAV_TRAIN.iter().map(|s| s.to_string()).collect(),
            seed: 33,
            max_grad_norm: 1.0,
            betas: (0.9, 0.999),
            weight_decay: 1e-2,
            eps: 1e-8,
            checkpoint_every: None,
            checkpoint_path: None,
        }
    }
}

/// The most tuning steps one call takes (Tune-A-Video uses 300–500; the toy world 40).
pub const MAX_TUNE_STEPS: i64 = 1_000_000;

impl TuneOptions {
    /// Refuses values outside their ranges, naming the option and the range.
    pub fn validate(&self) -> Result<()> {
        check_range("steps", self.steps as f64, 1.0, MAX_TUNE_STEPS as f64, "an integer")?;
        check_range("lr", self.lr, f64::MIN_POSITIVE, 1.0, "a number")?;
        check_range("max_grad_norm", self.max_grad_norm, f64::MIN_POSITIVE, 1e6, "a number")?;
        check_range("weight_decay", self.weight_decay, 0.0, 1.0, "a number")?;
        check_range("betas[0]", self.betas.0, 0.0, 0.999_999, "a number")?;
        check_range("betas[1]", self.betas.1, 0.0, 0.999_999_999, "a number")?;
        check_range("eps", self.eps, f64::MIN_POSITIVE, 1.0, "a number")?;
        if let Some(every) = self.checkpoint_every {
            check_range("checkpoint_every", every as f64, 1.0, MAX_TUNE_STEPS as f64, "an integer")?;
        }
        Ok(())
    }
}

/// `name` must be a finite `what` in `lo..=hi` (`lo` = `f64::MIN_POSITIVE` reads "above 0").
pub fn check_range(name: &str, value: f64, lo: f64, hi: f64, what: &str) -> Result<()> {
    if value.is_finite() && value >= lo && value <= hi {
        return Ok(());
    }
    let fmt = |x: f64| if x.fract() == 0.0 && x.abs() < 1e15 { format!("{x:.0}") } else { format!("{x}") };
    let range = if lo == f64::MIN_POSITIVE {
        format!("above 0 and at most {}", fmt(hi))
    } else {
        format!("between {} and {}", fmt(lo), fmt(hi))
    };
    Err(Error::Invalid(format!("{name} must be {what} {range}, got {value}")))
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

/// Tunes a copy of `model` on `clip` described by `prompt`; returns it (the input model is unchanged).
/// A cancel (Ctrl-C) stops after the current step and returns the model tuned so far.
pub fn tune(model: &VideoModel, clip: &Video, prompt: &str, opts: &TuneOptions) -> Result<VideoModel> {
    opts.validate()?;
    let base = model.base.clone();
    super::ensure_clip_fits(&base, clip, "tuning on", true)?;
    let dist = encode_video(&base, clip)?;
    let emb = base.encode_prompt(prompt)?;
    let mut tuned = model.fork()?;
    let names = trainable_names(&tuned, &opts.train)?;
    let kind = tuned.kind();
    let vars = tuned.vars.variables();
    let params: Vec<(String, Tensor)> = names.iter().map(|n| (n.clone(), vars[n].shallow_clone())).collect();
    let adam =
        AdamW { lr: opts.lr, beta1: opts.betas.0, beta2: opts.betas.1, eps: opts.eps, weight_decay: opts.weight_decay };
    let mut trainer = Trainer::new(params, adam, opts.max_grad_norm)?;
    let schedule = base.scheduler.noise_schedule()?;
    let prediction = base.scheduler.prediction()?;
    let n_train = schedule.num_train_timesteps();
    let sf = base.vae.model.scaling_factor();
    let mut noise = Noise::new(opts.seed);
    let mut progress = Progress::new("tune", opts.steps as u64);
    let mut losses = Vec::new();
    let mut interrupted = false;
    for step in 1..=opts.steps {
        let sample = dist.sample_with(&noise.randn(&dist.mean.size(), dist.mean.kind(), base.device));
        let latents = to_video_latents(&(sample * sf)).to_kind(kind);
        let eps = noise.randn(&latents.size(), kind, base.device);
        let t = noise.randint(n_train, base.device);
        let noisy = ddpm::add_noise(&schedule, &latents, &eps, &t)?;
        let target = match prediction {
            Prediction::VPrediction => ddpm::get_velocity(&schedule, &latents, &eps, &t)?,
            _ => eps,
        };
        let pred = tuned.forward(&noisy, &t, &emb, true)?;
        let (l, _) = trainer.step(&mse(&pred, &target))?;
        losses.push(l);
        count(Loop::Tune);
        progress.set_message(format!("loss {l:.4}"));
        if let (Some(every), Some(path)) = (opts.checkpoint_every, &opts.checkpoint_path) {
            if every > 0 && step % every == 0 && step < opts.steps {
                tuned.trained = names.clone();
                save_tuned(&tuned, path)?;
            }
        }
        if let Err(Error::Cancelled) = progress.step() {
            interrupted = true;
            eprintln!("tuning interrupted after {step} of {} steps; keeping the model tuned so far", opts.steps);
            break;
        }
    }
    progress.finish();
    let names = trainer.finish();
    let s = clip.frames().size();
    tuned.trained = names;
    tuned.record = Some(TuneRecord {
        prompt: prompt.to_string(),
        steps: opts.steps,
        steps_done: losses.len() as i64,
        lr: opts.lr,
        train: opts.train.clone(),
        seed: opts.seed,
        frames: s[0],
        width: s[3],
        height: s[2],
        losses,
        interrupted,
    });
    Ok(tuned)
}
