//! Tiled-family pixels: windows of resized images written as channels-first
//! tiles into one output array.

use numpy::{PyReadonlyArray1, PyReadwriteArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

use super::convert::{
    array2, array_rows, describe, filter, items, non_negative, pixel_type, require_contiguous, run,
    size, PixelType,
};
use super::error::engine_error;
use super::pixels::{pictures_of, rgb_or_rgbx_arrays};
use crate::pixels::{Picture, CHANNELS};
use crate::resize::{Crop, Filter};
use crate::tiles::{self, Resize, Tile};

/// `(R, 4)` rows `(image, source, height, width)`, `source` -1 the image itself;
/// or `(R, 8)` rows with a crop `(top, left, height, width)` of the source after
/// them, four -1s for none.
fn resize_rows(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Resize>> {
    const HOLDING: &str = "(image, source, height, width) or those and a crop (top, left, \
                           height, width), -1s for none";
    let rows: Vec<[i64; 8]> = if array2(obj, "resizes")?.shape()[1] == 4 {
        array_rows::<4>(obj, "resizes", HOLDING)?
            .into_iter()
            .map(|[i, s, h, w]| [i, s, h, w, -1, -1, -1, -1])
            .collect()
    } else {
        array_rows::<8>(obj, "resizes", HOLDING)?
    };
    rows.into_iter()
        .enumerate()
        .map(|(r, [image, source, h, w, top, left, ch, cw])| {
            let at = |c: usize| format!("resizes[{r}][{c}]");
            let crop = if [top, left, ch, cw] == [-1; 4] {
                None
            } else {
                Some(Crop {
                    top: non_negative(top, &at(4))?,
                    left: non_negative(left, &at(5))?,
                    height: non_negative(ch, &at(6))?,
                    width: non_negative(cw, &at(7))?,
                })
            };
            Ok(Resize {
                image: non_negative(image, &at(0))?,
                source: if source == -1 {
                    None
                } else {
                    Some(non_negative(source, &at(1))?)
                },
                height: non_negative(h, &at(2))?,
                width: non_negative(w, &at(3))?,
                crop,
            })
        })
        .collect()
}

/// `(K, 5)` rows `(resize, top, left, slot, fill)`.
fn tile_rows(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Tile>> {
    array_rows::<5>(obj, "tiles", "(resize, top, left, slot, fill)")?
        .into_iter()
        .enumerate()
        .map(|(k, [resize, top, left, slot, fill])| {
            Ok(Tile {
                resize: non_negative(resize, &format!("tiles[{k}][0]"))?,
                top,
                left,
                slot: non_negative(slot, &format!("tiles[{k}][3]"))?,
                fill: non_negative(fill, &format!("tiles[{k}][4]"))?,
            })
        })
        .collect()
}

/// A 1-D C-contiguous array of `T` (the table, the fills), or an error naming it.
fn values<'py, T: numpy::Element>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    out: &Bound<'py, PyAny>,
) -> PyResult<PyReadonlyArray1<'py, T>> {
    let array = obj.extract::<PyReadonlyArray1<'py, T>>().map_err(|_| {
        engine_error(format!(
            "{name} must be a 1-D array of out's dtype ({}), got {}",
            describe(out),
            describe(obj)
        ))
    })?;
    require_contiguous(array.is_c_contiguous(), name)?;
    Ok(array)
}

/// The arguments every dtype shares.
struct Job<'a> {
    pictures: &'a [Picture<'a>],
    resizes: &'a [Resize],
    tiles: &'a [Tile],
    filter: Filter,
    threads: usize,
}

fn tiles_into<T: numpy::Element + Copy + Send + Sync>(
    py: Python<'_>,
    job: Job<'_>,
    out: &Bound<'_, PyAny>,
    table: &Bound<'_, PyAny>,
    fills: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let table = values::<T>(table, "table", out)?;
    let fills = values::<T>(fills, "fills", out)?;
    let mut array = out.extract::<PyReadwriteArrayDyn<'_, T>>().map_err(|e| {
        engine_error(format!(
            "out must be writable and not shared with another argument ({e})"
        ))
    })?;
    require_contiguous(array.is_c_contiguous(), "out")?;
    let shape = array.shape().to_vec();
    if shape.len() != 4 || shape[1] != CHANNELS {
        return Err(engine_error(format!(
            "out must have shape (slots, 3, height, width), got {shape:?}"
        )));
    }
    let tile = (shape[2], shape[3]);
    let (t, f) = (table.as_slice()?, fills.as_slice()?);
    let o = array.as_slice_mut()?;
    run(py, || {
        tiles::write_tiles(
            job.pictures,
            job.resizes,
            job.tiles,
            job.filter,
            t,
            f,
            tile,
            o,
            job.threads,
        )
    })
}

/// Writes tiles of resized `images` (`(H, W, 3)` uint8 arrays, or `(H, W, 4)`
/// RGBX, the fourth byte not read: a PIL image's own buffer) into `out`, a
/// C-contiguous `(slots, 3, height, width)` array of float32, or of uint16
/// holding 16-bit float bits. `resizes` `(R, 4)`: `(image, source, height,
/// width)`, `source` -1 for the image itself or an earlier resize of the same
/// image; or `(R, 8)`, those and a crop `(top, left, height, width)` of the
/// source that is resized instead of all of it (read in place), -1s for none.
/// `tiles` `(K, 5)`: `(resize, top, left, slot, fill)`, the window of that
/// resize at (top, left), values outside the resized image from `fills`
/// (`3·F` values of out's dtype). `table`: `3 × 256` values of out's dtype, each
/// byte of each channel rescaled and normalised. `interpolation`: `"bicubic"` or
/// `"bilinear"` (torch's antialiased uint8 arithmetic). Slots no tile names are
/// left as they are.
#[pyfunction]
#[pyo3(
    signature = (images, resizes, tiles, out, table, fills, interpolation, threads=None),
    text_signature = "(images, resizes, tiles, out, table, fills, interpolation, threads=1)"
)]
#[allow(clippy::too_many_arguments)]
pub fn write_tiles(
    py: Python<'_>,
    images: &Bound<'_, PyAny>,
    resizes: &Bound<'_, PyAny>,
    tiles: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    table: &Bound<'_, PyAny>,
    fills: &Bound<'_, PyAny>,
    interpolation: &Bound<'_, PyAny>,
    threads: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let filter = filter(interpolation)?;
    let images = items(
        images,
        "images",
        "a list of (height, width, 3) uint8 arrays",
    )?;
    let arrays = rgb_or_rgbx_arrays(&images)?;
    let pictures = pictures_of(&arrays)?;
    let resizes = resize_rows(resizes)?;
    let tiles = tile_rows(tiles)?;
    let threads = threads.map_or(Ok(1), |t| size(t, "threads"))?;
    let job = Job {
        pictures: &pictures,
        resizes: &resizes,
        tiles: &tiles,
        filter,
        threads,
    };
    match pixel_type(out)? {
        PixelType::F32 => tiles_into::<f32>(py, job, out, table, fills),
        PixelType::U16 => tiles_into::<u16>(py, job, out, table, fills),
    }
}
