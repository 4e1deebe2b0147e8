//! `vidtune run`, `doctor` and `--help`: script output, parameters, and errors with their positions.

mod common;
use common::*;

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
fn doctor_reports_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let out = vidtune(dir.path()).arg("doctor").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for row in
        ["libtorch", "CUDA", "CPU math", "FFmpeg", "ONNX Runtime", "weights", "disk", "memory", "huge pages", "speed"]
    {
        let line = text.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("no {row} row in\n{text}"));
        let verdict = line[14..].split_whitespace().next().unwrap_or_default();
        assert!(["ok", "warn", "note"].contains(&verdict), "{row} has no verdict: {line}");
    }
    assert!(text.contains("GFLOP/s") && text.contains("SD1.x at 8 × 512²"), "{text}");
    // On the CPU the row has bf16's rate too, and advises it where it is clearly faster.
    let speed = text.lines().find(|l| l.starts_with("speed")).unwrap();
    if !tch::Cuda::is_available() {
        assert!(speed.contains("bf16 ") && speed.contains(" GFLOP/s"), "{speed}");
        assert_eq!(speed.contains("in bf16 ≈"), text.contains("load SD-size models in bf16"), "{text}");
    }
    assert!(text.contains("next steps:") || text.contains("everything vidtune uses is here"), "{text}");
    assert!(text.contains("2.11"), "{text}");
    // The binary asks for huge pages itself; VIDTUNE_MALLOC=default leaves them off.
    let pages = |text: &str| text.lines().find(|l| l.starts_with("huge pages")).unwrap_or_default().to_string();
    let out = vidtune(dir.path()).arg("doctor").env_remove("THP_MEM_ALLOC_ENABLE").output().unwrap();
    assert!(pages(&stdout(&out)).contains("THP_MEM_ALLOC_ENABLE=1"), "{}", stdout(&out));
    let out = vidtune(dir.path())
        .arg("doctor")
        .env("VIDTUNE_MALLOC", "default")
        .env_remove("THP_MEM_ALLOC_ENABLE")
        .output()
        .unwrap();
    assert!(pages(&stdout(&out)).contains("off (THP_MEM_ALLOC_ENABLE=unset)"), "{}", stdout(&out));
    // The binary answers MKL's vendor check itself (runtime::cpu), and VIDTUNE_MKL=default leaves it to MKL.
    let math = text.lines().find(|l| l.starts_with("CPU math")).unwrap();
    if vidtune_runtime::cpu::mkl_dispatch() == vidtune_runtime::cpu::MklDispatch::AmdAvx512 {
        assert!(math.contains("AVX-512 kernels"), "{math}");
        let out = vidtune(dir.path()).arg("doctor").env("VIDTUNE_MKL", "default").output().unwrap();
        assert!(stdout(&out).contains("generic AVX2 kernels (VIDTUNE_MKL=default)"), "{}", stdout(&out));
    }
    // Threads: auto by default, --threads N, auto or all, and a bad setting named.
    let threads = |text: &str| text.lines().find(|l| l.starts_with("threads")).unwrap_or_default().to_string();
    let cores = std::thread::available_parallelism().unwrap().get();
    let row = threads(&text);
    if std::env::var_os("VIDTUNE_THREADS").is_none() {
        assert!(row.contains(&format!("intra-op (auto, the default: {cores} cores, ")), "{row}");
    }
    let out = vidtune(dir.path()).args(["--threads", "1", "doctor"]).output().unwrap();
    assert!(threads(&stdout(&out)).contains("1 intra-op (--threads)"), "{}", stdout(&out));
    let out = vidtune(dir.path()).args(["doctor", "--threads", "auto"]).output().unwrap();
    assert!(threads(&stdout(&out)).contains(&format!("(auto: {cores} cores, ")), "{}", stdout(&out));
    let out = vidtune(dir.path()).args(["doctor", "--threads", "all"]).output().unwrap();
    let all = format!("{cores} intra-op (all: the {cores} cores this process may use");
    assert!(threads(&stdout(&out)).contains(&all), "{}", stdout(&out));
    let out = vidtune(dir.path()).arg("doctor").env("VIDTUNE_THREADS", "many").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(r#"VIDTUNE_THREADS "many": expected a positive number of threads, auto or all"#),
        "{}",
        stderr(&out)
    );
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

#[test]
fn a_sweep_runs_its_grid_keeps_failures_to_their_points_and_reruns_only_what_is_not_done() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let script = |bad: &str| {
        format!(
            "let seed = param(\"seed\", 1);\nlet colour = param(\"colour\", \"red\");\n\
             if colour == \"{bad}\" {{ throw `no colour ${{colour}}`; }}\n\
             save_video(synthetic_clip(#{{frames: 2, size: 16, seed: seed, color: colour}}).video, \"clip.gif\");\n"
        )
    };
    std::fs::write(d.join("s.rhai"), script("blue")).unwrap();
    let sweep = |args: &[&str]| vidtune(d).arg("sweep").args(args).output().unwrap();
    let grid = ["s.rhai", "--dir", "out", "--axis", "seed=1,2", "--axis", "colour=red,blue", "--jobs", "2"];
    let out = sweep(&grid);
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("4 to run (0 done), 2 at a time"), "{}", stdout(&out));
    // The failing points carry their error; the others their outputs.
    let point: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("out/points/seed=2_colour=blue/point.json")).unwrap())
            .unwrap();
    assert_eq!(point["status"], "failed");
    assert!(point["error"].as_str().unwrap().contains("no colour blue"), "{point}");
    assert!(d.join("out/points/seed=2_colour=red/clip.gif").is_file());
    let status = sweep(&["status", "out"]);
    assert!(
        stdout(&status).contains("4 points of") && stdout(&status).contains("2 done, 2 failed"),
        "{}",
        stdout(&status)
    );
    // A run that died without a word (its pid gone) is missing, and runs again with the failed ones.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    std::fs::write(
        d.join("out/points/seed=1_colour=red/point.json"),
        format!(r#"{{"status": "running", "pid": 4000000000, "host": "{host}"}}"#),
    )
    .unwrap();
    std::fs::write(d.join("s.rhai"), script("none")).unwrap();
    let before = std::fs::metadata(d.join("out/points/seed=2_colour=red/clip.gif")).unwrap().modified().unwrap();
    let out = sweep(&grid);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("3 to run (1 done)"), "{}", stdout(&out));
    let after = std::fs::metadata(d.join("out/points/seed=2_colour=red/clip.gif")).unwrap().modified().unwrap();
    assert_eq!(before, after, "a done point is not run again");
    let out = sweep(&["collect", "out"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(d.join("out/results.html")).unwrap();
    assert_eq!(html.matches("<td>clip.gif</td>").count(), 4, "{html}");
    let csv = std::fs::read_to_string(d.join("out/results.csv")).unwrap();
    assert_eq!(csv.lines().next().unwrap(), "seed,colour,status,seconds,outputs,error");
    assert_eq!(csv.lines().filter(|l| l.contains(",done,") && l.contains("clip.gif")).count(), 4, "{csv}");
    // Axes are checked against the script's parameters before anything runs.
    let out = sweep(&["s.rhai", "--dir", "out2", "--axis", "sed=1,2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("sed") && stderr(&out).contains("seed"), "{}", stderr(&out));
    assert!(!d.join("out2").exists());
}

/// A single-node Slurm started for a test in its own folder, stopped when dropped.
struct LocalSlurm {
    dir: tempfile::TempDir,
    conf: String,
}

impl LocalSlurm {
    fn start() -> LocalSlurm {
        let dir = tempfile::tempdir().unwrap();
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/slurm-local.sh");
        let out = std::process::Command::new("bash").arg(&script).arg("start").arg(dir.path()).output().unwrap();
        assert!(
            out.status.success(),
            "a one-node Slurm did not start (./dev.sh test installs slurm-wlm and munge): {}{}",
            stdout(&out),
            stderr(&out)
        );
        let conf = stdout(&out).trim().trim_start_matches("export SLURM_CONF=").to_string();
        LocalSlurm { dir, conf }
    }
}

impl Drop for LocalSlurm {
    fn drop(&mut self) {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/slurm-local.sh");
        let _ = std::process::Command::new("bash").arg(script).arg("stop").arg(self.dir.path()).output();
    }
}

#[test]
fn a_sweep_runs_as_a_slurm_job_array_a_cancelled_task_is_resumed_and_collect_equals_the_local_run() {
    use std::io::BufRead;
    let slurm = LocalSlurm::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("s.rhai"),
        "let seed = param(\"seed\", 1);\nlet colour = param(\"colour\", \"red\");\n\
         save_video(synthetic_clip(#{frames: 2, size: 16, seed: seed, color: colour}).video, \"clip.gif\");\n",
    )
    .unwrap();
    let grid = |out: &str| {
        ["s.rhai", "--dir", out, "--axis", "seed=1,2", "--axis", "colour=red,blue"].map(String::from).to_vec()
    };
    let sweep = |args: &[String]| vidtune(d).env("SLURM_CONF", &slurm.conf).arg("sweep").args(args).output().unwrap();
    let out = sweep(&[grid("local"), vec!["--jobs".into(), "2".into()]].concat());
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // One task at a time; the last one is cancelled while it waits.
    let mut child = vidtune(d)
        .env("SLURM_CONF", &slurm.conf)
        .arg("sweep")
        .args(grid("slurm"))
        .args(["--backend", "slurm", "--jobs", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let job =
        first.split("array job ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_else(|| panic!("{first}"));
    let cancel =
        std::process::Command::new("scancel").env("SLURM_CONF", &slurm.conf).arg(format!("{job}_3")).output().unwrap();
    assert!(cancel.status.success(), "{}", stderr(&cancel));
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(child.wait().unwrap().code(), Some(1), "{first}\n{}", rest.join("\n"));
    assert!(rest.last().unwrap().contains("3 done, 1 not"), "{}", rest.join("\n"));
    let status = sweep(&["status".into(), "slurm".into()]);
    assert!(
        stdout(&status).contains("1 missing, 3 done") || stdout(&status).contains("3 done, 1 missing"),
        "{}",
        stdout(&status)
    );
    // Resumed: only the cancelled point is submitted, and the tables agree with the local run's.
    let out = sweep(&[grid("slurm"), vec!["--backend".into(), "slurm".into()]].concat());
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("with 1 tasks (3 done)"), "{}", stdout(&out));
    let table = |name: &str| {
        assert!(sweep(&["collect".into(), name.into()]).status.success());
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join(name).join("results.json")).unwrap()).unwrap();
        json.as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{} {} {} {}", r["seed"], r["colour"], r["status"], r["outputs"]))
            .collect::<Vec<_>>()
    };
    let local = table("local");
    assert_eq!(local.len(), 4);
    assert!(local.iter().all(|r| r.contains("\"done\" \"clip.gif\"")), "{local:?}");
    assert_eq!(table("slurm"), local);
}

#[test]
fn a_sweeps_shared_stage_tunes_each_clip_once_for_all_its_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tune = "let m = inflate(load_sd(\"random:tiny\"));\n\
                let c = synthetic_clip(#{frames: 2, size: 32, seed: clip}).video;\n\
                let tuned = tune(m, c, \"a red circle\", #{steps: 2});\n";
    std::fs::write(d.join("tune.rhai"), format!("let clip = param(\"clip\", 1);\n{tune}")).unwrap();
    std::fs::write(
        d.join("edit.rhai"),
        format!("let clip = param(\"clip\", 1);\nlet seed = param(\"seed\", 1);\n{tune}print(`seed ${{seed}}`);\n"),
    )
    .unwrap();
    let args = ["sweep", "edit.rhai", "--dir", "out", "--axis", "clip=1,2", "--axis", "seed=1,2,3"];
    let out =
        vidtune(d).args(args).args(["--stage", "tune.rhai", "--stage-by", "clip", "--jobs", "2"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("after 2 of 2 stage runs"), "{}", stdout(&out));
    // Each clip is tuned once, by its stage run; every point reads that tune from the memo.
    let log = |p: std::path::PathBuf| std::fs::read_to_string(p.join("log.txt")).unwrap();
    let memo = "tune: from the memo";
    for clip in [1, 2] {
        assert!(!log(d.join(format!("out/stages/clip={clip}"))).contains(memo));
        for seed in [1, 2, 3] {
            let l = log(d.join(format!("out/points/clip={clip}_seed={seed}")));
            assert!(l.contains(memo) && l.contains(&format!("seed {seed}")), "clip {clip} seed {seed}: {l}");
        }
    }
    let status = vidtune(d).args(["sweep", "status", "out"]).output().unwrap();
    assert!(stdout(&status).contains("6 done; stages: 2 done"), "{}", stdout(&status));
    // A stage that fails holds back only the points that need it.
    std::fs::write(
        d.join("tune.rhai"),
        format!("let clip = param(\"clip\", 1);\nif clip == 3 {{ throw \"no\"; }}\n{tune}"),
    )
    .unwrap();
    let out = vidtune(d)
        .args(["sweep", "edit.rhai", "--dir", "out2", "--axis", "clip=1,3", "--axis", "seed=1"])
        .args(["--stage", "tune.rhai", "--stage-by", "clip"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("clip=3 seed=1: its stage clip=3 is not done"), "{}", stdout(&out));
    assert!(d.join("out2/points/clip=1_seed=1/log.txt").is_file());
}

#[test]
fn a_sweep_point_whose_run_is_killed_is_failed_alone_and_the_next_run_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("s.rhai"),
        "let seed = param(\"seed\", 1);\nlet steps = param(\"steps\", 2);\n\
         let m = inflate(load_sd(\"random:tiny\"));\nlet c = synthetic_clip(#{frames: 2, size: 32, seed: seed}).video;\n\
         let tuned = tune(m, c, \"a red circle\", #{steps: if seed == 2 { steps } else { 2 }});\nprint(\"tuned\");\n",
    )
    .unwrap();
    let grid = ["sweep", "s.rhai", "--dir", "out", "--axis", "seed=1,2,3", "--jobs", "3"];
    // Point seed=2 tunes for ever; its run is killed (SIGKILL) once it is under way.
    let child =
        vidtune(d).args(grid).args(["--set", "steps=1000000"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let point = d.join("out/points/seed=2/point.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let pid = loop {
        assert!(std::time::Instant::now() < deadline, "point seed=2 never started");
        let json: Option<serde_json::Value> =
            std::fs::read_to_string(&point).ok().and_then(|t| serde_json::from_str(&t).ok());
        if let Some(pid) = json.filter(|j| j["status"] == "running").and_then(|j| j["pid"].as_i64()) {
            let log = std::fs::read_to_string(d.join("out/points/seed=2/log.txt")).unwrap_or_default();
            if log.contains("random weights") {
                break pid;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // SAFETY: kill(2) on the pid of the point's run, which this test's sweep started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let status = vidtune(d).args(["sweep", "status", "out"]).output().unwrap();
    assert!(stdout(&status).contains("2 done, 1 failed"), "{}", stdout(&status));
    // The next run (a sane step count) runs only that point, and the memo the others wrote still serves.
    let out = vidtune(d).args(grid).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("1 to run (2 done)"), "{}", stdout(&out));
    let again = vidtune(d).args(["run", "s.rhai", "--set", "seed=1"]).output().unwrap();
    assert!(
        stderr(&again).contains("tune: from the memo") || stdout(&again).contains("tune: from the memo"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn a_sweep_point_that_panics_fails_alone_and_collect_tables_scores_and_a_sheet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Point seed=2 tunes, and a failpoint makes the tune panic as a bug inside it would; the others
    // return their scores.
    std::fs::write(
        d.join("s.rhai"),
        "let seed = param(\"seed\", 1);\nlet c = synthetic_clip(#{frames: 2, size: 32, seed: seed}).video;\n\
         if seed == 2 { tune(inflate(load_sd(\"random:tiny\")), c, \"a red circle\", #{steps: 2}); }\n\
         save_video(c, \"clip.gif\");\n#{score: seed * 0.25, kind: \"circle\"}\n",
    )
    .unwrap();
    let grid =
        ["sweep", "s.rhai", "--dir", "out", "--axis", "seed=1,2,3,4", "--where", "seed != 4", "--devices", "cpu,cpu"];
    let out = vidtune(d).args(grid).env("VIDTUNE_FAILPOINTS", "tune-step").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("3 to run (0 done)"), "{}", stdout(&out));
    let point: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("out/points/seed=2/point.json")).unwrap()).unwrap();
    assert_eq!(point["status"], "failed");
    assert_eq!(point["device"], "cpu", "{point}");
    assert!(point["error"].as_str().unwrap().contains("failpoint tune-step"), "{point}");
    assert!(!d.join("out/points/seed=4").exists(), "--where leaves seed=4 out");
    let out = vidtune(d).args(["sweep", "collect", "out"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("failed: seed=2: ") && stdout(&out).contains("failpoint tune-step"),
        "{}",
        stdout(&out)
    );
    let csv = std::fs::read_to_string(d.join("out/results.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    // A map's entries in name order (Rhai's maps keep their keys sorted).
    assert_eq!(lines[0], "seed,status,seconds,kind,score,outputs,error", "{csv}");
    assert!(lines[1].starts_with("1,done,") && lines[1].contains(",circle,0.2500,clip.gif,"), "{csv}");
    assert!(
        lines[2].starts_with("2,failed,")
            && lines[2].contains(",,,,\"")
            && lines[2].contains("s.rhai:3:16: tune: internal error: failpoint"),
        "{csv}"
    );
    assert!(lines[3].contains(",circle,0.7500,"), "{csv}");
    // The sheet has a row of frames per done point.
    let sheet = vidtune_runtime::Image::load(d.join("out/sheet.png")).unwrap();
    assert!(sheet.height() > 2 * 32 && sheet.height() < 3 * 32 + 60, "{}×{}", sheet.width(), sheet.height());
    assert!(std::fs::read_to_string(d.join("out/results.html")).unwrap().contains("<img src=\"sheet.png\""));
    // --resume runs the recorded sweep again: only the failed point.
    let out = vidtune(d).args(["sweep", "--resume", "out"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("1 to run (2 done)") && stdout(&out).contains("seed=2"), "{}", stdout(&out));
}

#[test]
fn a_scripts_sweep_records_each_point_and_a_panic_or_a_throw_fails_only_its_point() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("g.rhai"),
        "let rows = sweep(#{seed: [1, 2, 3], size: [16, 32]}, |p| {\n\
         \x20   let c = synthetic_clip(#{frames: 2, size: p.size, seed: p.seed}).video;\n\
         \x20   if p.seed == 2 { tune(inflate(load_sd(\"random:tiny\")), c, \"a circle\", #{steps: 2}); }\n\
         \x20   if p.seed == 3 { throw `no seed ${p.seed}`; }\n\
         \x20   c\n\
         }, #{filter: |p| p.size == 32 || p.seed == 1, dir: \"grid\"});\n\
         for r in rows { print(`row ${r.params.seed} ${r.params.size} ${r.status}`); }\n",
    )
    .unwrap();
    let out = vidtune(d).args(["run", "g.rhai"]).env("VIDTUNE_FAILPOINTS", "tune-step").output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("row ")).collect();
    assert_eq!(rows, ["row 1 16 done", "row 1 32 done", "row 2 32 failed", "row 3 32 failed"], "{}", stdout(&out));
    let point = |key: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("grid/points").join(key).join("point.json")).unwrap())
            .unwrap()
    };
    assert!(point("seed=2_size=32")["error"].as_str().unwrap().contains("failpoint tune-step"));
    let thrown = point("seed=3_size=32")["error"].as_str().unwrap().to_string();
    assert!(thrown.starts_with("g.rhai:4:22: no seed 3") && thrown.contains("in call to a closure"), "{thrown}");
    let status = vidtune(d).args(["sweep", "status", "grid"]).output().unwrap();
    assert!(stdout(&status).contains("4 points of g.rhai: 2 done, 2 failed"), "{}", stdout(&status));
    let collect = vidtune(d).args(["sweep", "collect", "grid"]).output().unwrap();
    assert!(collect.status.success() && d.join("grid/sheet.png").is_file(), "{}", stderr(&collect));
    let again = vidtune(d).args(["sweep", "--resume", "grid"]).output().unwrap();
    assert!(stderr(&again).contains("run by the script g.rhai"), "{}", stderr(&again));
}
