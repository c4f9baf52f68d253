//! The call flow on a virtual clock, against a real (in-memory) credential store: every
//! path of the voice portal, with no sockets and no sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use vportal::ivr::dialplan::{Application, RouteSettings};
use vportal::ivr::flow::{Action, Flow, FlowConfig, HELD_GOODBYE_WAIT, LINGER, Outcome};
use vportal::media::digit::Digit;
use vportal::media::player::Item;
use vportal::media::prompts::PromptSet;
use vportal::store::{
    Actor, AuditEvent, AuditQuery, Event, Extension, Login, NewUser, Passcode, PasscodeSpec,
    Pepper, Policy, Store, VerifyOutcome,
};
use vportal::time::Timestamp;

fn prompts() -> Arc<PromptSet> {
    static SET: OnceLock<Arc<PromptSet>> = OnceLock::new();
    Arc::clone(
        SET.get_or_init(|| {
            Arc::new(vportal::server::load_prompts(Path::new("prompts/en")).unwrap())
        }),
    )
}

fn ext(s: &str) -> Extension {
    Extension::parse(s).unwrap()
}

fn pin(s: &str) -> Passcode {
    Passcode::new(s.to_owned()).unwrap()
}

const T0: i64 = 1_900_000_000;

/// A store with mailbox 1001 on temporary passcode 4826 (72 h) and 2002 on permanent 5937.
fn store() -> Arc<Store> {
    let s = Store::open_in_memory(Pepper::from_bytes(vec![4; 32]).unwrap(), 2).unwrap();
    let admin = Actor::Cli { user: None };
    let now = Timestamp::from_unix(T0);
    s.create_user(
        NewUser::new(ext("1001")).with_passcode(PasscodeSpec::given(pin("4826"), true)),
        &admin,
        now,
    )
    .unwrap();
    s.create_user(
        NewUser::new(ext("2002")).with_passcode(PasscodeSpec::given(pin("5937"), false)),
        &admin,
        now,
    )
    .unwrap();
    Arc::new(s)
}

/// One call: the flow, the store it talks to, the virtual clock, and what it did.
struct Call {
    flow: Flow,
    store: Arc<Store>,
    start: Instant,
    now: Instant,
    /// Wall-clock seconds for the store (moves with `now`).
    wall: i64,
    /// The part of a second `now` has moved on that `wall` has not counted yet.
    wall_part: Duration,
    /// Every playback, as prompt ids, in order.
    played: Vec<Vec<String>>,
    /// The token of the playback in progress.
    playing: Option<u64>,
    barge_ins: usize,
    logged_in: Vec<Extension>,
    /// Mailboxes the flow gave up as it began its last words.
    logged_out: Vec<Extension>,
    /// The flow let the media stop.
    quiet: bool,
    /// The session rule refuses this call's login (`session = "reject"` with the mailbox in
    /// another call): the call task answers `LoggedIn` with `handle_in_use` at once.
    in_use: bool,
    hung_up: bool,
    /// The login the store handed out, which a change presents (as the call task keeps it).
    login: Option<Login>,
}

impl Call {
    fn new(store: &Arc<Store>, config: FlowConfig) -> Self {
        let start = Instant::now();
        let mut c = Self {
            flow: Flow::new(config, prompts()),
            store: Arc::clone(store),
            start,
            now: start,
            wall: T0,
            wall_part: Duration::ZERO,
            played: Vec::new(),
            playing: None,
            barge_ins: 0,
            logged_in: Vec::new(),
            logged_out: Vec::new(),
            quiet: false,
            in_use: false,
            hung_up: false,
            login: None,
        };
        c.flow.start(c.now);
        c.run();
        c
    }

    /// The voice portal with `keys` pressed before its flow starts (SIP INFO that overtook
    /// the ACK), then started.
    fn portal_keyed_early(store: &Arc<Store>, keys: &str) -> Self {
        let mut early = Flow::new(config(Application::VoicePortal, None), prompts());
        for k in keys.chars() {
            early.handle_key(Instant::now(), Digit::from_char(k).unwrap());
        }
        let mut c = Self::portal(store);
        c.played.clear();
        c.flow = early;
        c.flow.start(c.now);
        c.run();
        c
    }

    fn portal(store: &Arc<Store>) -> Self {
        Self::new(store, config(Application::VoicePortal, None))
    }

    /// The voice portal, asking for the mailbox, with these route settings.
    fn portal_with(store: &Arc<Store>, settings: RouteSettings) -> Self {
        Self::new(
            store,
            FlowConfig {
                application: Application::VoicePortal,
                settings,
                caller_mailbox: None,
            },
        )
    }

    /// Performs every action, as the call task does (store work synchronously).
    fn run(&mut self) {
        while let Some(action) = self.flow.poll_action() {
            let wall = Timestamp::from_unix(self.wall);
            let actor = Actor::Caller {
                source: "127.0.0.1:5062".parse().unwrap(),
                call_id: "flow-test".into(),
            };
            match action {
                Action::Play(p) => {
                    assert!(!self.quiet, "a prompt after the media stopped");
                    let ids = p.items.iter().map(|i| match i {
                        Item::Prompt(p) => p.id().to_owned(),
                        Item::Silence(_) => "silence".to_owned(),
                    });
                    self.played.push(ids.collect());
                    self.playing = Some(p.token);
                }
                Action::BargeIn => {
                    self.barge_ins += 1;
                    // The media thread stops the prompt and reports its end.
                    if let Some(token) = self.playing.take() {
                        self.flow.handle_playback_done(self.now, token);
                    }
                }
                Action::LookUpMailbox(m) => {
                    // As the call task asks: a mailbox a passcode can open.
                    let user = self.store.user(&m, wall).unwrap();
                    let exists = user.is_some_and(|u| u.has_passcode);
                    self.flow.handle_mailbox_exists(self.now, exists);
                }
                Action::Verify { mailbox, passcode } => {
                    let r = self
                        .store
                        .verify_login(&mailbox, &passcode, &actor, wall)
                        .map(|(outcome, login)| {
                            if let Some(login) = &login {
                                self.flow.set_lengths(login.lengths());
                            }
                            self.login = login;
                            outcome
                        })
                        .map_err(|_| ());
                    self.flow.handle_verified(self.now, r);
                }
                Action::ChangePasscode { mailbox, passcode } => {
                    let login = self.login.as_mut().expect("a change only after a login");
                    assert_eq!(*login.extension(), mailbox);
                    let r = self
                        .store
                        .change_passcode(login, &passcode, &actor, wall)
                        .map_err(|_| ());
                    self.flow.handle_changed(self.now, r);
                }
                Action::Mismatched(m) => self.store.record_mismatch(&m, &actor, wall).unwrap(),
                Action::LoggedIn(m) => {
                    self.logged_in.push(m);
                    if self.in_use {
                        self.flow.handle_in_use();
                    }
                }
                Action::LoggedOut(m) => {
                    assert!(!self.hung_up, "logged out after the BYE");
                    self.logged_out.push(m);
                }
                Action::Quiet => {
                    assert!(!self.quiet, "quiet twice");
                    self.quiet = true;
                }
                Action::Hangup => self.hung_up = true,
            }
        }
    }

    /// The prompt in progress plays to its end.
    fn finish(&mut self) -> &mut Self {
        if let Some(token) = self.playing.take() {
            self.flow.handle_playback_done(self.now, token);
        }
        self.run();
        self
    }

    /// Keys pressed one after the other (after the prompt in progress has finished).
    fn keys(&mut self, keys: &str) -> &mut Self {
        self.finish();
        self.type_keys(keys)
    }

    /// Keys handed to the flow all at this instant, its actions left waiting (a burst typed
    /// ahead, or keys pressed while store work is in flight).
    fn press(&mut self, keys: &str) -> &mut Self {
        for k in keys.chars() {
            self.flow.handle_key(self.now, Digit::from_char(k).unwrap());
        }
        self
    }

    /// Keys pressed while whatever is playing goes on (barge-in).
    fn type_keys(&mut self, keys: &str) -> &mut Self {
        for k in keys.chars() {
            self.flow.handle_key(self.now, Digit::from_char(k).unwrap());
            self.run();
            self.advance(Duration::from_millis(200));
        }
        self
    }

    /// Time passes, firing timers on the way.
    fn advance(&mut self, by: Duration) -> &mut Self {
        let end = self.now + by;
        while let Some(at) = self.flow.poll_timeout() {
            if at > end {
                break;
            }
            self.pass_to(at);
            self.flow.handle_timeout(self.now);
            self.run();
        }
        self.pass_to(end);
        self
    }

    /// Moves the virtual clock on to `to` (never back), the store's wall clock with it, to
    /// the second (what is left of a second is carried, not lost).
    fn pass_to(&mut self, to: Instant) {
        if to <= self.now {
            return;
        }
        self.wall_part += to - self.now;
        self.now = to;
        let whole = self.wall_part.as_secs();
        self.wall += i64::try_from(whole).unwrap();
        self.wall_part -= Duration::from_secs(whole);
    }

    fn last(&self) -> Vec<&str> {
        self.played
            .last()
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn all(&self) -> Vec<String> {
        self.played.iter().map(|v| v.join("+")).collect()
    }

    /// Lets the final goodbye play out, and the phone play out what it holds of it; true if
    /// the flow then hung up.
    fn ends(&mut self) -> bool {
        self.finish();
        self.advance(LINGER);
        self.hung_up
    }
}

/// "A passcode must have four to ten digits": the default policy's lengths, said before a
/// new passcode is first asked for.
const RULE: [&str; 5] = [
    "length_rule",
    "digit_4",
    "length_to",
    "number_10",
    "length_digits",
];

/// What a caller who logged in with a temporary passcode hears: it must be changed, the
/// lengths allowed, and the question.
const FORCED: [&str; 7] = [
    "temporary",
    "length_rule",
    "digit_4",
    "length_to",
    "number_10",
    "length_digits",
    "enter_new_passcode",
];

/// The question of a change the caller chose (from the menu, or the `change-passcode`
/// route with a passcode of their own), which `*` gives up.
const CHOSEN: [&str; 2] = ["enter_new_passcode", "keep_passcode"];

/// Changes the store's passcode policy with `edit`, as an admin would.
fn edit_policy(store: &Store, edit: impl FnOnce(&mut Policy)) {
    let mut policy = store.policy().unwrap();
    edit(&mut policy);
    let admin = Actor::Cli { user: None };
    store
        .set_policy(&policy, &admin, Timestamp::from_unix(T0))
        .unwrap();
}

fn config(application: Application, caller_mailbox: Option<Extension>) -> FlowConfig {
    FlowConfig {
        application,
        settings: RouteSettings::default(),
        caller_mailbox,
    }
}

fn temporary(store: &Store, e: &str) -> bool {
    store
        .user(&ext(e), Timestamp::from_unix(T0))
        .unwrap()
        .unwrap()
        .temporary
}

/// The harness itself: the store's wall clock keeps to the flow's virtual one, through
/// steps of less than a second and through timers firing on the way.
#[test]
fn the_harness_moves_the_stores_clock_with_the_flows() {
    let store = store();
    let mut c = Call::portal(&store);
    c.finish();
    // Four keys, 200 ms each; then 700 ms more: 1.5 s in all, the store at T0 + 1.
    c.type_keys("1001").advance(Duration::from_millis(700));
    assert_eq!(c.wall, T0 + 1);
    // A minute of silence: the timers (the digit timeouts, the reprompts) fire on the way.
    let played = c.played.len();
    c.advance(Duration::from_secs(60));
    assert!(c.played.len() > played, "no timer fired: {:?}", c.all());
    assert_eq!(c.wall, T0 + 61);
    assert_eq!(
        c.wall - T0,
        i64::try_from((c.now - c.start).as_secs()).unwrap()
    );
}

#[test]
fn temporary_passcode_is_changed_then_menu_then_goodbye() {
    let store = store();
    let mut c = Call::portal(&store);
    assert_eq!(c.last(), ["welcome", "enter_mailbox"]);
    c.keys("1001#");
    assert_eq!(c.last(), ["enter_passcode"]);
    c.keys("4826#");
    assert_eq!(c.logged_in, [ext("1001")]);
    assert_eq!(c.last(), FORCED);
    c.keys("5937#");
    assert_eq!(c.last(), ["reenter_new_passcode"]);
    c.keys("5937#");
    assert_eq!(c.last(), ["passcode_changed"]);
    assert!(
        !temporary(&store, "1001"),
        "stored at once, in one transaction"
    );
    c.finish();
    assert_eq!(c.last(), ["menu"]);
    assert!(
        c.logged_out.is_empty(),
        "in the menu, the mailbox is the call's"
    );
    c.keys("*");
    assert_eq!(c.last(), ["goodbye"]);
    // Saying goodbye, the call gives the mailbox up: another phone may log in to it.
    assert_eq!(c.logged_out, [ext("1001")]);
    assert!(c.ends());
    assert_eq!(c.logged_out, [ext("1001")], "once");
    assert_eq!(c.flow.outcome(), Outcome::Changed);
    let events: Vec<String> = store
        .audit(&AuditQuery {
            extension: Some(ext("1001")),
            ..AuditQuery::default()
        })
        .unwrap()
        .into_iter()
        .rev()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        events[events.len() - 2..],
        ["login.success".to_owned(), "passcode.changed".to_owned()]
    );
}

#[test]
fn permanent_passcode_goes_to_the_menu_and_can_change_there() {
    let store = store();
    let mut c = Call::portal(&store);
    c.keys("2002#").keys("5937#");
    assert_eq!(c.last(), ["menu"]);
    c.keys("7");
    assert_eq!(c.last(), ["invalid_option", "menu"]);
    c.keys("1");
    assert_eq!(c.last(), [&RULE[..], &CHOSEN].concat());
    c.keys("6048#").keys("6048#");
    assert_eq!(c.last(), ["passcode_changed"]);
    c.finish();
    assert_eq!(c.last(), ["menu"]);
    // Back to the old one: recently used.
    c.keys("1").keys("5937#").keys("5937#");
    assert_eq!(c.last(), [&["reason_recently_used"][..], &CHOSEN].concat());
}

/// A passcode or a confirmation ended with `##` while its check or change is in flight: the
/// second `#` is typed ahead into the menu, where it is no choice, so the caller hears the
/// menu, not "not a valid option" (as a `#` typed ahead into an empty entry is dropped).
#[test]
fn a_double_pound_typed_ahead_into_the_menu_is_dropped() {
    let store = store();
    let mut c = Call::portal(&store);
    // Both keys before the store work is performed: the second during the check.
    let burst = |c: &mut Call, keys: &str| {
        c.finish();
        c.press(keys);
        c.run();
    };
    c.keys("2002#");
    burst(&mut c, "5937##");
    assert_eq!(c.last(), ["menu"]);
    c.keys("1").keys("6048#");
    burst(&mut c, "6048##");
    assert_eq!(c.last(), ["passcode_changed"]);
    c.finish();
    assert_eq!(c.last(), ["menu"]);
    // A choice after the `#` is still taken.
    c.keys("1").keys("7150#");
    burst(&mut c, "7150##*");
    assert_eq!(c.last(), ["passcode_changed"]);
    c.finish();
    assert_eq!(c.last(), ["goodbye"]);
}

#[test]
fn an_admin_reset_during_the_call_voids_its_login() {
    let store = store();
    let admin = Actor::Cli { user: None };
    let now = Timestamp::from_unix(T0);
    let mut c = Call::portal(&store);
    c.keys("1001#").keys("4826#");
    assert_eq!(c.last(), FORCED);
    // The admin hands out a new temporary passcode while the owner is choosing a PIN.
    store
        .reset_passcode(
            &ext("1001"),
            &PasscodeSpec::given(pin("7305"), true),
            &admin,
            now,
        )
        .unwrap();
    c.keys("5937#").keys("5937#");
    assert_eq!(c.last(), ["superseded", "goodbye"]);
    assert!(c.ends());
    assert_eq!(c.flow.outcome(), Outcome::Superseded);
    // The admin's passcode is in force, still temporary; the caller's PIN is not.
    let check = |p: &str| store.verify("1001", &pin(p), &admin, now).unwrap();
    assert_eq!(check("7305"), VerifyOutcome::Ok { must_change: true });
    assert!(matches!(check("5937"), VerifyOutcome::Wrong { .. }));
    // The same when the mailbox is deleted and given to someone else meanwhile.
    let mut c = Call::portal(&store);
    c.keys("2002#").keys("5937#").keys("1");
    store.delete_user(&ext("2002"), &admin, now).unwrap();
    store
        .create_user(
            NewUser::new(ext("2002")).with_passcode(PasscodeSpec::given(pin("8416"), true)),
            &admin,
            now,
        )
        .unwrap();
    c.keys("6048#").keys("6048#");
    assert_eq!(c.last(), ["superseded", "goodbye"]);
    assert!(temporary(&store, "2002"), "the new owner's passcode stays");
}

#[test]
fn wrong_and_unknown_sound_the_same_then_goodbye_after_the_attempts() {
    let store = store();
    let mut c = Call::portal(&store);
    c.keys("1001#").keys("0000#");
    assert_eq!(c.last(), ["incorrect", "enter_mailbox"]);
    c.keys("9999#").keys("0000#");
    assert_eq!(
        c.last(),
        ["incorrect", "enter_mailbox"],
        "unknown mailbox: the same words"
    );
    c.keys("1001#").keys("1111#");
    assert_eq!(c.last(), ["incorrect", "too_many_attempts", "goodbye"]);
    assert!(c.ends());
    assert_eq!(c.flow.outcome(), Outcome::LoginFailed);
    let info = store
        .user(&ext("1001"), Timestamp::from_unix(T0))
        .unwrap()
        .unwrap();
    assert_eq!(info.failed_attempts, 2);
    assert!(info.temporary);
}

/// With the policy at its longest passcodes (32 digits), an entry longer than that is not
/// cut down to fit: at login it is wrong, and as a new passcode it is too long.
#[test]
fn an_entry_longer_than_the_longest_passcode_is_not_cut_to_fit() {
    let store = store();
    let admin = Actor::Cli { user: None };
    let now = Timestamp::from_unix(T0);
    edit_policy(&store, |p| p.max_length = 32);
    let long = "48261937504826193750482619375048";
    assert_eq!(long.len(), 32);
    store
        .create_user(
            NewUser::new(ext("3003")).with_passcode(PasscodeSpec::given(pin(long), false)),
            &admin,
            now,
        )
        .unwrap();
    let mut c = Call::portal(&store);
    c.keys("3003#").keys(&format!("{long}9#"));
    assert_eq!(c.last(), ["incorrect", "enter_mailbox"]);
    c.keys("3003#").keys(&format!("{long}#"));
    assert_eq!(c.last(), ["menu"]);
    let longer = format!("{long}{long}");
    c.keys("1").keys(&format!("{longer}#"));
    assert_eq!(c.last(), ["reenter_new_passcode"]);
    c.keys(&format!("{longer}#"));
    assert_eq!(
        c.last(),
        [
            "reason_too_long",
            "length_rule",
            "digit_4",
            "length_to",
            "number_30",
            "digit_2",
            "length_digits",
            "enter_new_passcode",
            "keep_passcode"
        ]
    );
}

/// The lengths allowed are said before the first new passcode and after a wrong length;
/// one length allowed is said once ("… six digits"); a prompt set without the sentence's
/// prompts (a site's set from before them) says neither.
#[test]
fn the_lengths_allowed_are_said_when_the_set_can_say_them() {
    let store = store();
    edit_policy(&store, |p| (p.min_length, p.max_length) = (6, 6));
    let mut c = Call::portal(&store);
    c.keys("1001#4826#");
    let told = ["temporary", "length_rule", "digit_6", "length_digits"];
    assert_eq!(c.last(), [&told[..], &["enter_new_passcode"]].concat());
    c.keys("59371#59371#");
    assert_eq!(
        c.last(),
        [
            "reason_too_short",
            "length_rule",
            "digit_6",
            "length_digits",
            "enter_new_passcode"
        ]
    );

    let dir = Path::new("prompts/en");
    let manifest = std::fs::read_to_string(dir.join("prompts.toml")).unwrap();
    let start = manifest.find("[length_rule]").unwrap();
    let end = start + manifest[start..].find("\n\n").unwrap();
    let older = format!("{}{}", &manifest[..start], &manifest[end..]);
    let set = PromptSet::from_files(dir, |path| {
        if path.ends_with("prompts.toml") {
            Ok(older.clone().into_bytes())
        } else {
            std::fs::read(path)
        }
    })
    .unwrap();
    assert!(set.get("length_rule").is_none());
    let mut c = Call::portal(&store);
    c.flow = Flow::new(config(Application::VoicePortal, None), Arc::new(set));
    c.flow.start(c.now);
    c.run();
    c.keys("1001#4826#");
    assert_eq!(c.last(), ["temporary", "enter_new_passcode"]);
    c.keys("59371#59371#");
    assert_eq!(c.last(), ["reason_too_short", "enter_new_passcode"]);
}

/// A policy that allows one length of one digit says "digit", not "digits".
#[test]
fn a_single_digit_length_is_said_in_the_singular() {
    let store = store();
    edit_policy(&store, |p| {
        (p.min_length, p.max_length, p.generated_length) = (1, 1, 1);
        p.reject_repeated_digits = false;
    });
    let mut c = Call::portal(&store);
    c.keys("1001#4826#").keys("57#57#");
    assert_eq!(
        c.last(),
        [
            "reason_too_long",
            "length_rule",
            "digit_1",
            "length_digit",
            "enter_new_passcode"
        ]
    );
}

#[test]
fn lockout_reached_mid_call_and_no_count_while_locked() {
    let store = store();
    let settings = RouteSettings {
        attempts: 10,
        ..RouteSettings::default()
    };
    let mut c = Call::portal_with(&store, settings);
    for _ in 0..4 {
        c.keys("1001#").keys("0000#");
        assert_eq!(c.last(), ["incorrect", "enter_mailbox"]);
    }
    c.keys("1001#").keys("0000#");
    assert_eq!(c.last(), ["locked", "goodbye"]);
    assert!(c.ends());
    assert_eq!(c.flow.outcome(), Outcome::Locked);
    // Another call, even with the right passcode: locked, nothing counted.
    let mut d = Call::portal(&store);
    d.keys("1001#").keys("4826#");
    assert_eq!(d.last(), ["locked", "goodbye"]);
    let info = store
        .user(&ext("1001"), Timestamp::from_unix(T0))
        .unwrap()
        .unwrap();
    assert!(info.locked);
    // The failures that locked it, and none since.
    assert_eq!(info.failed_attempts, 5);
}

/// A lock only an admin lifts (`lockout.permanent_at`, here the first lock) does not tell the
/// caller to try again later.
#[test]
fn a_permanent_lock_says_to_call_the_administrator() {
    // A timed lock (the default policy's first) says "try again later".
    let timed = store();
    let mut d = Call::portal_with(&timed, settings_with_attempts(10));
    for _ in 0..5 {
        d.keys("1001#").keys("0000#");
    }
    assert_eq!(d.last(), ["locked", "goodbye"]);
    let store = store();
    store
        .update_policy(
            |p| {
                let mut p = p.clone();
                p.lockout.permanent_at = 1;
                Ok::<_, ()>(p)
            },
            &Actor::Cli { user: None },
            Timestamp::from_unix(T0),
        )
        .unwrap()
        .unwrap();
    let mut c = Call::portal_with(&store, settings_with_attempts(10));
    for _ in 0..4 {
        c.keys("2002#").keys("0000#");
        assert_eq!(c.last(), ["incorrect", "enter_mailbox"]);
    }
    c.keys("2002#").keys("0000#");
    assert_eq!(c.last(), ["locked_permanently", "goodbye"]);
    assert_eq!(c.flow.outcome(), Outcome::Locked);
}

fn settings_with_attempts(attempts: u32) -> RouteSettings {
    RouteSettings {
        attempts,
        ..RouteSettings::default()
    }
}

#[test]
fn a_temporary_passcode_expiring_between_calls() {
    let store = store();
    let admin = Actor::Cli { user: None };
    let spec = PasscodeSpec {
        passcode: Some(pin("4826")),
        temporary: true,
        ttl: Some(vportal::store::Ttl::from_secs(20 * 60).unwrap()),
    };
    store
        .reset_passcode(&ext("1001"), &spec, &admin, Timestamp::from_unix(T0))
        .unwrap();
    let mut first = Call::portal(&store);
    first.keys("1001#").keys("4826#");
    assert_eq!(first.last(), FORCED);
    first.flow.handle_hangup();
    // Half an hour later: expired.
    let mut later = Call::portal(&store);
    later.wall = T0 + 1_800;
    later.keys("1001#").keys("4826#");
    assert_eq!(later.last(), ["expired", "goodbye"]);
    assert!(later.ends());
    assert_eq!(later.flow.outcome(), Outcome::Expired);
    let expired = store
        .audit(&AuditQuery {
            event: Some(Event::LoginExpired),
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(expired[0].call_id.as_deref(), Some("flow-test"));
}

#[test]
fn mismatches_three_times_leave_the_temporary_passcode_in_place() {
    let store = store();
    let mut c = Call::portal(&store);
    c.keys("1001#").keys("4826#");
    for _ in 0..2 {
        c.keys("5937#").keys("5938#");
        assert_eq!(c.last(), ["mismatch", "enter_new_passcode"]);
    }
    c.keys("5937#").keys("5938#");
    assert_eq!(c.last(), ["mismatch", "not_changed", "goodbye"]);
    assert!(c.ends());
    assert_eq!(c.flow.outcome(), Outcome::ChangeNotCompleted);
    assert!(temporary(&store, "1001"));
    // Each refused change is audited, as a policy refusal is.
    let rejected = rejected_changes(&store);
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert!(
        rejected
            .iter()
            .all(|e| e.outcome == "mismatch" && e.extension.as_deref() == Some("1001")),
        "{rejected:?}"
    );
}

#[test]
fn each_policy_violation_has_its_own_reason() {
    let cases = [
        ("12A4", "reason_not_digits"),
        ("482", "reason_too_short"),
        ("48264826482", "reason_too_long"),
        ("1002", "reason_equals_extension"),
        ("2001", "reason_reversed_extension"),
        ("7777", "reason_repeated_digits"),
        ("1234", "reason_sequential"),
        ("2580", "reason_common"),
        ("4826", "reason_same_as_current"),
        // `#` alone: nothing keyed is too short, said at once (no confirmation asked);
        // a slip, as at login, so nothing is audited and no try is taken.
        ("", "reason_too_short"),
    ];
    let store = store();
    let admin = Actor::Cli { user: None };
    store
        .create_user(
            NewUser::new(ext("1002")).with_passcode(PasscodeSpec::given(pin("4826"), true)),
            &admin,
            Timestamp::from_unix(T0),
        )
        .unwrap();
    for (new, reason) in cases {
        let settings = RouteSettings {
            attempts: 10,
            ..RouteSettings::default()
        };
        let mut c = Call::portal_with(&store, settings);
        c.keys("1002#").keys("4826#").keys(&format!("{new}#"));
        if !new.is_empty() {
            assert_eq!(c.last(), ["reenter_new_passcode"], "{new}");
            c.keys(&format!("{new}#"));
        }
        // A wrong length is followed by the lengths allowed: "four to ten digits".
        let length_rule = [
            "length_rule",
            "digit_4",
            "length_to",
            "number_10",
            "length_digits",
        ];
        let wants: Vec<&str> = match reason {
            "reason_too_short" | "reason_too_long" => [&[reason][..], &length_rule].concat(),
            _ => vec![reason],
        };
        assert_eq!(
            c.last(),
            [&wants[..], &["enter_new_passcode"]].concat(),
            "{new}"
        );
        assert!(
            temporary(&store, "1002"),
            "{new}: a refused passcode changes nothing"
        );
    }
    assert_eq!(rejected_changes(&store).len(), cases.len() - 1);
}

/// `#` alone at the new passcode is a slip, as at the mailbox or passcode: any number of
/// them leave the change's tries whole. (Each was refused by the store, audited and
/// counted: three ended a forced change, the temporary passcode still in place.)
#[test]
fn pound_alone_at_the_new_passcode_takes_no_try() {
    let store = store();
    let mut c = Call::portal(&store);
    c.keys("1001#").keys("4826#");
    for _ in 0..5 {
        c.keys("#");
        assert_eq!(c.last()[0], "reason_too_short");
        assert_eq!(c.last().last(), Some(&"enter_new_passcode"));
    }
    assert!(!c.hung_up);
    c.keys("5937#").keys("5937#");
    assert!(!temporary(&store, "1001"), "changed at last");
    assert!(rejected_changes(&store).is_empty());
}

/// The `passcode.change_rejected` events (the newest 50).
fn rejected_changes(store: &Store) -> Vec<AuditEvent> {
    store
        .audit(&AuditQuery {
            event: Some(Event::PasscodeChangeRejected),
            limit: Some(50),
            ..AuditQuery::default()
        })
        .unwrap()
}

#[test]
fn silence_reprompts_then_goodbye() {
    let store = store();
    let mut c = Call::portal(&store);
    c.finish();
    c.advance(Duration::from_millis(4_900));
    assert_eq!(c.played.len(), 1, "nothing before the first-digit timeout");
    c.advance(Duration::from_millis(200));
    assert_eq!(c.last(), ["no_input", "enter_mailbox"]);
    c.finish().advance(Duration::from_secs(6));
    assert_eq!(c.last(), ["no_input", "enter_mailbox"]);
    c.finish().advance(Duration::from_secs(6));
    assert_eq!(c.last(), ["goodbye"]);
    assert!(c.ends());
    assert_eq!(c.flow.outcome(), Outcome::NoInput);
}

#[test]
fn holding_the_call_pauses_the_silence_count_and_asks_again_after() {
    let store = store();
    let mut c = Call::portal(&store);
    c.finish();
    // Two silences (of the two reprompts) before the caller holds the call.
    c.advance(Duration::from_secs(6)).finish();
    c.advance(Duration::from_secs(6)).finish();
    assert_eq!(c.last(), ["no_input", "enter_mailbox"]);
    // On hold at the mailbox prompt for a minute: no reprompt, no goodbye.
    c.flow.handle_hold(c.now, true);
    c.advance(Duration::from_secs(60));
    assert_eq!(c.played.len(), 3);
    // Back: the question again, with the whole allowance of silences.
    c.flow.handle_hold(c.now, false);
    c.run();
    assert_eq!(c.last(), ["enter_mailbox"]);
    c.finish().advance(Duration::from_secs(6));
    assert_eq!(c.last(), ["no_input", "enter_mailbox"]);
    c.finish().advance(Duration::from_secs(6));
    assert_eq!(c.last(), ["no_input", "enter_mailbox"], "not goodbye yet");
    // A part keyed before a hold is dropped: the whole question, answered whole.
    c.keys("10");
    c.flow.handle_hold(c.now, true);
    c.advance(Duration::from_secs(30));
    c.flow.handle_hold(c.now, false);
    c.run();
    assert_eq!(c.last(), ["enter_mailbox"]);
    c.finish().keys("1001#");
    assert_eq!(c.last(), ["enter_passcode"]);
    c.keys("4826#");
    assert_eq!(c.logged_in, [ext("1001")]);
    // In the menu, likewise; the call's length limit still runs while held.
    let mut m = Call::portal(&store);
    m.keys("2002#").keys("5937#").finish();
    assert_eq!(m.last(), ["menu"]);
    m.flow.handle_hold(m.now, true);
    m.advance(Duration::from_secs(120));
    m.flow.handle_hold(m.now, false);
    m.run();
    assert_eq!(m.last(), ["menu"]);
    m.flow.handle_hold(m.now, true);
    m.advance(Duration::from_secs(3_600));
    assert_eq!(m.last(), ["time_limit", "goodbye"]);
    assert_eq!(m.flow.outcome(), Outcome::TimedOut);
}

/// What came before a question ("that is not correct", a refusal's reason) and was said
/// while the caller held the call is said again with the question after the hold; once
/// heard, only the question is asked again.
#[test]
fn what_was_said_during_a_hold_is_said_again_after_it() {
    let store = store();
    let mut c = Call::portal(&store);
    c.keys("1001#").keys("4826#").keys("1234#");
    assert_eq!(c.last(), ["reenter_new_passcode"]);
    c.keys("1234#");
    assert_eq!(c.last(), ["reason_sequential", "enter_new_passcode"]);
    // On hold before it was heard; it plays out meanwhile.
    c.flow.handle_hold(c.now, true);
    c.finish().advance(Duration::from_secs(30));
    c.flow.handle_hold(c.now, false);
    c.run();
    assert_eq!(c.last(), ["reason_sequential", "enter_new_passcode"]);
    // Heard this time: after the next hold, the question alone.
    c.finish();
    c.flow.handle_hold(c.now, true);
    c.advance(Duration::from_secs(30));
    c.flow.handle_hold(c.now, false);
    c.run();
    assert_eq!(c.last(), ["enter_new_passcode"]);
    // In the menu too.
    let mut m = Call::portal(&store);
    m.keys("2002#").keys("5937#").keys("7");
    assert_eq!(m.last(), ["invalid_option", "menu"]);
    m.flow.handle_hold(m.now, true);
    m.flow.handle_hold(m.now, false);
    m.run();
    assert_eq!(m.last(), ["invalid_option", "menu"]);
}

/// The last words ("that was the last attempt", goodbye) played while the caller held the
/// call: said again when they come back, within `HELD_GOODBYE_WAIT`; else the call ends
/// unheard, as it does at its time limit.
#[test]
fn last_words_played_into_a_hold_are_said_when_the_caller_is_back() {
    // Each call has its own store: failures count per mailbox across calls.
    let last = ["incorrect", "too_many_attempts", "goodbye"];
    let failing = |store: &Arc<Store>| {
        let mut c = Call::portal(store);
        c.keys("1001#")
            .keys("0000#")
            .keys("1001#")
            .keys("0000#")
            .finish();
        // The third try is keyed, and the caller holds the call as it is checked.
        c.press("1001#0000#");
        c.flow.handle_hold(c.now, true);
        c.run();
        assert_eq!(c.last(), last);
        c.finish();
        assert!(!c.hung_up, "waits for the caller");
        assert!(!c.quiet, "keeps the media to say them again");
        c
    };
    let mut c = failing(&store());
    c.advance(Duration::from_secs(20));
    assert!(!c.hung_up);
    c.flow.handle_hold(c.now, false);
    c.run();
    assert_eq!(c.last(), last, "said again");
    assert!(c.ends());
    assert_eq!(c.flow.outcome(), Outcome::LoginFailed);

    // Never back: the call ends.
    let mut c = failing(&store());
    let plays = c.played.len();
    c.advance(HELD_GOODBYE_WAIT - Duration::from_millis(1));
    assert!(!c.hung_up);
    c.advance(Duration::from_millis(1));
    assert!(c.hung_up);
    assert_eq!(c.played.len(), plays, "not said again");

    // Held and back while they play: said again from the start.
    let mut c = Call::portal(&store());
    c.keys("1001#")
        .keys("0000#")
        .keys("1001#")
        .keys("0000#")
        .keys("1001#");
    c.keys("0000#");
    let plays = c.played.len();
    c.flow.handle_hold(c.now, true);
    c.flow.handle_hold(c.now, false);
    c.run();
    assert_eq!(c.played.len(), plays + 1);
    assert_eq!(c.last(), last);
    assert!(c.ends());

    // The call's time limit ends the wait, at once.
    let mut short = settings_with_attempts(3);
    short.max_call_duration = Duration::from_secs(20);
    let held_goodbye = |settings: RouteSettings| {
        let mut c = Call::portal_with(&store(), settings);
        c.keys("2002#").keys("5937#");
        c.flow.handle_hold(c.now, true);
        c.keys("*").finish();
        assert!(!c.hung_up);
        c
    };
    let mut c = held_goodbye(short.clone());
    c.advance(c.start + Duration::from_secs(20) - c.now - Duration::from_millis(1));
    assert!(!c.hung_up);
    c.advance(Duration::from_millis(1));
    assert!(c.hung_up);
    assert_eq!(c.last(), ["goodbye"]);

    // The time limit reached while held: "time limit, goodbye" is not waited for.
    let mut c = Call::portal_with(&store(), short.clone());
    c.keys("2002#").keys("5937#");
    c.flow.handle_hold(c.now, true);
    c.advance(Duration::from_secs(20));
    assert_eq!(c.last(), ["time_limit", "goodbye"]);
    assert!(c.ends(), "hung up when they end");
    // Nor said again to a caller back within the half second before the BYE: the media
    // has stopped, and the BYE still comes.
    let mut c = Call::portal_with(&store(), short.clone());
    c.keys("2002#").keys("5937#");
    c.flow.handle_hold(c.now, true);
    c.advance(Duration::from_secs(20));
    c.finish();
    assert!(c.quiet);
    let plays = c.played.len();
    c.flow.handle_hold(c.now, false);
    c.run();
    assert_eq!(c.played.len(), plays, "said to media that has stopped");
    c.advance(LINGER);
    assert!(c.hung_up, "no BYE");

    // The limit passed while the last words play: going on and off hold cannot keep the
    // call up past them.
    let mut c = Call::portal_with(&store(), short.clone());
    c.keys("2002#").keys("5937#");
    c.advance(Duration::from_secs(20));
    assert_eq!(c.last(), ["time_limit", "goodbye"]);
    c.flow.handle_hold(c.now, true);
    assert!(c.ends());

    // Another phone's login ends the wait: the mailbox is theirs.
    let mut c = held_goodbye(settings_with_attempts(3));
    c.flow.handle_replaced();
    c.run();
    assert!(c.hung_up);
    // Or forbids it, when it comes while the last words play.
    let mut c = Call::portal(&store());
    c.keys("2002#").keys("5937#").keys("*");
    c.flow.handle_replaced();
    c.flow.handle_hold(c.now, true);
    assert!(c.ends());

    // "Your passcode has been changed" played into the hold on the change-passcode route:
    // said again, whole, with the goodbye, when the caller is back.
    let mut c = Call::new(&store(), config(Application::ChangePasscode, None));
    c.keys("2002#").keys("5937#").keys("6284#").keys("6284#");
    assert_eq!(c.last(), ["passcode_changed"]);
    c.flow.handle_hold(c.now, true);
    c.finish().finish();
    assert!(!c.hung_up);
    c.flow.handle_hold(c.now, false);
    c.run();
    assert_eq!(c.last(), ["passcode_changed", "goodbye"]);
    assert!(c.ends());
}

/// The BYE comes `LINGER` after the last words, not with their last packet: a phone's
/// jitter buffer still holds their end, and a BYE stops its audio at once.
#[test]
fn the_bye_lets_the_phone_play_out_the_goodbye() {
    let mut c = Call::portal(&store());
    c.keys("2002#").keys("5937#").keys("*");
    assert_eq!(c.last(), ["goodbye"]);
    assert!(!c.quiet, "the media goes on while goodbye plays");
    c.finish();
    // Heard: the media stops, nothing more is sent while the phone plays out its end.
    assert!(c.quiet);
    assert!(!c.hung_up);
    c.advance(LINGER - Duration::from_millis(1));
    assert!(!c.hung_up);
    c.advance(Duration::from_millis(1));
    assert!(c.hung_up);
}

#[test]
fn silences_count_in_a_row_not_over_the_whole_call() {
    let store = store();
    let mut c = Call::portal(&store);
    let silence = Duration::from_millis(5_100);
    c.finish().advance(silence);
    assert_eq!(c.last(), ["no_input", "enter_mailbox"]);
    c.keys("2002#").finish().advance(silence);
    assert_eq!(c.last(), ["no_input", "enter_passcode"]);
    c.keys("5937#").finish().advance(silence);
    // Two pauses earlier in the call do not use up the menu's reprompts.
    assert_eq!(c.last(), ["no_input", "menu"]);
    c.finish().advance(silence);
    assert_eq!(c.last(), ["no_input", "menu"]);
    c.finish().advance(silence);
    assert_eq!(c.last(), ["goodbye"]);
    assert!(c.ends());
}

#[test]
fn each_change_from_the_menu_has_its_own_tries() {
    let store = store();
    let mut c = Call::portal(&store);
    c.keys("2002#").keys("5937#").keys("1");
    for _ in 0..2 {
        c.keys("6048#").keys("6049#");
        assert_eq!(c.last(), [&["mismatch"][..], &CHOSEN].concat());
    }
    c.keys("6048#").keys("6048#").finish();
    assert_eq!(c.last(), ["menu"]);
    // Two failures in the first change leave the next one its three tries.
    c.keys("1");
    for _ in 0..2 {
        c.keys("7193#").keys("7194#");
        assert_eq!(c.last(), [&["mismatch"][..], &CHOSEN].concat());
    }
}

#[test]
fn the_call_length_limit_during_the_goodbye_lets_it_finish() {
    let store = store();
    let settings = RouteSettings {
        max_call_duration: Duration::from_secs(60),
        ..RouteSettings::default()
    };
    let mut c = Call::portal_with(&store, settings);
    c.keys("2002#").keys("5937#").keys("*");
    assert_eq!(c.last(), ["goodbye"]);
    // The call's time runs out while the goodbye plays: no timer is left in the past (the
    // call task would wake for it again and again).
    c.now = c.start + Duration::from_secs(60);
    c.flow.handle_timeout(c.now);
    c.run();
    assert!(c.flow.poll_timeout().is_none_or(|t| t > c.now));
    assert_eq!(c.last(), ["goodbye"]);
    assert!(c.ends());
    assert_eq!(c.flow.outcome(), Outcome::LoggedIn);
}

#[test]
fn a_pause_mid_entry_discards_it_and_star_clears() {
    let store = store();
    let mut c = Call::portal(&store);
    c.keys("10");
    c.advance(Duration::from_millis(3_100));
    // Not "I did not hear anything": the caller did key something, too slowly.
    assert_eq!(c.last(), ["too_slow", "enter_mailbox"]);
    c.keys("99*1001#");
    assert_eq!(
        c.played
            .iter()
            .filter(|p| p.as_slice() == ["enter_mailbox"])
            .count(),
        1,
        "* asked again"
    );
    assert_eq!(c.last(), ["enter_passcode"]);
    c.keys("4826#");
    assert_eq!(c.logged_in, [ext("1001")]);
}

#[test]
fn keys_barge_in_and_keys_typed_ahead_are_kept() {
    let store = store();
    let mut c = Call::portal(&store);
    // Typing during the welcome interrupts it, and the keys count.
    c.type_keys("1001#");
    assert_eq!(c.barge_ins, 1);
    assert_eq!(c.last(), ["enter_passcode"]);
    // The passcode, and the new passcode typed ahead while the check runs: the keys typed
    // after # wait in the type-ahead buffer and fill the next entry, whose prompt is skipped.
    let mut keys = Vec::new();
    for k in "4826#5937#".chars() {
        keys.push(Digit::from_char(k).unwrap());
    }
    c.finish();
    // Feed everything before the store answers: hold the verify.
    for k in &keys[..5] {
        c.flow.handle_key(c.now, *k);
    }
    let verify = c.flow.poll_action();
    assert!(matches!(verify, Some(Action::Verify { .. })));
    for k in &keys[5..] {
        c.flow.handle_key(c.now, *k);
    }
    let Some(Action::Verify { mailbox, passcode }) = verify else {
        unreachable!()
    };
    let actor = Actor::Cli { user: None };
    let (outcome, login) = store
        .verify_login(&mailbox, &passcode, &actor, Timestamp::from_unix(T0))
        .unwrap();
    c.login = login;
    c.flow.handle_verified(c.now, Ok(outcome));
    c.run();
    assert_eq!(
        c.last(),
        ["reenter_new_passcode"],
        "enter_new_passcode skipped: already typed"
    );
    c.keys("5937#");
    assert_eq!(c.last(), ["passcode_changed"]);
}

#[test]
fn pound_alone_is_asked_again_not_checked() {
    let store = store();
    let mut c = Call::portal(&store);
    c.keys("#");
    assert_eq!(c.last(), ["try_again", "enter_mailbox"]);
    c.keys("1001#").keys("#");
    assert_eq!(c.last(), ["try_again", "enter_passcode"]);
    c.keys("4826#");
    assert_eq!(c.logged_in, [ext("1001")]);
    let failures = store
        .audit(&AuditQuery {
            event: Some(Event::LoginFailure),
            ..AuditQuery::default()
        })
        .unwrap();
    assert!(failures.is_empty(), "{failures:?}");
}

/// A caller (or a test harness) typing blind: a wrong passcode and the next try, all before
/// the check answers. The keys typed ahead are kept for the next try (DESIGN: "digits typed
/// ahead are kept"); the same after a refused new PIN and an invalid menu choice.
#[test]
fn keys_typed_ahead_past_a_failure_are_kept_for_the_next_try() {
    let store = store();
    let mut c = Call::portal(&store);
    c.keys("1001#").finish();
    c.press("4862#1001#4826#");
    c.run();
    assert_eq!(c.flow.logged_in(), Some(&ext("1001")), "{:?}", c.all());
    let failures = store
        .audit(&AuditQuery {
            event: Some(Event::LoginFailure),
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(failures.len(), 1);
    // A refused new PIN, then the next one typed ahead, then an invalid choice and `*`.
    c.finish();
    c.press("1234#1234#5937#5937#7*");
    c.run();
    assert_eq!(c.last(), ["passcode_changed"], "{:?}", c.all());
    assert!(!temporary(&store, "1001"));
    c.finish();
    assert_eq!(c.last(), ["goodbye"], "{:?}", c.all());
    assert!(c.ends());
    // Three wrong tries typed blind use up the call's attempts at once.
    let mut d = Call::portal(&store);
    d.press("2002#1111#2002#2222#2002#3333#");
    d.run();
    assert_eq!(
        d.last(),
        ["incorrect", "too_many_attempts", "goodbye"],
        "{:?}",
        d.all()
    );
    assert!(d.finish().ends());
    assert_eq!(d.flow.outcome(), Outcome::LoginFailed);
}

#[test]
fn a_whole_call_typed_ahead_in_one_burst_keeps_its_order() {
    let store = store();
    let mut c = Call::portal(&store);
    // Every key arrives before the check of the first passcode has even started: the keys
    // after it wait, in order, for the new passcode, its confirmation and the menu.
    c.press("1001#4826#5937#5937#*");
    c.run();
    assert_eq!(c.last(), ["passcode_changed"], "{:?}", c.all());
    c.finish();
    assert_eq!(c.last(), ["goodbye"], "the menu took the * typed ahead");
    assert!(c.ends());
    assert_eq!(c.flow.outcome(), Outcome::Changed);
    assert!(!temporary(&store, "1001"));
    // Typed-ahead keys that do not finish an entry are kept for it, not reordered.
    let mut d = Call::portal(&store);
    d.press("2002#59");
    d.run();
    d.type_keys("37#");
    assert_eq!(d.last(), ["menu"], "{:?}", d.all());
    assert_eq!(d.flow.logged_in(), Some(&ext("2002")));
    // Keys that came before the flow started (INFO ahead of the ACK) are typed ahead too:
    // no welcome, straight to the menu.
    let e = Call::portal_keyed_early(&store, "2002#5937#");
    assert_eq!(e.all(), ["menu"]);
    assert_eq!(e.flow.logged_in(), Some(&ext("2002")));
}

/// Keys typed during the check that do not complete the new passcode still let the caller
/// hear why they are asked for one ("your passcode is temporary") and the question, which
/// the next key barges into; no dead air, no silence counted. A second `#` typed ahead is
/// not taken for an empty new passcode (a try lost, a refusal audited).
#[test]
fn keys_typed_ahead_that_do_not_finish_an_entry_still_get_the_question() {
    let settings = RouteSettings {
        reprompts: 0,
        ..RouteSettings::default()
    };
    for typed in ["4826#5", "4826##", "4826##5"] {
        let store = store();
        let mut c = Call::portal_with(&store, settings.clone());
        c.keys("1001#").finish();
        c.press(typed);
        c.run();
        assert_eq!(c.last(), FORCED, "{typed}");
        // The caller listens to it all, and answers it whole after a pause: what was typed
        // ahead is dropped, and the pause is the first digit's (counted from its end).
        c.finish();
        c.advance(Duration::from_millis(4_000));
        c.type_keys("5937#");
        assert_eq!(c.last(), ["reenter_new_passcode"], "{typed}: {:?}", c.all());
        c.keys("5937#");
        assert_eq!(c.last(), ["passcode_changed"], "{typed}: {:?}", c.all());
        let rejected = rejected_changes(&store);
        assert!(rejected.is_empty(), "{typed}: {rejected:?}");
    }
    // One who goes on typing barges into the question and keeps what was typed ahead.
    let store = store();
    let mut c = Call::portal(&store);
    c.keys("1001#").finish();
    c.press("4826#59");
    c.run();
    assert_eq!(c.last(), FORCED);
    c.type_keys("37#");
    assert_eq!(c.last(), ["reenter_new_passcode"]);
    c.keys("5937#");
    assert_eq!(c.last(), ["passcode_changed"], "{:?}", c.all());
}

#[test]
fn hanging_up_at_any_step_changes_nothing() {
    // At each step a temporary-passcode call can be in, the caller hangs up.
    let steps: [&[&str]; 6] = [
        &[],
        &["1001#"],
        &["1001#", "4826#"],
        &["1001#", "4826#", "5937#"],
        &["1001#", "4826#", "5937#", "59"],
        &["1001#", "4826#", "5937#", "5937"],
    ];
    for keys in steps {
        let store = store();
        let mut c = Call::portal(&store);
        for k in keys {
            c.keys(k);
        }
        c.flow.handle_hangup();
        assert!(
            c.flow.poll_action().is_none(),
            "{keys:?}: nothing after the hang-up"
        );
        c.flow.handle_key(c.now, Digit::POUND);
        c.flow.handle_timeout(c.now + Duration::from_secs(3_600));
        assert!(c.flow.poll_action().is_none());
        assert!(temporary(&store, "1001"), "{keys:?}");
        assert_ne!(c.flow.outcome(), Outcome::Changed);
    }
}

/// A call the server ends as it stops counts as `shutdown` until its caller has logged in,
/// and keeps its own outcome after.
#[test]
fn a_call_ended_by_the_server_stopping_is_not_abandoned() {
    let steps: [(&[&str], Outcome); 3] = [
        (&[], Outcome::Shutdown),
        (&["1001#"], Outcome::Shutdown),
        (&["1001#", "4826#"], Outcome::ChangeNotCompleted),
    ];
    for (keys, outcome) in steps {
        let store = store();
        let mut c = Call::portal(&store);
        for k in keys {
            c.keys(k);
        }
        c.flow.handle_shutdown();
        c.flow.handle_hangup();
        assert_eq!(c.flow.outcome(), outcome, "{keys:?}");
        assert!(temporary(&store, "1001"), "{keys:?}");
    }
}

#[test]
fn session_rule_replaced_and_in_use() {
    let store = store();
    let mut older = Call::portal(&store);
    older.keys("2002#").keys("5937#");
    assert_eq!(older.last(), ["menu"]);
    older.flow.handle_replaced();
    older.run();
    assert_eq!(older.last(), ["replaced", "goodbye"]);
    assert_eq!(older.logged_out, [ext("2002")]);
    assert!(older.finish().ends());
    assert_eq!(older.flow.outcome(), Outcome::Replaced);
    let mut newer = Call::portal(&store);
    newer.in_use = true;
    newer.keys("2002#").keys("5937#");
    // Refused as the login is reported, before the menu starts: not a packet of it plays.
    assert_eq!(
        newer.all()[newer.all().len() - 2..],
        ["enter_passcode", "in_use+goodbye"]
    );
    assert!(newer.ends());
    assert_eq!(newer.flow.outcome(), Outcome::InUse);
    assert!(newer.logged_out.is_empty(), "a refused login never held it");
    // A call replaced after it changed its passcode is still counted as changed.
    let mut changed = Call::portal(&store);
    changed
        .keys("1001#")
        .keys("4826#")
        .keys("5937#")
        .keys("5937#");
    assert_eq!(changed.last(), ["passcode_changed"]);
    changed.flow.handle_replaced();
    changed.run();
    changed.finish();
    assert_eq!(changed.last(), ["replaced", "goodbye"]);
    assert!(changed.finish().ends());
    assert_eq!(changed.flow.outcome(), Outcome::Changed);
}

/// The caller-identity lookup fails outright while a whole login is typed ahead: the
/// caller is asked for the mailbox, the keys typed ahead answer it and the passcode, and
/// their check goes ahead; the failure is not taken for the check's too.
#[test]
fn a_failed_lookup_is_not_taken_for_the_check_typed_ahead_after_it() {
    let mut flow = Flow::new(
        config(Application::VoicePortal, Some(ext("1001"))),
        prompts(),
    );
    let now = Instant::now();
    flow.start(now);
    assert!(matches!(flow.poll_action(), Some(Action::LookUpMailbox(_))));
    for k in "1001#4826#".chars() {
        flow.handle_key(now, Digit::from_char(k).unwrap());
    }
    flow.handle_store_failed(now);
    let actions: Vec<Action> = std::iter::from_fn(|| flow.poll_action()).collect();
    assert!(
        matches!(actions.last(), Some(Action::Verify { mailbox, .. }) if mailbox == "1001"),
        "{actions:?}"
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Hangup)));
    // The check's own failure is the next one reported: "not available", goodbye.
    flow.handle_store_failed(now);
    let played: Vec<Vec<String>> = std::iter::from_fn(|| flow.poll_action())
        .filter_map(|a| match a {
            Action::Play(p) => Some(
                p.items
                    .iter()
                    .filter_map(|i| match i {
                        Item::Prompt(p) => Some(p.id().to_owned()),
                        Item::Silence(_) => None,
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(played, [["unavailable", "goodbye"]]);
}

#[test]
fn caller_id_skips_the_mailbox_when_it_exists() {
    let store = store();
    let mut c = Call::new(&store, config(Application::VoicePortal, Some(ext("2002"))));
    assert_eq!(c.last(), ["welcome", "enter_passcode"]);
    c.keys("5937#");
    assert_eq!(c.last(), ["menu"]);
    // A wrong passcode asks for the passcode again, not the mailbox.
    let mut w = Call::new(&store, config(Application::VoicePortal, Some(ext("2002"))));
    w.keys("0000#");
    assert_eq!(w.last(), ["incorrect_passcode", "enter_passcode"]);
    // No such mailbox: ask.
    let nobody = Call::new(&store, config(Application::VoicePortal, Some(ext("4040"))));
    assert_eq!(nobody.last(), ["welcome", "enter_mailbox"]);
}

#[test]
fn menu_silence_and_the_call_length_limit() {
    let store = store();
    let mut c = Call::portal(&store);
    c.keys("2002#").keys("5937#").finish();
    c.advance(Duration::from_millis(5_100));
    assert_eq!(c.last(), ["no_input", "menu"]);
    c.finish().advance(Duration::from_millis(5_100));
    c.finish().advance(Duration::from_millis(5_100));
    assert_eq!(c.last(), ["goodbye"]);
    assert!(c.ends());
    assert_eq!(c.flow.outcome(), Outcome::LoggedIn);
    // The route's maximum call length ends any call.
    let settings = RouteSettings {
        max_call_duration: Duration::from_secs(60),
        first_digit_timeout: Duration::from_secs(60),
        reprompts: 5,
        ..RouteSettings::default()
    };
    let mut long = Call::portal_with(&store, settings);
    long.finish();
    long.advance(Duration::from_secs(61));
    assert_eq!(long.last(), ["time_limit", "goodbye"]);
    assert!(long.ends());
    assert_eq!(long.flow.outcome(), Outcome::TimedOut);
    let _ = long.start;
}

/// A caller cut off while keying a new passcode (the time limit, another phone's login)
/// hears that it was not changed before why the call ends, as silence there would tell
/// them; one cut off elsewhere hears only why.
#[test]
fn a_change_cut_short_says_the_passcode_was_not_changed() {
    let store = store();
    let settings = RouteSettings {
        max_call_duration: Duration::from_secs(60),
        first_digit_timeout: Duration::from_secs(60),
        inter_digit_timeout: Duration::from_secs(60),
        ..RouteSettings::default()
    };
    type Cut = fn(&mut Call);
    let time_up: Cut = |c| {
        c.advance(Duration::from_secs(61));
    };
    let replaced: Cut = |c| {
        c.flow.handle_replaced();
        c.run();
    };
    for (cut, why) in [(time_up, "time_limit"), (replaced, "replaced")] {
        // Halfway through the confirmation of a forced change.
        let mut c = Call::portal_with(&store, settings.clone());
        c.keys("1001#").keys("4826#").keys("5937#").keys("593");
        cut(&mut c);
        assert_eq!(c.last(), ["not_changed", why, "goodbye"]);
        assert!(c.ends());
        assert!(temporary(&store, "1001"));
        // At the menu, nothing was being changed.
        let mut c = Call::portal_with(&store, settings.clone());
        c.keys("2002#").keys("5937#");
        cut(&mut c);
        assert_eq!(c.last(), [why, "goodbye"]);
    }
}

#[test]
fn change_passcode_application_goes_straight_to_the_change() {
    let store = store();
    let mut c = Call::new(&store, config(Application::ChangePasscode, None));
    c.keys("2002#").keys("5937#");
    assert_eq!(c.last(), [&RULE[..], &CHOSEN].concat());
    c.keys("6048#").keys("6048#");
    assert_eq!(c.last(), ["passcode_changed"]);
    c.finish();
    assert_eq!(c.last(), ["goodbye"]);
    assert!(c.ends());
    assert_eq!(c.flow.outcome(), Outcome::Changed);
    let _ = c.all();
}

#[test]
fn rejected_call_with_keys_typed_ahead_changes_nothing() {
    let store = store();
    let mut c = Call::portal(&store);
    c.in_use = true;
    // The whole call typed in one burst (e.g. SIP INFO), session = "reject", mailbox in use.
    c.press("1001#4826#5937#5937#");
    c.run();
    assert_eq!(c.flow.outcome(), Outcome::InUse, "{:?}", c.all());
    assert!(
        temporary(&store, "1001"),
        "a login refused as in use must not change the passcode: {:?}",
        c.all()
    );
}

/// Drives `c` to the point where a change has been asked for (the store work in flight) and
/// returns the action, not yet performed.
fn change_in_flight(c: &mut Call) -> Action {
    c.keys("1001#").keys("4826#").keys("5937#").finish();
    c.press("5937#");
    let a = c.flow.poll_action().unwrap();
    assert!(matches!(a, Action::ChangePasscode { .. }), "{a:?}");
    a
}

fn perform_change(c: &mut Call, a: Action) {
    let Action::ChangePasscode { passcode, .. } = a else {
        unreachable!()
    };
    let actor = Actor::Cli { user: None };
    let r = c
        .store
        .change_passcode(
            c.login.as_mut().unwrap(),
            &passcode,
            &actor,
            Timestamp::from_unix(T0),
        )
        .map_err(|_| ());
    c.flow.handle_changed(c.now, r);
    c.run();
}

/// A call ended by `interrupt` while its change is being stored: the call waits for the
/// change, the caller hears that it worked and then `why` the call ends, and its outcome
/// is `Changed`.
fn change_in_flight_survives(interrupt: impl FnOnce(&mut Call), why: &str) {
    let store = store();
    let mut c = Call::portal(&store);
    let a = change_in_flight(&mut c);
    let played = c.played.len();
    interrupt(&mut c);
    c.run();
    assert_eq!(
        c.played.len(),
        played,
        "nothing said before the change's answer"
    );
    perform_change(&mut c, a);
    assert!(!temporary(&store, "1001"), "the change was stored");
    assert_eq!(c.last(), ["passcode_changed", why, "goodbye"]);
    assert!(c.finish().ends());
    assert_eq!(c.flow.outcome(), Outcome::Changed, "{:?}", c.all());
}

#[test]
fn replaced_while_a_change_is_stored_counts_as_changed() {
    // Another phone logs in to 1001 while the change is being stored (call.rs: CallEvent::Replaced).
    change_in_flight_survives(|c| c.flow.handle_replaced(), "replaced");
}

#[test]
fn call_length_reached_while_a_change_is_stored_counts_as_changed() {
    change_in_flight_survives(
        |c| {
            c.now = c.start + RouteSettings::default().max_call_duration;
            c.flow.handle_timeout(c.now);
        },
        "time_limit",
    );
}

/// "Your passcode has been changed" is said to its end whatever comes meanwhile: the
/// call's time limit or another phone's login says why the call ends after it, and a hold
/// has it said again, before the menu, when the caller is back.
#[test]
fn the_change_is_announced_whole_through_a_time_limit_a_replacement_or_a_hold() {
    let store = store();
    let settings = RouteSettings {
        max_call_duration: Duration::from_secs(60),
        ..RouteSettings::default()
    };
    let mut c = Call::portal_with(&store, settings.clone());
    c.keys("1001#").keys("4826#").keys("5937#").keys("5937#");
    assert_eq!(c.last(), ["passcode_changed"]);
    c.now = c.start + Duration::from_secs(60);
    c.flow.handle_timeout(c.now);
    c.run();
    assert_eq!(c.last(), ["passcode_changed"], "not cut short");
    c.finish();
    assert_eq!(c.last(), ["time_limit", "goodbye"]);
    assert!(c.ends());
    assert_eq!(c.flow.outcome(), Outcome::Changed);

    let mut c = Call::portal_with(&store, settings.clone());
    c.keys("2002#")
        .keys("5937#")
        .keys("1")
        .keys("6284#")
        .keys("6284#");
    assert_eq!(c.last(), ["passcode_changed"]);
    c.flow.handle_replaced();
    c.run();
    assert_eq!(c.last(), ["passcode_changed"], "not cut short");
    c.finish();
    assert_eq!(c.last(), ["replaced", "goodbye"]);
    assert!(c.ends());
    assert_eq!(c.flow.outcome(), Outcome::Changed);

    let mut c = Call::portal_with(&store, settings);
    c.keys("2002#")
        .keys("6284#")
        .keys("1")
        .keys("5172#")
        .keys("5172#");
    assert_eq!(c.last(), ["passcode_changed"]);
    c.flow.handle_hold(c.now, true);
    c.finish();
    assert_eq!(
        c.last(),
        ["passcode_changed", "menu"],
        "played into the hold"
    );
    c.flow.handle_hold(c.now, false);
    c.run();
    assert_eq!(
        c.last(),
        ["passcode_changed", "menu"],
        "said again after it"
    );
    // A hold that ends while the announcement still plays has it said again, whole.
    let mut c = Call::portal(&store);
    c.keys("2002#")
        .keys("5172#")
        .keys("1")
        .keys("4953#")
        .keys("4953#");
    assert_eq!(c.last(), ["passcode_changed"]);
    let played = c.played.len();
    c.flow.handle_hold(c.now, true);
    c.flow.handle_hold(c.now, false);
    c.run();
    assert_eq!(c.played.len(), played + 1, "{:?}", c.all());
    assert_eq!(c.last(), ["passcode_changed"]);
    c.finish();
    assert_eq!(c.last(), ["menu"]);
}

/// The call's time limit and another phone's login both come while a change is stored:
/// the first decides what the caller hears and how the call counts.
#[test]
fn the_first_of_two_ends_during_a_change_decides() {
    type End = fn(&mut Call);
    let replaced: End = |c| c.flow.handle_replaced();
    let time_up: End = |c| {
        c.now = c.start + RouteSettings::default().max_call_duration;
        c.flow.handle_timeout(c.now);
    };
    for (first, second, said, outcome) in [
        (replaced, time_up, "replaced", Outcome::Replaced),
        (time_up, replaced, "time_limit", Outcome::TimedOut),
    ] {
        let store = store();
        let mut c = Call::portal(&store);
        let _ = change_in_flight(&mut c);
        first(&mut c);
        second(&mut c);
        c.run();
        // The store failed: nothing was changed.
        c.flow.handle_changed(c.now, Err(()));
        c.run();
        assert_eq!(c.last(), ["not_changed", said, "goodbye"]);
        assert!(c.finish().ends());
        assert_eq!(c.flow.outcome(), outcome);
    }
}

/// A change chosen from the menu that uses up its tries goes back to the menu, saying that
/// the passcode stays as it was.
#[test]
fn a_change_from_the_menu_that_fails_goes_back_to_the_menu() {
    // Keys typed ahead for another try, while the last one is checked, are not taken for
    // a menu choice.
    let store = store();
    let mut c = Call::portal(&store);
    c.keys("2002#").keys("5937#").keys("1");
    for _ in 0..2 {
        c.keys("6048#").keys("6049#");
    }
    c.keys("1234#").finish();
    c.press("1234#");
    let a = c.flow.poll_action().unwrap();
    c.press("1470#");
    perform_change(&mut c, a);
    assert_eq!(
        c.last(),
        ["reason_sequential", "not_changed", "menu"],
        "{:?}",
        c.all()
    );
    c.finish().keys("*");
    assert!(c.ends());

    let mut c = Call::portal(&store);
    c.keys("2002#").keys("5937#").keys("1");
    for _ in 0..2 {
        c.keys("6048#").keys("6049#");
        assert_eq!(c.last(), [&["mismatch"][..], &CHOSEN].concat());
    }
    c.keys("6048#").keys("6049#");
    assert_eq!(c.last(), ["mismatch", "not_changed", "menu"]);
    c.keys("*");
    assert_eq!(c.last(), ["goodbye"]);
    assert!(c.ends());
    assert_eq!(c.flow.outcome(), Outcome::LoggedIn);
    let mut again = Call::portal(&store);
    again.keys("2002#").keys("5937#");
    assert_eq!(again.last(), ["menu"], "the passcode is as it was");
    // After a change that worked, one that fails does not say "not changed": the first
    // one's passcode is in force.
    again.keys("1").keys("6284#").keys("6284#").finish();
    assert_eq!(again.last(), ["menu"]);
    again.keys("1");
    for _ in 0..3 {
        again.keys("5172#").keys("5173#");
    }
    assert_eq!(again.last(), ["mismatch", "menu"]);
    assert_eq!(again.flow.outcome(), Outcome::Changed);
}

/// `*` before any key of a change the caller chose (keys typed ahead aside) gives it up:
/// "not changed", then the menu (the `change-passcode` route: goodbye); at the
/// confirmation it steps back to the new passcode. After keys of theirs, `*` only clears
/// them; in the change a temporary passcode forces, it only asks again.
#[test]
fn star_before_any_digit_gives_up_a_chosen_change() {
    let store = store();
    let mut c = Call::portal(&store);
    c.keys("2002#").keys("5937#").keys("1");
    assert_eq!(c.last(), [&RULE[..], &CHOSEN].concat());
    c.keys("*");
    assert_eq!(c.last(), ["not_changed", "menu"]);
    // At the confirmation: a step back, to the new passcode and its way out.
    c.keys("1").keys("6048#").keys("*");
    assert_eq!(c.last(), CHOSEN);
    c.keys("*");
    assert_eq!(c.last(), ["not_changed", "menu"]);
    // Digits keyed: cleared and asked again, then given up.
    c.keys("1").keys("60*");
    assert_eq!(c.last(), CHOSEN);
    c.keys("*");
    assert_eq!(c.last(), ["not_changed", "menu"]);
    // Typed ahead in one burst: given up, and the `*` after it is the menu's goodbye.
    c.keys("1").press("**");
    c.run();
    assert_eq!(c.last(), ["goodbye"], "{:?}", c.all());
    assert!(c.ends());
    assert_eq!(c.flow.outcome(), Outcome::LoggedIn);
    // Keys typed ahead during the check that begin the new passcode: the caller told to
    // press star to keep their passcode, and pressing it, keeps it.
    let mut ahead = Call::portal(&store);
    ahead.keys("2002#").press("5937#16");
    ahead.run();
    assert_eq!(ahead.last(), [&RULE[..], &CHOSEN].concat());
    ahead.type_keys("*");
    assert_eq!(ahead.last(), ["not_changed", "menu"]);
    let mut again = Call::portal(&store);
    again.keys("2002#").keys("5937#");
    assert_eq!(again.last(), ["menu"], "the passcode is as it was");
    // Giving up a second change after one that worked: the first one's passcode is in
    // force, so "not changed" is not said.
    again.keys("1").keys("6284#").keys("6284#").finish();
    again.keys("1").keys("*");
    assert_eq!(again.last(), ["menu"]);
    assert_eq!(again.flow.outcome(), Outcome::Changed);

    // The change-passcode route has no menu to go back to.
    let mut c = Call::new(&store, config(Application::ChangePasscode, None));
    c.keys("2002#").keys("6284#").keys("*");
    assert_eq!(c.last(), ["not_changed", "goodbye"]);
    assert!(c.ends());
    assert_eq!(c.flow.outcome(), Outcome::LoggedIn);

    // A temporary passcode must be changed: `*` asks again, and is not offered. At the
    // confirmation it goes back to the new passcode, as in a change the caller chose: a
    // typo in it is mended without a deliberate mismatch, which would take a try.
    let mut c = Call::portal(&store);
    c.keys("1001#").keys("4826#");
    assert_eq!(c.last(), FORCED);
    c.keys("*");
    assert_eq!(c.last(), ["enter_new_passcode"]);
    c.keys("5973#").keys("*");
    assert_eq!(c.last(), ["enter_new_passcode"]);
    // After some keys of the confirmation, `*` clears them and asks for it again.
    c.keys("5937#").keys("59*");
    assert_eq!(c.last(), ["reenter_new_passcode"]);
    c.keys("5937#");
    assert!(
        !temporary(&store, "1001"),
        "the mended passcode is the new one"
    );
    assert!(
        rejected_changes(&store).is_empty(),
        "no mismatch was counted"
    );
    assert!(!c.hung_up);
}

/// Silence at "enter the new passcode again" asks for the confirmation again, keeping the
/// first entry (as `*` does); silence to the end says the passcode was not changed.
#[test]
fn silence_at_the_confirmation_asks_for_it_again() {
    let store = store();
    let mut c = Call::portal(&store);
    c.keys("1001#").keys("4826#").keys("5937#").finish();
    assert_eq!(c.last(), ["reenter_new_passcode"]);
    c.advance(Duration::from_secs(6));
    assert_eq!(c.last(), ["no_input", "reenter_new_passcode"]);
    c.keys("59").advance(Duration::from_secs(4));
    assert_eq!(c.last(), ["too_slow", "reenter_new_passcode"]);
    c.keys("5937#");
    assert_eq!(c.last(), ["passcode_changed"]);
    assert!(!temporary(&store, "1001"));

    let store = self::store();
    let mut c = Call::portal(&store);
    c.keys("1001#").keys("4826#").keys("5937#").finish();
    for _ in 0..2 {
        c.advance(Duration::from_secs(6));
        assert_eq!(c.last(), ["no_input", "reenter_new_passcode"]);
        c.finish();
    }
    c.advance(Duration::from_secs(6));
    assert_eq!(c.last(), ["not_changed", "goodbye"]);
    assert!(c.ends());
    assert_eq!(c.flow.outcome(), Outcome::ChangeNotCompleted);
    assert!(temporary(&store, "1001"));
}

#[test]
fn rejected_call_whose_keys_typed_ahead_reach_goodbye_is_still_in_use() {
    let store = store();
    let mut c = Call::portal(&store);
    c.in_use = true;
    c.press("2002#5937#*");
    c.run();
    assert_eq!(c.last(), ["in_use", "goodbye"], "{:?}", c.all());
    assert_eq!(c.flow.outcome(), Outcome::InUse);
    assert_eq!(c.flow.logged_in(), None);
}

/// Media that cannot start (or breaks) leaves nothing to say or hear: the call ends at once,
/// with no goodbye (it would never finish playing), as an error; a change already stored
/// still counts.
#[test]
fn media_failing_ends_the_call_at_once() {
    let store = store();
    let mut c = Call::portal(&store);
    c.keys("1001#");
    c.flow.handle_media_failed();
    c.run();
    assert!(c.hung_up);
    assert_eq!(c.flow.outcome(), Outcome::Error);
    assert_eq!(c.last(), ["enter_passcode"], "no prompt after the failure");
    c.flow.handle_key(c.now, Digit::POUND);
    c.flow.handle_media_failed();
    assert_eq!(c.flow.poll_action(), None, "one hang-up, nothing after");

    let mut c = Call::portal(&store);
    c.keys("1001#4826#5937#5937#");
    c.flow.handle_media_failed();
    c.run();
    assert!(c.hung_up);
    assert_eq!(c.flow.outcome(), Outcome::Changed);
    assert!(!temporary(&store, "1001"));
}
