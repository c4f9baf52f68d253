//! The call flow under any sequence of events: keys, prompts ending, time passing, the store
//! answering (or not yet), hold, a newer login replacing the call, media failing, the caller
//! hanging up. A small model of the call task and the media thread drives it on a virtual
//! clock and checks what must hold whatever the caller does:
//!
//! - at most one store job is in flight (the call task keeps one);
//! - a passcode is checked only as keyed and ended with `#`, at most `attempts` times a call;
//!   a new passcode is stored only for the mailbox logged in to, after it was keyed twice,
//!   never after the login was refused as in use;
//! - the flow never asks to be woken at or before the moment it was woken (no busy loop);
//! - it hangs up once, and nothing follows; after the caller hangs up it asks nothing;
//! - left alone it always ends the call with BYE; at the route's maximum length it is saying
//!   goodbye;
//! - the outcome agrees with what happened (changed exactly when the store changed it, …).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vportal::ivr::dialplan::{Application, RouteSettings};
use vportal::ivr::flow::{Action, Flow, FlowConfig, LINGER, Outcome};
use vportal::media::digit::Digit;
use vportal::media::prompts::PromptSet;
use vportal::store::{ChangeOutcome, Extension, Lock, VerifyOutcome, Violation};

fn prompts() -> Arc<PromptSet> {
    static SET: OnceLock<Arc<PromptSet>> = OnceLock::new();
    Arc::clone(SET.get_or_init(|| Arc::new(PromptSet::built_in().unwrap())))
}

/// The mailbox caller identity offers, when the route takes it from there.
const CALLER: &str = "1001";

/// How a call is set up.
#[derive(Debug, Clone)]
struct Setup {
    application: Application,
    caller_id: bool,
    /// A login is refused as in use (`session = "reject"` with the mailbox in another call).
    in_use: bool,
    attempts: u32,
    reprompts: u32,
    first_digit: Duration,
    inter_digit: Duration,
    max_call: Duration,
}

/// What happens next.
#[derive(Debug, Clone)]
enum Op {
    Key(char),
    /// The media thread reports a playback done: an older one stopped, or the current one
    /// played out.
    Media,
    /// Time passes (ms); timeouts due meanwhile fire.
    Wait(u32),
    /// The store job in flight answers; the number picks the answer.
    Reply(u8),
    Hold(bool),
    /// A newer call logged in to this mailbox.
    Replaced,
    /// The call's media could not start, or broke.
    MediaFailed,
    CallerHangsUp,
}

#[derive(Debug)]
enum Job {
    LookUp,
    Verify { mailbox: String },
    Change,
}

/// The call task and the media thread around one flow.
struct Sim {
    setup: Setup,
    flow: Flow,
    start: Instant,
    now: Instant,
    /// The playback the media thread plays: its token, whether keys stop it.
    playing: Option<(u64, bool)>,
    /// Playback-done reports on their way to the call task.
    media_events: VecDeque<u64>,
    job: Option<Job>,
    /// Every key pressed, in order.
    keys: String,
    verifies: u32,
    /// The mailbox whose login the store accepted last.
    logged_in: Option<Extension>,
    /// The flow reported the login (for the session rule).
    login_reported: bool,
    refused_in_use: bool,
    /// The flow gave the mailbox up (its last words began).
    logged_out: bool,
    /// The flow let the media stop (its last words heard).
    quiet: bool,
    /// The store stored a new passcode.
    changed: bool,
    flow_hung_up: bool,
    caller_gone: bool,
}

impl Sim {
    fn new(setup: Setup) -> Self {
        let settings = RouteSettings {
            attempts: setup.attempts,
            reprompts: setup.reprompts,
            first_digit_timeout: setup.first_digit,
            inter_digit_timeout: setup.inter_digit,
            max_call_duration: setup.max_call,
            ..RouteSettings::default()
        };
        let config = FlowConfig {
            application: setup.application,
            settings,
            caller_mailbox: setup.caller_id.then(|| Extension::parse(CALLER).unwrap()),
        };
        let start = Instant::now();
        let mut sim = Self {
            setup,
            flow: Flow::new(config, prompts()),
            start,
            now: start,
            playing: None,
            media_events: VecDeque::new(),
            job: None,
            keys: String::new(),
            verifies: 0,
            logged_in: None,
            login_reported: false,
            refused_in_use: false,
            logged_out: false,
            quiet: false,
            changed: false,
            flow_hung_up: false,
            caller_gone: false,
        };
        sim.flow.start(start);
        sim.perform();
        sim
    }

    fn over(&self) -> bool {
        self.flow_hung_up || self.caller_gone
    }

    fn apply(&mut self, op: &Op) {
        if self.caller_gone {
            return;
        }
        match *op {
            Op::Key(c) => {
                self.keys.push(c);
                self.flow.handle_key(self.now, Digit::from_char(c).unwrap());
            }
            Op::Media => {
                if let Some(token) = self.media_events.pop_front() {
                    self.flow.handle_playback_done(self.now, token);
                } else if let Some((token, _)) = self.playing.take() {
                    self.flow.handle_playback_done(self.now, token);
                }
            }
            Op::Wait(ms) => self.wait(Duration::from_millis(u64::from(ms))),
            Op::Reply(pick) => self.reply(pick),
            Op::Hold(held) => self.flow.handle_hold(self.now, held),
            Op::Replaced => {
                // Only a call holding the mailbox's session is ever replaced.
                if self.login_reported && !self.refused_in_use {
                    self.flow.handle_replaced();
                }
            }
            Op::MediaFailed => {
                self.flow.handle_media_failed();
                // Nothing will play out any more.
                self.playing = None;
                self.media_events.clear();
            }
            Op::CallerHangsUp => {
                // The call task lets store work in flight finish and hears its answer, but
                // does nothing more the flow asks; then the flow stops.
                if self.job.is_some() {
                    self.reply(0);
                    while self.flow.poll_action().is_some() {}
                }
                self.flow.handle_hangup();
                self.caller_gone = true;
                assert_eq!(
                    self.flow.poll_action(),
                    None,
                    "asked after the caller hung up"
                );
                return;
            }
        }
        self.perform();
        // Saying goodbye, a call may wait for a caller on hold to come back, never past
        // its maximum length; past it, only for the phone to play out the goodbye.
        if self.flow.state() == "leaving"
            && let Some(due) = self.flow.poll_timeout()
        {
            let end = (self.start + self.setup.max_call).max(self.now + LINGER);
            assert!(due <= end, "waits {:?} past its maximum length", due - end);
        }
    }

    /// Lets time pass, firing each timeout when it is due.
    fn wait(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some(due) = self.flow.poll_timeout().filter(|&t| t <= until) {
            self.now = self.now.max(due);
            self.flow.handle_timeout(self.now);
            self.perform();
            if let Some(next) = self.flow.poll_timeout() {
                assert!(next > self.now, "woken at {due:?}, asks again for {next:?}");
            }
        }
        self.now = until;
        // At its maximum length a call says goodbye (which may outlast it), nothing else.
        if self.now >= self.start + self.setup.max_call && !self.over() {
            let state = self.flow.state();
            assert_eq!(state, "leaving", "the call outlived its maximum length");
        }
    }

    /// The store answers the job in flight.
    fn reply(&mut self, pick: u8) {
        let Some(job) = self.job.take() else {
            return;
        };
        match job {
            Job::LookUp => self
                .flow
                .handle_mailbox_exists(self.now, pick.is_multiple_of(2)),
            Job::Verify { mailbox } => {
                let known = Extension::parse(&mailbox).ok();
                let outcome = match pick % 8 {
                    0 | 1 if known.is_some() => Ok(VerifyOutcome::Ok {
                        must_change: pick.is_multiple_of(2),
                    }),
                    2 => Ok(VerifyOutcome::Wrong { remaining: 3 }),
                    4 => Ok(VerifyOutcome::Locked {
                        until: Lock::Permanent,
                    }),
                    5 => Ok(VerifyOutcome::Expired),
                    6 => Err(()),
                    _ => Ok(VerifyOutcome::Unknown),
                };
                if matches!(outcome, Ok(VerifyOutcome::Ok { .. })) {
                    self.logged_in = known;
                    self.flow.set_lengths(4..=10);
                }
                self.flow.handle_verified(self.now, outcome);
            }
            Job::Change => {
                let outcome = match pick % 5 {
                    0 | 1 => Ok(ChangeOutcome::Changed),
                    2 => {
                        let v = Violation::ALL[usize::from(pick / 5) % Violation::ALL.len()];
                        Ok(ChangeOutcome::Rejected([v].into_iter().collect(), 4..=10))
                    }
                    3 => Ok(ChangeOutcome::Superseded),
                    _ => Err(()),
                };
                self.changed |= matches!(outcome, Ok(ChangeOutcome::Changed));
                self.flow.handle_changed(self.now, outcome);
            }
        }
    }

    /// Does what the flow asks, as the call task and the media thread would, checking each
    /// request.
    fn perform(&mut self) {
        while let Some(action) = self.flow.poll_action() {
            assert!(!self.over(), "{action:?} after the call ended");
            match action {
                Action::Play(playback) => {
                    assert!(!playback.items.is_empty(), "an empty prompt");
                    assert!(!self.quiet, "a prompt after the media stopped");
                    if let Some((old, _)) =
                        self.playing.replace((playback.token, playback.barge_in))
                    {
                        self.media_events.push_back(old);
                    }
                }
                Action::BargeIn => {
                    if let Some((token, true)) = self.playing {
                        self.playing = None;
                        self.media_events.push_back(token);
                    }
                }
                Action::LookUpMailbox(mailbox) => {
                    assert!(self.job.is_none(), "a second store job");
                    assert_eq!(mailbox.as_str(), CALLER);
                    self.job = Some(Job::LookUp);
                }
                Action::Verify { mailbox, passcode } => {
                    assert!(self.job.is_none(), "a second store job");
                    self.verifies += 1;
                    assert!(
                        self.verifies <= self.setup.attempts,
                        "more checks than attempts"
                    );
                    let typed = format!("{}#", passcode.expose());
                    assert!(
                        self.keys.contains(&typed),
                        "checked a passcode not keyed with #"
                    );
                    if mailbox != CALLER || !self.setup.caller_id {
                        assert!(
                            self.keys.contains(&format!("{mailbox}#")),
                            "mailbox not keyed"
                        );
                    }
                    self.job = Some(Job::Verify { mailbox });
                }
                Action::ChangePasscode { mailbox, passcode } => {
                    assert!(self.job.is_none(), "a second store job");
                    assert!(!self.refused_in_use, "a change after the login was refused");
                    assert!(!self.logged_out, "a change after the mailbox was given up");
                    assert_eq!(
                        Some(&mailbox),
                        self.logged_in.as_ref(),
                        "not the login's mailbox"
                    );
                    let typed = format!("{}#", passcode.expose());
                    if typed != "#" {
                        assert!(
                            self.keys.matches(&typed).count() >= 2,
                            "new passcode keyed once"
                        );
                    }
                    self.job = Some(Job::Change);
                }
                Action::LoggedIn(mailbox) => {
                    assert_eq!(Some(&mailbox), self.logged_in.as_ref());
                    assert!(!self.login_reported, "one login a call");
                    self.login_reported = true;
                    if self.setup.in_use {
                        self.refused_in_use = true;
                        self.flow.handle_in_use();
                    }
                }
                Action::Mismatched(mailbox) => {
                    assert_eq!(
                        Some(&mailbox),
                        self.logged_in.as_ref(),
                        "not the login's mailbox"
                    );
                    assert!(!self.refused_in_use, "a change after the login was refused");
                    assert!(!self.logged_out, "a change after the mailbox was given up");
                }
                Action::LoggedOut(mailbox) => {
                    assert_eq!(
                        Some(&mailbox),
                        self.logged_in.as_ref(),
                        "not the login's mailbox"
                    );
                    assert!(self.login_reported, "logged out before the login");
                    assert!(!self.refused_in_use, "the refused login never held it");
                    assert!(!self.logged_out, "logged out twice");
                    assert!(self.job.is_none(), "logged out with a store job in flight");
                    self.logged_out = true;
                }
                Action::Quiet => {
                    assert!(!self.quiet, "quiet twice");
                    assert_ne!(self.flow.outcome(), Outcome::InProgress);
                    assert!(self.playing.is_none(), "quiet while a prompt plays");
                    self.quiet = true;
                }
                Action::Hangup => {
                    assert_ne!(self.flow.outcome(), Outcome::InProgress);
                    self.flow_hung_up = true;
                }
            }
        }
    }

    /// Nobody presses anything more: prompts play out, the store answers, time passes. The
    /// flow must end the call, within the route's maximum length.
    fn leave_alone(&mut self) {
        for _ in 0..10_000 {
            if self.over() {
                return;
            }
            if !self.media_events.is_empty() || self.playing.is_some() {
                self.apply(&Op::Media);
            } else if self.job.is_some() {
                self.apply(&Op::Reply(2));
            } else if let Some(due) = self.flow.poll_timeout() {
                let by = due.saturating_duration_since(self.now);
                self.apply(&Op::Wait(u32::try_from(by.as_millis()).unwrap()));
            } else {
                panic!("the flow waits for nothing and never ends the call");
            }
        }
        panic!("the flow never ended the call");
    }

    /// The outcome agrees with what happened.
    fn check_outcome(&self) {
        let outcome = self.flow.outcome();
        assert_ne!(outcome, Outcome::InProgress);
        assert_eq!(
            outcome == Outcome::Changed,
            self.changed,
            "{outcome} vs stored change"
        );
        let needs_login = [
            Outcome::LoggedIn,
            Outcome::ChangeNotCompleted,
            Outcome::Replaced,
            Outcome::Superseded,
            Outcome::InUse,
        ];
        if needs_login.contains(&outcome) {
            // The store took the login (the call task may have dropped the flow's report of
            // it when the caller hung up during the check).
            assert!(self.logged_in.is_some(), "{outcome} without a login");
        }
        if outcome == Outcome::InUse {
            assert!(self.refused_in_use);
        }
        if outcome == Outcome::LoginFailed {
            assert_eq!(self.verifies, self.setup.attempts, "gave up early");
        }
    }
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![
            Just(Application::VoicePortal),
            Just(Application::ChangePasscode)
        ],
        any::<bool>(),
        prop::bool::weighted(0.2),
        1_u32..=3,
        0_u32..=2,
        1_u64..=5,
        1_u64..=3,
        30_u64..=90,
    )
        .prop_map(
            |(application, caller_id, in_use, attempts, reprompts, first, inter, max)| Setup {
                application,
                caller_id,
                in_use,
                attempts,
                reprompts,
                first_digit: Duration::from_secs(first),
                inter_digit: Duration::from_secs(inter),
                max_call: Duration::from_secs(max),
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    // Keys that often make whole entries: a few digits (repeated ones included), `#`, `*`.
    let key = prop_oneof![
        6 => prop::sample::select(vec!['1', '0', '0', '1', '2', '5', '8', '4', '6']),
        3 => Just('#'),
        1 => Just('*'),
        1 => prop::sample::select(vec!['3', '7', '9', 'A', 'D']),
    ];
    prop_oneof![
        12 => key.prop_map(Op::Key),
        4 => Just(Op::Media),
        3 => prop_oneof![0_u32..500, 500_u32..8_000].prop_map(Op::Wait),
        3 => any::<u8>().prop_map(Op::Reply),
        1 => any::<bool>().prop_map(Op::Hold),
        1 => Just(Op::Replaced),
        1 => Just(Op::MediaFailed),
        1 => Just(Op::CallerHangsUp),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn any_sequence_of_events_keeps_the_flow_sound(
        setup in setup(),
        ops in prop::collection::vec(op(), 0..120),
    ) {
        let mut sim = Sim::new(setup);
        for op in &ops {
            sim.apply(op);
        }
        sim.leave_alone();
        sim.check_outcome();
    }
}

/// The driver itself: a caller who keys a whole login and a change gets them done, so the
/// properties above are about calls that get somewhere.
#[test]
fn the_model_drives_a_whole_call() {
    let setup = Setup {
        application: Application::VoicePortal,
        caller_id: false,
        in_use: false,
        attempts: 3,
        reprompts: 2,
        first_digit: Duration::from_secs(5),
        inter_digit: Duration::from_secs(3),
        max_call: Duration::from_secs(60),
    };
    let mut sim = Sim::new(setup);
    let keys = "1001#2580#".chars().map(Op::Key);
    let verified = [Op::Reply(0)];
    let change = "5937#5937#".chars().map(Op::Key);
    let changed = [Op::Reply(0), Op::Media, Op::Media, Op::Key('*')];
    for op in keys.chain(verified).chain(change).chain(changed) {
        sim.apply(&op);
    }
    assert_eq!(sim.verifies, 1);
    assert!(sim.login_reported);
    assert!(sim.changed);
    sim.leave_alone();
    assert!(sim.flow_hung_up);
    assert_eq!(sim.flow.outcome(), Outcome::Changed);
    sim.check_outcome();
}
