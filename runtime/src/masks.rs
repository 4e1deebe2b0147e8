//! The `Masks` value: one mask per frame, `[F, 1, H, W]` float with values in [0, 1] (binary masks hold
//! exactly 0 and 1) on the CPU, optionally remembering the clip it was made for (so previews overlay it).

use crate::error::{Error, Result};
use crate::media::{load_video, save_video_with, LoadOptions, SaveOptions, Video};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Kind, Tensor};
use vidtune_kernels::masks as kmasks;

/// How a mask sequence was made, when a segmenter made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// Which segmenter ran.
    pub method: String,
    /// Per frame: how sure the segmenter was (0 for frames it did not segment).
    pub confidence: Vec<f64>,
    /// Frames whose sanity check failed: worth a look, or another click.
    pub flagged: Vec<usize>,
}

/// A mask sequence. Cloning is cheap (shared storage; never modified in place).
#[derive(Debug)]
pub struct Masks {
    data: Tensor,
    /// The clip these masks were segmented from, if known.
    pub source: Option<Video>,
    /// The segmentation that made these masks (kept by clones, dropped by every operation).
    pub provenance: Option<Arc<Provenance>>,
}

impl Clone for Masks {
    fn clone(&self) -> Self {
        Masks { data: self.data.shallow_clone(), source: self.source.clone(), provenance: self.provenance.clone() }
    }
}

impl Masks {
    /// Wraps `[F, 1, H, W]` values in [0, 1].
    pub fn new(data: Tensor) -> Result<Self> {
        let size = data.size();
        if size.len() != 4 || size[1] != 1 || size[0] == 0 || size[2] == 0 || size[3] == 0 {
            return Err(Error::Invalid(format!("masks are [F, 1, H, W] with F, H, W > 0, got {size:?}")));
        }
        Ok(Masks {
            data: data.to_device(tch::Device::Cpu).to_kind(Kind::Float).clamp(0.0, 1.0),
            source: None,
            provenance: None,
        })
    }

    /// The same masks remembering `video` (checked to match).
    pub fn with_source(mut self, video: &Video) -> Result<Self> {
        self.check_matches(video)?;
        self.source = Some(video.clone());
        Ok(self)
    }

    fn derived(&self, data: Tensor) -> Result<Masks> {
        let mut m = Masks::new(data)?;
        if m.width() == self.width() && m.height() == self.height() {
            m.source = self.source.clone();
        }
        Ok(m)
    }

    /// The values, `[F, 1, H, W]`.
    pub fn tensor(&self) -> &Tensor {
        &self.data
    }

    pub fn len(&self) -> usize {
        self.data.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn width(&self) -> i64 {
        self.data.size()[3]
    }

    pub fn height(&self) -> i64 {
        self.data.size()[2]
    }

    /// Fraction of each frame covered, `[F]`.
    pub fn area(&self) -> Vec<f64> {
        Vec::<f64>::try_from(self.data.mean_dim([1i64, 2, 3].as_slice(), false, Kind::Double)).unwrap_or_default()
    }

    fn check_same(&self, other: &Masks, what: &str) -> Result<()> {
        if self.data.size() != other.data.size() {
            return Err(Error::Invalid(format!(
                "{what}: masks of {} frames at {}x{} and {} frames at {}x{} do not match",
                self.len(),
                self.width(),
                self.height(),
                other.len(),
                other.width(),
                other.height()
            )));
        }
        Ok(())
    }

    /// A radius for dilate / erode: at least 0, and no more than the frame (which a larger one equals).
    fn radius(&self, what: &str, r: i64) -> Result<i64> {
        if r < 0 {
            return Err(Error::Invalid(format!("{what}: the radius must be 0 or more pixels, got {r}")));
        }
        Ok(r.min(self.width().max(self.height())))
    }

    pub fn dilate(&self, r: i64) -> Result<Masks> {
        self.derived(kmasks::dilate(&self.data, self.radius("dilate", r)?)?)
    }

    pub fn erode(&self, r: i64) -> Result<Masks> {
        self.derived(kmasks::erode(&self.data, self.radius("erode", r)?)?)
    }

    pub fn union(&self, other: &Masks) -> Result<Masks> {
        self.check_same(other, "union")?;
        self.derived(self.data.maximum(&other.data))
    }

    pub fn intersect(&self, other: &Masks) -> Result<Masks> {
        self.check_same(other, "intersect")?;
        self.derived(self.data.minimum(&other.data))
    }

    pub fn invert(&self) -> Result<Masks> {
        self.derived(self.data.neg() + 1.0)
    }

    /// Per-frame boxes `[x0, y0, x1, y1]`, `None` for empty frames.
    pub fn bboxes(&self) -> Result<Vec<Option<[i64; 4]>>> {
        Ok(kmasks::bboxes(&self.data)?)
    }

    /// Each frame's mask filled over its bounding box: room for any shape of the subject's size (an
    /// object edit's region); an empty frame stays empty.
    pub fn boxes(&self) -> Result<Masks> {
        let mut m = Masks::new(kmasks::boxes(&self.data)?)?;
        m.source = self.source.clone();
        Ok(m)
    }

    /// Mean and per-frame IoU with `other`.
    pub fn iou(&self, other: &Masks) -> Result<(f64, Vec<f64>)> {
        self.check_same(other, "iou")?;
        Ok(vidtune_kernels::metrics::mask_iou(&self.data, &other.data)?)
    }

    /// The masks moved by `dx`, `dy` pixels (right, down); what leaves the frame is dropped.
    pub fn shift(&self, dx: i64, dy: i64) -> Result<Masks> {
        let (h, w) = (self.height(), self.width());
        let out = Tensor::zeros_like(&self.data);
        let (sx, sy) = (dx.clamp(-w, w), dy.clamp(-h, h));
        let (wlen, hlen) = (w - sx.abs(), h - sy.abs());
        if wlen > 0 && hlen > 0 {
            let src = self.data.narrow(3, (-sx).max(0), wlen).narrow(2, (-sy).max(0), hlen);
            out.narrow(3, sx.max(0), wlen).narrow(2, sy.max(0), hlen).copy_(&src);
        }
        let mut m = Masks::new(out)?;
        m.source = self.source.clone();
        Ok(m)
    }

    /// Each frame's mask scaled by `s` about its own centre (the middle of its box); an empty frame stays
    /// empty.
    pub fn scale(&self, s: f64) -> Result<Masks> {
        if !(s.is_finite() && s > 0.0 && s <= 100.0) {
            return Err(Error::Invalid(format!("scale: the factor must be a number above 0 and at most 100, got {s}")));
        }
        let (h, w) = (self.height() as f64, self.width() as f64);
        let boxes = self.bboxes()?;
        let mut frames = vec![];
        for (i, b) in boxes.iter().enumerate() {
            let frame = self.data.get(i as i64).unsqueeze(0);
            let Some([x0, y0, x1, y1]) = b else {
                frames.push(frame);
                continue;
            };
            // Output pixel p samples the input at c + (p − c) / s, in grid_sample's [-1, 1] coordinates.
            let (cx, cy) = ((x0 + x1) as f64 / 2.0, (y0 + y1) as f64 / 2.0);
            let (gx, gy) = (2.0 * cx / w - 1.0, 2.0 * cy / h - 1.0);
            let theta = Tensor::from_slice(&[1.0 / s, 0.0, gx * (1.0 - 1.0 / s), 0.0, 1.0 / s, gy * (1.0 - 1.0 / s)])
                .to_kind(Kind::Float)
                .view([1, 2, 3]);
            let grid = Tensor::affine_grid_generator(&theta, [1, 1, h as i64, w as i64], false);
            frames.push(frame.grid_sampler(&grid, 0, 0, false).gt(0.5).to_kind(Kind::Float));
        }
        let mut m = Masks::new(Tensor::cat(&frames, 0))?;
        m.source = self.source.clone();
        Ok(m)
    }

    /// Masks `a..a + n` (frames), remembering the matching frames of the clip.
    pub fn slice_frames(&self, a: i64, n: i64) -> Result<Masks> {
        let len = self.len() as i64;
        if a < 0 || n < 1 || a + n > len {
            return Err(Error::Invalid(format!("frames {a}..{} are not inside the masks' {len} frames", a + n)));
        }
        let mut m = Masks::new(self.data.narrow(0, a, n))?;
        m.source = self.source.as_ref().and_then(|v| v.slice(a, a + n).ok());
        Ok(m)
    }

    /// Resized to `width × height`, area-averaged when shrinking (latent-resolution masks for the models).
    pub fn resize(&self, width: i64, height: i64) -> Result<Masks> {
        if width <= 0 || height <= 0 {
            return Err(Error::Invalid(format!("resize: size must be positive, got {width}x{height}")));
        }
        crate::memory::ensure_fits(
            &format!("resizing {} masks to {width}x{height}", self.len()),
            crate::memory::bytes_of(&[self.len() as i64, width, height], 4.0 * 3.0),
            tch::Device::Cpu,
        )?;
        Masks::new(kmasks::resize(&self.data, height, width)?)
    }

    /// Errors unless `video` has as many frames as the masks, at the same size.
    pub fn check_matches(&self, video: &Video) -> Result<()> {
        if self.len() != video.len() || self.width() != video.width() || self.height() != video.height() {
            return Err(Error::Invalid(format!(
                "masks ({} frames, {}x{}) do not match the video ({} frames, {}x{})",
                self.len(),
                self.width(),
                self.height(),
                video.len(),
                video.width(),
                video.height()
            )));
        }
        Ok(())
    }

    /// The overlay on the clip these masks were made from, if known.
    pub fn overlay_source(&self) -> Option<Result<Video>> {
        self.source.as_ref().map(|v| self.overlay(v))
    }

    /// A preview: the video with the masked region tinted (and the rest dimmed).
    pub fn overlay(&self, video: &Video) -> Result<Video> {
        self.check_matches(video)?;
        let m = self.data.gt(0.5).to_kind(Kind::Float);
        let tint = Tensor::from_slice(&[0.1f32, 1.0, 0.2]).view([1, 3, 1, 1]);
        let lit = video.frames() * 0.5 + tint * 0.5;
        let dim = video.frames() * 0.6 - 0.4;
        Video::new(&lit * &m + dim * (1.0 - &m), video.fps())
    }

    /// `inside` where the masks are set and `outside` elsewhere (soft masks blend): a region of one clip
    /// pasted into another — the subject of the source kept in a background edit, say.
    pub fn composite(&self, inside: &Video, outside: &Video) -> Result<Video> {
        self.check_matches(inside)?;
        self.check_matches(outside)?;
        let m = self.data.to_kind(Kind::Float).clamp(0.0, 1.0);
        Video::new(inside.frames() * &m + outside.frames() * (1.0 - &m), outside.fps())
    }

    /// The masks as a grey clip (white = masked) in [−1, 1].
    pub fn as_video(&self, fps: f64) -> Result<Video> {
        Video::new(self.data.expand([-1, 3, -1, -1], false) * 2.0 - 1.0, fps)
    }

    /// A segmentation map for a ControlNet: the subject in `rgb` (8-bit values) on black, one frame per
    /// mask.
    pub fn segmentation_map(&self, rgb: [u8; 3], fps: f64) -> Result<Video> {
        let colour = Tensor::from_slice(&rgb.map(|c| c as f32 / 127.5 - 1.0)).view([1, 3, 1, 1]);
        let m = self.data.gt(0.5).to_kind(Kind::Float);
        Video::new(&m * colour + (1.0 - &m) * -1.0, fps)
    }

    /// An edge (scribble) map for a ControlNet: the masks' outlines, `width` pixels wide, white on black.
    pub fn edge_map(&self, width: i64, fps: f64) -> Result<Video> {
        if !(1..=64).contains(&width) {
            return Err(Error::Invalid(format!("edge_map: width must be 1 to 64 pixels, got {width}")));
        }
        // A band of `width` pixels across the boundary: `width / 2` outside, the rest inside.
        let outside = kmasks::dilate(&self.data, width / 2)?;
        let inside = kmasks::erode(&self.data, width - width / 2)?;
        let band = (outside - inside).clamp(0.0, 1.0);
        Video::new(band.expand([-1, 3, -1, -1], false) * 2.0 - 1.0, fps)
    }

    /// Saves as a directory of PNGs (lossless; a path without extension) or as a video / GIF.
    pub fn save(&self, path: &Path) -> Result<PathBuf> {
        self.save_with(path, &SaveOptions::default())
    }

    /// [`Masks::save`] with options (`overwrite`: write into a folder holding other files, keeping them).
    pub fn save_with(&self, path: &Path, opts: &SaveOptions) -> Result<PathBuf> {
        let fps = self.source.as_ref().map(|v| v.fps()).unwrap_or(8.0);
        save_video_with(&self.as_video(fps)?, path, opts)
    }

    /// Loads masks drawn elsewhere: a directory of PNGs (or a video), white-ish meaning masked (the mean of
    /// the channels above mid-grey).
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Masks> {
        let v = load_video(path, opts)?;
        Masks::new(v.frames().mean_dim(1, true, Kind::Float).gt(0.0).to_kind(Kind::Float))
    }
}

impl std::fmt::Display for Masks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let area = self.area();
        let mean = 100.0 * area.iter().sum::<f64>() / area.len().max(1) as f64;
        write!(f, "Masks({} frames, {}x{}, mean area {mean:.1}%", self.len(), self.width(), self.height())?;
        if let Some(p) = &self.provenance {
            write!(f, ", by {}", p.method)?;
            if !p.flagged.is_empty() {
                write!(f, ", frames to check: {:?}", p.flagged)?;
            }
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_maps_of_a_square_mask() {
        // A 10×10 square in a 20×20 frame.
        let m = Tensor::zeros([1, 1, 20, 20], (Kind::Float, tch::Device::Cpu));
        let _ = m.narrow(2, 5, 10).narrow(3, 5, 10).fill_(1.0);
        let masks = Masks::new(m).unwrap();
        let seg = masks.segmentation_map([255, 0, 51], 8.0).unwrap();
        let px = |v: &Video, c: i64, y: i64, x: i64| v.frames().double_value(&[0, c, y, x]);
        assert_eq!((px(&seg, 0, 10, 10), px(&seg, 1, 10, 10)), (1.0, -1.0));
        assert!((px(&seg, 2, 10, 10) - (51.0 / 127.5 - 1.0)).abs() < 1e-6);
        assert_eq!((px(&seg, 0, 0, 0), px(&seg, 2, 0, 0)), (-1.0, -1.0));
        // Width 3: one pixel outside the square, two inside; the centre stays black.
        let edges = masks.edge_map(3, 8.0).unwrap();
        let white = |y: i64, x: i64| px(&edges, 0, y, x) > 0.0;
        assert!(white(4, 10) && white(5, 10) && white(6, 10) && !white(3, 10) && !white(7, 10));
        assert!(!white(10, 10) && !white(0, 0));
        let band = edges.frames().get(0).get(0).gt(0.0).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(band, 12 * 12 - 6 * 6);
        assert!(masks.edge_map(0, 8.0).unwrap_err().to_string().contains("width must be 1 to 64"));
    }

    #[test]
    fn boxes_fill_each_frames_bounding_box() {
        // Frame 0: a diamond (a plus sign of 5 pixels about (4, 6)); frame 1: empty; frame 2: two dots.
        let m = Tensor::zeros([3, 1, 12, 12], (Kind::Float, tch::Device::Cpu));
        for (y, x) in [(3, 6), (4, 5), (4, 6), (4, 7), (5, 6)] {
            let _ = m.get(0).get(0).get(y).get(x).fill_(1.0);
        }
        let _ = m.get(2).get(0).get(1).get(2).fill_(1.0);
        let _ = m.get(2).get(0).get(9).get(10).fill_(1.0);
        let b = Masks::new(m).unwrap().boxes().unwrap();
        let on = |f: i64, y: i64, x: i64| b.tensor().double_value(&[f, 0, y, x]) == 1.0;
        let area = |f: i64| b.tensor().get(f).sum(Kind::Double).double_value(&[]);
        // Naively: a pixel is on exactly when it lies within the frame's extreme rows and columns.
        for y in 0..12 {
            for x in 0..12 {
                assert_eq!(on(0, y, x), (3..=5).contains(&y) && (5..=7).contains(&x), "frame 0 at ({y}, {x})");
                assert_eq!(on(2, y, x), (1..=9).contains(&y) && (2..=10).contains(&x), "frame 2 at ({y}, {x})");
            }
        }
        assert_eq!((area(0), area(1), area(2)), (9.0, 0.0, 81.0));
    }
}
