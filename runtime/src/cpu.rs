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
    /// `auto`, given or by default: the cores this process may use less those other programs kept busy
    /// before its first model call.
    Auto { busy: f64, given: bool },
    /// `all` (flag or variable): the cores this process may use.
    Cores,
    /// The count a run record says its run used (`vidtune run --from`).
    Record,
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
            ThreadSource::Auto { busy, given } => {
                let default = if given { "" } else { ", the default" };
                format!("auto{default}: {cores} cores, {busy:.1} busy with other programs")
            }
            ThreadSource::Cores => format!("all: the {cores} cores this process may use: CPU affinity and quota"),
            ThreadSource::Record => "the run record's".to_string(),
        };
        write!(f, "{} intra-op ({why})", self.count)
    }
}

/// A thread setting as written.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Setting {
    Count(usize),
    Auto,
    All,
}

/// One look at the load: the CPUs' ticks (`/proc/stat`) and this process's own, and when.
struct Reading {
    at: std::time::Instant,
    stat: String,
    own: u64,
}

impl Reading {
    fn now() -> Reading {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let own = own_ticks(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default());
        Reading { at: std::time::Instant::now(), stat, own }
    }

    /// The cores of `cpus` other programs kept busy from this reading to `later`.
    fn busy_until(&self, later: &Reading, cpus: &[usize]) -> f64 {
        busy_between(&self.stat, &later.stat, cpus, later.own.saturating_sub(self.own))
    }
}

/// An `auto` choice waiting for the first model call: the load from `since` on decides it.
struct Pending {
    since: Reading,
    /// `auto` was given (`--threads auto`, `VIDTUNE_THREADS=auto`) rather than the default.
    given: bool,
}

/// What the process has decided about its threads.
struct ThreadState {
    applied: Option<Threads>,
    pending: Option<Pending>,
}

static THREAD_STATE: std::sync::Mutex<ThreadState> =
    std::sync::Mutex::new(ThreadState { applied: None, pending: None });
/// Set once nothing is left to decide: the fast path of [`settle_threads`].
static SETTLED: AtomicBool = AtomicBool::new(false);

/// The shortest look at the other programs' load, and the oldest one still used.
const AUTO_WINDOW: std::time::Duration = std::time::Duration::from_millis(150);
const AUTO_STALE: std::time::Duration = std::time::Duration::from_secs(2);

/// The cores this process may use: its CPU affinity and its cgroup's CPU quota (libtorch's own default
/// counts the affinity only, so a container limited to 2 of 64 cores ran 64 threads on 2).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// A thread setting as given: a positive number, `auto` or `all` (`what` names where, for the error).
fn parse_setting(value: &str, what: &str) -> crate::error::Result<Setting> {
    let v = value.trim();
    if v.eq_ignore_ascii_case("auto") {
        return Ok(Setting::Auto);
    }
    if v.eq_ignore_ascii_case("all") {
        return Ok(Setting::All);
    }
    v.parse().ok().filter(|n| *n > 0).map(Setting::Count).ok_or_else(|| {
        crate::error::Error::Invalid(format!("{what} {value:?}: expected a positive number of threads, auto or all"))
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

/// The CPUs this process may run on (Linux; empty elsewhere).
fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(parse_cpu_list).unwrap_or_default()
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

/// This process's CPU time in clock ticks (user and system, all its threads), from a `/proc/self/stat`
/// text: fields 14 and 15, counted after the command name's closing parenthesis.
fn own_ticks(stat: &str) -> u64 {
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// How many of `cpus` other programs kept busy between two `/proc/stat` readings: the busy ticks of
/// those CPUs, less `own` (this process's ticks in between), over one CPU's ticks.
fn busy_between(before: &str, after: &str, cpus: &[usize], own: u64) -> f64 {
    let ticks: Vec<(u64, u64)> = cpu_ticks(before, cpus)
        .iter()
        .zip(cpu_ticks(after, cpus))
        .map(|((b0, t0), (b1, t1))| (b1.saturating_sub(*b0), t1.saturating_sub(*t0)))
        .collect();
    let span = ticks.iter().map(|t| t.1).max().unwrap_or(0);
    if span == 0 {
        return 0.0;
    }
    let busy: u64 = ticks.iter().map(|t| t.0.min(t.1)).sum();
    busy.saturating_sub(own) as f64 / span as f64
}

fn apply(state: &mut ThreadState, chosen: Threads) {
    tch::set_num_threads(chosen.count as i32);
    state.applied = Some(chosen);
    state.pending = None;
    SETTLED.store(true, Ordering::Release);
}

fn lock_threads() -> std::sync::MutexGuard<'static, ThreadState> {
    THREAD_STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Chooses libtorch's intra-op threads for this process: `flag` (`--threads N|auto|all`), else
/// `VIDTUNE_THREADS`, else `auto`. A number and `all` (the cores this process may use, [`available_cores`])
/// apply now. `auto` is decided at the first model call ([`settle_threads`]): the cores other programs
/// kept busy since this call, this process's own work left out, are left to them. On a loaded 2-core
/// machine, threads that wait for a core spin against the other program: a toy tune ran 3.3× slower beside
/// one busy process with 2 threads, 1.2× with 1. Results can differ in the last bits between thread
/// counts; run records keep the count, and `run --from` uses it. An error names the setting whose value
/// is none of these.
pub fn apply_threads(flag: Option<&str>) -> crate::error::Result<()> {
    // The setting and where it was given (none: the default, auto).
    let (setting, given) = match (flag, std::env::var(THREADS_VAR)) {
        (Some(f), _) => (parse_setting(f, "--threads")?, Some(ThreadSource::Flag)),
        (None, Ok(v)) => (parse_setting(&v, THREADS_VAR)?, Some(ThreadSource::Env)),
        (None, Err(_)) => (Setting::Auto, None),
    };
    let mut state = lock_threads();
    match (setting, given) {
        (Setting::Count(n), Some(source)) => apply(&mut state, Threads { count: n, source }),
        (Setting::All, _) => apply(&mut state, Threads { count: available_cores(), source: ThreadSource::Cores }),
        _ => {
            state.applied = None;
            state.pending = Some(Pending { since: Reading::now(), given: given.is_some() });
            SETTLED.store(false, Ordering::Release);
        }
    }
    Ok(())
}

/// Decides a pending `auto` (see [`apply_threads`]); called at the start of every model's forward pass,
/// where it costs one atomic load once decided. The look at the load spans the time since the setting
/// was made, at least 150 ms (it waits for the rest); one older than 2 s is replaced by a fresh 150 ms.
/// Call it on the thread that runs the models: libtorch's thread count belongs to the calling thread.
pub fn settle_threads() {
    if SETTLED.load(Ordering::Acquire) {
        return;
    }
    let mut state = lock_threads();
    if let Some(Pending { mut since, given }) = state.pending.take() {
        if since.at.elapsed() > AUTO_STALE {
            since = Reading::now();
        }
        if let Some(rest) = AUTO_WINDOW.checked_sub(since.at.elapsed()) {
            std::thread::sleep(rest);
        }
        let busy = since.busy_until(&Reading::now(), &allowed_cpus());
        let cores = available_cores();
        let free = (cores as f64 - busy).round().clamp(1.0, cores as f64) as usize;
        apply(&mut state, Threads { count: free, source: ThreadSource::Auto { busy, given } });
    }
    SETTLED.store(true, Ordering::Release);
}

/// Sets the threads to `count` now, in place of any pending choice (`run --from` applies its record's
/// count unless `--threads` or `VIDTUNE_THREADS` says otherwise).
pub fn set_threads(count: usize, source: ThreadSource) {
    apply(&mut lock_threads(), Threads { count: count.max(1), source });
}

/// Whether the threads were given (`--threads` or `VIDTUNE_THREADS`) rather than left to the default.
pub fn threads_given() -> bool {
    let state = lock_threads();
    match (&state.pending, state.applied) {
        (Some(p), _) => p.given,
        (None, Some(t)) => !matches!(t.source, ThreadSource::Auto { given: false, .. }),
        (None, None) => false,
    }
}

/// The threads applied in this process, if they have been ([`apply_threads`], then [`settle_threads`]
/// for `auto`).
pub fn threads() -> Option<Threads> {
    lock_threads().applied
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
        let busy = busy_between(before, after, &[0, 1], 0);
        assert!((busy - 1.0).abs() < 1e-9, "{busy}");
        // Of those 100 busy ticks, 40 were this process's own: 0.6 of a core was the others'.
        let busy = busy_between(before, after, &[0, 1], 40);
        assert!((busy - 0.6).abs() < 1e-9, "{busy}");
        assert_eq!(busy_between(before, after, &[0, 1], 500), 0.0);
        assert_eq!(busy_between(before, before, &[0, 1], 0), 0.0);
        // utime and stime are fields 14 and 15; a command name may hold spaces and parentheses.
        let stat = "4242 (vid tune (x)) R 1 4242 4242 0 -1 4194304 100 0 0 0 37 5 0 0 20 0 3 0 100 0 0";
        assert_eq!(own_ticks(stat), 42);
        assert_eq!(own_ticks("garbage"), 0);
        assert_eq!(parse_setting("auto", "--threads").unwrap(), Setting::Auto);
        assert_eq!(parse_setting("ALL", "--threads").unwrap(), Setting::All);
        assert_eq!(parse_setting(" 3 ", "--threads").unwrap(), Setting::Count(3));
        let err = parse_setting("0", "VIDTUNE_THREADS").unwrap_err().to_string();
        assert!(err.contains("VIDTUNE_THREADS \"0\": expected a positive number of threads, auto or all"), "{err}");
    }

    /// Live readings: this process's own ticks are counted, and taking them out of the CPUs' busy ticks
    /// removes about the core it kept busy.
    #[test]
    fn own_work_is_not_counted_as_another_programs() {
        let before = Reading::now();
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = Reading::now();
        let own = after.own.saturating_sub(before.own);
        assert!(own >= 15, "0.3 s of spinning gave {own} ticks of this process");
        let cpus = allowed_cpus();
        let all = busy_between(&before.stat, &after.stat, &cpus, 0);
        let others = before.busy_until(&after, &cpus);
        assert!(all - others >= 0.5, "all {all}, others {others}");
    }
}
