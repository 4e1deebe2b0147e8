//! The bad-input corpus (`tests/corpus/bad-inputs.txt`): its cases, and the files each case sets up.
//!
//! A case is a name, set-up directives, a script and expectations:
//!
//! ```text
//! === config: a UNet with 0 attention heads
//! @toy bad
//! @json bad/unet/config.json attention_head_dim=0
//! @repl
//! load_sd("bad");
//! --> error: bad/unet/config.json: invalid config: attention_head_dim[0] must be between 1 and 1024, got 0
//! ```
//!
//! Directives: `@toy DIR` (a copy of the built-in toy models), `@json FILE KEY=JSON` (set a field; dotted
//! keys reach into objects), `@write FILE TEXT` (`\n` for line breaks, `\xNN` for bytes), `@bytes FILE N` (N pseudo-random
//! bytes), `@truncate FILE N` (keep the first N bytes; `N%` keeps a share), `@mkdir DIR`, `@setup CODE`
//! (script lines run first, in their own process, which must succeed), `@env KEY=VALUE` (for the run),
//! `@repl` (an input that once crashed the session: the REPL test replays it).
//!
//! Expectations: `--> error: TEXT` (fails with exit status 1, standard error contains TEXT), `--> ok`,
//! `--> warning: TEXT`, `--> stdout: TEXT`, `--> exists: PATH`, `--> absent: PATH`,
//! `--> contains: FILE TEXT`, `--> lacks: FILE TEXT`. Every case also asserts that nothing panicked:
//! no internal error, no abort, no C++ stack trace.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// Line of the `===` header in the corpus file.
    pub line: usize,
    pub directives: Vec<(String, String)>,
    pub script: String,
    pub expect: Vec<(String, String)>,
}

impl Case {
    pub fn has(&self, directive: &str) -> bool {
        self.directives.iter().any(|(d, _)| d == directive)
    }

    pub fn env(&self) -> Vec<(String, String)> {
        self.directives
            .iter()
            .filter(|(d, _)| d == "env")
            .filter_map(|(_, a)| a.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect()
    }
}

pub fn corpus_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/bad-inputs.txt")
}

pub fn load() -> Vec<Case> {
    let text = std::fs::read_to_string(corpus_path()).expect("the corpus file");
    parse(&text)
}

pub fn parse(text: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = vec![];
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if let Some(name) = line.strip_prefix("=== ") {
            cases.push(Case {
                name: name.trim().to_string(),
                line: i + 1,
                directives: vec![],
                script: String::new(),
                expect: vec![],
            });
            continue;
        }
        let Some(case) = cases.last_mut() else { continue };
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(d) = line.strip_prefix('@') {
            let (name, arg) = d.split_once(' ').unwrap_or((d, ""));
            case.directives.push((name.to_string(), arg.trim().to_string()));
        } else if let Some(e) = line.strip_prefix("--> ") {
            let (kind, arg) = e.split_once(':').map(|(k, a)| (k, a.trim())).unwrap_or((e, ""));
            case.expect.push((kind.trim().to_string(), arg.to_string()));
        } else {
            case.script.push_str(line);
            case.script.push('\n');
        }
    }
    cases
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn set_json(file: &Path, key: &str, value: serde_json::Value) {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut slot = &mut v;
    let parts: Vec<&str> = key.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        slot = slot.get_mut(*p).unwrap_or_else(|| panic!("{key}: no {p} in {}", file.display()));
    }
    slot[parts[parts.len() - 1]] = value;
    std::fs::write(file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Prepares the files of `case` in `dir`, in the order of its directives; `run_setup` runs the script of
/// each run of consecutive `@setup` lines.
pub fn prepare(
    case: &Case,
    dir: &Path,
    toy: &Path,
    run_setup: &mut dyn FnMut(&str) -> Result<(), String>,
) -> Result<(), String> {
    let mut pending: Vec<&str> = vec![];
    for (d, arg) in &case.directives {
        if d == "setup" {
            pending.push(arg);
            continue;
        }
        if !pending.is_empty() {
            run_setup(&pending.join("\n"))?;
            pending.clear();
        }
        let mut words = arg.splitn(2, ' ');
        let first = words.next().unwrap_or("");
        let rest = words.next().unwrap_or("");
        let path = dir.join(first);
        match d.as_str() {
            "toy" => copy_dir(toy, &path),
            "json" => {
                let (k, v) = rest.split_once('=').expect("@json FILE KEY=VALUE");
                let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
                set_json(&path, k, value);
            }
            "write" => {
                if let Some(p) = path.parent() {
                    std::fs::create_dir_all(p).unwrap();
                }
                std::fs::write(&path, unescape(rest)).unwrap();
            }
            "bytes" => {
                let n: usize = rest.trim().parse().expect("@bytes FILE N");
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
                let bytes: Vec<u8> = (0..n)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                std::fs::write(&path, bytes).unwrap();
            }
            "truncate" => {
                let len = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len();
                let keep = match rest.trim().strip_suffix('%') {
                    Some(p) => len * p.parse::<u64>().unwrap() / 100,
                    None => rest.trim().parse().unwrap(),
                };
                std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(keep).unwrap();
            }
            "mkdir" => std::fs::create_dir_all(&path).unwrap(),
            "env" | "repl" => {}
            other => panic!("case {:?}: unknown directive @{other}", case.name),
        }
    }
    if !pending.is_empty() {
        run_setup(&pending.join("\n"))?;
    }
    Ok(())
}

/// `\n` and `\xNN` escapes (binary files) in a directive's text.
fn unescape(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == b'n' {
            out.push(b'\n');
            i += 2;
        } else if b[i] == b'\\' && i + 3 < b.len() && b[i + 1] == b'x' {
            out.push(u8::from_str_radix(&text[i + 2..i + 4], 16).expect("\\xNN"));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Whether an output shows a crash that a boundary caught or missed.
pub fn crash_signs(text: &str) -> Option<&'static str> {
    ["panicked at", "internal error", "Exception raised from", "frame #0", "RUST_BACKTRACE=1 shows"]
        .into_iter()
        .find(|s| text.contains(s))
}
