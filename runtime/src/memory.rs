//! Refusing requests that cannot fit before allocating them. A failed allocation of Rust memory aborts
//! the process (no panic boundary can catch it), and a large libtorch allocation on Linux may succeed
//! and then get the process killed when it is touched. So every entry point whose size the user chooses
//! (frames, sizes, steps) first checks a lower bound of what it will hold against the memory available,
//! and refuses with both figures: "sample: 1000000000 frames at 512x512 would need 4.1 TB; this machine
//! has 21.3 GB available".

use crate::error::{Error, Result};
use tch::Device;

/// Bytes in a human unit: `1.0 TB`, `512.0 MB`.
pub fn human_bytes(bytes: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes.max(0.0);
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Memory the host can still give this process: `MemAvailable` plus free swap (Linux), else `None`.
pub fn host_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some(field("MemAvailable:")? + field("SwapFree:").unwrap_or(0))
}

/// Errors unless `bytes` (a lower bound of what `what` will allocate on `device`) fits in the memory
/// available. On CUDA devices only absurd requests (over 1 PB) are refused here; libtorch reports the
/// rest as an error of its own.
pub fn ensure_fits(what: &str, bytes: f64, device: Device) -> Result<()> {
    let limit = match device {
        Device::Cpu => host_available().map(|b| b as f64),
        _ => Some(1e15),
    };
    match limit {
        Some(available) if bytes > available => Err(Error::Invalid(format!(
            "{what} would need at least {}; this machine has {} available",
            human_bytes(bytes),
            human_bytes(available)
        ))),
        // Without /proc/meminfo, still refuse what no machine has.
        None if bytes > 1e15 => Err(Error::Invalid(format!("{what} would need at least {}", human_bytes(bytes)))),
        _ => Ok(()),
    }
}

/// Refuses `what` when its `bytes` would not fit in the free space of the file system that holds `dir`
/// (created when missing), with both figures.
pub fn ensure_disk_fits(what: &str, bytes: f64, dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let Some(free) = disk_available(dir) else { return Ok(()) };
    if bytes > free as f64 {
        return Err(Error::Invalid(format!(
            "{what} would need at least {} on disk; {} has {} free",
            human_bytes(bytes),
            dir.display(),
            human_bytes(free as f64)
        )));
    }
    Ok(())
}

/// Bytes free to an unprivileged user on the file system that holds `dir`.
pub fn disk_available(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Bytes of `elements` values of `bytes_per` bytes each, in f64 (products of user numbers can overflow
/// integers).
pub fn bytes_of(elements: &[i64], bytes_per: f64) -> f64 {
    elements.iter().map(|&e| e.max(0) as f64).product::<f64>() * bytes_per
}

/// Keeps freed tensor memory in the process instead of handing it back to the kernel after every
/// operation. With glibc's defaults, buffers of a few MB are unmapped or trimmed when freed and the next
/// operation faults the pages in again, each zeroed by the kernel: on SD1.4's shapes that was a sixth of
/// all CPU time. This raises the mmap threshold to its maximum (32 MiB), trims only above 2 GiB of free
/// heap and pads each heap growth by 256 MiB (tuning 1.4× faster on 2 cores; peak memory unchanged).
/// Called once, before the first model loads; a `MALLOC_*` variable in the environment, or
/// `VIDTUNE_MALLOC=default`, leaves glibc's settings alone.
pub fn tune_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let user_set = std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("MALLOC_"));
        if user_set || std::env::var("VIDTUNE_MALLOC").is_ok_and(|v| v == "default") {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes glibc's allocation parameters; it is called before threads
        // allocate tensors and takes plain integers.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            libc::mallopt(libc::M_TOP_PAD, TOP_PAD);
        }
    });
}

/// Hands the free pages of the process's heap back to the system (glibc's `malloc_trim`). With
/// [`tune_allocator`]'s settings the heap keeps what a stage freed; called after a stage whose working
/// memory the next ones do not reuse (tuning's optimiser state), it lowers their peak: at SD1.4's
/// 8 × 128², sampling after a tune peaked at 5.7 GB instead of 6.4.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages of glibc's arenas to the kernel; it takes an integer
    // and touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Buffers above this many bytes are mapped fresh and given back when freed.
pub const MMAP_THRESHOLD: i32 = 32 << 20;
const TRIM_THRESHOLD: i32 = i32::MAX;
const TOP_PAD: i32 = 256 << 20;

/// [`tune_allocator`]'s settings as the environment variables that give another program the same
/// (glibc reads them at start): for comparisons with the same process settings.
pub fn allocator_env() -> [(&'static str, String); 3] {
    [
        ("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD.to_string()),
        ("MALLOC_TRIM_THRESHOLD_", TRIM_THRESHOLD.to_string()),
        ("MALLOC_TOP_PAD_", TOP_PAD.to_string()),
    ]
}

/// The variable libtorch's CPU allocator reads, once, at its first allocation: `1` advises the kernel to
/// back every buffer of 2 MB or more with transparent huge pages (`madvise(MADV_HUGEPAGE)`).
pub const HUGE_PAGES_VAR: &str = "THP_MEM_ALLOC_ENABLE";

static HUGE_PAGES_SET_HERE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Backs libtorch's large buffers with transparent huge pages. Buffers above the allocator's 32 MiB
/// threshold ([`MMAP_THRESHOLD`], the most glibc allows) are mapped fresh at every allocation, and each
/// 4 kB page of them faults in again: at 8 × 512² every activation of SD1.4's first level is such a
/// buffer, and sampling spent 15 % of its CPU time in the kernel (25 million faults for one step).
/// With 2 MB pages, SD1.4 at 8 × 512² (one step each, `vidtune bench --config sd14 --size 512`) tuned
/// in 114.7 s against 126.6, inverted in 25.4 against 26.5 and sampled in 110.1 against 126.4 (kernel
/// time 15.3 s against 36.3), and its peak RSS went from 10325 to 9900 MB; at 8 × 128² the times were
/// the same and tuning's peak 100–175 MB higher. Sets [`HUGE_PAGES_VAR`] unless it is set already or
/// `VIDTUNE_MALLOC=default`; where the kernel's THP mode is `never` the advice does nothing. Call it
/// first thing in `main`, while the process has one thread and before libtorch allocates; later it
/// changes nothing.
pub fn enable_huge_pages() {
    HUGE_PAGES_SET_HERE.get_or_init(|| {
        let leave =
            std::env::var_os(HUGE_PAGES_VAR).is_some() || std::env::var("VIDTUNE_MALLOC").is_ok_and(|v| v == "default");
        if !leave {
            std::env::set_var(HUGE_PAGES_VAR, "1");
        }
        !leave
    });
}

/// Whether [`enable_huge_pages`] set [`HUGE_PAGES_VAR`] (rather than the user, or nobody): programs
/// vidtune starts to compare with "as they ship" get it removed.
pub fn huge_pages_set_here() -> bool {
    HUGE_PAGES_SET_HERE.get().copied().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_requests_are_refused_with_the_figure() {
        let err = ensure_fits("sample: 1000000000 frames", bytes_of(&[1_000_000_000, 4, 64, 64], 4.0), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("would need at least 65.5 TB"), "{err}");
        assert!(ensure_fits("a small tensor", 1e3, Device::Cpu).is_ok());
        assert_eq!(human_bytes(1.5e9), "1.5 GB");
        assert_eq!(human_bytes(12.0), "12 B");
    }
}
