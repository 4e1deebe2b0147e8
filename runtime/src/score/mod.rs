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

mod checks;
pub use checks::*;

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

/// CLIP text alignment of each frame with `prompt` (100 × cosine), unclamped: the per-frame values of
/// [`score`], for one frame as well.
pub fn frame_alignments(clip: &ClipModel, video: &Video, prompt: &str) -> Result<Vec<f64>> {
    crate::error::ensure_finite("CLIP alignment: the frames", video.frames())?;
    let images = frame_embeddings(clip, video, ScoreOptions::default().batch)?;
    let text = clip.prompt_embed(prompt)?.to_device(tch::Device::Cpu);
    Ok(metrics::text_alignment(&images, &text, false)?.1)
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
