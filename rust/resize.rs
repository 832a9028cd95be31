//! Resize kernels shared by every family's fast path, one per interpolation,
//! each reproducing torch's antialiased `interpolate` on uint8 (the
//! `ImagingResample` port in ATen's `UpSampleKernel`): separable passes (x
//! first, then y; a pass skipped where that side keeps its size), float
//! weights normalised to sum 1, converted to int16 at the largest precision
//! that keeps the largest weight below 2^15, integer sums rounded and clamped
//! to a byte. Integer sums are exact, so the results are torch's bit for bit.
//! The filters differ only in their function and support: bicubic (Keys,
//! a = -0.5; `interp_size` 4) and bilinear (triangle; `interp_size` 2).
//!
//! On x86-64 the passes run vectorised (`pmaddwd` on pairs of taps: SSE2, part
//! of every x86-64 CPU, and AVX2 where the CPU has it, detected at run time, so
//! the build needs no `target-cpu`); the scalar kernels are their reference in
//! the tests and the kernels elsewhere. The sums are the same integers either way.

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

/// The taps' weights as int16 pairs, each pair packed in an i32 (`w[2p]` in the
/// low half, `w[2p + 1]` in the high half, 0 past the count): what `pmaddwd`
/// multiplies two adjacent taps by. Output `i`'s pairs start at `i · pairs`
/// (`pairs` even: the AVX2 horizontal kernel reads them two at a time).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn paired(taps: &Taps) -> (Vec<i32>, usize) {
    let pairs = taps.stride.div_ceil(4) * 2;
    let mut packed = vec![0i32; taps.count.len() * pairs];
    for (i, row) in packed.chunks_exact_mut(pairs).enumerate() {
        let weights = &taps.weights[i * taps.stride..i * taps.stride + taps.count[i]];
        for (p, two) in weights.chunks(2).enumerate() {
            let low = two[0] as i16 as u16 as u32;
            let high = two.get(1).map_or(0, |&w| w as i16 as u16 as u32);
            row[p] = (low | high << 16) as i32;
        }
    }
    (packed, pairs)
}

/// Resamples `src` (rows of `width` bytes) along its rows: output row `r` is
/// `Σ_j weights[r][j] · src row (first[r] + j)`, rounded and clamped to a byte.
/// Integer sums are exact, so the order of the terms does not change a result:
/// this is the reference the vectorised kernels are tested against, and the
/// kernel where they do not exist.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn resample_rows_scalar(src: &[u8], width: usize, taps: &Taps, out: &mut [u8]) {
    let half = 1i32 << (taps.precision - 1);
    let mut sums = vec![0i32; width];
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

/// One row of HWC pixels of `STEP` bytes resampled along x into three planar
/// rows (the reference of [`simd::resample_row`], as [`resample_rows_scalar`]).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn resample_row_scalar<const STEP: usize>(
    src: &[u8],
    taps: &Taps,
    r_row: &mut [u8],
    g_row: &mut [u8],
    b_row: &mut [u8],
) {
    let half = 1i32 << (taps.precision - 1);
    let outs = r_row.iter_mut().zip(g_row.iter_mut()).zip(b_row.iter_mut());
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

/// Resamples the rows of `src` (rows of `width` bytes) as [`resample_rows_scalar`].
fn resample_rows(src: &[u8], width: usize, taps: &Taps, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        let (pairs, stride) = paired(taps);
        let kernel = simd::Rows {
            taps,
            pairs: &pairs,
            stride,
            avx2: std::is_x86_feature_detected!("avx2"),
        };
        kernel.run(src, width, out);
    }
    #[cfg(not(target_arch = "x86_64"))]
    resample_rows_scalar(src, width, taps, out);
}

/// The x86-64 kernels: the same integer sums as the scalar ones, two taps at a
/// time by `pmaddwd` (int16 pixel · int16 weight pairs summed into i32 lanes; the
/// products of bytes and int16 weights and their pair sums are exact in i32, as
/// the scalar sums are), then shifted, saturated to int16 and to a byte (the
/// same as clamping the shifted sum to 0..=255). SSE2 is part of x86-64, so these
/// run on any x86-64 CPU; AVX2, where the CPU has it (checked at run time), runs
/// the vertical pass 32 bytes at a time.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::Taps;
    use std::arch::x86_64::*;

    /// The vertical pass's taps with their pair-packed weights.
    pub(super) struct Rows<'a> {
        pub taps: &'a Taps,
        pub pairs: &'a [i32],
        pub stride: usize,
        /// Whether to run the AVX2 kernel (only where the CPU has it).
        pub avx2: bool,
    }

    impl Rows<'_> {
        /// Output row `r` of `out` (rows of `width` bytes) from the rows of `src`.
        pub fn run(&self, src: &[u8], width: usize, out: &mut [u8]) {
            let rows = src.len() / width.max(1);
            let avx2 = self.avx2 && std::is_x86_feature_detected!("avx2");
            for (r, dst) in out.chunks_exact_mut(width).enumerate() {
                let (first, count) = (self.taps.first[r], self.taps.count[r]);
                // Every row read is inside `src` (checked here, once per output row:
                // the kernels index without checks).
                assert!(first + count <= rows && src.len() >= rows * width);
                let pairs = &self.pairs[r * self.stride..r * self.stride + count.div_ceil(2)];
                let base = &src[first * width..];
                let precision = self.taps.precision;
                if avx2 {
                    // SAFETY: AVX2 is present; the rows read lie in `base` (checked above).
                    unsafe { row_avx2(base, width, count, pairs, precision, dst) }
                } else {
                    // SAFETY: SSE2 is part of x86-64; the rows read lie in `base`.
                    unsafe { row_sse2(base, width, count, pairs, precision, dst, 0) }
                }
            }
        }
    }

    /// The scalar sum of one column (the tails narrower than a vector).
    #[inline(always)]
    fn column(
        base: &[u8],
        width: usize,
        count: usize,
        pairs: &[i32],
        precision: u32,
        x: usize,
    ) -> u8 {
        let mut sum = 1i32 << (precision - 1);
        for j in 0..count {
            let packed = pairs[j / 2];
            let k = if j % 2 == 0 {
                packed as i16
            } else {
                (packed >> 16) as i16
            };
            sum += i32::from(base[j * width + x]) * i32::from(k);
        }
        super::to_byte(sum, precision)
    }

    /// One output row from column `from` on, 16 bytes at a time.
    #[target_feature(enable = "sse2")]
    unsafe fn row_sse2(
        base: &[u8],
        width: usize,
        count: usize,
        pairs: &[i32],
        precision: u32,
        dst: &mut [u8],
        from: usize,
    ) {
        let zero = _mm_setzero_si128();
        let half = _mm_set1_epi32(1 << (precision - 1));
        let shift = _mm_cvtsi32_si128(precision as i32);
        let p = base.as_ptr();
        let mut x = from;
        while x + 16 <= width {
            let (mut a0, mut a1, mut a2, mut a3) = (half, half, half, half);
            for (q, &w) in pairs.iter().enumerate() {
                let j = 2 * q;
                let w = _mm_set1_epi32(w);
                let u = _mm_loadu_si128(p.add(j * width + x) as *const __m128i);
                let v = if j + 1 < count {
                    _mm_loadu_si128(p.add((j + 1) * width + x) as *const __m128i)
                } else {
                    zero
                };
                let lo = _mm_unpacklo_epi8(u, v);
                let hi = _mm_unpackhi_epi8(u, v);
                a0 = _mm_add_epi32(a0, _mm_madd_epi16(_mm_unpacklo_epi8(lo, zero), w));
                a1 = _mm_add_epi32(a1, _mm_madd_epi16(_mm_unpackhi_epi8(lo, zero), w));
                a2 = _mm_add_epi32(a2, _mm_madd_epi16(_mm_unpacklo_epi8(hi, zero), w));
                a3 = _mm_add_epi32(a3, _mm_madd_epi16(_mm_unpackhi_epi8(hi, zero), w));
            }
            let lo = _mm_packs_epi32(_mm_sra_epi32(a0, shift), _mm_sra_epi32(a1, shift));
            let hi = _mm_packs_epi32(_mm_sra_epi32(a2, shift), _mm_sra_epi32(a3, shift));
            _mm_storeu_si128(
                dst.as_mut_ptr().add(x) as *mut __m128i,
                _mm_packus_epi16(lo, hi),
            );
            x += 16;
        }
        for (i, d) in dst.iter_mut().enumerate().take(width).skip(x) {
            *d = column(base, width, count, pairs, precision, i);
        }
    }

    /// One output row, 32 bytes at a time (the SSE2 kernel's arithmetic in each
    /// 128-bit half: unpacking and packing stay within halves, so the bytes come
    /// back in order).
    #[target_feature(enable = "avx2")]
    unsafe fn row_avx2(
        base: &[u8],
        width: usize,
        count: usize,
        pairs: &[i32],
        precision: u32,
        dst: &mut [u8],
    ) {
        let zero = _mm256_setzero_si256();
        let half = _mm256_set1_epi32(1 << (precision - 1));
        let shift = _mm_cvtsi32_si128(precision as i32);
        let p = base.as_ptr();
        let mut x = 0;
        while x + 32 <= width {
            let (mut a0, mut a1, mut a2, mut a3) = (half, half, half, half);
            for (q, &w) in pairs.iter().enumerate() {
                let j = 2 * q;
                let w = _mm256_set1_epi32(w);
                let u = _mm256_loadu_si256(p.add(j * width + x) as *const __m256i);
                let v = if j + 1 < count {
                    _mm256_loadu_si256(p.add((j + 1) * width + x) as *const __m256i)
                } else {
                    zero
                };
                let lo = _mm256_unpacklo_epi8(u, v);
                let hi = _mm256_unpackhi_epi8(u, v);
                a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_unpacklo_epi8(lo, zero), w));
                a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_unpackhi_epi8(lo, zero), w));
                a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_unpacklo_epi8(hi, zero), w));
                a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_unpackhi_epi8(hi, zero), w));
            }
            let lo = _mm256_packs_epi32(_mm256_sra_epi32(a0, shift), _mm256_sra_epi32(a1, shift));
            let hi = _mm256_packs_epi32(_mm256_sra_epi32(a2, shift), _mm256_sra_epi32(a3, shift));
            _mm256_storeu_si256(
                dst.as_mut_ptr().add(x) as *mut __m256i,
                _mm256_packus_epi16(lo, hi),
            );
            x += 32;
        }
        row_sse2(base, width, count, pairs, precision, dst, x);
    }

    /// Reads the pixel of `STEP` bytes at `p` as the low 32 bits of a vector
    /// (for RGB, the fourth byte is the next pixel's first: its lane is dropped).
    #[inline(always)]
    unsafe fn pixel(p: *const u8) -> __m128i {
        _mm_cvtsi32_si128((p as *const i32).read_unaligned())
    }

    /// The horizontal pass's taps with their pair-packed weights.
    pub(super) struct Across<'a> {
        pub taps: &'a Taps,
        pub pairs: &'a [i32],
        pub stride: usize,
        /// Whether to run the AVX2 kernel (only where the CPU has it).
        pub avx2: bool,
    }

    /// Pixels of padding after a row copied for the kernels: the AVX2 kernel reads
    /// four pixels from a tap, up to three past the last one it weighs.
    const PAD: usize = 4;

    /// `src` (a row of `STEP`-byte pixels) as RGBX pixels at the start of `row` (the
    /// padding after them left as it is).
    fn padded<const STEP: usize>(src: &[u8], row: &mut [u8]) {
        if STEP == 4 {
            row[..src.len()].copy_from_slice(src);
        } else {
            for (d, s) in row.chunks_exact_mut(4).zip(src.chunks_exact(STEP)) {
                d[..3].copy_from_slice(&s[..3]);
            }
        }
    }

    impl Across<'_> {
        /// Each of `lines` (HWC rows of `width` pixels of `STEP` bytes, longer
        /// ones cut) resampled along x into the three planar rows `rows` yields.
        pub fn run<'s, 'o, const STEP: usize>(
            &self,
            lines: impl Iterator<Item = &'s [u8]>,
            width: usize,
            rows: impl Iterator<Item = ((&'o mut [u8], &'o mut [u8]), &'o mut [u8])>,
        ) {
            let avx2 = self.avx2 && std::is_x86_feature_detected!("avx2");
            // Every tap reads inside the row (checked once: the kernels index without checks).
            let n = self.taps.first.len();
            assert!((0..n).all(|x| self.taps.first[x] + self.taps.count[x] <= width));
            assert!(self.pairs.len() >= n * self.stride && self.stride.is_multiple_of(2));
            // Each row is copied as RGBX pixels followed by PAD zero pixels.
            let mut row = vec![0u8; (width + PAD) * 4];
            let mut next = vec![0u8; (width + PAD) * 4];
            let mut lines = lines.zip(rows);
            while let Some((src, ((r, g), b))) = lines.next() {
                padded::<STEP>(src, &mut row);
                let n = n.min(r.len()).min(g.len()).min(b.len());
                // SAFETY: every read is inside `row` (and `next`): the taps end by
                // `width`, the AVX2 kernel reads at most PAD - 1 pixels past a tap, all
                // within the padding; AVX2 is present where it runs, SSE2 is part of
                // x86-64.
                unsafe {
                    if !avx2 {
                        self.row_sse2(&row, n, [r, g, b]);
                    } else if let Some((src, ((r2, g2), b2))) = lines.next() {
                        padded::<STEP>(src, &mut next);
                        let n = n.min(r2.len()).min(g2.len()).min(b2.len());
                        self.rows_avx2(&row, &next, n, [r, g, b], [r2, g2, b2]);
                    } else {
                        self.row_avx2(&row, n, [r, g, b]);
                    }
                }
            }
        }

        /// Two rows at a time: the taps and weights loaded once for both.
        #[target_feature(enable = "avx2")]
        unsafe fn rows_avx2(
            &self,
            one: &[u8],
            two: &[u8],
            n: usize,
            [r, g, b]: [&mut [u8]; 3],
            [r2, g2, b2]: [&mut [u8]; 3],
        ) {
            const Z: i8 = -1;
            let order = _mm256_setr_epi8(
                0, Z, 4, Z, 1, Z, 5, Z, 2, Z, 6, Z, 3, Z, 7, Z, //
                8, Z, 12, Z, 9, Z, 13, Z, 10, Z, 14, Z, 11, Z, 15, Z,
            );
            let spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
            let half = _mm_set1_epi32(1 << (self.taps.precision - 1));
            let shift = _mm_cvtsi32_si128(self.taps.precision as i32);
            for x in 0..n {
                let (first, count) = (
                    *self.taps.first.get_unchecked(x),
                    *self.taps.count.get_unchecked(x),
                );
                let p = one.as_ptr().add(first * 4);
                let p2 = two.as_ptr().add(first * 4);
                let pairs = self.pairs.as_ptr().add(x * self.stride);
                let mut acc = _mm256_setzero_si256();
                let mut acc2 = _mm256_setzero_si256();
                for q in 0..count.div_ceil(4) {
                    let w = _mm_loadl_epi64(pairs.add(2 * q) as *const __m128i);
                    let w = _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(w), spread);
                    let four = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                        p.add(q * 16) as *const __m128i
                    ));
                    let four2 = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                        p2.add(q * 16) as *const __m128i
                    ));
                    acc = _mm256_add_epi32(
                        acc,
                        _mm256_madd_epi16(_mm256_shuffle_epi8(four, order), w),
                    );
                    acc2 = _mm256_add_epi32(
                        acc2,
                        _mm256_madd_epi16(_mm256_shuffle_epi8(four2, order), w),
                    );
                }
                let sum = _mm_add_epi32(
                    half,
                    _mm_add_epi32(
                        _mm256_castsi256_si128(acc),
                        _mm256_extracti128_si256::<1>(acc),
                    ),
                );
                let sum2 = _mm_add_epi32(
                    half,
                    _mm_add_epi32(
                        _mm256_castsi256_si128(acc2),
                        _mm256_extracti128_si256::<1>(acc2),
                    ),
                );
                let words = _mm_packs_epi32(_mm_sra_epi32(sum, shift), _mm_sra_epi32(sum2, shift));
                let bytes = _mm_packus_epi16(words, words);
                let (lo, hi) = (_mm_cvtsi128_si32(bytes), _mm_extract_epi32::<1>(bytes));
                let (lo, hi) = (lo.to_le_bytes(), hi.to_le_bytes());
                (r[x], g[x], b[x]) = (lo[0], lo[1], lo[2]);
                (r2[x], g2[x], b2[x]) = (hi[0], hi[1], hi[2]);
            }
        }

        #[target_feature(enable = "sse2")]
        unsafe fn row_sse2(&self, row: &[u8], n: usize, [r, g, b]: [&mut [u8]; 3]) {
            let zero = _mm_setzero_si128();
            let half = _mm_set1_epi32(1 << (self.taps.precision - 1));
            let shift = _mm_cvtsi32_si128(self.taps.precision as i32);
            for x in 0..n {
                let (first, count) = (
                    *self.taps.first.get_unchecked(x),
                    *self.taps.count.get_unchecked(x),
                );
                let p = row.as_ptr().add(first * 4);
                let pairs = self.pairs.as_ptr().add(x * self.stride);
                let mut acc = half;
                for q in 0..count.div_ceil(2) {
                    let j = 2 * q;
                    let both = _mm_unpacklo_epi8(
                        _mm_unpacklo_epi8(pixel(p.add(j * 4)), pixel(p.add(j * 4 + 4))),
                        zero,
                    );
                    // Past the count the pair's second weight is 0 (the pixel read
                    // there is the padding or the next pixel: a finite value times 0).
                    acc = _mm_add_epi32(acc, _mm_madd_epi16(both, _mm_set1_epi32(*pairs.add(q))));
                }
                let words = _mm_packs_epi32(_mm_sra_epi32(acc, shift), zero);
                let bytes = _mm_cvtsi128_si32(_mm_packus_epi16(words, zero)).to_le_bytes();
                (r[x], g[x], b[x]) = (bytes[0], bytes[1], bytes[2]);
            }
        }

        /// Four taps at a time: the 16 bytes of four RGBX pixels in both halves of
        /// a vector, shuffled into (pixel 0, pixel 1) int16 pairs in the low half and
        /// (pixel 2, pixel 3) in the high half, each multiplied by its weight pair.
        #[target_feature(enable = "avx2")]
        unsafe fn row_avx2(&self, row: &[u8], n: usize, [r, g, b]: [&mut [u8]; 3]) {
            const Z: i8 = -1;
            let order = _mm256_setr_epi8(
                0, Z, 4, Z, 1, Z, 5, Z, 2, Z, 6, Z, 3, Z, 7, Z, //
                8, Z, 12, Z, 9, Z, 13, Z, 10, Z, 14, Z, 11, Z, 15, Z,
            );
            let spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
            let zero = _mm_setzero_si128();
            let half = _mm_set1_epi32(1 << (self.taps.precision - 1));
            let shift = _mm_cvtsi32_si128(self.taps.precision as i32);
            for x in 0..n {
                let (first, count) = (
                    *self.taps.first.get_unchecked(x),
                    *self.taps.count.get_unchecked(x),
                );
                let p = row.as_ptr().add(first * 4);
                let pairs = self.pairs.as_ptr().add(x * self.stride);
                let mut acc = _mm256_setzero_si256();
                for q in 0..count.div_ceil(4) {
                    let four = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                        p.add(q * 16) as *const __m128i
                    ));
                    let w = _mm_loadl_epi64(pairs.add(2 * q) as *const __m128i);
                    let w = _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(w), spread);
                    acc = _mm256_add_epi32(
                        acc,
                        _mm256_madd_epi16(_mm256_shuffle_epi8(four, order), w),
                    );
                }
                let sum = _mm_add_epi32(
                    half,
                    _mm_add_epi32(
                        _mm256_castsi256_si128(acc),
                        _mm256_extracti128_si256::<1>(acc),
                    ),
                );
                let words = _mm_packs_epi32(_mm_sra_epi32(sum, shift), zero);
                let bytes = _mm_cvtsi128_si32(_mm_packus_epi16(words, zero)).to_le_bytes();
                (r[x], g[x], b[x]) = (bytes[0], bytes[1], bytes[2]);
            }
        }
    }
}

/// A rectangle of a picture: `height × width` pixels from (`top`, `left`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

impl Crop {
    /// The whole of `picture`.
    pub fn whole(picture: &Picture) -> Crop {
        Crop {
            top: 0,
            left: 0,
            height: picture.height,
            width: picture.width,
        }
    }

    /// Whether the rectangle is non-empty and lies inside a `height × width` picture.
    pub fn fits(&self, (height, width): (usize, usize)) -> bool {
        self.height > 0
            && self.width > 0
            && self
                .top
                .checked_add(self.height)
                .is_some_and(|b| b <= height)
            && self
                .left
                .checked_add(self.width)
                .is_some_and(|r| r <= width)
    }
}

/// Planar `3 × crop.height × out_width` bytes: each row of the crop of the HWC
/// `picture` resampled along x (or only de-interleaved when the width is
/// kept). The picture's pixels are 3 bytes (RGB) or 4 (RGBX, the fourth not
/// read); the crop's rows are read in place (a strided view, no copy).
fn horizontal(
    picture: &Picture,
    crop: Crop,
    out_width: usize,
    filter: Filter,
    image: usize,
) -> Result<Vec<u8>> {
    if picture.step() == RGBX {
        horizontal_step::<RGBX>(picture, crop, out_width, filter, image)
    } else {
        horizontal_step::<CHANNELS>(picture, crop, out_width, filter, image)
    }
}

/// [`horizontal`] for pixels of `STEP` bytes.
fn horizontal_step<const STEP: usize>(
    picture: &Picture,
    crop: Crop,
    out_width: usize,
    filter: Filter,
    image: usize,
) -> Result<Vec<u8>> {
    let (h, w) = (crop.height, crop.width);
    let plane = h * out_width;
    let mut out = scratch(CHANNELS * plane, image)?;
    let row_bytes = w * STEP;
    let stride = picture.width * STEP;
    let fits = crop.fits((picture.height, picture.width))
        && picture.pixels.len() >= picture.height * stride;
    if out_width == 0 || row_bytes == 0 || !fits {
        return Ok(out);
    }
    // The crop's rows, each `w` pixels read where they lie in the picture.
    let lines = picture.pixels[crop.top * stride..(crop.top + h) * stride]
        .chunks_exact(stride)
        .map(|line| &line[crop.left * STEP..crop.left * STEP + row_bytes]);
    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    let rows = r_plane
        .chunks_exact_mut(out_width)
        .zip(g_plane.chunks_exact_mut(out_width))
        .zip(b_plane.chunks_exact_mut(out_width));
    if out_width == w {
        for (line, ((r, g), b)) in lines.zip(rows) {
            let planes = r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut());
            for (px, ((r, g), b)) in line.chunks_exact(STEP).zip(planes) {
                (*r, *g, *b) = (px[0], px[1], px[2]);
            }
        }
        return Ok(out);
    }
    let taps = taps(w, out_width, filter);
    #[cfg(target_arch = "x86_64")]
    {
        let (pairs, pair_stride) = paired(&taps);
        let kernel = simd::Across {
            taps: &taps,
            pairs: &pairs,
            stride: pair_stride,
            avx2: std::is_x86_feature_detected!("avx2"),
        };
        kernel.run::<STEP>(lines, w, rows);
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (src, ((r, g), b)) in lines.zip(rows) {
        resample_row_scalar::<STEP>(src, &taps, r, g, b);
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
    if width == 0 {
        return Ok(out);
    }
    for c in 0..CHANNELS {
        resample_rows(
            &source[c * height * width..(c + 1) * height * width],
            width,
            &taps,
            &mut out[c * out_height * width..(c + 1) * out_height * width],
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
    resized_crop(picture, Crop::whole(picture), target, filter, image)
}

/// The planar `3 × height × width` bytes of the `crop` of `picture` resized to
/// `target` with `filter`, the crop read in place (errors name `image`; a crop
/// outside the picture is an error).
pub fn resized_crop(
    picture: &Picture,
    crop: Crop,
    target: (usize, usize),
    filter: Filter,
    image: usize,
) -> Result<Vec<u8>> {
    if !crop.fits((picture.height, picture.width)) {
        return Err(EngineError::new(format!(
            "image {image}: the crop of {} × {} at ({}, {}) is empty or outside its {} × {} pixels",
            crop.height, crop.width, crop.top, crop.left, picture.height, picture.width
        )));
    }
    let (th, tw) = target;
    let across = horizontal(picture, crop, tw, filter, image)?;
    if th == crop.height {
        return Ok(across);
    }
    vertical(&across, crop.height, tw, th, filter, image)
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

    /// The resize through the scalar kernels only (the arithmetic as written out
    /// in `resample_row_scalar` and `resample_rows_scalar`).
    fn reference(picture: &Picture, (th, tw): (usize, usize), filter: Filter) -> Vec<u8> {
        let (h, w) = (picture.height, picture.width);
        let step = picture.step();
        let mut across = vec![0u8; CHANNELS * h * tw];
        let t = taps(w, tw, filter);
        let (r, rest) = across.split_at_mut(h * tw);
        let (g, b) = rest.split_at_mut(h * tw);
        for y in 0..h {
            let src = &picture.pixels[y * w * step..(y + 1) * w * step];
            let rows = y * tw..(y + 1) * tw;
            let (r, g, b) = (&mut r[rows.clone()], &mut g[rows.clone()], &mut b[rows]);
            if step == RGBX {
                resample_row_scalar::<RGBX>(src, &t, r, g, b);
            } else {
                resample_row_scalar::<CHANNELS>(src, &t, r, g, b);
            }
        }
        if th == h {
            return across;
        }
        let t = taps(h, th, filter);
        let mut out = vec![0u8; CHANNELS * th * tw];
        for c in 0..CHANNELS {
            resample_rows_scalar(
                &across[c * h * tw..(c + 1) * h * tw],
                tw,
                &t,
                &mut out[c * th * tw..(c + 1) * th * tw],
            );
        }
        out
    }

    /// Deterministic bytes (xorshift), a third of them at the ends of the range so
    /// that sums overshoot and the clamping is exercised.
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                match state % 6 {
                    0 => 0,
                    1 => 255,
                    _ => (state >> 24) as u8,
                }
            })
            .collect()
    }

    #[test]
    fn the_vectorised_kernels_equal_the_scalar_sums() {
        let sizes = [(1, 1), (3, 5), (17, 13), (31, 47), (64, 33), (2, 90)];
        let targets = [
            (1, 1),
            (5, 3),
            (9, 40),
            (37, 29),
            (64, 64),
            (100, 7),
            (130, 97),
        ];
        let mut seed = 1;
        for filter in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos] {
            for &(h, w) in &sizes {
                for step in [CHANNELS, RGBX] {
                    seed += 1;
                    let pixels = noise(h * w * step, seed);
                    let picture = Picture {
                        pixels: &pixels,
                        height: h,
                        width: w,
                    };
                    for &target in targets.iter().chain(&[(h, w), (h, w + 3), (h + 2, w)]) {
                        let got = resized(&picture, target, filter, 0).unwrap();
                        let want = reference(&picture, target, filter);
                        assert!(got == want, "{filter:?} {h}x{w}x{step} -> {target:?}");
                    }
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_sse2_and_avx2_vertical_kernels_equal_the_scalar_sums() {
        for filter in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos] {
            for (h, w, out_h) in [
                (40, 100, 7),
                (9, 33, 31),
                (64, 64, 64),
                (5, 17, 1),
                (3, 70, 12),
            ] {
                let src = noise(h * w, (h * w + out_h) as u64);
                let t = taps(h, out_h, filter);
                let mut want = vec![0u8; out_h * w];
                resample_rows_scalar(&src, w, &t, &mut want);
                let (pairs, stride) = paired(&t);
                for avx2 in [false, true] {
                    let mut got = vec![0u8; out_h * w];
                    let kernel = simd::Rows {
                        taps: &t,
                        pairs: &pairs,
                        stride,
                        avx2,
                    };
                    kernel.run(&src, w, &mut got);
                    assert!(got == want, "{filter:?} {h}x{w} -> {out_h} avx2 {avx2}");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_sse2_and_avx2_horizontal_kernels_equal_the_scalar_sums() {
        for filter in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos] {
            for (h, w, out_w) in [
                (3, 100, 7),
                (2, 33, 31),
                (4, 64, 64),
                (1, 17, 1),
                (3, 5, 70),
            ] {
                for step in [CHANNELS, RGBX] {
                    let src = noise(h * w * step, (w * step + out_w) as u64);
                    let t = taps(w, out_w, filter);
                    let mut want = vec![0u8; CHANNELS * h * out_w];
                    for (y, row) in want.chunks_exact_mut(CHANNELS * out_w).enumerate() {
                        let (r, rest) = row.split_at_mut(out_w);
                        let (g, b) = rest.split_at_mut(out_w);
                        let line = &src[y * w * step..(y + 1) * w * step];
                        if step == RGBX {
                            resample_row_scalar::<RGBX>(line, &t, r, g, b);
                        } else {
                            resample_row_scalar::<CHANNELS>(line, &t, r, g, b);
                        }
                    }
                    let (pairs, stride) = paired(&t);
                    for avx2 in [false, true] {
                        let mut got = vec![0u8; CHANNELS * h * out_w];
                        let kernel = simd::Across {
                            taps: &t,
                            pairs: &pairs,
                            stride,
                            avx2,
                        };
                        let rows = got.chunks_exact_mut(CHANNELS * out_w).map(|row| {
                            let (r, rest) = row.split_at_mut(out_w);
                            let (g, b) = rest.split_at_mut(out_w);
                            ((r, g), b)
                        });
                        if step == RGBX {
                            kernel.run::<RGBX>(src.chunks_exact(w * step), w, rows);
                        } else {
                            kernel.run::<CHANNELS>(src.chunks_exact(w * step), w, rows);
                        }
                        assert!(
                            got == want,
                            "{filter:?} {h}x{w}x{step} -> {out_w} avx2 {avx2}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn wide_rows_take_every_vector_width_and_tail() {
        // Widths around the 16- and 32-byte vectors of the vertical pass, with many
        // taps (a strong downscale) and with few (an upscale).
        for filter in [Filter::Bilinear, Filter::Bicubic, Filter::Lanczos] {
            for w in [15, 16, 17, 31, 32, 33, 63, 64, 65, 200] {
                let pixels = noise(40 * w * CHANNELS, w as u64);
                let picture = Picture {
                    pixels: &pixels,
                    height: 40,
                    width: w,
                };
                for target in [(3, w), (71, w), (40 * 3, w + 1), (7, w / 2 + 1)] {
                    let got = resized(&picture, target, filter, 0).unwrap();
                    assert!(
                        got == reference(&picture, target, filter),
                        "{filter:?} 40x{w} -> {target:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_crop_resizes_as_the_copied_rectangle_and_checks_its_bounds() {
        let (h, w) = (11, 13);
        for step in [CHANNELS, RGBX] {
            let pixels = noise(h * w * step, step as u64);
            let picture = Picture {
                pixels: &pixels,
                height: h,
                width: w,
            };
            let crop = Crop {
                top: 2,
                left: 5,
                height: 7,
                width: 6,
            };
            let copied: Vec<u8> = (crop.top..crop.top + crop.height)
                .flat_map(|y| {
                    let start = (y * w + crop.left) * step;
                    pixels[start..start + crop.width * step].iter().copied()
                })
                .collect();
            let alone = Picture {
                pixels: &copied,
                height: crop.height,
                width: crop.width,
            };
            for filter in FILTERS {
                for target in [(7, 6), (3, 4), (9, 17), (1, 1)] {
                    let want = resized(&alone, target, filter, 0).unwrap();
                    let got = resized_crop(&picture, crop, target, filter, 0).unwrap();
                    assert_eq!(got, want, "step {step} {filter:?} {target:?}");
                }
            }
            assert_eq!(
                resized_crop(&picture, Crop::whole(&picture), (5, 5), Filter::Bilinear, 0).unwrap(),
                resized(&picture, (5, 5), Filter::Bilinear, 0).unwrap()
            );
            for bad in [
                Crop {
                    top: 5,
                    height: 7,
                    ..crop
                },
                Crop { left: 8, ..crop },
                Crop { width: 0, ..crop },
                Crop {
                    top: usize::MAX,
                    ..crop
                },
            ] {
                let err = resized_crop(&picture, bad, (3, 3), Filter::Bilinear, 4).unwrap_err();
                assert!(err.0.contains("image 4"), "{err}");
            }
        }
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
