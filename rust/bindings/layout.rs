//! The layout of a batch: padding and unpadding rows, media placeholder
//! expansion, and cutting rows to a length without splitting a media block.

use numpy::{IntoPyArray, PyUntypedArrayMethods};
use pyo3::prelude::*;

use super::convert::{
    array1, array2, batch_pair, int64, int_list, int_pair, matrix_out, opt_size, rows_out, run,
    size, text, Out1, Out2,
};
use super::error::engine_error;
use crate::batch::{self, Rows, Side};
use crate::{expand, fit, truncate};

/// `padding_side` ("right" or "left"), `"right"` when not given.
fn side(padding_side: Option<&Bound<'_, PyAny>>) -> PyResult<Side> {
    let name = padding_side.map_or(Ok("right".to_string()), |s| text(s, "padding_side"))?;
    Ok(Side::parse(&name)?)
}

/// A padded batch as `(ids, attention_mask)` arrays.
fn padded_out(py: Python<'_>, padded: batch::Padded) -> PyResult<(Out2<'_>, Out2<'_>)> {
    let shape = (padded.rows, padded.len);
    Ok((
        matrix_out(py, shape, padded.ids)?,
        matrix_out(py, shape, padded.mask)?,
    ))
}

/// Pads ragged rows (values + offsets) into `(ids, attention_mask)`.
#[pyfunction]
#[pyo3(
    signature = (values, offsets, pad_value, padding_side=None, max_length=None, pad_to_multiple_of=None),
    text_signature = "(values, offsets, pad_value, padding_side='right', max_length=None, pad_to_multiple_of=None)"
)]
pub fn pad_rows<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    pad_value: &Bound<'py, PyAny>,
    padding_side: Option<&Bound<'py, PyAny>>,
    max_length: Option<&Bound<'py, PyAny>>,
    pad_to_multiple_of: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Out2<'py>, Out2<'py>)> {
    let values = array1(values, "values")?;
    let offsets = array1(offsets, "offsets")?;
    let pad_value = int64(pad_value, "pad_value")?;
    let side = side(padding_side)?;
    let max_length = opt_size(max_length, "max_length")?;
    let multiple = opt_size(pad_to_multiple_of, "pad_to_multiple_of")?;
    let (v, o) = (values.as_slice()?, offsets.as_slice()?);
    let padded = run(py, || {
        let rows = Rows::from_parts(v.to_vec(), o.to_vec(), ["values", "offsets"])?;
        batch::pad(&rows, pad_value, side, max_length, multiple)
    })?;
    padded_out(py, padded)
}

/// Removes padding (attention_mask == 0) from a batch: `(values, offsets)`.
#[pyfunction]
pub fn unpad<'py>(
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
#[pyo3(
    signature = (input_ids, attention_mask, placeholder_id, counts, counts_per_row, pad_id, padding_side=None),
    text_signature = "(input_ids, attention_mask, placeholder_id, counts, counts_per_row, pad_id, padding_side='right')"
)]
#[allow(clippy::too_many_arguments)]
pub fn expand_placeholders<'py>(
    py: Python<'py>,
    input_ids: &Bound<'py, PyAny>,
    attention_mask: &Bound<'py, PyAny>,
    placeholder_id: &Bound<'py, PyAny>,
    counts: &Bound<'py, PyAny>,
    counts_per_row: &Bound<'py, PyAny>,
    pad_id: &Bound<'py, PyAny>,
    padding_side: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Out2<'py>, Out2<'py>)> {
    let (ids, mask, shape) = batch_pair(input_ids, attention_mask)?;
    let placeholder_id = int64(placeholder_id, "placeholder_id")?;
    let counts = array1(counts, "counts")?;
    let per_row = array1(counts_per_row, "counts_per_row")?;
    let pad_id = int64(pad_id, "pad_id")?;
    let side = side(padding_side)?;
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
#[pyo3(
    signature = (grids, merge_kernel_size=None),
    text_signature = "(grids, merge_kernel_size=(2, 2))"
)]
pub fn tokens_per_grid<'py>(
    py: Python<'py>,
    grids: &Bound<'py, PyAny>,
    merge_kernel_size: Option<&Bound<'py, PyAny>>,
) -> PyResult<Out1<'py>> {
    let triples = super::convert::array_rows::<3>(grids, "grids", "(t, h, w)")?;
    let kernel = merge_kernel_size.map_or(Ok((2, 2)), |k| int_pair(k, "merge_kernel_size"))?;
    let counts = run(py, || expand::tokens_per_grid(&triples, kernel))?;
    Ok(counts.into_pyarray(py))
}

/// Per row, the length it keeps when cut to `max_length` with every media
/// block ending at or before the cut, or -1 when a block would be split or
/// dropped. A block runs from an open id through the next close id, or is a
/// run of media ids where a family has no delimiters.
#[pyfunction]
#[pyo3(
    signature = (values, offsets, max_length, media_ids, block_open_ids=None, block_close_ids=None),
    text_signature = "(values, offsets, max_length, media_ids, block_open_ids=[], block_close_ids=[])"
)]
pub fn fitted_lengths<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    max_length: &Bound<'py, PyAny>,
    media_ids: &Bound<'py, PyAny>,
    block_open_ids: Option<&Bound<'py, PyAny>>,
    block_close_ids: Option<&Bound<'py, PyAny>>,
) -> PyResult<Out1<'py>> {
    let values = array1(values, "values")?;
    let offsets = array1(offsets, "offsets")?;
    let max_length = size(max_length, "max_length")?;
    let media_ids = int_list(media_ids, "media_ids")?;
    let open = block_open_ids.map_or(Ok(Vec::new()), |i| int_list(i, "block_open_ids"))?;
    let close = block_close_ids.map_or(Ok(Vec::new()), |i| int_list(i, "block_close_ids"))?;
    let (v, o) = (values.as_slice()?, offsets.as_slice()?);
    let lengths = run(py, || {
        let rows = Rows::from_parts(v.to_vec(), o.to_vec(), ["values", "offsets"])?;
        let blocks = truncate::MediaBlocks::new(&media_ids, &open, &close)?;
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
#[pyo3(
    signature = (array, row_lengths, length, fill, padding_side=None),
    text_signature = "(array, row_lengths, length, fill, padding_side='right')"
)]
pub fn fit_rows<'py>(
    py: Python<'py>,
    array: &Bound<'py, PyAny>,
    row_lengths: &Bound<'py, PyAny>,
    length: &Bound<'py, PyAny>,
    fill: &Bound<'py, PyAny>,
    padding_side: Option<&Bound<'py, PyAny>>,
) -> PyResult<Out2<'py>> {
    let array = array2(array, "array")?;
    let lengths = array1(row_lengths, "row_lengths")?;
    let (rows, cols) = (array.shape()[0], array.shape()[1]);
    if lengths.shape()[0] != rows {
        return Err(engine_error(format!(
            "row_lengths has shape ({},) but array has shape ({rows}, {cols}); it needs one length per row",
            lengths.shape()[0]
        )));
    }
    let length = size(length, "length")?;
    let fill = int64(fill, "fill")?;
    let side = side(padding_side)?;
    let (a, l) = (array.as_slice()?, lengths.as_slice()?);
    let out = run(py, || fit::fit_rows(a, rows, cols, l, length, fill, side))?;
    matrix_out(py, (rows, length), out)
}
