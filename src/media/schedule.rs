//! When each stream's next packet is due, for thousands of streams: a timing wheel of 1 ms
//! slots.
//!
//! Every stream is due again within one ptime (at most 60 ms), so a wheel a little longer
//! than that holds them all, and scheduling a packet or finding the packets due costs the
//! same whatever the number of streams (a binary heap of 3,000 streams cost two sifts of a
//! dozen levels per packet, 5 % of the media thread's time at 150,000 packets/s). An entry
//! runs in the first pass at or after its slot's end, so at most a millisecond after it is
//! due, and by the same amount every time for a stream whose ptime is whole milliseconds:
//! its rhythm, which is what the caller's jitter buffer sees, stays exact.
//!
//! Sans-IO: the shell passes `now` and sleeps until [`Schedule::next_wake`].

use std::time::{Duration, Instant};

/// Slots in the wheel: 128 ms, beyond the longest ptime. Entries further ahead wait in the
/// last slot and are put back when it runs.
const SLOTS: u64 = 128;

const MS: Duration = Duration::from_millis(1);

/// Items (stream tokens) by the time they are due.
#[derive(Debug)]
pub struct Schedule<T> {
    origin: Instant,
    slots: Vec<Vec<(Instant, T)>>,
    /// The slot that runs next, as milliseconds since `origin`; every earlier one has run.
    next: u64,
    /// Entries scheduled for a slot that has already run: due at once.
    overdue: Vec<(Instant, T)>,
    len: usize,
}

impl<T: Copy> Schedule<T> {
    /// An empty schedule; time counts from `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            origin: now,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            next: 0,
            overdue: Vec::new(),
            len: 0,
        }
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `item` at `at`.
    pub fn insert(&mut self, at: Instant, item: T) {
        self.len += 1;
        // The slot whose end is the first at or after `at`.
        let since = at.saturating_duration_since(self.origin);
        let slot = u64::try_from(since.as_nanos().div_ceil(MS.as_nanos())).unwrap_or(u64::MAX);
        if slot < self.next {
            self.overdue.push((at, item));
        } else {
            let slot = slot.min(self.next + SLOTS - 1);
            self.slots[(slot % SLOTS) as usize].push((at, item));
        }
    }

    /// When the earliest entry is due (to within the slot), or `None` when there are none.
    pub fn next_wake(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        if !self.overdue.is_empty() {
            return Some(self.origin);
        }
        (self.next..self.next + SLOTS)
            .find(|slot| !self.slots[(slot % SLOTS) as usize].is_empty())
            .map(|slot| self.at(slot))
    }

    /// Moves every entry due at `now` into `due`, in no particular order within a slot.
    pub fn pop_due(&mut self, now: Instant, due: &mut Vec<(Instant, T)>) {
        let before = due.len();
        due.append(&mut self.overdue);
        let last =
            u64::try_from(now.saturating_duration_since(self.origin).as_nanos() / MS.as_nanos())
                .unwrap_or(u64::MAX);
        if self.len == 0 || last.saturating_sub(self.next) >= SLOTS {
            // Idle, or asleep for longer than the wheel: every slot has had its time.
            for slot in &mut self.slots {
                due.append(slot);
            }
            self.next = last.saturating_add(1);
        } else {
            while self.next <= last {
                due.append(&mut self.slots[(self.next % SLOTS) as usize]);
                self.next += 1;
            }
        }
        self.len -= due.len() - before;
        // Entries parked in the last slot because they were further ahead than the wheel.
        let mut i = before;
        while i < due.len() {
            if due[i].0 > now {
                let (at, item) = due.swap_remove(i);
                self.insert(at, item);
            } else {
                i += 1;
            }
        }
    }

    /// When slot `slot` has had its time.
    fn at(&self, slot: u64) -> Instant {
        self.origin + Duration::from_millis(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn due(s: &mut Schedule<u32>, now: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        s.pop_due(now, &mut out);
        let mut items: Vec<u32> = out.into_iter().map(|(_, item)| item).collect();
        items.sort_unstable();
        items
    }

    #[test]
    fn entries_run_at_or_within_a_millisecond_after_their_time() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        s.insert(t0 + ms(20), 1);
        s.insert(t0 + ms(20) + Duration::from_micros(300), 2);
        s.insert(t0 + ms(5), 3);
        assert_eq!(s.len(), 3);
        assert_eq!(s.next_wake(), Some(t0 + ms(5)));
        assert_eq!(due(&mut s, t0 + ms(4)), Vec::<u32>::new());
        assert_eq!(due(&mut s, t0 + ms(5)), vec![3]);
        assert_eq!(s.next_wake(), Some(t0 + ms(20)));
        assert_eq!(due(&mut s, t0 + ms(20)), vec![1]);
        // Due at 20.3 ms: runs with the slot ending at 21 ms, never before its time.
        assert_eq!(s.next_wake(), Some(t0 + ms(21)));
        assert_eq!(
            due(&mut s, t0 + ms(20) + Duration::from_micros(900)),
            Vec::<u32>::new()
        );
        assert_eq!(due(&mut s, t0 + ms(21)), vec![2]);
        assert!(s.is_empty());
        assert_eq!(s.next_wake(), None);
    }

    #[test]
    fn a_stream_keeps_its_rhythm_across_many_turns_of_the_wheel() {
        // Three streams of 20, 30 and 40 ms ptime with different phases, driven for 12 s by
        // waking exactly when asked: every packet runs within 1 ms of its time and one
        // ptime after the stream's previous one.
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        let phases = [Duration::ZERO, Duration::from_micros(7_250), ms(19)];
        let ptimes = [ms(20), ms(30), ms(40)];
        let mut due_at: Vec<Instant> = phases.iter().map(|p| t0 + *p).collect();
        let mut sent: Vec<Vec<Instant>> = vec![Vec::new(); 3];
        for (i, at) in due_at.iter().enumerate() {
            s.insert(*at, i);
        }
        let mut out = Vec::new();
        while let Some(now) = s.next_wake() {
            if now >= t0 + ms(12_000) {
                break;
            }
            s.pop_due(now, &mut out);
            for (at, i) in out.drain(..) {
                assert_eq!(at, due_at[i]);
                assert!(
                    now >= at && now - at < ms(1),
                    "stream {i} late by {:?}",
                    now - at
                );
                sent[i].push(now);
                due_at[i] = at + ptimes[i];
                s.insert(due_at[i], i);
            }
        }
        for (times, ptime) in sent.iter().zip(ptimes) {
            assert_eq!(times.len(), 12_000 / ptime.as_millis() as usize);
            assert!(times.windows(2).all(|w| w[1] - w[0] == ptime));
        }
    }

    #[test]
    fn overdue_and_far_entries_and_long_sleeps() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        s.insert(t0 + ms(3), 1);
        assert_eq!(due(&mut s, t0 + ms(10)), vec![1]);
        // Scheduled for a time whose slot has already run: due at once.
        s.insert(t0 + ms(2), 2);
        assert!(s.next_wake().is_some_and(|at| at <= t0 + ms(10)));
        assert_eq!(due(&mut s, t0 + ms(10)), vec![2]);
        // Further ahead than the wheel: parked, put back, and run on time.
        s.insert(t0 + ms(1_000), 3);
        s.insert(t0 + ms(12), 4);
        assert_eq!(due(&mut s, t0 + ms(200)), vec![4]);
        assert_eq!(s.len(), 1);
        assert_eq!(due(&mut s, t0 + ms(999)), Vec::<u32>::new());
        assert_eq!(due(&mut s, t0 + ms(1_000)), vec![3]);
        // Asleep for 300 days with entries waiting: they all run, the wheel catches up in
        // one turn, and new entries are timed from the present.
        s.insert(t0 + ms(1_010), 5);
        s.insert(t0 + ms(1_100), 6);
        let later = t0 + Duration::from_secs(300 * 86_400);
        assert_eq!(due(&mut s, later), vec![5, 6]);
        s.insert(later + ms(20), 7);
        assert_eq!(s.next_wake(), Some(later + ms(20)));
        assert_eq!(due(&mut s, later + ms(20)), vec![7]);
    }
}
