//! Renders a few synthetic clips to contact sheets and video files, to look at them.
//!
//! `cargo run -p vidtune-runtime --example synthetic_sheet -- OUT_DIR`

use vidtune_runtime::synthetic::{synthetic_clip, Motion, Shape, SyntheticSpec, Texture};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "synthetic".into()));
    let cases = [
        (Shape::Circle, Texture::Stripes, Motion::Right, false),
        (Shape::Triangle, Texture::Noise, Motion::Bounce, true),
        (Shape::Square, Texture::Gradient, Motion::Circle, false),
        (Shape::Diamond, Texture::Plain, Motion::Grow, false),
    ];
    for (i, (shape, texture, motion, occluder)) in cases.into_iter().enumerate() {
        let spec = SyntheticSpec {
            shape: Some(shape),
            background: Some(texture),
            motion: Some(motion),
            occluder,
            frames: 8,
            width: 128,
            height: 96,
            seed: i as u64,
            ..Default::default()
        };
        let clip = synthetic_clip(&spec)?;
        println!("{i}: {}", clip.caption);
        clip.video.grid(4)?.save(out.join(format!("clip{i}.png")))?;
        clip.masks.overlay(&clip.video)?.grid(4)?.save(out.join(format!("clip{i}-mask.png")))?;
        vidtune_runtime::save_video(&clip.video, out.join(format!("clip{i}.mp4")))?;
        vidtune_runtime::save_video(&clip.video, out.join(format!("clip{i}.gif")))?;
    }
    Ok(())
}
