//! Retrieval metrics: conversion only. numpy arrays are borrowed (no copy) and
//! tensors moved into the closure; the core runs with the GIL released.

use super::errors::to_py;
use crate::metrics::{self, RetrievalMetrics};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use pyo3_tch::PyTensor;

/// A float32 or float64 2-D numpy array.
#[derive(FromPyObject)]
enum PySim<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

type Map<'py> = Option<PyReadonlyArray1<'py, i64>>;
type Ranks<'py> = Bound<'py, PyArray1<i64>>;

/// Runs a rank function on either dtype with the GIL released.
macro_rules! on_sim {
    ($py:expr, $sim:expr, |$v:ident| $body:expr) => {
        match $sim {
            PySim::F32(a) => {
                let $v = a.as_array();
                $py.allow_threads(move || $body)
            }
            PySim::F64(a) => {
                let $v = a.as_array();
                $py.allow_threads(move || $body)
            }
        }
        .map_err(to_py)
    };
}

#[pyfunction]
#[pyo3(name = "ranks_t2v", signature = (sim, caption_to_video))]
fn py_ranks_t2v<'py>(
    py: Python<'py>,
    sim: PySim<'py>,
    caption_to_video: Map<'py>,
) -> PyResult<Ranks<'py>> {
    let map = caption_to_video.as_ref().map(|m| m.as_array());
    Ok(PyArray1::from_vec(
        py,
        on_sim!(py, sim, |s| metrics::ranks_t2v(s, map))?,
    ))
}

#[pyfunction]
#[pyo3(name = "ranks_v2t", signature = (sim, caption_to_video))]
fn py_ranks_v2t<'py>(
    py: Python<'py>,
    sim: PySim<'py>,
    caption_to_video: Map<'py>,
) -> PyResult<Ranks<'py>> {
    let map = caption_to_video.as_ref().map(|m| m.as_array());
    Ok(PyArray1::from_vec(
        py,
        on_sim!(py, sim, |s| metrics::ranks_v2t(s, map))?,
    ))
}

#[pyfunction]
#[pyo3(name = "ranks_t2v_tensor", signature = (sim, caption_to_video, chunk))]
fn py_ranks_t2v_tensor<'py>(
    py: Python<'py>,
    sim: PyTensor,
    caption_to_video: Map<'py>,
    chunk: i64,
) -> PyResult<Ranks<'py>> {
    let (sim, map) = (sim.0, caption_to_video.as_ref().map(|m| m.as_array()));
    let ranks = py
        .allow_threads(move || metrics::ranks_t2v_tensor(&sim, map, chunk))
        .map_err(to_py)?;
    Ok(PyArray1::from_vec(py, ranks))
}

#[pyfunction]
#[pyo3(name = "ranks_v2t_tensor", signature = (sim, caption_to_video, chunk))]
fn py_ranks_v2t_tensor<'py>(
    py: Python<'py>,
    sim: PyTensor,
    caption_to_video: Map<'py>,
    chunk: i64,
) -> PyResult<Ranks<'py>> {
    let (sim, map) = (sim.0, caption_to_video.as_ref().map(|m| m.as_array()));
    let ranks = py
        .allow_threads(move || metrics::ranks_v2t_tensor(&sim, map, chunk))
        .map_err(to_py)?;
    Ok(PyArray1::from_vec(py, ranks))
}

#[pyfunction]
#[pyo3(name = "ranks_chunked", signature = (text_emb, video_emb, caption_to_video, chunk))]
fn py_ranks_chunked<'py>(
    py: Python<'py>,
    text_emb: PyTensor,
    video_emb: PyTensor,
    caption_to_video: Map<'py>,
    chunk: i64,
) -> PyResult<(Ranks<'py>, Ranks<'py>)> {
    let (text, video) = (text_emb.0, video_emb.0);
    let map = caption_to_video.as_ref().map(|m| m.as_array());
    let (t2v, v2t) = py
        .allow_threads(move || metrics::ranks_chunked(&text, &video, map, chunk))
        .map_err(to_py)?;
    Ok((PyArray1::from_vec(py, t2v), PyArray1::from_vec(py, v2t)))
}

#[pyfunction]
#[pyo3(name = "similarity_chunked", signature = (text_emb, video_emb, out, chunk))]
fn py_similarity_chunked(
    py: Python<'_>,
    text_emb: PyTensor,
    video_emb: PyTensor,
    out: PyTensor,
    chunk: i64,
) -> PyResult<()> {
    let (text, video, out) = (text_emb.0, video_emb.0, out.0);
    py.allow_threads(move || metrics::similarity_chunked(&text, &video, &out, chunk))
        .map_err(to_py)
}

/// (R@1, R@5, R@10, R@50, MdR, MnR) of 1-based ranks.
#[pyfunction]
#[pyo3(name = "summarize_ranks", signature = (ranks))]
fn py_summarize_ranks(
    py: Python<'_>,
    ranks: PyReadonlyArray1<'_, i64>,
) -> PyResult<(f64, f64, f64, f64, f64, f64)> {
    let ranks = ranks.as_array();
    let m: RetrievalMetrics = py
        .allow_threads(move || metrics::summarize_ranks(&ranks.to_vec()))
        .map_err(to_py)?;
    Ok((m.r1, m.r5, m.r10, m.r50, m.median_rank, m.mean_rank))
}

#[pyfunction]
#[pyo3(name = "dual_softmax", signature = (sim, temperature, axis))]
fn py_dual_softmax<'py>(
    py: Python<'py>,
    sim: PySim<'py>,
    temperature: f64,
    axis: usize,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match sim {
        PySim::F32(a) => {
            let s = a.as_array();
            let out = py
                .allow_threads(move || metrics::dual_softmax(s, temperature, axis))
                .map_err(to_py)?;
            out.into_pyarray(py).into_any()
        }
        PySim::F64(a) => {
            let s = a.as_array();
            let out = py
                .allow_threads(move || metrics::dual_softmax(s, temperature, axis))
                .map_err(to_py)?;
            out.into_pyarray(py).into_any()
        }
    })
}

#[pyfunction]
#[pyo3(name = "qb_norm", signature = (sim, bank, k, beta, min_count=1))]
fn py_qb_norm<'py>(
    py: Python<'py>,
    sim: PySim<'py>,
    bank: PySim<'py>,
    k: usize,
    beta: f64,
    min_count: usize,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match (sim, bank) {
        (PySim::F32(a), PySim::F32(b)) => {
            let (s, b) = (a.as_array(), b.as_array());
            let out: ndarray::Array2<f32> = py
                .allow_threads(move || metrics::qb_norm_min_count(s, b, k, beta, min_count))
                .map_err(to_py)?;
            PyArray2::from_owned_array(py, out).into_any()
        }
        (PySim::F64(a), PySim::F64(b)) => {
            let (s, b) = (a.as_array(), b.as_array());
            let out: ndarray::Array2<f64> = py
                .allow_threads(move || metrics::qb_norm_min_count(s, b, k, beta, min_count))
                .map_err(to_py)?;
            PyArray2::from_owned_array(py, out).into_any()
        }
        _ => {
            return Err(to_py(crate::DglError::dtype(
                "bank",
                "the dtype of `sim`",
                "a different dtype",
            )))
        }
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(py_ranks_t2v, m)?)?;
    m.add_function(wrap_pyfunction!(py_ranks_v2t, m)?)?;
    m.add_function(wrap_pyfunction!(py_ranks_t2v_tensor, m)?)?;
    m.add_function(wrap_pyfunction!(py_ranks_v2t_tensor, m)?)?;
    m.add_function(wrap_pyfunction!(py_ranks_chunked, m)?)?;
    m.add_function(wrap_pyfunction!(py_similarity_chunked, m)?)?;
    m.add_function(wrap_pyfunction!(py_summarize_ranks, m)?)?;
    m.add_function(wrap_pyfunction!(py_dual_softmax, m)?)?;
    m.add_function(wrap_pyfunction!(py_qb_norm, m)?)?;
    Ok(())
}
