//! The engine's limit on output size, and the fallible allocation behind it:
//! a size from the caller is counted with checked arithmetic and refused over
//! the limit, so no input overflows, and no allocation aborts the process.

use crate::error::{EngineError, Result};

/// The most values one output array may hold: 2^28 (2 GiB of int64). A
/// larger request is refused with an error naming the argument behind it.
pub const MAX_ELEMENTS: usize = 1 << 28;

/// The error for a request over [`MAX_ELEMENTS`]; `what` names the argument,
/// its value and the size it asks for.
pub fn too_large(what: impl std::fmt::Display) -> EngineError {
    EngineError::new(format!(
        "{what}: more than the engine's limit of {MAX_ELEMENTS} values in one array"
    ))
}

/// `rows × len`, when both it and `len` are within [`MAX_ELEMENTS`];
/// otherwise the error from [`too_large`] with `what()`.
pub fn batch_elements(rows: usize, len: usize, what: impl FnOnce() -> String) -> Result<usize> {
    rows.checked_mul(len)
        .filter(|&n| n <= MAX_ELEMENTS && len <= MAX_ELEMENTS)
        .ok_or_else(|| too_large(what()))
}

/// An empty vector with room for `n` values (at most [`MAX_ELEMENTS`]); an
/// allocation failure is an error naming `what`, not an abort.
pub fn with_capacity<T>(n: usize, what: &str) -> Result<Vec<T>> {
    if n > MAX_ELEMENTS {
        return Err(too_large(format_args!("{what} would hold {n} values")));
    }
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| {
        EngineError::new(format!(
            "out of memory allocating {what} ({n} values of 8 bytes)"
        ))
    })?;
    Ok(out)
}

/// `n` copies of `value` (at most [`MAX_ELEMENTS`]), allocated as [`with_capacity`].
pub fn filled(value: i64, n: usize, what: &str) -> Result<Vec<i64>> {
    let mut out = with_capacity(n, what)?;
    out.resize(n, value);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_over_the_limit_are_errors() {
        assert_eq!(batch_elements(4, 8, String::new).unwrap(), 32);
        let err = batch_elements(2, MAX_ELEMENTS, || "max_length=268435456".into()).unwrap_err();
        assert!(
            err.0.starts_with("max_length=268435456: more than"),
            "{err}"
        );
        assert!(batch_elements(usize::MAX, 2, String::new).is_err());
        assert!(batch_elements(0, usize::MAX, String::new).is_err());
        assert!(filled(0, MAX_ELEMENTS + 1, "labels").is_err());
        assert_eq!(filled(7, 3, "labels").unwrap(), vec![7, 7, 7]);
    }
}
