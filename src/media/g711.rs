//! ITU-T G.711 companding: μ-law (PCMU) and A-law (PCMA).
//!
//! G.711 maps a linear sample onto one of 256 eight-bit codes: a sign bit, a 3-bit segment
//! ("chord") number and a 4-bit step within the segment, the step size doubling from one
//! segment to the next (ITU-T G.711 Table 1 for A-law, Table 2 for μ-law). The tables are
//! defined on 13-bit (A-law) and 14-bit (μ-law) sign-magnitude values; vportal works in 16-bit PCM, so the encoders drop the
//! 3 or 2 low bits first and the decoders return the table's output value scaled back up, as
//! the ITU-T G.191 reference code (`g711.c`) does.
//!
//! Negative samples are taken in one's complement (`!x`, i.e. `-x - 1`) before that shift, as
//! in G.191: a sample and its one's complement get mirror-image codes, so the quantiser is
//! symmetric about -0.5 and -1 encodes like 0, as the smallest negative value. Sun's widely
//! copied `g711.c` does the same for A-law; for μ-law it negates after the shift instead,
//! which rounds negative magnitudes up (-1 becomes 0x7E, -8, rather than 0x7F, -0).
//!
//! Decoding is a lookup in a table built at compile time from the same G.711 definitions.

/// Whole samples (G.711: octets) in `d` at G.711's 8 kHz, saturating.
pub fn samples_in(d: std::time::Duration) -> usize {
    let samples = d.as_nanos().saturating_mul(8_000) / 1_000_000_000;
    usize::try_from(samples).unwrap_or(usize::MAX)
}

/// A G.711 companding law.
///
/// μ-law is the RTP payload type PCMU (static payload type 0), A-law is PCMA (static payload
/// type 8), RFC 3551 §4.5.14 and Table 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// μ-law, used in North America and Japan: PCMU, payload type 0.
    Ulaw,
    /// A-law, used in Europe and most other countries: PCMA, payload type 8.
    Alaw,
}

impl Law {
    /// The code for a zero sample, which a sender pads with.
    ///
    /// μ-law has two zero codes, `0xFF` (+0) and `0x7F` (-0); encoders emit `0xFF`. A-law has no
    /// code for zero: `0xD5` decodes to the smallest positive value (+8 in 16-bit PCM), the
    /// code encoders give a zero sample.
    pub const fn silence(self) -> u8 {
        match self {
            Self::Ulaw => 0xFF,
            Self::Alaw => 0xD5,
        }
    }

    /// The static RTP payload type (RFC 3551 Table 4): 0 for PCMU, 8 for PCMA.
    pub const fn payload_type(self) -> u8 {
        match self {
            Self::Ulaw => 0,
            Self::Alaw => 8,
        }
    }
}

/// The μ-law bias: 33 in the 14-bit domain (G.711 Table 2's segment ends are 33 less than
/// powers of two). Adding it before the segment search
/// makes every segment boundary a power of two, which is what lets the segment be found from
/// the position of the highest set bit.
const ULAW_BIAS: u16 = 33;

/// The largest biased 14-bit μ-law magnitude: samples above it clip to the top step of the
/// top segment (G.711 Table 2, decision value 8159 plus the bias).
const ULAW_MAX: u16 = 0x1FFF;

/// Encodes one 16-bit sample as μ-law (G.711 Table 2).
pub fn ulaw_encode(sample: i16) -> u8 {
    // One's complement for negative samples, then 16 → 14 bits (see the module comment). Both
    // arms are in 0..=8191, so the cast cannot lose anything.
    let (magnitude, sign) = if sample < 0 {
        ((!sample >> 2) as u16, 0x80)
    } else {
        ((sample >> 2) as u16, 0x00)
    };
    let biased = (magnitude + ULAW_BIAS).min(ULAW_MAX);
    // `biased` is in 33..=8191: its top bit is bit 5 (segment 0) to bit 12 (segment 7).
    let segment = (biased.ilog2() - 5) as u8;
    let step = ((biased >> (segment + 1)) & 0x0F) as u8;
    // G.711 Table 2: μ-law characters are transmitted with every bit inverted; positive samples
    // carry sign bit 1 after inversion.
    !(sign | (segment << 4) | step)
}

/// Encodes one 16-bit sample as A-law (G.711 Table 1).
pub fn alaw_encode(sample: i16) -> u8 {
    // One's complement for negative samples, then 16 → 13 bits: 0..=4095, a 12-bit magnitude.
    let (magnitude, sign) = if sample < 0 {
        ((!sample >> 3) as u16, 0x00)
    } else {
        ((sample >> 3) as u16, 0x80)
    };
    // Segments 0 and 1 share the smallest step (G.711 Table 1: 2 units each); from segment 2 on
    // the step doubles, so the segment follows from the highest set bit above bit 4.
    let (segment, step) = if magnitude < 32 {
        (0u8, (magnitude >> 1) as u8)
    } else {
        let segment = (magnitude.ilog2() - 4) as u8;
        (segment, ((magnitude >> segment) & 0x0F) as u8)
    };
    // G.711 Table 1: the even bits of an A-law character are inverted for transmission (XOR 0x55);
    // positive samples carry sign bit 1.
    (sign | (segment << 4) | step) ^ 0x55
}

/// Decodes one μ-law code to a 16-bit sample: G.711 Table 2's decoder output value, times 4.
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_TABLE[usize::from(code)]
}

/// Decodes one A-law code to a 16-bit sample: G.711 Table 1's decoder output value, times 8.
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_TABLE[usize::from(code)]
}

/// Encodes `pcm` in `law`, appending one code per sample to `out`.
pub fn encode(law: Law, pcm: &[i16], out: &mut Vec<u8>) {
    let f = match law {
        Law::Ulaw => ulaw_encode,
        Law::Alaw => alaw_encode,
    };
    out.extend(pcm.iter().map(|&s| f(s)));
}

/// Decodes `codes` in `law`, appending one sample per code to `out`.
pub fn decode(law: Law, codes: &[u8], out: &mut Vec<i16>) {
    let table = match law {
        Law::Ulaw => &ULAW_TABLE,
        Law::Alaw => &ALAW_TABLE,
    };
    out.extend(codes.iter().map(|&c| table[usize::from(c)]));
}

/// μ-law code → 16-bit sample, for all 256 codes.
static ULAW_TABLE: [i16; 256] = ulaw_table();

/// A-law code → 16-bit sample, for all 256 codes.
static ALAW_TABLE: [i16; 256] = alaw_table();

/// G.711 Table 2 in 16-bit units. The output value of step `q` in segment `s` is the middle of
/// its interval: with the bias, `((2q + 33) << s) - 33` in the 14-bit domain, times 4.
const fn ulaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        let c = !(code as u8);
        let segment = (c >> 4) & 0x07;
        let step = (c & 0x0F) as i32;
        let magnitude = (((step << 3) + 0x84) << segment) - 0x84;
        table[code] = if c & 0x80 != 0 {
            -magnitude as i16
        } else {
            magnitude as i16
        };
        code += 1;
    }
    table
}

/// G.711 Table 1 in 16-bit units. Segment 0 has output values 1, 3, …, 31 and segment `s ≥ 1`
/// `(2q + 33) << (s - 1)` in the 13-bit domain, times 8.
const fn alaw_table() -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        let c = (code as u8) ^ 0x55;
        let segment = (c >> 4) & 0x07;
        let step = (c & 0x0F) as i32;
        let magnitude = if segment == 0 {
            (step << 4) + 8
        } else {
            ((step << 4) + 0x108) << (segment - 1)
        };
        table[code] = if c & 0x80 != 0 {
            magnitude as i16
        } else {
            -magnitude as i16
        };
        code += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// μ-law compression as written in ITU-T G.191's `g711.c` (`ulaw_compress`): a segment
    /// count by repeated shifting and nibbles built by subtraction, independent of the
    /// bit-twiddling above.
    fn reference_ulaw(lin: i16) -> u8 {
        let lin = i32::from(lin);
        let mut absno = if lin < 0 {
            ((!lin) >> 2) + 33
        } else {
            (lin >> 2) + 33
        };
        if absno > 0x1FFF {
            absno = 0x1FFF;
        }
        let mut i = absno >> 6;
        let mut segno = 1;
        while i != 0 {
            segno += 1;
            i >>= 1;
        }
        let high_nibble = 0x0008 - segno;
        let low_nibble = 0x000F - ((absno >> segno) & 0x000F);
        let mut out = (high_nibble << 4) | low_nibble;
        if lin >= 0 {
            out |= 0x0080;
        }
        out as u8
    }

    /// A-law compression as written in G.191's `g711.c` (`alaw_compress`).
    fn reference_alaw(lin: i16) -> u8 {
        let lin = i32::from(lin);
        // G.191 keeps the 12 most significant bits: an 11-bit magnitude whose segments 0 and
        // 1 need no shift, then one more shift per segment.
        let mut ix = if lin < 0 { (!lin) >> 4 } else { lin >> 4 };
        if ix > 15 {
            let mut iexp = 1;
            while ix > 16 + 15 {
                ix >>= 1;
                iexp += 1;
            }
            ix -= 16;
            ix += iexp << 4;
        }
        if lin >= 0 {
            ix |= 0x0080;
        }
        (ix ^ 0x0055) as u8
    }

    /// G.711 Table 2 (μ-law), positive half, in 16-bit units: per segment the first decoder
    /// output value and the step between output values.
    const ULAW_SEGMENTS: [(i32, i32); 8] = [
        (0, 8),
        (132, 16),
        (396, 32),
        (924, 64),
        (1980, 128),
        (4092, 256),
        (8316, 512),
        (16764, 1024),
    ];

    /// G.711 Table 1 (A-law), positive half, in 16-bit units.
    const ALAW_SEGMENTS: [(i32, i32); 8] = [
        (8, 16),
        (264, 16),
        (528, 32),
        (1056, 64),
        (2112, 128),
        (4224, 256),
        (8448, 512),
        (16896, 1024),
    ];

    /// The expected decoder output for a code, read off the tables above: μ-law characters
    /// are the inverted `sign|segment|step`, A-law characters have their even bits inverted.
    fn table_value(law: Law, code: u8) -> i16 {
        let (plain, segments, positive) = match law {
            Law::Ulaw => (!code, &ULAW_SEGMENTS, !code & 0x80 == 0),
            Law::Alaw => (code ^ 0x55, &ALAW_SEGMENTS, (code ^ 0x55) & 0x80 != 0),
        };
        let (first, step) = segments[usize::from((plain >> 4) & 7)];
        let v = first + step * i32::from(plain & 0x0F);
        i16::try_from(if positive { v } else { -v }).unwrap()
    }

    #[test]
    fn ulaw_encoder_matches_g191_for_every_sample() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(ulaw_encode(x), reference_ulaw(x), "sample {x}");
        }
    }

    #[test]
    fn alaw_encoder_matches_g191_for_every_sample() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(alaw_encode(x), reference_alaw(x), "sample {x}");
        }
    }

    #[test]
    fn decoders_match_the_g711_tables() {
        for code in 0..=255u8 {
            assert_eq!(
                ulaw_decode(code),
                table_value(Law::Ulaw, code),
                "μ {code:#04x}"
            );
            assert_eq!(
                alaw_decode(code),
                table_value(Law::Alaw, code),
                "A {code:#04x}"
            );
        }
        // Fixed points of the tables, written out.
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0x7E), -8);
        assert_eq!(ulaw_decode(0xEF), 132);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_decode(0xC5), 264);
    }

    #[test]
    fn silence_decodes_to_the_smallest_value() {
        assert_eq!(ulaw_decode(Law::Ulaw.silence()), 0);
        assert_eq!(alaw_decode(Law::Alaw.silence()), 8);
        assert_eq!(ulaw_encode(0), Law::Ulaw.silence());
        assert_eq!(alaw_encode(0), Law::Alaw.silence());
        assert_eq!((Law::Ulaw.payload_type(), Law::Alaw.payload_type()), (0, 8));
    }

    /// The step of the segment a code lies in (16-bit units).
    fn step_of(law: Law, code: u8) -> i32 {
        let plain = match law {
            Law::Ulaw => !code,
            Law::Alaw => code ^ 0x55,
        };
        let segments = match law {
            Law::Ulaw => &ULAW_SEGMENTS,
            Law::Alaw => &ALAW_SEGMENTS,
        };
        segments[usize::from((plain >> 4) & 7)].1
    }

    /// An encoder and its decoder.
    type Codec = (fn(i16) -> u8, fn(u8) -> i16);

    fn round_trip_is_monotonic_and_within_half_a_step(law: Law) {
        let (enc, dec): Codec = match law {
            Law::Ulaw => (ulaw_encode, ulaw_decode),
            Law::Alaw => (alaw_encode, alaw_decode),
        };
        // Bits dropped before quantising (16 → 14 or 13 bits), which widen each interval.
        let dropped = match law {
            Law::Ulaw => 4,
            Law::Alaw => 8,
        };
        let top = i32::from(dec(enc(i16::MAX)));
        let mut previous = i32::MIN;
        for x in i16::MIN..=i16::MAX {
            let code = enc(x);
            let y = i32::from(dec(code));
            assert!(
                y >= previous,
                "{law:?}: decode(encode({x})) = {y} < {previous}"
            );
            previous = y;
            let x = i32::from(x);
            let err = (y - x).abs();
            if x.abs() <= top {
                // Inside the table: the output is the middle of the interval x fell in.
                assert!(
                    err <= step_of(law, code) / 2 + dropped,
                    "{law:?}: {x} → {code:#04x} → {y}, error {err}"
                );
            } else {
                // Beyond the last output value: clipped to it.
                assert_eq!(y.abs(), top, "{law:?}: {x} clips");
            }
        }
    }

    #[test]
    fn ulaw_round_trip_is_monotonic_and_within_half_a_step() {
        round_trip_is_monotonic_and_within_half_a_step(Law::Ulaw);
    }

    #[test]
    fn alaw_round_trip_is_monotonic_and_within_half_a_step() {
        round_trip_is_monotonic_and_within_half_a_step(Law::Alaw);
    }

    #[test]
    fn every_code_survives_decode_then_encode() {
        for code in 0..=255u8 {
            // μ-law -0 (0x7F) decodes to 0, which encodes as +0 (0xFF).
            let want = if code == 0x7F { 0xFF } else { code };
            assert_eq!(ulaw_encode(ulaw_decode(code)), want, "μ {code:#04x}");
            assert_eq!(alaw_encode(alaw_decode(code)), code, "A {code:#04x}");
        }
    }

    #[test]
    fn slices_encode_and_decode_in_order() {
        let pcm = [0i16, 1000, -1000, i16::MAX, i16::MIN];
        for law in [Law::Ulaw, Law::Alaw] {
            let mut codes = vec![0xAB];
            encode(law, &pcm, &mut codes);
            assert_eq!(codes.len(), 6);
            assert_eq!(codes[0], 0xAB, "appends");
            let mut back = Vec::new();
            decode(law, &codes[1..], &mut back);
            assert_eq!(back.len(), pcm.len());
            for (&x, &y) in pcm.iter().zip(&back) {
                assert!(
                    (i32::from(x) - i32::from(y)).abs() <= 1024,
                    "{law:?} {x} {y}"
                );
            }
        }
    }
}
