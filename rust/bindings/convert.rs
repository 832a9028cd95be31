//! Arguments in, arrays out: numpy buffers as checked slices, Python numbers,
//! strings and lists as Rust values (each refusal an `EngineError` naming the
//! argument), and `run`, which does the engine work without the GIL.

use std::panic::{catch_unwind, AssertUnwindSafe};

use numpy::ndarray::{Array2, ShapeError};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyString};

use super::error::engine_error;
use crate::batch::Rows;
use crate::error::EngineError;
use crate::resize::Filter;

pub type Out1<'py> = Bound<'py, PyArray1<i64>>;
pub type Out2<'py> = Bound<'py, PyArray2<i64>>;

/// Runs engine work without the GIL. A panic (a bug: every input is checked
/// first) becomes an `EngineError` with its message, never an abort.
pub fn run<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> Result<T, EngineError> + Send,
) -> PyResult<T> {
    let result = py
        .detach(|| catch_unwind(AssertUnwindSafe(work)))
        .unwrap_or_else(|payload| {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(EngineError::new(format!(
                "internal error in the vlm_collate engine ({message}); a bug: please report it with the inputs"
            )))
        });
    Ok(result?)
}

/// What an argument is, for a message: an array's dtype and ndim, else its type.
pub fn describe(obj: &Bound<'_, PyAny>) -> String {
    match (obj.getattr("dtype"), obj.getattr("ndim")) {
        (Ok(dtype), Ok(ndim)) => format!("an array of dtype {dtype} with ndim={ndim}"),
        _ => format!("a {}", obj.get_type()),
    }
}

/// A scalar argument as a message shows it: its repr, cut short.
fn shown(obj: &Bound<'_, PyAny>) -> String {
    const MAX: usize = 60;
    let text = obj
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| describe(obj));
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

/// An integer within int64 (a Python int or a numpy integer), never a bool or a
/// float (a float id or size is a bug upstream, never silently truncated).
fn int_value(obj: &Bound<'_, PyAny>) -> Option<i64> {
    if obj.is_instance_of::<PyBool>() || obj.is_instance_of::<PyFloat>() {
        return None;
    }
    obj.extract::<i64>().ok()
}

fn not_int64(obj: &Bound<'_, PyAny>, name: &str) -> PyErr {
    engine_error(format!(
        "{name} must be an integer within int64, got {}",
        shown(obj)
    ))
}

/// An id, position or size argument: an integer within int64.
pub fn int64(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<i64> {
    int_value(obj).ok_or_else(|| not_int64(obj, name))
}

/// An optional integer argument: `None` is no value.
pub fn opt_int64(obj: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<i64>> {
    match obj {
        Some(obj) if !obj.is_none() => int64(obj, name).map(Some),
        _ => Ok(None),
    }
}

/// A size or count: an integer within int64 and not negative.
pub fn size(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<usize> {
    non_negative(int64(obj, name)?, name)
}

/// An optional size: `None` is no value.
pub fn opt_size(obj: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<usize>> {
    opt_int64(obj, name)?
        .map(|v| non_negative(v, name))
        .transpose()
}

pub fn non_negative(value: i64, name: &str) -> PyResult<usize> {
    usize::try_from(value).map_err(|_| engine_error(format!("{name} must be >= 0, got {value}")))
}

/// A number argument (an int or a float, never a bool).
pub fn float(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<f64> {
    let value = (!obj.is_instance_of::<PyBool>())
        .then(|| obj.extract::<f64>().ok())
        .flatten();
    value.ok_or_else(|| engine_error(format!("{name} must be a number, got {}", shown(obj))))
}

/// A `True`/`False` argument (a numpy bool too).
pub fn flag(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<bool> {
    obj.extract::<bool>()
        .map_err(|_| engine_error(format!("{name} must be True or False, got {}", shown(obj))))
}

/// A string argument.
pub fn text(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<String> {
    obj.cast::<PyString>()
        .map(|s| s.to_string())
        .map_err(|_| engine_error(format!("{name} must be a string, got {}", shown(obj))))
}

/// The resize filter an `interpolation` argument names (`"bilinear"`, `"bicubic"` or
/// `"lanczos"`).
pub fn filter(obj: &Bound<'_, PyAny>) -> PyResult<Filter> {
    match text(obj, "interpolation")?.as_str() {
        "bilinear" => Ok(Filter::Bilinear),
        "bicubic" => Ok(Filter::Bicubic),
        "lanczos" => Ok(Filter::Lanczos),
        other => Err(engine_error(format!(
            "interpolation must be 'bilinear' or 'bicubic' (or 'lanczos'), got {other:?}"
        ))),
    }
}

/// The element type of a pixel output: float32, or uint16 holding 16-bit floats.
pub enum PixelType {
    F32,
    U16,
}

/// `out`'s pixel element type, or an error saying what it must be.
pub fn pixel_type(out: &Bound<'_, PyAny>) -> PyResult<PixelType> {
    let dtype = out
        .getattr("dtype")
        .and_then(|d| d.str().map(|s| s.to_string()))
        .unwrap_or_default();
    match dtype.as_str() {
        "float32" => Ok(PixelType::F32),
        "uint16" => Ok(PixelType::U16),
        _ => Err(engine_error(format!(
            "out must be a float32 array, or a uint16 view of bfloat16/float16 values, got {}",
            describe(out)
        ))),
    }
}

/// The items of a list (or tuple, or other iterable) argument; `what` says what
/// the argument should be, for the message.
pub fn items<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    what: &str,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let refuse = || engine_error(format!("{name} must be {what}, got {}", describe(obj)));
    if obj.is_instance_of::<PyString>()
        || obj.is_instance_of::<PyBytes>()
        || obj.is_instance_of::<PyByteArray>()
        || obj.is_instance_of::<PyDict>()
    {
        return Err(refuse());
    }
    obj.try_iter()
        .map_err(|_| refuse())?
        .collect::<PyResult<Vec<_>>>()
}

/// A list of ids: each an integer within int64.
pub fn int_list(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<i64>> {
    items(obj, name, "a list of integers")?
        .iter()
        .enumerate()
        .map(|(i, item)| int_value(item).ok_or_else(|| not_int64(item, &format!("{name}[{i}]"))))
        .collect()
}

/// A list of id sequences.
pub fn int_lists(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<Vec<i64>>> {
    items(obj, name, "a list of lists of integers")?
        .iter()
        .enumerate()
        .map(|(i, item)| int_list(item, &format!("{name}[{i}]")))
        .collect()
}

/// A list of numbers.
pub fn float_list(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<f64>> {
    items(obj, name, "a list of numbers")?
        .iter()
        .enumerate()
        .map(|(i, item)| float(item, &format!("{name}[{i}]")))
        .collect()
}

/// A pair of integers.
pub fn int_pair(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<(i64, i64)> {
    let values = int_list(obj, name)?;
    match values[..] {
        [a, b] => Ok((a, b)),
        _ => Err(engine_error(format!(
            "{name} must be a pair of integers, got {} values",
            values.len()
        ))),
    }
}

pub fn array1<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<PyReadonlyArray1<'py, i64>> {
    let array = obj.extract::<PyReadonlyArray1<'py, i64>>().map_err(|_| {
        engine_error(format!(
            "{name} must be a 1-D int64 numpy array, got {}; convert it with np.asarray(x, dtype=np.int64)",
            describe(obj)
        ))
    })?;
    require_contiguous(array.is_c_contiguous(), name)?;
    Ok(array)
}

pub fn array2<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<PyReadonlyArray2<'py, i64>> {
    let array = obj.extract::<PyReadonlyArray2<'py, i64>>().map_err(|_| {
        engine_error(format!(
            "{name} must be a 2-D int64 numpy array, got {}; convert it with np.asarray(x, dtype=np.int64)",
            describe(obj)
        ))
    })?;
    require_contiguous(array.is_c_contiguous(), name)?;
    Ok(array)
}

pub fn require_contiguous(ok: bool, name: &str) -> PyResult<()> {
    if ok {
        Ok(())
    } else {
        Err(engine_error(format!(
            "{name} must be C-contiguous; pass np.ascontiguousarray({name})"
        )))
    }
}

/// An `(N, width)` int64 array as rows of `width` values; `holding` names them.
pub fn array_rows<const W: usize>(
    obj: &Bound<'_, PyAny>,
    name: &str,
    holding: &str,
) -> PyResult<Vec<[i64; W]>> {
    let array = array2(obj, name)?;
    if array.shape()[1] != W {
        return Err(engine_error(format!(
            "{name} must have shape (N, {W}) holding {holding}, got (N, {})",
            array.shape()[1]
        )));
    }
    Ok(array
        .as_slice()?
        .chunks_exact(W)
        .map(|c| std::array::from_fn(|i| c[i]))
        .collect())
}

/// Media grids `(N, 3)` as `(t, h, w)` triples; `None` is no grid.
pub fn grid_triples(grids: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Vec<[i64; 3]>> {
    match grids {
        Some(grids) if !grids.is_none() => array_rows::<3>(grids, name, "(t, h, w)"),
        _ => Ok(Vec::new()),
    }
}

/// Refuses two arrays of different shapes (a transposed mask has the same size).
pub fn same_shape(a: &[usize], a_name: &str, b: &[usize], b_name: &str) -> PyResult<()> {
    if a == b {
        return Ok(());
    }
    let show = |s: &[usize]| match s {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            s.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Err(engine_error(format!(
        "{b_name} has shape {} but {a_name} has shape {}; they must be the same",
        show(b),
        show(a)
    )))
}

/// `input_ids`, `attention_mask` and their common `(B, L)` shape.
pub type BatchPair<'py> = (
    PyReadonlyArray2<'py, i64>,
    PyReadonlyArray2<'py, i64>,
    (usize, usize),
);

/// The `(input_ids, attention_mask)` pair of a padded batch, of one shape.
pub fn batch_pair<'py>(
    input_ids: &Bound<'py, PyAny>,
    attention_mask: &Bound<'py, PyAny>,
) -> PyResult<BatchPair<'py>> {
    let ids = array2(input_ids, "input_ids")?;
    let mask = array2(attention_mask, "attention_mask")?;
    same_shape(ids.shape(), "input_ids", mask.shape(), "attention_mask")?;
    let shape = (ids.shape()[0], ids.shape()[1]);
    Ok((ids, mask, shape))
}

pub fn shape_error(e: ShapeError) -> PyErr {
    engine_error(e.to_string())
}

/// A `(rows, cols)` int64 array of `values` (row-major).
pub fn matrix_out(py: Python<'_>, shape: (usize, usize), values: Vec<i64>) -> PyResult<Out2<'_>> {
    Ok(Array2::from_shape_vec(shape, values)
        .map_err(shape_error)?
        .into_pyarray(py))
}

/// Ragged rows as `(values, offsets)` arrays.
pub fn rows_out(py: Python<'_>, rows: Rows) -> (Out1<'_>, Out1<'_>) {
    let offsets: Vec<i64> = rows.offsets.iter().map(|&o| o as i64).collect();
    (rows.values.into_pyarray(py), offsets.into_pyarray(py))
}
