//! Errors of the kernels: wrong shapes and invalid parameters, named precisely.

use thiserror::Error;

/// An invalid argument given to a kernel.
#[derive(Debug, Error)]
pub enum KernelError {
    /// A tensor does not have the shape the kernel needs.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape { what: String, expected: String, got: Vec<i64> },
    /// A parameter is out of its allowed range.
    #[error("{0}")]
    Invalid(String),
    /// libtorch refused an operation.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// Checks that `t` has `dims` dimensions, naming it `what` in the error.
pub fn expect_dims(t: &tch::Tensor, dims: usize, what: &str, expected: &str) -> Result<()> {
    if t.dim() != dims {
        return Err(KernelError::Shape { what: what.to_string(), expected: expected.to_string(), got: t.size() });
    }
    Ok(())
}
