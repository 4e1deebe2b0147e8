//! Peak GPU memory of a bench stage, as the driver reports it (`nvidia-smi`, polled).

/// Polls the process's GPU memory (driver's figure) while a stage runs; the peak when stopped.
pub(super) struct GpuPoll {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Option<f64>>,
}

/// One `nvidia-smi` reading in MB: this process's memory when the driver lists it by our pid, else the
/// whole GPU's use (in a container or VM the driver may list processes by pids of another namespace).
#[derive(Debug, Clone, Copy, PartialEq)]
enum GpuReading {
    Process(f64),
    Device(f64),
}

fn nvidia_smi(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("nvidia-smi").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Reads this process's GPU memory from `nvidia-smi`'s process list (`pid, MB` lines), falling back to
/// the device's used memory (`used` lines of `--query-gpu=memory.used`, summed over GPUs).
fn gpu_reading(processes: &str, device_used: Option<&str>) -> Option<GpuReading> {
    let me = std::process::id().to_string();
    let mine: Vec<f64> = processes
        .lines()
        .filter_map(|l| l.split_once(','))
        .filter(|(pid, _)| pid.trim() == me)
        .filter_map(|(_, mb)| mb.trim().parse::<f64>().ok())
        .collect();
    if !mine.is_empty() {
        return Some(GpuReading::Process(mine.iter().sum()));
    }
    let used: Vec<f64> = device_used?.lines().filter_map(|l| l.trim().parse::<f64>().ok()).collect();
    (!used.is_empty()).then(|| GpuReading::Device(used.iter().sum()))
}

fn read_gpu() -> Option<GpuReading> {
    let processes = nvidia_smi(&["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])?;
    let mine = gpu_reading(&processes, None);
    if mine.is_some() {
        return mine;
    }
    gpu_reading(&processes, nvidia_smi(&["--query-gpu=memory.used", "--format=csv,noheader,nounits"]).as_deref())
}

/// The device's use before this process put anything on it, subtracted from device-wide readings.
static GPU_BASELINE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

impl GpuPoll {
    pub(super) fn start(device: tch::Device) -> Option<GpuPoll> {
        if !device.is_cuda() {
            return None;
        }
        let first = read_gpu()?;
        if let GpuReading::Device(mb) = first {
            GPU_BASELINE.get_or_init(|| mb);
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak: Option<f64> = None;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let mb = match read_gpu() {
                    Some(GpuReading::Process(mb)) => Some(mb),
                    Some(GpuReading::Device(mb)) => Some((mb - GPU_BASELINE.get().copied().unwrap_or(0.0)).max(0.0)),
                    None => None,
                };
                if let Some(mb) = mb {
                    peak = Some(peak.map_or(mb, |p: f64| p.max(mb)));
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            peak
        });
        Some(GpuPoll { stop, handle })
    }

    pub(super) fn finish(self) -> Option<f64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_memory_is_this_processs_or_else_the_devices() {
        let me = std::process::id();
        let list = format!("{},  300\n{me}, 1200\n", me + 1);
        assert_eq!(gpu_reading(&list, Some("5000")), Some(GpuReading::Process(1200.0)));
        // The driver lists pids of another namespace: the device's use, summed over GPUs.
        let other = format!("{}, 1200\n", me + 1);
        assert_eq!(gpu_reading(&other, Some("5000\n 700\n")), Some(GpuReading::Device(5700.0)));
        assert_eq!(gpu_reading("", Some("")), None);
        assert_eq!(gpu_reading(&other, None), None);
    }
}
