//! What one call of the video UNet is conditioned on: the text, the subject's masks (turned into a pyramid
//! at every UNet resolution once per call), the subject's tokens, the first frame, and where a window of a
//! long clip starts. Pipelines build one per step (or once per loop) and hand it to
//! [`VideoModel::forward`](super::VideoModel::forward).

use super::call::{AnchorFrame, Pyramid, VideoCall};
use crate::control::{self, CallStep, Control};
use crate::error::{Error, Result};
use crate::models::attention_processor::{CallData, MapControl, Maps};
use crate::models::ClipTokenizer;
use std::rc::Rc;
use tch::{Kind, Tensor};
use vidtune_kernels::masks as kmasks;

/// The conditioning of one UNet call (or one denoising loop).
#[derive(Debug)]
pub struct Conditioning {
    /// Text embeddings, one per clip of the batch: `[B, L, D]`.
    pub text: Tensor,
    /// The subject's masks, one per frame, `[F, 1, H, W]` in [0, 1] at any resolution (pixels, usually);
    /// shared by every clip of the batch.
    pub masks: Option<Tensor>,
    /// Per clip of the batch, the positions of the subject's tokens in its text (empty: none).
    pub subject_tokens: Vec<Vec<i64>>,
    /// The clean latent of the first frame, `[1, C, 1, h, w]` (first-frame conditioning).
    pub first_frame: Option<Tensor>,
    /// Index of the first frame of this call in the whole clip.
    pub frame_offset: i64,
    /// The long clip's first frame as first-frame attention sees it, recorded by the window that holds
    /// it and read by the others (co-denoising with a global anchor); `None`: each call's own.
    pub anchor: Option<Rc<AnchorFrame>>,
    /// The call's timestep as the host knows it (the loops set it), so that a model on an accelerator
    /// need not read it back from the device; `None`: read from the timestep tensor.
    pub timestep: Option<f64>,
    /// ControlNets and their images; the UNet adds the residuals of those active at [`Self::step`].
    pub controls: Vec<Control>,
    /// Where the call stands in its loop (the loops set it) and whether its batch is guided.
    pub step: CallStep,
    /// A control of the attention maps over the loop (an inversion's store, an edit's fusion).
    pub maps: Option<Rc<dyn MapsLoop>>,
}

/// A control of the attention maps over a denoising loop (an attention store, attention fusion): once per
/// UNet call it learns where the loop stands and gives the call's [`MapControl`].
pub trait MapsLoop: std::fmt::Debug {
    /// The control of a call of `batch` clips of `frames` frames at `step`.
    fn call(self: Rc<Self>, step: CallStep, batch: i64, frames: i64) -> Result<Rc<dyn MapControl>>;
}

impl Clone for Conditioning {
    fn clone(&self) -> Self {
        Conditioning {
            text: self.text.shallow_clone(),
            masks: self.masks.as_ref().map(Tensor::shallow_clone),
            subject_tokens: self.subject_tokens.clone(),
            first_frame: self.first_frame.as_ref().map(Tensor::shallow_clone),
            frame_offset: self.frame_offset,
            anchor: self.anchor.clone(),
            timestep: self.timestep,
            controls: self.controls.clone(),
            step: self.step,
            maps: self.maps.clone(),
        }
    }
}

impl Conditioning {
    /// Text alone.
    pub fn text(text: &Tensor) -> Self {
        Conditioning {
            text: text.shallow_clone(),
            masks: None,
            subject_tokens: vec![],
            first_frame: None,
            frame_offset: 0,
            anchor: None,
            timestep: None,
            controls: vec![],
            step: CallStep::default(),
            maps: None,
        }
    }

    /// The same, at timestep `t` (known to the host).
    pub fn at_timestep(&self, t: f64) -> Self {
        let mut out = self.clone();
        out.timestep = Some(t);
        out
    }

    /// The same at step `step` of `steps` (which controls act depends on it), at timestep `t`.
    pub fn at_step(&self, t: f64, step: usize, steps: usize) -> Self {
        let mut out = self.at_timestep(t);
        out.step = CallStep { step, steps, ..self.step };
        out
    }

    /// The same with `controls`.
    pub fn with_controls(mut self, controls: Vec<Control>) -> Self {
        self.controls = controls;
        self
    }

    /// Puts what the active controls add to a UNet call on `x` `[B·F, C, h, w]` in its call data: the
    /// attention maps' control of this call, the ControlNets' residuals and the T2I-Adapters' features.
    pub fn control_data(&self, x: &Tensor, t: &Tensor, text: &Tensor, frames: i64, data: &mut CallData) -> Result<()> {
        if let Some(m) = &self.maps {
            let batch = x.size()[0] / frames.max(1);
            data.insert(Maps(m.clone().call(self.step, batch, frames)?));
        }
        if self.controls.is_empty() {
            return Ok(());
        }
        if let Some(r) = control::residuals(&self.controls, self.step, x, t, text, frames)? {
            data.insert(r);
        }
        if let Some(f) = control::adapter_features(&self.controls, self.step, x, frames)? {
            data.insert(f);
        }
        Ok(())
    }

    /// The same with masks `[F, 1, H, W]`.
    pub fn with_masks(mut self, masks: Option<&Tensor>) -> Self {
        self.masks = masks.map(Tensor::shallow_clone);
        self
    }

    /// Classifier-free guidance as one batch: `uncond` then `self`, each `[B, L, D]`; the subject's tokens
    /// belong to the conditional half only.
    pub fn with_unconditional(&self, uncond: &Tensor) -> Self {
        let mut out = self.clone();
        out.text = Tensor::cat(&[uncond, &self.text], 0);
        let b = self.batch() as usize;
        let mut tokens = vec![vec![]; uncond.size()[0] as usize + b];
        for (i, t) in self.subject_tokens.iter().take(b).enumerate() {
            tokens[uncond.size()[0] as usize + i] = t.clone();
        }
        out.subject_tokens = tokens;
        out.step.guided = true;
        out
    }

    /// The same on `device` (a replica's): text, masks and first frame moved.
    pub fn to_device(&self, device: tch::Device) -> Self {
        let mut out = self.clone();
        out.text = self.text.to_device(device);
        out.masks = self.masks.as_ref().map(|m| m.to_device(device));
        out.first_frame = self.first_frame.as_ref().map(|f| f.to_device(device));
        out
    }

    /// The same with the text (and first frame) in `kind`, for a model of that precision.
    pub fn to_kind(&self, kind: tch::Kind) -> Self {
        let mut out = self.clone();
        out.text = self.text.to_kind(kind);
        out.first_frame = self.first_frame.as_ref().map(|f| f.to_kind(kind));
        out
    }

    /// Clips in the batch.
    pub fn batch(&self) -> i64 {
        self.text.size()[0]
    }

    /// The masks of frames `start..start + len` (a window of a long clip).
    pub fn window(&self, start: i64, len: i64) -> Self {
        let mut out = self.clone();
        out.masks = self.masks.as_ref().map(|m| m.narrow(0, start, len));
        out.frame_offset = self.frame_offset + start;
        out.controls = self.controls.iter().map(|c| c.window(start, len)).collect();
        out
    }

    /// The mask pyramid of a call on latents `[B, C, F, h, w]`: the masks area-averaged to `h × w` and
    /// to every smaller size the UNet's stride-2 convolutions make (`⌈h/2⌉`, …), repeated for the `B`
    /// clips: `[B·F, 1, h_l, w_l]` each.
    pub fn mask_pyramid(&self, batch: i64, frames: i64, h: i64, w: i64, levels: usize) -> Result<Option<Pyramid>> {
        let Some(m) = &self.masks else { return Ok(None) };
        if m.size()[0] != frames {
            return Err(Error::Invalid(format!(
                "masks: {} masks for a clip of {frames} frames; give one mask per frame",
                m.size()[0]
            )));
        }
        let m = m.to_kind(Kind::Float);
        let (mut hh, mut ww) = (h, w);
        let mut out = vec![];
        for _ in 0..levels.max(1) {
            let level = kmasks::resize(&m.to_device(self.text.device()), hh, ww)?;
            out.push(level.repeat([batch, 1, 1, 1]));
            (hh, ww) = ((hh + 1) / 2, (ww + 1) / 2);
        }
        Ok(Some(Pyramid { levels: out }))
    }
}

impl Conditioning {
    /// The video data of a call on latents `[B, C, F, h, w]` with `levels` UNet resolutions, on `device`:
    /// the mask pyramid, the subject's tokens, the window's offset and the anchor frame.
    pub fn video_call(
        &self,
        batch: i64,
        frames: i64,
        h: i64,
        w: i64,
        levels: usize,
        device: tch::Device,
    ) -> Result<VideoCall> {
        Ok(VideoCall {
            masks: self.mask_pyramid(batch, frames, h, w, levels)?.map(Rc::new),
            subject_tokens: shared_tokens(&self.subject_tokens),
            frame_offset: self.frame_offset,
            anchor: self.anchor.clone(),
            ..VideoCall::new(batch, frames, device)
        })
    }
}

/// The positions (in the padded ids the text encoder reads) of `subject`'s tokens inside `prompt`'s:
/// the first run of ids equal to the subject's. An error that names both when the prompt lacks it.
pub fn subject_token_positions(tokenizer: &ClipTokenizer, prompt: &str, subject: &str) -> Result<Vec<i64>> {
    let ids = tokenizer.encode_unpadded(prompt)?;
    let sub = tokenizer.encode_unpadded(subject)?;
    // Without the start and end tokens.
    let inner: Vec<i64> = sub.iter().copied().skip(1).take(sub.len().saturating_sub(2)).collect();
    if inner.is_empty() {
        return Err(Error::Invalid(format!("subject {subject:?} has no words")));
    }
    let limit = tokenizer.max_length.saturating_sub(1);
    (0..ids.len().saturating_sub(inner.len()) + 1)
        .find(|&i| ids[i..].starts_with(&inner) && i + inner.len() <= limit)
        .map(|i| (i as i64..(i + inner.len()) as i64).collect())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "subject {subject:?} is not in the prompt {prompt:?}; name words of the prompt (\"red circle\")"
            ))
        })
}

/// Shared, for the attention context.
pub fn shared_tokens(tokens: &[Vec<i64>]) -> Option<Rc<Vec<Vec<i64>>>> {
    tokens.iter().any(|t| !t.is_empty()).then(|| Rc::new(tokens.to_vec()))
}
