//! The vlm_collate engine: the hot paths of building VLM training batches,
//! written over plain integer slices. Nothing here knows about Python except
//! `bindings`, which is compiled only with the `python` feature.

pub mod batch;
pub mod error;
pub mod expand;
pub mod labels;
pub mod pattern;
pub mod token_set;
pub mod truncate;

#[cfg(test)]
mod fuzz;

#[cfg(feature = "python")]
mod bindings;

/// The label value that the loss ignores.
pub const IGNORE_INDEX: i64 = -100;
