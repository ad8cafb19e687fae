//! pyo3 bindings: conversion only. Arguments are extracted with the GIL held,
//! the core runs inside `py.allow_threads`, errors are mapped in `errors.rs`.

use pyo3::prelude::*;

mod attention;
mod errors;
mod metrics;
mod prompts;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("__torch_version__", torch_version())?;
    errors::register(m)?;
    attention::register(m)?;
    prompts::register(m)?;
    metrics::register(m)?;
    Ok(())
}

/// The torch version this extension was built against (read by build.rs).
fn torch_version() -> &'static str {
    option_env!("DGL_RS_TORCH_VERSION").unwrap_or("unknown")
}
