//! The unrolled loops — text-to-image, tuning, DDIM inversion, video sampling — each reporting progress,
//! honouring cancellation at every step, and counting its steps (so tests can tell work from a cache hit).

pub mod cached;
pub mod codenoise;
pub mod denoise;
pub mod extend;
pub mod fuse;
pub mod invert;
pub mod sample;
pub mod t2i;
pub mod train;
pub mod tune;

use crate::error::Result;
use crate::media::Video;
use crate::models::autoencoder_kl::LatentDist;
use crate::sd::StableDiffusion;
use std::cell::Cell;
use tch::{Kind, Tensor};

thread_local! {
    static COUNTS: Cell<Stats> =
        const { Cell::new(Stats { tune_steps: 0, invert_steps: 0, sample_steps: 0, t2i_steps: 0 }) };
}

/// Which loop a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    Tune,
    Invert,
    Sample,
    T2i,
}

/// Steps run by the pipelines on this thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub tune_steps: u64,
    pub invert_steps: u64,
    pub sample_steps: u64,
    pub t2i_steps: u64,
}

/// The step counters of this thread so far.
pub fn stats() -> Stats {
    COUNTS.with(|c| c.get())
}

pub(crate) fn count(which: Loop) {
    COUNTS.with(|c| {
        let mut s = c.get();
        match which {
            Loop::Tune => s.tune_steps += 1,
            Loop::Invert => s.invert_steps += 1,
            Loop::Sample => s.sample_steps += 1,
            Loop::T2i => s.t2i_steps += 1,
        }
        c.set(s);
    });
}

/// Refuses tuning (`training`) or inverting `video` when a lower bound of the UNet's activations over all
/// its frames exceeds the memory available.
pub fn ensure_clip_fits(sd: &StableDiffusion, video: &Video, what: &str, training: bool) -> Result<()> {
    ensure_frames_fit(sd, video.len() as i64, video.width(), video.height(), what, training)
}

/// [`ensure_clip_fits`] for `frames` frames of `w × h` (what one UNet call sees).
pub fn ensure_frames_fit(sd: &StableDiffusion, frames: i64, w: i64, h: i64, what: &str, training: bool) -> Result<()> {
    let f = sd.vae_scale_factor();
    let c0 = sd.unet.model.config.block_out_channels[0];
    let per_value = if training { 4.0 * 24.0 } else { 4.0 * 4.0 };
    let bytes = crate::memory::bytes_of(&[frames, c0, w / f, h / f], per_value);
    crate::memory::ensure_fits(&format!("{what} {frames} frames at {w}x{h}"), bytes, sd.device)
}

/// Frames encoded per VAE call.
pub const VAE_CHUNK: i64 = 8;

/// The VAE posterior of every frame of `video` (`[F, latent, h, w]` mean and log-variance), encoded in
/// chunks of [`VAE_CHUNK`] frames.
pub fn encode_video(sd: &StableDiffusion, video: &Video) -> Result<LatentDist> {
    video.check_model_size()?;
    let vae = &sd.vae.model;
    let frames = video.frames().to_device(sd.device).to_kind(vae.kind());
    let mut means = vec![];
    let mut logvars = vec![];
    for chunk in frames.split(VAE_CHUNK, 0) {
        let d = tch::no_grad(|| vae.encode(&chunk))?;
        means.push(d.mean);
        logvars.push(d.logvar);
    }
    Ok(LatentDist { mean: Tensor::cat(&means, 0), logvar: Tensor::cat(&logvars, 0) })
}

/// `[F, C, h, w]` → `[1, C, F, h, w]`.
pub fn to_video_latents(x: &Tensor) -> Tensor {
    x.permute([1, 0, 2, 3]).unsqueeze(0)
}

/// Decodes video latents `[1, C, F, h, w]` to a clip at `fps`, [`VAE_CHUNK`] frames at a time.
pub fn decode_video(sd: &StableDiffusion, latents: &Tensor, fps: f64) -> Result<Video> {
    crate::error::ensure_finite(
        "the latents to decode (from the model's weights or the given latents: check both for NaN)",
        latents,
    )?;
    let frames = latents.squeeze_dim(0).permute([1, 0, 2, 3]);
    let mut out = vec![];
    for chunk in frames.split(VAE_CHUNK, 0) {
        out.push(t2i::decode_latents(sd, &chunk)?);
    }
    Video::new(Tensor::cat(&out, 0).to_kind(Kind::Float), fps)
}
