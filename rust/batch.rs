//! Ragged rows and padded batches: the two shapes a batch takes in the engine.

use crate::error::{EngineError, Result};
use crate::limits::{batch_elements, filled, too_large, with_capacity};

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

/// Offsets (`offsets[i]..offsets[i + 1]` is item `i`, a row or a document) checked to
/// start at 0 and never decrease; `name` is the caller's name for the array and `items`
/// what its entries delimit, for the error message.
pub fn checked_offsets(offsets: &[i64], name: &str, items: &str) -> Result<Vec<usize>> {
    if offsets.first() != Some(&0) {
        return Err(EngineError::new(format!(
            "{name} must start at 0 and hold one entry more than there are {items}; got {} entries starting at {:?}",
            offsets.len(),
            offsets.first()
        )));
    }
    let mut out = with_capacity(offsets.len(), name)?;
    for (i, &o) in offsets.iter().enumerate() {
        if i > 0 && o < offsets[i - 1] {
            return Err(EngineError::new(format!(
                "{name} must not decrease, but {name}[{i}] = {o} follows {name}[{}] = {}",
                i - 1,
                offsets[i - 1]
            )));
        }
        out.push(o as usize);
    }
    Ok(out)
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
    /// start at 0, never decrease and end at `values.len()`. `names` are the
    /// caller's names of the two arrays, for the error message.
    pub fn from_parts(values: Vec<i64>, offsets: Vec<i64>, names: [&str; 2]) -> Result<Rows> {
        let [values_name, offsets_name] = names;
        let checked = checked_offsets(&offsets, offsets_name, "rows")?;
        let last = offsets[offsets.len() - 1];
        if usize::try_from(last) != Ok(values.len()) {
            return Err(EngineError::new(format!(
                "the last offset, {offsets_name}[-1] = {last}, must equal the length of {values_name} ({})",
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
    let needed = rows.checked_mul(len);
    if needed != Some(ids.len()) || needed != Some(mask.len()) {
        return Err(EngineError::new(format!(
            "input_ids has {} values and attention_mask {}, but a {rows}x{len} batch needs {rows}x{len}",
            ids.len(),
            mask.len(),
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

/// The padded length for `rows`: exactly `max_length` when given (an error
/// if a row is longer), otherwise the longest row's length, then rounded up to
/// a multiple of `pad_to_multiple_of`. The batch it makes must stay within
/// [`MAX_ELEMENTS`](crate::limits::MAX_ELEMENTS); an error names the argument.
pub fn padded_length(
    rows: &Rows,
    max_length: Option<usize>,
    pad_to_multiple_of: Option<usize>,
) -> Result<usize> {
    let n = rows.len();
    let len = match max_length {
        Some(max) => {
            if let Some(i) = (0..n).find(|&i| rows.row(i).len() > max) {
                return Err(EngineError::new(format!(
                    "sample {i} has {} tokens, more than max_length={max}; truncate it first or raise max_length",
                    rows.row(i).len()
                )));
            }
            batch_elements(n, max, || {
                format!("max_length={max} makes a batch of {n} rows of {max} tokens")
            })?;
            max
        }
        None => {
            let longest = rows.max_len();
            batch_elements(n, longest, || {
                format!("padding {n} rows to the longest row ({longest} tokens)")
            })?;
            longest
        }
    };
    let Some(k) = pad_to_multiple_of else {
        return Ok(len);
    };
    if k == 0 {
        return Err(EngineError::new(
            "pad_to_multiple_of must be at least 1, got 0",
        ));
    }
    let rounded = len.div_ceil(k).checked_mul(k);
    let what = || {
        format!(
            "pad_to_multiple_of={k} rounds the length {len} up to {} for {n} rows",
            rounded.map_or("more than usize::MAX".to_string(), |r| r.to_string())
        )
    };
    let rounded = rounded.ok_or_else(|| too_large(what()))?;
    batch_elements(n, rounded, what)?;
    Ok(rounded)
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
    let mut ids = filled(pad_value, n * len, "the padded input_ids")?;
    let mut mask = filled(0, n * len, "the padded attention_mask")?;
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
    fn huge_lengths_are_errors_naming_the_argument() {
        let rows = Rows::from_slices(&[vec![1, 2, 3], vec![4]]);
        for max in [1 << 40, 1 << 62, usize::MAX] {
            let err = pad(&rows, 0, Side::Right, Some(max), None).unwrap_err();
            assert!(err.0.contains(&format!("max_length={max}")), "{err}");
        }
        for k in [1 << 40, 1 << 62, usize::MAX, usize::MAX / 2 + 1] {
            let err = pad(&rows, 0, Side::Left, None, Some(k)).unwrap_err();
            assert!(err.0.contains(&format!("pad_to_multiple_of={k}")), "{err}");
            assert!(err.0.contains("limit"), "{err}");
        }
        // An empty batch of a huge length is still refused.
        assert!(pad(
            &Rows::from_slices::<Vec<i64>>(&[]),
            0,
            Side::Right,
            Some(1 << 62),
            None
        )
        .is_err());
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
        let parts = |v: Vec<i64>, o: Vec<i64>| Rows::from_parts(v, o, ["values", "offsets"]);
        assert!(parts(vec![1, 2], vec![0, 2]).is_ok());
        assert!(parts(vec![1, 2], vec![0, 3]).is_err());
        assert!(parts(vec![1, 2], vec![1, 2]).is_err());
        assert!(parts(vec![], vec![]).is_err());
        assert!(parts(vec![1, 2], vec![0, -1, 2]).is_err());
        assert!(parts(vec![1, 2], vec![0, i64::MAX, 2]).is_err());
        assert!(parts(vec![1, 2], vec![0, 2, i64::MIN]).is_err());
        assert_eq!(parts(vec![], vec![0]).unwrap().len(), 0);
        let err = Rows::from_parts(vec![1, 2], vec![0, 2, 1], ["reply_values", "reply_offsets"])
            .unwrap_err();
        assert!(
            err.0
                .contains("reply_offsets[2] = 1 follows reply_offsets[1] = 2"),
            "{err}"
        );
        let err = Rows::from_parts(vec![1, 2], vec![0, 1], ["reply_values", "reply_offsets"])
            .unwrap_err();
        assert!(err.0.contains("length of reply_values (2)"), "{err}");
    }
}
