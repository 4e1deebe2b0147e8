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

/// Where the thread count came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThreadSource {
    /// `--threads N`.
    Flag,
    /// `VIDTUNE_THREADS=N`.
    Env,
    /// `auto` (flag or variable): the cores this process may use less those other programs kept busy
    /// over a fifth of a second at start.
    Auto { busy: f64 },
    /// The cores this process may use.
    Cores,
}

/// libtorch's intra-op threads as applied, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threads {
    pub count: usize,
    pub source: ThreadSource,
}

impl std::fmt::Display for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cores = available_cores();
        let why = match self.source {
            ThreadSource::Flag => "--threads".to_string(),
            ThreadSource::Env => THREADS_VAR.to_string(),
            ThreadSource::Auto { busy } => format!("auto: {cores} cores, {busy:.1} busy with other programs"),
            ThreadSource::Cores => format!("the {cores} cores this process may use: CPU affinity and quota"),
        };
        write!(f, "{} intra-op ({why})", self.count)
    }
}

static APPLIED: OnceLock<Threads> = OnceLock::new();

/// The cores this process may use: its CPU affinity and its cgroup's CPU quota (libtorch's own default
/// counts the affinity only, so a container limited to 2 of 64 cores ran 64 threads on 2).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// A thread setting as given: a positive number or `auto` (`what` names where, for the error).
fn parse_setting(value: &str, what: &str) -> crate::error::Result<Option<usize>> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    v.parse().ok().filter(|n| *n > 0).map(Some).ok_or_else(|| {
        crate::error::Error::Invalid(format!("{what} {value:?}: expected a positive number of threads, or auto"))
    })
}

/// The CPUs of a list as `/proc/self/status` writes `Cpus_allowed_list` (`0-3,8,10-11`).
fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = vec![];
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
            cpus.extend(a..=b);
        }
    }
    cpus
}

/// Per CPU of `cpus`, its (busy, total) clock ticks in a `/proc/stat` text (busy: all but idle and
/// iowait).
fn cpu_ticks(stat: &str, cpus: &[usize]) -> Vec<(u64, u64)> {
    stat.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let cpu: usize = f.next()?.strip_prefix("cpu")?.parse().ok()?;
            if !cpus.contains(&cpu) {
                return None;
            }
            let t: Vec<u64> = f.take(8).filter_map(|x| x.parse().ok()).collect();
            let total: u64 = t.iter().sum();
            let idle = t.get(3).copied().unwrap_or(0) + t.get(4).copied().unwrap_or(0);
            Some((total - idle.min(total), total))
        })
        .collect()
}

/// How many of `cpus` were busy between two `/proc/stat` readings: the sum of each CPU's busy share.
fn busy_between(before: &str, after: &str, cpus: &[usize]) -> f64 {
    cpu_ticks(before, cpus)
        .iter()
        .zip(cpu_ticks(after, cpus))
        .map(|((b0, t0), (b1, t1))| {
            let dt = t1.saturating_sub(*t0);
            if dt == 0 {
                0.0
            } else {
                b1.saturating_sub(*b0) as f64 / dt as f64
            }
        })
        .sum()
}

/// The cores other programs keep busy among those this process may run on, over `window` (Linux; 0
/// elsewhere).
pub fn busy_cores(window: std::time::Duration) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cpus =
        status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(parse_cpu_list).unwrap_or_default();
    let Ok(before) = std::fs::read_to_string("/proc/stat") else { return 0.0 };
    std::thread::sleep(window);
    let after = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    busy_between(&before, &after, &cpus)
}

/// Sets libtorch's intra-op threads once per process: `flag` (`--threads N|auto`), else
/// `VIDTUNE_THREADS`, else [`available_cores`]. `auto` leaves out the cores other programs keep busy
/// now: on a loaded 2-core machine, threads that wait for a core spin against the other program (a toy
/// tune ran 3.3× slower beside one busy process with 2 threads, 1.2× with 1). Results can differ in
/// the last bits between thread counts. An error names the setting whose value is neither.
pub fn apply_threads(flag: Option<&str>) -> crate::error::Result<Threads> {
    let setting = match (flag, std::env::var(THREADS_VAR)) {
        (Some(f), _) => Some((parse_setting(f, "--threads")?, ThreadSource::Flag)),
        (None, Ok(v)) => Some((parse_setting(&v, THREADS_VAR)?, ThreadSource::Env)),
        (None, Err(_)) => None,
    };
    let cores = available_cores();
    let chosen = match setting {
        Some((Some(n), source)) => Threads { count: n, source },
        Some((None, _)) => {
            let busy = busy_cores(std::time::Duration::from_millis(200));
            let free = (cores as f64 - busy).round().max(1.0) as usize;
            Threads { count: free.min(cores), source: ThreadSource::Auto { busy } }
        }
        None => Threads { count: cores, source: ThreadSource::Cores },
    };
    tch::set_num_threads(chosen.count as i32);
    let _ = APPLIED.set(chosen);
    Ok(chosen)
}

/// The threads [`apply_threads`] set, if it ran in this process.
pub fn threads() -> Option<Threads> {
    APPLIED.get().copied()
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

    #[test]
    fn busy_cores_from_two_readings_of_proc_stat() {
        assert_eq!(parse_cpu_list("0-2,5,7-8\n"), vec![0, 1, 2, 5, 7, 8]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
        // cpu0 busy for 90 of 100 ticks, cpu1 for 10 of 100 (iowait counts as idle), cpu2 not ours.
        let before = "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 100 0 0 100 0 0 0 0 0 0\ncpu1 10 0 0 180 10 0 0 0 0 0\ncpu2 0 0 0 0 0 0 0 0 0 0\n";
        let after = "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 180 0 10 110 0 0 0 0 0 0\ncpu1 15 0 5 250 30 0 0 0 0 0\ncpu2 500 0 0 0 0 0 0 0 0 0\n";
        let busy = busy_between(before, after, &[0, 1]);
        assert!((busy - 1.0).abs() < 1e-9, "{busy}");
        assert_eq!(busy_between(before, before, &[0, 1]), 0.0);
        assert!(parse_setting("auto", "--threads").unwrap().is_none());
        assert_eq!(parse_setting(" 3 ", "--threads").unwrap(), Some(3));
        let err = parse_setting("0", "VIDTUNE_THREADS").unwrap_err().to_string();
        assert!(err.contains("VIDTUNE_THREADS \"0\": expected a positive number of threads, or auto"), "{err}");
    }
}
