//! dgl-rs core: the fused global-local attention, the DGL prompt generators and
//! the retrieval metrics, on libtorch tensors (tch) and host arrays (ndarray).
//!
//! The core has no pyo3 dependency and is tested with
//! `cargo test --no-default-features`; `bindings` (feature `python`) is the thin
//! pyo3 layer that the Python package `dgl_rs` drives.

pub mod attention;
pub mod error;
pub mod metrics;
pub mod prompts;

#[cfg(feature = "python")]
mod bindings;

pub use error::{DglError, Result};
