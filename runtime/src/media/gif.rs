//! Animated GIF read and write through the `image` crate (frames composited onto the full canvas).

use super::sampling::Collector;
use super::video::Video;
use crate::error::{Error, Result};
use crate::progress::Progress;
use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::{AnimationDecoder, Delay, Frame, RgbaImage};
use std::path::Path;

/// Frame rate assumed when a GIF gives no delays.
const DEFAULT_FPS: f64 = 10.0;

/// The logical screen and the number of frames of a GIF, read without decompressing any frame.
fn scan(path: &Path) -> Result<(u32, u32, usize)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut options = ::gif::DecodeOptions::new();
    options.skip_frame_decoding(true);
    options.set_color_output(::gif::ColorOutput::Indexed);
    let mut decoder = options
        .read_info(std::io::BufReader::new(file))
        .map_err(|e| Error::bad_file(path, format!("not a readable GIF ({e})")))?;
    let (w, h) = (u32::from(decoder.width()), u32::from(decoder.height()));
    let mut frames = 0usize;
    loop {
        match decoder.read_next_frame() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => return Err(Error::bad_file(path, format!("corrupt GIF frame {frames} ({e})"))),
        }
        frames += 1;
        if frames % 4096 == 0 {
            crate::progress::check_cancel()?;
        }
    }
    Ok((w, h, frames))
}

/// Decodes the frames `collector` asks for; returns the GIF's frame rate (from its mean delay). The
/// header and the frame count are checked against the memory first.
pub(crate) fn read(path: &Path, collector: &mut Collector) -> Result<f64> {
    let (w, h, total) = scan(path)?;
    if w == 0 || h == 0 || total == 0 {
        return Err(Error::bad_file(path, format!("not a readable GIF: a {w}x{h} screen with {total} frames")));
    }
    // The decoder composites every frame onto a canvas of the logical screen (RGBA, and the previous one).
    collector.ensure_source_fits(path, total, w, h, crate::memory::bytes_of(&[w as i64, h as i64], 8.0))?;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let decoder = GifDecoder::new(std::io::BufReader::new(file))
        .map_err(|e| Error::bad_file(path, format!("not a readable GIF ({e})")))?;
    let mut delays_ms = Vec::new();
    for frame in decoder.into_frames() {
        if collector.full() {
            break;
        }
        let frame =
            frame.map_err(|e| Error::bad_file(path, format!("corrupt GIF frame {} ({e})", collector.seen())))?;
        let (num, den) = frame.delay().numer_denom_ms();
        delays_ms.push(num as f64 / den.max(1) as f64);
        if collector.wants_next() {
            let rgba = frame.into_buffer();
            let (w, h) = rgba.dimensions();
            let rgb: Vec<u8> = rgba.pixels().flat_map(|p| [p[0], p[1], p[2]]).collect();
            collector.push_rgb8(&rgb, w, h)?;
        } else {
            collector.skip();
        }
    }
    let mean = delays_ms.iter().sum::<f64>() / delays_ms.len().max(1) as f64;
    Ok(if mean > 0.0 { 1000.0 / mean } else { DEFAULT_FPS })
}

/// Writes `video` as a looping GIF at `path` (a temporary sibling of the destination).
pub(crate) fn write(video: &Video, path: &Path, progress: &mut Progress) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    encode(video, std::io::BufWriter::new(file), progress).map_err(|e| match e {
        Error::Cancelled => Error::Cancelled,
        e => Error::bad_file(path, format!("cannot write GIF: {e}")),
    })
}

/// `video` as a looping GIF, in memory (notebook displays).
pub(crate) fn to_bytes(video: &Video) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut progress = Progress::new("encode GIF", video.len() as u64).unit("frames");
    encode(video, &mut out, &mut progress).map_err(|e| Error::Invalid(format!("cannot encode GIF: {e}")))?;
    progress.finish();
    Ok(out)
}

fn encode<W: std::io::Write>(video: &Video, out: W, progress: &mut Progress) -> Result<()> {
    let mut encoder = GifEncoder::new_with_speed(out, 10);
    let fail = |e: image::ImageError| Error::Invalid(e.to_string());
    encoder.set_repeat(Repeat::Infinite).map_err(fail)?;
    // GIF delays are whole centiseconds.
    let delay_cs = (100.0 / video.fps().max(0.1)).round().max(1.0) as u32;
    let delay = Delay::from_numer_denom_ms(delay_cs * 10, 1);
    let (w, h) = (video.width() as u32, video.height() as u32);
    for i in 0..video.len() {
        let rgb = video.frame_rgb8(i)?;
        let rgba: Vec<u8> = rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
        let buffer = RgbaImage::from_raw(w, h, rgba).ok_or_else(|| Error::Invalid("GIF frame size mismatch".into()))?;
        encoder.encode_frame(Frame::from_parts(buffer, 0, 0, delay)).map_err(fail)?;
        progress.step()?;
    }
    Ok(())
}

impl Video {
    /// The clip as a looping animated GIF, in memory.
    pub fn to_gif(&self) -> Result<Vec<u8>> {
        to_bytes(self)
    }
}
