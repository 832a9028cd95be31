//! Engine refusals as Python exceptions: every error of the engine and every
//! refused argument is raised as `vlm_collate.errors.EngineError` (a
//! `CollateError`, so a `ValueError`), with the engine's message.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

use crate::error::EngineError;

/// `vlm_collate.errors.EngineError`, imported on the first refusal.
static ENGINE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A `vlm_collate.errors.EngineError` carrying `message` (a plain `ValueError`
/// only where that class cannot be imported: the module loaded outside its package).
pub fn engine_error(message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(
        |py| match ENGINE_ERROR.import(py, "vlm_collate.errors", "EngineError") {
            Ok(class) => PyErr::from_type(class.clone(), message),
            Err(_) => PyValueError::new_err(message),
        },
    )
}

impl From<EngineError> for PyErr {
    fn from(error: EngineError) -> PyErr {
        engine_error(error.0)
    }
}
