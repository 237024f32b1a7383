//! The fast path for ordinary packets of existing connections.
//!
//! Most packets of a connection only move counters and the TCP sequence space: an in-order
//! data segment or pure ACK of an established stream, a datagram of a UDP flow both sides
//! already used, an ICMP echo. [`fast_update`] recognises such a packet from the few fields in
//! [`FastMeta`] and applies it; every other packet is [`Fast::NeedFull`] and goes through the
//! full engine ([`super::process_packet_full`], on eBPF the stage chain) unchanged.
//!
//! The contract, checked by `fast_tests`: for any connection state,
//! - `NeedFull` writes nothing;
//! - `Applied` leaves exactly the state that `update` + `check_thresholds` leave, and those
//!   report `Changes::NONE` (so the driver emits no event) and extract no payload.
//!
//! Everything is decided from a shared borrow first ([`plan`]); only then is anything written
//! ([`commit`]). The code follows the eBPF rules of the crate (no slices, no panics, one
//! bounded loop: the threshold slots) and copies no aggregate, so the eBPF glue can run it
//! on the map value under the connection's lock.

use super::{Changes, EngineConfig, app_flip, ep_mut, parts, tcp_update};
use crate::conn::{
    CONN_ANALYZER_DECIDED, CONN_DNS_ANALYZER, CONN_NTP_ANALYZER, CONN_PARTIAL,
    CONN_TUNNEL_DETECTED, Conn,
};
use crate::contents;
use crate::history::mask;
use crate::key::{addr_words, tuple_ports_of, words_addr};
use crate::packet::{
    META_L4_BAD_HEADER, META_L4_TRUNCATED, META_PAYLOAD_CUT, PacketMeta, tcp_flags,
};
use crate::proto;
use crate::tcp::{EP_ACTIVE, Endpoint, seq_delta, state};
use crate::threshold;

/// What the fast path needs of one packet: 64 bytes, `#[repr(C)]`, no implicit padding, so
/// the eBPF glue can fill it straight from the packet (and share it with the agent).
///
/// | offset | field |
/// |---|---|
/// | 0 | `src` |
/// | 16 | `dst` |
/// | 32 | `seq` |
/// | 36 | `ack` |
/// | 40 | `payload_len` |
/// | 44 | `ip_bytes` |
/// | 48 | `pkts` |
/// | 52 | `sport` |
/// | 54 | `dport` |
/// | 56 | `window` |
/// | 58 | `udp_len` |
/// | 60 | `proto` |
/// | 61 | `tcp_flags` |
/// | 62 | `ip_version` |
/// | 63 | `_pad` |
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastMeta {
    /// Source address, IPv4-mapped for IPv4 (as `PacketMeta::src`), as the two big-endian
    /// words of `key::addr_words`: on eBPF, addresses handled as words stay two registers
    /// where byte arrays become sixteen values, spilled one by one.
    pub src: [u64; 2],
    /// Destination address, likewise.
    pub dst: [u64; 2],
    /// TCP sequence number.
    pub seq: u32,
    /// TCP acknowledgement number.
    pub ack: u32,
    /// Transport payload length from the IP header lengths (TCP: after the header with its
    /// options; UDP/ICMP: after the 8-byte header).
    pub payload_len: u32,
    /// IP bytes the packet counts for (GSO: all segments, `packet::gso_counts`).
    pub ip_bytes: u32,
    /// Packets the packet counts for (1, or the GSO segment count).
    pub pkts: u32,
    /// Source port; ICMP: the type.
    pub sport: u16,
    /// Destination port; ICMP: the code.
    pub dport: u16,
    /// TCP window as on the wire.
    pub window: u16,
    /// UDP length field.
    pub udp_len: u16,
    /// IP protocol number of the transport.
    pub proto: u8,
    /// TCP flags byte.
    pub tcp_flags: u8,
    /// 4 or 6 (`PacketMeta::ip_version`): an IPv4-mapped address may also travel in IPv6.
    pub ip_version: u8,
    /// Explicit padding, always zero.
    pub _pad: u8,
}

// The layout above, for the eBPF glue that fills the struct field by field.
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(FastMeta, dst) == 16);
    assert!(offset_of!(FastMeta, seq) == 32);
    assert!(offset_of!(FastMeta, ack) == 36);
    assert!(offset_of!(FastMeta, payload_len) == 40);
    assert!(offset_of!(FastMeta, ip_bytes) == 44);
    assert!(offset_of!(FastMeta, pkts) == 48);
    assert!(offset_of!(FastMeta, sport) == 52);
    assert!(offset_of!(FastMeta, dport) == 54);
    assert!(offset_of!(FastMeta, window) == 56);
    assert!(offset_of!(FastMeta, udp_len) == 58);
    assert!(offset_of!(FastMeta, proto) == 60);
    assert!(offset_of!(FastMeta, tcp_flags) == 61);
    assert!(offset_of!(FastMeta, ip_version) == 62);
    assert!(offset_of!(FastMeta, _pad) == 63);
};

impl FastMeta {
    /// The fast view of a fully parsed packet (host side), or `None` when the packet alone
    /// rules the fast path out: a bad checksum (only a C/c letter, `update`), an IP fragment, a
    /// transport header Zeek's analyzer drops (`PacketMeta::l4_dropped`), or what
    /// [`FastMeta::may_apply`] refuses. IP options and IPv6 extension headers need no check
    /// here: they were parsed already (the eBPF glue leaves them to the full path because its
    /// own parse does not walk them).
    #[inline(always)]
    pub fn from_meta(m: &PacketMeta, checksum_ok: bool) -> Option<FastMeta> {
        let f = FastMeta::unless_ruled_out(m, checksum_ok)?;
        if f.may_apply() { Some(f) } else { None }
    }

    /// As [`FastMeta::from_meta`] for a packet that opens a connection ([`FastMeta::opens`]):
    /// the fast view, or `None` when [`fast_open`] may not take it.
    #[inline(always)]
    pub fn opening(m: &PacketMeta, checksum_ok: bool) -> Option<FastMeta> {
        let f = FastMeta::unless_ruled_out(m, checksum_ok)?;
        if f.opens() { Some(f) } else { None }
    }

    /// The view of `m` unless the packet alone rules both fast paths out (see `from_meta`).
    #[inline(always)]
    fn unless_ruled_out(m: &PacketMeta, checksum_ok: bool) -> Option<FastMeta> {
        // One test for the dropped transport header and the payload the capture cut (whose
        // bytes the reassembler never gets).
        const REFUSED: u8 = META_L4_TRUNCATED | META_L4_BAD_HEADER | META_PAYLOAD_CUT;
        if !checksum_ok || m.is_fragment() || m.meta_flags & REFUSED != 0 {
            return None;
        }
        Some(FastMeta::view(m))
    }

    /// A packet that may open a connection in [`fast_open`]: a plain SYN (no ACK, FIN or RST;
    /// PSH, URG, ECE and CWR do not matter) without payload, the usual first packet of a TCP
    /// connection (a SYN with data, TCP Fast Open, takes the full engine); or a UDP datagram.
    #[inline(always)]
    pub fn opens(&self) -> bool {
        match self.proto {
            proto::TCP => {
                self.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::FIN | tcp_flags::RST)
                    == tcp_flags::SYN
                    && self.payload_len == 0
            }
            proto::UDP => true,
            _ => false,
        }
    }

    /// The fields of `m` the fast path reads, whatever the packet.
    #[inline(always)]
    pub(crate) fn view(m: &PacketMeta) -> FastMeta {
        FastMeta {
            src: words(&m.src),
            dst: words(&m.dst),
            seq: m.seq,
            ack: m.ack,
            payload_len: m.payload_len,
            ip_bytes: m.ip_bytes,
            pkts: m.pkts,
            sport: m.sport,
            dport: m.dport,
            window: m.window,
            udp_len: m.udp_len,
            proto: m.proto,
            tcp_flags: m.tcp_flags,
            ip_version: m.ip_version,
            _pad: 0,
        }
    }

    /// The conditions on the packet alone, checked before the connection is looked up (the
    /// eBPF glue's prefilter; [`fast_update`] checks them again): TCP, UDP, ICMP or ICMPv6,
    /// and for TCP an ACK without SYN, FIN or RST (those change the history or the state
    /// machine, `TCPSessionAdapter::UpdateStateMachine`) and a non-zero window (a zero one
    /// counts towards W, `TCPSessionAdapter::UpdateWindow`). PSH, URG, ECE and CWR do not
    /// matter to the engine.
    #[inline(always)]
    pub fn may_apply(&self) -> bool {
        match self.proto {
            proto::TCP => {
                self.tcp_flags & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) == 0
                    && self.tcp_flags & tcp_flags::ACK != 0
                    && self.window != 0
            }
            proto::UDP | proto::ICMP | proto::ICMPV6 => true,
            _ => false,
        }
    }
}

/// The outcome of [`fast_update`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fast {
    /// The packet was applied; it changed nothing that raises an event (`Changes::NONE`).
    Applied = 0,
    /// Nothing was written; the packet needs the full engine.
    NeedFull = 1,
}

/// Fills `conn`, an entry that is all zero (just inserted, or `Conn::ZERO`), for a connection
/// whose first packet is `m` ([`FastMeta::opens`]); `window_scale` is a SYN's window-scale
/// option (`packet::NO_WINDOW_SCALE` when absent). The result is exactly what `init_conn` then
/// `update` and `check_thresholds` leave (checked by `fast_tests`), and so are the returned
/// changes (without `Changes::NEW`, which the caller adds). `None` when the first packet needs
/// the full engine after all (`conn` is then to be thrown away): a UDP datagram that flips the
/// roles at creation or whose responder port attaches an application analyzer (DNS, NTP).
/// A plain SYN reads no map (it is never flipped, and no analyzer attaches to TCP); a datagram
/// reads up to two likely server ports from `cfg`. On eBPF a new connection's first packet ends
/// in the first program with this and one insert.
#[inline(always)]
pub fn fast_open(
    conn: &mut Conn,
    m: &FastMeta,
    window_scale: u8,
    cfg: &impl EngineConfig,
    now_ns: u64,
) -> Option<Changes> {
    conn.orig_addr = words_addr(m.src);
    conn.resp_addr = words_addr(m.dst);
    conn.orig_port = m.sport;
    conn.resp_port = m.dport;
    conn.proto = m.proto;
    conn.ip_version = m.ip_version;
    conn.start_ns = now_ns;
    // Already zero; stored again so that the compiler knows the history starts empty and
    // places its letters at constant offsets (on eBPF the verifier cannot bound a length
    // read back from memory).
    conn.history.len = 0;
    conn.history.seen = 0;
    if cfg.sample_services() {
        // A datagram's payload is a sample, which the stage chain copies: leave it to that.
        if m.proto == proto::UDP && m.payload_len != 0 {
            return None;
        }
        conn.thr_armed = contents::initial_sample_bits(m.proto);
    }
    if m.proto == proto::TCP {
        return Some(tcp_update::open_syn(conn, m, window_scale, now_ns));
    }
    open_udp(conn, m, cfg, now_ns)
}

/// `init_conn` + `update_udp` for a connection's first datagram that neither flips the roles
/// (`should_flip`) nor attaches an analyzer (`app_flip::attached_analyzer`, which could flip
/// them on this packet); `None` for those.
#[inline(always)]
fn open_udp(
    conn: &mut Conn,
    m: &FastMeta,
    cfg: &impl EngineConfig,
    now_ns: u64,
) -> Option<Changes> {
    if super::udp_flips(m.dst == BROADCAST_WORDS, m.sport, m.dport, cfg)
        || app_flip::attached_analyzer(proto::UDP, m.dport, cfg) != 0
    {
        return None;
    }
    conn.history.check(mask::DATA, b'D', true);
    conn.orig.data_bytes = m.udp_len.saturating_sub(8) as u64;
    conn.orig.flags |= EP_ACTIVE;
    conn.last_ns = now_ns;
    conn.orig.count_packet(m.pkts, m.ip_bytes);
    Some(Changes::NONE)
}

/// 255.255.255.255, IPv4-mapped, as [`FastMeta`]'s address words.
const BROADCAST_WORDS: [u64; 2] = [0, 0xffff_ffff_ffff];

/// Applies `m` to its connection `c` at `now_ns` if it is an ordinary packet (see the module
/// comment), else writes nothing and returns [`Fast::NeedFull`]. The caller found `c` under
/// `FlowKey::from_fast(m)` and holds its lock (eBPF: `Conn::lock`, which this never touches).
#[inline(always)]
pub fn fast_update(c: &mut Conn, m: &FastMeta, now_ns: u64) -> Fast {
    match plan(c, m, now_ns) {
        Ok(p) => {
            commit(c, m, now_ns, &p);
            Fast::Applied
        }
        Err(_) => Fast::NeedFull,
    }
}

/// Why a packet needs the full engine (for tests and diagnostics).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The packet alone rules it out ([`FastMeta::may_apply`]).
    Packet,
    /// The entry is not this protocol's connection (on eBPF: a new entry, zeroed, whose
    /// inserter's lock was taken over before it built the connection).
    Protocol,
    /// The connection was seen inside a tunnel (`Conn::encap`), or carried one found by its
    /// content (`CONN_TUNNEL_DETECTED`).
    Tunnel,
    /// Payload of a direction whose content is extracted (`contents::wanted`).
    Extraction,
    /// An armed threshold would cross (`ConnSize_Analyzer::CheckThresholds`).
    Threshold,
    /// A TCP endpoint outside PARTIAL, ESTABLISHED and CLOSED.
    TcpState,
    /// The history is exactly `H`: this packet makes the SYN-ACK-first flip (`^h`).
    SynAckFlip,
    /// The first data (D/d) or pure ACK (A/a) of this direction, or UDP's first valid
    /// datagram of this role (D/d): Zeek's `CheckHistory` adds a letter.
    FirstOfKind,
    /// The window, scaled, is zero (W/w).
    ZeroWindow,
    /// Data that does not advance the highest sequence: a retransmission (T/t).
    Retransmission,
    /// Data before the endpoint's start sequence (relative sequence underflow).
    SeqUnderflow,
    /// The sender has data buffered above a hole.
    Buffered,
    /// Data above the reassembly point: it would be buffered.
    AboveHole,
    /// The ack covers undelivered data: a content gap or buffered data to deliver.
    AckAboveDelivered,
    /// UDP with an application analyzer that has not decided the orientation (may flip).
    UndecidedAnalyzer,
    /// The first payload of a UDP direction: every direction's first payload takes the full
    /// path (for TCP the first data is the D/d packet, [`Reason::FirstOfKind`]).
    FirstPayload,
}

/// What an ordinary packet writes, decided before anything is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The packet was sent by the originator.
    is_orig: bool,
    /// TCP: the sender's highest sequence moves here (`UpdateLastSeq`).
    last_seq: Option<u32>,
    /// TCP: the ack lies in the peer's sequence space, so `update_ack_seq` sees it (and
    /// decides whether it moves the peer's highest ack).
    ack: bool,
    /// TCP: the sender's reassembly point afterwards.
    deliv_rel: u64,
    /// UDP/ICMP: payload bytes to count.
    data_bytes: u32,
}

/// Decides, without writing, whether `m` is an ordinary packet of `c` and what it writes.
#[inline(always)]
pub(crate) fn plan(c: &Conn, m: &FastMeta, now_ns: u64) -> Result<Plan, Reason> {
    if !m.may_apply() {
        return Err(Reason::Packet);
    }
    if c.proto != m.proto {
        return Err(Reason::Protocol);
    }
    // A connection seen in a tunnel: a packet outside it changes its encapsulation
    // (`tunnel::check_encap`), which the full path applies. A flow that carried a tunnel
    // found by content: its next datagram may carry one too, which the full path opens.
    if c.encap != 0 || c.flags & CONN_TUNNEL_DETECTED != 0 {
        return Err(Reason::Tunnel);
    }
    // `engine::is_orig`: the tuple's source port is the transport port or the ICMP type.
    let (sport, _, _) = tuple_ports_of(m.proto, m.sport, m.dport);
    let is_orig = m.src == words(&c.orig_addr) && sport == c.orig_port;
    let wants_payload = contents::extract_bit(is_orig) | contents::sample_bit(is_orig);
    if c.thr_armed & wants_payload != 0 && m.payload_len != 0 {
        return Err(Reason::Extraction);
    }
    let p = match m.proto {
        proto::TCP => plan_tcp(c, m, is_orig)?,
        proto::UDP => plan_udp(c, m, is_orig)?,
        // `update_icmp`: no letters, the IP payload minus the ICMP header counts.
        _ => datagram(is_orig, m.payload_len),
    };
    if threshold::would_cross(c, is_orig, m.pkts, m.ip_bytes, now_ns) {
        return Err(Reason::Threshold);
    }
    Ok(p)
}

/// A UDP or ICMP plan.
#[inline(always)]
fn datagram(is_orig: bool, data_bytes: u32) -> Plan {
    Plan {
        is_orig,
        last_seq: None,
        ack: false,
        deliv_rel: 0,
        data_bytes,
    }
}

/// `update_udp` without side effects: the role's D/d is set (`CheckHistory`), no analyzer
/// can flip, and payload is not the role's first.
#[inline(always)]
fn plan_udp(c: &Conn, m: &FastMeta, is_orig: bool) -> Result<Plan, Reason> {
    if c.history.seen & seen_bit(mask::DATA, is_orig) == 0 {
        return Err(Reason::FirstOfKind);
    }
    // DNS decides on its first full message, NTP only when it flips (`app_flip`): until then
    // a packet may flip the roles or spend the decision.
    if c.flags & (CONN_DNS_ANALYZER | CONN_NTP_ANALYZER) != 0
        && c.flags & CONN_ANALYZER_DECIDED == 0
    {
        return Err(Reason::UndecidedAnalyzer);
    }
    let ep = side(c, is_orig);
    if m.payload_len > 0 && ep.data_bytes == 0 {
        return Err(Reason::FirstPayload);
    }
    // The UDP length field, not the IP lengths, as Zeek's UDP analyzer counts.
    Ok(datagram(is_orig, m.udp_len.saturating_sub(8) as u32))
}

/// `update_tcp` for an ACK without SYN/FIN/RST, without side effects: no history letter, no
/// state change, no retransmission, no reassembly beyond moving the point over in-order data.
#[inline(always)]
fn plan_tcp(c: &Conn, m: &FastMeta, is_orig: bool) -> Result<Plan, Reason> {
    let len = m.payload_len;
    let (ep, peer) = if is_orig {
        (&c.orig, &c.resp)
    } else {
        (&c.resp, &c.orig)
    };
    // INACTIVE starts a sequence space (`init_endpoint`, `init_peer`); a handshake state or
    // RESET moves on or stops trusting sequence numbers (`UpdateStateMachine`,
    // `UpdateLastSeq`).
    if !steady(ep.state) || !steady(peer.state) {
        return Err(Reason::TcpState);
    }
    // `UpdateHistory`: data adds D/d, a pure ACK A/a, once per direction.
    let kind = if len > 0 { mask::DATA } else { mask::ACK };
    if c.history.seen & seen_bit(kind, is_orig) == 0 {
        return Err(Reason::FirstOfKind);
    }
    if c.history.is_single(b'H') {
        return Err(Reason::SynAckFlip);
    }
    // `UpdateWindow`, with the scale as `update_window` applies it.
    if (m.window as u32).wrapping_shl(ep.window_scale as u32) == 0 {
        return Err(Reason::ZeroWindow);
    }
    let seq_end = m.seq.wrapping_add(len);
    let delta = seq_delta(seq_end, ep.last_seq);
    let mut deliv_rel = ep.deliv_rel;
    if len > 0 {
        if delta <= 0 {
            return Err(Reason::Retransmission);
        }
        // `DataSent`: the segment reaches the reassembly point, nothing is buffered.
        let Some(rel) = ep.rel_seq(m.seq) else {
            return Err(Reason::SeqUnderflow);
        };
        if ep.blk_lo[0] != ep.blk_hi[0] {
            return Err(Reason::Buffered);
        }
        let end = rel.wrapping_add(len as u64);
        if end > deliv_rel {
            if rel > deliv_rel {
                return Err(Reason::AboveHole);
            }
            deliv_rel = end;
        }
    }
    // `AckReceived` on the peer: with nothing undelivered below the ack there is no gap and
    // the peer's reassembly point stays (`Endpoint::ack_received`'s early return).
    let rel_ack = peer.rel_ack(m.ack);
    let mut up_to = rel_ack.unwrap_or(0);
    if peer.fin_cnt > 0 && up_to >= peer.fin_rel {
        up_to = peer.fin_rel.saturating_sub(1);
    }
    if !(up_to <= peer.deliv_rel || (up_to <= 2 && c.flags & CONN_PARTIAL != 0)) {
        return Err(Reason::AckAboveDelivered);
    }
    Ok(Plan {
        is_orig,
        last_seq: if delta > 0 { Some(seq_end) } else { None },
        ack: rel_ack.is_some(),
        deliv_rel,
        data_bytes: 0,
    })
}

/// Writes a plan: exactly what `update` writes for such a packet.
#[inline(always)]
fn commit(c: &mut Conn, m: &FastMeta, now_ns: u64, p: &Plan) {
    if m.proto == proto::TCP {
        // Zeek stops `last_time` once both endpoints' closes were reported.
        let both_closed = c.orig.did_close() && c.resp.did_close();
        let (ep, peer, _) = parts(c, p.is_orig);
        if p.ack {
            peer.update_ack_seq(m.ack);
        }
        if let Some(s) = p.last_seq {
            ep.set_last_seq(s);
        }
        ep.deliv_rel = p.deliv_rel;
        ep.count_packet(m.pkts, m.ip_bytes);
        if !both_closed {
            c.last_ns = now_ns;
        }
    } else {
        let ep = ep_mut(c, p.is_orig);
        ep.data_bytes = ep.data_bytes.wrapping_add(p.data_bytes as u64);
        ep.flags |= EP_ACTIVE;
        ep.count_packet(m.pkts, m.ip_bytes);
        c.last_ns = now_ns;
    }
}

/// An address as [`FastMeta`] holds it.
#[inline(always)]
pub fn words(a: &[u8; 16]) -> [u64; 2] {
    let (hi, lo) = addr_words(a);
    [hi, lo]
}

/// The endpoint of one side.
#[inline(always)]
fn side(c: &Conn, is_orig: bool) -> &Endpoint {
    if is_orig { &c.orig } else { &c.resp }
}

/// A history "seen" bit of one direction.
#[inline(always)]
fn seen_bit(kind: u32, is_orig: bool) -> u32 {
    if is_orig { kind } else { kind << 16 }
}

/// A TCP endpoint state in which an ordinary packet changes no state.
#[inline(always)]
fn steady(s: u8) -> bool {
    s == state::PARTIAL || s == state::ESTABLISHED || s == state::CLOSED
}
