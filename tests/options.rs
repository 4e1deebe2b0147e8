//! A property test of the scripting layer: random option maps — every allowed key and a few unknown
//! ones, with values of every type, including NaN, infinities and huge integers — for `load_video`,
//! `tune`, `invert` and `sample` on a tiny random model. Whatever the map, the call returns a value or a
//! clear error; it never panics (an "internal error") and never aborts the process.

use vidtune::Session;

/// SplitMix64: a seeded generator of our own, so the test draws the same maps every run.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Values as Rhai source: small and huge integers, odd floats, strings, booleans, arrays, maps, unit and
/// values of vidtune types.
const VALUES: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "-1",
    "-7",
    "1000000000000",
    "9223372036854775807",
    "-9223372036854775808",
    "0.0",
    "0.5",
    "1.5",
    "-2.5",
    "1e30",
    "-1e-30",
    "(0.0 / 0.0)",
    "(1.0 / 0.0)",
    "(-1.0 / 0.0)",
    "\"\"",
    "\"x\"",
    "\"crop\"",
    "\"resize\"",
    "\"tav\"",
    "\"all\"",
    "\"sparse_causal\"",
    "true",
    "false",
    "()",
    "[]",
    "[1]",
    "[8, 8]",
    "[16, 8]",
    "[0.5, 0.9]",
    "[\"a\", \"b\"]",
    "[1, 2, 3]",
    "#{}",
    "#{a: 1}",
    "clip",
    "inv",
    "model",
];

fn options(d: &mut Draw, keys: &[&str]) -> String {
    let n = d.next() % 4;
    let mut parts = vec![];
    for _ in 0..n {
        let key = d.pick(keys);
        parts.push(format!("{key}: {}", d.pick(VALUES)));
    }
    format!("#{{{}}}", parts.join(", "))
}

#[test]
fn random_option_maps_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("VIDTUNE_CACHE", tmp.path().join("cache"));
    vidtune_runtime::progress::set_mode(vidtune_runtime::progress::Mode::Silent);
    let mut s = Session::new();
    let setup = format!(
        r#"let sd = load_sd("random:tiny");
           let model = inflate(sd);
           let clip = synthetic_clip(#{{frames: 2, size: 16, seed: 1}}).video;
           save_video(clip, "{gif}");
           let inv = invert(model, clip, #{{steps: 2}});"#,
        gif = tmp.path().join("clip.gif").display()
    );
    let _ = s.eval(&setup).expect("set-up");
    let calls: [(&str, &[&str]); 4] = [
        ("load_video(\"CLIP\", OPTS)", &["frames", "start", "every", "size", "fit", "fps", "frame"]),
        (
            "tune(model, clip, \"a circle\", OPTS)",
            &[
                "steps",
                "lr",
                "train",
                "seed",
                "max_grad_norm",
                "weight_decay",
                "betas",
                "cache",
                "checkpoint_every",
                "step",
                "learning_rate",
            ],
        ),
        ("invert(model, clip, OPTS)", &["steps", "prompt", "cache", "guidance"]),
        (
            "sample(model, \"a red circle\", OPTS)",
            &["latents", "steps", "guidance", "seed", "negative", "eta", "frames", "size", "fps", "width"],
        ),
    ];
    let mut d = Draw(2024);
    let (mut ok, mut refused) = (0, 0);
    for round in 0..70 {
        for (call, keys) in calls {
            let mut opts = options(&mut d, keys);
            // Keep successful calls short: tuning and sampling take at most a few steps.
            if !opts.contains("steps:") && (call.starts_with("tune") || call.starts_with("sample")) {
                opts = opts.replacen("#{", "#{steps: 1, ", 1).replace(", }", "}");
            }
            let code = call.replace("CLIP", &tmp.path().join("clip.gif").display().to_string()).replace("OPTS", &opts);
            match s.eval(&code) {
                Ok(_) => ok += 1,
                Err(e) => {
                    let text = e.to_string();
                    assert!(!text.contains("internal error"), "round {round}: {code}\n{text}");
                    refused += 1;
                }
            }
            assert!(s.eval("clip.len()").is_ok(), "round {round}: the session lost its state after {code}");
        }
    }
    println!("{ok} succeeded, {refused} refused");
    assert!(ok > 20 && refused > 100, "{ok} calls succeeded and {refused} were refused: the maps are too tame");
}

/// A session with a cache of its own and `model`, the tiny random model inflated, that has run `code`.
fn tiny_session(code: &str, what: &str) -> (tempfile::TempDir, Session) {
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("VIDTUNE_CACHE", tmp.path().join("cache"));
    vidtune_runtime::progress::set_mode(vidtune_runtime::progress::Mode::Silent);
    let mut s = Session::new();
    let _ = s.eval(&format!("let model = inflate(load_sd(\"random:tiny\"));\n{code}")).expect(what);
    (tmp, s)
}

#[test]
fn null_text_inversion_is_an_option_of_invert_with_checked_ranges() {
    let (_tmp, mut s) = tiny_session(
        r#"let clip = synthetic_clip(#{frames: 2, size: 16, seed: 1}).video;
           let inv = invert(model, clip, #{steps: 2, prompt: "a circle", null_text: #{inner_steps: 2}});
           let v = sample(model, "a circle", #{latents: inv, steps: 2, guidance: 7.5});"#,
        "null-text inversion and a sample from it",
    );
    for (opts, says) in [
        ("#{lr: 2.0}", "invert null_text: lr must be in (0, 1], got 2"),
        ("#{inner_steps: 0}", "invert null_text: inner_steps must be 1–100, got 0"),
        ("#{guidance: 0.5}", "invert null_text: guidance must be 1–30, got 0.5"),
        ("#{inner: 2}", "unknown option \"inner\"; allowed options: epsilon, guidance, inner_steps, lr"),
        ("3", "null_text must be true or a map"),
    ] {
        let e = s.eval(&format!("invert(model, clip, #{{steps: 2, null_text: {opts}}})")).unwrap_err().to_string();
        assert!(e.contains(says), "{opts}: {e}");
    }
    let e = s.eval("sample(model, \"a circle\", #{latents: inv, steps: 3, guidance: 7.5})").unwrap_err().to_string();
    assert!(e.contains("steps"), "{e}");
}

#[test]
fn attention_stores_and_fusion_are_options_with_checked_ranges() {
    let (_tmp, mut s) = tiny_session(
        r#"let clip = synthetic_clip(#{frames: 2, size: 16, seed: 1});
           let inv = invert(model, clip.video, #{steps: 2, prompt: "a circle", store: true});
           let v = sample(model, "a square", #{latents: inv, steps: 2, guidance: 7.5,
                                               fusion: #{blend_words: "circle", self_replace: [0.0, 1.0]}});
           let w = sample(model, "a square", #{latents: inv, steps: 2, guidance: 7.5, masks: clip.masks,
                                               fusion: #{blend_masks: true}});
           let on_disk = invert(model, clip.video, #{steps: 2, prompt: "a circle", store: #{disk: true}});
           let d = sample(model, "a square", #{latents: on_disk, steps: 2, guidance: 7.5, fusion: true});
           let mg = tune(inflate(load_sd("random:tiny"), #{preset: "mask-guided"}), clip.video, "a circle",
                         #{masks: clip.masks, steps: 1});
           let inv_mg = invert(mg, clip.video, #{masks: clip.masks, steps: 2, prompt: "a circle", store: true});
           let x = sample(mg, "a (red:2) square", #{latents: inv_mg, masks: clip.masks, subject: "red square",
                                                    steps: 2, guidance: 7.5, fusion: #{blend_masks: true}});
           let y = sample(mg, "a (red:2) square", #{latents: inv_mg, masks: clip.masks, subject: "red square",
                                                    steps: 2, guidance: 7.5,
                                                    fusion: #{source_branch: true, local_blend: #{source: "circle"}}});"#,
        "a store, fusion by words and by masks, and on a tuned mask-guided model with a word weight, with the \
         source branch and local blend",
    );
    for (opts, says) in [
        ("#{cross_replace: 1.5}", "sample: fusion: cross_replace must be between 0 and 1"),
        ("#{self_replace: [0.8, 0.2]}", "self_replace [0.8, 0.2] starts after it ends"),
        ("#{self_replace: [0.8]}", "self_replace must be a number or [start, end]"),
        ("#{blend_threshold: -1}", "blend_threshold must be between 0 and 1"),
        ("#{blend_word: \"circle\"}", "unknown option \"blend_word\""),
        ("#{blend_words: \"dog\"}", "blend word \"dog\" is not in the inversion's prompt \"a circle\""),
        ("#{blend_masks: true}", "blend_masks blends inside the masks: pass #{masks: …}"),
        ("3", "fusion must be true or a map"),
        ("#{local_blend: #{threshold: 2}}", "local_blend threshold must be between 0 and 1"),
        ("#{local_blend: #{start: -0.5}}", "local_blend start must be between 0 and 1"),
        ("#{local_blend: #{words: \"circle\"}}", "unknown option \"words\""),
        ("#{local_blend: #{source: \"dog\"}}", "blend word \"dog\" is not in the inversion's prompt"),
        ("#{local_blend: #{target: \"dog\"}}", "local_blend target words [\"dog\"] are not all in the edit's prompt"),
        ("#{source_branch: 1}", "source_branch"),
    ] {
        let e = s
            .eval(&format!("sample(model, \"a square\", #{{latents: inv, steps: 2, guidance: 7.5, fusion: {opts}}})"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{opts}: {e}");
    }
    for (call, says) in [
        ("sample(model, \"a square\", #{latents: inv, steps: 3, fusion: true})", "sample with steps: 2"),
        ("sample(model, \"a square\", #{steps: 2, fusion: true})", "pass latents from invert(…, #{store: true})"),
        ("invert(model, clip.video, #{steps: 2, store: #{resolutions: [3]}})", "resolution 3 is not a level"),
        ("invert(model, clip.video, #{steps: 2, store: #{self: false, cross: false}})", "keeps nothing"),
        ("invert(model, clip.video, #{steps: 2, store: #{sides: [2]}})", "unknown option \"sides\""),
        ("invert(model, clip.video, #{steps: 2, store: #{disk: \"yes\"}})", "disk"),
        ("invert(model, clip.video, #{steps: 2, store: true, window: 2})", "store keeps the maps of whole-clip calls"),
        // 16 frames at 512² over 1000 steps, every level: refused before anything is allocated, with the figure.
        (
            "invert(model, synthetic_clip(#{frames: 16, size: 512, seed: 1}).video, #{steps: 1000, store: #{resolutions: [64, 32]}})",
            "invert store: the attention maps of 16 frames over 1000 steps would need at least",
        ),
    ] {
        let e = s.eval(call).unwrap_err().to_string();
        assert!(e.contains(says), "{call}: {e}");
    }
    // The recipes as presets: zero-shot stores and fuses, p2p inverts with null-text and runs the source
    // branch with a local blend of the words the edit adds; a map overrides the preset's fusion key by key.
    let _ = s
        .eval(
            r#"let zs = inflate(load_sd("random:tiny"), #{preset: "zero-shot"});
               let zi = invert(zs, clip.video, #{preset: "zero-shot", steps: 2, prompt: "a circle"});
               let z = sample(zs, "a square", #{preset: "zero-shot", latents: zi, steps: 2});
               let pi = invert(model, clip.video, #{preset: "p2p", steps: 2, prompt: "a circle",
                                                    null_text: #{inner_steps: 1}});
               let p = sample(model, "a square", #{preset: "p2p", latents: pi, steps: 2, fusion: #{cross_replace: 0.5}});"#,
        )
        .expect("the zero-shot and p2p presets");
    for (call, says) in [
        (
            "tune(inflate(load_sd(\"random:tiny\"), #{preset: \"zero-shot\"}), clip.video, \"a circle\", #{preset: \"zero-shot\"})",
            "preset \"zero-shot\" edits without tuning",
        ),
        ("sample(model, \"a circle\", #{preset: \"p2p\", latents: pi, steps: 2})", "local_blend has no words"),
        ("sample(model, \"a square\", #{preset: \"zero-shot\", latents: pi, steps: 2})", "invert(…, #{store: true})"),
    ] {
        let e = s.eval(call).unwrap_err().to_string();
        assert!(e.contains(says), "{call}: {e}");
    }
    let _ = s
        .eval("sample(model, \"a circle\", #{preset: \"p2p\", latents: pi, steps: 2, fusion: #{local_blend: false}})")
        .expect("p2p without its local blend");
    let help = s.eval("help(\"sample\")").unwrap().to_string();
    assert!(help.contains("fusion") && help.contains("FateZero"), "{help}");
    assert!(help.contains("source_branch") && help.contains("local_blend"), "{help}");
    let help = s.eval("help(\"invert\")").unwrap().to_string();
    assert!(help.contains("store"), "{help}");
}
