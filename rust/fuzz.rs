//! Property-based fuzzing of every engine entry point (proptest).
//!
//! The strategies build consistent batches (offsets from lengths, masks from
//! lengths, chat turns whose markers are present, media inside rows, rows cut
//! at random), so that most cases reach the `Ok` branch and its invariants are
//! checked against a model built alongside the input. Each property counts
//! the cases that reach a non-trivial `Ok` and asserts that share. Marker,
//! media and delimiter ids are drawn from a pool that holds extreme ids
//! (2^62, i64::MIN, i64::MAX, -1, the token-set bitmap bound); extreme sizes
//! must be errors naming the argument, never a panic or an abort.
//!
//! Shares of cases reaching a non-trivial `Ok` (20,000 cases each; 256 in
//! the default run land within a few points): find_subsequence 87%,
//! labels_from_markers 88%, labels_from_contents 88% (with headers, exact
//! model) / 81% (without), pad/unpad 90%, offsets 83%, expand_placeholders
//! 77%, tokens_per_grid 89%, fitted_lengths 86%, fit_rows 84%; extreme sizes
//! refused naming the argument 100%. Each property asserts at least 50%.
//!
//! `PROPTEST_CASES` sets the number of cases per property (256 by default):
//! `PROPTEST_CASES=20000 cargo test --release fuzz -- --nocapture` is a long
//! run; it prints each property's counts.

use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

use crate::batch::{pad, unpad, Rows, Side};
use crate::expand::{expand_placeholders, tokens_per_grid};
use crate::fit::fit_rows;
use crate::labels::{labels_from_contents, labels_from_markers, ContentQuery, Markers};
use crate::limits::MAX_ELEMENTS;
use crate::pattern::find_subsequence;
use crate::truncate::{fitted_lengths, truncate_rows, MediaBlocks};
use crate::IGNORE_INDEX;

/// Runs `property` on cases drawn from `strategy`; `property` returns whether
/// the case reached a non-trivial `Ok`. Asserts that share is at least `min_share`.
fn fuzz<S: Strategy>(
    name: &str,
    min_share: f64,
    strategy: S,
    property: impl Fn(S::Value) -> Result<bool, TestCaseError>,
) {
    let config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let (cases, reached) = (Cell::new(0usize), Cell::new(0usize));
    let outcome = runner.run(&strategy, |value| {
        let ok = property(value)?;
        cases.set(cases.get() + 1);
        reached.set(reached.get() + usize::from(ok));
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{name}: {e}");
    }
    let (cases, reached) = (cases.get(), reached.get());
    let share = reached as f64 / cases.max(1) as f64;
    eprintln!(
        "fuzz {name}: {reached} of {cases} cases reach a non-trivial Ok ({:.1}%)",
        100.0 * share
    );
    assert!(
        share >= min_share,
        "{name}: only {reached} of {cases} cases reach a non-trivial Ok"
    );
}

/// Ids that stress token sets and comparisons.
const EXTREME_IDS: [i64; 6] = [1 << 62, i64::MAX, i64::MIN, -1, 1 << 24, (1 << 24) - 1];

/// Sizes no output may take.
const HUGE_SIZES: [u64; 5] = [
    MAX_ELEMENTS as u64 + 1,
    1 << 40,
    1 << 62,
    i64::MAX as u64,
    u64::MAX,
];

/// `n` distinct special ids from 100..110 and the extreme ids.
fn specials(n: usize) -> impl Strategy<Value = Vec<i64>> {
    let pool: Vec<i64> = (100..110).chain(EXTREME_IDS).collect();
    Just(pool).prop_shuffle().prop_map(move |p| p[..n].to_vec())
}

/// An ordinary text token: never one of the specials.
fn text_token() -> impl Strategy<Value = i64> {
    prop_oneof![9 => 0i64..20, 1 => Just(1i64 << 40)]
}

// ---------------------------------------------------------------- search

/// A haystack over a small alphabet and a pattern planted in it (70%) or drawn.
fn search_case() -> impl Strategy<Value = (Vec<i64>, Vec<i64>, usize, bool)> {
    prop::collection::vec(0i64..4, 0..40).prop_flat_map(|h| {
        let n = h.len();
        (
            Just(h),
            prop::bool::weighted(0.7),
            0..=n,
            0usize..5,
            prop::collection::vec(0i64..4, 0..5),
            0..n + 3,
            any::<bool>(),
        )
            .prop_map(|(h, plant, from, width, random, start, flag)| {
                let p = if plant {
                    h[from..(from + width).min(h.len())].to_vec()
                } else {
                    random
                };
                (h, p, start.min(from), flag)
            })
    })
}

fn naive_search(h: &[i64], p: &[i64], start: usize, flag: bool) -> Option<(usize, usize)> {
    let m = p.len();
    (start..=h.len())
        .filter(|&i| i + m <= h.len())
        .find(|&i| h[i..i + m] == *p || (flag && m > 0 && h[i + 1..i + m] == p[1..]))
        .map(|i| (i, i + m))
}

#[test]
fn find_subsequence_agrees_with_a_naive_search() {
    fuzz(
        "find_subsequence",
        0.5,
        search_case(),
        |(h, p, start, flag)| {
            let got = find_subsequence(&h, &p, start, flag);
            prop_assert_eq!(got, naive_search(&h, &p, start, flag));
            Ok(got.is_some())
        },
    );
}

// ---------------------------------------------------------------- chat batches

/// Marker ids of a chat template, all distinct.
#[derive(Debug, Clone)]
struct Chat {
    head: i64,
    assistant: i64,
    user: i64,
    newline: i64,
    end: i64,
    end2: i64,
    media: i64,
    pad: i64,
    /// The end of turn is `[end, end2]` rather than `[end]`.
    two_token_end: bool,
    /// `[head, assistant]` is a start marker besides `[head, assistant, newline]`.
    short_start: bool,
}

impl Chat {
    fn markers(&self) -> Markers {
        let mut starts = vec![vec![self.head, self.assistant, self.newline]];
        if self.short_start {
            starts.push(vec![self.head, self.assistant]);
        }
        let end = if self.two_token_end {
            vec![self.end, self.end2]
        } else {
            vec![self.end]
        };
        Markers {
            starts,
            ends: vec![end],
            ignore: vec![self.media],
        }
    }
}

/// What a token of a rendered conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Scaffold,
    Prompt,
    Reply,
    End,
    End2,
}

/// A padded batch of conversations and what the engine must find in it.
#[derive(Debug, Clone)]
struct ChatBatch {
    chat: Chat,
    ids: Vec<i64>,
    mask: Vec<i64>,
    rows: usize,
    len: usize,
    /// Per position: what the token is (`Scaffold` on padding).
    kinds: Vec<Kind>,
    /// Every assistant reply of every row, in order, and how many per row.
    replies: Vec<Vec<i64>>,
    replies_per_row: Vec<usize>,
    /// Per row, the replies that the markers and the content search find.
    found: Vec<usize>,
    located: Vec<usize>,
}

type Turn = (bool, Vec<Option<i64>>);

fn chat() -> impl Strategy<Value = Chat> {
    (specials(8), any::<bool>(), any::<bool>()).prop_map(|(s, two_token_end, short_start)| Chat {
        head: s[0],
        assistant: s[1],
        user: s[2],
        newline: s[3],
        end: s[4],
        end2: s[5],
        media: s[6],
        pad: s[7],
        two_token_end,
        short_start,
    })
}

fn turns() -> impl Strategy<Value = Vec<Turn>> {
    let token = prop_oneof![8 => text_token().prop_map(Some), 1 => Just(None)];
    prop::collection::vec(
        (
            prop::bool::weighted(0.5),
            prop::collection::vec(token, 0..6),
        ),
        1..5,
    )
}

fn chat_batch() -> impl Strategy<Value = ChatBatch> {
    (
        chat(),
        prop::collection::vec((turns(), prop::option::weighted(0.3, 0usize..64)), 1..5),
        0usize..3,
        any::<bool>(),
    )
        .prop_map(|(chat, rows, extra, left)| build_chat(chat, rows, extra, left))
}

/// Renders rows of turns (`<head> role <newline> content <end> <newline>`),
/// cuts each where drawn, and pads them; records the model of every token.
fn build_chat(
    chat: Chat,
    rows: Vec<(Vec<Turn>, Option<usize>)>,
    extra: usize,
    left: bool,
) -> ChatBatch {
    let mut rendered = Vec::new();
    let mut replies = Vec::new();
    let mut replies_per_row = Vec::new();
    let (mut found, mut located) = (Vec::new(), Vec::new());
    for (turns, cut) in rows {
        let (mut tokens, mut kinds) = (Vec::new(), Vec::new());
        let mut headers = Vec::new(); // (header position, reply length)
        for (is_assistant, content) in &turns {
            let role = if *is_assistant {
                chat.assistant
            } else {
                chat.user
            };
            tokens.extend([chat.head, role, chat.newline]);
            kinds.extend([Kind::Scaffold; 3]);
            let content: Vec<i64> = content.iter().map(|t| t.unwrap_or(chat.media)).collect();
            if *is_assistant {
                headers.push((tokens.len() - 3, content.len()));
                replies.push(content.clone());
            }
            for &t in &content {
                tokens.push(t);
                kinds.push(match (*is_assistant, t == chat.media) {
                    (true, false) => Kind::Reply,
                    (false, _) => Kind::Prompt,
                    (true, true) => Kind::Scaffold,
                });
            }
            let end = if *is_assistant {
                Kind::End
            } else {
                Kind::Scaffold
            };
            tokens.push(chat.end);
            kinds.push(end);
            if chat.two_token_end {
                tokens.push(chat.end2);
                kinds.push(if *is_assistant {
                    Kind::End2
                } else {
                    Kind::Scaffold
                });
            }
            tokens.push(chat.newline);
            kinds.push(Kind::Scaffold);
        }
        let cut = cut.map_or(tokens.len(), |c| c % (tokens.len() + 1));
        tokens.truncate(cut);
        kinds.truncate(cut);
        replies_per_row.push(headers.len());
        let short = usize::from(chat.short_start);
        found.push(
            headers
                .iter()
                .filter(|&&(p, _)| p + 3 - short <= cut)
                .count(),
        );
        located.push(
            headers
                .iter()
                .filter(|&&(p, m)| p + 3 <= cut && (m == 0 || p + 3 < cut))
                .count(),
        );
        rendered.push((tokens, kinds));
    }
    let len = rendered.iter().map(|(t, _)| t.len()).max().unwrap_or(0) + extra;
    let (mut ids, mut mask, mut all_kinds) = (Vec::new(), Vec::new(), Vec::new());
    for (tokens, kinds) in &rendered {
        let padding = len - tokens.len();
        let (before, after) = if left { (padding, 0) } else { (0, padding) };
        ids.extend(std::iter::repeat_n(chat.pad, before).chain(tokens.iter().copied()));
        ids.extend(std::iter::repeat_n(chat.pad, after));
        mask.extend(std::iter::repeat_n(0, before).chain(std::iter::repeat_n(1, tokens.len())));
        mask.extend(std::iter::repeat_n(0, after));
        all_kinds.extend(std::iter::repeat_n(Kind::Scaffold, before).chain(kinds.iter().copied()));
        all_kinds.extend(std::iter::repeat_n(Kind::Scaffold, after));
    }
    ChatBatch {
        chat,
        ids,
        mask,
        rows: rendered.len(),
        len,
        kinds: all_kinds,
        replies,
        replies_per_row,
        found,
        located,
    }
}

#[test]
fn labels_from_markers_label_exactly_the_replies() {
    fuzz("labels_from_markers", 0.5, chat_batch(), |b| {
        let (labels, found) =
            labels_from_markers(&b.ids, &b.mask, b.rows, b.len, &b.chat.markers())
                .map_err(|e| TestCaseError::fail(e.0))?;
        for (i, (&l, &kind)) in labels.iter().zip(&b.kinds).enumerate() {
            let target = matches!(kind, Kind::Reply | Kind::End | Kind::End2);
            prop_assert_eq!(
                l,
                if target { b.ids[i] } else { IGNORE_INDEX },
                "position {}",
                i
            );
        }
        prop_assert_eq!(&found, &b.found);
        Ok(labels.iter().any(|&l| l != IGNORE_INDEX))
    });
}

#[test]
fn labels_from_contents_with_headers_label_exactly_the_replies() {
    fuzz("labels_from_contents (strict)", 0.5, chat_batch(), |b| {
        let c = &b.chat;
        let query = ContentQuery {
            replies: Rows::from_slices(&b.replies),
            replies_per_row: b.replies_per_row.clone(),
            stop_ids: vec![c.end],
            headers: vec![vec![c.head, c.assistant, c.newline]],
            ignore: vec![c.media],
        };
        let (labels, located) = labels_from_contents(&b.ids, &b.mask, b.rows, b.len, &query)
            .map_err(|e| TestCaseError::fail(e.0))?;
        for (i, (&l, &kind)) in labels.iter().zip(&b.kinds).enumerate() {
            let target = matches!(kind, Kind::Reply | Kind::End);
            prop_assert_eq!(
                l,
                if target { b.ids[i] } else { IGNORE_INDEX },
                "position {}",
                i
            );
        }
        prop_assert_eq!(&located, &b.located);
        Ok(labels.iter().any(|&l| l != IGNORE_INDEX))
    });
}

#[test]
fn labels_from_contents_without_headers_keep_their_invariants() {
    fuzz("labels_from_contents (free)", 0.5, chat_batch(), |b| {
        let c = &b.chat;
        let query = ContentQuery {
            replies: Rows::from_slices(&b.replies),
            replies_per_row: b.replies_per_row.clone(),
            stop_ids: vec![c.end, c.end2],
            headers: vec![],
            ignore: vec![c.media],
        };
        let (labels, located) = labels_from_contents(&b.ids, &b.mask, b.rows, b.len, &query)
            .map_err(|e| TestCaseError::fail(e.0))?;
        for (i, &l) in labels.iter().enumerate() {
            prop_assert!(l == IGNORE_INDEX || (l == b.ids[i] && b.mask[i] != 0 && l != c.media));
        }
        for (r, &n) in located.iter().enumerate() {
            prop_assert!(n <= b.replies_per_row[r]);
        }
        Ok(labels.iter().any(|&l| l != IGNORE_INDEX))
    });
}

// ---------------------------------------------------------------- ragged rows

fn ragged_rows(max_rows: usize, max_len: usize) -> impl Strategy<Value = Vec<Vec<i64>>> {
    prop::collection::vec(prop::collection::vec(text_token(), 0..max_len), 0..max_rows)
}

#[test]
fn pad_and_unpad_round_trip() {
    let case = (
        prop::collection::vec(prop::collection::vec(text_token(), 0..12), 1..6),
        any::<bool>(),
        prop::option::weighted(0.6, -1i64..6),
        prop::option::weighted(0.5, 1usize..9),
    );
    fuzz("pad/unpad", 0.5, case, |(rows, left, slack, multiple)| {
        let rows = Rows::from_slices(&rows);
        let longest = rows.max_len();
        let max_length = slack.map(|s| (longest as i64 + s).max(0) as usize);
        let side = if left { Side::Left } else { Side::Right };
        let padded = match pad(&rows, 0, side, max_length, multiple) {
            Ok(p) => p,
            Err(e) => {
                prop_assert!(max_length.is_some_and(|m| m < longest), "{}", e);
                prop_assert!(e.0.contains("more than max_length"), "{}", e);
                return Ok(false);
            }
        };
        let want = max_length.unwrap_or(longest);
        let want = multiple.map_or(want, |k| want.div_ceil(k) * k);
        prop_assert_eq!((padded.rows, padded.len), (rows.len(), want));
        for r in 0..rows.len() {
            let row = &padded.ids[r * want..(r + 1) * want];
            let n = rows.row(r).len();
            let at = if left { want - n } else { 0 };
            prop_assert_eq!(&row[at..at + n], rows.row(r));
        }
        let back = unpad(&padded.ids, &padded.mask, padded.rows, padded.len)
            .map_err(|e| TestCaseError::fail(e.0))?;
        prop_assert_eq!(&back, &rows);
        Ok(!rows.values.is_empty())
    });
}

#[test]
fn offsets_are_checked() {
    let perturb = prop::option::weighted(
        0.2,
        (
            0usize..8,
            prop_oneof![Just(-1i64), Just(1), Just(i64::MAX), Just(i64::MIN)],
        ),
    );
    fuzz(
        "offsets",
        0.5,
        (ragged_rows(6, 6), perturb),
        |(rows, perturb)| {
            let rows = Rows::from_slices(&rows);
            let mut offsets: Vec<i64> = rows.offsets.iter().map(|&o| o as i64).collect();
            if let Some((i, delta)) = perturb {
                let i = i % offsets.len();
                offsets[i] = offsets[i].saturating_add(delta);
            }
            let valid = offsets[0] == 0
                && offsets.windows(2).all(|w| w[0] <= w[1])
                && *offsets.last().unwrap() == rows.values.len() as i64;
            let got = Rows::from_parts(rows.values.clone(), offsets.clone(), ["values", "offsets"]);
            prop_assert_eq!(got.is_ok(), valid, "{:?}", got);
            if let Ok(got) = &got {
                let want: Vec<usize> = offsets.iter().map(|&o| o as usize).collect();
                prop_assert_eq!(&got.offsets, &want);
                prop_assert_eq!(&got.values, &rows.values);
            }
            Ok(got.is_ok())
        },
    );
}

// ---------------------------------------------------------------- media

const PLACEHOLDER_POOL: [i64; 4] = [151_655, 1 << 62, i64::MAX, i64::MIN];

#[test]
fn expansion_repeats_each_placeholder_by_its_count() {
    let case = (
        prop::sample::select(PLACEHOLDER_POOL.to_vec()),
        prop::collection::vec(
            prop::collection::vec(
                prop_oneof![3 => text_token().prop_map(Some), 1 => Just(None)],
                0..10,
            ),
            1..5,
        ),
        prop::collection::vec(0i64..6, 16),
        prop::option::weighted(0.1, 0usize..5),
    );
    fuzz(
        "expand_placeholders",
        0.5,
        case,
        |(p, rows, counts, miscount)| {
            let rows: Vec<Vec<i64>> = rows
                .into_iter()
                .map(|r| r.into_iter().map(|t| t.unwrap_or(p)).collect())
                .collect();
            let mut per_row: Vec<i64> = rows
                .iter()
                .map(|r| r.iter().filter(|&&t| t == p).count() as i64)
                .collect();
            let images = per_row.iter().sum::<i64>() as usize;
            let counts = counts[..images.min(16)].to_vec();
            if counts.len() < images {
                return Ok(false); // more placeholders than drawn counts: rare, skipped
            }
            if let Some(r) = miscount.filter(|_| !per_row.is_empty()) {
                let r = r % per_row.len();
                per_row[r] += 1;
            }
            let got = expand_placeholders(&Rows::from_slices(&rows), p, &counts, &per_row);
            if miscount.is_some() && !rows.is_empty() {
                prop_assert!(got.is_err());
                return Ok(false);
            }
            let got = got.map_err(|e| TestCaseError::fail(e.0))?;
            let mut next = counts.iter();
            for (r, row) in rows.iter().enumerate() {
                let want: Vec<i64> = row
                    .iter()
                    .flat_map(|&t| {
                        let n = if t == p {
                            *next.next().unwrap() as usize
                        } else {
                            1
                        };
                        std::iter::repeat_n(t, n)
                    })
                    .collect();
                prop_assert_eq!(got.row(r), &want[..]);
            }
            Ok(images > 0)
        },
    );
}

#[test]
fn grid_counts_are_exact_or_refused() {
    let dim = prop_oneof![
        30 => 1i64..20,
        1 => prop::sample::select(vec![1i64 << 21, 1 << 31, 1 << 32, i64::MAX, 0, -1, 3]),
    ];
    let case = (
        prop::collection::vec((1i64..4, dim.clone(), dim), 1..5),
        1i64..4,
        1i64..4,
    );
    fuzz("tokens_per_grid", 0.5, case, |(grids, mh, mw)| {
        // Mostly multiples of the kernel; the extreme dimensions as drawn.
        let grids: Vec<[i64; 3]> = grids
            .into_iter()
            .map(|(t, h, w)| {
                let scale = |d: i64, m: i64| if (1..20).contains(&d) { d * m } else { d };
                [t, scale(h, mh), scale(w, mw)]
            })
            .collect();
        let want: Option<Vec<i64>> = grids
            .iter()
            .map(|&[t, h, w]| {
                let ok = t > 0 && h > 0 && w > 0 && h % mh == 0 && w % mw == 0;
                let n = (t as i128)
                    .checked_mul((h / mh) as i128)
                    .and_then(|n| n.checked_mul((w / mw) as i128));
                n.filter(|&n| ok && n <= MAX_ELEMENTS as i128)
                    .map(|n| n as i64)
            })
            .collect();
        let got = tokens_per_grid(&grids, (mh, mw));
        match (&got, &want) {
            (Ok(got), Some(want)) => prop_assert_eq!(got, want),
            (Err(e), None) => prop_assert!(e.0.contains("grids["), "{}", e),
            _ => prop_assert!(false, "got {:?}, want {:?}", got, want),
        }
        Ok(got.is_ok_and(|c| !c.is_empty()))
    });
}

/// A row segment for truncation: text, or a media block of `n` media tokens
/// (with a row token inside when `rows`).
#[derive(Debug, Clone)]
enum Segment {
    Text(Vec<i64>),
    Block { n: usize, row_token: bool },
}

#[test]
fn fitted_lengths_never_split_or_drop_a_block() {
    let segment = prop_oneof![
        2 => prop::collection::vec(text_token(), 1..5).prop_map(Segment::Text),
        1 => (1usize..5, any::<bool>()).prop_map(|(n, row_token)| Segment::Block { n, row_token }),
    ];
    let case = (
        specials(4),
        prop::sample::select(vec!["delimited", "shared", "runs"]),
        prop::collection::vec(prop::collection::vec(segment, 0..6), 1..5),
        0.0f64..1.1,
    );
    fuzz(
        "fitted_lengths",
        0.5,
        case,
        |(ids, style, rows, fraction)| {
            let (media, open, close, row_sep) = (ids[0], ids[1], ids[2], ids[3]);
            let close = if style == "shared" { open } else { close };
            let mut built = Vec::new();
            let mut block_ends = Vec::new(); // per row, the end of its last block
            for segments in &rows {
                let mut row = Vec::new();
                let mut last_end = 0usize;
                for segment in segments {
                    match segment {
                        Segment::Text(t) => row.extend(t),
                        Segment::Block { n, row_token } => {
                            let delimited = style != "runs";
                            if delimited {
                                row.push(open);
                            }
                            for k in 0..*n {
                                row.push(media);
                                if *row_token && k + 1 < *n {
                                    row.push(row_sep);
                                }
                            }
                            if delimited {
                                row.push(close);
                            }
                            last_end = row.len();
                        }
                    }
                }
                built.push(row);
                block_ends.push(last_end);
            }
            let blocks = match style {
                "runs" => MediaBlocks::new(&[media, row_sep], &[], &[]),
                _ => MediaBlocks::new(&[media], &[open], &[close]),
            }
            .map_err(|e| TestCaseError::fail(e.0))?;
            let rows = Rows::from_slices(&built);
            // A limit within the longest row, so that rows get cut.
            let max_length = (rows.max_len() as f64 * fraction) as usize;
            let fitted = fitted_lengths(&rows, max_length, &blocks);
            let mut decided = false;
            for (r, row) in built.iter().enumerate() {
                let want = if row.len() <= max_length {
                    Some(row.len())
                } else {
                    decided = true;
                    (block_ends[r] <= max_length).then_some(max_length)
                };
                prop_assert_eq!(fitted[r], want, "row {}: {:?}", r, row);
            }
            let keep: Vec<usize> = fitted
                .iter()
                .zip(&built)
                .map(|(f, r)| f.unwrap_or(r.len()))
                .collect();
            let cut = truncate_rows(&rows, &keep).map_err(|e| TestCaseError::fail(e.0))?;
            for (r, &k) in keep.iter().enumerate() {
                prop_assert_eq!(cut.row(r), &built[r][..k]);
            }
            Ok(decided)
        },
    );
}

// ---------------------------------------------------------------- layout

#[test]
fn fit_rows_keeps_each_rows_start_on_its_side() {
    let case = (1usize..5, 0usize..10).prop_flat_map(|(rows, cols)| {
        (
            Just((rows, cols)),
            prop::collection::vec(any::<i64>(), rows * cols),
            prop::collection::vec(0..=cols as i64, rows),
            0usize..14,
            any::<bool>(),
            prop::option::weighted(
                0.1,
                (
                    0usize..5,
                    prop_oneof![Just(-1i64), Just(cols as i64 + 1), Just(i64::MIN)],
                ),
            ),
        )
    });
    fuzz(
        "fit_rows",
        0.5,
        case,
        |((rows, cols), array, mut lengths, length, left, bad)| {
            let side = if left { Side::Left } else { Side::Right };
            if let Some((i, v)) = bad.filter(|_| rows > 0) {
                let i = i % rows;
                lengths[i] = v;
                let err = fit_rows(&array, rows, cols, &lengths, length, -7, side).unwrap_err();
                prop_assert!(err.0.contains(&format!("row_lengths[{i}]")), "{}", err);
                return Ok(false);
            }
            let got = fit_rows(&array, rows, cols, &lengths, length, -7, side)
                .map_err(|e| TestCaseError::fail(e.0))?;
            prop_assert_eq!(got.len(), rows * length);
            for r in 0..rows {
                let keep = (lengths[r] as usize).min(length);
                let out = &got[r * length..(r + 1) * length];
                let at = if left { length - keep } else { 0 };
                prop_assert_eq!(&out[at..at + keep], &array[r * cols..r * cols + keep]);
                prop_assert!(out[..at].iter().chain(&out[at + keep..]).all(|&v| v == -7));
            }
            Ok(rows > 0 && length > 0)
        },
    );
}

// ---------------------------------------------------------------- extreme sizes

/// Every entry point given an extreme size: an error naming the argument.
#[test]
fn extreme_sizes_are_refused_naming_the_argument() {
    let case = (
        0usize..6,
        prop::sample::select(HUGE_SIZES.to_vec()),
        ragged_rows(4, 6),
    );
    fuzz("extreme sizes", 1.0, case, |(entry, huge, mut rows)| {
        rows.push(vec![5]); // a length of 0 rounds to 0 whatever the multiple
        let rows = Rows::from_slices(&rows);
        let as_usize = huge.min(usize::MAX as u64) as usize;
        let as_i64 = huge.min(i64::MAX as u64) as i64;
        let (err, name) = match entry {
            0 => (
                pad(&rows, 0, Side::Right, Some(as_usize), None).err(),
                "max_length",
            ),
            1 => (
                pad(&rows, 0, Side::Left, None, Some(as_usize)).err(),
                "pad_to_multiple_of",
            ),
            2 => {
                let one = Rows::from_slices(&[vec![1, 9, 2]]);
                (
                    expand_placeholders(&one, 9, &[as_i64], &[1]).err(),
                    "counts[0]",
                )
            }
            3 => (
                tokens_per_grid(&[[1, 2, 2], [as_i64, 4, 4]], (2, 2)).err(),
                "grids[1]",
            ),
            4 => {
                let array = [1, 2, 3, 4];
                (
                    fit_rows(&array, 2, 2, &[1, 2], as_usize, 0, Side::Left).err(),
                    "length",
                )
            }
            _ => {
                let ids = [1i64, 2];
                let m = Markers {
                    starts: vec![vec![1]],
                    ends: vec![vec![2]],
                    ignore: vec![],
                };
                // A claimed shape larger than the buffer (or overflowing).
                (
                    labels_from_markers(&ids, &ids, as_usize, 2, &m).err(),
                    "input_ids",
                )
            }
        };
        let err =
            err.ok_or_else(|| TestCaseError::fail(format!("entry {entry} accepted {huge}")))?;
        prop_assert!(err.0.contains(name), "{}: {}", name, err);
        Ok(true)
    });
}
