//! Runs the real `vportal serve` for socket-level tests: on loopback, on a port the system
//! picks, in a temporary directory, stopped when dropped.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::Workdir;

/// A running server.
/// Among [`ServerProcess::start`]'s arguments: give the server no prompts folder at all
/// (by default it is given the source tree's).
pub const UNSET_PROMPTS: &str = "(no --prompts)";

pub struct ServerProcess {
    pub child: Child,
    /// Where SIP listens (UDP and TCP).
    pub sip: SocketAddr,
    /// Where the admin HTTP side-port listens (unless started with `--no-admin`).
    pub admin: Option<SocketAddr>,
    /// Everything it logged so far.
    pub log: Arc<Mutex<String>>,
    pub stdout: Arc<Mutex<String>>,
    /// The threads copying stderr and stdout, which end when the server has exited.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl ServerProcess {
    /// `vportal serve --sip 127.0.0.1:0 --rtp-ports RANGE ARGS…` in `dir` (SIP elsewhere
    /// when ARGS name `--sip`, e.g. `[::1]:0`), with the admin side-port on a port the
    /// system picks unless ARGS say otherwise; waits (at most 20 s) until it listens.
    pub fn start(dir: &Workdir, rtp_ports: &str, args: &[&str]) -> Self {
        Self::start_wrapped(dir, &[], rtp_ports, args)
    }

    /// [`ServerProcess::start`] with symmetric RTP (`rtp.symmetric = true`, from a config
    /// file written in `dir`): media is latched to where the caller's packets come from.
    pub fn start_symmetric(dir: &Workdir, rtp_ports: &str) -> Self {
        let config = dir.path().join("nat.toml");
        std::fs::write(&config, "[rtp]\nsymmetric = true\n").unwrap();
        Self::start(dir, rtp_ports, &["--config", config.to_str().unwrap()])
    }

    /// [`ServerProcess::start`] with the server run by `wrapper` (a command and its
    /// arguments, such as `setpriv …`, followed by the server's command line).
    pub fn start_wrapped(dir: &Workdir, wrapper: &[&str], rtp_ports: &str, args: &[&str]) -> Self {
        let admin_expected = !args.contains(&"--no-admin");
        let vportal = env!("CARGO_BIN_EXE_vportal");
        let mut cmd = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut cmd = Command::new(program);
                cmd.args(wrapper_args).arg(vportal);
                cmd
            }
            None => Command::new(vportal),
        };
        // The source tree's prompts, unless the test names a folder.
        const PROMPTS: [&str; 2] = ["--prompts", concat!(env!("CARGO_MANIFEST_DIR"), "/prompts")];
        // [`UNSET_PROMPTS`] is for this function, not the server.
        let unset_prompts = args.contains(&UNSET_PROMPTS);
        let args: Vec<&str> = args
            .iter()
            .copied()
            .filter(|a| *a != UNSET_PROMPTS)
            .collect();
        let args = &args[..];
        cmd.arg("serve")
            .args(if args.contains(&"--sip") {
                &[][..]
            } else {
                &["--sip", "127.0.0.1:0"][..]
            })
            .args(["--rtp-ports", rtp_ports])
            .args(if unset_prompts || args.contains(&"--prompts") {
                &[][..]
            } else {
                &PROMPTS[..]
            })
            .args(args)
            .args(if admin_expected && !args.contains(&"--admin") {
                &["--admin", "127.0.0.1:0"][..]
            } else {
                &[]
            })
            .current_dir(dir.path())
            .env_remove("VPORTAL_PEPPER")
            .env_remove("VPORTAL_CONFIG")
            .env_remove("VPORTAL_DB")
            .env_remove("VPORTAL_ADMIN_TOKEN")
            .env("RUST_LOG", "info,vportal=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &dir.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start vportal serve");
        let log = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let log2 = Arc::clone(&log);
        let log_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Logged before it is announced: whoever waits for the address may read
                // the log at once and must find the line there.
                {
                    let mut l = log2.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                if let Some(addr) = line.split("listening sip=").nth(1) {
                    let _ = ready_tx.send(("sip", addr.trim().to_owned()));
                }
                if let Some(addr) = line.split("listening admin=").nth(1) {
                    let addr = addr.split_whitespace().next().unwrap_or_default();
                    let _ = ready_tx.send(("admin", addr.to_owned()));
                }
            }
        });
        let out = child.stdout.take().unwrap();
        let stdout2 = Arc::clone(&stdout);
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let mut s = stdout2.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let (mut sip, mut admin) = (None, None);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while sip.is_none() || (admin_expected && admin.is_none()) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok((what, addr)) = ready_rx.recv_timeout(left) else {
                // Not left running after the test: nothing else would stop it.
                let _ = child.kill();
                let _ = child.wait();
                panic!("vportal did not start:\n{}", log.lock().unwrap());
            };
            let addr: SocketAddr = strip_ansi(&addr).parse().expect("listen address");
            if what == "sip" {
                sip = Some(addr);
            } else {
                admin = Some(addr);
            }
        }
        Self {
            child,
            sip: sip.unwrap(),
            admin,
            log,
            stdout,
            readers: vec![log_reader, stdout_reader],
        }
    }

    /// Sends SIGTERM and waits (at most `limit`) for the exit status; the log then holds
    /// all the server wrote.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.signal(rustix::process::Signal::TERM);
        self.wait_exit(limit)
    }

    /// Sends `signal` (`Signal::TERM`, `Signal::HUP`, …) to the server, from this process:
    /// no `kill` command is needed (procps, which a minimal image lacks).
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .expect("a child's process id");
        rustix::process::kill_process(pid, signal)
            .unwrap_or_else(|e| panic!("sending {signal:?}: {e}"));
    }

    /// Waits (at most `limit`) for the server to exit by itself, after a signal already
    /// sent (a second SIGTERM would end it at once); the log then holds all it wrote.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Everything it wrote before it exited is in the log once the readers
                // have seen the end of their pipes.
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether `secret` shows in the log as a token of its own (not inside a longer run of
    /// letters and digits: random tags, branches and timestamps hold any short run of digits
    /// now and then). The lines that show it are printed, for the failure's report.
    pub fn log_reveals(&self, secret: &str) -> bool {
        let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        let revealing: Vec<String> = self
            .log()
            .lines()
            .filter(|line| {
                line.match_indices(secret).any(|(i, _)| {
                    !alnum(line[..i].chars().next_back())
                        && !alnum(line[i + secret.len()..].chars().next())
                })
            })
            .map(str::to_owned)
            .collect();
        for line in &revealing {
            eprintln!("{secret:?} revealed: {line}");
        }
        !revealing.is_empty()
    }

    /// Waits (at most `within`) until the log holds `needle` at least `count` times; fails
    /// the test with the whole log if it does not.
    #[track_caller]
    pub fn expect_log(&self, needle: &str, count: usize, within: Duration) {
        assert!(
            self.wait_for_log(needle, count, within),
            "no {needle:?} ×{count} in the log:\n{}",
            self.log()
        );
    }

    /// Waits (at most `within`) until the log holds `needle` at least `count` times.
    pub fn wait_for_log(&self, needle: &str, count: usize, within: Duration) -> bool {
        let end = std::time::Instant::now() + within;
        loop {
            if self.log().matches(needle).count() >= count {
                return true;
            }
            if std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What the side-port serves for tests in this process: `store`, no calls, no metrics, no
/// configured token, `hash_permits` shared with nothing else, and its own bulk permit.
pub fn admin_state(
    store: Arc<vportal::store::Store>,
    hash_permits: Arc<tokio::sync::Semaphore>,
) -> vportal::admin::AdminState {
    vportal::admin::AdminState {
        store,
        calls: Arc::default(),
        metrics: None,
        metrics_auth: false,
        configured_token: None,
        throttle: vportal::admin::Throttle::default(),
        hash_permits,
        bulk_permits: vportal::admin::bulk_permits(),
    }
}

/// The admin side-port in this process, on a loopback port the system picks, serving
/// `state` from its own runtime (keep the runtime: dropping it stops the server).
pub fn admin_in_process(
    state: vportal::admin::AdminState,
) -> (SocketAddr, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime
        .block_on(vportal::admin::AdminServer::bind(&vportal::admin::Listen {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            insecure: false,
        }))
        .unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    runtime.spawn(server.run(Arc::new(state), std::future::pending::<()>()));
    (addr, runtime)
}
