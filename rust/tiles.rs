//! Tiled images, the step the tiling families share (InternVL, LLaVA-OneVision,
//! Idefics3/SmolVLM, Pixtral, Llama 3.2 Vision, Llama 4): each image is resized
//! (possibly more than once: a global view beside a grid, or a resize of a
//! resize), and square or rectangular windows of those resized images become the
//! channels-first tiles of one `(slots, 3, height, width)` output. A resize may
//! read a rectangle of its source instead of all of it (Gemma 3's pan-and-scan
//! crops), read in place. A window may
//! reach past its resized image: those values are the tile's fill (the
//! processor's padding, given in output space). Rescale and normalise go through
//! the per-channel table of 256 values, as for every fast path.
//!
//! What differs between the families (the sizes, the grid, the window order, the
//! slot of each tile in a padded output, the fill) is decided by each family's
//! plan in Python; this is the one pass that writes the pixels. Images run in
//! parallel, each writing only its own slots.

use rayon::prelude::*;

use crate::error::{EngineError, Result};
use crate::limits::{too_large, MAX_ELEMENTS};
use crate::pixels::{pool_is_ours, Picture, CHANNELS, RGBX};
use crate::resize::{resized_crop, Crop, Filter};

/// One resize of an image: the image itself (`source` None) or an earlier
/// resize of the same image (`source` Some(k)), or the rectangle `crop` of
/// that source (read in place, no copy), resized to `height × width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resize {
    pub image: usize,
    pub source: Option<usize>,
    pub height: usize,
    pub width: usize,
    pub crop: Option<Crop>,
}

/// One tile: the window of resize `resize` whose top-left corner is (`top`,
/// `left`) (negative, or reaching past the resized image, where the processor
/// pads), written into output slot `slot`; values outside the resized image
/// are `fills[fill]`'s three channel values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub resize: usize,
    pub top: i64,
    pub left: i64,
    pub slot: usize,
    pub fill: usize,
}

/// A tile and the slot of the output it writes.
type Dest<'o, T> = (Tile, &'o mut [T]);

/// The furthest a window's corner may lie from its image (keeps offsets in range).
const MAX_OFFSET: u64 = 1 << 30;

/// Writes every tile into its slot of `out` (`slots × 3 × tile.0 × tile.1`
/// values, channels-first), each value through `table[channel·256 + byte]`,
/// values outside the resized image from `fills[3·fill + channel]`. Slots no
/// tile names are left as they are. Every index and size is checked first; an
/// error names the argument and the item.
#[allow(clippy::too_many_arguments)]
pub fn write_tiles<T: Copy + Send + Sync>(
    pictures: &[Picture],
    resizes: &[Resize],
    tiles: &[Tile],
    filter: Filter,
    table: &[T],
    fills: &[T],
    tile: (usize, usize),
    out: &mut [T],
    threads: usize,
) -> Result<()> {
    let slot_len = check_sizes(pictures, table, fills, tile, out.len())?;
    let slots = out.len() / slot_len;
    check_resizes(pictures, resizes)?;
    let fill_count = fills.len() / CHANNELS;
    let mut taken = vec![false; slots];
    for (k, t) in tiles.iter().enumerate() {
        if t.resize >= resizes.len() {
            return Err(EngineError::new(format!(
                "tiles[{k}] names resize {} but there are {} resizes",
                t.resize,
                resizes.len()
            )));
        }
        if t.slot >= slots {
            return Err(EngineError::new(format!(
                "tiles[{k}] names slot {} but out holds {slots} tiles",
                t.slot
            )));
        }
        if std::mem::replace(&mut taken[t.slot], true) {
            return Err(EngineError::new(format!(
                "tiles[{k}] writes slot {} that another tile writes; give each tile its own slot",
                t.slot
            )));
        }
        if t.fill >= fill_count {
            return Err(EngineError::new(format!(
                "tiles[{k}] names fill {} but fills holds {fill_count} (3 values each)",
                t.fill
            )));
        }
        if t.top.unsigned_abs() > MAX_OFFSET || t.left.unsigned_abs() > MAX_OFFSET {
            return Err(EngineError::new(format!(
                "tiles[{k}] has its corner at ({}, {}), too far from its image",
                t.top, t.left
            )));
        }
    }
    // One job per image: its resizes in order and its tiles with their slots.
    let mut outs: Vec<Option<&mut [T]>> = out.chunks_exact_mut(slot_len).map(Some).collect();
    let mut jobs: Vec<(usize, Vec<Dest<T>>)> =
        (0..pictures.len()).map(|i| (i, Vec::new())).collect();
    for t in tiles {
        let part = outs[t.slot].take().expect("slots checked unique");
        jobs[resizes[t.resize].image].1.push((*t, part));
    }
    let run = |(image, mine): (usize, Vec<Dest<T>>)| -> Result<()> {
        if mine.is_empty() {
            return Ok(());
        }
        let picture = &pictures[image];
        // A resize of the whole image to its own size is the identity (as torch's):
        // its windows read the image itself, with no planar copy.
        let kept = |job: &Resize| {
            job.source.is_none()
                && job.crop.is_none()
                && (job.height, job.width) == (picture.height, picture.width)
        };
        let mut planes: Vec<Option<Vec<u8>>> = vec![None; resizes.len()];
        for (r, job) in resizes.iter().enumerate() {
            if job.image != image || kept(job) {
                continue;
            }
            let target = (job.height, job.width);
            let of = |p: &Picture| {
                resized_crop(p, job.crop.unwrap_or(Crop::whole(p)), target, filter, image)
            };
            let plane = match job.source {
                None => of(picture)?,
                Some(k) if kept(&resizes[k]) => of(picture)?,
                Some(k) => {
                    let src = &resizes[k];
                    let bytes = interleaved(planes[k].as_deref().unwrap_or_default(), src);
                    of(&Picture {
                        pixels: &bytes,
                        height: src.height,
                        width: src.width,
                    })?
                }
            };
            planes[r] = Some(plane);
        }
        for (t, dst) in mine {
            let job = &resizes[t.resize];
            let fill = &fills[t.fill * CHANNELS..(t.fill + 1) * CHANNELS];
            let size = (job.height, job.width);
            match planes[t.resize].as_deref() {
                Some(src) => window(src, size, &t, tile, table, fill, dst),
                None if picture.step() == RGBX => {
                    image_window::<RGBX, T>(picture.pixels, size, &t, tile, table, fill, dst)
                }
                None => {
                    image_window::<CHANNELS, T>(picture.pixels, size, &t, tile, table, fill, dst)
                }
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

/// Checks the pictures, table, fills and tile size against `out_len`; returns
/// the values of one tile.
fn check_sizes<T>(
    pictures: &[Picture],
    table: &[T],
    fills: &[T],
    (th, tw): (usize, usize),
    out_len: usize,
) -> Result<usize> {
    if table.len() != CHANNELS * 256 {
        return Err(EngineError::new(format!(
            "table must hold 3 × 256 values (one per channel and byte), got {}",
            table.len()
        )));
    }
    if !fills.len().is_multiple_of(CHANNELS) {
        return Err(EngineError::new(format!(
            "fills must hold 3 values per fill, got {}",
            fills.len()
        )));
    }
    for (i, p) in pictures.iter().enumerate() {
        let expected = p
            .height
            .checked_mul(p.width)
            .and_then(|n| n.checked_mul(p.step()));
        if p.height == 0 || p.width == 0 || expected != Some(p.pixels.len()) {
            return Err(EngineError::new(format!(
                "images[{i}] holds {} bytes for height={} width={}; each item must be a \
                 non-empty (height, width, 3) uint8 array (or (height, width, 4) RGBX)",
                p.pixels.len(),
                p.height,
                p.width
            )));
        }
    }
    let slot_len = th
        .checked_mul(tw)
        .and_then(|n| n.checked_mul(CHANNELS))
        .filter(|&n| n > 0 && n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            EngineError::new(format!(
                "out's tiles are {th} × {tw}; out must be (slots, 3, height, width) with a positive tile size"
            ))
        })?;
    if !out_len.is_multiple_of(slot_len) {
        return Err(EngineError::new(format!(
            "out holds {out_len} values, not a whole number of 3 × {th} × {tw} tiles"
        )));
    }
    Ok(slot_len)
}

/// Checks that every resize names an image, an earlier resize of the same image
/// as its source, and a positive size within the engine's limit.
fn check_resizes(pictures: &[Picture], resizes: &[Resize]) -> Result<()> {
    for (r, job) in resizes.iter().enumerate() {
        if job.image >= pictures.len() {
            return Err(EngineError::new(format!(
                "resizes[{r}] names image {} but there are {} images",
                job.image,
                pictures.len()
            )));
        }
        let source = match job.source {
            Some(k) if k >= r || resizes[k].image != job.image => {
                return Err(EngineError::new(format!(
                    "resizes[{r}] resizes resize {k}, which must be an earlier resize of the same image"
                )));
            }
            Some(k) => (resizes[k].height, resizes[k].width),
            None => (pictures[job.image].height, pictures[job.image].width),
        };
        if let Some(c) = job.crop {
            if !c.fits(source) {
                return Err(EngineError::new(format!(
                    "resizes[{r}] crops {} × {} at ({}, {}) of its {} × {} source; a crop \
                     must be non-empty and inside its source",
                    c.height, c.width, c.top, c.left, source.0, source.1
                )));
            }
        }
        let (h, w) = (job.height, job.width);
        if h == 0 || w == 0 {
            return Err(EngineError::new(format!(
                "resizes[{r}] = ({h}, {w}): a size after resizing must be positive"
            )));
        }
        h.checked_mul(w)
            .and_then(|n| n.checked_mul(CHANNELS))
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| too_large(format_args!("resizes[{r}] = ({h}, {w})")))?;
    }
    Ok(())
}

/// The HWC bytes of a planar `3 × height × width` resize (the three planes read
/// side by side, no per-byte index arithmetic or bounds checks).
fn interleaved(planar: &[u8], job: &Resize) -> Vec<u8> {
    let plane = job.height * job.width;
    let mut out = vec![0u8; plane * CHANNELS];
    let (r, rest) = planar[..plane * CHANNELS].split_at(plane);
    let (g, b) = rest.split_at(plane);
    for (px, ((&r, &g), &b)) in out.chunks_exact_mut(CHANNELS).zip(r.iter().zip(g).zip(b)) {
        px.copy_from_slice(&[r, g, b]);
    }
    out
}

/// Writes the window of the planar `src` (`3 × size.0 × size.1`) at `t`'s
/// corner into `dst` (`3 × tile.0 × tile.1`) through `table`, `fill` outside.
fn window<T: Copy>(
    src: &[u8],
    (rh, rw): (usize, usize),
    t: &Tile,
    (th, tw): (usize, usize),
    table: &[T],
    fill: &[T],
    dst: &mut [T],
) {
    let (rh, rw) = (rh as i64, rw as i64);
    // Columns of the tile that read the image: [lo, hi).
    let lo = (-t.left).clamp(0, tw as i64) as usize;
    let hi = (rw - t.left).clamp(lo as i64, tw as i64) as usize;
    for c in 0..CHANNELS {
        let lut = &table[c * 256..(c + 1) * 256];
        let plane = &src[c * (rh * rw) as usize..(c + 1) * (rh * rw) as usize];
        for (y, row) in dst[c * th * tw..(c + 1) * th * tw]
            .chunks_exact_mut(tw)
            .enumerate()
        {
            let sy = t.top + y as i64;
            if sy < 0 || sy >= rh || lo == hi {
                row.fill(fill[c]);
                continue;
            }
            row[..lo].fill(fill[c]);
            row[hi..].fill(fill[c]);
            let start = (sy * rw + t.left + lo as i64) as usize;
            for (d, &v) in row[lo..hi].iter_mut().zip(&plane[start..start + (hi - lo)]) {
                *d = lut[usize::from(v)];
            }
        }
    }
}

/// [`window`] read straight from an image of `STEP`-byte pixels (RGB or RGBX),
/// where the image is kept at its size.
fn image_window<const STEP: usize, T: Copy>(
    src: &[u8],
    (rh, rw): (usize, usize),
    t: &Tile,
    (th, tw): (usize, usize),
    table: &[T],
    fill: &[T],
    dst: &mut [T],
) {
    let (rh, rw) = (rh as i64, rw as i64);
    let lo = (-t.left).clamp(0, tw as i64) as usize;
    let hi = (rw - t.left).clamp(lo as i64, tw as i64) as usize;
    for c in 0..CHANNELS {
        let lut = &table[c * 256..(c + 1) * 256];
        for (y, row) in dst[c * th * tw..(c + 1) * th * tw]
            .chunks_exact_mut(tw)
            .enumerate()
        {
            let sy = t.top + y as i64;
            if sy < 0 || sy >= rh || lo == hi {
                row.fill(fill[c]);
                continue;
            }
            row[..lo].fill(fill[c]);
            row[hi..].fill(fill[c]);
            let start = (sy * rw + t.left + lo as i64) as usize * STEP;
            let pixels = src[start..start + (hi - lo) * STEP].chunks_exact(STEP);
            for (d, px) in row[lo..hi].iter_mut().zip(pixels) {
                *d = lut[usize::from(px[c])];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resize::resized;

    fn identity_table() -> Vec<f32> {
        (0..3).flat_map(|_| (0..256).map(|v| v as f32)).collect()
    }

    fn gradient(h: usize, w: usize) -> Vec<u8> {
        (0..h * w * CHANNELS).map(|k| (k % 251) as u8).collect()
    }

    #[test]
    fn a_window_inside_copies_its_pixels_and_padding_takes_the_fill() {
        let pixels = gradient(4, 6);
        let picture = Picture {
            pixels: &pixels,
            height: 4,
            width: 6,
        };
        let resizes = [Resize {
            image: 0,
            source: None,
            height: 4,
            width: 6,
            crop: None,
        }];
        // Slot 1: the window at (1, 2), 3 × 3 inside the image except its last row.
        // Slot 0: a window hanging off the top-left corner.
        let tiles = [
            Tile {
                resize: 0,
                top: 2,
                left: 4,
                slot: 1,
                fill: 0,
            },
            Tile {
                resize: 0,
                top: -1,
                left: -2,
                slot: 0,
                fill: 1,
            },
        ];
        let fills = [-1.0f32, -2.0, -3.0, 9.0, 8.0, 7.0];
        let mut out = vec![f32::NAN; 2 * 3 * 3 * 3];
        write_tiles(
            &[picture],
            &resizes,
            &tiles,
            Filter::Bicubic,
            &identity_table(),
            &fills,
            (3, 3),
            &mut out,
            1,
        )
        .unwrap();
        let at = |slot: usize, c: usize, y: usize, x: usize| out[((slot * 3 + c) * 3 + y) * 3 + x];
        let px = |c: usize, y: usize, x: usize| pixels[(y * 6 + x) * 3 + c] as f32;
        for c in 0..3 {
            for y in 0..3 {
                for x in 0..3 {
                    let (sy, sx) = (2 + y, 4 + x);
                    let want = if sy < 4 && sx < 6 {
                        px(c, sy, sx)
                    } else {
                        fills[c]
                    };
                    assert_eq!(at(1, c, y, x), want, "slot 1 c{c} y{y} x{x}");
                    let (sy, sx) = (y as i64 - 1, x as i64 - 2);
                    let want = if sy >= 0 && sx >= 0 {
                        px(c, sy as usize, sx as usize)
                    } else {
                        fills[3 + c]
                    };
                    assert_eq!(at(0, c, y, x), want, "slot 0 c{c} y{y} x{x}");
                }
            }
        }
    }

    #[test]
    fn a_chained_resize_equals_resizing_the_resized_image() {
        let pixels = gradient(9, 7);
        let picture = Picture {
            pixels: &pixels,
            height: 9,
            width: 7,
        };
        let first = resized(&picture, (5, 4), Filter::Bicubic, 0).unwrap();
        let hwc = interleaved(
            &first,
            &Resize {
                image: 0,
                source: None,
                height: 5,
                width: 4,
                crop: None,
            },
        );
        let second = resized(
            &Picture {
                pixels: &hwc,
                height: 5,
                width: 4,
            },
            (3, 3),
            Filter::Bicubic,
            0,
        )
        .unwrap();
        let resizes = [
            Resize {
                image: 0,
                source: None,
                height: 5,
                width: 4,
                crop: None,
            },
            Resize {
                image: 0,
                source: Some(0),
                height: 3,
                width: 3,
                crop: None,
            },
        ];
        let tiles = [Tile {
            resize: 1,
            top: 0,
            left: 0,
            slot: 0,
            fill: 0,
        }];
        let mut out = vec![0f32; 27];
        write_tiles(
            &[picture],
            &resizes,
            &tiles,
            Filter::Bicubic,
            &identity_table(),
            &[0.0; 3],
            (3, 3),
            &mut out,
            2,
        )
        .unwrap();
        let want: Vec<f32> = second.iter().map(|&v| v as f32).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn a_kept_image_reads_the_same_from_rgb_and_rgbx_and_as_a_chained_source() {
        let (h, w) = (6, 5);
        let rgb = gradient(h, w);
        let rgbx: Vec<u8> = rgb
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
        // Resize 0 keeps the size (the identity), resize 1 resizes it (a chained source
        // that is the image itself), resize 2 resizes the image directly.
        let kept = Resize {
            image: 0,
            source: None,
            height: h,
            width: w,
            crop: None,
        };
        let resizes = [
            kept,
            Resize {
                source: Some(0),
                height: 3,
                width: 4,
                ..kept
            },
            Resize {
                height: 3,
                width: 4,
                ..kept
            },
        ];
        let tile = |resize: usize, top: i64, left: i64, slot: usize| Tile {
            resize,
            top,
            left,
            slot,
            fill: 0,
        };
        let tiles = [
            tile(0, 0, 0, 0),
            tile(0, -1, 3, 1),
            tile(1, 0, 0, 2),
            tile(2, 0, 0, 3),
        ];
        let run = |pixels: &[u8]| {
            let mut out = vec![f32::NAN; 4 * 3 * 3 * 4];
            write_tiles(
                &[Picture {
                    pixels,
                    height: h,
                    width: w,
                }],
                &resizes,
                &tiles,
                Filter::Bicubic,
                &identity_table(),
                &[-1.0; 3],
                (3, 4),
                &mut out,
                1,
            )
            .unwrap();
            out
        };
        let out = run(&rgb);
        assert_eq!(out, run(&rgbx));
        let slot = |k: usize| &out[k * 36..(k + 1) * 36];
        assert_eq!(slot(2), slot(3));
        for c in 0..3 {
            for y in 0..3 {
                for x in 0..4 {
                    let at = |k: usize| slot(k)[(c * 3 + y) * 4 + x];
                    assert_eq!(at(0), rgb[(y * w + x) * 3 + c] as f32);
                    let (sy, sx) = (y as i64 - 1, x + 3);
                    let want = if sy >= 0 && sx < w {
                        rgb[(sy as usize * w + sx) * 3 + c] as f32
                    } else {
                        -1.0
                    };
                    assert_eq!(at(1), want, "c{c} y{y} x{x}");
                }
            }
        }
    }

    #[test]
    fn a_cropped_resize_equals_resizing_the_copied_rectangle() {
        let (h, w) = (9, 12);
        let rgb = gradient(h, w);
        let rgbx: Vec<u8> = rgb
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect();
        let crop = Crop {
            top: 1,
            left: 7,
            height: 8,
            width: 5,
        };
        let copied: Vec<u8> = (1..9)
            .flat_map(|y| rgb[(y * w + 7) * 3..(y * w + 12) * 3].iter().copied())
            .collect();
        let alone = Picture {
            pixels: &copied,
            height: 8,
            width: 5,
        };
        let whole = Resize {
            image: 0,
            source: None,
            height: 4,
            width: 4,
            crop: None,
        };
        // Resize 0: the whole image; 1: a crop of the image; 2: a crop of resize 0
        // (a chained source); 3: a crop as large as its target (the identity).
        let resizes = [
            whole,
            Resize {
                crop: Some(crop),
                ..whole
            },
            Resize {
                source: Some(0),
                height: 3,
                width: 3,
                crop: Some(Crop {
                    top: 1,
                    left: 1,
                    height: 2,
                    width: 3,
                }),
                ..whole
            },
            Resize {
                height: 8,
                width: 5,
                crop: Some(crop),
                ..whole
            },
        ];
        let tiles: Vec<Tile> = (0..4)
            .map(|k| Tile {
                resize: k,
                top: 0,
                left: 0,
                slot: k,
                fill: 0,
            })
            .collect();
        let run = |pixels: &[u8]| {
            let mut out = vec![f32::NAN; 4 * 3 * 8 * 5];
            write_tiles(
                &[Picture {
                    pixels,
                    height: h,
                    width: w,
                }],
                &resizes,
                &tiles,
                Filter::Bilinear,
                &identity_table(),
                &[-1.0; 3],
                (8, 5),
                &mut out,
                2,
            )
            .unwrap();
            out
        };
        let out = run(&rgb);
        assert_eq!(out, run(&rgbx));
        let slot = |k: usize| &out[k * 120..(k + 1) * 120];
        // The window's top-left `size` of each slot holds the plane, the rest the fill.
        let planar = |plane: &[u8], (ph, pw): (usize, usize)| -> Vec<f32> {
            let mut want = vec![-1.0f32; 120];
            for c in 0..3 {
                for y in 0..ph {
                    for x in 0..pw {
                        want[(c * 8 + y) * 5 + x] = plane[(c * ph + y) * pw + x] as f32;
                    }
                }
            }
            want
        };
        let picture = Picture {
            pixels: &rgb,
            height: h,
            width: w,
        };
        let first = resized(&picture, (4, 4), Filter::Bilinear, 0).unwrap();
        assert_eq!(slot(0), planar(&first, (4, 4)));
        let cropped = resized(&alone, (4, 4), Filter::Bilinear, 0).unwrap();
        assert_eq!(slot(1), planar(&cropped, (4, 4)));
        let hwc = interleaved(&first, &whole);
        let rectangle: Vec<u8> = (1..3)
            .flat_map(|y| hwc[(y * 4 + 1) * 3..(y * 4 + 4) * 3].iter().copied())
            .collect();
        let chained = resized(
            &Picture {
                pixels: &rectangle,
                height: 2,
                width: 3,
            },
            (3, 3),
            Filter::Bilinear,
            0,
        )
        .unwrap();
        assert_eq!(slot(2), planar(&chained, (3, 3)));
        let kept: Vec<u8> = (0..3)
            .flat_map(|c| copied.iter().skip(c).step_by(3).copied())
            .collect();
        assert_eq!(slot(3), planar(&kept, (8, 5)));
    }

    #[test]
    fn a_crop_outside_its_source_is_an_error_naming_the_resize() {
        let pixels = gradient(4, 6);
        let picture = [Picture {
            pixels: &pixels,
            height: 4,
            width: 6,
        }];
        let first = Resize {
            image: 0,
            source: None,
            height: 3,
            width: 3,
            crop: None,
        };
        let crop = Crop {
            top: 0,
            left: 0,
            height: 2,
            width: 2,
        };
        let tile = Tile {
            resize: 1,
            top: 0,
            left: 0,
            slot: 0,
            fill: 0,
        };
        for bad in [
            Crop { top: 3, ..crop },    // past the image's 4 rows
            Crop { left: 5, ..crop },   // past its 6 columns
            Crop { height: 0, ..crop }, // empty
            Crop {
                left: usize::MAX,
                ..crop
            }, // overflows
        ] {
            let resizes = [
                first,
                Resize {
                    crop: Some(bad),
                    ..first
                },
            ];
            let mut out = vec![0f32; 27];
            let err = write_tiles(
                &picture,
                &resizes,
                &[tile],
                Filter::Bilinear,
                &identity_table(),
                &[0.0; 3],
                (3, 3),
                &mut out,
                1,
            )
            .unwrap_err();
            assert!(err.0.contains("resizes[1]"), "{err}");
        }
        // A crop of a chained source is checked against that resize's size (3 × 3).
        let resizes = [
            first,
            Resize {
                source: Some(0),
                crop: Some(Crop { height: 4, ..crop }),
                ..first
            },
        ];
        let mut out = vec![0f32; 27];
        let err = write_tiles(
            &picture,
            &resizes,
            &[tile],
            Filter::Bilinear,
            &identity_table(),
            &[0.0; 3],
            (3, 3),
            &mut out,
            1,
        )
        .unwrap_err();
        assert!(err.0.contains("resizes[1] crops 4 × 2"), "{err}");
    }

    #[test]
    fn bad_indices_are_errors_not_panics() {
        let pixels = gradient(2, 2);
        let picture = [Picture {
            pixels: &pixels,
            height: 2,
            width: 2,
        }];
        let resize = Resize {
            image: 0,
            source: None,
            height: 2,
            width: 2,
            crop: None,
        };
        let tile = Tile {
            resize: 0,
            top: 0,
            left: 0,
            slot: 0,
            fill: 0,
        };
        let table = identity_table();
        let cases: Vec<(Vec<Resize>, Vec<Tile>, usize)> = vec![
            (vec![Resize { image: 1, ..resize }], vec![tile], 12),
            (
                vec![Resize {
                    source: Some(0),
                    ..resize
                }],
                vec![tile],
                12,
            ),
            (
                vec![Resize {
                    height: 0,
                    ..resize
                }],
                vec![tile],
                12,
            ),
            (vec![resize], vec![Tile { resize: 3, ..tile }], 12),
            (vec![resize], vec![Tile { slot: 1, ..tile }], 12),
            (vec![resize], vec![tile, tile], 24),
            (vec![resize], vec![Tile { fill: 1, ..tile }], 12),
            (
                vec![resize],
                vec![Tile {
                    top: i64::MIN,
                    ..tile
                }],
                12,
            ),
            (vec![resize], vec![tile], 13),
            (
                vec![Resize {
                    crop: Some(Crop {
                        top: 1,
                        left: 0,
                        height: 2,
                        width: 1,
                    }),
                    ..resize
                }],
                vec![tile],
                12,
            ),
        ];
        for (resizes, tiles, n) in cases {
            let mut out = vec![0f32; n];
            let err = write_tiles(
                &picture,
                &resizes,
                &tiles,
                Filter::Bilinear,
                &table,
                &[0.0; 3],
                (2, 2),
                &mut out,
                1,
            );
            assert!(err.is_err(), "{resizes:?} {tiles:?} {n}");
        }
    }
}
