//! `Server` run inside the test process, where a test can reach what the binary keeps to
//! itself: here the hashing permits, held to stand for a long queue of logins.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::log::MemoryLog;
use common::uac::{Uac, parse};
use vportal::config::Config;
use vportal::ivr::dialplan::{DEFAULT_DIALPLAN, Dialplan};
use vportal::media::prompts::PromptSet;
use vportal::server::{Server, SipSockets};
use vportal::store::{Actor, Extension, NewUser, Passcode, PasscodeSpec, Pepper, Store};
use vportal::time::Timestamp;

fn ext(s: &str) -> Extension {
    Extension::parse(s).unwrap()
}

/// Keys as SIP INFO, 30 ms apart.
fn info(uac: &mut Uac, sip: &UdpSocket, server: SocketAddr, keys: &str) {
    for key in keys.chars() {
        let request = uac.request("INFO", "application/dtmf", &key.to_string());
        sip.send_to(&request, server).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// A change confirmed (the new PIN keyed twice) is stored however long it waits for the
/// hashing core after the caller hung up, and the call then counts as `changed`.
#[test]
fn a_change_that_waits_long_after_the_hang_up_is_stored_and_counted() {
    let log = MemoryLog::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let store =
        Arc::new(Store::open_in_memory(Pepper::from_bytes(vec![4; 32]).unwrap(), 1).unwrap());
    let temporary = PasscodeSpec::given(Passcode::new("4826".to_owned()).unwrap(), true);
    let admin = Actor::Cli { user: None };
    let new_user = NewUser::new(ext("1001")).with_passcode(temporary);
    store
        .create_user(new_user, &admin, Timestamp::now())
        .unwrap();
    let config = Config::parse(
        "[sip]\nlisten = \"127.0.0.1:0\"\n[rtp]\nports = \"33700-33798\"\n\
         [store]\nhash_concurrency = 1\n",
    )
    .unwrap();
    let dialplan = Arc::new(Dialplan::parse(DEFAULT_DIALPLAN, "built-in").unwrap());
    let prompts = HashMap::from([("en".to_owned(), Arc::new(PromptSet::built_in().unwrap()))]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (server_sip, permits) = runtime.block_on(async {
        let sockets = SipSockets::bind(&config.sip).await.unwrap();
        let server = Server::new(sockets, &config, dialplan, Arc::clone(&store), prompts).unwrap();
        let found = (server.sip_addr(), server.hash_permits());
        tokio::spawn(server.run(std::future::pending()));
        found
    });

    let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    sip.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut uac = Uac::new(sip.local_addr().unwrap(), server_sip, "8500");
    uac.user = "1001".to_owned();
    uac.media = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let offer = uac.offer("sendrecv");
    sip.send_to(&uac.invite(&offer), server_sip).unwrap();
    let mut buf = [0_u8; 65_535];
    let ok = loop {
        let (n, _) = sip.recv_from(&mut buf).unwrap();
        let m = parse(&buf[..n]);
        if m.status() == Some(200) {
            break m;
        }
    };
    uac.learn_tag(&ok);
    sip.send_to(&uac.ack_2xx(""), server_sip).unwrap();
    info(&mut uac, &sip, server_sip, "1001#4826#");
    let logged_in = log.line("logged in mailbox=1001", Duration::from_secs(10));
    assert!(logged_in.is_some(), "{}", log.text());

    // Every hashing permit is taken (a long queue of logins): the change keyed now waits.
    let held = runtime
        .block_on(Arc::clone(&permits).acquire_many_owned(2))
        .unwrap();
    info(&mut uac, &sip, server_sip, "5937#5937#");
    sip.send_to(&uac.request("BYE", "", ""), server_sip)
        .unwrap();
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        store
            .user(&ext("1001"), Timestamp::now())
            .unwrap()
            .unwrap()
            .temporary
    );
    drop(held);
    let ended = log.line("call ended", Duration::from_secs(10));
    let ended = ended.unwrap_or_else(|| panic!("{}", log.text()));
    assert!(ended.contains("outcome=changed"), "{ended}");
    assert!(
        !store
            .user(&ext("1001"), Timestamp::now())
            .unwrap()
            .unwrap()
            .temporary
    );
}
