//! Saves that never cost a user's file: killed half way, Ctrl-C and SIGTERM during pipelines and saves,
//! planted manifests and lookalike temporaries, files vidtune did not write.

mod common;
use common::*;

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on the pid of a child we spawned and still own.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Waits until `dir` holds an entry whose name starts with `prefix`. The deadline only catches a hang: on a
/// busy machine, making the long clip took over a minute once. A child that never gets there is killed
/// before the test's folder goes, so it cannot report errors about a folder that vanished under it.
fn wait_for_entry(dir: &std::path::Path, prefix: &str, child: &mut std::process::Child) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while std::time::Instant::now() < deadline {
        if std::fs::read_dir(dir).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with(prefix)) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("exited ({status}) before {prefix}… appeared");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("no {prefix}… in {} after 10 minutes", dir.display());
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
    // Saves one after another, so that the work outlasts the signals however fast the machine encodes
    // (a single 900-frame mp4 took 0.5 s, and a SIGTERM 0.48 s in once found the run finished).
    (
        "frames",
        "let v = synthetic_clip(#{frames: 300, size: 128, seed: 1}).video;\nprint(\"ready\");\n\
         for i in 0..100 { save_video(v, `frames${i}`); }",
    ),
    (
        "gif",
        "let v = synthetic_clip(#{frames: 300, size: 128, seed: 1}).video;\nprint(\"ready\");\n\
         for i in 0..100 { save_video(v, `clip${i}.gif`); }",
    ),
    (
        "mp4",
        "let v = synthetic_clip(#{frames: 300, size: 128, seed: 1}).video;\nprint(\"ready\");\n\
         for i in 0..100 { save_video(v, `clip${i}.mp4`); }",
    ),
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
