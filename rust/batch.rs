//! Ragged rows and padded batches: the two shapes a batch takes in the engine.

use crate::error::{EngineError, Result};

/// Which side of a row receives padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

impl Side {
    /// Parses `"left"` or `"right"`.
    pub fn parse(name: &str) -> Result<Side> {
        match name {
            "left" => Ok(Side::Left),
            "right" => Ok(Side::Right),
            other => Err(EngineError::new(format!(
                "padding_side must be 'left' or 'right', got '{other}'"
            ))),
        }
    }
}

/// Rows of different lengths stored back to back: row `i` is
/// `values[offsets[i]..offsets[i + 1]]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rows {
    pub values: Vec<i64>,
    pub offsets: Vec<usize>,
}

impl Rows {
    /// Builds rows from values and `B + 1` offsets, checking that the offsets
    /// start at 0, never decrease and end at `values.len()`.
    pub fn from_parts(values: Vec<i64>, offsets: Vec<i64>) -> Result<Rows> {
        if offsets.first() != Some(&0) {
            return Err(EngineError::new(format!(
                "offsets must start at 0 and hold one entry more than there are rows; got {} entries starting at {:?}",
                offsets.len(),
                offsets.first()
            )));
        }
        let mut checked = Vec::with_capacity(offsets.len());
        for (i, &o) in offsets.iter().enumerate() {
            if o < 0 || (i > 0 && o < offsets[i - 1]) {
                return Err(EngineError::new(format!(
                    "offsets must be non-negative and non-decreasing; row {} has offsets {}..{}",
                    i.saturating_sub(1),
                    offsets[i.saturating_sub(1)],
                    o
                )));
            }
            checked.push(o as usize);
        }
        if *checked.last().unwrap_or(&0) != values.len() {
            return Err(EngineError::new(format!(
                "the last offset ({}) must equal the number of values ({})",
                checked.last().unwrap_or(&0),
                values.len()
            )));
        }
        Ok(Rows {
            values,
            offsets: checked,
        })
    }

    /// Rows from slices, one per row.
    pub fn from_slices<S: AsRef<[i64]>>(rows: &[S]) -> Rows {
        let mut out = Rows {
            values: Vec::new(),
            offsets: vec![0],
        };
        for row in rows {
            out.push(row.as_ref());
        }
        out
    }

    /// Appends one row.
    pub fn push(&mut self, row: &[i64]) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.values.extend_from_slice(row);
        self.offsets.push(self.values.len());
    }

    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[i64] {
        &self.values[self.offsets[i]..self.offsets[i + 1]]
    }

    /// The longest row's length.
    pub fn max_len(&self) -> usize {
        (0..self.len())
            .map(|i| self.offsets[i + 1] - self.offsets[i])
            .max()
            .unwrap_or(0)
    }
}

/// A padded `rows × len` batch stored row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Padded {
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    pub rows: usize,
    pub len: usize,
}

/// Checks that `ids` and `mask` both hold `rows * len` values.
pub fn check_batch_shape(ids: &[i64], mask: &[i64], rows: usize, len: usize) -> Result<()> {
    if ids.len() != rows * len || mask.len() != rows * len {
        return Err(EngineError::new(format!(
            "input_ids has {} values and attention_mask {}, but a {rows}x{len} batch needs {}",
            ids.len(),
            mask.len(),
            rows * len
        )));
    }
    Ok(())
}

/// The attended tokens of each row of a padded batch (mask != 0), in order.
pub fn unpad(ids: &[i64], mask: &[i64], rows: usize, len: usize) -> Result<Rows> {
    check_batch_shape(ids, mask, rows, len)?;
    let mut out = Rows {
        values: Vec::with_capacity(ids.len()),
        offsets: Vec::with_capacity(rows + 1),
    };
    out.offsets.push(0);
    for r in 0..rows {
        let span = r * len..(r + 1) * len;
        out.values.extend(
            ids[span.clone()]
                .iter()
                .zip(&mask[span])
                .filter(|(_, &m)| m != 0)
                .map(|(&t, _)| t),
        );
        out.offsets.push(out.values.len());
    }
    Ok(out)
}

/// The padded length for rows whose longest is `longest`: exactly
/// `max_length` when given (an error if a row is longer), otherwise `longest`
/// rounded up to a multiple of `pad_to_multiple_of`.
pub fn padded_length(
    rows: &Rows,
    max_length: Option<usize>,
    pad_to_multiple_of: Option<usize>,
) -> Result<usize> {
    let longest = rows.max_len();
    if pad_to_multiple_of == Some(0) {
        return Err(EngineError::new("pad_to_multiple_of must be at least 1"));
    }
    let len = match max_length {
        Some(max) => {
            if let Some(i) = (0..rows.len()).find(|&i| rows.row(i).len() > max) {
                return Err(EngineError::new(format!(
                    "sample {i} has {} tokens, more than max_length={max}; truncate it first or raise max_length",
                    rows.row(i).len()
                )));
            }
            max
        }
        None => longest,
    };
    Ok(match pad_to_multiple_of {
        Some(k) => len.div_ceil(k) * k,
        None => len,
    })
}

/// Pads rows into a batch; the mask is 1 on row tokens and 0 on padding.
pub fn pad(
    rows: &Rows,
    pad_value: i64,
    side: Side,
    max_length: Option<usize>,
    pad_to_multiple_of: Option<usize>,
) -> Result<Padded> {
    let len = padded_length(rows, max_length, pad_to_multiple_of)?;
    let n = rows.len();
    let mut ids = vec![pad_value; n * len];
    let mut mask = vec![0i64; n * len];
    for i in 0..n {
        let row = rows.row(i);
        let at = match side {
            Side::Right => i * len,
            Side::Left => i * len + (len - row.len()),
        };
        ids[at..at + row.len()].copy_from_slice(row);
        mask[at..at + row.len()].fill(1);
    }
    Ok(Padded {
        ids,
        mask,
        rows: n,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_right_and_left() {
        let rows = Rows::from_slices(&[vec![1, 2, 3], vec![4]]);
        let right = pad(&rows, 0, Side::Right, None, None).unwrap();
        assert_eq!(right.ids, vec![1, 2, 3, 4, 0, 0]);
        assert_eq!(right.mask, vec![1, 1, 1, 1, 0, 0]);
        let left = pad(&rows, 9, Side::Left, None, None).unwrap();
        assert_eq!(left.ids, vec![1, 2, 3, 9, 9, 4]);
        assert_eq!(left.mask, vec![1, 1, 1, 0, 0, 1]);
    }

    #[test]
    fn max_length_and_multiple() {
        let rows = Rows::from_slices(&[vec![1, 2, 3], vec![4]]);
        assert_eq!(pad(&rows, 0, Side::Right, None, Some(4)).unwrap().len, 4);
        assert_eq!(pad(&rows, 0, Side::Right, Some(5), None).unwrap().len, 5);
        assert_eq!(pad(&rows, 0, Side::Right, Some(5), Some(4)).unwrap().len, 8);
        let err = pad(&rows, 0, Side::Right, Some(2), None).unwrap_err();
        assert!(err.0.contains("sample 0 has 3 tokens"), "{err}");
        assert!(pad(&rows, 0, Side::Right, None, Some(0)).is_err());
    }

    #[test]
    fn unpad_drops_padding_on_either_side() {
        let rows = unpad(&[0, 1, 2, 3, 0, 0], &[0, 1, 1, 1, 0, 0], 2, 3).unwrap();
        assert_eq!(rows.row(0), &[1, 2]);
        assert_eq!(rows.row(1), &[3]);
        assert!(unpad(&[1, 2], &[1], 1, 2).is_err());
    }

    #[test]
    fn offsets_are_validated() {
        assert!(Rows::from_parts(vec![1, 2], vec![0, 2]).is_ok());
        assert!(Rows::from_parts(vec![1, 2], vec![0, 3]).is_err());
        assert!(Rows::from_parts(vec![1, 2], vec![1, 2]).is_err());
        assert!(Rows::from_parts(vec![1, 2], vec![0, 2, 1]).is_err());
        assert!(Rows::from_parts(vec![], vec![]).is_err());
        assert_eq!(Rows::from_parts(vec![], vec![0]).unwrap().len(), 0);
    }
}
