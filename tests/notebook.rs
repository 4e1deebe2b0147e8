//! The quick-tour notebook executed headlessly by Jupyter (nbclient's `jupyter execute`) with the evcxr
//! Rust kernel that `./dev.sh test` sets up: every cell runs without an error, clips display as GIFs,
//! images as PNGs, score tables as HTML, and the script session keeps its state across cells and errors.

use std::path::{Path, PathBuf};
use std::time::Instant;

fn jupyter() -> PathBuf {
    let venv = std::env::var_os("VIDTUNE_VENV").unwrap_or_else(|| {
        panic!("VIDTUNE_VENV is not set: run ./dev.sh test, which installs evcxr_jupyter and the Jupyter client")
    });
    let bin = Path::new(&venv).join("bin/jupyter");
    assert!(bin.exists(), "{} is missing: run ./dev.sh test", bin.display());
    bin
}

/// Every output of every code cell, as (cell index, output JSON).
fn outputs(nb: &serde_json::Value) -> Vec<(usize, serde_json::Value)> {
    let mut out = vec![];
    for (i, cell) in nb["cells"].as_array().unwrap().iter().enumerate() {
        for o in cell["outputs"].as_array().into_iter().flatten() {
            out.push((i, o.clone()));
        }
    }
    out
}

/// A notebook string field: nbformat stores multi-line strings as arrays of lines.
fn join(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Array(a) => a.iter().filter_map(|s| s.as_str()).collect::<String>(),
        serde_json::Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

/// The text of an output: a stream's text, or a display's `text/plain`.
fn text(o: &serde_json::Value) -> String {
    if o["output_type"] == "stream" {
        join(&o["text"])
    } else {
        join(&o["data"]["text/plain"])
    }
}

/// evcxr's build folder for this test: kept in the shared cache so the dependencies are built once per
/// machine, not once per run, and seeded with the workspace's Cargo.lock so the kernel builds exactly the
/// dependency versions the rest of the suite tests. Locked: one test kernel at a time uses it.
fn evcxr_build_dir() -> (PathBuf, std::fs::File) {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME")
        .join("vidtune");
    let dir = cache.join("evcxr-test-build");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(cache.join(".evcxr-test.lock")).unwrap();
    // SAFETY: flock on a file descriptor we own.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) }, 0);
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    (dir, lock)
}

/// How long one cell may take once vidtune is built into the kernel's folder.
const CELL_TIMEOUT_S: u64 = 600;

/// Builds the notebook's dependencies into the kernel's build folder (`build_dir`), with no limit but
/// the test's own: a one-cell notebook with the notebook's `:dep` line (evcxr makes its path absolute,
/// so the build is the notebook's). After `./dev.sh test`'s warm-up, or a previous test, a no-op.
fn warm(notebook: &Path, build_dir: &Path) {
    let nb: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(notebook).unwrap()).unwrap();
    let first = nb["cells"].as_array().unwrap().iter().find(|c| c["cell_type"] == "code").unwrap();
    let dep = ":dep vidtune-notebook = { path = \"../../notebook\" }";
    assert!(join(&first["source"]).contains(dep), "the first code cell of {} is `{dep}`", notebook.display());
    let krate = std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("../notebook")).unwrap();
    let mut warm = nb.clone();
    let mut cell = first.clone();
    cell["source"] =
        format!(":dep vidtune-notebook = {{ path = {:?} }}\nuse vidtune_notebook::prelude::*;", krate).into();
    warm["cells"] = serde_json::json!([cell]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warm.ipynb");
    std::fs::write(&path, serde_json::to_string(&warm).unwrap()).unwrap();
    let start = Instant::now();
    let run = std::process::Command::new(jupyter())
        .env("EVCXR_TMPDIR", build_dir)
        .arg("execute")
        .arg(&path)
        .args(["--kernel_name=rust", "--timeout=7200", "--startup_timeout=300"])
        .output()
        .unwrap();
    eprintln!("vidtune built into the kernel in {:.0} s", start.elapsed().as_secs_f64());
    assert!(run.status.success(), "building vidtune into the kernel failed:\n{}", String::from_utf8_lossy(&run.stderr));
}

/// Executes `examples/notebooks/{name}` with the Rust kernel (and `envs`); every output of the run. The
/// kernel's build comes first, untimed; then every cell has [`CELL_TIMEOUT_S`].
fn execute(name: &str, envs: &[(&str, &Path)]) -> Vec<(usize, serde_json::Value)> {
    let notebook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/notebooks").join(name);
    let dir = tempfile::tempdir().unwrap();
    let executed = dir.path().join("executed.ipynb");
    let (build_dir, _lock) = evcxr_build_dir();
    warm(&notebook, &build_dir);
    let start = Instant::now();
    let mut cmd = std::process::Command::new(jupyter());
    cmd.env("EVCXR_TMPDIR", &build_dir)
        .arg("execute")
        .arg(&notebook)
        .arg(format!("--output={}", executed.display()))
        .args(["--kernel_name=rust", &format!("--timeout={CELL_TIMEOUT_S}"), "--startup_timeout=120"]);
    // The notebooks' own settings come from the test alone.
    for k in ["VIDTUNE_MODEL", "VIDTUNE_VIDEO", "VIDTUNE_CLIP", "VIDTUNE_OUT", "VIDTUNE_QUICK_TOUR_OUT"] {
        cmd.env_remove(k);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let run = cmd.output().unwrap();
    eprintln!("{name} executed in {:.0} s", start.elapsed().as_secs_f64());
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "jupyter execute {name} failed:\n{log}");
    let nb: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&executed).unwrap()).unwrap();
    let outs = outputs(&nb);
    let errors: Vec<_> = outs.iter().filter(|(_, o)| o["output_type"] == "error").collect();
    assert!(errors.is_empty(), "{name}: error cells: {errors:?}");
    outs
}

/// The kernel's build alone, for `./dev.sh test` to run before the suite (`--ignored`), so that its time
/// is a phase of its own and no notebook test starts cold.
#[test]
#[ignore = "run by ./dev.sh test before the suite"]
fn the_kernel_builds_vidtune() {
    let (build_dir, _lock) = evcxr_build_dir();
    warm(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/notebooks/quick-tour.ipynb"), &build_dir);
}

#[test]
fn quick_tour_notebook_runs_with_the_rust_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let outs = execute("quick-tour.ipynb", &[("VIDTUNE_QUICK_TOUR_OUT", &dir.path().join("out"))]);
    let with = |mime: &str| outs.iter().filter(|(_, o)| !join(&o["data"][mime]).is_empty()).count();
    assert!(with("image/gif") >= 3, "clips and masks display as GIFs ({} found)", with("image/gif"));
    assert!(with("image/png") >= 1, "images display as PNG");
    let tables: Vec<_> = outs.iter().filter(|(_, o)| join(&o["data"]["text/html"]).contains("<table")).collect();
    assert_eq!(tables.len(), 1, "one score table as HTML");
    let all: String = outs.iter().map(|(i, o)| format!("[{i}] {}\n", text(o))).collect();
    assert!(
        all.contains("mean IoU with the exact masks: 1.000") || all.contains("mean IoU with the exact masks: 0.9"),
        "{all}"
    );
    assert!(all.contains("IoU 1.0") || all.contains("IoU 0.9"), "{all}");
    // The failing script shows its error; the next cell still sees the session's variables.
    assert!(all.contains("no such file or directory: missing.mp4") && all.contains("keeps its variables"), "{all}");
    let last_eval = outs.iter().rev().find(|(_, o)| text(o).trim() == "8");
    assert!(last_eval.is_some(), "c.video.len() after the error: {all}");
    assert!(dir.path().join("out/masks").is_dir(), "the saved workflow ran and wrote its masks");
}

#[test]
fn tune_a_video_notebook_runs_on_the_toy_models() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tav");
    let outs = execute("tune-a-video.ipynb", &[("VIDTUNE_OUT", &out)]);
    let gifs = outs.iter().filter(|(_, o)| !join(&o["data"]["image/gif"]).is_empty()).count();
    assert!(gifs >= 3, "the clip, the edit and the mask-guided edit display as GIFs");
    assert!(outs.iter().any(|(_, o)| join(&o["data"]["text/html"]).contains("<table")), "the score table");
    let all: String = outs.iter().map(|(_, o)| text(o)).collect();
    assert!(all.contains("tuned 150 steps") && all.contains("Latents(8 frames"), "{all}");
    assert!(all.contains("a yellow circle moving right on a blue striped background → a red circle"), "{all}");
    assert!(all.contains("mask-guided: VideoModel(toy; sparse_causal + temporal + cross masked + mask mca"), "{all}");
    assert!(out.join("tuned.vidtune.safetensors").exists() && out.join("edit.gif").exists());
}
