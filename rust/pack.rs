//! Sequence packing: documents (whole samples) grouped into rows of at most a
//! given number of tokens by first-fit or best-fit decreasing, and the layout
//! of the packed rows (which token sits in which column, its label, its
//! position within its document, and the segment boundaries FlashAttention's
//! varlen kernels take).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

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
    let (order, offsets) = pack_flat(lengths, capacity, strategy)?;
    Ok(offsets
        .windows(2)
        .map(|w| order[w[0]..w[1]].to_vec())
        .collect())
}

/// Rooms up to this many tokens are indexed densely (one slot per possible
/// room); larger capacities use an ordered set of `(room, bin)`.
const DENSE_ROOMS: usize = 1 << 20;

/// [`pack_bins`] in flat form `(order, bin_offsets)`: bin `b` holds
/// `order[bin_offsets[b]..bin_offsets[b + 1]]`. O(n log n) for both
/// strategies; with `capacity` up to [`DENSE_ROOMS`] the documents are
/// ordered by a counting sort and best fit finds its bin through a bit index
/// over the rooms (O(log₆₄ capacity) per document).
pub fn pack_flat(
    lengths: &[usize],
    capacity: usize,
    strategy: Strategy,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if capacity == 0 {
        return Err(EngineError::new("capacity must be at least 1, got 0"));
    }
    if let Some(i) = lengths.iter().position(|&n| n > capacity) {
        return Err(EngineError::new(format!(
            "document {i} has {} tokens, more than the row capacity of {capacity}; it cannot be packed whole (drop or truncate it first)",
            lengths[i]
        )));
    }
    // Dense indexes pay O(capacity) to set up: worth it for many documents.
    let dense = capacity <= DENSE_ROOMS && capacity <= 8 * lengths.len() + 4096;
    pack_with(lengths, capacity, strategy, dense)
}

fn pack_with(
    lengths: &[usize],
    capacity: usize,
    strategy: Strategy,
    dense: bool,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let order = decreasing(lengths, capacity, dense);
    // bin_of[k]: the bin of the k-th document placed.
    let mut bin_of: Vec<usize> = Vec::with_capacity(order.len());
    let mut bins = 0usize;
    match strategy {
        Strategy::BestFit if dense => {
            let mut rooms = DenseRooms::new(capacity);
            for &doc in &order {
                let n = lengths[doc];
                let bin = match rooms.take_at_least(n) {
                    Some((room, bin)) => {
                        rooms.put(room - n, bin);
                        bin
                    }
                    None => {
                        rooms.put(capacity - n, bins);
                        bins += 1;
                        bins - 1
                    }
                };
                bin_of.push(bin);
            }
        }
        Strategy::BestFit => {
            // (room left, bin): the smallest room >= length is the best fit.
            let mut rooms: BTreeSet<(usize, usize)> = BTreeSet::new();
            for &doc in &order {
                let n = lengths[doc];
                let bin = match rooms.range((n, 0)..).next().copied() {
                    Some((room, bin)) => {
                        rooms.remove(&(room, bin));
                        rooms.insert((room - n, bin));
                        bin
                    }
                    None => {
                        rooms.insert((capacity - n, bins));
                        bins += 1;
                        bins - 1
                    }
                };
                bin_of.push(bin);
            }
        }
        Strategy::FirstFit => {
            let mut rooms = MaxTree::new(lengths.len().max(1));
            for &doc in &order {
                let n = lengths[doc];
                let bin = match rooms.first_at_least(n) {
                    Some(bin) if bin < bins => {
                        rooms.set(bin, rooms.get(bin) - n);
                        bin
                    }
                    _ => {
                        rooms.set(bins, capacity - n);
                        bins += 1;
                        bins - 1
                    }
                };
                bin_of.push(bin);
            }
        }
    }
    // Group by bin, keeping placement order within each bin (a stable counting sort).
    let mut offsets = vec![0usize; bins + 1];
    for &b in &bin_of {
        offsets[b + 1] += 1;
    }
    for b in 0..bins {
        offsets[b + 1] += offsets[b];
    }
    let mut next = offsets[..bins].to_vec();
    let mut flat = vec![0usize; order.len()];
    for (&doc, &b) in order.iter().zip(&bin_of) {
        flat[next[b]] = doc;
        next[b] += 1;
    }
    Ok((flat, offsets))
}

/// Document indices longest first, ties by index: a counting sort when the
/// lengths are densely indexable, else a comparison sort.
fn decreasing(lengths: &[usize], capacity: usize, dense: bool) -> Vec<usize> {
    if !dense {
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        order.sort_unstable_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
        return order;
    }
    // starts[capacity - n]: where documents of length n begin (longest first).
    let mut starts = vec![0usize; capacity + 2];
    for &n in lengths {
        starts[capacity - n + 1] += 1;
    }
    for k in 0..=capacity {
        starts[k + 1] += starts[k];
    }
    let mut order = vec![0usize; lengths.len()];
    for (doc, &n) in lengths.iter().enumerate() {
        let slot = &mut starts[capacity - n];
        order[*slot] = doc;
        *slot += 1;
    }
    order
}

/// Open bins by room left, for best fit over rooms `0..=capacity`: each room
/// keeps its bins in a min-heap (the lowest-numbered bin is taken first, as
/// the ordered `(room, bin)` set does), and a 64-ary bit index over the rooms
/// that hold a bin finds the smallest room >= n in O(log₆₄ capacity).
struct DenseRooms {
    heaps: Vec<BinaryHeap<Reverse<usize>>>,
    /// `levels[0]`: one bit per room; `levels[k + 1]`: one bit per word of `levels[k]`.
    levels: Vec<Vec<u64>>,
}

impl DenseRooms {
    fn new(capacity: usize) -> DenseRooms {
        let mut levels = Vec::new();
        let mut bits = capacity + 1;
        loop {
            let words = bits.div_ceil(64);
            levels.push(vec![0u64; words]);
            if words == 1 {
                break;
            }
            bits = words;
        }
        DenseRooms {
            heaps: (0..=capacity).map(|_| BinaryHeap::new()).collect(),
            levels,
        }
    }

    fn put(&mut self, room: usize, bin: usize) {
        self.heaps[room].push(Reverse(bin));
        let mut i = room;
        for level in &mut self.levels {
            let (word, bit) = (i / 64, i % 64);
            let was = level[word];
            level[word] |= 1 << bit;
            if was != 0 {
                break;
            }
            i = word;
        }
    }

    /// Removes and returns the lowest-numbered bin of the smallest room >= n.
    fn take_at_least(&mut self, n: usize) -> Option<(usize, usize)> {
        let room = self.next_at_least(n)?;
        let Reverse(bin) = self.heaps[room].pop()?;
        if self.heaps[room].is_empty() {
            let mut i = room;
            for level in &mut self.levels {
                let (word, bit) = (i / 64, i % 64);
                level[word] &= !(1u64 << bit);
                if level[word] != 0 {
                    break;
                }
                i = word;
            }
        }
        Some((room, bin))
    }

    /// The smallest set position >= n over the bit index.
    fn next_at_least(&self, n: usize) -> Option<usize> {
        // Climb until a word holds a set bit at or after the position, then descend.
        let mut i = n;
        let mut depth = 0;
        loop {
            let level = self.levels.get(depth)?;
            let word = i / 64;
            if word >= level.len() {
                return None;
            }
            let masked = level[word] & (u64::MAX << (i % 64));
            if masked != 0 {
                i = word * 64 + masked.trailing_zeros() as usize;
                break;
            }
            i = word + 1;
            depth += 1;
        }
        while depth > 0 {
            depth -= 1;
            let w = self.levels[depth][i];
            i = i * 64 + w.trailing_zeros() as usize;
        }
        Some(i)
    }
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

    /// Best/first fit decreasing by definition: scan every open bin.
    fn naive(lengths: &[usize], capacity: usize, strategy: Strategy) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
        let mut bins: Vec<Vec<usize>> = Vec::new();
        let mut rooms: Vec<usize> = Vec::new();
        for doc in order {
            let n = lengths[doc];
            let fits = (0..bins.len()).filter(|&b| rooms[b] >= n);
            let chosen = match strategy {
                Strategy::FirstFit => fits.min(),
                Strategy::BestFit => fits.min_by_key(|&b| (rooms[b], b)),
            };
            match chosen {
                Some(b) => {
                    rooms[b] -= n;
                    bins[b].push(doc);
                }
                None => {
                    rooms.push(capacity - n);
                    bins.push(vec![doc]);
                }
            }
        }
        bins
    }

    proptest::proptest! {
        #[test]
        fn dense_and_ordered_indexes_agree_with_the_definition(
            capacity in 1usize..300,
            raw in proptest::collection::vec(0usize..1000, 0..400),
        ) {
            let lengths: Vec<usize> = raw.iter().map(|&n| n % (capacity + 1)).collect();
            for s in [Strategy::BestFit, Strategy::FirstFit] {
                let want = naive(&lengths, capacity, s);
                for dense in [true, false] {
                    let (order, offsets) = pack_with(&lengths, capacity, s, dense).unwrap();
                    let got: Vec<Vec<usize>> =
                        offsets.windows(2).map(|w| order[w[0]..w[1]].to_vec()).collect();
                    proptest::prop_assert_eq!(&got, &want);
                }
                proptest::prop_assert_eq!(pack_bins(&lengths, capacity, s).unwrap(), want);
            }
        }
    }

    #[test]
    fn dense_rooms_find_the_smallest_room_at_least_n() {
        let mut rooms = DenseRooms::new(70_000);
        assert_eq!(rooms.take_at_least(0), None);
        rooms.put(69_999, 3);
        rooms.put(5, 1);
        rooms.put(5, 0);
        rooms.put(4_100, 2);
        assert_eq!(rooms.take_at_least(6), Some((4_100, 2)));
        assert_eq!(rooms.take_at_least(5), Some((5, 0)));
        assert_eq!(rooms.take_at_least(0), Some((5, 1)));
        assert_eq!(rooms.take_at_least(0), Some((69_999, 3)));
        assert_eq!(rooms.take_at_least(0), None);
        rooms.put(70_000, 4);
        assert_eq!(rooms.take_at_least(70_000), Some((70_000, 4)));
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
