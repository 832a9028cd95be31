//! Media placeholder expansion: one placeholder token becomes as many tokens
//! as the vision tower produces for that image.

use crate::batch::Rows;
use crate::error::{EngineError, Result};

/// Tokens per image for grids of `(t, h, w)` patches merged by `(mh, mw)`:
/// `t · (h / mh) · (w / mw)`. A grid not divisible by the kernel is an error
/// naming the image.
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
            if t <= 0 || h <= 0 || w <= 0 {
                return Err(EngineError::new(format!(
                    "image {i} has grid (t={t}, h={h}, w={w}); every dimension must be positive"
                )));
            }
            if h % mh != 0 || w % mw != 0 {
                return Err(EngineError::new(format!(
                    "image {i} has grid (t={t}, h={h}, w={w}), not divisible by the merge kernel ({mh}, {mw})"
                )));
            }
            Ok(t * (h / mh) * (w / mw))
        })
        .collect()
}

/// Expands placeholders row by row: in row `r`, the `i`-th occurrence of
/// `placeholder` becomes `counts[k]` copies, where `k` runs over the counts
/// in order and row `r` owns `counts_per_row[r]` of them.
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
            "sample {r} has a negative image count ({})",
            counts_per_row[r]
        )));
    }
    let total: i64 = counts_per_row.iter().sum();
    if total != counts.len() as i64 {
        return Err(EngineError::new(format!(
            "the samples hold {total} images in all but {} token counts were given",
            counts.len()
        )));
    }
    if let Some(k) = counts.iter().position(|&c| c < 0) {
        return Err(EngineError::new(format!(
            "image {k} has a negative token count ({})",
            counts[k]
        )));
    }
    let added: i64 = counts.iter().map(|&c| c - 1).sum();
    let capacity = (rows.values.len() as i64 + added.max(0)) as usize;
    let mut out = Rows {
        values: Vec::with_capacity(capacity),
        offsets: Vec::with_capacity(rows.len() + 1),
    };
    out.offsets.push(0);
    let mut next = 0usize;
    for (r, &expected) in counts_per_row.iter().enumerate() {
        let row = rows.row(r);
        let expected = expected as usize;
        let found = row.iter().filter(|&&t| t == placeholder).count();
        if found != expected {
            return Err(EngineError::new(format!(
                "sample {r} has {found} image placeholder tokens (id {placeholder}) but {expected} images"
            )));
        }
        for &token in row {
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
}
