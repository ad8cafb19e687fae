//! Binding a Python call to a parameter list longer than a Rust signature should be.
//!
//! Such a function is a `#[pyfunction]` over `(*args, **kwargs)` with its real
//! parameter list as `text_signature` (so `inspect.signature` and the stub agree).
//! [`Signature::bind`] binds the call to the parameter names the way Python binds
//! `def f(a, b, c=...)`, and a `#[derive(FromPyObject)]` struct with one field per
//! parameter (`#[pyo3(from_item_all)]`; `#[pyo3(default)]` on the defaulted ones)
//! extracts the bound arguments: positional and keyword calls both work, as before.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// A Python function's parameters: `params` in order, the first `required` without
/// a default. Must equal its `text_signature` (tests/test_native_stubs.py calls every
/// function by keyword).
pub struct Signature {
    pub name: &'static str,
    pub params: &'static [&'static str],
    pub required: usize,
}

impl Signature {
    /// Binds `(*args, **kwargs)` to the parameters and extracts `T` from the result,
    /// with the TypeErrors of a Python function for a call that does not bind.
    pub fn bind<'py, T: FromPyObject<'py>>(
        &self,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<T> {
        let name = self.name;
        let (n, given) = (self.params.len(), args.len());
        if given > n {
            let takes = if self.required == n { format!("{n}") } else { format!("from {} to {n}", self.required) };
            return Err(PyTypeError::new_err(format!(
                "{name}() takes {takes} positional arguments but {given} were given"
            )));
        }
        let bound = PyDict::new(args.py());
        for (param, value) in self.params.iter().zip(args.iter()) {
            bound.set_item(param, value)?;
        }
        for (key, value) in kwargs.into_iter().flat_map(|k| k.iter()) {
            let key: String = key.extract()?;
            if !self.params.contains(&key.as_str()) {
                return Err(PyTypeError::new_err(format!("{name}() got an unexpected keyword argument '{key}'")));
            }
            if bound.contains(&key)? {
                return Err(PyTypeError::new_err(format!("{name}() got multiple values for argument '{key}'")));
            }
            bound.set_item(key, value)?;
        }
        let mut missing = Vec::new();
        for param in self.params.iter().take(self.required) {
            if !bound.contains(param)? {
                missing.push(format!("'{param}'"));
            }
        }
        if !missing.is_empty() {
            let s = if missing.len() == 1 { "" } else { "s" };
            return Err(PyTypeError::new_err(format!(
                "{name}() missing {} required positional argument{s}: {}",
                missing.len(),
                missing.join(", ")
            )));
        }
        bound.extract()
    }
}
