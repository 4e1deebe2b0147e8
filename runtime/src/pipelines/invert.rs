//! DDIM inversion of a clip (Tune-A-Video `ddim_inversion`): the clip's latents walked up the noise
//! schedule with the null prompt (or a source prompt) and no guidance; the result is the starting noise
//! of edits that keep the clip's structure.

use super::{count, encode_video, to_video_latents, Loop};
use crate::error::Result;
use crate::media::Video;
use crate::progress::Progress;
use crate::video::VideoModel;
use tch::Tensor;

#[derive(Debug, Clone)]
pub struct InvertOptions {
    pub steps: i64,
    /// The prompt of inversion; empty is Tune-A-Video's null-text inversion.
    pub prompt: String,
}

impl Default for InvertOptions {
    fn default() -> Self {
        InvertOptions { steps: 50, prompt: String::new() }
    }
}

/// Inverted latents of a clip.
#[derive(Debug)]
pub struct Latents {
    /// `[1, 4, F, h, w]`.
    pub latents: Tensor,
    pub steps: i64,
    pub prompt: String,
    pub fps: f64,
}

impl Clone for Latents {
    fn clone(&self) -> Self {
        Latents { latents: self.latents.shallow_clone(), steps: self.steps, prompt: self.prompt.clone(), fps: self.fps }
    }
}

impl std::fmt::Display for Latents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.latents.size();
        write!(f, "Latents({} frames, {}x{} latent, {} inversion steps)", s[2], s[4], s[3], self.steps)
    }
}

/// Inverts `clip` with `model`.
pub fn invert(model: &VideoModel, clip: &Video, opts: &InvertOptions) -> Result<Latents> {
    super::tune::check_range("steps", opts.steps as f64, 1.0, 100_000.0, "an integer")?;
    let base = &model.base;
    super::ensure_clip_fits(base, clip, "inverting", false)?;
    let dist = encode_video(base, clip)?;
    let mut x = to_video_latents(&(dist.mean * base.vae.model.scaling_factor())).to_kind(model.kind());
    let emb = base.encode_prompt(&opts.prompt)?;
    let mut ddim = base.scheduler.ddim()?;
    ddim.set_timesteps(opts.steps)?;
    let mut progress = Progress::new("invert", opts.steps as u64);
    for &t in ddim.timesteps().iter().rev() {
        let ts = Tensor::from(t).to_device(base.device);
        let eps = tch::no_grad(|| model.forward(&x, &ts, &emb, false))?;
        x = ddim.inversion_step(&eps, t, &x)?;
        count(Loop::Invert);
        progress.step()?;
    }
    progress.finish();
    Ok(Latents { latents: x, steps: opts.steps, prompt: opts.prompt.clone(), fps: clip.fps() })
}
