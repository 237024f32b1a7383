//! The fast path's parse: an ordinary frame's headers read in place into a
//! [`FastMeta`](crate::engine::FastMeta), without the copy and the stages of the full parse.
//!
//! It accepts only what it can read in one pass: Ethernet with at most
//! [`MAX_FAST_VLAN_TAGS`] VLAN tags, IPv4 without options and not a fragment, IPv6 without
//! extension headers, and a TCP, UDP or ICMP header whose bytes are all in reach. Everything
//! else is `None` and takes the full parse, which handles it. The contract, checked by the
//! tests: whenever [`parse_fast`] gives `Some(f)`, the full parse of the same frame
//! ([`super::parse_ethernet`] with the GSO counts) gives a meta whose
//! [`FastMeta::from_meta`](crate::engine::FastMeta::from_meta) is `Some(f)`.
//!
//! The headers are network-types' structs, read through [`HeaderSource`]: a byte slice on the
//! host, the packet itself (direct packet access) in the eBPF program.

use super::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, ETH_P_QINQ_OLD, gso_counts};
use crate::engine::FastMeta;
use crate::engine::fast::words;
use crate::proto;
use network_types::eth::EthHdr;
use network_types::icmp::Icmpv4Hdr;
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};
use network_types::tcp::TcpHdr;
use network_types::udp::UdpHdr;
use network_types::vlan::VlanHdr;

/// VLAN tags the fast parse skips; a frame with more takes the full parse
/// ([`super::MAX_VLAN_TAGS`]).
pub const MAX_FAST_VLAN_TAGS: u32 = 2;

/// A header type that any bytes make a valid value of (plain byte arrays and integers).
///
/// # Safety
/// Every bit pattern of `size_of::<Self>()` bytes is a valid `Self`, and it has no padding.
pub unsafe trait Header: Copy {}

// SAFETY: network-types' headers are `#[repr(C)]` structs of byte arrays and integers,
// without padding.
unsafe impl Header for EthHdr {}
// SAFETY: as above.
unsafe impl Header for VlanHdr {}
// SAFETY: as above.
unsafe impl Header for Ipv4Hdr {}
// SAFETY: as above.
unsafe impl Header for Ipv6Hdr {}
// SAFETY: as above.
unsafe impl Header for TcpHdr {}
// SAFETY: as above.
unsafe impl Header for UdpHdr {}
// SAFETY: as above.
unsafe impl Header for Icmpv4Hdr {}

/// Where [`parse_fast`] reads headers from.
pub trait HeaderSource {
    /// A copy of the header at byte `off` of the frame, or `None` if its bytes are not all in
    /// reach (eBPF: in the linear part of the packet).
    fn header<T: Header>(&self, off: usize) -> Option<T>;
}

impl HeaderSource for [u8] {
    #[inline(always)]
    fn header<T: Header>(&self, off: usize) -> Option<T> {
        let bytes = self.get(off..off.checked_add(size_of::<T>())?)?;
        // SAFETY: `bytes` holds size_of::<T>() bytes, and any bytes are a valid `T` (`Header`).
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }
}

/// The fast view of the frame read from `src`, or `None` when it needs the full parse (see the
/// module comment) or [`FastMeta::may_apply`] refuses it. `frame_len` is the frame's whole
/// length (which may exceed what `src` reaches), `gso_segs` the packets it stands for.
#[inline(always)]
pub fn parse_fast<S: HeaderSource + ?Sized>(
    src: &S,
    frame_len: u32,
    gso_segs: u32,
) -> Option<FastMeta> {
    let (m, _) = parse_view(src, frame_len, gso_segs)?;
    if m.may_apply() { Some(m) } else { None }
}

/// The fast view of the frame read from `src` and the offset of its transport header, for
/// any TCP flags; `None` when the frame needs the full parse (see the module comment). The
/// caller decides what the view allows: [`FastMeta::may_apply`] for an existing connection,
/// [`FastMeta::opens`] for a new one.
#[inline(always)]
pub fn parse_view<S: HeaderSource + ?Sized>(
    src: &S,
    frame_len: u32,
    gso_segs: u32,
) -> Option<(FastMeta, usize)> {
    let eth: EthHdr = src.header(0)?;
    let mut ethertype = u16::from_be(eth.ether_type);
    let mut l3 = size_of::<EthHdr>();
    let mut tags = 0;
    while ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD || ethertype == ETH_P_QINQ_OLD {
        if tags >= MAX_FAST_VLAN_TAGS {
            return None;
        }
        let tag: VlanHdr = src.header(l3)?;
        ethertype = u16::from_be(tag.ether_type);
        l3 += size_of::<VlanHdr>();
        tags += 1;
    }
    // Each IP version builds its view on its own path to the end: merged, the two ways of
    // filling the addresses become one value per byte on eBPF (spilled, byte by byte).
    match ethertype {
        ETH_P_IPV4 => {
            let ip: Ipv4Hdr = src.header(l3)?;
            // Version 4 without options; not a fragment (MF clear, offset 0; DF may be set).
            if ip.vihl != 0x45 || u16::from_be_bytes(ip.frags) & 0x3fff != 0 {
                return None;
            }
            let total = u16::from_be_bytes(ip.tot_len) as u32;
            if total < 20 {
                return None;
            }
            let m = FastMeta {
                proto: ip.proto,
                ip_version: 4,
                src: mapped(ip.src_addr),
                dst: mapped(ip.dst_addr),
                ..FastMeta::default()
            };
            let ip = IpLengths {
                ip_len: total,
                l4: l3 + 20,
                l4_len: total - 20,
            };
            transport(src, m, &ip, frame_len, gso_segs)
        }
        ETH_P_IPV6 => {
            let ip: Ipv6Hdr = src.header(l3)?;
            if ip.vcf[0] >> 4 != 6 {
                return None;
            }
            // No extension header: the next header is the transport.
            let m = FastMeta {
                proto: ip.next_hdr,
                ip_version: 6,
                src: words(&ip.src_addr),
                dst: words(&ip.dst_addr),
                ..FastMeta::default()
            };
            let payload = u16::from_be_bytes(ip.payload_len) as u32;
            let ip = IpLengths {
                ip_len: payload + 40,
                l4: l3 + 40,
                l4_len: payload,
            };
            transport(src, m, &ip, frame_len, gso_segs)
        }
        _ => None,
    }
}

/// The IP layer's lengths as `parse_ip` finds them.
struct IpLengths {
    /// IPv4 total length, or IPv6 payload length + 40.
    ip_len: u32,
    /// Offset of the transport header in the frame.
    l4: usize,
    /// Transport length from the IP header.
    l4_len: u32,
}

/// The transport header's part of the view `m` (addresses and protocol set), then the GSO
/// counts; with the transport header's offset.
#[inline(always)]
fn transport<S: HeaderSource + ?Sized>(
    src: &S,
    mut m: FastMeta,
    ip: &IpLengths,
    frame_len: u32,
    gso_segs: u32,
) -> Option<(FastMeta, usize)> {
    let (l4, l4_len) = (ip.l4, ip.l4_len);
    // Transport bytes in the frame (the full parse's "captured").
    let captured = frame_len.saturating_sub(l4 as u32);
    match m.proto {
        proto::TCP => {
            if l4_len < 20 {
                return None;
            }
            let tcp: TcpHdr = src.header(l4)?;
            let doff = (tcp.doff() as u32) * 4;
            // A bad data offset or options cut by the capture (the full parse flags the
            // packet as dropped by the analyzer), or a payload cut by it (flagged: it never
            // reaches the reassembler). With `doff <= l4_len`, `captured < l4_len` covers
            // `doff > captured`: one comparison for both.
            if doff < 20 || doff > l4_len || captured < l4_len {
                return None;
            }
            m.sport = u16::from_be_bytes(tcp.source);
            m.dport = u16::from_be_bytes(tcp.dest);
            m.seq = u32::from_be_bytes(tcp.seq);
            m.ack = u32::from_be_bytes(tcp.ack_seq);
            m.window = u16::from_be_bytes(tcp.window);
            // Byte 13 of the header: the eight flag bits, FIN lowest.
            m.tcp_flags = tcp._bitfield_1.get(8, 8) as u8;
            m.payload_len = l4_len - doff;
        }
        proto::UDP => {
            if l4_len < 8 {
                return None;
            }
            let udp: UdpHdr = src.header(l4)?;
            m.sport = u16::from_be_bytes(udp.src);
            m.dport = u16::from_be_bytes(udp.dst);
            m.udp_len = u16::from_be_bytes(udp.len);
            m.payload_len = l4_len - 8;
        }
        proto::ICMP | proto::ICMPV6 => {
            if l4_len < 8 {
                return None;
            }
            // ICMPv6 shares the first bytes' layout: type, code, checksum.
            let icmp: Icmpv4Hdr = src.header(l4)?;
            m.sport = icmp.type_ as u16;
            m.dport = icmp.code as u16;
            m.payload_len = l4_len - 8;
        }
        _ => return None,
    }
    (m.pkts, m.ip_bytes) = gso_counts(ip.ip_len, m.payload_len, gso_segs);
    Some((m, l4))
}

/// An IPv4 address, IPv4-mapped (as `PacketMeta` stores it), as [`FastMeta`]'s words.
#[inline(always)]
fn mapped(a: [u8; 4]) -> [u64; 2] {
    [0, 0xffff_0000_0000 | u32::from_be_bytes(a) as u64]
}

#[cfg(test)]
mod tests;
