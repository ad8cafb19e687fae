//! Bindings of the fused global-local attention: conversion only.
//!
//! The weights and the configuration travel as tuples (the private module's callers are
//! `dgl_rs.ops.attention`), which keeps each binding to extract, one core call, convert.

use super::errors::to_py;
use crate::attention::{self, AttentionConfig, Backend, Mode, NeedsGrad, Weights};
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
/// `(in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias)`.
type WeightArgs = (PyTensor, Option<PyTensor>, PyTensor, Option<PyTensor>);
/// `(num_heads, num_global, num_frames, mode, backend)`.
type ConfigArgs = (i64, i64, i64, String, String);

fn config(c: ConfigArgs) -> PyResult<AttentionConfig> {
    Ok(AttentionConfig {
        num_heads: c.0,
        num_global: c.1,
        num_frames: c.2,
        mode: Mode::parse(&c.3).map_err(to_py)?,
        backend: Backend::parse(&c.4).map_err(to_py)?,
    })
}

fn weights(w: &WeightArgs) -> Weights<'_> {
    Weights {
        in_proj_weight: &w.0,
        in_proj_bias: w.1.as_deref(),
        out_proj_weight: &w.2,
        out_proj_bias: w.3.as_deref(),
    }
}

/// Fused forward: returns (out, qkv, weights), qkv the (batch, seq, 3*dim) projection,
/// weights the global queries' probabilities (batch, heads, G, seq) when `need_weights`
/// (else None). `config` is (num_heads, num_global, num_frames, mode, backend), mode
/// "global_local", "local" or "global".
#[pyfunction]
#[pyo3(name = "attention_forward", signature = (x, weights, config, need_weights=false))]
fn py_attention_forward(
    py: Python<'_>,
    x: PyTensor,
    weights: WeightArgs,
    config: ConfigArgs,
    need_weights: bool,
) -> PyResult<Forward> {
    let cfg = self::config(config)?;
    let forward = if need_weights {
        attention::attention_forward_with_weights
    } else {
        attention::attention_forward
    };
    let r = py
        .allow_threads(move || forward(&x, self::weights(&weights), cfg))
        .map_err(to_py)?;
    Ok((PyTensor(r.out), PyTensor(r.qkv), r.weights.map(PyTensor)))
}

/// Explicit backward: gradients of (x, in_proj_weight, in_proj_bias, out_proj_weight,
/// out_proj_bias), None where `needs` is False. `weights` as for the forward (the output
/// projection's bias is not read).
#[pyfunction]
#[pyo3(name = "attention_backward", signature = (grad_out, x, qkv, weights, config, needs))]
fn py_attention_backward(
    py: Python<'_>,
    grad_out: PyTensor,
    x: Option<PyTensor>,
    qkv: Option<PyTensor>,
    weights: WeightArgs,
    config: ConfigArgs,
    needs: (bool, bool, bool, bool, bool),
) -> PyResult<Grads> {
    let cfg = self::config(config)?;
    let needs = NeedsGrad {
        x: needs.0,
        in_proj_weight: needs.1,
        in_proj_bias: needs.2,
        out_proj_weight: needs.3,
        out_proj_bias: needs.4,
    };
    let g = py
        .allow_threads(move || {
            let w = self::weights(&weights);
            attention::attention_backward(&grad_out, x.as_deref(), qkv.as_deref(), w, cfg, needs)
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
