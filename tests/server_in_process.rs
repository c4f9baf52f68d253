//! `Server` run inside the test process, where a test can reach what the binary keeps to
//! itself: the hashing permits, held to stand for a long queue of logins, and the list of
//! active calls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::log::MemoryLog;
use common::uac::{Uac, parse};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vportal::config::Config;
use vportal::ivr::dialplan::{DEFAULT_DIALPLAN, Dialplan};
use vportal::media::prompts::PromptSet;
use vportal::server::{ActiveCalls, Server, ServerError, SipSockets};
use vportal::store::{
    Actor, AuditQuery, Extension, NewUser, Passcode, PasscodeSpec, Pepper, Store,
};
use vportal::time::Timestamp;

/// The log of every server in this process (one subscriber for the whole process).
fn log() -> &'static MemoryLog {
    static LOG: OnceLock<MemoryLog> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = MemoryLog::default();
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_env_filter("info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        log
    })
}

fn ext(s: &str) -> Extension {
    Extension::parse(s).unwrap()
}

/// A server on its own runtime, mailbox 1001 on temporary passcode 4826, one hashing core.
struct InProcess {
    runtime: tokio::runtime::Runtime,
    store: Arc<Store>,
    sip: SocketAddr,
    permits: Arc<Semaphore>,
    calls: Arc<ActiveCalls>,
    /// Starts the server's shutdown (as SIGTERM does in the binary).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    running: Option<tokio::task::JoinHandle<Result<(), ServerError>>>,
}

impl InProcess {
    fn start(rtp_ports: &str) -> Self {
        let pepper = Pepper::from_bytes(vec![4; 32]).unwrap();
        Self::start_on(rtp_ports, Store::open_in_memory(pepper, 1).unwrap())
    }

    /// [`InProcess::start`] on `store`.
    fn start_on(rtp_ports: &str, store: Store) -> Self {
        log();
        let store = Arc::new(store);
        let temporary = PasscodeSpec::given(Passcode::new("4826".to_owned()).unwrap(), true);
        let admin = Actor::Cli { user: None };
        let new_user = NewUser::new(ext("1001")).with_passcode(temporary);
        store
            .create_user(new_user, &admin, Timestamp::now())
            .unwrap();
        let config = Config::parse(&format!(
            "[sip]\nlisten = \"127.0.0.1:0\"\n[rtp]\nports = \"{rtp_ports}\"\n\
             [store]\nhash_concurrency = 1\n"
        ))
        .unwrap();
        let dialplan = Arc::new(Dialplan::parse(DEFAULT_DIALPLAN, "built-in").unwrap());
        let prompts = HashMap::from([("en".to_owned(), Arc::new(PromptSet::built_in().unwrap()))]);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let server = runtime.block_on(async {
            let sockets = SipSockets::bind(&config.sip).await.unwrap();
            Server::new(sockets, &config, dialplan, Arc::clone(&store), prompts).unwrap()
        });
        let (sip, permits, calls) = (
            server.sip_addr(),
            server.hash_permits(),
            server.active_calls(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = runtime.spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            runtime,
            store,
            sip,
            permits,
            calls,
            stop: Some(stop),
            running: Some(running),
        }
    }

    /// Shuts the server down and waits until `Server::run` returns (when the binary would
    /// exit).
    fn shut_down(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        let ran = self.runtime.block_on(self.running.take().unwrap());
        ran.unwrap().unwrap();
    }

    /// Takes every hashing permit (a long queue of logins): store work waits until dropped.
    fn hold_hashing(&self) -> OwnedSemaphorePermit {
        let all = Arc::clone(&self.permits).acquire_many_owned(2);
        self.runtime.block_on(all).unwrap()
    }

    fn temporary(&self) -> bool {
        let user = self.store.user(&ext("1001"), Timestamp::now()).unwrap();
        user.unwrap().temporary
    }

    /// Waits up to 10 s until no call is listed as active.
    fn no_active_calls(&self) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while !self.calls.list().is_empty() {
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

/// A caller on mailbox 1001 who keys by SIP INFO.
struct Caller {
    uac: Uac,
    sip: UdpSocket,
    server: SocketAddr,
    /// Where the server's RTP and RTCP go (unread).
    _media: (UdpSocket, UdpSocket),
}

impl Caller {
    /// Dials 8500 and ACKs the 200.
    fn dial(server: &InProcess) -> Self {
        Self::dial_offering(server, true)
    }

    /// Dials 8500 with an SDP offer, or without one (a late offer: the server's is in the
    /// 200), and ACKs the 200 without SDP.
    fn dial_offering(server: &InProcess, offering: bool) -> Self {
        let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
        sip.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut uac = Uac::new(sip.local_addr().unwrap(), server.sip, "8500");
        uac.user = "1001".to_owned();
        let media = common::rtp::bind_pair([127, 0, 0, 1].into());
        uac.media = media.0.local_addr().unwrap();
        let offer = if offering {
            uac.offer("sendrecv")
        } else {
            String::new()
        };
        sip.send_to(&uac.invite(&offer), server.sip).unwrap();
        let mut buf = [0_u8; 65_535];
        let ok = loop {
            let (n, _) = sip.recv_from(&mut buf).unwrap();
            let m = parse(&buf[..n]);
            if m.status() == Some(200) {
                break m;
            }
        };
        uac.learn_tag(&ok);
        sip.send_to(&uac.ack_2xx(""), server.sip).unwrap();
        Self {
            uac,
            sip,
            server: server.sip,
            _media: media,
        }
    }

    /// Keys as SIP INFO, `gap` apart.
    fn keys(&mut self, keys: &str, gap: Duration) {
        for key in keys.chars() {
            let request = self
                .uac
                .request("INFO", "application/dtmf", &key.to_string());
            self.sip.send_to(&request, self.server).unwrap();
            std::thread::sleep(gap);
        }
    }

    fn hang_up(&mut self) {
        let bye = self.uac.request("BYE", "", "");
        self.sip.send_to(&bye, self.server).unwrap();
    }

    /// This call's log line containing `needle`, waiting up to 10 s for it.
    fn log_line(&self, needle: &str) -> String {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let text = log().text();
            let mine = text
                .lines()
                .find(|l| l.contains(&self.uac.call_id) && l.contains(needle));
            if let Some(line) = mine {
                return line.to_owned();
            }
            assert!(
                Instant::now() < end,
                "no {needle:?} for this call in:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A caller logs in, then, with the hashing core taken (the permits returned), keys a new PIN
/// twice and hangs up; returns once the call has gone.
fn change_confirmed_then_hang_up(server: &InProcess) -> (Caller, OwnedSemaphorePermit) {
    let mut caller = Caller::dial(server);
    caller.keys("1001#4826#", Duration::from_millis(30));
    caller.log_line("logged in mailbox=1001");
    let held = server.hold_hashing();
    caller.keys("5937#5937#", Duration::from_millis(30));
    caller.hang_up();
    assert!(server.no_active_calls());
    (caller, held)
}

/// A change confirmed (the new PIN keyed twice) is stored however long it waits for the
/// hashing core after the caller hung up, and the call then counts as `changed`.
#[test]
fn a_change_that_waits_long_after_the_hang_up_is_stored_and_counted() {
    let server = InProcess::start("33700-33798");
    let (caller, held) = change_confirmed_then_hang_up(&server);
    // Longer than a call once waited for its store work (5 s) before giving up on it.
    std::thread::sleep(Duration::from_secs(6));
    assert!(server.temporary());
    drop(held);
    let ended = caller.log_line("call ended");
    assert!(ended.contains("outcome=changed"), "{ended}");
    assert!(!server.temporary());
}

/// A whole change keyed during the passcode check, then a hang-up while the check still
/// waits for the hashing core: the check is given up (nobody would hear it; callers who
/// key a passcode and hang up at once must not queue hashing work past every limit on
/// calls), so nothing is checked, audited or counted, and nothing keyed ahead of its
/// answer is acted on: the temporary passcode stays.
#[test]
fn hanging_up_before_the_check_hashes_gives_it_up_and_drops_a_change_typed_ahead() {
    let server = InProcess::start("33800-33898");
    let mut caller = Caller::dial(&server);
    let held = server.hold_hashing();
    caller.keys("1001#4826#5937#5937#", Duration::ZERO);
    caller.hang_up();
    assert!(server.no_active_calls());
    let ended = caller.log_line("call ended");
    assert!(ended.contains("outcome=abandoned"), "{ended}");
    // Given up while the core was still taken: the permits come back untouched.
    assert_eq!(server.permits.available_permits(), 0);
    drop(held);
    assert_eq!(server.permits.available_permits(), 2);
    assert!(server.temporary());
    let audit = server.store.audit(&AuditQuery::default()).unwrap();
    let events: Vec<_> = audit.iter().map(|e| e.event.as_str()).collect();
    assert!(
        !events.iter().any(|e| e.starts_with("login.")),
        "{events:?}"
    );
    assert!(!events.contains(&"passcode.changed"), "{events:?}");
}

/// A change confirmed while another process holds the database's write lock longer than a
/// write waits is tried again, and stored once the lock goes.
#[test]
fn a_change_confirmed_while_the_database_is_busy_is_stored_when_it_frees() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.db");
    let pepper = Pepper::from_bytes(vec![4; 32]).unwrap();
    let store = Store::open(&path, pepper, true, 1)
        .unwrap()
        .with_busy_timeout(Duration::from_millis(300));
    let server = InProcess::start_on("47350-47360", store);
    let mut caller = Caller::dial(&server);
    caller.keys("1001#4826#", Duration::from_millis(30));
    caller.log_line("logged in mailbox=1001");
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    caller.keys("5937#5937#", Duration::from_millis(30));
    caller.hang_up();
    caller.log_line("trying the passcode change again");
    assert!(server.temporary());
    other.execute_batch("ROLLBACK").unwrap();
    let ended = caller.log_line("call ended");
    assert!(ended.contains("outcome=changed"), "{ended}");
    assert!(!server.temporary());
}

/// A change confirmed just before the server is told to stop, while the hashing core is
/// busy for longer than calls are waited for at shutdown (2 s), is stored before the server
/// returns (and the process exits).
#[test]
fn a_change_waiting_for_the_hashing_core_is_stored_before_the_server_stops() {
    let mut server = InProcess::start("33900-33998");
    let (_caller, held) = change_confirmed_then_hang_up(&server);
    let released = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(4));
        drop(held);
    });
    server.shut_down();
    assert!(!server.temporary(), "the confirmed change was not stored");
    released.join().unwrap();
    assert!(
        log()
            .text()
            .contains("storing the passcode changes callers confirmed and the audit rows still being written writes=1")
    );
}

/// A late offer (an INVITE without SDP) whose ACK brings no answer: no media can start, so
/// the server ends the call with BYE, and it counts as `error`: the server ended it, the
/// caller did not abandon it.
#[test]
fn a_call_whose_ack_brings_no_answer_is_ended_as_an_error() {
    let server = InProcess::start("48360-48398");
    let caller = Caller::dial_offering(&server, false);
    let mut buf = [0_u8; 65_535];
    let bye = loop {
        let (n, _) = caller.sip.recv_from(&mut buf).unwrap();
        let m = parse(&buf[..n]);
        if m.method().is_some_and(|m| m.as_str() == "BYE") {
            break m;
        }
    };
    assert_eq!(
        bye.values(vportal::sip::HeaderName::CallId).next(),
        Some(caller.uac.call_id.as_str())
    );
    let ended = caller.log_line("call ended");
    assert!(
        ended.contains("reason=MediaFailed") && ended.contains("outcome=error"),
        "{ended}"
    );
}
