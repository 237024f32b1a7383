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
    use super::*;

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
