//! The agent core shared by `read` and `run`: a [`Datapath`] (where the engine runs), the
//! [`Tracker`] (Zeek's timers), uids, local_nets and the conn.log writer.

use crate::capture::tunnels::Hop;
use crate::core::event_uid::EventUid;
use crate::core::events::{Capability, ConnEvent, EventCore, Need, RemovalReason};
use crate::core::thresholds::{DurationMode, RawCrossing, Thresholds};
use crate::core::tracker::{ConnView, Observed, Released, Removal, Timeouts, Tracker};
use crate::core::tunnels::{Encap, Tunnels};
use crate::core::uid::{Uid, UidGen};
use crate::datapath::host::{HostConfig, HostDatapath};
use crate::datapath::{Content, Datapath};
use crate::logs::conn_log::{ConnExtra, ConnLogWriter};
use crate::logs::conn_tsv::RecordUid;
use crate::logs::tunnel_log::TunnelLog;
use crate::util::site::NetSet;
use conntrack_common::conn::{CONN_ESTABLISHED, Conn};
use conntrack_common::engine::Changes;
use conntrack_common::event::{ConnChange, Event, EventKind};
use conntrack_common::event::{ENCAP_CHANGED, ENCAP_NEW, ENCAP_TYPE_SHIFT, EncapEvent};
use conntrack_common::key::FlowKey;
use conntrack_common::packet::{PacketMeta, parse_ip};
use conntrack_common::tunnel::{EncapChange, TunnelType};

mod handover;
mod targets;
mod tunnels;

use targets::{Datapaths, PayloadTarget, TimerView};

/// Totals for the end-of-run summary.
#[derive(Debug, Default, Clone)]
pub struct AgentStats {
    pub conns_logged: u64,
    /// Records logged by removal reason, indexed by `RemovalReason as usize`: counted once
    /// per record, an array rather than a map keyed by the reason's name, which hashed a
    /// string each time.
    pub by_removal: [u64; REMOVAL_REASONS],
    pub table_full: u64,
    pub reuse: u64,
}

/// Room for every [`RemovalReason`] in [`AgentStats`].
pub const REMOVAL_REASONS: usize = 8;
const _: () = assert!((RemovalReason::Evicted as usize) < REMOVAL_REASONS);

type TrackKey = FlowKey;

pub struct Agent {
    pub dp: Box<dyn Datapath>,
    /// Connections whose first packet found the kernel's table full: the kernel hands such
    /// packets over (TableFull events) and the agent runs the same engine on them here, so
    /// they are still logged.
    overflow: HostDatapath,
    tracker: Tracker<TrackKey>,
    uid_gen: UidGen,
    local_nets: NetSet,
    writer: ConnLogWriter,
    events: Vec<Event>,
    /// The connections the last timers removed, the buffer kept for the next.
    expired: Vec<(TrackKey, Removal, Released)>,
    /// Content records being delivered (kept for its allocation).
    chunks: Vec<crate::datapath::ContentChunk>,
    /// conn.log's `service` of the record being written (reused).
    service: Vec<&'static str>,
    /// Capabilities and the thresholds they set.
    core: EventCore,
    /// The other logs capabilities write (conn_long.log, removal.log): rotated with conn.log.
    logs: Vec<crate::logs::rotate::SharedLog>,
    /// Outputs besides `logs` that count their write errors.
    health: Vec<std::sync::Arc<crate::logs::health::LogHealth>>,
    /// Tunnel decapsulation's parents and tunnel.log (`read --tunnel-max-depth`); None: off,
    /// and no packet pays for it.
    tunnels: Option<Box<Tunnels>>,
    /// The first packets' link layers, when conn.log has the MAC or VLAN columns.
    link_layers: Option<crate::core::link_layer::LinkLayers>,
    pub stats: AgentStats,
}

/// The crossings an event reports (with the connection right after the packet), with the side
/// of the packet that caused them.
fn raw_crossing(ev: &ConnChange, conn: Option<&Conn>) -> Option<RawCrossing> {
    let slots = ev.crossed();
    let conn = conn?;
    (slots != 0).then(|| RawCrossing {
        slots,
        values: conn.thr,
        is_orig: ev.from_orig(),
    })
}

/// The service word of a connection let go: the one its datapath entry kept (`kept`: the
/// host engine keeps it there, `Datapath::service_word`), else the tracker record's.
fn service_word(kept: Option<u32>, tracked: u32) -> u32 {
    match kept {
        Some(word) if word != 0 => word,
        _ => tracked,
    }
}

fn removal_reason(r: Removal) -> Option<RemovalReason> {
    match r {
        Removal::Inactivity => Some(RemovalReason::Inactivity),
        Removal::Attempt => Some(RemovalReason::Attempt),
        Removal::Expire => Some(RemovalReason::Expire),
        Removal::Closed => Some(RemovalReason::Closed),
        Removal::Drain => Some(RemovalReason::Drain),
        Removal::Gone => None,
    }
}

impl Agent {
    pub fn new(
        dp: Box<dyn Datapath>,
        engine_cfg: HostConfig,
        timeouts: Timeouts,
        local_nets: NetSet,
        writer: ConnLogWriter,
    ) -> Self {
        Self {
            dp,
            overflow: HostDatapath::new(engine_cfg),
            tracker: Tracker::new(timeouts),
            uid_gen: UidGen::new(),
            local_nets,
            writer,
            events: Vec::new(),
            expired: Vec::new(),
            chunks: Vec::new(),
            service: Vec::new(),
            core: EventCore::new(Thresholds::new(DurationMode::NextPacket)),
            logs: Vec::new(),
            health: Vec::new(),
            tunnels: None,
            link_layers: None,
            stats: AgentStats::default(),
        }
    }

    /// Fills conn.log's MAC/VLAN columns (when its writer has them): the datapath reports each
    /// connection's first link layer from now on, and it is kept until the connection is
    /// logged.
    pub fn enable_link_layers(&mut self) -> anyhow::Result<()> {
        if self.writer.columns().l2() {
            self.dp.set_l2_events(true)?;
            self.link_layers = Some(Default::default());
        }
        Ok(())
    }

    /// Adds a capability module; it receives the events of every connection from now on.
    pub fn register(&mut self, cap: Box<dyn Capability>) {
        self.core.register(cap);
    }

    /// How duration thresholds fire: `read` keeps Zeek's next-packet rule, `run` adds timers.
    pub fn set_duration_mode(&mut self, mode: DurationMode) {
        self.core.set_duration_mode(mode);
    }

    /// Delivers `events` (and the `crossed` thresholds) for connection `key` as of `ts_ns`,
    /// with its state `conn`, or as the datapath holds it now when `None` (events carry
    /// what changed, not the connection: in replay the table is read right after the packet,
    /// live it may have moved on since).
    fn deliver(
        &mut self,
        key: FlowKey,
        ts_ns: u64,
        conn: Option<&Conn>,
        events: &[ConnEvent],
        crossed: Option<RawCrossing>,
    ) {
        match self.core.needs(&key, events, crossed.is_some()) {
            Need::Nothing => return,
            Need::KeepState => {
                let (dp, overflow) = (&self.dp, &self.overflow);
                self.core.keep_state(&key, ts_ns, |kept| match conn {
                    Some(c) => {
                        *kept = *c;
                        true
                    }
                    None => {
                        let mut put = |c: &Conn| *kept = *c;
                        dp.with_conn(&key, &mut put) || overflow.with_conn(&key, &mut put)
                    }
                });
                return;
            }
            Need::Deliver => {}
        }
        let (dp, overflow, tracker) = (&self.dp, &self.overflow, &self.tracker);
        let info = self.core.fill_info(|info| {
            match conn {
                Some(c) => info.conn = *c,
                None => {
                    let mut found = false;
                    let mut put = |c: &Conn| {
                        info.conn = *c;
                        found = true;
                    };
                    if !dp.with_conn(&key, &mut put) {
                        overflow.with_conn(&key, &mut put);
                    }
                    if !found {
                        // Gone already (live: removed since the event); its removal reports it.
                        return false;
                    }
                }
            }
            info.key = key;
            info.uid = EventUid::new(tracker.uid(&key));
            info.ts_ns = ts_ns;
            true
        });
        let Some(info) = info else {
            return;
        };
        let mut target = Datapaths {
            main: self.dp.as_mut(),
            overflow: &mut self.overflow,
        };
        self.core.deliver_shared(&mut target, info, events, crossed);
        self.apply_inactivity_requests();
    }

    /// Hands the per-connection inactivity timeouts capabilities asked for to the tracker.
    #[inline]
    fn apply_inactivity_requests(&mut self) {
        // Rarely anything to take, and this runs up to three times a packet.
        if self.core.has_inactivity_requests() {
            self.take_inactivity_requests();
        }
    }

    fn take_inactivity_requests(&mut self) {
        for (key, timeout) in self.core.take_inactivity_requests() {
            let last = self.dp.lookup(&key).or_else(|| self.overflow.lookup(&key));
            if let Some(c) = last {
                let ns = crate::core::inactivity::timeout_ns(timeout);
                self.tracker.set_inactivity(&key, ns, c.last_ns as i64);
            }
        }
    }

    /// Ticks `log` with network time as conn.log is (interval rotation of an idle log).
    pub fn add_log(&mut self, log: crate::logs::rotate::SharedLog) {
        self.logs.push(log);
    }

    /// Another output whose write errors the summary and metrics report (alerts.log,
    /// extracted files).
    pub fn add_health(&mut self, health: std::sync::Arc<crate::logs::health::LogHealth>) {
        self.health.push(health);
    }

    /// New inactivity timeouts (SIGHUP): see [`Tracker::set_timeouts`].
    pub fn set_timeouts(&mut self, t: crate::core::tracker::Timeouts) {
        self.tracker.set_timeouts(t);
    }

    /// Timers per advance; see [`Tracker::set_expire_batch`].
    pub fn set_expire_batch(&mut self, n: usize) {
        self.tracker.set_expire_batch(n);
    }

    /// True if the last advance left due timers for the next (a batch was full).
    pub fn timers_behind(&self) -> bool {
        self.tracker.behind()
    }

    pub fn open_conns(&self) -> usize {
        self.tracker.len()
    }

    /// Network time moves to `now_ns`: due timers fire (before the packet is processed).
    pub fn advance(&mut self, now_ns: i64) -> anyhow::Result<()> {
        // A log rotation due by `now_ns`: the timers due before it fire first, so that their
        // records go to the file of their time (Zeek runs timers in time order).
        if let Some(at) = self.writer.next_rotation_ns()
            && at <= now_ns
            && at > self.tracker.network_time()
        {
            self.advance_timers(at - 1)?;
        }
        self.advance_timers(now_ns)
    }

    fn advance_timers(&mut self, now_ns: i64) -> anyhow::Result<()> {
        if self.core.has_due(now_ns.max(0) as u64) {
            // Duration timers first: a connection removed at the same instant still reports.
            let mut target = Datapaths {
                main: self.dp.as_mut(),
                overflow: &mut self.overflow,
            };
            let tracker = &self.tracker;
            self.core.advance(&mut target, now_ns.max(0) as u64, &|k| {
                tracker.uid(k).as_ref().map(Uid::render)
            });
        }
        // Timeouts asked for since the last packet count from now on.
        self.apply_inactivity_requests();
        if self.tracker.advance_idle(now_ns) {
            // No timer due (most packets): only the logs' clocks move.
            return self.tick_logs(now_ns);
        }
        let mut view = TimerView {
            main: self.dp.as_mut(),
            overflow: &mut self.overflow,
            core: &mut self.core,
            now_ns: now_ns.max(0) as u64,
        };
        let mut removed = std::mem::take(&mut self.expired);
        self.tracker.advance_with(now_ns, &mut view, &mut removed);
        // What `connection_timing_out` handlers asked for.
        self.apply_inactivity_requests();
        for (k, why, released) in removed.drain(..) {
            self.remove_and_log(&k, why, Some(released))?;
        }
        self.expired = removed;
        self.tick_logs(now_ns)
    }

    /// Network time `now_ns` to the logs: an idle log still rotates on time.
    fn tick_logs(&mut self, now_ns: i64) -> anyhow::Result<()> {
        for log in &self.logs {
            log.borrow_mut().tick(now_ns)?;
        }
        self.writer.tick(now_ns)
    }

    /// One frame (Ethernet) through the datapath, then the events it produced (the tests'
    /// frames, and a replay's packets with their link layer when conn.log has the MAC/VLAN
    /// columns; otherwise a replay hands IP packets to `process_ip`).
    pub fn process(&mut self, frame: &[u8], ts_ns: i64, checksum_ok: bool) -> anyhow::Result<()> {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let r = self
            .dp
            .process(frame, ts_ns as u64, checksum_ok, &mut events);
        for ev in &events {
            self.handle_event(ev, ts_ns)?;
        }
        self.events = events;
        self.deliver_contents(frame);
        r.map_err(anyhow::Error::from)
    }

    /// One IP packet (no link layer, IP version `version`) through the datapath, then the
    /// events it produced: `process` of the frame `synth_ethernet` makes of it, which is
    /// made (in `scratch`) only for a datapath that needs a frame. `view`: `ip_view(ip)`, if
    /// the caller has it (the host engine then does not read the IP header again).
    pub fn process_ip(
        &mut self,
        version: u8,
        ip: &[u8],
        view: Option<&conntrack_common::packet::IpView>,
        ts_ns: i64,
        checksum_ok: bool,
        scratch: &mut Vec<u8>,
    ) -> anyhow::Result<()> {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let r = self.dp.process_ip(
            version,
            ip,
            view,
            ts_ns as u64,
            checksum_ok,
            &mut events,
            scratch,
        );
        for ev in &events {
            self.handle_event(ev, ts_ns)?;
        }
        self.events = events;
        if self.tunnels.is_some() && r.is_ok() {
            self.check_encap(ip);
        }
        // The datapath said with the packet whether it left contents (a packet it refused
        // left none of its own, but the datapath is asked as after `process`).
        let pending = match &r {
            Ok(p) => p.contents,
            Err(_) => self.dp.contents_pending(),
        };
        if pending && self.core.wants_payload() {
            self.deliver_pending_contents(ip);
        }
        r.map(|_| ()).map_err(anyhow::Error::from)
    }

    /// Content extraction and service samples: hands the payload records the datapath
    /// produced for `packet`, the packet just processed, to the capabilities (after the
    /// packet's events).
    #[inline]
    pub fn deliver_contents(&mut self, packet: &[u8]) {
        // Checked inline: after most packets there is nothing to deliver.
        if self.core.wants_payload() && self.dp.contents_pending() {
            self.deliver_pending_contents(packet);
        }
    }

    // Cold: once per connection's first data, not per packet; kept out of the packet path's
    // instruction cache lines (measured: fewer instruction cache misses in replay).
    #[cold]
    #[inline(never)]
    fn deliver_pending_contents(&mut self, packet: &[u8]) {
        // The sample the datapath left in the packet, if any, comes first.
        let mut chunks = std::mem::take(&mut self.chunks);
        if let Some((hdr, at)) = self.dp.take_contents(&mut chunks)
            && let Some(data) = packet.get(at)
        {
            self.deliver_payload(Content { hdr: &hdr, data });
        }
        for c in &chunks {
            self.deliver_payload(c.content());
        }
        chunks.clear();
        self.chunks = chunks;
    }

    /// One payload record to the capabilities that take payload.
    fn deliver_payload(&mut self, c: Content<'_>) {
        let mut target = PayloadTarget {
            dps: Datapaths {
                main: self.dp.as_mut(),
                overflow: &mut self.overflow,
            },
            tracker: &mut self.tracker,
        };
        self.core.payload(&mut target, c);
    }

    pub fn handle_event(&mut self, ev: &Event, ts_ns: i64) -> anyhow::Result<()> {
        match ev {
            Event::Conn(c) => self.conn_changed(c, None, ts_ns),
            Event::NewConnL2(l) => {
                if let Some(ls) = &mut self.link_layers {
                    ls.opened(l);
                }
                self.conn_changed(&l.change, None, ts_ns)
            }
            Event::Snapshot(s) if s.change.kind() == Some(EventKind::ReuseRemoved) => {
                // The datapath already restarted the key: log the old connection's copy.
                let k = s.change.key;
                self.stats.reuse += 1;
                let removed = [ConnEvent::Removed(RemovalReason::Reuse)];
                self.deliver(k, s.change.ts_ns, Some(&s.conn), &removed, None);
                self.dp.forget_contents(&k);
                let released = self.tracker.forget(&k).unwrap_or_default();
                // The entry holds the new connection, but no sample of it came yet (they
                // come after the packet's events): the word is the old one's.
                let kept = self.dp.service_word(&k).map(std::mem::take);
                let service = service_word(kept, released.service);
                let uid = self.named(Some(released.uid));
                self.log_conn(&k, &s.conn, uid, service, RemovalReason::Reuse)
            }
            Event::Snapshot(s) => self.conn_changed(&s.change, Some(&s.conn), ts_ns),
            Event::Encap(e) => self.encap_reported(e, ts_ns),
            Event::TableFull(t) => {
                self.stats.table_full += 1;
                if t.changes & Changes::TABLE_FULL.0 != 0 {
                    let checksum_ok = t.changes & Changes::BAD_CHECKSUM.0 == 0;
                    let mut evs = Vec::new();
                    self.overflow
                        .process_meta(&t.meta, t.ts_ns, checksum_ok, &mut evs);
                    // The host table never reports TableFull, so this recursion ends here.
                    for e in &evs {
                        self.handle_event(e, ts_ns)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// NewConn, StateChanged, ThresholdCrossed: the tracker's timers, then the capabilities
    /// (with `conn`, the connection right after the packet, when the event carries it).
    fn conn_changed(
        &mut self,
        ev: &ConnChange,
        conn: Option<&Conn>,
        ts_ns: i64,
    ) -> anyhow::Result<()> {
        let k = ev.key;
        let crossed = raw_crossing(ev, conn);
        let kind = ev.kind();
        if kind == Some(EventKind::ThresholdCrossed) {
            self.deliver(k, ev.ts_ns, conn, &[], crossed);
            return Ok(());
        }
        let is_new = kind == Some(EventKind::NewConn);
        let v = ConnView::of_change(ev);
        let est = ev.has_flag(CONN_ESTABLISHED);
        let uid_gen = &mut self.uid_gen;
        let Observed {
            fresh,
            newly_established,
        } = self
            .tracker
            .observe_named(&k, &v, ts_ns, is_new, est, || uid_gen.next_uid());
        if fresh {
            self.forget_replaced(&k);
        }
        // New for a connection the tracker did not know, also when its NewConn event was lost
        // (a resync reports it as a state change): the capabilities never heard of it.
        // StateChanged only when a capability listens for those: most events are nothing
        // else, and delivering one costs a lookup of the connection.
        if fresh && let Some(t) = self.tunnels.as_mut() {
            t.on_new(k);
        }
        let first = if fresh {
            Some(ConnEvent::New)
        } else {
            self.core
                .wants_state_changes()
                .then_some(ConnEvent::StateChanged)
        };
        let established = newly_established.then_some(ConnEvent::Established);
        let mut events = [ConnEvent::New; 2];
        let mut n = 0;
        for e in first.into_iter().chain(established) {
            events[n] = e;
            n += 1;
        }
        if n > 0 || crossed.is_some() {
            self.deliver(k, ev.ts_ns, conn, &events[..n], crossed);
        }
        Ok(())
    }

    /// After the tracker gave `k` a fresh slot: the connection that held the key before, if
    /// its removal was never reported, is logged by no one; what its service word holds goes.
    fn forget_replaced(&mut self, k: &FlowKey) {
        let replaced = self.tracker.take_replaced_service();
        if replaced != 0 {
            self.core.forgotten_service(k, replaced);
        }
    }

    /// `uid` as given, or a new one when the connection had none (never seen by the tracker).
    fn named(&mut self, uid: Option<Uid>) -> Uid {
        match uid {
            Some(u) if u != Uid::UNSET => u,
            _ => self.uid_gen.next_uid(),
        }
    }

    /// Logs `k`, which the tracker removed (`released`: its uid and service word) or never had.
    fn remove_and_log(
        &mut self,
        k: &TrackKey,
        why: Removal,
        released: Option<Released>,
    ) -> anyhow::Result<()> {
        let Some(reason) = removal_reason(why) else {
            // Gone from the datapath: no final state to report or log.
            self.evicted(k, released.map_or(0, |r| r.service));
            return Ok(());
        };
        let removed = self.dp.remove_with_service(k);
        match removed.or_else(|| self.overflow.remove(k).map(|c| (c, 0))) {
            Some((c, kept)) => {
                let mut released = released.unwrap_or_default();
                released.service = service_word(Some(kept), released.service);
                self.log_removed(k, c, reason, Some(released))
            }
            None => {
                self.evicted(k, released.map_or(0, |r| r.service));
                Ok(())
            }
        }
    }

    /// Removal hooks, then conn.log, for `c`, just taken from the datapath.
    fn log_removed(
        &mut self,
        k: &TrackKey,
        c: Conn,
        reason: RemovalReason,
        released: Option<Released>,
    ) -> anyhow::Result<()> {
        let Released { uid, service } = released.unwrap_or_default();
        let uid = self.named(Some(uid));
        if !self.core.is_idle() {
            let removed = [ConnEvent::Removed(reason)];
            let now = self.tracker_now();
            let needed = self.core.needs(k, &removed, false) == Need::Deliver;
            let info = needed.then(|| {
                self.core.fill_info(|info| {
                    info.key = *k;
                    info.uid = EventUid::new(Some(uid.clone()));
                    info.conn = c;
                    info.ts_ns = now;
                    true
                })
            });
            if let Some(Some(info)) = info {
                let mut target = Datapaths {
                    main: self.dp.as_mut(),
                    overflow: &mut self.overflow,
                };
                self.core.deliver_shared(&mut target, info, &removed, None);
            }
            // Extraction's counters (a capability may have turned it on without events).
            self.dp.forget_contents(k);
        }
        self.log_conn(k, &c, uid, service, reason)
    }

    /// The shutdown drain of a datapath that removes in batches (the kernel's map: one system
    /// call per few thousand connections instead of one each, on a thread that works ahead),
    /// in the table's order.
    fn drain_in_batches(&mut self) -> anyhow::Result<()> {
        let Some(batches) = self.dp.drain_batches() else {
            return Ok(());
        };
        for batch in batches {
            for (k, c) in batch {
                let released = self.tracker.forget(&k);
                self.log_removed(&k, c, RemovalReason::Drain, released)?;
            }
        }
        Ok(())
    }

    /// The datapath lost `k`: its removal hooks still run (with the last state seen).
    /// `k` left the datapath without a record to log; `service`: the word its tracker
    /// record kept.
    fn evicted(&mut self, k: &TrackKey, service: u32) {
        if let Some(ls) = &mut self.link_layers {
            ls.forget(k);
        }
        self.core.forgotten_service(k, service);
        let now = self.tracker_now();
        let mut target = Datapaths {
            main: self.dp.as_mut(),
            overflow: &mut self.overflow,
        };
        self.core.evicted(&mut target, k, now);
    }

    /// Network time as the tracker knows it (for events without a packet).
    fn tracker_now(&self) -> u64 {
        self.tracker.network_time().max(0) as u64
    }

    /// conn.log's record of `k` (`c`, its final state), with `uid` and the service word kept
    /// for it (by the host engine's table entry or the tracker's record: [`service_word`]).
    fn log_conn(
        &mut self,
        k: &TrackKey,
        c: &Conn,
        uid: Uid,
        service_word: u32,
        why: RemovalReason,
    ) -> anyhow::Result<()> {
        let local = self.local_of(c);
        let mut service = std::mem::take(&mut self.service);
        if self.core.is_idle() {
            service.clear();
        } else {
            // After the Removed event, which the capabilities handled first.
            self.core.conn_service(k, c, service_word, &mut service);
        }
        if let Some(name) = self.tunnels.as_ref().and_then(|t| t.service(k, c))
            && !service.contains(&name)
        {
            service.push(name);
        }
        let l2 = match &mut self.link_layers {
            Some(ls) => ls.take(k, c),
            None => Default::default(),
        };
        // Network time decides interval rotation (packet time in `read`).
        let now = Some(self.tracker.network_time()).filter(|&t| t > 0);
        let parents = match self.tunnels.as_mut() {
            Some(t) => t.removed(k, self.tracker.network_time())?,
            None => Vec::new(),
        };
        let text;
        let uid = match &uid {
            Uid::Random { hi, lo } => RecordUid::Random { hi: *hi, lo: *lo },
            Uid::Given(_) => {
                text = uid.render();
                RecordUid::Text(&text)
            }
        };
        let extra = ConnExtra {
            service: &service,
            l2: &l2,
            tunnel_parents: &parents,
        };
        let written = self.writer.write_conn(c, uid, local, &extra, now);
        self.service = service;
        written?;
        self.stats.conns_logged += 1;
        if let Some(n) = self.stats.by_removal.get_mut(why as usize) {
            *n += 1;
        }
        Ok(())
    }

    /// conn.log's local_orig and local_resp of `c` (unset without local_nets).
    fn local_of(&self, c: &Conn) -> Option<(bool, bool)> {
        (!self.local_nets.is_empty()).then(|| {
            (
                self.local_nets.contains_bytes(&c.orig_addr),
                self.local_nets.contains_bytes(&c.resp_addr),
            )
        })
    }

    /// End of input: attempt timers fire, then everything left is drained (logged).
    pub fn finish(&mut self) -> anyhow::Result<()> {
        // Pending polls run once more while their connections still exist.
        let now = self.tracker_now();
        let mut target = Datapaths {
            main: self.dp.as_mut(),
            overflow: &mut self.overflow,
        };
        let tracker = &self.tracker;
        self.core.finish_polls(&mut target, now, &|k| {
            tracker.uid(k).as_ref().map(Uid::render)
        });
        let (dp, ov) = (&self.dp, &self.overflow);
        let removed = self.tracker.finish_attempts(&mut |k| {
            dp.lookup(k)
                .or_else(|| ov.lookup(k))
                .map(|c| ConnView::of(&c))
        });
        for (k, why, released) in removed {
            self.remove_and_log(&k, why, Some(released))?;
        }
        self.drain_in_batches()?;
        // Key by key, in key order: a datapath without batches, and what a batch drain left.
        for (k, why, released) in self.tracker.drain() {
            self.remove_and_log(&k, why, Some(released))?;
        }
        // Anything the datapath still holds that the tracker never saw (e.g. lost events).
        let mut rest: Vec<FlowKey> = self.dp.keys();
        rest.extend(self.overflow.keys());
        rest.sort();
        for k in rest {
            self.remove_and_log(&k, Removal::Drain, None)?;
        }
        self.flush_capability_logs()?;
        self.writer.close()
    }

    /// What became of the records of conn.log and the capabilities' logs.
    pub fn log_health(&self) -> Vec<std::sync::Arc<crate::logs::health::LogHealth>> {
        let mut all = vec![self.writer.health()];
        all.extend(self.logs.iter().map(|l| l.borrow().health()));
        all.extend(self.health.iter().cloned());
        all
    }

    /// conn.log and the capabilities' logs (removal.log) to disk.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.flush_capability_logs()?;
        self.writer.flush()
    }

    fn flush_capability_logs(&mut self) -> anyhow::Result<()> {
        for log in &self.logs {
            log.borrow_mut().flush()?;
        }
        Ok(())
    }

    /// Handover: logs only what a successor cannot see (connections in the agent's own
    /// overflow table), then closes the logs; the kernel's connections stay open.
    pub fn close_for_handover(&mut self) -> anyhow::Result<()> {
        let mut rest = self.overflow.keys();
        rest.sort();
        for k in rest {
            let released = self.tracker.forget(&k);
            self.remove_and_log(&k, Removal::Drain, released)?;
        }
        self.flush_capability_logs()?;
        self.writer.close()
    }
}
