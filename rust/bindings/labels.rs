//! Label search: a pattern in a sequence, and the labels of a padded batch by
//! reply markers or by each reply's tokens.

use numpy::ndarray::Array1;
use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::convert::{
    array1, batch_pair, flag, int_list, int_lists, matrix_out, non_negative, run, size, Out1, Out2,
};
use crate::batch::Rows;
use crate::{labels, pattern};

/// First occurrence of `pattern` in `haystack` at or after `start`, or (-1, -1).
#[pyfunction]
#[pyo3(
    signature = (haystack, pattern, start=None, allow_first_token_mismatch=None),
    text_signature = "(haystack, pattern, start=0, allow_first_token_mismatch=False)"
)]
pub fn find_subsequence(
    py: Python<'_>,
    haystack: &Bound<'_, PyAny>,
    pattern: &Bound<'_, PyAny>,
    start: Option<&Bound<'_, PyAny>>,
    allow_first_token_mismatch: Option<&Bound<'_, PyAny>>,
) -> PyResult<(i64, i64)> {
    let haystack = array1(haystack, "haystack")?;
    let pattern = array1(pattern, "pattern")?;
    let start = start.map_or(Ok(0), |s| size(s, "start"))?;
    let mismatch =
        allow_first_token_mismatch.map_or(Ok(false), |f| flag(f, "allow_first_token_mismatch"))?;
    let (h, p) = (haystack.as_slice()?, pattern.as_slice()?);
    run(py, || {
        Ok(pattern::find_subsequence(h, p, start, mismatch)
            .map_or((-1, -1), |(s, e)| (s as i64, e as i64)))
    })
}

/// `(labels, counts)`: the `(B, L)` labels and a count per row.
fn labels_out<'py>(
    py: Python<'py>,
    shape: (usize, usize),
    labels: Vec<i64>,
    counts: Vec<usize>,
) -> PyResult<(Out2<'py>, Out1<'py>)> {
    let counts: Array1<i64> = counts.into_iter().map(|c| c as i64).collect();
    Ok((matrix_out(py, shape, labels)?, counts.into_pyarray(py)))
}

/// Labels of a padded batch by assistant-start and end-of-turn markers:
/// `(labels, replies found per row)`, and with `count_headers` a third array,
/// per row the attended positions where an assistant-start marker begins.
#[pyfunction]
#[pyo3(
    signature = (input_ids, attention_mask, starts, ends, ignore_ids=None, count_headers=None),
    text_signature = "(input_ids, attention_mask, starts, ends, ignore_ids=[], count_headers=False)"
)]
#[allow(clippy::too_many_arguments)]
pub fn labels_from_markers<'py>(
    py: Python<'py>,
    input_ids: &Bound<'py, PyAny>,
    attention_mask: &Bound<'py, PyAny>,
    starts: &Bound<'py, PyAny>,
    ends: &Bound<'py, PyAny>,
    ignore_ids: Option<&Bound<'py, PyAny>>,
    count_headers: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyTuple>> {
    let (ids, mask, shape) = batch_pair(input_ids, attention_mask)?;
    let markers = labels::Markers {
        starts: int_lists(starts, "starts")?,
        ends: int_lists(ends, "ends")?,
        ignore: ignore_ids.map_or(Ok(Vec::new()), |i| int_list(i, "ignore_ids"))?,
    };
    let count_headers = count_headers.map_or(Ok(false), |f| flag(f, "count_headers"))?;
    let (i, m) = (ids.as_slice()?, mask.as_slice()?);
    let scan = run(py, || {
        labels::scan_markers(i, m, shape.0, shape.1, &markers)
    })?;
    let (labels, found) = labels_out(py, shape, scan.labels, scan.found)?;
    if count_headers {
        let headers: Array1<i64> = scan.headers.into_iter().map(|c| c as i64).collect();
        PyTuple::new(
            py,
            [
                labels.into_any(),
                found.into_any(),
                headers.into_pyarray(py).into_any(),
            ],
        )
    } else {
        PyTuple::new(py, [labels.into_any(), found.into_any()])
    }
}

/// Labels of a padded batch by searching each reply's tokens in order.
#[pyfunction]
#[pyo3(
    signature = (input_ids, attention_mask, reply_values, reply_offsets, replies_per_row, stop_ids, headers=None, ignore_ids=None),
    text_signature = "(input_ids, attention_mask, reply_values, reply_offsets, replies_per_row, stop_ids, headers=[], ignore_ids=[])"
)]
#[allow(clippy::too_many_arguments)]
pub fn labels_from_contents<'py>(
    py: Python<'py>,
    input_ids: &Bound<'py, PyAny>,
    attention_mask: &Bound<'py, PyAny>,
    reply_values: &Bound<'py, PyAny>,
    reply_offsets: &Bound<'py, PyAny>,
    replies_per_row: &Bound<'py, PyAny>,
    stop_ids: &Bound<'py, PyAny>,
    headers: Option<&Bound<'py, PyAny>>,
    ignore_ids: Option<&Bound<'py, PyAny>>,
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
    )?;
    let query = labels::ContentQuery {
        replies,
        replies_per_row: per_row,
        stop_ids: int_list(stop_ids, "stop_ids")?,
        headers: headers.map_or(Ok(Vec::new()), |h| int_lists(h, "headers"))?,
        ignore: ignore_ids.map_or(Ok(Vec::new()), |i| int_list(i, "ignore_ids"))?,
    };
    let (i, m) = (ids.as_slice()?, mask.as_slice()?);
    let (labels, located) = run(py, || {
        labels::labels_from_contents(i, m, shape.0, shape.1, &query)
    })?;
    labels_out(py, shape, labels, located)
}
