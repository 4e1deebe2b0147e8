//! The built-in segmenter's cut: GrabCut (Rother et al., 2004: Gaussian-mixture colour models of subject and
//! background, contrast-sensitive smoothness, min-cut by Boykov–Kolmogorov) seeded by clicks or a box, and
//! propagated through the clip by the previous frame's mask moved to where the subject's colours went.
//! No weights; good on clean subjects, usable on real footage.
//!
//! A click alone does not say how large the subject is: candidate boxes of growing size around the clicks
//! are tried, and the first whose cut does not run into the box's sides is kept.

use super::gmm::Gmm;
use super::maxflow::{Graph, Side};
use super::{Frame, FrameMask, Point, Prompt};
use crate::error::{Error, Result};

/// Frames are segmented at most this large (longest side); masks are scaled back.
pub const WORK_MAX: usize = 256;
/// Smoothness weight (GrabCut's γ).
const LAMBDA: f64 = 50.0;
pub(super) const HARD: f64 = 1e9;
/// GrabCut iterations on a clicked frame.
const ITERATIONS: usize = 4;
/// Candidate box sizes around a click, as fractions of the frame's longest side.
const BOX_SIZES: [f64; 6] = [0.12, 0.2, 0.3, 0.42, 0.58, 0.8];
/// A candidate box holds the subject when growing it changes the mask less than this (IoU).
const BOX_STABLE: f64 = 0.75;
/// Colour-model samples per fit, at most (a regular subsample beyond).
const MAX_SAMPLES: usize = 12_000;
/// Cost (nats) of keeping a pixel a negative click points at (see `negative_regions`).
const NEGATIVE_COST: f64 = 10.0;
/// How alike (RGB distance) a pixel must be to a negative click's colour to be pointed at.
const NEGATIVE_COLOUR_SIGMA: f64 = 24.0;

/// A pixel rectangle `[x0, y0, x1, y1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Rect {
    pub(super) x0: usize,
    pub(super) y0: usize,
    pub(super) x1: usize,
    pub(super) y1: usize,
}

impl Rect {
    pub(super) fn full(frame: &Frame) -> Rect {
        Rect { x0: 0, y0: 0, x1: frame.width, y1: frame.height }
    }

    /// `[x0, y0, x1, y1]` in (fractional) pixel edges, rounded outwards and clipped to the frame.
    fn around(frame: &Frame, b: [f64; 4]) -> Rect {
        let clip = |v: f64, max: usize| (v.max(0.0) as usize).min(max);
        Rect {
            x0: clip(b[0].floor(), frame.width),
            y0: clip(b[1].floor(), frame.height),
            x1: clip(b[2].ceil(), frame.width).max(clip(b[0].floor(), frame.width) + 1).min(frame.width),
            y1: clip(b[3].ceil(), frame.height).max(clip(b[1].floor(), frame.height) + 1).min(frame.height),
        }
    }

    pub(super) fn grow(&self, frame: &Frame, by: usize) -> Rect {
        Rect {
            x0: self.x0.saturating_sub(by),
            y0: self.y0.saturating_sub(by),
            x1: (self.x1 + by).min(frame.width),
            y1: (self.y1 + by).min(frame.height),
        }
    }

    fn contains(&self, frame: &Frame, i: usize) -> bool {
        let (x, y) = (i % frame.width, i / frame.width);
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }
}

/// The colours of the pixels `which` accepts, regularly subsampled to at most [`MAX_SAMPLES`].
pub(super) fn samples(frames: &[(&Frame, &dyn Fn(usize) -> bool)]) -> Vec<[f64; 3]> {
    let total: usize = frames.iter().map(|(f, which)| (0..f.len()).filter(|&i| which(i)).count()).sum();
    let stride = total.div_ceil(MAX_SAMPLES).max(1);
    let mut out = Vec::with_capacity(total / stride + 1);
    let mut k = 0;
    for (f, which) in frames {
        for i in 0..f.len() {
            if which(i) {
                if k % stride == 0 {
                    out.push(f.color(i));
                }
                k += 1;
            }
        }
    }
    out
}

fn disk(frame: &Frame, x: f64, y: f64, r: f64) -> Vec<usize> {
    let mut out = vec![];
    let (w, h) = (frame.width as i64, frame.height as i64);
    let (cx, cy, ri) = (x as i64, y as i64, r.ceil() as i64);
    for yy in (cy - ri).max(0)..=(cy + ri).min(h - 1) {
        for xx in (cx - ri).max(0)..=(cx + ri).min(w - 1) {
            let (dx, dy) = (xx as f64 + 0.5 - x, yy as f64 + 0.5 - y);
            if dx * dx + dy * dy <= r * r {
                out.push((yy * w + xx) as usize);
            }
        }
    }
    out
}

/// Neighbour offsets (dx, dy, 1/distance) of the 8-neighbourhood, each edge once.
const NEIGHBOURS: [(i64, i64, f64); 4] =
    [(1, 0, 1.0), (0, 1, 1.0), (1, 1, std::f64::consts::FRAC_1_SQRT_2), (-1, 1, std::f64::consts::FRAC_1_SQRT_2)];

/// GrabCut's β: 1 / (2 · mean squared colour difference between neighbours).
pub(super) fn beta(frame: &Frame) -> f64 {
    let (w, h) = (frame.width as i64, frame.height as i64);
    let (mut sum, mut count) = (0.0, 0.0);
    for y in 0..h {
        for x in 0..w {
            for (dx, dy, _) in NEIGHBOURS {
                let (xx, yy) = (x + dx, y + dy);
                if xx >= 0 && xx < w && yy >= 0 && yy < h {
                    let (a, b) = (frame.color((y * w + x) as usize), frame.color((yy * w + xx) as usize));
                    sum += (0..3).map(|k| (a[k] - b[k]).powi(2)).sum::<f64>();
                    count += 1.0;
                }
            }
        }
    }
    if sum > 0.0 {
        count / (2.0 * sum)
    } else {
        0.0
    }
}

/// Per-pixel costs of labelling subject / background (hard constraints as `HARD`).
pub(super) struct Unary {
    pub(super) fg: Vec<f64>,
    pub(super) bg: Vec<f64>,
}

/// The minimum cut inside `rect` (everything outside it is background, so a subject pixel on the
/// rectangle's edge pays for its neighbours outside), and its energy.
pub(super) fn cut(frame: &Frame, unary: &Unary, beta: f64, rect: Rect) -> (Vec<bool>, f64) {
    let (rw, rh) = (rect.x1 - rect.x0, rect.y1 - rect.y0);
    let node = |x: usize, y: usize| (y - rect.y0) * rw + (x - rect.x0);
    let inside =
        |x: i64, y: i64| x >= rect.x0 as i64 && x < rect.x1 as i64 && y >= rect.y0 as i64 && y < rect.y1 as i64;
    let in_frame = |x: i64, y: i64| x >= 0 && x < frame.width as i64 && y >= 0 && y < frame.height as i64;
    let weight = |i: usize, j: usize, inv: f64| {
        let (a, b) = (frame.color(i), frame.color(j));
        let d2: f64 = (0..3).map(|k| (a[k] - b[k]).powi(2)).sum();
        LAMBDA * inv * (-beta * d2).exp()
    };
    let mut g = Graph::new(rw * rh, 4 * rw * rh);
    for y in rect.y0..rect.y1 {
        for x in rect.x0..rect.x1 {
            let i = y * frame.width + x;
            let mut fg_cost = unary.fg[i];
            for (dx, dy, inv) in NEIGHBOURS {
                for (xx, yy) in [(x as i64 + dx, y as i64 + dy), (x as i64 - dx, y as i64 - dy)] {
                    if in_frame(xx, yy) && !inside(xx, yy) {
                        fg_cost += weight(i, yy as usize * frame.width + xx as usize, inv);
                    }
                }
                let (xx, yy) = (x as i64 + dx, y as i64 + dy);
                if inside(xx, yy) {
                    let c = weight(i, yy as usize * frame.width + xx as usize, inv);
                    g.add_edge(node(x, y), node(xx as usize, yy as usize), c, c);
                }
            }
            // Source = subject: cutting s→i labels i background (costs bg), cutting i→t labels it subject.
            g.add_terminal(node(x, y), unary.bg[i], fg_cost);
        }
    }
    let energy = g.maxflow();
    let mut out = vec![false; frame.len()];
    for y in rect.y0..rect.y1 {
        for x in rect.x0..rect.x1 {
            out[y * frame.width + x] = g.side(node(x, y)) == Side::Source;
        }
    }
    (out, energy)
}

/// The 4-connected components of `mask` (as pixel lists) that `keep` accepts, as a mask.
pub(super) fn components_kept(frame: &Frame, mask: &[bool], keep: &dyn Fn(&[usize]) -> bool) -> Vec<bool> {
    let n = mask.len();
    let mut seen = vec![false; n];
    let mut out = vec![false; n];
    for start in 0..n {
        if !mask[start] || seen[start] {
            continue;
        }
        let mut comp = vec![start];
        seen[start] = true;
        let mut k = 0;
        while k < comp.len() {
            let i = comp[k];
            k += 1;
            let (x, y) = (i % frame.width, i / frame.width);
            let neigh = [
                (x > 0).then(|| i - 1),
                (x + 1 < frame.width).then(|| i + 1),
                (y > 0).then(|| i - frame.width),
                (y + 1 < frame.height).then(|| i + frame.width),
            ];
            for j in neigh.into_iter().flatten() {
                if mask[j] && !seen[j] {
                    seen[j] = true;
                    comp.push(j);
                }
            }
        }
        if keep(&comp) {
            comp.into_iter().for_each(|i| out[i] = true);
        }
    }
    out
}

/// Extra cost (nats) of labelling each pixel subject because of negative clicks: pixels coloured like a
/// negative click and nearer to it than to every positive click (the box's centre without one) — the region the
/// user pointed at, even when it shares the subject's colours; the subject's own pixels of other colours
/// next to a negative click are left alone.
fn negative_regions(frame: &Frame, pos: &[&Point], neg: &[&Point], bbox: Option<[f64; 4]>) -> Vec<f64> {
    let mut out = vec![0.0; frame.len()];
    let mut anchors: Vec<(f64, f64)> = pos.iter().map(|p| (p.x, p.y)).collect();
    if let (true, Some([x0, y0, x1, y1])) = (anchors.is_empty(), bbox) {
        anchors.push(((x0 + x1) / 2.0, (y0 + y1) / 2.0));
    }
    if neg.is_empty() || anchors.is_empty() {
        return out;
    }
    let r = seed_radius(frame);
    for p in neg {
        let disk = disk(frame, p.x, p.y, r);
        let mut c = [0.0; 3];
        for &i in &disk {
            let ci = frame.color(i);
            (0..3).for_each(|k| c[k] += ci[k] / disk.len().max(1) as f64);
        }
        for (i, o) in out.iter_mut().enumerate() {
            let (x, y) = ((i % frame.width) as f64 + 0.5, (i / frame.width) as f64 + 0.5);
            let dn = ((x - p.x).powi(2) + (y - p.y).powi(2)).sqrt();
            let dp = anchors.iter().map(|a| ((x - a.0).powi(2) + (y - a.1).powi(2)).sqrt()).fold(f64::MAX, f64::min);
            // 0 on the bisector, 1 from a third of the way towards the negative click.
            let near = (3.0 * (dp - dn) / (dp + dn).max(1e-9)).clamp(0.0, 1.0);
            let ci = frame.color(i);
            let d2: f64 = (0..3).map(|k| (ci[k] - c[k]).powi(2)).sum();
            let alike = (-d2 / (2.0 * NEGATIVE_COLOUR_SIGMA * NEGATIVE_COLOUR_SIGMA)).exp();
            *o = f64::max(*o, NEGATIVE_COST * near * alike);
        }
    }
    out
}

fn seed_radius(frame: &Frame) -> f64 {
    (0.015 * frame.width.min(frame.height) as f64).max(1.5)
}

/// What one clicked frame's GrabCut is given.
struct Seeds<'a> {
    fg: &'a [usize],
    bg: &'a [usize],
    /// Extra subject costs (negative clicks).
    avoid: &'a [f64],
    beta: f64,
}

/// GrabCut inside `rect` (outside it: background) from the initial subject `init`; the mask and the
/// energy of its last cut.
fn grabcut(frame: &Frame, rect: Rect, seeds: &Seeds, mut mask: Vec<bool>) -> (Vec<bool>, f64) {
    let n = frame.len();
    seeds.bg.iter().for_each(|&i| mask[i] = false);
    seeds.fg.iter().for_each(|&i| mask[i] = true);
    let mut fg = Gmm::fit(&samples(&[(frame, &|i| mask[i])]));
    let mut bg = Gmm::fit(&samples(&[(frame, &|i| !mask[i])]));
    let fg_set: std::collections::HashSet<usize> = seeds.fg.iter().copied().collect();
    let mut energy = 0.0;
    for it in 0..ITERATIONS {
        let mut u = Unary { fg: vec![0.0; n], bg: vec![0.0; n] };
        for y in rect.y0..rect.y1 {
            for x in rect.x0..rect.x1 {
                let i = y * frame.width + x;
                let c = frame.color(i);
                (u.fg[i], u.bg[i]) = (fg.nll(&c) + seeds.avoid[i], bg.nll(&c));
            }
        }
        seeds.fg.iter().for_each(|&i| (u.fg[i], u.bg[i]) = (0.0, HARD));
        seeds.bg.iter().for_each(|&i| (u.fg[i], u.bg[i]) = (HARD, 0.0));
        let (cut_mask, e) = cut(frame, &u, seeds.beta, rect);
        energy = e;
        mask = if fg_set.is_empty() {
            cut_mask
        } else {
            components_kept(frame, &cut_mask, &|c| c.iter().any(|i| fg_set.contains(i)))
        };
        if it + 1 < ITERATIONS {
            fg = fg.refit(&samples(&[(frame, &|i| mask[i])]));
            bg = bg.refit(&samples(&[(frame, &|i| !mask[i])]));
        }
    }
    (mask, energy)
}

/// GrabCut in `rect`, started twice: from the whole rectangle as the subject (GrabCut's own start), and
/// from the rectangle less the pixels that look like what lies outside it (better on textured
/// backgrounds); the lower-energy result wins.
fn grabcut_box(frame: &Frame, rect: Rect, seeds: &Seeds) -> Vec<bool> {
    let n = frame.len();
    let inside: Vec<bool> = (0..n).map(|i| rect.contains(frame, i)).collect();
    let (whole, e_whole) = grabcut(frame, rect, seeds, inside.clone());
    let outside = samples(&[(frame, &|i| !inside[i])]);
    if outside.len() < 50 {
        return whole;
    }
    let bg = Gmm::fit(&outside);
    let mut typical: Vec<f64> = outside.iter().map(|c| bg.nll(c)).collect();
    typical.sort_by(f64::total_cmp);
    let threshold = typical[typical.len() * 4 / 5];
    let unusual: Vec<bool> = (0..n).map(|i| inside[i] && bg.nll(&frame.color(i)) > threshold).collect();
    let (fitted, e_fitted) = grabcut(frame, rect, seeds, unusual);
    if e_fitted < e_whole {
        fitted
    } else {
        whole
    }
}

pub(super) fn iou(a: &[bool], b: &[bool]) -> f64 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// Segments the clicked frame: GrabCut in the box when there is one, else in the smallest candidate box
/// around the positive clicks that holds the whole subject.
pub fn segment_clicked(frame: &Frame, prompt: &Prompt, confirm: bool) -> Result<FrameMask> {
    let pos: Vec<&Point> = prompt.points.iter().filter(|p| p.positive).collect();
    let neg: Vec<&Point> = prompt.points.iter().filter(|p| !p.positive).collect();
    if pos.is_empty() && prompt.bbox.is_none() {
        return Err(Error::Invalid("segment needs at least one positive click or a box".into()));
    }
    let r = seed_radius(frame);
    let seeds_fg: Vec<usize> = pos.iter().flat_map(|p| disk(frame, p.x, p.y, r)).collect();
    let seeds_bg: Vec<usize> = neg.iter().flat_map(|p| disk(frame, p.x, p.y, r)).collect();
    let avoid = negative_regions(frame, &pos, &neg, prompt.bbox);
    let seeds = Seeds { fg: &seeds_fg, bg: &seeds_bg, avoid: &avoid, beta: beta(frame) };
    let mask = match prompt.bbox {
        Some(b) => grabcut_box(frame, Rect::around(frame, b), &seeds),
        None => {
            let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
            for p in &pos {
                (x0, y0, x1, y1) = (x0.min(p.x), y0.min(p.y), x1.max(p.x), y1.max(p.y));
            }
            // Boxes of growing size around the clicks: too small a box cuts the subject short, so its
            // mask changes when the box grows; once the box holds the subject, it no longer does. A box
            // that holds one part of a subject of two colours (a white body whose black head lies beyond
            // it) is stable against the next size too, so a mask is taken only when the box two sizes
            // larger agrees with it as well (`confirm`; without it, the first stable pair's).
            let side = frame.width.max(frame.height) as f64;
            let seeded = seeds_fg.len() * 2;
            let mut masks: Vec<Vec<bool>> = vec![];
            let mut best: Option<(f64, Vec<bool>)> = None;
            let stable = |a: &Vec<bool>, b: &Vec<bool>| {
                let area = a.iter().filter(|&&m| m).count();
                if area > seeded {
                    iou(a, b)
                } else {
                    0.0
                }
            };
            for s in BOX_SIZES {
                let d = s * side / 2.0;
                let rect = Rect::around(frame, [x0 - d, y0 - d, x1 + d, y1 + d]);
                masks.push(grabcut_box(frame, rect, &seeds));
                let full = rect == Rect::full(frame);
                let k = masks.len();
                if k >= 2 {
                    // The smaller box's mask, once the larger box agrees (less background to confuse).
                    let pair = stable(&masks[k - 2], &masks[k - 1]);
                    if best.as_ref().is_none_or(|(b, _)| pair > *b) {
                        best = Some((pair, masks[k - 2].clone()));
                    }
                    if !confirm && pair >= BOX_STABLE {
                        break;
                    }
                }
                if k >= 3 {
                    let (a, b, c) = (&masks[k - 3], &masks[k - 2], &masks[k - 1]);
                    if stable(a, b) >= BOX_STABLE && stable(a, c) >= BOX_STABLE {
                        best = Some((1.0, a.clone()));
                        break;
                    }
                }
                if full {
                    // No larger box to ask: a stable last pair stands.
                    if k >= 2 && stable(&masks[k - 2], &masks[k - 1]) >= BOX_STABLE {
                        best = Some((1.0, masks[k - 2].clone()));
                    }
                    break;
                }
            }
            let prev = masks.pop();
            match best {
                Some((_, m)) => m,
                None => prev.unwrap_or_else(|| vec![false; frame.len()]),
            }
        }
    };
    let area = mask.iter().filter(|&&m| m).count();
    Ok(FrameMask {
        width: frame.width,
        height: frame.height,
        mask,
        confidence: if area > 0 { 1.0 } else { 0.0 },
        flagged: area == 0,
        low_res: None,
    })
}
