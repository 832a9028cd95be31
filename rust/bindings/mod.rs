//! The only code that knows Python: converts numpy buffers and Python values to
//! slices and numbers and back (`convert`), releases the GIL for the work, and
//! raises every engine error, refused argument and panic as
//! `vlm_collate.errors.EngineError` (`error`). One file per concern; this file
//! lists what the `_engine` module holds.

mod convert;
mod error;
mod labels;
mod layout;
mod packing;
mod pixels;
mod positions;
mod tiles;

use pyo3::prelude::*;

/// The native engine of vlm_collate.
#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Labels
    m.add_function(wrap_pyfunction!(labels::find_subsequence, m)?)?;
    m.add_function(wrap_pyfunction!(labels::labels_from_markers, m)?)?;
    m.add_function(wrap_pyfunction!(labels::labels_from_contents, m)?)?;
    // Batch layout
    m.add_function(wrap_pyfunction!(layout::pad_rows, m)?)?;
    m.add_function(wrap_pyfunction!(layout::unpad, m)?)?;
    m.add_function(wrap_pyfunction!(layout::expand_placeholders, m)?)?;
    m.add_function(wrap_pyfunction!(layout::tokens_per_grid, m)?)?;
    m.add_function(wrap_pyfunction!(layout::fitted_lengths, m)?)?;
    m.add_function(wrap_pyfunction!(layout::fit_rows, m)?)?;
    // Packing
    m.add_function(wrap_pyfunction!(packing::pack_bins, m)?)?;
    m.add_function(wrap_pyfunction!(packing::packed_layout, m)?)?;
    // Rotary positions
    m.add_class::<positions::RopeSpec>()?;
    m.add_function(wrap_pyfunction!(positions::rope_positions, m)?)?;
    m.add_function(wrap_pyfunction!(positions::padded_rope_positions, m)?)?;
    // Fast path pixels
    m.add_function(wrap_pyfunction!(pixels::write_pixel_values, m)?)?;
    m.add_function(wrap_pyfunction!(pixels::write_video_pixel_values, m)?)?;
    m.add_function(wrap_pyfunction!(pixels::pixel_rows, m)?)?;
    m.add_function(wrap_pyfunction!(pixels::write_planes, m)?)?;
    m.add_function(wrap_pyfunction!(tiles::write_tiles, m)?)?;
    m.add("MAX_ELEMENTS", crate::limits::MAX_ELEMENTS)?;
    m.add("IGNORE_INDEX", crate::IGNORE_INDEX)?;
    Ok(())
}
