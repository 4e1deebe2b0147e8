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
        let config = inline_config(u32::MAX, columns);
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
                for (k, frame) in frames.iter().cycle().take(total).enumerate() {
                    if vidtune_runtime::progress::cancel_requested() {
                        break;
                    }
                    let rgb = frame.to_rgb8()?;
                    let mut config = inline_config(rgb.width(), columns);
                    config.restore_cursor = k + 1 < total;
                    if let Err(e) = viuer::print(&image::DynamicImage::ImageRgb8(rgb), &config) {
                        eprintln!("preview failed ({e}); set VIDTUNE_PREVIEW=file to write GIFs instead");
                        break;
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
                let rgb = image.to_rgb8()?;
                let config = inline_config(rgb.width(), columns);
                if let Err(e) = viuer::print(&image::DynamicImage::ImageRgb8(rgb), &config) {
                    eprintln!("preview failed ({e}); set VIDTUNE_PREVIEW=file to write PNGs instead");
                }
                Ok(None)
            }
        }
    }
}

/// viuer settings for printing below the cursor, with graphics protocols only where the terminal is
/// known (from its environment) to support them, so that viuer's probes never wait on a silent terminal.
fn inline_config(pixel_width: u32, columns: Option<u32>) -> viuer::Config {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let (term, program) = (env("TERM"), env("TERM_PROGRAM"));
    let kitty = std::env::var_os("KITTY_WINDOW_ID").is_some() || term.contains("kitty") || program == "ghostty";
    let iterm = matches!(program.as_str(), "iTerm.app" | "WezTerm");
    let sixel = env("VIDTUNE_PREVIEW") == "sixel" || term.contains("sixel") || term == "foot" || term == "mlterm";
    let limit = columns.unwrap_or_else(|| viuer::terminal_size().0 as u32).max(8);
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
