//! Fast path pixels: images resized, rescaled, normalised and cut into patches,
//! written straight into the `pixel_values` buffer.

use numpy::{
    IntoPyArray, PyReadonlyArray1, PyReadonlyArray3, PyReadonlyArray4, PyReadwriteArray2,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;

use super::convert::{
    array1, array_rows, describe, items, non_negative, require_contiguous, run, size, text, Out1,
};
use super::error::engine_error;
use crate::pixels::{self, Clip, PatchLayout, Picture, CHANNELS, RGBX};
use crate::resize::Filter;

/// `(N, 2)` int64 targets as (height, width) pairs.
fn target_pairs(targets: &Bound<'_, PyAny>) -> PyResult<Vec<(usize, usize)>> {
    array_rows::<2>(targets, "targets", "(height, width)")?
        .into_iter()
        .enumerate()
        .map(|(i, [h, w])| {
            Ok((
                non_negative(h, &format!("targets[{i}][0]"))?,
                non_negative(w, &format!("targets[{i}][1]"))?,
            ))
        })
        .collect()
}

/// The patch geometry from the processor's three sizes.
fn patch_layout(
    patch: &Bound<'_, PyAny>,
    merge: &Bound<'_, PyAny>,
    temporal: &Bound<'_, PyAny>,
) -> PyResult<PatchLayout> {
    Ok(PatchLayout {
        patch: size(patch, "patch_size")?,
        merge: size(merge, "merge_size")?,
        temporal: size(temporal, "temporal_patch_size")?,
    })
}

/// A `(H, W, 3)` uint8 C-contiguous array (or `(H, W, 4)`, RGBX, when `rgbx`),
/// or an error naming `images[i]`.
fn picture_array<'py>(
    obj: &Bound<'py, PyAny>,
    i: usize,
    rgbx: bool,
) -> PyResult<PyReadonlyArray3<'py, u8>> {
    let name = format!("images[{i}]");
    let array = obj.extract::<PyReadonlyArray3<'py, u8>>().map_err(|_| {
        engine_error(format!(
            "{name} must be a (height, width, 3) uint8 numpy array, got {}; pass np.asarray(image.convert('RGB'))",
            describe(obj)
        ))
    })?;
    require_contiguous(array.is_c_contiguous(), &name)?;
    let channels = array.shape()[2];
    if channels != CHANNELS && !(rgbx && channels == RGBX) {
        let also = if rgbx {
            " (or (height, width, 4) RGBX)"
        } else {
            ""
        };
        return Err(engine_error(format!(
            "{name} has shape {:?}; it must be (height, width, 3) RGB{also}",
            array.shape()
        )));
    }
    Ok(array)
}

/// Every item of `images` as a `(H, W, 3)` RGB or `(H, W, 4)` RGBX uint8 array
/// (the fourth byte of each RGBX pixel is not read: Pillow's buffer of an RGB
/// image, passed without a copy).
pub(super) fn rgb_or_rgbx_arrays<'py>(
    images: &[Bound<'py, PyAny>],
) -> PyResult<Vec<PyReadonlyArray3<'py, u8>>> {
    images
        .iter()
        .enumerate()
        .map(|(i, obj)| picture_array(obj, i, true))
        .collect()
}

/// The pictures the arrays hold.
pub(super) fn pictures_of<'a>(
    arrays: &'a [PyReadonlyArray3<'_, u8>],
) -> PyResult<Vec<Picture<'a>>> {
    arrays
        .iter()
        .map(|a| {
            Ok(Picture {
                pixels: a.as_slice()?,
                height: a.shape()[0],
                width: a.shape()[1],
            })
        })
        .collect()
}

/// What to write: images or video clips (cut into patches), or images as planes.
enum Items<'a> {
    Images(&'a [Picture<'a>]),
    Videos(&'a [Clip<'a>]),
    Planes(&'a [Picture<'a>], Filter),
}

/// Runs `pixels::write_pixel_values` (or `write_video_pixel_values`) on an `out`
/// and `table` of element type `T`.
fn pixel_values_into<T: numpy::Element + Copy + Send + Sync>(
    py: Python<'_>,
    items: Items<'_>,
    targets: &[(usize, usize)],
    layout: PatchLayout,
    buffers: (&Bound<'_, PyAny>, &Bound<'_, PyAny>),
    threads: usize,
) -> PyResult<()> {
    let (out, table) = buffers;
    let table = table.extract::<PyReadonlyArray1<'_, T>>().map_err(|_| {
        engine_error(format!(
            "table must be a 1-D array of out's dtype ({}), got {}",
            describe(out),
            describe(table)
        ))
    })?;
    require_contiguous(table.is_c_contiguous(), "table")?;
    let mut out = out.extract::<PyReadwriteArray2<'_, T>>().map_err(|e| {
        engine_error(format!(
            "out must be writable and not shared with another argument ({e})"
        ))
    })?;
    require_contiguous(out.is_c_contiguous(), "out")?;
    let t = table.as_slice()?;
    let o = out.as_slice_mut()?;
    run(py, || match items {
        Items::Images(pictures) => {
            pixels::write_pixel_values(pictures, targets, layout, t, o, threads)
        }
        Items::Videos(clips) => {
            pixels::write_video_pixel_values(clips, targets, layout, t, o, threads)
        }
        Items::Planes(pictures, filter) => {
            pixels::write_planes(pictures, targets, filter, t, o, threads)
        }
    })
}

/// Dispatches on `out`'s dtype: float32, or uint16 holding 16-bit float bits.
fn pixel_values_typed(
    py: Python<'_>,
    items: Items<'_>,
    targets: &[(usize, usize)],
    layout: PatchLayout,
    buffers: (&Bound<'_, PyAny>, &Bound<'_, PyAny>),
    threads: usize,
) -> PyResult<()> {
    let out = buffers.0;
    let dtype = out
        .getattr("dtype")
        .and_then(|d| d.str().map(|s| s.to_string()))
        .unwrap_or_default();
    match dtype.as_str() {
        "float32" => pixel_values_into::<f32>(py, items, targets, layout, buffers, threads),
        "uint16" => pixel_values_into::<u16>(py, items, targets, layout, buffers, threads),
        _ => Err(engine_error(format!(
            "out must be a float32 array, or a uint16 view of bfloat16/float16 values, got {}",
            describe(out)
        ))),
    }
}

/// Writes the `pixel_values` rows of `images` (`(H, W, 3)` uint8 arrays, or
/// `(H, W, 4)` RGBX whose fourth byte is not read), image
/// `i` resized to `targets[i]` = (height, width) by antialiased bicubic, into
/// `out`: a C-contiguous `(rows, 3·temporal·patch²)` array of float32, or of
/// uint16 holding 16-bit floats (bfloat16 or float16 bits). `table` (1-D, 3 × 256
/// values of out's dtype) maps each byte of each channel to its rescaled and
/// normalised value. `threads` > 1 runs the images in parallel.
#[pyfunction]
#[pyo3(
    signature = (images, targets, out, table, patch_size, merge_size, temporal_patch_size, threads=None),
    text_signature = "(images, targets, out, table, patch_size, merge_size, temporal_patch_size, threads=1)"
)]
#[allow(clippy::too_many_arguments)]
pub fn write_pixel_values(
    py: Python<'_>,
    images: &Bound<'_, PyAny>,
    targets: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    table: &Bound<'_, PyAny>,
    patch_size: &Bound<'_, PyAny>,
    merge_size: &Bound<'_, PyAny>,
    temporal_patch_size: &Bound<'_, PyAny>,
    threads: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let images = items(
        images,
        "images",
        "a list of (height, width, 3) uint8 arrays",
    )?;
    let arrays = rgb_or_rgbx_arrays(&images)?;
    let pictures = pictures_of(&arrays)?;
    let targets = target_pairs(targets)?;
    let layout = patch_layout(patch_size, merge_size, temporal_patch_size)?;
    let threads = threads.map_or(Ok(1), |t| size(t, "threads"))?;
    let items = Items::Images(&pictures);
    pixel_values_typed(py, items, &targets, layout, (out, table), threads)
}

/// A `(T, H, W, 3)` uint8 C-contiguous array, or an error naming `videos[i]`.
fn clip_array<'py>(obj: &Bound<'py, PyAny>, i: usize) -> PyResult<PyReadonlyArray4<'py, u8>> {
    let name = format!("videos[{i}]");
    let array = obj.extract::<PyReadonlyArray4<'py, u8>>().map_err(|_| {
        engine_error(format!(
            "{name} must be a (frames, height, width, 3) uint8 numpy array, got {}",
            describe(obj)
        ))
    })?;
    require_contiguous(array.is_c_contiguous(), &name)?;
    if array.shape()[3] != CHANNELS {
        return Err(engine_error(format!(
            "{name} has shape {:?}; it must be (frames, height, width, 3) RGB",
            array.shape()
        )));
    }
    Ok(array)
}

/// Writes the `pixel_values_videos` rows of `videos` (`(T, H, W, 3)` uint8
/// arrays), every frame of video `i` resized to `targets[i]` = (height, width)
/// by antialiased bicubic, its frames taken `temporal_patch_size` at a time (the
/// last repeated to fill the last group), into `out`, as `write_pixel_values`.
#[pyfunction]
#[pyo3(
    signature = (videos, targets, out, table, patch_size, merge_size, temporal_patch_size, threads=None),
    text_signature = "(videos, targets, out, table, patch_size, merge_size, temporal_patch_size, threads=1)"
)]
#[allow(clippy::too_many_arguments)]
pub fn write_video_pixel_values(
    py: Python<'_>,
    videos: &Bound<'_, PyAny>,
    targets: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    table: &Bound<'_, PyAny>,
    patch_size: &Bound<'_, PyAny>,
    merge_size: &Bound<'_, PyAny>,
    temporal_patch_size: &Bound<'_, PyAny>,
    threads: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let videos = items(
        videos,
        "videos",
        "a list of (frames, height, width, 3) uint8 arrays",
    )?;
    let arrays = videos
        .iter()
        .enumerate()
        .map(|(i, obj)| clip_array(obj, i))
        .collect::<PyResult<Vec<_>>>()?;
    let clips = arrays
        .iter()
        .map(|a| {
            Ok(Clip {
                pixels: a.as_slice()?,
                frames: a.shape()[0],
                height: a.shape()[1],
                width: a.shape()[2],
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let targets = target_pairs(targets)?;
    let layout = patch_layout(patch_size, merge_size, temporal_patch_size)?;
    let threads = threads.map_or(Ok(1), |t| size(t, "threads"))?;
    let items = Items::Videos(&clips);
    pixel_values_typed(py, items, &targets, layout, (out, table), threads)
}

/// Rows of `pixel_values` per image resized to `targets` (`(N, 2)` int64 height,
/// width): `(H/patch)·(W/patch)`, with every target checked; with `frames`
/// (`(N,)` int64 frames per video), `ceil(frames/temporal)·(H/patch)·(W/patch)`.
#[pyfunction]
#[pyo3(signature = (targets, patch_size, merge_size, temporal_patch_size, frames=None))]
pub fn pixel_rows<'py>(
    py: Python<'py>,
    targets: &Bound<'py, PyAny>,
    patch_size: &Bound<'py, PyAny>,
    merge_size: &Bound<'py, PyAny>,
    temporal_patch_size: &Bound<'py, PyAny>,
    frames: Option<&Bound<'py, PyAny>>,
) -> PyResult<Out1<'py>> {
    let pairs = target_pairs(targets)?;
    let layout = patch_layout(patch_size, merge_size, temporal_patch_size)?;
    let frames = match frames {
        None => vec![1; pairs.len()],
        Some(f) => array1(f, "frames")?
            .as_slice()?
            .iter()
            .enumerate()
            .map(|(i, &n)| non_negative(n, &format!("frames[{i}]")))
            .collect::<PyResult<Vec<_>>>()?,
    };
    let rows = run(py, || pixels::rows_per_clip(&frames, &pairs, layout))?;
    let rows: Vec<i64> = rows.into_iter().map(|n| n as i64).collect();
    Ok(rows.into_pyarray(py))
}

/// Writes the channels-first `pixel_values` of `images` (`(H, W, 3)` uint8
/// arrays, or `(H, W, 4)` RGBX), not cut into patches: image `i` resized to
/// `targets[i]` = (height, width) by antialiased `interpolation` ("bilinear" or "bicubic", torch's uint8
/// arithmetic), its `3·height·width` values (channel, row, column) after those of
/// the images before it, into `out`: a C-contiguous 2-D array (any split of the
/// total, e.g. one row per image) of float32, or of uint16 holding 16-bit float
/// bits. `table` as for `write_pixel_values`.
#[pyfunction]
#[pyo3(
    signature = (images, targets, out, table, interpolation, threads=None),
    text_signature = "(images, targets, out, table, interpolation, threads=1)"
)]
pub fn write_planes(
    py: Python<'_>,
    images: &Bound<'_, PyAny>,
    targets: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    table: &Bound<'_, PyAny>,
    interpolation: &Bound<'_, PyAny>,
    threads: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let filter = match text(interpolation, "interpolation")?.as_str() {
        "bilinear" => Filter::Bilinear,
        "bicubic" => Filter::Bicubic,
        other => {
            return Err(engine_error(format!(
                "interpolation must be 'bilinear' or 'bicubic', got {other:?}"
            )))
        }
    };
    let images = items(
        images,
        "images",
        "a list of (height, width, 3) uint8 arrays",
    )?;
    let arrays = rgb_or_rgbx_arrays(&images)?;
    let pictures = pictures_of(&arrays)?;
    let targets = target_pairs(targets)?;
    let threads = threads.map_or(Ok(1), |t| size(t, "threads"))?;
    // The layout is unused by planes; any valid one passes through.
    let layout = PatchLayout {
        patch: 1,
        merge: 1,
        temporal: 1,
    };
    let items = Items::Planes(&pictures, filter);
    pixel_values_typed(py, items, &targets, layout, (out, table), threads)
}
