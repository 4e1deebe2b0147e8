//! Media: the `Video` and `Image` values and video files in and out.
//!
//! Containers are chosen by path: a directory holds numbered frames, `.gif` goes through the `image`
//! crate, and `.mp4` / `.mov` / `.mkv` / `.webm` (and, for reading, anything FFmpeg opens) go through
//! FFmpeg when the `ffmpeg` feature is on. **Invariant:** every write is atomic (`crate::fsutil`).

pub mod compose;
#[cfg(feature = "ffmpeg")]
pub mod ffmpeg;
pub mod frames_dir;
mod gif;
pub mod image;
pub mod sampling;
pub mod video;

pub use self::image::Image;
pub use sampling::LoadOptions;
pub use video::{check_model_size, Video};

use crate::error::{Error, Result};
use crate::fsutil::{with_overwrite, write_dir_atomic, write_output};
use crate::progress::Progress;
use sampling::Collector;
use std::path::{Path, PathBuf};

/// Container extensions FFmpeg writes here.
pub const FFMPEG_EXTENSIONS: [&str; 4] = ["mp4", "mov", "mkv", "webm"];

/// Whether this build can read and write mp4 / mov / mkv / webm.
pub const HAS_FFMPEG: bool = cfg!(feature = "ffmpeg");

/// What a path is read or written as.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Container {
    Frames,
    Gif,
    Ffmpeg(String),
}

fn extension(path: &Path) -> String {
    path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default()
}

fn container_for_write(path: &Path) -> Result<Container> {
    let ext = extension(path);
    let text = path.to_string_lossy();
    let video_ext = ext == "gif" || FFMPEG_EXTENSIONS.contains(&ext.as_str());
    // A name that is only an extension (".gif") or ends in one and a slash ("dir.gif/") is a mistake, not
    // a folder: a .gif / .mp4 name always means a file.
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let bare = name.strip_prefix('.').filter(|e| *e == "gif" || FFMPEG_EXTENSIONS.contains(e));
    if let Some(e) = bare {
        return Err(Error::Invalid(format!(
            "{}: the name is only an extension; give the file a name (e.g. out.{e})",
            path.display()
        )));
    }
    if video_ext && text.ends_with('/') {
        return Err(Error::Invalid(format!(
            "{}: ends in / (a folder) but the .{ext} extension asks for a video file; drop the / to save a file, \
             or give a name without extension to save a folder of PNG frames",
            path.display()
        )));
    }
    if path.is_dir() && video_ext {
        return Err(Error::Invalid(format!(
            "{}: is a folder, but the .{ext} extension asks for a video file; choose another name (a name without \
             extension saves a folder of PNG frames)",
            path.display()
        )));
    }
    if path.is_dir() || ext.is_empty() || text.ends_with('/') {
        return Ok(Container::Frames);
    }
    match ext.as_str() {
        "gif" => Ok(Container::Gif),
        e if FFMPEG_EXTENSIONS.contains(&e) => Ok(Container::Ffmpeg(e.to_string())),
        e => Err(Error::Invalid(format!(
            "{}: cannot save a video as .{e}; use .mp4, .mov, .mkv, .webm, .gif or a directory (no extension) of PNG frames",
            path.display()
        ))),
    }
}

/// Loads a clip: a video file (FFmpeg), an animated GIF, or a directory of png/jpg frames.
pub fn load_video(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Video> {
    let path = path.as_ref();
    opts.validate()?;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_dir() && !meta.is_file() {
        return Err(Error::bad_file(
            path,
            "is not a regular file or folder (a pipe, device or socket); save the clip to a file and load that",
        ));
    }
    let label = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "video".into());
    let mut collector = Collector::new(opts, &label);
    let fps = if path.is_dir() {
        frames_dir::read(path, opts, &mut collector)?
    } else if extension(path) == "gif" {
        gif::read(path, &mut collector)?
    } else {
        read_with_ffmpeg(path, &mut collector)?
    };
    collector.finish(path, fps)
}

#[cfg(feature = "ffmpeg")]
fn read_with_ffmpeg(path: &Path, collector: &mut Collector) -> Result<f64> {
    ffmpeg::read(path, collector)
}

#[cfg(not(feature = "ffmpeg"))]
fn read_with_ffmpeg(path: &Path, _collector: &mut Collector) -> Result<f64> {
    Err(Error::Unsupported(format!(
        "{}: this build has no FFmpeg (feature `ffmpeg`); it reads .gif files and directories of png/jpg frames",
        path.display()
    )))
}

/// How [`save_video_with`] treats what is already at the path, and what it records in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaveOptions {
    /// Write a folder of frames into an existing folder that holds files vidtune did not write (they are
    /// kept; see [`crate::fsutil`]). Without it such a folder is refused.
    pub overwrite: bool,
    /// Text stored in the file: PNG text chunks in every frame of a folder, container metadata in
    /// mp4 / mov / mkv / webm (GIF stores none). The provenance of a result.
    pub metadata: Vec<(String, String)>,
}

/// Saves `video` by extension (`.mp4` H.264 when the encoder exists, else MPEG-4; `.mov`, `.mkv`,
/// `.webm`; `.gif`; a path without extension is a directory of numbered PNGs). Atomic. Returns the path.
pub fn save_video(video: &Video, path: impl AsRef<Path>) -> Result<PathBuf> {
    save_video_with(video, path, &SaveOptions::default())
}

/// [`save_video`] with options.
pub fn save_video_with(video: &Video, path: impl AsRef<Path>, opts: &SaveOptions) -> Result<PathBuf> {
    let path = path.as_ref();
    let container = container_for_write(path)?;
    let mut progress = Progress::new(format!("save {}", path.display()), video.len() as u64).unit("frames");
    match container {
        Container::Frames => {
            write_dir_atomic(path, opts.overwrite, |tmp| frames_dir::write(video, tmp, &opts.metadata, &mut progress))?
        }
        Container::Gif => {
            with_overwrite(opts.overwrite, || write_output(path, |tmp| gif::write(video, tmp, &mut progress)))?
        }
        Container::Ffmpeg(ext) => {
            with_overwrite(opts.overwrite, || write_ffmpeg(video, path, &ext, &opts.metadata, &mut progress))?
        }
    }
    progress.finish();
    Ok(path.to_path_buf())
}

#[cfg(feature = "ffmpeg")]
fn write_ffmpeg(
    video: &Video,
    path: &Path,
    ext: &str,
    metadata: &[(String, String)],
    progress: &mut Progress,
) -> Result<()> {
    let (w, h) = (video.width(), video.height());
    let (ew, eh) = (w + (w & 1), h + (h & 1));
    if (ew, eh) != (w, h) {
        crate::progress::warn(format!(
            "{}: {w}x{h} frames are saved as {ew}x{eh} (.{ext} stores even sides), so the clip loads back at \
             {ew}x{eh}; save as .gif or a folder of PNGs to keep the size exactly",
            path.display()
        ));
    }
    write_output(path, |tmp| ffmpeg::write(video, tmp, ext, metadata, progress))
}

#[cfg(not(feature = "ffmpeg"))]
fn write_ffmpeg(
    _video: &Video,
    path: &Path,
    ext: &str,
    _metadata: &[(String, String)],
    _progress: &mut Progress,
) -> Result<()> {
    Err(Error::Unsupported(format!(
        "{}: this build has no FFmpeg (feature `ffmpeg`), so it cannot write .{ext}; save as .gif or a directory",
        path.display()
    )))
}

impl Video {
    /// The clip as an MP4 (H.264 where the encoder exists), in memory.
    #[cfg(feature = "ffmpeg")]
    pub fn to_mp4(&self) -> Result<Vec<u8>> {
        let dir = tempfile::tempdir().map_err(|e| crate::Error::io(std::env::temp_dir().as_path(), e))?;
        let path = dir.path().join("clip.mp4");
        save_video(self, &path)?;
        std::fs::read(&path).map_err(|e| crate::Error::io(&path, e))
    }
}
