//! A count of the floating-point work the models do (multiply-adds × 2), kept per thread while
//! [`counting`] runs: linear layers, convolutions and attention's two matrix products — the work that
//! dominates a UNet. Benchmarks divide it by the time taken; outside `counting` nothing is added.
//!
//! [`profiling`] also times, on the CPU where operations are synchronous, what each kind of [`Work`]
//! took: the forward products as they run, a training step's backward and optimiser update as wholes
//! (a time inside another timed region — the recompute of a checkpointed backward — counts for the outer
//! one). [`matmul_peak`] measures what the machine's matrix products can do, the figure utilisation is
//! a share of.

use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
    static TIMING: Cell<bool> = const { Cell::new(false) };
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    static NANOS: Cell<[u64; WORK_KINDS]> = const { Cell::new([0; WORK_KINDS]) };
}

/// What a stage's time went to, as [`profiling`] times it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Linear layers' forward products.
    Linear,
    /// Convolutions' forward products.
    Conv,
    /// Attention's products and softmax (forward).
    Attention,
    /// A training step's backward pass (autograd, with a checkpointed forward's recompute).
    Backward,
    /// Unscaling, clipping and the AdamW update of a training step.
    Optimizer,
}

const WORK_KINDS: usize = 5;

impl Work {
    pub const ALL: [Work; WORK_KINDS] = [Work::Linear, Work::Conv, Work::Attention, Work::Backward, Work::Optimizer];

    pub fn name(self) -> &'static str {
        match self {
            Work::Linear => "linear",
            Work::Conv => "conv",
            Work::Attention => "attention",
            Work::Backward => "backward",
            Work::Optimizer => "optimizer",
        }
    }
}

/// Adds `n` FLOP when counting.
#[inline]
pub fn add(n: i64) {
    if ACTIVE.with(Cell::get) {
        COUNT.with(|c| c.set(c.get().saturating_add(n.max(0) as u64)));
    }
}

/// Runs `f`, adding its wall time to `work`'s when profiling and not already inside a timed region.
#[inline]
pub fn timed<T>(work: Work, f: impl FnOnce() -> T) -> T {
    if !TIMING.with(Cell::get) || INSIDE.with(Cell::get) {
        return f();
    }
    INSIDE.with(|i| i.set(true));
    struct Leave(Instant, Work);
    impl Drop for Leave {
        fn drop(&mut self) {
            let ns = self.0.elapsed().as_nanos() as u64;
            NANOS.with(|n| {
                let mut all = n.get();
                all[self.1 as usize] = all[self.1 as usize].saturating_add(ns);
                n.set(all);
            });
            INSIDE.with(|i| i.set(false));
        }
    }
    let _leave = Leave(Instant::now(), work);
    f()
}

/// Runs `f` and returns its result with the FLOP the models did meanwhile (forward passes; a backward
/// pass is not seen: callers add it).
pub fn counting<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let (out, profile) = profiling(false, f);
    (out, profile.flop)
}

/// The work of a [`profiling`] run: FLOP counted, and seconds per kind of work when timed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub flop: u64,
    pub seconds: Option<[f64; WORK_KINDS]>,
}

impl Profile {
    /// Seconds spent on `work` (when timed).
    pub fn seconds_of(&self, work: Work) -> Option<f64> {
        self.seconds.map(|s| s[work as usize])
    }
}

/// Runs `f` counting its FLOP and, when `time` (the CPU, where operations finish before they return),
/// timing each kind of [`Work`].
pub fn profiling<T>(time: bool, f: impl FnOnce() -> T) -> (T, Profile) {
    let was = (ACTIVE.with(|a| a.replace(true)), TIMING.with(|t| t.replace(time)));
    let (count0, nanos0) = (COUNT.with(Cell::get), NANOS.with(Cell::get));
    struct Restore((bool, bool));
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTIVE.with(|a| a.set(self.0 .0));
            TIMING.with(|t| t.set(self.0 .1));
        }
    }
    let restore = Restore(was);
    let out = f();
    drop(restore);
    let nanos = NANOS.with(Cell::get);
    let seconds = time.then(|| std::array::from_fn(|i| (nanos[i] - nanos0[i]) as f64 / 1e9));
    (out, Profile { flop: COUNT.with(Cell::get) - count0, seconds })
}

/// The matrix-product throughput of `device` in `kind` (GFLOP/s): `n × n` by `n × n` products repeated
/// for at least `time` after one warm-up (on CUDA, synchronised before the clock is read).
pub fn matmul_peak(device: tch::Device, kind: tch::Kind, n: i64, time: Duration) -> f64 {
    let a = tch::Tensor::randn([n, n], (kind, device));
    let b = tch::Tensor::randn([n, n], (kind, device));
    let sync = || {
        if let tch::Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    tch::no_grad(|| {
        let _ = a.matmul(&b);
        sync();
        let start = Instant::now();
        let mut runs = 0u32;
        while start.elapsed() < time || runs < 2 {
            let _ = a.matmul(&b);
            runs += 1;
            if device.is_cuda() && runs % 8 == 0 {
                sync();
            }
        }
        sync();
        2.0 * (n as f64).powi(3) * runs as f64 / start.elapsed().as_secs_f64() / 1e9
    })
}

/// FLOP of `x.linear(w)` for `x` of `numel` elements and `w` `[out, in]`.
pub fn linear(numel: i64, in_dim: i64, out_dim: i64) -> i64 {
    2 * (numel / in_dim.max(1)) * in_dim * out_dim
}

/// FLOP of a convolution producing `out_numel` elements from `in_channels / groups` channels of a
/// `k × k` kernel.
pub fn conv(out_numel: i64, in_per_group: i64, k: i64) -> i64 {
    2 * out_numel * in_per_group * k * k
}

/// FLOP of attention's `QKᵀ` and `AV` for `[.., Lq, d]` queries over `[.., Lk, d]` keys, `batch` heads ×
/// clips in all.
pub fn attention(batch: i64, lq: i64, lk: i64, d: i64) -> i64 {
    2 * 2 * batch * lq * lk * d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_counted_work_adds_up() {
        add(5);
        let ((), n) = counting(|| {
            add(linear(6 * 4, 4, 3));
            add(attention(2, 3, 5, 7));
        });
        assert_eq!(n, (2 * 6 * 4 * 3 + 4 * 2 * 3 * 5 * 7) as u64);
        let ((), m) = counting(|| ());
        assert_eq!(m, 0);
    }

    #[test]
    fn profiling_times_the_outermost_region_of_each_kind() {
        let pause = |ms| std::thread::sleep(Duration::from_millis(ms));
        let ((), p) = profiling(true, || {
            timed(Work::Linear, || pause(20));
            // A forward recomputed inside the backward counts as backward time.
            timed(Work::Backward, || timed(Work::Conv, || pause(30)));
            add(linear(4, 2, 3));
        });
        let s = p.seconds.unwrap();
        assert!(s[Work::Linear as usize] >= 0.02 && s[Work::Linear as usize] < 2.0, "{s:?}");
        assert!(s[Work::Backward as usize] >= 0.03 && s[Work::Backward as usize] < 2.0, "{s:?}");
        assert_eq!((s[Work::Conv as usize], s[Work::Attention as usize], s[Work::Optimizer as usize]), (0.0, 0.0, 0.0));
        assert_eq!(p.flop, 2 * 4 * 3);
        // Not profiling (or counting alone): nothing is timed, and a later timed region starts afresh.
        let ((), q) = profiling(false, || timed(Work::Linear, || pause(5)));
        assert_eq!(q.seconds, None);
        let ((), r) = profiling(true, || timed(Work::Attention, || pause(5)));
        assert_eq!(r.seconds_of(Work::Linear), Some(0.0));
        assert!(r.seconds_of(Work::Attention).unwrap() >= 0.005);
    }

    #[test]
    fn the_matmul_peak_is_a_positive_rate() {
        let g = matmul_peak(tch::Device::Cpu, tch::Kind::Float, 64, Duration::from_millis(5));
        assert!(g.is_finite() && g > 0.0, "{g}");
    }
}
