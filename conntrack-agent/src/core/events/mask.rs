//! Which kinds of event a capability handles ([`super::Capability::events`]).
//!
//! The core hands a capability only the events it declared: an alert rule handles `New` (to
//! arm its thresholds) and the crossings, removal.log only `New` (to register its hook). A
//! connection event that no capability handles, on a connection without removal hooks, is not
//! built at all (no lookup of the connection, no copy of its state): that was most of what a
//! capability that does little cost per connection.

use super::ConnEvent;
use std::ops::BitOr;

/// A set of event kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMask(u8);

impl EventMask {
    pub const NONE: Self = Self(0);
    /// [`ConnEvent::New`].
    pub const NEW: Self = Self(1);
    /// [`ConnEvent::StateChanged`] (also subject to `Capability::wants_state_changes`).
    pub const STATE_CHANGED: Self = Self(1 << 1);
    /// [`ConnEvent::Established`].
    pub const ESTABLISHED: Self = Self(1 << 2);
    /// [`ConnEvent::ThresholdCrossed`].
    pub const THRESHOLD_CROSSED: Self = Self(1 << 3);
    /// [`ConnEvent::Removed`].
    pub const REMOVED: Self = Self(1 << 4);
    /// `Capability::connection_timing_out` (Zeek's hook, not an event, but as costly to
    /// build: the connection's state).
    pub const TIMING_OUT: Self = Self(1 << 5);
    /// `Capability::on_payload` (extracted content).
    pub const PAYLOAD: Self = Self(1 << 6);
    /// Everything: what a capability that declares nothing gets.
    pub const ALL: Self = Self((1 << 7) - 1);
    /// The connection events ([`ConnEvent`]'s kinds).
    pub const CONN_EVENTS: Self = Self((1 << 5) - 1);

    /// The kind of `ev`.
    pub fn of(ev: &ConnEvent) -> Self {
        match ev {
            ConnEvent::New => Self::NEW,
            ConnEvent::StateChanged => Self::STATE_CHANGED,
            ConnEvent::Established => Self::ESTABLISHED,
            ConnEvent::ThresholdCrossed(_) => Self::THRESHOLD_CROSSED,
            ConnEvent::Removed(_) => Self::REMOVED,
        }
    }

    /// True if the two sets share a kind.
    pub fn has(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// This set without the kinds of `other`.
    pub fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl BitOr for EventMask {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::events::RemovalReason;

    #[test]
    fn each_event_has_its_own_kind() {
        let events = [
            ConnEvent::New,
            ConnEvent::StateChanged,
            ConnEvent::Established,
            ConnEvent::ThresholdCrossed(crate::core::thresholds::Crossing {
                kind: crate::core::thresholds::ThresholdKind::Duration,
                threshold: 1,
                is_orig: true,
            }),
            ConnEvent::Removed(RemovalReason::Drain),
        ];
        for (i, a) in events.iter().enumerate() {
            assert!(EventMask::ALL.has(EventMask::of(a)));
            assert!(!EventMask::NONE.has(EventMask::of(a)));
            assert!(EventMask::CONN_EVENTS.has(EventMask::of(a)));
            for (j, b) in events.iter().enumerate() {
                assert_eq!(
                    EventMask::of(a).has(EventMask::of(b)),
                    i == j,
                    "{a:?} {b:?}"
                );
            }
        }
        assert!(!EventMask::CONN_EVENTS.has(EventMask::PAYLOAD | EventMask::TIMING_OUT));
        let m = EventMask::NEW | EventMask::REMOVED;
        assert!(m.has(EventMask::of(&ConnEvent::New)));
        assert!(!m.has(EventMask::of(&ConnEvent::Established)));
        assert!(!m.without(EventMask::NEW).has(EventMask::NEW));
        assert!(EventMask::ALL.has(EventMask::TIMING_OUT | EventMask::PAYLOAD));
    }
}
