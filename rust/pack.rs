//! Sequence packing: documents (whole samples) grouped into rows of at most a
//! given number of tokens by first-fit or best-fit decreasing, and the layout
//! of the packed rows (which token sits in which column, its label, its
//! position within its document, and the segment boundaries FlashAttention's
//! varlen kernels take).

use std::collections::BTreeSet;

use crate::batch::checked_offsets;
use crate::error::{EngineError, Result};
use crate::limits::{batch_elements, filled, with_capacity};

/// How a document chooses its row, documents taken longest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The first row with room.
    FirstFit,
    /// The row with the least room that still fits.
    BestFit,
}

impl Strategy {
    /// Parses `"first_fit"` or `"best_fit"`.
    pub fn parse(name: &str) -> Result<Strategy> {
        match name {
            "first_fit" => Ok(Strategy::FirstFit),
            "best_fit" => Ok(Strategy::BestFit),
            other => Err(EngineError::new(format!(
                "strategy must be 'first_fit' or 'best_fit', got '{other}'"
            ))),
        }
    }
}

/// Groups documents of `lengths` into bins of at most `capacity` tokens.
/// Documents are placed longest first (ties by index), each whole; bins are
/// numbered in the order they open and list their documents in placement
/// order. Deterministic. A document longer than `capacity` is an error
/// naming it.
pub fn pack_bins(
    lengths: &[usize],
    capacity: usize,
    strategy: Strategy,
) -> Result<Vec<Vec<usize>>> {
    if capacity == 0 {
        return Err(EngineError::new("capacity must be at least 1, got 0"));
    }
    if let Some(i) = lengths.iter().position(|&n| n > capacity) {
        return Err(EngineError::new(format!(
            "document {i} has {} tokens, more than the row capacity of {capacity}; it cannot be packed whole (drop or truncate it first)",
            lengths[i]
        )));
    }
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut bins: Vec<Vec<usize>> = Vec::new();
    match strategy {
        Strategy::BestFit => {
            // (room left, bin): the smallest room >= length is the best fit.
            let mut rooms: BTreeSet<(usize, usize)> = BTreeSet::new();
            for &doc in &order {
                let n = lengths[doc];
                match rooms.range((n, 0)..).next().copied() {
                    Some((room, bin)) => {
                        rooms.remove(&(room, bin));
                        rooms.insert((room - n, bin));
                        bins[bin].push(doc);
                    }
                    None => {
                        rooms.insert((capacity - n, bins.len()));
                        bins.push(vec![doc]);
                    }
                }
            }
        }
        Strategy::FirstFit => {
            let mut rooms = MaxTree::new(lengths.len().max(1));
            for &doc in &order {
                let n = lengths[doc];
                match rooms.first_at_least(n) {
                    Some(bin) if bin < bins.len() => {
                        rooms.set(bin, rooms.get(bin) - n);
                        bins[bin].push(doc);
                    }
                    _ => {
                        rooms.set(bins.len(), capacity - n);
                        bins.push(vec![doc]);
                    }
                }
            }
        }
    }
    Ok(bins)
}

/// A max segment tree over bin rooms: the leftmost bin with room >= n in
/// O(log bins). Unopened bins hold 0 and are never chosen for n > 0; for
/// n = 0 the caller checks the bin is open.
struct MaxTree {
    size: usize,
    tree: Vec<usize>,
}

impl MaxTree {
    fn new(n: usize) -> MaxTree {
        let size = n.next_power_of_two();
        MaxTree {
            size,
            tree: vec![0; 2 * size],
        }
    }

    fn get(&self, i: usize) -> usize {
        self.tree[self.size + i]
    }

    fn set(&mut self, i: usize, value: usize) {
        let mut k = self.size + i;
        self.tree[k] = value;
        while k > 1 {
            k /= 2;
            self.tree[k] = self.tree[2 * k].max(self.tree[2 * k + 1]);
        }
    }

    fn first_at_least(&self, n: usize) -> Option<usize> {
        if self.tree[1] < n {
            return None;
        }
        let mut k = 1;
        while k < self.size {
            k = if self.tree[2 * k] >= n {
                2 * k
            } else {
                2 * k + 1
            };
        }
        Some(k - self.size)
    }
}

/// Bins from their flat form: bin `b` holds `order[bin_offsets[b]..bin_offsets[b + 1]]`.
pub fn bins_from_parts(order: &[i64], bin_offsets: &[i64]) -> Result<Vec<Vec<usize>>> {
    let bounds = checked_offsets(bin_offsets, "bin_offsets", "bins")?;
    if bounds.last() != Some(&order.len()) {
        return Err(EngineError::new(format!(
            "the last entry of bin_offsets ({:?}) must equal the length of order ({})",
            bin_offsets.last(),
            order.len()
        )));
    }
    let docs = order
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            usize::try_from(d).map_err(|_| {
                EngineError::new(format!("order[{i}] must be a document index >= 0, got {d}"))
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    Ok(bounds
        .windows(2)
        .map(|w| docs[w[0]..w[1]].to_vec())
        .collect())
}

/// Bins in their flat form `(order, bin_offsets)`, as [`bins_from_parts`] reads them.
pub fn bins_to_parts(bins: &[Vec<usize>]) -> (Vec<i64>, Vec<i64>) {
    let mut order = Vec::with_capacity(bins.iter().map(Vec::len).sum());
    let mut offsets = Vec::with_capacity(bins.len() + 1);
    offsets.push(0);
    for bin in bins {
        order.extend(bin.iter().map(|&d| d as i64));
        offsets.push(order.len() as i64);
    }
    (order, offsets)
}

/// Where each token of a packed batch comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub rows: usize,
    pub width: usize,
    /// `rows × width`: the index (into the documents' values laid end to end)
    /// of the token in each column, or -1 for padding.
    pub source: Vec<i64>,
    /// `rows × width`: the index of the label in each column, or -1 where the
    /// label is ignored (padding, and wherever it would cross into the next
    /// document).
    pub label_source: Vec<i64>,
    /// `rows × width`: the position of each token in its document (0 at a
    /// document's first token); each row's padding is one more run from 0.
    pub positions: Vec<i64>,
    /// Boundaries of the segments (documents, then each row's padding run) over
    /// the flattened `rows × width` tokens, from 0 to `rows · width`.
    pub cu_seq_lens: Vec<i64>,
    /// Per document in packed order: `(document, row, first column, columns)`.
    pub spans: Vec<[i64; 4]>,
}

/// The layout of `bins` of documents (document `d` is
/// `values[offsets[d]..offsets[d + 1]]`) in rows of `width` columns.
///
/// Without `shift`, column `c` holds the row's `c`-th token and its own label
/// (the model shifts), except that each document's first label is ignored, so
/// no position learns to predict across a boundary. With `shift` (the seed's
/// pre-shift), column `c` holds token `c` and the label of token `c + 1`,
/// ignored where token `c + 1` opens the next document; a row may then hold
/// `width + 1` tokens, its last one only as a label.
pub fn packed_layout(
    offsets: &[usize],
    bins: &[Vec<usize>],
    width: usize,
    shift: bool,
) -> Result<Layout> {
    let docs = offsets.len().saturating_sub(1);
    let rows = bins.len();
    let cells = batch_elements(rows, width, || {
        format!("packing {rows} rows of width={width}")
    })?;
    let mut seen = filled(0, docs, "the packed documents")?;
    let mut source = filled(-1, cells, "the packed layout")?;
    let mut label_source = filled(-1, cells, "the packed labels")?;
    let mut positions = filled(0, cells, "the packed positions")?;
    let mut cu_seq_lens = with_capacity(docs + rows + 1, "cu_seq_lens")?;
    let mut spans = Vec::new();
    cu_seq_lens.push(0i64);
    let room = width + usize::from(shift);
    for (r, bin) in bins.iter().enumerate() {
        let base = r * width;
        // Unshifted row: the documents back to back; `doc_start[c]` marks openings.
        let mut col = 0usize;
        for &d in bin {
            if d >= docs {
                return Err(EngineError::new(format!(
                    "row {r} names document {d}, but there are {docs} documents"
                )));
            }
            if seen[d] != 0 {
                return Err(EngineError::new(format!(
                    "document {d} is placed twice (again in row {r}); each document goes in one row"
                )));
            }
            seen[d] = 1;
            let (start, end) = (offsets[d], offsets[d + 1]);
            let n = end - start;
            if col + n > room {
                return Err(EngineError::new(format!(
                    "row {r} holds more than {room} tokens with document {d} ({n} tokens); width={width} is too small for this packing"
                )));
            }
            let visible = n.min(width.saturating_sub(col));
            for k in 0..visible {
                let c = base + col + k;
                source[c] = (start + k) as i64;
                positions[c] = k as i64;
            }
            // Column c holds the label of token c (unshifted) or c + 1 (shifted); a
            // document's first token is never a label, so nothing predicts across.
            for k in 1..n {
                let c = col + k - usize::from(shift);
                if c < width {
                    label_source[base + c] = (start + k) as i64;
                }
            }
            if visible > 0 {
                cu_seq_lens.push(cu_seq_lens[cu_seq_lens.len() - 1] + visible as i64);
            }
            spans.push([d as i64, r as i64, col as i64, visible as i64]);
            col += n;
        }
        let used = col.min(width);
        for (k, p) in positions[base + used..base + width].iter_mut().enumerate() {
            *p = k as i64;
        }
        if used < width {
            cu_seq_lens.push(cu_seq_lens[cu_seq_lens.len() - 1] + (width - used) as i64);
        }
    }
    if let Some(d) = seen.iter().position(|&s| s == 0) {
        return Err(EngineError::new(format!(
            "document {d} is in no row; every document must be placed once"
        )));
    }
    Ok(Layout {
        rows,
        width,
        source,
        label_source,
        positions,
        cu_seq_lens,
        spans,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(bins: &[Vec<usize>], lengths: &[usize]) -> Vec<usize> {
        bins.iter()
            .map(|b| b.iter().map(|&d| lengths[d]).sum())
            .collect()
    }

    #[test]
    fn best_and_first_fit_decreasing() {
        let lengths = [5, 4, 3, 3, 2, 2, 1];
        let best = pack_bins(&lengths, 8, Strategy::BestFit).unwrap();
        assert_eq!(best, vec![vec![0, 2], vec![1, 3, 6], vec![4, 5]]);
        let first = pack_bins(&lengths, 8, Strategy::FirstFit).unwrap();
        assert_eq!(first, vec![vec![0, 2], vec![1, 3, 6], vec![4, 5]]);
        // A case where they differ: best fit fills the tighter bin.
        let lengths = [6, 5, 2];
        assert_eq!(
            pack_bins(&lengths, 8, Strategy::FirstFit).unwrap(),
            vec![vec![0, 2], vec![1]]
        );
        let lengths = [5, 4, 3];
        // rooms after 5 and 4 (4 does not fit with 5): 3 and 4; 3 goes to room 3 (best) or the first bin (first).
        assert_eq!(
            pack_bins(&lengths, 8, Strategy::BestFit).unwrap(),
            vec![vec![0, 2], vec![1]]
        );
        for s in [Strategy::BestFit, Strategy::FirstFit] {
            let lengths: Vec<usize> = (0..200).map(|i| (i * 37) % 61 + 1).collect();
            let bins = pack_bins(&lengths, 64, s).unwrap();
            assert!(sums(&bins, &lengths).iter().all(|&n| n <= 64));
            let mut all: Vec<usize> = bins.concat();
            all.sort();
            assert_eq!(all, (0..200).collect::<Vec<_>>());
        }
    }

    #[test]
    fn too_long_documents_and_zero_capacity_are_errors() {
        let err = pack_bins(&[3, 9], 8, Strategy::BestFit).unwrap_err();
        assert!(err.0.contains("document 1 has 9 tokens"), "{err}");
        assert!(pack_bins(&[1], 0, Strategy::FirstFit).is_err());
        assert_eq!(
            pack_bins(&[], 4, Strategy::FirstFit).unwrap(),
            Vec::<Vec<usize>>::new()
        );
        assert_eq!(
            pack_bins(&[0, 0, 4], 4, Strategy::FirstFit).unwrap(),
            vec![vec![2, 0, 1]]
        );
    }

    #[test]
    fn unshifted_layout_restarts_positions_and_ignores_first_labels() {
        // documents: [10 11 12], [20 21], [30]
        let offsets = [0, 3, 5, 6];
        let bins = vec![vec![0, 1], vec![2]];
        let l = packed_layout(&offsets, &bins, 6, false).unwrap();
        assert_eq!(l.source, vec![0, 1, 2, 3, 4, -1, 5, -1, -1, -1, -1, -1]);
        assert_eq!(
            l.label_source,
            vec![-1, 1, 2, -1, 4, -1, -1, -1, -1, -1, -1, -1]
        );
        assert_eq!(l.positions, vec![0, 1, 2, 0, 1, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(l.cu_seq_lens, vec![0, 3, 5, 6, 7, 12]);
        assert_eq!(l.spans, vec![[0, 0, 0, 3], [1, 0, 3, 2], [2, 1, 0, 1]]);
    }

    #[test]
    fn shifted_layout_never_predicts_across_a_boundary() {
        let offsets = [0, 3, 5];
        let bins = vec![vec![0, 1]];
        // 5 tokens, width 4: the last token only appears as a label.
        let l = packed_layout(&offsets, &bins, 4, true).unwrap();
        assert_eq!(l.source, vec![0, 1, 2, 3]);
        assert_eq!(l.label_source, vec![1, 2, -1, 4]);
        assert_eq!(l.positions, vec![0, 1, 2, 0]);
        assert_eq!(l.cu_seq_lens, vec![0, 3, 4]);
        assert_eq!(l.spans, vec![[0, 0, 0, 3], [1, 0, 3, 1]]);
        let err = packed_layout(&offsets, &bins, 3, true).unwrap_err();
        assert!(err.0.contains("more than 4 tokens"), "{err}");
    }

    #[test]
    fn flat_bins_round_trip_and_are_checked() {
        let bins = vec![vec![2, 0], vec![], vec![1]];
        let (order, offsets) = bins_to_parts(&bins);
        assert_eq!(order, vec![2, 0, 1]);
        assert_eq!(offsets, vec![0, 2, 2, 3]);
        assert_eq!(bins_from_parts(&order, &offsets).unwrap(), bins);
        assert!(bins_from_parts(&order, &[0, 2]).is_err());
        assert!(bins_from_parts(&[-1], &[0, 1]).is_err());
        assert!(bins_from_parts(&order, &[0, 3, 2, 3]).is_err());
        assert!(checked_offsets(&[1, 2], "doc_offsets", "documents").is_err());
        assert!(checked_offsets(&[], "doc_offsets", "documents").is_err());
    }

    #[test]
    fn bad_bins_are_errors() {
        let offsets = [0, 1, 2];
        assert!(packed_layout(&offsets, &[vec![0, 0]], 4, false).is_err());
        assert!(packed_layout(&offsets, &[vec![0]], 4, false).is_err());
        assert!(packed_layout(&offsets, &[vec![0, 1, 2]], 4, false).is_err());
        assert!(packed_layout(&offsets, &[vec![0, 1]], usize::MAX, false).is_err());
    }
}
