//! DDIM inversion of a clip (Tune-A-Video `ddim_inversion`): the clip's latents walked up the noise
//! schedule with the null prompt (or a source prompt) and no guidance; the result is the starting noise
//! of edits that keep the clip's structure. Models with mask modules invert under the clip's masks. The
//! trajectory is kept: `sample(…, #{keep_background: true})` puts the background back from it at every
//! step, and `strength` starts an edit part-way up it. With `windows`, a long clip is inverted window by
//! window, the windows' predictions merged per frame at every step (co-denoising walking upwards).

use super::codenoise::{WindowOptions, Windowed};
use super::denoise::{denoise, DenoiseSpec, NoHooks, Walk};
use super::{encode_video, to_video_latents, Loop};
use crate::error::{Error, Result};
use crate::masks::Masks;
use crate::media::Video;
use crate::video::{Conditioning, VideoModel};
use std::rc::Rc;
use tch::Tensor;

#[derive(Debug, Clone)]
pub struct InvertOptions {
    pub steps: i64,
    /// The prompt of inversion; empty is Tune-A-Video's null-text inversion.
    pub prompt: String,
    /// The subject's masks: the conditioning of mask modules, and the reason to keep the trajectory.
    pub masks: Option<Masks>,
    /// Co-denoised inversion of a long clip: the windows' predictions merged per frame at every step.
    pub windows: Option<WindowOptions>,
}

impl Default for InvertOptions {
    fn default() -> Self {
        InvertOptions { steps: 50, prompt: String::new(), masks: None, windows: None }
    }
}

impl InvertOptions {
    /// `steps` inversion steps with the null prompt.
    pub fn steps(steps: i64) -> Self {
        InvertOptions { steps, ..Default::default() }
    }
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

/// Inverts `clip` with `model`.
pub fn invert(model: &VideoModel, clip: &Video, opts: &InvertOptions) -> Result<Latents> {
    super::tune::check_range("steps", opts.steps as f64, 1.0, 100_000.0, "an integer")?;
    if let Some(m) = &opts.masks {
        check_masks(m, clip, "invert")?;
    }
    if let Some(w) = &opts.windows {
        w.validate()?;
    }
    let base = &model.base;
    let frames = opts.windows.as_ref().map_or(clip.len() as i64, |w| (w.window * w.batch).min(clip.len() as i64));
    super::ensure_frames_fit(base, frames, clip.width(), clip.height(), "inverting", false)?;
    let dist = encode_video(base, clip)?;
    let source = to_video_latents(&(dist.mean * base.vae.model.scaling_factor())).to_kind(model.kind());
    let cond =
        Conditioning::text(&base.encode_prompt(&opts.prompt)?).with_masks(opts.masks.as_ref().map(|m| m.tensor()));
    let spec = DenoiseSpec {
        label: "invert".into(),
        steps: opts.steps,
        walk: Walk::Up,
        guidance: 1.0,
        uncond: None,
        eta: 0.0,
        record: true,
        skip: 0,
        until: None,
        units: 1,
        counter: Loop::Invert,
    };
    let out = match &opts.windows {
        None => denoise(model, source.shallow_clone(), &cond, &spec, None, &mut NoHooks)?,
        Some(w) => {
            let units = w.plan(source.size()[2])?.len() as u64;
            let windowed = Windowed::new(model, w.clone(), None)?;
            let spec = DenoiseSpec { units, ..spec };
            denoise(&windowed, source.shallow_clone(), &cond, &spec, None, &mut NoHooks)?
        }
    };
    crate::error::ensure_finite("the inverted latents (check the model's weights for NaN)", &out.latents)?;
    Ok(Latents {
        latents: out.latents,
        source,
        trajectory: (!out.trajectory.is_empty()).then(|| Rc::new(out.trajectory)),
        clip: Some(clip.clone()),
        steps: opts.steps,
        prompt: opts.prompt.clone(),
        fps: clip.fps(),
    })
}
