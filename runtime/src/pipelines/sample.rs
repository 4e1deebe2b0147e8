//! Sampling a clip: DDIM with classifier-free guidance from inverted latents (an edit) or from seeded
//! noise, then the VAE decode in chunks of frames.

use super::invert::Latents;
use super::tune::check_range;
use super::{count, decode_video, Loop};
use crate::error::{Error, Result};
use crate::media::{check_model_size, Video};
use crate::progress::Progress;
use crate::rng::Noise;
use crate::video::VideoModel;
use tch::Tensor;

#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub steps: i64,
    pub guidance: f64,
    pub seed: Option<u64>,
    pub negative: String,
    pub eta: f64,
    /// Without latents: frames and size of the clip (default 8 frames at the model's size).
    pub frames: Option<i64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub fps: Option<f64>,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            steps: 50,
            guidance: 7.5,
            seed: None,
            negative: String::new(),
            eta: 0.0,
            frames: None,
            width: None,
            height: None,
            fps: None,
        }
    }
}

/// The most frames one `sample` call makes without latents.
pub const MAX_FRAMES: i64 = 100_000;

impl SampleOptions {
    /// Refuses out-of-range values and options the call would ignore (`with_latents`: sampling from
    /// inverted latents, which fix the frames and size).
    pub fn validate(&self, with_latents: bool) -> Result<()> {
        check_denoise_options(self.steps, self.guidance, self.eta, &self.negative)?;
        if with_latents {
            let ignored: Vec<&str> =
                [("frames", self.frames.is_some()), ("size", self.width.is_some() || self.height.is_some())]
                    .iter()
                    .filter(|(_, set)| *set)
                    .map(|(n, _)| *n)
                    .collect();
            if !ignored.is_empty() {
                return Err(Error::Invalid(format!(
                    "{} would be ignored: the latents fix the frames and size of the clip; drop {} or sample without latents",
                    ignored.join(" and "),
                    if ignored.len() == 1 { "it" } else { "them" }
                )));
            }
        }
        if let Some(f) = self.frames {
            check_range("frames", f as f64, 1.0, MAX_FRAMES as f64, "an integer")?;
        }
        if let Some(fps) = self.fps {
            check_range("fps", fps, f64::MIN_POSITIVE, 1000.0, "a number")?;
        }
        Ok(())
    }
}

/// The checks `t2i`, `sample` and `invert` share: steps (the scheduler checks its own upper bound),
/// guidance, eta, and a negative prompt that only guidance reads.
pub fn check_denoise_options(steps: i64, guidance: f64, eta: f64, negative: &str) -> Result<()> {
    check_range("steps", steps as f64, 1.0, 100_000.0, "an integer")?;
    check_range("guidance", guidance, 0.0, 100.0, "a number")?;
    check_range("eta", eta, 0.0, 1.0, "a number")?;
    if !negative.is_empty() && guidance <= 1.0 {
        return Err(Error::Invalid(format!(
            "negative would be ignored: guidance {guidance} turns classifier-free guidance off (it needs guidance > 1)"
        )));
    }
    Ok(())
}

/// Refuses a clip whose latents, decoded frames and first-layer activations alone exceed the memory.
fn ensure_sample_fits(model: &VideoModel, frames: i64, w: i64, h: i64) -> Result<()> {
    let f = model.base.vae_scale_factor();
    let c0 = model.base.unet.model.config.block_out_channels[0];
    let bytes = crate::memory::bytes_of(&[frames, 3, w, h], 4.0)
        + crate::memory::bytes_of(&[frames, 2 * c0, w / f, h / f], 4.0 * 4.0);
    crate::memory::ensure_fits(&format!("sampling {frames} frames at {w}x{h}"), bytes, model.base.device)
}

/// Samples a clip for `prompt`; returns it with the seed used.
pub fn sample(
    model: &VideoModel,
    prompt: &str,
    latents: Option<&Latents>,
    opts: &SampleOptions,
) -> Result<(Video, u64)> {
    opts.validate(latents.is_some())?;
    let base = &model.base;
    let kind = model.kind();
    let seed = opts.seed.unwrap_or_else(Noise::fresh_seed);
    let mut noise = Noise::new(seed);
    let mut x = match latents {
        Some(l) => l.latents.to_device(base.device).to_kind(kind),
        None => {
            let size = base.default_size();
            let (w, h) = (opts.width.unwrap_or(size), opts.height.unwrap_or(size));
            check_model_size(w, h)?;
            let f = base.vae_scale_factor();
            let frames = opts.frames.unwrap_or(8);
            ensure_sample_fits(model, frames, w, h)?;
            noise.randn(&[1, base.unet.model.config.in_channels, frames, h / f, w / f], kind, base.device)
        }
    };
    let cond = base.encode_prompt(prompt)?;
    let cfg = opts.guidance > 1.0;
    let context = if cfg { Tensor::cat(&[base.encode_prompt(&opts.negative)?, cond], 0) } else { cond };
    let mut ddim = base.scheduler.ddim()?;
    ddim.set_timesteps(opts.steps)?;
    let mut progress = Progress::new("sample", opts.steps as u64);
    for &t in ddim.timesteps() {
        let input = if cfg { Tensor::cat(&[&x, &x], 0) } else { x.shallow_clone() };
        let ts = Tensor::from(t).to_device(base.device);
        let eps = tch::no_grad(|| model.forward(&input, &ts, &context, false))?;
        let eps = if cfg {
            let p = eps.chunk(2, 0);
            &p[0] + (&p[1] - &p[0]) * opts.guidance
        } else {
            eps
        };
        let variance = (opts.eta > 0.0).then(|| noise.randn(&eps.size(), eps.kind(), base.device));
        x = ddim.step(&eps, t, &x, opts.eta, variance.as_ref(), false)?.prev_sample;
        count(Loop::Sample);
        progress.step()?;
    }
    progress.finish();
    let fps = opts.fps.or(latents.map(|l| l.fps)).unwrap_or(8.0);
    Ok((decode_video(base, &x, fps)?, seed))
}
