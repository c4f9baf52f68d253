//! The configuration file (TOML) and its embedded defaults.
//!
//! Every setting has a default, so `vportal serve` runs with no file at all. A file overrides
//! what it names; command-line flags override the file. Unknown keys are errors, reported
//! with the file, line and key, so a typo never silently falls back to a default.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::media::ports::PortRange;
// Defined with the media session that acts on it, read here.
pub use crate::media::session::InbandDtmf;
use crate::sip::endpoint::EndpointConfig;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The credential store.
    pub store: StoreConfig,
    /// SIP signalling.
    pub sip: SipConfig,
    /// RTP media.
    pub rtp: RtpConfig,
    /// Call routing.
    pub dialplan: DialplanConfig,
    /// Recorded prompts.
    pub prompts: PromptsConfig,
    /// The admin HTTP side-port.
    pub admin: AdminConfig,
}

/// The admin HTTP side-port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Whether `serve` runs it. Default true.
    pub enabled: bool,
    /// Where it listens. Default `127.0.0.1:8080` (flag `--admin`).
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// PEM certificate chain, for HTTPS; with `tls_key`. Required off loopback unless
    /// `insecure`.
    #[serde(deserialize_with = "optional_path")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    #[serde(deserialize_with = "optional_path")]
    pub tls_key: Option<PathBuf>,
    /// Plain HTTP on a non-loopback address, knowingly (flag `--admin-insecure`); a warning
    /// is logged at every start.
    pub insecure: bool,
    /// Whether `/metrics` needs a token too. Default false.
    pub metrics_auth: bool,
    /// A token the API accepts besides those in the database (audited as
    /// `admin:configured`); `VPORTAL_ADMIN_TOKEN` takes its place when set. One shorter than
    /// [`MIN_CONFIGURED_TOKEN`](crate::admin::MIN_CONFIGURED_TOKEN) characters is taken only
    /// while the side-port listens on loopback.
    pub token: Option<ConfiguredToken>,
}

/// An admin token written in the configuration (or given by `VPORTAL_ADMIN_TOKEN`): any
/// text without white space. One shorter than
/// [`MIN_CONFIGURED_TOKEN`](crate::admin::MIN_CONFIGURED_TOKEN) characters
/// ([`ConfiguredToken::is_short`]) is easily guessed: `serve` takes it only for a side-port
/// on loopback, with a warning. Its `Debug` and every error about it leave the value out,
/// and its memory is wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfiguredToken(crate::store::SecretText);

impl ConfiguredToken {
    /// Checks `value`; the error says what is wrong without repeating it.
    ///
    /// # Errors
    /// Empty, or holding anything but visible ASCII (white space, control characters,
    /// other text): a client sends it in an HTTP header, where those cannot go as written.
    pub fn new(value: String) -> Result<Self, String> {
        let value = crate::store::SecretText::new(value);
        if value.expose().is_empty() || !value.expose().bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "an admin token must not be empty nor hold white space, control characters or \
                 other than ASCII (make one with e.g. `openssl rand -hex 32`)"
                    .to_owned(),
            );
        }
        Ok(Self(value))
    }

    /// Whether it is shorter than [`MIN_CONFIGURED_TOKEN`](crate::admin::MIN_CONFIGURED_TOKEN)
    /// characters: too easily guessed for a side-port others can reach.
    pub fn is_short(&self) -> bool {
        self.0.expose().chars().count() < crate::admin::MIN_CONFIGURED_TOKEN
    }

    /// The token itself, for comparing with what a client sends.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl std::fmt::Debug for ConfiguredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfiguredToken(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for ConfiguredToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Not `String::deserialize`: its type error would quote a number given by mistake.
        let value = toml::Value::deserialize(deserializer)
            .map_err(|_| serde::de::Error::custom("must be a string"))?;
        let toml::Value::String(value) = value else {
            return Err(serde::de::Error::custom("must be a string"));
        };
        Self::new(value).map_err(serde::de::Error::custom)
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            insecure: false,
            metrics_auth: false,
            token: None,
        }
    }
}

/// Where the prompts are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptsConfig {
    /// The folder holding one sub-folder per language (`prompts/en`), each with its
    /// `prompts.toml` manifest; or one language's folder itself (`prompts/en`), taken as
    /// that language's where it has no sub-folder for it (for one language only). Unset:
    /// [`DEFAULT_PROMPTS_DIR`], or the English prompts built into vportal when that has no
    /// `en`; a folder given must be there.
    #[serde(deserialize_with = "optional_path")]
    pub dir: Option<PathBuf>,
}

/// The default prompts folder; where it has no `en` folder, `serve` plays the English set
/// built into the binary.
pub const DEFAULT_PROMPTS_DIR: &str = "prompts";

/// SIP signalling: where to listen and how many calls to take.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Address for both UDP and TCP. Default `127.0.0.1:5060`.
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// Listen on UDP. Default true.
    pub udp: bool,
    /// Listen on TCP. Default true.
    pub tcp: bool,
    /// The address put in Via, Contact and SDP when `listen` is a wildcard (0.0.0.0 or ::).
    #[serde(deserialize_with = "public_address")]
    pub public_address: Option<IpAddr>,
    /// Calls at once; more get 503 with Retry-After. Default 5000; at least 1.
    #[serde(deserialize_with = "max_calls")]
    pub max_calls: usize,
    /// The longest any call may last, whatever the dialplan says. Default 1h.
    #[serde(deserialize_with = "duration")]
    pub max_call_duration: Duration,
    /// Open TCP connections at once. Default 1024; at least 1 (`tcp = false` takes none).
    #[serde(deserialize_with = "max_tcp_connections")]
    pub max_tcp_connections: usize,
    /// Open TCP connections at once from one IPv4 address or IPv6 /64; default 64, so that
    /// one host cannot hold every slot of `max_tcp_connections`; 0 for no limit besides
    /// that. Phones behind one NAT share an address: size it for the largest such site.
    pub max_tcp_connections_per_source: usize,
    /// Calls from one IPv4 address or IPv6 /64 not yet confirmed by their ACK allowed at
    /// once (an INVITE with a forged source makes vportal send its 200, then its BYE, ten
    /// times each to that source); further INVITEs from it get 503. 0: no limit. Default 64.
    pub max_pending_calls_per_source: usize,
    /// How long a TCP connection may sit idle before it is closed; one that a call's
    /// dialog runs on is not closed for being idle. Default 5m.
    #[serde(deserialize_with = "duration")]
    pub tcp_idle_timeout: Duration,
    /// How long a TCP peer may take over a whole message: its first one after connecting,
    /// and any one from its first byte (at most `tcp_idle_timeout`). Without it, a host
    /// could hold connection slots for the idle timeout each by sending nothing, or half a
    /// message. Default 30s.
    #[serde(deserialize_with = "duration")]
    pub tcp_message_timeout: Duration,
    /// How long a shutdown waits for BYEs to be answered. Default 5s.
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            udp: true,
            tcp: true,
            public_address: None,
            max_calls: EndpointConfig::DEFAULT_MAX_CALLS,
            max_call_duration: EndpointConfig::DEFAULT_MAX_CALL_DURATION,
            max_tcp_connections: 1_024,
            max_tcp_connections_per_source: 64,
            max_pending_calls_per_source: EndpointConfig::DEFAULT_MAX_PENDING_PER_SOURCE,
            tcp_idle_timeout: Duration::from_secs(300),
            tcp_message_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl SipConfig {
    /// The IP address to advertise ([`SipConfig::advertised_ip`]), once the settings are
    /// found to work together.
    ///
    /// # Errors
    /// A message naming the keys when UDP and TCP are both off, or as
    /// [`SipConfig::advertised_ip`].
    pub fn usable(&self) -> Result<IpAddr, String> {
        if !self.udp && !self.tcp {
            return Err("sip.udp and sip.tcp are both off".to_owned());
        }
        self.advertised_ip()
    }

    /// The IP address to advertise: `public_address`, else the listen address. An
    /// IPv4-mapped IPv6 address (`::ffff:192.0.2.10`) is the IPv4 address it stands for,
    /// and is advertised (and RTP bound) as such.
    ///
    /// # Errors
    /// A message when the listen address is a wildcard and no public address is set, or
    /// the public address is a wildcard: a peer cannot send to 0.0.0.0; or when the public
    /// address is of an IP version the listen socket does not take (an IPv4 socket is not
    /// reached at an IPv6 address, nor an IPv6 one other than `::` at an IPv4 address):
    /// callers could not send their in-dialog requests to the Contact it names.
    pub fn advertised_ip(&self) -> Result<IpAddr, String> {
        // Canonical first: `::ffff:0.0.0.0` is the wildcard 0.0.0.0 as much as `0.0.0.0` is.
        let public = self.public_address.map(|ip| ip.to_canonical());
        let ip = match (public, self.listen.ip().to_canonical()) {
            (Some(ip), _) if ip.is_unspecified() => {
                return Err(format!(
                    "sip.public_address is {ip}: set it to the address peers reach vportal at"
                ));
            }
            (Some(ip), _) => ip,
            (None, ip) if ip.is_unspecified() => {
                return Err(format!(
                    "sip.listen is {}: set sip.public_address to the address peers reach vportal at",
                    self.listen
                ));
            }
            (None, ip) => ip,
        };
        // Which versions the listen socket takes: [::] is dual-stack (IPv4 peers arrive as
        // ::ffff:a.b.c.d; `net::bind_udp` and `bind_tcp` clear IPV6_V6ONLY on it),
        // ::ffff:a.b.c.d only IPv4, any other address its own version.
        let listen = self.listen.ip();
        let takes = |v4: bool| match listen {
            IpAddr::V6(a) if a.is_unspecified() => true,
            _ => listen.to_canonical().is_ipv4() == v4,
        };
        if !takes(ip.is_ipv4()) {
            return Err(format!(
                "sip.public_address {ip} is {}, but sip.listen {} takes only {}: callers \
                 could not reach the address vportal advertises",
                if ip.is_ipv4() { "IPv4" } else { "IPv6" },
                self.listen,
                if ip.is_ipv4() { "IPv6" } else { "IPv4" },
            ));
        }
        Ok(ip)
    }
}

/// RTP media sockets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtpConfig {
    /// Even ports from this range carry RTP. Default `10000-20000`.
    #[serde(deserialize_with = "port_range")]
    pub ports: PortRange,
    /// Symmetric RTP for callers behind NAT: follow the first media source seen (once, and
    /// again after a re-INVITE or UPDATE moves the media) instead of trusting only the
    /// SDP's address. Default false.
    pub symmetric: bool,
    /// When to listen for DTMF tones in the audio: `auto` (when no telephone-event was
    /// negotiated, the default), `always`, or `never`.
    pub inband_dtmf: InbandDtmf,
    /// 1–99: the media thread, which paces every call's RTP, runs SCHED_FIFO at this
    /// priority, so that no other thread on its core delays a packet. 0 (the default):
    /// normal priority. Needs CAP_SYS_NICE or an RLIMIT_RTPRIO at least this high; without
    /// either the server warns and runs at normal priority.
    #[serde(deserialize_with = "realtime_priority")]
    pub realtime_priority: u8,
}

impl Default for RtpConfig {
    fn default() -> Self {
        Self {
            ports: PortRange {
                first: 10_000,
                last: 20_000,
            },
            symmetric: false,
            inband_dtmf: InbandDtmf::Auto,
            realtime_priority: 0,
        }
    }
}

/// Which dialplan file routes calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DialplanConfig {
    /// The dialplan. Unset: [`DEFAULT_DIALPLAN_FILE`], or the copy compiled into vportal when
    /// that file is absent; a file given must be there.
    #[serde(deserialize_with = "optional_path")]
    pub file: Option<PathBuf>,
}

/// The dialplan used unless configured otherwise.
pub const DEFAULT_DIALPLAN_FILE: &str = "dialplans/default.toml";

/// The longest duration a setting may have: far beyond any sensible one, and far from the
/// end of what a clock can add (a larger one panicked when added to the time of day).
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// A duration as text (`"90s"`, `"5m"`, `"1h30m"`), or a bare number of seconds (`45`), as
/// the dialplan takes them.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let crate::time::DurationText(text) = crate::time::DurationText::deserialize(d)?;
    let value = crate::time::parse_duration(&text).map_err(serde::de::Error::custom)?;
    if value > MAX_DURATION {
        return Err(serde::de::Error::custom(format!(
            "{text:?} is too long: at most {}",
            crate::time::format_duration(MAX_DURATION)
        )));
    }
    Ok(value)
}

/// Reads a listen address: an IP address and a port. The error says so, where the
/// standard library's says only "invalid socket address syntax" (for `localhost:5060`, the
/// first thing many type).
///
/// # Errors
/// Anything else, a host name included (none is resolved).
pub fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        "not an IP address and port: give e.g. 127.0.0.1:5060 or [::1]:5060 (host names \
         are not resolved)"
            .to_owned()
    })
}

fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    parse_listen_address(&text).map_err(serde::de::Error::custom)
}

fn public_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(
            "not an IP address: give e.g. 192.0.2.10 or 2001:db8::10, without brackets or \
             port (host names are not accepted)",
        )
    })
}

/// Why a path that starts with `~` is refused: no shell expands it here, and taken as it
/// is, it would make a directory named `~` in the working directory (which a later
/// `rm -rf ~…` typed by hand would not remove alone).
pub const TILDE_REFUSED: &str = "~ is not expanded: give the full path";

/// Whether `path` starts with `~` (`~`, `~/x`, `~alice/x`).
pub fn starts_with_tilde(path: &Path) -> bool {
    path.components()
        .next()
        .is_some_and(|c| c.as_os_str().as_encoded_bytes().starts_with(b"~"))
}

/// A path; one starting with `~` is refused ([`TILDE_REFUSED`]).
fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(d)?;
    if path.as_os_str().is_empty() {
        return Err(serde::de::Error::custom(
            "the path is empty (leave the key out for the default)",
        ));
    }
    if starts_with_tilde(&path) {
        return Err(serde::de::Error::custom(TILDE_REFUSED));
    }
    Ok(path)
}

fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    path(d).map(Some)
}

fn max_calls<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom(
            "at least 1: with 0 every call would get 503",
        )),
        n => Ok(n),
    }
}

fn max_tcp_connections<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom(
            "at least 1: with 0 every connection would be refused (to take no TCP, set tcp = false)",
        )),
        n => Ok(n),
    }
}

fn realtime_priority<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    match u8::deserialize(d)? {
        priority @ 0..=99 => Ok(priority),
        _ => Err(serde::de::Error::custom(
            "a SCHED_FIFO priority is 1 to 99 (0: normal priority)",
        )),
    }
}

/// The most argon2 hashes `hash_concurrency` may allow at once: each holds 7 MiB, and more
/// than the cores only queues them in the kernel instead of in vportal.
pub const MAX_HASH_CONCURRENCY: usize = 1_024;

fn hash_concurrency<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        n @ 0..=MAX_HASH_CONCURRENCY => Ok(n),
        _ => Err(serde::de::Error::custom(format!(
            "0 (one per core) to {MAX_HASH_CONCURRENCY}"
        ))),
    }
}

fn port_range<'de, D: Deserializer<'de>>(d: D) -> Result<PortRange, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// Where the credential store lives and how hard it may hash.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite database file. Default `vportal.db` in the working directory.
    #[serde(deserialize_with = "path")]
    pub database: PathBuf,
    /// The pepper key file. Default: next to the database, named after it with the extension
    /// `.pepper` (`vportal.pepper`). `VPORTAL_PEPPER` overrides it.
    #[serde(deserialize_with = "optional_path")]
    pub pepper_file: Option<PathBuf>,
    /// argon2 hashes allowed at once; 0 means one per core (the default). At most
    /// [`MAX_HASH_CONCURRENCY`].
    #[serde(deserialize_with = "hash_concurrency")]
    pub hash_concurrency: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            database: PathBuf::from("vportal.db"),
            pepper_file: None,
            hash_concurrency: 0,
        }
    }
}

impl StoreConfig {
    /// How many argon2 hashes may run at once: as configured, or one per core.
    pub fn hashes_at_once(&self) -> usize {
        match self.hash_concurrency {
            0 => crate::store::Hasher::default_concurrency(),
            n => n,
        }
    }

    /// The pepper file: as configured, else the database path with the extension `.pepper`.
    pub fn pepper_path(&self) -> PathBuf {
        self.pepper_file
            .clone()
            .unwrap_or_else(|| self.database.with_extension("pepper"))
    }
}

/// The configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("config file {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has the wrong type.
    #[error("config file {}, {message}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where and what: the line, the key, the problem.
        message: String,
    },
}

/// What a text file that is not UTF-8 is told (a file saved as Latin-1 or Windows-1252).
pub const NOT_UTF8: &str = "not UTF-8 text (save the file as UTF-8)";

/// A file's bytes as text, or the line of the first byte that is not UTF-8 (from 1; CR LF
/// is one line break, a lone CR or LF one each).
///
/// # Errors
/// That line.
pub fn utf8_text(bytes: Vec<u8>) -> Result<String, usize> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let breaks = valid
            .iter()
            .enumerate()
            .filter(|&(i, &b)| b == b'\r' || (b == b'\n' && (i == 0 || valid[i - 1] != b'\r')))
            .count();
        breaks + 1
    })
}

/// Everything `input` holds, if that is at most `limit` bytes; `None` when there is more,
/// of which no more than `limit + 1` bytes were read. For the files an operator names (a
/// prompt, a CSV import): a wrong path to a disk image or `/dev/zero` must not fill memory
/// before a later check refuses it.
///
/// # Errors
/// Reading failed.
pub fn read_at_most(input: impl std::io::Read, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    input
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

impl Config {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, and for bad content the line and key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let text = utf8_text(bytes).map_err(|line| ConfigError::Invalid {
            path: path.to_owned(),
            message: format!("line {line}: {NOT_UTF8}"),
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses configuration text; the error names the line and the key.
    ///
    /// # Errors
    /// A message such as `line 3, key store.databse: unknown field ...`.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| describe_toml_error(text, &e))
    }
}

/// Turns a TOML error into `line N, key a.b: message`.
pub(crate) fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let line = e
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let key = e
        .span()
        .and_then(|span| crate::toml_key::key_at(text, span.start));
    // No setting is a list of tables: `[[sip]]` is `[sip]` written with a bracket too many.
    let what = crate::toml_key::one_table_not_a_list(key.as_deref())
        .unwrap_or_else(|| in_words(&crate::redact::serde_message(e.message().trim_end())));
    match (line, key) {
        (Some(line), Some(key)) => format!("line {line}, key {key}: {what}"),
        (Some(line), None) => format!("line {line}: {what}"),
        _ => what.to_owned(),
    }
}

/// A yes or no as people write it: `true`, `yes`, `on`, `1` or `false`, `no`, `off`, `0`,
/// in any case (the admin API's filters and `vportal policy set` alike).
pub fn parse_yes_no(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// serde's messages name Rust's types ("expected usize"); an operator reads words.
fn in_words(message: &str) -> String {
    const WORDS: [(&str, &str); 6] = [
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected i64", "expected a whole number"),
    ];
    let mut out = message.to_owned();
    for (rust, words) in WORDS {
        if let Some(at) = out.find(rust)
            && !out[at + rust.len()..].starts_with(|c: char| c.is_ascii_alphanumeric())
        {
            out.replace_range(at..at + rust.len(), words);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_at_most_stops_after_the_limit() {
        assert_eq!(
            read_at_most(&b"abcd"[..], 4).unwrap(),
            Some(b"abcd".to_vec())
        );
        assert_eq!(read_at_most(&b"abcde"[..], 4).unwrap(), None);
        let mut endless = std::io::repeat(b'x');
        assert_eq!(read_at_most(&mut endless, 1 << 10).unwrap(), None);
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let c = Config::default();
        assert_eq!(c.store.pepper_path(), PathBuf::from("vportal.pepper"));
    }

    #[test]
    fn settings_override_defaults() {
        let c = Config::parse("[store]\ndatabase = \"/var/lib/vportal/v.db\"\n").unwrap();
        assert_eq!(c.store.database, PathBuf::from("/var/lib/vportal/v.db"));
        assert_eq!(
            c.store.pepper_path(),
            PathBuf::from("/var/lib/vportal/v.pepper")
        );
    }

    #[test]
    fn sip_and_rtp_sections() {
        let c = Config::parse(
            "[sip]\nlisten = \"0.0.0.0:5070\"\npublic_address = \"127.0.0.1\"\nmax_call_duration = \"20m\"\n[rtp]\nports = \"30000-30100\"\n",
        )
        .unwrap();
        assert_eq!(c.sip.listen, "0.0.0.0:5070".parse().unwrap());
        assert_eq!(c.sip.advertised_ip(), Ok("127.0.0.1".parse().unwrap()));
        assert_eq!(c.sip.max_call_duration, Duration::from_secs(1_200));
        assert_eq!(
            c.rtp.ports,
            PortRange {
                first: 30_000,
                last: 30_100
            }
        );
        let wild = Config::parse("[sip]\nlisten = \"0.0.0.0:5060\"\n").unwrap();
        assert!(wild.sip.advertised_ip().is_err());
        let err = Config::parse("[rtp]\nports = \"1-2\"\n").unwrap_err();
        assert!(err.starts_with("line 2, key rtp.ports:"), "{err}");
        assert_eq!(c.rtp.realtime_priority, 0, "normal priority unless asked");
        let rt = Config::parse("[rtp]\nrealtime_priority = 99\n").unwrap();
        assert_eq!(rt.rtp.realtime_priority, 99);
        for bad in ["100", "-1", "\"high\""] {
            let err = Config::parse(&format!("[rtp]\nrealtime_priority = {bad}\n")).unwrap_err();
            assert!(
                err.starts_with("line 2, key rtp.realtime_priority:"),
                "{err}"
            );
        }
        let err = Config::parse("[sip]\nmax_call_duration = \"forever\"\n").unwrap_err();
        assert!(
            err.starts_with("line 2, key sip.max_call_duration:"),
            "{err}"
        );
    }

    /// The README's configuration block is valid and shows the defaults.
    #[test]
    fn the_readme_configuration_is_the_defaults() {
        let readme = include_str!("../README.md");
        let section = &readme[readme.find("## Configuration").unwrap()..];
        let block = &section[section.find("```toml\n").unwrap() + 8..];
        let block = &block[..block.find("```").unwrap()];
        assert_eq!(Config::parse(block), Ok(Config::default()));
    }

    #[test]
    fn an_admin_token_is_checked_and_never_shown() {
        let token = "cfg-4f1d8a2c9e7b3a6d5c0f1e2d3c4b5a69";
        let c = Config::parse(&format!("[admin]\ntoken = \"{token}\"\n")).unwrap();
        assert_eq!(
            c.admin.token.as_ref().map(ConfiguredToken::expose),
            Some(token)
        );
        assert!(!format!("{c:?}").contains(token));
        assert!(!c.admin.token.unwrap().is_short());
        // A short one is taken (`serve` decides where it may be used), and said to be short.
        let c = Config::parse("[admin]\ntoken = \"test-token\"\n").unwrap();
        let short = c.admin.token.unwrap();
        assert_eq!(short.expose(), "test-token");
        assert!(short.is_short());
        assert!(!format!("{short:?}").contains("test-token"));
        for value in [
            "\"\"",
            "\"4f1d8a2c 9e7b3a6d5c0f1e2d3c4b5a69\"",
            "\"4f1d8a2c\\t9e\"",
            "48261937502846193750284619375028",
            "4.5e40",
        ] {
            let err = Config::parse(&format!("[admin]\ntoken = {value}\n")).unwrap_err();
            assert!(err.starts_with("line 2, key admin.token:"), "{err}");
            assert!(!err.contains("4f1d8a2c") && !err.contains("4826"), "{err}");
        }
        for value in [
            "",
            "4f1d 8a2c",
            "4f1d\n",
            "4f1d\u{0}8a2c",
            "4f1d\u{7f}",
            "4f1dé8a2c",
        ] {
            let err = ConfiguredToken::new(value.to_owned()).unwrap_err();
            assert!(
                err.contains("must not be empty nor hold white space"),
                "{err}"
            );
        }
        assert!(ConfiguredToken::new("4f1d8a2c-9e7b_3a6d.5c0f~1e2d+3c4b/5a69=".into()).is_ok());
        // A token line without its `=`: the error names the line, never the token.
        for line in [
            "token: 4f1d8a2c9e",
            "token \"4f1d8a2c9e\"",
            "4f1d8a2c9e",
            "token \"4f1d8a2c9e==\"",
            "\"4f1d8a2c9e\"",
            "4f1d8a2c9e_Zm9vYmFyYmF6cXV4cXV1eA-w==",
            // A short base64 token (loopback takes it) ends in `=` too.
            "4f1d8a2c9e==",
            "4f1d8a2c9e=",
        ] {
            let err = Config::parse(&format!("[admin]\n{line}\n")).unwrap_err();
            assert!(err.starts_with("line 2, key admin: "), "{err}");
            assert!(!err.contains("4f1d8a2c"), "{err}");
        }
    }

    /// Durations read as in the dialplan: quoted text, or a bare number of seconds.
    #[test]
    fn durations_are_text_or_seconds() {
        let c = Config::parse("[sip]\nshutdown_grace = 7\ntcp_idle_timeout = \"2m\"\n").unwrap();
        assert_eq!(c.sip.shutdown_grace, Duration::from_secs(7));
        assert_eq!(c.sip.tcp_idle_timeout, Duration::from_secs(120));
        for (bad, says) in [
            ("0", "greater than zero"),
            ("-5", "greater than zero"),
            ("\"-5s\"", "greater than zero"),
            (
                "1.5",
                "a duration such as 5s, 10m or 1h30m, or a whole number of seconds",
            ),
            ("true", "a duration such as 5s, 10m or 1h30m"),
        ] {
            let err = Config::parse(&format!("[sip]\nshutdown_grace = {bad}\n")).unwrap_err();
            assert!(
                err.starts_with("line 2, key sip.shutdown_grace:") && err.contains(says),
                "{bad}: {err}"
            );
        }
    }

    /// Every key that names a path: `[table]` and key.
    const PATH_KEYS: [(&str, &str); 6] = [
        ("store", "database"),
        ("store", "pepper_file"),
        ("dialplan", "file"),
        ("prompts", "dir"),
        ("admin", "tls_cert"),
        ("admin", "tls_key"),
    ];

    #[test]
    fn an_empty_path_is_refused_where_it_is_written() {
        for (table, key) in PATH_KEYS {
            let err = Config::parse(&format!("[{table}]\n{key} = \"\"\n")).unwrap_err();
            assert_eq!(
                err,
                format!(
                    "line 2, key {table}.{key}: the path is empty (leave the key out for the default)"
                )
            );
        }
    }

    #[test]
    fn a_file_that_is_not_utf8_is_refused_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, b"[store]\r\n# caf\xe9\r\ndatabase = \"x.db\"\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("c.toml, line 2: not UTF-8 text (save the file as UTF-8)"),
            "{err}"
        );
        assert_eq!(utf8_text(b"a\rb\n\n\xff".to_vec()), Err(4));
        assert_eq!(utf8_text(b"ok\n".to_vec()).as_deref(), Ok("ok\n"));
    }

    #[test]
    fn errors_name_line_and_key() {
        let err = Config::parse("# comment\n[store]\ndatabse = \"x\"\n").unwrap_err();
        assert!(err.starts_with("line 3, key store.databse:"), "{err}");
        for bad in ["\"many\"", "1025", "4000000000000000000", "-1"] {
            let err = Config::parse(&format!("[store]\nhash_concurrency = {bad}\n")).unwrap_err();
            assert!(
                err.starts_with("line 2, key store.hash_concurrency:"),
                "{err}"
            );
        }
        // In words, not Rust's type names.
        for (setting, says) in [
            (
                "[sip]\nmax_calls = \"many\"",
                "invalid type: string \"…\", expected a whole number (0 or more)",
            ),
            // A value is not repeated: it could be a token pasted under the wrong key.
            (
                "[admin]\nmetrics_auth = \"vpt_0123456789abcdef0123456789abcdef\"",
                "key admin.metrics_auth: invalid type: string \"…\", expected a boolean",
            ),
            (
                "[rtp]\ninband_dtmf = \"vpt_0123456789abcdef0123456789abcdef\"",
                "key rtp.inband_dtmf: unknown variant `…`, expected one of `auto`, `always`, `never`",
            ),
            (
                "[rtp]\ninband_dtmf = \"allways\"",
                "unknown variant `allways`, expected one of `auto`, `always`, `never`",
            ),
            (
                "vpt_0123456789abcdef0123456789abcdef = 1",
                "line 1: unknown field `…`, expected one of `store`, `sip`, `rtp`, `dialplan`, `prompts`, `admin`",
            ),
            (
                "[sip]\nmax_calls = -5",
                "invalid value: integer `-5`, expected a whole number (0 or more)",
            ),
            (
                "[rtp]\nrealtime_priority = 300",
                "invalid value: integer `300`, expected a whole number from 0 to 255",
            ),
        ] {
            let err = Config::parse(setting).unwrap_err();
            assert!(err.ends_with(says), "{err}");
        }
        let most = Config::parse("[store]\nhash_concurrency = 1024\n").unwrap();
        assert_eq!(most.store.hashes_at_once(), MAX_HASH_CONCURRENCY);
        let err = Config::parse("[stor]\n").unwrap_err();
        assert!(err.starts_with("line 1, key stor:"), "{err}");
        // An inline table's key is named whole; `[[sip]]` is a list where a table goes.
        let err = Config::parse("sip = { listen = \"127.0.0.1:5060\", max_calls = -1 }\n");
        assert!(err.unwrap_err().starts_with("line 1, key sip.max_calls:"));
        let err = Config::parse("[[sip]]\nmax_calls = 5\n").unwrap_err();
        assert_eq!(
            err,
            "line 1, key sip[1]: [[sip]] makes a list of tables; write [sip], with single brackets"
        );
    }

    /// A duration past any clock's range was accepted, and panicked when added to the time
    /// of a call's answer, a TCP connection's last activity or a shutdown.
    #[test]
    fn durations_beyond_a_year_are_refused() {
        for key in [
            "max_call_duration",
            "tcp_idle_timeout",
            "tcp_message_timeout",
            "shutdown_grace",
        ] {
            for value in ["18446744073709551615", "16000000000000w", "366d"] {
                let err = Config::parse(&format!("[sip]\n{key} = \"{value}\"\n")).unwrap_err();
                assert!(err.starts_with(&format!("line 2, key sip.{key}:")), "{err}");
                assert!(err.contains("at most 365d"), "{err}");
            }
            let c = Config::parse(&format!("[sip]\n{key} = \"365d\"\n")).unwrap();
            assert!(format!("{c:?}").contains("31536000s"));
        }
    }

    /// No call or no TCP connection at all would be taken: not a limit, a server that
    /// refuses everything (while `max_tcp_connections_per_source = 0` means no limit).
    #[test]
    fn limits_of_zero_are_refused() {
        for key in ["max_calls", "max_tcp_connections"] {
            let err = Config::parse(&format!("[sip]\n{key} = 0\n")).unwrap_err();
            assert!(err.starts_with(&format!("line 2, key sip.{key}:")), "{err}");
            let one = Config::parse(&format!("[sip]\n{key} = 1\n")).unwrap();
            assert_ne!(one, Config::default());
        }
        let err = Config::parse("[sip]\nmax_tcp_connections = 0\n").unwrap_err();
        assert!(err.contains("tcp = false"), "{err}");
        assert!(Config::parse("[sip]\nmax_tcp_connections_per_source = 0\n").is_ok());
    }

    /// A wildcard public address cannot be reached any more than a wildcard listen
    /// address: advertised in SDP, `c=IN IP4 0.0.0.0` even puts the call on hold.
    #[test]
    fn a_wildcard_public_address_is_refused() {
        for (listen, public) in [
            ("0.0.0.0:5060", "0.0.0.0"),
            ("127.0.0.1:5060", "0.0.0.0"),
            ("[::]:5060", "::"),
            // IPv4-mapped, it is 0.0.0.0 all the same (and would be advertised as such).
            ("0.0.0.0:5060", "::ffff:0.0.0.0"),
            ("[::]:5060", "::ffff:0.0.0.0"),
        ] {
            let c = Config::parse(&format!(
                "[sip]\nlisten = \"{listen}\"\npublic_address = \"{public}\"\n"
            ))
            .unwrap();
            let err = c.sip.advertised_ip().unwrap_err();
            assert!(err.contains("sip.public_address"), "{err}");
        }
        // A mapped wildcard listen address with no public address, likewise.
        let c = Config::parse("[sip]\nlisten = \"[::ffff:0.0.0.0]:5060\"\n").unwrap();
        let err = c.sip.advertised_ip().unwrap_err();
        assert!(err.contains("sip.public_address"), "{err}");
    }

    /// IPv6 listen and public addresses: the advertised address must be one the listen
    /// socket can be reached at, and an IPv4-mapped one is advertised as IPv4.
    #[test]
    fn the_public_address_must_be_of_a_version_the_listen_socket_takes() {
        let advertised = |listen: &str, public: Option<&str>| {
            let public = public.map_or(String::new(), |p| format!("public_address = \"{p}\"\n"));
            Config::parse(&format!("[sip]\nlisten = \"{listen}\"\n{public}"))
                .unwrap()
                .sip
                .advertised_ip()
        };
        let ip = |s: &str| Ok(s.parse::<IpAddr>().unwrap());
        assert_eq!(advertised("[::1]:5060", None), ip("::1"));
        assert_eq!(
            advertised("[::]:5060", Some("2001:db8::10")),
            ip("2001:db8::10")
        );
        // [::] is dual-stack: an IPv4 public address is reachable through it.
        assert_eq!(
            advertised("[::]:5060", Some("192.0.2.10")),
            ip("192.0.2.10")
        );
        assert_eq!(
            advertised("[2001:db8::1]:5060", Some("2001:db8::10")),
            ip("2001:db8::10")
        );
        // IPv4-mapped addresses are the IPv4 address they stand for.
        assert_eq!(advertised("[::ffff:127.0.0.1]:5060", None), ip("127.0.0.1"));
        assert_eq!(
            advertised("0.0.0.0:5060", Some("::ffff:192.0.2.10")),
            ip("192.0.2.10")
        );
        for (listen, public) in [
            ("127.0.0.1:5060", "::1"),
            ("0.0.0.0:5060", "2001:db8::10"),
            ("[::1]:5060", "127.0.0.1"),
            ("[2001:db8::1]:5060", "192.0.2.10"),
            ("[::ffff:127.0.0.1]:5060", "::1"),
        ] {
            let err = advertised(listen, Some(public)).unwrap_err();
            assert!(
                err.contains("sip.public_address") && err.contains(listen),
                "{err}"
            );
        }
        // Brackets belong to URIs, not to the address itself.
        let err = Config::parse("[sip]\npublic_address = \"[::1]\"\n").unwrap_err();
        assert!(err.starts_with("line 2, key sip.public_address:"), "{err}");
    }

    /// `~` is not expanded: refused, naming the line and key, rather than taken as a
    /// directory named `~`.
    #[test]
    fn a_path_starting_with_a_tilde_is_refused() {
        for (table, key) in PATH_KEYS {
            for value in ["~/vp/x", "~", "~alice/x"] {
                let err = Config::parse(&format!("# paths\n[{table}]\n{key} = \"{value}\"\n"))
                    .unwrap_err();
                assert!(
                    err.starts_with(&format!("line 3, key {table}.{key}:")),
                    "{err}"
                );
                assert!(
                    err.contains("~ is not expanded: give the full path"),
                    "{err}"
                );
            }
            let ok = Config::parse(&format!("[{table}]\n{key} = \"vp/~x\"\n"));
            assert!(ok.is_ok(), "{ok:?}");
        }
    }

    /// A host name, or an address without its port, is refused with what is needed, not
    /// "invalid socket address syntax".
    #[test]
    fn listen_and_public_addresses_must_be_ip_addresses() {
        for key in ["sip.listen", "admin.listen"] {
            let (table, key_name) = key.split_once('.').unwrap();
            for bad in [
                "localhost:5060",
                ":8080",
                "127.0.0.1",
                "pbx.example.com:5060",
            ] {
                let err =
                    Config::parse(&format!("[{table}]\n{key_name} = \"{bad}\"\n")).unwrap_err();
                assert!(err.starts_with(&format!("line 2, key {key}:")), "{err}");
                assert!(
                    err.contains("not an IP address and port")
                        && err.contains("127.0.0.1:5060 or [::1]:5060"),
                    "{err}"
                );
            }
        }
        let err = Config::parse("[sip]\npublic_address = \"pbx.example.com\"\n").unwrap_err();
        assert!(err.starts_with("line 2, key sip.public_address:"), "{err}");
        assert!(err.contains("host names are not accepted"), "{err}");
        let c =
            Config::parse("[sip]\nlisten = \"[::1]:5070\"\npublic_address = \"::1\"\n").unwrap();
        assert_eq!(c.sip.listen, "[::1]:5070".parse().unwrap());
    }

    /// A comment after a table header (`[sip]  # signalling`) is not part of the key.
    #[test]
    fn a_commented_table_header_still_names_the_key() {
        let err = Config::parse("[sip]   # signalling\nlistn = 1\n").unwrap_err();
        assert!(err.starts_with("line 2, key sip.listn:"), "{err}");
        let err = Config::parse("[ stor ] # typo\n").unwrap_err();
        assert!(err.starts_with("line 1, key stor:"), "{err}");
    }
}
