//! Watch mode: reruns on an in-place save, on a save by rename and when a file the script read changes;
//! a failing run prints its error and the watch goes on; files the script writes do not trigger runs;
//! each run says what it computed and what came from the memo.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

struct Watch {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Watch {
    fn start(dir: &std::path::Path, script: &str) -> Watch {
        let mut child =
            vidtune(dir).args(["watch", script]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Watch { child, lines: rx, seen: vec![] }
    }

    /// Waits for a line containing `needle`; returns the lines read up to it.
    fn expect(&mut self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut got = vec![];
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line.clone());
                let hit = line.contains(needle);
                got.push(line);
                if hit {
                    return got;
                }
            }
        }
        panic!("no line with {needle:?}; output so far:\n{}", self.seen.join("\n"));
    }

    /// Waits for lines containing each of `needles`, in any order (standard output and standard error
    /// arrive through separate pipes, so their relative order is not kept).
    fn expect_all(&mut self, needles: &[&str]) {
        let mut missing: Vec<&str> = needles.to_vec();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !missing.is_empty() && Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.seen.push(line.clone());
                missing.retain(|n| !line.contains(n));
            }
        }
        assert!(missing.is_empty(), "no line with {missing:?}; output so far:\n{}", self.seen.join("\n"));
    }

    /// Lines that arrive within `wait`.
    fn quiet_for(&mut self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut got = vec![];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Ok(line) = self.lines.recv_timeout(left) {
                got.push(line);
            }
        }
        got
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn reruns_on_saves_and_survives_failures() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("w.rhai");
    std::fs::write(&script, "print(\"run A\");").unwrap();
    let mut w = Watch::start(dir.path(), "w.rhai");
    w.expect("run A");
    w.expect("watching 1 file: w.rhai;");

    // Save in place.
    std::fs::write(&script, "print(\"run B\");").unwrap();
    let lines = w.expect("run B");
    assert!(lines.iter().any(|l| l.contains("changed: w.rhai")), "{lines:?}");
    w.expect("ok in");

    // Save by rename, as many editors do.
    let tmp = dir.path().join(".w.rhai.swp-tmp");
    std::fs::write(&tmp, "print(\"run C\");").unwrap();
    std::fs::rename(&tmp, &script).unwrap();
    w.expect("run C");
    w.expect("watching");

    // A failing run prints the error with its position and keeps watching.
    std::fs::write(&script, "let x = ;").unwrap();
    w.expect_all(&["w.rhai:1:9: syntax error", "failed after", "watching"]);
    std::fs::write(&script, "print(\"run D\");").unwrap();
    w.expect("run D");
}

#[test]
fn follows_files_the_script_reads_but_not_those_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let setup = vidtune(dir.path())
        .args(["run", "/dev/stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"save_video(synthetic_clip(#{frames: 3}).video, \"in.gif\");")?;
            c.wait()
        })
        .unwrap();
    assert!(setup.success());
    let script = "let v = load_video(\"in.gif\");\nprint(`frames: ${v.len()}`);\nsave_video(v, \"out.gif\");\n";
    std::fs::write(dir.path().join("r.rhai"), script).unwrap();
    let mut w = Watch::start(dir.path(), "r.rhai");
    w.expect("frames: 3");
    w.expect("watching 2 files: in.gif, r.rhai;");
    // Writing out.gif on every run must not trigger another run.
    let extra = w.quiet_for(Duration::from_millis(1500));
    assert!(!extra.iter().any(|l| l.contains("changed")), "rerun on its own output: {extra:?}");
    // Changing the input does.
    let status = vidtune(dir.path())
        .args(["run", "/dev/stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"save_video(synthetic_clip(#{frames: 5}).video, \"in.gif\");")?;
            c.wait()
        })
        .unwrap();
    assert!(status.success());
    let lines = w.expect("frames: 5");
    assert!(lines.iter().any(|l| l.contains("changed: in.gif")), "{lines:?}");
}

#[test]
fn ctrl_c_cancels_the_run_and_a_second_within_two_seconds_quits() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("w.rhai");
    std::fs::write(&script, "print(\"run A\"); let n = 0; loop { n += 1; }").unwrap();
    let mut w = Watch::start(dir.path(), "w.rhai");
    w.expect("run A");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(w.child.id() as i32, libc::SIGINT) };
    w.expect("cancelled after");
    w.expect("watching 1 file");
    std::thread::sleep(Duration::from_millis(2200));
    std::fs::write(&script, "print(\"run B\");").unwrap();
    w.expect("run B");
    w.expect("ok in");
    for _ in 0..2 {
        unsafe { libc::kill(w.child.id() as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = w.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "watch mode did not quit on a double Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
}

#[test]
fn a_rerun_reports_its_memo_hits() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("m.rhai");
    let body = r#"
let model = inflate(load_sd("random:tiny"));
let clip = synthetic_clip(#{frames: 2, size: 32, seed: 1}).video;
let tuned = tune(model, clip, "a circle", #{steps: 2});
let inv = invert(tuned, clip, #{steps: 2});
let edit = sample(tuned, "a red circle", #{latents: inv, steps: 2});
"#;
    std::fs::write(&script, format!("{body}print(\"first\");")).unwrap();
    let mut w = Watch::start(dir.path(), "m.rhai");
    w.expect("first");
    let lines = w.expect("ok in");
    let done = lines.last().unwrap();
    assert!(done.contains("tune 2, invert 2, sample 2 steps · memo 0 hits, 3 computed"), "{done}");
    w.expect("watching 1 file: m.rhai;");
    // Only the message changed: tuning, inversion and the edit come from the memo.
    std::fs::write(&script, format!("{body}print(\"second\");")).unwrap();
    w.expect_all(&["tune: from the memo", "invert: from the memo", "sample: from the memo", "second"]);
    let lines = w.expect("ok in");
    let done = lines.last().unwrap();
    assert!(done.contains("memo 3 hits, 0 computed") && !done.contains("steps"), "{done}");
}
