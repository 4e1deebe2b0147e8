//! The `Video` value: frames as one `[F, 3, H, W]` float tensor in [−1, 1] on the CPU, plus a frame rate.

use super::image::Image;
use crate::error::{Error, Result};
use tch::{Kind, Tensor};
use vidtune_kernels::image::{self as kimage, Fit};

/// A clip. Cloning is cheap (the frames are shared; videos are never modified in place).
#[derive(Debug)]
pub struct Video {
    frames: Tensor,
    fps: f64,
}

impl Clone for Video {
    fn clone(&self) -> Self {
        Video { frames: self.frames.shallow_clone(), fps: self.fps }
    }
}

/// The highest frame rate a clip may have (no camera or container goes near it; an absurd rate would
/// only fail later, in the encoder).
pub const MAX_FPS: f64 = 1000.0;

/// The frame rate used for a source that declares an impossible one.
pub const FALLBACK_FPS: f64 = 25.0;

impl Video {
    /// Wraps `[F, 3, H, W]` frames (moved to the CPU as f32) played at `fps`.
    pub fn new(frames: Tensor, fps: f64) -> Result<Self> {
        let size = frames.size();
        if size.len() != 4 || size[1] != 3 {
            return Err(Error::Invalid(format!("a video's frames are [F, 3, H, W], got {size:?}")));
        }
        if size[0] == 0 || size[2] == 0 || size[3] == 0 {
            return Err(Error::Invalid(format!("a video needs at least one non-empty frame, got {size:?}")));
        }
        if !(fps.is_finite() && fps > 0.0 && fps <= MAX_FPS) {
            return Err(Error::Invalid(format!("fps must be above 0 and at most {MAX_FPS}, got {fps}")));
        }
        Ok(Video { frames: frames.to_device(tch::Device::Cpu).to_kind(Kind::Float), fps })
    }

    /// The frames, `[F, 3, H, W]` in [−1, 1].
    pub fn frames(&self) -> &Tensor {
        &self.frames
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.size()[0] as usize
    }

    /// Always false: a video has at least one frame.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn width(&self) -> i64 {
        self.frames.size()[3]
    }

    pub fn height(&self) -> i64 {
        self.frames.size()[2]
    }

    pub fn fps(&self) -> f64 {
        self.fps
    }

    /// The same frames at another frame rate.
    pub fn with_fps(&self, fps: f64) -> Result<Video> {
        Video::new(self.frames.shallow_clone(), fps)
    }

    /// Frame `i` (0-based) as an image.
    pub fn frame(&self, i: i64) -> Result<Image> {
        let n = self.len() as i64;
        if i < 0 || i >= n {
            return Err(Error::Invalid(format!(
                "frame index {i} out of range: the video has {n} frames (0..={})",
                n - 1
            )));
        }
        Image::new(self.frames.get(i))
    }

    /// Frame `i` as packed RGB bytes, row by row (what the encoders take). One frame at a time, so a
    /// save holds one frame's bytes besides the clip, and stops at the next frame when cancelled.
    pub(crate) fn frame_rgb8(&self, i: usize) -> Result<Vec<u8>> {
        Ok(Vec::<u8>::try_from(kimage::to_rgb8_tensor(&self.frames.get(i as i64))?.flatten(0, -1))?)
    }

    /// Frames `a..b` (end exclusive).
    pub fn slice(&self, a: i64, b: i64) -> Result<Video> {
        let n = self.len() as i64;
        if a < 0 || b > n || a >= b {
            return Err(Error::Invalid(format!(
                "slice({a}, {b}) is not a non-empty range inside the video's {n} frames (0 <= a < b <= {n})"
            )));
        }
        Video::new(self.frames.narrow(0, a, b - a), self.fps)
    }

    /// A contact sheet with `cols` columns (a 2-pixel black border between frames).
    pub fn grid(&self, cols: i64) -> Result<Image> {
        Image::new(kimage::grid(&self.frames, cols, 2, -1.0)?)
    }

    /// A contact sheet with a roughly square layout.
    pub fn contact_sheet(&self) -> Result<Image> {
        self.contact_sheet_cols(self.sheet_columns())
    }

    /// The contact sheet's columns: about square, at most 8 (fewer rows for long clips).
    pub fn sheet_columns(&self) -> i64 {
        let cols = (self.len() as f64).sqrt().ceil().max(1.0) as i64;
        cols.max((self.len() as i64 + 3) / 4).min(8)
    }

    /// Brings every frame to `width × height` following `fit`.
    pub fn resize(&self, width: i64, height: i64, fit: Fit) -> Result<Video> {
        if width <= 0 || height <= 0 {
            return Err(Error::Invalid(format!("resize: size must be positive, got {width}x{height}")));
        }
        crate::memory::ensure_fits(
            &format!("resizing {} frames to {width}x{height}", self.len()),
            crate::memory::bytes_of(&[self.len() as i64, 3, width, height], 4.0 * 3.0),
            tch::Device::Cpu,
        )?;
        Video::new(kimage::fit(&self.frames, height, width, fit, -1.0)?, self.fps)
    }

    /// Errors unless both sides are multiples of 8, as the VAE and UNet need.
    pub fn check_model_size(&self) -> Result<()> {
        check_model_size(self.width(), self.height())
    }
}

/// Errors unless `width` and `height` are positive multiples of 8 (the latent grid is 1/8 of the pixels).
pub fn check_model_size(width: i64, height: i64) -> Result<()> {
    if width <= 0 || height <= 0 || width % 8 != 0 || height % 8 != 0 {
        let round = |x: i64| ((x.max(8) + 4) / 8) * 8;
        return Err(Error::Invalid(format!(
            "size {width}x{height} is not a multiple of 8, which the models need (nearest: {}x{})",
            round(width),
            round(height)
        )));
    }
    Ok(())
}

impl std::fmt::Display for Video {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Video({} frames, {}x{}, {} fps)", self.len(), self.width(), self.height(), trim_float(self.fps))
    }
}

/// `8` for 8.0, `29.97` for 29.97002997.
pub(crate) fn trim_float(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl crate::cache::KeyBuilder {
    /// Adds a clip: its frame rate and frames.
    pub fn video(self, v: &Video) -> Self {
        self.text(&format!("fps {}", v.fps())).tensor(v.frames())
    }
}
