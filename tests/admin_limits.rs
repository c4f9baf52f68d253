//! What the admin side-port gives any client, token or not: how long a connection may take
//! or idle, how many may be open at once, and how long a request holds a hashing permit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use vportal::store::{Actor, Pepper, Store, UserFilter};
use vportal::time::Timestamp;

/// An in-process side-port on loopback with its store, a good token and `permits` hashing
/// permits.
struct Api {
    addr: SocketAddr,
    store: Arc<Store>,
    token: String,
    permits: Arc<Semaphore>,
    /// The bulk jobs' permit.
    bulk: Arc<Semaphore>,
    _rt: tokio::runtime::Runtime,
}

impl Api {
    fn start(permits: usize) -> Self {
        let store =
            Arc::new(Store::open_in_memory(Pepper::from_bytes(vec![7; 32]).unwrap(), 1).unwrap());
        let token = store
            .create_token("limits", &Actor::Cli { user: None }, Timestamp::now())
            .unwrap();
        let permits = Arc::new(Semaphore::new(permits));
        let state = common::server::admin_state(Arc::clone(&store), Arc::clone(&permits));
        let bulk = Arc::clone(&state.bulk_permits);
        let (addr, rt) = common::server::admin_in_process(state);
        Self {
            addr,
            store,
            token: token.expose().to_owned(),
            permits,
            bulk,
            _rt: rt,
        }
    }
}

/// Waits (at most `limit`) for the server to close `stream`; returns how long that took, or
/// `None` when it was still open at the end.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0_u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            // An answer (408, 400) then the close, or the close alone: either ends it.
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// Slow and idle clients.

/// Anybody who can reach the port, without a token, could hold connections (a file
/// descriptor and a task each, in the process that also runs SIP and RTP) for ever: by
/// sending a request head slowly, by sending nothing, or by going quiet after a request.
#[test]
fn slow_or_silent_clients_are_disconnected() {
    let api = Api::start(2);
    let limit = Duration::from_secs(40);

    // A request head that never ends (slowloris).
    let mut slow = TcpStream::connect(api.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A connection that never says anything.
    let mut silent = TcpStream::connect(api.addr).unwrap();
    // A keep-alive connection that goes quiet after one request.
    let mut idle = TcpStream::connect(api.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut head = [0_u8; 12];
    idle.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    // A body announced and never sent, to a route that takes no token.
    let mut body = TcpStream::connect(api.addr).unwrap();
    body.write_all(b"POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n{")
        .unwrap();

    for (what, stream) in [
        ("a body that never ends", &mut body),
        ("a half-sent request head", &mut slow),
        ("a silent connection", &mut silent),
        ("an idle keep-alive connection", &mut idle),
    ] {
        let took = closed_within(stream, limit);
        assert!(took.is_some(), "{what} was still open after {limit:?}");
    }
    // The port still answers.
    let r = common::http::request(api.addr, "GET", "/healthz", None, None);
    assert_eq!(r.status, 200);
}

/// A client with a good token that sends a request head and then a body it never finishes
/// is answered 408 once [`vportal::admin::JSON_BODY_TIME`] is up, and the connection is
/// closed: otherwise it would hold the connection (one of its client's 16) for ever.
#[test]
fn a_body_never_finished_is_timed_out() {
    let api = Api::start(2);
    let mut stream = TcpStream::connect(api.addr).unwrap();
    let started = Instant::now();
    write!(
        stream,
        "POST /api/v1/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 600\r\n\r\n{{\"extension\": ",
        api.token
    )
    .unwrap();
    // Dribbled, a byte a second: progress does not keep it open.
    let dribble = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..30 {
                std::thread::sleep(Duration::from_secs(1));
                if stream.write_all(b" ").is_err() {
                    break;
                }
            }
        })
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    // RFC 9110 §15.5.9: the close is announced, so a client does not reuse the connection.
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
    assert!(
        took >= vportal::admin::JSON_BODY_TIME && took < vportal::admin::JSON_BODY_TIME * 2,
        "closed after {took:?}"
    );
    drop(stream);
    dribble.join().unwrap();
    let users = api.store.users(UserFilter::default(), Timestamp::now());
    assert!(users.unwrap().is_empty(), "nothing was created");
}

/// HTTP/2 is not spoken (hyper has no timeout for an HTTP/2 connection idle after its first
/// request): a client opening with the HTTP/2 preface gets no SETTINGS frame, and the
/// connection closes at once rather than after [`vportal::admin::CLIENT_TIMEOUT`].
#[test]
fn http2_is_not_spoken() {
    let api = Api::start(2);
    let mut h2 = TcpStream::connect(api.addr).unwrap();
    // The preface and an empty SETTINGS frame.
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    // Half the client timeout: a server that closes only when that runs out has not yet.
    h2.set_read_timeout(Some(vportal::admin::CLIENT_TIMEOUT / 2))
        .unwrap();
    let mut answer = Vec::new();
    // The end of the stream (or a reset) is the server closing; a read that timed out is
    // the server holding the connection open.
    match h2.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("not closed ({e}); received {answer:?}"),
    }
    let settings_frame = answer.len() >= 9 && answer[3] == 0x04;
    assert!(!settings_frame, "answered as HTTP/2: {answer:?}");
}

// ---------------------------------------------------------------------------------------
// Hashing permits.

/// The permit a bulk reset takes must stay taken for as long as its hashing runs, even when
/// the client goes away meanwhile (the work then still completes, as the README says):
/// otherwise clients that hang up could start bulk jobs side by side, each hashing on every
/// core. And it is the bulk jobs' own permit, never one of the calls' slots: bulk jobs
/// running at once would otherwise hold every slot and leave logins waiting until they end.
#[test]
fn a_bulk_reset_keeps_its_own_permit_until_done_and_leaves_the_calls_slots_free() {
    use vportal::store::{AuditQuery, Event, Extension, NewUser};

    let api = Api::start(1);
    let (store, permits, bulk) = (&api.store, &api.permits, &api.bulk);
    const MAILBOXES: usize = 150;
    for i in 0..MAILBOXES {
        let ext = Extension::parse(&format!("{}", 2000 + i)).unwrap();
        store
            .create_user(
                NewUser::new(ext),
                &Actor::Cli { user: None },
                Timestamp::now(),
            )
            .unwrap();
    }
    let temporary_sets = || {
        store
            .audit(&AuditQuery {
                event: Some(Event::parse("passcode.temporary_set").unwrap()),
                limit: Some(10_000),
                ..AuditQuery::default()
            })
            .unwrap()
            .len()
    };

    // Two bulk resets (≈ MAILBOXES hashes each on one core); the first one's client hangs
    // up once it runs, the second waits its turn.
    let body = br#"{"all":true,"confirm":"reset every mailbox"}"#;
    let send = || {
        let mut stream = TcpStream::connect(api.addr).unwrap();
        let head = format!(
            "POST /api/v1/users/reset HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            api.token,
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        stream
    };
    let first = send();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bulk.available_permits() != 0 {
        assert!(Instant::now() < deadline, "the reset never took its permit");
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(first);
    let mut second = send();

    // Until the first reset is committed, its permit stays taken; the calls' slot stays
    // free throughout, for a login to take.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let free = bulk.available_permits() == 1;
        let done = temporary_sets() >= MAILBOXES;
        assert_eq!(
            permits.available_permits(),
            1,
            "a bulk reset took a call's slot"
        );
        if done {
            break;
        }
        assert!(
            !free,
            "the permit was given back while the abandoned reset still hashed \
             ({} of {MAILBOXES} committed)",
            temporary_sets()
        );
        assert!(
            Instant::now() < deadline,
            "the abandoned reset never completed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The second one ran after it, and answered.
    second
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head = [0_u8; 12];
    second.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert_eq!(temporary_sets(), 2 * MAILBOXES);
    assert_eq!(permits.available_permits(), 1);
}

/// A client that sends requests and never reads the answers does not keep its connection:
/// once a write has waited `CLIENT_TIMEOUT` for it to read, the connection is closed.
#[test]
fn a_client_that_reads_nothing_is_disconnected() {
    let api = Api::start(2);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4_096).unwrap();
    socket.connect(&api.addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // Far more answers than the buffers on the way hold; the server stops reading the
    // requests once it cannot write, and this write then gives up.
    let requests = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(100_000);
    let _ = stream.write_all(&requests);
    std::thread::sleep(vportal::admin::CLIENT_TIMEOUT + Duration::from_secs(3));
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)).is_some(),
        "kept open while the client read nothing"
    );
}

// ---------------------------------------------------------------------------------------
// Connections.

/// A connection to `to` from `from` (any loopback address), a request sent on it.
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    stream
}

/// A connection to `to` from `from`, served one request.
fn served_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let mut stream = connect_from(from, to);
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "from {from:?}");
    stream
}

/// Whether a connection from `from` is closed at once rather than served.
fn refused_from(from: [u8; 4], to: SocketAddr) -> bool {
    closed_within(&mut connect_from(from, to), Duration::from_secs(3)).is_some()
}

/// However many connections clients open, the side-port keeps at most `MAX_CONNECTIONS`:
/// further ones are closed at once, and the port serves again as soon as some are closed.
#[test]
fn connections_beyond_the_limit_are_closed_at_once() {
    let api = Api::start(2);
    let max = vportal::admin::MAX_CONNECTIONS;
    let per_client = vportal::admin::MAX_CONNECTIONS_PER_CLIENT;
    // As many clients as it takes, each with all it may have.
    let clients = max.div_ceil(per_client);
    let mut held: Vec<TcpStream> = (0..max)
        .map(|i| served_from([127, 0, 1, 1 + (i % clients) as u8], api.addr))
        .collect();
    assert!(
        refused_from([127, 0, 2, 1], api.addr),
        "connection {} was kept open beyond the limit",
        max + 1
    );
    held.truncate(max - 1);
    std::thread::sleep(Duration::from_millis(200));
    let r = common::http::request(api.addr, "GET", "/healthz", None, None);
    assert_eq!(r.status, 200);
}

/// One client may hold `MAX_CONNECTIONS_PER_CLIENT` of them, not every one: it cannot take
/// the API, `/healthz` included, away from everyone else.
#[test]
fn one_client_cannot_hold_every_connection() {
    let api = Api::start(2);
    let per_client = vportal::admin::MAX_CONNECTIONS_PER_CLIENT;
    let mut held: Vec<TcpStream> = (0..per_client)
        .map(|_| served_from([127, 0, 3, 1], api.addr))
        .collect();
    assert!(refused_from([127, 0, 3, 1], api.addr), "one too many kept");
    // Another client is served meanwhile; the first again once it closes one.
    drop(served_from([127, 0, 3, 2], api.addr));
    held.pop();
    std::thread::sleep(Duration::from_millis(200));
    held.push(served_from([127, 0, 3, 1], api.addr));
}
