//! `vidtune eval`: recipes over the toy suite and over a suite folder in the LOVEU-TGVE-2023 layout, the
//! result layout, the table, a failing case among others, and bad suites.

mod common;
use common::*;

fn eval(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    vidtune(dir).arg("eval").args(args).output().unwrap()
}

/// Two recipes on two cases of toy:test: the recommended one (few steps, to stay quick) and a script
/// that fails on one kind of edit and returns the clip unchanged on the other. Every case gets its frames
/// in the challenge's layout, a GIF and a sheet; the failure is listed and the other cases go on.
#[test]
fn recipes_over_toy_cases_write_the_layout_and_the_table() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("unchanged.rhai"),
        "if edit_type == \"background\" { throw \"no background recipe\" }\nvideo\n",
    )
    .unwrap();
    let out = eval(
        dir.path(),
        &[
            "toy:test",
            "--recipe",
            "auto,unchanged.rhai",
            "--cases",
            "test/toy-00",
            "--types",
            "colour,background",
            "--set",
            "steps=6",
            "--set",
            "inv_steps=4",
            "--out",
            "ev",
        ],
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("│ auto") && text.contains("│ unchanged"), "{text}");
    assert!(
        text.contains("failed: test/toy-00/background: recipe unchanged:") && text.contains("no background recipe"),
        "{text}"
    );
    let ev = dir.path().join("ev");
    for recipe in ["auto", "unchanged"] {
        let frames = ev.join(recipe).join("test/toy-00/colour");
        let n = std::fs::read_dir(&frames)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "jpg"))
            .count();
        assert_eq!(n, 8, "{}", frames.display());
        assert!(frames.join("00000.jpg").is_file() && ev.join(recipe).join("test/toy-00/colour.gif").is_file());
        assert!(ev.join(recipe).join("sheets/test-toy-00-colour.png").is_file());
    }
    assert!(ev.join("auto/test/toy-00/background/00007.jpg").is_file());
    assert!(!ev.join("unchanged/test/toy-00/background").exists());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ev.join("results.json")).unwrap()).unwrap();
    let recipes = json["recipes"].as_array().unwrap();
    assert_eq!(recipes.len(), 2);
    let unchanged = &recipes[1];
    assert_eq!(unchanged["summary"]["failed"], 1);
    // The clip itself is no colour edit: no frame has the asked colour.
    assert_eq!(unchanged["cases"][0]["hit_rate"], 0.0, "{unchanged}");
    assert_eq!(unchanged["cases"][0]["frames_right"].as_array().unwrap().len(), 8);
    // The recipe kept the subject in the background edit: its own pixels pasted back.
    let auto = &recipes[0];
    assert_eq!(auto["cases"][1]["type"], "background");
    assert!(auto["cases"][1]["kept"]["psnr"].as_f64().unwrap() > 40.0, "{auto}");
    for ext in ["md", "csv", "html"] {
        assert!(std::fs::read_to_string(ev.join(format!("results.{ext}"))).unwrap().contains("unchanged"));
    }
}

/// A suite written out in the LOVEU-TGVE-2023 layout reads back as a suite: the same cases, judged with
/// the ground truth that came with it.
#[test]
fn a_written_suite_is_a_suite() {
    let dir = tempfile::tempdir().unwrap();
    let out = eval(dir.path(), &["--write-suite", "toy:dev", "suite"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let suite = dir.path().join("suite");
    assert!(suite.join("LOVEU-TGVE-2023_Dataset.csv").is_file());
    assert!(suite.join("dev/480p_frames/toy-00/00000.jpg").is_file());
    assert!(suite.join("dev/masks/toy-00").is_dir());
    std::fs::write(dir.path().join("same.rhai"), "video\n").unwrap();
    let out = eval(dir.path(), &["suite", "--recipe", "same.rhai", "--limit", "1", "--clip", "none", "--out", "ev"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("ev/results.json")).unwrap()).unwrap();
    let case = &json["recipes"][0]["cases"][0];
    assert_eq!(case["case"], "dev/toy-00/style", "LOVEU-TGVE's column order: {case}");
    assert_eq!(case["hit_rate"], 0.0);
    assert!(dir.path().join("ev/dev/toy-00/style/00000.jpg").is_file());
}

#[test]
fn bad_suites_and_recipes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = eval(dir.path(), &["nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nosuch") && stderr(&out).contains("toy:dev"), "{}", stderr(&out));
    let out = eval(dir.path(), &["toy:tset"]);
    assert!(stderr(&out).contains("unknown toy suite \"toy:tset\""), "{}", stderr(&out));
    let out = eval(dir.path(), &["toy:dev", "--recipe", "best"]);
    assert!(
        stderr(&out).contains("unknown recipe \"best\"") && stderr(&out).contains("mask-guided"),
        "{}",
        stderr(&out)
    );
    let out = eval(dir.path(), &["toy:dev", "--types", "shape"]);
    assert!(stderr(&out).contains("unknown edit type \"shape\""), "{}", stderr(&out));
    let out = eval(dir.path(), &["toy:dev", "--cases", "nothing-like-this"]);
    assert!(stderr(&out).contains("no case matches"), "{}", stderr(&out));
    let out = eval(dir.path(), &["my-suite+colours"]);
    assert!(
        !out.status.success() && stderr(&out).contains("suite my-suite+colours: +colours widens a toy suite"),
        "{}",
        stderr(&out)
    );
}

/// `toy:dev:1+colours` / `+shapes`: the clip's colour edits to three colours, or object edits to its three
/// other shapes, each a video of its own.
#[test]
fn a_widened_suite_lists_one_video_per_target() {
    let dir = tempfile::tempdir().unwrap();
    for (suite, expected) in [
        ("toy:dev:1+colours", ["toy-00-to-blue", "toy-00-to-yellow", "toy-00-to-purple"]),
        ("toy:dev:1+shapes", ["toy-00-to-triangle", "toy-00-to-square", "toy-00-to-diamond"]),
    ] {
        let out = eval(dir.path(), &["--write-suite", suite, suite]);
        assert!(out.status.success(), "{}", stderr(&out));
        let csv = std::fs::read_to_string(dir.path().join(suite).join("LOVEU-TGVE-2023_Dataset.csv")).unwrap();
        let names: Vec<&str> =
            csv.lines().filter(|l| l.starts_with("toy-00")).map(|l| l.split(',').next().unwrap()).collect();
        assert_eq!(names, expected, "{csv}");
    }
    let csv = std::fs::read_to_string(dir.path().join("toy:dev:1+colours/LOVEU-TGVE-2023_Dataset.csv")).unwrap();
    assert!(csv.contains("a yellow circle bouncing on a green striped background"), "{csv}");
}

/// `eval_suite` is `vidtune eval` from a script: the table comes back as a value, saves as the CLI's
/// files do, and bad options are named.
#[test]
fn eval_suite_from_a_script_returns_the_table() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("unchanged.rhai"), "video\n").unwrap();
    std::fs::write(
        dir.path().join("s.rhai"),
        r#"let t = eval_suite("toy:test", "unchanged.rhai", #{cases: "test/toy-00", types: ["colour", "object"], out: "es"});
print(t);
t.save("t.json");
try { eval_suite("toy:test", "unchanged.rhai", #{params: #{x: [1]}}); } catch (e) { print(`caught: ${e}`); }
try { eval_suite("toy:test", "auto", #{types: "shape"}); } catch (e) { print(`caught: ${e}`); }
"#,
    )
    .unwrap();
    let out = vidtune(dir.path()).arg("run").arg("s.rhai").output().unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("│ unchanged") && text.contains("│ object"), "{text}");
    assert!(text.contains("caught: eval_suite: params.x is array: expected a string, a number or a boolean"), "{text}");
    assert!(text.contains(r#"caught: eval_suite "toy:test": unknown edit type "shape""#), "{text}");
    assert!(dir.path().join("es/test/toy-00/object/00007.jpg").is_file());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("t.json")).unwrap()).unwrap();
    let cases = json["recipes"][0]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2, "{json}");
    assert_eq!(cases[0]["case"], "test/toy-00/colour");
    assert_eq!(cases[0]["hit_rate"], 0.0);
}

/// `--jobs 2`: the videos are a sweep's points. The table equals one process's; a video whose process
/// dies (here aborted inside a tune) fails its own cases only, and the same evaluation run again runs
/// only that video.
#[test]
fn eval_jobs_spreads_videos_as_a_sweep_that_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("same.rhai"),
        "if out.contains(\"toy-01\") { tune(inflate(load_sd(\"random:tiny\")), video, prompt, #{steps: 1}); }\nvideo\n",
    )
    .unwrap();
    let base = ["toy:test", "--recipe", "same.rhai", "--cases", "toy-00,toy-01", "--types", "colour,object"];
    let run = |out: &str, jobs: &str, fail: &str| {
        let mut cmd = vidtune(d);
        cmd.arg("eval").args(base).args(["--clip", "none", "--out", out, "--jobs", jobs]);
        cmd.env("VIDTUNE_FAILPOINTS", fail).output().unwrap()
    };
    let cases = |out: &str| -> Vec<serde_json::Value> {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join(out).join("results.json")).unwrap()).unwrap();
        let mut cases = json["recipes"][0]["cases"].as_array().unwrap().clone();
        for c in &mut cases {
            c.as_object_mut().unwrap().remove("seconds");
        }
        cases
    };
    // First, before the memo holds toy-01's tune.
    let out = run("two", "2", "tune-step=abort");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = run("one", "1", "");
    assert!(out.status.success(), "{}", stderr(&out));
    let two = cases("two");
    assert_eq!(two.len(), 4);
    assert_eq!(two[..2], cases("one")[..2], "toy-00's cases are as one process makes them");
    for c in &two[2..] {
        let error = c["error"].as_str().unwrap_or_default();
        assert!(error.contains("the process for test/toy-01 did not finish (failed)"), "{c}");
    }
    let out = run("two", "2", "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("1 to run (1 done)"), "{}", stdout(&out));
    assert_eq!(cases("two"), cases("one"));
}

#[test]
fn suite_cases_gives_a_script_the_cases_a_recipe_gets() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_script(
        dir.path(),
        "c.rhai",
        r#"let cs = suite_cases("toy:test", #{types: ["colour", "object"], limit: 3});
for c in cs { print(`case ${c.id} ${c.edit_type} ${c.video.len()} ${c.masks.len()} ${c.subject} ${c.edit}`); }
let rows = sweep(#{item: cs, strength: [1]}, |p| #{frames: p.item.video.len()}, #{dir: "grid"});
print(`rows ${rows.len()}`);
try { suite_cases("toy:test", #{types: "shape"}); } catch (e) { print(`caught: ${e}`); }"#,
        &[],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let cases: Vec<&str> = text.lines().filter(|l| l.starts_with("case ")).collect();
    assert_eq!(cases.len(), 3, "{text}");
    assert!(cases[0].starts_with("case test/toy-00/colour colour 8 8 "), "{text}");
    assert!(cases[1].starts_with("case test/toy-00/object object 8 8 "), "{text}");
    assert!(text.contains("rows 3") && text.contains("caught: suite_cases: unknown edit type \"shape\""), "{text}");
    // A case's point is named by its id.
    assert!(dir
        .path()
        .join("grid/points")
        .read_dir()
        .unwrap()
        .any(|e| { e.unwrap().file_name().to_string_lossy().starts_with("item=test~toy-00~colour") }));
}
