//! Tunnel decapsulation, Zeek's packet analyzers for encapsulations reduced to pure functions:
//! given the bytes after an outer header (a UDP payload, or an IP payload of protocol 4, 41 or
//! 47), where the inner packet starts and what it is. Both engines call these, so they agree
//! on what is a tunnel; the caller validates the outer packet first (Zeek decapsulates only a
//! packet whose outer checksums passed) and the inner one afterwards, as any IP packet.
//!
//! Also the tunnel-change rule (`Connection::CheckEncapsulation`): a connection remembers the
//! encapsulation of its last packet ([`Conn::encap`]); a packet that arrives in another one is a
//! change, reported (for `tunnel_parents`) up to [`MAX_CHANGES`] times, after which history
//! gets `X` once.

use crate::conn::{CONN_TUNNEL_CONFIRMED, Conn};

/// UDP ports of the UDP-based encapsulations (Zeek's `base/packet-protocols` defaults).
pub const VXLAN_PORT: u16 = 4789;
pub const GENEVE_PORT: u16 = 6081;
pub const GTPV1_U_PORT: u16 = 2152;
pub const TEREDO_PORT: u16 = 3544;
pub const AYIYA_PORT: u16 = 5072;
pub const GRE_IN_UDP_PORT: u16 = 4754;

/// IP protocol numbers that carry a tunnel.
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_IPV6: u8 = 41;
pub const PROTO_GRE: u8 = 47;

/// Zeek's `Tunnel::max_changes_per_connection`.
pub const MAX_CHANGES: u32 = 5;

/// Zeek's `Tunnel::Type`, as tunnel.log names it.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TunnelType {
    /// IP-in-IP (4in4, 6in4, 4in6, 6in6).
    Ip = 1,
    Ayiya = 2,
    Teredo = 3,
    Gtpv1 = 4,
    /// GRE, PPTP's enhanced GRE, ERSPAN, GRE over UDP.
    Gre = 5,
    Vxlan = 6,
    Geneve = 7,
}

impl TunnelType {
    /// tunnel.log's `tunnel_type`.
    pub fn log_name(self) -> &'static str {
        match self {
            TunnelType::Ip => "Tunnel::IP",
            TunnelType::Ayiya => "Tunnel::AYIYA",
            TunnelType::Teredo => "Tunnel::TEREDO",
            TunnelType::Gtpv1 => "Tunnel::GTPv1",
            TunnelType::Gre => "Tunnel::GRE",
            TunnelType::Vxlan => "Tunnel::VXLAN",
            TunnelType::Geneve => "Tunnel::GENEVE",
        }
    }

    /// Carried over UDP: the tunnel is the outer UDP connection (a conn.log record), not an
    /// entry of its own keyed by the address pair.
    pub fn is_udp(self) -> bool {
        !matches!(self, TunnelType::Ip | TunnelType::Gre)
    }
}

/// What starts at the inner offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InnerKind {
    /// An Ethernet frame (VXLAN, Geneve and GRE with transparent bridging, ERSPAN).
    Ethernet,
    /// An IPv4 packet.
    Ipv4,
    /// An IPv6 packet.
    Ipv6,
}

/// Where the inner packet starts in the bytes handed to a decapsulation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inner {
    pub offset: u16,
    pub kind: InnerKind,
    pub tunnel: TunnelType,
}

/// The bytes a decapsulation rule reads: a slice on the host; in the kernel a window of the
/// payload copied into scratch, with the packet itself behind it (an identity can be longer
/// than the window).
pub trait Bytes {
    /// The byte at `i`, if there is one.
    fn byte(&self, i: usize) -> Option<u8>;
}

impl Bytes for [u8] {
    #[inline(always)]
    fn byte(&self, i: usize) -> Option<u8> {
        self.get(i).copied()
    }
}

#[inline(always)]
fn be16(b: &(impl Bytes + ?Sized), off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([
        b.byte(off)?,
        b.byte(off.checked_add(1)?)?,
    ]))
}

#[inline(always)]
fn inner(offset: usize, kind: InnerKind, tunnel: TunnelType) -> Option<Inner> {
    Some(Inner {
        offset: u16::try_from(offset).ok()?,
        kind,
        tunnel,
    })
}

/// The inner kind an IP version nibble names.
#[inline(always)]
fn by_version(b: &(impl Bytes + ?Sized), off: usize) -> Option<InnerKind> {
    match b.byte(off)? >> 4 {
        4 => Some(InnerKind::Ipv4),
        6 => Some(InnerKind::Ipv6),
        _ => None,
    }
}

/// The inner kind an EtherType (GRE protocol, Geneve protocol type) names.
#[inline(always)]
fn by_ethertype(et: u16) -> Option<InnerKind> {
    match et {
        0x0800 => Some(InnerKind::Ipv4),
        0x86dd => Some(InnerKind::Ipv6),
        0x6558 => Some(InnerKind::Ethernet),
        _ => None,
    }
}

/// IP protocols that Zeek's tunnel analyzers take (IP-in-IP, GRE): with decapsulation on,
/// their packets make no connection of their own, decapsulated or not.
#[inline(always)]
pub fn is_ip_tunnel_proto(proto: u8) -> bool {
    matches!(proto, PROTO_IPIP | PROTO_IPV6 | PROTO_GRE)
}

/// The IP payload of a packet of protocol `proto`: IP-in-IP or GRE.
pub fn decap_ip(proto: u8, payload: &[u8]) -> Option<Inner> {
    decap_ip_len(proto, payload, payload.len())
}

/// [`decap_ip`] of a payload of `len` bytes of which `payload` is the start (the kernel reads a
/// window of the packet; the rules depend on the whole length, the bytes they read on the window).
pub fn decap_ip_len(proto: u8, payload: &(impl Bytes + ?Sized), len: usize) -> Option<Inner> {
    match proto {
        PROTO_IPIP if by_version(payload, 0)? == InnerKind::Ipv4 => {
            inner(0, InnerKind::Ipv4, TunnelType::Ip)
        }
        PROTO_IPV6 if by_version(payload, 0)? == InnerKind::Ipv6 => {
            inner(0, InnerKind::Ipv6, TunnelType::Ip)
        }
        PROTO_GRE => decap_gre_len(payload, len),
        _ => None,
    }
}

/// A UDP payload between ports `sport` and `dport`: the encapsulation registered for the
/// destination port, else for the source port (either end may be the tunnel's well-known one).
pub fn decap_udp(sport: u16, dport: u16, payload: &[u8]) -> Option<Inner> {
    decap_udp_len(sport, dport, payload, payload.len())
}

fn decap_udp_len(
    sport: u16,
    dport: u16,
    payload: &(impl Bytes + ?Sized),
    len: usize,
) -> Option<Inner> {
    decap_udp_port(dport, payload, len).or_else(|| {
        if sport != dport {
            decap_udp_port(sport, payload, len)
        } else {
            None
        }
    })
}

/// A UDP payload between ports `sport` and `dport`, as Zeek's UDP analyzer hands it on: to
/// the encapsulation registered for a port, else to the ones it detects on any port by their
/// content (Teredo and AYIYA), which must then carry an IP packet that fills the datagram
/// exactly.
pub fn decap_udp_detect(sport: u16, dport: u16, payload: &[u8]) -> Option<Inner> {
    decap_udp_detect_len(sport, dport, payload, payload.len())
}

/// [`decap_udp_detect`] of a payload of `len` bytes of which `payload` is the start (see
/// [`decap_ip_len`]).
pub fn decap_udp_detect_len(
    sport: u16,
    dport: u16,
    payload: &(impl Bytes + ?Sized),
    len: usize,
) -> Option<Inner> {
    if let Some(i) = decap_udp_len(sport, dport, payload, len) {
        return Some(i);
    }
    if is_tunnel_port(sport) || is_tunnel_port(dport) {
        return None;
    }
    let i = decap_teredo_len(payload, len).or_else(|| decap_ayiya(payload))?;
    fills(payload, len, i.offset as usize).then_some(i)
}

/// Whether a UDP payload starting with `first` (its first 4 bytes) could be one that
/// [`decap_udp_detect`] opens off the tunnel ports: Teredo's authentication (0x0001) or
/// origin indication (0x0000) header or a bare IPv6 packet, or an AYIYA forward (opcode 1)
/// of IPv4 or IPv6. A cheap test for the kernel's fast path, which then leaves a new flow's
/// first datagram to the stage chain (whose tunnel stage tries the real detection); never
/// false for a payload the detection opens.
#[inline(always)]
pub fn may_be_detected(first: [u8; 4]) -> bool {
    let teredo = first[0] >> 4 == 6 || (first[0] == 0 && first[1] <= 1);
    let ayiya = first[2] & 0x0f == 1 && (first[3] == PROTO_IPIP || first[3] == PROTO_IPV6);
    teredo || ayiya
}

/// A UDP port registered for an encapsulation: the kernel's fast path leaves such packets to
/// the stage chain, whose tunnel stage decapsulates them.
#[inline(always)]
pub fn is_tunnel_port(port: u16) -> bool {
    matches!(
        port,
        VXLAN_PORT | GENEVE_PORT | GTPV1_U_PORT | TEREDO_PORT | AYIYA_PORT | GRE_IN_UDP_PORT
    )
}

/// An IP packet at `off` whose header length is exactly what is left of the `len` bytes.
fn fills(p: &(impl Bytes + ?Sized), len: usize, off: usize) -> bool {
    let Some(b) = p.byte(off) else {
        return false;
    };
    let rest = len.saturating_sub(off);
    match b >> 4 {
        4 => be16(p, off + 2).is_some_and(|l| l as usize == rest),
        6 => be16(p, off + 4).is_some_and(|l| l as usize + 40 == rest),
        _ => false,
    }
}

fn decap_udp_port(port: u16, p: &(impl Bytes + ?Sized), len: usize) -> Option<Inner> {
    match port {
        VXLAN_PORT => decap_vxlan_len(p, len),
        GENEVE_PORT => decap_geneve_len(p, len),
        GTPV1_U_PORT => decap_gtpv1(p),
        TEREDO_PORT => decap_teredo_len(p, len),
        AYIYA_PORT => decap_ayiya(p),
        GRE_IN_UDP_PORT => decap_gre_len(p, len),
        _ => None,
    }
}

/// VXLAN (RFC 7348): an 8-byte header with the I flag (a valid VNI; Zeek's analyzer rejects
/// a header without it), then an Ethernet frame.
pub fn decap_vxlan(p: &[u8]) -> Option<Inner> {
    decap_vxlan_len(p, p.len())
}

fn decap_vxlan_len(p: &(impl Bytes + ?Sized), len: usize) -> Option<Inner> {
    if len < 8 + 14 || !vxlan_header(p, len) {
        return None;
    }
    inner(8, InnerKind::Ethernet, TunnelType::Vxlan)
}

fn vxlan_header(p: &(impl Bytes + ?Sized), len: usize) -> bool {
    len >= 8 && p.byte(0).is_some_and(|b| b & 0x08 != 0)
}

/// Zeek's Geneve analyzer reads a header of version 0 whose options fit in the payload.
fn geneve_header(p: &(impl Bytes + ?Sized), len: usize) -> bool {
    p.byte(0)
        .is_some_and(|b| b >> 6 == 0 && 8 + (b as usize & 0x3f) * 4 <= len)
}

/// Zeek's AYIYA analyzer reads a forward (opcode 1) whose identity and signature fit.
fn ayiya_header(p: &(impl Bytes + ?Sized), len: usize) -> bool {
    let (Some(b0), Some(b1), Some(b2)) = (p.byte(0), p.byte(1), p.byte(2)) else {
        return false;
    };
    let hdr = 8 + (1usize << (b0 >> 4)) + (b1 >> 4) as usize * 4;
    len >= 8 && hdr <= len && b2 & 0x0f == 1
}

/// The tunnel registered on UDP `port` whose analyzer confirms on its header alone.
#[inline(always)]
pub fn header_tunnel(port: u16) -> Option<TunnelType> {
    match port {
        VXLAN_PORT => Some(TunnelType::Vxlan),
        GENEVE_PORT => Some(TunnelType::Geneve),
        AYIYA_PORT => Some(TunnelType::Ayiya),
        _ => None,
    }
}

/// Whether a UDP payload (`len` bytes, `p` its start) of a connection whose responder port is
/// `resp_port` has a header that the tunnel registered for that port confirms. Zeek hands a
/// UDP payload to the packet analyzer of the connection's responder port, and its VXLAN,
/// Geneve and AYIYA analyzers confirm their protocol once the header parsed, before they look
/// at what it carries: a Geneve header around ARP, or around nothing, names `geneve` in
/// conn.log's `service` all the same. The engines mark such a connection
/// (`conn::CONN_TUNNEL_CONFIRMED`, [`confirm_header`]); [`header_tunnel`] of its responder
/// port names it.
pub fn header_confirms(resp_port: u16, p: &(impl Bytes + ?Sized), len: usize) -> bool {
    match header_tunnel(resp_port) {
        Some(TunnelType::Vxlan) => vxlan_header(p, len),
        Some(TunnelType::Geneve) => geneve_header(p, len),
        Some(TunnelType::Ayiya) => ayiya_header(p, len),
        _ => false,
    }
}

/// Marks `conn` as [`header_confirms`] says of one of its UDP payloads.
#[inline(always)]
pub fn confirm_header(conn: &mut Conn, p: &(impl Bytes + ?Sized), len: usize) {
    if conn.flags & CONN_TUNNEL_CONFIRMED == 0 && header_confirms(conn.resp_port, p, len) {
        conn.flags |= CONN_TUNNEL_CONFIRMED;
    }
}

/// Geneve (RFC 8926): 8 bytes plus the options' length (in 4-byte words), then what the
/// protocol type names.
pub fn decap_geneve(p: &[u8]) -> Option<Inner> {
    decap_geneve_len(p, p.len())
}

fn decap_geneve_len(p: &(impl Bytes + ?Sized), len: usize) -> Option<Inner> {
    let b0 = p.byte(0)?;
    if b0 >> 6 != 0 {
        return None;
    }
    let off = 8 + (b0 as usize & 0x3f) * 4;
    let kind = by_ethertype(be16(p, 2)?)?;
    (len > off).then_some(())?;
    inner(off, kind, TunnelType::Geneve)
}

/// GRE (RFC 2784/2890), PPTP's enhanced GRE (RFC 2637) and ERSPAN types I, II and III.
pub fn decap_gre(p: &[u8]) -> Option<Inner> {
    decap_gre_len(p, p.len())
}

fn decap_gre_len(p: &(impl Bytes + ?Sized), len: usize) -> Option<Inner> {
    let flags = be16(p, 0)?;
    let proto = be16(p, 2)?;
    let version = flags & 7;
    // Routing present (obsolete RFC 1701 source routes): Zeek does not decapsulate it.
    if flags & 0x4000 != 0 {
        return None;
    }
    let mut off = 4usize;
    if version == 0 {
        if flags & 0x8000 != 0 {
            off += 4; // checksum + reserved
        }
        if flags & 0x2000 != 0 {
            off += 4; // key
        }
        if flags & 0x1000 != 0 {
            off += 4; // sequence number
        }
        let kind = match proto {
            // ERSPAN type II has a sequence number, type I none; II has an 8-byte header.
            0x88be if flags & 0x1000 != 0 => {
                off += 8;
                InnerKind::Ethernet
            }
            0x88be => InnerKind::Ethernet,
            // ERSPAN type III: 12 bytes, 8 more with the platform subheader (the O flag).
            0x22eb => {
                let o = p.byte(off + 11)? & 1;
                off += 12 + if o != 0 { 8 } else { 0 };
                InnerKind::Ethernet
            }
            _ => by_ethertype(proto)?,
        };
        (len > off).then_some(())?;
        return inner(off, kind, TunnelType::Gre);
    }
    if version != 1 || proto != 0x880b {
        return None;
    }
    // Enhanced GRE: the key (payload length, call id) is always there; S and A add 4 each.
    off += 4;
    if flags & 0x1000 != 0 {
        off += 4;
    }
    if flags & 0x0080 != 0 {
        off += 4;
    }
    // PPP: address and control (0xff 0x03) may be left out, the protocol may be 1 byte.
    if p.byte(off) == Some(0xff) && p.byte(off + 1) == Some(0x03) {
        off += 2;
    }
    let b = p.byte(off)?;
    let ppp = if b & 1 != 0 {
        off += 1;
        b as u16
    } else {
        let v = be16(p, off)?;
        off += 2;
        v
    };
    let kind = match ppp {
        0x0021 => InnerKind::Ipv4,
        0x0057 => InnerKind::Ipv6,
        _ => return None,
    };
    (len > off).then_some(())?;
    inner(off, kind, TunnelType::Gre)
}

/// GTPv1-U (3GPP TS 29.281): only G-PDUs (message type 0xff) carry user data; the optional
/// fields and extension headers are skipped.
pub fn decap_gtpv1(p: &(impl Bytes + ?Sized)) -> Option<Inner> {
    let b0 = p.byte(0)?;
    if b0 >> 5 != 1 || b0 & 0x10 == 0 || p.byte(1)? != 0xff {
        return None;
    }
    let mut off = 8usize;
    if b0 & 0x07 != 0 {
        // Sequence number, N-PDU number, next extension header type.
        let mut next = p.byte(11)?;
        off = 12;
        let mut i = 0;
        while next != 0 && i < 16 {
            let words = p.byte(off)? as usize;
            if words == 0 {
                return None;
            }
            off += words * 4;
            next = p.byte(off.checked_sub(1)?)?;
            i += 1;
        }
        if next != 0 {
            return None;
        }
    }
    let kind = by_version(p, off)?;
    inner(off, kind, TunnelType::Gtpv1)
}

/// An IPv6 header at `off` whose payload length fits the bytes (what Zeek's Teredo analyzer
/// requires of the inner packet).
fn ipv6_fits(p: &(impl Bytes + ?Sized), len: usize, off: usize) -> bool {
    match (p.byte(off), be16(p, off + 4)) {
        (Some(b), Some(plen)) => b >> 4 == 6 && off + 40 + plen as usize <= len,
        _ => false,
    }
}

/// Teredo (RFC 4380): an optional authentication indicator, an optional origin indicator,
/// then an IPv6 packet.
pub fn decap_teredo(p: &[u8]) -> Option<Inner> {
    decap_teredo_len(p, p.len())
}

fn decap_teredo_len(p: &(impl Bytes + ?Sized), len: usize) -> Option<Inner> {
    let mut off = 0usize;
    if be16(p, 0)? == 0x0001 {
        let id_len = p.byte(2)? as usize;
        let au_len = p.byte(3)? as usize;
        // Header, identity, authentication value, nonce (8), confirmation (1).
        off = 4 + id_len + au_len + 9;
    }
    if be16(p, off)? == 0x0000 {
        off += 8;
    }
    ipv6_fits(p, len, off).then_some(())?;
    inner(off, InnerKind::Ipv6, TunnelType::Teredo)
}

/// AYIYA: identity and signature lengths from the header, opcode 1 (forward) only.
pub fn decap_ayiya(p: &(impl Bytes + ?Sized)) -> Option<Inner> {
    let id_len = 1usize << (p.byte(0)? >> 4);
    let sig_len = (p.byte(1)? >> 4) as usize * 4;
    if p.byte(2)? & 0x0f != 1 {
        return None;
    }
    let off = 8 + id_len + sig_len;
    let kind = match p.byte(3)? {
        PROTO_IPIP => InnerKind::Ipv4,
        PROTO_IPV6 => InnerKind::Ipv6,
        _ => return None,
    };
    (by_version(p, off)? == kind).then_some(())?;
    inner(off, kind, TunnelType::Ayiya)
}

/// The identity of an encapsulation stack, for [`check_encap`]: a hash (FNV-1a, 28 bits, never
/// 0, which is "not encapsulated") of the enclosing stack's id `outer` and this layer's tunnel,
/// the same for both directions: a UDP
/// tunnel by its outer connection's key (`FlowKey`'s addresses and ports, `ports` given), an IP
/// one (GRE, IP-in-IP, GRE over UDP) by its address pair, smaller first (Zeek keys IP tunnels by
/// the pair). Written once for both engines, without allocating.
pub fn hop_id(
    outer: u32,
    tunnel: TunnelType,
    a: &[u8; 16],
    b: &[u8; 16],
    ports: Option<(u16, u16)>,
) -> u32 {
    let (a, b) = if ports.is_some() || a <= b {
        (a, b)
    } else {
        (b, a)
    };
    let mut h: u32 = 0x811c_9dc5;
    let mut step = |x: u8| {
        h ^= x as u32;
        h = h.wrapping_mul(0x0100_0193);
    };
    for x in outer.to_le_bytes() {
        step(x);
    }
    step(tunnel as u8);
    let mut i = 0;
    while i < 16 {
        step(a[i]);
        i += 1;
    }
    let mut i = 0;
    while i < 16 {
        step(b[i]);
        i += 1;
    }
    if let Some((pa, pb)) = ports {
        for x in pa.to_be_bytes() {
            step(x);
        }
        for x in pb.to_be_bytes() {
            step(x);
        }
    }
    let id = h & ENCAP_ID_MASK;
    if id == 0 { 1 } else { id }
}

impl TunnelType {
    /// Decodes `tunnel as u8` (the kernel's encapsulation event).
    pub fn from_u8(v: u8) -> Option<TunnelType> {
        Some(match v {
            1 => TunnelType::Ip,
            2 => TunnelType::Ayiya,
            3 => TunnelType::Teredo,
            4 => TunnelType::Gtpv1,
            5 => TunnelType::Gre,
            6 => TunnelType::Vxlan,
            7 => TunnelType::Geneve,
            _ => return None,
        })
    }
}

/// An inner packet of this IP protocol makes no connection: IPv6's "no next header" (a Teredo
/// bubble). Zeek's IP-tunnel protocols are not connections either ([`is_ip_tunnel_proto`]).
#[inline(always)]
pub fn inner_untracked(proto: u8) -> bool {
    proto == 59
}

/// [`Conn::encap`]: the encapsulation id in the low 28 bits, the change count above.
pub const ENCAP_ID_MASK: u32 = 0x0fff_ffff;
const ENCAP_COUNT_SHIFT: u32 = 28;

/// What a packet's encapsulation did to its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncapChange {
    /// Same encapsulation as the last packet (or the connection's first packet).
    Same,
    /// A change Zeek reports (`tunnel_changed`): the new innermost tunnel is a parent too.
    Changed,
    /// A change past the limit: not reported (history got `X` at the first of these).
    Limited,
}

/// Zeek's `CheckEncapsulation` for a packet of `conn` in encapsulation `id` (0: none);
/// `is_new`: the packet created the connection, which starts in its encapsulation.
pub fn check_encap(conn: &mut Conn, id: u32, is_new: bool) -> EncapChange {
    let cur = conn.encap & ENCAP_ID_MASK;
    let count = conn.encap >> ENCAP_COUNT_SHIFT;
    if is_new {
        conn.encap = (count << ENCAP_COUNT_SHIFT) | (id & ENCAP_ID_MASK);
        return EncapChange::Same;
    }
    if cur == id & ENCAP_ID_MASK {
        return EncapChange::Same;
    }
    let (count, change) = if count < MAX_CHANGES {
        (count + 1, EncapChange::Changed)
    } else {
        if count == MAX_CHANGES {
            conn.history.push(b'X');
        }
        (MAX_CHANGES + 1, EncapChange::Limited)
    };
    conn.encap = (count << ENCAP_COUNT_SHIFT) | (id & ENCAP_ID_MASK);
    change
}

#[cfg(test)]
mod tests;
