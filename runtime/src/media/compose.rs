//! Views for comparing results: text drawn with an 8×8 bitmap font (labels, frame numbers), images and
//! clips side by side or stacked, numbered contact sheets, and comparison sheets — one row per clip, the
//! same frames in every column, each column headed by its frame number — so that a frame where an edit
//! lost its subject stands out next to its source.

use super::image::Image;
use super::video::Video;
use crate::error::{Error, Result};
use tch::{Kind, Tensor};
use vidtune_kernels::image::{self as kimage, Fit};

/// The background of sheets and label strips, in [−1, 1] (a dark grey).
pub const BACKGROUND: f64 = -0.8;
/// Gap between tiles, in pixels.
pub const GAP: i64 = 2;

/// The 8×8 glyph of `c` (ASCII; anything else draws as `?`).
fn glyph(c: char) -> [u8; 8] {
    let table = &font8x8::legacy::BASIC_LEGACY;
    table.get(c as usize).filter(|_| c.is_ascii()).copied().unwrap_or(table['?' as usize])
}

/// Pixels wide that `text` takes at `scale`.
pub fn text_width(text: &str, scale: i64) -> i64 {
    text.chars().count() as i64 * 8 * scale
}

/// The coverage of `text` at `scale`, `[8·scale, width]` in {0, 1}.
fn text_mask(text: &str, scale: i64) -> Tensor {
    let n = text.chars().count().max(1);
    let mut bits = vec![0f32; 8 * 8 * n];
    for (i, c) in text.chars().enumerate() {
        for (row, byte) in glyph(c).iter().enumerate() {
            for col in 0..8 {
                if byte >> col & 1 == 1 {
                    bits[row * 8 * n + i * 8 + col] = 1.0;
                }
            }
        }
    }
    let mask = Tensor::from_slice(&bits).view([8, 8 * n as i64]);
    mask.repeat_interleave_self_int(scale, 0, None).repeat_interleave_self_int(scale, 1, None)
}

/// Draws `text` into `image` (`[3, H, W]` in [−1, 1]) with its top-left corner at `(x, y)`, in white on
/// a black box one pixel wider than the text (so it reads on any picture); clipped to the image.
pub fn draw_text(image: &Tensor, text: &str, x: i64, y: i64, scale: i64) {
    if text.is_empty() {
        return;
    }
    let (h, w) = (image.size()[1], image.size()[2]);
    let mask = text_mask(text, scale).to_kind(image.kind());
    let (th, tw) = (mask.size()[0] + 2, mask.size()[1] + 2);
    let (x0, y0) = (x.max(0), y.max(0));
    let (bw, bh) = ((x + tw).min(w) - x0, (y + th).min(h) - y0);
    if bw <= 0 || bh <= 0 {
        return;
    }
    let boxed = Tensor::full([th, tw], -1.0, (image.kind(), image.device()));
    boxed.narrow(0, 1, th - 2).narrow(1, 1, tw - 2).copy_(&(mask * 2.0 - 1.0));
    let part = boxed.narrow(0, y0 - y, bh).narrow(1, x0 - x, bw);
    image.narrow(1, y0, bh).narrow(2, x0, bw).copy_(&part.unsqueeze(0).expand([3, bh, bw], false));
}

/// A strip `width` wide holding `text` at its left, on the sheet background.
pub fn label_strip(text: &str, width: i64, scale: i64) -> Tensor {
    let strip = Tensor::full([3, 8 * scale + 6, width.max(1)], BACKGROUND, (Kind::Float, tch::Device::Cpu));
    draw_text(&strip, text, 2, 2, scale);
    strip
}

/// The text scale that suits tiles `width` pixels wide: 1 below 128 px, 2 up to 384, then 3.
pub fn scale_for(width: i64) -> i64 {
    match width {
        ..128 => 1,
        128..384 => 2,
        _ => 3,
    }
}

fn background(h: i64, w: i64) -> Tensor {
    Tensor::full([3, h, w], BACKGROUND, (Kind::Float, tch::Device::Cpu))
}

/// Images side by side (`horizontal`) or stacked, `GAP` apart on the background, aligned to the top (or
/// left), each under its label when labels are given.
pub fn stack_images(images: &[Tensor], labels: Option<&[String]>, horizontal: bool) -> Result<Tensor> {
    if images.is_empty() {
        return Err(Error::Invalid("nothing to stack: give at least one image or clip".into()));
    }
    if let Some(l) = labels {
        if l.len() != images.len() {
            return Err(Error::Invalid(format!("{} labels for {} items; give one label each", l.len(), images.len())));
        }
    }
    let tiles: Vec<Tensor> = images
        .iter()
        .enumerate()
        .map(|(i, img)| {
            let img = img.to_device(tch::Device::Cpu).to_kind(Kind::Float);
            match labels {
                Some(l) => {
                    let w = img.size()[2];
                    Tensor::cat(&[label_strip(&l[i], w, scale_for(w)), img], 1)
                }
                None => img,
            }
        })
        .collect();
    let (hs, ws): (Vec<i64>, Vec<i64>) = tiles.iter().map(|t| (t.size()[1], t.size()[2])).unzip();
    let n = tiles.len() as i64;
    let (out_h, out_w) = if horizontal {
        (hs.iter().max().copied().unwrap_or(1) + 2 * GAP, ws.iter().sum::<i64>() + (n + 1) * GAP)
    } else {
        (hs.iter().sum::<i64>() + (n + 1) * GAP, ws.iter().max().copied().unwrap_or(1) + 2 * GAP)
    };
    let out = background(out_h, out_w);
    let mut at = GAP;
    for (t, (h, w)) in tiles.iter().zip(hs.iter().zip(&ws)) {
        let (y, x) = if horizontal { (GAP, at) } else { (at, GAP) };
        out.narrow(1, y, *h).narrow(2, x, *w).copy_(t);
        at += if horizontal { w } else { h } + GAP;
    }
    Ok(out)
}

/// Warns that stacked items differ in size: nothing is resized, each keeps its own size, aligned to the
/// top (side by side) or the left (stacked).
fn warn_sizes(sizes: &[(i64, i64)], horizontal: bool) {
    if sizes.windows(2).any(|p| p[0] != p[1]) {
        let list: Vec<String> = sizes.iter().map(|(w, h)| format!("{w}x{h}")).collect();
        crate::progress::warn(format!(
            "{}: the items differ in size ({}); none is resized, each keeps its size, aligned to the {}",
            if horizontal { "hstack" } else { "vstack" },
            list.join(", "),
            if horizontal { "top" } else { "left" }
        ));
    }
}

/// Images side by side, with optional labels.
pub fn hstack_images(images: &[&Image], labels: Option<&[String]>) -> Result<Image> {
    warn_sizes(&images.iter().map(|i| (i.width(), i.height())).collect::<Vec<_>>(), true);
    let t: Vec<Tensor> = images.iter().map(|i| i.tensor().shallow_clone()).collect();
    Image::new(stack_images(&t, labels, true)?)
}

/// Images stacked top to bottom, with optional labels.
pub fn vstack_images(images: &[&Image], labels: Option<&[String]>) -> Result<Image> {
    warn_sizes(&images.iter().map(|i| (i.width(), i.height())).collect::<Vec<_>>(), false);
    let t: Vec<Tensor> = images.iter().map(|i| i.tensor().shallow_clone()).collect();
    Image::new(stack_images(&t, labels, false)?)
}

/// Clips composed frame by frame (side by side or stacked), as long as the longest; a shorter clip holds
/// its last frame. The fps is the first clip's.
pub fn stack_videos(videos: &[&Video], labels: Option<&[String]>, horizontal: bool) -> Result<Video> {
    let Some(first) = videos.first() else {
        return Err(Error::Invalid("nothing to stack: give at least one image or clip".into()));
    };
    let n = videos.iter().map(|v| v.len()).max().unwrap_or(0) as i64;
    warn_sizes(&videos.iter().map(|v| (v.width(), v.height())).collect::<Vec<_>>(), horizontal);
    let name = if horizontal { "hstack" } else { "vstack" };
    if videos.iter().any(|v| (v.fps() - first.fps()).abs() > 1e-6) {
        let list: Vec<String> = videos.iter().map(|v| format!("{}", v.fps())).collect();
        crate::progress::warn(format!(
            "{name}: the clips differ in frame rate ({} fps); the result plays at {} fps, the first clip's, frame by \
             frame (no clip is retimed)",
            list.join(", "),
            first.fps()
        ));
    }
    if videos.iter().any(|v| v.len() as i64 != n) {
        crate::progress::warn(format!(
            "{name}: the clips differ in length ({} frames); shorter ones hold their last frame",
            videos.iter().map(|v| v.len().to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    crate::memory::ensure_fits(
        "stacking clips",
        crate::memory::bytes_of(
            &[n, 3, videos.iter().map(|v| v.height() + 40).sum(), videos.iter().map(|v| v.width() + 8).sum()],
            4.0,
        ),
        tch::Device::Cpu,
    )?;
    let frames = (0..n)
        .map(|f| {
            let parts: Vec<Tensor> = videos.iter().map(|v| v.frames().get(f.min(v.len() as i64 - 1))).collect();
            stack_images(&parts, labels, horizontal)
        })
        .collect::<Result<Vec<_>>>()?;
    Video::new(Tensor::stack(&frames, 0), first.fps())
}

/// `count` frame indices spread evenly over a clip of `len` frames (all of them when `len ≤ count`).
pub fn spread_frames(len: usize, count: usize) -> Vec<i64> {
    if len <= count || count < 2 {
        return (0..len.min(count.max(1)) as i64).collect();
    }
    (0..count).map(|i| ((i * (len - 1)) as f64 / (count - 1) as f64).round() as i64).collect()
}

/// A comparison sheet: one row per clip under its label, the same frames in every column (at most
/// `columns`, spread over the longest clip), each column headed by its frame number. Clips of another
/// frame size are fitted to the first's (letterboxed); a frame a shorter clip lacks stays empty.
pub fn comparison_sheet(videos: &[&Video], labels: &[String], columns: usize) -> Result<Image> {
    let Some(first) = videos.first() else {
        return Err(Error::Invalid("a comparison sheet needs at least one clip".into()));
    };
    if labels.len() != videos.len() {
        return Err(Error::Invalid(format!("{} labels for {} clips; give one label each", labels.len(), videos.len())));
    }
    let (h, w) = (first.height(), first.width());
    let longest = videos.iter().map(|v| v.len()).max().unwrap_or(0);
    let picks = spread_frames(longest, columns.max(1));
    let cols = picks.len() as i64;
    let scale = scale_for(w);
    let sheet_w = cols * w + (cols + 1) * GAP;
    let mut rows = vec![];
    // Frame numbers above the columns.
    let header = background(8 * scale + 6, sheet_w);
    for (c, f) in picks.iter().enumerate() {
        draw_text(&header, &f.to_string(), GAP + c as i64 * (w + GAP) + 2, 2, scale);
    }
    rows.push(header);
    for (v, label) in videos.iter().zip(labels) {
        let frames = if (v.height(), v.width()) == (h, w) {
            v.frames().shallow_clone()
        } else {
            kimage::fit(v.frames(), h, w, Fit::Pad, BACKGROUND)?
        };
        rows.push(label_strip(label, sheet_w, scale));
        let row = background(h + 2 * GAP, sheet_w);
        for (c, &f) in picks.iter().enumerate() {
            if f < v.len() as i64 {
                row.narrow(1, GAP, h).narrow(2, GAP + c as i64 * (w + GAP), w).copy_(&frames.get(f));
            }
        }
        rows.push(row);
    }
    Image::new(Tensor::cat(&rows, 1))
}

/// The clip's frames in a grid (as [`Video::contact_sheet`] lays them out), each numbered in its
/// bottom-left corner (the top-left is where `hstack`'s labels are).
pub fn numbered_sheet(video: &Video, cols: i64) -> Result<Image> {
    let cols = cols.clamp(1, video.len().max(1) as i64);
    let grid = kimage::grid(video.frames(), cols, GAP, BACKGROUND)?;
    let (h, w) = (video.height(), video.width());
    let scale = if w >= 192 { 2 } else { 1 };
    let badge = 8 * scale + 2;
    for i in 0..video.len() as i64 {
        let (r, c) = (i / cols, i % cols);
        let y = GAP + r * (h + GAP) + (h - badge).max(0);
        draw_text(&grid, &i.to_string(), GAP + c * (w + GAP), y, scale);
    }
    Image::new(grid)
}

impl Video {
    /// The frames in `cols` columns, each numbered in its bottom-left corner.
    pub fn contact_sheet_cols(&self, cols: i64) -> Result<Image> {
        numbered_sheet(self, cols)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_draws_the_glyphs_of_the_font() {
        let img = Tensor::full([3, 12, 20], 0.0, (Kind::Float, tch::Device::Cpu));
        draw_text(&img, "1", 2, 2, 1);
        // The box is black around white glyph pixels, the rest untouched.
        let g = glyph('1');
        for (row, byte) in g.iter().enumerate() {
            for col in 0..8 {
                let want = if byte >> col & 1 == 1 { 1.0 } else { -1.0 };
                assert_eq!(img.double_value(&[0, 3 + row as i64, 3 + col as i64]), want, "({row}, {col})");
            }
        }
        assert_eq!(img.double_value(&[1, 2, 2]), -1.0, "the box's border");
        assert_eq!(img.double_value(&[2, 0, 0]), 0.0, "outside the box");
        // Clipped at the edges without panicking.
        draw_text(&img, "12345", 15, 8, 2);
        draw_text(&img, "x", -30, -30, 1);
        assert_eq!(text_width("ab", 2), 32);
    }

    #[test]
    fn frames_spread_over_the_clip() {
        assert_eq!(spread_frames(4, 8), vec![0, 1, 2, 3]);
        assert_eq!(spread_frames(48, 8), vec![0, 7, 13, 20, 27, 34, 40, 47]);
        assert_eq!(spread_frames(10, 1), vec![0]);
    }
}
