//! A directory of numbered still frames (png / jpg), read in natural order ("2.png" before "10.png").

use super::image::read_rgb8;
use super::sampling::{Collector, LoadOptions};
use super::video::Video;
use crate::error::{Error, Result};
use crate::progress::Progress;
use std::path::{Path, PathBuf};

/// Frame rate given to a directory of frames (it stores none), as Tune-A-Video's outputs use.
pub const DEFAULT_FPS: f64 = 8.0;

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The frame files of `dir`, in natural order.
pub fn list_frames(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if path.is_file() && !hidden && EXTENSIONS.contains(&ext.as_str()) {
            files.push(path);
        }
    }
    files.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(files)
}

/// Reads the selected frames (only those are decoded).
pub(crate) fn read(dir: &Path, opts: &LoadOptions, collector: &mut Collector) -> Result<f64> {
    let files = list_frames(dir)?;
    if files.is_empty() {
        return Err(Error::bad_file(dir, "contains no .png, .jpg or .jpeg frames"));
    }
    let wanted = opts.indices(files.len());
    for (i, file) in files.iter().enumerate() {
        if collector.full() {
            break;
        }
        if wanted.binary_search(&i).is_ok() {
            let img = read_rgb8(file)?;
            collector.push_rgb8(img.as_raw(), img.width(), img.height())?;
        } else {
            collector.skip();
        }
    }
    Ok(DEFAULT_FPS)
}

/// Writes `video` as `00000.png`, `00001.png`, … into `dir` (a fresh temporary directory).
pub(crate) fn write(video: &Video, dir: &Path, text: &[(String, String)], progress: &mut Progress) -> Result<()> {
    let (w, h) = (video.width() as u32, video.height() as u32);
    for i in 0..video.len() {
        let rgb = video.frame_rgb8(i)?;
        let img = image::RgbImage::from_raw(w, h, rgb).ok_or_else(|| Error::Invalid("frame size mismatch".into()))?;
        let path = dir.join(format!("{i:05}.png"));
        if text.is_empty() {
            img.save_with_format(&path, image::ImageFormat::Png)
                .map_err(|e| Error::bad_file(&path, format!("cannot write frame: {e}")))?;
        } else {
            super::image::write_png(&path, &img, text)?;
        }
        progress.step()?;
    }
    Ok(())
}

/// Compares strings with runs of digits compared by value.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.chars().peekable(), b.chars().peekable());
    loop {
        match (a.peek().copied(), b.peek().copied()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let take = |it: &mut std::iter::Peekable<std::str::Chars>| {
                    let mut s = String::new();
                    while let Some(c) = it.peek().copied().filter(char::is_ascii_digit) {
                        s.push(c);
                        it.next();
                    }
                    s
                };
                let (da, db) = (take(&mut a), take(&mut b));
                let (ta, tb) = (da.trim_start_matches('0'), db.trim_start_matches('0'));
                let ord = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb)).then_with(|| da.len().cmp(&db.len()));
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                a.next();
                b.next();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::natural_cmp;

    #[test]
    fn natural_order() {
        let mut v = vec!["f10.png", "f2.png", "f1.png", "f02.png", "g.png"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, vec!["f1.png", "f2.png", "f02.png", "f10.png", "g.png"]);
    }
}
