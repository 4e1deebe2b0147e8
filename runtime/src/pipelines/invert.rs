//! DDIM inversion of a clip (Tune-A-Video `ddim_inversion`): the clip's latents walked up the noise
//! schedule with the null prompt (or a source prompt) and no guidance; the result is the starting noise
//! of edits that keep the clip's structure. Models with mask modules invert under the clip's masks. The
//! trajectory is kept: `sample(…, #{keep_background: true})` puts the background back from it at every
//! step, and `strength` starts an edit part-way up it. With `windows`, a long clip is inverted window by
//! window, the windows' predictions merged per frame at every step (co-denoising walking upwards).

use super::codenoise::{WindowOptions, Windowed};
use super::common::{check_masks, encode_video, ensure_frames_fit, to_video_latents};
use super::denoise::{denoise, DenoiseSpec, NoHooks};
use super::null_text::NullTextOptions;
use super::store::{level_sides, store_bytes, Recorder, StoreOptions};
use super::Loop;
use crate::error::Result;
use crate::masks::Masks;
use crate::media::Video;
use crate::options::INVERT_STEPS;
use crate::video::{Conditioning, VideoModel};
use std::rc::Rc;

pub use super::common::Latents;

#[derive(Debug, Clone)]
pub struct InvertOptions {
    pub steps: i64,
    /// The prompt of inversion; empty is Tune-A-Video's null-text inversion.
    pub prompt: String,
    /// The subject's masks: the conditioning of mask modules, and the reason to keep the trajectory.
    pub masks: Option<Masks>,
    /// Co-denoised inversion of a long clip: the windows' predictions merged per frame at every step.
    pub windows: Option<WindowOptions>,
    /// Null-text inversion after the DDIM inversion: per-step null embeddings that let guided sampling
    /// retrace the clip ([`super::null_text`]).
    pub null_text: Option<NullTextOptions>,
    /// Keep the attention maps of the inversion's UNet calls for fusion ([`super::fusion`]).
    pub store: Option<StoreOptions>,
}

impl Default for InvertOptions {
    fn default() -> Self {
        InvertOptions {
            steps: INVERT_STEPS.integer(),
            prompt: String::new(),
            masks: None,
            windows: None,
            null_text: None,
            store: None,
        }
    }
}

impl InvertOptions {
    /// `steps` inversion steps with the null prompt.
    pub fn steps(steps: i64) -> Self {
        InvertOptions { steps, ..Default::default() }
    }
}

/// Inverts `clip` with `model`.
pub fn invert(model: &VideoModel, clip: &Video, opts: &InvertOptions) -> Result<Latents> {
    INVERT_STEPS.check(opts.steps as f64)?;
    if let Some(m) = &opts.masks {
        check_masks(m, clip, "invert")?;
    }
    if let Some(w) = &opts.windows {
        w.validate()?;
        if opts.null_text.is_some() {
            return Err(crate::error::Error::Invalid(
                "invert: null_text optimises the whole clip's steps; it does not take windows".into(),
            ));
        }
        if opts.store.is_some() {
            return Err(crate::error::Error::Invalid(
                "invert: store keeps the maps of whole-clip calls; it does not take windows".into(),
            ));
        }
    }
    let base = &model.base;
    let frames = opts.windows.as_ref().map_or(clip.len() as i64, |w| (w.window * w.batch).min(clip.len() as i64));
    ensure_frames_fit(base, frames, clip.width(), clip.height(), "inverting", false)?;
    let f = base.vae_scale_factor();
    let (lh, lw) = (clip.height() / f, clip.width() / f);
    if let Some(s) = &opts.store {
        let bytes = store_bytes(model, clip.len() as i64, lh, lw, opts.steps, s)?;
        let what = format!("invert store: the attention maps of {} frames over {} steps", clip.len(), opts.steps);
        match s.disk {
            true => crate::memory::ensure_disk_fits(&what, bytes, &super::store::stores_dir())?,
            false => crate::memory::ensure_fits(&what, bytes, tch::Device::Cpu)?,
        }
    }
    let dist = encode_video(base, clip)?;
    let source = to_video_latents(&(dist.mean * base.vae.model.scaling_factor())).to_kind(model.kind());
    let cond =
        Conditioning::text(&base.encode_prompt(&opts.prompt)?).with_masks(opts.masks.as_ref().map(|m| m.tensor()));
    let spec = DenoiseSpec::up("invert", opts.steps, Loop::Invert);
    let (lh, lw) = (source.size()[3], source.size()[4]);
    let recorder = match &opts.store {
        Some(s) => {
            let sides: Vec<i64> = level_sides(model, lh, lw).iter().map(|s| s.0).collect();
            Some(Rc::new(Recorder::new(s.clone(), s.sides(&sides)?)?))
        }
        None => None,
    };
    let out = match &opts.windows {
        None => {
            let mut recording = cond.clone();
            recording.maps = recorder.clone().map(|r| r as Rc<dyn crate::video::conditioning::MapsLoop>);
            denoise(model, source.shallow_clone(), &recording, &spec, None, &mut NoHooks)?
        }
        Some(w) => {
            let units = w.plan(source.size()[2])?.len() as u64;
            let windowed = Windowed::new(model, w.clone(), None)?;
            let spec = spec.units(units);
            denoise(&windowed, source.shallow_clone(), &cond, &spec, None, &mut NoHooks)?
        }
    };
    crate::error::ensure_finite("the inverted latents (check the model's weights for NaN)", &out.latents)?;
    let mut inverted = Latents {
        latents: out.latents,
        source,
        trajectory: (!out.trajectory.is_empty()).then(|| Rc::new(out.trajectory)),
        clip: Some(clip.clone()),
        steps: opts.steps,
        prompt: opts.prompt.clone(),
        fps: clip.fps(),
        null_text: None,
        store: recorder.map(|r| r.finish((lh, lw))).transpose()?.map(Rc::new),
    };
    if let Some(nt) = &opts.null_text {
        let null = base.encode_prompt("")?;
        inverted.null_text = Some(Rc::new(super::null_text::optimise(model, &inverted, &cond, &null, nt)?));
    }
    Ok(inverted)
}
