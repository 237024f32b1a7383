//! The lifecycle capabilities on the agent core (host datapath, and the kernel's when root):
//! removal hooks for every removal reason, polls with fresh counters, the inactivity veto and
//! per-connection timeouts, conn_long.log and removal.log.

use crate::capabilities::conn_long::{ConnLong, ConnLongSettings};
use crate::capabilities::removal_log::RemovalLog;
use crate::core::agent::Agent;
use crate::core::events::{Capability, ConnEvent, ConnHandle, RemovalReason, TimeoutVerdict};
use crate::core::removal_hooks::RemovalHook;
use crate::core::tracker::{SEC, Timeouts};
use crate::datapath::Datapath;
use crate::datapath::host::{HostConfig, HostDatapath};
use crate::logs::conn_log::{ConnLogWriter, LogFormat};
use crate::util::site::NetSet;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// Network time of the first packet.
const T0: i64 = 1_700_000_000 * SEC;

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;

fn eth_ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(l4);
    f
}

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];

/// UDP between A:`port` and B:9999 (`from_a`: A sends), `payload` bytes.
fn udp(port: u16, from_a: bool, payload: usize) -> Vec<u8> {
    let (src, dst, sp, dp) = if from_a {
        (A, B, port, 9999)
    } else {
        (B, A, 9999, port)
    };
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sp.to_be_bytes());
    l4.extend_from_slice(&dp.to_be_bytes());
    l4.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.resize(8 + payload, 0);
    eth_ipv4(17, src, dst, &l4)
}

/// TCP between A:`port` and B:80.
fn tcp(port: u16, from_a: bool, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let (src, dst, sp, dp) = if from_a {
        (A, B, port, 80)
    } else {
        (B, A, 80, port)
    };
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sp.to_be_bytes());
    l4.extend_from_slice(&dp.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(&ack.to_be_bytes());
    l4.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    eth_ipv4(6, src, dst, &l4)
}

/// The handshake of a TCP connection from A:`port` at `t`.
fn handshake(port: u16) -> Vec<(Vec<u8>, i64)> {
    vec![
        (tcp(port, true, SYN, 100, 0), 0),
        (tcp(port, false, SYN | ACK, 500, 101), 0),
        (tcp(port, true, ACK, 101, 501), 0),
    ]
}

fn datapaths() -> Vec<Box<dyn Datapath>> {
    let mut out: Vec<Box<dyn Datapath>> = vec![Box::new(HostDatapath::new(HostConfig::new(&[])))];
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        out.push(
            crate::datapath::kernel::replay_datapath(&[], 1024, false)
                .expect("loading the eBPF program"),
        );
    }
    out
}

fn agent_on(dp: Box<dyn Datapath>, dir: &tempfile::TempDir, timeouts: Timeouts) -> Agent {
    let writer = ConnLogWriter::create(dir.path(), LogFormat::Tsv, false).unwrap();
    Agent::new(
        dp,
        HostConfig::new(&[]),
        timeouts,
        NetSet::default(),
        writer,
    )
}

/// A packet at `T0 + t` (timers first, as `read` does).
fn packet(agent: &mut Agent, frame: &[u8], t: i64) {
    agent.advance(T0 + t).unwrap();
    agent.process(frame, T0 + t, true).unwrap();
}

fn conn_log(dir: &tempfile::TempDir) -> Vec<Vec<String>> {
    std::fs::read_to_string(dir.path().join("conn.log"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

type Ran = Rc<RefCell<Vec<(u16, RemovalReason, String)>>>;

/// Registers one hook on every new connection; the hook records (originator port, reason,
/// conn_state).
struct HookEverything {
    hook: RemovalHook,
}

impl HookEverything {
    fn new(ran: Ran) -> Self {
        let hook = RemovalHook::new(move |c, why| {
            let state = c.conn().conn_state().as_str().to_string();
            ran.borrow_mut().push((c.conn().orig_port, why, state));
        });
        Self { hook }
    }
}

impl Capability for HookEverything {
    fn on_event(&mut self, c: &mut ConnHandle<'_>, event: &ConnEvent) {
        if *event == ConnEvent::New {
            assert!(c.register_removal_hook(&self.hook));
        }
    }
}

#[test]
fn a_hook_runs_once_for_every_removal_reason_with_the_final_state() {
    for dp in datapaths() {
        let dir = tempfile::tempdir().unwrap();
        let mut agent = agent_on(dp, &dir, Timeouts::default());
        let ran: Ran = Rc::default();
        agent.register(Box::new(HookEverything::new(ran.clone())));
        let removal_log = dir.path().join("removal.log");
        let cap = RemovalLog::create(&removal_log).unwrap();
        // As setup does: the agent flushes (and rotates) the log with conn.log.
        agent.add_log(cap.log());
        agent.register(Box::new(cap));
        let mut pkts: Vec<(Vec<u8>, i64)> = Vec::new();
        // 1001: closed by FINs; 1002: reset; 1003: unanswered SYN; 1004: reused 5-tuple.
        pkts.extend(handshake(1001));
        pkts.push((tcp(1001, true, FIN | ACK, 101, 501), SEC));
        pkts.push((tcp(1001, false, FIN | ACK, 501, 102), SEC));
        pkts.push((tcp(1001, true, ACK, 102, 502), SEC));
        pkts.extend(handshake(1002));
        pkts.push((tcp(1002, true, RST, 101, 0), SEC));
        pkts.push((tcp(1003, true, SYN, 7, 0), 0));
        pkts.extend(handshake(1004));
        pkts.push((tcp(1004, true, SYN, 90_000, 0), 2 * SEC));
        // 2001: UDP idle for its 1 min; 2002: still open at the end (drained).
        pkts.push((udp(2001, true, 10), 0));
        pkts.push((udp(2002, true, 10), 0));
        pkts.push((udp(2002, true, 10), 30 * SEC));
        pkts.sort_by_key(|p| p.1);
        for (f, t) in &pkts {
            packet(&mut agent, f, *t);
        }
        agent.advance(T0 + 61 * SEC).unwrap();
        agent.finish().unwrap();
        let mut got = ran.borrow().clone();
        got.sort_by_key(|r| (r.0, r.1.as_str()));
        let want = [
            (1001, RemovalReason::Closed, "SF"),
            (1002, RemovalReason::Closed, "RSTO"),
            (1003, RemovalReason::Attempt, "S0"),
            (1004, RemovalReason::Attempt, "S0"), // the new SYN, unanswered
            (1004, RemovalReason::Reuse, "S1"),
            (2001, RemovalReason::Inactivity, "S0"),
            (2002, RemovalReason::Drain, "S0"),
        ];
        let got: Vec<(u16, RemovalReason, &str)> =
            got.iter().map(|r| (r.0, r.1, r.2.as_str())).collect();
        assert_eq!(got, want);
        assert_eq!(conn_log(&dir).len(), want.len(), "one conn.log record each");
        let lines = std::fs::read_to_string(&removal_log).unwrap();
        let reasons: Vec<String> = lines
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{}:{}", v["id.orig_p"], v["reason"].as_str().unwrap())
            })
            .collect();
        for r in [
            "1001:closed",
            "1002:reset",
            "1003:attempt",
            "2001:inactivity",
        ] {
            assert!(reasons.contains(&r.to_string()), "{r} in {reasons:?}");
        }
        assert_eq!(reasons.len(), want.len());
    }
}

#[test]
fn a_connection_the_datapath_lost_still_runs_its_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let dp = Box::new(HostDatapath::new(HostConfig::new(&[])));
    let mut agent = agent_on(dp, &dir, Timeouts::default());
    let ran: Ran = Rc::default();
    agent.register(Box::new(HookEverything::new(ran.clone())));
    packet(&mut agent, &udp(3001, true, 10), 0);
    packet(&mut agent, &udp(3001, false, 10), SEC);
    for k in agent.dp.keys() {
        agent.dp.remove(&k);
    }
    agent.advance(T0 + 120 * SEC).unwrap();
    // The state as of the connection's last event (its first packet: a reply makes no event).
    assert_eq!(
        *ran.borrow(),
        vec![(3001, RemovalReason::Evicted, "S0".to_string())]
    );
    agent.finish().unwrap();
    assert!(
        conn_log(&dir).is_empty(),
        "nothing to log without a final state"
    );
}

/// [`HookEverything`] that handles nothing but `New`: its connections' other events are not
/// built, only the state their hooks keep is refreshed.
struct HookOnNew(HookEverything);

impl Capability for HookOnNew {
    fn on_event(&mut self, c: &mut ConnHandle<'_>, event: &ConnEvent) {
        self.0.on_event(c, event);
    }
    fn wants_state_changes(&self) -> bool {
        false
    }
    fn events(&self) -> crate::core::events::EventMask {
        crate::core::events::EventMask::NEW
    }
}

#[test]
fn a_lost_connection_hooked_on_new_gets_the_state_of_its_last_event_all_the_same() {
    let run = |handles_all: bool| {
        let dir = tempfile::tempdir().unwrap();
        let dp = Box::new(HostDatapath::new(HostConfig::new(&[])));
        let mut agent = agent_on(dp, &dir, Timeouts::default());
        let ran: Ran = Rc::default();
        let cap = HookEverything::new(ran.clone());
        if handles_all {
            agent.register(Box::new(cap));
        } else {
            agent.register(Box::new(HookOnNew(cap)));
        }
        // 3101: established (an event), then data (none); 3102: an unanswered SYN.
        for (f, t) in handshake(3101) {
            packet(&mut agent, &f, t);
        }
        packet(&mut agent, &tcp(3101, true, ACK | 0x08, 101, 501), SEC);
        packet(&mut agent, &tcp(3102, true, SYN, 7, 0), SEC);
        for k in agent.dp.keys() {
            agent.dp.remove(&k);
        }
        agent.advance(T0 + 600 * SEC).unwrap();
        agent.finish().unwrap();
        let mut got = ran.borrow().clone();
        got.sort_by_key(|r| r.0);
        got
    };
    let evicted = |port, state: &str| (port, RemovalReason::Evicted, state.to_string());
    let want = vec![evicted(3101, "S1"), evicted(3102, "S0")];
    assert_eq!(run(true), want, "delivered events keep the state");
    assert_eq!(run(false), want, "the Established state without the event");
}

#[test]
fn unregistered_hooks_do_not_run_and_others_stay() {
    let dir = tempfile::tempdir().unwrap();
    let dp = Box::new(HostDatapath::new(HostConfig::new(&[])));
    let mut agent = agent_on(dp, &dir, Timeouts::default());
    let ran = Rc::new(RefCell::new(Vec::new()));
    struct Two(RemovalHook, RemovalHook);
    impl Capability for Two {
        fn on_event(&mut self, c: &mut ConnHandle<'_>, event: &ConnEvent) {
            if *event == ConnEvent::New {
                assert!(c.register_removal_hook(&self.0));
                assert!(c.register_removal_hook(&self.1));
                assert!(c.unregister_removal_hook(&self.0));
                assert!(!c.unregister_removal_hook(&self.0));
            }
        }
    }
    let (r1, r2) = (ran.clone(), ran.clone());
    agent.register(Box::new(Two(
        RemovalHook::new(move |_, _| r1.borrow_mut().push("first")),
        RemovalHook::new(move |_, _| r2.borrow_mut().push("second")),
    )));
    packet(&mut agent, &udp(3002, true, 10), 0);
    agent.finish().unwrap();
    assert_eq!(*ran.borrow(), vec!["second"]);
}

/// Polls every second from the connection's start; records (cnt, orig_pkts, time).
struct PollPackets {
    seen: Rc<RefCell<Vec<(u64, u64, i64)>>>,
    stop_after: u64,
}

impl Capability for PollPackets {
    fn on_event(&mut self, c: &mut ConnHandle<'_>, event: &ConnEvent) {
        if *event != ConnEvent::New {
            return;
        }
        let (seen, stop_after) = (self.seen.clone(), self.stop_after);
        c.watch(
            move |c, cnt| {
                let at = (c.ts_ns() as i64 - T0) / SEC;
                seen.borrow_mut().push((cnt, c.conn().orig_pkts(), at));
                (cnt < stop_after).then_some(Duration::from_secs(1))
            },
            7,
            Duration::from_secs(1),
        );
    }
}

#[test]
fn polls_see_fresh_counters_and_end_with_the_connection() {
    for dp in datapaths() {
        let dir = tempfile::tempdir().unwrap();
        let t = Timeouts {
            udp_inactivity: 5 * SEC,
            ..Timeouts::default()
        };
        let mut agent = agent_on(dp, &dir, t);
        let seen = Rc::new(RefCell::new(Vec::new()));
        agent.register(Box::new(PollPackets {
            seen: seen.clone(),
            stop_after: 100,
        }));
        for s in 0..3 {
            packet(&mut agent, &udp(4001, true, 10), s * SEC);
        }
        // Idle from 2 s: removed at 7 s (5 s inactivity), after that instant's poll.
        for s in 3..20 {
            agent.advance(T0 + s * SEC).unwrap();
        }
        let got = seen.borrow().clone();
        // A poll due at a packet's time runs before that packet is counted.
        assert_eq!(
            got,
            vec![
                (7, 1, 1),
                (8, 2, 2),
                (9, 3, 3),
                (10, 3, 4),
                (11, 3, 5),
                (12, 3, 6),
                (13, 3, 7),
            ]
        );
    }
}

#[test]
fn a_poll_that_returns_none_stops() {
    let dir = tempfile::tempdir().unwrap();
    let dp = Box::new(HostDatapath::new(HostConfig::new(&[])));
    let mut agent = agent_on(dp, &dir, Timeouts::default());
    let seen = Rc::new(RefCell::new(Vec::new()));
    agent.register(Box::new(PollPackets {
        seen: seen.clone(),
        stop_after: 8,
    }));
    packet(&mut agent, &udp(4002, true, 10), 0);
    for s in 1..30 {
        agent.advance(T0 + s * SEC).unwrap();
    }
    let cnts: Vec<u64> = seen.borrow().iter().map(|s| s.0).collect();
    assert_eq!(cnts, [7, 8]);
}

/// Vetoes the first `vetoes` inactivity removals; records when it was asked.
struct Veto {
    asked: Rc<RefCell<Vec<i64>>>,
    vetoes: usize,
}

impl Capability for Veto {
    fn on_event(&mut self, _: &mut ConnHandle<'_>, _: &ConnEvent) {}

    fn connection_timing_out(&mut self, c: &mut ConnHandle<'_>) -> TimeoutVerdict {
        let mut asked = self.asked.borrow_mut();
        asked.push((c.ts_ns() as i64 - T0) / SEC);
        if asked.len() <= self.vetoes {
            TimeoutVerdict::Keep
        } else {
            TimeoutVerdict::Remove
        }
    }
}

#[test]
fn a_vetoed_timeout_checks_again_one_timeout_after_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let dp = Box::new(HostDatapath::new(HostConfig::new(&[])));
    let mut agent = agent_on(dp, &dir, Timeouts::default());
    let asked = Rc::new(RefCell::new(Vec::new()));
    agent.register(Box::new(Veto {
        asked: asked.clone(),
        vetoes: 2,
    }));
    packet(&mut agent, &udp(5001, true, 10), 0);
    // Timers fire when time moves: every 7 s, so checks happen at 63 s, then 63 + 60 ...
    for s in (7..400).step_by(7) {
        agent.advance(T0 + s * SEC).unwrap();
    }
    assert_eq!(*asked.borrow(), vec![63, 126, 189]);
    agent.flush().unwrap();
    let r = conn_log(&dir);
    assert_eq!(r.len(), 1, "removed at the third check");
}

/// Sets a connection's inactivity timeout at New (UDP) or Established (TCP).
struct ShortTimeout;

impl Capability for ShortTimeout {
    fn on_event(&mut self, c: &mut ConnHandle<'_>, event: &ConnEvent) {
        let udp = c.conn().proto == 17;
        if (*event == ConnEvent::New && udp) || *event == ConnEvent::Established {
            c.set_inactivity_timeout(Duration::from_secs(3));
        }
    }
}

#[test]
fn a_per_connection_timeout_replaces_the_protocol_default() {
    for dp in datapaths() {
        let dir = tempfile::tempdir().unwrap();
        let mut agent = agent_on(dp, &dir, Timeouts::default());
        agent.register(Box::new(ShortTimeout));
        packet(&mut agent, &udp(6001, true, 10), 0);
        for (f, t) in handshake(6002) {
            packet(&mut agent, &f, t);
        }
        agent.advance(T0 + 2 * SEC).unwrap();
        assert!(conn_log(&dir).is_empty());
        agent.flush().unwrap();
        agent.advance(T0 + 3 * SEC).unwrap();
        agent.flush().unwrap();
        let r = conn_log(&dir);
        let ports: Vec<&str> = r.iter().map(|x| x[3].as_str()).collect();
        assert_eq!(ports, ["6001", "6002"], "both gone at 3 s, not 1 or 5 min");
    }
}

#[test]
fn conn_long_writes_interim_records_and_leaves_conn_log_alone() {
    for dp in datapaths() {
        let dir = tempfile::tempdir().unwrap();
        let mut agent = agent_on(dp, &dir, Timeouts::default());
        let settings = ConnLongSettings {
            enabled: true,
            intervals: vec![Duration::from_secs(2), Duration::from_secs(3)],
        };
        let cap = ConnLong::create(
            &settings,
            dir.path(),
            LogFormat::Tsv,
            false,
            NetSet::default(),
            Default::default(),
        )
        .unwrap();
        agent.register(Box::new(cap));
        // 7001: a packet every 500 ms for 7 s; 7002: a single packet (never long).
        packet(&mut agent, &udp(7002, true, 10), 0);
        for i in 0..=14 {
            packet(&mut agent, &udp(7001, i % 2 == 0, 10), i * SEC / 2);
        }
        agent.finish().unwrap();
        let text = std::fs::read_to_string(dir.path().join("conn_long.log")).unwrap();
        assert!(text.contains("#path\tconn_long\n"), "{text}");
        let recs: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split('\t').collect())
            .collect();
        // Interim records at 2 s and 3 s of duration, then every 3 s: 6 s.
        let durations: Vec<&str> = recs.iter().map(|r| r[8]).collect();
        assert_eq!(durations, ["2.000000", "3.000000", "6.000000"], "{text}");
        assert!(recs.iter().all(|r| r[3] == "7001"));
        let final_rec = conn_log(&dir);
        assert_eq!(final_rec.len(), 2);
        let long = final_rec.iter().find(|r| r[3] == "7001").unwrap();
        assert_eq!(long[8], "7.000000", "conn.log keeps the whole duration");
        assert_eq!(long[1], recs[0][1], "same uid");
    }
}

/// Records the events it gets; `states` is its answer to `wants_state_changes`.
struct EventsSeen {
    seen: Rc<RefCell<Vec<ConnEvent>>>,
    states: bool,
}

impl Capability for EventsSeen {
    fn wants_state_changes(&self) -> bool {
        self.states
    }
    fn on_event(&mut self, _conn: &mut ConnHandle<'_>, event: &ConnEvent) {
        self.seen.borrow_mut().push(*event);
    }
}

/// A capability that does not want state changes gets every other event of a TCP connection,
/// and conn.log is the same; one that wants them gets them too (the agent skips only what no
/// capability wants).
#[test]
fn state_changes_reach_only_capabilities_that_want_them() {
    let mut runs = Vec::new();
    for states in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let dp = Box::new(HostDatapath::new(HostConfig::new(&[])));
        let mut agent = agent_on(dp, &dir, Timeouts::default());
        let seen = Rc::new(RefCell::new(Vec::new()));
        agent.register(Box::new(EventsSeen {
            seen: seen.clone(),
            states,
        }));
        let mut pkts = handshake(3001);
        pkts.push((tcp(3001, true, FIN | ACK, 101, 501), SEC));
        pkts.push((tcp(3001, false, FIN | ACK, 501, 102), SEC));
        pkts.push((tcp(3001, true, ACK, 102, 502), SEC));
        for (f, t) in &pkts {
            packet(&mut agent, f, *t);
        }
        agent.advance(T0 + 60 * SEC).unwrap();
        agent.finish().unwrap();
        let events = seen.borrow().clone();
        // The record without its uid (random per run).
        let record: Vec<Vec<String>> = conn_log(&dir)
            .into_iter()
            .map(|mut cols| {
                cols.remove(1);
                cols
            })
            .collect();
        runs.push((events, record));
    }
    let (all, some) = (&runs[0], &runs[1]);
    assert!(all.0.contains(&ConnEvent::StateChanged), "{:?}", all.0);
    let without: Vec<ConnEvent> = all
        .0
        .iter()
        .copied()
        .filter(|e| *e != ConnEvent::StateChanged)
        .collect();
    assert_eq!(some.0, without);
    assert_eq!(
        some.0,
        [
            ConnEvent::New,
            ConnEvent::Established,
            ConnEvent::Removed(RemovalReason::Closed)
        ]
    );
    assert_eq!(all.1.len(), 1);
    assert_eq!(all.1, some.1, "the same conn.log");
}
