//! Multimodal rotary positions: a family's config values, checked once
//! (`RopeSpec`), and the positions of ragged rows or of a padded batch.

use numpy::ndarray::{Array, IxDyn};
use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::PyType;

use super::convert::{
    array1, batch_pair, flag, float, float_list, grid_triples, int64, opt_int64, run, shape_error,
    text,
};
use super::error::engine_error;
use crate::batch::Rows;
use crate::positions::{self, Family, Media, Positions};

/// The config values of a family's rotary positions, converted and checked
/// once: `family` ("qwen2_vl", "qwen2_5_vl", "qwen3_vl" or "qwen3_omni"), the
/// vision merge size, the media token ids, the video frame spacing
/// (`tokens_per_second`) and Qwen3-Omni's audio token ids.
#[pyclass(frozen, eq, module = "vlm_collate._engine")]
#[derive(PartialEq)]
pub struct RopeSpec(positions::RopeSpec);

/// The constructor's arguments, in order (what pickling a `RopeSpec` stores).
type RopeSpecArgs = (
    &'static str,
    i64,
    i64,
    i64,
    i64,
    f64,
    Option<i64>,
    Option<i64>,
);

#[pymethods]
impl RopeSpec {
    #[new]
    #[pyo3(
        signature = (family, spatial_merge_size, image_token_id, video_token_id, vision_start_token_id, tokens_per_second=None, audio_token_id=None, audio_start_token_id=None),
        text_signature = "(family, spatial_merge_size, image_token_id, video_token_id, vision_start_token_id, tokens_per_second=1.0, audio_token_id=None, audio_start_token_id=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        family: &Bound<'_, PyAny>,
        spatial_merge_size: &Bound<'_, PyAny>,
        image_token_id: &Bound<'_, PyAny>,
        video_token_id: &Bound<'_, PyAny>,
        vision_start_token_id: &Bound<'_, PyAny>,
        tokens_per_second: Option<&Bound<'_, PyAny>>,
        audio_token_id: Option<&Bound<'_, PyAny>>,
        audio_start_token_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let spec = positions::RopeSpec {
            family: Family::parse(&text(family, "family")?)?,
            spatial_merge_size: int64(spatial_merge_size, "spatial_merge_size")?,
            image_token_id: int64(image_token_id, "image_token_id")?,
            video_token_id: int64(video_token_id, "video_token_id")?,
            vision_start_token_id: int64(vision_start_token_id, "vision_start_token_id")?,
            audio_token_id: opt_int64(audio_token_id, "audio_token_id")?,
            audio_start_token_id: opt_int64(audio_start_token_id, "audio_start_token_id")?,
            tokens_per_second: tokens_per_second
                .map_or(Ok(1.0), |t| float(t, "tokens_per_second"))?,
            use_audio_in_video: false,
        };
        spec.check()?;
        Ok(RopeSpec(spec))
    }

    #[getter]
    fn family(&self) -> &'static str {
        self.0.family.name()
    }

    #[getter]
    fn spatial_merge_size(&self) -> i64 {
        self.0.spatial_merge_size
    }

    #[getter]
    fn image_token_id(&self) -> i64 {
        self.0.image_token_id
    }

    #[getter]
    fn video_token_id(&self) -> i64 {
        self.0.video_token_id
    }

    #[getter]
    fn vision_start_token_id(&self) -> i64 {
        self.0.vision_start_token_id
    }

    #[getter]
    fn tokens_per_second(&self) -> f64 {
        self.0.tokens_per_second
    }

    #[getter]
    fn audio_token_id(&self) -> Option<i64> {
        self.0.audio_token_id
    }

    #[getter]
    fn audio_start_token_id(&self) -> Option<i64> {
        self.0.audio_start_token_id
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> (Bound<'py, PyType>, RopeSpecArgs) {
        let s = &slf.get().0;
        (
            slf.get_type(),
            (
                s.family.name(),
                s.spatial_merge_size,
                s.image_token_id,
                s.video_token_id,
                s.vision_start_token_id,
                s.tokens_per_second,
                s.audio_token_id,
                s.audio_start_token_id,
            ),
        )
    }

    fn __repr__(&self) -> String {
        let s = &self.0;
        let option = |v: Option<i64>| v.map_or("None".to_string(), |v| v.to_string());
        format!(
            "RopeSpec(family='{}', spatial_merge_size={}, image_token_id={}, video_token_id={}, \
             vision_start_token_id={}, tokens_per_second={:?}, audio_token_id={}, audio_start_token_id={})",
            s.family.name(),
            s.spatial_merge_size,
            s.image_token_id,
            s.video_token_id,
            s.vision_start_token_id,
            s.tokens_per_second,
            option(s.audio_token_id),
            option(s.audio_start_token_id),
        )
    }
}

/// The checked spec of a call, with its `use_audio_in_video`.
fn call_spec(
    spec: &Bound<'_, PyAny>,
    use_audio_in_video: Option<&Bound<'_, PyAny>>,
) -> PyResult<positions::RopeSpec> {
    let spec = spec.cast::<RopeSpec>().map_err(|_| {
        engine_error(format!(
            "spec must be a vlm_collate.engine.RopeSpec, got a {}",
            spec.get_type()
        ))
    })?;
    let mut spec = spec.get().0.clone();
    spec.use_audio_in_video =
        use_audio_in_video.map_or(Ok(false), |f| flag(f, "use_audio_in_video"))?;
    Ok(spec)
}

/// Positions as a numpy array of `shape`: int64, or float32 for Qwen3-Omni.
fn positions_out<'py>(
    py: Python<'py>,
    positions: Positions,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    let shape = IxDyn(shape);
    Ok(match positions {
        Positions::Int(p) => Array::from_shape_vec(shape, p)
            .map_err(shape_error)?
            .into_pyarray(py)
            .into_any(),
        Positions::Float(p) => Array::from_shape_vec(shape, p)
            .map_err(shape_error)?
            .into_pyarray(py)
            .into_any(),
    })
}

/// The `(3, total)` rotary positions (temporal, height, width) of rows
/// `values[offsets[i]:offsets[i+1]]`, as the family's `get_rope_index`
/// computes them: int64, or float32 for Qwen3-Omni.
#[pyfunction]
#[pyo3(
    signature = (values, offsets, spec, image_grids=None, video_grids=None, video_seconds=None, use_audio_in_video=None),
    text_signature = "(values, offsets, spec, image_grids=None, video_grids=None, video_seconds=[], use_audio_in_video=False)"
)]
#[allow(clippy::too_many_arguments)]
pub fn rope_positions<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    spec: &Bound<'py, PyAny>,
    image_grids: Option<&Bound<'py, PyAny>>,
    video_grids: Option<&Bound<'py, PyAny>>,
    video_seconds: Option<&Bound<'py, PyAny>>,
    use_audio_in_video: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let values = array1(values, "values")?;
    let offsets = array1(offsets, "offsets")?;
    let spec = call_spec(spec, use_audio_in_video)?;
    let images = grid_triples(image_grids, "image_grids")?;
    let videos = grid_triples(video_grids, "video_grids")?;
    let seconds = video_seconds.map_or(Ok(Vec::new()), |s| float_list(s, "video_seconds"))?;
    let (v, o) = (values.as_slice()?, offsets.as_slice()?);
    let positions = run(py, || {
        let rows = Rows::from_parts(v.to_vec(), o.to_vec(), ["values", "offsets"])?;
        let media = Media {
            image_grids: &images,
            video_grids: &videos,
            video_seconds: &seconds,
        };
        positions::rope_positions(&rows, &spec, &media)
    })?;
    positions_out(py, positions, &[3, v.len()])
}

/// The rotary positions of a padded `(B, L)` batch laid out `(4, B, L)` (text
/// positions first) or `(3, B, L)` without `text_row`; padding is 0.
#[pyfunction]
#[pyo3(
    signature = (input_ids, attention_mask, spec, image_grids=None, video_grids=None, video_seconds=None, use_audio_in_video=None, text_row=None),
    text_signature = "(input_ids, attention_mask, spec, image_grids=None, video_grids=None, video_seconds=[], use_audio_in_video=False, text_row=True)"
)]
#[allow(clippy::too_many_arguments)]
pub fn padded_rope_positions<'py>(
    py: Python<'py>,
    input_ids: &Bound<'py, PyAny>,
    attention_mask: &Bound<'py, PyAny>,
    spec: &Bound<'py, PyAny>,
    image_grids: Option<&Bound<'py, PyAny>>,
    video_grids: Option<&Bound<'py, PyAny>>,
    video_seconds: Option<&Bound<'py, PyAny>>,
    use_audio_in_video: Option<&Bound<'py, PyAny>>,
    text_row: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let (ids, mask, (rows, len)) = batch_pair(input_ids, attention_mask)?;
    let spec = call_spec(spec, use_audio_in_video)?;
    let images = grid_triples(image_grids, "image_grids")?;
    let videos = grid_triples(video_grids, "video_grids")?;
    let seconds = video_seconds.map_or(Ok(Vec::new()), |s| float_list(s, "video_seconds"))?;
    let text_row = text_row.map_or(Ok(true), |f| flag(f, "text_row"))?;
    let (i, m) = (ids.as_slice()?, mask.as_slice()?);
    let positions = run(py, || {
        let media = Media {
            image_grids: &images,
            video_grids: &videos,
            video_seconds: &seconds,
        };
        positions::padded_rope_positions(i, m, rows, len, &spec, &media, text_row)
    })?;
    positions_out(py, positions, &[3 + usize::from(text_row), rows, len])
}
