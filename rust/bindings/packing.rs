//! Packing: documents into bins of a capacity, and the layout of packed rows.

use numpy::IntoPyArray;
use pyo3::prelude::*;

use super::convert::{array1, flag, matrix_out, run, size, text, Out1, Out2};
use crate::error::EngineError;
use crate::{batch, pack};

/// Bins of documents of `lengths` in rows of at most `capacity` tokens, longest
/// first: `(order, bin_offsets)`, bin `b` holding `order[bin_offsets[b]..bin_offsets[b + 1]]`.
#[pyfunction]
#[pyo3(
    signature = (lengths, capacity, strategy=None),
    text_signature = "(lengths, capacity, strategy='best_fit')"
)]
pub fn pack_bins<'py>(
    py: Python<'py>,
    lengths: &Bound<'py, PyAny>,
    capacity: &Bound<'py, PyAny>,
    strategy: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Out1<'py>, Out1<'py>)> {
    let lengths = array1(lengths, "lengths")?;
    let capacity = size(capacity, "capacity")?;
    let strategy = strategy.map_or(Ok("best_fit".to_string()), |s| text(s, "strategy"))?;
    let strategy = pack::Strategy::parse(&strategy)?;
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
        let (order, offsets) = pack::pack_flat(&lengths, capacity, strategy)?;
        let as_i64 = |v: Vec<usize>| v.into_iter().map(|x| x as i64).collect::<Vec<i64>>();
        Ok((as_i64(order), as_i64(offsets)))
    })?;
    Ok((order.into_pyarray(py), offsets.into_pyarray(py)))
}

/// The layout of packed rows of `width` columns: `(source, label_source,
/// positions, cu_seq_lens, spans)`; see `pack::packed_layout`.
#[pyfunction]
#[pyo3(
    signature = (doc_offsets, order, bin_offsets, width, shift=None),
    text_signature = "(doc_offsets, order, bin_offsets, width, shift=False)"
)]
#[allow(clippy::type_complexity)]
pub fn packed_layout<'py>(
    py: Python<'py>,
    doc_offsets: &Bound<'py, PyAny>,
    order: &Bound<'py, PyAny>,
    bin_offsets: &Bound<'py, PyAny>,
    width: &Bound<'py, PyAny>,
    shift: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Out2<'py>, Out2<'py>, Out2<'py>, Out1<'py>, Out2<'py>)> {
    let doc_offsets = array1(doc_offsets, "doc_offsets")?;
    let order = array1(order, "order")?;
    let bin_offsets = array1(bin_offsets, "bin_offsets")?;
    let width = size(width, "width")?;
    let shift = shift.map_or(Ok(false), |s| flag(s, "shift"))?;
    let (d, o, b) = (
        doc_offsets.as_slice()?,
        order.as_slice()?,
        bin_offsets.as_slice()?,
    );
    let layout = run(py, || {
        let offsets = batch::checked_offsets(d, "doc_offsets", "documents")?;
        let bins = pack::bins_from_parts(o, b)?;
        pack::packed_layout(&offsets, &bins, width, shift)
    })?;
    let shape = (layout.rows, layout.width);
    let spans: Vec<i64> = layout.spans.iter().flatten().copied().collect();
    let spans = matrix_out(py, (layout.spans.len(), 4), spans)?;
    Ok((
        matrix_out(py, shape, layout.source)?,
        matrix_out(py, shape, layout.label_source)?,
        matrix_out(py, shape, layout.positions)?,
        layout.cu_seq_lens.into_pyarray(py),
        spans,
    ))
}
