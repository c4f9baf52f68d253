//! In-band DTMF detection: key presses heard as tone pairs in 8 kHz linear PCM.
//!
//! Used when a call's SDP negotiated no telephone-event (RFC 4733) or when configured: the
//! call decodes G.711 and feeds the samples here, 20 ms at a time or in any other chunks. A
//! key is the sum of one low-group tone (697, 770, 852, 941 Hz) and one high-group tone (1209,
//! 1336, 1477, 1633 Hz) (ITU-T Q.23). What must be accepted and rejected is ITU-T Q.24's:
//! tones of 40 ms or more are a press, tones under about 23 ms are not, ±1.5 % off frequency
//! is accepted and ±3.5 % rejected, 8 dB of normal twist and 4 dB of reverse twist are
//! accepted, and speech must not be taken for keys ("talk-off").
//!
//! # Algorithm
//!
//! The signal is cut into *hops* of 53 samples (6.6 ms); every hop ends an analysis *window*
//! of the last two hops (106 samples, 13.25 ms; spandsp and Asterisk use 102-sample blocks).
//! 106 samples make DFT bins 75.5 Hz wide, which puts the neighbouring low-group tones
//! (73-89 Hz apart) near the first null of each other's response. Overlapping the windows
//! by half gives a hit or miss every 6.6 ms, fine enough to tell 23 ms from 40 ms. Each window
//! is put through these checks, cheapest first; a window that passes them all is a *hit*
//! for one key:
//!
//! 1. Energy: quieter than two tones at the level floor is silence.
//! 2. Group dominance: single-bin DFTs at the 8 nominal frequencies (rectangular window;
//!    what the Goertzel algorithm computes, here as dot products with precomputed tables,
//!    which give the complex values step 3 needs as cheaply) pick the strongest tone of each
//!    group, which must exceed the other three of its group by a margin. Speech and noise
//!    spread their energy; a key does not.
//! 3. Frequency: the phase advance of the tone between this window and the one a hop earlier
//!    (Hann-windowed DFT, so the other group's tone leaks in at under -31 dB) measures each
//!    tone's frequency to a few hertz. Q.24's ±1.5 % / ±3.5 % cannot be told apart by DFT
//!    magnitude alone: in a 106-point DFT a 3.5 % error costs a 697 Hz tone 1.4 dB and a
//!    1.5 % error 0.3 dB, less than levels vary between lines.
//! 4. Fit: two sinusoids at the measured frequencies are fitted to the window by least
//!    squares, over the whole window and over each half. This gives each tone's amplitude
//!    free of the other tone's leakage, and the residual, the energy the fit leaves over.
//! 5. Level and twist on the fitted amplitudes.
//! 6. Steadiness: each tone's amplitude in the two halves of the window must agree within a
//!    few dB. A window that only partly holds a tone (the start or end of a burst) fails, so
//!    hits count whole windows of tone and the duration rules below hold; so does speech,
//!    whose harmonics come and go.
//! 7. Residual: the two tones must hold nearly all of the window's energy. This is the
//!    strongest talk-off guard: voiced speech is a whole comb of harmonics, never just two.
//! 8. Second harmonics: the residual at twice each tone's frequency must be well below that
//!    tone. Speech has them (it is a harmonic series); a keypad's oscillator does not.
//!
//! # Timing
//!
//! Time is counted in samples; hits and misses are counted in windows, one per hop.
//!
//! - A press is recognised after `hits_to_begin` consecutive hits of one key (set by
//!   [`InbandConfig::min_tone`]): 3 by default, i.e. 4 hops (26.5 ms) of steady tone. Every
//!   tone of 33 ms or more holds at least 4 whole hops whatever its alignment, so the default
//!   40 ms leaves a hop to spare for a window lost to noise. A tone of 22.7 ms or less never
//!   holds 4 hops that pass the steadiness check, so it is always rejected. Between the two
//!   it depends on where the tone falls against the hops; measured over every alignment, the
//!   shortest tone ever recognised is 23.0 ms and every tone from 31.1 ms is.
//! - The event is reported once, when the press is recognised, not when it ends (the IVR
//!   barges into prompts on the first digit, so it wants to know early). Its duration is the
//!   steady tone heard so far: `(hits + 1) × 53` samples, 26.5 ms when the press is
//!   recognised as soon as possible. It is a lower bound on how long the key was held.
//! - A press ends after `misses_to_end` consecutive windows without a hit of its key: 6 by
//!   default. A pause of 40 ms or more holds at least 5 whole silent hops, which spoil 6
//!   windows, so it always ends the press; a pause of 20 ms or less spoils at most 5
//!   windows, so it never splits one. Pauses in between split a press or not depending on
//!   alignment (measured: never up to 21.7 ms, always from 30 ms). However long a key is
//!   held it is one press; a dropout of a few windows inside it (noise, a lost packet) does
//!   not repeat the key.
//! - Another key needs no pause: it is recognised on its own hits, which ends the press of
//!   the key before (Q.24 asks senders for a pause between all digits, but nothing is gained
//!   by dropping a key whose sender skipped it). Recognitions are therefore at least
//!   `hits_to_begin` hops apart (20 ms), in practice one more, since the window straddling
//!   the change of key is not a hit.
//!
//! # Cost
//!
//! Per sample: 16 multiply-adds for the hop DFTs and one for the energy. The frequency
//! measurement and the fit (a few thousand operations) only run for windows that pass the
//! dominance check. Measured (`cargo bench --bench inband`): about 1 µs per 20 ms frame of
//! silence or speech, 6 µs while a key is held. Sans-IO: no clock, no allocation.

use std::f64::consts::PI;
use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use super::digit::{Digit, DigitEvent, DtmfMethod};
use super::g711;

/// The only input rate: G.711's.
const SAMPLE_RATE: f64 = 8000.0;
/// Samples per hop: one hit or miss per hop.
const HOP: usize = 53;
/// Samples per analysis window: the last two hops.
const WINDOW: usize = 2 * HOP;
/// Samples kept: the current window and the hop before it, for the phase advance.
const HISTORY: usize = 3 * HOP;

/// The eight DTMF frequencies, low group then high group (ITU-T Q.23 §2).
const FREQUENCIES: [f64; 8] = [697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0];

/// RFC 4733 event codes by low-group row and high-group column (the keypad of Q.23 Fig. 1).
const KEY_CODES: [[u8; 4]; 4] = [
    [1, 2, 3, 12],   // 697 Hz: 1 2 3 A
    [4, 5, 6, 13],   // 770 Hz: 4 5 6 B
    [7, 8, 9, 14],   // 852 Hz: 7 8 9 C
    [10, 0, 11, 15], // 941 Hz: * 0 # D
];

/// Peak amplitude, in 16-bit linear PCM, of a sine at 0 dBm0.
///
/// ITU-T G.711: the largest sine the A-law coder carries is +3.14 dBm0 (μ-law: +3.17). Taking
/// 16-bit full scale (32768) as that sine, as spandsp does, 0 dBm0 is 32768 × 10^(-3.14/20).
pub(crate) const DBM0_PEAK: f64 = 22_826.0;

/// Detection thresholds; `Default` meets ITU-T Q.24 (and is what the tests check).
///
/// Q.24 leaves the exact figures to each administration; the defaults follow the common
/// reading (Bellcore/Telcordia, the figures spandsp and Asterisk are tested against): operate
/// on tones ≥ 40 ms separated by ≥ 40 ms, reject tones < 23 ms, accept ±1.5 % and reject
/// ±3.5 % frequency error, accept 8 dB normal and 4 dB reverse twist, work at a 15 dB
/// signal-to-noise ratio, and never detect speech.
#[derive(Debug, Clone)]
pub struct InbandConfig {
    /// Tones at least this long are always recognised, whatever their alignment, with one
    /// analysis window (6.6 ms) to spare for noise.
    ///
    /// Sets the number of consecutive hits a press needs, `⌊(samples + 1) / 53⌋ - 3` and at
    /// least 1. Default 40 ms: 3 hits, and tones of 22.7 ms or less are always rejected.
    pub min_tone: Duration,
    /// A pause at least this long always separates two presses of the same key.
    ///
    /// Sets the number of consecutive missed windows that end a press, `⌊(samples + 1) / 53⌋`
    /// and at least 1. Default 40 ms: 6 windows, and pauses of 20 ms or less never split a
    /// press.
    pub min_gap: Duration,
    /// Largest accepted deviation of either tone from its nominal frequency, as a fraction of
    /// it. Default 0.025: midway between Q.24's must-accept 1.5 % and must-reject 3.5 %, the
    /// frequency measurement being good to a few hertz at 15 dB SNR.
    pub max_frequency_deviation: f64,
    /// Largest accepted normal twist (high-group tone weaker than low-group tone), in dB.
    ///
    /// Default 10: Q.24's must-accept 8 dB plus 2 dB for the line and the estimate; 14 dB is
    /// rejected.
    pub max_normal_twist_db: f64,
    /// Largest accepted reverse twist (high-group tone stronger than low-group tone), in dB.
    ///
    /// Default 6: Q.24's must-accept 4 dB plus 2 dB; 8 dB is rejected.
    pub max_reverse_twist_db: f64,
    /// Weakest accepted tone, each of the two measured on its own, in dBm0.
    ///
    /// Default -36: 6 dB below the -30 dBm0 per tone that must be detected, so the weaker
    /// tone of a pair at -30 dBm0 with some twist still counts; quieter signals are ignored.
    pub min_level_dbm0: f64,
    /// How far, in dB, the strongest nominal frequency of each group must exceed the other
    /// three of its group (DFT power over the window). Default 3.
    ///
    /// Kept low because the other group's tone leaks into this group's bins through the
    /// rectangular window's sidelobes: with 8 dB of normal twist and a 1.5 % error a true key
    /// clears only 4.6 dB (key 0, high tone 1.5 % low). This check is a cheap first filter;
    /// the frequency, fit and residual checks are what tell keys from speech.
    pub min_group_margin_db: f64,
    /// Largest energy left over after subtracting the two fitted tones, relative to the
    /// window's energy, in dB. Default -10 (the tones hold at least 90 % of the energy); at
    /// 15 dB SNR the residual is the noise, about -15 dB.
    pub max_residual_db: f64,
    /// Largest second harmonic of either tone, relative to that tone, in dB. Default -12.
    pub max_second_harmonic_db: f64,
    /// Largest change, in dB, of either tone's amplitude between the two halves of a window.
    ///
    /// Default 3: a half must hold at least about 70 % of a hop of tone, which sets the
    /// 22.7 ms rejection bound above.
    pub max_step_db: f64,
}

impl Default for InbandConfig {
    fn default() -> Self {
        Self {
            min_tone: Duration::from_millis(40),
            min_gap: Duration::from_millis(40),
            max_frequency_deviation: 0.025,
            max_normal_twist_db: 10.0,
            max_reverse_twist_db: 6.0,
            min_level_dbm0: -36.0,
            min_group_margin_db: 3.0,
            max_residual_db: -10.0,
            max_second_harmonic_db: -12.0,
            max_step_db: 3.0,
        }
    }
}

/// The configuration turned into what the per-window checks compare against.
#[derive(Debug, Clone)]
struct Thresholds {
    /// Window energy (sum of squares) of two tones at the level floor.
    min_window_energy: f64,
    /// Peak amplitude of a tone at the level floor.
    min_amplitude: f64,
    /// Power ratio of the strongest frequency of a group to any other of the group.
    group_margin: f64,
    /// Largest frequency error, as a fraction of nominal.
    max_deviation: f64,
    /// Largest ratio low/high amplitude.
    normal_twist: f64,
    /// Largest ratio high/low amplitude.
    reverse_twist: f64,
    /// Largest residual energy as a fraction of the window energy.
    residual: f64,
    /// Largest second-harmonic amplitude as a fraction of its tone.
    harmonic: f64,
    /// Largest amplitude ratio between the halves of a window.
    step: f64,
    /// Consecutive hits that make a press.
    hits_to_begin: u32,
    /// Consecutive windows without the key that end a press.
    misses_to_end: u32,
}

fn db_to_amplitude(db: f64) -> f64 {
    10f64.powf(db / 20.0)
}

/// Windows counted in `n` hops, saturating into `u32`.
fn to_count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Thresholds {
    fn new(c: &InbandConfig) -> Self {
        let min_amplitude = DBM0_PEAK * db_to_amplitude(c.min_level_dbm0);
        // A span of n samples holds at least floor((n + 1) / HOP) - 1 whole hops, whatever
        // its alignment; these are that number plus one.
        let tone_hops = g711::samples_in(c.min_tone).saturating_add(1) / HOP;
        let gap_hops = g711::samples_in(c.min_gap).saturating_add(1) / HOP;
        Self {
            // Two tones of peak amplitude A hold WINDOW × A² / 2 each.
            min_window_energy: WINDOW as f64 * min_amplitude * min_amplitude,
            min_amplitude,
            group_margin: 10f64.powf(c.min_group_margin_db / 10.0),
            max_deviation: c.max_frequency_deviation,
            normal_twist: db_to_amplitude(c.max_normal_twist_db),
            reverse_twist: db_to_amplitude(c.max_reverse_twist_db),
            residual: 10f64.powf(c.max_residual_db / 10.0),
            harmonic: db_to_amplitude(c.max_second_harmonic_db),
            step: db_to_amplitude(c.max_step_db),
            // The shortest tone's whole hops (tone_hops - 1) make tone_hops - 2 whole windows;
            // one is kept spare for noise.
            hits_to_begin: to_count(tone_hops.saturating_sub(3).max(1)),
            // The shortest pause's whole silent hops (gap_hops - 1) each spoil the two windows
            // holding them: gap_hops windows in a row miss.
            misses_to_end: to_count(gap_hops.max(1)),
        }
    }
}

/// A complex number, for DFT bins.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Complex {
    re: f64,
    im: f64,
}

impl Complex {
    const fn new(re: f64, im: f64) -> Self {
        Self { re, im }
    }

    /// e^(jθ).
    fn expj(theta: f64) -> Self {
        Self::new(theta.cos(), theta.sin())
    }

    fn mul(self, o: Self) -> Self {
        Self::new(
            self.re * o.re - self.im * o.im,
            self.re * o.im + self.im * o.re,
        )
    }

    fn conj(self) -> Self {
        Self::new(self.re, -self.im)
    }

    fn add(self, o: Self) -> Self {
        Self::new(self.re + o.re, self.im + o.im)
    }

    fn norm_sqr(self) -> f64 {
        self.re * self.re + self.im * self.im
    }

    fn arg(self) -> f64 {
        self.im.atan2(self.re)
    }
}

/// DFT kernels, computed once for all detectors.
struct Kernels {
    /// e^(-jωn) for n in one hop, per frequency: the rectangular DFT of a hop.
    hop: [[Complex; HOP]; 8],
    /// e^(-jωH): moves a hop's DFT to the time origin of the hop before it.
    hop_shift: [Complex; 8],
    /// w(n)·e^(-jωn) over a window, w the periodic Hann window, per frequency.
    hann: [[Complex; WINDOW]; 8],
}

static KERNELS: LazyLock<Kernels> = LazyLock::new(|| {
    let omega = |i: usize| 2.0 * PI * FREQUENCIES[i] / SAMPLE_RATE;
    let mut k = Kernels {
        hop: [[Complex::default(); HOP]; 8],
        hop_shift: [Complex::default(); 8],
        hann: [[Complex::default(); WINDOW]; 8],
    };
    for i in 0..8 {
        for (n, c) in k.hop[i].iter_mut().enumerate() {
            *c = Complex::expj(-omega(i) * n as f64);
        }
        k.hop_shift[i] = Complex::expj(-omega(i) * HOP as f64);
        for (n, c) in k.hann[i].iter_mut().enumerate() {
            let w = 0.5 - 0.5 * (2.0 * PI * n as f64 / WINDOW as f64).cos();
            let e = Complex::expj(-omega(i) * n as f64);
            *c = Complex::new(w * e.re, w * e.im);
        }
    }
    k
});

/// Why a window is not a hit. Only tests look at the reason; the detector only needs to know
/// there was none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reject {
    /// Less energy than two tones at the level floor.
    Quiet,
    /// A group's strongest frequency does not stand out from the rest of its group.
    Dominance,
    /// A tone is further from its nominal frequency than allowed.
    Frequency,
    /// The least-squares fit failed (degenerate; cannot happen for real frequencies).
    Fit,
    /// A tone is below the level floor.
    Level,
    /// The tones' levels differ by more than the twist allowed.
    Twist,
    /// A tone's amplitude changes within the window.
    Unsteady,
    /// The two tones do not hold enough of the window's energy.
    Residual,
    /// A tone has a second harmonic.
    Harmonic,
}

/// Where recognition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// The key the consecutive hits were for.
    digit: Digit,
    /// How many consecutive hits.
    hits: u32,
}

/// DTMF detector for 8 kHz linear PCM.
///
/// Feed it samples with [`process`](Self::process); it reports each key press once, when
/// recognised. State is carried across calls, so chunk boundaries do not matter: any split of
/// the same samples gives the same events. See the [module documentation](self) for the
/// checks and the timing rules. `Debug` shows the state, never the samples (a key's tones
/// are its value).
#[derive(Clone)]
pub struct InbandDetector {
    limits: Thresholds,
    /// The last `HISTORY` samples; `filled` of them valid, newest at the end.
    history: [f64; HISTORY],
    filled: usize,
    /// Rectangular DFT of the previous hop at each frequency.
    previous_hop: [Complex; 8],
    /// Consecutive hits towards a press not yet reported.
    run: Option<Run>,
    /// The key held down, already reported.
    held: Option<Digit>,
    /// Consecutive windows without a hit of `held`.
    misses: u32,
}

impl fmt::Debug for InbandDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InbandDetector")
            .field("limits", &self.limits)
            .field("run", &self.run)
            .field("held", &self.held)
            .field("misses", &self.misses)
            .finish_non_exhaustive()
    }
}

impl InbandDetector {
    /// A detector for 8 kHz samples with the given thresholds.
    pub fn new(config: InbandConfig) -> Self {
        Self {
            limits: Thresholds::new(&config),
            history: [0.0; HISTORY],
            // Start as if preceded by silence: the first window ends after one hop.
            filled: WINDOW,
            previous_hop: [Complex::default(); 8],
            run: None,
            held: None,
            misses: 0,
        }
    }

    /// Feeds samples, in any chunk size; appends one [`DigitEvent`] (method
    /// [`DtmfMethod::InBand`], duration `Some`) for each key press recognised, exactly once
    /// per press.
    ///
    /// The duration is the steady tone heard when the press was recognised, not the time the
    /// key was held (see the module documentation). Never panics.
    pub fn process(&mut self, samples: &[i16], out: &mut Vec<DigitEvent>) {
        self.feed(samples, out, |_| ());
    }

    /// [`process`](Self::process), showing each window's outcome to `observe` (for tests).
    fn feed(
        &mut self,
        samples: &[i16],
        out: &mut Vec<DigitEvent>,
        mut observe: impl FnMut(Result<Digit, Reject>),
    ) {
        let mut rest = samples;
        while !rest.is_empty() {
            let room = HISTORY - self.filled;
            let (now, later) = rest.split_at(room.min(rest.len()));
            for (slot, &s) in self.history[self.filled..].iter_mut().zip(now) {
                *slot = f64::from(s);
            }
            self.filled += now.len();
            rest = later;
            if self.filled == HISTORY {
                let outcome = self.analyse();
                observe(outcome);
                if let Some(event) = self.track(outcome.ok()) {
                    out.push(event);
                }
                self.history.copy_within(HOP.., 0);
                self.filled = WINDOW;
            }
        }
    }

    /// Forgets all state, as if newly created: the next samples are taken to follow silence.
    ///
    /// Call it when the audio is discontinuous (a new stream, a re-INVITE to another source).
    pub fn reset(&mut self) {
        self.history = [0.0; HISTORY];
        self.filled = WINDOW;
        self.previous_hop = [Complex::default(); 8];
        self.run = None;
        self.held = None;
        self.misses = 0;
    }

    /// Updates recognition with one window's outcome; returns the press it completes.
    fn track(&mut self, hit: Option<Digit>) -> Option<DigitEvent> {
        if self.held.is_some() && self.held == hit {
            // The key is still down, whatever dropouts came before.
            self.misses = 0;
            self.run = None;
            return None;
        }
        if self.held.is_some() {
            self.misses = self.misses.saturating_add(1);
            if self.misses >= self.limits.misses_to_end {
                self.held = None;
                self.misses = 0;
            }
        }
        let Some(digit) = hit else {
            self.run = None;
            return None;
        };
        let hits = match self.run {
            Some(run) if run.digit == digit => run.hits.saturating_add(1),
            _ => 1,
        };
        self.run = Some(Run { digit, hits });
        if hits < self.limits.hits_to_begin {
            return None;
        }
        // A press of another key ends the one held (it never reaches here for the held key).
        self.held = Some(digit);
        self.misses = 0;
        self.run = None;
        // `hits` whole windows span `hits + 1` hops; a hop is 53 × 125 µs.
        let micros = u64::from(hits).saturating_add(1) * HOP as u64 * 125;
        Some(DigitEvent {
            digit,
            method: DtmfMethod::InBand,
            duration: Some(Duration::from_micros(micros)),
        })
    }

    /// Runs the checks on the window that the newest hop completes.
    fn analyse(&mut self) -> Result<Digit, Reject> {
        let k = &*KERNELS;
        let limits = &self.limits;
        let newest = &self.history[WINDOW..];
        let window = &self.history[HOP..];
        let earlier = &self.history[..WINDOW];

        // The newest hop's DFT is needed by the next window whatever happens to this one.
        let mut hop = [Complex::default(); 8];
        for (bin, kernel) in hop.iter_mut().zip(&k.hop) {
            *bin = dot(newest, kernel);
        }
        let previous = std::mem::replace(&mut self.previous_hop, hop);

        // 1. Energy.
        let energy: f64 = window.iter().map(|x| x * x).sum();
        if !at_most(limits.min_window_energy, energy) {
            return Err(Reject::Quiet);
        }

        // 2. Group dominance, on the rectangular DFT of the window put together from its
        // two hops.
        let mut power = [0.0; 8];
        for i in 0..8 {
            power[i] = previous[i].add(k.hop_shift[i].mul(hop[i])).norm_sqr();
        }
        let low = strongest(&power[..4], limits.group_margin).ok_or(Reject::Dominance)?;
        let high = 4 + strongest(&power[4..], limits.group_margin).ok_or(Reject::Dominance)?;

        // 3. Frequency, from the phase advance over one hop. A tone at ω0 + Δω advances by
        // (ω0 + Δω)·H between windows a hop apart; Δω is unambiguous for |Δf| < 75 Hz,
        // which covers 3.5 % of 1633 Hz, and tones further off fail the fit below. In the
        // first window of a tone the window before holds only part of it, which biases the
        // measurement towards nominal; the windows after measure true, and a press needs 3.
        let mut omega = [0.0; 2];
        for (slot, i) in omega.iter_mut().zip([low, high]) {
            let now = dot(window, &k.hann[i]);
            let before = dot(earlier, &k.hann[i]);
            let advance = now.mul(before.conj()).mul(k.hop_shift[i]).arg();
            let deviation = advance / HOP as f64 * SAMPLE_RATE / (2.0 * PI);
            if !at_most(deviation.abs(), limits.max_deviation * FREQUENCIES[i]) {
                return Err(Reject::Frequency);
            }
            *slot = 2.0 * PI * (FREQUENCIES[i] + deviation) / SAMPLE_RATE;
        }

        // 4. Fit, 5. level and twist, 6. steadiness, 7. residual, 8. harmonics.
        let fit = TwoTones::fit(window, omega).ok_or(Reject::Fit)?;
        let [a_low, a_high] = fit.amplitude;
        if !(at_most(limits.min_amplitude, a_low) && at_most(limits.min_amplitude, a_high)) {
            return Err(Reject::Level);
        }
        if !(at_most(a_low, a_high * limits.normal_twist)
            && at_most(a_high, a_low * limits.reverse_twist))
        {
            return Err(Reject::Twist);
        }
        for (&first, &second) in fit.first_half.iter().zip(&fit.second_half) {
            if !(at_most(first, second * limits.step) && at_most(second, first * limits.step)) {
                return Err(Reject::Unsteady);
            }
        }
        if !at_most(fit.residual, limits.residual * energy) {
            return Err(Reject::Residual);
        }
        for (&harmonic, &amplitude) in fit.harmonic.iter().zip(&fit.amplitude) {
            if !at_most(harmonic, limits.harmonic * amplitude) {
                return Err(Reject::Harmonic);
            }
        }
        let code = KEY_CODES[low][high - 4];
        Digit::from_event(code).ok_or(Reject::Fit)
    }
}

/// `value ≤ limit`, and false if either is NaN, so a nonsense threshold accepts nothing.
fn at_most(value: f64, limit: f64) -> bool {
    value <= limit
}

/// Σ x(n)·kernel(n).
fn dot(x: &[f64], kernel: &[Complex]) -> Complex {
    let (mut re, mut im) = (0.0, 0.0);
    for (x, k) in x.iter().zip(kernel) {
        re += x * k.re;
        im += x * k.im;
    }
    Complex::new(re, im)
}

/// The index of the largest of `power` if it exceeds every other by `margin`.
fn strongest(power: &[f64], margin: f64) -> Option<usize> {
    let (best, &top) = power.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
    let dominates = power
        .iter()
        .enumerate()
        .all(|(i, &p)| i == best || top >= p * margin);
    (dominates && top > 0.0).then_some(best)
}

/// Two sinusoids fitted by least squares to a window, at given frequencies.
#[derive(Debug, Clone, PartialEq)]
struct TwoTones {
    /// Peak amplitude of each tone over the whole window.
    amplitude: [f64; 2],
    /// Peak amplitude of each tone over the first half of the window.
    first_half: [f64; 2],
    /// Peak amplitude of each tone over the second half.
    second_half: [f64; 2],
    /// Energy (sum of squares) left after subtracting the whole-window fit.
    residual: f64,
    /// Amplitude of the residual at twice each tone's frequency.
    harmonic: [f64; 2],
}

impl TwoTones {
    /// Fits `a·cos ω₀t + b·sin ω₀t + c·cos ω₁t + d·sin ω₁t` to `x` (a whole window).
    ///
    /// Time is measured from the window's centre, which keeps the basis close to orthogonal.
    /// `None` if the normal equations are singular, which needs the frequencies to coincide
    /// or sit at 0 or 4 kHz: never for frequencies that passed the checks before.
    fn fit(x: &[f64], omega: [f64; 2]) -> Option<Self> {
        let centre = (WINDOW as f64 - 1.0) / 2.0;
        let step = omega.map(Complex::expj);
        let mut phasor = omega.map(|w| Complex::expj(-w * centre));
        let mut basis = [[0.0; 4]; WINDOW];
        let mut halves = [NormalEquations::default(), NormalEquations::default()];
        for (n, (row, &sample)) in basis.iter_mut().zip(x).enumerate() {
            *row = [phasor[0].re, phasor[0].im, phasor[1].re, phasor[1].im];
            halves[n / HOP].add(row, sample);
            phasor[0] = phasor[0].mul(step[0]);
            phasor[1] = phasor[1].mul(step[1]);
        }
        let [first, second] = halves;
        let whole = first.clone().plus(&second);
        let coefficients = whole.solve()?;
        let amplitudes = |c: [f64; 4]| [c[0].hypot(c[1]), c[2].hypot(c[3])];

        let mut residual = 0.0;
        let mut harmonic = [Complex::default(); 2];
        for (row, &sample) in basis.iter().zip(x) {
            let model: f64 = row.iter().zip(&coefficients).map(|(b, c)| b * c).sum();
            let r = sample - model;
            residual += r * r;
            // cos 2θ = cos²θ - sin²θ, sin 2θ = 2 sinθ cosθ: the second harmonic's phasor.
            for (h, (c, s)) in harmonic
                .iter_mut()
                .zip([(row[0], row[1]), (row[2], row[3])])
            {
                h.re += r * (c * c - s * s);
                h.im += r * (2.0 * s * c);
            }
        }
        Some(Self {
            amplitude: amplitudes(coefficients),
            first_half: amplitudes(first.solve()?),
            second_half: amplitudes(second.solve()?),
            residual,
            // A sinusoid of peak A gives a DFT magnitude of A·N/2.
            harmonic: harmonic.map(|h| 2.0 * h.norm_sqr().sqrt() / WINDOW as f64),
        })
    }
}

/// The normal equations `BᵀB·c = Bᵀx` of a four-column least-squares problem.
#[derive(Debug, Clone, Default, PartialEq)]
struct NormalEquations {
    gram: [[f64; 4]; 4],
    rhs: [f64; 4],
}

impl NormalEquations {
    fn add(&mut self, row: &[f64; 4], x: f64) {
        for (i, &bi) in row.iter().enumerate() {
            for (j, &bj) in row.iter().enumerate() {
                self.gram[i][j] += bi * bj;
            }
            self.rhs[i] += bi * x;
        }
    }

    fn plus(mut self, other: &Self) -> Self {
        for (a, b) in self
            .gram
            .iter_mut()
            .flatten()
            .zip(other.gram.iter().flatten())
        {
            *a += b;
        }
        for (a, b) in self.rhs.iter_mut().zip(&other.rhs) {
            *a += b;
        }
        self
    }

    /// Gaussian elimination with partial pivoting; `None` if singular.
    fn solve(&self) -> Option<[f64; 4]> {
        let mut m = self.gram;
        let mut v = self.rhs;
        // The Gram matrix's diagonal is about n/2 for n samples; a pivot a million times
        // smaller means two columns are (numerically) the same.
        let tiny = 1e-6 * m[0][0].abs().max(m[2][2].abs()).max(1e-300);
        for col in 0..4 {
            let pivot = (col..4).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
            if m[pivot][col].abs() <= tiny || !m[pivot][col].is_finite() {
                return None;
            }
            m.swap(col, pivot);
            v.swap(col, pivot);
            let pivot_row = m[col];
            for row in col + 1..4 {
                let f = m[row][col] / pivot_row[col];
                for (a, p) in m[row][col..].iter_mut().zip(&pivot_row[col..]) {
                    *a -= f * p;
                }
                v[row] -= f * v[col];
            }
        }
        let mut c = [0.0; 4];
        for row in (0..4).rev() {
            let tail: f64 = (row + 1..4).map(|k| m[row][k] * c[k]).sum();
            c[row] = (v[row] - tail) / m[row][row];
        }
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64: seeded noise, reproducible, without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in (0, 1].
        fn uniform(&mut self) -> f64 {
            ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
        }

        /// Standard normal (Box-Muller).
        fn gaussian(&mut self) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// The nominal (low, high) frequencies of a key.
    fn key_frequencies(key: char) -> (f64, f64) {
        let code = Digit::from_char(key).unwrap().event_code();
        for (row, codes) in KEY_CODES.iter().enumerate() {
            for (col, &c) in codes.iter().enumerate() {
                if c == code {
                    return (FREQUENCIES[row], FREQUENCIES[4 + col]);
                }
            }
        }
        unreachable!("every key has frequencies")
    }

    /// Peak amplitude of a sine at `level` dBm0.
    fn dbm0(level: f64) -> f64 {
        DBM0_PEAK * 10f64.powf(level / 20.0)
    }

    /// Peak amplitude of a sine at `level` dBFS (0 dBFS: a sine peaking at 16-bit full scale).
    fn dbfs(level: f64) -> f64 {
        32767.0 * 10f64.powf(level / 20.0)
    }

    /// Milliseconds to samples.
    fn ms(ms: f64) -> usize {
        (ms * 8.0).round() as usize
    }

    /// A test signal, built segment by segment in floating point.
    #[derive(Default, Clone)]
    struct Signal {
        samples: Vec<f64>,
        /// Mean power of the quietest tone pair added, for SNR.
        tone_power: Option<f64>,
    }

    impl Signal {
        fn silence(mut self, duration_ms: f64) -> Self {
            self.samples
                .extend(std::iter::repeat_n(0.0, ms(duration_ms)));
            self
        }

        /// Two sines of peak amplitudes `a_low`, `a_high`. The phases depend on where the
        /// segment starts, so bursts do not all start alike.
        fn pair(mut self, f_low: f64, f_high: f64, a_low: f64, a_high: f64, ms_: f64) -> Self {
            let start = self.samples.len();
            let (p0, p1) = (start as f64 * 0.37, start as f64 * 1.13);
            for n in 0..ms(ms_) {
                let t = n as f64 / SAMPLE_RATE;
                self.samples.push(
                    a_low * (2.0 * PI * f_low * t + p0).sin()
                        + a_high * (2.0 * PI * f_high * t + p1).sin(),
                );
            }
            let power = (a_low * a_low + a_high * a_high) / 2.0;
            self.tone_power = Some(self.tone_power.map_or(power, |p| p.min(power)));
            self
        }

        /// `key` with both tones at `level` dBm0.
        fn key(self, key: char, level: f64, duration_ms: f64) -> Self {
            let (lo, hi) = key_frequencies(key);
            self.pair(lo, hi, dbm0(level), dbm0(level), duration_ms)
        }

        /// Keys `on` ms each, `off` ms apart, then `off` ms of silence.
        fn keys(mut self, keys: &str, level: f64, on: f64, off: f64) -> Self {
            for key in keys.chars() {
                self = self.key(key, level, on).silence(off);
            }
            self
        }

        /// White Gaussian noise `snr` dB below the quietest tone pair (over the whole band).
        fn noise(mut self, snr: f64, seed: u64) -> Self {
            let sigma = (self.tone_power.unwrap_or(0.0) / 10f64.powf(snr / 10.0)).sqrt();
            let mut rng = Rng(seed);
            for s in &mut self.samples {
                *s += sigma * rng.gaussian();
            }
            self
        }

        fn pcm(&self) -> Vec<i16> {
            self.samples
                .iter()
                .map(|s| s.round().clamp(-32768.0, 32767.0) as i16)
                .collect()
        }
    }

    fn detect_with(config: InbandConfig, samples: &[i16]) -> Vec<DigitEvent> {
        let mut detector = InbandDetector::new(config);
        let mut out = Vec::new();
        for chunk in samples.chunks(160) {
            detector.process(chunk, &mut out);
        }
        out
    }

    fn detect(samples: &[i16]) -> Vec<DigitEvent> {
        detect_with(InbandConfig::default(), samples)
    }

    /// The keys of `events`, revealed (tests only).
    fn keys(events: &[DigitEvent]) -> String {
        events.iter().map(|e| e.digit.reveal()).collect()
    }

    /// Every window's outcome.
    fn trace(samples: &[i16]) -> Vec<Result<Digit, Reject>> {
        let mut detector = InbandDetector::new(InbandConfig::default());
        let mut outcomes = Vec::new();
        detector.feed(samples, &mut Vec::new(), |o| outcomes.push(o));
        outcomes
    }

    /// G.711 μ-law encode, 16-bit linear in (ITU-T G.711 Table 2, with the usual bias of 0x84).
    fn ulaw_encode(x: i16) -> u8 {
        let sign = if x < 0 { 0x80 } else { 0 };
        let magnitude = (i32::from(x).abs().min(32635) + 0x84) as u32;
        let exponent = (31 - magnitude.leading_zeros()).saturating_sub(7).min(7);
        let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
        !(sign | (exponent << 4) as u8 | mantissa as u8)
    }

    /// G.711 μ-law decode to 16-bit linear.
    fn ulaw_decode(byte: u8) -> i16 {
        let b = !byte;
        let exponent = u32::from((b >> 4) & 0x07);
        let mantissa = i32::from(b & 0x0F);
        let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
        (if b & 0x80 != 0 { -magnitude } else { magnitude }) as i16
    }

    fn ulaw(samples: &[i16]) -> Vec<i16> {
        samples
            .iter()
            .map(|&s| ulaw_decode(ulaw_encode(s)))
            .collect()
    }

    /// Talk-off fixtures: synthetic speech, 8 kHz mono 16-bit, 82 s in all.
    ///
    /// Made by `tests/fixtures/speech/generate.sh` (espeak-ng 1.51, sox 14.4.2); rerunning it
    /// gives the same bytes. Each file is one
    ///
    /// ```text
    /// espeak-ng -v VOICE -s WPM -p PITCH -w /tmp/vportal-speech.wav "TEXT"
    /// sox -D /tmp/vportal-speech.wav -r 8000 -c 1 -b 16 -e signed-integer FILE norm -1
    /// ```
    ///
    /// | file | voice | wpm | pitch | text |
    /// |---|---|---|---|---|
    /// | en-us_digits.wav | en-us | 160 | 50 | "one two three … nine zero. star, pound. zero nine eight … one. oh oh seven, nine one one." |
    /// | en-gb_digits.wav | en-gb | 150 | 40 | "nine eight … one nought. double four, treble seven. one two … eleven twelve." |
    /// | en-us-f3_digits.wav | en-us+f3 | 170 | 70 | "four four five one, two two eight three, … six six six, seven seven seven." |
    /// | en-us-f4_vowels.wav | en-us+f4 | 110 | 99 | "oooooh, eeeeee, weeeee, whooooo, … loo loo loo, dee dee dee." |
    /// | en-us-f2_prompt.wav | en-us+f2 | 150 | 85 | "Please enter your mailbox number, followed by the pound key. …" |
    /// | en-us-m3_whistle.wav | en-us+m3 | 90 | 99 | "whee, whoo, tweet tweet, peep peep, eeeee, ooooo, uuuuu, beep boop beep." |
    /// | de_ziffern.wav | de | 150 | 55 | "eins zwei drei … neun null. Stern, Raute. …" |
    /// | fr_chiffres.wav | fr | 150 | 60 | "un deux trois … neuf zero. etoile, diese. …" |
    /// | es_digitos.wav | es | 150 | 60 | "uno dos tres … nueve cero. asterisco, almohadilla. …" |
    /// | it-f5_cifre.wav | it+f5 | 150 | 90 | "uno due tre … nove zero. cancelletto, asterisco." |
    ///
    /// The full texts are in the script. High pitches (f4, m3 at 99) with long "ee"/"oo"
    /// vowels are the nearest espeak-ng comes to whistling: few, strong, steady harmonics.
    const SPEECH_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/speech");

    /// Every speech fixture, by file name.
    fn speech() -> Vec<(String, Vec<i16>)> {
        let mut files: Vec<_> = std::fs::read_dir(SPEECH_DIR)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wav"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| {
                let mut reader = hound::WavReader::open(path).unwrap();
                let spec = reader.spec();
                assert_eq!(
                    (spec.sample_rate, spec.channels, spec.bits_per_sample),
                    (8000, 1, 16)
                );
                let samples = reader.samples::<i16>().map(Result::unwrap).collect();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, samples)
            })
            .collect()
    }

    /// `samples` scaled by `gain_db`, clipped to 16 bits.
    fn gain(samples: &[i16], gain_db: f64) -> Vec<i16> {
        let g = 10f64.powf(gain_db / 20.0);
        samples
            .iter()
            .map(|&s| (f64::from(s) * g).round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    }

    /// `samples` with white noise `snr` dB below their mean power.
    fn with_noise(samples: &[i16], snr: f64, seed: u64) -> Vec<i16> {
        let power =
            samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64;
        let sigma = (power / 10f64.powf(snr / 10.0)).sqrt();
        let mut rng = Rng(seed);
        samples
            .iter()
            .map(|&s| {
                (f64::from(s) + sigma * rng.gaussian())
                    .round()
                    .clamp(-32768.0, 32767.0) as i16
            })
            .collect()
    }

    /// Each fixture as heard: as generated, through μ-law, louder and clipped, quieter, and
    /// with noise.
    fn speech_variants() -> Vec<(String, Vec<i16>)> {
        let mut all = Vec::new();
        for (name, pcm) in speech() {
            all.push((format!("{name} ulaw"), ulaw(&pcm)));
            all.push((format!("{name} +6dB clipped ulaw"), ulaw(&gain(&pcm, 6.0))));
            all.push((format!("{name} -20dB ulaw"), ulaw(&gain(&pcm, -20.0))));
            all.push((
                format!("{name} 20dB SNR ulaw"),
                ulaw(&with_noise(&pcm, 20.0, 7)),
            ));
            all.push((
                format!("{name} 10dB SNR ulaw"),
                ulaw(&with_noise(&pcm, 10.0, 8)),
            ));
            all.push((name, pcm));
        }
        all
    }

    const ALL_KEYS: &str = "123A456B789C*0#D";

    /// Asserts `events` are exactly `expected`, all in-band with a duration.
    fn assert_keys(events: &[DigitEvent], expected: &str, context: &str) {
        assert_eq!(keys(events), expected, "{context}");
        for e in events {
            assert_eq!(e.method, DtmfMethod::InBand, "{context}");
            assert!(e.duration.is_some(), "{context}");
        }
    }

    #[test]
    fn every_key_at_every_snr_and_duration_is_one_event() {
        let mut rng = Rng(1);
        for key in ALL_KEYS.chars() {
            for snr in [f64::INFINITY, 30.0, 20.0, 15.0] {
                for on in [40.0, 60.0, 100.0, 500.0] {
                    // A random lead-in, so the tone falls anywhere against the hops.
                    let lead = 20.0 + rng.below(HOP * 4) as f64 / 8.0;
                    let signal = Signal::default()
                        .silence(lead)
                        .key(key, -10.0, on)
                        .silence(100.0)
                        .noise(snr, rng.next_u64());
                    let events = detect(&signal.pcm());
                    let context = format!("key {key} snr {snr} on {on} ms lead {lead} ms");
                    assert_keys(&events, &key.to_string(), &context);
                    let held = events[0].duration.unwrap();
                    assert!(held >= Duration::from_micros(26_500), "{context}: {held:?}");
                    assert!(
                        held <= Duration::from_secs_f64(on / 1000.0),
                        "{context}: {held:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_key_through_mu_law() {
        for key in ALL_KEYS.chars() {
            for level in [-30.0, -20.0, -10.0, 0.0] {
                let signal = Signal::default()
                    .silence(20.0)
                    .key(key, level, 45.0)
                    .silence(60.0);
                assert_keys(
                    &detect(&ulaw(&signal.pcm())),
                    &key.to_string(),
                    &format!("{key} {level} dBm0"),
                );
            }
        }
    }

    #[test]
    fn reported_duration_is_the_tone_heard_at_recognition() {
        let signal = Signal::default()
            .silence(40.0)
            .key('7', -10.0, 2000.0)
            .silence(60.0);
        let events = detect(&signal.pcm());
        assert_keys(&events, "7", "long press");
        // Three hits span four hops: 4 × 53 samples.
        assert_eq!(
            events[0].duration,
            Some(Duration::from_micros(4 * 53 * 125))
        );
    }

    #[test]
    fn all_sixteen_keys_in_sequence() {
        for lead in [0.0, 1.0, 3.3, 5.0] {
            let signal = Signal::default()
                .silence(lead)
                .keys("1234567890*#ABCD", -8.0, 50.0, 50.0);
            assert_keys(
                &detect(&signal.pcm()),
                "1234567890*#ABCD",
                &format!("lead {lead}"),
            );
            let noisy = signal.noise(15.0, 3);
            assert_keys(
                &detect(&noisy.pcm()),
                "1234567890*#ABCD",
                &format!("lead {lead} at 15 dB SNR"),
            );
        }
    }

    /// Repeated keys with Q.24's shortest cycle, at every alignment against the hops.
    #[test]
    fn repeated_keys_with_40ms_gaps_are_all_counted() {
        for keys_ in ["1001", "1122", "5555", "##**", "DDDD"] {
            for on in [40.0, 50.0] {
                for lead in 0..HOP {
                    let signal = Signal::default()
                        .silence(lead as f64 / 8.0)
                        .keys(keys_, -10.0, on, 40.0);
                    let context = format!("{keys_} on {on} ms lead {lead} samples");
                    assert_keys(&detect(&signal.pcm()), keys_, &context);
                }
            }
        }
    }

    #[test]
    fn short_tones_are_rejected_at_every_alignment() {
        for key in ALL_KEYS.chars() {
            for on in [10.0, 20.0, 22.5] {
                for lead in (0..HOP).step_by(2) {
                    let signal = Signal::default()
                        .silence(10.0 + lead as f64 / 8.0)
                        .key(key, -5.0, on)
                        .silence(60.0);
                    let context = format!("key {key} on {on} ms lead {lead}");
                    assert_keys(&detect(&signal.pcm()), "", &context);
                }
            }
        }
    }

    /// The boundary: 33 ms and more always count, whatever the alignment; in between
    /// (22.7-33 ms) it depends on alignment.
    #[test]
    fn tones_of_33ms_and_more_count_at_every_alignment() {
        for key in "19*D".chars() {
            for on in [33.0, 40.0] {
                for lead in 0..HOP {
                    let signal = Signal::default()
                        .silence(10.0 + lead as f64 / 8.0)
                        .key(key, -5.0, on)
                        .silence(60.0);
                    let context = format!("key {key} on {on} ms lead {lead}");
                    assert_keys(&detect(&signal.pcm()), &key.to_string(), &context);
                }
            }
        }
    }

    /// A pause of 20 ms or less inside a press does not split it; 40 ms or more always does.
    /// Pauses in between (about 27-33 ms) split or not depending on alignment.
    #[test]
    fn gaps_split_a_press_only_from_40ms() {
        for lead in 0..HOP {
            for (gap, expected) in [
                (5.0, "8"),
                (10.0, "8"),
                (20.0, "8"),
                (40.0, "88"),
                (45.0, "88"),
            ] {
                let signal = Signal::default()
                    .silence(10.0 + lead as f64 / 8.0)
                    .key('8', -10.0, 60.0)
                    .silence(gap)
                    .key('8', -10.0, 60.0)
                    .silence(60.0);
                let context = format!("gap {gap} ms lead {lead}");
                assert_keys(&detect(&signal.pcm()), expected, &context);
            }
        }
    }

    #[test]
    fn a_long_press_is_one_digit_whatever_its_length() {
        for seconds in [1.0, 5.0] {
            let signal = Signal::default()
                .silence(10.0)
                .key('0', -10.0, seconds * 1000.0)
                .silence(60.0)
                .noise(15.0, 11);
            assert_keys(&detect(&signal.pcm()), "0", &format!("{seconds} s"));
        }
    }

    #[test]
    fn another_key_without_a_pause_is_a_new_press() {
        let signal = Signal::default()
            .silence(10.0)
            .key('1', -10.0, 60.0)
            .key('2', -10.0, 60.0)
            .key('1', -10.0, 60.0)
            .silence(60.0);
        assert_keys(&detect(&signal.pcm()), "121", "back to back");
    }

    /// Both tones off by `low` and `high` (fractions of nominal).
    fn shifted(key: char, low: f64, high: f64, snr: f64) -> Vec<i16> {
        let (lo, hi) = key_frequencies(key);
        let a = dbm0(-10.0);
        Signal::default()
            .silence(20.0)
            .pair(lo * (1.0 + low), hi * (1.0 + high), a, a, 60.0)
            .silence(60.0)
            .noise(snr, 5)
            .pcm()
    }

    #[test]
    fn tones_within_1_5_percent_are_detected() {
        for key in ALL_KEYS.chars() {
            for (low, high) in [
                (0.015, 0.015),
                (-0.015, -0.015),
                (0.015, -0.015),
                (-0.015, 0.015),
            ] {
                for snr in [f64::INFINITY, 20.0] {
                    let context = format!("key {key} off by {low}/{high} snr {snr}");
                    assert_keys(
                        &detect(&shifted(key, low, high, snr)),
                        &key.to_string(),
                        &context,
                    );
                }
            }
        }
    }

    #[test]
    fn tones_off_by_3_5_percent_or_more_are_rejected() {
        for key in ALL_KEYS.chars() {
            for off in [0.035, 0.04, 0.05, 0.06] {
                for sign in [1.0, -1.0] {
                    let d = sign * off;
                    for (low, high) in [(d, 0.0), (0.0, d), (d, d), (d, -d)] {
                        let context = format!("key {key} off by {low}/{high}");
                        let pcm = shifted(key, low, high, f64::INFINITY);
                        assert_keys(&detect(&pcm), "", &context);
                        // Rejected by measurement, not by luck: every window that holds
                        // the tone fails, bar at most the first (whose phase reference, the
                        // window before, holds only part of the tone), and fails on
                        // frequency (or, half-way between two tones, on dominance).
                        let outcomes = trace(&pcm);
                        let hits = outcomes.iter().filter(|o| o.is_ok()).count();
                        let wrong_frequency = outcomes
                            .iter()
                            .filter(|o| matches!(o, Err(Reject::Frequency | Reject::Dominance)))
                            .count();
                        assert!(hits <= 1 && wrong_frequency >= 6, "{context}: {outcomes:?}");
                    }
                }
            }
        }
    }

    /// The high-group tone `twist` dB above the low-group one (negative: normal twist).
    fn twisted(key: char, twist: f64) -> Vec<i16> {
        let (lo, hi) = key_frequencies(key);
        // The louder tone at -6 dBm0.
        let (low_level, high_level) = if twist > 0.0 {
            (-6.0 - twist, -6.0)
        } else {
            (-6.0, -6.0 + twist)
        };
        Signal::default()
            .silence(20.0)
            .pair(lo, hi, dbm0(low_level), dbm0(high_level), 60.0)
            .silence(60.0)
            .pcm()
    }

    #[test]
    fn twist_up_to_8db_normal_and_4db_reverse_is_accepted() {
        for key in ALL_KEYS.chars() {
            for twist in [4.0, -8.0] {
                let context = format!("key {key} twist {twist} dB");
                assert_keys(&detect(&twisted(key, twist)), &key.to_string(), &context);
                assert_keys(
                    &detect(&ulaw(&twisted(key, twist))),
                    &key.to_string(),
                    &context,
                );
            }
        }
    }

    #[test]
    fn twist_of_14db_normal_or_8db_reverse_is_rejected() {
        for key in ALL_KEYS.chars() {
            for twist in [8.0, -14.0] {
                let context = format!("key {key} twist {twist} dB");
                assert_keys(&detect(&twisted(key, twist)), "", &context);
                let outcomes = trace(&twisted(key, twist));
                assert!(!outcomes.iter().any(Result::is_ok), "{context}");
                assert!(outcomes.contains(&Err(Reject::Twist)), "{context}");
            }
        }
    }

    #[test]
    fn levels_from_minus_30_dbm0_to_full_scale() {
        for key in ALL_KEYS.chars() {
            let (lo, hi) = key_frequencies(key);
            // Two tones at -6 dBFS each: their sum peaks at full scale.
            let loud = Signal::default()
                .silence(20.0)
                .pair(lo, hi, dbfs(-6.03), dbfs(-6.03), 50.0)
                .silence(60.0);
            assert_keys(
                &detect(&loud.pcm()),
                &key.to_string(),
                &format!("{key} full scale"),
            );
            let quiet = Signal::default()
                .silence(20.0)
                .key(key, -30.0, 50.0)
                .silence(60.0);
            assert_keys(
                &detect(&quiet.pcm()),
                &key.to_string(),
                &format!("{key} -30 dBm0"),
            );
            let faint = Signal::default()
                .silence(20.0)
                .key(key, -40.0, 50.0)
                .silence(60.0);
            assert_keys(&detect(&faint.pcm()), "", &format!("{key} -40 dBm0"));
        }
    }

    #[test]
    fn single_tones_and_near_misses_are_rejected() {
        let mut signal = Signal::default();
        for &f in &FREQUENCIES {
            signal = signal.pair(f, 0.0, dbm0(-6.0), 0.0, 200.0).silence(50.0);
        }
        // Two tones of one group, and a pair in the gap between rows.
        signal = signal
            .pair(697.0, 852.0, dbm0(-6.0), dbm0(-6.0), 200.0)
            .silence(50.0);
        signal = signal
            .pair(1209.0, 1477.0, dbm0(-6.0), dbm0(-6.0), 200.0)
            .silence(50.0);
        signal = signal
            .pair(733.0, 1270.0, dbm0(-6.0), dbm0(-6.0), 200.0)
            .silence(50.0);
        assert_keys(&detect(&signal.pcm()), "", "near misses");
    }

    /// A key with a third tone, or with its second harmonics, is not a key.
    #[test]
    fn impure_tones_are_rejected() {
        let (lo, hi) = key_frequencies('5');
        let a = dbm0(-10.0);
        let clean = Signal::default()
            .silence(20.0)
            .pair(lo, hi, a, a, 80.0)
            .silence(60.0);
        assert_keys(&detect(&clean.pcm()), "5", "clean");
        let mut third = clean.clone();
        let mut harmonics = clean.clone();
        for (n, (t, h)) in third
            .samples
            .iter_mut()
            .zip(&mut harmonics.samples)
            .enumerate()
        {
            let tau = n as f64 / SAMPLE_RATE;
            if *t != 0.0 {
                *t += 0.5 * a * (2.0 * PI * 2000.0 * tau).sin();
                *h += 0.3
                    * a
                    * ((2.0 * PI * 2.0 * lo * tau).sin() + (2.0 * PI * 2.0 * hi * tau).sin());
            }
        }
        assert_keys(&detect(&third.pcm()), "", "third tone at -6 dB");
        assert_keys(&detect(&harmonics.pcm()), "", "second harmonics at -10 dB");
        // Each for the reason it should be: the residual check alone would let harmonics
        // at -10 dB through (they hold under 10 % of the energy).
        assert!(trace(&third.pcm()).contains(&Err(Reject::Residual)));
        assert!(trace(&harmonics.pcm()).contains(&Err(Reject::Harmonic)));
        assert!(!trace(&harmonics.pcm()).iter().any(Result::is_ok));
    }

    #[test]
    fn reset_forgets_a_half_heard_press() {
        // 44 ms of tone always counts; 22 ms never does.
        let signal = Signal::default()
            .silence(10.0)
            .key('3', -10.0, 44.0)
            .silence(60.0)
            .pcm();
        let half = ms(10.0 + 22.0);
        let mut detector = InbandDetector::new(InbandConfig::default());
        let mut out = Vec::new();
        detector.process(&signal[..half], &mut out);
        detector.reset();
        detector.process(&signal[half..], &mut out);
        assert_keys(&out, "", "split by a reset");
        detector.reset();
        detector.process(&signal, &mut out);
        assert_keys(&out, "3", "whole");
    }

    #[test]
    fn configuration_sets_the_counts() {
        let limits = Thresholds::new(&InbandConfig::default());
        assert_eq!((limits.hits_to_begin, limits.misses_to_end), (3, 6));
        let odd = InbandConfig {
            min_tone: Duration::ZERO,
            min_gap: Duration::MAX,
            ..InbandConfig::default()
        };
        let limits = Thresholds::new(&odd);
        assert_eq!(limits.hits_to_begin, 1);
        assert!(limits.misses_to_end > 1_000_000);
        // Nonsense thresholds detect nothing, and do not panic.
        let nan = InbandConfig {
            max_residual_db: f64::NAN,
            ..InbandConfig::default()
        };
        let signal = Signal::default().key('1', -10.0, 100.0).pcm();
        assert_keys(&detect_with(nan, &signal), "", "NaN threshold");
    }

    /// Sweeps one tone of a key across its group with the other tone nominal: detected only
    /// within 3.5 % of a nominal frequency, as that frequency's key, and always within 1.5 %.
    #[test]
    fn frequency_sweep_detects_only_near_nominal() {
        let a = dbm0(-10.0);
        let sweeps = [
            // (swept group's nominal indices, range, the fixed tone, is the swept tone low)
            ((0..4), 600.0..1100.0, 1336.0, true),
            ((4..8), 1100.0..1800.0, 770.0, false),
        ];
        for (group, range, fixed, low) in sweeps {
            let mut f = range.start;
            while f < range.end {
                let (lo, hi) = if low { (f, fixed) } else { (fixed, f) };
                let signal = Signal::default()
                    .silence(20.0)
                    .pair(lo, hi, a, a, 60.0)
                    .silence(60.0);
                let found = keys(&detect(&signal.pcm()));
                let nearest = group
                    .clone()
                    .map(|i| (i, (f / FREQUENCIES[i] - 1.0).abs()))
                    .min_by(|x, y| x.1.total_cmp(&y.1))
                    .unwrap();
                let (row, col) = if low {
                    (nearest.0, 1)
                } else {
                    (1, nearest.0 - 4)
                };
                let key = Digit::from_event(KEY_CODES[row][col])
                    .unwrap()
                    .reveal()
                    .to_string();
                let context = format!("{lo} Hz + {hi} Hz");
                if nearest.1 <= 0.015 {
                    assert_eq!(found, key, "{context}");
                } else if nearest.1 >= 0.035 {
                    assert_eq!(found, "", "{context}");
                } else {
                    assert!(found.is_empty() || found == key, "{context}");
                }
                f += 2.5;
            }
        }
    }

    #[test]
    fn speech_is_never_taken_for_keys() {
        let variants = speech_variants();
        assert!(variants.len() >= 60, "fixtures missing: {}", variants.len());
        for (name, pcm) in &variants {
            let events = detect(pcm);
            assert!(events.is_empty(), "{name}: {} presses", events.len());
        }
    }

    #[test]
    fn keys_after_speech_are_detected() {
        for (name, pcm) in speech() {
            let speech = Signal {
                samples: pcm.iter().map(|&s| f64::from(s)).collect(),
                ..Signal::default()
            };
            let signal = speech.keys("159#", -12.0, 50.0, 50.0);
            assert_keys(&detect(&ulaw(&signal.pcm())), "159#", &name);
        }
    }

    #[test]
    fn speech_fixtures_stay_small() {
        let total: u64 = std::fs::read_dir(SPEECH_DIR)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total < 1_500_000, "{total} bytes");
    }

    #[test]
    fn debug_never_shows_the_audio() {
        let mut detector = InbandDetector::new(InbandConfig::default());
        let signal = Signal::default().key('9', -10.0, 60.0).pcm();
        let mut out = Vec::new();
        detector.process(&signal, &mut out);
        let shown = format!("{detector:?} {out:?}");
        assert!(shown.contains("held: Some(Digit(*))"), "{shown}");
        assert!(!shown.contains("history"), "{shown}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn detect_in_chunks(samples: &[i16], chunks: &[usize]) -> Vec<DigitEvent> {
            let mut detector = InbandDetector::new(InbandConfig::default());
            let mut out = Vec::new();
            let mut rest = samples;
            for &size in chunks.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, later) = rest.split_at(size.min(rest.len()));
                detector.process(now, &mut out);
                rest = later;
            }
            out
        }

        fn sample() -> impl Strategy<Value = i16> {
            prop_oneof![
                any::<i16>(),
                -300i16..300,
                Just(i16::MIN),
                Just(i16::MAX),
                Just(0)
            ]
        }

        proptest! {
            #![proptest_config(crate::proptest_config(64))]

            /// The repeated-key sequences come out the same however the input is split.
            #[test]
            fn chunk_sizes_do_not_matter(
                sequence in prop::sample::select(vec!["1234567890*#ABCD", "1001", "1122", "5555"]),
                on in prop::sample::select(vec![40.0, 50.0]),
                lead in 0..HOP,
                chunks in prop::collection::vec(1usize..=400, 1..32),
            ) {
                let signal = Signal::default()
                    .silence(lead as f64 / 8.0)
                    .keys(sequence, -10.0, on, 40.0)
                    .pcm();
                let whole = detect(&signal);
                prop_assert_eq!(keys(&whole), sequence);
                prop_assert_eq!(detect_in_chunks(&signal, &chunks), whole);
            }

            /// Never panics on anything, gives the same answer however split, and reports no
            /// more presses than 80 ms (40 ms on, 40 ms off) of input allows.
            #[test]
            fn arbitrary_samples(
                samples in prop::collection::vec(sample(), 0..6000),
                chunks in prop::collection::vec(1usize..=400, 1..16),
            ) {
                let whole = detect(&samples);
                prop_assert!(whole.len() <= samples.len() / 640, "{} presses", whole.len());
                prop_assert_eq!(detect_in_chunks(&samples, &chunks), whole);
            }

            /// Bursts of at least 40 ms are each one press, unless the pause before is under
            /// 15 ms and the key the same as before (then it is the same press).
            #[test]
            fn bursts_are_counted_exactly(
                bursts in prop::collection::vec(
                    (
                        prop::sample::select(ALL_KEYS.chars().collect::<Vec<_>>()),
                        40.0..150.0f64,
                        prop_oneof![0.0..=15.0f64, 45.0..=150.0f64],
                        -25.0..-3.0f64,
                        -3.0..3.0f64,
                    ),
                    1..8,
                ),
                snr in prop::sample::select(vec![f64::INFINITY, 30.0, 20.0]),
                seed in any::<u64>(),
            ) {
                let mut signal = Signal::default().silence(10.0);
                let mut expected = String::new();
                let mut previous: Option<(char, f64)> = None;
                for &(key, on, off, level, twist) in &bursts {
                    let (lo, hi) = key_frequencies(key);
                    let merged = previous.is_some_and(|(k, gap)| k == key && gap < 40.0);
                    if !merged {
                        expected.push(key);
                    }
                    signal = signal
                        .pair(lo, hi, dbm0(level), dbm0(level + twist), on)
                        .silence(off);
                    previous = Some((key, off));
                }
                let signal = signal.silence(50.0).noise(snr, seed);
                prop_assert_eq!(keys(&detect(&signal.pcm())), expected);
            }
        }
    }
}
