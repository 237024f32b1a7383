use super::*;
use crate::core::agent::Agent;
use crate::core::thresholds::DurationMode;
use crate::core::tracker::{SEC, Timeouts};
use crate::datapath::Datapath;
use crate::datapath::host::{HostConfig, HostDatapath};
use crate::logs::conn_log::{ConnLogWriter, LogFormat};
use crate::util::site::NetSet;
use std::cell::RefCell;
use std::rc::Rc;

/// Ethernet + IPv4 + UDP between 10.0.0.1:40000 and 10.0.0.2:9999 (`from_a`: the first is
/// the sender), checksum 0 (not checked).
fn udp(from_a: bool, payload: usize) -> Vec<u8> {
    let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let (src, dst, sp, dp) = if from_a {
        (a, b, 40000u16, 9999u16)
    } else {
        (b, a, 9999, 40000)
    };
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + 8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&sp.to_be_bytes());
    f.extend_from_slice(&dp.to_be_bytes());
    f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(f.len() + payload, 0);
    f
}

/// One event as a capability saw it.
struct Seen {
    uid: String,
    key: FlowKey,
    ts_ns: u64,
    event: ConnEvent,
}

type Log = Rc<RefCell<Vec<Seen>>>;

/// Records every event it sees; on `New` runs `on_new`.
struct Recorder {
    seen: Log,
    on_new: fn(&mut ConnHandle<'_>),
}

impl Capability for Recorder {
    fn on_event(&mut self, conn: &mut ConnHandle<'_>, event: &ConnEvent) {
        if *event == ConnEvent::New {
            (self.on_new)(conn);
        }
        self.seen.borrow_mut().push(Seen {
            uid: conn.uid().to_string(),
            key: *conn.key(),
            ts_ns: conn.ts_ns(),
            event: *event,
        });
    }
}

/// The host datapath, and the kernel's (the loaded program, by BPF_PROG_TEST_RUN) when root.
fn datapaths() -> Vec<Box<dyn Datapath>> {
    let mut out: Vec<Box<dyn Datapath>> = vec![Box::new(HostDatapath::new(HostConfig::new(&[])))];
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        out.push(
            crate::datapath::kernel::replay_datapath(&[], 1024, false)
                .expect("loading the eBPF program"),
        );
    } else {
        eprintln!("kernel datapath skipped: needs root");
    }
    out
}

fn agent(on_new: fn(&mut ConnHandle<'_>), dir: &tempfile::TempDir) -> (Agent, Log) {
    let dp = Box::new(HostDatapath::new(HostConfig::new(&[])));
    agent_on(dp, on_new, dir)
}

fn agent_on(
    dp: Box<dyn Datapath>,
    on_new: fn(&mut ConnHandle<'_>),
    dir: &tempfile::TempDir,
) -> (Agent, Log) {
    let writer = ConnLogWriter::create(dir.path(), LogFormat::Tsv, false).unwrap();
    let cfg = HostConfig::new(&[]);
    let mut agent = Agent::new(dp, cfg, Timeouts::default(), NetSet::default(), writer);
    let seen = Rc::new(RefCell::new(Vec::new()));
    agent.register(Box::new(Recorder {
        seen: seen.clone(),
        on_new,
    }));
    (agent, seen)
}

fn crossings(seen: &[Seen]) -> Vec<Crossing> {
    seen.iter()
        .filter_map(|s| match s.event {
            ConnEvent::ThresholdCrossed(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// Network time of the tests' first packet (the kernel program takes a zero packet time
/// for "no time" and reads the clock).
const T0: i64 = 1_700_000_000 * SEC;

/// A packet at `T0 + t`.
fn packet(agent: &mut Agent, frame: &[u8], t: i64) {
    agent.advance(T0 + t).unwrap();
    agent.process(frame, T0 + t, true).unwrap();
}

#[test]
fn duration_threshold_fires_by_timer_on_an_idle_connection_only_in_timer_mode() {
    let runs = [DurationMode::NextPacket, DurationMode::NextPacketOrTimer]
        .into_iter()
        .flat_map(|m| datapaths().into_iter().map(move |dp| (m, dp)));
    for (mode, dp) in runs {
        let dir = tempfile::tempdir().unwrap();
        let (mut agent, seen) = agent_on(
            dp,
            |c| assert!(c.set_duration_threshold(Duration::from_secs(1))),
            &dir,
        );
        agent.set_duration_mode(mode);
        packet(&mut agent, &udp(true, 10), 0);
        agent.advance(T0 + 2 * SEC).unwrap(); // idle: no packet for 2 s
        let by_timer = crossings(&seen.borrow());
        packet(&mut agent, &udp(false, 10), 30 * SEC);
        let all = crossings(&seen.borrow());
        let want = Crossing {
            kind: ThresholdKind::Duration,
            threshold: SEC as u64,
            is_orig: mode == DurationMode::NextPacketOrTimer,
        };
        assert_eq!(all, vec![want], "{mode:?}: fires exactly once");
        match mode {
            DurationMode::NextPacket => assert!(by_timer.is_empty(), "Zeek waits for a packet"),
            DurationMode::NextPacketOrTimer => assert_eq!(by_timer, vec![want]),
        }
    }
}

#[test]
fn total_thresholds_count_both_directions_and_report_the_crossing_side() {
    for dp in datapaths() {
        let dir = tempfile::tempdir().unwrap();
        let (mut agent, seen) = agent_on(
            dp,
            |c| {
                assert!(c.set_total_bytes_threshold(200));
                assert!(c.set_total_packets_threshold(3));
                assert!(c.set_total_bytes_threshold(150));
                assert!(c.delete_total_bytes_threshold(150));
                assert!(!c.delete_total_packets_threshold(99));
            },
            &dir,
        );
        packet(&mut agent, &udp(true, 72), 0); // 100 IP bytes
        packet(&mut agent, &udp(false, 72), SEC);
        packet(&mut agent, &udp(false, 72), 2 * SEC);
        let got = crossings(&seen.borrow());
        assert_eq!(
            got,
            vec![
                Crossing {
                    kind: ThresholdKind::TotalBytes,
                    threshold: 200,
                    is_orig: false
                },
                Crossing {
                    kind: ThresholdKind::TotalPackets,
                    threshold: 3,
                    is_orig: false
                },
            ]
        );
    }
}

#[test]
fn a_threshold_already_crossed_is_reported_after_the_event_that_set_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, seen) = agent(|c| assert!(c.set_packets_threshold(1, true)), &dir);
    packet(&mut agent, &udp(true, 10), 0);
    let events: Vec<ConnEvent> = seen.borrow().iter().map(|s| s.event).collect();
    let one = Crossing {
        kind: ThresholdKind::OrigPackets,
        threshold: 1,
        is_orig: true,
    };
    assert_eq!(
        events,
        vec![ConnEvent::New, ConnEvent::ThresholdCrossed(one)]
    );
}

#[test]
fn removal_reaches_capabilities_with_its_reason_and_the_connection_uid() {
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, seen) = agent(|c| assert!(c.set_bytes_threshold(1_000_000, true)), &dir);
    packet(&mut agent, &udp(true, 10), 0);
    agent.advance(T0 + 120 * SEC).unwrap(); // UDP inactivity: 1 min
    agent.flush().unwrap();
    let seen = seen.borrow();
    let (new, removed) = (&seen[0], seen.last().unwrap());
    assert_eq!(new.event, ConnEvent::New);
    assert_eq!(removed.event, ConnEvent::Removed(RemovalReason::Inactivity));
    assert!(!new.uid.is_empty());
    assert_eq!(new.uid, removed.uid);
    assert_eq!(new.key, removed.key);
    assert_eq!(new.ts_ns, T0 as u64);
    assert_eq!(
        removed.ts_ns,
        (T0 + 120 * SEC) as u64,
        "removed at network time"
    );
    let log = std::fs::read_to_string(dir.path().join("conn.log")).unwrap();
    assert!(log.contains(new.uid.as_str()), "the uid is conn.log's");
}

#[test]
fn setting_a_threshold_on_a_removed_connection_fails() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    struct LateSetter(Rc<RefCell<Vec<bool>>>);
    impl Capability for LateSetter {
        fn on_event(&mut self, conn: &mut ConnHandle<'_>, event: &ConnEvent) {
            if let ConnEvent::Removed(_) = event {
                self.0.borrow_mut().push(conn.set_bytes_threshold(10, true));
            }
        }
    }
    let writer = ConnLogWriter::create(dir.path(), LogFormat::Tsv, false).unwrap();
    let cfg = HostConfig::new(&[]);
    let dp = Box::new(HostDatapath::new(cfg.clone()));
    let mut agent = Agent::new(dp, cfg, Timeouts::default(), NetSet::default(), writer);
    agent.register(Box::new(LateSetter(seen.clone())));
    packet(&mut agent, &udp(true, 10), 0);
    agent.finish().unwrap();
    assert_eq!(*seen.borrow(), vec![false]);
}

/// Payload as a capability saw it: (from the originator, bytes).
type Payloads = Rc<RefCell<Vec<(bool, Vec<u8>)>>>;

/// Turns extraction of the originator on at New; records the payload it gets.
struct Toggler {
    seen: Payloads,
    events: u32,
}

impl Capability for Toggler {
    fn on_event(&mut self, conn: &mut ConnHandle<'_>, event: &ConnEvent) {
        self.events += 1;
        match event {
            ConnEvent::New => {
                assert!(conn.set_extract(true, true));
                assert!(conn.extracting(true) && !conn.extracting(false));
            }
            ConnEvent::Removed(_) => {
                let c = conn
                    .content_counters()
                    .expect("counters of an extracted conn");
                assert_eq!(c.delivered, [20, 0]);
                assert_eq!(c.not_delivered, [0, 0]);
                assert!(!conn.set_extract(true, true), "gone from the datapath");
            }
            _ => {}
        }
    }

    fn on_payload(&mut self, chunk: Content<'_>, _dp: &mut dyn ThresholdTarget) {
        self.seen
            .borrow_mut()
            .push((chunk.is_orig(), chunk.data.to_vec()));
    }
}

#[test]
fn extraction_is_turned_on_for_one_direction_through_the_handle() {
    for dp in datapaths() {
        let dir = tempfile::tempdir().unwrap();
        let writer = ConnLogWriter::create(dir.path(), LogFormat::Tsv, false).unwrap();
        let cfg = HostConfig::new(&[]);
        let mut agent = Agent::new(dp, cfg, Timeouts::default(), NetSet::default(), writer);
        let seen = Rc::new(RefCell::new(Vec::new()));
        agent.register(Box::new(Toggler {
            seen: seen.clone(),
            events: 0,
        }));
        packet(&mut agent, &udp(true, 10), 0); // before the decision: not extracted
        packet(&mut agent, &udp(false, 10), SEC); // responder: not extracted
        packet(&mut agent, &udp(true, 10), 2 * SEC);
        packet(&mut agent, &udp(true, 10), 3 * SEC);
        agent.finish().unwrap();
        let seen = seen.borrow();
        assert_eq!(*seen, vec![(true, vec![0; 10]), (true, vec![0; 10])]);
    }
}

/// Records the events of the kinds it declares.
struct Declared {
    seen: Rc<RefCell<Vec<ConnEvent>>>,
    mask: EventMask,
}

impl Capability for Declared {
    fn on_event(&mut self, _conn: &mut ConnHandle<'_>, event: &ConnEvent) {
        self.seen.borrow_mut().push(*event);
    }

    fn events(&self) -> EventMask {
        self.mask
    }
}

#[test]
fn a_capability_gets_only_the_events_it_declares() {
    let dir = tempfile::tempdir().unwrap();
    let writer = ConnLogWriter::create(dir.path(), LogFormat::Tsv, false).unwrap();
    let dp = Box::new(HostDatapath::new(HostConfig::new(&[])));
    let cfg = HostConfig::new(&[]);
    let mut agent = Agent::new(dp, cfg, Timeouts::default(), NetSet::default(), writer);
    let (all, some) = (Rc::default(), Rc::default());
    agent.register(Box::new(Declared {
        seen: Rc::clone(&all),
        mask: EventMask::ALL,
    }));
    agent.register(Box::new(Declared {
        seen: Rc::clone(&some),
        mask: EventMask::REMOVED,
    }));
    packet(&mut agent, &udp(true, 10), 0);
    packet(&mut agent, &udp(false, 10), SEC);
    agent.finish().unwrap();
    let all: Vec<ConnEvent> = all.borrow().clone();
    assert_eq!(all.first(), Some(&ConnEvent::New), "{all:?}");
    let removed = [ConnEvent::Removed(RemovalReason::Drain)];
    assert_eq!(*some.borrow(), removed);
    assert_eq!(all.last(), Some(&removed[0]));
}

#[test]
fn event_states_are_reused_only_when_nothing_holds_them() {
    let mut core = EventCore::new(Thresholds::new(DurationMode::NextPacket));
    let a = core.fill_info(|_| true).unwrap();
    let first = Rc::as_ptr(&a);
    core.recycle(a);
    assert!(core.fill_info(|_| false).is_none(), "nothing to deliver");
    let b = core
        .fill_info(|i| {
            i.ts_ns = 7;
            true
        })
        .unwrap();
    assert_eq!(Rc::as_ptr(&b), first, "the spare is filled again");
    let held = Rc::clone(&b);
    core.recycle(b);
    let c = core.fill_info(|_| true).unwrap();
    assert_ne!(
        Rc::as_ptr(&c),
        Rc::as_ptr(&held),
        "a state still held is not"
    );
    assert_eq!(held.ts_ns, 7);
}

/// Declares payload only, as service detection does: counts the events and payload records
/// that reach it, and names a service for every connection logged.
struct PayloadOnly {
    events: Rc<RefCell<u32>>,
    samples: Rc<RefCell<u32>>,
}

impl Capability for PayloadOnly {
    fn on_event(&mut self, _conn: &mut ConnHandle<'_>, _event: &ConnEvent) {
        *self.events.borrow_mut() += 1;
    }

    fn on_payload(&mut self, chunk: Content<'_>, _dp: &mut dyn ThresholdTarget) {
        if chunk.hdr.flags & conntrack_common::contents::CONTENT_SAMPLE != 0 {
            *self.samples.borrow_mut() += 1;
        }
    }

    fn conn_service(
        &mut self,
        _key: &FlowKey,
        _conn: &Conn,
        _stored: u32,
        out: &mut Vec<&'static str>,
    ) {
        out.push("dns");
    }

    fn events(&self) -> EventMask {
        EventMask::PAYLOAD
    }
}

#[test]
fn a_payload_only_capability_gets_samples_and_names_the_service_without_events() {
    let mut dps: Vec<Box<dyn Datapath>> = vec![Box::new(HostDatapath::new(
        HostConfig::new(&[]).with_service_samples(true),
    ))];
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        dps.push(
            crate::datapath::kernel::replay_datapath(&[], 1024, true)
                .expect("loading the eBPF program"),
        );
    }
    for dp in dps {
        let dir = tempfile::tempdir().unwrap();
        let writer = ConnLogWriter::create(dir.path(), LogFormat::Tsv, false).unwrap();
        let cfg = HostConfig::new(&[]).with_service_samples(true);
        let mut agent = Agent::new(dp, cfg, Timeouts::default(), NetSet::default(), writer);
        let (events, samples) = (Rc::default(), Rc::default());
        agent.register(Box::new(PayloadOnly {
            events: Rc::clone(&events),
            samples: Rc::clone(&samples),
        }));
        // Port 9999 has no UDP analyzer: a datagram is handed over only if it may be a QUIC
        // Initial (a long header), not one of zeros.
        let long_header = |from_a| {
            let mut f = udp(from_a, 10);
            let at = f.len() - 10;
            f[at] = 0xc3;
            f
        };
        packet(&mut agent, &udp(true, 10), 0);
        packet(&mut agent, &udp(false, 10), SEC);
        packet(&mut agent, &long_header(true), 2 * SEC);
        packet(&mut agent, &long_header(false), 3 * SEC);
        agent.finish().unwrap();
        assert_eq!(*events.borrow(), 0, "no event declared, none built");
        assert_eq!(
            *samples.borrow(),
            2,
            "each direction's long-header datagram"
        );
        let log = std::fs::read_to_string(dir.path().join("conn.log")).unwrap();
        let record: Vec<&str> = log.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(record.len(), 1, "{log}");
        assert_eq!(record[0].split('\t').nth(7), Some("dns"), "{log}");
    }
}
