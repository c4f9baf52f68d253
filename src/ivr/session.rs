//! One session per mailbox: which call holds each logged-in mailbox, and what a second
//! login does ([`SessionRule`]). Pure bookkeeping; the shell delivers the decisions.

use std::collections::HashMap;
use std::hash::Hash;

use super::dialplan::SessionRule;
use crate::store::Extension;

/// What a login should lead to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<C> {
    /// No other call is in the mailbox (or the rule allows more): carry on.
    Proceed,
    /// The older calls (oldest first) must be told and ended; the new call holds the
    /// mailbox now.
    ReplaceOlder(Vec<C>),
    /// The mailbox is in another call: refuse this login.
    RejectNewer,
}

/// Which calls are logged in to each mailbox.
///
/// Every call is kept, not only the newest: under `allow` (or routes with different rules
/// reaching one mailbox) several calls may be in a mailbox, and the mailbox stays in a call
/// until the last of them ends.
#[derive(Debug)]
pub struct Sessions<C> {
    /// The calls in each mailbox, oldest first; never an empty list.
    holders: HashMap<Extension, Vec<C>>,
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
        let others: Vec<C> = self
            .holders
            .get(mailbox)
            .into_iter()
            .flatten()
            .copied()
            .filter(|c| *c != call)
            .collect();
        if others.is_empty() {
            self.take(mailbox, call);
            return Decision::Proceed;
        }
        match rule {
            SessionRule::Reject => Decision::RejectNewer,
            SessionRule::Replace => {
                for old in &others {
                    self.logout(*old);
                }
                self.take(mailbox, call);
                Decision::ReplaceOlder(others)
            }
            SessionRule::Allow => {
                self.take(mailbox, call);
                Decision::Proceed
            }
        }
    }

    /// Records `call` in `mailbox` (and out of any mailbox it was in before).
    fn take(&mut self, mailbox: &Extension, call: C) {
        self.logout(call);
        self.held.insert(call, mailbox.clone());
        self.holders.entry(mailbox.clone()).or_default().push(call);
    }

    /// `call` ended.
    pub fn logout(&mut self, call: C) {
        let Some(mailbox) = self.held.remove(&call) else {
            return;
        };
        if let Some(calls) = self.holders.get_mut(&mailbox) {
            calls.retain(|c| *c != call);
            if calls.is_empty() {
                self.holders.remove(&mailbox);
            }
        }
    }

    /// The calls in `mailbox`, oldest first.
    pub fn holders(&self, mailbox: &Extension) -> &[C] {
        self.holders.get(mailbox).map_or(&[], Vec::as_slice)
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
            Decision::ReplaceOlder(vec![1])
        );
        assert_eq!(s.holders(&m), [2]);
        s.logout(1);
        assert_eq!(
            s.holders(&m),
            [2],
            "the replaced call's end does not free the mailbox"
        );
        assert_eq!(s.login(&m, 3, SessionRule::Reject), Decision::RejectNewer);
        assert_eq!(s.holders(&m), [2]);
        assert_eq!(s.login(&m, 4, SessionRule::Allow), Decision::Proceed);
        assert_eq!(s.holders(&m), [2, 4]);
        s.logout(4);
        s.logout(2);
        assert!(s.holders(&m).is_empty());
        assert_eq!(s.login(&m, 5, SessionRule::Reject), Decision::Proceed);
        // A call that moves to another mailbox frees the first.
        assert_eq!(
            s.login(&ext("2002"), 5, SessionRule::Replace),
            Decision::Proceed
        );
        assert!(s.holders(&m).is_empty());
        assert_eq!(s.holders(&ext("2002")), [5]);
    }

    /// Routes with different rules may reach one mailbox: it stays in a call until the last
    /// call in it ends, and a replacing login ends every older call.
    #[test]
    fn every_call_in_a_mailbox_counts_not_only_the_newest() {
        let mut s: Sessions<u32> = Sessions::default();
        let m = ext("1001");
        assert_eq!(s.login(&m, 1, SessionRule::Allow), Decision::Proceed);
        assert_eq!(s.login(&m, 2, SessionRule::Allow), Decision::Proceed);
        s.logout(2);
        assert_eq!(
            s.login(&m, 3, SessionRule::Reject),
            Decision::RejectNewer,
            "call 1 is still in the mailbox"
        );
        assert_eq!(s.login(&m, 4, SessionRule::Allow), Decision::Proceed);
        assert_eq!(
            s.login(&m, 5, SessionRule::Replace),
            Decision::ReplaceOlder(vec![1, 4])
        );
        assert_eq!(s.holders(&m), [5]);
        s.logout(1);
        s.logout(4);
        assert_eq!(s.holders(&m), [5]);
        s.logout(5);
        assert!(s.holders(&m).is_empty());
        assert!(
            s.held.is_empty() && s.holders.is_empty(),
            "nothing left behind"
        );
    }
}
