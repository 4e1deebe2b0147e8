//! Sampling a clip: DDIM with classifier-free guidance from inverted latents (an edit) or from seeded
//! noise, then the VAE decode in chunks of frames.

use super::invert::Latents;
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

/// Samples a clip for `prompt`; returns it with the seed used.
pub fn sample(
    model: &VideoModel,
    prompt: &str,
    latents: Option<&Latents>,
    opts: &SampleOptions,
) -> Result<(Video, u64)> {
    if opts.steps < 1 {
        return Err(Error::Invalid(format!("steps must be at least 1, got {}", opts.steps)));
    }
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
            if frames < 1 {
                return Err(Error::Invalid(format!("frames must be at least 1, got {frames}")));
            }
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
