//! Truncation that never cuts a media block.

use crate::batch::Rows;
use crate::error::{EngineError, Result};
use crate::token_set::TokenSet;

/// What makes up a media block. A block runs from an `open` id through the
/// next `close` id (an id in both sets closes an open block and opens a shut
/// one; a block never closed runs to the end of the row), whatever lies
/// between (placeholders, row and column tokens). Outside delimited blocks, a
/// run of `media` ids is a block of its own: families without delimiters
/// list their row/column tokens among the media ids.
#[derive(Debug, Clone, Default)]
pub struct MediaBlocks {
    media: TokenSet,
    open: TokenSet,
    close: TokenSet,
}

impl MediaBlocks {
    /// Blocks made of `media` ids, delimited by `open` and `close` ids when
    /// a family has them (both given or neither).
    pub fn new(media: &[i64], open: &[i64], close: &[i64]) -> Result<MediaBlocks> {
        if open.is_empty() != close.is_empty() {
            return Err(EngineError::new(format!(
                "block_open_ids and block_close_ids must both be given or both be empty; got {} open and {} close ids",
                open.len(),
                close.len()
            )));
        }
        Ok(MediaBlocks {
            media: TokenSet::new(media.iter().copied()),
            open: TokenSet::new(open.iter().copied()),
            close: TokenSet::new(close.iter().copied()),
        })
    }

    /// Whether `row` can be cut before `cut` with every media block ending at
    /// or before the cut (none split, none dropped).
    fn ends_by(&self, row: &[i64], cut: usize) -> bool {
        let mut inside = false;
        for &t in &row[..cut] {
            if inside {
                inside = !self.close.contains(t);
            } else {
                inside = self.open.contains(t);
            }
        }
        !inside
            && !row[cut..]
                .iter()
                .any(|&t| self.media.contains(t) || self.open.contains(t))
    }
}

/// How long each row may stay when cut to `max_length` tokens from the right:
/// `Some(len)` per row (its own length when it fits), or `None` for a row that
/// cannot be cut there because a media block would be split or dropped.
pub fn fitted_lengths(rows: &Rows, max_length: usize, blocks: &MediaBlocks) -> Vec<Option<usize>> {
    (0..rows.len())
        .map(|r| {
            let row = rows.row(r);
            if row.len() <= max_length {
                Some(row.len())
            } else {
                blocks.ends_by(row, max_length).then_some(max_length)
            }
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

    fn media_only(ids: &[i64]) -> MediaBlocks {
        MediaBlocks::new(ids, &[], &[]).unwrap()
    }

    #[test]
    fn media_past_the_limit_cannot_be_fitted() {
        let rows = Rows::from_slices(&[
            vec![1, 2, 3, 4],
            vec![1, 9, 2, 3],
            vec![1, 2, 3, 9],
            vec![5],
        ]);
        assert_eq!(
            fitted_lengths(&rows, 3, &media_only(&[9])),
            vec![Some(3), Some(3), None, Some(1)]
        );
        let cut = truncate_rows(&rows, &[3, 3, 4, 1]).unwrap();
        assert_eq!(cut.row(0), &[1, 2, 3]);
        assert_eq!(cut.row(2), &[1, 2, 3, 9]);
        assert!(truncate_rows(&rows, &[5, 0, 0, 0]).is_err());
        assert!(truncate_rows(&rows, &[1]).is_err());
    }

    // Qwen2-VL style: <|vision_start|> <|image_pad|>… <|vision_end|>.
    const OPEN: i64 = 151_652;
    const PAD: i64 = 151_655;
    const CLOSE: i64 = 151_653;

    #[test]
    fn a_cut_before_the_closing_delimiter_drops_the_row() {
        let blocks = MediaBlocks::new(&[PAD], &[OPEN], &[CLOSE]).unwrap();
        let rows = Rows::from_slices(&[vec![1, OPEN, PAD, PAD, CLOSE, 2, 3]]);
        // Just past the last placeholder: the closing delimiter would be cut.
        assert_eq!(fitted_lengths(&rows, 4, &blocks), vec![None]);
        // The placeholders alone would have allowed it.
        assert_eq!(fitted_lengths(&rows, 4, &media_only(&[PAD])), vec![Some(4)]);
        assert_eq!(fitted_lengths(&rows, 5, &blocks), vec![Some(5)]);
        assert_eq!(fitted_lengths(&rows, 6, &blocks), vec![Some(6)]);
        // Inside the block, or before it (dropping it): no.
        for cut in 0..4 {
            assert_eq!(fitted_lengths(&rows, cut, &blocks), vec![None], "cut {cut}");
        }
    }

    #[test]
    fn row_tokens_inside_a_block_and_blocks_never_closed() {
        const ROW_SEP: i64 = 77;
        let blocks = MediaBlocks::new(&[PAD], &[OPEN], &[CLOSE]).unwrap();
        let rows = Rows::from_slices(&[
            vec![OPEN, PAD, ROW_SEP, PAD, ROW_SEP, CLOSE, ROW_SEP, 5],
            vec![1, 2, OPEN, PAD, PAD, 3],
        ]);
        // Row 0: cutting at a row separator inside the block is refused;
        // one after the block is plain text.
        assert_eq!(fitted_lengths(&rows, 3, &blocks)[0], None);
        assert_eq!(fitted_lengths(&rows, 7, &blocks)[0], Some(7));
        // Row 1: an unclosed block runs to the end of the row.
        assert_eq!(fitted_lengths(&rows, 5, &blocks)[1], None);
        assert_eq!(fitted_lengths(&rows, 2, &blocks)[1], None);
    }

    #[test]
    fn one_id_that_both_opens_and_closes() {
        const FAKE: i64 = 49_189; // Idefics3 <fake_token_around_image>
        let blocks = MediaBlocks::new(&[PAD], &[FAKE], &[FAKE]).unwrap();
        let rows = Rows::from_slices(&[vec![1, FAKE, PAD, FAKE, 2, FAKE, PAD, FAKE, 3]]);
        assert_eq!(fitted_lengths(&rows, 4, &blocks), vec![None]);
        assert_eq!(fitted_lengths(&rows, 5, &blocks), vec![None]);
        assert_eq!(fitted_lengths(&rows, 8, &blocks), vec![Some(8)]);
        assert_eq!(fitted_lengths(&rows, 7, &blocks), vec![None]);
    }

    #[test]
    fn delimiters_come_in_pairs_and_huge_ids_are_ids() {
        assert!(MediaBlocks::new(&[PAD], &[OPEN], &[]).is_err());
        assert!(MediaBlocks::new(&[PAD], &[], &[CLOSE]).is_err());
        let blocks = MediaBlocks::new(&[1 << 62], &[i64::MAX], &[i64::MIN]).unwrap();
        let rows = Rows::from_slices(&[vec![1, i64::MAX, 1 << 62, i64::MIN, 2]]);
        assert_eq!(fitted_lengths(&rows, 3, &blocks), vec![None]);
        assert_eq!(fitted_lengths(&rows, 4, &blocks), vec![Some(4)]);
        assert_eq!(fitted_lengths(&rows, usize::MAX, &blocks), vec![Some(5)]);
    }
}
