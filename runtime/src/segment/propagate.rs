//! Propagation of the built-in segmenter: each frame's mask is the previous frame's (and the clicked
//! frame's) moved to where the subject's colours went, then cut again with GrabCut's energy near it.

use super::gmm::Gmm;
use super::grabcut::{beta, components_kept, cut, iou, samples, Rect, Unary, HARD};
use super::{Frame, FrameMask, Point, Prompt};
use crate::error::Result;

/// The shift `(dx, dy)` that best places `prev` on the subject-likelihood map `score` (sum of scores
/// under the shifted mask), searched within `radius` pixels of `around`, coarse then fine.
fn best_shift(frame: &Frame, prev: &[bool], score: &[f64], radius: i64, around: (i64, i64)) -> (i64, i64) {
    let (w, h) = (frame.width as i64, frame.height as i64);
    let pts: Vec<(i64, i64)> = (0..prev.len()).filter(|&i| prev[i]).map(|i| ((i as i64) % w, (i as i64) / w)).collect();
    if pts.is_empty() {
        return (0, 0);
    }
    // Large masks are matched on a regular subset of their pixels.
    let stride = (pts.len() / 4000).max(1);
    let eval = |dx: i64, dy: i64| -> f64 {
        pts.iter()
            .step_by(stride)
            .map(|&(x, y)| {
                let (xx, yy) = (x + dx, y + dy);
                if xx >= 0 && xx < w && yy >= 0 && yy < h {
                    score[(yy * w + xx) as usize]
                } else {
                    -2.0
                }
            })
            .sum()
    };
    let mut best = (around.0, around.1, eval(around.0, around.1));
    let step = if radius > 8 { 2 } else { 1 };
    for dy in (around.1 - radius..=around.1 + radius).step_by(step as usize) {
        for dx in (around.0 - radius..=around.0 + radius).step_by(step as usize) {
            let s = eval(dx, dy);
            if s > best.2 + 1e-9 {
                best = (dx, dy, s);
            }
        }
    }
    if step > 1 {
        let (cx, cy) = (best.0, best.1);
        for dy in cy - 1..=cy + 1 {
            for dx in cx - 1..=cx + 1 {
                let s = eval(dx, dy);
                if s > best.2 + 1e-9 {
                    best = (dx, dy, s);
                }
            }
        }
    }
    (best.0, best.1)
}

fn shift(frame: &Frame, m: &[bool], dx: i64, dy: i64) -> Vec<bool> {
    let (w, h) = (frame.width as i64, frame.height as i64);
    let mut out = vec![false; m.len()];
    for (i, &v) in m.iter().enumerate() {
        if v {
            let (x, y) = ((i as i64) % w + dx, (i as i64) / w + dy);
            if x >= 0 && x < w && y >= 0 && y < h {
                out[(y * w + x) as usize] = true;
            }
        }
    }
    out
}

/// Distance (in pixels, chessboard) from each pixel to the nearest pixel of `m`, capped at `cap`
/// (two-pass chamfer transform).
fn distance(frame: &Frame, m: &[bool], cap: usize) -> Vec<usize> {
    let (w, h) = (frame.width, frame.height);
    let mut d: Vec<usize> = m.iter().map(|&v| if v { 0 } else { cap }).collect();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let mut best = d[i];
            if x > 0 {
                best = best.min(d[i - 1] + 1);
            }
            if y > 0 {
                best = best.min(d[i - w] + 1);
                if x > 0 {
                    best = best.min(d[i - w - 1] + 1);
                }
                if x + 1 < w {
                    best = best.min(d[i - w + 1] + 1);
                }
            }
            d[i] = best.min(cap);
        }
    }
    for y in (0..h).rev() {
        for x in (0..w).rev() {
            let i = y * w + x;
            let mut best = d[i];
            if x + 1 < w {
                best = best.min(d[i + 1] + 1);
            }
            if y + 1 < h {
                best = best.min(d[i + w] + 1);
                if x + 1 < w {
                    best = best.min(d[i + w + 1] + 1);
                }
                if x > 0 {
                    best = best.min(d[i + w - 1] + 1);
                }
            }
            d[i] = best.min(cap);
        }
    }
    d
}

/// Segments `frame` given the previous frame's mask and the anchor (clicked) frame's, whose subject is
/// believed to have moved by `anchor_offset` by the previous frame. Returns the mask and the subject's
/// offset from the anchor frame in this frame.
///
/// Colour models come from the anchor frame and the previous frame together (limits drift). The shape
/// prior is the union of the previous mask and the anchor's whole mask, each moved to where the subject's
/// colours went: the anchor's shape brings back parts that were hidden for a while (occluders).
pub fn segment_next(
    frame: &Frame,
    prev_frame: &Frame,
    prev: &FrameMask,
    anchor: (&Frame, &FrameMask),
    anchor_offset: (i64, i64),
) -> Result<(FrameMask, (i64, i64))> {
    segment_next_moved(frame, prev_frame, prev, anchor, anchor_offset).map(|(m, o, _)| (m, o))
}

/// Re-segments a clicked frame with what propagation learnt from its neighbour: the colour models of the
/// neighbour's mask and the neighbour's shape moved back onto this frame — the same step that segments
/// every propagated frame, run backwards. A first cut from clicks alone has only the clicks to go on
/// (a box around a click on a large, evenly coloured subject cuts it short; a dark part unlike the
/// clicked colour is left out); the neighbour's mask knows the whole subject.
///
/// The refined mask must keep the positive clicks and avoid the negative ones; of it and the first cut,
/// the one that agrees better with the neighbour's moved shape is kept, and that agreement (IoU) is its
/// confidence, measured as for every other frame.
pub fn refine_clicked(
    frame: &Frame,
    clicked: &FrameMask,
    near_frame: &Frame,
    near: &FrameMask,
    prompt: &Prompt,
) -> Result<FrameMask> {
    let (refined, _, moved) = segment_next_moved(frame, near_frame, near, (near_frame, near), (0, 0))?;
    let at = |p: &Point| {
        let (x, y) = (p.x.floor().max(0.0) as usize, p.y.floor().max(0.0) as usize);
        y.min(frame.height - 1) * frame.width + x.min(frame.width - 1)
    };
    let pos: Vec<usize> = prompt.points.iter().filter(|p| p.positive).map(at).collect();
    let neg: Vec<usize> = prompt.points.iter().filter(|p| !p.positive).map(at).collect();
    let honours_clicks = pos.iter().all(|&i| refined.mask[i]) && neg.iter().all(|&i| !refined.mask[i]);
    let (a, b) = (iou(&refined.mask, &moved), iou(&clicked.mask, &moved));
    if honours_clicks && a > b {
        Ok(FrameMask { confidence: a, flagged: refined.flagged, ..refined })
    } else {
        Ok(FrameMask { confidence: b, ..clicked.clone() })
    }
}

/// [`segment_next`], also returning the previous mask moved onto this frame.
fn segment_next_moved(
    frame: &Frame,
    prev_frame: &Frame,
    prev: &FrameMask,
    anchor: (&Frame, &FrameMask),
    anchor_offset: (i64, i64),
) -> Result<(FrameMask, (i64, i64), Vec<bool>)> {
    let n = frame.len();
    let prev_area = prev.mask.iter().filter(|&&m| m).count();
    if prev_area == 0 {
        return Ok((FrameMask { confidence: 0.0, flagged: true, ..prev.clone() }, anchor_offset, prev.mask.clone()));
    }
    let (af, am) = anchor;
    let fg = Gmm::fit(&samples(&[(af, &|i| am.mask[i]), (prev_frame, &|i| prev.mask[i])]));
    let bg = Gmm::fit(&samples(&[(af, &|i| !am.mask[i]), (prev_frame, &|i| !prev.mask[i])]));
    let (mut cf, mut cb) = (vec![0.0; n], vec![0.0; n]);
    for i in 0..n {
        let c = frame.color(i);
        (cf[i], cb[i]) = (fg.nll(&c), bg.nll(&c));
    }
    // Where the subject went: covering its colours is rewarded more than covering others is penalised,
    // so a shape half hidden by an occluder is still placed over all of its visible parts.
    let score: Vec<f64> = (0..n).map(|i| (cb[i] - cf[i]).clamp(-1.5, 4.0)).collect();
    let radius = ((0.2 * frame.width.max(frame.height) as f64) as i64).max(4);
    let (dx, dy) = best_shift(frame, &prev.mask, &score, radius, (0, 0));
    let moved_prev = shift(frame, &prev.mask, dx, dy);
    let guess = (anchor_offset.0 + dx, anchor_offset.1 + dy);
    // The anchor's whole shape, placed near where the previous mask's motion says (partial masks drift).
    let offset = best_shift(frame, &am.mask, &score, (radius / 2).max(3), guess);
    let moved_anchor = shift(frame, &am.mask, offset.0, offset.1);
    let prior: Vec<bool> = moved_prev.iter().zip(&moved_anchor).map(|(a, b)| *a || *b).collect();
    let margin = ((0.08 * frame.width.min(frame.height) as f64) as usize).max(3);
    let dist = distance(frame, &prior, margin * 3);
    let mut u = Unary { fg: vec![HARD; n], bg: vec![0.0; n] };
    for i in 0..n {
        u.fg[i] = cf[i];
        u.bg[i] = cb[i];
        // Far from where the subject moved, being subject costs more.
        if dist[i] > margin {
            u.fg[i] += 1.5 * (dist[i] - margin) as f64 / margin as f64;
        }
    }
    // The cut is confined to the prior's neighbourhood (beyond it nothing is kept anyway).
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for i in (0..n).filter(|&i| prior[i]) {
        let (x, y) = (i % frame.width, i / frame.width);
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
    }
    let rect = if x0 == usize::MAX { Rect::full(frame) } else { Rect { x0, y0, x1, y1 }.grow(frame, 3 * margin) };
    let (mask, _) = cut(frame, &u, beta(frame), rect);
    // Keep what touches the prior, and strongly subject-coloured pieces near it: parts of the subject
    // never seen before, coming out from behind an occluder.
    let min_piece = (prev_area / 100).max(4);
    let keep = |c: &[usize]| {
        c.iter().any(|&i| prior[i])
            || (c.len() >= min_piece
                && c.iter().any(|&i| dist[i] < 3 * margin)
                && c.iter().map(|&i| score[i]).sum::<f64>() >= 2.0 * c.len() as f64)
    };
    let mask = components_kept(frame, &mask, &keep);
    let area = mask.iter().filter(|&&m| m).count();
    let inter = (0..n).filter(|&i| mask[i] && moved_prev[i]).count();
    let union = (0..n).filter(|&i| mask[i] || moved_prev[i]).count();
    let iou = if union > 0 { inter as f64 / union as f64 } else { 0.0 };
    let ratio = area as f64 / prev_area as f64;
    let flagged = area == 0 || !(0.4..=2.5).contains(&ratio);
    Ok((
        FrameMask { width: frame.width, height: frame.height, mask, confidence: iou, flagged, low_res: None },
        offset,
        moved_prev,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chamfer_distance_equals_brute_force() {
        let frame = Frame { width: 13, height: 9, rgb: vec![0; 13 * 9 * 3] };
        let mut m = vec![false; 13 * 9];
        m[2 * 13 + 3] = true;
        m[7 * 13 + 11] = true;
        let d = distance(&frame, &m, 6);
        for (i, &di) in d.iter().enumerate() {
            let (x, y) = ((i % 13) as i64, (i / 13) as i64);
            let want = [(3i64, 2i64), (11, 7)].iter().map(|&(a, b)| (x - a).abs().max((y - b).abs())).min().unwrap();
            assert_eq!(di, (want as usize).min(6), "pixel ({x}, {y})");
        }
    }
}
