//! The tracker's tests: Zeek's timer rules on a fake datapath.
use super::*;
use std::collections::HashMap;

fn view(proto: u8, last: i64, o: u8, r: u8) -> ConnView {
    ConnView {
        proto,
        last_ns: last,
        orig_state: o,
        resp_state: r,
        orig_addr: [1; 16],
        orig_port: 1000,
        resp_port: 80,
        dns_analyzer: false,
    }
}

/// A fake datapath: key -> view, with a fake clock driven by the test.
struct Fake {
    conns: HashMap<u32, ConnView>,
    tr: Tracker<u32>,
    removed: Vec<(u32, Removal, i64)>,
}

impl Fake {
    fn new() -> Self {
        Self {
            conns: HashMap::new(),
            tr: Tracker::new(Timeouts::default()),
            removed: Vec::new(),
        }
    }
    fn tick(&mut self, now: i64) {
        let conns = &self.conns;
        let r = self.tr.advance(now, &mut |k| conns.get(k).copied());
        for (k, why, _) in r {
            self.conns.remove(&k);
            self.removed.push((k, why, now));
        }
    }
    /// A packet at `t` that leaves the connection as `v` (timers first).
    fn packet(&mut self, k: u32, t: i64, v: ConnView, est: bool) {
        self.tick(t);
        let is_new = !self.conns.contains_key(&k);
        self.conns.insert(k, v);
        self.tr.observe(&k, &v, t, is_new, est);
    }
    fn finish(&mut self) {
        let conns = &self.conns;
        let r = self.tr.finish(&mut |k| conns.get(k).copied());
        for (k, why, _) in r {
            self.conns.remove(&k);
            self.removed.push((k, why, i64::MAX));
        }
    }
}

#[test]
fn per_connection_state_stays_small() {
    // What a million connections cost the agent: a slot each, two or three timers.
    assert_eq!(size_of::<Timer>(), 24);
    assert_eq!(size_of::<Entry>(), 40);
    // An IPv4 connection's slot: the packed 16-byte key and the entry.
    assert_eq!(size_of::<Slot<conntrack_common::key::FlowKey>>(), 56);
}

#[test]
fn a_flip_swaps_the_did_close_bits_and_keeps_established() {
    assert_eq!(swap_sides(DID_CLOSE_ORIG), DID_CLOSE_RESP);
    assert_eq!(swap_sides(DID_CLOSE_RESP), DID_CLOSE_ORIG);
    assert_eq!(
        swap_sides(DID_CLOSE_ORIG | DID_CLOSE_RESP),
        DID_CLOSE_ORIG | DID_CLOSE_RESP
    );
    assert_eq!(
        swap_sides(ESTABLISHED | DID_CLOSE_ORIG),
        ESTABLISHED | DID_CLOSE_RESP
    );
    assert_eq!(swap_sides(0), 0);
}

#[test]
fn udp_inactivity_splits() {
    let mut f = Fake::new();
    f.packet(1, 0, view(UDP, 0, 0, 0), false);
    f.packet(1, 30 * SEC, view(UDP, 30 * SEC, 0, 0), false);
    // another connection's packet at 89 s: not yet (30 + 60 = 90)
    f.packet(2, 89 * SEC, view(UDP, 89 * SEC, 0, 0), false);
    assert!(f.removed.is_empty());
    f.packet(2, 90 * SEC, view(UDP, 90 * SEC, 0, 0), false);
    assert_eq!(f.removed, vec![(1, Removal::Inactivity, 90 * SEC)]);
    f.finish();
    assert_eq!(f.removed[1].0, 2);
    assert_eq!(f.removed[1].1, Removal::Drain);
}

#[test]
fn syn_only_is_attempt_after_5s_and_at_end() {
    let mut f = Fake::new();
    f.packet(1, 0, view(TCP, 0, SYN_SENT, INACTIVE), false);
    f.packet(2, 4 * SEC, view(UDP, 4 * SEC, 0, 0), false);
    assert!(f.removed.is_empty());
    f.packet(2, 5 * SEC, view(UDP, 5 * SEC, 0, 0), false);
    assert_eq!(f.removed, vec![(1, Removal::Attempt, 5 * SEC)]);
    // at the end of input, attempts fire even if not due yet
    f.packet(3, 6 * SEC, view(TCP, 6 * SEC, SYN_SENT, INACTIVE), false);
    f.finish();
    assert_eq!(f.removed[1].0, 3);
    assert_eq!(f.removed[1].1, Removal::Attempt);
    assert_eq!(f.removed[2], (2, Removal::Drain, i64::MAX));
}

#[test]
fn answered_syn_is_not_attempt() {
    let mut f = Fake::new();
    f.packet(1, 0, view(TCP, 0, SYN_SENT, INACTIVE), false);
    f.packet(1, SEC, view(TCP, SEC, ESTABLISHED, ESTABLISHED), true);
    f.packet(2, 10 * SEC, view(UDP, 10 * SEC, 0, 0), false);
    assert!(f.removed.is_empty());
    assert_eq!(f.tr.inactivity_of(&1), Some(300 * SEC));
}

#[test]
fn tcp_close_delay_and_handshake_timeout() {
    let mut f = Fake::new();
    f.packet(1, 0, view(TCP, 0, SYN_SENT, INACTIVE), false);
    f.packet(1, SEC, view(TCP, SEC, ESTABLISHED, ESTABLISHED), true);
    f.packet(1, 2 * SEC, view(TCP, 2 * SEC, CLOSED, ESTABLISHED), false);
    f.packet(1, 3 * SEC, view(TCP, 3 * SEC, CLOSED, CLOSED), false);
    // final ACK does not extend last_time (engine's business); close at 3 + 5
    f.packet(2, 7 * SEC, view(UDP, 7 * SEC, 0, 0), false);
    assert!(f.removed.is_empty());
    f.packet(2, 8 * SEC, view(UDP, 8 * SEC, 0, 0), false);
    assert_eq!(f.removed, vec![(1, Removal::Closed, 8 * SEC)]);
}

#[test]
fn half_close_expires_after_linger() {
    let mut f = Fake::new();
    // partial connection, one side closes (prev state PARTIAL): ExpireTimer at last + 6
    f.packet(1, 0, view(TCP, 0, PARTIAL, INACTIVE), false);
    f.packet(1, SEC, view(TCP, SEC, CLOSED, INACTIVE), false);
    // close_complete because the peer is INACTIVE: delete at 1 + 5
    f.packet(2, 6 * SEC, view(UDP, 6 * SEC, 0, 0), false);
    assert_eq!(f.removed, vec![(1, Removal::Closed, 6 * SEC)]);
}

#[test]
fn established_then_one_fin_waits_for_expire_checks() {
    let mut f = Fake::new();
    f.packet(1, 0, view(TCP, 0, SYN_SENT, INACTIVE), false);
    f.packet(1, 0, view(TCP, 0, ESTABLISHED, ESTABLISHED), true);
    f.packet(1, SEC, view(TCP, SEC, CLOSED, ESTABLISHED), false);
    // Not complete: expire check at 1 + 6 = 7 s: last + 5 < 7 but peer ESTABLISHED and not
    // closed -> stays; it stays until the 5 min inactivity.
    f.packet(2, 100 * SEC, view(UDP, 100 * SEC, 0, 0), false);
    assert!(f.removed.is_empty());
    f.packet(3, 301 * SEC, view(UDP, 301 * SEC, 0, 0), false);
    let ones: Vec<_> = f.removed.iter().filter(|r| r.0 == 1).copied().collect();
    assert_eq!(ones, vec![(1, Removal::Inactivity, 301 * SEC)]);
}

#[test]
fn bad_checksum_only_conn_expires_by_expire_timer() {
    let mut f = Fake::new();
    f.packet(1, 0, view(TCP, 0, INACTIVE, INACTIVE), false);
    // first expire check at 5 s: last + 5 < 5 is false -> re-armed at 11 s
    f.packet(2, 5 * SEC, view(UDP, 5 * SEC, 0, 0), false);
    assert!(f.removed.is_empty());
    f.packet(2, 11 * SEC, view(UDP, 11 * SEC, 0, 0), false);
    assert_eq!(f.removed, vec![(1, Removal::Expire, 11 * SEC)]);
}

#[test]
fn ssh_gets_an_hour() {
    let mut f = Fake::new();
    let mut v = view(TCP, 0, SYN_SENT, INACTIVE);
    v.resp_port = 22;
    f.packet(1, 0, v, false);
    let mut v2 = view(TCP, SEC, ESTABLISHED, ESTABLISHED);
    v2.resp_port = 22;
    f.packet(1, SEC, v2, true);
    assert_eq!(f.tr.inactivity_of(&1), Some(3600 * SEC));
    f.packet(2, 400 * SEC, view(UDP, 400 * SEC, 0, 0), false);
    assert!(f.removed.is_empty());
}

#[test]
fn flip_swaps_endpoint_bookkeeping() {
    let mut f = Fake::new();
    let v = view(TCP, 0, SYN_ACK_SENT, INACTIVE);
    f.packet(1, 0, v, false);
    let mut v2 = view(TCP, SEC, ESTABLISHED, ESTABLISHED);
    v2.orig_addr = [2; 16];
    f.packet(1, SEC, v2, false);
    f.packet(2, 10 * SEC, view(UDP, 10 * SEC, 0, 0), false);
    assert!(f.removed.is_empty());
}

#[test]
fn a_zero_timeout_keeps_a_connection_until_tcp_sets_its_own() {
    let mut f = Fake::new();
    // Both still in the handshake (no attempt removal: the responder answered).
    f.packet(1, 0, view(TCP, 0, SYN_SENT, SYN_ACK_SENT), false);
    assert!(f.tr.set_inactivity(&1, 0, 0));
    f.packet(2, 100 * SEC, view(UDP, 100 * SEC, 0, 0), false);
    assert!(
        f.removed.iter().all(|r| r.0 != 1),
        "0: no inactivity removal"
    );
    // Leaving the handshake sets tcp_inactivity (5 min) and restarts the timer.
    f.packet(
        1,
        101 * SEC,
        view(TCP, 101 * SEC, ESTABLISHED, ESTABLISHED),
        true,
    );
    f.packet(2, 402 * SEC, view(UDP, 402 * SEC, 0, 0), false);
    assert!(
        f.removed.contains(&(1, Removal::Inactivity, 402 * SEC)),
        "{:?}",
        f.removed
    );
}

#[test]
fn timers_never_go_backwards() {
    let mut f = Fake::new();
    f.packet(1, 100 * SEC, view(UDP, 100 * SEC, 0, 0), false);
    f.tick(50 * SEC);
    assert_eq!(f.tr.network_time(), 100 * SEC);
}

#[test]
fn a_connection_replaced_unlogged_hands_back_its_service_word() {
    // A new connection of a key the tracker still has: the old one's removal was lost. Its
    // word comes back, for the capability that wrote it to release what it names.
    let mut tr: Tracker<u32> = Tracker::new(Timeouts::default());
    let v = view(TCP, 0, INACTIVE, INACTIVE);
    tr.observe(&7, &v, 0, true, false);
    assert_eq!(tr.take_replaced_service(), 0, "nothing was there before");
    *tr.service_mut(&7).unwrap() = 42;
    tr.observe(&7, &v, 1, false, false);
    assert_eq!(
        tr.take_replaced_service(),
        0,
        "the same connection, not a new one"
    );
    let replaced = tr.observe_named(&7, &v, 2, true, false, || Uid::UNSET);
    assert!(replaced.fresh);
    assert_eq!(tr.take_replaced_service(), 42);
    assert_eq!(tr.take_replaced_service(), 0, "taken once");
    assert_eq!(tr.service(&7), 0, "the new connection starts without one");
}

#[test]
fn dns_over_udp_ends_after_its_session_timeout() {
    // Zeek's DNS analyzer removes its UDP connection once it has been idle about
    // dns_session_timeout (10 s): checked 10 s after the connection began, allowing 1 s for a
    // request and its reply, then every 10 s after each check (Teredo.pcap's two DNS
    // connections on one port, 16 s apart).
    let dns = |last: i64| ConnView {
        dns_analyzer: true,
        resp_port: 53,
        ..view(UDP, last, 0, 0)
    };
    let mut f = Fake::new();
    f.packet(1, 0, dns(0), false);
    f.packet(1, SEC / 5, dns(SEC / 5), false);
    f.tick(9 * SEC);
    assert!(f.removed.is_empty());
    f.tick(10 * SEC);
    assert_eq!(f.removed, vec![(1, Removal::Inactivity, 10 * SEC)]);
    // A query at 9.5 s keeps it to the next check, at 20 s (network time moving on with other
    // packets at 10 s and 19 s).
    let mut f = Fake::new();
    f.packet(2, 0, dns(0), false);
    f.packet(2, 9 * SEC + SEC / 2, dns(9 * SEC + SEC / 2), false);
    f.tick(10 * SEC);
    f.tick(19 * SEC);
    assert!(f.removed.is_empty());
    f.tick(20 * SEC);
    assert_eq!(f.removed, vec![(2, Removal::Inactivity, 20 * SEC)]);
    // Without the analyzer: the UDP inactivity timeout, 60 s after the last packet.
    let mut f = Fake::new();
    f.packet(3, 0, view(UDP, 0, 0, 0), false);
    f.tick(59 * SEC);
    assert!(f.removed.is_empty());
    f.tick(60 * SEC);
    assert_eq!(f.removed, vec![(3, Removal::Inactivity, 60 * SEC)]);
}
