//! DTMF keys, and the events detectors emit for them.
//!
//! A key pressed on a phone is part of a mailbox number or a passcode, so a [`Digit`] never
//! shows its value in `Debug` or `Display`: the digits 0-9 and A-D print as `*` (RFC 4733's
//! star key does too); only `#`, which ends every entry, prints as itself. Code that needs the
//! value calls [`Digit::reveal`].

use std::fmt;
use std::time::Duration;

/// One DTMF key: 0-9, `*`, `#`, A-D.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digit(u8);

impl Digit {
    /// The pound key, which ends every entry.
    pub const POUND: Self = Self(b'#');
    /// The star key, which clears an entry or ends the call from the menu.
    pub const STAR: Self = Self(b'*');

    /// The key written as `c` (`0`-`9`, `*`, `#`, `A`-`D`, either case).
    pub fn from_char(c: char) -> Option<Self> {
        let c = c.to_ascii_uppercase();
        match c {
            '0'..='9' | '*' | '#' | 'A'..='D' => u8::try_from(c).ok().map(Self),
            _ => None,
        }
    }

    /// The key for an RFC 4733 §3.2 event code: 0-9, 10 = `*`, 11 = `#`, 12-15 = A-D.
    pub fn from_event(code: u8) -> Option<Self> {
        match code {
            0..=9 => Some(Self(b'0' + code)),
            10 => Some(Self::STAR),
            11 => Some(Self::POUND),
            12..=15 => Some(Self(b'A' + code - 12)),
            _ => None,
        }
    }

    /// The RFC 4733 event code.
    pub fn event_code(self) -> u8 {
        match self.0 {
            b'0'..=b'9' => self.0 - b'0',
            b'*' => 10,
            b'#' => 11,
            c => c - b'A' + 12,
        }
    }

    /// The key's character. Call it only where the value is needed (collecting an entry),
    /// never to log it.
    pub fn reveal(self) -> char {
        char::from(self.0)
    }

    /// One of 0-9.
    pub fn is_numeric(self) -> bool {
        self.0.is_ascii_digit()
    }
}

impl fmt::Display for Digit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 == b'#' { "#" } else { "*" })
    }
}

impl fmt::Debug for Digit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digit({self})")
    }
}

/// How a key arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfMethod {
    /// RFC 4733 telephone-event RTP packets.
    Rfc4733,
    /// A SIP INFO request (`application/dtmf-relay` or `application/dtmf`).
    SipInfo,
    /// Tones in the audio, found by the Goertzel detector.
    InBand,
}

impl DtmfMethod {
    /// Every method.
    pub const ALL: [Self; 3] = [Self::Rfc4733, Self::SipInfo, Self::InBand];

    /// A label for logs and metrics: `rfc4733`, `sip_info`, `inband`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rfc4733 => "rfc4733",
            Self::SipInfo => "sip_info",
            Self::InBand => "inband",
        }
    }
}

/// A key press, as a detector reports it: once, when the press is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigitEvent {
    /// The key.
    pub digit: Digit,
    /// How it arrived.
    pub method: DtmfMethod,
    /// How long it was held, when known.
    pub duration: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_codes_round_trip() {
        for code in 0..16 {
            let d = Digit::from_event(code).unwrap();
            assert_eq!(d.event_code(), code);
            assert_eq!(Digit::from_char(d.reveal()), Some(d));
        }
        assert_eq!(Digit::from_event(16), None);
        assert_eq!(Digit::from_char('a').map(Digit::reveal), Some('A'));
        assert_eq!(Digit::from_char('E'), None);
        assert_eq!(Digit::from_event(11), Some(Digit::POUND));
    }

    #[test]
    fn digits_never_print_their_value() {
        for c in "0123456789ABCD*".chars() {
            let d = Digit::from_char(c).unwrap();
            assert_eq!(d.to_string(), "*");
            assert_eq!(format!("{d:?}"), "Digit(*)");
        }
        assert_eq!(Digit::POUND.to_string(), "#");
    }
}
