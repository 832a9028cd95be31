//! Assistant label masks: which tokens of a padded batch are training targets.
//!
//! Two strategies share one output: `-100` everywhere except on reply tokens.
//! * by markers: a reply runs from the end of an assistant-start marker up to
//!   and including the end-of-turn marker (or the end of the row when
//!   truncation cut it);
//! * by contents: each reply's own token sequence is searched for in order,
//!   then labelled with the stop token that follows it.

use crate::batch::{check_batch_shape, Rows};
use crate::error::{EngineError, Result};
use crate::limits::{filled, with_capacity};
use crate::pattern::{find_reply, find_subsequence, matches_at};
use crate::token_set::TokenSet;
use crate::IGNORE_INDEX;

/// Token sequences that open and close assistant replies.
#[derive(Debug, Clone, Default)]
pub struct Markers {
    /// Assistant-start sequences; where several match at one position the
    /// longest wins (a full header beats its stable prefix).
    pub starts: Vec<Vec<i64>>,
    /// End-of-turn sequences; they are labelled as part of the reply.
    pub ends: Vec<Vec<i64>>,
    /// Ids never labelled even inside a reply (media placeholders).
    pub ignore: Vec<i64>,
}

impl Markers {
    fn validate(&self) -> Result<()> {
        non_empty_markers(&self.starts, "starts", "assistant-start marker")?;
        non_empty_markers(&self.ends, "ends", "end-of-turn marker")
    }
}

/// Refuses an empty list of markers, or an empty marker, naming `name`.
fn non_empty_markers(markers: &[Vec<i64>], name: &str, what: &str) -> Result<()> {
    if markers.is_empty() {
        return Err(EngineError::new(format!(
            "{name} is empty: at least one {what} is needed"
        )));
    }
    if let Some(i) = markers.iter().position(Vec::is_empty) {
        return Err(EngineError::new(format!(
            "{name}[{i}] is empty: an {what} may not be empty"
        )));
    }
    Ok(())
}

/// Length of the longest pattern of `patterns` matching `row` at `at`.
fn longest_match(row: &[i64], patterns: &[Vec<i64>], at: usize) -> Option<usize> {
    patterns
        .iter()
        .filter(|p| p[0] == row[at] && matches_at(row, p, at))
        .map(Vec::len)
        .max()
}

/// The token sets a marker scan consults at every token.
struct MarkerSets {
    start_first: TokenSet,
    end_first: TokenSet,
    ignore: TokenSet,
    /// The three sets together: inside a reply, every other attended token is
    /// a plain target, copied in bulk.
    notable: TokenSet,
}

impl MarkerSets {
    fn new(markers: &Markers) -> MarkerSets {
        MarkerSets {
            start_first: TokenSet::new(markers.starts.iter().map(|p| p[0])),
            end_first: TokenSet::new(markers.ends.iter().map(|p| p[0])),
            ignore: TokenSet::new(markers.ignore.iter().copied()),
            notable: TokenSet::new(
                markers
                    .starts
                    .iter()
                    .chain(&markers.ends)
                    .map(|p| p[0])
                    .chain(markers.ignore.iter().copied()),
            ),
        }
    }
}

/// Length of the longest assistant-start marker beginning at the attended
/// position `at`, if any.
fn header_at(
    row: &[i64],
    mask: &[i64],
    markers: &Markers,
    sets: &MarkerSets,
    at: usize,
) -> Option<usize> {
    if mask[at] == 0 || !sets.start_first.contains(row[at]) {
        return None;
    }
    longest_match(row, &markers.starts, at)
}

/// Number of attended positions of `span` where an assistant-start marker begins.
fn headers_in(
    row: &[i64],
    mask: &[i64],
    markers: &Markers,
    sets: &MarkerSets,
    span: std::ops::Range<usize>,
) -> usize {
    span.filter(|&j| header_at(row, mask, markers, sets, j).is_some())
        .count()
}

/// What one row's marker scan found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RowScan {
    /// Replies opened (non-overlapping starts outside replies).
    replies: usize,
    /// Attended positions where any assistant-start marker begins, inside a
    /// reply or overlapping another marker included.
    headers: usize,
}

/// First position at or after `from` whose token and mask value satisfy `hit`.
#[inline]
fn first_from(
    row: &[i64],
    mask: &[i64],
    from: usize,
    hit: impl Fn(i64, i64) -> bool,
) -> Option<usize> {
    row[from..]
        .iter()
        .zip(&mask[from..])
        .position(|(&t, &m)| hit(t, m))
        .map(|p| from + p)
}

/// Labels one row by markers, writing into `out` (already `-100`). Every
/// position is examined once: the scan looks at each token outside the spans
/// of the markers it matched, and the tokens inside those spans are checked
/// for a header separately, so `headers` counts every header position.
fn label_row_by_markers(
    row: &[i64],
    mask: &[i64],
    markers: &Markers,
    sets: &MarkerSets,
    out: &mut [i64],
) -> RowScan {
    let mut scan = RowScan::default();
    let mut inside = false;
    let mut i = 0usize;
    while i < row.len() {
        if !inside {
            // Skip straight to the next attended token that can open a reply.
            match first_from(row, mask, i, |t, m| m != 0 && sets.start_first.contains(t)) {
                Some(j) => i = j,
                None => break,
            }
            match longest_match(row, &markers.starts, i) {
                Some(n) => {
                    inside = true;
                    scan.replies += 1;
                    scan.headers += 1 + headers_in(row, mask, markers, sets, i + 1..i + n);
                    i += n;
                }
                None => i += 1,
            }
            continue;
        }
        // Plain reply tokens up to the next padding or notable token are targets.
        let stop = first_from(row, mask, i, |t, m| m == 0 || sets.notable.contains(t))
            .unwrap_or(row.len());
        out[i..stop].copy_from_slice(&row[i..stop]);
        i = stop;
        if i == row.len() {
            break;
        }
        let token = row[i];
        if mask[i] == 0 {
            // Padding ends any reply and is never a target.
            inside = false;
            i += 1;
            continue;
        }
        if header_at(row, mask, markers, sets, i).is_some() {
            scan.headers += 1;
        }
        if let Some(n) = sets
            .end_first
            .contains(token)
            .then(|| longest_match(row, &markers.ends, i))
            .flatten()
        {
            for j in i..i + n {
                if mask[j] != 0 {
                    out[j] = row[j];
                }
            }
            scan.headers += headers_in(row, mask, markers, sets, i + 1..i + n);
            inside = false;
            i += n;
            continue;
        }
        if !sets.ignore.contains(token) {
            out[i] = token;
        }
        i += 1;
    }
    scan
}

/// A marker scan of a padded batch: the labels and two counts per row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarkerLabels {
    /// The `rows × len` labels.
    pub labels: Vec<i64>,
    /// Per row, the number of assistant replies found.
    pub found: Vec<usize>,
    /// Per row, the number of attended positions where an assistant-start
    /// marker (any of them, whole inside the row) begins, overlapping ones and
    /// ones inside replies included: a row whose count differs from its
    /// number of assistant messages holds header text a user typed, or lost a
    /// reply.
    pub headers: Vec<usize>,
}

/// Labels a padded `rows × len` batch by markers, counting per row the
/// replies found and the header positions, in one pass.
pub fn scan_markers(
    ids: &[i64],
    mask: &[i64],
    rows: usize,
    len: usize,
    markers: &Markers,
) -> Result<MarkerLabels> {
    check_batch_shape(ids, mask, rows, len)?;
    markers.validate()?;
    let sets = MarkerSets::new(markers);
    let mut labels = filled(IGNORE_INDEX, ids.len(), "the labels")?;
    let mut found = with_capacity(rows, "the replies found per row")?;
    let mut headers = with_capacity(rows, "the headers counted per row")?;
    for r in 0..rows {
        let span = r * len..(r + 1) * len;
        let scan = label_row_by_markers(
            &ids[span.clone()],
            &mask[span.clone()],
            markers,
            &sets,
            &mut labels[span],
        );
        found.push(scan.replies);
        headers.push(scan.headers);
    }
    Ok(MarkerLabels {
        labels,
        found,
        headers,
    })
}

/// Labels a padded `rows × len` batch by markers. Returns the labels and, per
/// row, the number of assistant replies found.
pub fn labels_from_markers(
    ids: &[i64],
    mask: &[i64],
    rows: usize,
    len: usize,
    markers: &Markers,
) -> Result<(Vec<i64>, Vec<usize>)> {
    let scan = scan_markers(ids, mask, rows, len, markers)?;
    Ok((scan.labels, scan.found))
}

/// What the content search needs besides the batch.
#[derive(Debug, Clone, Default)]
pub struct ContentQuery {
    /// All replies of all rows, in order.
    pub replies: Rows,
    /// How many of `replies` belong to each row.
    pub replies_per_row: Vec<usize>,
    /// Ids that may close a reply; the one right after a reply is labelled.
    pub stop_ids: Vec<i64>,
    /// Assistant headers; when given, each reply is searched for only after
    /// the next header (so prompt text is never matched).
    pub headers: Vec<Vec<i64>>,
    /// Ids never labelled even inside a reply.
    pub ignore: Vec<i64>,
}

/// End of the earliest header occurrence at or after `from`.
fn next_header_end(row: &[i64], headers: &[Vec<i64>], from: usize) -> Option<usize> {
    headers
        .iter()
        .filter_map(|h| find_subsequence(row, h, from, false))
        .min_by_key(|&(s, e)| (s, std::cmp::Reverse(e)))
        .map(|(_, e)| e)
}

/// End of the attended part of a row that starts at `from`.
fn attended_end(mask: &[i64], from: usize) -> usize {
    mask[from..]
        .iter()
        .position(|&m| m == 0)
        .map_or(mask.len(), |p| from + p)
}

fn label_span(
    row: &[i64],
    mask: &[i64],
    span: std::ops::Range<usize>,
    ignore: &[i64],
    out: &mut [i64],
) {
    for j in span {
        if mask[j] != 0 && !ignore.contains(&row[j]) {
            out[j] = row[j];
        }
    }
}

/// Labels one row by contents; returns the number of replies located.
fn label_row_by_contents(
    row: &[i64],
    mask: &[i64],
    replies: &[&[i64]],
    query: &ContentQuery,
    out: &mut [i64],
) -> usize {
    let mut cursor = 0usize;
    let mut located = 0usize;
    for reply in replies {
        let from = if query.headers.is_empty() {
            cursor
        } else {
            match next_header_end(row, &query.headers, cursor) {
                Some(e) => e,
                None => break,
            }
        };
        let hit = if reply.is_empty() {
            (!query.headers.is_empty()).then_some((from, from))
        } else {
            find_reply(row, reply, from)
        };
        match hit {
            Some((s, e)) => {
                label_span(row, mask, s..e, &query.ignore, out);
                let mut end = e;
                if e < row.len() && mask[e] != 0 && query.stop_ids.contains(&row[e]) {
                    out[e] = row[e];
                    end = e + 1;
                }
                located += 1;
                cursor = end;
            }
            None if !query.headers.is_empty() => {
                // A reply cut by truncation: the rest of the row is a prefix of it.
                let stop = attended_end(mask, from);
                let tail = &row[from..stop];
                let is_prefix = !tail.is_empty()
                    && tail.len() < reply.len()
                    && tail[1..] == reply[1..tail.len()];
                if is_prefix {
                    label_span(row, mask, from..stop, &query.ignore, out);
                    located += 1;
                }
                break;
            }
            None => break,
        }
    }
    located
}

/// Labels a padded batch by searching for each reply's tokens in order.
/// Returns the labels and, per row, how many replies were located.
pub fn labels_from_contents(
    ids: &[i64],
    mask: &[i64],
    rows: usize,
    len: usize,
    query: &ContentQuery,
) -> Result<(Vec<i64>, Vec<usize>)> {
    check_batch_shape(ids, mask, rows, len)?;
    if query.replies_per_row.len() != rows {
        return Err(EngineError::new(format!(
            "replies_per_row has {} entries for a batch of {rows} rows",
            query.replies_per_row.len()
        )));
    }
    let total = query
        .replies_per_row
        .iter()
        .try_fold(0usize, |sum, &n| sum.checked_add(n));
    if total != Some(query.replies.len()) {
        return Err(EngineError::new(format!(
            "replies_per_row adds up to {} but {} replies were given",
            total.map_or("more than usize::MAX".to_string(), |t| t.to_string()),
            query.replies.len()
        )));
    }
    if let Some(i) = query.headers.iter().position(Vec::is_empty) {
        return Err(EngineError::new(format!(
            "headers[{i}] is empty: an assistant header may not be empty"
        )));
    }
    let mut labels = filled(IGNORE_INDEX, ids.len(), "the labels")?;
    let mut located = with_capacity(rows, "the replies located per row")?;
    let mut next_reply = 0usize;
    for r in 0..rows {
        let span = r * len..(r + 1) * len;
        let count = query.replies_per_row[r];
        let replies: Vec<&[i64]> = (next_reply..next_reply + count)
            .map(|k| query.replies.row(k))
            .collect();
        next_reply += count;
        located.push(label_row_by_contents(
            &ids[span.clone()],
            &mask[span.clone()],
            &replies,
            query,
            &mut labels[span],
        ));
    }
    Ok((labels, located))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 100; // <|im_start|>
    const A: i64 = 101; // assistant
    const NL: i64 = 102; // "\n"
    const E: i64 = 103; // <|im_end|>
    const U: i64 = 104; // user
    const IMG: i64 = 105;

    fn markers() -> Markers {
        Markers {
            starts: vec![vec![H, A, NL], vec![H, A]],
            ends: vec![vec![E]],
            ignore: vec![IMG],
        }
    }

    #[test]
    fn labels_every_reply_and_its_end_token() {
        // user: 7 IMG ; assistant: 8 9 ; user: 8 ; assistant: (empty)
        let row = [
            H, U, NL, 7, IMG, E, NL, H, A, NL, 8, 9, E, NL, H, U, NL, 8, E, NL, H, A, NL, E, NL,
        ];
        let mask = [1; 25];
        let (labels, found) = labels_from_markers(&row, &mask, 1, row.len(), &markers()).unwrap();
        let targets: Vec<usize> = (0..row.len())
            .filter(|&i| labels[i] != IGNORE_INDEX)
            .collect();
        assert_eq!(targets, vec![10, 11, 12, 23]);
        assert_eq!(found, vec![2]);
    }

    #[test]
    fn headers_are_counted_everywhere_replies_only_outside_replies() {
        // A user typing the header, a reply quoting it, an overlapping
        // variant header (A NL) inside the matched header, padding ignored.
        let m = Markers {
            starts: vec![vec![H, A, NL], vec![A, NL]],
            ends: vec![vec![E, A, NL]],
            ignore: vec![],
        };
        let row = [
            H, U, NL, H, A, NL, 7, E, NL, H, A, NL, 8, H, A, 9, E, A, NL, 5, H, A, NL,
        ];
        let mut mask = [1; 23];
        mask[20] = 0; // a header whose first token is padding is not counted
        let scan = scan_markers(&row, &mask, 1, row.len(), &m).unwrap();
        // Header starts at 3, 4, 9, 10, 17, 21 (21 attended, 20 not).
        assert_eq!(scan.headers, vec![6]);
        assert_eq!(scan.found, vec![2]);
        // A header cut by the end of the row is not counted.
        let cut = scan_markers(&[H, U, H, A], &[1; 4], 1, 4, &m).unwrap();
        assert_eq!(cut.headers, vec![0]);
        // The labels are those of labels_from_markers.
        let (labels, found) = labels_from_markers(&row, &mask, 1, row.len(), &m).unwrap();
        assert_eq!((labels, found), (scan.labels, scan.found));
    }

    #[test]
    fn merged_header_token_is_labelled_as_content() {
        // "assistant\n\nHi": the header newline merged into token 55.
        let row = [H, A, 55, 9, E];
        let (labels, _) = labels_from_markers(&row, &[1; 5], 1, 5, &markers()).unwrap();
        assert_eq!(labels, vec![-100, -100, 55, 9, E]);
    }

    #[test]
    fn truncated_reply_keeps_surviving_tokens_and_padding_is_never_labelled() {
        let ids = [H, A, NL, 5, 6, 0, 0, H, A, NL, 5, 6, 7, 8];
        let mask = [1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1];
        let (labels, _) = labels_from_markers(&ids, &mask, 2, 7, &markers()).unwrap();
        assert_eq!(&labels[..7], &[-100, -100, -100, 5, 6, -100, -100]);
        assert_eq!(&labels[7..], &[-100, -100, -100, 5, 6, 7, 8]);
    }

    #[test]
    fn media_inside_a_reply_is_not_labelled() {
        let row = [H, A, NL, 5, IMG, IMG, 6, E];
        let (labels, _) = labels_from_markers(&row, &[1; 8], 1, 8, &markers()).unwrap();
        assert_eq!(labels, vec![-100, -100, -100, 5, -100, -100, 6, E]);
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(labels_from_markers(&[1, 2], &[1, 1], 1, 3, &markers()).is_err());
        let empty = Markers {
            starts: vec![vec![]],
            ends: vec![vec![E]],
            ignore: vec![],
        };
        let err = labels_from_markers(&[1], &[1], 1, 1, &empty).unwrap_err();
        assert!(err.0.starts_with("starts[0] is empty"), "{err}");
        let no_ends = Markers {
            ends: vec![],
            ..markers()
        };
        let err = labels_from_markers(&[1], &[1], 1, 1, &no_ends).unwrap_err();
        assert!(err.0.starts_with("ends is empty"), "{err}");
    }

    fn query(replies: &[Vec<i64>], per_row: Vec<usize>, headers: Vec<Vec<i64>>) -> ContentQuery {
        ContentQuery {
            replies: Rows::from_slices(replies),
            replies_per_row: per_row,
            stop_ids: vec![E],
            headers,
            ignore: vec![IMG],
        }
    }

    #[test]
    fn content_search_skips_prompt_echo_when_headers_are_known() {
        // The user asks "8" and the assistant answers "8".
        let row = [H, U, NL, 8, E, H, A, NL, 8, E];
        let q = query(&[vec![8]], vec![1], vec![vec![H, A, NL]]);
        let (labels, located) = labels_from_contents(&row, &[1; 10], 1, 10, &q).unwrap();
        let targets: Vec<usize> = (0..10).filter(|&i| labels[i] != IGNORE_INDEX).collect();
        assert_eq!(targets, vec![8, 9]);
        assert_eq!(located, vec![1]);
    }

    #[test]
    fn content_search_without_headers_and_first_token_merge() {
        let row = [H, U, NL, 7, E, H, A, 77, 8, 9, E];
        let q = query(&[vec![76, 8, 9]], vec![1], vec![]);
        let (labels, located) = labels_from_contents(&row, &[1; 11], 1, 11, &q).unwrap();
        assert_eq!(&labels[7..], &[77, 8, 9, E]);
        assert_eq!(located, vec![1]);
    }

    #[test]
    fn content_search_handles_empty_and_truncated_replies() {
        let row = [H, A, NL, E, H, A, NL, 5, 6];
        let q = query(&[vec![], vec![5, 6, 7]], vec![2], vec![vec![H, A, NL]]);
        let (labels, located) = labels_from_contents(&row, &[1; 9], 1, 9, &q).unwrap();
        let targets: Vec<usize> = (0..9).filter(|&i| labels[i] != IGNORE_INDEX).collect();
        assert_eq!(targets, vec![3, 7, 8]);
        assert_eq!(located, vec![2]);
    }

    #[test]
    fn content_query_is_validated() {
        let q = query(&[vec![1]], vec![2], vec![]);
        assert!(labels_from_contents(&[1], &[1], 1, 1, &q).is_err());
        let q = query(&[vec![1]], vec![1, 0], vec![]);
        assert!(labels_from_contents(&[1], &[1], 1, 1, &q).is_err());
        // Counts whose sum wraps around are refused, not wrapped.
        let q = query(&[vec![1]], vec![usize::MAX, 2], vec![]);
        let err = labels_from_contents(&[1, 1], &[1, 1], 2, 1, &q).unwrap_err();
        assert!(
            err.0.contains("replies_per_row adds up to more than"),
            "{err}"
        );
    }

    #[test]
    fn huge_and_extreme_ids_are_plain_ids() {
        let (h, a, e, img) = (1 << 62, i64::MAX, i64::MIN, (1 << 62) + 1);
        let m = Markers {
            starts: vec![vec![h, a]],
            ends: vec![vec![e]],
            ignore: vec![img, -1],
        };
        let row = [h, 1, e, h, a, 5, img, 6, e, 7];
        let (labels, found) = labels_from_markers(&row, &[1; 10], 1, 10, &m).unwrap();
        assert_eq!(
            labels,
            vec![-100, -100, -100, -100, -100, 5, -100, 6, e, -100]
        );
        assert_eq!(found, vec![1]);
    }
}
