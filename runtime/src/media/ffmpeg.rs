//! Container video (mp4, mov, webm, mkv, …) through FFmpeg's libraries (`ffmpeg-next`). Behind the
//! default `ffmpeg` feature.

use super::sampling::Collector;
use super::video::Video;
use crate::error::{Error, Result};
use crate::progress::Progress;
use ffmpeg_next as ff;
use std::path::Path;
use std::sync::Once;

fn init() -> Result<()> {
    static INIT: Once = Once::new();
    let mut failed = None;
    INIT.call_once(|| {
        if let Err(e) = ff::init() {
            failed = Some(e);
        }
        ff::log::set_level(ff::log::Level::Fatal);
    });
    match failed {
        Some(e) => Err(Error::Unsupported(format!("FFmpeg failed to initialise: {e}"))),
        None => Ok(()),
    }
}

/// FFmpeg's library versions, for `vidtune doctor`.
pub fn version() -> String {
    let v = ff::util::version();
    format!("libavutil {}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
}

/// Whether an encoder of that name (e.g. `libx264`) is available.
pub fn has_encoder(name: &str) -> bool {
    init().is_ok() && ff::encoder::find_by_name(name).is_some()
}

/// Decodes the frames `collector` asks for, in presentation order.
pub(crate) fn read(path: &Path, collector: &mut Collector) -> Result<f64> {
    init()?;
    let not_video = |e: &dyn std::fmt::Display| Error::bad_file(path, format!("not a readable video ({e})"));
    let mut ictx = ff::format::input(&path).map_err(|e| not_video(&e))?;
    let stream = ictx
        .streams()
        .best(ff::media::Type::Video)
        .ok_or_else(|| Error::bad_file(path, "not a video: it has no video stream"))?;
    let index = stream.index();
    let declared = stream.frames();
    let fps = frame_rate(stream.rate(), stream.avg_frame_rate());
    let mut decoder = ff::codec::context::Context::from_parameters(stream.parameters())
        .and_then(|c| c.decoder().video())
        .map_err(|e| not_video(&e))?;
    let (w, h) = (decoder.width(), decoder.height());
    if w == 0 || h == 0 {
        return Err(Error::bad_file(path, "not a video: the stream has no frame size"));
    }
    crate::memory::ensure_fits(
        &format!("{}: decoding frames of {w}x{h}", path.display()),
        crate::memory::bytes_of(&[w as i64, h as i64, 3], 4.0),
        tch::Device::Cpu,
    )?;
    if declared > 0 {
        collector.ensure_source_fits(path, declared as usize, w, h, 0.0)?;
    }
    // The converter to RGB follows each frame's own format and size (a damaged stream can change them,
    // or hand out a frame without a format, which swscale would abort on).
    let mut scaler: Option<(ff::format::Pixel, u32, u32, ff::software::scaling::Context)> = None;
    let mut decoded = ff::frame::Video::empty();
    let mut rgb = ff::frame::Video::empty();
    let mut pixels = Vec::new();
    let mut take = |decoder: &mut ff::decoder::Video, collector: &mut Collector| -> Result<()> {
        while decoder.receive_frame(&mut decoded).is_ok() {
            if collector.full() {
                continue;
            }
            if collector.wants_next() {
                let (format, fw, fh) = (decoded.format(), decoded.width(), decoded.height());
                if format == ff::format::Pixel::None || fw == 0 || fh == 0 {
                    return Err(Error::bad_file(
                        path,
                        format!("frame {} could not be decoded (the file is damaged)", collector.seen()),
                    ));
                }
                if !scaler.as_ref().is_some_and(|(f, sw, sh, _)| (*f, *sw, *sh) == (format, fw, fh)) {
                    let ctx = ff::software::scaling::Context::get(
                        format,
                        fw,
                        fh,
                        ff::format::Pixel::RGB24,
                        fw,
                        fh,
                        ff::software::scaling::Flags::BICUBIC | ff::software::scaling::Flags::ACCURATE_RND,
                    )
                    .map_err(|e| not_video(&e))?;
                    scaler = Some((format, fw, fh, ctx));
                }
                let (.., ctx) = scaler.as_mut().expect("set above");
                ctx.run(&decoded, &mut rgb).map_err(|e| not_video(&e))?;
                packed_rgb(&rgb, &mut pixels);
                collector.push_rgb8(&pixels, rgb.width(), rgb.height())?;
            } else {
                collector.skip();
            }
        }
        Ok(())
    };
    let mut sent_any = false;
    for (stream, packet) in ictx.packets() {
        if stream.index() != index {
            continue;
        }
        if decoder.send_packet(&packet).is_ok() {
            sent_any = true;
        }
        take(&mut decoder, collector)?;
        if collector.full() {
            break;
        }
    }
    if !sent_any && collector.seen() == 0 {
        return Err(Error::bad_file(path, "not a video: no decodable video packets"));
    }
    if !collector.full() {
        let _ = decoder.send_eof();
        take(&mut decoder, collector)?;
        // Read to the end: a container that promised more frames than decoded is damaged or truncated.
        let decoded = collector.seen() as i64;
        if declared > 0 && decoded < declared {
            crate::progress::warn(format!(
                "{}: the container declares {declared} frames but only {decoded} could be decoded; the file may be \
                 truncated or damaged",
                path.display()
            ));
        }
    }
    Ok(fps)
}

/// The clip's frame rate: the container's base rate (exact for constant-rate clips, where the average
/// suffers from millisecond timestamps), unless it disagrees with the average by more than 5% (variable
/// rate), then the average; 25 when neither is known.
fn frame_rate(base: ff::Rational, avg: ff::Rational) -> f64 {
    let value = |r: ff::Rational| (r.numerator() > 0 && r.denominator() > 0).then(|| f64::from(r));
    match (value(base), value(avg)) {
        (Some(b), Some(a)) if (b - a).abs() > 0.05 * a => a,
        (Some(b), _) => b,
        (None, Some(a)) => a,
        (None, None) => 25.0,
    }
}

/// Copies an RGB24 frame into a packed buffer, dropping the line padding.
fn packed_rgb(frame: &ff::frame::Video, out: &mut Vec<u8>) {
    let (w, h, stride) = (frame.width() as usize, frame.height() as usize, frame.stride(0));
    let data = frame.data(0);
    out.clear();
    for y in 0..h {
        out.extend_from_slice(&data[y * stride..y * stride + 3 * w]);
    }
}

/// The encoders tried for a container, best first.
fn encoders_for(ext: &str) -> &'static [(&'static str, &'static [(&'static str, &'static str)])] {
    match ext {
        "webm" => &[("libvpx-vp9", &[("crf", "30"), ("b", "0")]), ("libvpx", &[("crf", "10"), ("b", "1M")])],
        _ => &[("libx264", &[("crf", "18"), ("preset", "medium")]), ("mpeg4", &[("qscale", "2")])],
    }
}

/// Writes `video` to `path` (already a temporary sibling of the destination) in container `ext`.
pub(crate) fn write(
    video: &Video,
    path: &Path,
    ext: &str,
    metadata: &[(String, String)],
    progress: &mut Progress,
) -> Result<()> {
    init()?;
    let format = match ext {
        "mp4" => "mp4",
        "mov" => "mov",
        "mkv" => "matroska",
        "webm" => "webm",
        other => return Err(Error::Invalid(format!("no FFmpeg container for .{other}"))),
    };
    let fail = |what: &str, e: &dyn std::fmt::Display| Error::bad_file(path, format!("{what}: {e}"));
    let (codec, opts) = encoders_for(ext)
        .iter()
        .find_map(|(name, opts)| ff::encoder::find_by_name(name).map(|c| (c, *opts)))
        .ok_or_else(|| Error::Unsupported(format!("FFmpeg has no encoder for .{ext} here")))?;
    let mut octx = ff::format::output_as(&path, format).map_err(|e| fail("cannot create", &e))?;
    let global_header = octx.format().flags().contains(ff::format::Flags::GLOBAL_HEADER);
    // yuv420p needs even sides: round up (the encoder sees a 1-pixel edge stretch at most).
    let (w, h) = (video.width() as u32, video.height() as u32);
    let (ew, eh) = (w + (w & 1), h + (h & 1));

    let rate = ff::Rational::from(video.fps().max(0.1)).reduce();
    let time_base = rate.invert();
    let mut ost = octx.add_stream(codec).map_err(|e| fail("cannot add stream", &e))?;
    let mut enc = ff::codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| fail("cannot create encoder", &e))?;
    enc.set_width(ew);
    enc.set_height(eh);
    enc.set_format(ff::format::Pixel::YUV420P);
    enc.set_time_base(time_base);
    enc.set_frame_rate(Some(rate));
    if global_header {
        enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
    }
    let mut dict = ff::Dictionary::new();
    for (k, v) in opts {
        dict.set(k, v);
    }
    let mut encoder = enc.open_with(dict).map_err(|e| fail("cannot open encoder", &e))?;
    ost.set_parameters(&encoder);
    ost.set_time_base(time_base);
    // The index (moov) at the front: players start at once, and a file cut short still says how many
    // frames it had.
    let mut muxer_opts = ff::Dictionary::new();
    if matches!(ext, "mp4" | "mov") {
        // use_metadata_tags keeps keys of our own (the run record) in the file.
        muxer_opts.set("movflags", if metadata.is_empty() { "+faststart" } else { "+faststart+use_metadata_tags" });
    }
    if !metadata.is_empty() {
        let mut tags = ff::Dictionary::new();
        for (k, v) in metadata {
            tags.set(k, v);
        }
        octx.set_metadata(tags);
    }
    octx.write_header_with(muxer_opts).map_err(|e| fail("cannot write header", &e))?;
    let ost_tb = octx.stream(0).map(|s| s.time_base()).unwrap_or(time_base);
    let mut scaler = ff::software::scaling::Context::get(
        ff::format::Pixel::RGB24,
        w,
        h,
        ff::format::Pixel::YUV420P,
        ew,
        eh,
        ff::software::scaling::Flags::BICUBIC | ff::software::scaling::Flags::ACCURATE_RND,
    )
    .map_err(|e| fail("cannot convert pixels", &e))?;
    let drain = |encoder: &mut ff::encoder::Video, octx: &mut ff::format::context::Output| -> Result<()> {
        let mut packet = ff::Packet::empty();
        while encoder.receive_packet(&mut packet).is_ok() {
            packet.set_stream(0);
            if packet.duration() <= 0 {
                // Without a duration the mp4 muxer gives the last frame none, and demuxers drop it.
                packet.set_duration(1);
            }
            packet.rescale_ts(time_base, ost_tb);
            packet.write_interleaved(octx).map_err(|e| fail("cannot write packet", &e))?;
        }
        Ok(())
    };
    let mut rgb = ff::frame::Video::new(ff::format::Pixel::RGB24, w, h);
    let mut yuv = ff::frame::Video::empty();
    for i in 0..video.len() {
        let bytes = video.frame_rgb8(i)?;
        let stride = rgb.stride(0);
        let data = rgb.data_mut(0);
        for y in 0..h as usize {
            let row = &bytes[y * 3 * w as usize..(y + 1) * 3 * w as usize];
            data[y * stride..y * stride + row.len()].copy_from_slice(row);
        }
        scaler.run(&rgb, &mut yuv).map_err(|e| fail("cannot convert pixels", &e))?;
        yuv.set_pts(Some(i as i64));
        encoder.send_frame(&yuv).map_err(|e| fail("cannot encode", &e))?;
        drain(&mut encoder, &mut octx)?;
        progress.step()?;
    }
    encoder.send_eof().map_err(|e| fail("cannot finish encoding", &e))?;
    drain(&mut encoder, &mut octx)?;
    octx.write_trailer().map_err(|e| fail("cannot finish file", &e))?;
    Ok(())
}

/// The container-level metadata of a video file (what [`write`] stores from `SaveOptions::metadata`).
pub fn read_metadata(path: &Path) -> Result<Vec<(String, String)>> {
    init()?;
    let ictx = ff::format::input(&path).map_err(|e| Error::bad_file(path, format!("cannot open: {e}")))?;
    Ok(ictx.metadata().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}
