//! How an edit is judged.
//!
//! With the toy world's ground truth (the source clip and the target — the source with the edit applied,
//! on the same path), per frame:
//! - **colour**: the subject (the target's masks, eroded by a pixel) has the asked colour: the named
//!   colour nearest its mean is the target's;
//! - **object**: where the old and new shapes differ, the edit is closer to the target than to the
//!   source (mean squared difference): the new shape is there and the old one gone;
//! - **background / style**: outside the subject (both masks dilated by 2 pixels), the edit is closer to
//!   the target than to the source;
//! - **multiple** (colour and background): both of the above.
//!
//! and over the clip, what should be untouched is kept: the background's PSNR against the source
//! (colour, object) or the subject's, inside its eroded masks (background, style). Flicker is VBench's.
//!
//! Any suite, with a CLIP model: LOVEU-TGVE's CLIP-T and CLIP-F as the challenge's `run_eval.py`
//! computes them (frames resized to 480² with Pillow's bicubic filter; CLIP-T the mean over frames of
//! `exp(logit_scale)` × cos(image, edit prompt); CLIP-F the mean cosine over ordered pairs of distinct
//! frames), and PickScore with a PickScore model (the same logit on that model).

use super::EditType;
use crate::error::{Error, Result};
use crate::masks::Masks;
use crate::media::Video;
use crate::models::clip::ClipModel;
use crate::synthetic::SyntheticClip;
use tch::{Kind, Tensor};
use vidtune_kernels::metrics as km;

/// Margins: the subject eroded by this many pixels to read its colour and keep, dilated to keep clear of
/// its edge outside.
const ERODE: i64 = 1;
const DILATE: i64 = 2;

/// The judgement of one edit against the toy ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// Per frame: did it show what was asked?
    pub frames: Vec<bool>,
    /// Share of such frames.
    pub hit_rate: f64,
    /// What should be untouched (`"background"`, `"subject"`), and its PSNR (dB) against the source.
    pub kept: Option<(&'static str, f64)>,
    /// VBench temporal flickering of the edit (1 = static).
    pub flicker: f64,
}

/// Judges `edit`, an edit of kind `kind` of `source` whose ground truth is `target`.
pub fn judge(kind: EditType, source: &SyntheticClip, target: &SyntheticClip, edit: &Video) -> Result<Judgement> {
    let (s, t, e) = (source.video.frames(), target.video.frames(), edit.frames());
    if e.size() != s.size() || t.size() != s.size() {
        return Err(Error::Invalid(format!(
            "the edit is {}x{}x{} frames, its source {}x{}x{}: an edit must keep the clip's frames and size",
            edit.len(),
            edit.width(),
            edit.height(),
            source.video.len(),
            source.video.width(),
            source.video.height()
        )));
    }
    let (sm, tm) = (&source.masks, &target.masks);
    let outside = sm.union(tm)?.dilate(DILATE)?.invert()?;
    let closer = |region: &Masks| -> Result<Vec<bool>> {
        let to_target = km::region_mse(e, t, region.tensor())?;
        let to_source = km::region_mse(e, s, region.tensor())?;
        Ok(to_target.iter().zip(&to_source).map(|(a, b)| matches!((a, b), (Some(a), Some(b)) if a < b)).collect())
    };
    let color = |want: &str| -> Result<Vec<bool>> {
        let rgb = km::region_mean_rgb(e, tm.erode(ERODE)?.tensor())?;
        Ok(rgb.iter().map(|c| c.is_some_and(|c| crate::toy::probe::nearest_color(c) == want)).collect())
    };
    let asked = target.spec.color.as_deref().unwrap_or("");
    let frames = match kind {
        EditType::Colour => color(asked)?,
        EditType::Object => {
            let (a, b) = (sm.tensor().gt(0.5), tm.tensor().gt(0.5));
            closer(&Masks::new(a.logical_xor(&b).to_kind(Kind::Float))?)?
        }
        EditType::Background | EditType::Style => closer(&outside)?,
        EditType::Multiple => color(asked)?.iter().zip(closer(&outside)?).map(|(a, b)| *a && b).collect(),
    };
    let kept = match kind {
        EditType::Colour | EditType::Object => km::region_psnr(e, s, outside.tensor())?.map(|p| ("background", p)),
        EditType::Background | EditType::Style => {
            km::region_psnr(e, s, sm.erode(ERODE)?.tensor())?.map(|p| ("subject", p))
        }
        EditType::Multiple => None,
    };
    let hit_rate = frames.iter().filter(|b| **b).count() as f64 / frames.len().max(1) as f64;
    Ok(Judgement { frames, hit_rate, kept, flicker: km::temporal_flickering(e)? })
}

/// The field's CLIP metrics of one edit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipMetrics {
    /// LOVEU-TGVE's CLIP-T: the mean over frames of the image–text logit with the edit prompt.
    pub clip_t: f64,
    /// LOVEU-TGVE's CLIP-F: the mean cosine between the image embeddings of distinct frames.
    pub clip_f: f64,
}

/// The frame size LOVEU-TGVE's evaluation resizes to before CLIP's own preprocessing.
pub const LOVEU_SIZE: usize = 480;

/// Frames as the challenge's evaluation reads them: 8-bit, resized to 480² with Pillow's bicubic filter.
pub fn loveu_frames(video: &Video) -> Result<Video> {
    let bytes = vidtune_kernels::image::to_rgb8_tensor(video.frames())?;
    let (w, h) = (video.width() as usize, video.height() as usize);
    let n = LOVEU_SIZE;
    let frames = (0..video.len() as i64)
        .map(|i| {
            let px = Vec::<u8>::try_from(bytes.get(i).flatten(0, -1))?;
            let out = vidtune_kernels::pil::resize_u8(&px, w, h, 3, n, n, vidtune_kernels::pil::Filter::Bicubic);
            Ok(Tensor::from_slice(&out).view([n as i64, n as i64, 3]).permute([2, 0, 1]))
        })
        .collect::<Result<Vec<_>>>()?;
    Video::new(Tensor::stack(&frames, 0).to_kind(Kind::Float) / 127.5 - 1.0, video.fps())
}

/// LOVEU-TGVE's CLIP-T and CLIP-F of `video` (already in [`loveu_frames`] form) for `prompt`.
pub fn clip_metrics(clip: &ClipModel, video: &Video, prompt: &str) -> Result<ClipMetrics> {
    if video.len() < 2 {
        return Err(Error::Invalid(format!("CLIP-F needs at least 2 frames, got {}", video.len())));
    }
    let images = crate::score::frame_embeddings(clip, video, 16)?;
    let text = clip.prompt_embed(prompt)?.to_device(tch::Device::Cpu);
    let (alignment, _) = km::text_alignment(&images, &text, false)?;
    let (consistency, _) = km::frame_consistency(&images, km::Pairs::All)?;
    // text_alignment is 100 × cos; the challenge's logit is exp(logit_scale) × cos.
    Ok(ClipMetrics { clip_t: alignment / 100.0 * clip.logit_scale()?, clip_f: consistency / 100.0 })
}

/// PickScore of `video` (in [`loveu_frames`] form) for `prompt` with a PickScore model: the mean over
/// frames of `exp(logit_scale)` × cos(image, text).
pub fn pick_score(pick: &ClipModel, video: &Video, prompt: &str) -> Result<f64> {
    let images = crate::score::frame_embeddings(pick, video, 16)?;
    let text = pick.prompt_embed(prompt)?.to_device(tch::Device::Cpu);
    let (alignment, _) = km::text_alignment(&images, &text, false)?;
    Ok(alignment / 100.0 * pick.logit_scale()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::toy_suite::{toy_suite, Split};
    use crate::synthetic::synthetic_clip;

    fn case(kind: EditType) -> (SyntheticClip, SyntheticClip) {
        let suite = toy_suite(Split::Dev, Some(1)).unwrap();
        let v = &suite.videos[0];
        let e = v.edits.iter().find(|e| e.kind == kind).unwrap();
        let src = synthetic_clip(&v.truth.as_ref().unwrap().spec).unwrap();
        (src, synthetic_clip(e.target.as_ref().unwrap()).unwrap())
    }

    /// The target itself passes every frame with its untouched part kept exactly; the source unchanged
    /// fails every frame; for a frame-by-frame mix, exactly the target's frames pass.
    #[test]
    fn the_target_passes_the_source_fails_and_a_mix_is_judged_per_frame() {
        for kind in EditType::ALL {
            let (src, tgt) = case(kind);
            let good = judge(kind, &src, &tgt, &tgt.video).unwrap();
            assert_eq!(good.hit_rate, 1.0, "{kind:?}: {:?}", good.frames);
            if let Some((what, psnr)) = good.kept {
                assert!(psnr > 60.0, "{kind:?}: {what} {psnr}");
            }
            let none = judge(kind, &src, &tgt, &src.video).unwrap();
            assert_eq!(none.hit_rate, 0.0, "{kind:?}: {:?}", none.frames);
            let pick = Tensor::from_slice(&[1f32, 0., 1., 0., 0., 1., 1., 0.]).view([8, 1, 1, 1]);
            let mixed = tgt.video.frames() * &pick + src.video.frames() * (pick.ones_like() - &pick);
            let j = judge(kind, &src, &tgt, &Video::new(mixed, 8.0).unwrap()).unwrap();
            assert_eq!(j.frames, vec![true, false, true, false, false, true, true, false], "{kind:?}");
        }
    }

    /// Noise of a known size on the target: every frame still shows the new shape, and the kept
    /// background's PSNR is the noise's.
    #[test]
    fn kept_psnr_follows_the_pixels() {
        let (src, tgt) = case(EditType::Object);
        tch::manual_seed(0);
        let noisy = (tgt.video.frames()
            + Tensor::randn([8, 3, 64, 64], (Kind::Float, tch::Device::Cpu)).f_mul_scalar(0.02).unwrap())
        .clamp(-1.0, 1.0);
        let j = judge(EditType::Object, &src, &tgt, &Video::new(noisy, 8.0).unwrap()).unwrap();
        let (_, psnr) = j.kept.unwrap();
        // σ = 0.02 in [−1, 1] is 2.55 levels: about 40 dB.
        assert!((psnr - 40.0).abs() < 1.5, "{psnr}");
        assert_eq!(j.hit_rate, 1.0);
    }
}
