//! Channel mixing and band-limited sample-rate conversion, for turning prompt files of any
//! rate and channel count into the 8 kHz mono that G.711 carries.
//!
//! The resampler is a polyphase windowed-sinc filter (the method of J. O. Smith's "Digital
//! Audio Resampling" and of libsamplerate/soxr, without their streaming state): each output
//! sample is the dot product of the input around its position with a low-pass kernel shifted
//! to that position. The kernel is an ideal low-pass (a sinc) under a Kaiser window, designed
//! with Kaiser's formulas (Oppenheim & Schafer, *Discrete-Time Signal Processing*, "Kaiser
//! window filter design") for
//! [`STOPBAND_DB`] of attenuation from the Nyquist frequency of the lower of the two rates
//! down, and a transition band of 10 % of that frequency. Going to 8 kHz the passband is flat
//! to 3.6 kHz, which covers the 300-3400 Hz telephone band (ITU-T G.712), and everything from
//! 4 kHz up, which would otherwise alias into the band, is removed.
//!
//! This is startup work on whole prompt files, so it works on slices rather than streams.

/// Stopband attenuation of the anti-aliasing kernel, in dB. 80 dB sits well below G.711's own
/// quantisation noise (about 38 dB SNR), so aliases are inaudible after encoding.
pub const STOPBAND_DB: f64 = 80.0;

/// Transition band as a fraction of the lower Nyquist frequency: the passband ends at 90 %.
const TRANSITION: f64 = 0.1;

/// Rate ratios with a denominator (the upsampling factor) up to this get one exact kernel row
/// per output phase: every common rate to 8 kHz does (44.1 kHz needs 80, 11.025 kHz 320).
/// Other ratios use this many rows and interpolate linearly between neighbours, which is
/// accurate to well past [`STOPBAND_DB`] because the kernel is smooth at that spacing.
const MAX_PHASES: u64 = 512;

/// Half the kernel's length in input samples is capped here, so an absurd rate from a
/// malformed file costs bounded memory; real rates (up to 384 kHz to 8 kHz) stay far below it.
const MAX_HALF_WIDTH: f64 = 32_768.0;

/// Averages interleaved channels into one.
///
/// `interleaved` holds frames of `channels` samples each. A trailing partial frame is dropped;
/// `channels == 0` yields nothing and `channels == 1` a copy.
pub fn mix_to_mono(interleaved: &[f32], channels: usize) -> Vec<f32> {
    match channels {
        0 => Vec::new(),
        1 => interleaved.to_vec(),
        n => {
            let scale = 1.0 / n as f32;
            interleaved
                .chunks_exact(n)
                .map(|frame| frame.iter().sum::<f32>() * scale)
                .collect()
        }
    }
}

/// Resamples `input` from `from_rate` to `to_rate` Hz with a band-limited (windowed-sinc)
/// filter.
///
/// The cutoff sits just below the Nyquist frequency of the lower rate (see the module
/// comment), with at least [`STOPBAND_DB`] of stopband attenuation, so downsampling does not
/// alias and upsampling does not image. The output has `input.len() * to_rate / from_rate`
/// samples, rounded to the nearest; output sample `n` is the band-limited input at time
/// `n / to_rate`, so the first samples line up. Outside the input the signal is taken to be
/// zero. Equal rates return the input unchanged; a zero rate or empty input returns nothing.
///
/// Cost grows with the ratio: about `100 * max(1, from_rate / to_rate)` multiply-adds per
/// output sample.
pub fn resample(input: &[f32], from_rate: u32, to_rate: u32) -> Vec<f32> {
    if from_rate == to_rate {
        return input.to_vec();
    }
    if from_rate == 0 || to_rate == 0 || input.is_empty() {
        return Vec::new();
    }
    let g = gcd(from_rate, to_rate);
    // Output sample n sits at input position n * down / up, tracked exactly as an integer
    // part and a phase numerator below `up`.
    let up = u64::from(to_rate / g);
    let down = u64::from(from_rate / g);
    let out_len = output_len(input.len(), from_rate, to_rate);
    if out_len == 0 {
        return Vec::new();
    }
    let kernel = Kernel::design(from_rate, to_rate, up);
    let mut out = Vec::with_capacity(out_len);
    let (mut base, mut phase) = (0usize, 0u64);
    for _ in 0..out_len {
        out.push(kernel.apply(input, base, phase, up));
        phase += down;
        base = base.saturating_add(usize::try_from(phase / up).unwrap_or(usize::MAX));
        phase %= up;
    }
    out
}

/// `len * to / from`, rounded to the nearest integer.
fn output_len(len: usize, from: u32, to: u32) -> usize {
    let len = len as u128;
    let (from, to) = (u128::from(from), u128::from(to));
    usize::try_from((len * to + from / 2) / from).unwrap_or(usize::MAX)
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The windowed-sinc kernel, tabulated as rows of taps for fractional positions in `[0, 1]`.
struct Kernel {
    /// Taps per row. Row taps apply to input samples `base - reach ..= base + reach + 1`.
    taps: usize,
    /// How many input samples the kernel reaches before the output position.
    reach: usize,
    /// Rows, `taps` each: one per phase (`exact`), or `MAX_PHASES + 1` rows at positions
    /// `p / MAX_PHASES` to interpolate between.
    rows: Vec<f32>,
    /// Whether there is one row per phase (no interpolation).
    exact: bool,
    /// Number of phase steps the rows are spaced by.
    phases: u64,
}

impl Kernel {
    fn design(from: u32, to: u32, up: u64) -> Self {
        let from_hz = f64::from(from);
        let nyquist = f64::from(from.min(to)) / 2.0;
        // The -6 dB point sits mid-transition; the stopband starts at the lower Nyquist rate.
        let transition = TRANSITION * nyquist;
        let cutoff = (nyquist - transition / 2.0) / from_hz; // cycles per input sample
        let width = transition / from_hz; // transition band, cycles per input sample
        // Kaiser's empirical formulas for the window's β (A > 50 dB) and length.
        let beta = 0.1102 * (STOPBAND_DB - 8.7);
        let length = (STOPBAND_DB - 8.0) / (2.285 * 2.0 * std::f64::consts::PI * width);
        let half_width = (length / 2.0).clamp(1.0, MAX_HALF_WIDTH);
        let reach = half_width.floor() as usize;
        let taps = 2 * reach + 2;

        let (exact, phases, rows_count) = if up <= MAX_PHASES {
            (true, up, up)
        } else {
            (false, MAX_PHASES, MAX_PHASES + 1)
        };
        let i0_beta = bessel_i0(beta);
        let mut rows = Vec::with_capacity(taps * rows_count as usize);
        for p in 0..rows_count {
            let frac = p as f64 / phases as f64;
            let start = rows.len();
            for t in 0..taps {
                // Tap t weighs input sample base - reach + t, at distance d from the output.
                let d = frac + reach as f64 - t as f64;
                let r = d / half_width;
                let window = if r.abs() <= 1.0 {
                    bessel_i0(beta * (1.0 - r * r).sqrt()) / i0_beta
                } else {
                    0.0
                };
                rows.push((2.0 * cutoff * sinc(2.0 * cutoff * d) * window) as f32);
            }
            // Unit gain at DC in every phase, so a constant stays constant and the kernel's
            // small per-phase ripple does not become a tone at the phase rate.
            let row = &mut rows[start..];
            let sum: f32 = row.iter().sum();
            if sum.abs() > f32::EPSILON {
                row.iter_mut().for_each(|c| *c /= sum);
            }
        }
        Self {
            taps,
            reach,
            rows,
            exact,
            phases,
        }
    }

    /// The output sample at input position `base + phase / up`.
    fn apply(&self, input: &[f32], base: usize, phase: u64, up: u64) -> f32 {
        if self.exact {
            return self.dot(input, base, phase as usize);
        }
        // Between rows q and q + 1: phase / up = (q + a) / phases.
        let scaled = phase * self.phases;
        let q = (scaled / up) as usize;
        let a = (scaled % up) as f32 / up as f32;
        (1.0 - a) * self.dot(input, base, q) + a * self.dot(input, base, q + 1)
    }

    fn dot(&self, input: &[f32], base: usize, row: usize) -> f32 {
        let Some(row) = self.rows.get(row * self.taps..(row + 1) * self.taps) else {
            return 0.0;
        };
        // Clip the kernel's span to the input: samples outside it are zero.
        let (skip, first) = match base.checked_sub(self.reach) {
            Some(first) => (0, first),
            None => (self.reach - base, 0),
        };
        if first >= input.len() || skip >= row.len() {
            return 0.0;
        }
        let n = (row.len() - skip).min(input.len() - first);
        row[skip..skip + n]
            .iter()
            .zip(&input[first..first + n])
            .map(|(c, x)| c * x)
            .sum()
    }
}

/// sin(πx)/(πx).
fn sinc(x: f64) -> f64 {
    if x.abs() < 1e-12 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// The zeroth-order modified Bessel function of the first kind, by its power series
/// Σ ((x/2)^k / k!)², which converges quickly for the β values of a Kaiser window.
fn bessel_i0(x: f64) -> f64 {
    let half = x / 2.0;
    let (mut sum, mut term, mut k) = (1.0, 1.0, 1.0);
    while term > sum * 1e-16 {
        term *= (half / k) * (half / k);
        sum += term;
        k += 1.0;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn tone(freq: f64, rate: u32, seconds: f64, amplitude: f64) -> Vec<f32> {
        let n = (f64::from(rate) * seconds).round() as usize;
        (0..n)
            .map(|i| (amplitude * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as f32)
            .collect()
    }

    /// Amplitude of the `freq` component of `x` (one DFT bin, any frequency).
    fn amplitude_at(x: &[f32], freq: f64, rate: u32) -> f64 {
        let w = 2.0 * PI * freq / f64::from(rate);
        let (re, im) = x.iter().enumerate().fold((0.0, 0.0), |(re, im), (n, &v)| {
            let v = f64::from(v);
            (re + v * (w * n as f64).cos(), im - v * (w * n as f64).sin())
        });
        2.0 * (re * re + im * im).sqrt() / x.len() as f64
    }

    fn rms(x: &[f32]) -> f64 {
        (x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    fn db(ratio: f64) -> f64 {
        20.0 * ratio.log10()
    }

    /// The middle 2000 samples (0.25 s) of an 8 kHz signal, away from the edges where the
    /// tone starts and stops abruptly and the filter rings.
    fn middle(x: &[f32]) -> &[f32] {
        let start = (x.len() - 2000) / 2;
        &x[start..start + 2000]
    }

    fn zero_crossings(x: &[f32]) -> usize {
        x.windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count()
    }

    #[test]
    fn a_1khz_tone_keeps_its_pitch_and_level_from_any_rate() {
        for rate in [
            11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 96_000, 6_000,
        ] {
            let out = resample(&tone(1000.0, rate, 1.0, 0.5), rate, 8000);
            let mid = middle(&out);
            let level = db(amplitude_at(mid, 1000.0, 8000) / 0.5);
            assert!(level.abs() < 0.5, "{rate} Hz: level {level:.3} dB");
            // 2000 samples = 0.25 s of 1 kHz: 500 crossings, give or take the ends.
            let crossings = zero_crossings(mid);
            assert!((499..=501).contains(&crossings), "{rate} Hz: {crossings}");
            // Nothing but the tone: the residual is far below it.
            let residual = rms(mid) - 0.5 / 2f64.sqrt();
            assert!(residual.abs() < 0.01, "{rate} Hz: rms off by {residual}");
        }
    }

    #[test]
    fn the_telephone_band_is_flat() {
        for freq in [300.0, 2000.0, 3400.0] {
            for rate in [44_100, 48_000, 16_000] {
                let out = resample(&tone(freq, rate, 1.0, 0.5), rate, 8000);
                let mid = middle(&out);
                let level = db(amplitude_at(mid, freq, 8000) / 0.5);
                assert!(level.abs() < 0.1, "{freq} Hz from {rate}: {level:.3} dB");
            }
        }
    }

    #[test]
    fn a_6khz_tone_does_not_alias_to_2khz() {
        let out = resample(&tone(6000.0, 44_100, 1.0, 0.5), 44_100, 8000);
        let mid = middle(&out);
        let alias = db(amplitude_at(mid, 2000.0, 8000) / 0.5);
        assert!(alias < -50.0, "alias at 2 kHz: {alias:.1} dB");
        // And nothing else got through either.
        let total = db(rms(mid) / (0.5 / 2f64.sqrt()));
        assert!(total < -50.0, "residual: {total:.1} dB");
    }

    #[test]
    fn the_stopband_starts_at_4khz() {
        for (freq, rate) in [(4500.0, 44_100), (4100.0, 48_000), (7000.0, 16_000)] {
            let out = resample(&tone(freq, rate, 1.0, 0.5), rate, 8000);
            let total = db(rms(middle(&out)) / (0.5 / 2f64.sqrt()));
            assert!(total < -60.0, "{freq} Hz from {rate}: {total:.1} dB");
        }
    }

    #[test]
    fn length_follows_the_rate_ratio() {
        for rate in [
            8_000u32, 11_025, 16_000, 22_050, 44_100, 48_000, 96_000, 44_101, 7_999,
        ] {
            for len in [0usize, 1, 2, 7, 160, 4410, 12_345] {
                let out = resample(&vec![0.25; len], rate, 8000);
                let want = len as f64 * 8000.0 / f64::from(rate);
                assert!(
                    (out.len() as f64 - want).abs() <= 1.0,
                    "{len} at {rate}: {} vs {want}",
                    out.len()
                );
            }
        }
    }

    #[test]
    fn a_constant_stays_constant_away_from_the_edges() {
        // 44.1 kHz uses exact rows; 44.101 kHz (coprime with 8 kHz) interpolated ones.
        for rate in [44_100, 44_101, 11_025] {
            let out = resample(&vec![0.5; rate as usize], rate, 8000);
            for &v in middle(&out) {
                assert!((v - 0.5).abs() < 1e-4, "{rate}: {v}");
            }
        }
    }

    #[test]
    fn an_odd_rate_interpolates_between_kernel_rows() {
        let rate = 44_101; // up = 8000 > MAX_PHASES
        let out = resample(&tone(1000.0, rate, 1.0, 0.5), rate, 8000);
        let level = db(amplitude_at(middle(&out), 1000.0, 8000) / 0.5);
        assert!(level.abs() < 0.1, "{level}");
    }

    #[test]
    fn equal_rates_are_the_identity() {
        let x = tone(440.0, 8000, 0.1, 0.9);
        assert_eq!(resample(&x, 8000, 8000), x);
    }

    #[test]
    fn degenerate_input_yields_nothing() {
        assert!(resample(&[], 44_100, 8000).is_empty());
        assert!(resample(&[1.0; 10], 0, 8000).is_empty());
        assert!(resample(&[1.0; 10], 44_100, 0).is_empty());
        // Absurd ratios stay bounded and do not panic.
        assert_eq!(resample(&[1.0; 10], u32::MAX, 8000).len(), 0);
        assert_eq!(resample(&[1.0; 3], 1, 8000).len(), 24_000);
    }

    #[test]
    fn stereo_mixing_averages_channels() {
        assert_eq!(
            mix_to_mono(&[1.0, 0.0, 0.5, -0.5, -1.0, -1.0], 2),
            vec![0.5, 0.0, -1.0]
        );
        let three = mix_to_mono(&[0.3, 0.6, 0.9, 0.3], 3);
        assert_eq!(three.len(), 1, "partial frame dropped");
        assert!((three[0] - 0.6).abs() < 1e-6);
        assert_eq!(mix_to_mono(&[0.1, 0.2], 1), vec![0.1, 0.2]);
        assert!(mix_to_mono(&[0.1, 0.2], 0).is_empty());
    }
}
