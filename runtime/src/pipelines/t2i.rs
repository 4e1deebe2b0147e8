//! Text-to-image, as diffusers' `StableDiffusionPipeline` with a DDIM scheduler: the same seeded initial
//! noise, classifier-free guidance batched in one UNet call, DDIM steps, VAE decode.

use super::common::{check_denoise_options, decode_latents};
use super::denoise::{DenoiseSpec, NoHooks};
use super::Loop;
use crate::control::{check_control_fits, Control};
use crate::error::Result;
use crate::media::{check_model_size, Image};
use crate::options::{ETA, GUIDANCE, NEGATIVE, SAMPLE_STEPS};
use crate::rng::Noise;
use crate::sd::StableDiffusion;
use crate::video::Conditioning;
use tch::Tensor;

/// Options of [`t2i`]; `None` sizes take the model's default.
#[derive(Debug, Clone)]
pub struct T2iOptions {
    pub steps: i64,
    pub guidance: f64,
    pub seed: Option<u64>,
    pub negative: String,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub eta: f64,
    /// ControlNets and their images (MultiControlNet when several: their residuals add).
    pub controls: Vec<Control>,
}

impl Default for T2iOptions {
    fn default() -> Self {
        T2iOptions {
            steps: SAMPLE_STEPS.integer(),
            guidance: GUIDANCE.number(),
            seed: None,
            negative: NEGATIVE.text().into(),
            width: None,
            height: None,
            eta: ETA.number(),
            controls: vec![],
        }
    }
}

/// The result of [`t2i`].
#[derive(Debug)]
pub struct T2iOutput {
    pub image: Image,
    /// The final latents (before VAE scaling), `[1, 4, h, w]`.
    pub latents: Tensor,
    pub seed: u64,
}

/// Denoises `latents` with CFG from `t = timesteps[0]` down (the shared loop of
/// [`super::denoise`]), drawing variance noise from `noise` when `eta > 0`.
pub fn denoise_image(
    sd: &StableDiffusion,
    latents: Tensor,
    cond: &Tensor,
    uncond: Option<&Tensor>,
    opts: &T2iOptions,
    noise: &mut Noise,
) -> Result<Tensor> {
    let spec = DenoiseSpec::down("t2i", opts.steps, Loop::T2i)
        .guided(if uncond.is_some() { opts.guidance } else { 1.0 }, uncond.map(Tensor::shallow_clone))
        .eta(opts.eta);
    let cond = Conditioning::text(cond).with_controls(opts.controls.clone());
    Ok(super::denoise::denoise(sd, latents, &cond, &spec, Some(noise), &mut NoHooks)?.latents)
}

/// Generates one image for `prompt`.
pub fn t2i(sd: &StableDiffusion, prompt: &str, opts: &T2iOptions) -> Result<T2iOutput> {
    let size = sd.default_size();
    let (w, h) = (opts.width.unwrap_or(size), opts.height.unwrap_or(size));
    check_model_size(w, h)?;
    check_denoise_options(opts.steps, opts.guidance, opts.eta, &opts.negative)?;
    let c0 = sd.unet.model.config.block_out_channels[0];
    let f = sd.vae_scale_factor();
    for c in &opts.controls {
        c.check(1, h, w)?;
        check_control_fits(sd, c)?;
    }
    let nets = crate::control::memory_factor(&opts.controls);
    crate::memory::ensure_fits(
        &format!("an image of {w}x{h}"),
        crate::memory::bytes_of(&[3, w, h], 4.0) + crate::memory::bytes_of(&[2 * c0, w / f, h / f], 16.0 * nets),
        sd.device,
    )?;
    let cond = sd.encode_prompt(prompt)?;
    let uncond = if opts.guidance > 1.0 { Some(sd.encode_prompt(&opts.negative)?) } else { None };
    let seed = opts.seed.unwrap_or_else(Noise::fresh_seed);
    let mut noise = Noise::new(seed);
    let f = sd.vae_scale_factor();
    let channels = sd.unet.model.config.in_channels;
    let latents = noise.randn(&[1, channels, h / f, w / f], sd.unet.model.kind(), sd.device);
    let latents = denoise_image(sd, latents, &cond, uncond.as_ref(), opts, &mut noise)?;
    let image = Image::new(decode_latents(sd, &latents)?.squeeze_dim(0))?;
    Ok(T2iOutput { image, latents, seed })
}

/// What [`t2i_candidates`] made: the kept image (its `seed` is the candidate's own) and every
/// candidate's CLIP text alignment, in seed order.
#[derive(Debug)]
pub struct Candidates {
    pub best: T2iOutput,
    /// The seed of the first candidate; candidate `i` used `first_seed + i`.
    pub first_seed: u64,
    pub alignments: Vec<f64>,
    /// Which candidate was kept.
    pub kept: usize,
}

/// Best of `count` images: [`t2i`] with seeds `seed`, `seed + 1`, …, keeping the one whose CLIP text
/// alignment with `prompt` is highest (the first among equals). Run alone, the kept candidate's seed gives
/// the same image.
pub fn t2i_candidates(
    sd: &StableDiffusion,
    prompt: &str,
    opts: &T2iOptions,
    count: usize,
    clip: &crate::models::clip::ClipModel,
) -> Result<Candidates> {
    if count == 0 {
        return Err(crate::error::Error::Invalid("candidates must be at least 1".into()));
    }
    let first_seed = opts.seed.unwrap_or_else(Noise::fresh_seed);
    let mut outputs = Vec::with_capacity(count);
    for i in 0..count {
        let o = T2iOptions { seed: Some(first_seed.wrapping_add(i as u64)), ..opts.clone() };
        outputs.push(t2i(sd, prompt, &o)?);
    }
    let frames = Tensor::stack(&outputs.iter().map(|o| o.image.tensor().shallow_clone()).collect::<Vec<_>>(), 0);
    let alignments = crate::score::frame_alignments(clip, &crate::media::Video::new(frames, 1.0)?, prompt)?;
    let kept = (0..count).fold(0, |best, i| if alignments[i] > alignments[best] { i } else { best });
    let best = outputs.swap_remove(kept);
    Ok(Candidates { best, first_seed, alignments, kept })
}
