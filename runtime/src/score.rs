//! Scoring edits with CLIP, as the papers do: text alignment (100 × cosine of each frame with the prompt,
//! averaged), frame consistency (100 × mean cosine over all pairs of frames, or adjacent ones), plus
//! VBench's temporal flickering (no model). Comparisons of several results render as tables (terminal,
//! Markdown, CSV, HTML).

use crate::cache::{KeyBuilder, MemoryCache};
use crate::error::{Error, Result};
use crate::media::Video;
use crate::models::clip::ClipModel;
pub use crate::table::Table;
use std::path::Path;
use tch::Tensor;
use vidtune_kernels::image as kimage;
use vidtune_kernels::metrics::{self, Pairs};

/// How to score.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    pub pairs: Pairs,
    /// Clamp per-frame alignment at 0 (torchmetrics' CLIPScore convention).
    pub clamp: bool,
    /// Frames per CLIP forward.
    pub batch: i64,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions { pairs: Pairs::All, clamp: false, batch: 16 }
    }
}

/// The scores of one clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub prompt: String,
    pub frames: usize,
    pub text_alignment: f64,
    pub per_frame_alignment: Vec<f64>,
    pub frame_consistency: f64,
    pub pair_similarity: Vec<f64>,
    pub pairs: Pairs,
    pub flicker: f64,
}

impl Score {
    /// The scores as JSON (for sidecars).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "prompt": self.prompt,
            "frames": self.frames,
            "text_alignment": self.text_alignment,
            "frame_consistency": self.frame_consistency,
            "pairs": match self.pairs { Pairs::All => "all", Pairs::Adjacent => "adjacent" },
            "temporal_flickering": self.flicker,
            "per_frame_alignment": self.per_frame_alignment,
            "pair_similarity": self.pair_similarity,
        })
    }
}

/// CLIP pixel values of every frame, `[F, 3, S, S]`.
pub fn preprocess_video(clip: &ClipModel, video: &Video) -> Result<Tensor> {
    let bytes = kimage::to_rgb8_tensor(video.frames())?;
    let (w, h) = (video.width() as usize, video.height() as usize);
    let size = clip.config.vision_config.image_size;
    let frames = (0..video.len() as i64)
        .map(|i| {
            let px = Vec::<u8>::try_from(bytes.get(i).flatten(0, -1))?;
            clip.processor.preprocess(&px, w, h, size)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&frames, 0))
}

/// CLIP image embeddings of every frame, `[F, projection]`, in batches.
pub fn frame_embeddings(clip: &ClipModel, video: &Video, batch: i64) -> Result<Tensor> {
    let pixels = preprocess_video(clip, video)?;
    let chunks = pixels.split(batch.max(1), 0);
    let mut progress = crate::progress::Progress::new("score", video.len() as u64).unit("frames");
    let mut embeds = Vec::with_capacity(chunks.len());
    for c in &chunks {
        embeds.push(clip.image_embeds(c)?);
        progress.inc(c.size()[0] as u64);
        progress.check()?;
    }
    progress.finish();
    Ok(Tensor::cat(&embeds, 0).to_device(tch::Device::Cpu))
}

thread_local! {
    static SCORES: MemoryCache<Score> = MemoryCache::default();
}

/// Scores `video` against `prompt` (memoised in this process).
pub fn score(clip: &ClipModel, video: &Video, prompt: &str, opts: &ScoreOptions) -> Result<Score> {
    if video.len() < 2 {
        return Err(Error::Invalid(format!("scoring needs a clip of at least 2 frames, got {}", video.len())));
    }
    crate::error::ensure_finite("score: the clip's frames", video.frames())?;
    let key = KeyBuilder::new("score")
        .text(&clip.identity)
        .video(video)
        .text(prompt)
        .text(&format!("{:?}{}", opts.pairs, opts.clamp))
        .finish();
    if let Some(s) = SCORES.with(|c| c.get(&key)) {
        return Ok(s);
    }
    let images = frame_embeddings(clip, video, opts.batch)?;
    let text = clip.prompt_embed(prompt)?.to_device(tch::Device::Cpu);
    let (text_alignment, per_frame_alignment) = metrics::text_alignment(&images, &text, opts.clamp)?;
    let (frame_consistency, pair_similarity) = metrics::frame_consistency(&images, opts.pairs)?;
    let flicker = metrics::temporal_flickering(video.frames())?;
    let s = Score {
        prompt: prompt.to_string(),
        frames: video.len(),
        text_alignment,
        per_frame_alignment,
        frame_consistency,
        pair_similarity,
        pairs: opts.pairs,
        flicker,
    };
    SCORES.with(|c| c.insert(&key, s.clone()));
    Ok(s)
}

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
    let ring_width = (w.min(h) / 16).max(2);
    let inside = m.tensor().to_kind(tch::Kind::Float).ge(0.5).to_kind(tch::Kind::Float);
    let grown = m.dilate(ring_width)?.tensor().to_kind(tch::Kind::Float).ge(0.5).to_kind(tch::Kind::Float);
    let ring = (grown - &inside).clamp_min(0.0);
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
/// ([`crate::synthetic::COLORS`]), and for every frame of `edit` whose subject (inside `masks`, eroded by
/// a pixel) is nearer another of them, that colour: an edit that missed the asked colour, judged frame by
/// frame against the colour itself. `None` when the subject names no basic colour or every frame has it.
pub fn check_subject_colour(edit: &Video, masks: &crate::masks::Masks, subject: &str) -> Result<Option<FrameCheck>> {
    let names: Vec<&str> = crate::synthetic::COLORS.iter().map(|(n, _)| *n).collect();
    let Some(asked) = subject.split_whitespace().map(str::to_lowercase).find(|w| names.contains(&w.as_str())) else {
        return Ok(None);
    };
    if masks.len() != edit.len() {
        return Ok(None);
    }
    let m = masks.resize(edit.width(), edit.height())?.erode(1)?;
    let rgb = vidtune_kernels::metrics::region_mean_rgb(edit.frames(), m.tensor())?;
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

/// A table cell for Markdown: prompts and names are text, never markup — HTML is escaped as entities,
/// Markdown's inline syntax and the cell separator with backslashes, line breaks become spaces.
pub fn markdown_cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' => out.push(' '),
            '\\' | '|' | '`' | '*' | '_' | '[' | ']' | '#' | '!' => {
                out.push('\\');
                out.push(ch);
            }
            c => out.push(c),
        }
    }
    out
}

/// A CSV cell that spreadsheets will not run as a formula: text starting with `=`, `+`, `-`, `@`, a tab or
/// a carriage return gets a leading `'` (numbers are left as they are).
pub fn csv_safe(text: &str) -> String {
    let risky = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && text.trim().parse::<f64>().is_err() {
        format!("'{text}")
    } else {
        text.to_string()
    }
}

/// How an edit of a clip with a known subject came out, averaged over the clips of a row: the per-frame
/// share of frames whose subject has the asked colour, the overlap of the edit's subject with the
/// source's masks, and the background's PSNR against the source (see [`crate::toy::probe`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EditMetrics {
    pub color_hit_rate: f64,
    pub subject_iou: f64,
    pub background_psnr: f64,
}

impl EditMetrics {
    /// The mean of several.
    pub fn mean(all: &[EditMetrics]) -> Option<EditMetrics> {
        let n = all.len() as f64;
        (!all.is_empty()).then(|| EditMetrics {
            color_hit_rate: all.iter().map(|m| m.color_hit_rate).sum::<f64>() / n,
            subject_iou: all.iter().map(|m| m.subject_iou).sum::<f64>() / n,
            background_psnr: all.iter().map(|m| m.background_psnr).sum::<f64>() / n,
        })
    }
}

impl Score {
    /// The mean scores of several clips (per-frame and per-pair values concatenated), for a row that
    /// stands for a setting tried on several clips.
    pub fn mean(all: &[Score]) -> Option<Score> {
        let first = all.first()?;
        let n = all.len() as f64;
        Some(Score {
            prompt: if all.iter().all(|s| s.prompt == first.prompt) {
                first.prompt.clone()
            } else {
                format!("{} prompts", all.len())
            },
            frames: all.iter().map(|s| s.frames).sum(),
            text_alignment: all.iter().map(|s| s.text_alignment).sum::<f64>() / n,
            per_frame_alignment: all.iter().flat_map(|s| s.per_frame_alignment.iter().copied()).collect(),
            frame_consistency: all.iter().map(|s| s.frame_consistency).sum::<f64>() / n,
            pair_similarity: all.iter().flat_map(|s| s.pair_similarity.iter().copied()).collect(),
            pairs: first.pairs,
            flicker: all.iter().map(|s| s.flicker).sum::<f64>() / n,
        })
    }
}

/// A comparison of several scored results, one row each; rows of edits with a known subject also carry
/// [`EditMetrics`].
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    pub rows: Vec<(String, Score)>,
    /// Per row (by index), the edit metrics, where known.
    pub edits: Vec<Option<EditMetrics>>,
}

impl Comparison {
    fn has_edits(&self) -> bool {
        self.edits.iter().any(Option::is_some)
    }

    fn headers(&self) -> Vec<&'static str> {
        let mut h = vec!["name"];
        if self.has_edits() {
            h.extend(["colour hit rate", "subject IoU", "background PSNR"]);
        }
        h.extend(["text alignment", "frame consistency", "temporal flickering", "frames", "prompt"]);
        h
    }

    /// Whether column `i` holds numbers (right-aligned).
    fn numeric(&self, i: usize) -> bool {
        i > 0 && i + 1 < self.headers().len()
    }

    fn cells(&self) -> Vec<Vec<String>> {
        let edits = self.has_edits();
        self.rows
            .iter()
            .enumerate()
            .map(|(i, (name, s))| {
                let mut r = vec![name.clone()];
                if edits {
                    match self.edits.get(i).copied().flatten() {
                        Some(e) => r.extend([
                            format!("{:.0} %", 100.0 * e.color_hit_rate),
                            format!("{:.2}", e.subject_iou),
                            format!("{:.1} dB", e.background_psnr),
                        ]),
                        None => r.extend(["–".to_string(), "–".to_string(), "–".to_string()]),
                    }
                }
                r.extend([
                    format!("{:.2}", s.text_alignment),
                    format!("{:.2}", s.frame_consistency),
                    format!("{:.4}", s.flicker),
                    s.frames.to_string(),
                    s.prompt.clone(),
                ]);
                r
            })
            .collect()
    }

    /// The table's text: headers, cells and which columns hold numbers.
    pub fn table(&self) -> Table {
        let headers: Vec<String> = self.headers().iter().map(|h| h.to_string()).collect();
        let numeric = (0..headers.len()).map(|i| self.numeric(i)).collect();
        Table { headers, rows: self.cells(), numeric }
    }

    pub fn to_pretty(&self) -> String {
        self.table().to_pretty()
    }

    pub fn to_markdown(&self) -> String {
        self.table().to_markdown()
    }

    pub fn to_csv(&self) -> String {
        self.table().to_csv()
    }

    pub fn to_html(&self) -> String {
        self.table().to_html()
    }

    /// The rows as JSON: name, score and, where known, the edit metrics.
    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, (n, s))| {
                let mut row = serde_json::json!({"name": n, "score": s.to_json()});
                if let Some(e) = self.edits.get(i).copied().flatten() {
                    row["edit"] = serde_json::json!({
                        "color_hit_rate": e.color_hit_rate,
                        "subject_iou": e.subject_iou,
                        "background_psnr": e.background_psnr,
                    });
                }
                row
            })
            .collect();
        serde_json::Value::Array(rows)
    }

    /// Saves as `.md`, `.csv`, `.html` or `.json` by extension, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.table().save(path, Some(&self.to_json()))
    }
}

#[cfg(test)]
mod export_tests {
    use super::{csv_safe, markdown_cell};

    #[test]
    fn prompts_cannot_inject_markup_or_formulas() {
        assert_eq!(markdown_cell("<img src=x onerror=alert(1)> a|b"), "&lt;img src=x onerror=alert(1)&gt; a\\|b");
        assert_eq!(markdown_cell("**bold** [link](u)"), "\\*\\*bold\\*\\* \\[link\\](u)");
        assert_eq!(csv_safe("=HYPERLINK(\"http://x\")"), "'=HYPERLINK(\"http://x\")");
        assert_eq!(csv_safe("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_safe("-0.25"), "-0.25");
        assert_eq!(csv_safe("a red car"), "a red car");
    }
}

#[cfg(test)]
mod frame_check_tests {
    use super::*;
    use crate::synthetic::{synthetic_clip, SyntheticSpec};

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
    use crate::synthetic::{synthetic_clip, SyntheticSpec};
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
    }
}
