//! Previews: inline in the terminal through viuer (Kitty / iTerm / sixel where the terminal is known to
//! support them, coloured half-blocks otherwise), or a PNG under a previews folder when stdout is not a
//! terminal. The terminal is never probed unless the environment says it will answer.
//!
//! In a notebook (evcxr) previews display in the cell. `VIDTUNE_PREVIEW=auto|inline|file|notebook|off`
//! overrides the choice, `VIDTUNE_PREVIEW_DIR` the folder
//! (default `./previews`).

use std::io::IsTerminal;
use std::path::PathBuf;
use vidtune_runtime::{Image, Result, Video};

/// Where previews go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviewMode {
    Inline,
    File,
    /// Displayed in the notebook cell (evcxr's display protocol; the cell shows the last one).
    Notebook,
    Off,
}

impl PreviewMode {
    /// The mode from `VIDTUNE_PREVIEW`, else inline on a terminal and files otherwise.
    pub fn from_env() -> Self {
        match std::env::var("VIDTUNE_PREVIEW").unwrap_or_default().as_str() {
            "inline" | "sixel" => PreviewMode::Inline,
            "file" => PreviewMode::File,
            "notebook" => PreviewMode::Notebook,
            "off" => PreviewMode::Off,
            _ => {
                if crate::notebook::in_notebook() {
                    PreviewMode::Notebook
                } else if std::io::stdout().is_terminal() {
                    PreviewMode::Inline
                } else {
                    PreviewMode::File
                }
            }
        }
    }
}

/// Shows images and numbers preview files within one session.
#[derive(Debug)]
pub struct Previewer {
    pub mode: PreviewMode,
    pub dir: PathBuf,
    count: usize,
}

impl Default for Previewer {
    fn default() -> Self {
        Previewer::from_env()
    }
}

impl Previewer {
    pub fn from_env() -> Self {
        let dir = std::env::var_os("VIDTUNE_PREVIEW_DIR").map(PathBuf::from).unwrap_or_else(|| "previews".into());
        Previewer { mode: PreviewMode::from_env(), dir, count: 0 }
    }

    /// How many pixels wide a preview can usefully be: on a half-block terminal a pixel a column (so a
    /// sheet is drawn at that size and its labels and frame numbers stay legible); `None` where previews
    /// keep full resolution (files, notebooks, graphics protocols).
    pub fn pixel_budget(&self, columns: Option<u32>) -> Option<u32> {
        if self.mode != PreviewMode::Inline {
            return None;
        }
        let config = inline_config(u32::MAX, 1, columns);
        if config.use_kitty || config.use_iterm || config.use_sixel {
            return None;
        }
        config.width
    }

    /// Shows `image`; in file mode writes `previews/NNN-label.png` and returns its path.
    pub fn show(&mut self, image: &Image, label: &str) -> Result<Option<PathBuf>> {
        self.show_sized(image, label, None)
    }

    /// The next preview file's path: `previews/NNN-label.EXT`.
    /// The next numbered preview file. Numbers already taken (an earlier run's previews, or a user's file)
    /// are skipped, so the previews of several runs coexist and nothing is written over.
    fn next_path(&mut self, label: &str, ext: &str) -> PathBuf {
        let safe: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .take(60)
            .collect();
        if self.count == 0 {
            // Continue after the highest number already in the folder (an earlier run's previews).
            self.count = std::fs::read_dir(&self.dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.split_once('-').and_then(|(n, _)| n.parse::<usize>().ok())
                })
                .max()
                .unwrap_or(0);
        }
        loop {
            self.count += 1;
            let path = self.dir.join(format!("{:03}-{safe}.{ext}", self.count));
            if std::fs::symlink_metadata(&path).is_err() {
                return path;
            }
        }
    }

    /// Animates `video` `loops` times: inline by drawing its frames over each other at the clip's frame
    /// rate (any protocol, half-blocks included), ending on the last frame; a GIF file in file mode; the
    /// clip's GIF in a notebook.
    pub fn play(&mut self, video: &Video, label: &str, columns: Option<u32>, loops: u32) -> Result<Option<PathBuf>> {
        match self.mode {
            PreviewMode::Off => Ok(None),
            PreviewMode::File => {
                let path = self.next_path(label, "gif");
                vidtune_runtime::media::save_video(video, &path)?;
                println!("preview: {}", path.display());
                Ok(Some(path))
            }
            PreviewMode::Notebook => {
                use crate::notebook::{protocol, Show};
                print!("{}", protocol(&video.outputs()));
                Ok(None)
            }
            PreviewMode::Inline => {
                let frames = (0..video.len() as i64).map(|i| video.frame(i)).collect::<Result<Vec<_>>>()?;
                let delay = std::time::Duration::from_secs_f64(1.0 / video.fps().clamp(1.0, 60.0));
                let total = frames.len() * loops.max(1) as usize;
                // Each frame is drawn over the last by moving up the rows it took (relative moves still
                // hold after the first frame scrolled the screen at its bottom, where a saved cursor
                // position does not): one frame's height goes to the scrollback, not one per frame.
                let mut rows = 0u32;
                for (k, frame) in frames.iter().cycle().take(total).enumerate() {
                    if vidtune_runtime::progress::cancel_requested() {
                        break;
                    }
                    let (rgb, mut config) = inline_image(frame, columns)?;
                    config.y = -(rows.min(i16::MAX as u32) as i16);
                    match viuer::print(&rgb, &config) {
                        Ok((_, h)) => rows = h,
                        Err(e) => {
                            eprintln!("preview failed ({e}); set VIDTUNE_PREVIEW=file to write GIFs instead");
                            break;
                        }
                    }
                    if k + 1 < total {
                        std::thread::sleep(delay);
                    }
                }
                Ok(None)
            }
        }
    }

    /// Shows `image` at most `columns` terminal columns wide (default: the terminal's width).
    pub fn show_sized(&mut self, image: &Image, label: &str, columns: Option<u32>) -> Result<Option<PathBuf>> {
        match self.mode {
            PreviewMode::Off => Ok(None),
            PreviewMode::File => {
                let path = self.next_path(label, "png");
                image.save(&path)?;
                println!("preview: {}", path.display());
                Ok(Some(path))
            }
            PreviewMode::Notebook => {
                use crate::notebook::{protocol, Show};
                print!("{}", protocol(&image.outputs()));
                Ok(None)
            }
            PreviewMode::Inline => {
                let (rgb, config) = inline_image(image, columns)?;
                if let Err(e) = viuer::print(&rgb, &config) {
                    eprintln!("preview failed ({e}); set VIDTUNE_PREVIEW=file to write PNGs instead");
                }
                Ok(None)
            }
        }
    }
}

/// Frames narrower than this many pixels are enlarged by a whole factor, nearest-neighbour, before a
/// graphics protocol draws them (a 64-px toy frame shows its pixels, not a blur).
const LEGIBLE_PIXELS: u32 = 256;

/// `image` ready for viuer: the RGB pixels (enlarged where small, for graphics protocols) and the
/// settings that fit it in the terminal's width and height.
fn inline_image(image: &Image, columns: Option<u32>) -> Result<(image::DynamicImage, viuer::Config)> {
    let mut rgb = image.to_rgb8()?;
    let mut config = inline_config(rgb.width(), rgb.height(), columns);
    let graphics = config.use_kitty || config.use_iterm || config.use_sixel;
    if graphics && rgb.width() < LEGIBLE_PIXELS && rgb.width() > 0 {
        let k = LEGIBLE_PIXELS.div_ceil(rgb.width());
        rgb = image::imageops::resize(&rgb, rgb.width() * k, rgb.height() * k, image::imageops::FilterType::Nearest);
        config.width = config.width.map(|w| w.max((rgb.width() / 8).min(terminal_columns(columns))));
        config.width = config.width.map(|w| w.min(fit_height(rgb.width(), rgb.height())));
    }
    Ok((image::DynamicImage::ImageRgb8(rgb), config))
}

/// The terminal's columns and rows; where it reports none (a new pseudo-terminal), `COLUMNS` and
/// `LINES`, else 80 × 24.
fn terminal_size() -> (u32, u32) {
    let (c, r) = viuer::terminal_size();
    let env =
        |k: &str, d: u32| std::env::var(k).ok().and_then(|v| v.trim().parse().ok()).filter(|n| *n > 0).unwrap_or(d);
    (if c > 0 { c as u32 } else { env("COLUMNS", 80) }, if r > 0 { r as u32 } else { env("LINES", 24) })
}

fn terminal_columns(columns: Option<u32>) -> u32 {
    columns.unwrap_or_else(|| terminal_size().0).max(8)
}

/// The most columns an image `w` × `h` pixels may take and still fit in the terminal's rows, less two
/// for the prompt (a cell is a column wide and two half-block pixels tall).
fn fit_height(w: u32, h: u32) -> u32 {
    let rows = terminal_size().1.saturating_sub(2).max(4);
    ((rows * 2) as u64 * w as u64 / h.max(1) as u64).clamp(8, u32::MAX as u64) as u32
}

/// viuer settings for printing below the cursor, with graphics protocols only where the terminal is
/// known (from its environment) to support them, so that viuer's probes never wait on a silent terminal.
fn inline_config(pixel_width: u32, pixel_height: u32, columns: Option<u32>) -> viuer::Config {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let (term, program) = (env("TERM"), env("TERM_PROGRAM"));
    let kitty = std::env::var_os("KITTY_WINDOW_ID").is_some() || term.contains("kitty") || program == "ghostty";
    let iterm = matches!(program.as_str(), "iTerm.app" | "WezTerm");
    let sixel = env("VIDTUNE_PREVIEW") == "sixel" || term.contains("sixel") || term == "foot" || term == "mlterm";
    // The terminal's width, and a sheet taller than the terminal scaled to fit its rows.
    let limit = terminal_columns(columns).min(fit_height(pixel_width, pixel_height));
    // Half-blocks show 1×2 pixels per cell: a pixel a column, up to the terminal's width. Graphics
    // protocols draw real pixels: a cell per 4 pixels (twice the size for small frames), up to the width.
    let graphics = kitty || iterm || sixel;
    let natural = if graphics { pixel_width.div_ceil(4).max(16) } else { pixel_width };
    let width = natural.min(limit);
    viuer::Config {
        absolute_offset: false,
        restore_cursor: false,
        width: Some(width),
        use_kitty: kitty,
        use_iterm: iterm,
        use_sixel: sixel,
        ..Default::default()
    }
}
