//! The pipelines end to end from scripts, on tiny random and toy models: Stable Diffusion, the paper
//! scripts, memoised tuning and inversion across runs, scoring, segmenting, the demo, latents given as
//! tensors, and the toy weights in the cache.

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
    // The recipe for every kind of edit, standalone: an object edit on the same model.
    let out = vidtune(dir.path())
        .arg("run")
        .arg(root.join("edit.rhai"))
        .args(["--set", "model=random:tiny", "--set", "frames=3", "--set", "steps=2", "--set", "out=e"])
        .args(["--set", "inv_steps=2", "--set", "type=object"])
        .output()
        .unwrap();
    assert!(out.status.success(), "edit.rhai: {}", stderr(&out));
    assert!(stdout(&out).contains("auto object edit"), "{}", stdout(&out));
    // Drawn anew, the subject keeps what the edit keeps of it: its colour word, weighted.
    let weighted = r#"weighted: "a (green:2.0) square moving left on a purple striped background""#;
    assert!(stdout(&out).contains(weighted), "{}", stdout(&out));
    for f in ["e/edit.gif", "e/edit/00002.png", "e/masks/00002.png"] {
        assert!(dir.path().join(f).is_file(), "edit.rhai: {f}");
    }
    // The room for the new shape: the subject's box, or its masks scaled by a number; nothing else.
    let out = vidtune(dir.path())
        .arg("run")
        .arg(root.join("edit.rhai"))
        .args(["--set", "model=random:tiny", "--set", "frames=3", "--set", "steps=2", "--set", "out=e"])
        .args(["--set", "inv_steps=2", "--set", "type=object", "--set", "room=sideways"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("room sideways: expected box or a scale factor"), "{}", stderr(&out));
    // A number scales the masks instead, from the command line too.
    let out = vidtune(dir.path())
        .arg("run")
        .arg(root.join("edit.rhai"))
        .args(["--set", "model=random:tiny", "--set", "frames=3", "--set", "steps=2", "--set", "out=e"])
        .args(["--set", "inv_steps=2", "--set", "type=object", "--set", "room=1.5", "--set", "save=false"])
        .output()
        .unwrap();
    assert!(out.status.success(), "edit.rhai room=1.5: {}", stderr(&out));
    let out = vidtune(dir.path())
        .arg("run")
        .arg(root.join("edit.rhai"))
        .args(["--set", "model=random:tiny", "--set", "type=object", "--set", "keep_weight=0"])
        .output()
        .unwrap();
    assert!(stderr(&out).contains("keep_weight 0.0: expected a weight above 0 and at most 10"), "{}", stderr(&out));
    // A multiple edit: the subject first, with only the subject's words changed (from a word diff), one
    // candidate per guidance kept by CLIP, then the background of that clip.
    let out = vidtune(dir.path())
        .arg("run")
        .arg(root.join("edit.rhai"))
        .args(["--set", "model=random:tiny", "--set", "frames=3", "--set", "steps=2", "--set", "out=mu"])
        .args(["--set", "inv_steps=2", "--set", "type=multiple", "--set", "clip=random:tiny"])
        .output()
        .unwrap();
    assert!(out.status.success(), "edit.rhai multiple: {}", stderr(&out));
    let printed = stdout(&out);
    assert!(
        printed.contains(r#"first stage: "a red triangle moving left on a purple striped background""#),
        "{printed}"
    );
    assert_eq!(printed.matches(": CLIP-T ").count(), 11, "{printed}");
    assert_eq!(printed.matches("negative changed: CLIP-T ").count(), 5, "{printed}");
    // The eleventh pushes the subject away from what it should not fade into: the words kept, less its own.
    assert_eq!(printed.matches("negative surroundings: CLIP-T ").count(), 1, "{printed}");
    assert!(printed.contains(r#"surroundings: "a moving left on a purple striped background""#), "{printed}");
    assert!(dir.path().join("mu/edit/00002.png").is_file(), "{printed}");
    let out = vidtune(dir.path())
        .arg("run")
        .arg(root.join("edit.rhai"))
        .args(["--set", "model=random:tiny", "--set", "negative_from=sideways"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("negative_from sideways: expected source, changed, surroundings or none"),
        "{}",
        stderr(&out)
    );
    // The zero-shot recipe (no tuning, attention fusion): a colour edit choosing among its five candidates,
    // a background edit blended outside the subject, an object edit in the subject's box, and a multiple
    // edit in two stages.
    let kinds = [
        ("colour", "clip=random:tiny"),
        ("background", "select=none"),
        ("object", "save=true"),
        ("multiple", "select=none"),
    ];
    for (kind, extra) in kinds {
        let out = vidtune(dir.path())
            .arg("run")
            .arg(root.join("zero-shot.rhai"))
            .args(["--set", "model=random:tiny", "--set", "frames=3", "--set", "steps=2", "--set", "out=z"])
            .args(["--set", &format!("type={kind}"), "--set", extra])
            .output()
            .unwrap();
        assert!(out.status.success(), "zero-shot.rhai {kind}: {}", stderr(&out));
        let printed = stdout(&out);
        assert!(printed.contains(&format!("zero-shot {kind} edit")), "{printed}");
        // Colour and multiple edits keep the subject's structure; the others blend in their region.
        let keeps = kind == "colour" || kind == "multiple";
        let structure = if keeps { "(blend none, strength 0.8)" } else { "(blend masks, strength 1.0)" };
        assert!(printed.contains(structure), "{printed}");
        let staged = "first stage: \"a red triangle moving left on a purple striped background\"";
        assert_eq!(printed.contains(staged), kind == "multiple", "{printed}");
        assert_eq!(printed.matches(": CLIP-T ").count(), if kind == "colour" { 5 } else { 0 }, "{printed}");
        assert_eq!(printed.matches("negative surroundings: CLIP-T ").count(), usize::from(kind == "colour"));
        assert_eq!(printed.matches("negative source: CLIP-T ").count(), if kind == "colour" { 2 } else { 0 });
        assert!(dir.path().join("z/side-by-side.gif").is_file(), "{printed}");
    }
    for (bad, why) in [
        ("blend=sideways", "blend sideways: expected masks, words or none"),
        ("type=sideways", "type sideways: expected colour, object, background, style or multiple"),
        ("negative_from=sideways", "negative_from sideways: expected none, source, changed or surroundings"),
    ] {
        let out = vidtune(dir.path())
            .arg("run")
            .arg(root.join("zero-shot.rhai"))
            .args(["--set", "model=random:tiny", "--set", "frames=3", "--set", bad])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
    }
    // Video-P2P's recipe: tuning, null-text inversion that stores its maps, the edit fused with a word
    // weight and the blend from the words the edit drops.
    let out = vidtune(dir.path())
        .arg("run")
        .arg(root.join("video-p2p.rhai"))
        .args(["--set", "model=random:tiny", "--set", "frames=3", "--set", "steps=2", "--set", "out=p"])
        .args(["--set", "inv_steps=2", "--set", "inner_steps=1"])
        .args(["--set", "edit=a (red:2) triangle moving left on a purple striped background"])
        .output()
        .unwrap();
    assert!(out.status.success(), "video-p2p.rhai: {}", stderr(&out));
    assert!(stdout(&out).contains("(blend: green)"), "{}", stdout(&out));
    assert!(dir.path().join("p/side-by-side.gif").is_file());
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
    // Without a ControlNet for this model, the toy world's own frame at the first mask.
    assert!(stdout(&out).contains("first frame (drawn): subject IoU 1"), "{}", stdout(&out));
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

/// Runs `scripts/NAME` in `dir` with `--set` for each of `sets`.
fn run_recipe(dir: &std::path::Path, name: &str, sets: &[&str]) -> std::process::Output {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts").join(name);
    let mut cmd = vidtune(dir);
    cmd.arg("run").arg(script);
    for s in sets {
        cmd.args(["--set", s]);
    }
    cmd.output().unwrap()
}

/// The clip's subject IoU with the masks that `scripts/dynamic-mask.rhai` prints.
fn clip_iou(out: &std::process::Output) -> f64 {
    let text = stdout(out);
    let line = text.lines().find(|l| l.contains("with the masks")).unwrap_or_else(|| panic!("no clip IoU in {text}"));
    let after = line.split("subject IoU ").nth(1).unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn the_toy_dynamic_mask_recipe_follows_held_out_masks_from_the_controlnets_first_frame() {
    // A circle moving left: a pair the toy ControlNet never trained on. The mask sequence's seed (the
    // script's, 7) is neither a dev nor a test seed of scripts/controlnet-ablation.rhai. The second run
    // tunes nothing: the memo has the first's tuning.
    let dir = tempfile::tempdir().unwrap();
    let with = run_recipe(dir.path(), "dynamic-mask.rhai", &["motion=left", "out=a"]);
    assert!(with.status.success(), "{}", stderr(&with));
    assert!(stdout(&with).contains("first frame (controlnet)"), "{}", stdout(&with));
    let without = run_recipe(dir.path(), "dynamic-mask.rhai", &["motion=left", "first=t2i", "out=b"]);
    assert!(without.status.success(), "{}", stderr(&without));
    assert!(stdout(&without).contains("tune: from the memo"), "{}", stdout(&without));
    let (w, wo) = (clip_iou(&with), clip_iou(&without));
    // Measured: 0.84 with the ControlNet's first frame, 0.00 from the prompt alone (subject guidance carries
    // a first frame without the subject along the masks).
    assert!(w >= 0.6 && w - wo >= 0.4, "clip subject IoU {w} with the ControlNet's first frame, {wo} without");
}

#[test]
fn t2i_keeps_the_candidate_clip_ranks_first_and_its_seed_alone_gives_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
        let sd = load_sd("toy");
        let clip = load_clip("toy");
        let o = #{width: 64, height: 64, steps: 4, guidance: 10.0, seed: 11};
        t2i(sd, "a red circle moving left", o + #{candidates: 3, clip: clip}).save("best.png");
        for i in 0..3 { t2i(sd, "a red circle moving left", o + #{seed: 11 + i}).save(`c${i}.png`); }
        print(`image masks: ${segment(load_image("best.png"), box(8, 8, 56, 56)).len()}`);
    "#;
    let out = run_script(dir.path(), "best.rhai", script, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = text.lines().find(|l| l.starts_with("t2i: kept candidate")).unwrap_or_else(|| panic!("{text}"));
    // "t2i: kept candidate K of 3 (seed S), CLIP text alignment A (the others: X, Y)"
    let after = |key: &str| line.split(key).nth(1).unwrap_or_else(|| panic!("no {key:?} in {line}"));
    let first_number = |key: &str| -> f64 {
        after(key).split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-')).next().unwrap().parse().unwrap()
    };
    let (k, seed, kept) =
        (first_number("candidate ") as usize, first_number("(seed ") as u64, first_number("alignment "));
    let others: Vec<f64> =
        after("the others: ").trim_end_matches(')').split(", ").map(|x| x.parse().unwrap()).collect();
    assert_eq!(seed, 11 + k as u64 - 1, "{line}");
    assert_eq!(others.len(), 2, "{line}");
    assert!(others.iter().all(|&a| a <= kept), "{line}");
    let read = |name: &str| image::open(dir.path().join(name)).unwrap().to_rgb8().into_raw();
    assert_eq!(read("best.png"), read(&format!("c{}.png", k - 1)), "the kept candidate is its seed's image");
    assert!((0..3).any(|i| read(&format!("c{i}.png")) != read("best.png")), "the candidates differ");
    // The run record keeps the first seed (a rerun draws the same candidates), the kept one and the ranking.
    let record: serde_json::Value = serde_json::from_str(
        &vidtune_runtime::media::image::png_text(dir.path().join("best.png"))
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == "vidtune")
            .unwrap()
            .1,
    )
    .unwrap();
    let call = &record["calls"][0];
    assert_eq!((call["seed"].as_u64(), call["resolved"]["kept_seed"].as_u64()), (Some(11), Some(seed)), "{call}");
    assert_eq!(call["resolved"]["alignments"].as_array().map(Vec::len), Some(3), "{call}");
    // An image segments as a clip of one frame.
    assert!(text.contains("image masks: 1"), "{text}");
    let head = "let sd = load_sd(\"toy\");\nlet o = #{width: 64, height: 64, steps: 1};\n";
    for (code, expected) in [
        ("t2i(sd, \"x\", o + #{candidates: 2});", "keeps the image CLIP ranks first"),
        ("t2i(sd, \"x\", o + #{clip: load_clip(\"toy\")});", "ranks candidates and would be ignored"),
        ("t2i(sd, \"x\", o + #{candidates: 0, clip: load_clip(\"toy\")});", "must be 1 to 64, got 0"),
    ] {
        expect_error(dir.path(), &format!("{head}{code}"), expected);
    }
}

#[test]
fn fusion_composes_with_token_merging_whose_layers_keep_no_maps() {
    // VidToMe attends over a chunk's merged tokens, no one frame's: an inversion that stores its maps and
    // an edit that fuses them leave those layers alone (this was a libtorch error from the store).
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
        let m = inflate(load_sd("random:tiny"), #{spatial: "vidtome:ratio=0.5,chunk=2", temporal: "none"});
        let c = synthetic_clip(#{frames: 4, size: 32, seed: 1});
        let inv = invert(m, c.video, #{prompt: "a circle", steps: 2, store: true});
        let out = sample(m, "a square", #{latents: inv, steps: 2, seed: 1,
                                          fusion: #{cross_replace: 0.5, self_replace: 1.0}});
        print(`fused ${out.len()} frames`);
    "#;
    let out = run_script(dir.path(), "merge.rhai", script, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("fused 4 frames"), "{}", stdout(&out));
}

#[test]
fn controlnet_from_a_script() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels-tests/fixtures/generated/tiny-conv");
    assert!(tiny.join("controlnet").exists(), "run the fixture script first (./dev.sh test does)");
    let head = format!(
        "let sd = load_sd(\"{0}/pipeline\", #{{device: \"cpu\"}});\nlet cn = load_controlnet(\"{0}/controlnet\", #{{device: \"cpu\"}});\n\
         let o = #{{width: 48, height: 64, steps: 4, seed: 3}};\nlet edges = t2i(sd, \"edges\", o);\n",
        tiny.display()
    );
    let script = format!(
        "{head}print(cn);\n\
         t2i(sd, \"a cat\", o).save(\"plain.png\");\n\
         o.control = #{{model: cn, image: edges, scale: 0.8}};\nt2i(sd, \"a cat\", o).save(\"one.png\");\n\
         o.control = [#{{model: cn, image: edges, scale: 0.4}}, #{{model: cn, image: edges, scale: 0.4}}];\n\
         t2i(sd, \"a cat\", o).save(\"two.png\");\n\
         let s = synthetic_clip(#{{frames: 3, size: 16, seed: 2}});\nlet v = s.video;\n\
         let maps = [#{{model: cn, video: canny(v, 100, 200)}}, #{{model: cn, video: s.masks.edge_map(), scale: 0.5}}];\n\
         print(`edges ${{sample(inflate(sd), \"a cat\", #{{frames: 3, size: 16, steps: 1, seed: 1, control: maps}}).len()}}`);\n\
         let m = tune(inflate(sd), v, \"a cat\", #{{steps: 2, control: #{{model: cn, video: v}}}});\n\
         let out = sample(m, \"a dog\", #{{frames: 3, size: 16, steps: 2, seed: 1, control: #{{model: cn, video: v, end: 0.5}}}});\n\
         print(`sampled ${{out.len()}} frames`);\n\
         let ad = load_t2i_adapter(\"{0}/t2i_adapter\", #{{device: \"cpu\"}});\nprint(ad);\n\
         o.control = [#{{model: ad, image: edges, scale: 0.5}}, #{{model: cn, image: edges}}];\nt2i(sd, \"a cat\", o).save(\"mixed.png\");\n",
        tiny.display()
    );
    let out = run_script(dir.path(), "control.rhai", &script, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in ["ControlNet(", "2x the latents", "sampled 3 frames", "edges 3", "T2IAdapter(", "full_adapter"] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    // The pixels (the files' run records differ: they name the controls).
    let read = |name: &str| image::open(dir.path().join(name)).unwrap().to_rgb8().into_raw();
    assert_ne!(read("plain.png"), read("one.png"), "the control changes the image");
    assert_ne!(read("mixed.png"), read("one.png"), "an adapter adds to a ControlNet");
    assert_eq!(read("one.png"), read("two.png"), "two controls at half the scale add up to one at the full scale");
    // The toy world's recipe: the first frame from its ControlNet on the first mask, by default, and with
    // every_frame the ControlNet on every frame while sampling.
    let sets = ["clips=1", "steps=1", "sample_steps=2", "frames=3", "every_frame=true", "out=t"];
    let out = run_recipe(dir.path(), "dynamic-mask.rhai", &sets);
    assert!(out.status.success(), "dynamic-mask.rhai on the toy world: {}", stderr(&out));
    assert!(stdout(&out).contains("first frame (controlnet): subject IoU"), "{}", stdout(&out));
    // The papers' recipes reach the control models (here ones made for another base model, refused).
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts");
    for (script, set, more, line) in [
        ("dynamic-mask.rhai", format!("controlnet={}/controlnet", tiny.display()), "clips=1", "text width"),
        ("long-video.rhai", format!("adapter={}/t2i_adapter", tiny.display()), "segments=1", "downscale_factor 2"),
    ] {
        let out = vidtune(dir.path())
            .arg("run")
            .arg(scripts.join(script))
            .args(["--set", &set, "--set", more, "--set", "steps=1", "--set", "sample_steps=2", "--set", "out=r"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{script}: {}", stderr(&out));
        let e = stderr(&out);
        assert!(e.contains(line) && e.contains("another base model"), "{script}: {e}");
    }
    for (code, expected) in [
        (
            "t2i(sd, \"x\", #{width: 48, height: 64, control: #{model: cn, image: edges, scael: 1}});",
            "did you mean \"scale\"",
        ),
        (
            "t2i(sd, \"x\", #{width: 48, height: 32, control: #{model: cn, image: edges}});",
            "48x64 pixels for a clip of 48x32",
        ),
        ("t2i(sd, \"x\", #{width: 48, height: 64, control: #{image: edges}});", "needs model: load_controlnet"),
        (
            "t2i(sd, \"x\", #{width: 48, height: 64, control: #{model: sd, image: edges}});",
            "a ControlNet (from load_controlnet)",
        ),
        ("load_controlnet(\"random:tiny\");", "there are no random ControlNets"),
        ("load_t2i_adapter(\"toy\");", "the built-in models have no T2I-Adapter"),
    ] {
        expect_error(dir.path(), &format!("{head}{code}"), expected);
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

/// Too few tuning steps for the toy models get a warning with the working count, also when the tuned
/// model comes from the memo.
#[test]
fn too_few_tuning_steps_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let script = "let sd = load_sd(\"toy\");\nlet s = synthetic_clip(#{frames: 2, size: 64});\n\
                  let t = tune(inflate(sd), s.video, s.caption, #{steps: 2});\n";
    for run in ["first", "from the memo"] {
        let out = run_script(dir.path(), "few.rhai", script, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("warning: tune: 2 steps; edits on the toy models need about 150"),
            "{run}: {}",
            stderr(&out)
        );
    }
}
