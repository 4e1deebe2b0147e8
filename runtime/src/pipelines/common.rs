//! What the pipelines share: range and mask checks, the `Latents` an inversion yields, memory checks
//! before a clip enters the UNet, and the VAE's way in and out of latent space.

use crate::error::{Error, Result};
use crate::masks::Masks;
use crate::media::Video;
use crate::models::autoencoder_kl::LatentDist;
pub use crate::options::check_range;
use crate::options::{ETA, GUIDANCE, SAMPLE_STEPS};
use crate::sd::StableDiffusion;
use crate::video::VideoModel;
use std::rc::Rc;
use tch::{Kind, Tensor};

/// The checks `t2i`, `sample` and `invert` share: steps (the scheduler checks its own upper bound),
/// guidance, eta, and a negative prompt that only guidance reads.
pub fn check_denoise_options(steps: i64, guidance: f64, eta: f64, negative: &str) -> Result<()> {
    SAMPLE_STEPS.check(steps as f64)?;
    GUIDANCE.check(guidance)?;
    ETA.check(eta)?;
    if !negative.is_empty() && guidance <= 1.0 {
        return Err(Error::Invalid(format!(
            "negative would be ignored: guidance {guidance} turns classifier-free guidance off (it needs guidance > 1)"
        )));
    }
    Ok(())
}

/// Inverted latents of a clip.
#[derive(Debug)]
pub struct Latents {
    /// `[1, 4, F, h, w]`: the top of the trajectory, the starting noise of an edit.
    pub latents: Tensor,
    /// The clip's clean latents `[1, 4, F, h, w]` (the bottom of the trajectory).
    pub source: Tensor,
    /// Every level walked, ascending — `trajectory[0]` clean, `trajectory[k]` after step `k` (latents
    /// loaded from elsewhere may lack it).
    pub trajectory: Option<Rc<Vec<Tensor>>>,
    /// The clip that was inverted (its pixels are the background `keep_background` restores).
    pub clip: Option<Video>,
    pub steps: i64,
    pub prompt: String,
    pub fps: f64,
    /// Null-text inversion's per-step unconditional embeddings (`invert(…, #{null_text})`): sampling
    /// uses them in place of the negative prompt's.
    pub null_text: Option<std::rc::Rc<super::null_text::NullText>>,
    /// The attention maps the inversion kept (`invert(…, #{store})`), which `sample`'s fusion reads.
    pub store: Option<std::rc::Rc<super::store::AttentionStore>>,
}

impl Clone for Latents {
    fn clone(&self) -> Self {
        Latents {
            latents: self.latents.shallow_clone(),
            source: self.source.shallow_clone(),
            trajectory: self.trajectory.clone(),
            clip: self.clip.clone(),
            steps: self.steps,
            prompt: self.prompt.clone(),
            fps: self.fps,
            null_text: self.null_text.clone(),
            store: self.store.clone(),
        }
    }
}

impl Latents {
    /// Frames of the clip.
    pub fn frames(&self) -> i64 {
        self.latents.size()[2]
    }

    /// Starting latents given as a tensor `[1, C, F, h, w]` (inverted by another tool, read with
    /// `load_tensors`), checked against `model`: its latent channels, and a size its VAE decodes. They
    /// carry no trajectory and no clean source (`steps` is 0), so what follows an inversion
    /// (`keep_background`, `strength`, first frame `"source"`) is refused with them.
    pub fn given(model: &VideoModel, latents: &Tensor, fps: f64) -> Result<Latents> {
        let s = latents.size();
        let channels = model.base.unet.model.config.in_channels;
        let f = model.base.vae_scale_factor();
        let expected = format!(
            "a tensor [1, {channels}, F, h, w] (this model's {channels} latent channels; h and w are the frame size / {f})"
        );
        if s.len() != 5 || s[0] != 1 || s[1] != channels || s[2..].iter().any(|&d| d < 1) {
            return Err(Error::Invalid(format!("latents must be {expected}, got {s:?}")));
        }
        if !latents.is_floating_point() {
            return Err(Error::Invalid(format!("latents must be floating-point, got {:?}", latents.kind())));
        }
        crate::media::video::check_model_size(s[4] * f, s[3] * f)?;
        crate::error::ensure_finite("the latents", latents)?;
        let peak = latents.abs().max().to_kind(tch::Kind::Double).double_value(&[]);
        if peak > LATENT_MAX_ABS {
            return Err(Error::Invalid(format!(
                "the latents reach {peak:e}; latents from an inversion or from noise stay within ±{LATENT_MAX_ABS} \
                 (these would overflow in sampling)"
            )));
        }
        let x = latents.detach().to_device(model.base.device).to_kind(model.kind());
        Ok(Latents {
            latents: x.shallow_clone(),
            source: x,
            trajectory: None,
            clip: None,
            steps: 0,
            prompt: String::new(),
            fps,
            null_text: None,
            store: None,
        })
    }
}

impl std::fmt::Display for Latents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.latents.size();
        write!(f, "Latents({} frames, {}x{} latent, {} inversion steps)", s[2], s[4], s[3], self.steps)
    }
}

/// The largest magnitude given latents may have: noise is N(0, 1) and inverted latents stay within a few
/// units; far beyond, sampling overflows to NaN.
pub const LATENT_MAX_ABS: f64 = 1e4;

/// Checks that masks fit the clip they condition.
pub fn check_masks(masks: &Masks, clip: &Video, what: &str) -> Result<()> {
    masks.check_matches(clip).map_err(|e| Error::Invalid(format!("{what}: {e}")))
}

/// Decodes latents `[B, 4, h, w]` to images in [−1, 1] (CPU, f32).
pub fn decode_latents(sd: &StableDiffusion, latents: &Tensor) -> Result<Tensor> {
    let vae = &sd.vae.model;
    let z = (latents / vae.scaling_factor()).to_kind(vae.kind()).to_device(vae.device());
    let x = tch::no_grad(|| vae.decode(&z))?;
    Ok(x.to_kind(tch::Kind::Float).to_device(tch::Device::Cpu).clamp(-1.0, 1.0))
}

/// Refuses tuning (`training`) or inverting `video` when a lower bound of the UNet's activations over all
/// its frames exceeds the memory available.
pub fn ensure_clip_fits(sd: &StableDiffusion, video: &Video, what: &str, training: bool) -> Result<()> {
    ensure_frames_fit(sd, video.len() as i64, video.width(), video.height(), what, training)
}

/// [`ensure_clip_fits`] for `frames` frames of `w × h` (what one UNet call sees).
pub fn ensure_frames_fit(sd: &StableDiffusion, frames: i64, w: i64, h: i64, what: &str, training: bool) -> Result<()> {
    ensure_frames_fit_with(sd, frames, w, h, what, training, &[])
}

/// [`ensure_frames_fit`] with `controls` running beside the UNet ([`crate::control::memory_factor`]).
pub fn ensure_frames_fit_with(
    sd: &StableDiffusion,
    frames: i64,
    w: i64,
    h: i64,
    what: &str,
    training: bool,
    controls: &[crate::control::Control],
) -> Result<()> {
    let f = sd.vae_scale_factor();
    let c0 = sd.unet.model.config.block_out_channels[0];
    let per_value = if training { 4.0 * 24.0 } else { 4.0 * 4.0 } * crate::control::memory_factor(controls);
    let bytes = crate::memory::bytes_of(&[frames, c0, w / f, h / f], per_value);
    crate::memory::ensure_fits(&format!("{what} {frames} frames at {w}x{h}"), bytes, sd.device)
}

/// The most frames encoded or decoded per VAE call.
pub const VAE_CHUNK: i64 = 8;

/// Frames per VAE call for frames of `height` × `width` pixels: as many as keep the VAE's largest
/// activation — its second level's channels at full resolution, in the decoder's last upsampling — within
/// the allocator's 32 MiB threshold (`memory::tune_allocator`), from 1 to [`VAE_CHUNK`]. Larger buffers
/// are mapped fresh from the kernel at every call and given back after it; on SD1.4's VAE at 128² eight
/// frames a call made sampling's memory peak 320 MB higher than tuning's, and one frame a call took the
/// same time. On CUDA the same rule keeps the decoder's peak memory to a frame or two. Small VAEs (the toy
/// one) still take eight.
pub fn vae_chunk(sd: &StableDiffusion, height: i64, width: i64) -> i64 {
    let vae = &sd.vae.model;
    frames_per_vae_call(&vae.config.block_out_channels, vae.kind().elt_size_in_bytes(), height, width)
}

/// [`vae_chunk`] for a VAE of `channels` (its `block_out_channels`) in values of `bytes` bytes.
fn frames_per_vae_call(channels: &[i64], bytes: usize, height: i64, width: i64) -> i64 {
    let widest = channels.iter().take(2).copied().max().unwrap_or(1);
    let frame = crate::memory::bytes_of(&[widest, height, width], bytes as f64);
    ((crate::memory::MMAP_THRESHOLD as f64 / frame.max(1.0)).floor() as i64).clamp(1, VAE_CHUNK)
}

/// The VAE posterior of every frame of `video` (`[F, latent, h, w]` mean and log-variance), encoded in
/// chunks of [`vae_chunk`] frames — once per clip and model: the model keeps the last clips' posteriors
/// by content, so an inversion after a tune of the same clip reads the tune's.
pub fn encode_video(sd: &StableDiffusion, video: &Video) -> Result<LatentDist> {
    video.check_model_size()?;
    let key = crate::cache::KeyBuilder::new("vae-posterior").text(&sd.memo_identity()).tensor(video.frames()).finish();
    sd.encoded(key, || {
        let vae = &sd.vae.model;
        let frames = video.frames().to_device(sd.device).to_kind(vae.kind());
        let size = frames.size();
        let mut means = vec![];
        let mut logvars = vec![];
        for chunk in frames.split(vae_chunk(sd, size[2], size[3]), 0) {
            let d = tch::no_grad(|| vae.encode(&chunk))?;
            means.push(d.mean);
            logvars.push(d.logvar);
        }
        Ok(LatentDist { mean: Tensor::cat(&means, 0), logvar: Tensor::cat(&logvars, 0) })
    })
}

/// `[F, C, h, w]` → `[1, C, F, h, w]`.
pub fn to_video_latents(x: &Tensor) -> Tensor {
    x.permute([1, 0, 2, 3]).unsqueeze(0)
}

/// Decodes video latents `[1, C, F, h, w]` to a clip at `fps`, [`vae_chunk`] frames at a time.
pub fn decode_video(sd: &StableDiffusion, latents: &Tensor, fps: f64) -> Result<Video> {
    crate::error::ensure_finite(
        "the latents to decode (from the model's weights or the given latents: check both for NaN)",
        latents,
    )?;
    let frames = latents.squeeze_dim(0).permute([1, 0, 2, 3]);
    let (f, size) = (sd.vae_scale_factor(), frames.size());
    let mut out = vec![];
    for chunk in frames.split(vae_chunk(sd, size[2] * f, size[3] * f), 0) {
        out.push(decode_latents(sd, &chunk)?);
    }
    Video::new(Tensor::cat(&out, 0).to_kind(Kind::Float), fps)
}

#[cfg(test)]
mod tests {
    use super::frames_per_vae_call;

    #[test]
    fn vae_calls_take_as_many_frames_as_keep_the_largest_buffer_under_the_allocators_threshold() {
        let sd = [128, 256, 512, 512];
        // SD's VAE in fp32: 256 channels at 128² are 16 MiB a frame, at 512² 256 MiB; at 64², 4 MiB.
        assert_eq!(frames_per_vae_call(&sd, 4, 128, 128), 2);
        assert_eq!(frames_per_vae_call(&sd, 4, 512, 512), 1);
        assert_eq!(frames_per_vae_call(&sd, 2, 128, 128), 4);
        assert_eq!(frames_per_vae_call(&sd, 4, 64, 64), 8);
        // A small VAE takes the most, a one-level one its only level.
        assert_eq!(frames_per_vae_call(&[32, 64], 4, 64, 64), 8);
        assert_eq!(frames_per_vae_call(&[64], 4, 256, 256), 2);
    }
}
