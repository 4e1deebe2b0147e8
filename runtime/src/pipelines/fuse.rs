//! Average fusion (long-video framework §3.2, Eqs. 10–12): `n` samples of the same prompt are denoised
//! to step `k`; their backgrounds (outside the subject's masks) are averaged and the first sample's
//! foreground kept, `r'_k = (w₁/n)·Σᵢ (1 − M)·rᵢ,ₖ + w₂·M·r₀,ₖ`, and the fused latents are denoised to the
//! end. The averaged background is one all samples agree on, which smooths it across frames; the paper
//! fuses after 5 of 1000 DDPM steps with `n = 5`.
//!
//! `M` is the masks at latent resolution (area-averaged, so soft at the edges). The average of `n`
//! independent noises has `1/√n` of their spread: fusing early (small `k`) lets the remaining steps
//! restore the detail, as the paper does.

use super::common::Latents;
use super::common::{check_range, to_video_latents};
use super::sample::{finish_sample, sample_latents, SampleOptions};
use crate::error::{Error, Result};
use crate::media::Video;
use crate::video::VideoModel;
use tch::{Kind, Tensor};
use vidtune_kernels::masks as kmasks;

/// How samples are fused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FuseOptions {
    /// Samples drawn (seeds `seed`, `seed + 1`, …).
    pub samples: i64,
    /// Steps of the schedule run before fusing.
    pub at: i64,
    /// w₁, the background's weight.
    pub w_bg: f64,
    /// w₂, the foreground's weight.
    pub w_fg: f64,
}

impl Default for FuseOptions {
    fn default() -> Self {
        FuseOptions { samples: 5, at: 1, w_bg: 1.0, w_fg: 1.0 }
    }
}

/// Eq. 11 on latents `[1, C, F, h, w]`: the mean background of `samples` weighted by `w_bg`, plus the
/// first sample's foreground weighted by `w_fg`; `m` the masks `[1, 1, F, h, w]` in [0, 1].
pub fn fuse_latents(samples: &[Tensor], m: &Tensor, w_bg: f64, w_fg: f64) -> Result<Tensor> {
    let first = samples.first().ok_or_else(|| Error::Invalid("fuse: no samples".into()))?;
    let m = m.to_kind(first.kind()).to_device(first.device());
    let bg = Tensor::stack(samples, 0).mean_dim(&[0i64][..], false, first.kind());
    Ok(bg * (m.ones_like() - &m) * w_bg + first * &m * w_fg)
}

/// Samples `prompt` `n` times to step `at`, fuses them (Eq. 11) under `opts.masks`, and denoises the
/// result to the end with the first sample's options. Returns the clip and the first seed.
pub fn fuse(model: &VideoModel, prompt: &str, opts: &SampleOptions, f: &FuseOptions) -> Result<(Video, u64)> {
    let masks = opts.masks.as_ref().ok_or_else(|| {
        Error::Invalid("fuse: needs the subject's masks (#{masks: …}) to split foreground from background".into())
    })?;
    check_range("samples", f.samples as f64, 1.0, 64.0, "an integer")?;
    if f.at < 1 || f.at >= opts.steps {
        return Err(Error::Invalid(format!(
            "fuse: at must be between 1 and steps − 1 ({}): the steps run before fusing, got {}",
            opts.steps - 1,
            f.at
        )));
    }
    for (name, w) in [("weights[0]", f.w_bg), ("weights[1]", f.w_fg)] {
        check_range(name, w, 0.0, 10.0, "a number")?;
    }
    if opts.until.is_some() || opts.strength < 1.0 || opts.keep_background {
        return Err(Error::Invalid(
            "fuse: samples from noise (no inversion to keep a background from or to start part-way up)".into(),
        ));
    }
    let seed = opts.seed.unwrap_or_else(crate::rng::Noise::fresh_seed);
    let mut parts = vec![];
    for i in 0..f.samples as u64 {
        let o = SampleOptions { seed: Some(seed + i), until: Some(f.at), ..opts.clone() };
        parts.push(sample_latents(model, prompt, None, &o)?.0);
    }
    let (h, w) = (parts[0].size()[3], parts[0].size()[4]);
    let m = to_video_latents(&kmasks::resize(masks.tensor(), h, w)?.to_kind(Kind::Float));
    let fused = fuse_latents(&parts, &m, f.w_bg, f.w_fg)?;
    // The rest of the schedule from the fused latents: an img2img start `at` steps down (the loop reads
    // the start from the trajectory's level `steps - at`; no other level is read without keep_background).
    let levels = (0..=opts.steps).map(|_| fused.shallow_clone()).collect();
    let start = Latents {
        latents: fused.shallow_clone(),
        source: fused,
        trajectory: Some(std::rc::Rc::new(levels)),
        clip: None,
        steps: opts.steps,
        prompt: prompt.to_string(),
        fps: opts.fps.unwrap_or(super::sample::DEFAULT_FPS),
        null_text: None,
        store: None,
    };
    let rest = SampleOptions {
        seed: Some(seed),
        strength: (opts.steps - f.at) as f64 / opts.steps as f64,
        frames: None,
        width: None,
        height: None,
        first_frame: None,
        shared_noise: None,
        variance_preserving: false,
        shared_noise_follow: false,
        subject_guide: 0.0,
        ..opts.clone()
    };
    let (x, _) = sample_latents(model, prompt, Some(&start), &rest)?;
    finish_sample(model, x, seed, Some(&start), &rest)
}
