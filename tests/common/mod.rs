//! Shared helpers of the end-to-end tests: a `vidtune` command with an isolated environment.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// The `vidtune` binary built by cargo for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_vidtune");

/// `vidtune` run in `dir`, with previews written as files there and history/data under it.
pub fn vidtune(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env("VIDTUNE_PREVIEW", "file")
        .env("VIDTUNE_PREVIEW_DIR", dir.join("previews"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("NO_COLOR", "1");
    cmd
}

/// Runs `vidtune run` on `script` written to `dir/name`.
pub fn run_script(dir: &Path, name: &str, script: &str, args: &[&str]) -> Output {
    std::fs::write(dir.join(name), script).unwrap();
    vidtune(dir).arg("run").arg(name).args(args).output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub mod corpus;
