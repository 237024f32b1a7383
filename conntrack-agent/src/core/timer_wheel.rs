//! A hashed timer wheel that pops timers in exactly the order a binary heap would (by time,
//! then by their own tie-break), for the tracker's Zeek timers.
//!
//! With a million connections the tracker keeps two or three million timers. In one binary
//! heap, every push and pop walks `log n` levels of a structure far larger than the caches: a
//! `read` of the bench trace spent a fifth of its time there. Here a timer goes into the
//! bucket of its tick (`TICK_NS`); only when the clock reaches a tick is that bucket sorted and
//! appended to the queue of due timers (`ready`). Timers beyond the wheel's span wait in `far`
//! and are moved in as the wheel turns.
//!
//! Invariant: `ready` is sorted and every timer in it has a tick below `cursor`; every timer in
//! the buckets has a tick in `[cursor, cursor + BUCKETS)`; `far` holds the later ones. So a
//! sorted bucket appended to `ready` keeps it sorted, and popping its front is exact. (A heap
//! for `ready` cost a cache miss per level: a burst of connections fills one tick with
//! thousands of timers.)

use std::collections::VecDeque;

/// A timer's due time (ns).
pub trait Due {
    fn due(&self) -> i64;
}

/// log2 of the tick: 2^24 ns, about 16.8 ms.
const TICK_SHIFT: u32 = 24;
/// Buckets: 2^16 ticks, about 18 minutes (TCP's 5-minute inactivity timer fits).
const BUCKET_BITS: u32 = 16;
const BUCKETS: i64 = 1 << BUCKET_BITS;

/// Pushes with growth by a quarter (at least 16) instead of doubling: a million connections
/// spread their timers over a few hundred buckets of thousands each, where doubling leaves a
/// third of the memory unused on average; a quarter leaves about a tenth. Timers are 24
/// bytes, so the extra copies cost little.
fn push_tight<T>(v: &mut Vec<T>, t: T) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 4).max(16));
    }
    v.push(t);
}

fn tick(at: i64) -> i64 {
    at >> TICK_SHIFT
}

pub struct TimerWheel<T: Ord + Due> {
    buckets: Vec<Vec<T>>,
    far: Vec<T>,
    ready: VecDeque<T>,
    /// The first tick not yet moved into `ready` (set by the first push).
    cursor: Option<i64>,
    /// Timers in the buckets.
    in_buckets: usize,
}

impl<T: Ord + Due> Default for TimerWheel<T> {
    fn default() -> Self {
        Self {
            buckets: Vec::new(),
            far: Vec::new(),
            ready: VecDeque::new(),
            cursor: None,
            in_buckets: 0,
        }
    }
}

impl<T: Ord + Due> TimerWheel<T> {
    pub fn push(&mut self, t: T) {
        let at = tick(t.due());
        let cursor = *self.cursor.get_or_insert(at);
        if at < cursor {
            // Rare: a timer due within the tick already reached.
            let i = self.ready.partition_point(|r| r < &t);
            self.ready.insert(i, t);
        } else if at - cursor < BUCKETS {
            if self.buckets.is_empty() {
                self.buckets.resize_with(BUCKETS as usize, Vec::new);
            }
            push_tight(&mut self.buckets[(at & (BUCKETS - 1)) as usize], t);
            self.in_buckets += 1;
        } else {
            self.far.push(t);
        }
    }

    /// True if [`TimerWheel::pop_due`] at `now` would return `None` without changing
    /// anything: the clock is still within a tick already moved into `ready`, whose earliest
    /// timer is later. (False says nothing: the wheel may have to turn first.)
    #[inline]
    pub fn none_due(&self, now: i64) -> bool {
        self.cursor.is_some_and(|c| tick(now) < c)
            && self.ready.front().is_none_or(|t| t.due() > now)
    }

    /// The earliest timer if it is due by `now` (removed), else `None`. Asked after every
    /// packet: inline, with the wheel turned only once the clock reaches the next tick.
    #[inline]
    pub fn pop_due(&mut self, now: i64) -> Option<T> {
        let now_tick = tick(now);
        if self.cursor.is_none_or(|c| now_tick >= c) {
            self.turn_to(now_tick);
        }
        match self.ready.front() {
            Some(t) if t.due() <= now => self.ready.pop_front(),
            _ => None,
        }
    }

    /// Moves every timer of a tick up to `now_tick` into `ready`.
    fn turn_to(&mut self, now_tick: i64) {
        let Some(mut cursor) = self.cursor else {
            // Start at the clock, not at the first timer pushed: a timer pushed later may be
            // due earlier than that one, and all before the cursor would go to `ready`.
            self.cursor = Some(now_tick + 1);
            return;
        };
        if now_tick < cursor {
            return;
        }
        if now_tick - cursor >= BUCKETS {
            // A jump past the whole wheel (an idle stretch of a trace): everything is
            // placed again from the new position.
            self.cursor = Some(now_tick + 1);
            let mut all = std::mem::take(&mut self.far);
            for b in &mut self.buckets {
                all.append(&mut std::mem::take(b));
            }
            self.in_buckets = 0;
            // Sorted, the ones now due follow `ready`'s (all of an earlier tick) in order.
            all.sort_unstable();
            for t in all {
                if tick(t.due()) <= now_tick {
                    self.ready.push_back(t);
                } else {
                    self.push(t);
                }
            }
            return;
        }
        while cursor <= now_tick {
            if self.in_buckets > 0 {
                // Taken, not drained: a drained bucket would keep its capacity for the next
                // turn of the wheel, and at a steady high rate of new connections every
                // bucket would hold room for a tick's worth of timers (18 minutes of them).
                let mut b = std::mem::take(&mut self.buckets[(cursor & (BUCKETS - 1)) as usize]);
                self.in_buckets -= b.len();
                b.sort_unstable();
                self.ready.extend(b);
            }
            cursor += 1;
            if cursor & (BUCKETS - 1) == 0 && !self.far.is_empty() {
                // A new turn of the wheel: the far timers that now fit move in.
                self.cursor = Some(cursor);
                let far = std::mem::take(&mut self.far);
                for t in far {
                    self.push(t);
                }
            }
            if self.in_buckets == 0 && self.far.is_empty() {
                cursor = cursor.max(now_tick + 1);
            }
        }
        self.cursor = Some(cursor);
    }

    /// Every timer, in no particular order; the wheel is empty afterwards.
    pub fn take_all(&mut self) -> Vec<T> {
        let mut all: Vec<T> = std::mem::take(&mut self.ready).into();
        all.append(&mut self.far);
        for b in &mut self.buckets {
            all.append(&mut std::mem::take(b));
        }
        self.in_buckets = 0;
        self.cursor = None;
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
    struct T(i64, u64);
    impl Due for T {
        fn due(&self) -> i64 {
            self.0
        }
    }

    /// A wheel that fired its timers keeps no room for them: a busy host arms timers into
    /// every bucket, and the memory of each must go once the bucket is due.
    #[test]
    fn fired_buckets_free_their_memory() {
        let tick_ns = 1i64 << TICK_SHIFT;
        // The clock passing every tick in turn, then one jump past the whole wheel.
        for step in [tick_ns / 3, i64::MAX / 4] {
            let mut wheel = TimerWheel::default();
            for i in 0..100_000i64 {
                wheel.push(T(i * tick_ns / 100, i as u64));
            }
            let (mut n, mut now) = (0, 0i64);
            while n < 100_000 && now < i64::MAX / 8 {
                now = now.saturating_add(step);
                while wheel.pop_due(now).is_some() {
                    n += 1;
                }
            }
            assert_eq!(n, 100_000);
            let held: usize = wheel.buckets.iter().map(Vec::capacity).sum();
            assert_eq!(held, 0, "timer slots still held by fired buckets");
        }
    }

    proptest! {
        /// Pushes and pops at random times (timers pushed while others fire, as the tracker
        /// re-arms them) come out exactly as from one binary heap.
        #[test]
        fn pops_in_heap_order(
            steps in proptest::collection::vec(
                (0i64..1 << 40, proptest::collection::vec(0i64..1 << 41, 0..4)), 1..200),
        ) {
            let mut wheel = TimerWheel::default();
            let mut heap = BinaryHeap::new();
            let mut seq = 0u64;
            let mut now = 0i64;
            for (advance, ats) in steps {
                for at in ats {
                    seq += 1;
                    wheel.push(T(now + at - (1 << 39), seq));
                    heap.push(Reverse(T(now + at - (1 << 39), seq)));
                }
                now += advance;
                let none_due = wheel.none_due(now);
                loop {
                    let want = match heap.peek() {
                        Some(Reverse(t)) if t.0 <= now => heap.pop().map(|Reverse(t)| t),
                        _ => None,
                    };
                    let got = wheel.pop_due(now);
                    prop_assert!(!(none_due && got.is_some()), "none_due but one was due");
                    prop_assert_eq!(got, want);
                    if got.is_none() {
                        break;
                    }
                }
            }
            let mut rest = wheel.take_all();
            rest.sort();
            let mut left: Vec<T> = heap.into_iter().map(|Reverse(t)| t).collect();
            left.sort();
            prop_assert_eq!(rest, left);
        }
    }
}
