//! The Lanczos-3 filter of torch's antialiased `interpolate(..., mode="lanczos")`
//! (what torchvision >= 0.27 runs on CPU for `InterpolationMode.LANCZOS`, the
//! default resample of Idefics3 and SmolVLM): `sinc(x) · sinc(x / 3)` for
//! `|x| < 3`, six taps at scale 1 (`interp_size` 6). On uint8, torch resizes with
//! it through the same int16-weight separable passes as bicubic and bilinear, so
//! the shared kernel in `resize.rs` runs it as one more filter: only the weight
//! function and its support live here.

/// Half the filter's support at scale 1 (torch's `interp_size / 2`).
pub const HALF_SUPPORT: f64 = 3.0;

/// `sin(πx) / (πx)`, 1 at 0 (the product is formed as torch forms it: `x · π`
/// first, then the sine of that over it).
fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

/// The Lanczos-3 weight at distance `x`.
pub fn weight(x: f64) -> f64 {
    let x = x.abs();
    if x < HALF_SUPPORT {
        sinc(x) * sinc(x / HALF_SUPPORT)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_at_zero_zero_at_the_other_integers_and_past_the_support() {
        assert_eq!(weight(0.0), 1.0);
        for k in 1..=4 {
            assert!(weight(f64::from(k)).abs() < 1e-15, "{k}");
            assert!(weight(-f64::from(k)).abs() < 1e-15, "{k}");
        }
        assert_eq!(weight(3.0), 0.0);
        assert_eq!(weight(7.5), 0.0);
    }

    #[test]
    fn even_with_negative_lobes_between_one_and_two() {
        for &x in &[0.25, 0.5, 1.5, 2.5] {
            assert_eq!(weight(x), weight(-x));
        }
        assert!(weight(0.5) > 0.5 && weight(1.5) < 0.0 && weight(2.5) > 0.0);
        // sinc(0.5) · sinc(1/6) = (2/π) · (3/π): the closed form at a half.
        let expected = (2.0 / std::f64::consts::PI) * (3.0 / std::f64::consts::PI);
        assert!((weight(0.5) - expected).abs() < 1e-15);
    }
}
