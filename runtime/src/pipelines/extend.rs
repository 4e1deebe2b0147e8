//! Autoregressive extension (dynamic mask guidance, end of §III-A and Fig. 4, which name the approach
//! without equations of its own): the next frames of a clip, generated with its last frame held as the
//! first frame of a new clip (the first-frame conditioning of §III-A, Eqs. 2–4) and its latent shared
//! into the new frames' starting noise (§III-B's first-frame shared sampling, Eq. 8, α = 0.2 unless
//! given). Repeated calls make clips of any
//! length; each call sees `frames + 1` frames, so memory follows `frames`, not the clip.
//!
//! Masks steer the new frames as in `sample`: give one per new frame (the held frame takes the first of
//! them) or one more, the held frame's first.

use super::sample::{sample, FirstFrame, SampleOptions, SHARED_NOISE};
use crate::error::{Error, Result};
use crate::masks::Masks;
use crate::media::Video;
use crate::video::VideoModel;
use tch::Tensor;

/// The clip `video` followed by `frames` new frames for `prompt`; returns it with the seed used.
/// `opts` are `sample`'s (no latents: the new frames start from seeded noise).
pub fn extend(
    model: &VideoModel,
    video: &Video,
    prompt: &str,
    frames: i64,
    opts: &SampleOptions,
) -> Result<(Video, u64)> {
    let max = super::sample::MAX_FRAMES;
    if !(1..=max).contains(&frames) {
        return Err(Error::Invalid(format!("extend: frames must be between 1 and {max} new frames, got {frames}")));
    }
    for (set, name) in [
        (opts.first_frame.is_some(), "first_frame"),
        (opts.frames.is_some(), "frames"),
        (opts.width.is_some() || opts.height.is_some(), "size"),
    ] {
        if set {
            return Err(Error::Invalid(format!(
                "extend: {name} is set by extend itself (the clip's last frame, its size, and `frames` new ones)"
            )));
        }
    }
    let n = video.len() as i64;
    let last = video.frame(n - 1)?;
    let masks = match &opts.masks {
        None => None,
        Some(m) if m.len() as i64 == frames + 1 => Some(m.clone()),
        Some(m) if m.len() as i64 == frames => {
            Some(Masks::new(Tensor::cat(&[m.tensor().narrow(0, 0, 1), m.tensor().shallow_clone()], 0))?)
        }
        Some(m) => {
            return Err(Error::Invalid(format!(
            "extend: {} masks for {frames} new frames; give one per new frame (or one more, the last frame's first)",
            m.len()
        )))
        }
    };
    let o = SampleOptions {
        frames: Some(frames + 1),
        width: Some(video.width()),
        height: Some(video.height()),
        fps: Some(video.fps()),
        first_frame: Some(FirstFrame::Image(last)),
        shared_noise: Some(opts.shared_noise.unwrap_or(SHARED_NOISE)),
        masks,
        ..opts.clone()
    };
    let (out, seed) = sample(model, prompt, None, &o)?;
    let new = out.frames().narrow(0, 1, frames);
    Ok((Video::new(Tensor::cat(&[video.frames().shallow_clone(), new], 0), video.fps())?, seed))
}
