//! Frame-exact sampling shared by every decoder: which source frames are kept (`start`, `every`,
//! `frames`), and how each kept frame is brought to the requested size.

use super::video::Video;
use crate::error::{Error, Result};
use crate::progress::Progress;
use std::path::Path;
use tch::Tensor;
use vidtune_kernels::image::{self as kimage, Fit};

/// What `load_video` keeps of a source and at which size.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// How many frames to keep; `None` keeps every sampled frame to the end.
    pub frames: Option<usize>,
    /// Index of the first source frame kept (0-based).
    pub start: usize,
    /// Keep one source frame in `every` (1 keeps all).
    pub every: usize,
    /// Output size `(width, height)`; `None` keeps the source size.
    pub size: Option<(i64, i64)>,
    /// How frames are brought to `size`.
    pub fit: Fit,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { frames: None, start: 0, every: 1, size: None, fit: Fit::Resize }
    }
}

impl LoadOptions {
    /// Checks the options on their own (before any file is opened).
    pub fn validate(&self) -> Result<()> {
        if self.frames == Some(0) {
            return Err(Error::Invalid("frames must be at least 1 (got 0)".into()));
        }
        if self.every == 0 {
            return Err(Error::Invalid("every must be at least 1 (got 0)".into()));
        }
        if let Some((w, h)) = self.size {
            if w <= 0 || h <= 0 {
                return Err(Error::Invalid(format!("size must be positive, got {w}x{h}")));
            }
        }
        Ok(())
    }

    /// The source frame indices kept from a clip of `total` frames.
    pub fn indices(&self, total: usize) -> Vec<usize> {
        (self.start..total).step_by(self.every.max(1)).take(self.frames.unwrap_or(usize::MAX)).collect()
    }
}

/// Receives decoded frames in order and keeps the ones the options select.
pub(crate) struct Collector<'a> {
    opts: &'a LoadOptions,
    seen: usize,
    frames: Vec<Tensor>,
    progress: Progress,
}

impl<'a> Collector<'a> {
    pub fn new(opts: &'a LoadOptions, label: &str) -> Self {
        let total = opts.frames.unwrap_or(0) as u64;
        Collector { opts, seen: 0, frames: Vec::new(), progress: Progress::new(label, total).unit("frames") }
    }

    /// Refuses, before any frame is decoded, a source of `total` frames of `width × height` whose kept
    /// frames (and a decoder canvas of `canvas_bytes`) would not fit in memory: a header that promises a
    /// huge canvas or frame count ends in an error, not in an aborted allocation.
    pub fn ensure_source_fits(
        &self,
        path: &Path,
        total: usize,
        width: u32,
        height: u32,
        canvas_bytes: f64,
    ) -> Result<()> {
        let kept = self.opts.indices(total).len() as i64;
        let (w, h) = self.opts.size.unwrap_or((width as i64, height as i64));
        // Kept frames in f32 and the stacked copy, plus one decoded source frame as RGB and in f32.
        let bytes = crate::memory::bytes_of(&[kept, 3, w, h], 8.0)
            + crate::memory::bytes_of(&[width as i64, height as i64, 3], 5.0)
            + canvas_bytes;
        crate::memory::ensure_fits(
            &format!("{}: {kept} of its {total} frames at {w}x{h} (source frames {width}x{height})", path.display()),
            bytes,
            tch::Device::Cpu,
        )
    }

    /// Number of source frames seen so far (kept or skipped).
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// Whether the next source frame (index `seen`) is kept.
    pub fn wants_next(&self) -> bool {
        let i = self.seen;
        !self.full() && i >= self.opts.start && (i - self.opts.start) % self.opts.every == 0
    }

    /// Whether every requested frame has been kept.
    pub fn full(&self) -> bool {
        self.opts.frames.is_some_and(|n| self.frames.len() >= n)
    }

    /// Skips the next source frame.
    pub fn skip(&mut self) {
        self.seen += 1;
    }

    /// Keeps the next source frame, given as interleaved 8-bit RGB.
    pub fn push_rgb8(&mut self, pixels: &[u8], width: u32, height: u32) -> Result<()> {
        let frame = kimage::from_rgb8(pixels, height as i64, width as i64)?;
        self.push(frame)
    }

    /// Keeps the next source frame, given as `[3, H, W]` in [−1, 1].
    pub fn push(&mut self, frame: Tensor) -> Result<()> {
        if let Some((w, h)) = self.opts.size {
            // The resized frame, its resampling workspace, and the frames kept so far.
            let n = self.frames.len() as i64 + 3;
            crate::memory::ensure_fits(
                &format!("resizing frames to {w}x{h}"),
                crate::memory::bytes_of(&[n, 3, w, h], 4.0),
                tch::Device::Cpu,
            )?;
        }
        let frame = match self.opts.size {
            Some((w, h)) => kimage::fit(&frame.unsqueeze(0), h, w, self.opts.fit, -1.0)?.squeeze_dim(0),
            None => frame,
        };
        if let Some(first) = self.frames.first() {
            if first.size() != frame.size() {
                return Err(Error::Invalid(format!(
                    "frame {} is {:?} but earlier frames are {:?}; give `size` to bring them to one size",
                    self.seen,
                    &frame.size()[1..],
                    &first.size()[1..]
                )));
            }
        }
        // The frames kept so far, and the stacked copy `finish` makes of them.
        let bytes = (self.frames.len() + 1) as f64 * frame.numel() as f64 * 4.0 * 2.0;
        crate::memory::ensure_fits(
            &format!("keeping {} frames of {:?}", self.frames.len() + 1, &frame.size()[1..]),
            bytes,
            tch::Device::Cpu,
        )?;
        self.frames.push(frame);
        self.seen += 1;
        self.progress.step()
    }

    /// Builds the video, or explains why the selection is empty or short.
    pub fn finish(self, path: &Path, fps: f64) -> Result<Video> {
        let o = self.opts;
        let available = self.seen;
        if self.frames.is_empty() {
            if available == 0 {
                return Err(Error::bad_file(path, "has no frames"));
            }
            if o.start >= available {
                return Err(Error::Invalid(format!(
                    "start {} is past the end: {} has {available} frames (valid starts: 0..={})",
                    o.start,
                    path.display(),
                    available - 1
                )));
            }
            return Err(Error::Invalid(format!("zero frames after sampling {}", path.display())));
        }
        if let Some(n) = o.frames {
            if self.frames.len() < n {
                return Err(Error::Invalid(format!(
                    "asked for {n} frames from start {} every {}, but {} has {available} frames, so only {} can be \
                     sampled; ask for fewer frames, an earlier start or a smaller `every`",
                    o.start,
                    o.every,
                    path.display(),
                    self.frames.len()
                )));
            }
        }
        let mut fps = fps / o.every as f64;
        if !(fps.is_finite() && fps > 0.0 && fps <= super::video::MAX_FPS) {
            crate::progress::warn(format!(
                "{}: declares {fps} frames per second, outside (0, {}]; using {}",
                path.display(),
                super::video::MAX_FPS,
                super::video::FALLBACK_FPS
            ));
            fps = super::video::FALLBACK_FPS;
        }
        Video::new(Tensor::stack(&self.frames, 0), fps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_follow_start_every_frames() {
        let o = LoadOptions { frames: Some(3), start: 2, every: 3, ..Default::default() };
        assert_eq!(o.indices(20), vec![2, 5, 8]);
        assert_eq!(o.indices(7), vec![2, 5]);
        let all = LoadOptions::default();
        assert_eq!(all.indices(4), vec![0, 1, 2, 3]);
    }

    #[test]
    fn bad_options_are_named() {
        let msg = |o: LoadOptions| o.validate().unwrap_err().to_string();
        assert!(msg(LoadOptions { every: 0, ..Default::default() }).contains("every"));
        assert!(msg(LoadOptions { frames: Some(0), ..Default::default() }).contains("frames"));
        assert!(msg(LoadOptions { size: Some((0, 8)), ..Default::default() }).contains("size"));
    }
}
