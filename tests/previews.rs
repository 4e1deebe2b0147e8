//! Previews from `vidtune run`: files without a terminal, side-by-side sheets under their labels, and live
//! denoising.

mod common;
use common::*;

#[test]
fn previews_go_to_files_without_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_script(
        dir.path(),
        "p.rhai",
        "let c = synthetic_clip(#{frames: 4}); preview(c.video); preview(c.masks);",
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("preview: ") && text.contains("001-video.png") && text.contains("002-masks.png"), "{text}");
    let png = image::open(dir.path().join("previews/001-video.png")).unwrap();
    assert!(png.width() > 64 && png.height() > 32);
    // A second run's previews go beside the first run's, never over them.
    let first = std::fs::read(dir.path().join("previews/001-video.png")).unwrap();
    let out = vidtune(dir.path()).args(["run", "p.rhai"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("003-video.png") && stdout(&out).contains("004-masks.png"), "{}", stdout(&out));
    assert!(std::fs::read(dir.path().join("previews/001-video.png")).unwrap() == first);
}

#[test]
fn side_by_side_previews_hold_both_clips_under_their_labels() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
let a = synthetic_clip(#{frames: 12, size: 64, seed: 1});
let b = synthetic_clip(#{frames: 12, size: 64, seed: 2, kind: "square"});
save_video(a.video, "a");
save_video(b.video, "b");
preview(a.video, b.video, #{labels: ["source", "edit"]});
preview([a.video, b.video]);
"#;
    let out = run_script(dir.path(), "side.rhai", script, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let previews = dir.path().join("previews");
    let sheet = image::open(previews.join("001-source-vs-edit.png")).unwrap().to_rgb8();
    // Eight columns of 64-px frames 2 px apart; a frame-number header, then a label strip and a row per clip.
    let (gap, tile, strip) = (2u32, 64u32, 14u32);
    assert_eq!(sheet.width(), 8 * (tile + gap) + gap);
    assert_eq!(sheet.height(), strip + 2 * (strip + tile + 2 * gap));
    // Columns spread over the 12 frames: 0, 2, 3, 5, 6, 8, 9, 11.
    let columns = [0, 2, 3, 5, 6, 8, 9, 11];
    for (row, clip) in [(0u32, "a"), (1, "b")] {
        let top = strip + row * (strip + tile + 2 * gap) + strip + gap;
        for (c, f) in columns.iter().enumerate() {
            let frame = image::open(dir.path().join(clip).join(format!("{f:05}.png"))).unwrap().to_rgb8();
            let left = gap + c as u32 * (tile + gap);
            // Away from the corner where nothing is drawn, the tile is the clip's frame.
            for (x, y) in [(10, 40), (32, 32), (60, 60), (40, 12)] {
                let (p, q) = (sheet.get_pixel(left + x, top + y), frame.get_pixel(x, y));
                let close = p.0.iter().zip(q.0).all(|(a, b)| (*a as i32 - b as i32).abs() <= 1);
                assert!(close, "{clip} frame {f} at ({x}, {y}): {p:?} vs {q:?}");
            }
        }
    }
    // The label strips carry text (white glyph pixels), and different text.
    let strip_pixels = |row: u32| -> Vec<bool> {
        let y0 = strip + row * (strip + tile + 2 * gap);
        (y0..y0 + strip)
            .flat_map(|y| (0..120).map(move |x| (x, y)))
            .map(|(x, y)| sheet.get_pixel(x, y).0 == [255; 3])
            .collect()
    };
    let (source, edit) = (strip_pixels(0), strip_pixels(1));
    assert!(source.iter().filter(|w| **w).count() > 40 && edit.iter().filter(|w| **w).count() > 30);
    assert_ne!(source, edit, "both rows carry the same label");
    // Without labels the rows are numbered.
    assert!(previews.join("002--1-vs--2.png").is_file());
}

#[test]
fn live_denoising_previews_every_n_steps_and_on_step_can_stop() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
let model = inflate(load_sd("random:tiny"));
let calls = 0;
let v = sample(model, "a red circle", #{frames: 3, num_inference_steps: 4, guidance_scale: 3.0, generator: 1,
                                          preview_every: 2});
let stopped = sample(model, "a red circle", #{frames: 3, steps: 6, seed: 1,
    on_step: |step, t, x0| { print(`step ${step} t ${t} x0 ${x0.shape()}`); step < 2 }});
print(`frames ${stopped.len()}`);
"#;
    let out = run_script(dir.path(), "live.rhai", script, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Steps 2 and 4 of 4, each the decoded x̂₀ of the three frames as a numbered contact sheet (2 × 2 tiles).
    let previews = dir.path().join("previews");
    let mut names: Vec<String> = std::fs::read_dir(&previews)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".vidtune-manifest.json")
        .collect();
    names.sort();
    assert_eq!(names, ["001-sample-step-2-of-4.png", "002-sample-step-4-of-4.png"]);
    for n in &names {
        let img = image::open(previews.join(n)).unwrap();
        assert_eq!((img.width(), img.height()), (2 * 66 + 2, 2 * 66 + 2), "{n}");
    }
    // The closure saw steps 1 and 2 (x̂₀ [1, 4, 3, 8, 8]), then stopped the loop; the clip is still decoded.
    let text = stdout(&out);
    assert!(text.contains("step 1 t 831 x0 [1, 4, 3, 8, 8]") && text.contains("step 2 t 665"), "{text}");
    assert!(!text.contains("step 3"), "{text}");
    assert!(text.contains("frames 3"), "{text}");
    // A slip gets a suggestion.
    let out =
        run_script(dir.path(), "slip.rhai", "sample(inflate(load_sd(\"random:tiny\")), \"x\", #{guidence: 3});", &[]);
    assert!(stderr(&out).contains("unknown option \"guidence\" (did you mean \"guidance\"?)"), "{}", stderr(&out));
}
