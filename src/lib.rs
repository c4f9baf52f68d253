//! vportal: a voice-portal passcode server.
//!
//! A phone user dials the voice portal; vportal answers the SIP call, plays prompts over RTP,
//! collects DTMF, authenticates the mailbox owner and walks them through replacing a temporary
//! passcode with a PIN of their own. Admins provision, reset, unlock and audit through a CLI and
//! an HTTP side-port that share one credential store.
//!
//! Layers (see `docs/DESIGN.md`): the protocol and policy modules are sans-IO and
//! take the current time as an argument; only the shell (`server`, `admin`, the binary) touches
//! sockets, clocks and tasks.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod ivr;
pub mod media;
pub mod net;
mod redact;
pub mod server;
pub mod sip;
pub mod store;
pub mod time;
mod toml_key;

/// Settings for the library's property tests: `cases` runs, and failing cases kept beside the
/// source file (`src/…/name.proptest-regressions`), as the integration tests' are, rather
/// than in a top-level folder.
#[cfg(test)]
pub(crate) fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, FileFailurePersistence};
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}
