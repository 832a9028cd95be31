//! The collate path's final layout: a right-padded batch truncated and padded
//! to its returned length, on either side, in one pass.

use crate::batch::Side;
use crate::error::{EngineError, Result};
use crate::limits::{batch_elements, filled};

/// A right-padded `rows × cols` batch (`array`, row-major) re-laid at
/// `length` columns: row `i`'s first `min(row_lengths[i], length)` values go
/// to the start (`Side::Right`) or the end (`Side::Left`) of output row `i`,
/// and every other value is `fill`. Returns the `rows × length` values.
pub fn fit_rows(
    array: &[i64],
    rows: usize,
    cols: usize,
    row_lengths: &[i64],
    length: usize,
    fill: i64,
    side: Side,
) -> Result<Vec<i64>> {
    if rows.checked_mul(cols) != Some(array.len()) {
        return Err(EngineError::new(format!(
            "array has {} values, not the {rows}x{cols} its shape says",
            array.len()
        )));
    }
    if row_lengths.len() != rows {
        return Err(EngineError::new(format!(
            "row_lengths has {} entries but array has {rows} rows",
            row_lengths.len()
        )));
    }
    if let Some(i) = row_lengths
        .iter()
        .position(|&n| usize::try_from(n).map_or(true, |n| n > cols))
    {
        return Err(EngineError::new(format!(
            "row_lengths[{i}] = {} is outside 0..={cols} (array has {cols} columns)",
            row_lengths[i]
        )));
    }
    let size = batch_elements(rows, length, || {
        format!("length={length} makes an output of {rows} rows of {length} values")
    })?;
    let mut out = filled(fill, size, "the output of fit_rows")?;
    for (i, &n) in row_lengths.iter().enumerate() {
        let keep = (n as usize).min(length);
        let at = match side {
            Side::Right => i * length,
            Side::Left => i * length + (length - keep),
        };
        out[at..at + keep].copy_from_slice(&array[i * cols..i * cols + keep]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout written plainly, one row at a time.
    fn reference(
        array: &[Vec<i64>],
        lengths: &[i64],
        length: usize,
        fill: i64,
        side: Side,
    ) -> Vec<i64> {
        let mut out = Vec::new();
        for (row, &n) in array.iter().zip(lengths) {
            let kept: Vec<i64> = row.iter().take((n as usize).min(length)).copied().collect();
            let padding = vec![fill; length - kept.len()];
            match side {
                Side::Right => out.extend(kept.iter().chain(&padding)),
                Side::Left => out.extend(padding.iter().chain(&kept)),
            }
        }
        out
    }

    #[test]
    fn truncates_and_pads_on_either_side() {
        let array = vec![vec![1, 2, 3, 0], vec![4, 5, 0, 0], vec![0, 0, 0, 0]];
        let flat: Vec<i64> = array.concat();
        let lengths = [3, 2, 0];
        for side in [Side::Right, Side::Left] {
            for length in 0..7 {
                assert_eq!(
                    fit_rows(&flat, 3, 4, &lengths, length, -100, side).unwrap(),
                    reference(&array, &lengths, length, -100, side),
                    "{side:?} {length}"
                );
            }
        }
        assert_eq!(
            fit_rows(&flat, 3, 4, &lengths, 2, 9, Side::Left).unwrap(),
            vec![1, 2, 4, 5, 9, 9]
        );
        assert_eq!(
            fit_rows(&flat, 3, 4, &lengths, 5, 9, Side::Left).unwrap(),
            vec![9, 9, 1, 2, 3, 9, 9, 9, 4, 5, 9, 9, 9, 9, 9]
        );
    }

    #[test]
    fn bad_arguments_are_errors_naming_them() {
        let flat = [1, 2, 3, 4];
        let err = fit_rows(&flat, 2, 2, &[1], 2, 0, Side::Right).unwrap_err();
        assert!(err.0.contains("row_lengths has 1 entries"), "{err}");
        let err = fit_rows(&flat, 2, 2, &[1, 3], 2, 0, Side::Right).unwrap_err();
        assert!(err.0.contains("row_lengths[1] = 3"), "{err}");
        let err = fit_rows(&flat, 2, 2, &[-1, 0], 2, 0, Side::Right).unwrap_err();
        assert!(err.0.contains("row_lengths[0] = -1"), "{err}");
        assert!(fit_rows(&flat, 3, 2, &[1, 1, 1], 2, 0, Side::Right).is_err());
        for length in [1 << 40, 1 << 62, usize::MAX] {
            let err = fit_rows(&flat, 2, 2, &[1, 1], length, 0, Side::Left).unwrap_err();
            assert!(err.0.contains(&format!("length={length}")), "{err}");
        }
        // No rows: any length within the limit is an empty output.
        assert_eq!(
            fit_rows(&[], 0, 5, &[], 8, 0, Side::Right).unwrap(),
            Vec::<i64>::new()
        );
    }
}
