//! Connection polling (Zeek's `ConnPolling::watch`, `base/protocols/conn/polling.zeek`): a
//! callback called on one connection at intervals of its own choosing, with counters read
//! fresh from the datapath (the kernel's map, live) each time.
//!
//! The callback gets the connection and a counter (the `cnt` given to `watch`, then +1 per
//! call) and returns when to call it next; `None` (Zeek: a negative interval) stops. Polling
//! also stops when the connection is gone. Calls happen on network time (the [`crate::core::clock`]:
//! packet time in `read`, the wall clock in `run`): a poll due at `t` runs when time reaches
//! `t`, before the packet that moved it there. At the end of input (or shutdown) every pending
//! poll runs once more before the connections are drained, as Zeek runs the scheduled events
//! left at termination.
//!
//! ```ignore
//! conn.watch(|c, cnt| {
//!     println!("{} has sent {} bytes", c.uid(), c.conn().orig_bytes());
//!     (cnt < 10).then_some(Duration::from_secs(60))
//! }, 0, Duration::from_secs(60));
//! ```

use crate::core::events::ConnHandle;
use conntrack_common::key::FlowKey;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// What a poll callback returns: the interval to the next call, or `None` to stop.
pub type PollCallback = Box<dyn FnMut(&mut ConnHandle<'_>, u64) -> Option<Duration>>;

pub(crate) struct Poll {
    at_ns: u64,
    seq: u64,
    pub(crate) key: FlowKey,
    /// The connection's uid: a later connection on the same 5-tuple is not polled.
    pub(crate) uid: String,
    pub(crate) cnt: u64,
    pub(crate) callback: PollCallback,
}

impl PartialEq for Poll {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ns, self.seq) == (other.at_ns, other.seq)
    }
}
impl Eq for Poll {}
impl PartialOrd for Poll {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Poll {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_ns, self.seq).cmp(&(other.at_ns, other.seq))
    }
}

/// Pending polls, earliest first (ties in scheduling order).
#[derive(Default)]
pub struct Polls {
    heap: BinaryHeap<Reverse<Poll>>,
    seq: u64,
}

impl Polls {
    fn push(&mut self, at_ns: u64, key: FlowKey, uid: String, cnt: u64, callback: PollCallback) {
        self.seq += 1;
        self.heap.push(Reverse(Poll {
            at_ns,
            seq: self.seq,
            key,
            uid,
            cnt,
            callback,
        }));
    }

    /// Whether a poll is due at `now_ns`.
    #[inline]
    pub(crate) fn any_due(&self, now_ns: u64) -> bool {
        self.heap
            .peek()
            .is_some_and(|Reverse(top)| top.at_ns <= now_ns)
    }

    /// The polls due at `now_ns` (every pending one when `all`). Taken before any runs, so a
    /// callback that asks for 0 s runs at the next advance, not in a loop.
    pub(crate) fn take_due(&mut self, now_ns: u64, all: bool) -> Vec<Poll> {
        let mut out = Vec::new();
        while let Some(Reverse(top)) = self.heap.peek() {
            if !all && top.at_ns > now_ns {
                break;
            }
            out.push(self.heap.pop().expect("peeked").0);
        }
        out
    }

    /// Schedules the next call of a poll that just ran at `now_ns`.
    pub(crate) fn again(&mut self, p: Poll, now_ns: u64, after: Duration) {
        let at = now_ns.saturating_add(duration_ns(after));
        self.push(at, p.key, p.uid, p.cnt + 1, p.callback);
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl ConnHandle<'_> {
    /// `ConnPolling::watch`: calls `callback(conn, cnt)` after `interval` of network time, then
    /// after each interval it returns, with `cnt` + 1 each time, until it returns `None` or
    /// the connection is gone.
    pub fn watch(
        &mut self,
        callback: impl FnMut(&mut ConnHandle<'_>, u64) -> Option<Duration> + 'static,
        cnt: u64,
        interval: Duration,
    ) {
        let info = self.info;
        let at = info.ts_ns.saturating_add(duration_ns(interval));
        self.lifecycle.polls.push(
            at,
            info.key,
            info.uid.as_str().to_string(),
            cnt,
            Box::new(callback),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_is_due_from_its_time_on() {
        let mut polls = Polls::default();
        assert!(!polls.any_due(u64::MAX), "none pending");
        polls.push(
            10,
            FlowKey::default(),
            "C1".into(),
            0,
            Box::new(|_, _| None),
        );
        assert!(!polls.any_due(9));
        assert!(polls.any_due(10) && polls.any_due(11));
        assert_eq!(polls.take_due(10, false).len(), 1);
        assert!(!polls.any_due(u64::MAX));
    }
}
