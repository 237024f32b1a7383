//! Content extraction, the kernel side of it: which connections' payload is handed to the agent
//! (two bits in `Conn::thr_armed`, so an unflagged connection pays no extra test on the hot
//! path: the update stage already branches on `thr_armed != 0`), the record that carries the
//! payload (ring buffer `CONTENTS`) and the per-connection byte accounting.
//!
//! The agent sets the bits with a `threshold::ThresholdCommand` whose `mask` holds
//! [`CMD_SET_CONTENTS`] plus the wanted [`EXTRACT_ORIG`] / [`EXTRACT_RESP`] bits: the same
//! control program (under the connection's lock) or, on the host, the same `apply_command`.

use crate::conn::Conn;
use crate::key::FlowKey;
use crate::packet::PacketMeta;
use crate::proto;

/// `Conn::thr_armed` bit: the originator's payload is extracted.
pub const EXTRACT_ORIG: u32 = 1 << 16;
/// `Conn::thr_armed` bit: the responder's payload is extracted.
pub const EXTRACT_RESP: u32 = 1 << 17;
/// Both extraction bits.
pub const EXTRACT_BITS: u32 = EXTRACT_ORIG | EXTRACT_RESP;
/// `ThresholdCommand::mask` bit: replace the connection's extraction bits with the
/// `EXTRACT_*` bits of the mask (threshold slots in the mask are written as usual).
pub const CMD_SET_CONTENTS: u32 = 1 << 24;

/// Payload bytes per ring-buffer record. A larger packet (GSO/GRO live) is split into up to
/// [`MAX_CHUNKS`] records; what does not fit is counted as not delivered.
pub const CHUNK_BYTES: usize = 2048;
/// Records per packet at most (64 KiB, the largest GSO packet).
pub const MAX_CHUNKS: u32 = 32;

/// [`ContentHeader::flags`]: the payload was sent by the originator.
pub const CONTENT_FROM_ORIG: u32 = 1;
/// [`ContentHeader::flags`]: a service sample (see [`take_sample`]), not extracted content.
pub const CONTENT_SAMPLE: u32 = 2;
/// [`ContentHeader::flags`]: the sender is the key's `addr_a`/`port_a` side. The roles may
/// flip later (Zeek's `^`); the canonical side does not, so a sample is placed by this.
pub const CONTENT_FROM_A: u32 = 4;

/// `Conn::thr_armed` bit: the originator's first payload is sampled for service detection.
/// Set at creation when the agent detects services; cleared once the direction's budget
/// ([`SAMPLE_PACKETS`]) is spent, after which its packets take the fast path again.
pub const SAMPLE_ORIG: u32 = 1 << 18;
/// `Conn::thr_armed` bit: the responder's first payload is sampled.
pub const SAMPLE_RESP: u32 = 1 << 19;
/// Both sampling bits.
pub const SAMPLE_BITS: u32 = SAMPLE_ORIG | SAMPLE_RESP;
/// `Conn::thr_armed`: the originator's sampled packets so far (3 bits from here).
const SAMPLE_COUNT_ORIG: u32 = 20;
/// `Conn::thr_armed`: the responder's sampled packets so far (3 bits from here).
const SAMPLE_COUNT_RESP: u32 = 23;
/// Packets with payload sampled per direction at most: the first bytes a protocol's
/// detection needs (a TLS ClientHello over two segments, an FTP banner then a reply, a few
/// datagrams) without keeping a long connection off the fast path.
pub const SAMPLE_PACKETS: u32 = 4;
/// Payload bytes of one packet a sample carries at most.
pub const SAMPLE_BYTES: u32 = 512;
/// `Conn::thr_armed` bit: of the datagrams still sampled only one that may be a QUIC Initial
/// ([`may_be_quic_initial`]) is handed over; the others are counted against the budget as
/// usual. Set by the agent (the host engine's `narrow_sampling`) once only a QUIC Initial can
/// change a UDP connection's service; the kernel never sets it.
pub const SAMPLE_QUIC_ONLY: u32 = 1 << 26;
/// All sampling state in `Conn::thr_armed`.
pub const SAMPLE_STATE: u32 = SAMPLE_BITS | (0x3f << SAMPLE_COUNT_ORIG) | SAMPLE_QUIC_ONLY;

/// The sampling bit for one direction.
#[inline(always)]
pub const fn sample_bit(is_orig: bool) -> u32 {
    if is_orig { SAMPLE_ORIG } else { SAMPLE_RESP }
}

/// The sampling bits a new connection of IP protocol `proto_nr` starts with: TCP and UDP
/// carry the services Zeek names; other protocols none.
#[inline(always)]
pub const fn initial_sample_bits(proto_nr: u8) -> u32 {
    if proto_nr == proto::TCP || proto_nr == proto::UDP {
        SAMPLE_BITS
    } else {
        0
    }
}

/// After the engine updated `conn` for `meta` (under the connection's lock): whether the
/// packet's payload is a service sample of direction `is_orig`. Counts it, and ends the
/// direction's sampling at [`SAMPLE_PACKETS`], or for TCP once the direction's stream holds
/// [`SAMPLE_BYTES`] in order. Packets the analyzers never see (bad
/// checksum, a dropped transport header) are no sample.
#[inline(always)]
pub fn take_sample(conn: &mut Conn, meta: &PacketMeta, checksum_ok: bool, is_orig: bool) -> bool {
    let bit = sample_bit(is_orig);
    if conn.thr_armed & bit == 0 || meta.payload_len == 0 || !checksum_ok || meta.l4_dropped() {
        return false;
    }
    let shift = if is_orig {
        SAMPLE_COUNT_ORIG
    } else {
        SAMPLE_COUNT_RESP
    };
    let count_mask = 7u32 << shift;
    let n = ((conn.thr_armed & count_mask) >> shift) + 1;
    conn.thr_armed &= !count_mask;
    // TCP: the stream's first SAMPLE_BYTES arrived in order (the reassembly point, which
    // starts at 1, passed them): what detection reads of a direction is there.
    let ep = if is_orig { &conn.orig } else { &conn.resp };
    let stream_full = conn.proto == proto::TCP && ep.deliv_rel > SAMPLE_BYTES as u64;
    if n >= SAMPLE_PACKETS || stream_full {
        conn.thr_armed &= !bit;
    } else {
        conn.thr_armed |= n << shift;
    }
    true
}

/// The UDP ports of the analyzers Zeek attaches by port: DNS (53, 137, 5353, 5355), DHCP
/// (67, 68), NTP (123), SIP (5060), SNMP (161, 162), Kerberos (88), RDPEUDP (3389), syslog
/// (514), LDAP (389). Off them only a QUIC Initial confirms a service on UDP.
pub const UDP_ANALYZER_PORTS: [u16; 14] = [
    53, 137, 5353, 5355, 67, 68, 123, 5060, 161, 162, 88, 3389, 514, 389,
];

/// Whether either of a UDP connection's ports is one of [`UDP_ANALYZER_PORTS`].
#[inline(always)]
pub fn udp_analyzer_port(port_a: u16, port_b: u16) -> bool {
    let mut i = 0;
    while i < UDP_ANALYZER_PORTS.len() {
        let p = UDP_ANALYZER_PORTS[i];
        if port_a == p || port_b == p {
            return true;
        }
        i += 1;
    }
    false
}

/// Whether a UDP sample whose payload starts with `first`, of a connection between
/// `port_a` and `port_b`, can tell service detection anything: on an analyzer's port any
/// datagram can; elsewhere only a QUIC long-header packet (its first two bits set) can be
/// the Initial that confirms QUIC. The datapath counts the others against the direction's
/// budget, as samples, but hands over no record of them: most UDP traffic (VPNs, media,
/// games) then costs detection nothing past its first byte.
#[inline(always)]
pub fn udp_sample_useful(port_a: u16, port_b: u16, first: u8) -> bool {
    first & 0xc0 == 0xc0 || udp_analyzer_port(port_a, port_b)
}

/// QUIC version 1 (RFC 9000), whose Initial is long-header packet type 0.
pub const QUIC_V1: u32 = 1;
/// QUIC version 2 (RFC 9369), whose Initial is long-header packet type 1.
pub const QUIC_V2: u32 = 0x6b33_43cf;

/// Whether a datagram starting with `d` may be a QUIC Initial: a long header (its first two
/// bits set) of a version whose Initials the QUIC rule reads, with that version's Initial
/// type. A cheap superset of what the rule confirms, for [`SAMPLE_QUIC_ONLY`].
#[inline(always)]
pub fn may_be_quic_initial(d: &[u8]) -> bool {
    let (Some(&first), Some(v)) = (d.first(), d.get(1..5)) else {
        return false;
    };
    let version = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    match first & 0xf0 {
        0xc0 => version == QUIC_V1,
        0xd0 => version == QUIC_V2,
        _ => false,
    }
}

/// Whether the sample of packet `meta`, whose payload starts with `first`, is handed over:
/// every TCP one, a UDP one if [`udp_sample_useful`].
#[inline(always)]
pub fn sample_handed_over(meta: &PacketMeta, first: u8) -> bool {
    meta.proto != proto::UDP || udp_sample_useful(meta.sport, meta.dport, first)
}

/// The payload bytes of a `len`-byte packet a sample carries.
#[inline(always)]
pub const fn sample_len(len: u32) -> u32 {
    if len > SAMPLE_BYTES {
        SAMPLE_BYTES
    } else {
        len
    }
}

/// The bytes a sample carries of a packet whose `len` payload bytes the capture holds only
/// `captured` of: [`sample_len`]'s when they are all there. A UDP datagram cut by the capture
/// gives what was captured (Zeek's analyzers parse a cut datagram as far as it goes: a DNS
/// query cut in its additional records is still DNS); a cut TCP segment gives nothing (its
/// missing bytes are a gap to Zeek's reassembler).
#[inline(always)]
pub const fn sample_take(len: u32, captured: u32, is_udp: bool) -> u32 {
    let want = sample_len(len);
    if captured >= want {
        want
    } else if is_udp {
        captured
    } else {
        0
    }
}

/// Whether `meta`'s sender is `key`'s `addr_a`/`port_a` side ([`CONTENT_FROM_A`]).
#[inline(always)]
pub fn sender_is_a(key: &FlowKey, meta: &PacketMeta) -> bool {
    crate::key::addr_words(&meta.src) == crate::key::addr_words(&key.addr_a)
        && meta.sport == key.port_a
}

/// A sample record's [`ContentHeader::flags`].
#[inline(always)]
pub fn sample_flags(key: &FlowKey, meta: &PacketMeta, is_orig: bool) -> u32 {
    CONTENT_SAMPLE
        | if is_orig { CONTENT_FROM_ORIG } else { 0 }
        | if sender_is_a(key, meta) {
            CONTENT_FROM_A
        } else {
            0
        }
}

/// The bit for one direction.
#[inline(always)]
pub const fn extract_bit(is_orig: bool) -> u32 {
    if is_orig { EXTRACT_ORIG } else { EXTRACT_RESP }
}

/// What precedes the payload in a `CONTENTS` record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContentHeader {
    /// The connection (canonical key, as `FLOWS`).
    pub key: FlowKey,
    /// Packet time (ns).
    pub ts_ns: u64,
    /// TCP: the absolute sequence number of the first payload byte of this record (the
    /// packet's seq plus the record's offset in the packet, mod 2^32); 0 for other protocols.
    pub seq: u32,
    /// Payload bytes that follow (at most [`CHUNK_BYTES`]).
    pub len: u32,
    /// [`CONTENT_FROM_ORIG`].
    pub flags: u32,
    /// IP protocol number.
    pub proto: u32,
}

/// One `CONTENTS` ring-buffer record (fixed size: the verifier wants a constant reservation).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ContentRecord {
    pub hdr: ContentHeader,
    pub data: [u8; CHUNK_BYTES],
}

/// Per connection and direction (index 0 originator, 1 responder): payload bytes handed to the
/// agent and bytes not handed over (per-connection cap, global rate cap, ring buffer full,
/// copy failure). `CONTENTS_CONNS` on BPF, a map in the host datapath.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContentCounters {
    pub delivered: [u64; 2],
    pub not_delivered: [u64; 2],
}

/// The direction index of [`ContentCounters`].
#[inline(always)]
pub const fn dir_index(is_orig: bool) -> usize {
    if is_orig { 0 } else { 1 }
}

/// After the engine updated `conn` for `meta`: `Some(is_orig)` when the packet's payload is to
/// be extracted. Packets the TCP analyzer drops (bad checksum, truncated header) carry nothing,
/// as in Zeek, whose reassembler never sees them.
#[inline(always)]
pub fn wanted(conn: &Conn, meta: &PacketMeta, checksum_ok: bool, is_orig: bool) -> bool {
    conn.thr_armed & extract_bit(is_orig) != 0
        && meta.payload_len != 0
        && checksum_ok
        && !meta.l4_dropped()
}

/// Bytes of a `len`-byte payload admitted under a per-connection cap (`cap` bytes per
/// direction, 0 = none) when `delivered` bytes already went out.
#[inline(always)]
pub fn admit(delivered: u64, cap: u64, len: u32) -> u32 {
    if cap == 0 {
        return len;
    }
    let room = cap.saturating_sub(delivered);
    if room < len as u64 { room as u32 } else { len }
}

/// The global rate cap: `window` is (start of the current one-second window, bytes admitted in
/// it); `rate` bytes per second, 0 = none. Returns the bytes of `len` admitted now.
#[inline(always)]
pub fn rate_admit(window: &mut [u64; 2], now_ns: u64, rate: u64, len: u32) -> u32 {
    if rate == 0 {
        return len;
    }
    if now_ns.wrapping_sub(window[0]) >= 1_000_000_000 {
        window[0] = now_ns;
        window[1] = 0;
    }
    let n = admit(window[1], rate, len);
    window[1] = window[1].saturating_add(n as u64);
    n
}

/// The sequence number a record's header carries for a payload starting `offset` bytes into a
/// packet of `meta` (0 for protocols without one).
#[inline(always)]
pub fn record_seq(meta: &PacketMeta, offset: u32) -> u32 {
    if meta.proto == proto::TCP {
        meta.seq.wrapping_add(offset)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cut_datagram_is_sampled_as_captured_a_cut_segment_not() {
        assert_eq!(sample_take(54, 54, true), 54);
        assert_eq!(sample_take(2000, 2000, false), SAMPLE_BYTES, "capped");
        assert_eq!(
            sample_take(2000, 600, false),
            SAMPLE_BYTES,
            "cut after the sample"
        );
        assert_eq!(sample_take(54, 48, true), 48, "UDP: the captured bytes");
        assert_eq!(sample_take(54, 48, false), 0, "TCP: a gap");
        assert_eq!(sample_take(54, 0, true), 0);
    }

    use super::*;

    #[test]
    fn a_udp_datagram_off_the_analyzer_ports_is_handed_over_only_if_it_may_be_quic() {
        // WireGuard's handshake initiation (type 1), an RTP packet (version 2), a QUIC short
        // header: none can be a QUIC Initial.
        for first in [0x01, 0x80, 0x40, 0x00] {
            assert!(!udp_sample_useful(51820, 40000, first), "{first:#x}");
        }
        assert!(udp_sample_useful(40000, 443, 0xc3), "a long header");
        // On an analyzer's port (either side) every datagram counts.
        assert!(udp_sample_useful(40000, 53, 0x12));
        assert!(udp_sample_useful(123, 123, 0x23));
        assert!(udp_sample_useful(514, 40000, b'<'));
        assert!(!udp_analyzer_port(40000, 51820));
        // As the datapaths ask it, of a packet: TCP samples are always handed over.
        let mut meta = PacketMeta {
            proto: proto::UDP,
            sport: 51820,
            dport: 40000,
            ..PacketMeta::default()
        };
        assert!(!sample_handed_over(&meta, 0x01));
        assert!(sample_handed_over(&meta, 0xc3));
        meta.proto = proto::TCP;
        assert!(sample_handed_over(&meta, 0x01));
    }

    #[test]
    fn admit_respects_the_cap() {
        assert_eq!(admit(0, 0, 1500), 1500, "0 = no cap");
        assert_eq!(admit(0, 1000, 1500), 1000);
        assert_eq!(admit(900, 1000, 1500), 100);
        assert_eq!(admit(1000, 1000, 1500), 0);
        assert_eq!(admit(5000, 1000, 10), 0);
    }

    #[test]
    fn the_rate_cap_refills_every_second() {
        let mut w = [0u64; 2];
        let s = 1_000_000_000u64;
        assert_eq!(rate_admit(&mut w, 5 * s, 1000, 600), 600);
        assert_eq!(rate_admit(&mut w, 5 * s + 1, 1000, 600), 400);
        assert_eq!(rate_admit(&mut w, 5 * s + 2, 1000, 600), 0);
        assert_eq!(
            rate_admit(&mut w, 6 * s + 2, 1000, 600),
            600,
            "a new window"
        );
        assert_eq!(rate_admit(&mut w, 0, 0, 600), 600, "0 = no cap");
    }

    #[test]
    fn wanted_needs_the_direction_bit_and_payload() {
        let mut c = Conn::ZERO;
        let mut m = PacketMeta {
            payload_len: 10,
            ..PacketMeta::default()
        };
        assert!(!wanted(&c, &m, true, true));
        c.thr_armed = EXTRACT_RESP;
        assert!(!wanted(&c, &m, true, true));
        assert!(wanted(&c, &m, true, false));
        assert!(!wanted(&c, &m, false, false), "bad checksum: dropped");
        m.payload_len = 0;
        assert!(!wanted(&c, &m, true, false));
    }

    #[test]
    fn sampling_ends_after_the_budget_per_direction() {
        let mut c = Conn {
            thr_armed: SAMPLE_BITS,
            ..Conn::ZERO
        };
        let data = PacketMeta {
            payload_len: 100,
            ..PacketMeta::default()
        };
        let empty = PacketMeta::default();
        assert!(!take_sample(&mut c, &empty, true, true), "no payload");
        assert!(!take_sample(&mut c, &data, false, true), "bad checksum");
        for i in 0..SAMPLE_PACKETS {
            assert!(take_sample(&mut c, &data, true, true), "packet {i}");
        }
        assert!(!take_sample(&mut c, &data, true, true), "budget spent");
        assert_eq!(c.thr_armed, SAMPLE_RESP, "the responder still samples");
        for _ in 0..SAMPLE_PACKETS {
            assert!(take_sample(&mut c, &data, true, false));
        }
        assert_eq!(c.thr_armed, 0, "nothing left: the fast path applies again");
    }

    #[test]
    fn a_tcp_direction_is_done_once_its_stream_holds_the_budget() {
        let mut c = Conn {
            thr_armed: SAMPLE_BITS,
            proto: proto::TCP,
            ..Conn::ZERO
        };
        let data = PacketMeta {
            payload_len: 1448,
            ..PacketMeta::default()
        };
        c.orig.deliv_rel = 1 + 100;
        assert!(take_sample(&mut c, &data, true, true));
        assert_ne!(c.thr_armed & SAMPLE_ORIG, 0, "100 bytes so far");
        c.orig.deliv_rel = 1 + 1448;
        assert!(
            take_sample(&mut c, &data, true, true),
            "the packet itself is sampled"
        );
        assert_eq!(c.thr_armed, SAMPLE_RESP);
        // A UDP direction counts datagrams only.
        let mut u = Conn {
            thr_armed: SAMPLE_BITS,
            proto: proto::UDP,
            ..Conn::ZERO
        };
        u.orig.deliv_rel = 1 + 1448;
        take_sample(&mut u, &data, true, true);
        assert_ne!(u.thr_armed & SAMPLE_ORIG, 0);
    }

    #[test]
    fn sampling_leaves_thresholds_and_extraction_alone() {
        let mut c = Conn {
            thr_armed: SAMPLE_BITS | EXTRACT_ORIG | 1,
            ..Conn::ZERO
        };
        let data = PacketMeta {
            payload_len: 1,
            ..PacketMeta::default()
        };
        for _ in 0..SAMPLE_PACKETS {
            take_sample(&mut c, &data, true, true);
            take_sample(&mut c, &data, true, false);
        }
        assert_eq!(c.thr_armed, EXTRACT_ORIG | 1);
        assert_eq!(sample_len(2000), SAMPLE_BYTES);
        assert_eq!(sample_len(10), 10);
        assert_eq!(initial_sample_bits(proto::ICMP), 0);
    }

    #[test]
    fn the_sample_names_the_sender_by_the_key() {
        let mut m = PacketMeta {
            proto: proto::TCP,
            sport: 40000,
            dport: 80,
            ..PacketMeta::default()
        };
        m.src[15] = 1;
        m.dst[15] = 2;
        let key = FlowKey::from_meta(&m);
        assert!(sender_is_a(&key, &m));
        let flags = sample_flags(&key, &m, true);
        assert_eq!(flags, CONTENT_SAMPLE | CONTENT_FROM_ORIG | CONTENT_FROM_A);
        core::mem::swap(&mut m.src, &mut m.dst);
        core::mem::swap(&mut m.sport, &mut m.dport);
        assert!(!sender_is_a(&key, &m));
        assert_eq!(sample_flags(&key, &m, false), CONTENT_SAMPLE);
    }

    #[test]
    fn tcp_records_carry_the_wrapped_sequence() {
        let m = PacketMeta {
            proto: proto::TCP,
            seq: u32::MAX - 1,
            ..PacketMeta::default()
        };
        assert_eq!(record_seq(&m, 4), 2);
        let u = PacketMeta {
            proto: proto::UDP,
            seq: 7,
            ..PacketMeta::default()
        };
        assert_eq!(record_seq(&u, 4), 0);
    }
}
