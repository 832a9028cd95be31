//! Media placeholder expansion: one placeholder token becomes as many tokens
//! as the vision tower produces for that image.

use crate::batch::Rows;
use crate::error::{EngineError, Result};
use crate::limits::{too_large, with_capacity, MAX_ELEMENTS};

/// Tokens per image for grids of `(t, h, w)` patches merged by `(mh, mw)`:
/// `t · (h / mh) · (w / mw)`. A grid not divisible by the kernel, or whose
/// count overflows or exceeds [`MAX_ELEMENTS`], is an error naming the image.
pub fn tokens_per_grid(grids: &[[i64; 3]], merge: (i64, i64)) -> Result<Vec<i64>> {
    let (mh, mw) = merge;
    if mh <= 0 || mw <= 0 {
        return Err(EngineError::new(format!(
            "merge_kernel_size must be positive, got ({mh}, {mw})"
        )));
    }
    grids
        .iter()
        .enumerate()
        .map(|(i, &[t, h, w])| {
            let grid = format!("image {i} has grid (t={t}, h={h}, w={w}) in grids[{i}]");
            if t <= 0 || h <= 0 || w <= 0 {
                return Err(EngineError::new(format!(
                    "{grid}; every dimension must be positive"
                )));
            }
            if h % mh != 0 || w % mw != 0 {
                return Err(EngineError::new(format!(
                    "{grid}, not divisible by the merge kernel ({mh}, {mw})"
                )));
            }
            t.checked_mul(h / mh)
                .and_then(|n| n.checked_mul(w / mw))
                .filter(|&n| n as u64 <= MAX_ELEMENTS as u64)
                .ok_or_else(|| {
                    too_large(format_args!(
                        "{grid}: t·(h/{mh})·(w/{mw}) tokens for one image"
                    ))
                })
        })
        .collect()
}

/// Expands placeholders row by row: in row `r`, the `i`-th occurrence of
/// `placeholder` becomes `counts[k]` copies, where `k` runs over the counts
/// in order and row `r` owns `counts_per_row[r]` of them. The expanded rows
/// together stay within [`MAX_ELEMENTS`].
pub fn expand_placeholders(
    rows: &Rows,
    placeholder: i64,
    counts: &[i64],
    counts_per_row: &[i64],
) -> Result<Rows> {
    if counts_per_row.len() != rows.len() {
        return Err(EngineError::new(format!(
            "counts_per_row has {} entries for {} rows",
            counts_per_row.len(),
            rows.len()
        )));
    }
    if let Some(r) = counts_per_row.iter().position(|&c| c < 0) {
        return Err(EngineError::new(format!(
            "counts_per_row[{r}] = {}: sample {r} has a negative image count",
            counts_per_row[r]
        )));
    }
    let total = counts_per_row
        .iter()
        .try_fold(0u64, |sum, &c| sum.checked_add(c as u64));
    if total != Some(counts.len() as u64) {
        return Err(EngineError::new(format!(
            "counts_per_row adds up to {} images but counts has {} entries",
            total.map_or("more than u64::MAX".to_string(), |t| t.to_string()),
            counts.len()
        )));
    }
    if let Some(k) = counts.iter().position(|&c| c < 0) {
        return Err(EngineError::new(format!(
            "counts[{k}] = {}: image {k} has a negative token count",
            counts[k]
        )));
    }
    if let Some(k) = counts.iter().position(|&c| c as u64 > MAX_ELEMENTS as u64) {
        return Err(too_large(format_args!(
            "counts[{k}] = {}: image {k} expands to that many tokens",
            counts[k]
        )));
    }
    // Validate every row and size the output before allocating it.
    let mut size = 0usize;
    let mut next = 0usize;
    for (r, &expected) in counts_per_row.iter().enumerate() {
        let row = rows.row(r);
        let expected = expected as usize;
        let found = row.iter().filter(|&&t| t == placeholder).count();
        if found != expected {
            return Err(EngineError::new(format!(
                "sample {r} has {found} image placeholder tokens (id {placeholder}) but counts_per_row[{r}] = {expected} images"
            )));
        }
        let media: usize = counts[next..next + expected]
            .iter()
            .map(|&c| c as usize)
            .sum();
        next += expected;
        size = size
            .checked_add(row.len() - found)
            .and_then(|s| s.checked_add(media))
            .filter(|&s| s <= MAX_ELEMENTS)
            .ok_or_else(|| {
                too_large(format_args!(
                    "counts: the expanded rows up to sample {r} (whose images take {media} tokens)"
                ))
            })?;
    }
    let mut out = Rows {
        values: with_capacity(size, "the expanded rows")?,
        offsets: with_capacity(rows.len() + 1, "the expanded row offsets")?,
    };
    out.offsets.push(0);
    let mut next = 0usize;
    for r in 0..rows.len() {
        for &token in rows.row(r) {
            if token == placeholder {
                let n = counts[next] as usize;
                out.values.extend(std::iter::repeat_n(placeholder, n));
                next += 1;
            } else {
                out.values.push(token);
            }
        }
        out.offsets.push(out.values.len());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_each_placeholder_by_its_count() {
        let rows = Rows::from_slices(&[vec![1, 9, 2, 9], vec![3], vec![9]]);
        let out = expand_placeholders(&rows, 9, &[2, 3, 1], &[2, 0, 1]).unwrap();
        assert_eq!(out.row(0), &[1, 9, 9, 2, 9, 9, 9]);
        assert_eq!(out.row(1), &[3]);
        assert_eq!(out.row(2), &[9]);
    }

    #[test]
    fn count_mismatches_name_the_sample() {
        let rows = Rows::from_slices(&[vec![1, 9], vec![9, 9]]);
        let err = expand_placeholders(&rows, 9, &[4, 4], &[1, 1]).unwrap_err();
        assert!(
            err.0.contains("sample 1 has 2 image placeholder tokens"),
            "{err}"
        );
        assert!(expand_placeholders(&rows, 9, &[4], &[1, 1]).is_err());
        assert!(expand_placeholders(&rows, 9, &[4, 4], &[1]).is_err());
        assert!(expand_placeholders(&rows, 9, &[4, -1, 2], &[1, 2]).is_err());
        assert!(expand_placeholders(&rows, 9, &[], &[-1, 1]).is_err());
    }

    #[test]
    fn grid_token_counts() {
        assert_eq!(
            tokens_per_grid(&[[1, 4, 6], [2, 2, 2]], (2, 2)).unwrap(),
            vec![6, 2]
        );
        let err = tokens_per_grid(&[[1, 4, 6], [1, 3, 4]], (2, 2)).unwrap_err();
        assert!(err.0.contains("image 1"), "{err}");
        assert!(tokens_per_grid(&[[0, 4, 4]], (2, 2)).is_err());
        assert!(tokens_per_grid(&[[1, 4, 4]], (0, 2)).is_err());
    }

    #[test]
    fn huge_grids_and_counts_are_errors_not_aborts() {
        for grid in [
            [1, 1 << 21, 1 << 21],
            [1 << 31, 1 << 32, 1 << 32],
            [i64::MAX; 3],
        ] {
            let err = tokens_per_grid(&[[1, 2, 2], grid], (1, 1)).unwrap_err();
            assert!(
                err.0.contains("image 1") && err.0.contains("grids[1]"),
                "{err}"
            );
            assert!(err.0.contains("limit"), "{err}");
        }
        let rows = Rows::from_slices(&[vec![1, 9, 9], vec![9]]);
        for huge in [1 << 40, 1 << 62, i64::MAX] {
            let err = expand_placeholders(&rows, 9, &[1, huge, 1], &[2, 1]).unwrap_err();
            assert!(err.0.contains(&format!("counts[1] = {huge}")), "{err}");
        }
        // Each count within the limit, their sum over it.
        let (rows, max) = (
            Rows::from_slices(&[vec![1, 9], vec![9]]),
            MAX_ELEMENTS as i64,
        );
        let err = expand_placeholders(&rows, 9, &[max - 5, 10], &[1, 1])
            .err()
            .unwrap();
        assert!(
            err.0.contains("counts") && err.0.contains("sample 1"),
            "{err}"
        );
        assert!(expand_placeholders(&rows, 9, &[max - 5, 4], &[1, 1]).is_ok());
        // Per-row image counts whose sum wraps are an error.
        let err = expand_placeholders(&rows, 9, &[1], &[i64::MAX, i64::MAX])
            .err()
            .unwrap();
        assert!(err.0.contains("counts_per_row adds up to"), "{err}");
    }
}
