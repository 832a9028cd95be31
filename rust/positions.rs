//! Multimodal rotary positions (mRoPE) of the Qwen vision-language families:
//! the `(temporal, height, width)` position of every token, computed from the
//! token ids, the media grids and a few config values alone, as transformers'
//! `get_rope_index` computes them with the model.
//!
//! Two algorithms, as transformers 5.x has them:
//! - Qwen2-VL, Qwen2.5-VL, Qwen3-VL ([`Family::Qwen2Vl`] ...): runs of image or
//!   video tokens are media blocks, every other token is text. A block takes the
//!   next grid of its kind; its positions are `start + (t·interval, i, j)` over
//!   the merged grid, and the text after it continues at `start + max(h, w) / m`.
//!   Qwen2.5-VL spaces video frames by `tokens_per_second · second_per_grid`;
//!   Qwen3-VL gives each video frame its own block (timestamps separate them).
//! - Qwen3-Omni ([`Family::Qwen3Omni`]): blocks open with the vision-start or
//!   audio-start token; positions are float32 (video frames are spaced by
//!   `position_id_per_seconds · second_per_grid`), each block's end token
//!   continues after the largest position of the block, and a video's own audio
//!   track (`use_audio_in_video`) is interleaved with its frames by time.
//!
//! Positions restart at 0 on every row, so a packed row's documents are
//! computed as separate rows.

use crate::batch::Rows;
use crate::error::{EngineError, Result};
use crate::limits::{too_large, with_capacity, MAX_ELEMENTS};

/// Which model family's `get_rope_index` to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Qwen2Vl,
    Qwen25Vl,
    Qwen3Vl,
    Qwen3Omni,
}

impl Family {
    /// Parses `"qwen2_vl"`, `"qwen2_5_vl"`, `"qwen3_vl"` or `"qwen3_omni"`.
    pub fn parse(name: &str) -> Result<Family> {
        match name {
            "qwen2_vl" => Ok(Family::Qwen2Vl),
            "qwen2_5_vl" => Ok(Family::Qwen25Vl),
            "qwen3_vl" => Ok(Family::Qwen3Vl),
            "qwen3_omni" => Ok(Family::Qwen3Omni),
            other => Err(EngineError::new(format!(
                "family must be 'qwen2_vl', 'qwen2_5_vl', 'qwen3_vl' or 'qwen3_omni', got '{other}'"
            ))),
        }
    }

    /// The name [`Family::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Family::Qwen2Vl => "qwen2_vl",
            Family::Qwen25Vl => "qwen2_5_vl",
            Family::Qwen3Vl => "qwen3_vl",
            Family::Qwen3Omni => "qwen3_omni",
        }
    }
}

/// The config values the positions depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSpec {
    pub family: Family,
    /// `vision_config.spatial_merge_size` (the processor's `merge_size`).
    pub spatial_merge_size: i64,
    pub image_token_id: i64,
    pub video_token_id: i64,
    pub vision_start_token_id: i64,
    /// Qwen3-Omni only: the audio placeholder and the token that opens an audio block.
    pub audio_token_id: Option<i64>,
    pub audio_start_token_id: Option<i64>,
    /// Qwen2.5-VL: `vision_config.tokens_per_second`; Qwen3-Omni:
    /// `position_id_per_seconds`; unused by the other families.
    pub tokens_per_second: f64,
    /// Qwen3-Omni: videos carry their audio track, interleaved with the frames.
    pub use_audio_in_video: bool,
}

/// The media of a batch, in batch order: one grid `(t, h, w)` (in patches)
/// per image and per video, and per video its seconds per temporal grid step
/// (empty: 1.0 for every video).
#[derive(Debug, Clone, Copy, Default)]
pub struct Media<'a> {
    pub image_grids: &'a [[i64; 3]],
    pub video_grids: &'a [[i64; 3]],
    pub video_seconds: &'a [f64],
}

/// Positions of a batch, channel-major: `values[c * total + k]` is channel `c`
/// (0 temporal, 1 height, 2 width) of the `k`-th token over all rows. The
/// Qwen-VL families give integers, Qwen3-Omni float32 (as transformers does).
#[derive(Debug, Clone, PartialEq)]
pub enum Positions {
    Int(Vec<i64>),
    Float(Vec<f32>),
}

/// The rotary positions of every row of `rows` (token ids without padding).
/// Grids are taken in order over the rows; a block whose token count differs
/// from its grid, a grid missing or left over, or a grid not divisible by the
/// merge size is an error naming the row, the column and the numbers.
pub fn rope_positions(rows: &Rows, spec: &RopeSpec, media: &Media<'_>) -> Result<Positions> {
    check_spec(spec, media)?;
    let total = rows.values.len();
    let n = total
        .checked_mul(3)
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| too_large(format_args!("3 positions for each of {total} tokens")))?;
    let mut grids = Grids::new(spec, media)?;
    fn fill<T: Copy + Default>(
        rows: &Rows,
        n: usize,
        mut row_fn: impl FnMut(&[i64], usize, &mut Channels<'_, T>) -> Result<()>,
    ) -> Result<Vec<T>> {
        let mut out = zeroed(n)?;
        let mut channels = Channels::split(&mut out);
        for r in 0..rows.len() {
            row_fn(rows.row(r), r, &mut channels)?;
        }
        Ok(out)
    }
    let positions = if spec.family == Family::Qwen3Omni {
        Positions::Float(fill(rows, n, |row, r, out| {
            omni_row(row, r, spec, &mut grids, out)
        })?)
    } else {
        Positions::Int(fill(rows, n, |row, r, out| {
            vl_row(row, r, spec, &mut grids, out)
        })?)
    };
    grids.all_used()?;
    Ok(positions)
}

impl RopeSpec {
    /// Refuses a merge size below 1 and a spacing that is not a finite number.
    pub fn check(&self) -> Result<()> {
        if self.spatial_merge_size <= 0 {
            return Err(EngineError::new(format!(
                "spatial_merge_size must be positive, got {}",
                self.spatial_merge_size
            )));
        }
        if !self.tokens_per_second.is_finite() {
            return Err(EngineError::new(format!(
                "tokens_per_second must be finite, got {}",
                self.tokens_per_second
            )));
        }
        Ok(())
    }
}

fn check_spec(spec: &RopeSpec, media: &Media<'_>) -> Result<()> {
    spec.check()?;
    if !media.video_seconds.is_empty() && media.video_seconds.len() != media.video_grids.len() {
        return Err(EngineError::new(format!(
            "video_seconds has {} entries for {} video grids; give one per video (or none)",
            media.video_seconds.len(),
            media.video_grids.len()
        )));
    }
    Ok(())
}

/// `n` default values (zeros), within the engine's size limit.
fn zeroed<T: Copy + Default>(n: usize) -> Result<Vec<T>> {
    let mut out = with_capacity(n, "the rotary positions")?;
    out.resize(n, T::default());
    Ok(out)
}

/// The positions of a padded `rows × len` batch (`ids`, `mask` row-major), laid
/// out `(channels, rows, len)`: with `text_row`, channel 0 is each token's index
/// among its row's attended tokens (what transformers' Qwen models read to tell
/// packed documents apart), then temporal, height, width; padding (mask 0) is 0.
/// One pass: each row's positions are written straight into the output (rows
/// whose attended tokens are not one contiguous run go through a scratch row).
pub fn padded_rope_positions(
    ids: &[i64],
    mask: &[i64],
    rows: usize,
    len: usize,
    spec: &RopeSpec,
    media: &Media<'_>,
    text_row: bool,
) -> Result<Positions> {
    crate::batch::check_batch_shape(ids, mask, rows, len)?;
    check_spec(spec, media)?;
    let channels = 3 + usize::from(text_row);
    let cells = crate::limits::batch_elements(rows, len, || {
        format!("positions for {rows} rows of {len} tokens")
    })?;
    let n = cells
        .checked_mul(channels)
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            too_large(format_args!(
                "{channels} position channels of {rows} rows of {len} tokens"
            ))
        })?;
    let mut grids = Grids::new(spec, media)?;
    let batch = Padded {
        ids,
        mask,
        rows,
        len,
        text_row,
        n,
    };
    let positions = if spec.family == Family::Qwen3Omni {
        Positions::Float(batch.fill(
            |i| i as f32,
            |row, r, out| omni_row(row, r, spec, &mut grids, out),
        )?)
    } else {
        Positions::Int(batch.fill(
            |i| i as i64,
            |row, r, out| vl_row(row, r, spec, &mut grids, out),
        )?)
    };
    grids.all_used()?;
    Ok(positions)
}

/// A padded batch and the layout of its positions.
struct Padded<'a> {
    ids: &'a [i64],
    mask: &'a [i64],
    rows: usize,
    len: usize,
    text_row: bool,
    n: usize,
}

impl Padded<'_> {
    /// The `(channels, rows, len)` output, each row computed by `row_fn` from its
    /// attended tokens.
    fn fill<T: Copy + Default>(
        &self,
        text: impl Fn(usize) -> T,
        mut row_fn: impl FnMut(&[i64], usize, &mut Channels<'_, T>) -> Result<()>,
    ) -> Result<Vec<T>> {
        let (len, cells) = (self.len, self.rows * self.len);
        let mut out = zeroed::<T>(self.n)?;
        if cells == 0 {
            return Ok(out);
        }
        let mut planes: Vec<&mut [T]> = out.chunks_exact_mut(cells).collect();
        let [t, h, w] = planes
            .split_off(planes.len() - 3)
            .try_into()
            .ok()
            .ok_or_else(|| EngineError::new("internal error: position planes".to_string()))?;
        let mut text_plane = planes.pop().filter(|_| self.text_row);
        let mut scratch: Vec<T> = Vec::new();
        let mut gathered: Vec<i64> = Vec::new();
        let mut columns: Vec<usize> = Vec::new();
        for r in 0..self.rows {
            let span = r * len..(r + 1) * len;
            let (row_ids, row_mask) = (&self.ids[span.clone()], &self.mask[span]);
            // The first run of attended columns, and whether no other column is attended.
            let first = first_where(row_mask, |m| m != 0);
            let last = first + first_where(&row_mask[first..], |m| m == 0);
            let at = r * len + first;
            if first_where(&row_mask[last..], |m| m != 0) == len - last {
                let end = r * len + last;
                let mut channels = Channels {
                    c: [&mut t[at..end], &mut h[at..end], &mut w[at..end]],
                    len: 0,
                };
                row_fn(&row_ids[first..last], r, &mut channels)?;
                if let Some(plane) = text_plane.as_deref_mut() {
                    for (k, x) in plane[at..end].iter_mut().enumerate() {
                        *x = text(k);
                    }
                }
                continue;
            }
            columns.clear();
            columns.extend((first..len).filter(|&c| row_mask[c] != 0));
            gathered.clear();
            gathered.extend(columns.iter().map(|&c| row_ids[c]));
            let k = columns.len();
            scratch.clear();
            scratch.resize(3 * k, T::default());
            row_fn(&gathered, r, &mut Channels::split(&mut scratch))?;
            for (i, &c) in columns.iter().enumerate() {
                let cell = r * len + c;
                t[cell] = scratch[i];
                h[cell] = scratch[k + i];
                w[cell] = scratch[2 * k + i];
                if let Some(plane) = text_plane.as_deref_mut() {
                    plane[cell] = text(i);
                }
            }
        }
        Ok(out)
    }
}

/// Three position channels of equal length, filled token by token; writes
/// past the end are counted but dropped (a malformed row's error reports them).
struct Channels<'a, T> {
    c: [&'a mut [T]; 3],
    len: usize,
}

impl<'a, T: Copy> Channels<'a, T> {
    /// The three equal thirds of `buf`.
    fn split(buf: &'a mut [T]) -> Self {
        let third = buf.len() / 3;
        let (t, rest) = buf.split_at_mut(third);
        let (h, w) = rest.split_at_mut(third);
        Channels {
            c: [t, h, &mut w[..third]],
            len: 0,
        }
    }

    #[inline]
    fn push(&mut self, t: T, h: T, w: T) {
        let k = self.len;
        if k < self.c[0].len() {
            self.c[0][k] = t;
            self.c[1][k] = h;
            self.c[2][k] = w;
        }
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl Channels<'_, i64> {
    /// `start + o` for `o` in `0..n` on all three channels (`start + n` checked by the caller).
    fn ramp(&mut self, start: i64, n: usize) {
        let k = self.len;
        if k + n <= self.c[0].len() {
            let [t, h, w] = &mut self.c;
            let t = &mut t[k..k + n];
            for (o, x) in t.iter_mut().enumerate() {
                *x = start + o as i64;
            }
            h[k..k + n].copy_from_slice(t);
            w[k..k + n].copy_from_slice(t);
            self.len += n;
        } else {
            for o in 0..n {
                let p = start + o as i64;
                self.push(p, p, p);
            }
        }
    }
}

/// A media grid, checked: `(t, h / m, w / m)` and where it came from.
#[derive(Debug, Clone, Copy)]
struct Grid {
    t: i64,
    h: i64,
    w: i64,
    /// `max(h, w) / m`, what transformers advances the text position by.
    advance: i64,
    tokens: usize,
    /// Seconds per temporal step (videos), 1.0 for images.
    seconds: f64,
    source: (&'static str, usize),
}

/// The grids of a batch, consumed in order per kind.
struct Grids {
    images: Vec<Grid>,
    videos: Vec<Grid>,
    next_image: usize,
    next_video: usize,
}

impl Grids {
    fn new(spec: &RopeSpec, media: &Media<'_>) -> Result<Grids> {
        let m = spec.spatial_merge_size;
        let images = media
            .image_grids
            .iter()
            .enumerate()
            .map(|(i, &g)| checked_grid(g, m, ("image_grid_thw", i), 1.0))
            .collect::<Result<Vec<_>>>()?;
        let mut videos = Vec::new();
        for (i, &g) in media.video_grids.iter().enumerate() {
            let seconds = media.video_seconds.get(i).copied().unwrap_or(1.0);
            if !seconds.is_finite() {
                return Err(EngineError::new(format!(
                    "video_seconds[{i}] is {seconds}; seconds per grid must be finite"
                )));
            }
            let grid = checked_grid(g, m, ("video_grid_thw", i), seconds)?;
            if spec.family == Family::Qwen3Vl {
                // Timestamps separate the frames: one block per temporal step.
                let frame = checked_grid([1, g[1], g[2]], m, ("video_grid_thw", i), seconds)?;
                videos.extend(std::iter::repeat_n(frame, grid.t as usize));
            } else {
                videos.push(grid);
            }
        }
        Ok(Grids {
            images,
            videos,
            next_image: 0,
            next_video: 0,
        })
    }

    fn next(&mut self, video: bool, row: usize, col: usize) -> Result<Grid> {
        let (list, next, kind, key) = if video {
            (
                &self.videos,
                &mut self.next_video,
                "video",
                "video_grid_thw",
            )
        } else {
            (
                &self.images,
                &mut self.next_image,
                "image",
                "image_grid_thw",
            )
        };
        let grid = list.get(*next).copied().ok_or_else(|| {
            EngineError::new(format!(
                "row {row}: the {kind} block at column {col} has no grid: {key} holds {} {kind}s and they are all used by earlier blocks",
                count_sources(list)
            ))
        })?;
        *next += 1;
        Ok(grid)
    }

    fn all_used(&self) -> Result<()> {
        for (list, next, kind, key) in [
            (&self.images, self.next_image, "image", "image_grid_thw"),
            (&self.videos, self.next_video, "video", "video_grid_thw"),
        ] {
            if next < list.len() {
                return Err(EngineError::new(format!(
                    "{key} holds {} {kind}s but the token ids hold only {} {kind} blocks; every grid needs its block of {kind} tokens",
                    count_sources(list),
                    count_sources(&list[..next])
                )));
            }
        }
        Ok(())
    }
}

fn count_sources(list: &[Grid]) -> usize {
    list.last().map_or(0, |g| g.source.1 + 1)
}

fn checked_grid(g: [i64; 3], m: i64, source: (&'static str, usize), seconds: f64) -> Result<Grid> {
    let [t, h, w] = g;
    let (key, i) = source;
    if t <= 0 || h <= 0 || w <= 0 {
        return Err(EngineError::new(format!(
            "{key}[{i}] is (t={t}, h={h}, w={w}); every dimension must be positive"
        )));
    }
    if h % m != 0 || w % m != 0 {
        return Err(EngineError::new(format!(
            "{key}[{i}] is (t={t}, h={h}, w={w}), not divisible by spatial_merge_size={m}"
        )));
    }
    let (mh, mw) = (h / m, w / m);
    let tokens = t
        .checked_mul(mh)
        .and_then(|n| n.checked_mul(mw))
        .filter(|&n| n as u64 <= MAX_ELEMENTS as u64)
        .ok_or_else(|| too_large(format_args!("{key}[{i}] = (t={t}, h={h}, w={w})")))?;
    Ok(Grid {
        t,
        h: mh,
        w: mw,
        advance: h.max(w) / m,
        tokens: tokens as usize,
        seconds,
        source,
    })
}

fn block_mismatch(row: usize, col: usize, kind: &str, found: usize, grid: &Grid) -> EngineError {
    let (key, i) = grid.source;
    EngineError::new(format!(
        "row {row}: the {kind} block at column {col} has {found} tokens but {key}[{i}] gives {} (t·h·w / merge²); the grids and the token ids disagree",
        grid.tokens
    ))
}

fn position(base: i64, offset: usize, row: usize) -> Result<i64> {
    i64::try_from(offset)
        .ok()
        .and_then(|o| base.checked_add(o))
        .ok_or_else(|| EngineError::new(format!("row {row}: a position overflows int64")))
}

/// Tokens a block scan tests at once: whole chunks are tested without an early
/// exit (which the compiler vectorizes), then the hit is located inside its chunk.
const SCAN: usize = 16;

/// The index of the first token equal to `a` or `b` (`row.len()` if none).
fn first_of_either(row: &[i64], a: i64, b: i64) -> usize {
    first_where(row, |t| (t == a) | (t == b))
}

/// The index of the first token other than `token` (`row.len()` if none).
fn first_other(row: &[i64], token: i64) -> usize {
    first_where(row, |t| t != token)
}

#[inline(always)]
fn first_where(row: &[i64], hit: impl Fn(i64) -> bool + Copy) -> usize {
    let mut chunks = row.chunks_exact(SCAN);
    let mut at = 0;
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |any, &t| any | hit(t)) {
            return at + chunk.iter().position(|&t| hit(t)).unwrap_or(0);
        }
        at += SCAN;
    }
    at + chunks
        .remainder()
        .iter()
        .position(|&t| hit(t))
        .unwrap_or(chunks.remainder().len())
}

/// Qwen2-VL / Qwen2.5-VL / Qwen3-VL: runs of media tokens are blocks.
fn vl_row(
    row: &[i64],
    r: usize,
    spec: &RopeSpec,
    grids: &mut Grids,
    out: &mut Channels<'_, i64>,
) -> Result<()> {
    let kind = |t: i64| {
        if t == spec.image_token_id {
            1
        } else if t == spec.video_token_id {
            2
        } else {
            0
        }
    };
    let mut current: i64 = 0;
    let mut i = 0;
    while i < row.len() {
        let k = kind(row[i]);
        let end = i + if k == 0 {
            first_of_either(&row[i..], spec.image_token_id, spec.video_token_id)
        } else {
            let media = if k == 1 {
                spec.image_token_id
            } else {
                spec.video_token_id
            };
            first_other(&row[i..], media)
        };
        let n = end - i;
        if k == 0 {
            let next = position(current, n, r)?;
            out.ramp(current, n);
            current = next;
        } else {
            let grid = grids.next(k == 2, r, i)?;
            if grid.tokens != n {
                return Err(block_mismatch(
                    r,
                    i,
                    if k == 2 { "video" } else { "image" },
                    n,
                    &grid,
                ));
            }
            // Qwen2.5-VL spaces video frames in time; images and the others step by 1.
            let interval = (spec.family == Family::Qwen25Vl && k == 2)
                .then_some((spec.tokens_per_second as f32) * (grid.seconds as f32));
            for t in 0..grid.t {
                let step = match interval {
                    Some(x) => ((t as f32) * x) as i64,
                    None => t,
                };
                let pt = current.checked_add(step).ok_or_else(|| {
                    EngineError::new(format!("row {r}: a position overflows int64"))
                })?;
                for a in 0..grid.h {
                    for b in 0..grid.w {
                        out.push(pt, current + a, current + b);
                    }
                }
            }
            current = current
                .checked_add(grid.advance)
                .ok_or_else(|| EngineError::new(format!("row {r}: a position overflows int64")))?;
        }
        i = end;
    }
    Ok(())
}

/// Float32 pieces of a Qwen3-Omni row, with the largest value of the piece
/// appended last (what transformers continues from).
struct OmniRow<'a, 'b> {
    out: &'a mut Channels<'b, f32>,
    last_max: Option<f32>,
}

impl OmniRow<'_, '_> {
    fn next_start(&self) -> f32 {
        self.last_max.map_or(0.0, |m| m + 1.0)
    }

    /// `start + k` for `k` in `0..n`, on all three channels.
    fn text(&mut self, start: f32, n: usize) {
        for k in 0..n {
            let p = (k as f32) + start;
            self.out.push(p, p, p);
        }
        if n > 0 {
            self.last_max = Some(((n - 1) as f32) + start);
        }
    }

    fn columns(&mut self, cols: &[[f32; 3]]) {
        for &[t, h, w] in cols {
            self.out.push(t, h, w);
        }
        if let Some(m) = cols.iter().flat_map(|c| c.iter().copied()).reduce(f32::max) {
            self.last_max = Some(m);
        }
    }
}

/// The vision positions of one Qwen3-Omni grid: `start + (t_k, i, j)`.
fn omni_vision(grid: &Grid, start: f32, temporal: impl Fn(i64) -> f32) -> Vec<[f32; 3]> {
    let mut cols = Vec::with_capacity(grid.tokens);
    for t in 0..grid.t {
        let pt = temporal(t) + start;
        for a in 0..grid.h {
            for b in 0..grid.w {
                cols.push([pt, (a as f32) + start, (b as f32) + start]);
            }
        }
    }
    cols
}

fn find_from(row: &[i64], token: i64, from: usize) -> Option<usize> {
    row.get(from..)?
        .iter()
        .position(|&t| t == token)
        .map(|n| from + n)
}

/// Tokens from `from` while they are in `run`; how many of them equal `count`.
fn run_count(row: &[i64], from: usize, run: &[i64], count: i64) -> (usize, usize) {
    let slice = row.get(from..).unwrap_or(&[]);
    let len = slice
        .iter()
        .position(|t| !run.contains(t))
        .unwrap_or(slice.len());
    let n = slice[..len].iter().filter(|&&t| t == count).count();
    (len, n)
}

/// Qwen3-Omni: blocks open with vision-start or audio-start tokens.
fn omni_row(
    row: &[i64],
    r: usize,
    spec: &RopeSpec,
    grids: &mut Grids,
    out: &mut Channels<'_, f32>,
) -> Result<()> {
    let before = out.len();
    let (image, video, vstart) = (
        spec.image_token_id,
        spec.video_token_id,
        spec.vision_start_token_id,
    );
    let audio = spec.audio_token_id.unwrap_or(i64::MIN);
    let astart = spec.audio_start_token_id.unwrap_or(i64::MIN);
    let aiv = spec.use_audio_in_video;
    let pps = spec.tokens_per_second;
    let (mut images, mut videos) = (0usize, 0usize);
    for (i, &t) in row.iter().enumerate() {
        if t == vstart {
            match row.get(i + 1) {
                Some(&n) if n == image => images += 1,
                Some(&n) if (aiv && n == astart) || (!aiv && n == video) => videos += 1,
                _ => {}
            }
        }
    }
    let audios = row.iter().filter(|&&t| t == astart).count();
    let has_vision = row.iter().any(|&t| t == image || t == video);
    let has_audio = row.contains(&audio);
    let blocks = if aiv {
        images + audios
    } else {
        images + videos + audios
    };
    let (mut left_images, mut left_videos, mut left_audios) = (images, videos, audios);
    let mut st = 0usize;
    let mut p = OmniRow {
        out,
        last_max: None,
    };
    let missing = |what: &str, from: usize| {
        EngineError::new(format!(
            "row {r}: expected another {what} after column {from}, as the row's media tokens announce; the block delimiters are unbalanced"
        ))
    };
    for _ in 0..blocks {
        let mut start = p.next_start();
        let ed_vision = if has_vision && (left_videos > 0 || left_images > 0) {
            find_from(row, vstart, st).ok_or_else(|| missing("vision-start token", st))?
        } else {
            usize::MAX
        };
        let ed_audio = if has_audio && left_audios > 0 {
            find_from(row, astart, st).ok_or_else(|| missing("audio-start token", st))?
        } else {
            usize::MAX
        };
        let at = ed_vision.min(ed_audio);
        if at == usize::MAX {
            return Err(missing("media block", st));
        }
        let text_len = at - st;
        p.text(start, text_len);
        start += text_len as f32;
        let in_video = at == ed_vision && ed_audio != usize::MAX && ed_vision + 1 == ed_audio;
        let (bos, eos) = if in_video { (2, 2) } else { (1, 1) };
        p.text(start, bos);
        start += bos as f32;
        let body = at + bos;
        let media_len;
        if at == ed_audio {
            let (len, n) = run_count(row, body, &[audio], audio);
            if n == 0 {
                return Err(missing("audio token", body));
            }
            p.text(start, n);
            media_len = len;
            left_audios = left_audios.saturating_sub(1);
        } else if row.get(at + 1) == Some(&image) {
            let grid = grids.next(false, r, at)?;
            let (len, _) = run_count(row, body, &[image], image);
            if len != grid.tokens {
                return Err(block_mismatch(r, at, "image", len, &grid));
            }
            p.columns(&omni_vision(&grid, start, |t| (t as f64 * pps) as f32));
            media_len = len;
            left_images = left_images.saturating_sub(1);
        } else if row.get(at + 1) == Some(&video) {
            let grid = grids.next(true, r, at)?;
            let (len, _) = run_count(row, body, &[video], video);
            if len != grid.tokens {
                return Err(block_mismatch(r, at, "video", len, &grid));
            }
            let (sec, pps32) = (grid.seconds as f32, pps as f32);
            p.columns(&omni_vision(&grid, start, |t| (t as f32) * sec * pps32));
            media_len = len;
            left_videos = left_videos.saturating_sub(1);
        } else if in_video {
            let grid = grids.next(true, r, at)?;
            let (len, n_audio) = run_count(row, body, &[video, audio], audio);
            if len - n_audio != grid.tokens {
                return Err(block_mismatch(r, at, "video", len - n_audio, &grid));
            }
            if n_audio == 0 {
                return Err(missing("audio token of the video", body));
            }
            let (sec, pps32) = (grid.seconds as f32, pps as f32);
            let frames = omni_vision(&grid, start, |t| (t as f32) * sec * pps32);
            // Frames and audio merged by time, a frame first on a tie.
            let (mut v, mut a) = (0usize, 0usize);
            while v < frames.len() && a < n_audio {
                let pa = (a as f32) + start;
                if frames[v][0] <= pa {
                    p.columns(&frames[v..v + 1]);
                    v += 1;
                } else {
                    p.columns(&[[pa, pa, pa]]);
                    a += 1;
                }
            }
            if v < frames.len() {
                p.columns(&frames[v..]);
            }
            if a < n_audio {
                let rest: Vec<[f32; 3]> = (a..n_audio)
                    .map(|k| {
                        let pa = (k as f32) + start;
                        [pa, pa, pa]
                    })
                    .collect();
                p.columns(&rest);
            }
            media_len = len;
            left_videos = left_videos.saturating_sub(1);
            left_audios = left_audios.saturating_sub(1);
        } else {
            return Err(EngineError::new(format!(
                "row {r}: the vision-start token at column {at} is followed by neither an image, a video nor an audio-start token"
            )));
        }
        let eos_start = p.next_start();
        p.text(eos_start, eos);
        st = at + bos + media_len + eos;
    }
    if st < row.len() {
        let start = p.next_start();
        p.text(start, row.len() - st);
    }
    let written = p.out.len() - before;
    if written != row.len() || st > row.len() {
        return Err(EngineError::new(format!(
            "row {r}: its media blocks and end tokens cover {written} positions for {} tokens; a block is missing its end token or the row is cut inside a block",
            row.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMG: i64 = 9;
    const VID: i64 = 8;
    const VS: i64 = 7;
    const VE: i64 = 6;
    const AUD: i64 = 5;
    const AS: i64 = 4;
    const AE: i64 = 3;

    fn spec(family: Family) -> RopeSpec {
        RopeSpec {
            family,
            spatial_merge_size: 2,
            image_token_id: IMG,
            video_token_id: VID,
            vision_start_token_id: VS,
            audio_token_id: Some(AUD),
            audio_start_token_id: Some(AS),
            tokens_per_second: 2.0,
            use_audio_in_video: false,
        }
    }

    fn ints(p: Positions) -> Vec<i64> {
        match p {
            Positions::Int(v) => v,
            Positions::Float(_) => panic!("expected integer positions"),
        }
    }

    #[test]
    fn text_only_rows_count_from_zero() {
        let rows = Rows::from_slices(&[vec![1, 2, 3], vec![1]]);
        let p = ints(rope_positions(&rows, &spec(Family::Qwen2Vl), &Media::default()).unwrap());
        assert_eq!(p, vec![0, 1, 2, 0, 0, 1, 2, 0, 0, 1, 2, 0]);
    }

    #[test]
    fn an_image_block_takes_its_grid() {
        // text, vision start, 2x2 merged tokens of a (1, 4, 4) grid, vision end, text
        let row = vec![1, VS, IMG, IMG, IMG, IMG, VE, 2];
        let rows = Rows::from_slices(&[row]);
        let media = Media {
            image_grids: &[[1, 4, 4]],
            ..Media::default()
        };
        let p = ints(rope_positions(&rows, &spec(Family::Qwen2Vl), &media).unwrap());
        let n = 8;
        assert_eq!(&p[..n], &[0, 1, 2, 2, 2, 2, 4, 5]); // temporal
        assert_eq!(&p[n..2 * n], &[0, 1, 2, 2, 3, 3, 4, 5]); // height
        assert_eq!(&p[2 * n..], &[0, 1, 2, 3, 2, 3, 4, 5]); // width
    }

    #[test]
    fn qwen2_5_spaces_video_frames_in_time() {
        let row = vec![VS, VID, VID, VE];
        let rows = Rows::from_slices(&[row]);
        let media = Media {
            video_grids: &[[2, 2, 2]],
            video_seconds: &[0.5],
            ..Media::default()
        };
        let p = ints(rope_positions(&rows, &spec(Family::Qwen25Vl), &media).unwrap());
        // interval = 2 tokens/s * 0.5 s = 1; start 1; frames at 1 and 2; text after at 1 + 1.
        assert_eq!(&p[..4], &[0, 1, 2, 2]);
        let q = ints(rope_positions(&rows, &spec(Family::Qwen2Vl), &media).unwrap());
        assert_eq!(&q[..4], &[0, 1, 2, 2]);
        let media3 = Media {
            video_grids: &[[2, 2, 2]],
            video_seconds: &[3.0],
            ..Media::default()
        };
        let p3 = ints(rope_positions(&rows, &spec(Family::Qwen25Vl), &media3).unwrap());
        assert_eq!(&p3[..4], &[0, 1, 7, 2]);
    }

    #[test]
    fn qwen3_vl_splits_videos_into_frames() {
        // two frames, each its own block, separated by text (a timestamp)
        let row = vec![VS, VID, VE, 1, VS, VID, VE];
        let rows = Rows::from_slices(&[row]);
        let media = Media {
            video_grids: &[[2, 2, 2]],
            ..Media::default()
        };
        let p = ints(rope_positions(&rows, &spec(Family::Qwen3Vl), &media).unwrap());
        assert_eq!(&p[..7], &[0, 1, 2, 3, 4, 5, 6]);
        // Qwen2-VL would see two blocks of one token for a 2-token grid: an error.
        let err = rope_positions(&rows, &spec(Family::Qwen2Vl), &media).unwrap_err();
        assert!(
            err.0.contains("video block at column 1 has 1 tokens"),
            "{err}"
        );
    }

    #[test]
    fn padded_layout_puts_each_row_at_its_tokens() {
        let ids = [0, 1, VS, IMG, VE, 0, 5, 6, 0, 0];
        let mask = [0, 1, 1, 1, 1, 0, 1, 1, 0, 0];
        let media = Media {
            image_grids: &[[1, 2, 2]],
            ..Media::default()
        };
        let s = spec(Family::Qwen2Vl);
        let p = ints(padded_rope_positions(&ids, &mask, 2, 5, &s, &media, true).unwrap());
        assert_eq!(&p[..10], &[0, 0, 1, 2, 3, 0, 0, 1, 0, 0]); // text row
        assert_eq!(&p[10..20], &[0, 0, 1, 2, 3, 0, 0, 1, 0, 0]); // temporal
        let q = ints(padded_rope_positions(&ids, &mask, 2, 5, &s, &media, false).unwrap());
        assert_eq!(q.len(), 30);
        assert_eq!(&q[..10], &p[10..20]);
        assert!(padded_rope_positions(&ids, &mask[..9], 2, 5, &s, &media, true).is_err());
    }

    #[test]
    fn padded_rows_with_holes_match_their_ragged_rows() {
        // row 0 attends columns 0, 2, 3, 4 (a hole at 1); row 1 attends nothing.
        let ids = [1, 0, VS, IMG, VE, 0, 0, 0, 0, 0];
        let mask = [1, 0, 1, 1, 1, 0, 0, 0, 0, 0];
        let media = Media {
            image_grids: &[[1, 2, 2]],
            ..Media::default()
        };
        let s = spec(Family::Qwen2Vl);
        let p = ints(padded_rope_positions(&ids, &mask, 2, 5, &s, &media, true).unwrap());
        let rows = Rows::from_slices(&[vec![1, VS, IMG, VE], vec![]]);
        let q = ints(rope_positions(&rows, &s, &media).unwrap());
        let at = [0, 2, 3, 4];
        for ch in 0..3 {
            for (k, &c) in at.iter().enumerate() {
                assert_eq!(p[(ch + 1) * 10 + c], q[ch * 4 + k]);
            }
            assert_eq!(p[(ch + 1) * 10 + 1], 0);
            assert!(p[(ch + 1) * 10 + 5..(ch + 2) * 10].iter().all(|&x| x == 0));
        }
        assert_eq!(&p[..10], &[0, 0, 1, 2, 3, 0, 0, 0, 0, 0]);
        let mut o = spec(Family::Qwen3Omni);
        o.audio_token_id = Some(AUD);
        let f = floats(padded_rope_positions(&ids, &mask, 2, 5, &o, &media, false).unwrap());
        let g = floats(rope_positions(&rows, &o, &media).unwrap());
        for ch in 0..3 {
            for (k, &c) in at.iter().enumerate() {
                assert_eq!(f[ch * 10 + c], g[ch * 4 + k]);
            }
        }
    }

    /// The padded positions of `ids`/`mask` computed the slow way: the attended
    /// tokens as ragged rows, their positions scattered back into the layout.
    fn padded_by_unpadding(
        ids: &[i64],
        mask: &[i64],
        rows: usize,
        len: usize,
        spec: &RopeSpec,
        media: &Media<'_>,
    ) -> Result<Vec<f64>> {
        let ragged = crate::batch::unpad(ids, mask, rows, len)?;
        let values: Vec<f64> = match rope_positions(&ragged, spec, media)? {
            Positions::Int(v) => v.iter().map(|&x| x as f64).collect(),
            Positions::Float(v) => v.iter().map(|&x| f64::from(x)).collect(),
        };
        let (cells, total) = (rows * len, ragged.values.len());
        let mut out = vec![0.0; 4 * cells];
        let mut k = 0;
        for r in 0..rows {
            let mut seen = 0.0;
            for c in 0..len {
                let cell = r * len + c;
                if mask[cell] != 0 {
                    out[cell] = seen;
                    for ch in 0..3 {
                        out[(ch + 1) * cells + cell] = values[ch * total + k];
                    }
                    seen += 1.0;
                    k += 1;
                }
            }
        }
        Ok(out)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 200,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// One pass into the layout equals unpadding, computing and scattering,
        /// for any mask (left, right or holes, empty rows) and both algorithms.
        #[test]
        fn padded_positions_equal_unpadded_ones(
            pieces in proptest::collection::vec((0u8..6, 0u8..4), 1..12),
            rows in 1usize..4,
            holes in proptest::collection::vec(0u8..60, 0..200),
            omni in proptest::bool::ANY,
        ) {
            // pieces: text, an image block of 1 or 4 tokens, or an audio block
            let mut row = Vec::new();
            let mut grids = Vec::new();
            for &(kind, n) in &pieces {
                match kind {
                    0..=2 => row.extend((0..=n).map(|t| 100 + i64::from(t))),
                    3 | 4 => {
                        let big = kind == 4;
                        row.push(VS);
                        row.extend(std::iter::repeat_n(IMG, if big { 4 } else { 1 }));
                        row.push(VE);
                        grids.push(if big { [1, 4, 4] } else { [1, 2, 2] });
                    }
                    _ => {
                        row.push(AS);
                        row.extend(std::iter::repeat_n(AUD, usize::from(n) + 1));
                        row.push(AE);
                    }
                }
            }
            let len = row.len() + 3;
            let (mut ids, mut mask) = (Vec::new(), Vec::new());
            let mut all_grids = Vec::new();
            for r in 0..rows {
                // row r: left padding r % 3, the row, right padding; a hole in about
                // one cell in 60 (most cases reach Ok: 160 of 200 when counted)
                let pad_left = r % 3;
                for c in 0..len {
                    let at = c.wrapping_sub(pad_left);
                    let inside = c >= pad_left && at < row.len();
                    ids.push(if inside { row[at] } else { 0 });
                    let hole = holes.get(r * len + c).is_some_and(|&h| h == 0);
                    mask.push(i64::from(inside && !hole));
                }
                all_grids.extend(grids.iter().copied());
            }
            let mut s = spec(if omni { Family::Qwen3Omni } else { Family::Qwen25Vl });
            s.audio_token_id = Some(AUD);
            let media = Media { image_grids: &all_grids, ..Media::default() };
            let fast = padded_rope_positions(&ids, &mask, rows, len, &s, &media, true);
            let slow = padded_by_unpadding(&ids, &mask, rows, len, &s, &media);
            match (fast, slow) {
                (Ok(fast), Ok(slow)) => {
                    let fast: Vec<f64> = match fast {
                        Positions::Int(v) => v.iter().map(|&x| x as f64).collect(),
                        Positions::Float(v) => v.iter().map(|&x| f64::from(x)).collect(),
                    };
                    proptest::prop_assert_eq!(fast, slow);
                }
                (Err(a), Err(b)) => proptest::prop_assert_eq!(a.0, b.0),
                (a, b) => proptest::prop_assert!(false, "fast {:?} vs slow {:?}", a.map(|_| ()), b.map(|_| ())),
            }
        }
    }

    #[test]
    fn grid_mismatches_are_errors() {
        let rows = Rows::from_slices(&[vec![VS, IMG, IMG, VE]]);
        let one = Media {
            image_grids: &[[1, 2, 2]],
            ..Media::default()
        };
        let err = rope_positions(&rows, &spec(Family::Qwen2Vl), &one).unwrap_err();
        assert!(
            err.0
                .contains("row 0: the image block at column 1 has 2 tokens"),
            "{err}"
        );
        let none = Media::default();
        let err = rope_positions(&rows, &spec(Family::Qwen2Vl), &none).unwrap_err();
        assert!(err.0.contains("has no grid"), "{err}");
        let extra = Media {
            image_grids: &[[1, 2, 4], [1, 2, 2]],
            ..Media::default()
        };
        let err = rope_positions(&rows, &spec(Family::Qwen2Vl), &extra).unwrap_err();
        assert!(err.0.contains("holds 2 images"), "{err}");
        let odd = Media {
            image_grids: &[[1, 3, 4]],
            ..Media::default()
        };
        let err = rope_positions(&rows, &spec(Family::Qwen2Vl), &odd).unwrap_err();
        assert!(err.0.contains("not divisible"), "{err}");
        let huge = Media {
            image_grids: &[[i64::MAX, 2, 2]],
            ..Media::default()
        };
        assert!(rope_positions(&rows, &spec(Family::Qwen2Vl), &huge).is_err());
    }

    fn floats(p: Positions) -> Vec<f32> {
        match p {
            Positions::Float(v) => v,
            Positions::Int(_) => panic!("expected float positions"),
        }
    }

    #[test]
    fn omni_image_and_audio_blocks() {
        // text, <vs> 4 image tokens (1x4x4 grid) <ve>, <as> 3 audio <ae>, text
        let row = vec![1, VS, IMG, IMG, IMG, IMG, VE, AS, AUD, AUD, AUD, AE, 2];
        let rows = Rows::from_slices(&[row]);
        let media = Media {
            image_grids: &[[1, 4, 4]],
            ..Media::default()
        };
        let p = floats(rope_positions(&rows, &spec(Family::Qwen3Omni), &media).unwrap());
        let n = 13;
        let t: Vec<f32> = p[..n].to_vec();
        let w: Vec<f32> = p[2 * n..].to_vec();
        // image block starts at 2; its largest position is 3, so <ve> is 4.
        assert_eq!(t, vec![0., 1., 2., 2., 2., 2., 4., 5., 6., 7., 8., 9., 10.]);
        assert_eq!(w, vec![0., 1., 2., 3., 2., 3., 4., 5., 6., 7., 8., 9., 10.]);
    }

    #[test]
    fn omni_audio_in_video_interleaves_by_time() {
        let mut s = spec(Family::Qwen3Omni);
        s.use_audio_in_video = true;
        s.tokens_per_second = 2.0;
        // <vs><as> frames (2 frames of 1 token) and 3 audio tokens <ae><ve>
        let row = vec![VS, AS, VID, AUD, AUD, VID, AUD, AE, VE];
        let rows = Rows::from_slices(&[row]);
        let media = Media {
            video_grids: &[[2, 2, 2]],
            video_seconds: &[1.0],
            ..Media::default()
        };
        let p = floats(rope_positions(&rows, &s, &media).unwrap());
        // start 2: frame t=2 (<= audio 2), audio 2, 3, frame t=4 (> 3 ... then audio 4? 4 <= 4: frame first)
        assert_eq!(&p[..9], &[0., 1., 2., 2., 3., 4., 4., 5., 6.]);
    }

    #[test]
    fn omni_unbalanced_blocks_are_errors() {
        let rows = Rows::from_slices(&[vec![VS, IMG, IMG, IMG, IMG]]);
        let media = Media {
            image_grids: &[[1, 4, 4]],
            ..Media::default()
        };
        let err = rope_positions(&rows, &spec(Family::Qwen3Omni), &media).unwrap_err();
        assert!(err.0.contains("row 0"), "{err}");
    }
}
