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

/// Where a terminal's cursor goes and how many lines scroll off its top, for the bytes a preview writes:
/// line feeds, carriage returns, cursor-up / previous-line and absolute moves (enough for viuer's
/// half-blocks). Starts on the bottom row, where the prompt usually is.
fn lines_scrolled(bytes: &[u8], rows: i64) -> (i64, Vec<i64>) {
    let (mut row, mut scrolled, mut ups) = (rows - 1, 0, vec![]);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' if row == rows - 1 => scrolled += 1,
            b'\n' => row += 1,
            0x1b if bytes.get(i + 1) == Some(&b'[') => {
                let start = i + 2;
                let mut j = start;
                while j < bytes.len() && !(0x40..=0x7e).contains(&bytes[j]) {
                    j += 1;
                }
                let args = String::from_utf8_lossy(&bytes[start..j.min(bytes.len())]).to_string();
                let n: i64 = args.split(';').next().and_then(|a| a.parse().ok()).unwrap_or(1);
                match bytes.get(j) {
                    Some(b'A') | Some(b'F') => {
                        row = (row - n).max(0);
                        ups.push(n);
                    }
                    Some(b'H') => row = (n - 1).clamp(0, rows - 1),
                    _ => {}
                }
                i = j;
            }
            _ => {}
        }
        i += 1;
    }
    (scrolled, ups)
}

/// `play: true` in a terminal 24 rows high, with the prompt at its bottom: each frame is drawn over the
/// last, so one frame's height goes to the scrollback (not one per frame), and a frame taller than the
/// terminal is scaled to fit it.
#[test]
fn inline_play_at_the_bottom_of_a_terminal_draws_in_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("play.rhai"),
        "let a = synthetic_clip(#{frames: 6, size: 64, seed: 1});\npreview(a.video.with_fps(60.0), #{play: true});\n",
    )
    .unwrap();
    let mut cmd = vidtune(dir.path());
    // A new pseudo-terminal has no size: the terminal's lines and columns come from LINES / COLUMNS.
    cmd.env("VIDTUNE_PREVIEW", "inline").env("TERM", "xterm-256color").env("LINES", "24").env("COLUMNS", "80");
    cmd.args(["run", "play.rhai"]);
    let mut p = rexpect::session::spawn_command(cmd, Some(180_000)).unwrap();
    let out = p.exp_eof().unwrap();
    let (scrolled, ups) = lines_scrolled(out.as_bytes(), 24);
    assert_eq!(ups.len(), 5, "five frames drawn over the first: {ups:?}");
    let height = ups[0];
    assert!(height <= 22, "a frame of {height} rows in a terminal of 24");
    assert!(ups.iter().all(|u| *u == height), "{ups:?}");
    assert!(scrolled <= height + 1, "{scrolled} lines scrolled away for frames {height} rows high");
}
