//! Peer addresses as vportal writes and counts them: IPv4-mapped IPv6 addresses as the IPv4
//! address they stand for, and an IPv6 client as its /64.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// `addr` with an IPv4-mapped IPv6 address (`[::ffff:192.0.2.1]:5060`, how a dual-stack
/// socket reports an IPv4 peer) written as the IPv4 address it is (`192.0.2.1:5060`).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Who a client is, for limits kept per client (TCP slots, the admin throttle): an IPv4
/// address, or the /64 an IPv6 address is in. One IPv6 host has a whole /64 to draw
/// addresses from (RFC 4291 §2.5.1, RFC 8981 temporary addresses), so counting single IPv6
/// addresses would give it as many fresh allowances as it likes; a /64 is what one host or
/// one site is given, as one IPv4 address is for the phones behind a NAT.
pub fn client_key(ip: IpAddr) -> Client {
    Client(match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    })
}

/// A client as [`client_key`] counts it; shown as the address, or as the /64
/// (`2001:db8:1:2::/64`), so that a log line names what was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client(IpAddr);

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => v4.fmt(f),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            canonical(addr("[::ffff:127.0.0.1]:5062")),
            addr("127.0.0.1:5062")
        );
        assert_eq!(canonical(addr("[::1]:5062")), addr("[::1]:5062"));
        assert_eq!(canonical(addr("10.0.0.1:1")), addr("10.0.0.1:1"));
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_an_ipv4_one_its_address() {
        let client = |s: &str| client_key(ip(s));
        assert_eq!(
            client("2001:db8:1:2:a:b:c:d").to_string(),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            client("2001:db8:1:2::1"),
            client("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(client("2001:db8:1:2::1"), client("2001:db8:1:3::1"));
        assert_eq!(client("::1").to_string(), "::/64");
        assert_eq!(client("192.0.2.1").to_string(), "192.0.2.1");
        assert_ne!(client("192.0.2.1"), client("192.0.2.2"));
        // A dual-stack socket's view of an IPv4 client is that IPv4 client, not the /64
        // every IPv4 address maps into.
        assert_eq!(client("::ffff:192.0.2.1"), client("192.0.2.1"));
        assert_eq!(client("::ffff:192.0.2.1").to_string(), "192.0.2.1");
        assert_ne!(client("::ffff:192.0.2.1"), client("::ffff:192.0.2.2"));
    }
}
