//! The one place where core errors become Python exceptions.

use crate::DglError;
use pyo3::create_exception;
use pyo3::exceptions::{PyNotImplementedError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

create_exception!(dgl_rs._native, DglShapeError, PyValueError, "A tensor or array has the wrong shape.");
create_exception!(dgl_rs._native, DglDtypeError, PyValueError, "A tensor or array has the wrong dtype.");
create_exception!(dgl_rs._native, DglDeviceError, PyValueError, "A tensor is on the wrong device.");

pub fn to_py(err: DglError) -> PyErr {
    let msg = err.to_string();
    match err {
        DglError::Shape { .. } => DglShapeError::new_err(msg),
        DglError::Dtype { .. } => DglDtypeError::new_err(msg),
        DglError::Device { .. } => DglDeviceError::new_err(msg),
        DglError::Value { .. } => PyValueError::new_err(msg),
        DglError::Unsupported(_) => PyNotImplementedError::new_err(msg),
        DglError::Torch(_) => PyRuntimeError::new_err(msg),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("DglShapeError", py.get_type::<DglShapeError>())?;
    m.add("DglDtypeError", py.get_type::<DglDtypeError>())?;
    m.add("DglDeviceError", py.get_type::<DglDeviceError>())?;
    Ok(())
}
