//! Qwen2-VL-family (and GLM-4.1V) image and video preprocessing straight into
//! one `pixel_values` buffer: antialiased bicubic resize (the integer arithmetic
//! of torch's `interpolate(..., mode="bicubic", antialias=True)` on uint8, in
//! [`crate::resize`], so the resized pixels equal the processor's), rescale and normalise through a
//! per-channel table of 256 values, and patchify into the clip's rows, in the
//! processor's row order and column layout. An image is a one-frame clip; a
//! clip's frames are taken `temporal` at a time (the last frame repeated to
//! fill the last group, as the processors pad). Groups of frames run in
//! parallel; each writes only its own rows of the caller's buffer.
//! [`write_planes`] writes channels-first images not cut into patches (Gemma 3),
//! with the interpolation the processor uses.

use std::sync::OnceLock;

use rayon::prelude::*;

use crate::error::{EngineError, Result};
use crate::limits::{too_large, MAX_ELEMENTS};
use crate::resize::{resized, Filter};

/// Colour channels of every picture and of every output row.
pub const CHANNELS: usize = 3;

/// Bytes per pixel of an RGBX picture (Pillow's storage of an RGB image: the
/// fourth byte of each pixel is padding, never read).
pub const RGBX: usize = 4;

/// One decoded picture: `height × width × 3` uint8 values (HWC, RGB), or
/// `height × width × 4` (RGBX, the fourth byte ignored: Pillow's own buffer of
/// an RGB image, read without a copy). The length tells which ([`Picture::step`]).
#[derive(Debug, Clone, Copy)]
pub struct Picture<'a> {
    pub pixels: &'a [u8],
    pub height: usize,
    pub width: usize,
}

impl Picture<'_> {
    /// Bytes per pixel in `pixels`: 4 when it holds `height × width × 4`
    /// bytes (RGBX), else 3.
    pub fn step(&self) -> usize {
        if self
            .height
            .checked_mul(self.width)
            .and_then(|n| n.checked_mul(RGBX))
            == Some(self.pixels.len())
        {
            RGBX
        } else {
            CHANNELS
        }
    }
}

/// Whether `len` bytes are `frames × height × width` pixels of 3 (RGB) or 4
/// (RGBX) bytes.
fn holds_pixels(len: usize, frames: usize, height: usize, width: usize) -> bool {
    let pixels = height
        .checked_mul(width)
        .and_then(|n| n.checked_mul(frames));
    [CHANNELS, RGBX]
        .iter()
        .any(|&step| pixels.and_then(|n| n.checked_mul(step)) == Some(len))
}

/// One decoded clip: `frames × height × width × 3` uint8 values (THWC, RGB),
/// or × 4 (RGBX). An image is a clip of one frame.
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
        let n = self.pixels.len() / self.frames;
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

/// Where a frame's bytes are read from: planar `3 × height × width` (resized),
/// or the source picture's own interleaved pixels of `step` bytes (kept at its
/// size, read in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Planar,
    Interleaved(usize),
}

/// Writes the `frames` (one per temporal position; a repeated frame is the same
/// slice), each `height × width` in `layout`, into their rows `out`: row
/// `((by·(gw/m) + bx)·m + my)·m + mx` holds patch `(by·m + my, bx·m + mx)`,
/// its columns `[channel][temporal position][py][px]`, each byte mapped
/// through `table[channel·256 + byte]`.
fn patchify<T: Copy>(
    frames: &[&[u8]],
    layout: Layout,
    size: (usize, usize),
    patches: PatchLayout,
    table: &[T],
    out: &mut [T],
) {
    match layout {
        Layout::Planar => patchify_strided::<T, 1>(frames, size, patches, table, out),
        Layout::Interleaved(CHANNELS) => {
            patchify_strided::<T, CHANNELS>(frames, size, patches, table, out)
        }
        Layout::Interleaved(_) => patchify_strided::<T, RGBX>(frames, size, patches, table, out),
    }
}

/// [`patchify`] with a byte's neighbour along x `STEP` bytes on (1: planar,
/// channel `c` at `c·height·width`; 3 or 4: interleaved, channel `c` at `c`).
fn patchify_strided<T: Copy, const STEP: usize>(
    frames: &[&[u8]],
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
    let channel_offset = if STEP == 1 { height * width } else { 1 };
    let block = p * p;
    let luts: Vec<&[T; 256]> = (0..CHANNELS)
        .map(|c| {
            table[c * 256..(c + 1) * 256]
                .try_into()
                .expect("table holds 3 × 256 values (checked by the caller)")
        })
        .collect();
    let mut rows = out.chunks_exact_mut(layout.row_width());
    for by in 0..gh / m {
        for bx in 0..gw / m {
            for my in 0..m {
                for mx in 0..m {
                    let Some(row) = rows.next() else { return };
                    let (y0, x0) = ((by * m + my) * p, (bx * m + mx) * p);
                    for (c, lut) in luts.iter().enumerate() {
                        let channel = &mut row[c * temporal * block..(c + 1) * temporal * block];
                        for t in 0..temporal {
                            let (done, rest) = channel.split_at_mut(t * block);
                            let dst = &mut rest[..block];
                            if t > 0 && std::ptr::eq(frames[t], frames[t - 1]) {
                                dst.copy_from_slice(&done[(t - 1) * block..]);
                                continue;
                            }
                            for (py, line) in dst.chunks_exact_mut(p).enumerate() {
                                let start = c * channel_offset + ((y0 + py) * width + x0) * STEP;
                                let src = &frames[t][start..start + (p - 1) * STEP + 1];
                                for (d, &v) in line.iter_mut().zip(src.iter().step_by(STEP)) {
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
        if clip.frames == 0
            || clip.height == 0
            || clip.width == 0
            || !holds_pixels(clip.pixels.len(), clip.frames, clip.height, clip.width)
        {
            let shape = if what == "images" {
                "(height, width, 3)"
            } else {
                "(frames, height, width, 3)"
            };
            return Err(EngineError::new(format!(
                "{what}[{i}] holds {} bytes for frames={} height={} width={}; each item must be \
                 a non-empty {shape} uint8 array (or 4 bytes a pixel, RGBX)",
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
        // A frame kept at its size is read in place (no planar copy); a resized one
        // from its planar resize.
        let kept = job.target == (job.clip.height, job.clip.width);
        let resized_frames = if kept {
            Vec::new()
        } else {
            (first..last)
                .map(|k| resized(&job.clip.frame(k), job.target, Filter::Bicubic, job.image))
                .collect::<Result<Vec<_>>>()?
        };
        let frame = |k: usize| -> &[u8] {
            if kept {
                job.clip.frame(first + k).pixels
            } else {
                resized_frames[k].as_slice()
            }
        };
        // Positions past the clip's last frame repeat it (the same slice).
        let frames: Vec<&[u8]> = (0..layout.temporal)
            .map(|t| frame(t.min(last - first - 1)))
            .collect();
        let source = if kept {
            Layout::Interleaved(job.clip.frame(first).step())
        } else {
            Layout::Planar
        };
        patchify(&frames, source, job.target, layout, table, job.out);
        Ok(())
    };
    if threads > 1 && jobs.len() > 1 && pool_is_ours() {
        jobs.into_par_iter().try_for_each(run)
    } else {
        jobs.into_iter().try_for_each(run)
    }
}

/// Fills `out` with the channels-first `pixel_values` of `pictures` (not cut
/// into patches): picture `i` resized to `targets[i]` with `filter`, its `3 ×
/// height × width` values (channel, row, column) after those of the pictures
/// before it, each byte mapped through `table[channel·256 + byte]`. Runs the
/// pictures on `threads` threads as [`write_pixel_values`] does; every size is
/// checked first and an error names the argument and the image.
pub fn write_planes<T: Copy + Send + Sync>(
    pictures: &[Picture],
    targets: &[(usize, usize)],
    filter: Filter,
    table: &[T],
    out: &mut [T],
    threads: usize,
) -> Result<()> {
    if pictures.len() != targets.len() {
        return Err(EngineError::new(format!(
            "targets has {} entries for {} images; give one (height, width) per item",
            targets.len(),
            pictures.len()
        )));
    }
    if table.len() != CHANNELS * 256 {
        return Err(EngineError::new(format!(
            "table must hold 3 × 256 values (one per channel and byte), got {}",
            table.len()
        )));
    }
    let mut sizes = Vec::with_capacity(pictures.len());
    let mut total = 0usize;
    for (i, (picture, &(h, w))) in pictures.iter().zip(targets).enumerate() {
        if picture.height == 0
            || picture.width == 0
            || !holds_pixels(picture.pixels.len(), 1, picture.height, picture.width)
        {
            return Err(EngineError::new(format!(
                "images[{i}] holds {} bytes for height={} width={}; each item must be a \
                 non-empty (height, width, 3) uint8 array (or (height, width, 4), RGBX)",
                picture.pixels.len(),
                picture.height,
                picture.width
            )));
        }
        if h == 0 || w == 0 {
            return Err(EngineError::new(format!(
                "targets[{i}] = ({h}, {w}): image {i}'s size after resizing must be positive"
            )));
        }
        let n = h
            .checked_mul(w)
            .and_then(|n| n.checked_mul(CHANNELS))
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| too_large(format_args!("targets[{i}] = ({h}, {w})")))?;
        total = total
            .checked_add(n)
            .filter(|&t| t <= MAX_ELEMENTS)
            .ok_or_else(|| too_large(format_args!("targets up to image {i}: pixel_values")))?;
        sizes.push(n);
    }
    if out.len() != total {
        return Err(EngineError::new(format!(
            "out holds {} values but the images need 3 · Σ height·width = {total}",
            out.len()
        )));
    }
    let mut jobs = Vec::with_capacity(pictures.len());
    let mut rest = out;
    for (i, &n) in sizes.iter().enumerate() {
        let (part, tail) = rest.split_at_mut(n);
        jobs.push((i, part));
        rest = tail;
    }
    let run = |(i, part): (usize, &mut [T])| {
        let planes = resized(&pictures[i], targets[i], filter, i)?;
        let plane = n_plane(targets[i]);
        for (c, (dst, src)) in part
            .chunks_exact_mut(plane)
            .zip(planes.chunks_exact(plane))
            .enumerate()
        {
            let lut = &table[c * 256..(c + 1) * 256];
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = lut[usize::from(v)];
            }
        }
        Ok(())
    };
    if threads > 1 && jobs.len() > 1 && pool_is_ours() {
        jobs.into_par_iter().try_for_each(run)
    } else {
        jobs.into_iter().try_for_each(run)
    }
}

/// Values in one channel plane of a `(height, width)` image.
fn n_plane((h, w): (usize, usize)) -> usize {
    h * w
}

/// Whether rayon's pool belongs to this process: a pool started before a `fork`
/// has no threads in the child, so a forked child runs its images serially.
pub(crate) fn pool_is_ours() -> bool {
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
    fn rgbx_pictures_equal_their_rgb_pixels() {
        // The fourth byte of each RGBX pixel is never read: junk there changes nothing.
        let (h, w) = (30, 50);
        let rgb: Vec<u8> = (0..h * w * 3).map(|k| (k * 7 % 251) as u8).collect();
        let rgbx: Vec<u8> = rgb
            .chunks_exact(3)
            .enumerate()
            .flat_map(|(k, px)| [px[0], px[1], px[2], (k * 31 % 256) as u8])
            .collect();
        fn of(pixels: &[u8], height: usize, width: usize) -> [Picture<'_>; 1] {
            [Picture {
                pixels,
                height,
                width,
            }]
        }
        let table = identity_table();
        // Resized down in height and up in width, the reverse, and down in both.
        for targets in [[(28, 56)], [(56, 28)], [(28, 28)]] {
            let n: usize = rows_per_image(&targets, LAYOUT).unwrap().iter().sum();
            let mut from_rgb = vec![0f32; n * LAYOUT.row_width()];
            let mut from_rgbx = from_rgb.clone();
            write_pixel_values(&of(&rgb, h, w), &targets, LAYOUT, &table, &mut from_rgb, 1)
                .unwrap();
            write_pixel_values(
                &of(&rgbx, h, w),
                &targets,
                LAYOUT,
                &table,
                &mut from_rgbx,
                1,
            )
            .unwrap();
            assert_eq!(from_rgb, from_rgbx);
        }
        for (targets, filter) in [((h, w), Filter::Bilinear), ((17, 64), Filter::Bicubic)] {
            let mut from_rgb = vec![0f32; 3 * targets.0 * targets.1];
            let mut from_rgbx = from_rgb.clone();
            write_planes(
                &of(&rgb, h, w),
                &[targets],
                filter,
                &table,
                &mut from_rgb,
                1,
            )
            .unwrap();
            write_planes(
                &of(&rgbx, h, w),
                &[targets],
                filter,
                &table,
                &mut from_rgbx,
                1,
            )
            .unwrap();
            assert_eq!(from_rgb, from_rgbx);
        }
        // Neither 3 nor 4 bytes a pixel: an error naming the image.
        let short = &rgbx[..h * w * 4 - 1];
        let mut out = vec![0f32; 3 * h * w];
        let err = write_planes(
            &of(short, h, w),
            &[(h, w)],
            Filter::Bilinear,
            &table,
            &mut out,
            1,
        )
        .unwrap_err();
        assert!(err.0.starts_with("images[0] holds"), "{err}");
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
    fn planes_are_channels_first_and_sized_checked() {
        // A 2x3 image kept at its size: planes are the channels in row order.
        let pixels: Vec<u8> = (0..6u8).flat_map(|v| [v, v + 100, v + 200]).collect();
        let picture = Picture {
            pixels: &pixels,
            height: 2,
            width: 3,
        };
        let table = identity_table();
        let mut out = vec![0f32; 2 * 18];
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            write_planes(
                &[picture, picture],
                &[(2, 3); 2],
                filter,
                &table,
                &mut out,
                2,
            )
            .unwrap();
            let expected: Vec<f32> = (0..3)
                .flat_map(|c| (0..6).map(move |v| (v + 100 * c) as f32 + c as f32 * 1000.0))
                .collect();
            assert_eq!(&out[..18], &expected[..]);
            assert_eq!(&out[18..], &expected[..]);
        }
        let err =
            write_planes(&[picture], &[(2, 3)], Filter::Bilinear, &table, &mut out, 1).unwrap_err();
        assert!(err.0.starts_with("out holds 36 values"), "{err}");
        let err =
            write_planes(&[picture], &[(0, 3)], Filter::Bilinear, &table, &mut out, 1).unwrap_err();
        assert!(err.0.starts_with("targets[0] = (0, 3)"), "{err}");
        let short = Picture {
            pixels: &pixels[..5],
            ..picture
        };
        let err =
            write_planes(&[short], &[(2, 3)], Filter::Bilinear, &table, &mut out, 1).unwrap_err();
        assert!(err.0.starts_with("images[0] holds 5 bytes"), "{err}");
        let huge = [(1 << 20, 1 << 20)];
        let err =
            write_planes(&[picture], &huge, Filter::Bilinear, &table, &mut out, 1).unwrap_err();
        assert!(err.0.contains("limit"), "{err}");
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
