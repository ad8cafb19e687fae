//! The one error type of the core. Every message names the argument and gives
//! what was expected and what was received.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DglError {
    #[error("`{arg}` must have shape {expected}, got {got}")]
    Shape { arg: String, expected: String, got: String },
    #[error("`{arg}` must have dtype {expected}, got {got}")]
    Dtype { arg: String, expected: String, got: String },
    #[error("`{arg}` must be on device {expected}, got {got}")]
    Device { arg: String, expected: String, got: String },
    /// A value that is well-typed but not acceptable (NaN, out of range, ...).
    #[error("`{arg}`: {msg}")]
    Value { arg: String, msg: String },
    #[error("unsupported: {}", .0.join("; "))]
    Unsupported(Vec<String>),
    #[error("libtorch error: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T> = std::result::Result<T, DglError>;

impl DglError {
    pub fn shape(arg: &str, expected: impl Into<String>, got: impl std::fmt::Debug) -> Self {
        DglError::Shape { arg: arg.into(), expected: expected.into(), got: format!("{got:?}") }
    }
    pub fn dtype(arg: &str, expected: impl Into<String>, got: impl std::fmt::Debug) -> Self {
        DglError::Dtype { arg: arg.into(), expected: expected.into(), got: format!("{got:?}") }
    }
    pub fn device(arg: &str, expected: impl std::fmt::Debug, got: impl std::fmt::Debug) -> Self {
        DglError::Device { arg: arg.into(), expected: format!("{expected:?}"), got: format!("{got:?}") }
    }
    pub fn value(arg: &str, msg: impl Into<String>) -> Self {
        DglError::Value { arg: arg.into(), msg: msg.into() }
    }
}
