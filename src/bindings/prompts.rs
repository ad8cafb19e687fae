//! Bindings of the prompt generators: conversion only. Autograd records the ops.

use super::errors::to_py;
use crate::prompts;
use pyo3::prelude::*;
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

/// DGL-Transformer: (text (layers, n_text, D_t), frames (layers, num_frames, n_f, D_v)).
/// `shape` is (num_layers, num_heads, num_text).
#[pyfunction]
#[pyo3(name = "transformer_prompts", signature = (table, block, mlp, shape, num_frames))]
fn py_transformer_prompts(
    py: Python<'_>,
    table: PyTensor,
    block: Vec<PyTensor>,
    mlp: Vec<PyTensor>,
    shape: (i64, i64, i64),
    num_frames: i64,
) -> PyResult<(PyTensor, PyTensor)> {
    let block: Vec<tch::Tensor> = block.into_iter().map(|t| t.0).collect();
    let mlp: Vec<tch::Tensor> = mlp.into_iter().map(|t| t.0).collect();
    let (layers, heads, text) = shape;
    let (text, frames) = py
        .allow_threads(move || prompts::transformer_prompts(&table, &block, &mlp, layers, heads, text, num_frames))
        .map_err(to_py)?;
    Ok((PyTensor(text), PyTensor(frames)))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_linear_prompts, m)?)?;
    m.add_function(wrap_pyfunction!(py_transformer_prompts, m)?)?;
    Ok(())
}
