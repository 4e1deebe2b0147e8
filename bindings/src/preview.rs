//! Previews: inline in the terminal through viuer (Kitty / iTerm / sixel where the terminal is known to
//! support them, coloured half-blocks otherwise), or a PNG under a previews folder when stdout is not a
//! terminal. The terminal is never probed unless the environment says it will answer.
//!
//! In a notebook (evcxr) previews display in the cell. `VIDTUNE_PREVIEW=auto|inline|file|notebook|off`
//! overrides the choice, `VIDTUNE_PREVIEW_DIR` the folder
//! (default `./previews`).

use std::io::IsTerminal;
use std::path::PathBuf;
use vidtune_runtime::{Image, Result};

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

    /// Shows `image`; in file mode writes `previews/NNN-label.png` and returns its path.
    pub fn show(&mut self, image: &Image, label: &str) -> Result<Option<PathBuf>> {
        match self.mode {
            PreviewMode::Off => Ok(None),
            PreviewMode::File => {
                self.count += 1;
                let safe: String = label
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
                    .collect();
                let path = self.dir.join(format!("{:03}-{safe}.png", self.count));
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
                let config = inline_config(rgb.width());
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
fn inline_config(pixel_width: u32) -> viuer::Config {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let (term, program) = (env("TERM"), env("TERM_PROGRAM"));
    let kitty = std::env::var_os("KITTY_WINDOW_ID").is_some() || term.contains("kitty") || program == "ghostty";
    let iterm = matches!(program.as_str(), "iTerm.app" | "WezTerm");
    let sixel = env("VIDTUNE_PREVIEW") == "sixel" || term.contains("sixel") || term == "foot" || term == "mlterm";
    let (cols, _) = viuer::terminal_size();
    // Half-blocks show 1x2 pixels per cell: keep small images small, large ones within the terminal.
    let width = (pixel_width.div_ceil(4)).clamp(16, (cols as u32).clamp(20, 100));
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
