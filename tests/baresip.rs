//! baresip, a real softphone, against `vportal serve` on loopback, unchanged: its SIP, its
//! SDP offer (PCMU, PCMA, telephone-event), its RFC 4733 keys and its RTP.
//!
//! baresip runs headless with the modules an operator's softphone would have (G.711, the
//! menu commands, the `ctrl_tcp` control port) plus a sine tone as its microphone and the
//! `sndfile` module recording what it hears. The test drives it over `ctrl_tcp` (netstring
//! JSON commands, events such as `CALL_ESTABLISHED`) the way a person drives it from the
//! keyboard: dial, key digits with `sndcode`, wait for the server's hang-up.
//!
//! baresip is a required tool here (Debian package `baresip-core`, installed by
//! `tests/run-all.sh`): a missing tool fails the test rather than skipping it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::ServerProcess;
use common::{Workdir, event_names};
use serde_json::{Value, json};
use vportal::media::g711::{self, Law};
use vportal::media::prompts::PromptSet;

/// How long one step of a call (a prompt, a group of keys, the hash) may take.
const STEP: Duration = Duration::from_secs(20);

/// A headless baresip with its control connection.
struct Baresip {
    child: Child,
    ctrl: TcpStream,
    /// Control bytes received and not yet parsed.
    pending: Vec<u8>,
    /// Events received and not yet waited for.
    events: Vec<Value>,
    /// Where `sndfile` records the calls.
    recordings: PathBuf,
}

impl Baresip {
    /// Starts baresip in `dir` (its configuration folder and recordings) offering `codecs`
    /// (baresip's names, e.g. `PCMA,PCMU`) and waits (at most 10 s) for its control port.
    fn start(dir: &Path, codecs: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        // A port the system picks for the control connection (baresip needs it named).
        let ctrl_port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "poll_method epoll\n\
             net_interface 127.0.0.1\n\
             sip_listen 127.0.0.1:0\n\
             rtp_ports 33200-33298\n\
             audio_source ausine,440\n\
             ausrc_srate 48000\n\
             ausrc_channels 2\n\
             audio_player aubridge,speaker\n\
             audio_alert aubridge,speaker\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module ausine.so\n\
             module aubridge.so\n\
             module sndfile.so\n\
             module menu.so\n\
             module ctrl_tcp.so\n\
             module_app account.so\n\
             ctrl_tcp_listen 127.0.0.1:{ctrl_port}\n\
             snd_path {}\n",
            dir.display()
        );
        std::fs::write(dir.join("config"), config).unwrap();
        std::fs::write(
            dir.join("accounts"),
            format!("<sip:5551001@127.0.0.1>;regint=0;audio_codecs={codecs}\n"),
        )
        .unwrap();
        let child = Command::new("baresip")
            // Quits by itself after two minutes should the test die without stopping it.
            .args(["-f", dir.to_str().unwrap(), "-t", "120"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "baresip is required for this test: install it (Debian/Ubuntu: apt-get install \
                 baresip-core), or run tests/run-all.sh",
            );
        let started = Instant::now();
        let ctrl = loop {
            match TcpStream::connect(("127.0.0.1", ctrl_port)) {
                Ok(s) => break s,
                Err(_) if started.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("baresip's control port did not open: {e}"),
            }
        };
        ctrl.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Self {
            child,
            ctrl,
            pending: Vec::new(),
            events: Vec::new(),
            recordings: dir.to_owned(),
        }
    }

    /// Runs one `ctrl_tcp` command and waits for baresip to accept it.
    fn command(&mut self, command: &str, params: &str) {
        let body = json!({ "command": command, "params": params, "token": command }).to_string();
        self.ctrl
            .write_all(format!("{}:{body},", body.len()).as_bytes())
            .unwrap();
        let response = self
            .wait(|m| m["response"] == true, STEP)
            .unwrap_or_else(|| panic!("no answer to {command}"));
        assert_eq!(response["ok"], true, "{command} {params}: {response}");
    }

    /// Waits (at most `within`) for a message `matches`, keeping the others for later.
    fn wait(&mut self, matches: impl Fn(&Value) -> bool, within: Duration) -> Option<Value> {
        let end = Instant::now() + within;
        loop {
            if let Some(i) = self.events.iter().position(&matches) {
                return Some(self.events.remove(i));
            }
            if Instant::now() >= end {
                return None;
            }
            self.read();
        }
    }

    /// Waits (at most `within`) for the event `kind`, e.g. `CALL_CLOSED`.
    fn event(&mut self, kind: &str, within: Duration) -> Option<Value> {
        self.wait(|m| m["event"] == true && m["type"] == kind, within)
    }

    /// Reads what the control connection has (for up to 100 ms) and parses its netstrings.
    fn read(&mut self) {
        let mut buf = [0_u8; 4_096];
        match self.ctrl.read(&mut buf) {
            Ok(0) => panic!("baresip closed its control connection"),
            Ok(n) => self.pending.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("baresip control connection: {e}"),
        }
        while let Some(colon) = self.pending.iter().position(|&b| b == b':') {
            let len: usize = std::str::from_utf8(&self.pending[..colon])
                .unwrap()
                .parse()
                .expect("a netstring length");
            let end = colon + 1 + len;
            if self.pending.len() <= end {
                break;
            }
            assert_eq!(self.pending[end], b',', "a netstring ends with a comma");
            let message = serde_json::from_slice(&self.pending[colon + 1..end]).unwrap();
            self.events.push(message);
            self.pending.drain(..=end);
        }
    }

    /// Calls the voice portal (8500) at `server` and waits until the call is up.
    fn dial(&mut self, server: SocketAddr) {
        self.command("dial", &format!("sip:8500@{server}"));
        assert!(
            self.event("CALL_ESTABLISHED", STEP).is_some(),
            "the call was not answered"
        );
    }

    /// Keys `digits` (RFC 4733, as baresip sends them) and waits until the server heard
    /// them all, one `key pressed` line each.
    fn keys(&mut self, server: &ServerProcess, digits: &str) {
        let heard = server.log().matches("key pressed").count();
        self.command("sndcode", digits);
        server.expect_log("key pressed", heard + digits.len(), STEP);
    }

    /// Keys `mailbox#` and `passcode#` and waits until the server logged the mailbox's
    /// login number `nth`.
    fn log_in(&mut self, server: &ServerProcess, mailbox: &str, passcode: &str, nth: usize) {
        self.keys(server, &format!("{mailbox}#"));
        self.keys(server, &format!("{passcode}#"));
        server.expect_log(&format!("logged in mailbox={mailbox}"), nth, STEP);
    }

    /// Presses `*` in the menu (goodbye), waits for the server to hang up, quits and returns
    /// what baresip heard.
    fn goodbye(mut self, server: &ServerProcess) -> Vec<i16> {
        self.keys(server, "*");
        assert!(
            self.event("CALL_CLOSED", STEP).is_some(),
            "the server did not hang up"
        );
        self.quit()
    }

    /// Quits baresip (closing its recordings) and returns what it heard in the calls:
    /// 16-bit samples at 8 kHz, one call after the other.
    fn quit(mut self) -> Vec<i16> {
        self.command("quit", "");
        let end = Instant::now() + STEP;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < end, "baresip did not quit");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut heard = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(&self.recordings)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "baresip recorded nothing");
        for file in files {
            let mut wav = hound::WavReader::open(&file).unwrap();
            let spec = wav.spec();
            assert_eq!((spec.sample_rate, spec.channels), (8_000, 1), "{spec:?}");
            heard.extend(wav.samples::<i16>().map(Result::unwrap));
        }
        heard
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `heard` holds the first 0.4 s of the prompt `id` as the server sends it in `law`
/// and a G.711 decoder restores it, sample for sample: every packet of it arrived, in order,
/// in the negotiated codec. Decoders differ only at μ-law's quietest level (baresip's gives
/// ±2 where G.711 says 0), hence the tolerance of 2 in 32,768. (The end of the last prompt
/// may still sit in baresip's jitter buffer when the server's BYE arrives.)
fn heard_prompt(heard: &[i16], law: Law, id: &str) -> bool {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/en"));
    let prompts = PromptSet::from_files(dir, |p| std::fs::read(p)).unwrap();
    let mut sent = Vec::new();
    g711::decode(law, prompts.get(id).unwrap().encoded(law), &mut sent);
    let start = &sent[..3_200];
    heard.windows(start.len()).any(|w| {
        w.iter()
            .zip(start)
            .all(|(&h, &s)| (i32::from(h) - i32::from(s)).abs() <= 2)
    })
}

#[test]
fn baresip_turns_a_temporary_passcode_into_a_pin_and_logs_in_with_it() {
    let w = Workdir::provisioned(&[("1001", "77388", true)]);
    let server = ServerProcess::start(&w, "33000-33098", &["--no-admin"]);

    // First call, PCMU: log in with the temporary passcode, choose 73399, hang up from the
    // menu with `*`; the server says goodbye and hangs up.
    let mut phone = Baresip::start(&w.path().join("pcmu"), "PCMU");
    phone.dial(server.sip);
    phone.log_in(&server, "1001", "77388", 1);
    phone.keys(&server, "73399#");
    phone.keys(&server, "73399#");
    server.expect_log("passcode change extension=1001 outcome=Changed", 1, STEP);
    let heard = phone.goodbye(&server);

    let log = server.log();
    assert!(log.contains("media agreed codec=Pcmu"), "{log}");
    assert!(
        log.contains("call ended reason=Hangup outcome=changed mailbox=1001"),
        "the server ended the call:\n{log}"
    );
    assert_eq!(
        log.matches("method=\"rfc4733\"").count(),
        log.matches("key pressed").count()
    );
    // Keys barge into the prompts, but the goodbye plays out.
    assert!(
        heard_prompt(&heard, Law::Ulaw, "goodbye"),
        "baresip heard no goodbye"
    );

    let u = w.user("1001");
    assert_eq!(u["temporary"], false, "{u}");
    let events = w.audit("1001");
    assert_eq!(
        &event_names(&events)[2..],
        ["login.success", "passcode.changed"]
    );
    assert_eq!(events[2]["outcome"], "ok_temporary");
    assert_eq!(events[3]["detail"], "from_temporary");
    for e in &events[2..] {
        assert_eq!(e["actor"], "caller");
        // baresip's SIP source on loopback, never another address.
        assert!(
            e["source"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{e}"
        );
    }

    // Second call, PCMA: the new PIN logs in (a permanent one: straight to the menu).
    let mut phone = Baresip::start(&w.path().join("pcma"), "PCMA");
    phone.dial(server.sip);
    phone.log_in(&server, "1001", "73399", 2);
    let heard = phone.goodbye(&server);
    let log = server.log();
    assert!(log.contains("media agreed codec=Pcma"), "{log}");
    assert!(
        heard_prompt(&heard, Law::Alaw, "goodbye"),
        "baresip heard no goodbye"
    );
    let events = w.audit("1001");
    assert_eq!(event_names(&events)[4..], ["login.success"]);
    assert_eq!(events[4]["outcome"], "ok");
    assert!(
        !server.log_reveals("77388") && !server.log_reveals("73399"),
        "no passcode in the log"
    );
}
