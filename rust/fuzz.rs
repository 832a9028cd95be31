//! Property-based fuzzing of every engine entry point (proptest): on arbitrary
//! input each returns a result or an error, never panics, and keeps its
//! invariants. `PROPTEST_CASES` sets the number of cases per entry point.

use proptest::prelude::*;

use crate::batch::{pad, unpad, Rows, Side};
use crate::expand::{expand_placeholders, tokens_per_grid};
use crate::labels::{labels_from_contents, labels_from_markers, ContentQuery, Markers};
use crate::pattern::find_subsequence;
use crate::truncate::{fitted_lengths, truncate_rows};
use crate::IGNORE_INDEX;

fn ids(max: usize) -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(-2i64..6, 0..max)
}

fn seqs(n: usize, max: usize) -> impl Strategy<Value = Vec<Vec<i64>>> {
    prop::collection::vec(ids(max), 0..n)
}

proptest! {
    #[test]
    fn find_subsequence_never_panics(h in ids(64), p in ids(6), start in 0usize..80, flag: bool) {
        if let Some((s, e)) = find_subsequence(&h, &p, start, flag) {
            prop_assert!(s >= start && e <= h.len() && e - s == p.len());
            if !flag {
                prop_assert_eq!(&h[s..e], &p[..]);
            }
        }
    }

    #[test]
    fn labels_from_markers_never_panics(
        flat in ids(96), mask in prop::collection::vec(0i64..2, 0..96),
        rows in 0usize..6, len in 0usize..20,
        starts in seqs(3, 4), ends in seqs(3, 3), ignore in ids(3),
    ) {
        let markers = Markers { starts, ends, ignore };
        if let Ok((labels, found)) = labels_from_markers(&flat, &mask, rows, len, &markers) {
            prop_assert_eq!(labels.len(), rows * len);
            prop_assert_eq!(found.len(), rows);
            for (i, &l) in labels.iter().enumerate() {
                prop_assert!(l == IGNORE_INDEX || (l == flat[i] && mask[i] != 0));
            }
        }
    }

    #[test]
    fn labels_from_contents_never_panics(
        flat in ids(96), mask in prop::collection::vec(0i64..2, 0..96),
        rows in 0usize..6, len in 0usize..20, replies in seqs(8, 5),
        per_row in prop::collection::vec(0usize..4, 0..6),
        stops in ids(2), headers in seqs(2, 3),
    ) {
        let query = ContentQuery {
            replies: Rows::from_slices(&replies),
            replies_per_row: per_row,
            stop_ids: stops,
            headers,
            ignore: vec![],
        };
        if let Ok((labels, located)) = labels_from_contents(&flat, &mask, rows, len, &query) {
            prop_assert_eq!(labels.len(), rows * len);
            for (r, &n) in located.iter().enumerate() {
                prop_assert!(n <= query.replies_per_row[r]);
            }
        }
    }

    #[test]
    fn pad_and_unpad_never_panic(
        values in ids(64), offsets in prop::collection::vec(-1i64..70, 0..8),
        side in prop::bool::ANY, max_length in prop::option::of(0usize..40),
        multiple in prop::option::of(0usize..9),
    ) {
        let side = if side { Side::Left } else { Side::Right };
        if let Ok(rows) = Rows::from_parts(values, offsets) {
            if let Ok(padded) = pad(&rows, 0, side, max_length, multiple) {
                prop_assert_eq!(padded.ids.len(), padded.rows * padded.len);
                let back = unpad(&padded.ids, &padded.mask, padded.rows, padded.len).unwrap();
                prop_assert_eq!(back, rows);
            }
        }
    }

    #[test]
    fn expansion_never_panics(
        rows in seqs(5, 12), counts in prop::collection::vec(-1i64..6, 0..8),
        per_row in prop::collection::vec(-1i64..4, 0..6),
    ) {
        let rows = Rows::from_slices(&rows);
        if let Ok(out) = expand_placeholders(&rows, 3, &counts, &per_row) {
            let want: i64 = counts.iter().sum();
            let got = out.values.iter().filter(|&&t| t == 3).count() as i64;
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn grids_never_panic(grids in prop::collection::vec(prop::array::uniform3(-2i64..9), 0..6),
                         mh in -1i64..4, mw in -1i64..4) {
        if let Ok(counts) = tokens_per_grid(&grids, (mh, mw)) {
            prop_assert!(counts.iter().all(|&c| c > 0));
        }
    }

    #[test]
    fn truncation_never_panics(rows in seqs(5, 12), max_length in 0usize..14, media in ids(2),
                               lengths in prop::collection::vec(0usize..14, 0..6)) {
        let rows = Rows::from_slices(&rows);
        let fitted = fitted_lengths(&rows, max_length, &media);
        prop_assert_eq!(fitted.len(), rows.len());
        let keep: Vec<usize> = fitted.iter().zip(0..).map(|(f, r)| f.unwrap_or(rows.row(r).len())).collect();
        let cut = truncate_rows(&rows, &keep).unwrap();
        for (r, &k) in keep.iter().enumerate() {
            prop_assert_eq!(cut.row(r), &rows.row(r)[..k]);
        }
        let _ = truncate_rows(&rows, &lengths);
    }
}
