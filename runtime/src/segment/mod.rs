//! Segmentation with clicks: a mask sequence for the subject of a clip from a few clicks (or a box) on one
//! or more frames, propagated forwards and backwards through the clip. Two segmenters implement
//! [`FrameSegmenter`]: Segment Anything through ONNX Runtime ([`sam`]), and a built-in click-seeded graph
//! cut ([`builtin`]) that needs no weights.

pub mod gmm;
pub mod grabcut;
pub mod maxflow;
pub mod propagate;
pub mod sam;

use crate::error::{Error, Result};
use crate::masks::{Masks, Provenance};
use crate::media::Video;
use crate::progress::Progress;
use std::collections::BTreeMap;
use std::sync::Arc;
use tch::{Kind, Tensor};
use vidtune_kernels::image as kimage;
use vidtune_kernels::pil::{resize_u8, Filter};

/// A click in a frame's pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub positive: bool,
}

/// What is known about one frame's subject.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompt {
    pub points: Vec<Point>,
    /// `[x0, y0, x1, y1]`.
    pub bbox: Option<[f64; 4]>,
}

/// A user's click or box, on a given frame or on the default frame of the call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Click {
    Point { x: f64, y: f64, positive: bool, frame: Option<usize> },
    Box { x0: f64, y0: f64, x1: f64, y1: f64, frame: Option<usize> },
}

impl Click {
    fn frame(&self) -> Option<usize> {
        match self {
            Click::Point { frame, .. } | Click::Box { frame, .. } => *frame,
        }
    }

    fn describe(&self) -> String {
        // Coordinates as typed (12, 12.5), huge or odd ones in scientific form.
        let n = |v: &f64| if v.abs() < 1e9 { format!("{v}") } else { format!("{v:e}") };
        match self {
            Click::Point { x, y, positive, .. } => {
                format!("click({}, {}{})", n(x), n(y), if *positive { "" } else { ", false" })
            }
            Click::Box { x0, y0, x1, y1, .. } => format!("box({}, {}, {}, {})", n(x0), n(y0), n(x1), n(y1)),
        }
    }
}

/// One frame's mask from a segmenter.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameMask {
    pub width: usize,
    pub height: usize,
    pub mask: Vec<bool>,
    /// How sure the segmenter is (SAM: its IoU prediction; built-in: agreement with the moved previous mask).
    pub confidence: f64,
    /// The sanity check failed (area jump, empty mask): worth a look or another click.
    pub flagged: bool,
    /// SAM's low-resolution logits, fed back when propagating.
    pub low_res: Option<Vec<f32>>,
}

impl FrameMask {
    pub fn area(&self) -> usize {
        self.mask.iter().filter(|&&m| m).count()
    }

    /// Bounding box `[x0, y0, x1, y1]` in pixels (edges), if not empty.
    pub fn bbox(&self) -> Option<[f64; 4]> {
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        for (i, &m) in self.mask.iter().enumerate() {
            if m {
                let (x, y) = (i % self.width, i / self.width);
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
        (x0 != usize::MAX).then_some([x0 as f64, y0 as f64, x1 as f64, y1 as f64])
    }

    pub fn centroid(&self) -> Option<(f64, f64)> {
        let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
        for (i, &m) in self.mask.iter().enumerate() {
            if m {
                sx += (i % self.width) as f64 + 0.5;
                sy += (i / self.width) as f64 + 0.5;
                n += 1.0;
            }
        }
        (n > 0.0).then(|| (sx / n, sy / n))
    }

    pub fn iou(&self, other: &FrameMask) -> f64 {
        let inter = self.mask.iter().zip(&other.mask).filter(|(a, b)| **a && **b).count();
        let union = self.mask.iter().zip(&other.mask).filter(|(a, b)| **a || **b).count();
        if union == 0 {
            1.0
        } else {
            inter as f64 / union as f64
        }
    }
}

/// A segmenter of single frames, driven through the clip by [`segment`].
pub trait FrameSegmenter {
    /// Which segmenter ran (shown in outputs and `:help segment`).
    fn name(&self) -> String;
    /// Segments frame `index` of `video` from clicks.
    fn first(&mut self, video: &Video, index: usize, prompt: &Prompt) -> Result<FrameMask>;
    /// Segments frame `step.index` from the mask of its already segmented neighbour and the anchor's.
    fn next(&mut self, video: &Video, step: &Step) -> Result<FrameMask>;
    /// Revisits a clicked frame once its neighbour `near` (index `near_index`) has been propagated: a
    /// better mask for it, with an honest confidence, or `None` to keep the first one.
    fn refine(
        &mut self,
        _video: &Video,
        _index: usize,
        _prompt: &Prompt,
        _clicked: &FrameMask,
        _near_index: usize,
        _near: &FrameMask,
    ) -> Result<Option<FrameMask>> {
        Ok(None)
    }
}

/// One propagation step: the frame to segment, its segmented neighbour, and the clicked frame it
/// propagates from.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    pub index: usize,
    /// The neighbouring frame just segmented, and its mask.
    pub from: usize,
    pub prev: &'a FrameMask,
    /// The clicked frame this propagation started from, and its mask.
    pub anchor: usize,
    pub anchor_mask: &'a FrameMask,
}

/// Options of [`segment`].
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// The frame of clicks that name none.
    pub frame: usize,
    /// Propagate to every frame (else only clicked frames get masks).
    pub propagate: bool,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        SegmentOptions { frame: 0, propagate: true }
    }
}

/// Groups clicks by frame after checking them against the clip.
pub fn prompts(video: &Video, clicks: &[Click], default_frame: usize) -> Result<BTreeMap<usize, Prompt>> {
    if clicks.is_empty() {
        return Err(Error::Invalid("segment needs at least one click: [click(x, y)] (or box(x0, y0, x1, y1))".into()));
    }
    let (w, h, n) = (video.width() as f64, video.height() as f64, video.len());
    let mut out: BTreeMap<usize, Prompt> = BTreeMap::new();
    for c in clicks {
        let f = c.frame().unwrap_or(default_frame);
        if f >= n {
            return Err(Error::Invalid(format!(
                "{} is on frame {f}, but the clip has {n} frames (0..={})",
                c.describe(),
                n - 1
            )));
        }
        let inside = |x: f64, y: f64| (0.0..=w).contains(&x) && (0.0..=h).contains(&y);
        let p = out.entry(f).or_default();
        match *c {
            Click::Point { x, y, positive, .. } => {
                if !inside(x, y) {
                    return Err(Error::Invalid(format!("{} is outside the {w}x{h} frame", c.describe())));
                }
                p.points.push(Point { x, y, positive });
            }
            Click::Box { x0, y0, x1, y1, .. } => {
                if !inside(x0, y0) || !inside(x1, y1) || x1 <= x0 || y1 <= y0 {
                    return Err(Error::Invalid(format!(
                        "{} is not a box inside the {w}x{h} frame (x0 < x1, y0 < y1)",
                        c.describe()
                    )));
                }
                p.bbox = Some([x0, y0, x1, y1]);
            }
        }
    }
    Ok(out)
}

/// Segments every frame of `video` from `clicks`: clicked frames from their clicks, every other frame by
/// propagation from the nearest clicked frame (forwards after it, backwards before it). The masks know
/// their clip (for overlays) and their [`Provenance`] (segmenter, per-frame confidence, flagged frames).
pub fn segment(
    video: &Video,
    clicks: &[Click],
    segmenter: &mut dyn FrameSegmenter,
    opts: &SegmentOptions,
) -> Result<Masks> {
    let anchors = prompts(video, clicks, opts.frame)?;
    let n = video.len();
    let mut results: Vec<Option<FrameMask>> = vec![None; n];
    let mut progress = Progress::new("segment", n as u64).unit("frames");
    for (&f, p) in &anchors {
        results[f] = Some(segmenter.first(video, f, p)?);
        progress.step()?;
    }
    if opts.propagate {
        let keys: Vec<usize> = anchors.keys().copied().collect();
        let nearest = |i: usize| *keys.iter().min_by_key(|&&k| (k.abs_diff(i), k)).expect("at least one anchor");
        for &a in &keys {
            let anchor_mask = results[a].clone().expect("anchor segmented");
            // Forwards, then backwards, over the frames nearest to this anchor.
            for dir in [1i64, -1] {
                let mut prev = a;
                let mut i = a as i64 + dir;
                while i >= 0 && (i as usize) < n && results[i as usize].is_none() && nearest(i as usize) == a {
                    let cur = i as usize;
                    let prev_mask = results[prev].clone().expect("previous frame segmented");
                    results[cur] = Some(segmenter.next(
                        video,
                        &Step { index: cur, from: prev, prev: &prev_mask, anchor: a, anchor_mask: &anchor_mask },
                    )?);
                    progress.step()?;
                    prev = cur;
                    i += dir;
                }
            }
        }
        // Each clicked frame again, with what propagation learnt from its nearest propagated neighbour.
        for (&a, p) in &anchors {
            let near = [a + 1, a.wrapping_sub(1)].into_iter().find(|&i| i < n && !anchors.contains_key(&i));
            let (Some(near), Some(clicked)) = (near, results[a].clone()) else { continue };
            let Some(near_mask) = results[near].clone() else { continue };
            if let Some(better) = segmenter.refine(video, a, p, &clicked, near, &near_mask)? {
                results[a] = Some(better);
            }
        }
    }
    progress.finish();
    let (w, h) = (video.width(), video.height());
    let mut frames = Vec::with_capacity(n);
    let mut confidence = Vec::with_capacity(n);
    let mut flagged = vec![];
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Some(m) => {
                confidence.push(m.confidence);
                if m.flagged {
                    flagged.push(i);
                }
                frames.push(to_tensor(&m, w, h));
            }
            None => {
                confidence.push(0.0);
                frames.push(Tensor::zeros([1, h, w], (Kind::Float, tch::Device::Cpu)));
            }
        }
    }
    let mut masks = Masks::new(Tensor::stack(&frames, 0))?.with_source(video)?;
    masks.provenance = Some(Arc::new(Provenance { method: segmenter.name(), confidence, flagged }));
    Ok(masks)
}

/// A frame mask as `[1, H, W]` at the clip's size (bilinear upsampling of a working-resolution mask).
fn to_tensor(m: &FrameMask, w: i64, h: i64) -> Tensor {
    let data: Vec<f32> = m.mask.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
    let t = Tensor::from_slice(&data).view([1, 1, m.height as i64, m.width as i64]);
    if m.width as i64 == w && m.height as i64 == h {
        return t.squeeze_dim(0);
    }
    t.upsample_bilinear2d([h, w], false, None, None).gt(0.5).to_kind(Kind::Float).squeeze_dim(0)
}

/// Frame `i` of `video` as 8-bit RGB at most `max_side` on its longest side (Pillow bilinear), with the
/// scale applied.
pub fn frame_rgb(video: &Video, i: usize, max_side: usize) -> Result<(Frame, f64)> {
    let bytes = Vec::<u8>::try_from(kimage::to_rgb8_tensor(&video.frames().get(i as i64))?.flatten(0, -1))?;
    let (w, h) = (video.width() as usize, video.height() as usize);
    let scale = (max_side as f64 / w.max(h) as f64).min(1.0);
    if scale >= 1.0 {
        return Ok((Frame { width: w, height: h, rgb: bytes }, 1.0));
    }
    let (nw, nh) = (((w as f64 * scale).round() as usize).max(1), ((h as f64 * scale).round() as usize).max(1));
    Ok((
        Frame { width: nw, height: nh, rgb: resize_u8(&bytes, w, h, 3, nw, nh, Filter::Bilinear) },
        nw as f64 / w as f64,
    ))
}

/// The built-in segmenter as a [`FrameSegmenter`], with its working frames cached.
#[derive(Debug, Default)]
pub struct Builtin {
    /// A clicked frame takes the first box whose mask the next size agrees with, without asking the box two
    /// sizes larger ([`Builtin::first_stable_box`]).
    first_stable: bool,
    /// The clip the caches belong to (its frames' storage and size).
    clip: Option<(usize, Vec<i64>)>,
    frames: BTreeMap<usize, (Frame, f64)>,
    /// The subject's offset from its anchor frame, per propagated frame (working pixels).
    offsets: BTreeMap<usize, (i64, i64)>,
}

impl Builtin {
    /// The segmenter the edit checks use: clicked where a subject was drawn, it takes the smallest box whose
    /// mask the next size agrees with. A subject the edit drew weakly is not grown into its surroundings,
    /// and the checks measure as they always have; a user's subject of several colours may be cut short.
    pub fn first_stable_box() -> Self {
        Builtin { first_stable: true, ..Default::default() }
    }

    fn frame(&mut self, video: &Video, i: usize) -> Result<(Frame, f64)> {
        let clip = (video.frames().data_ptr() as usize, video.frames().size());
        if self.clip.as_ref() != Some(&clip) {
            self.frames.clear();
            self.offsets.clear();
            self.clip = Some(clip);
        }
        if let std::collections::btree_map::Entry::Vacant(e) = self.frames.entry(i) {
            e.insert(frame_rgb(video, i, grabcut::WORK_MAX)?);
        }
        Ok(self.frames[&i].clone())
    }
}

impl FrameSegmenter for Builtin {
    fn name(&self) -> String {
        "built-in graph cut (no SAM files given)".into()
    }

    fn first(&mut self, video: &Video, index: usize, prompt: &Prompt) -> Result<FrameMask> {
        let (frame, s) = self.frame(video, index)?;
        let scaled = Prompt {
            points: prompt.points.iter().map(|p| Point { x: p.x * s, y: p.y * s, positive: p.positive }).collect(),
            bbox: prompt.bbox.map(|b| b.map(|v| v * s)),
        };
        self.offsets.insert(index, (0, 0));
        grabcut::segment_clicked(&frame, &scaled, !self.first_stable)
    }

    fn refine(
        &mut self,
        video: &Video,
        index: usize,
        prompt: &Prompt,
        clicked: &FrameMask,
        near_index: usize,
        near: &FrameMask,
    ) -> Result<Option<FrameMask>> {
        let (frame, s) = self.frame(video, index)?;
        let (near_frame, _) = self.frame(video, near_index)?;
        let scaled = Prompt {
            points: prompt.points.iter().map(|p| Point { x: p.x * s, y: p.y * s, positive: p.positive }).collect(),
            bbox: prompt.bbox.map(|b| b.map(|v| v * s)),
        };
        propagate::refine_clicked(&frame, clicked, &near_frame, near, &scaled).map(Some)
    }

    fn next(&mut self, video: &Video, step: &Step) -> Result<FrameMask> {
        let Step { index, from, prev, anchor, anchor_mask } = *step;
        let (frame, _) = self.frame(video, index)?;
        let (prev_frame, _) = self.frame(video, from)?;
        let (anchor_frame, _) = self.frame(video, anchor)?;
        let offset = if from == anchor { (0, 0) } else { self.offsets.get(&from).copied().unwrap_or((0, 0)) };
        let (mask, offset) = propagate::segment_next(&frame, &prev_frame, prev, (&anchor_frame, anchor_mask), offset)?;
        self.offsets.insert(index, offset);
        Ok(mask)
    }
}

/// An 8-bit RGB frame at working resolution.
#[derive(Debug, Clone)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

impl Frame {
    pub(crate) fn color(&self, i: usize) -> [f64; 3] {
        [self.rgb[3 * i] as f64, self.rgb[3 * i + 1] as f64, self.rgb[3 * i + 2] as f64]
    }

    pub(crate) fn len(&self) -> usize {
        self.width * self.height
    }
}
