//! Peer addresses as vportal writes and counts them: IPv4-mapped IPv6 addresses as the IPv4
//! address they stand for, and an IPv6 client as its /64. And the listening sockets, whose
//! IPv6 wildcard takes IPv4 peers too.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// `addr` with an IPv4-mapped IPv6 address (`[::ffff:192.0.2.1]:5060`, how a dual-stack
/// socket reports an IPv4 peer) written as the IPv4 address it is (`192.0.2.1:5060`). Any
/// other address is kept whole, a link-local one's scope (its interface) included.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => v6
            .ip()
            .to_ipv4_mapped()
            .map_or(addr, |v4| SocketAddr::new(v4.into(), v6.port())),
        SocketAddr::V4(_) => addr,
    }
}

/// Whether `ip` is this host's loopback: `127.0.0.0/8`, `::1`, or IPv4 loopback as an
/// IPv4-mapped IPv6 address (a dual-stack socket's IPv4 peer or listener).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
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

/// A UDP socket bound to `addr`, non-blocking; on `[::]` one that takes IPv4 peers too
/// (see `listen_socket`).
///
/// # Errors
/// What the operating system said.
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = listen_socket(addr, Type::DGRAM, Protocol::UDP)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A TCP socket listening on `addr`, non-blocking, with `SO_REUSEADDR` as the standard
/// library sets it; on `[::]` one that takes IPv4 peers too (see `listen_socket`).
///
/// # Errors
/// What the operating system said.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = listen_socket(addr, Type::STREAM, Protocol::TCP)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// A non-blocking socket for `addr`, not yet bound. vportal takes `[::]` for dual-stack
/// (IPv4 peers arriving as `::ffff:a.b.c.d`), so on the IPv6 wildcard `IPV6_V6ONLY` is
/// cleared: whether it is set by default is the system's choice (Linux's
/// `net.ipv6.bindv6only`; set on the BSDs), and with it set `[::]` would silently refuse
/// every IPv4 caller.
fn listen_socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if let IpAddr::V6(ip) = addr.ip()
        && ip.is_unspecified()
    {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
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
        let link_local = addr("[fe80::1%2]:5062");
        assert_eq!(canonical(link_local), link_local);
        assert!(matches!(canonical(link_local), SocketAddr::V6(v6) if v6.scope_id() == 2));
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

    /// `[::]` takes IPv4 peers, over UDP and TCP, whatever the system's default for
    /// IPV6_V6ONLY; another IPv6 address stays IPv6-only as the system makes it.
    #[test]
    fn the_ipv6_wildcard_takes_ipv4_peers_too() {
        let udp = bind_udp("[::]:0".parse().unwrap()).unwrap();
        assert!(!socket2::SockRef::from(&udp).only_v6().unwrap());
        let port = udp.local_addr().unwrap().port();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        sender.send_to(b"ping", ("127.0.0.1", port)).unwrap();
        udp.set_nonblocking(false).unwrap();
        udp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0; 8];
        let (n, from) = udp.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(canonical(from), sender.local_addr().unwrap());

        let tcp = bind_tcp("[::]:0".parse().unwrap()).unwrap();
        assert!(!socket2::SockRef::from(&tcp).only_v6().unwrap());
        let port = tcp.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_nonblocking(false).unwrap();
        let (_, from) = tcp.accept().unwrap();
        assert_eq!(canonical(from), client.local_addr().unwrap());

        // Any other address is left as it is; the socket is non-blocking either way.
        let v4 = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut buf = [0; 8];
        assert_eq!(
            v4.recv_from(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
