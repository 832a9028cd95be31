//! The vlm_collate engine: the hot paths of building VLM training batches,
//! written over plain integer slices. Nothing here knows about Python except
//! `bindings/` (conversion, errors, one file per concern), which is compiled
//! only with the `python` feature.
//!
//! No input panics or aborts: sizes are counted with checked arithmetic and
//! bounded by [`limits::MAX_ELEMENTS`], and every error names the argument.

pub mod batch;
pub mod error;
pub mod expand;
pub mod fit;
pub mod labels;
pub mod lanczos;
pub mod limits;
pub mod pack;
pub mod pattern;
pub mod pixels;
pub mod positions;
pub mod resize;
pub mod tiles;
pub mod token_set;
pub mod truncate;

#[cfg(test)]
mod fuzz;

#[cfg(feature = "python")]
mod bindings;

/// The label value that the loss ignores.
pub const IGNORE_INDEX: i64 = -100;
