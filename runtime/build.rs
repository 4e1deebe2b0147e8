include!("../build-support/link_torch.rs");

use std::path::{Path, PathBuf};

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else if !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            out.push(p);
        }
    }
}

/// Compiles the committed toy models (runtime/models/toy) into the crate as a list of (path, bytes).
fn embed_toy_models() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("models").join("toy");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = vec![];
    if root.join("model_index.json").exists() {
        files_under(&root, &mut files);
    }
    files.sort();
    let mut code = String::from("&[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f.strip_prefix(&root).expect("under root").to_string_lossy().replace('\\', "/");
        code += &format!("    ({rel:?}, include_bytes!({:?}) as &[u8]),\n", f.display().to_string());
    }
    code += "]\n";
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("toy_files.rs");
    std::fs::write(out, code).expect("write toy_files.rs");
}

fn main() {
    // Remember where libtorch (and the onnxruntime wheel beside it) were found, for `vidtune doctor`.
    if let Some(dir) = link_torch() {
        println!("cargo:rustc-env=VIDTUNE_LIBTORCH_LIB={}", dir.display());
    }
    export_mkl_answer();
    embed_toy_models();
}
