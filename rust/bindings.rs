//! The only file that knows Python: converts numpy buffers to slices and
//! back, releases the GIL for the work, and turns every engine error (and any
//! panic) into a `ValueError` with an actionable message.

use std::panic::{catch_unwind, AssertUnwindSafe};

use numpy::ndarray::{Array1, Array2};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::batch::{self, Rows, Side};
use crate::error::EngineError;
use crate::{expand, fit, labels, pattern, truncate};

type Out1<'py> = Bound<'py, PyArray1<i64>>;
type Out2<'py> = Bound<'py, PyArray2<i64>>;

/// Runs engine work without the GIL; an engine error becomes a ValueError.
/// A panic (a bug: every input is checked first) also becomes one, with its message.
fn run<T: Send>(
    py: Python<'_>,
    work: impl FnOnce() -> Result<T, EngineError> + Send,
) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(work)))
        .unwrap_or_else(|payload| {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(EngineError::new(format!(
                "internal error in the vlm_collate engine ({message}); a bug: please report it with the inputs"
            )))
        })
        .map_err(|e| PyValueError::new_err(e.0))
}

fn value_error(e: EngineError) -> PyErr {
    PyValueError::new_err(e.0)
}

fn describe(obj: &Bound<'_, PyAny>) -> String {
    match (obj.getattr("dtype"), obj.getattr("ndim")) {
        (Ok(dtype), Ok(ndim)) => format!("an array of dtype {dtype} with ndim={ndim}"),
        _ => format!("a {}", obj.get_type()),
    }
}

fn array1<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<PyReadonlyArray1<'py, i64>> {
    let array = obj.extract::<PyReadonlyArray1<'py, i64>>().map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a 1-D int64 numpy array, got {}; convert it with np.asarray(x, dtype=np.int64)",
            describe(obj)
        ))
    })?;
    require_contiguous(array.is_c_contiguous(), name)?;
    Ok(array)
}

fn array2<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<PyReadonlyArray2<'py, i64>> {
    let array = obj.extract::<PyReadonlyArray2<'py, i64>>().map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a 2-D int64 numpy array, got {}; convert it with np.asarray(x, dtype=np.int64)",
            describe(obj)
        ))
    })?;
    require_contiguous(array.is_c_contiguous(), name)?;
    Ok(array)
}

fn require_contiguous(ok: bool, name: &str) -> PyResult<()> {
    if ok {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "{name} must be C-contiguous; pass np.ascontiguousarray({name})"
        )))
    }
}

/// Refuses two arrays of different shapes (a transposed mask has the same size).
fn same_shape(a: &[usize], a_name: &str, b: &[usize], b_name: &str) -> PyResult<()> {
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
    Err(PyValueError::new_err(format!(
        "{b_name} has shape {} but {a_name} has shape {}; they must be the same",
        show(b),
        show(a)
    )))
}

/// `input_ids`, `attention_mask` and their common `(B, L)` shape.
type BatchPair<'py> = (
    PyReadonlyArray2<'py, i64>,
    PyReadonlyArray2<'py, i64>,
    (usize, usize),
);

/// The `(input_ids, attention_mask)` pair of a padded batch, of one shape.
fn batch_pair<'py>(
    input_ids: &Bound<'py, PyAny>,
    attention_mask: &Bound<'py, PyAny>,
) -> PyResult<BatchPair<'py>> {
    let ids = array2(input_ids, "input_ids")?;
    let mask = array2(attention_mask, "attention_mask")?;
    same_shape(ids.shape(), "input_ids", mask.shape(), "attention_mask")?;
    let shape = (ids.shape()[0], ids.shape()[1]);
    Ok((ids, mask, shape))
}

fn non_negative(value: i64, name: &str) -> PyResult<usize> {
    usize::try_from(value)
        .map_err(|_| PyValueError::new_err(format!("{name} must be >= 0, got {value}")))
}

fn padded_out<'py>(py: Python<'py>, padded: batch::Padded) -> PyResult<(Out2<'py>, Out2<'py>)> {
    let shape = (padded.rows, padded.len);
    let ids = Array2::from_shape_vec(shape, padded.ids)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let mask = Array2::from_shape_vec(shape, padded.mask)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((ids.into_pyarray(py), mask.into_pyarray(py)))
}

fn labels_out<'py>(
    py: Python<'py>,
    shape: (usize, usize),
    labels: Vec<i64>,
    counts: Vec<usize>,
) -> PyResult<(Out2<'py>, Out1<'py>)> {
    let labels =
        Array2::from_shape_vec(shape, labels).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let counts: Array1<i64> = counts.into_iter().map(|c| c as i64).collect();
    Ok((labels.into_pyarray(py), counts.into_pyarray(py)))
}

fn rows_out<'py>(py: Python<'py>, rows: Rows) -> (Out1<'py>, Out1<'py>) {
    let offsets: Vec<i64> = rows.offsets.iter().map(|&o| o as i64).collect();
    (rows.values.into_pyarray(py), offsets.into_pyarray(py))
}

/// First occurrence of `pattern` in `haystack` at or after `start`, or (-1, -1).
#[pyfunction]
#[pyo3(signature = (haystack, pattern, start=0, allow_first_token_mismatch=false))]
fn find_subsequence(
    py: Python<'_>,
    haystack: &Bound<'_, PyAny>,
    pattern: &Bound<'_, PyAny>,
    start: i64,
    allow_first_token_mismatch: bool,
) -> PyResult<(i64, i64)> {
    let haystack = array1(haystack, "haystack")?;
    let pattern = array1(pattern, "pattern")?;
    let start = non_negative(start, "start")?;
    let (h, p) = (haystack.as_slice()?, pattern.as_slice()?);
    run(py, || {
        Ok(
            pattern::find_subsequence(h, p, start, allow_first_token_mismatch)
                .map_or((-1, -1), |(s, e)| (s as i64, e as i64)),
        )
    })
}

/// Labels of a padded batch by assistant-start and end-of-turn markers.
#[pyfunction]
#[pyo3(signature = (input_ids, attention_mask, starts, ends, ignore_ids=Vec::new()))]
fn labels_from_markers<'py>(
    py: Python<'py>,
    input_ids: &Bound<'py, PyAny>,
    attention_mask: &Bound<'py, PyAny>,
    starts: Vec<Vec<i64>>,
    ends: Vec<Vec<i64>>,
    ignore_ids: Vec<i64>,
) -> PyResult<(Out2<'py>, Out1<'py>)> {
    let (ids, mask, shape) = batch_pair(input_ids, attention_mask)?;
    let markers = labels::Markers {
        starts,
        ends,
        ignore: ignore_ids,
    };
    let (i, m) = (ids.as_slice()?, mask.as_slice()?);
    let (labels, found) = run(py, || {
        labels::labels_from_markers(i, m, shape.0, shape.1, &markers)
    })?;
    labels_out(py, shape, labels, found)
}

/// Labels of a padded batch by searching each reply's tokens in order.
#[pyfunction]
#[pyo3(signature = (input_ids, attention_mask, reply_values, reply_offsets, replies_per_row, stop_ids, headers=Vec::new(), ignore_ids=Vec::new()))]
#[allow(clippy::too_many_arguments)]
fn labels_from_contents<'py>(
    py: Python<'py>,
    input_ids: &Bound<'py, PyAny>,
    attention_mask: &Bound<'py, PyAny>,
    reply_values: &Bound<'py, PyAny>,
    reply_offsets: &Bound<'py, PyAny>,
    replies_per_row: &Bound<'py, PyAny>,
    stop_ids: Vec<i64>,
    headers: Vec<Vec<i64>>,
    ignore_ids: Vec<i64>,
) -> PyResult<(Out2<'py>, Out1<'py>)> {
    let (ids, mask, shape) = batch_pair(input_ids, attention_mask)?;
    let values = array1(reply_values, "reply_values")?;
    let offsets = array1(reply_offsets, "reply_offsets")?;
    let per_row = array1(replies_per_row, "replies_per_row")?;
    let per_row = per_row
        .as_slice()?
        .iter()
        .enumerate()
        .map(|(r, &c)| non_negative(c, &format!("replies_per_row[{r}]")))
        .collect::<PyResult<Vec<usize>>>()?;
    let replies = Rows::from_parts(
        values.as_slice()?.to_vec(),
        offsets.as_slice()?.to_vec(),
        ["reply_values", "reply_offsets"],
    )
    .map_err(value_error)?;
    let query = labels::ContentQuery {
        replies,
        replies_per_row: per_row,
        stop_ids,
        headers,
        ignore: ignore_ids,
    };
    let (i, m) = (ids.as_slice()?, mask.as_slice()?);
    let (labels, located) = run(py, || {
        labels::labels_from_contents(i, m, shape.0, shape.1, &query)
    })?;
    labels_out(py, shape, labels, located)
}

/// Pads ragged rows (values + offsets) into `(ids, attention_mask)`.
#[pyfunction]
#[pyo3(signature = (values, offsets, pad_value, padding_side="right", max_length=None, pad_to_multiple_of=None))]
fn pad_rows<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    pad_value: i64,
    padding_side: &str,
    max_length: Option<i64>,
    pad_to_multiple_of: Option<i64>,
) -> PyResult<(Out2<'py>, Out2<'py>)> {
    let values = array1(values, "values")?;
    let offsets = array1(offsets, "offsets")?;
    let side = Side::parse(padding_side).map_err(value_error)?;
    let max_length = max_length
        .map(|v| non_negative(v, "max_length"))
        .transpose()?;
    let multiple = pad_to_multiple_of
        .map(|v| non_negative(v, "pad_to_multiple_of"))
        .transpose()?;
    let (v, o) = (values.as_slice()?, offsets.as_slice()?);
    let padded = run(py, || {
        let rows = Rows::from_parts(v.to_vec(), o.to_vec(), ["values", "offsets"])?;
        batch::pad(&rows, pad_value, side, max_length, multiple)
    })?;
    padded_out(py, padded)
}

/// Removes padding (attention_mask == 0) from a batch: `(values, offsets)`.
#[pyfunction]
fn unpad<'py>(
    py: Python<'py>,
    input_ids: &Bound<'py, PyAny>,
    attention_mask: &Bound<'py, PyAny>,
) -> PyResult<(Out1<'py>, Out1<'py>)> {
    let (ids, mask, shape) = batch_pair(input_ids, attention_mask)?;
    let (i, m) = (ids.as_slice()?, mask.as_slice()?);
    let rows = run(py, || batch::unpad(i, m, shape.0, shape.1))?;
    Ok(rows_out(py, rows))
}

/// Expands media placeholders in a padded batch and pads the result again.
#[pyfunction]
#[pyo3(signature = (input_ids, attention_mask, placeholder_id, counts, counts_per_row, pad_id, padding_side="right"))]
#[allow(clippy::too_many_arguments)]
fn expand_placeholders<'py>(
    py: Python<'py>,
    input_ids: &Bound<'py, PyAny>,
    attention_mask: &Bound<'py, PyAny>,
    placeholder_id: i64,
    counts: &Bound<'py, PyAny>,
    counts_per_row: &Bound<'py, PyAny>,
    pad_id: i64,
    padding_side: &str,
) -> PyResult<(Out2<'py>, Out2<'py>)> {
    let (ids, mask, shape) = batch_pair(input_ids, attention_mask)?;
    let counts = array1(counts, "counts")?;
    let per_row = array1(counts_per_row, "counts_per_row")?;
    let side = Side::parse(padding_side).map_err(value_error)?;
    let (i, m, c, p) = (
        ids.as_slice()?,
        mask.as_slice()?,
        counts.as_slice()?,
        per_row.as_slice()?,
    );
    let padded = run(py, || {
        let rows = batch::unpad(i, m, shape.0, shape.1)?;
        let expanded = expand::expand_placeholders(&rows, placeholder_id, c, p)?;
        batch::pad(&expanded, pad_id, side, None, None)
    })?;
    padded_out(py, padded)
}

/// Tokens per image, `t·(h/mh)·(w/mw)`, for an `(N, 3)` grid array.
#[pyfunction]
#[pyo3(signature = (grids, merge_kernel_size=(2, 2)))]
fn tokens_per_grid<'py>(
    py: Python<'py>,
    grids: &Bound<'py, PyAny>,
    merge_kernel_size: (i64, i64),
) -> PyResult<Out1<'py>> {
    let grids = array2(grids, "grids")?;
    if grids.shape()[1] != 3 {
        return Err(PyValueError::new_err(format!(
            "grids must have shape (N, 3) holding (t, h, w), got (N, {})",
            grids.shape()[1]
        )));
    }
    let g = grids.as_slice()?;
    let counts = run(py, || {
        let triples: Vec<[i64; 3]> = g.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
        expand::tokens_per_grid(&triples, merge_kernel_size)
    })?;
    Ok(counts.into_pyarray(py))
}

/// Per row, the length it keeps when cut to `max_length` with every media
/// block ending at or before the cut, or -1 when a block would be split or
/// dropped. A block runs from an open id through the next close id, or is a
/// run of media ids where a family has no delimiters.
#[pyfunction]
#[pyo3(signature = (values, offsets, max_length, media_ids, block_open_ids=Vec::new(), block_close_ids=Vec::new()))]
fn fitted_lengths<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    max_length: i64,
    media_ids: Vec<i64>,
    block_open_ids: Vec<i64>,
    block_close_ids: Vec<i64>,
) -> PyResult<Out1<'py>> {
    let values = array1(values, "values")?;
    let offsets = array1(offsets, "offsets")?;
    let max_length = non_negative(max_length, "max_length")?;
    let (v, o) = (values.as_slice()?, offsets.as_slice()?);
    let lengths = run(py, || {
        let rows = Rows::from_parts(v.to_vec(), o.to_vec(), ["values", "offsets"])?;
        let blocks = truncate::MediaBlocks::new(&media_ids, &block_open_ids, &block_close_ids)?;
        Ok(truncate::fitted_lengths(&rows, max_length, &blocks))
    })?;
    let lengths: Vec<i64> = lengths
        .into_iter()
        .map(|l| l.map_or(-1, |n| n as i64))
        .collect();
    Ok(lengths.into_pyarray(py))
}

/// A right-padded `(B, L)` array re-laid at `(B, length)`: row i's first
/// `min(row_lengths[i], length)` values at the start (right padding) or the
/// end (left padding) of the row, `fill` elsewhere.
#[pyfunction]
#[pyo3(signature = (array, row_lengths, length, fill, padding_side="right"))]
fn fit_rows<'py>(
    py: Python<'py>,
    array: &Bound<'py, PyAny>,
    row_lengths: &Bound<'py, PyAny>,
    length: i64,
    fill: i64,
    padding_side: &str,
) -> PyResult<Out2<'py>> {
    let array = array2(array, "array")?;
    let lengths = array1(row_lengths, "row_lengths")?;
    let (rows, cols) = (array.shape()[0], array.shape()[1]);
    if lengths.shape()[0] != rows {
        return Err(PyValueError::new_err(format!(
            "row_lengths has shape ({},) but array has shape ({rows}, {cols}); it needs one length per row",
            lengths.shape()[0]
        )));
    }
    let length = non_negative(length, "length")?;
    let side = Side::parse(padding_side).map_err(value_error)?;
    let (a, l) = (array.as_slice()?, lengths.as_slice()?);
    let out = run(py, || fit::fit_rows(a, rows, cols, l, length, fill, side))?;
    let out = Array2::from_shape_vec((rows, length), out)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(out.into_pyarray(py))
}

/// The native engine of vlm_collate.
#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(find_subsequence, m)?)?;
    m.add_function(wrap_pyfunction!(labels_from_markers, m)?)?;
    m.add_function(wrap_pyfunction!(labels_from_contents, m)?)?;
    m.add_function(wrap_pyfunction!(pad_rows, m)?)?;
    m.add_function(wrap_pyfunction!(unpad, m)?)?;
    m.add_function(wrap_pyfunction!(expand_placeholders, m)?)?;
    m.add_function(wrap_pyfunction!(tokens_per_grid, m)?)?;
    m.add_function(wrap_pyfunction!(fitted_lengths, m)?)?;
    m.add_function(wrap_pyfunction!(fit_rows, m)?)?;
    m.add_function(wrap_pyfunction!(pack_bins, m)?)?;
    m.add_function(wrap_pyfunction!(packed_layout, m)?)?;
    m.add_function(wrap_pyfunction!(rope_positions, m)?)?;
    m.add_function(wrap_pyfunction!(padded_rope_positions, m)?)?;
    m.add_function(wrap_pyfunction!(write_pixel_values, m)?)?;
    m.add_function(wrap_pyfunction!(pixel_rows, m)?)?;
    m.add("MAX_ELEMENTS", crate::limits::MAX_ELEMENTS)?;
    m.add("IGNORE_INDEX", crate::IGNORE_INDEX)?;
    Ok(())
}

// Packing and multimodal rotary positions (issue 15).

/// Bins of documents of `lengths` in rows of at most `capacity` tokens, longest
/// first: `(order, bin_offsets)`, bin `b` holding `order[bin_offsets[b]..bin_offsets[b + 1]]`.
#[pyfunction]
#[pyo3(signature = (lengths, capacity, strategy="best_fit"))]
fn pack_bins<'py>(
    py: Python<'py>,
    lengths: &Bound<'py, PyAny>,
    capacity: i64,
    strategy: &str,
) -> PyResult<(Out1<'py>, Out1<'py>)> {
    let lengths = array1(lengths, "lengths")?;
    let capacity = non_negative(capacity, "capacity")?;
    let strategy = crate::pack::Strategy::parse(strategy).map_err(value_error)?;
    let l = lengths.as_slice()?;
    let (order, offsets) = run(py, || {
        let lengths = l
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                usize::try_from(n)
                    .map_err(|_| EngineError::new(format!("lengths[{i}] must be >= 0, got {n}")))
            })
            .collect::<Result<Vec<usize>, EngineError>>()?;
        let bins = crate::pack::pack_bins(&lengths, capacity, strategy)?;
        Ok(crate::pack::bins_to_parts(&bins))
    })?;
    Ok((order.into_pyarray(py), offsets.into_pyarray(py)))
}

/// The layout of packed rows of `width` columns: `(source, label_source,
/// positions, cu_seq_lens, spans)`; see `pack::packed_layout`.
#[pyfunction]
#[pyo3(signature = (doc_offsets, order, bin_offsets, width, shift=false))]
#[allow(clippy::type_complexity)]
fn packed_layout<'py>(
    py: Python<'py>,
    doc_offsets: &Bound<'py, PyAny>,
    order: &Bound<'py, PyAny>,
    bin_offsets: &Bound<'py, PyAny>,
    width: i64,
    shift: bool,
) -> PyResult<(Out2<'py>, Out2<'py>, Out2<'py>, Out1<'py>, Out2<'py>)> {
    let doc_offsets = array1(doc_offsets, "doc_offsets")?;
    let order = array1(order, "order")?;
    let bin_offsets = array1(bin_offsets, "bin_offsets")?;
    let width = non_negative(width, "width")?;
    let (d, o, b) = (
        doc_offsets.as_slice()?,
        order.as_slice()?,
        bin_offsets.as_slice()?,
    );
    let layout = run(py, || {
        let offsets = crate::batch::checked_offsets(d, "doc_offsets", "documents")?;
        let bins = crate::pack::bins_from_parts(o, b)?;
        crate::pack::packed_layout(&offsets, &bins, width, shift)
    })?;
    let shape = (layout.rows, layout.width);
    let grid = |v: Vec<i64>| {
        Array2::from_shape_vec(shape, v).map_err(|e| PyValueError::new_err(e.to_string()))
    };
    let spans: Vec<i64> = layout.spans.iter().flatten().copied().collect();
    let spans = Array2::from_shape_vec((layout.spans.len(), 4), spans)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((
        grid(layout.source)?.into_pyarray(py),
        grid(layout.label_source)?.into_pyarray(py),
        grid(layout.positions)?.into_pyarray(py),
        layout.cu_seq_lens.into_pyarray(py),
        spans.into_pyarray(py),
    ))
}

/// `(N, 3)` grids as triples; `None` is no grid.
fn grid_triples(grids: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Vec<[i64; 3]>> {
    let Some(grids) = grids else {
        return Ok(Vec::new());
    };
    let grids = array2(grids, name)?;
    if grids.shape()[1] != 3 {
        return Err(PyValueError::new_err(format!(
            "{name} must have shape (N, 3) holding (t, h, w), got (N, {})",
            grids.shape()[1]
        )));
    }
    Ok(grids
        .as_slice()?
        .chunks_exact(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect())
}

/// The config values of a family's rotary positions, checked.
#[allow(clippy::too_many_arguments)]
fn rope_spec(
    family: &str,
    spatial_merge_size: i64,
    image_token_id: i64,
    video_token_id: i64,
    vision_start_token_id: i64,
    tokens_per_second: f64,
    audio_token_id: Option<i64>,
    audio_start_token_id: Option<i64>,
    use_audio_in_video: bool,
) -> PyResult<crate::positions::RopeSpec> {
    let family = crate::positions::Family::parse(family).map_err(value_error)?;
    if !tokens_per_second.is_finite() {
        return Err(PyValueError::new_err(format!(
            "tokens_per_second must be finite, got {tokens_per_second}"
        )));
    }
    Ok(crate::positions::RopeSpec {
        family,
        spatial_merge_size,
        image_token_id,
        video_token_id,
        vision_start_token_id,
        audio_token_id,
        audio_start_token_id,
        tokens_per_second,
        use_audio_in_video,
    })
}

/// Positions as a numpy array of `shape`: int64, or float32 for Qwen3-Omni.
fn positions_out<'py>(
    py: Python<'py>,
    positions: crate::positions::Positions,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    let shape = numpy::ndarray::IxDyn(shape);
    let shape_error = |e: numpy::ndarray::ShapeError| PyValueError::new_err(e.to_string());
    Ok(match positions {
        crate::positions::Positions::Int(p) => {
            numpy::ndarray::Array::from_shape_vec(shape.clone(), p)
                .map_err(shape_error)?
                .into_pyarray(py)
                .into_any()
        }
        crate::positions::Positions::Float(p) => {
            numpy::ndarray::Array::from_shape_vec(shape.clone(), p)
                .map_err(shape_error)?
                .into_pyarray(py)
                .into_any()
        }
    })
}

/// The `(3, total)` rotary positions (temporal, height, width) of rows
/// `values[offsets[i]:offsets[i+1]]`, as the family's `get_rope_index`
/// computes them: int64, or float32 for Qwen3-Omni.
#[pyfunction]
#[pyo3(signature = (values, offsets, family, spatial_merge_size, image_token_id, video_token_id, vision_start_token_id, image_grids=None, video_grids=None, video_seconds=Vec::new(), tokens_per_second=1.0, audio_token_id=None, audio_start_token_id=None, use_audio_in_video=false))]
#[allow(clippy::too_many_arguments)]
fn rope_positions<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    family: &str,
    spatial_merge_size: i64,
    image_token_id: i64,
    video_token_id: i64,
    vision_start_token_id: i64,
    image_grids: Option<&Bound<'py, PyAny>>,
    video_grids: Option<&Bound<'py, PyAny>>,
    video_seconds: Vec<f64>,
    tokens_per_second: f64,
    audio_token_id: Option<i64>,
    audio_start_token_id: Option<i64>,
    use_audio_in_video: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let values = array1(values, "values")?;
    let offsets = array1(offsets, "offsets")?;
    let spec = rope_spec(
        family,
        spatial_merge_size,
        image_token_id,
        video_token_id,
        vision_start_token_id,
        tokens_per_second,
        audio_token_id,
        audio_start_token_id,
        use_audio_in_video,
    )?;
    let images = grid_triples(image_grids, "image_grids")?;
    let videos = grid_triples(video_grids, "video_grids")?;
    let (v, o) = (values.as_slice()?, offsets.as_slice()?);
    let positions = run(py, || {
        let rows = Rows::from_parts(v.to_vec(), o.to_vec(), ["values", "offsets"])?;
        let media = crate::positions::Media {
            image_grids: &images,
            video_grids: &videos,
            video_seconds: &video_seconds,
        };
        crate::positions::rope_positions(&rows, &spec, &media)
    })?;
    positions_out(py, positions, &[3, v.len()])
}

/// The rotary positions of a padded `(B, L)` batch laid out `(4, B, L)` (text
/// positions first) or `(3, B, L)` without `text_row`; padding is 0.
#[pyfunction]
#[pyo3(signature = (input_ids, attention_mask, family, spatial_merge_size, image_token_id, video_token_id, vision_start_token_id, image_grids=None, video_grids=None, video_seconds=Vec::new(), tokens_per_second=1.0, audio_token_id=None, audio_start_token_id=None, use_audio_in_video=false, text_row=true))]
#[allow(clippy::too_many_arguments)]
fn padded_rope_positions<'py>(
    py: Python<'py>,
    input_ids: &Bound<'py, PyAny>,
    attention_mask: &Bound<'py, PyAny>,
    family: &str,
    spatial_merge_size: i64,
    image_token_id: i64,
    video_token_id: i64,
    vision_start_token_id: i64,
    image_grids: Option<&Bound<'py, PyAny>>,
    video_grids: Option<&Bound<'py, PyAny>>,
    video_seconds: Vec<f64>,
    tokens_per_second: f64,
    audio_token_id: Option<i64>,
    audio_start_token_id: Option<i64>,
    use_audio_in_video: bool,
    text_row: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let (ids, mask, (rows, len)) = batch_pair(input_ids, attention_mask)?;
    let spec = rope_spec(
        family,
        spatial_merge_size,
        image_token_id,
        video_token_id,
        vision_start_token_id,
        tokens_per_second,
        audio_token_id,
        audio_start_token_id,
        use_audio_in_video,
    )?;
    let images = grid_triples(image_grids, "image_grids")?;
    let videos = grid_triples(video_grids, "video_grids")?;
    let (i, m) = (ids.as_slice()?, mask.as_slice()?);
    let positions = run(py, || {
        let media = crate::positions::Media {
            image_grids: &images,
            video_grids: &videos,
            video_seconds: &video_seconds,
        };
        crate::positions::padded_rope_positions(i, m, rows, len, &spec, &media, text_row)
    })?;
    positions_out(py, positions, &[3 + usize::from(text_row), rows, len])
}

// Fast path pixels (issue 14).

/// `(N, 2)` int64 targets as (height, width) pairs.
fn target_pairs(targets: &Bound<'_, PyAny>) -> PyResult<Vec<(usize, usize)>> {
    let targets = array2(targets, "targets")?;
    if targets.shape()[1] != 2 {
        return Err(PyValueError::new_err(format!(
            "targets must have shape (N, 2) holding (height, width), got (N, {})",
            targets.shape()[1]
        )));
    }
    targets
        .as_slice()?
        .chunks_exact(2)
        .enumerate()
        .map(|(i, c)| {
            Ok((
                non_negative(c[0], &format!("targets[{i}][0]"))?,
                non_negative(c[1], &format!("targets[{i}][1]"))?,
            ))
        })
        .collect()
}

/// The patch geometry from the processor's three sizes.
fn patch_layout(patch: i64, merge: i64, temporal: i64) -> PyResult<crate::pixels::PatchLayout> {
    Ok(crate::pixels::PatchLayout {
        patch: non_negative(patch, "patch_size")?,
        merge: non_negative(merge, "merge_size")?,
        temporal: non_negative(temporal, "temporal_patch_size")?,
    })
}

/// A `(H, W, 3)` uint8 C-contiguous array, or a ValueError naming `images[i]`.
fn picture_array<'py>(
    obj: &Bound<'py, PyAny>,
    i: usize,
) -> PyResult<numpy::PyReadonlyArray3<'py, u8>> {
    let name = format!("images[{i}]");
    let array = obj
        .extract::<numpy::PyReadonlyArray3<'py, u8>>()
        .map_err(|_| {
            PyValueError::new_err(format!(
                "{name} must be a (height, width, 3) uint8 numpy array, got {}; pass np.asarray(image.convert('RGB'))",
                describe(obj)
            ))
        })?;
    require_contiguous(array.is_c_contiguous(), &name)?;
    if array.shape()[2] != crate::pixels::CHANNELS {
        return Err(PyValueError::new_err(format!(
            "{name} has shape {:?}; it must be (height, width, 3) RGB",
            array.shape()
        )));
    }
    Ok(array)
}

/// Runs `pixels::write_pixel_values` on an `out` and `table` of element type `T`.
#[allow(clippy::too_many_arguments)]
fn pixel_values_into<T: numpy::Element + Copy + Send + Sync>(
    py: Python<'_>,
    pictures: &[crate::pixels::Picture],
    targets: &[(usize, usize)],
    layout: crate::pixels::PatchLayout,
    out: &Bound<'_, PyAny>,
    table: &Bound<'_, PyAny>,
    threads: usize,
) -> PyResult<()> {
    let table = table.extract::<PyReadonlyArray1<'_, T>>().map_err(|_| {
        PyValueError::new_err(format!(
            "table must be a 1-D array of out's dtype ({}), got {}",
            describe(out),
            describe(table)
        ))
    })?;
    require_contiguous(table.is_c_contiguous(), "table")?;
    let mut out = out
        .extract::<numpy::PyReadwriteArray2<'_, T>>()
        .map_err(|e| {
            PyValueError::new_err(format!(
                "out must be writable and not shared with another argument ({e})"
            ))
        })?;
    require_contiguous(out.is_c_contiguous(), "out")?;
    let t = table.as_slice()?;
    let o = out.as_slice_mut()?;
    run(py, || {
        crate::pixels::write_pixel_values(pictures, targets, layout, t, o, threads)
    })
}

/// Writes the `pixel_values` rows of `images` (`(H, W, 3)` uint8 arrays), image
/// `i` resized to `targets[i]` = (height, width) by antialiased bicubic, into
/// `out`: a C-contiguous `(rows, 3·temporal·patch²)` array of float32, or of
/// uint16 holding 16-bit floats (bfloat16 or float16 bits). `table` (1-D, 3 × 256
/// values of out's dtype) maps each byte of each channel to its rescaled and
/// normalised value. `threads` > 1 runs the images in parallel.
#[pyfunction]
#[pyo3(signature = (images, targets, out, table, patch_size, merge_size, temporal_patch_size, threads=1))]
#[allow(clippy::too_many_arguments)]
fn write_pixel_values(
    py: Python<'_>,
    images: Vec<Bound<'_, PyAny>>,
    targets: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    table: &Bound<'_, PyAny>,
    patch_size: i64,
    merge_size: i64,
    temporal_patch_size: i64,
    threads: i64,
) -> PyResult<()> {
    let arrays = images
        .iter()
        .enumerate()
        .map(|(i, obj)| picture_array(obj, i))
        .collect::<PyResult<Vec<_>>>()?;
    let pictures = arrays
        .iter()
        .map(|a| {
            Ok(crate::pixels::Picture {
                pixels: a.as_slice()?,
                height: a.shape()[0],
                width: a.shape()[1],
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let targets = target_pairs(targets)?;
    let layout = patch_layout(patch_size, merge_size, temporal_patch_size)?;
    let threads = non_negative(threads, "threads")?;
    let dtype = out.getattr("dtype")?.str()?.to_string();
    match dtype.as_str() {
        "float32" => pixel_values_into::<f32>(py, &pictures, &targets, layout, out, table, threads),
        "uint16" => pixel_values_into::<u16>(py, &pictures, &targets, layout, out, table, threads),
        _ => Err(PyValueError::new_err(format!(
            "out must be a float32 array, or a uint16 view of bfloat16/float16 values, got {}",
            describe(out)
        ))),
    }
}

/// Rows of `pixel_values` per image resized to `targets` (`(N, 2)` int64 height,
/// width): `(H/patch)·(W/patch)`, with every target checked.
#[pyfunction]
#[pyo3(signature = (targets, patch_size, merge_size, temporal_patch_size))]
fn pixel_rows<'py>(
    py: Python<'py>,
    targets: &Bound<'py, PyAny>,
    patch_size: i64,
    merge_size: i64,
    temporal_patch_size: i64,
) -> PyResult<Out1<'py>> {
    let pairs = target_pairs(targets)?;
    let layout = patch_layout(patch_size, merge_size, temporal_patch_size)?;
    let rows = run(py, || crate::pixels::rows_per_image(&pairs, layout))?;
    let rows: Vec<i64> = rows.into_iter().map(|n| n as i64).collect();
    Ok(rows.into_pyarray(py))
}
