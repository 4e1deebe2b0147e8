//! The bad-input corpus: every case of `tests/corpus/bad-inputs.txt` runs against the `vidtune` binary in
//! a fresh folder and must end as the case says — a clear error naming the input, a warning, or success —
//! and never with a panic, an abort or a C++ stack trace. `VIDTUNE_CORPUS=NAME` runs the cases whose name
//! contains NAME and prints their output.

mod common;
use common::corpus::{self, Case};
use common::*;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one case may take.
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

fn run_case(case: &Case, toy: &std::path::Path, cache: &std::path::Path) -> Result<String, String> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let command = |script: &str, name: &str| {
        std::fs::write(dir.join(name), script).unwrap();
        let mut cmd = vidtune(dir);
        cmd.arg("run").arg(name).env("VIDTUNE_CACHE", cache).env("VIDTUNE_PREVIEW", "off").env_remove("RUST_BACKTRACE");
        for (k, v) in case.env() {
            cmd.env(k, v.replace("$DIR", &dir.to_string_lossy()));
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    };
    corpus::prepare(case, dir, toy, &mut |setup| {
        let out = command(setup, "setup.rhai").output().unwrap();
        let _ = std::fs::remove_file(dir.join("setup.rhai"));
        match out.status.success() {
            true => Ok(()),
            false => Err(format!("its set-up failed:\n{}", stderr(&out))),
        }
    })?;
    let mut child = command(&case.script, "case.rhai").spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > CASE_TIMEOUT {
            let _ = child.kill();
            return Err(format!("still running after {CASE_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let (so, se) = (stdout(&out), stderr(&out));
    let shown = format!("exit {:?}\n--- stdout\n{so}--- stderr\n{se}", status.code());
    let fail = |why: String| Err(format!("{why}\n{shown}"));
    match status.code() {
        Some(0) | Some(1) => {}
        other => return fail(format!("exit status {other:?}: a crash")),
    }
    if let Some(sign) = corpus::crash_signs(&format!("{so}{se}")) {
        return fail(format!("the output shows a crash ({sign:?})"));
    }
    let mut wants_error = false;
    for (kind, arg) in &case.expect {
        let arg = arg.replace("$DIR", &std::fs::canonicalize(dir).unwrap().to_string_lossy());
        let ok = match kind.as_str() {
            "error" => {
                wants_error = true;
                status.code() == Some(1) && se.contains(&arg)
            }
            "ok" => status.success(),
            "warning" => se.contains(&format!("warning: {arg}")),
            "stdout" => so.contains(&arg),
            "exists" => dir.join(&arg).exists(),
            "absent" => !dir.join(&arg).exists(),
            "contains" | "lacks" => {
                let (file, text) = arg.split_once(' ').unwrap_or((&arg, ""));
                let body = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
                body.contains(text) == (kind == "contains")
            }
            other => return fail(format!("unknown expectation --> {other}")),
        };
        if !ok {
            return fail(format!("expected --> {kind}: {arg}"));
        }
    }
    if !wants_error && !status.success() {
        return fail("failed, and the case expects no error".into());
    }
    Ok(shown)
}

/// The texts a case's output can echo without vidtune having checked anything: errors quote the
/// failing source line and name the files involved, so an expectation found in the script, in a
/// directive (file names, file contents, set-up code) or in the case's own file names passes on any
/// error at all.
fn echoes(case: &Case) -> Vec<&str> {
    let mut out = vec![case.script.as_str(), "case.rhai", "setup.rhai"];
    out.extend(case.directives.iter().map(|(_, arg)| arg.as_str()));
    out
}

#[test]
fn no_case_can_pass_on_an_echo_of_its_input() {
    let mut bad = vec![];
    for case in corpus::load() {
        for (kind, text) in &case.expect {
            if !matches!(kind.as_str(), "error" | "warning") {
                continue;
            }
            if let Some(source) = echoes(&case).into_iter().find(|h| h.contains(text.as_str())) {
                let source = if source == case.script { "its script" } else { source };
                bad.push(format!("=== {} (line {}): --> {kind}: {text:?} occurs in {source:?}", case.name, case.line));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} expectations would pass on any error that quotes the input; expect the rule the input breaks:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn every_bad_input_gets_its_expected_outcome_and_nothing_crashes() {
    let cases = corpus::load();
    assert!(cases.len() >= 100, "the corpus has {} cases", cases.len());
    for c in &cases {
        assert!(!c.expect.is_empty(), "case {:?} (line {}) expects nothing", c.name, c.line);
    }
    let filter = std::env::var("VIDTUNE_CORPUS").ok();
    let chosen: Vec<&Case> = cases.iter().filter(|c| filter.as_deref().is_none_or(|f| c.name.contains(f))).collect();
    let toy = vidtune_runtime::toy::toy_dir().expect("the built-in toy models");
    let cache = tempfile::tempdir().unwrap();
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(vec![]);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = chosen.get(i) else { break };
                match run_case(case, &toy, cache.path()) {
                    Ok(shown) if filter.is_some() => println!("=== {}\n{shown}", case.name),
                    Ok(_) => {}
                    Err(why) => failures.lock().unwrap().push(format!("=== {} (line {}): {why}", case.name, case.line)),
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), chosen.len(), failures.join("\n\n"));
}
