//! Transaction state machines (RFC 3261 §17, with RFC 6026's Accepted state).
//!
//! Each machine knows its own timers by their RFC names and answers `next_deadline()`; the
//! endpoint keeps them in one timer queue and calls `on_timeout(now)` when a deadline passes.
//! The machines hold the bytes they may have to retransmit; they never build messages.

use std::time::{Duration, Instant};

use super::endpoint::Flow;

/// RFC 3261's timer base values (§17.1.1.1, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate; 500 ms.
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses; 4 s.
    pub t2: Duration,
    /// Longest time a message stays in the network; 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64·T1: Timer B, F, H, J and L.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// A retransmission timer: Timer G and Timer E here, the 2xx's of §13.3.1.4 in the
/// endpoint. Due T1 after it starts, then after an interval that doubles up to T2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetransmitTimer {
    due: Instant,
    interval: Duration,
}

impl RetransmitTimer {
    /// Started at `now`: first due at `now + T1`.
    pub(crate) fn start(now: Instant, timers: &TimerConfig) -> Self {
        Self {
            due: now + timers.t1,
            interval: timers.t1,
        }
    }

    /// When it is next due.
    pub(crate) fn due(&self) -> Instant {
        self.due
    }

    /// Whether it is due at `now`, to send again; if so, it is due again after twice the
    /// last interval, at most T2.
    pub(crate) fn fire(&mut self, now: Instant, timers: &TimerConfig) -> bool {
        self.fire_then(now, (self.interval * 2).min(timers.t2))
    }

    /// [`RetransmitTimer::fire`], due again `interval` later instead (Timer E once a
    /// provisional response came: every T2).
    pub(crate) fn fire_then(&mut self, now: Instant, interval: Duration) -> bool {
        if now < self.due {
            return false;
        }
        self.interval = interval;
        self.due = now + interval;
        true
    }
}

/// What a transaction asks of the endpoint after a timer fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxAction {
    /// Nothing to do yet.
    None,
    /// Send these bytes again over the transaction's flow.
    Retransmit(Vec<u8>),
    /// The transaction is over; forget it.
    Terminated,
    /// The transaction timed out (Timer H without ACK, Timer F without response).
    TimedOut,
}

/// INVITE server transaction states (RFC 3261 Figure 7, RFC 6026 Figure 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InviteServerState {
    /// No final response yet.
    Proceeding,
    /// A 2xx was sent; retransmitted INVITEs get it again until its ACK, then are absorbed
    /// until Timer L (RFC 6026).
    Accepted,
    /// A 300-699 was sent; waiting for the ACK (Timer G retransmits, Timer H gives up).
    Completed,
    /// The ACK arrived; absorbing ACK retransmissions for Timer I.
    Confirmed,
}

/// An INVITE server transaction.
#[derive(Debug)]
pub(crate) struct InviteServerTx {
    pub(crate) state: InviteServerState,
    pub(crate) flow: Flow,
    /// The last response sent, for answering retransmitted INVITEs.
    pub(crate) last_response: Option<Vec<u8>>,
    timers: TimerConfig,
    timer_g: Option<RetransmitTimer>,
    timer_h: Option<Instant>,
    timer_i: Option<Instant>,
    timer_l: Option<Instant>,
}

impl InviteServerTx {
    pub(crate) fn new(flow: Flow, timers: TimerConfig) -> Self {
        Self {
            state: InviteServerState::Proceeding,
            flow,
            last_response: None,
            timers,
            timer_g: None,
            timer_h: None,
            timer_i: None,
            timer_l: None,
        }
    }

    /// Records a response being sent. Provisional responses keep the transaction in
    /// Proceeding; a 2xx moves it to Accepted; 300-699 to Completed.
    pub(crate) fn respond(&mut self, code: u16, bytes: Vec<u8>, now: Instant) {
        if self.state != InviteServerState::Proceeding {
            return;
        }
        self.last_response = Some(bytes);
        match code {
            100..=199 => {}
            200..=299 => {
                // RFC 6026 §7.1: the TU retransmits the 2xx; the transaction only absorbs
                // INVITE retransmissions until Timer L.
                self.state = InviteServerState::Accepted;
                self.timer_l = Some(now + self.timers.timeout());
            }
            _ => {
                self.state = InviteServerState::Completed;
                if !self.flow.is_reliable() {
                    self.timer_g = Some(RetransmitTimer::start(now, &self.timers));
                }
                self.timer_h = Some(now + self.timers.timeout());
            }
        }
    }

    /// The response to send again for a retransmitted INVITE, if any.
    pub(crate) fn on_retransmission(&self) -> Option<&[u8]> {
        match self.state {
            InviteServerState::Proceeding
            | InviteServerState::Completed
            | InviteServerState::Accepted => self.last_response.as_deref(),
            InviteServerState::Confirmed => None,
        }
    }

    /// An ACK. For a 300-699 response: stop retransmitting, absorb further ACKs for Timer I.
    /// For the 2xx (its ACK is a transaction of its own, matched by the dialog): the caller
    /// has the answer, so INVITE retransmissions are absorbed silently until Timer L.
    pub(crate) fn on_ack(&mut self, now: Instant) {
        if self.state == InviteServerState::Accepted {
            self.last_response = None;
        }
        if self.state == InviteServerState::Completed {
            self.state = InviteServerState::Confirmed;
            self.timer_g = None;
            self.timer_h = None;
            let t_i = if self.flow.is_reliable() {
                Duration::ZERO
            } else {
                self.timers.t4
            };
            self.timer_i = Some(now + t_i);
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [
            self.timer_g.as_ref().map(RetransmitTimer::due),
            self.timer_h,
            self.timer_i,
            self.timer_l,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(crate) fn on_timeout(&mut self, now: Instant) -> TxAction {
        if self.timer_h.is_some_and(|t| now >= t) {
            // Timer H: the ACK never came.
            return TxAction::TimedOut;
        }
        if self.timer_i.is_some_and(|t| now >= t) || self.timer_l.is_some_and(|t| now >= t) {
            return TxAction::Terminated;
        }
        // Timer G doubles up to T2 (§17.2.1).
        if let Some(g) = &mut self.timer_g
            && g.fire(now, &self.timers)
            && let Some(bytes) = &self.last_response
        {
            return TxAction::Retransmit(bytes.clone());
        }
        TxAction::None
    }
}

/// A non-INVITE server transaction (RFC 3261 Figure 8). vportal answers non-INVITE requests
/// at once, so it is born with its final response and lives for Timer J to absorb
/// retransmissions.
#[derive(Debug)]
pub(crate) struct NonInviteServerTx {
    pub(crate) flow: Flow,
    pub(crate) response: Vec<u8>,
    timer_j: Instant,
}

impl NonInviteServerTx {
    pub(crate) fn completed(
        flow: Flow,
        response: Vec<u8>,
        now: Instant,
        timers: TimerConfig,
    ) -> Self {
        let j = if flow.is_reliable() {
            Duration::ZERO
        } else {
            timers.timeout()
        };
        Self {
            flow,
            response,
            timer_j: now + j,
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        Some(self.timer_j)
    }

    pub(crate) fn on_timeout(&mut self, now: Instant) -> TxAction {
        if now >= self.timer_j {
            TxAction::Terminated
        } else {
            TxAction::None
        }
    }
}

/// Non-INVITE client transaction states (RFC 3261 Figure 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientState {
    /// Sent, no response yet.
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// A final response arrived; absorbing retransmissions for Timer K.
    Completed,
}

/// A non-INVITE client transaction: the BYE vportal sends.
#[derive(Debug)]
pub(crate) struct NonInviteClientTx {
    pub(crate) state: ClientState,
    pub(crate) flow: Flow,
    request: Vec<u8>,
    timers: TimerConfig,
    timer_e: Option<RetransmitTimer>,
    timer_f: Option<Instant>,
    timer_k: Option<Instant>,
}

impl NonInviteClientTx {
    /// Starts the transaction; the caller sends `request` once now.
    pub(crate) fn start(flow: Flow, request: Vec<u8>, now: Instant, timers: TimerConfig) -> Self {
        let timer_e = (!flow.is_reliable()).then(|| RetransmitTimer::start(now, &timers));
        Self {
            state: ClientState::Trying,
            flow,
            request,
            timers,
            timer_e,
            timer_f: Some(now + timers.timeout()),
            timer_k: None,
        }
    }

    /// A response arrived. Returns whether it is the first final one (the TU hears of it).
    pub(crate) fn on_response(&mut self, code: u16, now: Instant) -> bool {
        match (self.state, code) {
            (ClientState::Completed, _) => false,
            (_, 100..=199) => {
                self.state = ClientState::Proceeding;
                false
            }
            _ => {
                self.state = ClientState::Completed;
                self.timer_e = None;
                self.timer_f = None;
                let k = if self.flow.is_reliable() {
                    Duration::ZERO
                } else {
                    self.timers.t4
                };
                self.timer_k = Some(now + k);
                true
            }
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [
            self.timer_e.as_ref().map(RetransmitTimer::due),
            self.timer_f,
            self.timer_k,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(crate) fn on_timeout(&mut self, now: Instant) -> TxAction {
        if self.timer_k.is_some_and(|t| now >= t) {
            return TxAction::Terminated;
        }
        if self.timer_f.is_some_and(|t| now >= t) {
            // Timer F: no final response.
            return TxAction::TimedOut;
        }
        // Timer E doubles up to T2; in Proceeding it stays at T2 (§17.1.2.2).
        if let Some(e) = &mut self.timer_e {
            let fired = match self.state {
                ClientState::Proceeding => e.fire_then(now, self.timers.t2),
                _ => e.fire(now, &self.timers),
            };
            if fired {
                return TxAction::Retransmit(self.request.clone());
            }
        }
        TxAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::endpoint::{Flow, Transport};

    fn udp() -> Flow {
        Flow::new(Transport::Udp, "127.0.0.1:5062".parse().unwrap())
    }

    fn tcp() -> Flow {
        Flow::new(
            Transport::Tcp(crate::sip::endpoint::ConnId(1)),
            "127.0.0.1:40000".parse().unwrap(),
        )
    }

    /// The timer interface the three machines share, for [`run`].
    trait Timed {
        fn deadline(&self) -> Option<Instant>;
        fn fire(&mut self, now: Instant) -> TxAction;
    }

    impl Timed for InviteServerTx {
        fn deadline(&self) -> Option<Instant> {
            self.next_deadline()
        }
        fn fire(&mut self, now: Instant) -> TxAction {
            self.on_timeout(now)
        }
    }

    impl Timed for NonInviteClientTx {
        fn deadline(&self) -> Option<Instant> {
            self.next_deadline()
        }
        fn fire(&mut self, now: Instant) -> TxAction {
            self.on_timeout(now)
        }
    }

    /// Runs a machine's timers from `start` until it reports something other than
    /// retransmissions, collecting retransmission times (ms after `start`).
    fn run(start: Instant, machine: &mut impl Timed) -> (Vec<u64>, TxAction) {
        let mut times = Vec::new();
        while let Some(at) = machine.deadline() {
            match machine.fire(at) {
                TxAction::Retransmit(_) => times.push((at - start).as_millis() as u64),
                TxAction::None => {}
                other => return (times, other),
            }
        }
        (times, TxAction::None)
    }

    /// T1, then doubling to T2 and staying there; early is not due; `fire_then` sets the
    /// next interval itself.
    #[test]
    fn a_retransmit_timer_doubles_up_to_t2() {
        let timers = TimerConfig::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut r = RetransmitTimer::start(t0, &timers);
        assert_eq!(r.due(), ms(500));
        assert!(!r.fire(ms(499), &timers));
        assert_eq!(r.due(), ms(500));
        let mut dues = Vec::new();
        for _ in 0..5 {
            assert!(r.fire(r.due(), &timers));
            dues.push(r.due());
        }
        assert_eq!(
            dues,
            [ms(1_500), ms(3_500), ms(7_500), ms(11_500), ms(15_500)]
        );
        let mut e = RetransmitTimer::start(t0, &timers);
        assert!(e.fire_then(ms(500), timers.t2));
        assert_eq!(e.due(), ms(4_500));
    }

    #[test]
    fn timer_g_doubles_to_t2_until_timer_h() {
        let t0 = Instant::now();
        let mut tx = InviteServerTx::new(udp(), TimerConfig::default());
        tx.respond(100, b"100".to_vec(), t0);
        assert_eq!(tx.next_deadline(), None, "no timers while proceeding");
        tx.respond(486, b"486".to_vec(), t0);
        let (times, end) = run(t0, &mut tx);
        assert_eq!(end, TxAction::TimedOut);
        assert_eq!(&times[..6], [500, 1_500, 3_500, 7_500, 11_500, 15_500]);
        assert!(times.iter().all(|&t| t < 32_000));
    }

    #[test]
    fn ack_confirms_and_timer_i_ends() {
        let t0 = Instant::now();
        let mut tx = InviteServerTx::new(udp(), TimerConfig::default());
        tx.respond(404, b"404".to_vec(), t0);
        assert_eq!(tx.on_retransmission(), Some(&b"404"[..]));
        tx.on_ack(t0 + Duration::from_millis(100));
        assert_eq!(tx.state, InviteServerState::Confirmed);
        assert_eq!(tx.on_retransmission(), None);
        assert_eq!(tx.next_deadline(), Some(t0 + Duration::from_millis(5_100)));
        assert_eq!(
            tx.on_timeout(t0 + Duration::from_millis(5_100)),
            TxAction::Terminated
        );
    }

    #[test]
    fn accepted_absorbs_until_timer_l() {
        let t0 = Instant::now();
        let mut tx = InviteServerTx::new(udp(), TimerConfig::default());
        tx.respond(200, b"200".to_vec(), t0);
        assert_eq!(tx.state, InviteServerState::Accepted);
        assert_eq!(tx.on_retransmission(), Some(&b"200"[..]));
        tx.on_ack(t0 + Duration::from_millis(100));
        assert_eq!(tx.state, InviteServerState::Accepted);
        assert_eq!(
            tx.on_retransmission(),
            None,
            "absorbed once the 2xx is ACKed"
        );
        assert_eq!(tx.next_deadline(), Some(t0 + Duration::from_secs(32)));
        assert_eq!(
            tx.on_timeout(t0 + Duration::from_secs(32)),
            TxAction::Terminated
        );
    }

    #[test]
    fn reliable_transports_do_not_retransmit() {
        let t0 = Instant::now();
        let mut tx = InviteServerTx::new(tcp(), TimerConfig::default());
        tx.respond(486, b"486".to_vec(), t0);
        assert_eq!(tx.next_deadline(), Some(t0 + Duration::from_secs(32)));
        tx.on_ack(t0);
        assert_eq!(tx.on_timeout(t0), TxAction::Terminated);
        let nist = NonInviteServerTx::completed(tcp(), b"200".to_vec(), t0, TimerConfig::default());
        assert_eq!(nist.next_deadline(), Some(t0));
        let mut nict = NonInviteClientTx::start(tcp(), b"BYE".to_vec(), t0, TimerConfig::default());
        let (times, end) = run(t0, &mut nict);
        assert!(times.is_empty());
        assert_eq!(end, TxAction::TimedOut);
    }

    #[test]
    fn bye_retransmits_with_timer_e_and_gives_up_with_timer_f() {
        let t0 = Instant::now();
        let mut tx = NonInviteClientTx::start(udp(), b"BYE".to_vec(), t0, TimerConfig::default());
        let (times, end) = run(t0, &mut tx);
        assert_eq!(end, TxAction::TimedOut);
        assert_eq!(&times[..5], [500, 1_500, 3_500, 7_500, 11_500]);
        assert_eq!(times.len(), 10);
    }

    #[test]
    fn bye_completes_on_final_response() {
        let t0 = Instant::now();
        let mut tx = NonInviteClientTx::start(udp(), b"BYE".to_vec(), t0, TimerConfig::default());
        assert!(!tx.on_response(100, t0));
        assert_eq!(tx.state, ClientState::Proceeding);
        // In Proceeding, Timer E fires at T2 intervals.
        assert_eq!(
            tx.on_timeout(t0 + Duration::from_millis(500)),
            TxAction::Retransmit(b"BYE".to_vec())
        );
        assert_eq!(tx.next_deadline(), Some(t0 + Duration::from_millis(4_500)));
        assert!(tx.on_response(200, t0 + Duration::from_secs(1)));
        assert!(
            !tx.on_response(200, t0 + Duration::from_secs(1)),
            "retransmitted final is absorbed"
        );
        assert_eq!(tx.next_deadline(), Some(t0 + Duration::from_secs(6)));
        assert_eq!(
            tx.on_timeout(t0 + Duration::from_secs(6)),
            TxAction::Terminated
        );
    }
}
