//! DTMF keys, and the events detectors emit for them.
//!
//! A key pressed on a phone is part of a mailbox number or a passcode, so a [`Digit`] never
//! shows its value in `Debug` or `Display`: the digits 0-9 and A-D print as `*` (RFC 4733's
//! star key does too); only `#`, which ends every entry, prints as itself. Code that needs the
//! value calls [`Digit::reveal`].

use std::fmt;
use std::time::{Duration, Instant};

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

/// One call's keys from all its methods, each press counted once.
///
/// A phone may send every press two ways: RFC 4733 and SIP INFO both (an option on many desk
/// phones), or INFO with the tones left in the audio for the in-band detector. The two copies
/// arrive up to the signalling path's delay apart, the slower one possibly after the next
/// key's faster copy, so copies cannot be paired by value. The merge follows one method: a
/// key by another method is a copy while the followed one has given a key within
/// [`KeyMerge::COPY_WINDOW`], plus as long as the copy says the key was held (an INFO sent
/// when the key is let go, its `Duration` the hold). A key by another method after a longer
/// pause is counted, and its method followed from then on: the phone changed how it sends
/// keys, or the followed method's copy of this press is the one that is late.
#[derive(Debug, Default)]
pub struct KeyMerge {
    /// The method followed and when it last gave a key.
    followed: Option<(DtmfMethod, Instant)>,
}

impl KeyMerge {
    /// How long after the followed method's last key another method's keys are copies: an
    /// INFO whose first sends were lost, up to its third retransmission (RFC 3261 Timer E:
    /// 0.5, 1.5 and 3.5 s after the first send; later ones, every 4 s until 32 s, are
    /// rarer than a phone that changed how it sends keys).
    pub const COPY_WINDOW: Duration = Duration::from_secs(4);

    /// The longest hold a copy's own duration adds to [`KeyMerge::COPY_WINDOW`].
    pub const LONGEST_HOLD: Duration = Duration::from_secs(10);

    /// Whether `key`, which arrived `now`, is a press of its own (`true`), rather than another
    /// method's copy of one already counted.
    pub fn accept(&mut self, now: Instant, key: &DigitEvent) -> bool {
        let held = key.duration.unwrap_or_default().min(Self::LONGEST_HOLD);
        match self.followed {
            Some((followed, last))
                if followed != key.method
                    && now.saturating_duration_since(last) < Self::COPY_WINDOW + held =>
            {
                false
            }
            _ => {
                self.followed = Some((key.method, now));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DtmfMethod::{InBand, Rfc4733, SipInfo};
    use super::*;

    /// Feeds `(milliseconds, key, method)` to a merge; the keys it counts.
    fn merged(keys: &[(u64, char, DtmfMethod)]) -> String {
        let held: Vec<_> = keys
            .iter()
            .map(|&(at, key, method)| (at, key, method, 0))
            .collect();
        merged_held(&held)
    }

    /// [`merged`] with each key's hold as its method reports it, in ms (0: not reported).
    fn merged_held(keys: &[(u64, char, DtmfMethod, u64)]) -> String {
        let start = Instant::now();
        let mut merge = KeyMerge::default();
        keys.iter()
            .filter(|&&(at, key, method, held)| {
                let event = DigitEvent {
                    digit: Digit::from_char(key).unwrap(),
                    method,
                    duration: (held > 0).then(|| Duration::from_millis(held)),
                };
                merge.accept(start + Duration::from_millis(at), &event)
            })
            .map(|(_, key, _, _)| key)
            .collect()
    }

    #[test]
    fn each_press_sent_two_ways_counts_once() {
        // RFC 4733 first, INFO 30 ms behind; "1001#" with its repeated digits.
        let mut keys = Vec::new();
        for (i, key) in "1001#".chars().enumerate() {
            let at = 250 * i as u64;
            keys.push((at, key, Rfc4733));
            keys.push((at + 30, key, SipInfo));
        }
        assert_eq!(merged(&keys), "1001#");
        // INFO late by more than a key: each copy arrives after the next press's RFC 4733.
        let mut late: Vec<_> = "2580#"
            .chars()
            .enumerate()
            .flat_map(|(i, key)| {
                let at = 150 * i as u64;
                [(at, key, Rfc4733), (at + 400, key, SipInfo)]
            })
            .collect();
        late.sort_by_key(|k| k.0);
        assert_eq!(merged(&late), "2580#");
        // INFO and tones left in the audio.
        assert_eq!(
            merged(&[
                (0, '4', SipInfo),
                (45, '4', InBand),
                (300, '4', SipInfo),
                (345, '4', InBand)
            ]),
            "44"
        );
    }

    #[test]
    fn one_method_keeps_every_press_however_fast() {
        for method in DtmfMethod::ALL {
            let keys: Vec<_> = "11##00"
                .chars()
                .zip(0..)
                .map(|(k, i)| (i * 60, k, method))
                .collect();
            assert_eq!(merged(&keys), "11##00", "{method:?}");
        }
    }

    #[test]
    fn which_copy_comes_first_may_change_between_presses() {
        // After a pause the INFO copy wins the race, and is followed from then on.
        assert_eq!(
            merged(&[
                (0, '1', Rfc4733),
                (20, '1', SipInfo),
                (4_000, '2', SipInfo),
                (4_010, '2', Rfc4733),
                (4_200, '3', SipInfo),
                (4_230, '3', Rfc4733),
            ]),
            "123"
        );
    }

    #[test]
    fn a_method_alone_after_a_pause_is_followed() {
        // The phone switched to INFO (a transfer, a re-INVITE without telephone-event).
        assert_eq!(
            merged(&[
                (0, '1', Rfc4733),
                (4_000, '2', SipInfo),
                (4_100, '3', SipInfo)
            ]),
            "123"
        );
        // Within the window a lone key by another method is taken for a copy.
        assert_eq!(merged(&[(0, '1', Rfc4733), (3_999, '2', SipInfo)]), "1");
    }

    #[test]
    fn a_late_copy_is_still_a_copy() {
        // An INFO whose first three sends were lost: its fourth goes 3.5 s after the first.
        assert_eq!(merged(&[(0, '5', Rfc4733), (3_500, '5', SipInfo)]), "5");
        // A key held 2.5 s, its INFO sent when it was let go, with the hold.
        assert_eq!(
            merged_held(&[(0, '5', Rfc4733, 0), (2_530, '5', SipInfo, 2_500)]),
            "5"
        );
        // Held 6 s: the hold stretches the window as far as it goes.
        assert_eq!(
            merged_held(&[(0, '5', Rfc4733, 0), (6_100, '5', SipInfo, 6_000)]),
            "5"
        );
        // A hold that says more than can be believed stretches it only so far.
        assert_eq!(
            merged_held(&[(0, '5', Rfc4733, 0), (15_000, '6', SipInfo, 60_000)]),
            "56"
        );
    }

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
