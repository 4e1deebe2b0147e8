//! Sampling a clip: DDIM with classifier-free guidance from inverted latents (an edit) or from seeded
//! noise, through the shared loop of [`super::denoise`], then the VAE decode in chunks of frames.
//!
//! With the subject's masks, three things can steer it:
//! - the model's mask modules (`mca`, `masked` cross-attention) read the masks every step, and mask
//!   cross-attention the `subject`'s tokens;
//! - `keep_background`: after every step, outside the masks (dilated by `feather` latent pixels) the
//!   latents are replaced by the inversion's latents at the same noise level — blended latent diffusion's
//!   rule — and the decoded frames take the clip's own pixels there, so the background ends as the clip's
//!   own, VAE reconstruction error included;
//! - `first_frame` (LAMP, dynamic mask guidance Eq. 4): frame 0 is held clean at a given latent — the
//!   clip's own (`source`), an image, or the edit of frame 0 made first on its own (`edit`) — and only
//!   frames 1.. are denoised; `shared_noise: α` mixes its latent into the other frames' starting noise,
//!   `noise[f] = α·z₀ + (1 − α)·noise[f]` (Eq. 8; `variance_preserving` divides by `√(α² + (1 − α)²)`);
//!   with masks, `shared_noise_follow` and `subject_guide` carry frame 0 along them ([`super::first_frame`]).

use super::codenoise::{window_texts, PromptSchedule, WindowOptions, Windowed};
use super::common::{check_denoise_options, decode_video, encode_video, to_video_latents, Latents};
use super::denoise::{denoise, DenoiseSpec, StepHooks};
use super::first_frame::{carry_along, hold_first, share_noise, share_noise_following, GuideSubject, HoldFirstFrame};
use super::fusion::{Fusion, FusionOptions};
use super::reweight::{parse_weights, token_weights, Reweight};
use super::Loop;
use crate::control::{check_control_fits, Control};
use crate::error::{Error, Result};
use crate::masks::Masks;
use crate::media::{check_model_size, Image, Video};
use crate::options::{
    ETA, FEATHER, FPS, FRAMES, GUIDANCE, NEGATIVE, RENOISE, SAMPLE_STEPS, SHARED_NOISE_ALPHA, STRENGTH,
};
use crate::rng::Noise;
use crate::video::conditioning::subject_token_positions;
use crate::video::conditioning::MapsLoop;
use crate::video::{Conditioning, VideoModel};
use std::rc::Rc;
use tch::{Kind, Tensor};
use vidtune_kernels::masks as kmasks;

/// Where frame 0 comes from under first-frame conditioning.
#[derive(Debug, Clone)]
pub enum FirstFrame {
    /// The clip's own first frame (from the latents' clean source).
    Source,
    /// Frame 0 sampled first on its own with the same prompt and options, then held.
    Edit,
    /// A given image (resized to the clip's size).
    Image(Image),
}

#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub steps: i64,
    pub guidance: f64,
    pub seed: Option<u64>,
    pub negative: String,
    pub eta: f64,
    /// Without latents: frames and size of the clip (default: one frame per mask when masks are given, else 8,
    /// at the model's size).
    pub frames: Option<i64>,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub fps: Option<f64>,
    /// The subject's masks, one per frame of the clip.
    pub masks: Option<Masks>,
    /// Words of the prompt that name the subject (for mask cross-attention).
    pub subject: Option<String>,
    /// Put the background back from the inversion's trajectory at every step.
    pub keep_background: bool,
    /// How far (latent pixels) the edited region reaches beyond the masks under `keep_background`.
    pub feather: i64,
    pub first_frame: Option<FirstFrame>,
    /// α of first-frame shared noise.
    pub shared_noise: Option<f64>,
    /// From inverted latents: how much of the schedule to run, from the top (1, the default) down to
    /// `strength` of it — the edit starts from the inversion's latents at that noise level (img2img's
    /// `strength`): lower keeps more of the clip.
    pub strength: f64,
    /// Shared noise with unit variance kept.
    pub variance_preserving: bool,
    /// Shared noise carries the first frame's subject along the masks ([`share_noise_following`]).
    pub shared_noise_follow: bool,
    /// For this share of the steps (from the top), inside the masks the latents are the first frame's
    /// carried along them, at the step's noise level (0: off).
    pub subject_guide: f64,
    /// Inside the masks, replace this share of the starting latents by fresh noise (variance kept), so the
    /// subject is drawn anew where the clip's own was (blended latent diffusion's inpainting start).
    pub renoise: f64,
    /// Co-denoise the clip in overlapping windows (long clips): memory follows the window.
    pub windows: Option<WindowOptions>,
    /// Stop after this many steps of the schedule and return the latents there (average fusion).
    pub until: Option<i64>,
    /// ControlNets and their images (one, or one per frame of the clip); windows get their frames.
    pub controls: Vec<Control>,
    /// Attention fusion with the maps the inversion stored ([`super::fusion`]).
    pub fusion: Option<FusionOptions>,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            steps: SAMPLE_STEPS.integer(),
            guidance: GUIDANCE.number(),
            seed: None,
            negative: NEGATIVE.text().into(),
            eta: ETA.number(),
            frames: None,
            width: None,
            height: None,
            fps: None,
            masks: None,
            subject: None,
            keep_background: false,
            feather: FEATHER.integer(),
            first_frame: None,
            shared_noise: None,
            variance_preserving: false,
            shared_noise_follow: false,
            subject_guide: 0.0,
            strength: STRENGTH.number(),
            renoise: RENOISE.number(),
            windows: None,
            until: None,
            controls: vec![],
            fusion: None,
        }
    }
}

/// The frame rate of a clip sampled without latents or `fps`.
pub const DEFAULT_FPS: f64 = 8.0;

pub use crate::options::MAX_FRAMES;

/// The shared-noise ratio of dynamic mask guidance's best results.
pub const SHARED_NOISE: f64 = 0.2;

impl SampleOptions {
    /// The frame rate of the result: `fps`, else the inverted clip's, else [`DEFAULT_FPS`].
    pub fn fps_with(&self, latents: Option<&Latents>) -> f64 {
        self.fps.or(latents.map(|l| l.fps)).unwrap_or(DEFAULT_FPS)
    }

    /// Refuses out-of-range values and options the call would ignore (`latents`: the inversion this call
    /// starts from, which fixes the frames and size).
    pub fn validate(&self, latents: Option<&Latents>) -> Result<()> {
        check_denoise_options(self.steps, self.guidance, self.eta, &self.negative)?;
        if latents.is_some() {
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
            FRAMES.check(f as f64)?;
        }
        if let Some(fps) = self.fps {
            FPS.check(fps)?;
        }
        FEATHER.check(self.feather as f64)?;
        if let Some(a) = self.shared_noise {
            SHARED_NOISE_ALPHA.check(a)?;
            if self.first_frame.is_none() {
                return Err(Error::Invalid(
                    "shared_noise would be ignored: it mixes the first frame's latent into the other frames' noise, so \
                     it needs first_frame (\"source\", \"edit\" or an Image)"
                        .into(),
                ));
            }
        }
        if self.shared_noise_follow && (self.shared_noise.is_none() || self.masks.is_none()) {
            return Err(Error::Invalid(
                "shared_noise_follow would be ignored: it carries the shared first frame's subject along the masks, so \
                 it needs shared_noise and masks"
                    .into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.subject_guide) {
            return Err(Error::Invalid(format!(
                "subject_guide must be a share of the steps in [0, 1], got {}",
                self.subject_guide
            )));
        }
        if self.subject_guide > 0.0 && (self.first_frame.is_none() || self.masks.is_none()) {
            return Err(Error::Invalid(
                "subject_guide would be ignored: it carries the first frame's subject along the masks, so it needs \
                 first_frame and masks"
                    .into(),
            ));
        }
        if self.variance_preserving && self.shared_noise.is_none() {
            return Err(Error::Invalid("variance_preserving would be ignored without shared_noise".into()));
        }
        if self.subject.is_some() && self.masks.is_none() {
            return Err(Error::Invalid(
                "subject would be ignored: it names the words that mask cross-attention ties to the masks; give masks too"
                    .into(),
            ));
        }
        STRENGTH.check(self.strength)?;
        RENOISE.check(self.renoise)?;
        if self.renoise > 0.0 && (self.masks.is_none() || latents.is_none()) {
            return Err(Error::Invalid(
                "renoise would be ignored: it redraws the inverted latents inside the masks, so it needs latents and masks"
                    .into(),
            ));
        }
        let follows = [("keep_background", self.keep_background), ("strength", self.strength < 1.0)];
        for (name, _) in follows.iter().filter(|(_, on)| *on) {
            let Some(l) = latents else {
                return Err(Error::Invalid(format!(
                    "{name} follows an inversion's trajectory: pass latents from invert"
                )));
            };
            if l.trajectory.is_none() {
                return Err(Error::Invalid(format!(
                    "{name} needs the inversion's trajectory, which these latents lack (they were not made by invert)"
                )));
            }
            if l.steps != self.steps {
                return Err(Error::Invalid(format!(
                    "{name} follows the inversion's {} steps: sample with steps: {} too (got {})",
                    l.steps, l.steps, self.steps
                )));
            }
        }
        if let Some(f) = &self.fusion {
            f.validate()?;
            if f.source_branch && latents.is_none() {
                return Err(Error::Invalid(
                    "fusion edits an inversion: pass latents from invert(…) (the source branch starts from them)"
                        .into(),
                ));
            }
            if !f.source_branch {
                let store = latents.and_then(|l| l.store.as_ref()).ok_or_else(|| {
                    Error::Invalid(
                        "fusion reads the attention maps of the inversion: pass latents from invert(…, #{store: true}), \
                         or run the source branch (source_branch: true)"
                            .into(),
                    )
                })?;
                if store.len() as i64 != self.steps {
                    return Err(Error::Invalid(format!(
                        "fusion reads the inversion's maps step by step: sample with steps: {} (got {})",
                        store.len(),
                        self.steps
                    )));
                }
                if f.local_blend.is_some() && latents.is_some_and(|l| l.trajectory.is_none()) {
                    return Err(Error::Invalid(
                        "fusion local_blend blends towards the inversion's trajectory, which these latents lack; run \
                         the source branch (source_branch: true)"
                            .into(),
                    ));
                }
            }
            if self.windows.is_some() {
                return Err(Error::Invalid("fusion runs on whole clips; it does not take windows".into()));
            }
            if matches!(self.first_frame, Some(FirstFrame::Edit)) {
                return Err(Error::Invalid(
                    "fusion with first_frame \"edit\": frame 0 alone has no stored maps; use \"source\" or an Image"
                        .into(),
                ));
            }
        }
        if self.keep_background && self.masks.is_none() {
            return Err(Error::Invalid("keep_background needs the subject's masks: pass #{masks: …}".into()));
        }
        match (&self.first_frame, latents) {
            (Some(FirstFrame::Source), Some(l)) if l.steps == 0 => Err(Error::Invalid(
                "first_frame \"source\" is the clip's clean first frame, which latents given as a tensor lack: use \
                 latents from invert, \"edit\" or an Image"
                    .into(),
            )),
            (Some(FirstFrame::Source | FirstFrame::Edit), None) => Err(Error::Invalid(
                "first_frame \"source\" and \"edit\" come from inverted latents: pass latents, or an Image as the first \
                 frame"
                    .into(),
            )),
            _ => Ok(()),
        }
    }
}

/// Refuses a clip whose latents, decoded frames and first-layer activations alone exceed the memory.
/// With windows, the activations are those of the frames one UNet call sees.
fn ensure_sample_fits(model: &VideoModel, frames: i64, opts: &SampleOptions, w: i64, h: i64) -> Result<()> {
    let f = model.base.vae_scale_factor();
    let c0 = model.base.unet.model.config.block_out_channels[0];
    let active = opts.windows.as_ref().map_or(frames, |o| (o.window * o.batch).min(frames));
    let per_value = 4.0 * 4.0 * crate::control::memory_factor(&opts.controls);
    let bytes = crate::memory::bytes_of(&[frames, 3, w, h], 4.0)
        + crate::memory::bytes_of(&[active, 2 * c0, w / f, h / f], per_value);
    crate::memory::ensure_fits(&format!("sampling {frames} frames at {w}x{h}"), bytes, model.base.device)
}

/// Replaces the latents outside the subject by the inversion's latents of the same noise level.
struct KeepBackground {
    trajectory: Rc<Vec<Tensor>>,
    /// 1 where the edit may change the latents (the dilated masks), `[1, 1, F, h, w]`.
    edit: Tensor,
}

/// Prompt-to-prompt's local blend ([`super::fusion::LocalBlend`]): from step `start` on, the edit's latents
/// are the source's outside the mask of the words' attention — the source branch's (the first clip of the
/// batch), or the inversion's at the same noise level.
struct LocalBlendHook {
    fusion: Rc<Fusion>,
    trajectory: Option<Rc<Vec<Tensor>>>,
    start: usize,
}

impl LocalBlendHook {
    fn blend(&self, step: usize, level: usize, x: &Tensor) -> Result<Option<Tensor>> {
        if step < self.start {
            return Ok(None);
        }
        let s = x.size();
        let Some(m) = self.fusion.local_mask((s[3], s[4]))? else { return Ok(None) };
        let m = m.view([1, 1, s[2], s[3], s[4]]).to_device(x.device()).to_kind(x.kind());
        Ok(Some(match &self.trajectory {
            Some(tr) => {
                let src = tr[level.min(tr.len() - 1)].to_device(x.device()).to_kind(x.kind());
                &src + &m * (x - &src)
            }
            None => {
                let (src, edit) = (x.narrow(0, 0, 1), x.narrow(0, 1, 1));
                let blended = &src + &m * (&edit - &src);
                Tensor::cat(&[src, blended], 0)
            }
        }))
    }
}

impl StepHooks for (Option<HoldFirstFrame>, Option<KeepBackground>, Option<LocalBlendHook>, Option<GuideSubject>) {
    fn before(&mut self, step: usize, t: i64, x: &mut Tensor) -> Result<()> {
        if let Some(guided) = self.3.as_ref().and_then(|g| g.apply(step, t, x)) {
            *x = guided;
        }
        if let Some(HoldFirstFrame(z)) = &self.0 {
            *x = hold_first(x, z);
        }
        Ok(())
    }

    fn after(&mut self, step: usize, level: usize, x: &mut Tensor, _x0: Option<&Tensor>) -> Result<()> {
        if let Some(blended) = self.2.as_ref().map(|l| l.blend(step, level, x)).transpose()?.flatten() {
            *x = blended;
        }
        if let Some(k) = &self.1 {
            let bg = &k.trajectory[level.min(k.trajectory.len() - 1)];
            *x = &*x * &k.edit + bg * (k.edit.ones_like() - &k.edit);
        }
        if let Some(HoldFirstFrame(z)) = &self.0 {
            *x = hold_first(x, z);
        }
        Ok(())
    }
}

/// The region the edit may change under `keep_background`: the masks at latent resolution, any
/// coverage counted, dilated by `feather`; `[1, 1, F, h, w]`.
pub fn edit_region(masks: &Masks, h: i64, w: i64, feather: i64) -> Result<Tensor> {
    let m = kmasks::resize(masks.tensor(), h, w)?.gt(1e-3).to_kind(Kind::Float);
    let m = kmasks::dilate(&m, feather)?;
    Ok(to_video_latents(&m))
}

/// The latent `[1, C, 1, h, w]` of an image brought to `w × h`.
fn encode_image(model: &VideoModel, image: &Image, w: i64, h: i64) -> Result<Tensor> {
    let frame = image.tensor().unsqueeze(0);
    let clip = Video::new(frame, 8.0)?.resize(w, h, vidtune_kernels::image::Fit::Resize)?;
    let dist = encode_video(&model.base, &clip)?;
    Ok(to_video_latents(&(dist.mean * model.base.vae.model.scaling_factor())).to_kind(model.kind()))
}

/// Samples a clip for `prompt`; returns it with the seed used.
pub fn sample(
    model: &VideoModel,
    prompt: &str,
    latents: Option<&Latents>,
    opts: &SampleOptions,
) -> Result<(Video, u64)> {
    let (x, seed) = sample_latents(model, prompt, latents, opts)?;
    finish_sample(model, x, seed, latents, opts)
}

/// [`sample`] under a prompt schedule: one prompt, or several along a co-denoised clip (`opts.windows`).
pub fn sample_prompts(
    model: &VideoModel,
    prompts: &PromptSchedule,
    latents: Option<&Latents>,
    opts: &SampleOptions,
) -> Result<(Video, u64)> {
    let (x, seed) = sample_schedule_latents(model, prompts, latents, opts)?;
    finish_sample(model, x, seed, latents, opts)
}

/// The decode (and the background paste) of sampled latents.
pub(crate) fn finish_sample(
    model: &VideoModel,
    x: Tensor,
    seed: u64,
    latents: Option<&Latents>,
    opts: &SampleOptions,
) -> Result<(Video, u64)> {
    let fps = opts.fps_with(latents);
    let video = decode_video(&model.base, &x, fps)?;
    match (opts.keep_background, latents.and_then(|l| l.clip.as_ref()), &opts.masks) {
        (true, Some(clip), Some(m)) => Ok((paste_background(&video, clip, m, model, opts.feather)?, seed)),
        _ => Ok((video, seed)),
    }
}

/// Blended latent diffusion's last step: outside the region the edit could change (the masks' latent
/// pixels dilated by `feather`, softened by one latent pixel), the frames are the clip's own pixels, so the
/// VAE's reconstruction error does not touch the background.
fn paste_background(video: &Video, clip: &Video, masks: &Masks, model: &VideoModel, feather: i64) -> Result<Video> {
    if clip.frames().size() != video.frames().size() {
        return Ok(video.clone());
    }
    let f = model.base.vae_scale_factor();
    let (h, w) = (video.height(), video.width());
    let region = edit_region(masks, h / f, w / f, feather)?.squeeze_dim(0).permute([1, 0, 2, 3]);
    let region = region.upsample_nearest2d([h, w], None, None);
    let k = 2 * f + 1;
    let alpha = region.avg_pool2d([k, k], [1, 1], [f, f], false, false, None::<i64>).clamp(0.0, 1.0);
    let alpha = alpha.maximum(&region);
    Video::new(video.frames() * &alpha + clip.frames() * (alpha.ones_like() - &alpha), video.fps())
}

/// [`sample`] without the decode: the final latents `[1, C, F, h, w]` and the seed.
pub fn sample_latents(
    model: &VideoModel,
    prompt: &str,
    latents: Option<&Latents>,
    opts: &SampleOptions,
) -> Result<(Tensor, u64)> {
    sample_schedule_latents(model, &PromptSchedule::single(prompt), latents, opts)
}

/// Co-denoises a clip (Gen-L-Video): [`sample`] with the model run on overlapping windows whose
/// predictions are merged per frame every step, and prompts that may change along the clip. Without
/// `opts.windows` the windows are 16 frames, moved by 8.
pub fn co_denoise(
    model: &VideoModel,
    prompts: &PromptSchedule,
    latents: Option<&Latents>,
    opts: &SampleOptions,
) -> Result<(Video, u64)> {
    let mut o = opts.clone();
    o.windows = Some(opts.windows.clone().unwrap_or(WindowOptions::new(16)));
    sample_prompts(model, prompts, latents, &o)
}

/// [`sample_latents`] under a prompt schedule (several prompts need windows).
pub fn sample_schedule_latents(
    model: &VideoModel,
    prompts: &PromptSchedule,
    latents: Option<&Latents>,
    opts: &SampleOptions,
) -> Result<(Tensor, u64)> {
    opts.validate(latents)?;
    if let Some(w) = &opts.windows {
        w.validate()?;
    }
    if prompts.0.is_empty() {
        return Err(Error::Invalid("prompts: the list is empty; give at least one prompt".into()));
    }
    if !prompts.is_single() && opts.windows.is_none() {
        return Err(Error::Invalid("several prompts along a clip need windows (co_denoise)".into()));
    }
    let (plain, weighted) = parse_weights(prompts.first())?;
    if !prompts.is_single() {
        for p in &prompts.0 {
            if !parse_weights(&p.prompt)?.1.is_empty() {
                return Err(Error::Invalid(format!(
                    "prompt {:?}: word weights work with one prompt for the whole clip",
                    p.prompt
                )));
            }
        }
    }
    let prompt = plain.as_str();
    let base = &model.base;
    let kind = model.kind();
    let seed = opts.seed.unwrap_or_else(Noise::fresh_seed);
    let mut noise = Noise::new(seed);
    let run = ((opts.steps as f64 * opts.strength).round() as i64).clamp(1, opts.steps);
    let mut x = match latents {
        Some(l) => match (&l.trajectory, run < opts.steps) {
            (Some(tr), true) => tr[run as usize].to_device(base.device).to_kind(kind),
            _ => l.latents.to_device(base.device).to_kind(kind),
        },
        None => {
            let size = base.default_size();
            let (w, h) = (opts.width.unwrap_or(size), opts.height.unwrap_or(size));
            check_model_size(w, h)?;
            let f = base.vae_scale_factor();
            let frames = opts.frames.or(opts.masks.as_ref().map(|m| m.len() as i64)).unwrap_or(8);
            ensure_sample_fits(model, frames, opts, w, h)?;
            noise.randn(&[1, base.unet.model.config.in_channels, frames, h / f, w / f], kind, base.device)
        }
    };
    let (frames, lh, lw) = (x.size()[2], x.size()[3], x.size()[4]);
    // Where the source branch starts (the inversion's latents, before any renoising of the edit's).
    let start = x.shallow_clone();
    if let Some(m) = &opts.masks {
        if m.len() as i64 != frames {
            return Err(Error::Invalid(format!("masks: {} masks for a clip of {frames} frames", m.len())));
        }
    }
    let f = base.vae_scale_factor();
    let first = match &opts.first_frame {
        None => None,
        Some(FirstFrame::Source) => latents.map(|l| l.source.narrow(2, 0, 1).to_device(base.device)),
        Some(FirstFrame::Image(img)) => Some(encode_image(model, img, lw * f, lh * f)?),
        Some(FirstFrame::Edit) => {
            let l = latents.expect("validated: edit needs latents");
            Some(edit_first_frame(model, prompts.first(), l, opts)?)
        }
    };
    if let (true, Some(m)) = (opts.renoise > 0.0, &opts.masks) {
        let region = edit_region(m, lh, lw, opts.feather)?.to_device(base.device).to_kind(kind);
        let fresh = noise.randn(&[1, x.size()[1], 1, lh, lw], kind, base.device).expand_as(&x);
        let r = opts.renoise;
        let mixed = &x * (1.0 - r).sqrt() + fresh * r.sqrt();
        x = &mixed * &region + &x * (region.ones_like() - &region);
    }
    let guide = match (&first, &opts.masks, opts.subject_guide > 0.0) {
        (Some(z), Some(m), true) => Some(GuideSubject {
            carried: carry_along(&z.to_kind(x.kind()), m.tensor(), lh, lw)?,
            noise: x.shallow_clone(),
            schedule: base.scheduler.ddim()?.schedule,
            steps: (opts.subject_guide * opts.steps as f64).round() as usize,
        }),
        _ => None,
    };
    if let (Some(z), Some(alpha)) = (&first, opts.shared_noise) {
        x = match (&opts.masks, opts.shared_noise_follow) {
            (Some(m), true) => share_noise_following(&x, z, alpha, opts.variance_preserving, m.tensor())?,
            _ => share_noise(&x, z, alpha, opts.variance_preserving),
        };
    }
    for c in &opts.controls {
        c.check(frames, lh * f, lw * f)?;
        check_control_fits(base, c)?;
    }
    let mut cond = Conditioning::text(&base.encode_prompt(prompt)?)
        .with_masks(opts.masks.as_ref().map(|m| m.tensor()))
        .with_controls(opts.controls.clone());
    if let Some(subject) = &opts.subject {
        cond.subject_tokens = vec![subject_token_positions(&base.tokenizer, prompt, subject)?];
    }
    cond.first_frame = first.as_ref().map(Tensor::shallow_clone);
    let weights = match weighted.is_empty() {
        true => None,
        false => Some(token_weights(&base.tokenizer, prompt, &weighted)?),
    };
    // With the source branch (Video-P2P's decoupled guidance) the batch holds two clips, the source and
    // the edit: the source's text, and its unconditional text from null-text inversion when there is one.
    let mut branch: Option<Tensor> = None;
    let mut local = None;
    match (&opts.fusion, latents) {
        (Some(f), Some(l)) => {
            let store = if f.source_branch { None } else { l.store.clone() };
            let (source, masks) = (l.prompt.as_str(), opts.masks.as_ref());
            let levels = super::store::level_sides(model, lh, lw);
            let fusion = Rc::new(Fusion::new(&base.tokenizer, store, &levels, (source, prompt), f, masks, weights)?);
            if let Some(start) = fusion.local_blend_from(opts.steps as usize) {
                let trajectory = if fusion.runs_source() { None } else { l.trajectory.clone() };
                local = Some(LocalBlendHook { fusion: fusion.clone(), trajectory, start });
            }
            if fusion.runs_source() {
                branch = Some(base.encode_prompt(source)?);
            }
            cond.maps = Some(fusion);
        }
        _ => cond.maps = weights.map(|w| Rc::new(Reweight::new(w)) as Rc<dyn MapsLoop>),
    }
    if let Some(src) = &branch {
        cond.text = Tensor::cat(&[src, &cond.text], 0);
        cond.subject_tokens = [vec![vec![]], cond.subject_tokens.clone()].concat();
    }
    let keep = match (opts.keep_background, latents.and_then(|l| l.trajectory.clone()), &opts.masks) {
        (true, Some(trajectory), Some(m)) => {
            Some(KeepBackground { trajectory, edit: edit_region(m, lh, lw, opts.feather)?.to_device(base.device) })
        }
        _ => None,
    };
    let negative = base.encode_prompt(&opts.negative)?;
    let uncond = match &branch {
        Some(_) => Tensor::cat(&[&base.encode_prompt("")?, &negative], 0),
        None => negative.shallow_clone(),
    };
    let mut spec = DenoiseSpec::down("sample", opts.steps, Loop::Sample)
        .guided(opts.guidance, Some(uncond))
        .eta(opts.eta)
        .part((opts.steps - run) as usize, opts.until.map(|u| u as usize));
    // Null-text inversion's embeddings stand for the empty negative prompt, step by step: the edit's, or
    // with the source branch the source's (the edit keeps its own negative prompt).
    match (latents.and_then(|l| l.null_text.as_ref()), &branch) {
        (Some(nt), Some(_)) => {
            spec.uncond_steps = Some(Rc::new(nt.embeddings.iter().map(|e| Tensor::cat(&[e, &negative], 0)).collect()))
        }
        (Some(nt), None) if opts.negative.is_empty() => spec.uncond_steps = Some(nt.embeddings.clone()),
        _ => {}
    }
    if branch.is_some() {
        x = Tensor::cat(&[&start, &x], 0);
    }
    let mut hooks = (first.map(HoldFirstFrame), keep, local, guide);
    let out = match &opts.windows {
        None => denoise(model, x, &cond, &spec, Some(&mut noise), &mut hooks)?,
        Some(w) => {
            let plan = w.plan(frames)?;
            let texts = match prompts.is_single() {
                true => None,
                false => Some(window_texts(base, prompts, opts.subject.as_deref(), &plan, frames)?),
            };
            let n = plan.len();
            let windowed = Windowed::new(model, w.clone(), texts)?;
            let spec = DenoiseSpec { label: format!("co-denoise ({n} windows)"), ..spec }.units(n as u64);
            denoise(&windowed, x, &cond, &spec, Some(&mut noise), &mut hooks)?
        }
    };
    match branch {
        Some(_) => Ok((out.latents.narrow(0, 1, 1), seed)),
        None => Ok((out.latents, seed)),
    }
}

/// Frame 0 of an edit, sampled on its own from the inversion's frame 0 with the same options: the latent
/// the other frames are then conditioned on.
fn edit_first_frame(model: &VideoModel, prompt: &str, l: &Latents, opts: &SampleOptions) -> Result<Tensor> {
    let one = |t: &Tensor| t.narrow(2, 0, 1);
    let first = Latents {
        latents: one(&l.latents),
        source: one(&l.source),
        trajectory: l.trajectory.as_ref().map(|t| Rc::new(t.iter().map(one).collect())),
        ..l.clone()
    };
    let masks = opts.masks.as_ref().map(|m| m.slice_frames(0, 1)).transpose()?;
    let controls = opts.controls.iter().map(|c| c.window(0, 1)).collect();
    let o = SampleOptions {
        first_frame: None,
        shared_noise: None,
        variance_preserving: false,
        masks,
        controls,
        ..opts.clone()
    };
    Ok(sample_latents(model, prompt, Some(&first), &o)?.0)
}
