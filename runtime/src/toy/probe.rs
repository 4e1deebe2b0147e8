//! Did an edit of a toy-world clip work? Measured from pixels alone: the subject the built-in segmenter
//! finds in the edited clip (clicked where the source subject was), its colour, its trajectory against the
//! source's, and how much of the background outside the subject survived.

use crate::error::{Error, Result};
use crate::masks::Masks;
use crate::media::Video;
use crate::segment::{segment, Builtin, Click, SegmentOptions};
use crate::synthetic::{SyntheticClip, COLORS};
use tch::{Kind, Tensor};

/// What an edit did to a synthetic clip.
#[derive(Debug, Clone)]
pub struct EditCheck {
    /// The named colour nearest the mean colour of the segmented subject.
    pub color: String,
    /// That mean colour (0–255 RGB).
    pub mean_rgb: [f64; 3],
    /// Distance (0–255 RGB units) from the mean colour to each named colour, in `COLORS` order.
    pub distances: Vec<f64>,
    /// Correlation of the edited subject's centroid trajectory with the source's (both centred).
    pub trajectory_corr: f64,
    /// PSNR (dB) of the edited clip against the source outside the source mask dilated by `margin`.
    pub background_psnr: f64,
    /// The subject masks found in the edited clip.
    pub masks: Masks,
}

/// Mean absolute change between frame `k` and `k + 1` of a clip, for every `k`.
pub fn frame_changes(v: &Video) -> Vec<f64> {
    let f = v.frames().to_kind(Kind::Float);
    (0..v.len() as i64 - 1).map(|k| (f.get(k + 1) - f.get(k)).abs().mean(Kind::Float).double_value(&[])).collect()
}

/// Seams of long-clip processing: the mean frame-to-frame change (`changes`, from [`frame_changes`])
/// between frames where a window of `windows` ends or starts, over the mean change elsewhere. About 1
/// when windows leave no trace; the source clip's own ratio is the reference.
pub fn seam_ratio(changes: &[f64], windows: &[vidtune_kernels::codenoise::Window]) -> f64 {
    let end = windows.last().map_or(0, |w| w.start + w.len);
    let (mut seam, mut inner) = (vec![], vec![]);
    for (k, c) in changes.iter().enumerate() {
        let edge = k as i64 + 1;
        if edge < end && windows.iter().any(|w| w.start == edge || w.start + w.len == edge) {
            seam.push(*c);
        } else {
            inner.push(*c);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    mean(&seam) / mean(&inner)
}

/// Centroids `(x, y)` of every frame's mask (NaN for an empty mask).
pub fn centroids(masks: &Masks) -> Vec<(f64, f64)> {
    let t = masks.tensor().to_kind(Kind::Float);
    let (h, w) = (masks.height(), masks.width());
    let ys = Tensor::arange(h, (Kind::Float, t.device())).view([1, 1, h, 1]) + 0.5;
    let xs = Tensor::arange(w, (Kind::Float, t.device())).view([1, 1, 1, w]) + 0.5;
    let area = t.sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Float);
    let cx = (&t * xs).sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Float) / &area;
    let cy = (&t * ys).sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Float) / &area;
    let cx = Vec::<f64>::try_from(cx.to_kind(Kind::Double)).unwrap_or_default();
    let cy = Vec::<f64>::try_from(cy.to_kind(Kind::Double)).unwrap_or_default();
    cx.into_iter().zip(cy).collect()
}

/// Correlation of two 2-D trajectories after removing each one's mean: 1 when one is a positive multiple
/// of the other. Frames where either is missing are skipped; a trajectory that does not move gives 0.
pub fn trajectory_correlation(a: &[(f64, f64)], b: &[(f64, f64)]) -> f64 {
    let pairs: Vec<_> = a.iter().zip(b).filter(|(p, q)| p.0.is_finite() && q.0.is_finite()).collect();
    if pairs.len() < 2 {
        return 0.0;
    }
    let n = pairs.len() as f64;
    let mean = |f: &dyn Fn(&(&(f64, f64), &(f64, f64))) -> f64| pairs.iter().map(f).sum::<f64>() / n;
    let (ax, ay) = (mean(&|p| p.0 .0), mean(&|p| p.0 .1));
    let (bx, by) = (mean(&|p| p.1 .0), mean(&|p| p.1 .1));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (p, q) in &pairs {
        let (dax, day, dbx, dby) = (p.0 - ax, p.1 - ay, q.0 - bx, q.1 - by);
        ab += dax * dbx + day * dby;
        aa += dax * dax + day * day;
        bb += dbx * dbx + dby * dby;
    }
    if aa <= 1e-12 || bb <= 1e-12 {
        return 0.0;
    }
    ab / (aa * bb).sqrt()
}

/// Measures `edited` against the synthetic `source` it was made from.
pub fn check_edit(source: &SyntheticClip, edited: &Video, margin: i64) -> Result<EditCheck> {
    check_edit_of(&source.video, &source.masks, edited, margin)
}

/// [`check_edit`] of a source clip and its subject's masks, from anywhere.
pub fn check_edit_of(video: &Video, masks: &Masks, edited: &Video, margin: i64) -> Result<EditCheck> {
    let source = SourceRef { video, masks };
    let (src, out) = (source.video.frames(), edited.frames());
    if src.size() != out.size() {
        return Err(Error::Invalid(format!(
            "the edited clip is {:?} but its source {:?}; compare clips of the same size",
            out.size(),
            src.size()
        )));
    }
    let truth = centroids(source.masks);
    let (x, y) = truth[0];
    let click = Click::Point { x, y, positive: true, frame: Some(0) };
    let masks = crate::progress::quietly(|| {
        segment(edited, &[click], &mut Builtin::first_stable_box(), &SegmentOptions::default())
    })?;
    let m = masks.tensor().to_kind(Kind::Float);
    let area = m.sum(Kind::Float).double_value(&[]).max(1.0);
    let rgb = (out + 1.0) * 127.5;
    let mean: Vec<f64> =
        (0..3).map(|c| (rgb.select(1, c).unsqueeze(1) * &m).sum(Kind::Float).double_value(&[]) / area).collect();
    let mean_rgb = [mean[0], mean[1], mean[2]];
    let distances: Vec<f64> =
        COLORS.iter().map(|(_, c)| (0..3).map(|i| (mean_rgb[i] - c[i] as f64).powi(2)).sum::<f64>().sqrt()).collect();
    let best = distances.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
    let trajectory_corr = trajectory_correlation(&truth, &centroids(&masks));
    let outside = source.masks.dilate(margin)?.invert()?.tensor().to_kind(Kind::Float);
    let q = |t: &Tensor| ((t + 1.0) * 127.5).round().clamp(0.0, 255.0);
    let se = ((q(src) - q(out)).square() * &outside).sum(Kind::Float).double_value(&[]);
    let count = outside.sum(Kind::Float).double_value(&[]) * 3.0;
    let background_psnr = 10.0 * (255.0f64.powi(2) / (se / count.max(1.0)).max(1e-10)).log10();
    Ok(EditCheck { color: COLORS[best].0.to_string(), mean_rgb, distances, trajectory_corr, background_psnr, masks })
}

/// Frame by frame, did an edit give the subject the asked colour where the source had it?
#[derive(Debug, Clone)]
pub struct FrameCheck {
    /// Per frame: the named colour nearest the subject found there (`"missing"` where the segmenter found
    /// under a fifth of the source subject's area: the subject vanished).
    pub colors: Vec<String>,
    /// Share of frames whose subject has the asked colour.
    pub hit_rate: f64,
    /// Mean IoU of the subject found in the edit with the source masks.
    pub iou: f64,
    /// PSNR (dB) of the background (outside the source masks dilated by the margin) against the source.
    pub background_psnr: f64,
    /// The subject found in the edit.
    pub masks: Masks,
}

/// The named colour nearest `rgb` (0–255).
pub fn nearest_color(rgb: [f64; 3]) -> &'static str {
    COLORS
        .iter()
        .min_by(|a, b| {
            let d = |c: &[u8; 3]| (0..3).map(|i| (rgb[i] - c[i] as f64).powi(2)).sum::<f64>();
            d(&a.1).total_cmp(&d(&b.1))
        })
        .map(|(n, _)| *n)
        .unwrap_or("?")
}

/// The pixels of `video` that have the named toy-world colour `color`: nearest to it of the eight named
/// colours and within 100 (0–255 RGB units) of it. The toy world's subjects are the only things of their
/// colour in a frame (a background never shares the subject's colour), so this finds a generated
/// subject without looking where it should be.
pub fn color_masks(video: &Video, color: &str) -> Result<Masks> {
    let k = COLORS.iter().position(|(n, _)| *n == color).ok_or_else(|| {
        Error::Invalid(format!(
            "color_masks: unknown colour {color:?}; expected one of {}",
            COLORS.iter().map(|(n, _)| format!("{n:?}")).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let rgb = (video.frames().to_kind(Kind::Float) + 1.0) * 127.5;
    let palette: Vec<f32> = COLORS.iter().flat_map(|(_, c)| c.map(|v| v as f32)).collect();
    let palette = Tensor::from_slice(&palette).view([COLORS.len() as i64, 1, 3, 1, 1]);
    // [colours, F, H, W] distances.
    let d = (rgb.unsqueeze(0) - palette).square().sum_dim_intlist([2i64].as_slice(), false, Kind::Float).sqrt();
    let nearest = d.argmin(0, false).eq(k as i64);
    let close = d.get(k as i64).lt(100.0);
    Masks::new(nearest.logical_and(&close).unsqueeze(1).to_kind(Kind::Float))
}

/// Measures `edited` frame by frame against its synthetic `source`, for an edit to colour `to`: in every
/// frame on its own, the built-in segmenter is clicked where the source subject's centre was, and the
/// subject it finds there is judged by its colour and its overlap with the source's.
pub fn check_frames(source: &SyntheticClip, edited: &Video, to: &str, margin: i64) -> Result<FrameCheck> {
    check_frames_of(&source.video, &source.masks, edited, to, margin)
}

/// [`check_frames`] of a source clip and its subject's masks, from anywhere (`compare` rows).
pub fn check_frames_of(video: &Video, masks: &Masks, edited: &Video, to: &str, margin: i64) -> Result<FrameCheck> {
    crate::synthetic::color_rgb(to)?;
    let source = SourceRef { video, masks };
    let whole = check_edit_of(video, masks, edited, margin)?;
    let clicks: Vec<Click> = centroids(source.masks)
        .into_iter()
        .enumerate()
        .filter(|(_, (x, _))| x.is_finite())
        .map(|(f, (x, y))| Click::Point { x, y, positive: true, frame: Some(f) })
        .collect();
    let opts = SegmentOptions { propagate: false, ..SegmentOptions::default() };
    let found = crate::progress::quietly(|| segment(edited, &clicks, &mut Builtin::first_stable_box(), &opts))?;
    let m = found.tensor().to_kind(Kind::Float);
    let src_area = source.masks.area();
    let rgb = (edited.frames() + 1.0) * 127.5;
    let mut colors = vec![];
    for f in 0..edited.len() as i64 {
        let mf = m.get(f);
        let area = mf.mean(Kind::Float).double_value(&[]);
        // Under a fifth of the source's area, or over three times it (the background was taken): missing.
        let src = src_area[f as usize];
        if area <= 0.0 || area < 0.2 * src || area > 3.0 * src {
            colors.push("missing".to_string());
            continue;
        }
        let n = mf.sum(Kind::Float).double_value(&[]);
        let frame = rgb.get(f);
        let mean: Vec<f64> =
            (0..3).map(|c| (frame.get(c) * mf.get(0)).sum(Kind::Float).double_value(&[]) / n).collect();
        colors.push(nearest_color([mean[0], mean[1], mean[2]]).to_string());
    }
    let hit_rate = colors.iter().filter(|c| *c == to).count() as f64 / colors.len().max(1) as f64;
    let iou = found.iou(source.masks)?.0;
    Ok(FrameCheck { colors, hit_rate, iou, background_psnr: whole.background_psnr, masks: found })
}

/// The source an edit is measured against.
struct SourceRef<'a> {
    video: &'a Video,
    masks: &'a Masks,
}

/// Settings of one tune → invert → sample edit.
#[derive(Debug, Clone)]
pub struct EditSettings {
    pub tune: crate::pipelines::tune::TuneOptions,
    pub invert_steps: i64,
    pub sample: crate::pipelines::sample::SampleOptions,
}

impl Default for EditSettings {
    /// The demo's settings for the toy models.
    fn default() -> Self {
        EditSettings {
            tune: crate::pipelines::tune::TuneOptions { steps: 40, lr: 1e-3, ..Default::default() },
            invert_steps: 20,
            sample: crate::pipelines::sample::SampleOptions {
                steps: 20,
                guidance: 4.0,
                seed: Some(33),
                ..Default::default()
            },
        }
    }
}

/// Tune-A-Video's edit of `clip`: inflate `sd` with `spec`, tune on (`clip`, `prompt`), DDIM-invert,
/// sample `edit` from the inverted latents.
pub fn edit_clip(
    sd: std::rc::Rc<crate::sd::StableDiffusion>,
    clip: &Video,
    prompt: &str,
    edit: &str,
    spec: &crate::video::VideoSpec,
    settings: &EditSettings,
) -> Result<Video> {
    let model = crate::video::inflate(sd, spec, settings.tune.seed)?;
    let tuned = crate::pipelines::tune::tune(&model, clip, prompt, &settings.tune)?;
    let inv = crate::pipelines::invert::invert(
        &tuned,
        clip,
        &crate::pipelines::invert::InvertOptions::steps(settings.invert_steps),
    )?;
    Ok(crate::pipelines::sample::sample(&tuned, edit, Some(&inv), &settings.sample)?.0)
}

/// The mask-guided workflow's settings for the toy models (`scripts/mask-guided.rhai`'s): guidance and
/// strength chosen on the dev split of `scripts/ablation.rhai` (`--set split=dev --set rows=search`).
#[derive(Debug, Clone)]
pub struct MaskedSettings {
    pub tune_steps: i64,
    pub lr: f64,
    pub steps: i64,
    pub guidance: f64,
    pub strength: f64,
    pub seed: u64,
}

impl Default for MaskedSettings {
    fn default() -> Self {
        MaskedSettings { tune_steps: 150, lr: 1e-3, steps: 20, guidance: 10.0, strength: 0.9, seed: 33 }
    }
}

/// The mask-guided edit of `clip` (the `mask-guided` preset): the subject segmented from one click at its
/// centre on frame 0, tuning with the masks, inversion with the clip's description under the masks, and
/// a sample with the masks, the subject's words, the background kept and the description as the
/// negative prompt. Returns the edit and the masks used.
pub fn mask_guided_edit(
    sd: std::rc::Rc<crate::sd::StableDiffusion>,
    clip: &SyntheticClip,
    edit: &str,
    subject: &str,
    settings: &MaskedSettings,
) -> Result<(Video, Masks)> {
    use crate::pipelines::{invert, sample, tune};
    let (x, y) = centroids(&clip.masks)[0];
    let click = Click::Point { x, y, positive: true, frame: Some(0) };
    let masks = crate::progress::quietly(|| {
        segment(&clip.video, &[click], &mut Builtin::default(), &SegmentOptions::default())
    })?;
    let model = crate::video::inflate(sd, &crate::video::VideoSpec::mask_guided(), settings.seed)?;
    let tune_opts =
        tune::TuneOptions { steps: settings.tune_steps, lr: settings.lr, seed: settings.seed, ..Default::default() };
    let clips = [tune::TuneClip {
        video: clip.video.clone(),
        prompt: clip.caption.clone(),
        masks: Some(masks.clone()),
        controls: vec![],
    }];
    let tuned = tune::tune_clips(&model, &clips, &tune_opts)?;
    let inv_opts = invert::InvertOptions {
        steps: settings.steps,
        prompt: clip.caption.clone(),
        masks: Some(masks.clone()),
        ..Default::default()
    };
    let inv = invert::invert(&tuned, &clip.video, &inv_opts)?;
    let o = sample::SampleOptions {
        steps: settings.steps,
        guidance: settings.guidance,
        seed: Some(settings.seed),
        negative: clip.caption.clone(),
        masks: Some(masks.clone()),
        subject: Some(subject.to_string()),
        keep_background: true,
        strength: settings.strength,
        ..Default::default()
    };
    Ok((sample::sample(&tuned, edit, Some(&inv), &o)?.0, masks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{synthetic_clip, Motion, Shape, SyntheticSpec, Texture};

    #[test]
    fn color_masks_find_the_subject_of_every_colour_and_nothing_else() {
        for (i, (color, _)) in COLORS.iter().enumerate() {
            let clip = synthetic_clip(&SyntheticSpec {
                color: Some(color.to_string()),
                background: Some(Texture::ALL[i % 4]),
                background_color: Some(COLORS[(i + 3) % 8].0.into()),
                frames: 3,
                seed: i as u64,
                ..Default::default()
            })
            .unwrap();
            let (iou, _) = color_masks(&clip.video, color).unwrap().iou(&clip.masks).unwrap();
            assert!(iou > 0.95, "{color}: IoU {iou}");
            let other = COLORS[(i + 1) % 8].0;
            let area: f64 = color_masks(&clip.video, other).unwrap().area().iter().sum();
            assert!(area < 0.01, "{other} in a {color} clip on {}: {area}", COLORS[(i + 3) % 8].0);
        }
        assert!(color_masks(&synthetic_clip(&SyntheticSpec::default()).unwrap().video, "mauve")
            .unwrap_err()
            .to_string()
            .contains("\"pink\""));
    }

    #[test]
    fn a_recoloured_clip_reads_as_its_new_colour_with_the_same_motion() {
        let spec = |color: &str| SyntheticSpec {
            shape: Some(Shape::Square),
            color: Some(color.into()),
            background: Some(Texture::Stripes),
            background_color: Some("green".into()),
            motion: Some(Motion::Bounce),
            frames: 6,
            seed: 3,
            ..Default::default()
        };
        let (red, blue) = (synthetic_clip(&spec("red")).unwrap(), synthetic_clip(&spec("blue")).unwrap());
        let same = check_edit(&red, &red.video, 2).unwrap();
        assert_eq!(same.color, "red");
        assert!(same.trajectory_corr > 0.99, "{}", same.trajectory_corr);
        assert!(same.background_psnr > 60.0, "{}", same.background_psnr);
        let edit = check_edit(&red, &blue.video, 2).unwrap();
        assert_eq!(edit.color, "blue");
        assert!(edit.trajectory_corr > 0.99, "{}", edit.trajectory_corr);
        assert!(edit.background_psnr > 40.0, "{}", edit.background_psnr);
        // A still subject does not correlate with a moving one.
        let a = [(1.0, 1.0), (2.0, 1.0), (3.0, 1.0)];
        assert_eq!(trajectory_correlation(&a, &[(5.0, 5.0); 3]), 0.0);
        assert!((trajectory_correlation(&a, &[(0.0, 0.0), (2.0, 0.0), (4.0, 0.0)]) - 1.0).abs() < 1e-12);
    }
}
