//! One session per mailbox: which call holds each logged-in mailbox, and what a second
//! login does ([`SessionRule`]). Pure bookkeeping; the shell delivers the decisions.

use std::collections::HashMap;
use std::hash::Hash;

use super::dialplan::SessionRule;
use crate::store::Extension;

/// What a login should lead to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<C> {
    /// No other call holds the mailbox (or the rule allows both): carry on.
    Proceed,
    /// The older call `C` must be told and ended; the new call holds the mailbox now.
    ReplaceOlder(C),
    /// The mailbox is held by another call: refuse this login.
    RejectNewer,
}

/// Which call holds each mailbox.
#[derive(Debug)]
pub struct Sessions<C> {
    holders: HashMap<Extension, C>,
    held: HashMap<C, Extension>,
}

impl<C> Default for Sessions<C> {
    fn default() -> Self {
        Self {
            holders: HashMap::new(),
            held: HashMap::new(),
        }
    }
}

impl<C: Copy + Eq + Hash> Sessions<C> {
    /// `call` logged in to `mailbox` under `rule`.
    pub fn login(&mut self, mailbox: &Extension, call: C, rule: SessionRule) -> Decision<C> {
        let older = self.holders.get(mailbox).copied().filter(|c| *c != call);
        match (older, rule) {
            (Some(_), SessionRule::Reject) => Decision::RejectNewer,
            (Some(old), SessionRule::Replace) => {
                self.held.remove(&old);
                self.take(mailbox, call);
                Decision::ReplaceOlder(old)
            }
            // Allow: the newest call is recorded as the holder; both stay.
            (Some(_), SessionRule::Allow) | (None, _) => {
                self.take(mailbox, call);
                Decision::Proceed
            }
        }
    }

    fn take(&mut self, mailbox: &Extension, call: C) {
        if let Some(previous) = self.held.insert(call, mailbox.clone()) {
            if self.holders.get(&previous) == Some(&call) {
                self.holders.remove(&previous);
            }
        }
        self.holders.insert(mailbox.clone(), call);
    }

    /// `call` ended.
    pub fn logout(&mut self, call: C) {
        if let Some(mailbox) = self.held.remove(&call) {
            if self.holders.get(&mailbox) == Some(&call) {
                self.holders.remove(&mailbox);
            }
        }
    }

    /// The call holding `mailbox`.
    pub fn holder(&self, mailbox: &Extension) -> Option<C> {
        self.holders.get(mailbox).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(s: &str) -> Extension {
        Extension::parse(s).unwrap()
    }

    #[test]
    fn replace_reject_allow() {
        let mut s: Sessions<u32> = Sessions::default();
        let m = ext("1001");
        assert_eq!(s.login(&m, 1, SessionRule::Replace), Decision::Proceed);
        assert_eq!(
            s.login(&m, 1, SessionRule::Replace),
            Decision::Proceed,
            "the same call again"
        );
        assert_eq!(
            s.login(&m, 2, SessionRule::Replace),
            Decision::ReplaceOlder(1)
        );
        assert_eq!(s.holder(&m), Some(2));
        s.logout(1);
        assert_eq!(
            s.holder(&m),
            Some(2),
            "the replaced call's end does not free the mailbox"
        );
        assert_eq!(s.login(&m, 3, SessionRule::Reject), Decision::RejectNewer);
        assert_eq!(s.holder(&m), Some(2));
        assert_eq!(s.login(&m, 4, SessionRule::Allow), Decision::Proceed);
        s.logout(4);
        assert_eq!(s.holder(&m), None);
        assert_eq!(s.login(&m, 5, SessionRule::Reject), Decision::Proceed);
        // A call that moves to another mailbox frees the first.
        assert_eq!(
            s.login(&ext("2002"), 5, SessionRule::Replace),
            Decision::Proceed
        );
        assert_eq!(s.holder(&m), None);
    }
}
