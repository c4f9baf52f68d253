//! The calls in progress, as the admin API lists them (`GET /api/v1/calls`).
//!
//! Each call task registers its call when it answers, updates the entry when the flow moves
//! on or the caller is identified, and removes it when the call ends. Nothing here holds
//! what a caller keyed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use serde::Serialize;

use crate::sip::endpoint::CallHandle;
use crate::store::Extension;
use crate::time::Timestamp;

/// One call in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActiveCall {
    /// The SIP Call-ID.
    pub call_id: String,
    /// Who is calling: the From user, when there is one.
    pub caller: Option<String>,
    /// Where the call's signalling comes from.
    pub source: SocketAddr,
    /// The number dialled (the Request-URI user).
    pub dialled: String,
    /// The mailbox, once the caller has logged in to it.
    pub mailbox: Option<Extension>,
    /// Where the call flow is (see [`crate::ivr::flow::Flow::state`]).
    pub state: &'static str,
    /// When the call was answered.
    pub started_at: Timestamp,
}

/// The registry of calls in progress, shared by the call tasks and the admin API.
#[derive(Debug, Default)]
pub struct ActiveCalls {
    calls: Mutex<HashMap<CallHandle, ActiveCall>>,
}

impl ActiveCalls {
    pub(crate) fn insert(&self, call: CallHandle, entry: ActiveCall) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.insert(call, entry);
        }
    }

    pub(crate) fn update(
        &self,
        call: CallHandle,
        state: &'static str,
        mailbox: Option<&Extension>,
    ) {
        if let Ok(mut calls) = self.calls.lock()
            && let Some(entry) = calls.get_mut(&call)
        {
            entry.state = state;
            if entry.mailbox.as_ref() != mailbox {
                entry.mailbox = mailbox.cloned();
            }
        }
    }

    pub(crate) fn remove(&self, call: CallHandle) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.remove(&call);
        }
    }

    /// The calls in progress, oldest first.
    pub fn list(&self) -> Vec<ActiveCall> {
        let mut list: Vec<ActiveCall> = match self.calls.lock() {
            Ok(calls) => calls.values().cloned().collect(),
            Err(_) => Vec::new(),
        };
        list.sort_by(|a, b| (a.started_at, &a.call_id).cmp(&(b.started_at, &b.call_id)));
        list
    }

    /// How many calls are in progress.
    pub fn len(&self) -> usize {
        self.calls.lock().map_or(0, |c| c.len())
    }

    /// Whether no call is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
