//! Qwen2-VL-family image and video preprocessing straight into one
//! `pixel_values` buffer: antialiased bicubic resize (the integer arithmetic of
//! torch's `interpolate(..., mode="bicubic", antialias=True)` on uint8, so the
//! resized pixels equal the processor's), rescale and normalise through a
//! per-channel table of 256 values, and patchify into the clip's rows, in the
//! processor's row order and column layout. An image is a one-frame clip; a
//! clip's frames are taken `temporal` at a time (the last frame repeated to
//! fill the last group, as the processors pad). Groups of frames run in
//! parallel; each writes only its own rows of the caller's buffer.

use std::sync::OnceLock;

use rayon::prelude::*;

use crate::error::{EngineError, Result};
use crate::limits::{too_large, MAX_ELEMENTS};

/// Colour channels of every picture and of every output row.
pub const CHANNELS: usize = 3;

/// One decoded picture: `height × width × 3` uint8 values (HWC, RGB).
#[derive(Debug, Clone, Copy)]
pub struct Picture<'a> {
    pub pixels: &'a [u8],
    pub height: usize,
    pub width: usize,
}

/// One decoded clip: `frames × height × width × 3` uint8 values (THWC, RGB).
/// An image is a clip of one frame.
#[derive(Debug, Clone, Copy)]
pub struct Clip<'a> {
    pub pixels: &'a [u8],
    pub frames: usize,
    pub height: usize,
    pub width: usize,
}

impl<'a> Clip<'a> {
    /// Frame `k` (checked sizes assumed).
    fn frame(&self, k: usize) -> Picture<'a> {
        let n = self.height * self.width * CHANNELS;
        Picture {
            pixels: &self.pixels[k * n..(k + 1) * n],
            height: self.height,
            width: self.width,
        }
    }
}

impl<'a> From<Picture<'a>> for Clip<'a> {
    fn from(p: Picture<'a>) -> Clip<'a> {
        Clip {
            pixels: p.pixels,
            frames: 1,
            height: p.height,
            width: p.width,
        }
    }
}

/// The vision tower's patch geometry: `patch × patch` pixels per patch,
/// `merge × merge` patches per merged token, each patch repeated `temporal`
/// times (an image is one frame of a `temporal`-frame clip).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchLayout {
    pub patch: usize,
    pub merge: usize,
    pub temporal: usize,
}

impl PatchLayout {
    /// Checks that every size is positive and a row fits the engine's limit.
    pub fn checked(self) -> Result<PatchLayout> {
        if self.patch == 0 || self.merge == 0 || self.temporal == 0 {
            return Err(EngineError::new(format!(
                "patch_size, merge_size and temporal_patch_size must be positive, got {}, {}, {}",
                self.patch, self.merge, self.temporal
            )));
        }
        self.patch
            .checked_mul(self.patch)
            .and_then(|n| n.checked_mul(self.temporal))
            .and_then(|n| n.checked_mul(CHANNELS))
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| {
                too_large(format_args!(
                    "patch_size={} with temporal_patch_size={}: one row",
                    self.patch, self.temporal
                ))
            })?;
        Ok(self)
    }

    /// Values in one row: `3 · temporal · patch²`.
    pub fn row_width(&self) -> usize {
        CHANNELS * self.temporal * self.patch * self.patch
    }

    /// Rows of an image resized to `height × width`: `(height/patch)·(width/patch)`.
    pub fn rows(&self, height: usize, width: usize) -> usize {
        (height / self.patch) * (width / self.patch)
    }
}

/// The `pixel_values` rows of each image resized to `targets[i]` (height,
/// width), checked: every target positive and divisible by `patch · merge`,
/// the total within [`MAX_ELEMENTS`] values.
pub fn rows_per_image(targets: &[(usize, usize)], layout: PatchLayout) -> Result<Vec<usize>> {
    rows_per_clip(&vec![1; targets.len()], targets, layout)
}

/// Frame groups of a clip of `frames` frames: `ceil(frames / temporal)`.
pub fn frame_groups(frames: usize, layout: PatchLayout) -> usize {
    frames.div_ceil(layout.temporal)
}

/// The `pixel_values` rows of each clip of `frames[i]` frames resized to
/// `targets[i]`: `ceil(frames / temporal) · (height/patch) · (width/patch)`,
/// checked as [`rows_per_image`] checks images, and every clip non-empty.
pub fn rows_per_clip(
    frames: &[usize],
    targets: &[(usize, usize)],
    layout: PatchLayout,
) -> Result<Vec<usize>> {
    let layout = layout.checked()?;
    if frames.len() != targets.len() {
        return Err(EngineError::new(format!(
            "frames has {} entries for {} targets; give one frame count per clip",
            frames.len(),
            targets.len()
        )));
    }
    let factor = layout.patch * layout.merge;
    let mut total = 0usize;
    targets
        .iter()
        .zip(frames)
        .enumerate()
        .map(|(i, (&(h, w), &t))| {
            if h == 0 || w == 0 || h % factor != 0 || w % factor != 0 {
                return Err(EngineError::new(format!(
                    "targets[{i}] = ({h}, {w}): image {i}'s size after resizing must be a positive \
                     multiple of patch_size·merge_size = {factor} on both sides"
                )));
            }
            if t == 0 {
                return Err(EngineError::new(format!(
                    "frames[{i}] = 0: clip {i} has no frames"
                )));
            }
            let rows = layout
                .rows(h, w)
                .checked_mul(frame_groups(t, layout))
                .ok_or_else(|| too_large(format_args!("clip {i}: pixel_values rows")))?;
            total = total
                .checked_add(rows)
                .filter(|t| {
                    t.checked_mul(layout.row_width())
                        .is_some_and(|n| n <= MAX_ELEMENTS)
                })
                .ok_or_else(|| too_large(format_args!("targets up to image {i}: pixel_values")))?;
            Ok(rows)
        })
        .collect()
}

/// Resampling taps of one axis: output `i` reads `count[i]` inputs from
/// `first[i]` with the integer weights `weights[i·stride ..]`, which sum to
/// about `2^precision`.
struct Taps {
    first: Vec<usize>,
    count: Vec<usize>,
    weights: Vec<i32>,
    stride: usize,
    precision: u32,
}

/// The antialiasing bicubic kernel (Keys, a = -0.5, as PIL and torch's
/// antialiased mode use).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// The taps resizing `input` samples to `output`: float weights normalised to
/// sum 1, then scaled to int16 at the largest precision that keeps the largest
/// weight below 2^15, and rounded half away from zero (torch's uint8 path).
fn taps(input: usize, output: usize) -> Taps {
    let scale = input as f64 / output as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let stride = support.ceil() as usize * 2 + 1;
    let mut first = Vec::with_capacity(output);
    let mut count = Vec::with_capacity(output);
    let mut floats = vec![0.0f64; output * stride];
    let mut largest = 0.0f64;
    for (i, row) in floats.chunks_exact_mut(stride).enumerate() {
        let center = scale * (i as f64 + 0.5);
        let start = ((center - support + 0.5) as i64).max(0);
        let size = (((center + support + 0.5) as i64).min(input as i64) - start)
            .clamp(0, stride as i64) as usize;
        let mut total = 0.0;
        for (j, w) in row[..size].iter_mut().enumerate() {
            *w = bicubic(((j as i64 + start) as f64 - center + 0.5) * invscale);
            total += *w;
        }
        if total != 0.0 {
            for w in &mut row[..size] {
                *w /= total;
                largest = largest.max(*w);
            }
        }
        first.push(start as usize);
        count.push(size);
    }
    let mut precision = 0u32;
    while precision < 22 {
        let next = (0.5 + largest * f64::from(1u32 << (precision + 1))) as i64;
        if next >= 1 << 15 {
            break;
        }
        precision += 1;
    }
    let unit = f64::from(1u32 << precision);
    let weights = floats
        .iter()
        .map(|&w| {
            let v = w * unit;
            let rounded = if v < 0.0 {
                (v - 0.5) as i32
            } else {
                (v + 0.5) as i32
            };
            i32::from(rounded as i16)
        })
        .collect();
    Taps {
        first,
        count,
        weights,
        stride,
        precision: precision.max(1),
    }
}

/// `sum / 2^precision` clamped to a byte (`sum` carries the rounding half).
#[inline]
fn to_byte(sum: i32, precision: u32) -> u8 {
    (sum >> precision).clamp(0, 255) as u8
}

/// A zeroed scratch buffer of `n` bytes, or an error naming the image (never an abort).
fn scratch(n: usize, image: usize) -> Result<Vec<u8>> {
    if n > MAX_ELEMENTS {
        return Err(too_large(format_args!(
            "image {image}: {n} resampled values"
        )));
    }
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| {
        EngineError::new(format!(
            "out of memory allocating {n} bytes to resize image {image}"
        ))
    })?;
    out.resize(n, 0);
    Ok(out)
}

/// Resamples `src` (rows of `width` bytes) along its rows: output row `r` is
/// `Σ_j weights[r][j] · src row (first[r] + j)`, rounded and clamped to a byte.
/// The sums run across whole rows at once (vectorised); integer sums are exact,
/// so the order of the terms does not change a result.
fn resample_rows(src: &[u8], width: usize, taps: &Taps, out: &mut [u8], sums: &mut [i32]) {
    let half = 1i32 << (taps.precision - 1);
    for (r, dst) in out.chunks_exact_mut(width).enumerate() {
        sums.fill(half);
        let weights = &taps.weights[r * taps.stride..r * taps.stride + taps.count[r]];
        for (j, &k) in weights.iter().enumerate() {
            let start = (taps.first[r] + j) * width;
            for (s, &v) in sums.iter_mut().zip(&src[start..start + width]) {
                *s += i32::from(v) * k;
            }
        }
        for (d, &s) in dst.iter_mut().zip(sums.iter()) {
            *d = to_byte(s, taps.precision);
        }
    }
}

/// Planar `3 × height × out_width` bytes: each row of the HWC `picture`
/// resampled along x (or only de-interleaved when the width is kept).
fn horizontal(picture: &Picture, out_width: usize, image: usize) -> Result<Vec<u8>> {
    let (h, w) = (picture.height, picture.width);
    let plane = h * out_width;
    let mut out = scratch(CHANNELS * plane, image)?;
    if out_width == w {
        for (k, px) in picture.pixels.chunks_exact(CHANNELS).enumerate() {
            for c in 0..CHANNELS {
                out[c * plane + k] = px[c];
            }
        }
        return Ok(out);
    }
    let taps = taps(w, out_width);
    let half = 1i32 << (taps.precision - 1);
    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    for (y, src) in picture.pixels.chunks_exact(w * CHANNELS).enumerate() {
        let rows = y * out_width..(y + 1) * out_width;
        let outs = r_plane[rows.clone()]
            .iter_mut()
            .zip(g_plane[rows.clone()].iter_mut())
            .zip(b_plane[rows].iter_mut());
        for (x, ((r, g), b)) in outs.enumerate() {
            let weights = &taps.weights[x * taps.stride..x * taps.stride + taps.count[x]];
            let base = taps.first[x] * CHANNELS;
            let run = &src[base..base + weights.len() * CHANNELS];
            let (mut sr, mut sg, mut sb) = (half, half, half);
            for (px, &k) in run.chunks_exact(CHANNELS).zip(weights) {
                sr += i32::from(px[0]) * k;
                sg += i32::from(px[1]) * k;
                sb += i32::from(px[2]) * k;
            }
            *r = to_byte(sr, taps.precision);
            *g = to_byte(sg, taps.precision);
            *b = to_byte(sb, taps.precision);
        }
    }
    Ok(out)
}

/// Planar `3 × out_height × width` bytes: the planar `source` (`3 × height ×
/// width`) resampled along y.
fn vertical(
    source: &[u8],
    height: usize,
    width: usize,
    out_height: usize,
    image: usize,
) -> Result<Vec<u8>> {
    let taps = taps(height, out_height);
    let mut out = scratch(CHANNELS * out_height * width, image)?;
    let mut sums = vec![0i32; width];
    for c in 0..CHANNELS {
        resample_rows(
            &source[c * height * width..(c + 1) * height * width],
            width,
            &taps,
            &mut out[c * out_height * width..(c + 1) * out_height * width],
            &mut sums,
        );
    }
    Ok(out)
}

/// The planar `3 × height × width` bytes of `picture` resized to `target`.
fn resized(picture: &Picture, target: (usize, usize), image: usize) -> Result<Vec<u8>> {
    let (th, tw) = target;
    let across = horizontal(picture, tw, image)?;
    if th == picture.height {
        return Ok(across);
    }
    vertical(&across, picture.height, tw, th, image)
}

/// Writes the planar `3 × height × width` frames `planes` (one per temporal
/// position; a repeated frame is the same slice) into their rows `out`: row
/// `((by·(gw/m) + bx)·m + my)·m + mx` holds patch `(by·m + my, bx·m + mx)`,
/// its columns `[channel][temporal position][py][px]`, each byte mapped
/// through `table[channel·256 + byte]`.
fn patchify<T: Copy>(
    planes: &[&[u8]],
    (height, width): (usize, usize),
    layout: PatchLayout,
    table: &[T],
    out: &mut [T],
) {
    let PatchLayout {
        patch: p,
        merge: m,
        temporal,
    } = layout;
    let (gh, gw) = (height / p, width / p);
    let plane = height * width;
    let block = p * p;
    let mut rows = out.chunks_exact_mut(layout.row_width());
    for by in 0..gh / m {
        for bx in 0..gw / m {
            for my in 0..m {
                for mx in 0..m {
                    let Some(row) = rows.next() else { return };
                    let (y0, x0) = ((by * m + my) * p, (bx * m + mx) * p);
                    for c in 0..CHANNELS {
                        let lut = &table[c * 256..(c + 1) * 256];
                        let channel = &mut row[c * temporal * block..(c + 1) * temporal * block];
                        for t in 0..temporal {
                            let (done, rest) = channel.split_at_mut(t * block);
                            let dst = &mut rest[..block];
                            if t > 0 && std::ptr::eq(planes[t], planes[t - 1]) {
                                dst.copy_from_slice(&done[(t - 1) * block..]);
                                continue;
                            }
                            for py in 0..p {
                                let start = c * plane + (y0 + py) * width + x0;
                                for (d, &v) in dst[py * p..(py + 1) * p]
                                    .iter_mut()
                                    .zip(&planes[t][start..start + p])
                                {
                                    *d = lut[usize::from(v)];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Fills `out` (`Σ rows × row_width` values, row-major) with the
/// `pixel_values` of `pictures`, picture `i` resized to `targets[i]`, its rows
/// after those of the pictures before it. `table` holds 3 × 256 output values:
/// what the processor's rescale and normalise make of each byte of each
/// channel. Runs the pictures on `threads` threads (rayon's pool when more
/// than one, in the process that started the pool). Every size is checked
/// first; an error names the argument and the image.
pub fn write_pixel_values<T: Copy + Send + Sync>(
    pictures: &[Picture],
    targets: &[(usize, usize)],
    layout: PatchLayout,
    table: &[T],
    out: &mut [T],
    threads: usize,
) -> Result<()> {
    let clips: Vec<Clip> = pictures.iter().map(|&p| Clip::from(p)).collect();
    write_clips(&clips, "images", targets, layout, table, out, threads)
}

/// As [`write_pixel_values`] for video clips: clip `i`'s frames resized to
/// `targets[i]`, taken `temporal` at a time (the last frame repeated to fill
/// the last group), its `ceil(frames/temporal)·(h/patch)·(w/patch)` rows after
/// those of the clips before it, each group's rows in the image order.
pub fn write_video_pixel_values<T: Copy + Send + Sync>(
    clips: &[Clip],
    targets: &[(usize, usize)],
    layout: PatchLayout,
    table: &[T],
    out: &mut [T],
    threads: usize,
) -> Result<()> {
    write_clips(clips, "videos", targets, layout, table, out, threads)
}

fn write_clips<T: Copy + Send + Sync>(
    clips: &[Clip],
    what: &str,
    targets: &[(usize, usize)],
    layout: PatchLayout,
    table: &[T],
    out: &mut [T],
    threads: usize,
) -> Result<()> {
    if clips.len() != targets.len() {
        return Err(EngineError::new(format!(
            "targets has {} entries for {} {what}; give one (height, width) per item",
            targets.len(),
            clips.len()
        )));
    }
    if table.len() != CHANNELS * 256 {
        return Err(EngineError::new(format!(
            "table must hold 3 × 256 values (one per channel and byte), got {}",
            table.len()
        )));
    }
    for (i, clip) in clips.iter().enumerate() {
        let expected = clip
            .height
            .checked_mul(clip.width)
            .and_then(|n| n.checked_mul(CHANNELS))
            .and_then(|n| n.checked_mul(clip.frames));
        if clip.frames == 0
            || clip.height == 0
            || clip.width == 0
            || expected != Some(clip.pixels.len())
        {
            let shape = if what == "images" {
                "(height, width, 3)"
            } else {
                "(frames, height, width, 3)"
            };
            return Err(EngineError::new(format!(
                "{what}[{i}] holds {} bytes for frames={} height={} width={}; each item must be \
                 a non-empty {shape} uint8 array",
                clip.pixels.len(),
                clip.frames,
                clip.height,
                clip.width
            )));
        }
    }
    let frames: Vec<usize> = clips.iter().map(|c| c.frames).collect();
    let rows = rows_per_clip(&frames, targets, layout)?;
    let width = layout.row_width();
    let total: usize = rows.iter().sum();
    if out.len() != total * width {
        return Err(EngineError::new(format!(
            "out holds {} values but the {what} need {total} rows of {width} = {}",
            out.len(),
            total * width
        )));
    }
    let mut jobs: Vec<Job<T>> = Vec::with_capacity(clips.len());
    let mut rest = out;
    for (image, (clip, &target)) in clips.iter().zip(targets).enumerate() {
        let per_group = layout.rows(target.0, target.1) * width;
        for group in 0..frame_groups(clip.frames, layout) {
            let (part, tail) = rest.split_at_mut(per_group);
            jobs.push(Job {
                image,
                clip,
                group,
                target,
                out: part,
            });
            rest = tail;
        }
    }
    let run = |job: Job<T>| {
        let first = job.group * layout.temporal;
        let last = (first + layout.temporal).min(job.clip.frames);
        let resized_frames = (first..last)
            .map(|k| resized(&job.clip.frame(k), job.target, job.image))
            .collect::<Result<Vec<_>>>()?;
        // Positions past the clip's last frame repeat it (the same slice).
        let planes: Vec<&[u8]> = (0..layout.temporal)
            .map(|t| resized_frames[t.min(resized_frames.len() - 1)].as_slice())
            .collect();
        patchify(&planes, job.target, layout, table, job.out);
        Ok(())
    };
    if threads > 1 && jobs.len() > 1 && pool_is_ours() {
        jobs.into_par_iter().try_for_each(run)
    } else {
        jobs.into_iter().try_for_each(run)
    }
}

/// Whether rayon's pool belongs to this process: a pool started before a `fork`
/// has no threads in the child, so a forked child runs its images serially.
fn pool_is_ours() -> bool {
    static POOL_PROCESS: OnceLock<u32> = OnceLock::new();
    *POOL_PROCESS.get_or_init(std::process::id) == std::process::id()
}

/// One group of `temporal` frames: its clip, group index, size after resizing
/// and rows of the output.
struct Job<'a, 'p, T> {
    image: usize,
    clip: &'a Clip<'p>,
    group: usize,
    target: (usize, usize),
    out: &'a mut [T],
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYOUT: PatchLayout = PatchLayout {
        patch: 2,
        merge: 2,
        temporal: 2,
    };

    fn identity_table() -> Vec<f32> {
        (0..3 * 256)
            .map(|k| (k % 256) as f32 + (k / 256) as f32 * 1000.0)
            .collect()
    }

    #[test]
    fn taps_sum_to_one_and_keep_the_identity() {
        for (input, output) in [(10, 4), (4, 10), (448, 224), (7, 7), (1, 3), (3, 1)] {
            let t = taps(input, output);
            for i in 0..output {
                let sum: i32 = t.weights[i * t.stride..i * t.stride + t.count[i]]
                    .iter()
                    .sum();
                let unit = 1i32 << t.precision;
                assert!(
                    (sum - unit).abs() <= t.count[i] as i32,
                    "{input}->{output}: {sum} vs {unit}"
                );
                assert!(t.first[i] + t.count[i] <= input);
            }
        }
        let t = taps(5, 5);
        for i in 0..5 {
            let row = &t.weights[i * t.stride..i * t.stride + t.count[i]];
            let j = i - t.first[i];
            assert_eq!(row[j], 1 << t.precision);
            assert_eq!(row.iter().filter(|&&w| w != 0).count(), 1);
        }
    }

    #[test]
    fn a_flat_image_stays_flat_at_any_size() {
        let pixels: Vec<u8> = [10u8, 128, 250].repeat(13 * 17);
        let picture = Picture {
            pixels: &pixels,
            height: 13,
            width: 17,
        };
        for target in [(4, 8), (8, 4), (28, 36), (12, 16)] {
            let planes = resized(&picture, target, 0).unwrap();
            let plane = target.0 * target.1;
            for (c, value) in [10u8, 128, 250].into_iter().enumerate() {
                assert!(
                    planes[c * plane..(c + 1) * plane]
                        .iter()
                        .all(|&v| v == value),
                    "{target:?}"
                );
            }
        }
    }

    #[test]
    fn rows_follow_the_merge_order_and_repeat_the_frame() {
        // A 4x4 image kept at its size: 4 patches of 2x2, one merged block.
        let pixels: Vec<u8> = (0..16u8).flat_map(|v| [v, v + 100, v + 200]).collect();
        let picture = Picture {
            pixels: &pixels,
            height: 4,
            width: 4,
        };
        let table = identity_table();
        let mut out = vec![0f32; 4 * LAYOUT.row_width()];
        write_pixel_values(&[picture], &[(4, 4)], LAYOUT, &table, &mut out, 1).unwrap();
        let row = |r: usize| &out[r * 24..(r + 1) * 24];
        // Row 1 is patch (0, 1): pixels (0..2, 2..4) -> values 2, 3, 6, 7.
        assert_eq!(&row(1)[..8], &[2.0, 3.0, 6.0, 7.0, 2.0, 3.0, 6.0, 7.0]);
        assert_eq!(&row(1)[8..12], &[1102.0, 1103.0, 1106.0, 1107.0]);
        // Row 2 is patch (1, 0): pixels (2..4, 0..2) -> 8, 9, 12, 13.
        assert_eq!(&row(2)[..4], &[8.0, 9.0, 12.0, 13.0]);
        assert_eq!(&row(3)[16..20], &[2210.0, 2211.0, 2214.0, 2215.0]);
    }

    #[test]
    fn parallel_and_serial_runs_agree() {
        let a: Vec<u8> = (0..30 * 50 * 3).map(|k| (k * 7 % 251) as u8).collect();
        let b: Vec<u8> = (0..20 * 20 * 3).map(|k| (k * 13 % 256) as u8).collect();
        let pictures = [
            Picture {
                pixels: &a,
                height: 30,
                width: 50,
            },
            Picture {
                pixels: &b,
                height: 20,
                width: 20,
            },
        ];
        let targets = [(28, 48), (12, 24)];
        let n: usize = rows_per_image(&targets, LAYOUT).unwrap().iter().sum();
        let table = identity_table();
        let mut serial = vec![0f32; n * LAYOUT.row_width()];
        let mut parallel = serial.clone();
        write_pixel_values(&pictures, &targets, LAYOUT, &table, &mut serial, 1).unwrap();
        write_pixel_values(&pictures, &targets, LAYOUT, &table, &mut parallel, 4).unwrap();
        assert_eq!(serial, parallel);
    }

    #[test]
    fn bad_sizes_are_errors_naming_the_argument() {
        let pixels = vec![0u8; 12];
        let picture = Picture {
            pixels: &pixels,
            height: 2,
            width: 2,
        };
        let table = identity_table();
        let mut out = vec![0f32; 24];
        let err =
            write_pixel_values(&[picture], &[(4, 6)], LAYOUT, &table, &mut out, 1).unwrap_err();
        assert!(err.0.starts_with("targets[0] = (4, 6)"), "{err}");
        let err =
            write_pixel_values(&[picture], &[(4, 4)], LAYOUT, &table, &mut out, 1).unwrap_err();
        assert!(err.0.starts_with("out holds 24 values"), "{err}");
        let short = Picture {
            pixels: &pixels[..5],
            height: 2,
            width: 2,
        };
        let err = write_pixel_values(&[short], &[(4, 4)], LAYOUT, &table, &mut out, 1).unwrap_err();
        assert!(err.0.starts_with("images[0] holds 5 bytes"), "{err}");
        let err = write_pixel_values(&[picture], &[], LAYOUT, &table, &mut out, 1).unwrap_err();
        assert!(err.0.starts_with("targets has 0 entries"), "{err}");
        let err = write_pixel_values(&[picture], &[(4, 4)], LAYOUT, &table[..10], &mut out, 1)
            .unwrap_err();
        assert!(err.0.starts_with("table must hold"), "{err}");
        let zero = PatchLayout { patch: 0, ..LAYOUT };
        assert!(rows_per_image(&[(4, 4)], zero).is_err());
        let huge = [(1 << 20, 1 << 20)];
        assert!(rows_per_image(&huge, LAYOUT)
            .unwrap_err()
            .0
            .contains("limit"));
    }

    #[test]
    fn a_clip_takes_its_frames_in_groups_and_repeats_the_last() {
        // Three 4x4 frames, frame k's pixels all 10·k + channel: two groups,
        // the second holding frame 2 twice.
        let pixels: Vec<u8> = (0..3u8)
            .flat_map(|k| [10 * k, 10 * k + 1, 10 * k + 2].repeat(16))
            .collect();
        let clip = Clip {
            pixels: &pixels,
            frames: 3,
            height: 4,
            width: 4,
        };
        let rows = rows_per_clip(&[3], &[(4, 4)], LAYOUT).unwrap();
        assert_eq!(rows, vec![8]);
        let table = identity_table();
        let mut out = vec![0f32; 8 * LAYOUT.row_width()];
        write_video_pixel_values(&[clip], &[(4, 4)], LAYOUT, &table, &mut out, 2).unwrap();
        let row = |r: usize| &out[r * 24..(r + 1) * 24];
        // Columns [channel][temporal][2x2]: group 0 is frames 0 and 1.
        assert_eq!(&row(0)[..8], &[0.0, 0.0, 0.0, 0.0, 10.0, 10.0, 10.0, 10.0]);
        assert_eq!(
            &row(3)[8..16],
            &[1001.0; 4]
                .into_iter()
                .chain([1011.0; 4])
                .collect::<Vec<_>>()[..]
        );
        // Group 1: frame 2, then frame 2 again.
        assert!(row(4)[..8].iter().all(|&v| v == 20.0));
        assert!(row(7)[16..].iter().all(|&v| v == 2022.0));
        // A clip of one frame is the image.
        let one = Clip {
            pixels: &pixels[..48],
            frames: 1,
            height: 4,
            width: 4,
        };
        let picture = Picture {
            pixels: &pixels[..48],
            height: 4,
            width: 4,
        };
        let mut a = vec![0f32; 4 * 24];
        let mut b = a.clone();
        write_video_pixel_values(&[one], &[(4, 4)], LAYOUT, &table, &mut a, 1).unwrap();
        write_pixel_values(&[picture], &[(4, 4)], LAYOUT, &table, &mut b, 1).unwrap();
        assert_eq!(a, b);
        let err = rows_per_clip(&[0], &[(4, 4)], LAYOUT).unwrap_err();
        assert!(err.0.starts_with("frames[0] = 0"), "{err}");
        let short = Clip { frames: 4, ..clip };
        let err =
            write_video_pixel_values(&[short], &[(4, 4)], LAYOUT, &table, &mut out, 1).unwrap_err();
        assert!(err.0.starts_with("videos[0] holds 144 bytes"), "{err}");
    }
}
