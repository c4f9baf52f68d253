//! The voice-portal call flow, sans-IO.
//!
//! welcome → mailbox + `#` → passcode + `#` → verify →
//! - temporary: "must be changed" → new passcode + `#` → again + `#` → change → menu;
//! - permanent: menu (`1` change passcode, `*` goodbye);
//! - wrong or unknown: "incorrect", again, until the per-call attempts run out;
//! - locked, expired: say so, goodbye.
//!
//! The flow is driven by what happens ([`Flow::handle_key`], [`Flow::handle_playback_done`],
//! [`Flow::handle_verified`], [`Flow::handle_changed`], [`Flow::handle_timeout`], …) and says
//! what to do through [`Flow::poll_action`]: play prompts, check a passcode, store a new one,
//! hang up. It never touches the store, the clock or the network itself: the call task
//! performs the actions and feeds the results back.
//!
//! Entries always end with `#` (nothing is submitted at a length, so a caller cannot learn
//! how long a passcode is); `*` clears an entry and asks again (before any key in a change
//! the caller chose, it gives the change up); keys barge into prompts that allow it, and
//! keys pressed while nothing is being asked (during a check) are kept for the next entry.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dialplan::{Application, RouteSettings};
use crate::media::digit::Digit;
use crate::media::player::{Item, Playback, TYPE_AHEAD, TypeAhead};
use crate::media::prompts::{PromptSet, number_ids};
use crate::store::policy::MAX_PIN_LEN;
use crate::store::{ChangeOutcome, Extension, Lock, Passcode, VerifyOutcome, Violation};

/// Longest entry kept: one key beyond the longest passcode a policy allows, so that a longer
/// entry is still too long (a wrong passcode at login, `too_long` for a new one) rather than
/// cut down to one that fits. Further keys are dropped.
const MAX_ENTRY: usize = MAX_PIN_LEN + 1;

// Keys typed ahead are kept for two whole entries of that length and a menu key.
const _: () = assert!(TYPE_AHEAD > 2 * (MAX_ENTRY + 1));

/// What the call task should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Play this (replacing what is playing).
    Play(Playback),
    /// A key was pressed during a prompt that allows barge-in: stop it.
    BargeIn,
    /// Does this mailbox exist, with a passcode (one without cannot be logged in to)?
    /// Answer with [`Flow::handle_mailbox_exists`].
    LookUpMailbox(Extension),
    /// Check this passcode. Answer with [`Flow::handle_verified`].
    Verify {
        /// The mailbox as keyed (or from caller identity).
        mailbox: String,
        /// The passcode as keyed.
        passcode: Passcode,
    },
    /// Store this new passcode. Answer with [`Flow::handle_changed`].
    ChangePasscode {
        /// The logged-in mailbox.
        mailbox: Extension,
        /// The new passcode (keyed twice, the same both times).
        passcode: Passcode,
    },
    /// The caller logged in to this mailbox (for the one-session-per-mailbox rule).
    LoggedIn(Extension),
    /// The new passcode was keyed differently the second time: audit the refused change
    /// (nothing is asked of the store but the record; no answer is awaited).
    Mismatched(Extension),
    /// The call is saying its last words: it no longer holds the mailbox it logged in to
    /// (for the one-session-per-mailbox rule), so another phone's login neither waits for
    /// it nor ends it. Comes once, after [`Action::LoggedIn`], unless that login was refused.
    LoggedOut(Extension),
    /// The last words are heard and nothing more will be played: the media may stop
    /// sending (the BYE follows [`LINGER`] later). Comes at most once, and no
    /// [`Action::Play`] after it.
    Quiet,
    /// End the call (BYE).
    Hangup,
}

/// How a call ended, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still going.
    InProgress,
    /// The caller logged in and left (or hung up) without changing the passcode.
    LoggedIn,
    /// The passcode was changed.
    Changed,
    /// A temporary passcode had to be changed and was not (mismatches, policy, hang-up).
    ChangeNotCompleted,
    /// The login attempts ran out.
    LoginFailed,
    /// The mailbox is locked.
    Locked,
    /// The temporary passcode has expired.
    Expired,
    /// The caller stayed silent through every reprompt.
    NoInput,
    /// The caller hung up before logging in.
    Abandoned,
    /// Another call logged in to the same mailbox and took over.
    Replaced,
    /// The mailbox was in use by another call.
    InUse,
    /// The passcode logged in with was replaced during the call (an admin reset it, or
    /// removed the mailbox), so the change the caller asked for was refused.
    Superseded,
    /// The call reached the route's maximum duration.
    TimedOut,
    /// The server stopped (SIGTERM, ctrl-c) before the caller had logged in.
    Shutdown,
    /// The store failed.
    Error,
}

impl Outcome {
    /// Every way a call can end (all but [`Outcome::InProgress`]).
    pub const ENDED: [Self; 14] = [
        Self::LoggedIn,
        Self::Changed,
        Self::ChangeNotCompleted,
        Self::LoginFailed,
        Self::Locked,
        Self::Expired,
        Self::NoInput,
        Self::Abandoned,
        Self::Replaced,
        Self::InUse,
        Self::Superseded,
        Self::TimedOut,
        Self::Shutdown,
        Self::Error,
    ];

    /// A label for metrics: `changed`, `login_failed`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::LoggedIn => "logged_in",
            Self::Changed => "changed",
            Self::ChangeNotCompleted => "change_not_completed",
            Self::LoginFailed => "login_failed",
            Self::Locked => "locked",
            Self::Expired => "expired",
            Self::NoInput => "no_input",
            Self::Abandoned => "abandoned",
            Self::Replaced => "replaced",
            Self::InUse => "in_use",
            Self::Superseded => "superseded",
            Self::TimedOut => "timed_out",
            Self::Shutdown => "shutdown",
            Self::Error => "error",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a flow is set up for one call.
#[derive(Debug, Clone)]
pub struct FlowConfig {
    /// What the route runs.
    pub application: Application,
    /// The route's settings (attempts, timeouts, reprompts, maximum duration).
    pub settings: RouteSettings,
    /// The mailbox from the caller's identity, when the route takes it from there and the
    /// source is trusted. It is used only if the mailbox exists.
    pub caller_mailbox: Option<Extension>,
}

/// Which entry is being collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Mailbox,
    Passcode,
    NewPasscode,
    ConfirmPasscode,
}

impl Field {
    /// Whether this is part of a new passcode (its first entry or the confirmation).
    fn is_new(self) -> bool {
        matches!(self, Self::NewPasscode | Self::ConfirmPasscode)
    }

    fn prompt(self) -> &'static str {
        match self {
            Self::Mailbox => "enter_mailbox",
            Self::Passcode => "enter_passcode",
            Self::NewPasscode => "enter_new_passcode",
            Self::ConfirmPasscode => "reenter_new_passcode",
        }
    }
}

/// An entry being collected.
#[derive(Debug)]
struct Entry {
    field: Field,
    /// What was keyed so far. Passcodes are secret: never logged, wiped on drop.
    keyed: Passcode,
    /// When silence or a pause ends the wait.
    deadline: Option<Instant>,
}

/// What happens after an announcement that may not be interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Menu,
    /// Say these (ending with goodbye), then hang up.
    Leave(Outcome, &'static [&'static str]),
}

/// Said when the call reaches its route's maximum length.
const TIME_UP: &[&str] = &["time_limit", "goodbye"];

/// Said to a call that another one replaces.
const REPLACED: &[&str] = &["replaced", "goodbye"];

/// How long a call whose last words ("your mailbox is locked", goodbye) played while the
/// caller held it waits for them to come back and hear them, before hanging up unheard.
pub const HELD_GOODBYE_WAIT: Duration = Duration::from_secs(30);

/// How long after its last words a call hangs up: a BYE stops a phone's audio at once, and
/// its jitter buffer still holds their end (a softphone lost 0.1 s of "goodbye").
pub const LINGER: Duration = Duration::from_millis(500);

/// What the flow waits for.
#[derive(Debug)]
enum Step {
    /// Media is not up yet.
    NotStarted,
    /// Whether the caller-identity mailbox exists.
    LookingUp,
    /// Keys for an entry.
    Entry(Entry),
    /// The result of a passcode check.
    Verifying,
    /// The result of storing a new passcode.
    Changing,
    /// A menu choice.
    Menu { deadline: Option<Instant> },
    /// The end of an announcement, then what follows.
    Announcing(Then),
    /// The end of the goodbye, then hang up at `until`: [`LINGER`] after it, or, the
    /// goodbye having played while the caller held the call, [`HELD_GOODBYE_WAIT`] after
    /// it, unless they come back before and it is said again.
    Leaving { until: Option<Instant> },
    /// Over: the call has ended or is ending.
    Over,
}

/// One call's flow.
#[derive(Debug)]
pub struct Flow {
    config: FlowConfig,
    prompts: Arc<PromptSet>,
    step: Step,
    outcome: Outcome,
    actions: VecDeque<Action>,
    type_ahead: TypeAhead,
    /// Entries asked for so far: tells the entry a key is for from a later one.
    asked: u64,
    /// What the question now asked was preceded by ("that is not correct", a refusal's
    /// reason), until the caller has heard it: a hold that began before it was heard has
    /// it said again with the question after the hold.
    unheard: Vec<&'static str>,
    /// The playback in progress: its token and whether keys interrupt it.
    playing: Option<(u64, bool)>,
    next_token: u64,
    /// The mailbox keyed (or from caller identity) for the current login attempt.
    mailbox: Option<String>,
    /// Whether the mailbox came from caller identity (then only the passcode is asked).
    mailbox_known: bool,
    logged_in: Option<Extension>,
    /// Whether the logged-in passcode is temporary (must be changed before the menu).
    must_change: bool,
    /// The first entry of a new passcode, waiting for its confirmation.
    new_passcode: Option<Passcode>,
    logins_left: u32,
    changes_left: u32,
    reprompts_left: u32,
    hang_up_at: Option<Instant>,
    /// The caller has the call on hold (we may not send): prompts go unheard, so silence is
    /// not counted until they come back.
    held: bool,
    /// Whether last words played into a hold may wait for the caller to come back: not
    /// once the call's time limit has passed, nor once another call has the mailbox.
    may_wait_for_hold: bool,
    /// A change was asked for and its answer has not come yet.
    change_in_flight: bool,
    /// How the call ends once the change being stored is answered (the call reached its
    /// time limit, or was replaced, meanwhile): the caller first hears whether it worked.
    ending: Option<(Outcome, &'static [&'static str])>,
    /// The passcode lengths the policy allows, told with the login
    /// ([`Flow::set_lengths`]): said before a new passcode is first asked for.
    lengths: Option<RangeInclusive<usize>>,
}

impl Flow {
    /// A flow for a call, not yet started.
    pub fn new(config: FlowConfig, prompts: Arc<PromptSet>) -> Self {
        let attempts = config.settings.attempts.max(1);
        let reprompts = config.settings.reprompts;
        Self {
            config,
            prompts,
            step: Step::NotStarted,
            outcome: Outcome::InProgress,
            actions: VecDeque::new(),
            type_ahead: TypeAhead::default(),
            asked: 0,
            unheard: Vec::new(),
            playing: None,
            next_token: 0,
            mailbox: None,
            mailbox_known: false,
            logged_in: None,
            must_change: false,
            new_passcode: None,
            logins_left: attempts,
            changes_left: attempts,
            reprompts_left: reprompts,
            hang_up_at: None,
            held: false,
            may_wait_for_hold: true,
            change_in_flight: false,
            ending: None,
            lengths: None,
        }
    }

    /// How the call has ended (or [`Outcome::InProgress`]).
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The mailbox logged in to, if any.
    pub fn logged_in(&self) -> Option<&Extension> {
        self.logged_in.as_ref()
    }

    /// What the call is doing, as admins see it in the list of active calls: `starting`,
    /// `mailbox`, `passcode`, `verifying`, `new_passcode`, `confirm_passcode`, `changing`,
    /// `menu`, `announcing`, `leaving` or `ended`. Never what was keyed.
    pub fn state(&self) -> &'static str {
        match &self.step {
            Step::NotStarted => "starting",
            Step::LookingUp => "mailbox",
            Step::Entry(entry) => match entry.field {
                Field::Mailbox => "mailbox",
                Field::Passcode => "passcode",
                Field::NewPasscode => "new_passcode",
                Field::ConfirmPasscode => "confirm_passcode",
            },
            Step::Verifying => "verifying",
            Step::Changing => "changing",
            Step::Menu { .. } => "menu",
            Step::Announcing(_) => "announcing",
            Step::Leaving { .. } => "leaving",
            Step::Over => "ended",
        }
    }

    /// The next thing to do.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Flow::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let step = match &self.step {
            Step::Leaving { until } => *until,
            _ if self.held => None,
            Step::Entry(e) => e.deadline,
            Step::Menu { deadline } => *deadline,
            _ => None,
        };
        [step, self.hang_up_at].into_iter().flatten().min()
    }

    /// Media is up: the flow begins.
    pub fn start(&mut self, now: Instant) {
        if !matches!(self.step, Step::NotStarted) {
            return;
        }
        self.hang_up_at = Some(now + self.config.settings.max_call_duration);
        match self.config.caller_mailbox.clone() {
            Some(mailbox) => {
                self.step = Step::LookingUp;
                self.actions.push_back(Action::LookUpMailbox(mailbox));
            }
            None => self.ask(Field::Mailbox, &["welcome"], now),
        }
    }

    /// The store work the flow waits for ended without an answer (its job failed outright):
    /// the step that waits for it hears of a failure, and no other: a lookup's failure asks
    /// for the mailbox, and keys typed ahead may then ask for a check, which must not be
    /// taken as failed too.
    pub fn handle_store_failed(&mut self, now: Instant) {
        if self.change_in_flight {
            self.handle_changed(now, Err(()));
        } else if matches!(self.step, Step::LookingUp) {
            self.handle_mailbox_exists(now, false);
        } else {
            self.handle_verified(now, Err(()));
        }
    }

    /// The answer to [`Action::LookUpMailbox`].
    pub fn handle_mailbox_exists(&mut self, now: Instant, exists: bool) {
        if !matches!(self.step, Step::LookingUp) {
            return;
        }
        match (exists, self.config.caller_mailbox.clone()) {
            (true, Some(mailbox)) => {
                self.mailbox = Some(mailbox.to_string());
                self.mailbox_known = true;
                self.ask(Field::Passcode, &["welcome"], now);
            }
            _ => self.ask(Field::Mailbox, &["welcome"], now),
        }
    }

    /// The caller put the call on hold (`held`: we may not send to them) or took it off.
    /// While held, silence is not counted (the caller hears no prompt to answer); the call's
    /// length limit still runs. Back from hold, the entry or menu in progress is asked again
    /// from the start (a part keyed before is dropped: the caller hears the whole question
    /// and answers it whole), with the whole allowance of silences.
    pub fn handle_hold(&mut self, now: Instant, held: bool) {
        if held == self.held {
            return;
        }
        self.held = held;
        if held {
            return;
        }
        self.reprompts_left = self.config.settings.reprompts;
        let unheard = std::mem::take(&mut self.unheard);
        match &self.step {
            Step::Entry(entry) => {
                let field = entry.field;
                self.ask(field, &unheard, now);
            }
            Step::Menu { .. } => self.menu(now, &unheard),
            // An announcement begun during the hold is said again, whole.
            Step::Announcing(then) if !unheard.is_empty() => {
                let then = *then;
                self.announce(&unheard, then);
            }
            // So are the last words, which the call waited to say.
            Step::Leaving { .. } if !unheard.is_empty() => self.say_last(&unheard),
            // Checks, other announcements, and last words being said or already heard,
            // carry on as they were.
            _ => {}
        }
    }

    /// A key was pressed (any method).
    pub fn handle_key(&mut self, now: Instant, key: Digit) {
        if matches!(self.step, Step::Over | Step::Leaving { .. }) {
            return;
        }
        if matches!(self.step, Step::NotStarted) {
            // Keyed before the flow starts (SIP INFO sent once the caller had the 200, before
            // its ACK arrived): typed ahead, like any other.
            return self.type_ahead.push(key);
        }
        // Silences count in a row: a caller who pressed something gets the full allowance
        // at the next prompt again.
        self.reprompts_left = self.config.settings.reprompts;
        if let Some((_, true)) = self.playing {
            self.playing = None;
            self.actions.push_back(Action::BargeIn);
        }
        match &mut self.step {
            Step::Entry(_) => self.entry_key(now, key),
            Step::Menu { .. } => self.menu_key(now, key),
            // Nothing is being asked (a check is in flight, or an announcement plays):
            // keep the key for the next entry.
            _ => self.type_ahead.push(key),
        }
    }

    /// A playback ended (finished, or stopped by barge-in or a newer playback).
    pub fn handle_playback_done(&mut self, now: Instant, token: u64) {
        if self.playing.is_some_and(|(t, _)| t != token) {
            return;
        }
        self.playing = None;
        // Heard (to its end, or until a key stopped it), unless the call was on hold.
        if !self.held {
            self.unheard.clear();
        }
        let first_digit = now + self.config.settings.first_digit_timeout;
        match &mut self.step {
            // The question played to its end with no key pressed. Keys typed ahead that
            // began the entry are dropped: the caller heard the question and will answer it
            // whole (one who went on typing barged in, and kept them).
            Step::Entry(entry) if entry.deadline.is_none() => {
                entry.keyed = Passcode::empty();
                entry.deadline = Some(first_digit);
            }
            Step::Menu { deadline } if deadline.is_none() => *deadline = Some(first_digit),
            Step::Announcing(then) => match *then {
                // Played into a hold, the announcement is said again with the menu after it.
                Then::Menu => {
                    let unheard = std::mem::take(&mut self.unheard);
                    self.menu(now, &unheard);
                }
                Then::Leave(outcome, ids) => {
                    let unheard = std::mem::take(&mut self.unheard);
                    self.leave(outcome, &[&unheard[..], ids].concat());
                }
            },
            // Played into a hold: said again if the caller comes back soon.
            Step::Leaving { until }
                if self.held && !self.unheard.is_empty() && self.may_wait_for_hold =>
            {
                *until = Some(now + HELD_GOODBYE_WAIT);
            }
            // Heard (or not to be waited for): the phone plays out what it holds of them,
            // then the BYE. Nothing is sent meanwhile, so nothing is said again either.
            Step::Leaving { until } => {
                *until = Some(now + LINGER);
                self.unheard.clear();
                self.actions.push_back(Action::Quiet);
            }
            _ => {}
        }
    }

    /// The passcode lengths the policy allows (from the login, before
    /// [`Flow::handle_verified`]): a caller about to choose a new passcode hears them first,
    /// "a passcode must have four to ten digits".
    pub fn set_lengths(&mut self, lengths: RangeInclusive<usize>) {
        self.lengths = Some(lengths);
    }

    /// The answer to [`Action::Verify`].
    pub fn handle_verified(&mut self, now: Instant, result: Result<VerifyOutcome, ()>) {
        if !matches!(self.step, Step::Verifying) {
            return;
        }
        match result {
            Ok(VerifyOutcome::Ok { must_change }) => {
                let Some(mailbox) = self
                    .mailbox
                    .as_deref()
                    .and_then(|m| Extension::parse(m).ok())
                else {
                    return self.leave(Outcome::Error, &["unavailable", "goodbye"]);
                };
                self.logged_in = Some(mailbox.clone());
                self.must_change = must_change;
                self.outcome = Outcome::LoggedIn;
                self.actions.push_back(Action::LoggedIn(mailbox));
                if must_change {
                    let before = [&["temporary"][..], &self.lengths_rule()].concat();
                    self.ask(Field::NewPasscode, &before, now);
                } else if self.config.application == Application::ChangePasscode {
                    self.ask(Field::NewPasscode, &self.lengths_rule(), now);
                } else {
                    self.menu(now, &[]);
                }
            }
            Ok(VerifyOutcome::Wrong { .. } | VerifyOutcome::Unknown) => {
                self.logins_left = self.logins_left.saturating_sub(1);
                // The same words and the same delay whether or not the mailbox exists. A
                // caller identified by caller ID keyed no mailbox number: only the passcode
                // can be wrong (and the mailbox is known to exist).
                let incorrect = if self.mailbox_known {
                    "incorrect_passcode"
                } else {
                    "incorrect"
                };
                if self.logins_left == 0 {
                    let ids = [incorrect, "too_many_attempts", "goodbye"];
                    return self.leave(Outcome::LoginFailed, &ids);
                }
                // Keys typed ahead are kept: a caller typing blind ("1001#0000#1001#4826#")
                // meant them for the next try.
                if self.mailbox_known {
                    self.ask(Field::Passcode, &[incorrect], now);
                } else {
                    self.mailbox = None;
                    self.ask(Field::Mailbox, &[incorrect], now);
                }
            }
            // A lock that ends says "try again later"; one only an admin lifts does not.
            Ok(VerifyOutcome::Locked {
                until: Lock::Permanent,
            }) => self.leave(Outcome::Locked, &["locked_permanently", "goodbye"]),
            Ok(VerifyOutcome::Locked { .. }) => self.leave(Outcome::Locked, &["locked", "goodbye"]),
            Ok(VerifyOutcome::Expired) => self.leave(Outcome::Expired, &["expired", "goodbye"]),
            Err(()) => self.leave(Outcome::Error, &["unavailable", "goodbye"]),
        }
    }

    /// The answer to [`Action::ChangePasscode`].
    pub fn handle_changed(&mut self, now: Instant, result: Result<ChangeOutcome, ()>) {
        if !std::mem::take(&mut self.change_in_flight) {
            return;
        }
        if !matches!(self.step, Step::Changing) {
            // The call ended (hung up, refused) while the change was stored: it still counts
            // as changed.
            if matches!(result, Ok(ChangeOutcome::Changed)) {
                self.outcome = Outcome::Changed;
                self.must_change = false;
            }
            return;
        }
        if let Some((outcome, ids)) = self.ending.take() {
            // The call reached its time limit, or was replaced, while the change was stored:
            // the caller hears whether it worked, then why the call ends.
            let changed = matches!(result, Ok(ChangeOutcome::Changed));
            if changed {
                self.outcome = Outcome::Changed;
                self.must_change = false;
            }
            let said: &[&str] = if changed {
                &["passcode_changed"]
            } else {
                self.not_changed()
            };
            return self.leave(outcome, &[said, ids].concat());
        }
        match result {
            Ok(ChangeOutcome::Changed) => {
                self.outcome = Outcome::Changed;
                self.must_change = false;
                let then = if self.config.application == Application::ChangePasscode {
                    Then::Leave(Outcome::Changed, &["goodbye"])
                } else {
                    Then::Menu
                };
                // Not interruptible: the caller must hear that it worked.
                self.announce(&["passcode_changed"], then);
            }
            Ok(ChangeOutcome::Rejected(violations, lengths)) => {
                let first = violations.as_slice().first().copied();
                let mut reason = vec![first.map_or("try_again", reason_prompt)];
                if matches!(first, Some(Violation::TooShort | Violation::TooLong)) {
                    reason.extend(self.length_rule(lengths).unwrap_or_default());
                }
                self.change_failed(now, &reason);
            }
            // An admin set another passcode (or removed the mailbox) since this login: the
            // session is void. The caller calls again with whatever is in force now.
            Ok(ChangeOutcome::Superseded) => {
                self.leave(Outcome::Superseded, &["superseded", "goodbye"]);
            }
            Err(()) => self.leave(Outcome::Error, &["unavailable", "goodbye"]),
        }
    }

    /// Another call logged in to this mailbox and replaces this one. A change being stored
    /// is answered first, and "your passcode has been changed" is said to its end.
    pub fn handle_replaced(&mut self) {
        self.must_end((Outcome::Replaced, REPLACED));
    }

    /// The call must end (its time limit, or another phone's login; the mailbox may be
    /// another call's now): it says `end` and hangs up, after a change being stored or
    /// announced ([`Flow::end_after_change`]). A call whose last words were said (lingering,
    /// or waiting for a caller on hold) hangs up at once; one saying them finishes them and
    /// waits for nobody.
    fn must_end(&mut self, end: (Outcome, &'static [&'static str])) {
        self.may_wait_for_hold = false;
        match self.step {
            Step::Leaving { until: Some(_) } => self.hang_up(),
            Step::Over | Step::Leaving { .. } => {}
            _ => {
                if !self.end_after_change(end) {
                    // A caller cut off while keying a new passcode hears that it was not
                    // changed, as silence there would tell them.
                    let changing = matches!(&self.step, Step::Entry(e) if e.field.is_new());
                    let said = if changing { self.not_changed() } else { &[] };
                    self.leave(end.0, &[said, end.1].concat());
                }
            }
        }
    }

    /// The call must end (its time limit, or another phone's login) while a change is
    /// being stored or its success announced: the end is said after them. The first such
    /// end decides. False when the flow is doing neither.
    fn end_after_change(&mut self, end: (Outcome, &'static [&'static str])) -> bool {
        match &mut self.step {
            Step::Changing => {
                self.ending.get_or_insert(end);
                true
            }
            Step::Announcing(then) => {
                if matches!(then, Then::Menu | Then::Leave(Outcome::Changed, _)) {
                    *then = Then::Leave(end.0, end.1);
                }
                true
            }
            _ => false,
        }
    }

    /// This login was refused: the mailbox is in use by another call.
    pub fn handle_in_use(&mut self) {
        if matches!(self.step, Step::Over) || self.logged_in.is_none() {
            return;
        }
        self.logged_in = None;
        self.must_change = false;
        // Refused as the login is reported: everything queued behind it (the menu, the
        // new-passcode prompt, and whatever keys typed ahead did there, a change included)
        // must not happen.
        self.actions.clear();
        self.leave(Outcome::InUse, &["in_use", "goodbye"]);
    }

    /// The call's media could not start (or broke): nothing can be said or heard, so the
    /// call is ended at once, without a goodbye, as an error (unless the passcode was
    /// changed).
    pub fn handle_media_failed(&mut self) {
        if matches!(self.step, Step::Over) {
            return;
        }
        if self.outcome != Outcome::Changed {
            self.outcome = Outcome::Error;
        }
        self.stop();
        self.hang_up();
    }

    /// The server ended the call at its own maximum length (`sip.max_call_duration`, when
    /// shorter than the route's): it counts as timed out, as at the route's limit, unless
    /// the passcode was changed. [`Flow::handle_hangup`] follows.
    pub fn handle_time_limit(&mut self) {
        if self.outcome != Outcome::Changed {
            self.outcome = Outcome::TimedOut;
        }
    }

    /// The server is stopping and ended the call: a caller not yet logged in did not give
    /// up, the server did. [`Flow::handle_hangup`] follows.
    pub fn handle_shutdown(&mut self) {
        if self.outcome == Outcome::InProgress {
            self.outcome = Outcome::Shutdown;
        }
    }

    /// The caller hung up: the flow stops at once.
    pub fn handle_hangup(&mut self) {
        if self.outcome == Outcome::InProgress {
            self.outcome = Outcome::Abandoned;
        }
        if self.outcome == Outcome::LoggedIn && self.must_change {
            self.outcome = Outcome::ChangeNotCompleted;
        }
        self.stop();
    }

    /// Ends the flow where it stands: nothing more is asked, said or stored.
    fn stop(&mut self) {
        self.step = Step::Over;
        self.actions.clear();
        self.new_passcode = None;
    }

    /// Time passed: silence, a pause mid-entry, or the end of the call's time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.hang_up_at.is_some_and(|t| now >= t) {
            // Spent either way: a call already saying goodbye finishes it, a change being
            // stored is answered first, and an announcement ("your passcode has been
            // changed", "… opened from another phone") is said to its end.
            self.hang_up_at = None;
            return self.must_end((Outcome::TimedOut, TIME_UP));
        }
        match &self.step {
            Step::Leaving { until } if until.is_some_and(|t| now >= t) => {
                self.hang_up();
            }
            _ if self.held => {}
            Step::Entry(entry) if entry.deadline.is_some_and(|d| now >= d) => {
                let field = entry.field;
                let partial = !entry.keyed.expose().is_empty();
                self.silence(now, field, partial);
            }
            Step::Menu { deadline } if deadline.is_some_and(|d| now >= d) => {
                if self.reprompts_left == 0 {
                    return self.leave(Outcome::LoggedIn, &["goodbye"]);
                }
                self.reprompts_left -= 1;
                self.menu(now, &["no_input"]);
            }
            _ => {}
        }
    }

    // ----- steps -----

    /// Starts collecting `field`, after `before` (prompts said first). Keys typed ahead are
    /// used at once.
    fn ask(&mut self, field: Field, before: &[&'static str], now: Instant) {
        self.unheard.clear();
        if field == Field::NewPasscode {
            self.new_passcode = None;
        }
        self.step = Step::Entry(Entry {
            field,
            keyed: Passcode::empty(),
            deadline: None,
        });
        self.asked += 1;
        let this = self.asked;
        // The caller is already typing: take the keys. Once a key completes this entry, the
        // next step takes the rest (in order). A `#` with nothing keyed before it was
        // pressed before this question could be heard (a double `#`): it is dropped, not
        // taken for an empty answer.
        while self.asked == this && matches!(self.step, Step::Entry(_)) {
            let Some(key) = self.type_ahead.pop() else {
                break;
            };
            let empty = matches!(&self.step, Step::Entry(e) if e.keyed.expose().is_empty());
            if !(key == Digit::POUND && empty) {
                self.entry_key(now, key);
            }
        }
        // Not completed by keys typed ahead (or none were): the question is asked, and what
        // comes before it ("your passcode is temporary"). The caller's next key barges in
        // and goes on from the keys typed ahead; if none comes before the question ends,
        // they are dropped (see `handle_playback_done`).
        if self.asked == this
            && let Step::Entry(entry) = &mut self.step
        {
            entry.deadline = None;
            let mut ids = before.to_vec();
            ids.push(field.prompt());
            if field == Field::NewPasscode && !self.must_change {
                // A change the caller chose, which `*` gives up.
                ids.push("keep_passcode");
            }
            self.play(&ids, true);
            self.unheard = before.to_vec();
        }
    }

    fn entry_key(&mut self, now: Instant, key: Digit) {
        let Step::Entry(entry) = &mut self.step else {
            return;
        };
        let field = entry.field;
        match key {
            // Before any key of theirs since the question (keys typed ahead aside), in a
            // change: at the confirmation, the new passcode is asked for again, with that
            // question (a typo in it is mended without a mismatch's try); at the new
            // passcode of a change the caller chose (not one a temporary passcode forces),
            // they changed their mind and, as its question says, the change is given up.
            Digit::STAR
                if (entry.keyed.expose().is_empty() || entry.deadline.is_none())
                    && (field == Field::ConfirmPasscode
                        || (field == Field::NewPasscode && !self.must_change)) =>
            {
                if field == Field::NewPasscode {
                    self.cancel_change(now);
                } else {
                    self.ask(Field::NewPasscode, &[], now);
                }
            }
            Digit::STAR => {
                // Clear and ask again (does not use up a reprompt).
                self.ask(field, &[], now);
            }
            Digit::POUND => {
                let keyed = std::mem::replace(&mut entry.keyed, Passcode::empty());
                self.submit(now, field, keyed);
            }
            key => {
                if entry.keyed.expose().len() < MAX_ENTRY {
                    // Made once at full size: `push` reallocating would free a copy of the
                    // keys so far unwiped (the old entry is wiped when replaced).
                    let mut text = String::with_capacity(MAX_ENTRY);
                    text.push_str(entry.keyed.expose());
                    text.push(key.reveal());
                    entry.keyed = Passcode::new(text).unwrap_or_else(|_| Passcode::empty());
                }
                entry.deadline = Some(now + self.config.settings.inter_digit_timeout);
            }
        }
    }

    fn submit(&mut self, now: Instant, field: Field, keyed: Passcode) {
        // `#` alone at the mailbox or passcode is a slip, not a login attempt: nothing is
        // checked or counted against the mailbox.
        if keyed.expose().is_empty() && matches!(field, Field::Mailbox | Field::Passcode) {
            return self.ask(field, &["try_again"], now);
        }
        match field {
            Field::Mailbox => {
                self.mailbox = Some(keyed.expose().to_owned());
                self.ask(Field::Passcode, &[], now);
            }
            Field::Passcode => {
                let mailbox = self.mailbox.clone().unwrap_or_default();
                self.step = Step::Verifying;
                self.actions.push_back(Action::Verify {
                    mailbox,
                    passcode: keyed,
                });
            }
            // `#` alone: a slip, as at login, not a chosen PIN. It is too short, said at
            // once, and takes none of the change's tries (nothing is checked or audited).
            Field::NewPasscode if keyed.expose().is_empty() => {
                let mut reason = vec![reason_prompt(Violation::TooShort)];
                reason.extend(self.lengths_rule());
                self.ask(Field::NewPasscode, &reason, now);
            }
            Field::NewPasscode => {
                self.new_passcode = Some(keyed);
                self.ask(Field::ConfirmPasscode, &[], now);
            }
            Field::ConfirmPasscode => match self.new_passcode.take() {
                Some(first) if first == keyed => self.change_to(first),
                Some(_) if let Some(mailbox) = self.logged_in.clone() => {
                    self.actions.push_back(Action::Mismatched(mailbox));
                    self.change_failed(now, &["mismatch"]);
                }
                _ => self.leave(Outcome::Error, &["unavailable", "goodbye"]),
            },
        }
    }

    /// Asks the store to make `passcode` the logged-in mailbox's own.
    fn change_to(&mut self, passcode: Passcode) {
        let Some(mailbox) = self.logged_in.clone() else {
            return self.leave(Outcome::Error, &["unavailable", "goodbye"]);
        };
        self.step = Step::Changing;
        self.change_in_flight = true;
        self.actions
            .push_back(Action::ChangePasscode { mailbox, passcode });
    }

    /// A new passcode was not accepted (mismatch or policy): say why, try again while tries
    /// are left; after that, "your passcode has not been changed" and, for a change chosen
    /// from the menu, the menu again, or else goodbye, the old passcode in place.
    fn change_failed(&mut self, now: Instant, reason: &[&'static str]) {
        // Keys typed ahead are kept for the next try, as after a failed login.
        self.changes_left = self.changes_left.saturating_sub(1);
        if self.changes_left > 0 {
            return self.ask(Field::NewPasscode, reason, now);
        }
        let said = [reason, self.not_changed()].concat();
        if !self.must_change && self.config.application != Application::ChangePasscode {
            // Keys typed ahead were meant for another try, not for the menu.
            self.type_ahead.clear();
            return self.menu(now, &said);
        }
        let outcome = if self.must_change {
            Outcome::ChangeNotCompleted
        } else {
            Outcome::LoggedIn
        };
        self.leave(outcome, &[&said[..], &["goodbye"]].concat());
    }

    /// `*` before any key of a new passcode the caller chose to set (at "to keep your
    /// current passcode, press star"): the change is given up ("your passcode has not been
    /// changed"), and the menu is offered again (on the `change-passcode` route, which has
    /// none: goodbye). It is not a failed try.
    fn cancel_change(&mut self, now: Instant) {
        self.new_passcode = None;
        let said = self.not_changed();
        if self.config.application == Application::ChangePasscode {
            return self.leave(Outcome::LoggedIn, &[said, &["goodbye"]].concat());
        }
        self.menu(now, said);
    }

    /// "A passcode must have four to ten digits" ("… six digits" when one length is
    /// allowed, "… one digit" when that is 1), or `None` when the prompt set cannot say it
    /// (a set from before these prompts).
    fn length_rule(&self, lengths: RangeInclusive<usize>) -> Option<Vec<&'static str>> {
        let (min, max) = lengths.into_inner();
        let mut ids = vec!["length_rule"];
        ids.extend(number_ids(min)?);
        if max != min {
            ids.push("length_to");
            ids.extend(number_ids(max)?);
        }
        let digits = if max == 1 {
            "length_digit"
        } else {
            "length_digits"
        };
        ids.push(digits);
        ids.iter()
            .all(|id| self.prompts.get(id).is_some())
            .then_some(ids)
    }

    /// "Your passcode has not been changed", after a change that failed; nothing when an
    /// earlier change in this call succeeded (that passcode stays in force).
    fn not_changed(&self) -> &'static [&'static str] {
        if self.outcome == Outcome::Changed {
            &[]
        } else {
            &["not_changed"]
        }
    }

    /// The lengths the policy allows, as `length_rule` says them, when the login
    /// told them and the prompt set can say them; else nothing.
    fn lengths_rule(&self) -> Vec<&'static str> {
        self.lengths
            .clone()
            .and_then(|lengths| self.length_rule(lengths))
            .unwrap_or_default()
    }

    /// Silence on an entry (`partial`: after some keys): ask again while reprompts last
    /// (the confirmation of a new passcode asks for the confirmation, keeping the first
    /// entry, as `*` after some keys does), then goodbye, after "your passcode has not been
    /// changed" in a change.
    fn silence(&mut self, now: Instant, field: Field, partial: bool) {
        if self.reprompts_left == 0 {
            let outcome = match self.outcome {
                Outcome::LoggedIn if self.must_change => Outcome::ChangeNotCompleted,
                Outcome::LoggedIn => Outcome::LoggedIn,
                _ => Outcome::NoInput,
            };
            let said = if field.is_new() {
                self.not_changed()
            } else {
                &[]
            };
            return self.leave(outcome, &[said, &["goodbye"]].concat());
        }
        self.reprompts_left -= 1;
        let why = if partial { "too_slow" } else { "no_input" };
        self.ask(field, &[why], now);
    }

    fn menu(&mut self, now: Instant, before: &[&'static str]) {
        self.step = Step::Menu { deadline: None };
        self.unheard.clear();
        // A choice typed ahead (during "your passcode has been changed") is taken at once.
        // A `#` typed ahead is none: the answer that led here was ended twice (a double
        // `#`), and it is dropped, as before an entry.
        let choice = std::iter::from_fn(|| self.type_ahead.pop()).find(|&key| key != Digit::POUND);
        if let Some(key) = choice {
            return self.menu_key(now, key);
        }
        let mut ids = before.to_vec();
        ids.push("menu");
        self.play(&ids, true);
        self.unheard = before.to_vec();
    }

    fn menu_key(&mut self, now: Instant, key: Digit) {
        match key.reveal() {
            '1' => {
                // Each change from the menu has its own tries.
                self.changes_left = self.config.settings.attempts.max(1);
                self.ask(Field::NewPasscode, &self.lengths_rule(), now);
            }
            '*' => self.leave(Outcome::LoggedIn, &["goodbye"]),
            _ => {
                self.menu(now, &["invalid_option"]);
            }
        }
    }

    /// Plays something that may not be interrupted, then `then`.
    fn announce(&mut self, ids: &[&'static str], then: Then) {
        self.step = Step::Announcing(then);
        self.play(ids, false);
        self.unheard = ids.to_vec();
    }

    /// Says `ids` (ending with goodbye) and hangs up when done (see [`Step::Leaving`] for a
    /// caller who holds the call meanwhile).
    fn leave(&mut self, outcome: Outcome, ids: &[&'static str]) {
        // A call that changed its passcode stays "changed" however it ends.
        if self.outcome != Outcome::Changed {
            self.outcome = outcome;
        }
        self.type_ahead.clear();
        self.new_passcode = None;
        if let Some(mailbox) = self.logged_in.clone() {
            self.actions.push_back(Action::LoggedOut(mailbox));
        }
        self.say_last(ids);
    }

    /// Says the call's last words, `ids`, and hangs up when they are heard.
    fn say_last(&mut self, ids: &[&'static str]) {
        self.step = Step::Leaving { until: None };
        self.play(ids, false);
        self.unheard = ids.to_vec();
    }

    fn hang_up(&mut self) {
        self.step = Step::Over;
        self.actions.push_back(Action::Hangup);
    }

    fn play(&mut self, ids: &[&str], barge_in: bool) {
        self.next_token += 1;
        let token = self.next_token;
        let items = ids
            .iter()
            .filter_map(|id| self.prompts.get(id).cloned())
            .map(Item::Prompt)
            .collect();
        self.playing = Some((token, barge_in));
        self.actions.push_back(Action::Play(Playback {
            items,
            barge_in,
            token,
        }));
    }
}

/// The prompt that explains a policy violation.
pub fn reason_prompt(v: Violation) -> &'static str {
    match v {
        Violation::NotDigits => "reason_not_digits",
        Violation::TooShort => "reason_too_short",
        Violation::TooLong => "reason_too_long",
        Violation::EqualsExtension => "reason_equals_extension",
        Violation::ReversedExtension => "reason_reversed_extension",
        Violation::RepeatedDigits => "reason_repeated_digits",
        Violation::Sequential => "reason_sequential",
        Violation::Common => "reason_common",
        Violation::SameAsCurrent => "reason_same_as_current",
        Violation::RecentlyUsed => "reason_recently_used",
    }
}
