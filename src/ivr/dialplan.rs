//! The dialplan: which Request-URI users reach which application, with which settings.
//!
//! A dialplan file (`dialplans/*.toml`; `dialplans/default.toml` is documented for operators)
//! holds an optional `[defaults]` table and a list of `[[route]]` tables. Each route has a
//! `match` (an exact user such as `8500`, or an Asterisk-style pattern such as `_85XX`), an
//! `application`, and optionally any of the per-call settings in [`RouteSettings`]. A setting
//! comes from the route if it names it, else from `[defaults]`, else from the built-in default
//! ([`RouteSettings::default`]).
//!
//! # Matching
//! [`Dialplan::route`] takes the user part of the Request-URI. `%`-escapes are decoded first,
//! because RFC 3261 §19.1.4 makes `sip:%2A86@host` and `sip:*86@host` the same URI. Letters
//! compare case-insensitively (ASCII), although §19.1.4 makes user parts case-sensitive: a
//! dialplan matches what people dial, and nobody means a different mailbox by `VoiceMail`.
//!
//! The order is Asterisk's: an exact match beats every pattern; among patterns the most
//! specific wins, comparing the patterns position by position, where a single character beats
//! a smaller set (`[1-3]`), which beats a larger one (`N` before `X`), which beats `.`, which
//! beats `!`; a pattern that ends beats one that goes on. Where that leaves a tie (`_[12]X`
//! and `_[13]X` both take `10`), the route earlier in the file wins; Asterisk would compare
//! the sets' contents, which no operator can predict. Two routes that match exactly the same
//! numbers (`8500` twice, `_NXX` and `_[2-9]XX`) are rejected at load.
//!
//! # Errors name the place
//! Every problem, from a TOML syntax error to an out-of-range timeout, is reported with the
//! file, the line and the key, such as `dialplans/x.toml, line 7, key route[2].match: …`.
//! Routes and list items are counted from 1, as an operator reading the file counts them.
//!
//! Sans-IO: [`Dialplan::parse`] takes text (the shell's `vportal::server::load_dialplan`
//! reads the file).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::{Range, RangeInclusive};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::time::{DurationText, format_duration, parse_duration};

/// The text of `dialplans/default.toml`, built into the binary so that a server started
/// without its `dialplans/` folder still routes the standard numbers.
pub const DEFAULT_DIALPLAN: &str = include_str!("../../dialplans/default.toml");

/// A checked dialplan: the routes of one file, ready to route calls.
#[derive(Debug, Clone)]
pub struct Dialplan {
    /// In file order.
    routes: Vec<Route>,
    /// Indices into `routes` in the order [`Dialplan::route`] tries them: exact matches first,
    /// then patterns, most specific first.
    order: Vec<usize>,
}

impl Dialplan {
    /// Parses and checks dialplan text. `origin` names the text in error messages (usually the
    /// file name).
    ///
    /// # Errors
    /// [`DialplanError::Invalid`] for the first problem found: TOML syntax, an unknown key, a
    /// value of the wrong type or out of range, a malformed pattern, an unknown application or
    /// two routes matching the same numbers.
    pub fn parse(text: &str, origin: &str) -> Result<Self, DialplanError> {
        let src = Source { text, origin };
        let raw: RawFile = toml::from_str(text).map_err(|e| src.toml_error(&e))?;

        let defaults = match &raw.defaults {
            Some(table) => {
                src.reject_route_keys(table.get_ref())?;
                RouteSettings::default().overridden_by(&src, table.get_ref(), "defaults")?
            }
            None => RouteSettings::default(),
        };

        let mut routes: Vec<Route> = Vec::with_capacity(raw.route.len());
        // The line of each route's `match`, to point at the first of two duplicates.
        let mut match_lines = Vec::with_capacity(raw.route.len());
        for (index, table) in raw.route.iter().enumerate() {
            let number = index + 1;
            let name = format!("route[{number}]");
            let entry = table.get_ref();
            let header = src.route_header(number).unwrap_or_else(|| table.span());

            let Some(raw_match) = &entry.pattern else {
                return Err(src.invalid(
                    header,
                    &name,
                    "missing `match`: the dialled number or pattern this route answers".into(),
                ));
            };
            let match_key = format!("{name}.match");
            let pattern = Pattern::parse(raw_match.get_ref())
                .map_err(|e| src.invalid(raw_match.span(), &match_key, e.to_string()))?;
            if let Some(earlier) = routes.iter().position(|r| r.pattern.same_numbers(&pattern)) {
                let what = if pattern.is_exact() || routes[earlier].pattern.is_exact() {
                    "the same number"
                } else {
                    "the same numbers"
                };
                return Err(src.invalid(
                    raw_match.span(),
                    &match_key,
                    format!(
                        "{:?} matches {what} as route[{}] ({:?}, line {})",
                        raw_match.get_ref(),
                        earlier + 1,
                        routes[earlier].pattern.as_str(),
                        match_lines[earlier],
                    ),
                ));
            }

            let Some(raw_application) = &entry.application else {
                return Err(src.invalid(
                    header,
                    &name,
                    format!("missing `application`: one of {}", Application::NAMES),
                ));
            };
            let application =
                Application::from_name(raw_application.get_ref()).ok_or_else(|| {
                    src.invalid(
                        raw_application.span(),
                        &format!("{name}.application"),
                        format!(
                            "unknown application {:?}: expected one of {}",
                            raw_application.get_ref(),
                            Application::NAMES
                        ),
                    )
                })?;

            let settings = defaults.clone().overridden_by(&src, entry, &name)?;
            match_lines.push(src.line(raw_match.span().start));
            routes.push(Route {
                pattern,
                application,
                settings,
            });
        }

        let mut order: Vec<usize> = (0..routes.len()).collect();
        // Stable, so routes of equal rank keep file order.
        order.sort_by(|&a, &b| routes[a].pattern.precedence(&routes[b].pattern));
        Ok(Self { routes, order })
    }

    /// The route for a call to `request_user`, the user part of the Request-URI (`8500` in
    /// `sip:8500@host`), or `None` when no route matches and the call gets `404 Not Found`.
    ///
    /// `%`-escapes are decoded and letters compare case-insensitively; see the module
    /// documentation for which route wins when several match.
    pub fn route(&self, request_user: &str) -> Option<&Route> {
        let user = percent_decode(request_user);
        self.order
            .iter()
            .filter_map(|&i| self.routes.get(i))
            .find(|route| route.pattern.matches_decoded(&user))
    }

    /// All routes, in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// One `[[route]]`: what it answers, which application runs, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The Request-URI users this route answers.
    pub pattern: Pattern,
    /// What the call does.
    pub application: Application,
    /// Per-call settings, with `[defaults]` and the built-in defaults filled in.
    pub settings: RouteSettings,
}

/// The application a route runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Application {
    /// `voice-portal`: welcome, mailbox, passcode, then the menu (a temporary passcode must be
    /// changed first).
    VoicePortal,
    /// `change-passcode`: straight to choosing a new passcode after login.
    ChangePasscode,
}

impl Application {
    /// The names the file accepts, for error messages.
    const NAMES: &'static str = "\"voice-portal\", \"change-passcode\"";

    /// The application called `name` in a dialplan file.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "voice-portal" => Some(Self::VoicePortal),
            "change-passcode" => Some(Self::ChangePasscode),
            _ => None,
        }
    }

    /// The name used in dialplan files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VoicePortal => "voice-portal",
            Self::ChangePasscode => "change-passcode",
        }
    }
}

impl fmt::Display for Application {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the mailbox number comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxSource {
    /// `ask`: the caller keys it in.
    Ask,
    /// `caller-id`: the user of P-Asserted-Identity, else of From; when no such mailbox
    /// exists, the caller is asked after all.
    CallerId,
}

impl MailboxSource {
    /// The names the file accepts, for error messages.
    const NAMES: &'static str = "\"ask\", \"caller-id\"";

    /// The source called `name` in a dialplan file.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ask" => Some(Self::Ask),
            "caller-id" => Some(Self::CallerId),
            _ => None,
        }
    }

    /// The name used in dialplan files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ask => "ask",
            Self::CallerId => "caller-id",
        }
    }
}

/// What happens when a mailbox already in a call logs in from another call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRule {
    /// `replace` (the default): the older call hears "this mailbox has just been opened
    /// from another phone" and ends.
    Replace,
    /// `reject`: the newer call hears that the mailbox is in use and ends.
    Reject,
    /// `allow`: both stay.
    Allow,
}

impl SessionRule {
    /// The names the file accepts, for error messages.
    const NAMES: &'static str = "\"replace\", \"reject\", \"allow\"";

    /// The rule called `name` in a dialplan file.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "replace" => Some(Self::Replace),
            "reject" => Some(Self::Reject),
            "allow" => Some(Self::Allow),
            _ => None,
        }
    }

    /// The name used in dialplan files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Reject => "reject",
            Self::Allow => "allow",
        }
    }
}

impl fmt::Display for MailboxSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call on a route behaves. [`Default`] gives the built-in defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSettings {
    /// Where the mailbox number comes from. Default [`MailboxSource::Ask`].
    pub mailbox: MailboxSource,
    /// Signalling source addresses whose caller identity is believed for
    /// [`MailboxSource::CallerId`]; empty (the default) trusts every source. See
    /// [`RouteSettings::mailbox_for`].
    pub trusted_sources: Vec<IpNet>,
    /// Passcode attempts per call, 1 to 10. Default 3.
    pub attempts: u32,
    /// How long to wait for the first digit after a prompt, 1 s to 60 s. Default 5 s.
    pub first_digit_timeout: Duration,
    /// How long to wait between digits, 1 s to 60 s. Default 3 s.
    pub inter_digit_timeout: Duration,
    /// How often a prompt is repeated on silence before goodbye, 0 to 5. Default 2.
    pub reprompts: u32,
    /// The call is ended after this long, 30 s to 4 h. Default 10 min.
    pub max_call_duration: Duration,
    /// The prompt folder under `prompts/`: ASCII letters, digits, `-` and `_`. Default `en`.
    pub language: String,
    /// Where `language` was set (`file, line N, key route[2].language`), for an error about
    /// its prompt folder; `None` for the default.
    pub language_set_at: Option<String>,
    /// One session per mailbox: what a second login to a mailbox already in a call does.
    /// Default [`SessionRule::Replace`].
    pub session: SessionRule,
}

impl Default for RouteSettings {
    fn default() -> Self {
        Self {
            mailbox: MailboxSource::Ask,
            trusted_sources: Vec::new(),
            attempts: 3,
            first_digit_timeout: Duration::from_secs(5),
            inter_digit_timeout: Duration::from_secs(3),
            reprompts: 2,
            max_call_duration: Duration::from_secs(600),
            language: "en".to_owned(),
            language_set_at: None,
            session: SessionRule::Replace,
        }
    }
}

/// Allowed values, checked at load.
const ATTEMPTS: RangeInclusive<u32> = 1..=10;
const REPROMPTS: RangeInclusive<u32> = 0..=5;
const DIGIT_TIMEOUT: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(60);
const MAX_CALL_DURATION: RangeInclusive<Duration> =
    Duration::from_secs(30)..=Duration::from_secs(4 * 3_600);

impl RouteSettings {
    /// Whether a call signalled from `source` may be believed about who is calling: true when
    /// `trusted_sources` is empty or holds `source`.
    ///
    /// IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`, as a dual-stack socket reports IPv4
    /// peers) count as the IPv4 address.
    pub fn trusts(&self, source: IpAddr) -> bool {
        self.trusted_sources.is_empty() || self.trusted_sources.iter().any(|n| n.contains(source))
    }

    /// Where to take the mailbox from for a call signalled from `source`: the configured
    /// source, except that caller identity from an untrusted source falls back to asking.
    pub fn mailbox_for(&self, source: IpAddr) -> MailboxSource {
        match self.mailbox {
            MailboxSource::CallerId if self.trusts(source) => MailboxSource::CallerId,
            _ => MailboxSource::Ask,
        }
    }

    /// These settings with whatever `raw` (a route or `[defaults]`, named `table`) sets.
    fn overridden_by(
        mut self,
        src: &Source<'_>,
        raw: &RawEntry,
        table: &str,
    ) -> Result<Self, DialplanError> {
        let key = |name: &str| format!("{table}.{name}");
        if let Some(v) = &raw.mailbox {
            self.mailbox = MailboxSource::from_name(v.get_ref()).ok_or_else(|| {
                src.invalid(
                    v.span(),
                    &key("mailbox"),
                    format!(
                        "unknown mailbox source {:?}: expected one of {}",
                        v.get_ref(),
                        MailboxSource::NAMES
                    ),
                )
            })?;
        }
        if let Some(v) = &raw.session {
            self.session = SessionRule::from_name(v.get_ref()).ok_or_else(|| {
                src.invalid(
                    v.span(),
                    &key("session"),
                    format!(
                        "unknown session rule {:?}: expected one of {}",
                        v.get_ref(),
                        SessionRule::NAMES
                    ),
                )
            })?;
        }
        if let Some(list) = &raw.trusted_sources {
            // Empty reads as "nobody" but would mean every source (what no list means),
            // even under a [defaults] list of the SBCs: refused rather than guessed at.
            if list.get_ref().is_empty() {
                return Err(src.invalid(
                    list.span(),
                    &key("trusted_sources"),
                    "an empty list: name the addresses whose caller identity is believed \
                     (to believe every source, set no trusted_sources here or in [defaults])"
                        .to_owned(),
                ));
            }
            self.trusted_sources = list
                .get_ref()
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.get_ref().parse().map_err(|e: IpNetError| {
                        src.invalid(
                            v.span(),
                            &format!("{table}.trusted_sources[{}]", i + 1),
                            e.to_string(),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = &raw.attempts {
            self.attempts = src.count(v, &key("attempts"), ATTEMPTS)?;
        }
        if let Some(v) = &raw.reprompts {
            self.reprompts = src.count(v, &key("reprompts"), REPROMPTS)?;
        }
        if let Some(v) = &raw.first_digit_timeout {
            self.first_digit_timeout =
                src.duration(v, &key("first_digit_timeout"), DIGIT_TIMEOUT)?;
        }
        if let Some(v) = &raw.inter_digit_timeout {
            self.inter_digit_timeout =
                src.duration(v, &key("inter_digit_timeout"), DIGIT_TIMEOUT)?;
        }
        if let Some(v) = &raw.max_call_duration {
            self.max_call_duration =
                src.duration(v, &key("max_call_duration"), MAX_CALL_DURATION)?;
        }
        if let Some(v) = &raw.language {
            let name = v.get_ref();
            // The name becomes a path component under prompts/: nothing that could climb out.
            let safe = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !safe {
                return Err(src.invalid(
                    v.span(),
                    &key("language"),
                    format!(
                        "{name:?} is not a prompt folder name: use ASCII letters, digits, `-` and `_` only, such as \"en\" or \"pt-BR\""
                    ),
                ));
            }
            self.language = name.clone();
            self.language_set_at = Some(format!(
                "{}, line {}, key {}",
                src.origin,
                src.line(v.span().start),
                key("language")
            ));
        }
        // A route that lists trusted sources but asks every caller for the mailbox trusts
        // nobody's identity anyway: its author believes they restricted something.
        if table != "defaults"
            && self.mailbox == MailboxSource::Ask
            && let Some(first) = raw
                .trusted_sources
                .as_ref()
                .and_then(|l| l.get_ref().first())
        {
            return Err(src.invalid(
                first.span(),
                &key("trusted_sources"),
                "trusted_sources applies only to mailbox = \"caller-id\" (this route asks every \
                 caller for the mailbox)"
                    .to_owned(),
            ));
        }
        Ok(self)
    }
}

/// An IP network: an address and a prefix length, such as `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// The network `addr/prefix`.
    ///
    /// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) becomes the IPv4 network it stands
    /// for, so it matches the way [`IpNet::contains`] sees mapped addresses.
    ///
    /// # Errors
    /// [`IpNetError::Prefix`] when the prefix is longer than the address;
    /// [`IpNetError::HostBits`] when `addr` has bits set beyond the prefix (`10.1.2.3/8` is
    /// more likely a typo than a way to write `10.0.0.0/8`).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, IpNetError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(IpNetError::Prefix { prefix, max });
        }
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        let net = Self { addr, prefix };
        let network = net.network();
        if network != addr {
            return Err(IpNetError::HostBits {
                given: format!("{addr}/{prefix}"),
                network: format!("{network}/{prefix}"),
            });
        }
        Ok(net)
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `addr` is in this network. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = mask32(self.prefix);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = mask128(self.prefix);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// `addr` with the host bits cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(self.prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(self.prefix))),
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    // checked_shl: shifting a u32 by 32 (prefix 0) is an overflow, and the mask is then 0.
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

impl FromStr for IpNet {
    type Err = IpNetError;

    /// Reads `10.0.0.0/8`, `fd00::/8`, or a bare address (`127.0.0.1`, `::1`) as a single host.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IpNetError::Syntax(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => {
                let addr: IpAddr = addr.parse().map_err(|_| bad())?;
                // u8::from_str accepts a leading `+`; a prefix is digits only.
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let prefix = prefix.parse().map_err(|_| bad())?;
                (addr, prefix)
            }
            None => {
                let addr: IpAddr = s.parse().map_err(|_| bad())?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        };
        Self::new(addr, prefix)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A trusted source is not an address or network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpNetError {
    /// Neither an address nor `address/prefix`.
    #[error(
        "{0:?} is not an IP address or network (examples: \"127.0.0.1\", \"10.0.0.0/8\", \"::1\", \"fd00::/8\")"
    )]
    Syntax(String),
    /// The prefix is longer than the address.
    #[error("prefix /{prefix} is longer than the address ({max} bits)")]
    Prefix {
        /// The prefix given.
        prefix: u8,
        /// The address length in bits.
        max: u8,
    },
    /// The address has bits set beyond the prefix.
    #[error("{given} has bits set beyond the prefix; the network is {network}")]
    HostBits {
        /// The network as written (after IPv4-mapped addresses became IPv4).
        given: String,
        /// The network with those bits cleared.
        network: String,
    },
}

/// What a route answers: an exact Request-URI user or an Asterisk-style pattern.
///
/// Displays as the text it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    kind: PatternKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternKind {
    /// Matches this text, ignoring ASCII case.
    Exact(Vec<u8>),
    /// `_…`: one element per position; only the last may be `.` or `!`.
    Wildcard(Vec<Element>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    /// Exactly one character from the set.
    One(CharSet),
    /// `.`: one or more characters.
    OneOrMore,
    /// `!`: zero or more characters.
    ZeroOrMore,
}

impl Element {
    /// The rank of a pattern position, after Asterisk's `ext_cmp_pattern_pos`: lower is more
    /// specific. Sets rank by size only, so that equal sizes fall back to file order.
    fn rank(self) -> (u8, u32) {
        match self {
            Self::One(set) => (0, set.0.count_ones()),
            Self::OneOrMore => (1, 0),
            Self::ZeroOrMore => (2, 0),
        }
    }
}

/// A set of ASCII characters, letters folded to lower case; bit `b` stands for byte `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CharSet(u128);

impl CharSet {
    /// The characters `lo..=hi`, letters folded. Callers pass ASCII only.
    fn range(lo: u8, hi: u8) -> Self {
        Self(
            (lo..=hi)
                .map(|b| b.to_ascii_lowercase())
                .filter(u8::is_ascii)
                .fold(0, |bits, b| bits | 1 << b),
        )
    }

    fn single(b: u8) -> Self {
        Self::range(b, b)
    }

    fn contains(self, b: u8) -> bool {
        let b = b.to_ascii_lowercase();
        b.is_ascii() && self.0 & (1 << b) != 0
    }
}

impl Pattern {
    /// Reads a `match` value: text starting with `_` is a pattern, anything else an exact user.
    ///
    /// Pattern syntax (Asterisk's): `X` any digit, `Z` 1-9, `N` 2-9, `[15-7]` one character from
    /// a set with ranges, `.` one or more of anything and `!` zero or more (both only last), `-`
    /// ignored as a separator, anything else itself. Letters match either case, so `X`, `Z` and
    /// `N` are classes in either case; write `[x]` for the letter.
    ///
    /// # Errors
    /// [`PatternError`] when the text is empty, holds characters that cannot be dialled (space,
    /// non-ASCII, `@`, `:`, `%`), or is a malformed pattern.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        for c in text.chars() {
            match c {
                '@' | ':' => return Err(PatternError::NotUserPart(c)),
                '%' => return Err(PatternError::PercentEscape),
                c if !c.is_ascii_graphic() => return Err(PatternError::BadCharacter(c)),
                _ => {}
            }
        }
        let kind = match text.strip_prefix('_') {
            None => PatternKind::Exact(text.as_bytes().to_vec()),
            Some(body) => PatternKind::Wildcard(parse_elements(body.as_bytes())?),
        };
        Ok(Self {
            source: text.to_owned(),
            kind,
        })
    }

    /// The text this was read from.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// True for an exact user, false for a `_` pattern.
    pub fn is_exact(&self) -> bool {
        matches!(self.kind, PatternKind::Exact(_))
    }

    /// Whether this matches `user` (a Request-URI user part, `%`-escapes decoded first).
    pub fn matches(&self, user: &str) -> bool {
        self.matches_decoded(&percent_decode(user))
    }

    fn matches_decoded(&self, user: &[u8]) -> bool {
        match &self.kind {
            PatternKind::Exact(text) => text.eq_ignore_ascii_case(user),
            PatternKind::Wildcard(elements) => {
                for (i, element) in elements.iter().enumerate() {
                    match element {
                        Element::One(set) => match user.get(i) {
                            Some(&b) if set.contains(b) => {}
                            _ => return false,
                        },
                        // Validated to be last, so the rest of `user` is all that is left.
                        Element::OneOrMore => return user.len() > i,
                        Element::ZeroOrMore => return true,
                    }
                }
                user.len() == elements.len()
            }
        }
    }

    /// Whether both match exactly the same users (`8500` and `8500`, `_NXX` and `_[2-9]xx`,
    /// `8500` and `_8500`, a pattern with no wildcard that the exact route would always win).
    fn same_numbers(&self, other: &Self) -> bool {
        match (&self.kind, &other.kind) {
            (PatternKind::Exact(a), PatternKind::Exact(b)) => a.eq_ignore_ascii_case(b),
            (PatternKind::Wildcard(a), PatternKind::Wildcard(b)) => a == b,
            (PatternKind::Exact(user), PatternKind::Wildcard(elements))
            | (PatternKind::Wildcard(elements), PatternKind::Exact(user)) => {
                user.len() == elements.len()
                    && user
                        .iter()
                        .zip(elements)
                        .all(|(&b, e)| *e == Element::One(CharSet::single(b)))
            }
        }
    }

    /// The order in which routes are tried: `Less` means `self` first.
    fn precedence(&self, other: &Self) -> Ordering {
        match (&self.kind, &other.kind) {
            (PatternKind::Exact(_), PatternKind::Exact(_)) => Ordering::Equal,
            (PatternKind::Exact(_), PatternKind::Wildcard(_)) => Ordering::Less,
            (PatternKind::Wildcard(_), PatternKind::Exact(_)) => Ordering::Greater,
            // Lexicographic, so a pattern that ends where the other goes on comes first.
            (PatternKind::Wildcard(a), PatternKind::Wildcard(b)) => {
                a.iter().map(|e| e.rank()).cmp(b.iter().map(|e| e.rank()))
            }
        }
    }
}

/// Parses the part of a pattern after `_`; the characters are already known to be ASCII
/// graphic.
fn parse_elements(body: &[u8]) -> Result<Vec<Element>, PatternError> {
    let mut elements = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some((&b, after)) = rest.split_first() {
        rest = after;
        let element = match b {
            b'X' | b'x' => Element::One(CharSet::range(b'0', b'9')),
            b'Z' | b'z' => Element::One(CharSet::range(b'1', b'9')),
            b'N' | b'n' => Element::One(CharSet::range(b'2', b'9')),
            b'.' | b'!' if !rest.is_empty() => {
                return Err(PatternError::WildcardNotLast(char::from(b)));
            }
            b'.' => Element::OneOrMore,
            b'!' => Element::ZeroOrMore,
            // Asterisk ignores dashes so that `_1-800-NXX-XXXX` reads like a phone number.
            b'-' => continue,
            b']' => return Err(PatternError::StrayBracket),
            b'[' => {
                let close = rest
                    .iter()
                    .position(|&c| c == b']')
                    .ok_or(PatternError::UnclosedSet)?;
                let (inside, after) = rest.split_at(close);
                rest = after.get(1..).unwrap_or_default();
                Element::One(parse_set(inside)?)
            }
            other => Element::One(CharSet::single(other)),
        };
        elements.push(element);
    }
    if elements.is_empty() {
        return Err(PatternError::NothingAfterUnderscore);
    }
    Ok(elements)
}

/// Parses the inside of `[…]`: characters and ranges `a-b`; a `-` first or last is itself.
fn parse_set(inside: &[u8]) -> Result<CharSet, PatternError> {
    if inside.is_empty() {
        return Err(PatternError::EmptySet);
    }
    let mut bits = 0;
    let mut rest = inside;
    while let Some((&lo, after)) = rest.split_first() {
        if lo == b'[' {
            return Err(PatternError::NestedBracket);
        }
        match after {
            [b'-', hi, tail @ ..] => {
                if *hi == b'[' {
                    return Err(PatternError::NestedBracket);
                }
                if lo > *hi {
                    return Err(PatternError::BackwardRange(char::from(lo), char::from(*hi)));
                }
                bits |= CharSet::range(lo, *hi).0;
                rest = tail;
            }
            _ => {
                bits |= CharSet::single(lo).0;
                rest = after;
            }
        }
    }
    Ok(CharSet(bits))
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A `match` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The text is empty.
    #[error("is empty; write the dialled number, such as \"8500\", or a pattern such as \"_85XX\"")]
    Empty,
    /// `_` alone, or followed only by `-` separators.
    #[error("`_` starts a pattern, but no pattern follows it")]
    NothingAfterUnderscore,
    /// A space, control or non-ASCII character.
    #[error("{0:?} cannot be dialled; use digits, letters and symbols such as * # +")]
    BadCharacter(char),
    /// `@` or `:`: a whole URI rather than its user part.
    #[error(
        "{0:?} is not part of the dialled number; write only the user part, as 8500 for sip:8500@host"
    )]
    NotUserPart(char),
    /// `%`: an escape, where the character itself is wanted.
    #[error(
        "write the character itself, not its %-escape (\"*86\", not \"%2A86\"); calls are decoded before matching"
    )]
    PercentEscape,
    /// `.` or `!` before the end.
    #[error("`{0}` matches the rest of the number, so it can only be the last character")]
    WildcardNotLast(char),
    /// `[` without `]`.
    #[error("`[` has no closing `]`")]
    UnclosedSet,
    /// `]` without `[`.
    #[error("`]` has no opening `[`")]
    StrayBracket,
    /// `[]`.
    #[error("`[]` matches nothing")]
    EmptySet,
    /// A range whose end comes before its start, such as `[7-5]`.
    #[error("range `{0}-{1}` runs backwards; write `{1}-{0}`")]
    BackwardRange(char, char),
    /// `[` inside a set.
    #[error("`[` inside `[…]`; sets do not nest")]
    NestedBracket,
}

/// A dialplan cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DialplanError {
    /// The file cannot be read.
    #[error("dialplan {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The text is not valid TOML, or a key is unknown, missing, of the wrong type or has a
    /// value that cannot be used. Displays as `origin, line N, key K: message`.
    #[error("{origin}{}: {message}", location(*.line, .key.as_deref()))]
    Invalid {
        /// The file name (or whatever the caller of [`Dialplan::parse`] named the text).
        origin: String,
        /// The line, from 1; absent only for TOML errors that have no position.
        line: Option<usize>,
        /// The dotted key, such as `defaults.attempts`, `route[2].match` or
        /// `route[1].trusted_sources[3]`; routes and list items count from 1.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
}

fn location(line: Option<usize>, key: Option<&str>) -> String {
    match (line, key) {
        (Some(line), Some(key)) => format!(", line {line}, key {key}"),
        (Some(line), None) => format!(", line {line}"),
        (None, Some(key)) => format!(", key {key}"),
        (None, None) => String::new(),
    }
}

/// The file's shape. Every value keeps its span so a bad one can be pointed at.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    defaults: Option<Spanned<RawEntry>>,
    #[serde(default)]
    route: Vec<Spanned<RawEntry>>,
}

/// A `[[route]]` or the `[defaults]` table: one struct for both, so that `match` put into
/// `[defaults]` gets a message saying where it belongs rather than "unknown field".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(rename = "match")]
    pattern: Option<Spanned<String>>,
    application: Option<Spanned<String>>,
    mailbox: Option<Spanned<String>>,
    trusted_sources: Option<Spanned<Vec<Spanned<String>>>>,
    attempts: Option<Spanned<WholeNumber>>,
    reprompts: Option<Spanned<WholeNumber>>,
    first_digit_timeout: Option<Spanned<DurationText>>,
    inter_digit_timeout: Option<Spanned<DurationText>>,
    max_call_duration: Option<Spanned<DurationText>>,
    language: Option<Spanned<String>>,
    session: Option<Spanned<String>>,
}

/// An integer setting. Signed, so that `-1` is reported as out of range like `11`; its own
/// type, so that a wrong type reads "expected a whole number" rather than "expected i64".
struct WholeNumber(i64);

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = WholeNumber;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number, such as 3")
            }
            fn visit_i64<E>(self, v: i64) -> Result<WholeNumber, E> {
                Ok(WholeNumber(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<WholeNumber, E> {
                // Out of range either way; saturating keeps the message about the range.
                Ok(WholeNumber(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        d.deserialize_i64(Visitor)
    }
}

/// The text being parsed, for turning byte offsets into lines and keys.
struct Source<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Source<'_> {
    /// The line, from 1, of byte `offset`.
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn invalid(&self, span: Range<usize>, key: &str, message: String) -> DialplanError {
        DialplanError::Invalid {
            origin: self.origin.to_owned(),
            line: Some(self.line(span.start)),
            key: Some(key.to_owned()),
            message,
        }
    }

    /// A TOML syntax or shape error, with the key it is about (`toml_key::key_at`).
    fn toml_error(&self, e: &toml::de::Error) -> DialplanError {
        let offset = e.span().map(|span| span.start);
        let key = offset.and_then(|o| crate::toml_key::key_at(self.text, o));
        let mut message = crate::redact::serde_message(e.message().trim_end());
        if key.as_deref() == Some("route") && message.starts_with("invalid type: map") {
            // The commonest slip in these files: `[route]` declares one table, not a list.
            message.push_str("; write each route as [[route]], with double brackets");
        }
        DialplanError::Invalid {
            origin: self.origin.to_owned(),
            line: offset.map(|o| self.line(o)),
            key,
            message,
        }
    }

    /// Where the `number`th `[[route]]` header is, for errors about the route as a whole.
    fn route_header(&self, number: usize) -> Option<Range<usize>> {
        let mut offset = 0;
        let mut seen = 0;
        for line in self.text.split_inclusive('\n') {
            let trimmed = line.trim();
            if trimmed.strip_prefix("[[").map(crate::toml_key::header_name) == Some("route") {
                seen += 1;
                if seen == number {
                    return Some(offset..offset + line.len());
                }
            }
            offset += line.len();
        }
        None
    }

    /// `[defaults]` holds settings only.
    fn reject_route_keys(&self, raw: &RawEntry) -> Result<(), DialplanError> {
        for (name, value) in [("match", &raw.pattern), ("application", &raw.application)] {
            if let Some(v) = value {
                return Err(self.invalid(
                    v.span(),
                    &format!("defaults.{name}"),
                    format!("`{name}` belongs in a [[route]], not in [defaults]"),
                ));
            }
        }
        Ok(())
    }

    fn count(
        &self,
        v: &Spanned<WholeNumber>,
        key: &str,
        allowed: RangeInclusive<u32>,
    ) -> Result<u32, DialplanError> {
        u32::try_from(v.get_ref().0)
            .ok()
            .filter(|n| allowed.contains(n))
            .ok_or_else(|| {
                self.invalid(
                    v.span(),
                    key,
                    format!(
                        "must be from {} to {}, not {}",
                        allowed.start(),
                        allowed.end(),
                        v.get_ref().0
                    ),
                )
            })
    }

    fn duration(
        &self,
        v: &Spanned<DurationText>,
        key: &str,
        allowed: RangeInclusive<Duration>,
    ) -> Result<Duration, DialplanError> {
        let d = parse_duration(&v.get_ref().0)
            .map_err(|e| self.invalid(v.span(), key, e.to_string()))?;
        if allowed.contains(&d) {
            Ok(d)
        } else {
            Err(self.invalid(
                v.span(),
                key,
                format!(
                    "must be from {} to {}, not {}",
                    format_duration(*allowed.start()),
                    format_duration(*allowed.end()),
                    format_duration(d)
                ),
            ))
        }
    }
}

/// Decodes `%HH` escapes (RFC 3261 §19.1.4: an escaped character equals the character itself).
/// A `%` not followed by two hex digits is kept as it is, since such a user matches nothing
/// sensible either way and a 404 is the right answer.
fn percent_decode(s: &str) -> Cow<'_, [u8]> {
    let bytes = s.as_bytes();
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(bytes);
    }
    let hex = |b: &u8| char::from(*b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&b, after)) = rest.split_first() {
        if let (b'%', [h, l, tail @ ..]) = (b, after)
            && let (Some(h), Some(l)) = (hex(h), hex(l))
        {
            // Two hex digits are at most 0xff.
            out.push(u8::try_from(h << 4 | l).unwrap_or(u8::MAX));
            rest = tail;
            continue;
        }
        out.push(b);
        rest = after;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DEFAULT: &str = include_str!("../../dialplans/default.toml");
    const FULL: &str = include_str!("../../dialplans/example-full.toml");

    fn parsed(text: &str) -> Dialplan {
        match Dialplan::parse(text, "test.toml") {
            Ok(plan) => plan,
            Err(e) => panic!("{e}"),
        }
    }

    /// The route that `user` reaches, by its `match` text.
    fn routed<'a>(plan: &'a Dialplan, user: &str) -> Option<&'a str> {
        plan.route(user).map(|r| r.pattern.as_str())
    }

    /// Routes with these `match` values, all to the voice portal.
    fn plan_of(matches: &[&str]) -> Dialplan {
        let text: String = matches
            .iter()
            .map(|m| format!("[[route]]\nmatch = {m:?}\napplication = \"voice-portal\"\n\n"))
            .collect();
        parsed(&text)
    }

    /// The line, key and message of the error `text` must produce.
    fn error(text: &str) -> (usize, String, String) {
        match Dialplan::parse(text, "x.toml") {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(DialplanError::Invalid {
                origin,
                line,
                key,
                message,
            }) => {
                assert_eq!(origin, "x.toml");
                (line.unwrap_or_default(), key.unwrap_or_default(), message)
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }

    /// Asserts the error of `text` is at `line`, under `key`, and mentions `needle`.
    #[track_caller]
    fn assert_error(text: &str, line: usize, key: &str, needle: &str) {
        let (got_line, got_key, message) = error(text);
        assert_eq!(
            (got_line, got_key.as_str()),
            (line, key),
            "message: {message}\n{text}"
        );
        assert!(
            message.contains(needle),
            "{message:?} lacks {needle:?}\n{text}"
        );
    }

    /// One route (lines 1-3) with `extra` lines after it.
    fn route_with(extra: &str) -> String {
        route_for("8500", extra)
    }

    /// One route for `user` (lines 1-3) with `extra` lines after it.
    fn route_for(user: &str, extra: &str) -> String {
        format!("[[route]]\nmatch = {user:?}\napplication = \"voice-portal\"\n{extra}\n")
    }

    const V4: fn(u8, u8, u8, u8) -> IpAddr = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }

    // --- the default dialplan -------------------------------------------------------------

    #[test]
    fn session_rule_setting() {
        let p = parsed(
            "[defaults]\nsession = \"reject\"\n\n[[route]]\nmatch = \"8500\"\napplication = \"voice-portal\"\n\n[[route]]\nmatch = \"8501\"\napplication = \"voice-portal\"\nsession = \"allow\"\n",
        );
        assert_eq!(p.routes()[0].settings.session, SessionRule::Reject);
        assert_eq!(p.routes()[1].settings.session, SessionRule::Allow);
        assert_eq!(RouteSettings::default().session, SessionRule::Replace);
        let err = Dialplan::parse("[defaults]\nsession = \"share\"\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("defaults.session"),
            "{err}"
        );
        for rule in [
            SessionRule::Replace,
            SessionRule::Reject,
            SessionRule::Allow,
        ] {
            assert_eq!(SessionRule::from_name(rule.as_str()), Some(rule));
        }
    }

    #[test]
    fn default_file_routes_the_standard_numbers() {
        let plan = parsed(DEFAULT);
        assert_eq!(plan.routes().len(), 3);
        for user in ["8500", "voicemail", "VoiceMail", "VOICEMAIL"] {
            let route = plan.route(user).unwrap();
            assert_eq!(route.application, Application::VoicePortal, "{user}");
            assert_eq!(route.settings.mailbox, MailboxSource::Ask, "{user}");
            // The built-in settings; the file says `en` in its defaults.
            let set_at = route.settings.language_set_at.clone();
            assert!(
                set_at
                    .as_deref()
                    .is_some_and(|at| at.ends_with(", key defaults.language")),
                "{set_at:?}"
            );
            let expected = RouteSettings {
                language_set_at: set_at,
                ..RouteSettings::default()
            };
            assert_eq!(route.settings, expected, "{user}");
        }
        for user in ["*86", "%2A86", "%2a86"] {
            let route = plan.route(user).unwrap();
            assert_eq!(route.pattern.to_string(), "*86");
            assert_eq!(route.application, Application::VoicePortal);
            assert_eq!(route.settings.mailbox, MailboxSource::CallerId);
        }
        for user in [
            "8501",
            "vivekg",
            "",
            "sips:user@example.com",
            "sip:8500@example.com",
            "85000",
            "850",
            " 8500",
            "8500 ",
            "*860",
            "86",
            "%",
            "%2",
            "%zz86",
        ] {
            assert!(plan.route(user).is_none(), "{user:?} should get 404");
        }
    }

    #[test]
    fn embedded_default_is_the_file() {
        assert_eq!(DEFAULT_DIALPLAN, DEFAULT);
    }

    #[test]
    fn default_file_loads_from_disk() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dialplans/default.toml");
        let plan = crate::server::load_dialplan(&path).unwrap();
        assert_eq!(routed(&plan, "8500"), Some("8500"));
    }

    #[test]
    fn full_example_routes_as_its_comments_say() {
        let plan = parsed(FULL);
        let defaults = &plan.routes()[0].settings;
        assert_eq!(defaults.trusted_sources.len(), 3);
        assert_eq!(routed(&plan, "8500"), Some("8500"));
        assert_eq!(plan.route("8500").unwrap().settings.attempts, 3);
        assert_eq!(
            plan.route("8500").unwrap().settings.session,
            SessionRule::Replace
        );
        assert_eq!(
            plan.route("8501").unwrap().settings.session,
            SessionRule::Reject
        );
        assert_eq!(routed(&plan, "8542"), Some("_85XX"));
        let other = &plan.route("8542").unwrap().settings;
        assert_eq!(
            (other.attempts, other.reprompts, other.max_call_duration),
            (5, 1, Duration::from_secs(1_200))
        );
        assert_eq!(other.language, "en");
        let change = plan.route("*87").unwrap();
        assert_eq!(change.application, Application::ChangePasscode);
        assert_eq!(change.settings.inter_digit_timeout, Duration::from_secs(5));
        let paris = plan.route("8612").unwrap();
        assert_eq!(paris.settings.language, "fr");
        assert_eq!(paris.settings.mailbox, MailboxSource::CallerId);
        assert!(paris.settings.trusts(V4(10, 33, 1, 2)));
        assert!(!paris.settings.trusts(V4(192, 0, 2, 10)));
        assert_eq!(routed(&plan, "+12125550100"), Some("_+1-212-555-0100"));
        assert_eq!(routed(&plan, "12125550100"), Some("_1-212-555-0100"));
        assert_eq!(routed(&plan, "1-212-555-0100"), None);
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let e = crate::server::load_dialplan(&missing).unwrap_err();
        assert!(matches!(e, DialplanError::Io { .. }));
        assert!(e.to_string().contains("missing.toml"), "{e}");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, route_with("attempts = 0")).unwrap();
        let e = crate::server::load_dialplan(&bad).unwrap_err().to_string();
        let expected = format!(
            "{}, line 4, key route[1].attempts: must be from 1 to 10, not 0",
            bad.display()
        );
        assert_eq!(e, expected);

        // Latin-1 in a comment, saved by an editor that does not write UTF-8.
        std::fs::write(&bad, b"[defaults]\n# caf\xe9\n").unwrap();
        let e = crate::server::load_dialplan(&bad).unwrap_err().to_string();
        let expected = format!(
            "{}, line 2: not UTF-8 text (save the file as UTF-8)",
            bad.display()
        );
        assert_eq!(e, expected);
    }

    #[test]
    fn empty_file_routes_nothing() {
        let plan = parsed("");
        assert!(plan.routes().is_empty());
        assert!(plan.route("8500").is_none());
        assert!(parsed("[defaults]\nattempts = 4\n").routes().is_empty());
    }

    // --- patterns --------------------------------------------------------------------------

    #[test]
    fn pattern_table() {
        let table: &[(&str, &[&str], &[&str])] = &[
            ("8500", &["8500", "%38500"], &["850", "85000", "_8500"]),
            (
                "voicemail",
                &["voicemail", "VoiceMail", "VOICEMAIL"],
                &["voicemai", "voicemail1"],
            ),
            ("*86", &["*86", "%2A86"], &["86", "*860", "#86"]),
            (
                "_85XX",
                &["8500", "8599", "8542"],
                &["850", "85000", "8600", "85a0", "85X0"],
            ),
            (
                "_NXX",
                &["200", "999", "555"],
                &["100", "099", "20", "2000", "2a0"],
            ),
            ("_ZXX", &["100", "999"], &["099", "10"]),
            ("_nxx", &["200"], &["100"]),
            ("_[1-3]X", &["10", "25", "39"], &["40", "05", "1", "100"]),
            ("_[15-7]", &["1", "5", "6", "7"], &["2", "4", "8", "15"]),
            ("_[-5]", &["-", "5"], &["4"]),
            ("_[5-]", &["-", "5"], &["4"]),
            ("_[*#]X", &["*1", "#9"], &["11"]),
            (
                "_1.",
                &["10", "1abc", "1*#", "123456789012"],
                &["1", "", "21"],
            ),
            ("_1!", &["1", "10", "1abc"], &["", "21"]),
            ("_!", &["", "x", "anything at all"], &[]),
            ("_.", &["x", "8500"], &[""]),
            (
                "_*8X",
                &["*80", "*89", "%2A81"],
                &["*8", "*800", "8*80", "*8a"],
            ),
            ("_#X", &["#1"], &["*1"]),
            (
                "_+1NXXNXXXXXX",
                &["+12125550100"],
                &["12125550100", "+11125550100"],
            ),
            ("_1-800-NXX-XXXX", &["18002125555"], &["1-800-212-5555"]),
            ("_vm[x]", &["vmx", "VMX"], &["vm1"]),
            ("_VM.", &["vm1", "VM2", "vmabc"], &["vm", "v1"]),
            ("_[a-c]1", &["a1", "B1", "c1"], &["d1"]),
        ];
        for (source, yes, no) in table {
            let p = Pattern::parse(source).unwrap();
            assert_eq!(p.to_string(), *source);
            assert_eq!(p.is_exact(), !source.starts_with('_'));
            for user in *yes {
                assert!(p.matches(user), "{source} should match {user:?}");
            }
            for user in *no {
                assert!(!p.matches(user), "{source} should not match {user:?}");
            }
        }
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        use PatternError as E;
        let table = [
            ("", E::Empty),
            ("_", E::NothingAfterUnderscore),
            ("_--", E::NothingAfterUnderscore),
            ("_1.2", E::WildcardNotLast('.')),
            ("_1!X", E::WildcardNotLast('!')),
            ("_.!", E::WildcardNotLast('.')),
            ("_[12", E::UnclosedSet),
            ("_12]", E::StrayBracket),
            ("_[]1", E::EmptySet),
            ("_[7-5]", E::BackwardRange('7', '5')),
            ("_[1[2]]", E::NestedBracket),
            ("_[1-[]", E::NestedBracket),
            ("85 00", E::BadCharacter(' ')),
            ("_85\t00", E::BadCharacter('\t')),
            ("voicemaïl", E::BadCharacter('ï')),
            ("8500@example.com", E::NotUserPart('@')),
            ("sip:8500", E::NotUserPart(':')),
            ("%2A86", E::PercentEscape),
        ];
        for (source, expected) in table {
            assert_eq!(Pattern::parse(source), Err(expected), "{source:?}");
        }
        // Whatever is not a pattern is an exact user, even with pattern characters in it.
        assert!(Pattern::parse("8500.").unwrap().matches("8500."));
        assert!(!Pattern::parse("85XX").unwrap().matches("8500"));
    }

    #[test]
    fn exact_beats_pattern_whatever_the_file_order() {
        let plan = plan_of(&["_!", "_85XX", "_850X", "8500", "_X."]);
        assert_eq!(routed(&plan, "8500"), Some("8500"));
        assert_eq!(routed(&plan, "8501"), Some("_850X"));
        assert_eq!(routed(&plan, "8510"), Some("_85XX"));
    }

    #[test]
    fn most_specific_pattern_wins_whatever_the_file_order() {
        // Deliberately least specific first.
        let plan = plan_of(&[
            "_!",
            "_X.",
            "_8!",
            "_8.",
            "_NXXX",
            "_8XXX",
            "_8[4-6]XX",
            "_85XX",
            "_850X",
            "_8500",
        ]);
        let expected = [
            ("8500", "_8500"),
            ("8501", "_850X"),
            ("8510", "_85XX"),
            ("8410", "_8[4-6]XX"),
            ("8710", "_8XXX"),
            ("9710", "_NXXX"),
            ("87", "_8."),
            ("8", "_8!"),
            ("12", "_X."),
            ("12345", "_X."),
            ("1", "_!"),
            ("", "_!"),
            ("*86", "_!"),
        ];
        for (user, route) in expected {
            assert_eq!(routed(&plan, user), Some(route), "{user}");
        }
        // A pattern that ends beats one that goes on; a literal beats `N` beats `X`; `.`
        // beats `!`.
        let plan = plan_of(&["_1X!", "_1X", "_X", "_N", "_3"]);
        assert_eq!(routed(&plan, "12"), Some("_1X"));
        assert_eq!(routed(&plan, "123"), Some("_1X!"));
        assert_eq!(routed(&plan, "3"), Some("_3"));
        assert_eq!(routed(&plan, "4"), Some("_N"));
        assert_eq!(routed(&plan, "1"), Some("_X"));
        let plan = plan_of(&["_1!", "_1."]);
        assert_eq!(routed(&plan, "12"), Some("_1."));
        assert_eq!(routed(&plan, "1"), Some("_1!"));
    }

    #[test]
    fn patterns_of_equal_rank_keep_file_order() {
        // Both take "10": sets of the same size tie, and the earlier route wins.
        let plan = plan_of(&["_[13]X", "_[12]X"]);
        assert_eq!(routed(&plan, "10"), Some("_[13]X"));
        assert_eq!(routed(&plan, "20"), Some("_[12]X"));
        assert_eq!(routed(&plan, "30"), Some("_[13]X"));
        let plan = plan_of(&["_[12]X", "_[13]X"]);
        assert_eq!(routed(&plan, "10"), Some("_[12]X"));
        // Letters fold, so [aA] is one character and ranks as one.
        let plan = plan_of(&["_[ab]", "_[aA]"]);
        assert_eq!(routed(&plan, "a"), Some("_[aA]"));
        // routes() keeps file order whatever the matching order.
        let plan = plan_of(&["_X.", "8500", "_85XX"]);
        let listed: Vec<&str> = plan.routes().iter().map(|r| r.pattern.as_str()).collect();
        assert_eq!(listed, ["_X.", "8500", "_85XX"]);
    }

    // --- settings ---------------------------------------------------------------------------

    #[test]
    fn built_in_defaults() {
        let s = RouteSettings::default();
        assert_eq!(s.mailbox, MailboxSource::Ask);
        assert!(s.trusted_sources.is_empty());
        assert_eq!(s.attempts, 3);
        assert_eq!(s.first_digit_timeout, Duration::from_secs(5));
        assert_eq!(s.inter_digit_timeout, Duration::from_secs(3));
        assert_eq!(s.reprompts, 2);
        assert_eq!(s.max_call_duration, Duration::from_secs(600));
        assert_eq!(s.language, "en");
        // A route that sets nothing gets exactly these.
        assert_eq!(parsed(&route_with("")).routes()[0].settings, s);
    }

    #[test]
    fn defaults_table_overrides_built_ins_and_routes_override_again() {
        let text = r#"
[defaults]
mailbox = "caller-id"
trusted_sources = ["10.0.0.0/8"]
attempts = 5
first_digit_timeout = "10s"
inter_digit_timeout = 4
reprompts = 0
max_call_duration = "1h30m"
language = "fr"

[[route]]
match = "8500"
application = "voice-portal"

[[route]]
match = "*87"
application = "change-passcode"
mailbox = "ask"
attempts = 1
first_digit_timeout = "1m"
inter_digit_timeout = "2s"
reprompts = 5
max_call_duration = "30s"
language = "pt-BR"
"#;
        let plan = parsed(text);
        let inherited = &plan.route("8500").unwrap().settings;
        assert_eq!(
            inherited,
            &RouteSettings {
                mailbox: MailboxSource::CallerId,
                trusted_sources: vec!["10.0.0.0/8".parse().unwrap()],
                attempts: 5,
                first_digit_timeout: Duration::from_secs(10),
                inter_digit_timeout: Duration::from_secs(4),
                reprompts: 0,
                max_call_duration: Duration::from_secs(5_400),
                language: "fr".into(),
                language_set_at: Some("test.toml, line 10, key defaults.language".into()),
                session: SessionRule::Replace,
            }
        );
        let own = plan.route("*87").unwrap();
        assert_eq!(own.application, Application::ChangePasscode);
        assert_eq!(
            own.settings,
            RouteSettings {
                mailbox: MailboxSource::Ask,
                // Inherited, unused: the route asks.
                trusted_sources: vec!["10.0.0.0/8".parse().unwrap()],
                attempts: 1,
                first_digit_timeout: Duration::from_secs(60),
                inter_digit_timeout: Duration::from_secs(2),
                reprompts: 5,
                max_call_duration: Duration::from_secs(30),
                language: "pt-BR".into(),
                language_set_at: Some("test.toml, line 25, key route[2].language".into()),
                session: SessionRule::Replace,
            }
        );
        // Upper ends of the ranges.
        let top = parsed(&route_with(
            "attempts = 10\nmax_call_duration = \"4h\"\ninter_digit_timeout = \"60s\"",
        ));
        let s = &top.routes()[0].settings;
        assert_eq!(s.attempts, 10);
        assert_eq!(s.max_call_duration, Duration::from_secs(14_400));
        assert_eq!(s.inter_digit_timeout, Duration::from_secs(60));
    }

    #[test]
    fn out_of_range_numbers_name_line_and_key() {
        assert_error(
            &route_with("attempts = 0"),
            4,
            "route[1].attempts",
            "from 1 to 10, not 0",
        );
        assert_error(
            &route_with("attempts = 11"),
            4,
            "route[1].attempts",
            "not 11",
        );
        assert_error(
            &route_with("attempts = -1"),
            4,
            "route[1].attempts",
            "not -1",
        );
        assert_error(
            &route_with("reprompts = 6"),
            4,
            "route[1].reprompts",
            "from 0 to 5, not 6",
        );
        assert_error(
            &route_with("reprompts = -1"),
            4,
            "route[1].reprompts",
            "not -1",
        );
        assert_error(
            "[defaults]\nlanguage = \"en\"\nattempts = 0\n",
            3,
            "defaults.attempts",
            "from 1 to 10",
        );
        assert_error(
            &format!("{}{}", route_with(""), route_for("8501", "\nreprompts = 9")),
            9,
            "route[2].reprompts",
            "not 9",
        );
        assert_error(
            &route_with("attempts = \"3\""),
            4,
            "route[1].attempts",
            "expected a whole number",
        );
        assert_error(
            &route_with("attempts = 3.5"),
            4,
            "route[1].attempts",
            "whole number",
        );
    }

    #[test]
    fn bad_durations_name_line_and_key() {
        let cases = [
            (
                "first_digit_timeout = \"0s\"",
                "first_digit_timeout",
                "greater than zero",
            ),
            (
                "first_digit_timeout = \"61s\"",
                "first_digit_timeout",
                "from 1s to 1m, not 1m1s",
            ),
            (
                "first_digit_timeout = \"1500ms\"",
                "first_digit_timeout",
                "unknown unit",
            ),
            (
                "inter_digit_timeout = \"2m\"",
                "inter_digit_timeout",
                "not 2m",
            ),
            (
                "inter_digit_timeout = \"soon\"",
                "inter_digit_timeout",
                "invalid duration",
            ),
            (
                "inter_digit_timeout = 0",
                "inter_digit_timeout",
                "greater than zero",
            ),
            (
                "max_call_duration = \"29s\"",
                "max_call_duration",
                "from 30s to 4h, not 29s",
            ),
            (
                "max_call_duration = \"4h1s\"",
                "max_call_duration",
                "not 4h1s",
            ),
            ("max_call_duration = \"\"", "max_call_duration", "empty"),
            (
                "max_call_duration = true",
                "max_call_duration",
                "expected a duration",
            ),
        ];
        for (line, key, needle) in cases {
            assert_error(&route_with(line), 4, &format!("route[1].{key}"), needle);
        }
        assert_error(
            "# comment\n[defaults]\nfirst_digit_timeout = \"90s\"\n",
            3,
            "defaults.first_digit_timeout",
            "not 1m30s",
        );
    }

    #[test]
    fn bad_languages_are_rejected() {
        for bad in [
            "", "..", "../en", "en/us", "en us", ".hidden", "en\\\\x", "fr.", "é",
        ] {
            assert_error(
                &route_with(&format!("language = \"{bad}\"")),
                4,
                "route[1].language",
                "not a prompt folder name",
            );
        }
        assert_error(
            "[defaults]\nlanguage = \"../../etc\"\n",
            2,
            "defaults.language",
            "folder",
        );
        for good in ["en", "en-GB", "pt_BR", "X1"] {
            let p = parsed(&route_with(&format!("language = \"{good}\"")));
            assert_eq!(p.routes()[0].settings.language, good);
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert_error(
            &route_with("atempts = 3"),
            4,
            "route[1].atempts",
            "unknown field `atempts`",
        );
        assert_error(
            "[defaults]\nattempts = 3\nbogus = 1\n",
            3,
            "defaults.bogus",
            "unknown field",
        );
        assert_error(
            "[defualts]\nattempts = 3\n",
            1,
            "defualts",
            "unknown field `defualts`",
        );
        assert_error("title = \"x\"\n", 1, "title", "unknown field `title`");
        assert_error(
            "[route]\nmatch = \"8500\"\n",
            1,
            "route",
            "write each route as [[route]]",
        );
    }

    #[test]
    fn route_keys_do_not_belong_in_defaults() {
        assert_error(
            "[defaults]\nmatch = \"8500\"\n",
            2,
            "defaults.match",
            "belongs in a [[route]]",
        );
        assert_error(
            "[defaults]\napplication = \"voice-portal\"\n",
            2,
            "defaults.application",
            "belongs in a [[route]]",
        );
    }

    #[test]
    fn duplicate_matches_are_errors() {
        let twice = format!("{}{}", route_with(""), route_with(""));
        assert_error(&twice, 6, "route[2].match", "route[1] (\"8500\", line 2)");
        let text = "[[route]]\nmatch = \"voicemail\"\napplication = \"voice-portal\"\n\
                    [[route]]\nmatch = \"VoiceMail\"\napplication = \"voice-portal\"\n";
        assert_error(text, 5, "route[2].match", "the same number");
        let text = "[[route]]\nmatch = \"_NXX\"\napplication = \"voice-portal\"\n\
                    [[route]]\nmatch = \"*86\"\napplication = \"voice-portal\"\n\
                    [[route]]\nmatch = \"_[2-9]xx\"\napplication = \"voice-portal\"\n";
        assert_error(text, 8, "route[3].match", "route[1] (\"_NXX\", line 2)");
        // The same key twice in one route is a TOML error.
        assert_error(
            &route_with("match = \"8501\""),
            4,
            "route[1].match",
            "duplicate key",
        );
        // A pattern with no wildcard beside the exact user it spells: the pattern route
        // could never be chosen (exact wins), in either order.
        let text = "[[route]]\nmatch = \"8500\"\napplication = \"voice-portal\"\n\
                    [[route]]\nmatch = \"_85-00\"\napplication = \"change-passcode\"\n";
        assert_error(
            text,
            5,
            "route[2].match",
            "the same number as route[1] (\"8500\"",
        );
        let text = "[[route]]\nmatch = \"_*86\"\napplication = \"voice-portal\"\n\
                    [[route]]\nmatch = \"*86\"\napplication = \"voice-portal\"\n";
        assert_error(
            text,
            5,
            "route[2].match",
            "the same number as route[1] (\"_*86\"",
        );
        // A pattern for more numbers than the exact one is not a duplicate: exact wins for
        // its number, the pattern takes the rest.
        plan_of(&["8500", "_85XX", "_8500."]);
    }

    #[test]
    fn bad_match_application_and_mailbox_are_errors() {
        let text = "\n[[route]]\nmatch = \"_85.X\"\napplication = \"voice-portal\"\n";
        assert_error(text, 3, "route[1].match", "can only be the last character");
        let text = "[[route]]\nmatch = \"\"\napplication = \"voice-portal\"\n";
        assert_error(text, 2, "route[1].match", "is empty");
        let text = "[[route]]\nmatch = 8500\napplication = \"voice-portal\"\n";
        assert_error(text, 2, "route[1].match", "expected a string");
        let text = "[[route]]\nmatch = \"8500\"\napplication = \"voicemail\"\n";
        assert_error(
            text,
            3,
            "route[1].application",
            "unknown application \"voicemail\"",
        );
        assert_error(
            &route_with("mailbox = \"pai\""),
            4,
            "route[1].mailbox",
            "\"ask\", \"caller-id\"",
        );
        let text = format!(
            "{}\n[[route]]\napplication = \"voice-portal\"\n",
            route_with("")
        );
        assert_error(&text, 6, "route[2]", "missing `match`");
        let text = format!(
            "{}\n[[route]] # star code\nmatch = \"*86\"\n",
            route_with("")
        );
        assert_error(&text, 6, "route[2]", "missing `application`");
    }

    #[test]
    fn toml_syntax_errors_name_line_and_key() {
        let text = "[[route]]\nmatch = \"8500\napplication = \"voice-portal\"\n";
        assert_error(text, 2, "route[1].match", "string");
        let (line, key, _) = error("[defaults]\nattempts 3\n");
        assert_eq!(line, 2);
        assert_eq!(key, "defaults");
        let text = route_with("trusted_sources = [\n  \"10.0.0.0/8\",\n  5,\n]");
        assert_error(&text, 6, "route[1].trusted_sources[2]", "expected a string");
        let shown = Dialplan::parse(&route_with("attempts = 0"), "dialplans/x.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            shown,
            "dialplans/x.toml, line 4, key route[1].attempts: must be from 1 to 10, not 0"
        );
    }

    // --- trusted sources --------------------------------------------------------------------

    #[test]
    fn trusted_sources_on_a_route_that_asks_are_refused() {
        let text = route_with("mailbox = \"ask\"\ntrusted_sources = [\"10.0.0.0/8\"]");
        assert_error(
            &text,
            5,
            "route[1].trusted_sources",
            "applies only to mailbox = \"caller-id\"",
        );
        // Inherited from the defaults (for routes that take caller ID): fine.
        parsed(&format!(
            "[defaults]\ntrusted_sources = [\"10.0.0.0/8\"]\n{}",
            route_with("mailbox = \"ask\"")
        ));
    }

    /// An empty list reads as "nobody" but meant every source, even on a route under a
    /// [defaults] list of the SBCs, whose caller identity it then believed from anyone.
    #[test]
    fn an_empty_list_of_trusted_sources_is_refused() {
        let empty = "an empty list: name the addresses whose caller identity is believed";
        assert_error(
            &route_with("mailbox = \"caller-id\"\ntrusted_sources = []"),
            5,
            "route[1].trusted_sources",
            empty,
        );
        assert_error(
            "[defaults]\nmailbox = \"caller-id\"\ntrusted_sources = [ ]\n",
            3,
            "defaults.trusted_sources",
            empty,
        );
    }

    #[test]
    fn trusted_sources_parse_and_reject() {
        let text = route_with(
            "mailbox = \"caller-id\"\ntrusted_sources = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1\", \"fd00::/8\"]",
        );
        let plan = parsed(&text);
        let shown: Vec<String> = plan.routes()[0]
            .settings
            .trusted_sources
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["127.0.0.1/32", "10.0.0.0/8", "::1/128", "fd00::/8"]);

        let bad = [
            ("10.1.2.3/8", "the network is 10.0.0.0/8"),
            ("fd00::1/8", "the network is fd00::/8"),
            ("10.0.0.0/33", "longer than the address (32 bits)"),
            ("::/129", "(128 bits)"),
            ("300.1.1.1", "not an IP address"),
            ("10.0.0.0/", "not an IP address"),
            ("10.0.0.0/+8", "not an IP address"),
            ("[::1]", "not an IP address"),
            ("host.example.com", "not an IP address"),
            (" 10.0.0.1", "not an IP address"),
        ];
        for (value, needle) in bad {
            let text = route_with(&format!("trusted_sources = [\"127.0.0.1\", \"{value}\"]"));
            assert_error(&text, 4, "route[1].trusted_sources[2]", needle);
        }
        let text = "[defaults]\ntrusted_sources = [\n  \"10.0.0.0/8\",\n  \"nope\",\n]\n";
        assert_error(text, 4, "defaults.trusted_sources[2]", "not an IP address");
        assert_error(
            &route_with("trusted_sources = \"10.0.0.0/8\""),
            4,
            "route[1].trusted_sources",
            "expected a sequence",
        );
    }

    #[test]
    fn trusts_matches_addresses_and_prefixes() {
        let settings = |list: &[&str]| RouteSettings {
            trusted_sources: list.iter().map(|s| s.parse().unwrap()).collect(),
            ..RouteSettings::default()
        };
        let any = settings(&[]);
        assert!(any.trusts(V4(203, 0, 113, 9)));
        assert!(any.trusts(v6("2001:db8::1")));

        let s = settings(&["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"]);
        assert!(s.trusts(V4(127, 0, 0, 1)));
        assert!(!s.trusts(V4(127, 0, 0, 2)));
        assert!(s.trusts(V4(10, 0, 0, 0)));
        assert!(s.trusts(V4(10, 255, 255, 255)));
        assert!(!s.trusts(V4(11, 0, 0, 0)));
        assert!(!s.trusts(V4(9, 255, 255, 255)));
        assert!(s.trusts(v6("::1")));
        assert!(!s.trusts(v6("::2")));
        assert!(s.trusts(v6("fd12:3456::1")));
        assert!(s.trusts(v6("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!s.trusts(v6("fe80::1")));
        // A dual-stack socket reports IPv4 peers as mapped IPv6 addresses.
        assert!(s.trusts(v6("::ffff:10.1.2.3")));
        assert!(!s.trusts(v6("::ffff:192.0.2.1")));
        // Families never mix: ::1 is not 127.0.0.1, and 0.0.0.0/0 is not every IPv6 address.
        assert!(!settings(&["::1"]).trusts(V4(127, 0, 0, 1)));
        let all_v4 = settings(&["0.0.0.0/0"]);
        assert!(all_v4.trusts(V4(203, 0, 113, 9)));
        assert!(!all_v4.trusts(v6("2001:db8::1")));
        assert!(settings(&["::/0"]).trusts(v6("2001:db8::1")));
        // A mapped network is the IPv4 network.
        let mapped: IpNet = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        assert!(mapped.contains(V4(10, 9, 9, 9)));
        assert_eq!((mapped.addr(), mapped.prefix()), (V4(10, 0, 0, 0), 8));
    }

    #[test]
    fn caller_id_only_from_trusted_sources() {
        let text = route_with("mailbox = \"caller-id\"\ntrusted_sources = [\"192.0.2.10\"]");
        let plan = parsed(&text);
        let s = &plan.routes()[0].settings;
        assert_eq!(s.mailbox_for(V4(192, 0, 2, 10)), MailboxSource::CallerId);
        assert_eq!(s.mailbox_for(V4(192, 0, 2, 11)), MailboxSource::Ask);
        let open = RouteSettings {
            mailbox: MailboxSource::CallerId,
            ..RouteSettings::default()
        };
        assert_eq!(
            open.mailbox_for(V4(203, 0, 113, 9)),
            MailboxSource::CallerId
        );
        let ask = RouteSettings::default();
        assert_eq!(ask.mailbox_for(V4(127, 0, 0, 1)), MailboxSource::Ask);
    }

    #[test]
    fn names_round_trip() {
        for a in [Application::VoicePortal, Application::ChangePasscode] {
            assert_eq!(Application::from_name(&a.to_string()), Some(a));
        }
        for m in [MailboxSource::Ask, MailboxSource::CallerId] {
            assert_eq!(MailboxSource::from_name(m.as_str()), Some(m));
        }
    }

    // --- properties -------------------------------------------------------------------------

    proptest! {
        #![proptest_config(crate::proptest_config(256))]
        #[test]
        fn route_never_panics(user in any::<String>(), dial in "[0-9*#%A-Za-z]{0,12}") {
            let plan = parsed(FULL);
            let _ = plan.route(&user);
            let _ = plan.route(&dial);
            let _ = plan_of(&["_!"]).route(&user).unwrap();
        }

        #[test]
        fn parse_never_panics(text in any::<String>(), pattern in "_[0-9XZN.!\\[\\]*#-]{0,10}") {
            let _ = Pattern::parse(&text);
            let _ = Pattern::parse(&pattern);
            let _ = Dialplan::parse(&text, "any");
        }

        #[test]
        fn x_patterns_match_exactly_n_digits(
            (n, user) in (1usize..=12).prop_flat_map(|n| {
                // Lengths around n, mostly digits, so that both answers come up often.
                let near = format!("[0-9]{{{},{}}}|[0-9a*#]{{{n}}}|[0-9]{{0,14}}", n - 1, n + 1);
                (Just(n), proptest::string::string_regex(&near).unwrap())
            })
        ) {
            let pattern = Pattern::parse(&format!("_{}", "X".repeat(n))).unwrap();
            let expected = user.len() == n && user.bytes().all(|b| b.is_ascii_digit());
            prop_assert_eq!(pattern.matches(&user), expected, "{} vs {:?}", n, user);
        }

        #[test]
        fn percent_escapes_match_like_the_characters(user in "[0-9*#a-z]{1,8}") {
            let escaped: String = user.bytes().map(|b| format!("%{b:02X}")).collect();
            let plan = plan_of(&[&user]);
            prop_assert_eq!(routed(&plan, &escaped), Some(user.as_str()));
        }
    }
}
