//! Bindings of the prompt generators: conversion only. Autograd records the ops.
//! `transformer_prompts` binds its call to a struct (see `args.rs`).

use super::args::Signature;
use super::errors::to_py;
use crate::prompts;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3_tch::PyTensor;

/// DGL-Linear: (text (layers, 2 n_f, D_t), frames (layers, num_frames, n_f, D_v)).
#[pyfunction]
#[pyo3(name = "linear_prompts", signature = (frame_prompts, pre_weight, pre_bias, post_weight, post_bias, num_frames))]
fn py_linear_prompts(
    py: Python<'_>,
    frame_prompts: PyTensor,
    pre_weight: PyTensor,
    pre_bias: PyTensor,
    post_weight: PyTensor,
    post_bias: PyTensor,
    num_frames: i64,
) -> PyResult<(PyTensor, PyTensor)> {
    let (text, frames) = py
        .allow_threads(move || {
            prompts::linear_prompts(&frame_prompts, &pre_weight, &pre_bias, &post_weight, &post_bias, num_frames)
        })
        .map_err(to_py)?;
    Ok((PyTensor(text), PyTensor(frames)))
}

const TRANSFORMER: Signature = Signature {
    name: "transformer_prompts",
    params: &["table", "block", "mlp", "num_layers", "num_heads", "num_text", "num_frames"],
    required: 7,
};

#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct TransformerArgs {
    table: PyTensor,
    block: Vec<PyTensor>,
    mlp: Vec<PyTensor>,
    num_layers: i64,
    num_heads: i64,
    num_text: i64,
    num_frames: i64,
}

/// DGL-Transformer: (text (layers, n_text, D_t), frames (layers, num_frames, n_f, D_v)).
#[pyfunction]
#[pyo3(
    name = "transformer_prompts",
    signature = (*args, **kwargs),
    text_signature = "(table, block, mlp, num_layers, num_heads, num_text, num_frames)"
)]
fn py_transformer_prompts(
    py: Python<'_>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<(PyTensor, PyTensor)> {
    let a: TransformerArgs = TRANSFORMER.bind(args, kwargs)?;
    let block: Vec<tch::Tensor> = a.block.into_iter().map(|t| t.0).collect();
    let mlp: Vec<tch::Tensor> = a.mlp.into_iter().map(|t| t.0).collect();
    let (table, layers, heads, text, frames) = (a.table, a.num_layers, a.num_heads, a.num_text, a.num_frames);
    let (text, frames) = py
        .allow_threads(move || prompts::transformer_prompts(&table, &block, &mlp, layers, heads, text, frames))
        .map_err(to_py)?;
    Ok((PyTensor(text), PyTensor(frames)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_linear_prompts, m)?)?;
    m.add_function(wrap_pyfunction!(py_transformer_prompts, m)?)?;
    Ok(())
}
