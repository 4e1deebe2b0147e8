//! Which kernels the CPU's math library runs. libtorch does its float32 matrix products (linear layers,
//! the CPU flash-attention's blocks, `matmul`) in Intel MKL, which picks its code by the CPU's vendor
//! before its features: on an AMD CPU with AVX-512 (Zen 4 and later) it runs its generic AVX2 kernels, at
//! half the throughput the CPU has (measured on a 2-core AMD EPYC, Zen 5: 233 GFLOP/s against 459 in a
//! 2048³ product).
//!
//! MKL asks the question through one exported function, `mkl_serv_intel_cpu_true`, which the dynamic
//! linker resolves in the executable first. vidtune's binaries define it here (see
//! `build-support/link_torch.rs`, which exports it): on Intel CPUs it answers as MKL would; on an AMD CPU
//! with AVX-512 F/BW/DQ/VL it answers "yes", so MKL takes its AVX-512 kernels, which run on any CPU with
//! those features; everywhere else it answers "no" as before. MKL still checks each feature itself.
//! `VIDTUNE_MKL=default` keeps MKL's own answer. Results differ from the AVX2 kernels' by the order of
//! float32 sums (about 1e-6 relative), as they do between any two machines.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Set once MKL has asked (it asks on its first call).
static ASKED: AtomicBool = AtomicBool::new(false);

/// The CPU's vendor string (`GenuineIntel`, `AuthenticAMD`, …), where the architecture has one.
pub fn vendor() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: CPUID leaf 0 exists on every x86-64 CPU (the call is safe from Rust 1.87 on).
        #[allow(unused_unsafe)]
        let r = unsafe { std::arch::x86_64::__cpuid(0) };
        let bytes: Vec<u8> = [r.ebx, r.edx, r.ecx].iter().flat_map(|w| w.to_le_bytes()).collect();
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Whether the CPU runs AVX-512 F, BW, DQ and VL (what MKL's AVX-512 kernels need).
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// What the MKL question is answered with: how the CPU is described, and whether MKL is told it may use
/// its Intel kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MklDispatch {
    /// An Intel CPU: MKL's own answer.
    Intel,
    /// An AMD CPU with AVX-512: MKL is told to take its AVX-512 kernels.
    AmdAvx512,
    /// `VIDTUNE_MKL=default` on an AMD CPU with AVX-512: MKL's generic kernels.
    AmdKept,
    /// Any other CPU: MKL's own answer ("no").
    Other,
}

/// The answer, decided once per process.
pub fn mkl_dispatch() -> MklDispatch {
    static DECIDED: OnceLock<MklDispatch> = OnceLock::new();
    *DECIDED.get_or_init(|| match vendor().as_deref() {
        Some("GenuineIntel") => MklDispatch::Intel,
        Some("AuthenticAMD") if has_avx512() => match std::env::var("VIDTUNE_MKL").as_deref() {
            Ok("default") => MklDispatch::AmdKept,
            _ => MklDispatch::AmdAvx512,
        },
        _ => MklDispatch::Other,
    })
}

/// One line for `bench` and `doctor`: which MKL kernels the float32 products run. MKL asks its question
/// on its first product, so a process that has run none runs a 2 × 2 one first.
pub fn mkl_summary() -> String {
    if !ASKED.load(Ordering::Relaxed) {
        let one = tch::Tensor::ones([2, 2], (tch::Kind::Float, tch::Device::Cpu));
        let _ = one.mm(&one);
    }
    let asked = ASKED.load(Ordering::Relaxed);
    match (mkl_dispatch(), asked) {
        (MklDispatch::Intel, _) => "MKL on an Intel CPU".into(),
        (MklDispatch::AmdAvx512, true) => "MKL's AVX-512 kernels on this AMD CPU".into(),
        (MklDispatch::AmdAvx512, false) => {
            "MKL's generic kernels (this process does not answer MKL's vendor check; see runtime::cpu)".into()
        }
        (MklDispatch::AmdKept, _) => "MKL's generic AVX2 kernels (VIDTUNE_MKL=default)".into(),
        (MklDispatch::Other, _) => "MKL's generic kernels".into(),
    }
}

/// MKL's vendor check, answered as [`mkl_dispatch`] decides. Exported by vidtune's executables (the
/// link argument is in `build-support/link_torch.rs`); a program that does not export it keeps MKL's
/// own answer.
#[no_mangle]
pub extern "C" fn mkl_serv_intel_cpu_true() -> std::os::raw::c_int {
    ASKED.store(true, Ordering::Relaxed);
    matches!(mkl_dispatch(), MklDispatch::Intel | MklDispatch::AmdAvx512) as std::os::raw::c_int
}

/// The environment variable that sets libtorch's CPU threads (`vidtune eval --jobs` gives each worker
/// its share of the cores this way).
pub const THREADS_VAR: &str = "VIDTUNE_THREADS";

/// Applies `VIDTUNE_THREADS` when set: libtorch's intra-op threads, and one inter-op thread. Returns the
/// count applied; an error names the variable when its value is not a positive integer.
pub fn apply_thread_setting() -> crate::error::Result<Option<usize>> {
    let Ok(value) = std::env::var(THREADS_VAR) else {
        return Ok(None);
    };
    let n: usize = value.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        crate::error::Error::Invalid(format!("{THREADS_VAR}={value:?}: expected a positive number of threads"))
    })?;
    tch::set_num_threads(n as i32);
    Ok(Some(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    /// The test binary exports the answer as vidtune's do: MKL asks on its first product, takes the kernels
    /// the answer allows, and its float32 products still equal a float64 reference.
    #[test]
    fn mkl_asks_and_its_products_stay_exact() {
        tch::manual_seed(7);
        let a = Tensor::randn([192, 320], (Kind::Float, tch::Device::Cpu));
        let b = Tensor::randn([320, 96], (Kind::Float, tch::Device::Cpu));
        let got = a.mm(&b).to_kind(Kind::Double);
        let want = a.to_kind(Kind::Double).mm(&b.to_kind(Kind::Double));
        let err = f64::try_from((got - &want).abs().max()).unwrap();
        assert!(err < 1e-4, "float32 product off by {err}");
        let summary = mkl_summary();
        match mkl_dispatch() {
            MklDispatch::AmdAvx512 => {
                assert!(ASKED.load(Ordering::Relaxed), "MKL never asked: the symbol is not exported");
                assert_eq!(summary, "MKL's AVX-512 kernels on this AMD CPU");
            }
            MklDispatch::Intel => assert_eq!(summary, "MKL on an Intel CPU"),
            _ => assert!(summary.contains("generic"), "{summary}"),
        }
    }
}
