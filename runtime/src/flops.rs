//! A count of the floating-point work the models do (multiply-adds × 2), kept per thread while
//! [`counting`] runs: linear layers, convolutions and attention's two matrix products — the work that
//! dominates a UNet. Benchmarks divide it by the time taken; outside `counting` nothing is added.

use std::cell::Cell;

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

/// Adds `n` FLOP when counting.
#[inline]
pub fn add(n: i64) {
    if ACTIVE.with(Cell::get) {
        COUNT.with(|c| c.set(c.get().saturating_add(n.max(0) as u64)));
    }
}

/// Runs `f` and returns its result with the FLOP the models did meanwhile (forward passes; a backward
/// pass is not seen: callers add it).
pub fn counting<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let (was, before) = (ACTIVE.with(|a| a.replace(true)), COUNT.with(Cell::get));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTIVE.with(|a| a.set(self.0));
        }
    }
    let restore = Restore(was);
    let out = f();
    drop(restore);
    (out, COUNT.with(Cell::get) - before)
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
}
