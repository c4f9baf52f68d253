//! The RTP port range: which even ports calls may use.
//!
//! RTP goes on even ports and RTCP on the odd port above (RFC 3550 §11), so only even ports
//! whose odd port is in the range too are handed out: a firewall opened for the range
//! passes both. Ports are handed out round-robin rather than lowest-first, so a port a call
//! just released is not reused at once, and late packets of the old call do not reach the
//! new one. Sans-IO: binding the socket is the shell's job, which reports a port it could not
//! bind with [`PortAllocator::release`] and asks again.

use std::fmt;
use std::str::FromStr;

/// An inclusive range of UDP ports, `10000-20000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// The lowest port.
    pub first: u16,
    /// The highest port.
    pub last: u16,
}

/// A port range that cannot be used: what was given, and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RTP port range {given:?}: {rule}")]
pub struct PortRangeError {
    given: String,
    rule: &'static str,
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |rule| PortRangeError {
            given: s.to_owned(),
            rule,
        };
        let shape = "expected FIRST-LAST, two port numbers up to 65535, e.g. 10000-20000";
        let (a, b) = s.split_once('-').ok_or_else(|| err(shape))?;
        let first: u16 = a.trim().parse().map_err(|_| err(shape))?;
        let last: u16 = b.trim().parse().map_err(|_| err(shape))?;
        let range = Self { first, last };
        if first < 1024 {
            return Err(err(
                "FIRST must be 1024 or above (lower ports are privileged)",
            ));
        }
        if first > last {
            return Err(err("FIRST is above LAST"));
        }
        if range.even_ports().next().is_none() {
            return Err(err(
                "it holds no even port with the odd port above it (RTP takes an even port, \
                 RTCP the odd one above)",
            ));
        }
        Ok(range)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl PortRange {
    /// How many calls the range holds: its even ports whose odd port above is in it too.
    pub fn calls(self) -> usize {
        self.even_ports().count()
    }

    /// The even ports whose odd port above is in the range too.
    fn even_ports(self) -> impl Iterator<Item = u16> {
        // 65535 rounds up past the port space: no even port then (`1..=0` is empty).
        let (start, last) = match self.first.checked_add(self.first % 2) {
            Some(start) => (start, self.last.saturating_sub(1)),
            None => (1, 0),
        };
        (start..=last).step_by(2)
    }
}

/// Hands out even ports from a range.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    ports: Vec<u16>,
    in_use: Vec<bool>,
    next: usize,
    used: usize,
}

impl PortAllocator {
    /// All the even ports of `range`.
    pub fn new(range: PortRange) -> Self {
        let ports: Vec<u16> = range.even_ports().collect();
        Self {
            in_use: vec![false; ports.len()],
            ports,
            next: 0,
            used: 0,
        }
    }

    /// How many ports the range holds.
    pub fn capacity(&self) -> usize {
        self.ports.len()
    }

    /// How many are handed out.
    pub fn in_use(&self) -> usize {
        self.used
    }

    /// The next free port after the last one handed out, or `None` when all are in use.
    pub fn allocate(&mut self) -> Option<u16> {
        let n = self.ports.len();
        for step in 0..n {
            let i = (self.next + step) % n;
            if !self.in_use[i] {
                self.in_use[i] = true;
                self.used += 1;
                self.next = (i + 1) % n;
                return Some(self.ports[i]);
            }
        }
        None
    }

    /// Gives a port back. Ports outside the range or not in use are ignored.
    pub fn release(&mut self, port: u16) {
        if let Some(first) = self.ports.first() {
            let i = usize::from(port.wrapping_sub(*first) / 2);
            if port % 2 == first % 2 && self.in_use.get(i) == Some(&true) && self.ports[i] == port {
                self.in_use[i] = false;
                self.used -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_validate() {
        assert_eq!(
            "10000-20000".parse::<PortRange>().unwrap(),
            PortRange {
                first: 10_000,
                last: 20_000
            }
        );
        for bad in [
            "",
            "10000",
            "20000-10000",
            "80-90",
            "10001-10001",
            "10000-10000",
            "a-b",
            "10000-70000",
            "1000-1100",
        ] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
        // Each error names the rule broken (below 1024 is refused though 1024 is inside).
        for (bad, rule) in [
            ("10000", "expected FIRST-LAST"),
            ("a-b", "expected FIRST-LAST"),
            ("10000-70000", "up to 65535"),
            ("1000-1100", "FIRST must be 1024 or above"),
            ("20000-10000", "FIRST is above LAST"),
            ("10001-10001", "no even port with the odd port above it"),
        ] {
            let e = bad.parse::<PortRange>().unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("invalid RTP port range {bad:?}: ")),
                "{e}"
            );
            assert!(e.contains(rule), "{bad}: {e}");
        }
        // 10002 and 10004; 10006's RTCP port would be outside.
        assert_eq!(
            PortAllocator::new("10001-10006".parse().unwrap()).capacity(),
            2
        );
        assert_eq!(
            PortAllocator::new("10001-10007".parse().unwrap()).capacity(),
            3
        );
    }

    /// The top of the port space: 65535 has no even port at or above it, and 65534 is the
    /// last one. (Rounding 65535 up overflowed: a panic, or in release every even port from 0.)
    #[test]
    fn a_range_at_the_top_of_the_port_space() {
        assert!("65535-65535".parse::<PortRange>().is_err());
        assert!("65534-65534".parse::<PortRange>().is_err());
        let top: PortRange = "65533-65535".parse().unwrap();
        assert_eq!(PortAllocator::new(top).capacity(), 1);
        assert_eq!(PortAllocator::new(top).allocate(), Some(65_534));
    }

    #[test]
    fn even_ports_round_robin_until_exhausted() {
        let mut a = PortAllocator::new("10000-10007".parse().unwrap());
        let got: Vec<u16> = std::iter::from_fn(|| a.allocate()).collect();
        assert_eq!(got, [10_000, 10_002, 10_004, 10_006]);
        assert_eq!(a.allocate(), None);
        a.release(10_002);
        a.release(10_002);
        a.release(10_003);
        a.release(9_000);
        assert_eq!(a.in_use(), 3);
        assert_eq!(a.allocate(), Some(10_002));
        a.release(10_000);
        a.release(10_006);
        // Round-robin: continues after the last port handed out.
        assert_eq!(a.allocate(), Some(10_006));
        assert_eq!(a.allocate(), Some(10_000));
    }
}
