//! Measures Tune-A-Video edits of held-out toy-world clips with the toy models: the figures behind the
//! thresholds of `runtime/tests/toy_world.rs`.
//!
//!   cargo run --release -p vidtune-runtime --example toy_edit -- [MODEL_DIR] [steps lr guidance inv_steps sample_steps [DTYPE]]
//!
//! DTYPE (`fp32`, the default, or `bf16` / `fp16`) is the precision of the whole edit: the model's weights
//! (so inversion and sampling) and tuning's forward and backward. The CLIP scorer stays in fp32.

use std::rc::Rc;
use vidtune_runtime::models::clip::ClipModel;
use vidtune_runtime::score::{score, ScoreOptions};
use vidtune_runtime::synthetic::{Motion, Shape};
use vidtune_runtime::toy::probe::{check_edit, edit_clip, EditSettings};
use vidtune_runtime::toy::world::held_out_clip;
use vidtune_runtime::video::VideoSpec;
use vidtune_runtime::{load_sd, SdLoadOptions};

/// The held-out clips of the end-to-end tests: (shape, colour, motion, background colour, edit colour).
pub const CASES: [(Shape, &str, Motion, &str, &str); 3] = [
    (Shape::Circle, "red", Motion::Bounce, "green", "blue"),
    (Shape::Circle, "green", Motion::Right, "blue", "red"),
    (Shape::Triangle, "red", Motion::Circle, "purple", "yellow"),
];

fn main() -> vidtune_runtime::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().cloned().unwrap_or_else(|| "toy".into());
    let num = |i: usize, d: f64| args.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(d);
    let mut settings = EditSettings::default();
    settings.tune.steps = num(1, settings.tune.steps as f64) as i64;
    settings.tune.lr = num(2, settings.tune.lr);
    settings.sample.guidance = num(3, settings.sample.guidance);
    settings.invert_steps = num(4, settings.invert_steps as f64) as i64;
    settings.sample.steps = num(5, settings.sample.steps as f64) as i64;
    let dtype = args.get(6).cloned().unwrap_or_else(|| "fp32".into());
    settings.tune.precision = Some(vidtune_runtime::device::parse_dtype(&dtype)?);
    let opts = SdLoadOptions { device: "cpu".into(), dtype: Some(dtype), ..Default::default() };
    let sd = Rc::new(load_sd(&model, &opts)?);
    let clip_dir = if model == "toy" { "toy".to_string() } else { format!("{model}/clip") };
    let scorer = ClipModel::load(&clip_dir, "cpu", None)?;
    println!("settings: {settings:?}");
    for (shape, color, motion, bg, to) in CASES {
        let clip = held_out_clip(shape, color, motion, bg)?;
        let edit = clip.caption.replacen(color, to, 1);
        for (name, spatial, temporal) in [("tav", "sparse_causal", "temporal"), ("self", "self", "none")] {
            let spec = VideoSpec::with(spatial, temporal)?;
            let t = std::time::Instant::now();
            let out = edit_clip(sd.clone(), &clip.video, &clip.caption, &edit, &spec, &settings)?;
            let secs = t.elapsed().as_secs_f64();
            let c = check_edit(&clip, &out, 3)?;
            let so = ScoreOptions::default();
            let (a_edit, a_src) = (score(&scorer, &out, &edit, &so)?, score(&scorer, &out, &clip.caption, &so)?);
            let src = score(&scorer, &clip.video, &clip.caption, &so)?;
            println!(
                "{:<55} → {to:<7} {name:<5} colour {:<7} (d_target {:.0}, rgb {:.0?}) traj {:.3} bg {:.1} dB | \
                 align edit {:.2} src {:.2} | consistency {:.2} (source {:.2}) | {secs:.1} s",
                clip.caption,
                c.color,
                c.distances[vidtune_runtime::synthetic::COLORS.iter().position(|(n, _)| *n == to).unwrap()],
                c.mean_rgb,
                c.trajectory_corr,
                c.background_psnr,
                a_edit.text_alignment,
                a_src.text_alignment,
                a_edit.frame_consistency,
                src.frame_consistency,
            );
        }
    }
    Ok(())
}
