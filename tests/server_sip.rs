//! `vportal serve` over real loopback sockets: a call over UDP, framing over TCP, graceful
//! shutdown. Few and bounded: the protocol itself is tested on a virtual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::Workdir;
use common::server::ServerProcess;
use common::uac::{Uac, parse};
use vportal::sip::{HeaderName, Method, StreamFramer};

fn udp_caller() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// A call from a new UDP caller to `sip`, answered and ACKed: the caller's socket and UAC.
fn call_up(sip: std::net::SocketAddr) -> (UdpSocket, Uac) {
    let sock = udp_caller();
    let mut uac = Uac::new(sock.local_addr().unwrap(), sip, "8500");
    let offer = uac.offer("sendrecv");
    sock.send_to(&uac.invite(&offer), sip).unwrap();
    let ok = recv_until(&sock, |m| m.status() == Some(200));
    uac.learn_tag(&ok);
    sock.send_to(&uac.ack_2xx(""), sip).unwrap();
    (sock, uac)
}

/// Receives until a message satisfying `want` arrives (at most 10 messages).
fn recv_until(
    sock: &UdpSocket,
    want: impl Fn(&vportal::sip::Message) -> bool,
) -> vportal::sip::Message {
    let mut buf = [0_u8; 65_535];
    for _ in 0..10 {
        let (n, _) = sock.recv_from(&mut buf).expect("an answer within 5 s");
        let m = parse(&buf[..n]);
        if want(&m) {
            return m;
        }
    }
    panic!("the expected message never came");
}

#[test]
fn first_run_creates_the_store_and_answers_a_call_over_udp() {
    let dir = Workdir::new();
    let server = ServerProcess::start(&dir, "31000-31098", &[]);
    assert!(dir.db().exists(), "serve created the database");
    // Its standard output is a pipe, as a service's is (the journal): no token is made
    // there, and the operator is told how to make one (`cli::a_first_run_on_a_terminal_…`
    // covers the terminal).
    let stdout = server.stdout.lock().unwrap().clone();
    assert!(!stdout.contains("vpt_"), "{stdout}");
    assert!(stdout.contains("vportal token create admin"), "{stdout}");
    assert!(stdout.contains("vportal user add"), "{stdout}");
    assert!(server.log().contains("admin API has no token"));

    let sock = udp_caller();
    let mut uac = Uac::new(sock.local_addr().unwrap(), server.sip, "8500");
    let offer = uac.offer("sendrecv");
    sock.send_to(&uac.invite(&offer), server.sip).unwrap();
    let ok = recv_until(&sock, |m| m.status() == Some(200));
    let sdp = String::from_utf8_lossy(ok.body()).into_owned();
    assert!(sdp.contains("c=IN IP4 127.0.0.1"), "{sdp}");
    let port: u16 = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (31_000..=31_098).contains(&port) && port.is_multiple_of(2),
        "RTP port {port} from the range"
    );
    uac.learn_tag(&ok);
    sock.send_to(&uac.ack_2xx(""), server.sip).unwrap();
    sock.send_to(&uac.request("BYE", "", ""), server.sip)
        .unwrap();
    let bye_ok = recv_until(&sock, |m| {
        m.status() == Some(200) && m.values(HeaderName::CSeq).next().unwrap().ends_with("BYE")
    });
    assert_eq!(bye_ok.status(), Some(200));
    // Unknown numbers: 404; OPTIONS: 200.
    let mut lost = Uac::new(sock.local_addr().unwrap(), server.sip, "4040");
    lost.call_id = "lost@127.0.0.1".into();
    sock.send_to(&lost.invite(""), server.sip).unwrap();
    let answer = recv_until(&sock, |m| {
        m.values(HeaderName::CallId).next() == Some("lost@127.0.0.1")
    });
    assert_eq!(answer.status(), Some(404));
    // An in-dialog OPTIONS after the call ended: no such dialog.
    sock.send_to(&uac.request("OPTIONS", "", ""), server.sip)
        .unwrap();
    assert_eq!(
        recv_until(&sock, |m| m.status().is_some()).status(),
        Some(481)
    );
    // Out of any dialog: 200 with what vportal supports.
    sock.send_to(&lost.request("OPTIONS", "", ""), server.sip)
        .unwrap();
    let options = recv_until(&sock, |m| {
        m.values(HeaderName::CSeq).next() == Some("2 OPTIONS")
    });
    assert_eq!(options.status(), Some(200));
    assert!(options.values(HeaderName::Allow).next().is_some());
    // The built-in dialplan's prompts are English.
    assert_eq!(
        options.values(HeaderName::AcceptLanguage).next(),
        Some("en")
    );
}

#[test]
fn sighup_is_ignored_and_sigterm_hangs_up_active_calls_then_exits() {
    let dir = Workdir::new();
    let mut server = ServerProcess::start(&dir, "31100-31198", &[]);
    let (sock, _uac) = call_up(server.sip);
    std::thread::sleep(Duration::from_millis(200));
    // A hangup signal (a closed terminal, a reload asked out of habit) is said and ignored:
    // the server and its call go on.
    server.signal(rustix::process::Signal::HUP);
    server.expect_log("SIGHUP ignored", 1, Duration::from_secs(5));
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "{}",
        server.log()
    );
    assert!(
        !server.log().contains("reason=Shutdown"),
        "{}",
        server.log()
    );
    server.signal(rustix::process::Signal::TERM);
    let bye = recv_until(&sock, |m| m.method() == Some(&Method::Bye));
    sock.send_to(&Uac::ok_to(&bye), server.sip).unwrap();
    let status = server.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(server.log().contains("reason=Shutdown"), "{}", server.log());
    // Not a caller who gave up: the server ended it.
    assert!(
        server.log().contains("outcome=shutdown"),
        "{}",
        server.log()
    );
}

/// A server with `sip.shutdown_grace = grace` and one call, told to stop: its BYE has
/// come and is left unanswered. The caller's socket is kept open with it.
fn stopping_with_a_bye_unanswered(
    dir: &Workdir,
    rtp_ports: &str,
    grace: &str,
) -> (ServerProcess, UdpSocket) {
    let server = with_sip_config(dir, rtp_ports, &format!("shutdown_grace = \"{grace}\"\n"));
    let (sock, _uac) = call_up(server.sip);
    server.signal(rustix::process::Signal::TERM);
    recv_until(&sock, |m| m.method() == Some(&Method::Bye));
    (server, sock)
}

/// A BYE still unanswered when `sip.shutdown_grace` runs out is said, not counted as a call
/// that ended.
#[test]
fn a_stop_with_byes_unanswered_says_so() {
    let dir = Workdir::new();
    let (mut server, _caller) = stopping_with_a_bye_unanswered(&dir, "48320-48329", "1s");
    let status = server.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "{status:?}\n{}", server.log());
    let log = server.log();
    assert!(
        log.contains("SIP stopped with BYEs unanswered") && log.contains("unanswered_byes=1"),
        "{log}"
    );
}

/// A second SIGTERM while the server waits for its calls to end (their BYEs unanswered)
/// ends it at once, saying so.
#[test]
fn a_second_sigterm_exits_at_once() {
    let dir = Workdir::new();
    // It would wait out the 60 s grace.
    let (mut server, _caller) = stopping_with_a_bye_unanswered(&dir, "47370-47379", "60s");
    server.signal(rustix::process::Signal::TERM);
    let status = server.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(status.code(), Some(2), "{}", server.log());
    assert!(
        server.log().contains("second stop signal"),
        "{}",
        server.log()
    );
}

/// The reader of the server's log goes away (a log shipper restarting, `| logger` killed):
/// log lines are lost, the server is not. Before, the first line after made it panic.
#[test]
fn a_log_reader_gone_loses_log_lines_not_the_server() {
    use std::io::BufRead;
    let dir = Workdir::new();
    let mut child = dir
        .serve_command("47321-47329")
        .env("RUST_LOG", "debug")
        .spawn()
        .unwrap();
    let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
    let sip = loop {
        let mut line = String::new();
        assert!(log.read_line(&mut line).unwrap() > 0, "no listening line");
        if let Some(addr) = line.split("listening sip=").nth(1) {
            let addr: String = addr.chars().filter(|c| !c.is_control()).collect();
            let addr = addr.trim().trim_end_matches("[0m");
            break addr.parse::<std::net::SocketAddr>().unwrap();
        }
    };
    drop(log);
    // A call is logged (`incoming call`, …): it is still answered, and so is what follows.
    let (sock, mut uac) = call_up(sip);
    std::thread::sleep(Duration::from_millis(300));
    sock.send_to(&uac.request("BYE", "", ""), sip).unwrap();
    let bye = recv_until(&sock, |m| {
        m.values(HeaderName::CSeq)
            .next()
            .is_some_and(|c| c.ends_with("BYE"))
    });
    assert_eq!(bye.status(), Some(200));
    assert!(child.try_wait().unwrap().is_none(), "the server exited");
    let _ = child.kill();
    let _ = child.wait();
}

/// An RTP range smaller than `max_calls` is warned about at start, and a call beyond it is
/// refused saying the range is full.
#[test]
fn a_full_rtp_range_is_said_to_be_full() {
    let dir = Workdir::new();
    // Two calls: 47330 and 47332 (each with the port above for RTCP).
    let server = ServerProcess::start(&dir, "47330-47333", &[]);
    assert!(
        server
            .log()
            .contains("rtp.ports holds fewer calls than sip.max_calls"),
        "{}",
        server.log()
    );
    let _calls = [
        common::phone::Phone::dial(&server, "8500", "1001"),
        common::phone::Phone::dial(&server, "8500", "1002"),
    ];
    let sock = udp_caller();
    let mut uac = Uac::new(sock.local_addr().unwrap(), server.sip, "8500");
    let offer = uac.offer("sendrecv");
    sock.send_to(&uac.invite(&offer), server.sip).unwrap();
    let refused = recv_until(&sock, |m| m.status().is_some_and(|s| s >= 200));
    assert_eq!(refused.status(), Some(503));
    server.expect_log(
        "every port of rtp.ports is in use",
        1,
        Duration::from_secs(5),
    );
}

#[test]
fn tcp_frames_pipelined_messages_and_closes_on_bad_framing() {
    let dir = Workdir::new();
    let server = ServerProcess::start(&dir, "31200-31298", &[]);
    let mut tcp = TcpStream::connect(server.sip).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut uac = Uac::new(tcp.local_addr().unwrap(), server.sip, "8500");
    uac.transport = "TCP";
    // Two OPTIONS in one write, the second split across two writes.
    let first = uac.request("OPTIONS", "", "");
    let second = uac.request("OPTIONS", "", "");
    let mut data = first.clone();
    data.extend_from_slice(&second[..20]);
    tcp.write_all(&data).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    tcp.write_all(&second[20..]).unwrap();
    let mut framer = vportal::sip::StreamFramer::new();
    let mut got = Vec::new();
    let mut buf = [0_u8; 4_096];
    while got.len() < 2 {
        let n = tcp.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early");
        framer.push(&buf[..n]);
        while let Some(m) = framer.next_message().unwrap() {
            got.push(m);
        }
    }
    assert!(got.iter().all(|m| m.status() == Some(200)));
    let cseqs: Vec<_> = got
        .iter()
        .map(|m| m.values(HeaderName::CSeq).next().unwrap().to_owned())
        .collect();
    assert_eq!(cseqs, ["1 OPTIONS", "2 OPTIONS"]);
    // A negative Content-Length makes the stream unframeable: the server closes it.
    tcp.write_all(b"OPTIONS sip:8500@127.0.0.1 SIP/2.0\r\nContent-Length: -1\r\n\r\n")
        .unwrap();
    let n = tcp.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "connection closed");
}

/// A peer that pipelines a burst (a trunk's many calls on one connection) and reads its
/// answers as they come gets every one: the server reads no faster than it answers, and
/// TCP's flow control holds the rest back, rather than answers being dropped from a full
/// queue (over TCP nothing would resend those requests).
#[test]
fn a_pipelined_burst_over_tcp_gets_every_answer() {
    const BURST: usize = 1_500;
    let dir = Workdir::new();
    let server = ServerProcess::start(&dir, "48350-48359", &[]);
    let mut tcp = TcpStream::connect(server.sip).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut uac = Uac::new(tcp.local_addr().unwrap(), server.sip, "8500");
    uac.transport = "TCP";
    let burst: Vec<u8> = (0..BURST)
        .flat_map(|_| uac.request("OPTIONS", "", ""))
        .collect();
    let mut writer = tcp.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&burst));
    let mut framer = vportal::sip::StreamFramer::new();
    let mut cseqs = Vec::new();
    let mut buf = [0_u8; 65_536];
    while cseqs.len() < BURST {
        let Ok(n @ 1..) = tcp.read(&mut buf) else {
            break;
        };
        framer.push(&buf[..n]);
        while let Some(m) = framer.next_message().unwrap() {
            assert_eq!(m.status(), Some(200));
            cseqs.push(m.values(HeaderName::CSeq).next().unwrap().to_owned());
        }
    }
    sender.join().unwrap().unwrap();
    let expected: Vec<String> = (1..=BURST).map(|n| format!("{n} OPTIONS")).collect();
    assert_eq!(cseqs, expected, "{}", server.log());
    assert!(
        !server.log().contains("messages dropped"),
        "{}",
        server.log()
    );
}

/// The server started in `dir` with these `[sip]` settings.
fn with_sip_config(dir: &Workdir, rtp_ports: &str, sip: &str) -> ServerProcess {
    let config = dir.path().join("vportal.toml");
    std::fs::write(&config, format!("[sip]\n{sip}")).unwrap();
    ServerProcess::start(dir, rtp_ports, &["--config", config.to_str().unwrap()])
}

/// An OPTIONS request for the connection `tcp` to `server`.
fn tcp_options(server: &ServerProcess, tcp: &TcpStream) -> Vec<u8> {
    let mut uac = Uac::new(tcp.local_addr().unwrap(), server.sip, "8500");
    uac.transport = "TCP";
    uac.request("OPTIONS", "", "")
}

/// Connects, sends an OPTIONS, ends its side of the stream: the 200 comes back before the
/// server closes the connection.
#[track_caller]
fn answered_before_close(server: &ServerProcess) {
    let answer = options_then_close(server);
    assert!(answer.starts_with(b"SIP/2.0 200 "), "{answer:?}");
}

/// Everything the server writes on `tcp` until it closes the connection, or resets it (at
/// most `within`).
fn read_to_close(tcp: &mut TcpStream, within: Duration) -> Vec<u8> {
    tcp.set_read_timeout(Some(within)).unwrap();
    let mut all = Vec::new();
    let mut buf = [0_u8; 4_096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return all,
            Err(e) => panic!("still open after {within:?} ({e}); got {all:?}"),
        }
    }
}

/// Whether the server has closed (or reset) `tcp`, by a read that does not wait; panics on
/// anything the server wrote.
fn closed_by_server(tcp: &mut TcpStream) -> bool {
    tcp.set_nonblocking(true).unwrap();
    let mut buf = [0_u8; 4_096];
    let closed = match tcp.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected answer: {}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            true
        }
        Err(e) => panic!("{e}"),
    };
    tcp.set_nonblocking(false).unwrap();
    closed
}

/// A connection that brings no whole message within `tcp_message_timeout` of connecting,
/// or of a message's first byte, is closed long before the idle timeout; one that has
/// spoken is kept for the idle timeout.
#[test]
fn tcp_connections_must_bring_whole_messages_in_time() {
    let dir = Workdir::new();
    let server = with_sip_config(
        &dir,
        "47200-47298",
        "tcp_idle_timeout = \"60s\"\ntcp_message_timeout = \"1s\"\n",
    );
    // Nothing at all, then half a request: both closed within a few seconds.
    let silent = TcpStream::connect(server.sip).unwrap();
    let mut half = TcpStream::connect(server.sip).unwrap();
    let options = tcp_options(&server, &half);
    half.write_all(&options[..options.len() / 2]).unwrap();
    for mut tcp in [silent, half] {
        let answer = read_to_close(&mut tcp, Duration::from_secs(10));
        assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    }
    // A whole request first: answered, and the connection then stays (for the idle time).
    let mut spoken = TcpStream::connect(server.sip).unwrap();
    spoken.write_all(&tcp_options(&server, &spoken)).unwrap();
    spoken
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0_u8; 4096];
    let n = spoken.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"SIP/2.0 200 "),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let err = spoken.read(&mut buf).expect_err("still open 3 s on");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
}

#[test]
fn tcp_answers_before_closing_and_bounds_partial_messages_and_connections() {
    let dir = Workdir::new();
    let server = with_sip_config(
        &dir,
        "31400-31498",
        "tcp_idle_timeout = \"1s\"\nmax_tcp_connections = 2\n",
    );
    let options = |tcp: &TcpStream| tcp_options(&server, tcp);
    // A good request and an unframeable one in one write: the first is still answered,
    // the second gets its 400, and the connection closes. Without Content-Length, too.
    for (content_length, reason) in [
        ("l: -1", "Malformed Content-Length header"),
        ("X-No-Length: 1", "Missing Content-Length header"),
    ] {
        let mut tcp = TcpStream::connect(server.sip).unwrap();
        let mut data = options(&tcp);
        let broken = String::from_utf8(options(&tcp))
            .unwrap()
            .replace("Content-Length: 0", content_length);
        data.extend_from_slice(broken.as_bytes());
        tcp.write_all(&data).unwrap();
        let answer = read_to_close(&mut tcp, Duration::from_secs(5));
        let answer = String::from_utf8_lossy(&answer);
        let lines: Vec<_> = answer
            .lines()
            .filter(|l| l.starts_with("SIP/2.0"))
            .collect();
        assert_eq!(
            lines,
            ["SIP/2.0 200 OK".to_owned(), format!("SIP/2.0 400 {reason}")]
        );
    }
    // A peer that sends a request and ends its side of the stream still gets the answer.
    answered_before_close(&server);
    // Half a message trickling in a byte at a time is closed once `tcp_message_timeout`
    // (capped by the idle timeout: 1 s here) has passed since its first byte, though no
    // single pause is that long. A whole message goes first, so that the deadline for the
    // first message after connecting is not what closes it. Trickled for 6 s, well past
    // that deadline: a server that timed only the pauses would still be reading.
    let mut slow = TcpStream::connect(server.sip).unwrap();
    slow.write_all(&options(&slow)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0_u8; 4096];
    let n = slow.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"SIP/2.0 200 "),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let request = options(&slow);
    let trickled = &request[..60];
    assert!(
        request.len() > trickled.len(),
        "the message must stay partial"
    );
    let mut closed = false;
    for byte in trickled.chunks(1) {
        if slow.write_all(byte).is_err() || closed_by_server(&mut slow) {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        closed,
        "half a message trickled in a byte every 100 ms for 6 s and the connection stayed open"
    );
    // Two connections at most: a third is closed at once; once one goes, a new one is served.
    let held: Vec<_> = (0..2)
        .map(|_| TcpStream::connect(server.sip).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        let mut refused = TcpStream::connect(server.sip).unwrap();
        assert!(read_to_close(&mut refused, Duration::from_secs(5)).is_empty());
    }
    // Refusals are logged once per 10 s, not once each. The line may reach the log a
    // little after the refused connection closed: wait for it, then count.
    server.expect_log("too many TCP connections", 1, Duration::from_secs(5));
    assert_eq!(
        server.log().matches("too many TCP connections").count(),
        1,
        "{}",
        server.log()
    );
    // The metrics count each one.
    let admin = server.admin.expect("the admin side-port");
    let refused = "vportal_sip_dropped_total{reason=\"tcp_connection\"} ";
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let counted = loop {
        let page = common::http::request(admin, "GET", "/metrics", None, None).body;
        let counted = page
            .lines()
            .find_map(|l| l.strip_prefix(refused))
            .map(str::to_owned);
        if counted.as_deref() == Some("5") || std::time::Instant::now() > end {
            break counted;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(counted.as_deref(), Some("5"));
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    answered_before_close(&server);
    server.expect_log("TCP connection idle; closing", 1, Duration::from_secs(5));
}

#[test]
fn tcp_connections_per_source_can_be_capped() {
    let dir = Workdir::new();
    let server = with_sip_config(&dir, "31500-31598", "max_tcp_connections_per_source = 1\n");
    let options = |tcp: &TcpStream| tcp_options(&server, tcp);
    // One connection from 127.0.0.1 is served; a second from the same address is not.
    let mut first = TcpStream::connect(server.sip).unwrap();
    first.write_all(&options(&first)).unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0_u8; 4_096];
    let n = first.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"SIP/2.0 200 "));
    let mut second = TcpStream::connect(server.sip).unwrap();
    assert!(read_to_close(&mut second, Duration::from_secs(5)).is_empty());
    // Once the first has gone (the server keeps a connection closed right after a request
    // for up to 2 s, for the answers still due), the address may connect again: tried until
    // it is served, the server's timer may fire late on a loaded machine.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let mut attempts = Vec::new();
    loop {
        let answer = options_then_close(&server);
        if answer.starts_with(b"SIP/2.0 200 ") {
            break;
        }
        attempts.push(answer);
        assert!(
            std::time::Instant::now() < deadline,
            "never served again: {attempts:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Connects, sends an OPTIONS, ends its side of the stream, and reads until the server
/// closes the connection (at most 5 s): what it answered, nothing if it refused it.
fn options_then_close(server: &ServerProcess) -> Vec<u8> {
    let mut tcp = TcpStream::connect(server.sip).unwrap();
    // A connection refused at once may be gone before the request is written.
    if tcp.write_all(&tcp_options(server, &tcp)).is_err()
        || tcp.shutdown(std::net::Shutdown::Write).is_err()
    {
        return Vec::new();
    }
    read_to_close(&mut tcp, Duration::from_secs(5))
}

#[test]
fn a_tcp_connection_a_call_runs_on_is_not_closed_for_being_idle() {
    let dir = Workdir::new();
    let server = with_sip_config(&dir, "45000-45098", "tcp_idle_timeout = \"1s\"\n");
    // Where the prompts go; nothing reads them.
    let (media, _rtcp) = common::rtp::bind_pair([127, 0, 0, 1].into());
    let mut tcp = TcpStream::connect(server.sip).unwrap();
    let mut uac = Uac::new(tcp.local_addr().unwrap(), server.sip, "8500");
    uac.transport = "TCP";
    uac.media = media.local_addr().unwrap();
    let offer = uac.offer("sendrecv");
    tcp.write_all(&uac.invite(&offer)).unwrap();
    let mut framer = StreamFramer::new();
    let ok = tcp_recv_until(&mut tcp, &mut framer, |m| m.status() == Some(200));
    uac.learn_tag(&ok);
    tcp.write_all(&uac.ack_2xx("")).unwrap();
    // Three idle timeouts without a SIP message either way (the caller is being asked for
    // its mailbox): the connection stays, and the caller's BYE is answered on it.
    std::thread::sleep(Duration::from_secs(3));
    tcp.write_all(&uac.request("BYE", "", "")).unwrap();
    let answer = tcp_recv_until(&mut tcp, &mut framer, |m| m.status().is_some());
    assert_eq!(answer.status(), Some(200));
    // With the call over, the idle timeout closes it again.
    let rest = read_to_close(&mut tcp, Duration::from_secs(5));
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

/// Reads messages from `tcp` until one satisfies `want` (at most 10, 5 s each).
/// With every admin token revoked and none configured, `serve` says so: the side-port would
/// refuse every request.
#[test]
fn serve_warns_when_the_admin_api_has_no_token() {
    let w = Workdir::provisioned(&[]);
    w.run(&["token", "revoke", "admin"]).ok();
    let server = ServerProcess::start(&w, "47000-47098", &[]);
    server.expect_log("the admin API has no token", 1, Duration::from_secs(5));
}

/// RFC 5626 §4.4.1: a double-CRLF keepalive ping over TCP is answered with one CRLF, so a
/// client that times out flows without a pong keeps the connection its call runs on.
#[test]
fn a_tcp_keepalive_ping_gets_a_pong() {
    let w = Workdir::provisioned(&[]);
    let server = ServerProcess::start(&w, "46800-46898", &[]);
    let mut tcp = TcpStream::connect(server.sip).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"\r\n\r\n").unwrap();
    let mut pong = [0_u8; 2];
    tcp.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n");
    // The connection still carries SIP.
    tcp.write_all(&tcp_options(&server, &tcp)).unwrap();
    let answer = tcp_recv_until(&mut tcp, &mut StreamFramer::new(), |_| true);
    assert_eq!(answer.status(), Some(200));
}

/// A caller's TCP connection closes before its ACK: the 200's retransmissions, and the
/// rest of the call, go on one new connection to the Via address (RFC 3261 §18.2.2), not on
/// a new one each; and that one carries the call, so it is not closed for being idle.
#[test]
fn messages_for_a_closed_tcp_connection_share_one_new_one() {
    let w = Workdir::new();
    let server = with_sip_config(&w, "46700-46798", "tcp_idle_timeout = \"1s\"\n");
    // The caller's listening address, in its Via and Contact.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let (media, _rtcp) = common::rtp::bind_pair([127, 0, 0, 1].into());
    let mut uac = Uac::new(listener.local_addr().unwrap(), server.sip, "8500");
    uac.transport = "TCP";
    uac.media = media.local_addr().unwrap();
    let mut first = TcpStream::connect(server.sip).unwrap();
    let offer = uac.offer("sendrecv");
    first.write_all(&uac.invite(&offer)).unwrap();
    let ok = tcp_recv_until(&mut first, &mut StreamFramer::new(), |m| {
        m.status() == Some(200)
    });
    uac.learn_tag(&ok);
    drop(first);
    // The 200 is retransmitted at 0.5, 1.5, 3.5 and 7.5 s: once the old connection is
    // found closed, on a new one; the next one on the same, though it was quiet for longer
    // than the idle timeout.
    let accept = |within: Duration| {
        let deadline = std::time::Instant::now() + within;
        loop {
            match listener.accept() {
                Ok((stream, _)) => break Some(stream),
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => break None,
            }
        }
    };
    let mut back = accept(Duration::from_secs(15)).expect("a new connection for the 200");
    back.set_nonblocking(false).unwrap();
    let mut framer = StreamFramer::new();
    for _ in 0..2 {
        let again = tcp_recv_within(&mut back, &mut framer, Duration::from_secs(10), |m| {
            m.status().is_some()
        });
        assert_eq!(again.status(), Some(200));
    }
    assert!(accept(Duration::ZERO).is_none(), "a second connection");
    // The call goes on over it, idle for longer than the timeout.
    back.write_all(&uac.ack_2xx("")).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    back.write_all(&uac.request("BYE", "", "")).unwrap();
    let answer = tcp_recv_until(&mut back, &mut framer, |m| {
        m.values(HeaderName::CSeq)
            .next()
            .is_some_and(|c| c.ends_with("BYE"))
    });
    assert_eq!(answer.status(), Some(200));
}

/// A flood of UDP requests, always ready first, does not hold back SIP over TCP (nor the
/// timers and call tasks the same loop serves).
#[test]
fn a_udp_flood_does_not_starve_sip_over_tcp() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let w = Workdir::provisioned(&[]);
    let server = ServerProcess::start(&w, "46600-46698", &[]);
    /// Tells the flooders to stop when dropped: as the test ends, or fails.
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = Stop(Arc::clone(&stop));
    let sip = server.sip;
    // Bounded: each flooder stops when told, or after 15 s whatever happens; it says which
    // (true: told to).
    let floods: Vec<_> = (0..3)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                let mut uac = Uac::new(s.local_addr().unwrap(), sip, "8500");
                let requests: Vec<Vec<u8>> =
                    (0..64).map(|_| uac.request("OPTIONS", "", "")).collect();
                let until = std::time::Instant::now() + Duration::from_secs(15);
                let mut sent = 0_usize;
                let told = loop {
                    // The time limit first: told to stop means it was still flooding then.
                    if std::time::Instant::now() >= until {
                        break false;
                    }
                    if stop.load(Ordering::Relaxed) {
                        break true;
                    }
                    for r in &requests {
                        let _ = s.send_to(r, sip);
                    }
                    sent += requests.len();
                };
                (told, sent)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut tcp = TcpStream::connect(server.sip).unwrap();
    tcp.write_all(&tcp_options(&server, &tcp)).unwrap();
    // Longer than the flood lasts: an answer held back until the flood is over is told
    // from one served during it (below), rather than by how long it took.
    let answer = tcp_recv_within(
        &mut tcp,
        &mut StreamFramer::new(),
        Duration::from_secs(20),
        |_| true,
    );
    drop(stopper);
    let floods: Vec<(bool, usize)> = floods.into_iter().map(|f| f.join().unwrap()).collect();
    assert_eq!(answer.status(), Some(200));
    // Served between batches of datagrams, while the flood went on: every flooder was
    // still sending when the answer came (stopped by the test, not by its own time limit).
    assert!(
        floods.iter().all(|&(told, sent)| told && sent > 0),
        "the flood had ended before the answer: {floods:?}"
    );
}

fn tcp_recv_until(
    tcp: &mut TcpStream,
    framer: &mut StreamFramer,
    want: impl Fn(&vportal::sip::Message) -> bool,
) -> vportal::sip::Message {
    tcp_recv_within(tcp, framer, Duration::from_secs(5), want)
}

/// Reads messages from `tcp` until one satisfies `want` (at most 10, `within` each).
fn tcp_recv_within(
    tcp: &mut TcpStream,
    framer: &mut StreamFramer,
    within: Duration,
    want: impl Fn(&vportal::sip::Message) -> bool,
) -> vportal::sip::Message {
    tcp.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0_u8; 4_096];
    for _ in 0..10 {
        let m = loop {
            if let Some(m) = framer.next_message().unwrap() {
                break m;
            }
            let n = tcp.read(&mut buf).expect("a message in time");
            assert_ne!(n, 0, "the server closed the connection");
            framer.push(&buf[..n]);
        };
        if want(&m) {
            return m;
        }
    }
    panic!("the expected message never came");
}

/// The server's open files limits (soft, hard), from `/proc`.
fn open_files_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Two sockets a call: the server raises its soft open files limit to what the calls
/// (`sip.max_calls`, here 100, or as many as the RTP range holds if fewer, here 49) and
/// `sip.max_tcp_connections` need (2 × 49 + 1,024 + 256), and says so when the hard limit
/// does not allow it.
#[test]
fn the_open_files_limit_is_raised_for_the_calls_configured() {
    let config = "[sip]\nmax_calls = 100\n";
    let dir = Workdir::new();
    std::fs::write(dir.path().join("vportal.toml"), config).unwrap();
    let args = ["--config", "vportal.toml"];
    let roomy = ["prlimit", "--nofile=512:2048", "--"];
    let server = ServerProcess::start_wrapped(&dir, &roomy, "46500-46598", &args);
    assert_eq!(open_files_limits(server.child.id()), (1_378, 2_048));
    assert!(
        server
            .log()
            .contains("open files limit raised from=512 to=1378"),
        "{}",
        server.log()
    );
    assert!(!server.log().contains("below what"), "{}", server.log());
    drop(server);

    let tight = ["prlimit", "--nofile=512:1024", "--"];
    let server = ServerProcess::start_wrapped(&dir, &tight, "46500-46598", &args);
    assert_eq!(open_files_limits(server.child.id()), (1_024, 1_024));
    server.expect_log(
        "the open files limit is below what",
        1,
        Duration::from_secs(2),
    );
    assert!(server.log().contains("needed=1378"), "{}", server.log());
}
