//! The REPL driven through a pseudo-terminal: state across lines, multi-line input, errors that keep the
//! session, `:help`, `:vars`, `:reset`, completion, Ctrl-C and Ctrl-D, and the history file.

mod common;
use common::*;
use rexpect::session::{spawn_command, PtySession};

const PROMPT: &str = "vidtune> ";

fn start(dir: &std::path::Path) -> PtySession {
    let mut cmd = vidtune(dir);
    cmd.env("TERM", "xterm-256color").env("COLUMNS", "120");
    let mut p = spawn_command(cmd, Some(120_000)).unwrap();
    p.exp_string("Tab completes").unwrap();
    p.exp_string(PROMPT).unwrap();
    p
}

/// Sends a line and waits for the next prompt; returns what was printed in between.
fn line(p: &mut PtySession, text: &str) -> String {
    p.send_line(text).unwrap();
    finish(p)
}

/// Waits for the REPL to read the next line. rustyline redraws the prompt while a line is edited, so the
/// prompt text is no marker; switching bracketed paste back on (`ESC [?2004h`) happens once per read.
/// Input typed before that is discarded by the terminal mode switch, so tests wait for it.
fn finish(p: &mut PtySession) -> String {
    p.exp_string("\x1b[?2004h").unwrap()
}

#[test]
fn state_errors_help_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = start(dir.path());

    line(&mut p, "let x = 40;");
    assert!(line(&mut p, "x + 2").contains("42"));

    // An error prints with its position and the session keeps its state.
    let out = line(&mut p, "let v = load_video(\"missing.mp4\");");
    assert!(out.contains("<cell:3>:1:9: no such file or directory: missing.mp4"), "{out}");
    assert!(out.contains("^"), "{out}");
    assert!(line(&mut p, "x * 1").contains("40"));

    // Functions persist; multi-line input continues while braces are open.
    p.send_line("fn add(a, b) {").unwrap();
    p.send_line("    a + b").unwrap();
    line(&mut p, "}");
    assert!(line(&mut p, "add(x, 3)").contains("43"));

    // Values of vidtune types print as summaries.
    let out = line(&mut p, "let c = synthetic_clip(#{frames: 3, size: 32}); c.video");
    assert!(out.contains("Video(3 frames, 32x32, 8 fps)"), "{out}");

    let out = line(&mut p, ":help load_video");
    assert!(out.contains("load_video(path: string, options: map) -> Video"), "{out}");
    assert!(out.contains("example:") && out.contains("#{frames: 8, every: 2, size: 512}"), "{out}");
    // `:help segment` says which segmenter would run, then which one ran.
    let out = line(&mut p, ":help segment");
    assert!(out.contains("segment has not run yet") && out.contains("built-in graph cut"), "{out}");
    line(&mut p, "let sq = synthetic_clip(#{kind: \"square\", frames: 3, size: 48, seed: 1});");
    let out = line(&mut p, "segment(sq.video, [click(24, 24)], #{propagate: false})");
    assert!(out.contains("Masks(3 frames, 48x48"), "{out}");
    let out = line(&mut p, ":help segment");
    assert!(out.contains("segment last ran: built-in graph cut (no SAM files given) on 3 frames"), "{out}");
    let out = line(&mut p, ":help Video");
    assert!(out.contains(".grid") && out.contains(".slice"), "{out}");
    let out = line(&mut p, ":help");
    assert!(out.contains("synthetic_clip") && out.contains(":autopreview"), "{out}");

    let out = line(&mut p, ":cache");
    assert!(out.contains("memo:") && out.contains("disk:"), "{out}");
    let out = line(&mut p, ":vars");
    assert!(out.contains("x") && out.contains("i64") && out.contains("map"), "{out}");

    line(&mut p, ":reset");
    let out = line(&mut p, "x");
    assert!(out.contains("variable not found: x"), "{out}");

    // Ctrl-C at an empty prompt does not leave; Ctrl-D does.
    p.send_control('c').unwrap();
    assert!(finish(&mut p).contains("(Ctrl-D or :quit to leave)"));
    assert!(line(&mut p, "1 + 1").contains('2'));
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();

    let history = std::fs::read_to_string(dir.path().join("data/vidtune/history.txt")).unwrap();
    assert!(history.contains("let x = 40;") && history.contains(":help load_video"), "{history}");
}

#[test]
fn tab_completes_functions_methods_and_variables() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = start(dir.path());
    line(&mut p, "let my_clip = synthetic_clip(#{frames: 5, size: 32}).video;");
    // A unique function prefix completes in place.
    p.send("synthetic_cl").unwrap();
    p.send("\t").unwrap();
    p.send_line("(#{frames: 3}).video.len() * 7").unwrap();
    let out = finish(&mut p);
    assert!(out.contains("synthetic_clip") && out.contains("21"), "{out}");
    // Variables complete, and methods after a dot.
    p.send("my_cl").unwrap();
    p.send("\t").unwrap();
    p.send(".sli").unwrap();
    p.send("\t").unwrap();
    p.send_line("(0, 3)").unwrap();
    let out = finish(&mut p);
    assert!(out.contains("Video(3 frames, 32x32"), "{out}");
    // Inside an options map, the option names of the function it goes to complete (with `: `).
    p.send("let short = synthetic_clip(#{fram").unwrap();
    p.send("\t").unwrap();
    p.send_line("4, si\t16}).video; short.len() * 10").unwrap();
    let out = finish(&mut p);
    assert!(out.contains("40"), "{out}");
    // After a dot, the methods of the variable's type: `my_clip.wid` is a Video's width().
    p.send("my_clip.wid").unwrap();
    p.send("\t").unwrap();
    p.send_line("() + 1").unwrap();
    let out = finish(&mut p);
    assert!(out.contains("33"), "{out}");
    p.send_line(":quit").unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn ctrl_c_cancels_a_running_loop_and_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = start(dir.path());
    line(&mut p, "let kept = 7;");
    p.send_line("let n = 0; loop { n += 1; }").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    p.send_control('c').unwrap();
    let out = finish(&mut p);
    assert!(out.contains("cancelled") && out.contains("the session keeps its state"), "{out}");
    assert!(line(&mut p, "kept + 1").contains('8'));
    let out = line(&mut p, "n > 0");
    assert!(out.contains("true"), "{out}");
    p.send_line(":quit").unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn load_runs_a_file_into_the_session() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.rhai"), "let loaded = 5;\nfn triple(a) { a * 3 }\n").unwrap();
    std::fs::write(dir.path().join("broken.rhai"), "let y = 1;\nlet z = y +;\n").unwrap();
    let mut p = start(dir.path());
    line(&mut p, ":load lib.rhai");
    assert!(line(&mut p, "triple(loaded)").contains("15"));
    let out = line(&mut p, ":load broken.rhai");
    assert!(out.contains("broken.rhai:2:12: syntax error"), "{out}");
    assert!(line(&mut p, "loaded - 1").contains('4'));
    p.send_line(":quit").unwrap();
    p.exp_eof().unwrap();
}

/// Every input of the bad-input corpus that once crashed the process (tagged `@repl`), typed into one
/// session: each ends with an error, and the session's variables survive all of them.
#[test]
fn inputs_that_used_to_crash_keep_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<_> = common::corpus::load().into_iter().filter(|c| c.has("repl")).collect();
    assert!(cases.len() >= 8, "{} @repl cases", cases.len());
    let toy = vidtune_runtime::toy::toy_dir().unwrap();
    for (i, case) in cases.iter().enumerate() {
        // Each case's files in its own folder, which the typed input reaches by name.
        let sub = dir.path().join(format!("case{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        common::corpus::prepare(case, &sub, &toy, &mut |setup| {
            let out = run_script(&sub, "setup.rhai", setup, &[]);
            out.status.success().then_some(()).ok_or_else(|| stderr(&out))
        })
        .unwrap();
    }
    let mut p = start(dir.path());
    line(&mut p, "let keep = 42;");
    for (i, case) in cases.iter().enumerate() {
        let mut code = case.script.lines().map(str::trim).collect::<Vec<_>>().join(" ");
        let (kind, expected) = &case.expect[0];
        assert_eq!(kind, "error", "{}", case.name);
        let mut expected = expected.clone();
        // String literals naming files of the case's folder are made relative to the session's folder.
        let sub = dir.path().join(format!("case{i}"));
        let literals: Vec<String> = code.split('"').skip(1).step_by(2).map(str::to_string).collect();
        for lit in literals {
            let first = lit.split('/').next().unwrap_or("");
            if !first.is_empty() && sub.join(first).exists() {
                code = code.replace(&format!("\"{lit}\""), &format!("\"case{i}/{lit}\""));
                expected = expected.replace(&format!("{first}/"), &format!("case{i}/{first}/"));
            }
        }
        let out = line(&mut p, &code);
        assert!(!out.contains("internal error") && !out.contains("panicked"), "{}: {out}", case.name);
        assert!(out.contains(&expected), "{}: expected {expected:?} in:\n{out}", case.name);
        assert!(line(&mut p, "keep").contains("42"), "the session lost its state after {}", case.name);
    }
    p.send_line(":quit").unwrap();
    p.exp_eof().unwrap();
}

#[test]
fn runaway_builtins_and_unreadable_files_end_in_errors_and_the_session_keeps_its_variables() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("clip.mp4");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    let mut p = start(dir.path());
    line(&mut p, "let keep = 41;");
    let cases: &[(&str, &str)] = &[
        ("let a = []; a.pad(1 << 40, 0);", "script limit of 16777216 elements"),
        ("let s = \"x\"; for i in 0..40 { s += s; }", "script limit of 67108864 characters"),
        ("blob(1 << 40)", "VIDTUNE_MAX_ARRAY"),
        ("let s = \"x\"; s.pad(100000000000, \"y\");", "VIDTUNE_MAX_STRING"),
        ("fn f(x) { f(x) } f(1)", "too deep recursion"),
        (":load /dev/zero", "not a regular file"),
        ("load_video(\"clip.mp4\")", "not a regular file or folder"),
    ];
    for (input, expected) in cases {
        let out = line(&mut p, input);
        assert!(out.contains(expected), "{input}: expected {expected:?} in {out}");
    }
    assert!(line(&mut p, "keep + 1").contains("42"));
    p.send_line(":quit").unwrap();
    p.exp_eof().unwrap();
}
