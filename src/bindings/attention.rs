//! Bindings of the fused global-local attention: conversion only.

use super::errors::to_py;
use crate::attention::{self, Backend, Mode, NeedsGrad};
use pyo3::prelude::*;
use pyo3_tch::PyTensor;

type Forward = (PyTensor, PyTensor, Option<PyTensor>);
type Grads = (
    Option<PyTensor>,
    Option<PyTensor>,
    Option<PyTensor>,
    Option<PyTensor>,
    Option<PyTensor>,
);

/// Fused forward: returns (out, qkv, weights), qkv the (batch, seq, 3*dim) projection,
/// weights the global queries' probabilities (batch, heads, G, seq) when `need_weights`
/// (else None). `mode` is "global_local", "local" or "global".
#[pyfunction]
#[pyo3(name = "attention_forward", signature = (
    x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads, num_global, num_frames, mode, backend,
    need_weights=false
))]
#[allow(clippy::too_many_arguments)]
fn py_attention_forward(
    py: Python<'_>,
    x: PyTensor,
    in_proj_weight: PyTensor,
    in_proj_bias: Option<PyTensor>,
    out_proj_weight: PyTensor,
    out_proj_bias: Option<PyTensor>,
    num_heads: i64,
    num_global: i64,
    num_frames: i64,
    mode: &str,
    backend: &str,
    need_weights: bool,
) -> PyResult<Forward> {
    let mode = Mode::parse(mode).map_err(to_py)?;
    let backend = Backend::parse(backend).map_err(to_py)?;
    let forward = if need_weights {
        attention::attention_forward_with_weights
    } else {
        attention::attention_forward
    };
    let r = py
        .allow_threads(move || {
            forward(
                &x,
                &in_proj_weight,
                in_proj_bias.as_deref(),
                &out_proj_weight,
                out_proj_bias.as_deref(),
                num_heads,
                num_global,
                num_frames,
                mode,
                backend,
            )
        })
        .map_err(to_py)?;
    Ok((PyTensor(r.out), PyTensor(r.qkv), r.weights.map(PyTensor)))
}

/// Explicit backward: gradients of (x, in_proj_weight, in_proj_bias, out_proj_weight,
/// out_proj_bias), None where `needs` is False.
#[pyfunction]
#[pyo3(name = "attention_backward", signature = (
    grad_out, x, qkv, in_proj_weight, in_proj_bias, out_proj_weight, num_heads, num_global, num_frames, mode, needs,
    backend
))]
#[allow(clippy::too_many_arguments)]
fn py_attention_backward(
    py: Python<'_>,
    grad_out: PyTensor,
    x: Option<PyTensor>,
    qkv: Option<PyTensor>,
    in_proj_weight: PyTensor,
    in_proj_bias: Option<PyTensor>,
    out_proj_weight: PyTensor,
    num_heads: i64,
    num_global: i64,
    num_frames: i64,
    mode: &str,
    needs: (bool, bool, bool, bool, bool),
    backend: &str,
) -> PyResult<Grads> {
    let mode = Mode::parse(mode).map_err(to_py)?;
    let backend = Backend::parse(backend).map_err(to_py)?;
    let needs = NeedsGrad {
        x: needs.0,
        in_proj_weight: needs.1,
        in_proj_bias: needs.2,
        out_proj_weight: needs.3,
        out_proj_bias: needs.4,
    };
    let g = py
        .allow_threads(move || {
            attention::attention_backward(
                &grad_out,
                x.as_deref(),
                qkv.as_deref(),
                &in_proj_weight,
                in_proj_bias.as_deref(),
                &out_proj_weight,
                num_heads,
                num_global,
                num_frames,
                mode,
                needs,
                backend,
            )
        })
        .map_err(to_py)?;
    let w = |t: Option<tch::Tensor>| t.map(PyTensor);
    Ok((
        w(g.x),
        w(g.in_proj_weight),
        w(g.in_proj_bias),
        w(g.out_proj_weight),
        w(g.out_proj_bias),
    ))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_attention_forward, m)?)?;
    m.add_function(wrap_pyfunction!(py_attention_backward, m)?)?;
    Ok(())
}
