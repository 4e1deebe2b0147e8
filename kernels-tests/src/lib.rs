//! Helpers for the numerical tests of `vidtune-kernels`: naive reference implementations and tolerance
//! checks. The tests themselves are in `tests/`.

use tch::{Kind, Tensor};

/// Largest absolute difference between two tensors (as f64).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

/// Asserts `max |a − b| <= tol`, naming `what`.
pub fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    let d = max_abs_diff(a, b);
    assert!(d <= tol, "{what}: max abs error {d:e} > {tol:e}");
}

/// The folder the reference script writes (`kernels-tests/fixtures/generated`), or `VIDTUNE_FIXTURES`.
/// Panics with the command that creates it when it is missing: parity tests must not pass vacuously.
pub fn fixtures_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("VIDTUNE_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("generated"));
    assert!(
        dir.join("STAMP").exists(),
        "reference fixtures missing at {}: run ./dev.sh test, or the virtualenv's python on \
         kernels-tests/reference/make_fixtures.py",
        dir.display()
    );
    dir
}

/// Reads a safetensors fixture file into a name → tensor map.
pub fn load_fixture(rel: &str) -> std::collections::HashMap<String, Tensor> {
    let path = fixtures_dir().join(rel);
    Tensor::read_safetensors(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// Asserts `max |a − b| <= tol`, with the relative size of the error in the message.
pub fn assert_close_rel(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    let d = max_abs_diff(a, b);
    let scale = b.to_kind(Kind::Double).abs().max().double_value(&[]);
    assert!(d <= tol, "{what}: max abs error {d:e} > {tol:e} (reference max |x| = {scale:.3})");
}
