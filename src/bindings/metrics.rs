//! Retrieval metrics: conversion only. numpy arrays are borrowed (no copy) and
//! tensors moved into the closure; the core runs with the GIL released.

use super::errors::to_py;
use crate::metrics::{self, RetrievalMetrics};
use crate::DglError;
use numpy::prelude::*;
use numpy::{Element, PyArray1, PyArray2, PyArrayDescr, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArray};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3_tch::PyTensor;

/// A float32 or float64 2-D numpy array, borrowed.
enum Sim<'py> {
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

impl<'py> Sim<'py> {
    /// The argument `arg` as a float32 or float64 2-D array; otherwise an error that
    /// names the argument and the dtype (or shape, or type) it got.
    fn extract(arg: &str, obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        let dtype = array2(arg, obj)?.dtype();
        if dtype.is_equiv_to(&numpy::dtype::<f32>(obj.py())) {
            Ok(Sim::F32(obj.extract()?))
        } else if dtype.is_equiv_to(&numpy::dtype::<f64>(obj.py())) {
            Ok(Sim::F64(obj.extract()?))
        } else {
            Err(dtype_error(arg, "float32 or float64".into(), &dtype))
        }
    }
}

/// The argument `arg` as a 2-D array of `T`, the dtype of the array `like` (so that
/// both go to the same instance of a generic core function).
fn same_dtype<'py, T: Element>(arg: &str, obj: &Bound<'py, PyAny>, like: &str) -> PyResult<PyReadonlyArray2<'py, T>> {
    let (dtype, want) = (array2(arg, obj)?.dtype(), numpy::dtype::<T>(obj.py()));
    if !dtype.is_equiv_to(&want) {
        return Err(dtype_error(arg, format!("{want} (the dtype of `{like}`)"), &dtype));
    }
    obj.extract()
}

/// `obj` as a 2-D numpy array of any dtype.
fn array2<'a, 'py>(arg: &str, obj: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyUntypedArray>> {
    let arr = obj.downcast::<PyUntypedArray>().map_err(|_| {
        let got = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "another type".into());
        PyTypeError::new_err(format!("`{arg}` must be a float32 or float64 numpy array, got {got}"))
    })?;
    if arr.ndim() != 2 {
        return Err(to_py(DglError::shape(arg, "(rows, columns), 2-D", arr.shape())));
    }
    Ok(arr)
}

fn dtype_error(arg: &str, expected: String, got: &Bound<'_, PyArrayDescr>) -> PyErr {
    to_py(DglError::Dtype { arg: arg.into(), expected, got: got.to_string() })
}

/// The one f32/f64 dispatch: `$body` is written once and compiled for each element
/// type, with `$a` bound to the `PyReadonlyArray2` of that type.
macro_rules! on_float {
    ($sim:expr, |$a:ident| $body:expr) => {
        match $sim {
            Sim::F32($a) => $body,
            Sim::F64($a) => $body,
        }
    };
}

type Map<'py> = Option<PyReadonlyArray1<'py, i64>>;
type Ranks<'py> = Bound<'py, PyArray1<i64>>;

#[pyfunction]
#[pyo3(name = "ranks_t2v", signature = (sim, caption_to_video))]
fn py_ranks_t2v<'py>(
    py: Python<'py>,
    sim: &Bound<'py, PyAny>,
    caption_to_video: Map<'py>,
) -> PyResult<Ranks<'py>> {
    let map = caption_to_video.as_ref().map(|m| m.as_array());
    let ranks = on_float!(Sim::extract("sim", sim)?, |a| {
        let s = a.as_array();
        py.allow_threads(move || metrics::ranks_t2v(s, map))
    })
    .map_err(to_py)?;
    Ok(PyArray1::from_vec(py, ranks))
}

#[pyfunction]
#[pyo3(name = "ranks_v2t", signature = (sim, caption_to_video))]
fn py_ranks_v2t<'py>(
    py: Python<'py>,
    sim: &Bound<'py, PyAny>,
    caption_to_video: Map<'py>,
) -> PyResult<Ranks<'py>> {
    let map = caption_to_video.as_ref().map(|m| m.as_array());
    let ranks = on_float!(Sim::extract("sim", sim)?, |a| {
        let s = a.as_array();
        py.allow_threads(move || metrics::ranks_v2t(s, map))
    })
    .map_err(to_py)?;
    Ok(PyArray1::from_vec(py, ranks))
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
    sim: &Bound<'py, PyAny>,
    temperature: f64,
    axis: usize,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(on_float!(Sim::extract("sim", sim)?, |a| {
        let s = a.as_array();
        let out = py.allow_threads(move || metrics::dual_softmax(s, temperature, axis)).map_err(to_py)?;
        PyArray2::from_owned_array(py, out).into_any()
    }))
}

#[pyfunction]
#[pyo3(name = "qb_norm", signature = (sim, bank, k, beta, min_count=1))]
fn py_qb_norm<'py>(
    py: Python<'py>,
    sim: &Bound<'py, PyAny>,
    bank: &Bound<'py, PyAny>,
    k: usize,
    beta: f64,
    min_count: usize,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(on_float!(Sim::extract("sim", sim)?, |a| {
        let bank = same_dtype("bank", bank, "sim")?;
        let (s, b) = (a.as_array(), bank.as_array());
        let out = py.allow_threads(move || metrics::qb_norm_min_count(s, b, k, beta, min_count)).map_err(to_py)?;
        PyArray2::from_owned_array(py, out).into_any()
    }))
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
