//! Benchmarks of the engine's entry points without Python: ns per token at a
//! realistic size (8 rows of about 4k tokens, Qwen2.5-VL ids: a system turn,
//! user turns with an image block of 1024 placeholders, assistant replies).
//! `cargo bench` prints one table; std::time only, so `cargo test` builds no
//! benchmark framework.

use std::hint::black_box;
use std::time::{Duration, Instant};

use vlm_collate_engine::batch::{pad, unpad, Rows, Side};
use vlm_collate_engine::expand::expand_placeholders;
use vlm_collate_engine::fit::fit_rows;
use vlm_collate_engine::labels::{
    labels_from_contents, labels_from_markers, ContentQuery, Markers,
};
use vlm_collate_engine::truncate::{fitted_lengths, MediaBlocks};

const ROWS: usize = 8;
const IM_START: i64 = 151_644;
const IM_END: i64 = 151_645;
const VISION_START: i64 = 151_652;
const VISION_END: i64 = 151_653;
const IMAGE_PAD: i64 = 151_655;
const SYSTEM: i64 = 8_948;
const USER: i64 = 872;
const ASSISTANT: i64 = 77_091;
const NEWLINE: i64 = 198;
const PAD_ID: i64 = 151_643;
const IMAGE_TOKENS: usize = 1024;

/// A small deterministic generator of text token ids.
struct Text(u64);

impl Text {
    fn token(&mut self) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 150_000) as i64 + 200
    }
    fn tokens(&mut self, n: usize) -> Vec<i64> {
        (0..n).map(|_| self.token()).collect()
    }
}

/// One rendered conversation: `(ids with one placeholder per image, its replies)`.
fn conversation(text: &mut Text, turns: usize, reply_len: usize) -> (Vec<i64>, Vec<Vec<i64>>) {
    let mut ids = vec![IM_START, SYSTEM, NEWLINE];
    ids.extend(text.tokens(20));
    ids.extend([IM_END, NEWLINE]);
    let mut replies = Vec::new();
    for turn in 0..turns {
        ids.extend([IM_START, USER, NEWLINE]);
        if turn == 0 {
            ids.extend([VISION_START, IMAGE_PAD, VISION_END]);
        }
        ids.extend(text.tokens(60));
        ids.extend([IM_END, NEWLINE, IM_START, ASSISTANT, NEWLINE]);
        let reply = text.tokens(reply_len);
        ids.extend(&reply);
        ids.extend([IM_END, NEWLINE]);
        replies.push(reply);
    }
    (ids, replies)
}

/// The batch before expansion (one placeholder per image) and its replies.
fn collapsed_batch() -> (Rows, Vec<Vec<i64>>, Vec<usize>) {
    let mut text = Text(0x9E37_79B9_7F4A_7C15);
    let (mut rows, mut replies, mut per_row) = (Rows::default(), Vec::new(), Vec::new());
    for r in 0..ROWS {
        // 2.6k to 3.1k text tokens: about 3.7k to 4.1k once the image expands.
        let (ids, row_replies) = conversation(&mut text, 6 + r % 3, 360);
        rows.push(&ids);
        per_row.push(row_replies.len());
        replies.extend(row_replies);
    }
    (rows, replies, per_row)
}

/// Median time per call of `work` over repeated runs of about 30 ms each.
fn time(mut work: impl FnMut()) -> Duration {
    work();
    let start = Instant::now();
    let mut calls = 0u32;
    while start.elapsed() < Duration::from_millis(30) {
        work();
        calls += 1;
    }
    let per_run = calls.max(1);
    let mut samples: Vec<Duration> = (0..9)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_run {
                work();
            }
            t.elapsed() / per_run
        })
        .collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let (collapsed, replies, per_row) = collapsed_batch();
    let counts = vec![IMAGE_TOKENS as i64; ROWS];
    let counts_per_row = vec![1i64; ROWS];
    let expanded = expand_placeholders(&collapsed, IMAGE_PAD, &counts, &counts_per_row).unwrap();
    let batch = pad(&expanded, PAD_ID, Side::Right, None, Some(64)).unwrap();
    let (len, tokens) = (batch.len, batch.ids.len());
    let markers = Markers {
        starts: vec![vec![IM_START, ASSISTANT, NEWLINE]],
        ends: vec![vec![IM_END]],
        ignore: vec![IMAGE_PAD],
    };
    let query = ContentQuery {
        replies: Rows::from_slices(&replies),
        replies_per_row: per_row,
        stop_ids: vec![IM_END],
        headers: vec![vec![IM_START, ASSISTANT, NEWLINE]],
        ignore: vec![IMAGE_PAD],
    };
    let row_lengths: Vec<i64> = (0..ROWS)
        .map(|r| (expanded.offsets[r + 1] - expanded.offsets[r]) as i64)
        .collect();
    let blocks = MediaBlocks::new(&[IMAGE_PAD], &[VISION_START], &[VISION_END]).unwrap();
    let cut = len * 3 / 4;

    println!(
        "engine benchmarks: {ROWS} rows x {len} columns ({tokens} tokens, {} attended), one image of {IMAGE_TOKENS} tokens per row",
        expanded.values.len()
    );
    println!(
        "{:<44} {:>12} {:>10}",
        "entry point", "us / call", "ns / token"
    );
    let report = |name: &str, per_call: Duration, per: usize| {
        println!(
            "{name:<44} {:>12.1} {:>12.3}",
            per_call.as_secs_f64() * 1e6,
            per_call.as_secs_f64() * 1e9 / per as f64
        );
    };
    report(
        "labels_from_markers",
        time(|| {
            black_box(labels_from_markers(&batch.ids, &batch.mask, ROWS, len, &markers).unwrap());
        }),
        tokens,
    );
    report(
        "labels_from_contents (with headers)",
        time(|| {
            black_box(labels_from_contents(&batch.ids, &batch.mask, ROWS, len, &query).unwrap());
        }),
        tokens,
    );
    report(
        "expand_placeholders (per output token)",
        time(|| {
            black_box(
                expand_placeholders(&collapsed, IMAGE_PAD, &counts, &counts_per_row).unwrap(),
            );
        }),
        expanded.values.len(),
    );
    let collapsed_batch = pad(&collapsed, PAD_ID, Side::Right, None, None).unwrap();
    let collapsed_len = collapsed_batch.len;
    report(
        "unpad + expand + pad (the binding's expand)",
        time(|| {
            let (ids, mask) = (&collapsed_batch.ids, &collapsed_batch.mask);
            let rows = unpad(ids, mask, ROWS, collapsed_len).unwrap();
            let e = expand_placeholders(&rows, IMAGE_PAD, &counts, &counts_per_row).unwrap();
            black_box(pad(&e, PAD_ID, Side::Right, None, None).unwrap());
        }),
        tokens,
    );
    for (name, length, side) in [
        ("fit_rows (same length, left)", len, Side::Left),
        ("fit_rows (cut to 3/4, right)", cut, Side::Right),
    ] {
        report(
            name,
            time(|| {
                black_box(
                    fit_rows(&batch.ids, ROWS, len, &row_lengths, length, PAD_ID, side).unwrap(),
                );
            }),
            ROWS * length,
        );
    }
    report(
        "fitted_lengths (cut to 3/4, with delimiters)",
        time(|| {
            black_box(fitted_lengths(&expanded, cut, &blocks));
        }),
        expanded.values.len(),
    );
}
