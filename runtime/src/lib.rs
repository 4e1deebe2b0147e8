//! # vidtune-runtime
//!
//! The plain Rust API of vidtune: media values and video files, synthetic clips, masks, progress with
//! cooperative cancellation, Stable Diffusion 1.x models with their weight loading, and the pipelines.
//! The `vidtune` binary and evcxr notebooks both call this crate directly.
//!
//! **Architecture invariant:** nothing here knows about Rhai, the REPL or the terminal; errors are typed
//! ([`Error`]) and name the input they are about; models do no I/O (loading lives in `weights` and `sd`).

pub mod cache;
pub mod config;
pub mod control;
pub mod cpu;
pub mod device;
pub mod env;
pub mod error;
pub mod eval;
pub mod failpoint;
pub mod flops;
pub mod fsutil;
pub mod load;
pub mod masks;
pub mod media;
pub mod memory;
pub mod models;
pub mod options;
pub mod pipelines;
pub mod progress;
pub mod rng;
pub mod score;
pub mod sd;
pub mod segment;
pub mod synthetic;
pub mod table;
pub mod toy;
pub mod video;
pub mod weights;
pub mod words;

pub use control::{load_controlnet, load_t2i_adapter, Adapter, Control, ControlModel, ControlNet};
pub use error::{Error, Result};
pub use load::load_sd;
pub use masks::Masks;
pub use media::{load_video, save_video, Image, LoadOptions, Video};
pub use sd::{SdLoadOptions, StableDiffusion};
pub use vidtune_kernels::image::Fit;

/// The vidtune version, recorded in saved files.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod architecture_map {
    //! `ARCHITECTURE.md`'s code map names files and folders; each must exist where the map puts it: under
    //! its section's crate (`### \`runtime/\``), inside the folder its bullet is about (`- \`segment/\`:`)
    //! when the bullet names one, else anywhere in that crate.

    use std::path::{Path, PathBuf};

    fn all_paths(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = entry.path();
            let name = entry.file_name();
            if name == "target" || name == ".git" {
                continue;
            }
            if p.is_dir() {
                all_paths(&p, out);
            }
            out.push(p);
        }
    }

    fn is_path(token: &str) -> bool {
        let plain = token.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
        let file = [".rs", ".sh", ".py", ".toml", ".rhai", ".ipynb"].iter().any(|e| token.ends_with(e));
        plain && (file || token.ends_with('/'))
    }

    #[test]
    fn every_file_the_map_names_exists_where_it_says() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
        let map = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
        let mut paths = vec![];
        all_paths(&root, &mut paths);
        let (mut base, mut bullet) = (String::new(), String::new());
        let mut missing = vec![];
        for line in map.lines() {
            if let Some(rest) = line.strip_prefix("### `") {
                base = rest.split('`').next().unwrap_or_default().to_string();
                bullet.clear();
                continue;
            }
            if line.starts_with("## ") {
                (base, bullet) = (String::new(), String::new());
            }
            if let Some(rest) = line.strip_prefix("- `") {
                let first = rest.split('`').next().unwrap_or_default();
                bullet = if first.ends_with('/') { first.to_string() } else { String::new() };
            } else if !line.starts_with("  ") {
                bullet.clear();
            }
            for token in line.split('`').skip(1).step_by(2).filter(|t| is_path(t)) {
                let here = [
                    root.join(token),
                    root.join(&base).join(token),
                    root.join(&base).join("src").join(token),
                    root.join(&base).join("src").join(&bullet).join(token),
                    root.join(&base).join(&bullet).join(token),
                ];
                if here.iter().any(|p| p.exists()) {
                    continue;
                }
                // Without a folder to look in, anywhere in the section's crate.
                let within = root.join(&base);
                let suffix = format!("/{}", token.trim_end_matches('/'));
                let found = bullet.is_empty()
                    && paths.iter().any(|p| p.starts_with(&within) && p.to_string_lossy().ends_with(&suffix));
                if !found {
                    missing.push(format!("`{token}` (section `{base}`, bullet `{bullet}`)"));
                }
            }
        }
        assert!(missing.is_empty(), "ARCHITECTURE.md names what does not exist: {}", missing.join(", "));
    }
}
