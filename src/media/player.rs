//! Prompt playout: a queue of prompts and silences cut into frames, stopped by a key press
//! when the playback allows barge-in; and the type-ahead buffer that keeps keys pressed
//! before they were asked for.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::digit::Digit;
use super::g711::{self, Law};
use super::prompts::Prompt;

/// Something to play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A prompt from the prompt set.
    Prompt(Arc<Prompt>),
    /// Silence of this length.
    Silence(Duration),
}

/// A sequence of items played as one, with the token its end is reported by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playback {
    /// What to play, in order.
    pub items: Vec<Item>,
    /// Whether a key press stops it (most prompts; not "your passcode has been changed").
    pub barge_in: bool,
    /// Reported when the playback ends, whether finished or stopped.
    pub token: u64,
}

/// What one frame held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Frame {
    /// The frame starts a talkspurt: the first audio of a playback (RTP marker bit).
    pub talkspurt: bool,
    /// A playback finished within this frame.
    pub finished: Option<u64>,
}

#[derive(Debug)]
struct Active {
    items: VecDeque<Item>,
    /// Octets of the front item already played.
    offset: usize,
    barge_in: bool,
    token: u64,
    started: bool,
}

/// Plays one playback at a time; between playbacks it produces silence, so media keeps
/// flowing for as long as the call is up (phones and NATs expect it).
#[derive(Debug)]
pub struct Player {
    law: Law,
    active: Option<Active>,
}

impl Player {
    /// An idle player encoding in `law`.
    pub fn new(law: Law) -> Self {
        Self { law, active: None }
    }

    /// Switches codec (a re-INVITE chose the other law); playback continues.
    pub fn set_law(&mut self, law: Law) {
        self.law = law;
    }

    /// Whether a playback is in progress.
    pub fn is_playing(&self) -> bool {
        self.active.is_some()
    }

    /// Starts `playback`, replacing any in progress. Returns the token of a replaced one.
    pub fn play(&mut self, playback: Playback) -> Option<u64> {
        let replaced = self.stop();
        self.active = Some(Active {
            items: playback.items.into(),
            offset: 0,
            barge_in: playback.barge_in,
            token: playback.token,
            started: false,
        });
        replaced
    }

    /// Stops the playback in progress; returns its token.
    pub fn stop(&mut self) -> Option<u64> {
        self.active.take().map(|a| a.token)
    }

    /// A key was pressed: stops the playback if it allows barge-in. Returns its token.
    pub fn barge_in(&mut self) -> Option<u64> {
        if self.active.as_ref().is_some_and(|a| a.barge_in) {
            self.stop()
        } else {
            None
        }
    }

    /// Fills `out` with the next `len` octets (one packet's payload) and says what happened.
    pub fn next_frame(&mut self, len: usize, out: &mut Vec<u8>) -> Frame {
        out.clear();
        let silence = self.law.silence();
        let mut frame = Frame::default();
        if let Some(active) = &mut self.active {
            if !active.started {
                active.started = true;
                frame.talkspurt = true;
            }
            while out.len() < len {
                let Some(item) = active.items.front() else {
                    break;
                };
                let want = len - out.len();
                let total = match item {
                    Item::Prompt(p) => p.encoded(self.law).len(),
                    Item::Silence(d) => g711::samples_in(*d),
                };
                let start = active.offset.min(total);
                let n = want.min(total - start);
                match item {
                    Item::Prompt(p) => {
                        out.extend_from_slice(&p.encoded(self.law)[start..start + n])
                    }
                    Item::Silence(_) => out.resize(out.len() + n, silence),
                }
                active.offset = start + n;
                // An item used up goes now, so a playback ending on a frame boundary is
                // reported in the frame that carried its last octet.
                if active.offset >= total {
                    active.items.pop_front();
                    active.offset = 0;
                }
            }
            if active.items.is_empty() {
                frame.finished = Some(active.token);
                self.active = None;
            }
        }
        out.resize(len, silence);
        frame
    }
}

/// Keys pressed before the call flow asked for them, kept for the next entry.
#[derive(Debug, Clone, Default)]
pub struct TypeAhead {
    keys: VecDeque<Digit>,
}

/// Keys kept at most: two entries of the longest passcode a policy allows (32 keys, one
/// more to be refused, and `#`) and a menu key, and some to spare.
pub const TYPE_AHEAD: usize = 72;

impl TypeAhead {
    /// Keeps a key, unless [`TYPE_AHEAD`] are kept already: then it is dropped, so that those
    /// kept stay the first keys in order (dropping the oldest would cut an entry short).
    pub fn push(&mut self, digit: Digit) {
        if self.keys.len() < TYPE_AHEAD {
            self.keys.push_back(digit);
        }
    }

    /// The oldest key kept.
    pub fn pop(&mut self) -> Option<Digit> {
        self.keys.pop_front()
    }

    /// How many keys are kept.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Forgets them all.
    pub fn clear(&mut self) {
        self.keys.clear();
    }
}
