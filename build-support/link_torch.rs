// Shared by the build scripts of every crate whose binaries or tests link libtorch (included with
// `include!`). torch-sys tells its direct dependents where libtorch lives (`DEP_TCH_LIBTORCH_LIB`); we
// bake that directory into the rpath so `vidtune` and the test binaries start without LD_LIBRARY_PATH,
// and keep `libtorch_cuda` linked (rustc passes `--as-needed`, which would drop it and hide CUDA).

#[allow(dead_code)]
fn link_torch() -> Option<std::path::PathBuf> {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let dir = std::path::PathBuf::from(std::env::var_os("DEP_TCH_LIBTORCH_LIB")?);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    if dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    Some(dir)
}

// For the binaries and tests of crates that link vidtune-runtime: keep and export
// `mkl_serv_intel_cpu_true` (defined in runtime/src/cpu.rs), so that libtorch's MKL finds the
// executable's answer to its vendor check first (MKL's AVX-512 kernels on AMD CPUs that have them).
#[allow(dead_code)]
fn export_mkl_answer() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!(
            "cargo:rustc-link-arg=-Wl,--undefined=mkl_serv_intel_cpu_true,--export-dynamic-symbol=mkl_serv_intel_cpu_true"
        );
    }
}
