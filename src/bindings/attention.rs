//! Bindings of the fused global-local attention: conversion only.
//!
//! Both functions take more parameters than a Rust signature should, so each binds
//! its call to a struct (see `args.rs`); the Python signatures are unchanged.

use super::args::Signature;
use super::errors::to_py;
use crate::attention::{self, AttentionConfig, Backend, Mode, NeedsGrad, Weights};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3_tch::PyTensor;

type Forward = (PyTensor, PyTensor, Option<PyTensor>);
type Grads = (
    Option<PyTensor>,
    Option<PyTensor>,
    Option<PyTensor>,
    Option<PyTensor>,
    Option<PyTensor>,
);

/// The config shared by the forward and the backward.
fn config(num_heads: i64, num_global: i64, num_frames: i64, mode: &str, backend: &str) -> PyResult<AttentionConfig> {
    Ok(AttentionConfig {
        num_heads,
        num_global,
        num_frames,
        mode: Mode::parse(mode).map_err(to_py)?,
        backend: Backend::parse(backend).map_err(to_py)?,
    })
}

const FORWARD: Signature = Signature {
    name: "attention_forward",
    params: &[
        "x",
        "in_proj_weight",
        "in_proj_bias",
        "out_proj_weight",
        "out_proj_bias",
        "num_heads",
        "num_global",
        "num_frames",
        "mode",
        "backend",
        "need_weights",
    ],
    required: 10,
};

#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct ForwardArgs {
    x: PyTensor,
    in_proj_weight: PyTensor,
    in_proj_bias: Option<PyTensor>,
    out_proj_weight: PyTensor,
    out_proj_bias: Option<PyTensor>,
    num_heads: i64,
    num_global: i64,
    num_frames: i64,
    mode: String,
    backend: String,
    #[pyo3(default)]
    need_weights: bool,
}

/// Fused forward: returns (out, qkv, weights), qkv the (batch, seq, 3*dim) projection,
/// weights the global queries' probabilities (batch, heads, G, seq) when `need_weights`
/// (else None). `mode` is "global_local", "local" or "global".
#[pyfunction]
#[pyo3(
    name = "attention_forward",
    signature = (*args, **kwargs),
    text_signature = "(x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads, num_global, \
                      num_frames, mode, backend, need_weights=False)"
)]
fn py_attention_forward(
    py: Python<'_>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Forward> {
    let a: ForwardArgs = FORWARD.bind(args, kwargs)?;
    let cfg = config(a.num_heads, a.num_global, a.num_frames, &a.mode, &a.backend)?;
    let forward = if a.need_weights {
        attention::attention_forward_with_weights
    } else {
        attention::attention_forward
    };
    let r = py
        .allow_threads(move || {
            let w = Weights {
                in_proj_weight: &a.in_proj_weight,
                in_proj_bias: a.in_proj_bias.as_deref(),
                out_proj_weight: &a.out_proj_weight,
                out_proj_bias: a.out_proj_bias.as_deref(),
            };
            forward(&a.x, w, cfg)
        })
        .map_err(to_py)?;
    Ok((PyTensor(r.out), PyTensor(r.qkv), r.weights.map(PyTensor)))
}

const BACKWARD: Signature = Signature {
    name: "attention_backward",
    params: &[
        "grad_out",
        "x",
        "qkv",
        "in_proj_weight",
        "in_proj_bias",
        "out_proj_weight",
        "num_heads",
        "num_global",
        "num_frames",
        "mode",
        "needs",
        "backend",
    ],
    required: 12,
};

#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct BackwardArgs {
    grad_out: PyTensor,
    x: Option<PyTensor>,
    qkv: Option<PyTensor>,
    in_proj_weight: PyTensor,
    in_proj_bias: Option<PyTensor>,
    out_proj_weight: PyTensor,
    num_heads: i64,
    num_global: i64,
    num_frames: i64,
    mode: String,
    needs: (bool, bool, bool, bool, bool),
    backend: String,
}

/// Explicit backward: gradients of (x, in_proj_weight, in_proj_bias, out_proj_weight,
/// out_proj_bias), None where `needs` is False.
#[pyfunction]
#[pyo3(
    name = "attention_backward",
    signature = (*args, **kwargs),
    text_signature = "(grad_out, x, qkv, in_proj_weight, in_proj_bias, out_proj_weight, num_heads, num_global, \
                      num_frames, mode, needs, backend)"
)]
fn py_attention_backward(
    py: Python<'_>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Grads> {
    let a: BackwardArgs = BACKWARD.bind(args, kwargs)?;
    let cfg = config(a.num_heads, a.num_global, a.num_frames, &a.mode, &a.backend)?;
    let needs = NeedsGrad {
        x: a.needs.0,
        in_proj_weight: a.needs.1,
        in_proj_bias: a.needs.2,
        out_proj_weight: a.needs.3,
        out_proj_bias: a.needs.4,
    };
    let g = py
        .allow_threads(move || {
            let w = Weights {
                in_proj_weight: &a.in_proj_weight,
                in_proj_bias: a.in_proj_bias.as_deref(),
                out_proj_weight: &a.out_proj_weight,
                out_proj_bias: None,
            };
            attention::attention_backward(&a.grad_out, a.x.as_deref(), a.qkv.as_deref(), w, cfg, needs)
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
