//! Temporal co-denoising of long clips (Gen-L-Video; long-video framework Eqs. 18–19): every step of the
//! shared denoising loop runs the video model on overlapping windows of the clip and merges the
//! windows' noise predictions per frame ([`vidtune_kernels::codenoise`]). A DDIM step is affine in the
//! prediction with the same coefficients for every frame, so this equals merging the windows' denoised
//! latents, as the papers write it — and it serves both walks: sampling down the schedule and inversion
//! up it. Memory grows with the window, not with the clip.
//!
//! - Each window sees its own slice of the masks and its frame offset; windows without masks are batched
//!   (`batch` windows per UNet call, classifier-free guidance included).
//! - Prompts can change along the clip ([`PromptSchedule`]): each frame's text embedding blends the
//!   prompts whose frame ranges cover it (a cross-fade over overlaps), and a window is conditioned on the
//!   mean over its frames. The subject's tokens are those of the prompt with the most weight in it.
//! - With `window` at least the clip's length there is one window and the result is the plain loop's.
//! - Attention that looks at a first frame (`sparse_causal`, `first_frame`) uses each window's own first
//!   frame, or with `Anchor::Global` the clip's first frame, whose keys and values the first window records
//!   once per step for the others.

use super::denoise::NoisePredictor;
use crate::error::{Error, Result};
use crate::sd::StableDiffusion;
use crate::video::call::AnchorFrame;
use crate::video::conditioning::subject_token_positions;
use crate::video::{Conditioning, VideoModel};
use std::rc::Rc;
use tch::{Device, Tensor};
use vidtune_kernels::codenoise::{merge, plan, Weighting, Window};

/// Which first frame a window's first-frame attention (`sparse_causal`, `first_frame`) looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Anchor {
    /// The window's own first frame.
    Window,
    /// The clip's first frame, for every window: the window that holds it records what first-frame
    /// attention reads of it (keys, values, mask shares: [`AnchorFrame`]) once per step, and every other
    /// window's first-frame attention reads those instead of its own first frame's.
    #[default]
    Global,
}

impl Anchor {
    /// `"window"` or `"global"`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "window" => Ok(Anchor::Window),
            "global" => Ok(Anchor::Global),
            _ => Err(Error::Invalid(format!("anchor: unknown anchor {s:?}; use \"window\" or \"global\""))),
        }
    }
}

/// How a clip is cut into windows, and where they run.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowOptions {
    /// Frames per window.
    pub window: i64,
    /// Frames between window starts (the last window is flush with the clip's end).
    pub stride: i64,
    pub weights: Weighting,
    /// Windows per UNet call (without masks).
    pub batch: i64,
    pub anchor: Anchor,
    /// Devices the UNet calls of a step are spread over, round-robin by call (empty: the model's own).
    /// Each device other than the model's gets a replica of the video UNet once per co-denoising call;
    /// predictions come back to the model's device for the merge.
    pub devices: Vec<Device>,
}

impl WindowOptions {
    /// The options that only windows read (given without a window, they would be ignored).
    pub const WINDOW_ONLY: [&'static str; 5] = ["stride", "weights", "batch", "anchor", "devices"];

    /// Windows of `window` frames, half-overlapping, uniform weights, one per call, anchored on the
    /// clip's first frame.
    pub fn new(window: i64) -> Self {
        WindowOptions {
            window,
            stride: (window / 2).max(1),
            weights: Weighting::Uniform,
            batch: 1,
            anchor: Anchor::Global,
            devices: vec![],
        }
    }

    /// Refuses sizes that make no plan.
    pub fn validate(&self) -> Result<()> {
        plan(self.window.max(1), self.window, self.stride)?;
        if !(1..=4096).contains(&self.batch) {
            return Err(Error::Invalid(format!("batch must be between 1 and 4096 windows, got {}", self.batch)));
        }
        if self.devices.len() > 1024 {
            return Err(Error::Invalid(format!("devices: {} devices; give at most 1024", self.devices.len())));
        }
        Ok(())
    }

    /// The windows over a clip of `frames`.
    pub fn plan(&self, frames: i64) -> Result<Vec<Window>> {
        Ok(plan(frames, self.window, self.stride)?)
    }
}

/// One prompt for frames `first..=last` of a clip.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSpan {
    pub first: i64,
    pub last: i64,
    pub prompt: String,
}

/// Prompts along a clip: one for every frame, or several over frame ranges that may overlap.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptSchedule(pub Vec<PromptSpan>);

impl PromptSchedule {
    /// One prompt for the whole clip.
    pub fn single(prompt: &str) -> Self {
        PromptSchedule(vec![PromptSpan { first: 0, last: i64::MAX, prompt: prompt.to_string() }])
    }

    /// The prompt of the first span (what a single-prompt call uses).
    pub fn first(&self) -> &str {
        self.0.first().map(|s| s.prompt.as_str()).unwrap_or("")
    }

    /// Whether one prompt covers the whole clip, whatever its length.
    pub fn is_single(&self) -> bool {
        matches!(&self.0[..], [s] if s.first == 0 && s.last == i64::MAX)
    }

    /// Per frame, each span's share: `[frames][spans]`, rows summing to 1. A span weighs a frame by its
    /// distance to the span's nearer end (plus one), so overlapping spans cross-fade. An error names the
    /// first frame no span covers.
    pub fn frame_weights(&self, frames: i64) -> Result<Vec<Vec<f64>>> {
        for s in &self.0 {
            if s.first < 0 || s.last < s.first {
                return Err(Error::Invalid(format!(
                    "prompts: frames [{}, {}] of {:?} are not a range of frames",
                    s.first, s.last, s.prompt
                )));
            }
            if s.last >= frames {
                return Err(Error::Invalid(format!(
                    "prompts: frames [{}, {}] of {:?} reach past the clip, whose last frame is {}",
                    s.first,
                    s.last,
                    s.prompt,
                    frames - 1
                )));
            }
        }
        (0..frames)
            .map(|f| {
                let w: Vec<f64> =
                    self.0
                        .iter()
                        .map(|s| {
                            if (s.first..=s.last).contains(&f) {
                                ((f - s.first).min(s.last - f) + 1) as f64
                            } else {
                                0.0
                            }
                        })
                        .collect();
                let total: f64 = w.iter().sum();
                if total == 0.0 {
                    return Err(Error::Invalid(format!(
                        "prompts: frame {f} of {frames} has no prompt; the frame ranges must cover the clip"
                    )));
                }
                Ok(w.iter().map(|x| x / total).collect())
            })
            .collect()
    }
}

/// Per window, its text `[1, L, D]` and the subject's token positions.
pub struct WindowTexts {
    pub texts: Vec<Tensor>,
    pub subject_tokens: Vec<Vec<i64>>,
}

/// The text of every window of `windows` under `schedule`.
pub fn window_texts(
    sd: &StableDiffusion,
    schedule: &PromptSchedule,
    subject: Option<&str>,
    windows: &[Window],
    frames: i64,
) -> Result<WindowTexts> {
    let embeds = schedule.0.iter().map(|s| sd.encode_prompt(&s.prompt)).collect::<Result<Vec<_>>>()?;
    let per_frame = schedule.frame_weights(frames)?;
    let mut texts = vec![];
    let mut subject_tokens = vec![];
    for w in windows {
        // The window's share of each prompt: the mean of its frames' shares.
        let mut share = vec![0.0; embeds.len()];
        for f in w.start..w.start + w.len {
            for (s, x) in share.iter_mut().zip(&per_frame[f as usize]) {
                *s += x / w.len as f64;
            }
        }
        let mut text = embeds[0].zeros_like();
        for (e, s) in embeds.iter().zip(&share) {
            if *s > 0.0 {
                text += e * *s;
            }
        }
        texts.push(text);
        let main = share.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
        subject_tokens.push(match subject {
            Some(s) => subject_token_positions(&sd.tokenizer, &schedule.0[main].prompt, s)?,
            None => vec![],
        });
    }
    Ok(WindowTexts { texts, subject_tokens })
}

/// A video model run window by window, its predictions merged per frame.
pub struct Windowed<'a> {
    pub model: &'a VideoModel,
    pub options: WindowOptions,
    /// Per-window texts for a prompt schedule; `None`: every window gets the call's own text.
    pub texts: Option<WindowTexts>,
    /// Replicas of the model on the other devices of `options.devices`.
    replicas: Vec<VideoModel>,
}

impl<'a> Windowed<'a> {
    /// `model` on windows; replicas made for the devices of `options` other than the model's.
    pub fn new(model: &'a VideoModel, options: WindowOptions, texts: Option<WindowTexts>) -> Result<Self> {
        options.validate()?;
        let mut replicas: Vec<VideoModel> = vec![];
        for &d in &options.devices {
            if d != model.device() && !replicas.iter().any(|r| r.device() == d) {
                replicas.push(model.replica(d)?);
            }
        }
        Ok(Windowed { model, options, texts, replicas })
    }

    /// The model that runs UNet call `i` of a step (round-robin over the devices).
    fn lane(&self, i: usize) -> &VideoModel {
        match self.options.devices.len() {
            0 => self.model,
            n => {
                let d = self.options.devices[i % n];
                self.replicas.iter().find(|r| r.device() == d).unwrap_or(self.model)
            }
        }
    }
}

impl Windowed<'_> {
    /// The conditioning of window `i` (at `w`) from the call's: its masks and offset, and its own text in
    /// the conditional half of the batch when a schedule is given.
    fn window_cond(&self, cond: &Conditioning, i: usize, w: &Window) -> Conditioning {
        let mut c = cond.window(w.start, w.len);
        if let Some(t) = &self.texts {
            let own = t.texts[i].to_device(cond.text.device()).to_kind(cond.text.kind());
            c.text = match cond.batch() {
                1 => own,
                b => Tensor::cat(&[cond.text.narrow(0, 0, b - 1), own], 0),
            };
            if let Some(last) = c.subject_tokens.last_mut() {
                *last = t.subject_tokens[i].clone();
            } else if !t.subject_tokens[i].is_empty() {
                c.subject_tokens = vec![t.subject_tokens[i].clone()];
            }
        }
        c
    }
}

impl NoisePredictor for Windowed<'_> {
    fn predict(&self, x: &Tensor, t: &Tensor, cond: &Conditioning) -> Result<Tensor> {
        let frames = x.size()[2];
        let windows = self.options.plan(frames)?;
        if let Some(tx) = &self.texts {
            if tx.texts.len() != windows.len() {
                return Err(Error::Invalid(format!(
                    "co-denoise: {} window texts for {} windows",
                    tx.texts.len(),
                    windows.len()
                )));
            }
        }
        // Each window's input and conditioning. With a global anchor, the first window (which holds the
        // clip's first frame) runs alone and records what first-frame attention reads of that frame; the
        // other windows read it instead of their own first frame.
        let anchor =
            (self.options.anchor == Anchor::Global && windows.len() > 1).then(|| Rc::new(AnchorFrame::recording()));
        let calls: Vec<(Tensor, Conditioning)> = windows
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let mut c = self.window_cond(cond, i, w);
                c.anchor = anchor.clone();
                (x.narrow(2, w.start, w.len), c)
            })
            .collect();
        // Windows share one UNet call only when nothing per frame (masks) differs between them and they
        // have as many frames.
        let group = if cond.masks.is_some() { 1 } else { self.options.batch.max(1) as usize };
        let b = x.size()[0];
        let mut parts = Vec::with_capacity(windows.len());
        let (mut k, mut call) = (0, 0);
        while k < calls.len() {
            crate::progress::check_cancel()?;
            let len = calls[k].0.size()[2];
            let mut end = k + 1;
            let limit = if anchor.is_some() && k == 0 { 1 } else { group };
            while end < calls.len() && end - k < limit && calls[end].0.size()[2] == len {
                end += 1;
            }
            let chunk = &calls[k..end];
            let (xs, c) = if chunk.len() == 1 {
                (chunk[0].0.shallow_clone(), chunk[0].1.clone())
            } else {
                let mut c = chunk[0].1.clone();
                c.text = Tensor::cat(&chunk.iter().map(|(_, c)| c.text.shallow_clone()).collect::<Vec<_>>(), 0);
                c.subject_tokens = chunk.iter().flat_map(|(_, c)| pad_tokens(&c.subject_tokens, b)).collect();
                let xs: Vec<Tensor> = chunk.iter().map(|(x, _)| x.shallow_clone()).collect();
                (Tensor::cat(&xs, 0), c)
            };
            let lane = self.lane(call);
            call += 1;
            let eps = match lane.device() == x.device() {
                true => lane.predict(&xs, t, &c)?,
                false => {
                    let d = lane.device();
                    lane.predict(&xs.to_device(d), &t.to_device(d), &c.to_device(d))?.to_device(x.device())
                }
            };
            // After the first call the anchor is recorded; every later call reads it from its first layer.
            if let Some(a) = &anchor {
                a.replay();
            }
            parts.extend(eps.split(b, 0));
            k = end;
        }
        Ok(merge(&parts, &windows, self.options.weights, frames)?)
    }

    fn device(&self) -> Device {
        self.model.device()
    }

    fn sd(&self) -> &StableDiffusion {
        &self.model.base
    }
}

/// A conditioning's subject tokens as one list per clip of a batch of `b`.
fn pad_tokens(tokens: &[Vec<i64>], b: i64) -> Vec<Vec<i64>> {
    (0..b as usize).map(|i| tokens.get(i).cloned().unwrap_or_default()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_prompts_cross_fade_and_gaps_are_named() {
        let s = PromptSchedule(vec![
            PromptSpan { first: 0, last: 5, prompt: "a".into() },
            PromptSpan { first: 4, last: 9, prompt: "b".into() },
        ]);
        let w = s.frame_weights(10).unwrap();
        assert_eq!(w[0], vec![1.0, 0.0]);
        assert_eq!(w[9], vec![0.0, 1.0]);
        // Frame 4: 2 from a's end, 1 from b's start → a 2/3, b 1/3; frame 5 the other way.
        assert!((w[4][0] - 2.0 / 3.0).abs() < 1e-12 && (w[5][1] - 2.0 / 3.0).abs() < 1e-12);
        for row in &w {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        let gap = PromptSchedule(vec![PromptSpan { first: 0, last: 3, prompt: "a".into() }]);
        assert!(gap.frame_weights(6).unwrap_err().to_string().contains("frame 4 of 6 has no prompt"));
        let bad = PromptSchedule(vec![PromptSpan { first: 5, last: 2, prompt: "a".into() }]);
        assert!(bad.frame_weights(6).unwrap_err().to_string().contains("not a range"));
    }
}
