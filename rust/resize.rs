//! Resize kernels shared by every family's fast path, one per interpolation,
//! each reproducing torch's antialiased `interpolate` on uint8 (the
//! `ImagingResample` port in ATen's `UpSampleKernel`): separable passes (x
//! first, then y; a pass skipped where that side keeps its size), float
//! weights normalised to sum 1, converted to int16 at the largest precision
//! that keeps the largest weight below 2^15, integer sums rounded and clamped
//! to a byte. Integer sums are exact, so the results are torch's bit for bit.
//! The filters differ only in their function and support: bicubic (Keys,
//! a = -0.5; `interp_size` 4) and bilinear (triangle; `interp_size` 2).

use crate::error::{EngineError, Result};
use crate::limits::{too_large, MAX_ELEMENTS};
use crate::pixels::{Picture, CHANNELS, RGBX};

/// The interpolation of an antialiased resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Triangle filter, support 1 (torch's `bilinear`, PIL's `BILINEAR`).
    Bilinear,
    /// Keys cubic, a = -0.5, support 2 (torch's `bicubic`, PIL's `BICUBIC`).
    Bicubic,
    /// Lanczos-3, support 3 (torch's `lanczos`, PIL's `LANCZOS`; see `lanczos.rs`).
    Lanczos,
}

impl Filter {
    /// Half the filter's support at scale 1 (torch's `interp_size / 2`).
    fn half_support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => crate::lanczos::HALF_SUPPORT,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => bicubic(x),
            Filter::Lanczos => crate::lanczos::weight(x),
        }
    }
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

/// The taps resizing `input` samples to `output` with `filter`: float weights
/// normalised to sum 1, then scaled to int16 at the largest precision that keeps
/// the largest weight below 2^15, and rounded half away from zero (torch's
/// uint8 path).
fn taps(input: usize, output: usize, filter: Filter) -> Taps {
    let scale = input as f64 / output as f64;
    let half = filter.half_support();
    let support = if scale >= 1.0 { half * scale } else { half };
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
            *w = filter.weight(((j as i64 + start) as f64 - center + 0.5) * invscale);
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
/// resampled along x (or only de-interleaved when the width is kept). The
/// picture's pixels are 3 bytes (RGB) or 4 (RGBX, the fourth not read).
fn horizontal(
    picture: &Picture,
    out_width: usize,
    filter: Filter,
    image: usize,
) -> Result<Vec<u8>> {
    if picture.step() == RGBX {
        horizontal_step::<RGBX>(picture, out_width, filter, image)
    } else {
        horizontal_step::<CHANNELS>(picture, out_width, filter, image)
    }
}

/// [`horizontal`] for pixels of `STEP` bytes.
fn horizontal_step<const STEP: usize>(
    picture: &Picture,
    out_width: usize,
    filter: Filter,
    image: usize,
) -> Result<Vec<u8>> {
    let (h, w) = (picture.height, picture.width);
    let plane = h * out_width;
    let mut out = scratch(CHANNELS * plane, image)?;
    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    if out_width == w {
        let planes = r_plane
            .iter_mut()
            .zip(g_plane.iter_mut())
            .zip(b_plane.iter_mut());
        for (px, ((r, g), b)) in picture.pixels.chunks_exact(STEP).zip(planes) {
            (*r, *g, *b) = (px[0], px[1], px[2]);
        }
        return Ok(out);
    }
    let taps = taps(w, out_width, filter);
    let half = 1i32 << (taps.precision - 1);
    for (y, src) in picture.pixels.chunks_exact(w * STEP).enumerate() {
        let rows = y * out_width..(y + 1) * out_width;
        let outs = r_plane[rows.clone()]
            .iter_mut()
            .zip(g_plane[rows.clone()].iter_mut())
            .zip(b_plane[rows].iter_mut());
        for (x, ((r, g), b)) in outs.enumerate() {
            let weights = &taps.weights[x * taps.stride..x * taps.stride + taps.count[x]];
            let base = taps.first[x] * STEP;
            let run = &src[base..base + weights.len() * STEP];
            let (mut sr, mut sg, mut sb) = (half, half, half);
            for (px, &k) in run.chunks_exact(STEP).zip(weights) {
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
    filter: Filter,
    image: usize,
) -> Result<Vec<u8>> {
    let taps = taps(height, out_height, filter);
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

/// The planar `3 × height × width` bytes of `picture` resized to `target` with
/// `filter` (errors name `image`).
pub fn resized(
    picture: &Picture,
    target: (usize, usize),
    filter: Filter,
    image: usize,
) -> Result<Vec<u8>> {
    let (th, tw) = target;
    let across = horizontal(picture, tw, filter, image)?;
    if th == picture.height {
        return Ok(across);
    }
    vertical(&across, picture.height, tw, th, filter, image)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILTERS: [Filter; 2] = [Filter::Bilinear, Filter::Bicubic];

    #[test]
    fn taps_sum_to_one_and_keep_the_identity() {
        for (filter, (input, output)) in FILTERS
            .into_iter()
            .flat_map(|f| [(10, 4), (4, 10), (448, 224), (7, 7), (1, 3), (3, 1)].map(|s| (f, s)))
        {
            let t = taps(input, output, filter);
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
        for filter in FILTERS {
            let t = taps(5, 5, filter);
            for i in 0..5 {
                let row = &t.weights[i * t.stride..i * t.stride + t.count[i]];
                let j = i - t.first[i];
                assert_eq!(row[j], 1 << t.precision);
                assert_eq!(row.iter().filter(|&&w| w != 0).count(), 1);
            }
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
        for (filter, target) in FILTERS
            .into_iter()
            .flat_map(|f| [(4, 8), (8, 4), (28, 36), (12, 16), (13, 17), (40, 3)].map(|t| (f, t)))
        {
            let planes = resized(&picture, target, filter, 0).unwrap();
            let plane = target.0 * target.1;
            for (c, value) in [10u8, 128, 250].into_iter().enumerate() {
                assert!(
                    planes[c * plane..(c + 1) * plane]
                        .iter()
                        .all(|&v| v == value),
                    "{filter:?} {target:?}"
                );
            }
        }
    }

    #[test]
    fn bilinear_weights_are_the_triangle() {
        // Upscaling 2 -> 4 by 2: output i centred at (i + 0.5) / 2 - 0.5 in input units.
        let t = taps(2, 4, Filter::Bilinear);
        let unit = f64::from(1u32 << t.precision);
        let row = |i: usize| &t.weights[i * t.stride..i * t.stride + t.count[i]];
        assert_eq!(row(0), &[unit as i32][..]);
        assert_eq!(row(1), &[(0.75 * unit) as i32, (0.25 * unit) as i32][..]);
        // Downscaling by 2: each output reads four inputs with weights 1/8, 3/8, 3/8, 1/8
        // over a support of 2 (antialiased).
        let t = taps(8, 4, Filter::Bilinear);
        assert_eq!((t.first[1], t.count[1]), (1, 4));
        let w = &t.weights[t.stride..t.stride + 4];
        assert_eq!(w[0], w[3]);
        assert_eq!(w[1], w[2]);
        assert_eq!(w[1], 3 * w[0]);
    }

    #[test]
    fn a_resize_errors_instead_of_aborting_on_huge_scratch() {
        let pixels = [0u8; 3];
        let picture = Picture {
            pixels: &pixels,
            height: 1,
            width: 1,
        };
        let err = resized(&picture, (1, MAX_ELEMENTS), Filter::Bilinear, 7).unwrap_err();
        assert!(err.0.contains("image 7"), "{err}");
    }
}
