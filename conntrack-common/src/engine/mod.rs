//! The per-packet flow engine: orientation of a new connection, TCP reuse, the per-packet
//! update (history, TCP state machine, sequence space, counters), the fast path for ordinary
//! packets ([`fast`]) and a generic driver ([`process_packet`]) shared by the eBPF program and
//! the host datapath.
//!
//! Everything follows Zeek's packet analysis (TCPSessionAdapter, UDP, ICMP and unknown-IP
//! adapters, CONNSIZE) as summarised in `zeek-conn-semantics.md`. All functions are pure apart
//! from the `Conn` they update; time comes in as `now_ns`. The TCP part lives in [`tcp_update`].

pub mod app_flip;
pub mod fast;
mod tcp_update;

pub use fast::{Fast, FastMeta, fast_open, fast_update};

use crate::conn::{CONN_FLIPPED, CONN_PARTIAL, Conn, ZERO_CONN};
use crate::event::{EventKind, EventRef};
use crate::history::{History, mask};
use crate::key::{FlowKey, tuple_ports};
use crate::packet::{PacketMeta, tcp_flags};
use crate::proto;
use crate::tcp::{EP_ACTIVE, Endpoint, state};
use crate::threshold;

/// Host or eBPF configuration the engine consults.
pub trait EngineConfig {
    /// Zeek's `likely_server_ports` membership of `port` for transport `proto` (6 or 17).
    fn likely_server_port(&self, port: u16, proto: u8) -> bool;

    /// Whether new TCP and UDP connections hand the first payload of each direction to the
    /// agent for service detection (`contents::SAMPLE_BITS`).
    #[inline(always)]
    fn sample_services(&self) -> bool {
        false
    }
}

/// A configuration without likely server ports (Zeek in bare mode without packet protocols).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoServerPorts;

impl EngineConfig for NoServerPorts {
    fn likely_server_port(&self, _port: u16, _proto: u8) -> bool {
        false
    }
}

/// What one packet changed (bitset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes(pub u32);

impl Changes {
    /// Nothing.
    pub const NONE: Changes = Changes(0);
    /// The connection was created by this packet.
    pub const NEW: Changes = Changes(1 << 0);
    /// Zeek's `connection_established` happened.
    pub const ESTABLISHED: Changes = Changes(1 << 1);
    /// A TCP endpoint state changed.
    pub const STATE_CHANGED: Changes = Changes(1 << 2);
    /// The close completed; the close-delay removal is armed (`CONN_CLOSE_ARMED`).
    pub const CLOSED: Changes = Changes(1 << 3);
    /// The roles were flipped.
    pub const FLIPPED: Changes = Changes(1 << 4);
    /// The packet had a bad checksum and only left a C/c letter.
    pub const BAD_CHECKSUM: Changes = Changes(1 << 5);
    /// The packet ended a previous connection with the same key (TCP reuse).
    pub const REUSED: Changes = Changes(1 << 6);
    /// The flow table was full; the packet was not tracked.
    pub const TABLE_FULL: Changes = Changes(1 << 7);
    /// The attempt timer was armed (`CONN_ATTEMPT_ARMED`).
    pub const ATTEMPT_ARMED: Changes = Changes(1 << 8);
    /// TCP left the handshake; the long inactivity timeout applies now.
    pub const HANDSHAKE_LEFT: Changes = Changes(1 << 9);
    /// The table returned no entry even after a successful insert (e.g. the eBPF glue found
    /// the connection's lock busy); nothing was applied and nothing emitted.
    pub const SKIPPED: Changes = Changes(1 << 10);
    /// At least one threshold crossed; which ones is in the bits from [`Changes::CROSSED_SHIFT`]
    /// ([`Changes::crossed`]).
    pub const THRESHOLD_CROSSED: Changes = Changes(1 << 11);
    /// The packet's payload is a service sample (`contents::take_sample`): returned by the
    /// driver to the host datapath, which copies it; never part of an event.
    pub const SAMPLE: Changes = Changes(1 << 12);
    /// With [`Changes::SAMPLE`]: the sample is the originator's (after the packet's flips).
    pub const SAMPLE_ORIG: Changes = Changes(1 << 13);
    /// With [`Changes::SAMPLE`]: only a datagram that may be a QUIC Initial is handed over
    /// (`contents::SAMPLE_QUIC_ONLY`).
    pub const SAMPLE_QUIC_ONLY: Changes = Changes(1 << 14);
    /// The crossed threshold slots (`threshold::bit` values) are stored shifted by this.
    pub const CROSSED_SHIFT: u32 = 16;

    /// Changes reporting the crossed threshold slots `mask` (none if 0).
    #[inline(always)]
    pub fn from_crossed(mask: u32) -> Changes {
        if mask == 0 {
            Changes::NONE
        } else {
            Changes(Changes::THRESHOLD_CROSSED.0 | (mask << Changes::CROSSED_SHIFT))
        }
    }

    /// The threshold slots that crossed (`threshold::bit` values), 0 if none.
    #[inline(always)]
    pub fn crossed(self) -> u32 {
        (self.0 >> Changes::CROSSED_SHIFT) & crate::threshold::ALL_SLOTS
    }

    /// True if all bits of `other` are set.
    #[inline(always)]
    pub fn contains(self, other: Changes) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets the bits of `other`.
    #[inline(always)]
    pub fn insert(&mut self, other: Changes) {
        self.0 |= other.0;
    }
}

impl core::ops::BitOr for Changes {
    type Output = Changes;
    fn bitor(self, rhs: Changes) -> Changes {
        Changes(self.0 | rhs.0)
    }
}

impl core::ops::BitOrAssign for Changes {
    fn bitor_assign(&mut self, rhs: Changes) {
        self.0 |= rhs.0;
    }
}

/// 255.255.255.255, IPv4-mapped.
const BROADCAST: [u8; 16] = [
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
];

/// Zeek's `WantConnection` role decision for the first packet of a connection: true if the
/// packet's destination should become the originator. Never for a responder address of
/// 255.255.255.255, ICMP or other protocols; never for a plain SYN.
pub fn should_flip(meta: &PacketMeta, cfg: &impl EngineConfig) -> bool {
    if addr_eq(&meta.dst, &BROADCAST) {
        return false;
    }
    // The port lookups only where they decide (on eBPF each is a map lookup; a plain SYN,
    // the usual first packet, needs none).
    let src_likely = || cfg.likely_server_port(meta.sport, meta.proto);
    match meta.proto {
        proto::TCP => {
            let syn = meta.tcp_flags & tcp_flags::SYN != 0;
            let ack = meta.tcp_flags & tcp_flags::ACK != 0;
            if syn && !ack {
                return false;
            }
            if !src_likely() {
                return false;
            }
            if !cfg.likely_server_port(meta.dport, meta.proto) {
                return true;
            }
            !(syn && ack) && meta.sport < meta.dport
        }
        proto::UDP => udp_flips(false, meta.sport, meta.dport, cfg),
        _ => false,
    }
}

/// [`should_flip`] for UDP: a datagram from a likely server port to one that is not, unless it
/// is sent to 255.255.255.255 (`to_broadcast`).
#[inline(always)]
pub(crate) fn udp_flips(
    to_broadcast: bool,
    sport: u16,
    dport: u16,
    cfg: &impl EngineConfig,
) -> bool {
    !to_broadcast
        && cfg.likely_server_port(sport, proto::UDP)
        && !cfg.likely_server_port(dport, proto::UDP)
}

/// Initialises `conn` in place for a connection whose first packet is `meta` (orientation
/// decided here). Use this on eBPF, where a `Conn` is too large for the stack.
pub fn init_conn(conn: &mut Conn, meta: &PacketMeta, now_ns: u64, cfg: &impl EngineConfig) {
    // Word stores keep BPF away from `memset`; the eBPF glue's spin lock survives.
    let lock = conn.lock;
    crate::packet::zero_words(conn);
    conn.lock = lock;
    init_zeroed_conn(conn, meta, now_ns, cfg);
}

/// [`init_conn`] for a `conn` that is all zero but (perhaps) its lock word, e.g. an entry just
/// inserted as `ZERO_CONN`: the eBPF glue saves zeroing it twice on every new connection.
pub fn init_zeroed_conn(conn: &mut Conn, meta: &PacketMeta, now_ns: u64, cfg: &impl EngineConfig) {
    let (sp, dp, _) = tuple_ports(meta);
    conn.orig_addr = meta.src;
    conn.resp_addr = meta.dst;
    conn.orig_port = sp;
    conn.resp_port = dp;
    conn.proto = meta.proto;
    conn.ip_version = meta.ip_version;
    conn.start_ns = now_ns;
    conn.last_ns = now_ns;
    let syn = meta.tcp_flags & tcp_flags::SYN != 0;
    let ack = meta.tcp_flags & tcp_flags::ACK != 0;
    if meta.proto == proto::TCP && (!syn || ack) {
        conn.flags |= CONN_PARTIAL;
    }
    if should_flip(meta, cfg) {
        flip_roles(conn);
    }
    conn.flags |= app_flip::attached_analyzer(conn.proto, conn.resp_port, cfg);
    if cfg.sample_services() {
        conn.thr_armed |= crate::contents::initial_sample_bits(conn.proto);
    }
}

/// A new connection for the first packet `meta` (host convenience around [`init_conn`]).
pub fn new_conn(meta: &PacketMeta, now_ns: u64, cfg: &impl EngineConfig) -> Conn {
    let mut c = Conn::ZERO;
    init_conn(&mut c, meta, now_ns, cfg);
    c
}

/// True if `meta` was sent by the connection's originator.
#[inline(always)]
pub fn is_orig(conn: &Conn, meta: &PacketMeta) -> bool {
    let (sp, _, _) = tuple_ports(meta);
    addr_eq(&meta.src, &conn.orig_addr) && sp == conn.orig_port
}

/// Zeek's `Connection::FlipRoles`: swaps addresses, ports, endpoints (states and counters)
/// and appends `^` to the history.
pub fn flip_roles(conn: &mut Conn) {
    swap_roles(conn);
    conn.history.flip();
}

fn swap_roles(conn: &mut Conn) {
    core::mem::swap(&mut conn.orig_addr, &mut conn.resp_addr);
    core::mem::swap(&mut conn.orig_port, &mut conn.resp_port);
    core::mem::swap(&mut conn.orig, &mut conn.resp);
    conn.flags |= CONN_FLIPPED;
    conn.flags &= !CONN_PARTIAL;
}

/// TCP connection reuse (`TCPSessionAdapter::IsReuse`): a SYN, or a SYN+ACK while the
/// originator is still INACTIVE, ends the old connection when it is closed in some sense (an
/// endpoint's close was reported), or when its sequence number differs from the recorded start
/// sequence, except for the SYN/SYN-ACK reversal. UDP, ICMP and others never reuse.
pub fn is_reuse(conn: &Conn, meta: &PacketMeta, _is_orig: bool) -> bool {
    if conn.proto != proto::TCP || meta.tcp_flags & tcp_flags::SYN == 0 {
        return false;
    }
    let ack = meta.tcp_flags & tcp_flags::ACK != 0;
    let conn_orig = if ack {
        if conn.orig.state != state::INACTIVE {
            return false;
        }
        &conn.resp
    } else {
        &conn.orig
    };
    let closed = conn.orig.did_close() || conn.resp.did_close();
    if !closed {
        if meta.seq == conn_orig.start_seq {
            return false;
        }
        if !ack
            && conn_orig.state == state::SYN_ACK_SENT
            && conn.resp.state == state::INACTIVE
            && meta.seq == conn.resp.start_seq
        {
            return false;
        }
    }
    true
}

/// Applies one packet of this connection. `checksum_ok = false` only adds the C/c letter
/// (TCP and UDP) and counts nothing, like Zeek, which drops such packets after the lookup. A
/// packet with [`PacketMeta::l4_dropped`] changes nothing. Thresholds are checked apart, by
/// [`check_thresholds`] (on eBPF in a stage of its own, entered only when one is armed).
pub fn update(conn: &mut Conn, meta: &PacketMeta, now_ns: u64, checksum_ok: bool) -> Changes {
    if meta.l4_dropped() {
        // Zeek's transport analyzer drops the packet after the connection lookup: it may have
        // created (or, by reuse, ended) a connection but leaves no trace in it.
        return Changes::NONE;
    }
    let orig = is_orig(conn, meta);
    match conn.proto {
        proto::TCP => tcp_update::update_tcp(conn, meta, now_ns, checksum_ok, orig),
        proto::UDP => update_udp(conn, meta, now_ns, checksum_ok, orig),
        proto::ICMP | proto::ICMPV6 => update_icmp(conn, meta, now_ns, checksum_ok, orig),
        _ => {
            conn.last_ns = now_ns;
            ep_mut(conn, orig).count_packet(meta.pkts, meta.ip_bytes);
            Changes::NONE
        }
    }
}

/// After [`update`] returned `ch` for `meta`: CONNSIZE's threshold check
/// (`threshold::check_after_packet`) for a packet that was counted. Crossed slots are disarmed
/// and reported with [`Changes::THRESHOLD_CROSSED`]; nothing armed costs one load and branch.
#[inline(always)]
pub fn check_thresholds(conn: &mut Conn, meta: &PacketMeta, now_ns: u64, ch: Changes) -> Changes {
    // CONNSIZE sees only the packets that were counted (not dropped ones, not bad checksums).
    // Only the slot bits: the extraction bits in the same word are not thresholds.
    if conn.thr_armed & crate::threshold::ALL_SLOTS == 0
        || meta.l4_dropped()
        || ch.contains(Changes::BAD_CHECKSUM)
    {
        return Changes::NONE;
    }
    // After a TCP flip the packet's side is the connection's new one.
    let side = is_orig(conn, meta);
    Changes::from_crossed(threshold::check_after_packet(conn, side, now_ns))
}

/// The endpoint of one side (`orig_side`: the originator's).
#[inline(always)]
fn ep_mut(conn: &mut Conn, orig_side: bool) -> &mut Endpoint {
    if orig_side {
        &mut conn.orig
    } else {
        &mut conn.resp
    }
}

/// Sender endpoint, peer endpoint and history, borrowed together.
#[inline(always)]
fn parts(conn: &mut Conn, is_orig: bool) -> (&mut Endpoint, &mut Endpoint, &mut History) {
    let Conn {
        orig,
        resp,
        history,
        ..
    } = conn;
    if is_orig {
        (orig, resp, history)
    } else {
        (resp, orig, history)
    }
}

/// C/c for a bad checksum (logarithmic), counted on the sender.
fn bad_checksum(conn: &mut Conn, is_orig: bool) -> Changes {
    let (ep, _, history) = parts(conn, is_orig);
    history.scaled(&mut ep.chk_cnt, b'C', is_orig);
    Changes::BAD_CHECKSUM
}

/// UDP: `D`/`d` once per direction, payload bytes from the UDP length field, `last_time` only
/// for valid packets; then the attached application analyzer may flip the roles
/// ([`app_flip`]), and CONNSIZE counts the packet for the role it arrived in.
fn update_udp(
    conn: &mut Conn,
    meta: &PacketMeta,
    now_ns: u64,
    checksum_ok: bool,
    is_orig: bool,
) -> Changes {
    if !checksum_ok {
        return bad_checksum(conn, is_orig);
    }
    let (ep, _, history) = parts(conn, is_orig);
    history.check(mask::DATA, b'D', is_orig);
    ep.data_bytes = ep
        .data_bytes
        .wrapping_add(meta.udp_len.saturating_sub(8) as u64);
    ep.flags |= EP_ACTIVE;
    conn.last_ns = now_ns;
    let ch = if app_flip::apply(conn, meta, is_orig) {
        Changes::FLIPPED
    } else {
        Changes::NONE
    };
    // `is_orig` as the packet arrived: after a flip that is the other host's side.
    ep_mut(conn, is_orig).count_packet(meta.pkts, meta.ip_bytes);
    ch
}

/// ICMP: no letters; bytes are the IP payload minus 8; bad checksums are ignored entirely.
fn update_icmp(
    conn: &mut Conn,
    meta: &PacketMeta,
    now_ns: u64,
    checksum_ok: bool,
    is_orig: bool,
) -> Changes {
    if !checksum_ok {
        return Changes::BAD_CHECKSUM;
    }
    let ep = ep_mut(conn, is_orig);
    ep.data_bytes = ep.data_bytes.wrapping_add(meta.payload_len as u64);
    ep.flags |= EP_ACTIVE;
    ep.count_packet(meta.pkts, meta.ip_bytes);
    conn.last_ns = now_ns;
    Changes::NONE
}

/// The flow table as the driver sees it: a BPF hash map on eBPF, a `HashMap` on the host.
pub trait FlowTable {
    /// The connection stored under `key`.
    fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Conn>;
    /// Stores a copy of `conn` under `key` if the key is absent. Returns false only when the
    /// table is full; if the key exists already (a race on eBPF) it is left alone and true is
    /// returned.
    fn insert(&mut self, key: &FlowKey, conn: &Conn) -> bool;
}

/// The event a packet raises once applied: NewConn for a connection it created (also by
/// reuse), StateChanged when the TCP state moved, ThresholdCrossed when only a threshold
/// crossed, else none. One event per packet: a NewConn or StateChanged event reports crossings
/// in its changes too ([`Changes::crossed`]). Shared by the eBPF glue.
#[inline(always)]
pub fn event_after_update(created: Changes, ch: Changes) -> Option<EventKind> {
    if created != Changes::NONE {
        Some(EventKind::NewConn)
    } else if ch.contains(Changes::STATE_CHANGED) {
        Some(EventKind::StateChanged)
    } else if ch.contains(Changes::THRESHOLD_CROSSED) {
        Some(EventKind::ThresholdCrossed)
    } else {
        None
    }
}

/// The per-packet driver: for a packet of an existing connection the fast path
/// ([`fast_update`]), else the full steps on the same entry; for a new connection opened by a
/// plain SYN or a datagram [`fast_open`] on a value inserted whole, for any other (or when
/// `fast_open` declines) [`process_packet_full`]. The fast path changes nothing that the full
/// engine would report, so an applied packet emits no event and returns `Changes::NONE`, as
/// the full engine does for it. One lookup serves both paths.
pub fn process_packet<T: FlowTable, C: EngineConfig>(
    table: &mut T,
    meta: &PacketMeta,
    now_ns: u64,
    checksum_ok: bool,
    cfg: &C,
    emit: impl FnMut(&EventRef<'_>),
) -> Changes {
    let key = FlowKey::from_meta(meta);
    process_packet_keyed(table, &key, meta, now_ns, checksum_ok, cfg, emit)
}

/// [`process_packet`] for a caller that has the packet's key (`FlowKey::from_meta(meta)`)
/// and needs it after (the host engine's sample records carry it).
pub fn process_packet_keyed<T: FlowTable, C: EngineConfig>(
    table: &mut T,
    key: &FlowKey,
    meta: &PacketMeta,
    now_ns: u64,
    checksum_ok: bool,
    cfg: &C,
    mut emit: impl FnMut(&EventRef<'_>),
) -> Changes {
    let Some(conn) = table.get_mut(key) else {
        if let Some(fm) = FastMeta::opening(meta, checksum_ok) {
            // A plain SYN or a datagram opening a connection: built whole, then inserted (as
            // on eBPF).
            let mut c = Conn::ZERO;
            if let Some(ch) = fast_open(&mut c, &fm, meta.window_scale, cfg, now_ns)
                && table.insert(key, &c)
            {
                let ch = ch | Changes::NEW;
                emit(&EventRef {
                    kind: EventKind::NewConn,
                    changes: ch,
                    ts_ns: now_ns,
                    key,
                    meta,
                    conn: Some(&c),
                });
                return ch;
            }
            // A flip or an analyzer at creation, or a full table: the full driver.
        }
        return full_keyed(table, key, meta, now_ns, checksum_ok, cfg, emit);
    };
    if let Some(fm) = FastMeta::from_meta(meta, checksum_ok)
        && fast_update(conn, &fm, now_ns) == Fast::Applied
    {
        return Changes::NONE;
    }
    let packet = Packet {
        meta,
        now_ns,
        checksum_ok,
    };
    apply_packet(conn, key, Changes::NONE, &packet, cfg, &mut emit)
}

/// The full per-packet driver: lookup, TCP reuse (emits `ReuseRemoved` with the old
/// connection, then restarts it in place), creation (inserts a zeroed value, initialises it in
/// place; `TableFull` with the packet if the insert fails), update. Emits `NewConn` after a new
/// connection's first packet and `StateChanged` after a packet that changed a TCP state of an
/// existing connection, ThresholdCrossed after one that only crossed thresholds. A packet with
/// [`PacketMeta::l4_dropped`] is looked up, may create or reuse, but is not applied. Returns
/// the packet's changes.
pub fn process_packet_full<T: FlowTable, C: EngineConfig>(
    table: &mut T,
    meta: &PacketMeta,
    now_ns: u64,
    checksum_ok: bool,
    cfg: &C,
    emit: impl FnMut(&EventRef<'_>),
) -> Changes {
    let key = FlowKey::from_meta(meta);
    full_keyed(table, &key, meta, now_ns, checksum_ok, cfg, emit)
}

/// [`process_packet_full`] with the packet's key already made.
fn full_keyed<T: FlowTable, C: EngineConfig>(
    table: &mut T,
    key: &FlowKey,
    meta: &PacketMeta,
    now_ns: u64,
    checksum_ok: bool,
    cfg: &C,
    mut emit: impl FnMut(&EventRef<'_>),
) -> Changes {
    let mut created = Changes::NONE;
    if table.get_mut(key).is_none() {
        if !table.insert(key, &ZERO_CONN) {
            emit(&EventRef {
                kind: EventKind::TableFull,
                changes: Changes::TABLE_FULL,
                ts_ns: now_ns,
                key,
                meta,
                conn: None,
            });
            return Changes::TABLE_FULL;
        }
        created = Changes::NEW;
    }
    let Some(conn) = table.get_mut(key) else {
        return Changes::SKIPPED;
    };
    let packet = Packet {
        meta,
        now_ns,
        checksum_ok,
    };
    apply_packet(conn, key, created, &packet, cfg, &mut emit)
}

/// A packet as the driver hands it on.
struct Packet<'a> {
    meta: &'a PacketMeta,
    now_ns: u64,
    checksum_ok: bool,
}

/// The driver's steps once the packet's entry is found (`created`: it was just inserted):
/// TCP reuse, initialisation of a new connection, update, thresholds, the event.
fn apply_packet<C: EngineConfig>(
    conn: &mut Conn,
    key: &FlowKey,
    mut created: Changes,
    packet: &Packet<'_>,
    cfg: &C,
    emit: &mut impl FnMut(&EventRef<'_>),
) -> Changes {
    let Packet {
        meta,
        now_ns,
        checksum_ok,
    } = *packet;
    if created == Changes::NONE && is_reuse(conn, meta, is_orig(conn, meta)) {
        emit(&EventRef {
            kind: EventKind::ReuseRemoved,
            changes: Changes::REUSED,
            ts_ns: now_ns,
            key,
            meta,
            conn: Some(conn),
        });
        created = Changes::NEW | Changes::REUSED;
    }
    if created != Changes::NONE {
        init_conn(conn, meta, now_ns, cfg);
        if conn.has_flag(CONN_FLIPPED) {
            created |= Changes::FLIPPED;
        }
    }
    let ch = update(conn, meta, now_ns, checksum_ok) | created;
    let ch = ch | check_thresholds(conn, meta, now_ns, ch);
    // Decided under the lock before the event, as the eBPF threshold stage does.
    // Payload first: most packets of a connection still sampled are its handshake's, with
    // none, and then its side need not be worked out.
    let sample = if conn.thr_armed & crate::contents::SAMPLE_BITS != 0 && meta.payload_len != 0 {
        let side = is_orig(conn, meta);
        let quic_only = if conn.thr_armed & crate::contents::SAMPLE_QUIC_ONLY != 0 {
            Changes::SAMPLE_QUIC_ONLY.0
        } else {
            0
        };
        match crate::contents::take_sample(conn, meta, checksum_ok, side) {
            true if side => Changes(Changes::SAMPLE.0 | Changes::SAMPLE_ORIG.0 | quic_only),
            true => Changes(Changes::SAMPLE.0 | quic_only),
            false => Changes::NONE,
        }
    } else {
        Changes::NONE
    };
    if let Some(kind) = event_after_update(created, ch) {
        emit(&EventRef {
            kind,
            changes: ch,
            ts_ns: now_ns,
            key,
            meta,
            conn: Some(conn),
        });
    }
    ch | sample
}

/// 16-byte address equality as two u64 compares (`==` on arrays is a `memcmp` call on BPF).
#[inline(always)]
pub fn addr_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    crate::key::addr_words(a) == crate::key::addr_words(b)
}

#[cfg(test)]
mod app_flip_tests;
#[cfg(test)]
mod fast_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod snaplen_tests;
#[cfg(test)]
mod tests;
