//! Helpers for the numerical tests of `vidtune-kernels`: naive reference implementations and tolerance
//! checks. The tests themselves are in `tests/`.

use tch::{Kind, Tensor};

/// Largest absolute difference between two tensors (as f64).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// Asserts `max |a − b| <= tol`, naming `what`.
pub fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    let d = max_abs_diff(a, b);
    assert!(d <= tol, "{what}: max abs error {d:e} > {tol:e}");
}
