//! Helpers shared by the integration tests: running the built `vportal` binary in a
//! temporary directory.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A temporary working directory with its own database and pepper.
pub struct Workdir {
    dir: tempfile::TempDir,
    /// Extra environment for every command (e.g. `RUST_LOG`).
    pub env: Vec<(String, std::ffi::OsString)>,
}

/// What a command printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The standard output as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    /// Panics unless the command was refused (exit status 2) saying `says` on stderr.
    #[track_caller]
    pub fn refused(&self, says: &str) {
        assert_eq!(self.code, 2, "{self:?}");
        assert!(self.stderr.contains(says), "{}", self.stderr);
    }

    /// Panics with both streams unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Workdir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn db(&self) -> PathBuf {
        self.path().join("vportal.db")
    }

    /// Writes `text` to `c.toml` here, for `--config c.toml`.
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.path().join("c.toml"), text).unwrap();
    }

    /// `vportal ARGS` to run here, with none of the tester's own `VPORTAL_*` settings or
    /// `RUST_LOG`, but with [`Workdir::env`]; its output piped.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vportal"));
        cmd.args(args)
            .current_dir(self.path())
            .env_remove("VPORTAL_PEPPER")
            .env_remove("VPORTAL_CONFIG")
            .env_remove("VPORTAL_DB")
            .env_remove("VPORTAL_ADMIN_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// `vportal serve` here, on an ephemeral SIP port and `rtp_ports`, without the admin
    /// side-port, with the source tree's prompts: for a test that watches the process
    /// itself (`ServerProcess` waits for it and reads its output).
    pub fn serve_command(&self, rtp_ports: &str) -> Command {
        self.command(&[
            "serve",
            "--sip",
            "127.0.0.1:0",
            "--no-admin",
            "--rtp-ports",
            rtp_ports,
            "--prompts",
            concat!(env!("CARGO_MANIFEST_DIR"), "/prompts"),
        ])
    }

    /// Runs `vportal ARGS` here, feeding `stdin`.
    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .spawn()
            .expect("run vportal");
        // A command refused before it reads its input has closed the pipe: that is its answer.
        let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        if let Err(e) = written {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output().unwrap();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: String::from_utf8(stdout).unwrap(),
            stderr: String::from_utf8(stderr).unwrap(),
        }
    }

    /// Runs `vportal ARGS` here with empty stdin.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, "")
    }

    /// A fresh workdir with mailboxes provisioned through the CLI, as an admin would:
    /// `(mailbox, passcode, temporary)`.
    pub fn provisioned(mailboxes: &[(&str, &str, bool)]) -> Self {
        let w = Self::new();
        w.run(&["init"]).ok();
        for (m, passcode, temporary) in mailboxes {
            let mut args = vec!["user", "add", m, "--passcode-stdin"];
            if *temporary {
                args.push("--temporary");
            }
            w.run_with_stdin(&args, passcode).ok();
        }
        w
    }

    /// `vportal user show MAILBOX`, as JSON.
    pub fn user(&self, mailbox: &str) -> serde_json::Value {
        self.run(&["--json", "user", "show", mailbox]).ok().json()
    }

    /// The audit events for `mailbox`, oldest first.
    pub fn audit(&self, mailbox: &str) -> Vec<serde_json::Value> {
        let mut events = self
            .run(&["--json", "audit", "--extension", mailbox])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .clone();
        events.reverse();
        events
    }
}

/// The admin token `vportal init` printed once.
pub fn token_from(stdout: &str) -> String {
    stdout
        .split_whitespace()
        .find(|w| w.starts_with("vpt_"))
        .expect("the token printed once by init")
        .to_owned()
}

/// The `event` names of audit `events`.
pub fn event_names(events: &[serde_json::Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect()
}
pub mod http;
pub mod log;
pub mod phone;
pub mod rtp;
pub mod server;
pub mod uac;
