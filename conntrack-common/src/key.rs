//! The flow-table key: the 5-tuple in canonical order, so that both directions of a flow find
//! the same entry (Zeek's `IPBasedConnKey::InitTuple`). ICMP "ports" are type and counterpart
//! type (request/reply pairs) or type and code (one-way messages, keyed exactly as seen).

use crate::engine::fast::FastMeta;
use crate::packet::PacketMeta;
use crate::proto;

/// Canonical flow key (40 bytes, no implicit padding): the smaller (address, port) pair first,
/// comparing addresses bytewise in network order, then ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    /// Smaller endpoint address (IPv4-mapped for IPv4).
    pub addr_a: [u8; 16],
    /// Larger endpoint address.
    pub addr_b: [u8; 16],
    /// Port (ICMP: type) belonging to `addr_a`.
    pub port_a: u16,
    /// Port (ICMP: counterpart type or code) belonging to `addr_b`.
    pub port_b: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Explicit padding, always zero (the eBPF hash map hashes it). Two fields, not a
    /// `[u8; 3]`: on BPF, LLVM zeroes a 3-byte array with a call to a byte-loop `memset`.
    pub _pad0: u8,
    /// Explicit padding, always zero.
    pub _pad1: u16,
}

/// Five 64-bit words to the hasher. The derived impl made nine calls (the arrays with their
/// length prefixes, then each small field): hashing keys was a twentieth of a replay.
/// Every byte goes in, padding too (always zero), so equal keys hash alike.
impl core::hash::Hash for FlowKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        for addr in [&self.addr_a, &self.addr_b] {
            let (words, _) = addr.as_chunks::<8>();
            for w in words {
                state.write_u64(u64::from_ne_bytes(*w));
            }
        }
        state.write_u64(
            u64::from(self.port_a)
                | u64::from(self.port_b) << 16
                | u64::from(self.proto) << 32
                | u64::from(self._pad0) << 40
                | u64::from(self._pad1) << 48,
        );
    }
}

/// ICMPv4 counterpart type of a request/reply message, `None` for one-way messages.
#[inline(always)]
pub fn icmp4_counterpart(icmp_type: u8) -> Option<u8> {
    match icmp_type {
        8 => Some(0),
        0 => Some(8),
        13 => Some(14),
        14 => Some(13),
        15 => Some(16),
        16 => Some(15),
        10 => Some(9),
        9 => Some(10),
        17 => Some(18),
        18 => Some(17),
        _ => None,
    }
}

/// ICMPv6 counterpart type of a request/reply message, `None` for one-way messages.
#[inline(always)]
pub fn icmp6_counterpart(icmp_type: u8) -> Option<u8> {
    match icmp_type {
        128 => Some(129),
        129 => Some(128),
        133 => Some(134),
        134 => Some(133),
        135 => Some(136),
        136 => Some(135),
        130 => Some(131),
        131 => Some(130),
        139 => Some(140),
        140 => Some(139),
        144 => Some(145),
        145 => Some(144),
        _ => None,
    }
}

/// The packet's (source port, destination port, one-way) as Zeek sees them: the transport ports
/// for TCP/UDP, (type, counterpart-or-code) for ICMP, (0, 0) for other protocols.
#[inline(always)]
pub fn tuple_ports(meta: &PacketMeta) -> (u16, u16, bool) {
    tuple_ports_of(meta.proto, meta.sport, meta.dport)
}

/// [`tuple_ports`] from the raw fields: `sport`/`dport` are the transport ports, or the ICMP
/// type and code.
#[inline(always)]
pub fn tuple_ports_of(proto_nr: u8, sport: u16, dport: u16) -> (u16, u16, bool) {
    match proto_nr {
        proto::TCP | proto::UDP => (sport, dport, false),
        proto::ICMP | proto::ICMPV6 => {
            let t = sport as u8;
            let counterpart = if proto_nr == proto::ICMP {
                icmp4_counterpart(t)
            } else {
                icmp6_counterpart(t)
            };
            match counterpart {
                Some(c) => (sport, c as u16, false),
                None => (sport, dport, true),
            }
        }
        _ => (0, 0, false),
    }
}

impl FlowKey {
    /// Builds the canonical key of a packet.
    #[inline(always)]
    pub fn from_meta(meta: &PacketMeta) -> FlowKey {
        FlowKey::from_tuple(&meta.src, meta.sport, &meta.dst, meta.dport, meta.proto)
    }

    /// The canonical key of a fast-path packet: the same rule as [`FlowKey::from_meta`], so
    /// both paths find the same entry.
    #[inline(always)]
    pub fn from_fast(m: &FastMeta) -> FlowKey {
        FlowKey::from_words(m.src, m.sport, m.dst, m.dport, m.proto)
    }

    /// The canonical key of a packet from `src`/`sport` to `dst`/`dport` (ICMP: type and code
    /// as the ports): the tuple ports ([`tuple_ports_of`]), the smaller (address, port) pair
    /// first; a one-way ICMP message is keyed as seen.
    #[inline(always)]
    pub fn from_tuple(
        src: &[u8; 16],
        sport: u16,
        dst: &[u8; 16],
        dport: u16,
        proto_nr: u8,
    ) -> FlowKey {
        let (s, d) = (addr_words(src), addr_words(dst));
        FlowKey::from_words([s.0, s.1], sport, [d.0, d.1], dport, proto_nr)
    }

    /// [`FlowKey::from_tuple`] with the addresses as [`addr_words`]' words. Chosen and stored
    /// as words: on eBPF, a choice between two byte arrays becomes one choice per byte.
    #[inline(always)]
    fn from_words(s: [u64; 2], sport: u16, d: [u64; 2], dport: u16, proto_nr: u8) -> FlowKey {
        let (sp, dp, one_way) = tuple_ports_of(proto_nr, sport, dport);
        let src_first = one_way || (s, sp) <= (d, dp);
        let (a, pa, b, pb) = if src_first {
            (s, sp, d, dp)
        } else {
            (d, dp, s, sp)
        };
        FlowKey {
            addr_a: words_addr(a),
            addr_b: words_addr(b),
            port_a: pa,
            port_b: pb,
            proto: proto_nr,
            _pad0: 0,
            _pad1: 0,
        }
    }
}

/// An address as two big-endian words: ordering them orders the bytes, comparing them compares
/// the bytes (no `memcmp` call on BPF).
#[inline(always)]
pub fn addr_words(a: &[u8; 16]) -> (u64, u64) {
    let w = |i: usize| {
        u64::from_be_bytes([
            a[i],
            a[i + 1],
            a[i + 2],
            a[i + 3],
            a[i + 4],
            a[i + 5],
            a[i + 6],
            a[i + 7],
        ])
    };
    (w(0), w(8))
}

/// The address of [`addr_words`]' two words.
#[inline(always)]
pub(crate) fn words_addr([hi, lo]: [u64; 2]) -> [u8; 16] {
    let mut a = [0u8; 16];
    let (h, l) = a.split_at_mut(8);
    h.copy_from_slice(&hi.to_be_bytes());
    l.copy_from_slice(&lo.to_be_bytes());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn key(frame: &[u8]) -> FlowKey {
        FlowKey::from_meta(&meta_of(frame))
    }

    #[test]
    fn both_directions_share_one_canonical_key() {
        let k1 = key(&tcp4(true, SYN, 1, 0, 0));
        let k2 = key(&tcp4(false, SYN | ACK, 9, 2, 0));
        assert_eq!(k1, k2);
        assert_eq!(&k1.addr_a[12..], &A4);
        assert_eq!((k1.port_a, k1.port_b, k1.proto), (40000, 80, proto::TCP));
        assert_eq!((k1._pad0, k1._pad1), (0, 0));
    }

    #[test]
    fn same_address_orders_by_port() {
        let f = eth4(ipv4(A4, A4, proto::UDP, &[], udp_seg(5000, 53, 1)));
        let k = key(&f);
        assert_eq!((k.port_a, k.port_b), (53, 5000));
    }

    #[test]
    fn icmp_echo_request_and_reply_pair_up() {
        let req = key(&eth4(ipv4(A4, B4, proto::ICMP, &[], icmp_seg(8, 0, 8))));
        let rep = key(&eth4(ipv4(B4, A4, proto::ICMP, &[], icmp_seg(0, 0, 8))));
        assert_eq!(req, rep);
        assert_eq!((req.port_a, req.port_b), (8, 0));
        let req6 = key(&eth6(ipv6(A6, B6, proto::ICMPV6, &[], icmp_seg(128, 0, 8))));
        let rep6 = key(&eth6(ipv6(B6, A6, proto::ICMPV6, &[], icmp_seg(129, 0, 8))));
        assert_eq!(req6, rep6);
        assert_eq!((req6.port_a, req6.port_b), (128, 129));
        let ns = key(&eth6(ipv6(B6, A6, proto::ICMPV6, &[], icmp_seg(135, 0, 8))));
        let na = key(&eth6(ipv6(A6, B6, proto::ICMPV6, &[], icmp_seg(136, 0, 8))));
        assert_eq!(ns, na);
    }

    #[test]
    fn one_way_icmp_is_keyed_as_seen() {
        let k = key(&eth4(ipv4(B4, A4, proto::ICMP, &[], icmp_seg(3, 3, 28))));
        assert_eq!(&k.addr_a[12..], &B4);
        assert_eq!((k.port_a, k.port_b), (3, 3));
        let back = key(&eth4(ipv4(A4, B4, proto::ICMP, &[], icmp_seg(3, 3, 28))));
        assert_ne!(k, back);
        assert_eq!(
            tuple_ports(&meta_of(&eth4(ipv4(
                A4,
                B4,
                proto::ICMP,
                &[],
                icmp_seg(11, 0, 8)
            )))),
            (11, 0, true)
        );
    }

    #[test]
    fn counterparts_match_zeek_tables() {
        for (a, b) in [(8, 0), (13, 14), (15, 16), (10, 9), (17, 18)] {
            assert_eq!(icmp4_counterpart(a), Some(b));
            assert_eq!(icmp4_counterpart(b), Some(a));
        }
        for (a, b) in [
            (128, 129),
            (133, 134),
            (135, 136),
            (130, 131),
            (139, 140),
            (144, 145),
        ] {
            assert_eq!(icmp6_counterpart(a), Some(b));
            assert_eq!(icmp6_counterpart(b), Some(a));
        }
        assert_eq!(icmp4_counterpart(3), None);
        assert_eq!(icmp6_counterpart(1), None);
    }
}
