//! Truncation that never cuts a media span.

use crate::batch::Rows;
use crate::error::{EngineError, Result};

/// How long each row may stay when cut to `max_length` tokens from the right:
/// `Ok(len)` per row, or `None` for a row whose media tokens (any id in
/// `media_ids`) reach past `max_length`, so that cutting it would split or
/// drop a media span.
pub fn fitted_lengths(rows: &Rows, max_length: usize, media_ids: &[i64]) -> Vec<Option<usize>> {
    (0..rows.len())
        .map(|r| {
            let row = rows.row(r);
            if row.len() <= max_length {
                return Some(row.len());
            }
            let media_past_limit = row[max_length..].iter().any(|t| media_ids.contains(t));
            (!media_past_limit).then_some(max_length)
        })
        .collect()
}

/// Keeps the first `lengths[r]` tokens of each row.
pub fn truncate_rows(rows: &Rows, lengths: &[usize]) -> Result<Rows> {
    if lengths.len() != rows.len() {
        return Err(EngineError::new(format!(
            "{} lengths given for {} rows",
            lengths.len(),
            rows.len()
        )));
    }
    let mut out = Rows::default();
    for (r, &keep) in lengths.iter().enumerate() {
        let row = rows.row(r);
        if keep > row.len() {
            return Err(EngineError::new(format!(
                "sample {r} has {} tokens; cannot keep {keep}",
                row.len()
            )));
        }
        out.push(&row[..keep]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_past_the_limit_cannot_be_fitted() {
        let rows = Rows::from_slices(&[
            vec![1, 2, 3, 4],
            vec![1, 9, 2, 3],
            vec![1, 2, 3, 9],
            vec![5],
        ]);
        assert_eq!(
            fitted_lengths(&rows, 3, &[9]),
            vec![Some(3), Some(3), None, Some(1)]
        );
        let cut = truncate_rows(&rows, &[3, 3, 4, 1]).unwrap();
        assert_eq!(cut.row(0), &[1, 2, 3]);
        assert_eq!(cut.row(2), &[1, 2, 3, 9]);
        assert!(truncate_rows(&rows, &[5, 0, 0, 0]).is_err());
        assert!(truncate_rows(&rows, &[1]).is_err());
    }
}
