//! Checks of an edit frame by frame, run after every sample: frames whose subject did not change like the
//! others', lost its contrast, shows another colour than the one asked for, or falls out of CLIP's
//! alignment with the prompt — each judged against something absolute where it can be, so that when
//! most frames are wrong, the warning says so rather than naming the good minority.

use super::{score, ScoreOptions};
use crate::error::Result;
use crate::media::Video;
use crate::models::clip::ClipModel;
use vidtune_kernels::image as kimage;
use vidtune_kernels::metrics;

/// Frames of an edit that stand out from the others, and by what measure.
#[derive(Debug, Clone)]
pub struct FrameCheck {
    /// The frames that stand out.
    pub frames: Vec<usize>,
    /// What was measured (`change inside the masks`, `CLIP alignment`).
    pub measure: &'static str,
    /// The measure per frame, and its median.
    pub values: Vec<f64>,
    pub median: f64,
    /// The frames named are most of the frames judged: the edit failed in most frames.
    pub most: bool,
    /// Per frame, what was seen where a number says too little (the colour check: the colour named).
    pub seen: Vec<String>,
}

impl FrameCheck {
    fn of(measure: &'static str, values: Vec<f64>, frames: Vec<usize>) -> Option<FrameCheck> {
        if frames.is_empty() {
            return None;
        }
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        Some(FrameCheck { frames, measure, values, median, most: false, seen: vec![] })
    }

    /// Whether the frames were judged on their own (lost subject, asked colour), not against the others.
    pub fn judged_absolutely(&self) -> bool {
        self.measure == SUBJECT_MEASURE || self.measure == COLOUR_MEASURE
    }

    /// `frames 5, 6 stand out (change inside the masks 0.02, 0.03 against a median of 0.31)`; for an edit
    /// that failed in most frames, `most frames look wrong: frames 0, 1, 2 lost their subject (…)`.
    pub fn describe(&self) -> String {
        let list = |f: &dyn Fn(usize) -> String| self.frames.iter().map(|&i| f(i)).collect::<Vec<_>>().join(", ");
        if self.measure == COLOUR_MEASURE {
            return format!(
                "{}frame{} {} show{} no {} subject (nearest colour: {})",
                if self.most { "most frames look wrong: " } else { "" },
                if self.frames.len() == 1 { "" } else { "s" },
                list(&|i| i.to_string()),
                if self.frames.len() == 1 { "s" } else { "" },
                self.seen.first().map(String::as_str).unwrap_or("asked"),
                list(&|i| self.seen.get(i + 1).cloned().unwrap_or_default()),
            );
        }
        if self.measure == SUBJECT_MEASURE {
            return format!(
                "{}frame{} {} lost {} subject ({} {}; below {SUBJECT_KEPT} the subject has faded into its surroundings)",
                if self.most { "most frames look wrong: " } else { "" },
                if self.frames.len() == 1 { "" } else { "s" },
                list(&|i| i.to_string()),
                if self.frames.len() == 1 { "its" } else { "their" },
                self.measure,
                list(&|i| format!("{:.2}", self.values[i])),
            );
        }
        format!(
            "frame{} {} stand{} out ({} {} against a median of {:.3})",
            if self.frames.len() == 1 { "" } else { "s" },
            list(&|i| i.to_string()),
            if self.frames.len() == 1 { "s" } else { "" },
            self.measure,
            list(&|i| format!("{:.3}", self.values[i])),
            self.median
        )
    }
}

/// How much each frame of `edit` changed from `source` inside the subject's masks (mean absolute pixel
/// change over the mask, in [0, 2]), and the frames where that stands out — an edit that lost its subject
/// in a frame changes it unlike its neighbours. `None` when no frame stands out.
pub fn check_mask_change(source: &Video, edit: &Video, masks: &crate::masks::Masks) -> Result<Option<FrameCheck>> {
    if source.len() != edit.len() || masks.len() != edit.len() {
        return Ok(None);
    }
    let m = masks.resize(edit.width(), edit.height())?;
    let m = m.tensor().to_kind(tch::Kind::Float);
    let src = source.resize(edit.width(), edit.height(), kimage::Fit::Resize)?;
    let diff = (edit.frames() - src.frames()).abs().mean_dim(&[1i64][..], true, tch::Kind::Float);
    let area = m.sum_dim_intlist(&[1i64, 2, 3][..], false, tch::Kind::Float);
    let change = (diff * &m).sum_dim_intlist(&[1i64, 2, 3][..], false, tch::Kind::Float) / area.clamp_min(1.0);
    let values = Vec::<f64>::try_from(change.to_kind(tch::Kind::Double))?;
    // Only frames where the masks hold a subject (at least 16 pixels) are compared: a frame without one
    // changes nothing inside its (empty) mask, which says nothing about the edit.
    let areas = Vec::<f64>::try_from(area.to_kind(tch::Kind::Double))?;
    let measured: Vec<usize> = (0..values.len()).filter(|&i| areas[i] >= 16.0).collect();
    let picked: Vec<f64> = measured.iter().map(|&i| values[i]).collect();
    let frames = metrics::robust_outliers(&picked, 3.0, 0.05, false).into_iter().map(|k| measured[k]).collect();
    let mut check = FrameCheck::of("change inside the masks", picked, frames);
    if let Some(c) = check.as_mut() {
        c.values = values;
    }
    Ok(check)
}

/// How well each frame's subject still stands out from its surroundings, against the source's: the
/// difference between the mean colour inside the masks and in a ring just outside them, edit over source
/// (1: as distinct as in the source; near 0: the subject faded into what surrounds it). Frames below
/// [`SUBJECT_KEPT`] lost their subject — an absolute judgement per frame, so an edit that fails in most
/// frames names those frames, not the few good ones that a comparison among frames would single out.
/// Frames whose source subject barely stands out (or whose masks are nearly empty) are not judged.
pub fn check_subject_presence(source: &Video, edit: &Video, masks: &crate::masks::Masks) -> Result<Option<FrameCheck>> {
    if source.len() != edit.len() || masks.len() != edit.len() {
        return Ok(None);
    }
    let (w, h) = (edit.width(), edit.height());
    let m = masks.resize(w, h)?;
    let (inside, ring) = inside_and_ring(&m)?;
    let src = source.resize(w, h, kimage::Fit::Resize)?;
    let dims = &[2i64, 3][..];
    let contrast = |frames: &tch::Tensor| {
        let mean = |region: &tch::Tensor| {
            (frames * region).sum_dim_intlist(dims, false, tch::Kind::Float)
                / region.sum_dim_intlist(dims, false, tch::Kind::Float).clamp_min(1.0)
        };
        (mean(&inside) - mean(&ring)).abs().sum_dim_intlist(&[1i64][..], false, tch::Kind::Float)
    };
    let (before, after) = (contrast(src.frames()), contrast(edit.frames()));
    let before = Vec::<f64>::try_from(before.to_kind(tch::Kind::Double))?;
    let after = Vec::<f64>::try_from(after.to_kind(tch::Kind::Double))?;
    let area = Vec::<f64>::try_from(inside.sum_dim_intlist(&[1i64, 2, 3][..], false, tch::Kind::Double))?;
    let ring_area = Vec::<f64>::try_from(ring.sum_dim_intlist(&[1i64, 2, 3][..], false, tch::Kind::Double))?;
    let judged = |i: usize| area[i] >= 16.0 && ring_area[i] >= 16.0 && before[i] >= 0.1;
    let values: Vec<f64> = (0..edit.len()).map(|i| if judged(i) { after[i] / before[i] } else { 1.0 }).collect();
    let lost: Vec<usize> = (0..edit.len()).filter(|&i| judged(i) && values[i] < SUBJECT_KEPT).collect();
    let judged_frames = (0..edit.len()).filter(|&i| judged(i)).count();
    Ok(FrameCheck::of(SUBJECT_MEASURE, values, lost).map(|mut c| {
        c.most = 2 * c.frames.len() > judged_frames;
        c
    }))
}

/// The colour `subject` asks for ("purple" in "purple circle"), if it names one of the basic colours
/// ([`crate::synthetic::COLORS`]), and for every frame of `edit` whose subject (the pixels inside `masks`,
/// eroded by a pixel, that stand apart from a ring around them: the whole subject for exact masks, the
/// new shape in a box) is nearer another of them, that colour: an edit that missed the asked colour,
/// judged frame by frame against the colour itself. `None` when the subject names no basic colour or every
/// frame has it.
pub fn check_subject_colour(edit: &Video, masks: &crate::masks::Masks, subject: &str) -> Result<Option<FrameCheck>> {
    let names: Vec<&str> = crate::synthetic::COLORS.iter().map(|(n, _)| *n).collect();
    let Some(asked) = subject.split_whitespace().map(str::to_lowercase).find(|w| names.contains(&w.as_str())) else {
        return Ok(None);
    };
    if masks.len() != edit.len() {
        return Ok(None);
    }
    let (w, h) = (edit.width(), edit.height());
    let m = masks.resize(w, h)?;
    // The subject is read where it stands apart from what surrounds the masks, so that masks larger than
    // it (an object edit's box) give the subject's colour and not the background's.
    let (_, ring) = inside_and_ring(&m)?;
    let inner = m.erode(1)?;
    let rgb = vidtune_kernels::metrics::subject_mean_rgb(edit.frames(), inner.tensor(), &ring)?;
    let nearest: Vec<Option<&str>> = rgb.iter().map(|c| c.map(crate::toy::probe::nearest_color)).collect();
    let judged = nearest.iter().filter(|n| n.is_some()).count();
    let wrong: Vec<usize> = (0..edit.len()).filter(|&i| nearest[i].is_some_and(|n| n != asked)).collect();
    let values = nearest.iter().map(|n| if n == &Some(asked.as_str()) { 1.0 } else { 0.0 }).collect();
    Ok(FrameCheck::of(COLOUR_MEASURE, values, wrong).map(|mut c| {
        c.most = 2 * c.frames.len() > judged;
        c.seen = std::iter::once(asked.clone()).chain(nearest.iter().map(|n| n.unwrap_or("-").to_string())).collect();
        c
    }))
}

/// The masks (`[F, 1, H, W]`, 0 or 1) and a ring just outside them, a sixteenth of the frame's side wide
/// (at least 2 pixels): what surrounds the subject.
fn inside_and_ring(m: &crate::masks::Masks) -> Result<(tch::Tensor, tch::Tensor)> {
    let binary = |t: &tch::Tensor| t.to_kind(tch::Kind::Float).ge(0.5).to_kind(tch::Kind::Float);
    let inside = binary(m.tensor());
    let grown = binary(m.dilate((m.width().min(m.height()) / 16).max(2))?.tensor());
    let ring = (grown - &inside).clamp_min(0.0);
    Ok((inside, ring))
}

/// What [`check_subject_colour`] measures.
const COLOUR_MEASURE: &str = "the asked colour";

/// What [`check_subject_presence`] measures.
const SUBJECT_MEASURE: &str = "subject contrast, edit / source";

/// The share of its source contrast below which a frame's subject counts as lost.
pub const SUBJECT_KEPT: f64 = 0.35;

/// Each frame's CLIP alignment with `prompt`, and the frames whose alignment falls well below the others'.
pub fn check_alignment(clip: &ClipModel, edit: &Video, prompt: &str) -> Result<Option<FrameCheck>> {
    if edit.len() < 3 {
        return Ok(None);
    }
    let s = score(clip, edit, prompt, &ScoreOptions::default())?;
    let frames = metrics::robust_outliers(&s.per_frame_alignment, 3.0, 0.02, true);
    Ok(FrameCheck::of("CLIP alignment", s.per_frame_alignment, frames))
}

#[cfg(test)]
mod frame_check_tests {
    use super::*;
    use crate::synthetic::{synthetic_clip, SyntheticSpec};
    use tch::Tensor;

    #[test]
    fn a_frame_whose_subject_did_not_change_like_the_others_is_named() {
        let c =
            synthetic_clip(&SyntheticSpec { frames: 8, width: 48, height: 48, seed: 5, ..Default::default() }).unwrap();
        let m = c.masks.tensor().to_kind(tch::Kind::Float);
        // Every frame's subject shifted in colour, except frame 5's, left as it was.
        let change = m.repeat([1, 3, 1, 1]) * 0.6;
        let _ = change.get(5).zero_();
        let edit = Video::new((c.video.frames() + change).clamp(-1.0, 1.0), 8.0).unwrap();
        let check = check_mask_change(&c.video, &edit, &c.masks).unwrap().expect("frame 5 stands out");
        assert_eq!(check.frames, vec![5]);
        assert!(
            check.describe().starts_with("frame 5 stands out (change inside the masks 0.000"),
            "{}",
            check.describe()
        );
        // A uniform edit flags nothing.
        let even = Video::new((c.video.frames() + m.repeat([1, 3, 1, 1]) * 0.6).clamp(-1.0, 1.0), 8.0).unwrap();
        assert!(check_mask_change(&c.video, &even, &c.masks).unwrap().is_none());
        // Frames whose masks hold no subject are not compared: with only frame 0 masked, nothing stands out.
        let only_first = m.zeros_like();
        only_first.get(0).copy_(&m.get(0));
        let masks = crate::masks::Masks::new(only_first.shallow_clone()).unwrap();
        let edit =
            Video::new((c.video.frames() + only_first.repeat([1, 3, 1, 1]) * 0.6).clamp(-1.0, 1.0), 8.0).unwrap();
        assert!(check_mask_change(&c.video, &edit, &masks).unwrap().is_none());
    }

    /// An edit that loses its subject in most frames: the subject painted over with the colour around it
    /// in frames 0–5, kept in 6–7. Comparing frames with each other would single out 6–7, the good ones;
    /// the absolute check names 0–5 and says most frames look wrong.
    #[test]
    fn an_edit_that_loses_its_subject_in_most_frames_is_named_by_those_frames() {
        let c =
            synthetic_clip(&SyntheticSpec { frames: 8, width: 48, height: 48, seed: 2, ..Default::default() }).unwrap();
        let m = c.masks.tensor().to_kind(tch::Kind::Float).ge(0.5).to_kind(tch::Kind::Float);
        let frames = c.video.frames().shallow_clone();
        let outside = m.ones_like().f_sub(&m).unwrap().repeat([1, 3, 1, 1]);
        // The background's mean colour, frame by frame, painted inside the masks.
        let background = (&frames * &outside).sum_dim_intlist(&[2i64, 3][..], true, tch::Kind::Float)
            / outside.sum_dim_intlist(&[2i64, 3][..], true, tch::Kind::Float);
        let faded = &frames * &outside + background.expand_as(&frames) * m.repeat([1, 3, 1, 1]);
        let keep = Tensor::from_slice(&[0f32, 0., 0., 0., 0., 0., 1., 1.]).view([8, 1, 1, 1]);
        let edit = Video::new(&faded * keep.ones_like().f_sub(&keep).unwrap() + &frames * &keep, 8.0).unwrap();
        let check = check_subject_presence(&c.video, &edit, &c.masks).unwrap().expect("frames lost their subject");
        assert_eq!(check.frames, vec![0, 1, 2, 3, 4, 5]);
        assert!(check.most);
        assert!(
            check.describe().starts_with("most frames look wrong: frames 0, 1, 2, 3, 4, 5 lost their subject"),
            "{}",
            check.describe()
        );
        // The clip itself, and a recoloured subject that still stands out, lose nothing.
        assert!(check_subject_presence(&c.video, &c.video, &c.masks).unwrap().is_none());
        let recoloured = Video::new((c.video.frames() - m.repeat([1, 3, 1, 1]) * 0.8).clamp(-1.0, 1.0), 8.0).unwrap();
        assert!(check_subject_presence(&c.video, &recoloured, &c.masks).unwrap().is_none());
    }
}

#[cfg(test)]
mod colour_check_tests {
    use super::check_subject_colour;
    use crate::synthetic::{synthetic_clip, Shape, SyntheticSpec, Texture};
    use crate::Video;
    use tch::Tensor;

    /// An edit asked for a purple subject that came out purple in frames 0–2 and blue in 3–7: the blue
    /// frames are named, as most of the clip, with the colour they show.
    #[test]
    fn frames_without_the_asked_colour_are_named() {
        let clip = |color: &str| {
            let spec = SyntheticSpec {
                color: Some(color.into()),
                frames: 8,
                width: 64,
                height: 64,
                seed: 4,
                ..Default::default()
            };
            synthetic_clip(&spec).unwrap()
        };
        let (purple, blue) = (clip("purple"), clip("blue"));
        let frames = Tensor::cat(&[purple.video.frames().narrow(0, 0, 3), blue.video.frames().narrow(0, 3, 5)], 0);
        let edit = Video::new(frames, 8.0).unwrap();
        let check = check_subject_colour(&edit, &purple.masks, "purple triangle").unwrap().expect("frames named");
        assert_eq!(check.frames, [3, 4, 5, 6, 7]);
        assert!(check.most && check.judged_absolutely());
        assert_eq!(
            check.describe(),
            "most frames look wrong: frames 3, 4, 5, 6, 7 show no purple subject (nearest colour: blue, blue, blue, blue, blue)"
        );
        // All frames purple, or subject words without a colour: nothing to say.
        assert!(check_subject_colour(&purple.video, &purple.masks, "Purple triangle").unwrap().is_none());
        assert!(check_subject_colour(&edit, &purple.masks, "triangle").unwrap().is_none());
        // An object edit's masks are the subject's boxes, background and all: the subject is still read. A
        // red triangle on yellow fills half its box, and the box's mean colour is nearest orange.
        let red = synthetic_clip(&SyntheticSpec {
            shape: Some(Shape::Triangle),
            color: Some("red".into()),
            background: Some(Texture::Plain),
            background_color: Some("yellow".into()),
            frames: 4,
            seed: 4,
            ..Default::default()
        })
        .unwrap();
        let boxes = red.masks.boxes().unwrap();
        assert!(check_subject_colour(&red.video, &boxes, "red triangle").unwrap().is_none());
        let named = check_subject_colour(&red.video, &boxes, "pink triangle").unwrap().expect("frames named");
        assert_eq!(named.frames, [0, 1, 2, 3]);
        assert!(named.describe().ends_with("(nearest colour: red, red, red, red)"), "{}", named.describe());
    }
}
