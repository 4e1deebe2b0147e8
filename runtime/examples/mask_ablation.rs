//! The mask-guided editing ablation on held-out toy-world clips: Tune-A-Video, then each mask module and
//! sampling option added, then the `mask-guided` preset — per-frame colour hit rate, subject IoU,
//! background PSNR, toy-CLIP frame consistency and text alignment, averaged over the clips.
//!
//!   cargo run --release -p vidtune-runtime --example mask_ablation -- [clips] [rows…]

use std::rc::Rc;
use vidtune_runtime::models::clip::ClipModel;
use vidtune_runtime::pipelines::invert::{invert, InvertOptions};
use vidtune_runtime::pipelines::sample::{sample, FirstFrame, SampleOptions};
use vidtune_runtime::pipelines::tune::{tune_clips, TuneClip, TuneOptions};
use vidtune_runtime::score::{score, ScoreOptions};
use vidtune_runtime::segment::{segment, Builtin, Click, SegmentOptions};
use vidtune_runtime::synthetic::{Motion, Shape, SyntheticClip};
use vidtune_runtime::toy::probe::{centroids, check_frames};
use vidtune_runtime::toy::world::held_out_clip;
use vidtune_runtime::video::{inflate, VideoSpec};
use vidtune_runtime::{load_sd, Masks, SdLoadOptions, StableDiffusion, Video};

/// Held-out clips and the colour each edit asks for.
const CLIPS: [(Shape, &str, Motion, &str, &str); 8] = [
    (Shape::Square, "blue", Motion::Bounce, "orange", "yellow"),
    (Shape::Diamond, "red", Motion::Right, "green", "blue"),
    (Shape::Triangle, "green", Motion::Left, "purple", "red"),
    (Shape::Circle, "purple", Motion::Left, "yellow", "green"),
    (Shape::Square, "orange", Motion::Circle, "blue", "white"),
    (Shape::Diamond, "pink", Motion::Right, "green", "yellow"),
    (Shape::Circle, "red", Motion::Bounce, "green", "blue"),
    (Shape::Triangle, "red", Motion::Circle, "purple", "yellow"),
];

struct Row {
    name: &'static str,
    /// Tuning steps.
    steps: i64,
    spec: VideoSpec,
    /// Tune and invert with the masks (mask modules need them).
    masks: bool,
    /// Invert with the source caption (else the null prompt).
    invert_prompt: bool,
    /// Options of the sample from (masks, subject words, source caption).
    sample: Box<dyn Fn(&Masks, &str, &str) -> SampleOptions>,
}

fn base_sample() -> SampleOptions {
    let feather = std::env::var("VIDTUNE_ABL_FEATHER").ok().and_then(|f| f.parse().ok()).unwrap_or(1);
    SampleOptions { steps: 20, guidance: 4.0, seed: Some(33), feather, ..Default::default() }
}

fn rows() -> Vec<Row> {
    let mca = VideoSpec {
        mask: Some(
            vidtune_runtime::video::processors::ModuleSpec::named(
                vidtune_runtime::video::processors::Role::Mask,
                "mca",
            )
            .unwrap(),
        ),
        ..VideoSpec::default()
    };
    let masked = VideoSpec {
        cross: vidtune_runtime::video::processors::ModuleSpec::named(
            vidtune_runtime::video::processors::Role::Cross,
            "masked",
        )
        .unwrap(),
        ..VideoSpec::default()
    };
    vec![
        Row {
            name: "tav",
            steps: 40,
            spec: VideoSpec::default(),
            masks: false,
            invert_prompt: false,
            sample: Box::new(|_, _, _| base_sample()),
        },
        Row {
            name: "+mca",
            steps: 40,
            spec: mca,
            masks: true,
            invert_prompt: false,
            sample: Box::new(|m, _, _| SampleOptions { masks: Some(m.clone()), ..base_sample() }),
        },
        Row {
            name: "+masked-cross",
            steps: 40,
            spec: masked,
            masks: true,
            invert_prompt: false,
            sample: Box::new(|m, s, _| SampleOptions {
                masks: Some(m.clone()),
                subject: Some(s.into()),
                ..base_sample()
            }),
        },
        Row {
            name: "+first-frame",
            steps: 40,
            spec: VideoSpec::default(),
            masks: false,
            invert_prompt: false,
            sample: Box::new(|_, _, _| SampleOptions {
                first_frame: Some(FirstFrame::Edit),
                shared_noise: Some(0.2),
                ..base_sample()
            }),
        },
        Row {
            name: "+keep-bg",
            steps: 40,
            spec: VideoSpec::default(),
            masks: true,
            invert_prompt: false,
            sample: Box::new(|m, _, _| SampleOptions {
                masks: Some(m.clone()),
                keep_background: true,
                ..base_sample()
            }),
        },
        Row {
            name: "mask-guided",
            steps: 40,
            spec: VideoSpec::mask_guided(),
            masks: true,
            invert_prompt: false,
            sample: Box::new(|m, s, _| SampleOptions {
                masks: Some(m.clone()),
                subject: Some(s.into()),
                keep_background: true,
                ..base_sample()
            }),
        },
    ]
    .into_iter()
    .chain(experiments())
    .collect()
}

/// Rows named `kb:S:G` (keep_background, strength S, guidance G) and `mg:S:G` (the preset likewise),
/// for exploring settings from the command line.
fn experiments() -> Vec<Row> {
    let mut out = vec![];
    for name in std::env::args().skip(2) {
        let parts: Vec<&str> = name.split(':').collect();
        if parts.len() < 3 {
            continue;
        }
        let (strength, guidance): (f64, f64) = (parts[1].parse().unwrap_or(1.0), parts[2].parse().unwrap_or(4.0));
        let renoise: f64 = parts.get(3).and_then(|p| p.parse().ok()).unwrap_or(0.0);
        let cross: f64 = parts.get(4).and_then(|p| p.parse().ok()).unwrap_or(1.0);
        let steps: i64 = parts.get(5).and_then(|p| p.parse().ok()).unwrap_or(40);
        // `src…`: inverted with the source caption and guided away from it (the negative prompt).
        let src = parts[0].starts_with("src");
        let kind = parts[0].trim_start_matches("src");
        let mut spec = if kind == "mg" { VideoSpec::mask_guided() } else { VideoSpec::default() };
        let subject = kind == "mg";
        if kind == "mg" {
            spec.cross = vidtune_runtime::video::processors::ModuleSpec::parse_role(
                vidtune_runtime::video::processors::Role::Cross,
                &format!("masked:strength={cross}"),
            )
            .unwrap();
        }
        out.push(Row {
            name: Box::leak(name.clone().into_boxed_str()),
            steps,
            spec,
            masks: true,
            invert_prompt: src,
            sample: Box::new(move |m, s, caption| SampleOptions {
                masks: Some(m.clone()),
                subject: subject.then(|| s.to_string()),
                keep_background: true,
                strength,
                guidance,
                renoise,
                negative: if src { caption.to_string() } else { String::new() },
                ..base_sample()
            }),
        });
    }
    out
}

fn segmented(clip: &SyntheticClip) -> vidtune_runtime::Result<Masks> {
    let (x, y) = centroids(&clip.masks)[0];
    segment(
        &clip.video,
        &[Click::Point { x, y, positive: true, frame: Some(0) }],
        &mut Builtin::default(),
        &SegmentOptions::default(),
    )
}

fn edit(
    sd: Rc<StableDiffusion>,
    row: &Row,
    clip: &SyntheticClip,
    masks: &Masks,
    prompt: &str,
    to: &str,
) -> vidtune_runtime::Result<Video> {
    let model = inflate(sd, &row.spec, 33)?;
    let m = row.masks.then(|| masks.clone());
    let opts = TuneOptions { steps: row.steps, lr: 1e-3, ..Default::default() };
    let tuned = tune_clips(
        &model,
        &[TuneClip { video: clip.video.clone(), prompt: clip.caption.clone(), masks: m.clone(), controls: vec![] }],
        &opts,
    )?;
    let prompt_inv = if row.invert_prompt { clip.caption.clone() } else { String::new() };
    let inv =
        invert(&tuned, &clip.video, &InvertOptions { steps: 20, masks: m, prompt: prompt_inv, ..Default::default() })?;
    let subject = format!("{to} {}", clip.spec.shape.map(|s| s.name()).unwrap_or("circle"));
    let o = (row.sample)(masks, &subject, &clip.caption);
    Ok(sample(&tuned, prompt, Some(&inv), &o)?.0)
}

fn main() -> vidtune_runtime::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(CLIPS.len());
    let only: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    vidtune_runtime::progress::set_mode(vidtune_runtime::progress::Mode::Silent);
    let sd = Rc::new(load_sd("toy", &SdLoadOptions { device: "cpu".into(), ..Default::default() })?);
    let scorer = ClipModel::load("toy", "cpu", None)?;
    println!("| row | colour hit rate | subject IoU | background PSNR | frame consistency | text alignment | per clip hits |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for row in rows().iter().filter(|r| only.is_empty() || only.contains(&r.name)) {
        let (mut hit, mut iou, mut bg, mut cons, mut align) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let mut per = vec![];
        for &(shape, color, motion, bgc, to) in CLIPS.iter().take(n) {
            let clip = held_out_clip(shape, color, motion, bgc)?;
            let masks = segmented(&clip)?;
            let prompt = clip.caption.replacen(color, to, 1);
            let out = edit(sd.clone(), row, &clip, &masks, &prompt, to)?;
            let c = check_frames(&clip, &out, to, 3)?;
            if let Ok(dir) = std::env::var("VIDTUNE_ABLATION_OUT") {
                let sheet = Video::new(
                    tch::Tensor::cat(&[clip.video.frames(), out.frames(), c.masks.overlay(&out)?.frames()], 0),
                    8.0,
                )?;
                let name = format!(
                    "{dir}/{}-{}-{to}.png",
                    row.name,
                    clip.caption.split(' ').take(3).collect::<Vec<_>>().join("-")
                );
                sheet.grid(8)?.save(&name)?;
            }
            let s = score(&scorer, &out, &prompt, &ScoreOptions::default())?;
            hit += c.hit_rate;
            iou += c.iou;
            bg += c.background_psnr;
            cons += s.frame_consistency;
            align += s.text_alignment;
            per.push(format!("{:.0}%", 100.0 * c.hit_rate));
            eprintln!(
                "{:<14} {:<60} → {to:<6} {:?} iou {:.2} bg {:.1}",
                row.name, clip.caption, c.colors, c.iou, c.background_psnr
            );
        }
        let k = n as f64;
        println!(
            "| {} | {:.0} % | {:.2} | {:.1} dB | {:.1} | {:.1} | {} |",
            row.name,
            100.0 * hit / k,
            iou / k,
            bg / k,
            cons / k,
            align / k,
            per.join(" ")
        );
    }
    Ok(())
}
