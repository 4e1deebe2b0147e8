include!("../build-support/link_torch.rs");

fn main() {
    // Remember where libtorch (and the onnxruntime wheel beside it) were found, for `vidtune doctor`.
    if let Some(dir) = link_torch() {
        println!("cargo:rustc-env=VIDTUNE_LIBTORCH_LIB={}", dir.display());
    }
}
