//! `vidtune run`, `doctor` and `--help`: script output, parameters, and errors with their positions.

mod common;
use common::*;

/// Runs `code` as `bad.rhai` and expects it to fail with `expected` in its error. An error quotes its
/// source line and names its file, so `expected` must be neither: it would pass on any error at all.
fn expect_error(dir: &std::path::Path, code: &str, expected: &str) {
    assert!(!code.contains(expected) && !"bad.rhai".contains(expected), "{expected:?} is an echo of {code}");
    let out = run_script(dir, "bad.rhai", code, &[]);
    assert_eq!(out.status.code(), Some(1), "{code}");
    assert!(stderr(&out).contains(expected), "{code}: expected {expected:?} in\n{}", stderr(&out));
}

#[test]
fn run_prints_and_reads_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
let steps = param("steps", 500);
let prompt = param("prompt", "a car");
let scale = param("scale", 7.5);
print(`steps=${steps} type=${type_of(steps)} prompt=${prompt} scale=${scale}`);
"#;
    let out = run_script(
        dir.path(),
        "p.rhai",
        script,
        &["--set", "steps=10", "--set", "prompt=\"a red car\"", "--set", "scale=3"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "steps=10 type=i64 prompt=a red car scale=3.0");

    // A name the script never reads is refused before it runs, with the nearest one it reads.
    let out = run_script(dir.path(), "p.rhai", script, &["--set", "stpes=10"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "--set stpes: p.rhai never reads param(\"stpes\", …) (did you mean \"steps\"?); it reads prompt, scale, steps"
        ),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "the script ran: {}", stdout(&out));
    // A script that computes a name may read it: checked after the run, as a warning.
    let open = "let n = \"st\" + \"eps\";\nprint(param(n, 1));";
    let out = run_script(dir.path(), "q.rhai", open, &["--set", "stpes=10"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--set stpes was given but the script never reads param(\"stpes\""),
        "{}",
        stderr(&out)
    );

    let out = run_script(dir.path(), "p.rhai", script, &["--set", "steps=many"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--set steps=many: expected an integer (the default is 500)"), "{}", stderr(&out));
}

#[test]
fn syntax_error_has_file_line_column_and_caret() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_script(dir.path(), "bad.rhai", "let a = 1;\nlet b = (a + ;\n", &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let mut lines = err.lines();
    let first = lines.next().unwrap();
    assert!(first.starts_with("bad.rhai:2:14: syntax error"), "{err}");
    assert_eq!(lines.next().unwrap(), "2 | let b = (a + ;");
    assert_eq!(lines.next().unwrap(), "  |              ^");
}

#[test]
fn runtime_error_points_into_the_function() {
    let dir = tempfile::tempdir().unwrap();
    let script = "fn open(p) {\n    load_video(p)\n}\nlet v = open(\"missing.mp4\");\n";
    let out = run_script(dir.path(), "f.rhai", script, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("f.rhai:2:5: no such file or directory: missing.mp4"), "{err}");
    assert!(err.contains("2 |     load_video(p)") && err.contains("  |     ^"), "{err}");
    assert!(err.contains("note: in call to function 'open' at f.rhai:4:9"), "{err}");
}

#[test]
fn bad_script_arguments_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("load_video(42);", "wrong arguments for load_video: called as load_video (i64); usage:"),
        (
            "load_video(\"x.mp4\", #{frame: 2});",
            "load_video: unknown option \"frame\" (did you mean \"frames\"?); allowed options: every, fit, frames, size, \
             start",
        ),
        (
            "load_video(\"x.mp4\", #{fit: \"stretch\"});",
            "unknown fit \"stretch\"; expected one of \"resize\", \"crop\", \"pad\"",
        ),
        ("load_video(\"x.mp4\", #{size: 0});", "size must be positive, got 0x0"),
        ("load_video(\"x.mp4\", #{frames: \"all\"});", "option \"frames\" must be an integer, got string \"all\""),
        ("synthetic_clip(#{kind: \"hexagon\"});", "unknown kind \"hexagon\""),
        ("synthetic_clip(#{motion: \"zigzag\"});", "unknown Motion \"zigzag\"; expected one of \"right\""),
        ("synthetic_clip().video.frame(99);", "frame index 99 out of range: the video has 8 frames"),
        ("preview(42);", "preview: cannot show 42; expected Video, Image or Masks"),
        ("save_video(synthetic_clip().video, \"out.avi\");", "out.avi: cannot save a video as .avi"),
        ("load_video(\".\");", "contains no .png, .jpg or .jpeg frames"),
    ];
    for (code, expected) in cases {
        let out = run_script(dir.path(), "b.rhai", code, &[]);
        assert_eq!(out.status.code(), Some(1), "{code}");
        let err = stderr(&out);
        assert!(err.starts_with("b.rhai:1:"), "{code}: {err}");
        assert!(err.contains(expected), "{code}: expected {expected:?} in\n{err}");
    }
    // A load with size not a multiple of 8 works but warns that the models will refuse it.
    let out = run_script(
        dir.path(),
        "w.rhai",
        "let c = synthetic_clip(); save_video(c.video, \"f\"); load_video(\"f\", #{size: 30});",
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("size 30x30 is not a multiple of 8"), "{}", stderr(&out));
}

#[test]
fn missing_script_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = vidtune(dir.path()).args(["run", "nowhere.rhai"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nowhere.rhai: cannot read script: no such file"), "{}", stderr(&out));
}

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
fn doctor_reports_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let out = vidtune(dir.path()).arg("doctor").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for row in ["libtorch", "CUDA", "CPU math", "FFmpeg", "ONNX Runtime", "weights", "disk", "memory", "speed"] {
        let line = text.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("no {row} row in\n{text}"));
        let verdict = line[14..].split_whitespace().next().unwrap_or_default();
        assert!(["ok", "warn", "note"].contains(&verdict), "{row} has no verdict: {line}");
    }
    assert!(text.contains("GFLOP/s") && text.contains("SD1.x at 8 × 512² ≈"), "{text}");
    assert!(text.contains("next steps:") || text.contains("everything vidtune uses is here"), "{text}");
    assert!(text.contains("2.11"), "{text}");
    // The binary answers MKL's vendor check itself (runtime::cpu), and VIDTUNE_MKL=default leaves it to MKL.
    let math = text.lines().find(|l| l.starts_with("CPU math")).unwrap();
    if vidtune_runtime::cpu::mkl_dispatch() == vidtune_runtime::cpu::MklDispatch::AmdAvx512 {
        assert!(math.contains("AVX-512 kernels"), "{math}");
        let out = vidtune(dir.path()).arg("doctor").env("VIDTUNE_MKL", "default").output().unwrap();
        assert!(stdout(&out).contains("generic AVX2 kernels (VIDTUNE_MKL=default)"), "{}", stdout(&out));
    }
}

#[test]
fn help_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--help"][..], &["run", "--help"], &["watch", "--help"], &["doctor", "--help"]] {
        let out = vidtune(dir.path()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(stdout(&out).contains("Usage: vidtune"), "{args:?}");
    }
    let out = vidtune(dir.path()).args(["run", "--help"]).output().unwrap();
    assert!(stdout(&out).contains("--set <NAME=VALUE>"));
}

#[test]
fn stable_diffusion_from_a_script() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
let sd = load_sd("random:tiny", #{seed: 1, device: "cpu"});
print(sd.info().source);
let e = encode_prompt(sd, "a red circle");
print(e.shape());
let img = t2i(sd, "a red circle", #{steps: 2, seed: 9});
img.save("out.png");
save_tensors(#{emb: e}, "emb.safetensors");
print(load_tensors("emb.safetensors").emb.dtype());
"#;
    let out = run_script(dir.path(), "sd.rhai", script, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("random weights"), "{text}");
    assert!(text.contains("random:tiny") && text.contains("[1, 77, 32]") && text.contains("fp32"), "{text}");
    assert_eq!(image::open(dir.path().join("out.png")).unwrap().width(), 64);

    for (code, expected) in [
        ("load_sd(\"random:tiny\", #{dtype: \"int8\"});", "unknown dtype \"int8\""),
        ("load_sd(\"random:tiny\", #{steps: 3});", "load_sd: unknown option \"steps\""),
        ("t2i(load_sd(\"random:tiny\"), \"x\", #{width: 60, steps: 1});", "60x64 is not a multiple of 8"),
        ("load_sd(\"nowhere/model\");", "nowhere/model is not in the Hugging Face cache"),
        ("load_sd(\"weights.ckpt\");", "no such file or directory: weights.ckpt"),
    ] {
        expect_error(dir.path(), code, expected);
    }
}

fn smoke_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--set",
        "model=random:tiny",
        "--set",
        "video=synthetic",
        "--set",
        "frames=3",
        "--set",
        "size=64",
        "--set",
        "steps=2",
        "--set",
        "inv_steps=2",
        "--set",
        "sample_steps=2",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn paper_scripts_run_end_to_end_on_a_tiny_random_model() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    for (script, modules) in [("tune-a-video.rhai", "sparse_causal"), ("ei2.rhai", "ffam:2")] {
        let out = vidtune(dir.path())
            .arg("run")
            .arg(root.join(script))
            .args(smoke_args(&["--set", "out=o"]))
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {}", stderr(&out));
        let tuned = std::fs::read(dir.path().join("o/tuned.vidtune.safetensors")).unwrap();
        assert!(
            String::from_utf8_lossy(&tuned[..4096.min(tuned.len())]).contains(modules),
            "{script}: modules in metadata"
        );
        assert!(dir.path().join("o/edit.mp4").exists());
    }
    // The mask papers' workflows, on the same tiny random model.
    let quick = ["--set", "model=random:tiny", "--set", "frames=3", "--set", "steps=2", "--set", "out=m"];
    let out = vidtune(dir.path())
        .arg("run")
        .arg(root.join("mask-guided.rhai"))
        .args(quick)
        .args(["--set", "inv_steps=2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "mask-guided.rhai: {}", stderr(&out));
    assert!(stdout(&out).contains("cross masked + mask mca"), "{}", stdout(&out));
    for f in ["m/edit.gif", "m/edit-sheet.png", "m/masks/00002.png"] {
        assert!(dir.path().join(f).is_file(), "mask-guided.rhai: {f}");
    }
    let out = vidtune(dir.path())
        .arg("run")
        .arg(root.join("dynamic-mask.rhai"))
        .args(quick)
        .args(["--set", "clips=2", "--set", "sample_steps=2", "--set", "out=d"])
        .output()
        .unwrap();
    assert!(out.status.success(), "dynamic-mask.rhai: {}", stderr(&out));
    assert!(stdout(&out).contains("tuning on 2 clips"), "{}", stdout(&out));
    assert!(dir.path().join("d/generated.gif").is_file());
    // The long-video framework: separate tuning, fusion, combined tuning, co-denoising.
    let out = vidtune(dir.path())
        .arg("run")
        .arg(root.join("long-video.rhai"))
        .args(["--set", "model=random:tiny", "--set", "segments=2", "--set", "steps=2", "--set", "sample_steps=3"])
        .args(["--set", "samples=2", "--set", "out=l"])
        .output()
        .unwrap();
    assert!(out.status.success(), "long-video.rhai: {}", stderr(&out));
    assert!(stdout(&out).contains("segment 1: tuned and fused"), "{}", stdout(&out));
    assert!(stdout(&out).contains("edit: Video(16 frames"), "{}", stdout(&out));
    assert!(dir.path().join("l/edit.gif").is_file());
}

#[test]
fn a_new_edit_prompt_reuses_tuning_and_inversion_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
let sd = load_sd("random:tiny");
let clip = synthetic_clip(#{frames: 3, size: 32, seed: 2}).video;
let tuned = tune(inflate(sd), clip, "a circle", #{steps: param("steps", 3)});
let inv = invert(tuned, clip, #{steps: 3});
let v = sample(tuned, param("edit", "a red circle"), #{latents: inv, steps: 2});
let s = pipeline_stats();
print(`tune ${s.tune_steps} invert ${s.invert_steps} sample ${s.sample_steps}`);
"#;
    let run = |args: &[&str]| {
        let out = run_script(dir.path(), "memo.rhai", script, args);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    assert!(run(&[]).contains("tune 3 invert 3 sample 2"));
    // The same run again: the edit from inverted latents is reproducible, so it is memoised too.
    assert!(run(&[]).contains("tune 0 invert 0 sample 0"));
    // Another process, another edit prompt: tuning and inversion come from the disk cache.
    assert!(run(&["--set", "edit=\"a blue circle\""]).contains("tune 0 invert 0 sample 2"));
    // Another option: tuning runs again (and so does the inversion of the new model).
    assert!(run(&["--set", "steps=4"]).contains("tune 4 invert 3 sample 2"));
    // The cache is visible in the REPL's terms, and clearable.
    let out = run_script(dir.path(), "info.rhai", "let c = cache_info(); print(`entries ${c.disk_entries}`);", &[]);
    // Two tunings, two inversions, three edits.
    assert!(stdout(&out).contains("entries 7"), "{}", stdout(&out));
}

#[test]
fn scoring_from_a_script_with_tables_and_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let clip_dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels-tests/fixtures/generated/clip/model");
    assert!(clip_dir.exists(), "run the fixture script first (./dev.sh test does)");
    let script = format!(
        r#"
let clip = load_clip("{}", #{{device: "cpu"}});
let a = synthetic_clip(#{{kind: "circle", frames: 4, size: 48, seed: 1}});
let b = synthetic_clip(#{{kind: "square", frames: 4, size: 48, seed: 2}});
let s = score(a.video, a.caption, #{{clip: clip}});
print(`alignment ${{s.text_alignment}} consistency ${{s.frame_consistency}} frames ${{s.per_frame_alignment.len()}}`);
let t = compare([#{{name: "circle", video: a.video, prompt: a.caption}}, #{{name: "square", video: b.video, prompt: b.caption}}], #{{clip: clip, pairs: "adjacent"}});
print(t);
t.save("scores.csv");
t.save("scores.md");
save_video(a.video, "out/a.gif", #{{sidecar: #{{score: s, prompt: a.caption}}}});
"#,
        clip_dir.display()
    );
    let out = run_script(dir.path(), "score.rhai", &script, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("frames 4") && text.contains("│ circle") && text.contains("frame consistency"), "{text}");
    let csv = std::fs::read_to_string(dir.path().join("scores.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(std::fs::read_to_string(dir.path().join("scores.md")).unwrap().contains("| square |"));
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/a.json")).unwrap()).unwrap();
    assert_eq!(sidecar["video"]["frames"], 4);
    assert!(sidecar["score"]["text_alignment"].is_number());
    for (code, expected) in [
        ("score(synthetic_clip().video, \"x\", #{});", "score: needs #{clip: load_clip"),
        ("load_clip(\"nowhere/clip\");", "nowhere/clip is not in the Hugging Face cache"),
        ("compare([], #{clip: ()});", "compare: needs #{clip"),
    ] {
        expect_error(dir.path(), code, expected);
    }
}

#[test]
fn segmenting_from_a_script_with_clicks_masks_and_previews() {
    let dir = tempfile::tempdir().unwrap();
    let sam_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels-tests/fixtures/generated/sam");
    assert!(sam_dir.exists(), "run the fixture script first (./dev.sh test does)");
    let script = format!(
        r#"
let c = synthetic_clip(#{{kind: "square", frames: 6, size: [96, 80], seed: 4, motion: "right"}});
let b = c.masks.bbox()[0];
let m = segment(c.video, [click((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)]);
print(`iou ${{m.iou(c.masks)}} frames ${{m.len()}} confidence ${{m.confidence().len()}} flagged ${{m.flagged().len()}}`);
preview(m);
let latent = m.resize([12, 10]);
print(latent);
m.dilate(2).union(m).intersect(m.invert().invert()).save("out/masks");
print(load_masks("out/masks").iou(m));
let sam = load_sam("{sam}");
print(sam);
let s = segment(c.video, [click(30, 40), box(10, 10, 60, 60, #{{frame: 3}})], #{{model: sam, propagate: false}});
print(`sam ${{s}}`);
"#,
        sam = sam_dir.display()
    );
    let out = run_script(dir.path(), "seg.rhai", &script, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("iou 1.0 frames 6 confidence 6 flagged 0"), "{text}");
    assert!(text.contains("Masks(6 frames, 12x10"), "{text}");
    assert!(text.contains("\n1.0\n"), "{text}");
    assert!(text.contains("Sam(") && text.contains("CPU execution provider"), "{text}");
    assert!(text.contains("sam Masks(6 frames, 96x80") && text.contains("Segment Anything"), "{text}");
    // The preview is the overlay on the clip: a contact sheet of the clip's size, in colour.
    // (The folder's manifest, a dotfile, records the previews as vidtune's.)
    let previews: Vec<_> = std::fs::read_dir(dir.path().join("previews"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(previews.len(), 1);
    let sheet = image::open(&previews[0]).unwrap().to_rgb8();
    assert!(sheet.pixels().any(|p| p.0[0] != p.0[1]), "the masks preview is the tinted clip, not a grey mask");
    // The workflow script, on its synthetic default.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    let out = vidtune(dir.path())
        .arg("run")
        .arg(root.join("segment.rhai"))
        .args(["--set", "frames=6", "--set", "out=seg"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("mean IoU with the exact masks: 0.9"), "{}", stdout(&out));
    assert!(dir.path().join("seg/overlay.png").exists() && dir.path().join("seg/masks/00005.png").exists());
    for (code, expected) in [
        ("segment(synthetic_clip().video, []);", "segment needs at least one click"),
        ("segment(synthetic_clip().video, [click(500, 3)]);", "click(500, 3) is outside the 64x64 frame"),
        ("segment(synthetic_clip().video, [click(5, 3, #{frame: 20})]);", "is on frame 20, but the clip has 8 frames"),
        ("segment(synthetic_clip().video, [1, 2]);", "clicks[0] is 1, not a click(x, y)"),
        ("segment(synthetic_clip().video, click(5, 5), #{model: 3});", "option \"model\" must be a Sam"),
        ("click(\"a\", 3);", "click: x must be a number"),
        ("load_sam(\"nowhere\");", "no such file or directory: nowhere"),
        ("synthetic_clip().masks.union(synthetic_clip(#{frames: 3}).masks);", "union: masks of 8 frames"),
        ("load_masks(\"none/\");", "no such file or directory: none/"),
        ("synthetic_clip().masks.resize(0);", "positive"),
    ] {
        expect_error(dir.path(), code, expected);
    }
}

#[test]
fn the_demo_edits_a_held_out_toy_clip_and_saves_everything() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    let out = vidtune(dir.path()).arg("run").arg(root.join("demo.rhai")).args(["--set", "out=demo"]).output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{}\n{text}", stderr(&out));
    assert!(text.contains("a red triangle moving in a circle on a purple striped background"), "{text}");
    assert!(text.contains("edit: \"a yellow triangle moving in a circle"), "{text}");
    assert!(text.contains("StableDiffusion(toy;"), "{text}");
    let d = dir.path().join("demo");
    let video = if d.join("edit.mp4").exists() { "edit.mp4" } else { "edit.gif" };
    for f in [
        video,
        "edit.json",
        "edit.gif",
        "compare.png",
        "source-sheet.png",
        "edit-sheet.png",
        "masks/00007.png",
        "scores.md",
    ] {
        assert!(d.join(f).is_file(), "{f} was not written");
    }
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("edit.json")).unwrap()).unwrap();
    assert!(sidecar["score"]["text_alignment"].as_f64().is_some(), "{sidecar}");
    assert_eq!(sidecar["edit"], "a yellow triangle moving in a circle on a purple striped background");
    // Previews: the clip, the masks and the edit.
    assert!(std::fs::read_dir(dir.path().join("previews")).unwrap().count() >= 3);
    // The edit keeps its subject: the asked colour in every frame, where the source's was, and the
    // background (the demo's score table measures them).
    let scores = std::fs::read_to_string(d.join("scores.md")).unwrap();
    let row = scores.lines().find(|l| l.starts_with("| edit |")).unwrap_or_else(|| panic!("{scores}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells[2], "100 %", "colour hit rate: {row}");
    let psnr: f64 = cells[4].trim_end_matches(" dB").parse().unwrap();
    assert!(psnr >= 25.0, "background PSNR: {row}");
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on the pid of a child we spawned and still own.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Waits until `dir` holds an entry whose name starts with `prefix`.
fn wait_for_entry(dir: &std::path::Path, prefix: &str, child: &mut std::process::Child) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if std::fs::read_dir(dir).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with(prefix)) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("exited ({status}) before {prefix}… appeared");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("no {prefix}… in {}", dir.display());
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// A long save: 1500 frames of 128² as PNGs (seconds of encoding).
const LONG_SAVE: &str = "save_video(synthetic_clip(#{frames: 1500, size: 128, seed: 1}).video, \"frames\");";

#[test]
fn a_save_killed_half_way_leaves_the_old_folder_and_its_leftovers_go_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_script(
        dir.path(),
        "old.rhai",
        "save_video(synthetic_clip(#{frames: 2, size: 16}).video, \"frames\");",
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(dir.path().join("long.rhai"), LONG_SAVE).unwrap();
    let mut child = vidtune(dir.path()).args(["run", "long.rhai"]).spawn().unwrap();
    wait_for_entry(dir.path(), ".frames.vidtune-tmp-", &mut child);
    std::thread::sleep(std::time::Duration::from_millis(50));
    signal(&child, libc::SIGKILL);
    let _ = child.wait();
    // The folder is the old one, whole; the dead process's temporary folder is beside it.
    assert_eq!(entries(&dir.path().join("frames")), [".vidtune-manifest.json", "00000.png", "00001.png"]);
    assert!(entries(dir.path()).iter().any(|n| n.starts_with(".frames.vidtune-tmp-")), "{:?}", entries(dir.path()));
    // The next save of that path removes the leftovers of the dead process.
    let out = run_script(
        dir.path(),
        "again.rhai",
        "save_video(synthetic_clip(#{frames: 3, size: 16}).video, \"frames\");",
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!entries(dir.path()).iter().any(|n| n.starts_with(".frames.")), "{:?}", entries(dir.path()));
    assert_eq!(entries(&dir.path().join("frames")).len(), 4);
}

#[test]
fn ctrl_c_in_run_keeps_finished_files_removes_temporaries_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!("save_video(synthetic_clip(#{{frames: 2, size: 16}}).video, \"first.gif\");\n{LONG_SAVE}\n");
    std::fs::write(dir.path().join("s.rhai"), script).unwrap();
    let mut child = vidtune(dir.path()).args(["run", "s.rhai"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    wait_for_entry(dir.path(), ".frames.vidtune-tmp-", &mut child);
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("cancelling at the next step"), "{}", stderr(&out));
    assert_eq!(
        entries(dir.path()),
        [".vidtune-manifest.json", "cache", "first.gif", "s.rhai"],
        "finished files stay (recorded as vidtune's), temporaries go"
    );
}

/// What a running `vidtune run` is doing when it is interrupted, and how to tell it has started.
const INTERRUPTED: &[(&str, &str)] = &[
    (
        "tune",
        "let m = inflate(load_sd(\"random:tiny\"));\nlet c = synthetic_clip(#{frames: 4, size: 32, seed: 1}).video;\n\
         print(\"ready\");\ntune(m, c, \"a red circle\", #{steps: 100000, cache: false});",
    ),
    (
        "invert",
        "let m = inflate(load_sd(\"random:tiny\"));\nlet c = synthetic_clip(#{frames: 4, size: 32, seed: 1}).video;\n\
         print(\"ready\");\ninvert(m, c, #{steps: 1000, cache: false});",
    ),
    ("frames", "print(\"ready\");\nsave_video(synthetic_clip(#{frames: 1500, size: 128, seed: 1}).video, \"frames\");"),
    ("gif", "let v = synthetic_clip(#{frames: 600, size: 128, seed: 1}).video;\nprint(\"ready\");\nsave_video(v, \"clip.gif\");"),
    ("mp4", "let v = synthetic_clip(#{frames: 900, size: 128, seed: 1}).video;\nprint(\"ready\");\nsave_video(v, \"clip.mp4\");"),
];

#[test]
fn repeated_ctrl_c_or_sigterm_during_tune_invert_and_saves_exits_130_or_143_without_a_crash_or_leftovers() {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    for round in 0..10 {
        let (what, script) = INTERRUPTED[round % INTERRUPTED.len()];
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.rhai"), script).unwrap();
        let mut child = vidtune(dir.path())
            .args(["run", "s.rhai"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the script's "ready" (other lines may come first), then keep draining stdout.
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while line.trim() != "ready" {
            line.clear();
            assert!(stdout.read_line(&mut line).unwrap() > 0, "{what}: the script ended before it was ready");
        }
        let drain = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        // Into the work, then two presses in quick succession (the second while the first is handled);
        // in the last rounds SIGTERM instead, which ends the run with 143.
        let (sig, status) = if round >= 8 { (libc::SIGTERM, 143) } else { (libc::SIGINT, 130) };
        std::thread::sleep(std::time::Duration::from_millis(100 + 37 * round as u64));
        signal(&child, sig);
        std::thread::sleep(std::time::Duration::from_millis(5 * round as u64));
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        let _ = drain.join();
        assert_eq!(out.status.signal(), None, "round {round} ({what}) died of a signal: {}", stderr(&out));
        assert_eq!(out.status.code(), Some(status), "round {round} ({what}): {}", stderr(&out));
        let left: Vec<String> = entries(dir.path()).into_iter().filter(|n| n.contains("vidtune-tmp")).collect();
        assert!(left.is_empty(), "round {round} ({what}) left {left:?}");
        let pending = dir.path().join("cache/vidtune/pending");
        if pending.is_dir() {
            assert_eq!(entries(&pending), Vec::<String>::new(), "round {round} ({what}): records left");
        }
    }
}

#[test]
fn a_planted_manifest_and_lookalike_temporaries_never_cost_a_user_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("victim.txt"), "precious").unwrap();
    std::fs::create_dir_all(d.join("out")).unwrap();
    std::fs::write(d.join("out/notes.txt"), "mine").unwrap();
    std::fs::write(d.join("out/.vidtune-manifest.json"), r#"{"files":["../victim.txt","notes.txt"]}"#).unwrap();
    // Names a killed save of out.gif would have left, but the user's.
    std::fs::create_dir_all(d.join(".out.gif.tmp-999999-backup")).unwrap();
    std::fs::write(d.join(".out.gif.tmp-999999-backup/thesis.tex"), "years").unwrap();
    std::fs::write(d.join(".out.gif.old-999999-notes"), "mine").unwrap();
    std::fs::write(d.join(".out.gif.vidtune-tmp-999999-0.gif"), "mine too").unwrap();
    let save = "save_video(synthetic_clip(#{frames: 2, size: 16}).video, \"out\", #{overwrite: true});\n\
                save_video(synthetic_clip(#{frames: 2, size: 16}).video, \"out.gif\");";
    let out = run_script(d, "s.rhai", save, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Without overwrite, the folder with a planted manifest is refused: its note is not vidtune's.
    let out = run_script(d, "t.rhai", "save_video(synthetic_clip(#{frames: 2, size: 16}).video, \"out\");", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("notes.txt") && stderr(&out).contains("did not write"), "{}", stderr(&out));
    for (file, text) in [
        ("victim.txt", "precious"),
        ("out/notes.txt", "mine"),
        (".out.gif.tmp-999999-backup/thesis.tex", "years"),
        (".out.gif.old-999999-notes", "mine"),
        (".out.gif.vidtune-tmp-999999-0.gif", "mine too"),
    ] {
        assert_eq!(std::fs::read_to_string(d.join(file)).unwrap(), text, "{file}");
    }
}

#[test]
fn saves_never_replace_a_users_file_or_a_script() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, text) in [("mine.png", "notes"), ("holiday.gif", "GIF89a mine"), ("emb.safetensors", "mine")] {
        std::fs::write(d.join(name), text).unwrap();
    }
    let tiny = "let sd = load_sd(\"random:tiny\");\nlet m = inflate(sd);\nlet c = synthetic_clip(#{frames: 2, size: 32}).video;\n";
    let cases: &[(&str, &str, &str)] = &[
        (
            "case.rhai",
            "tune(m, c, \"x\", #{steps: 2, checkpoint: \"case.rhai\", checkpoint_every: 1, cache: false});",
            "never writes over a script",
        ),
        ("case.rhai", "save_tensors(#{a: encode_prompt(sd, \"x\")}, \"case.rhai\");", "never writes over a script"),
        ("case.rhai", "c.grid(2).save(\"mine.png\");", "exists and vidtune did not write it"),
        ("case.rhai", "save_video(c, \"holiday.gif\");", "exists and vidtune did not write it"),
        ("case.rhai", "save_tensors(#{a: encode_prompt(sd, \"x\")}, \"emb.safetensors\");", "overwrite: true"),
    ];
    for (script, call, expected) in cases {
        let code = format!("{tiny}{call}");
        let out = run_script(d, script, &code, &[]);
        assert_eq!(out.status.code(), Some(1), "{call}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{call}: expected {expected:?} in {}", stderr(&out));
        assert_eq!(std::fs::read_to_string(d.join(script)).unwrap(), code, "{call} changed the script");
    }
    assert_eq!(std::fs::read_to_string(d.join("mine.png")).unwrap(), "notes");
    assert_eq!(std::fs::read_to_string(d.join("holiday.gif")).unwrap(), "GIF89a mine");
    assert_eq!(std::fs::read_to_string(d.join("emb.safetensors")).unwrap(), "mine");
    // With overwrite the user's file is replaced; from then on it is vidtune's, replaced freely.
    let code = format!("{tiny}save_video(c, \"holiday.gif\", #{{overwrite: true}});\nsave_video(c, \"holiday.gif\");");
    let out = run_script(d, "ok.rhai", &code, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read(d.join("holiday.gif")).unwrap().len() > 100);
}

#[test]
fn latents_given_as_a_tensor_sample_like_the_inversion_they_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
let model = inflate(load_sd("random:tiny"));
let clip = synthetic_clip(#{frames: 3, size: 32, seed: 2}).video;
let inv = invert(model, clip, #{steps: 2});
save_tensors(#{latents: inv.tensor()}, "inv.safetensors");
let t = load_tensors("inv.safetensors").latents;
save_video(sample(model, "a red circle", #{latents: inv, steps: 2, cache: false}), "a");
save_video(sample(model, "a red circle", #{latents: t, steps: 2, cache: false}), "b");
"#;
    let out = run_script(dir.path(), "byo.rhai", script, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    for i in 0..3 {
        let name = format!("{i:05}.png");
        let (a, b) = (dir.path().join("a").join(&name), dir.path().join("b").join(&name));
        let pixels = |p: std::path::PathBuf| image::open(p).unwrap().to_rgb8().into_raw();
        assert!(pixels(a) == pixels(b), "frame {i}");
    }
    // A tensor of the wrong shape is refused with the shape expected; a wrong type is named as scripts know it.
    let cases: &[(&str, &str)] = &[
        (
            "sample(inflate(load_sd(\"random:tiny\")), \"x\", #{latents: encode_prompt(load_sd(\"random:tiny\"), \"x\")});",
            "sample: latents must be a tensor [1, 4, F, h, w]",
        ),
        (
            "co_denoise(inflate(load_sd(\"random:tiny\")), \"x\", #{latents: 3});",
            "co_denoise: option \"latents\" must be Latents (from invert) or a Tensor [1, 4, F, h, w] (from load_tensors), \
             got 3",
        ),
    ];
    for (script, want) in cases {
        let out = run_script(dir.path(), "bad.rhai", script, &[]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(want), "{script}: {}", stderr(&out));
        assert!(!stderr(&out).contains("Script"), "{}", stderr(&out));
    }
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

#[test]
fn a_sidecar_records_the_run_and_run_from_reproduces_it_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
let model = inflate(load_sd("random:tiny"));
let clip = synthetic_clip(#{frames: 2, size: 32, seed: 4}).video;
let tuned = tune(model, clip, "a circle", #{steps: param("steps", 2), learning_rate: 1e-4});
let edit = sample(tuned, param("edit", "a red circle"), #{frames: 2, steps: 2});
save_video(edit, "out/edit.gif", #{sidecar: #{note: "first"}});
save_video(edit, "out/frames");
save_video(edit, "out/edit.mp4");
"#;
    let out = run_script(dir.path(), "make.rhai", script, &["--set", "edit=\"a blue circle\""]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = std::fs::read(dir.path().join("out/edit.gif")).unwrap();
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/edit.json")).unwrap()).unwrap();
    let record = &sidecar["record"];
    assert_eq!(sidecar["note"], "first");
    assert_eq!(record["script"]["text"].as_str().unwrap(), script);
    assert_eq!(record["params"]["edit"], "a blue circle");
    assert_eq!(record["vidtune_version"], env!("CARGO_PKG_VERSION"));
    assert!(record["libtorch_version"].as_str().unwrap().starts_with("2."), "{record}");
    let calls = record["calls"].as_array().unwrap();
    let names: Vec<&str> = calls.iter().map(|c| c["function"].as_str().unwrap()).collect();
    assert_eq!(names, ["tune", "sample"]);
    let (tune, sample) = (&calls[0], &calls[1]);
    assert_eq!(tune["options"]["lr"], 1e-4, "the alias is recorded under its vidtune name");
    assert!(tune["resolved"].as_str().unwrap().contains("steps: 2"), "{tune}");
    assert!(tune["model"]["identity"].as_str().unwrap().len() >= 32);
    assert_eq!(tune["model"]["modules"], sample["model"]["modules"]);
    assert_ne!(tune["model"]["identity"], sample["model"]["identity"], "the tuned model is another model");
    assert_eq!(sample["seed_given"], false);
    assert!(sample["seed"].as_u64().is_some());
    assert!(sample["resolved"].as_str().unwrap().contains("guidance: 7.5"), "{sample}");
    // Rerun from the sidecar: same script, parameters and drawn seed — the same bytes.
    std::fs::write(dir.path().join("make.rhai"), "print(\"the script on disk changed\");").unwrap();
    let again = vidtune(dir.path()).args(["run", "--from", "out/edit.json"]).output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("rerunning make.rhai from out/edit.json"), "{}", stdout(&again));
    assert!(std::fs::read(dir.path().join("out/edit.gif")).unwrap() == first, "the rerun made another GIF");
    // The frames and the mp4 carry the same record inside (PNG text chunks, container metadata).
    let from_png: serde_json::Value = serde_json::from_str(
        &vidtune_runtime::media::image::png_text(dir.path().join("out/frames/00000.png"))
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == "vidtune")
            .expect("a vidtune text chunk")
            .1,
    )
    .unwrap();
    // (The rerun above rewrote them: same script, parameters and seed, the tuning now from the memo.)
    assert_eq!((&from_png["script"], &from_png["params"]), (&record["script"], &record["params"]));
    assert_eq!(from_png["calls"][1]["seed"], record["calls"][1]["seed"]);
    let from_mp4 = vidtune_runtime::media::ffmpeg::read_metadata(&dir.path().join("out/edit.mp4")).unwrap();
    let from_mp4: serde_json::Value =
        serde_json::from_str(&from_mp4.into_iter().find(|(k, _)| k == "vidtune").expect("mp4 metadata").1).unwrap();
    assert_eq!(from_mp4["script"], record["script"]);
    // From a frame: the same pixels (the record inside differs: timings, memo hits).
    let pixels = || image::open(dir.path().join("out/frames/00001.png")).unwrap().to_rgb8().into_raw();
    let frame = pixels();
    let again = vidtune(dir.path()).args(["run", "--from", "out/frames/00000.png"]).output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(pixels() == frame, "the rerun from a frame made other pixels");
    // A file without a record is named.
    std::fs::write(dir.path().join("plain.json"), "{}").unwrap();
    let out = vidtune(dir.path()).args(["run", "--from", "plain.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("plain.json: no run record"), "{}", stderr(&out));
}

#[test]
fn bench_runs_the_job_on_the_tiny_shape_and_writes_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = vidtune(dir.path())
        .args(["bench", "--config", "tiny", "--frames", "2", "--size", "32", "--tune-steps", "2", "--steps", "2"])
        .args(["--device", "cpu", "--json", "bench.json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("| stage | time | steps/s | peak RSS | GFLOP | GFLOP/s |"), "{}", stdout(&out));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bench.json")).unwrap()).unwrap();
    let stages = json["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["load", "inflate", "tune", "invert", "sample"]);
    for s in &stages[2..] {
        assert_eq!(s["steps"], 2);
        assert!(s["seconds"].as_f64().unwrap() > 0.0 && s["gflop"].as_f64().unwrap() > 0.0, "{s}");
        assert!(s["peak_rss_mb"].as_f64().unwrap() > 10.0, "{s}");
    }
    // Sampling with guidance runs the UNet twice a step; inversion once: about twice the work.
    let (inv, smp) = (stages[3]["gflop"].as_f64().unwrap(), stages[4]["gflop"].as_f64().unwrap());
    assert!(smp > 1.5 * inv && smp < 2.5 * inv, "invert {inv} GFLOP, sample {smp} GFLOP");
    assert_eq!(json["attention_backend"], "flash (CPU); explicit product where keys are few", "{json}");
    let amd_avx512 = vidtune_runtime::cpu::mkl_dispatch() == vidtune_runtime::cpu::MklDispatch::AmdAvx512;
    assert_eq!(json["cpu_math"].as_str().unwrap().contains("AVX-512 kernels"), amd_avx512, "{json}");
    assert_eq!((json["precision"].as_str(), json["checkpointing"].as_bool()), (Some("Float"), Some(false)));
    let plain_tune = stages[2]["gflop"].as_f64().unwrap();

    // Mixed precision and checkpointing reach the tuning loop; a saved official run is compared stage by
    // stage (its `load` against vidtune's load and inflate).
    let official = serde_json::json!({"stages": [
        {"name": "load", "seconds": 4.0, "peak_rss_mb": 900.0},
        {"name": "tune", "seconds": 8.0, "peak_rss_mb": 1000.0},
        {"name": "invert", "seconds": 2.0, "peak_rss_mb": 950.0},
        {"name": "sample", "seconds": 4.0, "peak_rss_mb": 990.0}]});
    std::fs::write(dir.path().join("official.json"), official.to_string()).unwrap();
    let out = vidtune(dir.path())
        .args(["bench", "--config", "tiny", "--frames", "2", "--size", "32", "--tune-steps", "2", "--steps", "2"])
        .args(["--device", "cpu", "--precision", "bf16", "--checkpointing", "true", "--json", "bench2.json"])
        .args(["--compare", "official.json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("tuning in BFloat16 with checkpointing"), "{text}");
    assert!(text.contains("| stage | official | vidtune | speed-up |") && text.contains("| tune | 8.00 s |"), "{text}");
    assert!(text.contains("peak RSS: official 1000 MB"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bench2.json")).unwrap()).unwrap();
    assert_eq!((json["precision"].as_str(), json["checkpointing"].as_bool()), (Some("BFloat16"), Some(true)));
    let tune = json["stages"][2]["gflop"].as_f64().unwrap();
    // Checkpointing recomputes the blocks that need a gradient: more work, at most one forward more.
    assert!(tune > plain_tune && tune <= 1.51 * plain_tune, "checkpointed work {tune} vs plain {plain_tune}");
    assert_eq!(json["official"]["stages"][1]["seconds"], 8.0);

    // Without a checkout, --compare official says what it needs.
    let out = vidtune(dir.path())
        .env_remove("TUNE_A_VIDEO_DIR")
        .args(["bench", "--config", "tiny", "--frames", "2", "--size", "32", "--tune-steps", "1", "--steps", "1"])
        .args(["--device", "cpu", "--compare", "official"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--official-dir"), "{}", stderr(&out));
}

#[test]
fn piped_repl_input_with_bad_bytes_or_escapes_reports_them_and_goes_on() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut child = vidtune(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input: &[u8] = b"let keep = 5;\n\xff\xfe not text\n\x1b[31m colour\nprint(`keep ${keep}`);\nlet f = |x| {\n  x + 1\n};\nprint(f.call(keep));\n:help samp\n";
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("<stdin>:2: not UTF-8 text"), "{err}");
    assert!(err.contains("<stdin>:3: a terminal escape sequence at column 1"), "{err}");
    assert!(err.contains("no function, method or type named \"samp\" (did you mean sample"), "{err}");
    assert!(stdout(&out).contains("keep 5") && stdout(&out).contains("6"), "{}", stdout(&out));
}

#[test]
fn damaged_toy_weights_in_the_cache_are_found_and_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let load = "let sd = load_sd(\"toy\");\nprint(`loaded ${sd}`);";
    let out = run_script(d, "a.rhai", load, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cache = d.join("cache/vidtune");
    let toy = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("toy-"))
        .expect("the toy folder in the cache");
    let weights = toy.join("unet/diffusion_pytorch_model.safetensors");
    let good = std::fs::read(&weights).unwrap();
    // A flipped bit, then a truncated copy: each is found, reported and repaired.
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    for (damaged, expected) in
        [(flipped, "differs from the built-in copy"), (good[..good.len() / 3].to_vec(), "bytes, expected")]
    {
        std::fs::write(&weights, &damaged).unwrap();
        let out = run_script(d, "a.rhai", load, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(expected) && stderr(&out).contains("writing the built-in toy models again"),
            "{}",
            stderr(&out)
        );
        assert!(std::fs::read(&weights).unwrap() == good, "{expected}: not repaired");
    }
}

#[test]
fn scripts_and_modules_are_read_only_from_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = vidtune(dir.path()).args(["run", "/dev/zero"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/dev/zero: cannot read script: is not a regular file"), "{}", stderr(&out));
    let fifo = std::ffi::CString::new(dir.path().join("m.rhai").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let out = run_script(dir.path(), "s.rhai", "import \"m\" as z;", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not a regular file (a pipe, device or socket)"), "{}", stderr(&out));
}
