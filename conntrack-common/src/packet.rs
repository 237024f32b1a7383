//! Frame parsing: Ethernet (with stacked VLAN tags), IPv4/IPv6 and the transport header, into a
//! fixed-size [`PacketMeta`]; for the host also an [`IpView`] of the IP layer, which fragment
//! reassembly and the checksums use.
//!
//! Lengths (`ip_len`, `payload_len`) come from the header length fields, never from the number of
//! captured bytes: Zeek does the same, so Ethernet padding or a short capture does not change the
//! byte counts. A short capture yields `Err(ParseError::Truncated)` (or the part that is known)
//! and never panics.

use crate::proto;

pub mod fast_parse;
pub mod l2;

/// How many bytes of a frame the eBPF side copies into its scratch buffer before parsing.
/// Enough for Ethernet + 2 VLAN tags + IPv6 with a few extension headers + TCP with options.
pub const MAX_HEADER_BYTES: usize = 256;

/// Largest number of stacked 802.1Q/802.1ad tags that are skipped.
pub const MAX_VLAN_TAGS: u32 = 4;

/// Largest number of IPv6 extension headers walked before giving up.
pub const MAX_IPV6_EXT_HEADERS: u32 = 8;

/// `PacketMeta::window_scale` value when the TCP packet carried no window-scale option.
pub const NO_WINDOW_SCALE: u8 = 0xff;

/// `PacketMeta::frag_flags`: the packet is an IP fragment (first or later); the host must
/// reassemble it before the engine sees it.
pub const FRAG_IS_FRAGMENT: u8 = 1;
/// `PacketMeta::frag_flags`: the more-fragments bit was set.
pub const FRAG_MORE: u8 = 2;

/// `PacketMeta::meta_flags`: `dst` is the final destination taken from an IPv6 routing header
/// of type 0 (Zeek keys and checksums with it).
pub const META_RT0_FINAL_DST: u8 = 1;
/// `PacketMeta::meta_flags`: the TCP data offset points beyond the captured bytes (options cut
/// by the snap length). Zeek creates the connection from the first 20 bytes and then drops the
/// packet in the TCP analyzer (`truncated_header`): the engine creates, but does not update.
/// The eBPF glue clears it when its own copy (not the packet) was cut at [`MAX_HEADER_BYTES`].
pub const META_L4_TRUNCATED: u8 = 2;
/// `PacketMeta::meta_flags`: the TCP data offset is below 20 bytes or beyond the transport
/// length of the IP header (Zeek's `bad_TCP_header_len` / `truncated_header` after the
/// connection exists): created, not updated, like [`META_L4_TRUNCATED`].
pub const META_L4_BAD_HEADER: u8 = 4;
/// `PacketMeta::meta_flags`: a UDP packet hands its application analyzer at least
/// [`DNS_HEADER_LEN`] payload bytes (captured and per the IP header), so `app_b0`/`app_b2`
/// are valid: the DNS analyzer parses a message (and may flip) only from a full header.
pub const META_UDP_DNS_HEADER: u8 = 8;
/// `PacketMeta::meta_flags`: a UDP packet hands its application analyzer at least
/// [`NTP_STD_MSG_LEN`] payload bytes: the NTP analyzer's standard message parses (and may
/// flip) only then.
pub const META_UDP_NTP_MSG: u8 = 16;
/// `PacketMeta::meta_flags`: a TCP segment's payload was not captured whole (the snap length
/// cut it). Zeek's TCP endpoint hands such a segment to the reassembler only when
/// `caplen >= len` (else the `truncated_tcp_payload` weird): its sequence numbers count, its
/// bytes are never delivered, so the peer's ACK of them is a content gap (missed_bytes,
/// `G`/`g`). Set by `parse_ip` from the bytes it is given; the eBPF glue decides it from the
/// packet's own length (its copy is cut at [`MAX_HEADER_BYTES`]) or, in a replay, from the
/// agent's verdict.
pub const META_PAYLOAD_CUT: u8 = 32;

/// Size of the DNS message header (`DNS_RawMsgHdr`); shorter messages are a weird, not parsed.
pub const DNS_HEADER_LEN: u32 = 12;
/// Size of an NTP standard-mode message without extensions or MAC (binpac's `NTP_std_msg`
/// plus the first byte).
pub const NTP_STD_MSG_LEN: u32 = 48;

/// TCP flag bits as in the TCP header.
pub mod tcp_flags {
    /// FIN
    pub const FIN: u8 = 0x01;
    /// SYN
    pub const SYN: u8 = 0x02;
    /// RST
    pub const RST: u8 = 0x04;
    /// PSH
    pub const PSH: u8 = 0x08;
    /// ACK
    pub const ACK: u8 = 0x10;
    /// URG
    pub const URG: u8 = 0x20;
}

/// What the engine needs to know about one packet. Filled by [`parse_ethernet`] / [`parse_ip`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// Source address; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`) like Zeek.
    pub src: [u8; 16],
    /// Destination address (IPv6 routing type 0: the final destination).
    pub dst: [u8; 16],
    /// TCP sequence number.
    pub seq: u32,
    /// TCP acknowledgement number.
    pub ack: u32,
    /// IPv4 total length, or IPv6 payload length + 40, from the header.
    pub ip_len: u32,
    /// Transport payload length (after the TCP header, or the 8-byte UDP/ICMP header; whole
    /// IP payload for other protocols), from the IP header lengths.
    pub payload_len: u32,
    /// Sum of `ip_len` over the packets this meta stands for (GSO: all segments).
    pub ip_bytes: u32,
    /// Number of packets this meta stands for (1, or the GSO segment count).
    pub pkts: u32,
    /// IP identification (IPv4: 16 bits; IPv6 fragment header: 32 bits).
    pub frag_id: u32,
    /// Source port; ICMP: the type.
    pub sport: u16,
    /// Destination port; ICMP: the code.
    pub dport: u16,
    /// TCP window (unscaled, as on the wire).
    pub window: u16,
    /// UDP length field.
    pub udp_len: u16,
    /// Fragment offset in bytes.
    pub frag_offset: u16,
    /// Offset of the transport header from the start of the IP header.
    pub l4_offset: u16,
    /// IP protocol number of the transport (after IPv6 extension headers).
    pub proto: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// TCP flags byte.
    pub tcp_flags: u8,
    /// Window-scale option of a SYN, or [`NO_WINDOW_SCALE`].
    pub window_scale: u8,
    /// [`FRAG_IS_FRAGMENT`] | [`FRAG_MORE`].
    pub frag_flags: u8,
    /// [`META_RT0_FINAL_DST`] | [`META_L4_TRUNCATED`] | [`META_L4_BAD_HEADER`] |
    /// [`META_UDP_DNS_HEADER`] | [`META_UDP_NTP_MSG`].
    pub meta_flags: u8,
    /// UDP payload byte 0 (NTP: the mode in the low 3 bits), 0 unless
    /// [`META_UDP_DNS_HEADER`] is set. Takes the former explicit padding.
    pub app_b0: u8,
    /// UDP payload byte 2 (DNS: QR in the top bit), 0 unless [`META_UDP_DNS_HEADER`] is set.
    pub app_b2: u8,
}

impl PacketMeta {
    /// True for IP fragments, which must be reassembled before the engine sees them.
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        self.frag_flags & FRAG_IS_FRAGMENT != 0
    }

    /// True if Zeek's transport analyzer drops this packet after the connection was looked up
    /// or created ([`META_L4_TRUNCATED`], [`META_L4_BAD_HEADER`]): it keys (and may create) a
    /// connection but changes nothing in it.
    #[inline(always)]
    pub fn l4_dropped(&self) -> bool {
        self.meta_flags & (META_L4_TRUNCATED | META_L4_BAD_HEADER) != 0
    }

    /// True if the TCP payload was not captured whole ([`META_PAYLOAD_CUT`]).
    #[inline(always)]
    pub fn payload_cut(&self) -> bool {
        self.meta_flags & META_PAYLOAD_CUT != 0
    }

    /// Sets [`META_PAYLOAD_CUT`] to `cut` for a TCP segment with payload (other packets never
    /// carry it).
    #[inline(always)]
    pub fn set_payload_cut(&mut self, cut: bool) {
        self.meta_flags &= !META_PAYLOAD_CUT;
        if cut && self.proto == proto::TCP && self.payload_len > 0 {
            self.meta_flags |= META_PAYLOAD_CUT;
        }
    }

    /// True if every flag in `mask` is set.
    #[inline(always)]
    pub fn has_flags(&self, mask: u8) -> bool {
        self.tcp_flags & mask == mask
    }
}

/// `(pkts, ip_bytes)` of a packet of `ip_len` bytes with a `payload_len`-byte transport payload
/// that stands for `segs` packets: a GSO/GRO super-packet (`segs > 1`) is that many packets,
/// each with its own headers, so CONNSIZE counts the headers `segs` times; otherwise one
/// packet of `ip_len` bytes. Shared by the eBPF parse stages and the fast path.
#[inline(always)]
pub fn gso_counts(ip_len: u32, payload_len: u32, segs: u32) -> (u32, u32) {
    if segs > 1 {
        let headers = ip_len.wrapping_sub(payload_len);
        (segs, payload_len.wrapping_add(headers.wrapping_mul(segs)))
    } else {
        (1, ip_len)
    }
}

/// Why a frame could not be parsed.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer bytes captured than the headers need.
    Truncated = 1,
    /// Ethertype is neither IPv4 nor IPv6.
    NotIp = 2,
    /// IP version field is not 4/6 (or not the one the ethertype said).
    BadVersion = 3,
    /// IPv4 IHL < 5 or TCP data offset < 5.
    BadHeaderLength = 4,
    /// IP/transport length fields are inconsistent.
    BadLength = 5,
    /// More than [`MAX_VLAN_TAGS`] VLAN tags.
    TooManyVlanTags = 6,
    /// More than [`MAX_IPV6_EXT_HEADERS`] IPv6 extension headers.
    TooManyExtHeaders = 7,
}

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_P_QINQ_OLD: u16 = 0x9100;

#[inline(always)]
fn be16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

#[inline(always)]
fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([
        *s.first()?,
        *s.get(1)?,
        *s.get(2)?,
        *s.get(3)?,
    ]))
}

#[inline(always)]
fn byte(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

/// Copies 16 bytes at `off` (IPv6 address).
#[inline(always)]
fn addr16(b: &[u8], off: usize) -> Option<[u8; 16]> {
    let s = b.get(off..off.checked_add(16)?)?;
    let mut a = [0u8; 16];
    a.copy_from_slice(s);
    Some(a)
}

/// IPv4 address at `off`, IPv4-mapped into 16 bytes.
#[inline(always)]
fn addr4_mapped(b: &[u8], off: usize) -> Option<[u8; 16]> {
    let s = b.get(off..off.checked_add(4)?)?;
    let v4 = u32::from_be_bytes([*s.first()?, *s.get(1)?, *s.get(2)?, *s.get(3)?]);
    // As words: a zeroed byte array is a `memset` call on BPF.
    Some(crate::key::words_addr([0, 0xffff_0000_0000 | v4 as u64]))
}

/// Parses an Ethernet II frame (skipping up to [`MAX_VLAN_TAGS`] 802.1Q/802.1ad tags) and the IP
/// packet inside it.
pub fn parse_ethernet(frame: &[u8], meta: &mut PacketMeta) -> Result<(), ParseError> {
    let mut off: usize = 12;
    let mut ethertype = be16(frame, off).ok_or(ParseError::Truncated)?;
    let mut tags: u32 = 0;
    while ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD || ethertype == ETH_P_QINQ_OLD {
        if tags >= MAX_VLAN_TAGS {
            return Err(ParseError::TooManyVlanTags);
        }
        tags += 1;
        off += 4;
        ethertype = be16(frame, off).ok_or(ParseError::Truncated)?;
    }
    let ip = frame.get(off + 2..).ok_or(ParseError::Truncated)?;
    match ethertype {
        ETH_P_IPV4 | ETH_P_IPV6 => {
            let version = byte(ip, 0).ok_or(ParseError::Truncated)? >> 4;
            let want = if ethertype == ETH_P_IPV4 { 4 } else { 6 };
            if version != want {
                return Err(ParseError::BadVersion);
            }
            parse_ip(ip, meta)
        }
        _ => Err(ParseError::NotIp),
    }
}

/// Parses an IPv4 or IPv6 packet starting at its IP header.
///
/// On success `meta` holds addresses, lengths, fragment fields and the transport fields. For a
/// non-first fragment the transport fields stay zero. `pkts` is set to 1 and `ip_bytes` to
/// `ip_len`; the eBPF side overrides both for GSO super-packets.
pub fn parse_ip(ip: &[u8], meta: &mut PacketMeta) -> Result<(), ParseError> {
    zero_words(meta);
    meta.window_scale = NO_WINDOW_SCALE;
    meta.pkts = 1;
    let version = byte(ip, 0).ok_or(ParseError::Truncated)? >> 4;
    let (l4_off, l4_len) = match version {
        4 => parse_ipv4(ip, meta)?,
        6 => parse_ipv6(ip, meta)?,
        _ => return Err(ParseError::BadVersion),
    };
    meta.ip_bytes = meta.ip_len;
    meta.l4_offset = l4_off as u16;
    // On BPF the glue parses the transport header in a tail-called stage of its own: one
    // program walking IPv6 extension headers and every transport branch exceeds the verifier's
    // path budget.
    if cfg!(target_arch = "bpf") {
        return Ok(());
    }
    if meta.is_fragment() {
        // The host reassembles fragments, so a fragment is always passed on: later fragments
        // carry no transport header, and a first fragment's transport header is best effort.
        if meta.frag_offset == 0
            && let Some(l4) = ip.get(l4_off..)
            && parse_l4(l4, l4_len, meta).is_err()
        {
            clear_l4(meta);
        }
        return Ok(());
    }
    let l4 = ip.get(l4_off..).ok_or(ParseError::Truncated)?;
    parse_l4(l4, l4_len, meta)
}

/// Forgets partially parsed transport fields.
#[inline(always)]
fn clear_l4(meta: &mut PacketMeta) {
    meta.sport = 0;
    meta.dport = 0;
    meta.seq = 0;
    meta.ack = 0;
    meta.tcp_flags = 0;
    meta.window = 0;
    meta.window_scale = NO_WINDOW_SCALE;
    meta.udp_len = 0;
    meta.payload_len = 0;
    meta.app_b0 = 0;
    meta.app_b2 = 0;
    meta.meta_flags &= !(META_UDP_DNS_HEADER | META_UDP_NTP_MSG);
}

/// IPv4 header; returns (transport offset, transport length from the header).
fn parse_ipv4(ip: &[u8], meta: &mut PacketMeta) -> Result<(usize, u32), ParseError> {
    let b0 = byte(ip, 0).ok_or(ParseError::Truncated)?;
    let ihl = ((b0 & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(ParseError::BadHeaderLength);
    }
    if ip.len() < ihl {
        return Err(ParseError::Truncated);
    }
    let total = be16(ip, 2).ok_or(ParseError::Truncated)? as usize;
    if total < ihl {
        return Err(ParseError::BadLength);
    }
    let flags_off = be16(ip, 6).ok_or(ParseError::Truncated)?;
    let frag_offset = (flags_off & 0x1fff).wrapping_mul(8);
    let more = flags_off & 0x2000 != 0;
    if more || frag_offset != 0 {
        meta.frag_flags = FRAG_IS_FRAGMENT | if more { FRAG_MORE } else { 0 };
    }
    meta.frag_offset = frag_offset;
    meta.frag_id = be16(ip, 4).ok_or(ParseError::Truncated)? as u32;
    meta.ip_version = 4;
    meta.proto = byte(ip, 9).ok_or(ParseError::Truncated)?;
    meta.src = addr4_mapped(ip, 12).ok_or(ParseError::Truncated)?;
    meta.dst = addr4_mapped(ip, 16).ok_or(ParseError::Truncated)?;
    meta.ip_len = total as u32;
    Ok((ihl, (total - ihl) as u32))
}

const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;

/// IPv6 header and extension headers; returns (transport offset, transport length).
fn parse_ipv6(ip: &[u8], meta: &mut PacketMeta) -> Result<(usize, u32), ParseError> {
    walk_ipv6::<false>(ip, meta).map(|(off, len, _)| (off, len))
}

/// Where an IPv6 header walk ended: (transport offset, transport length, and when it stopped
/// at a fragment header, that header's offset and the offset of the next-header byte naming it).
type Ipv6Walk = (usize, u32, Option<(usize, usize)>);

/// The IPv6 extension-header walk (hop-by-hop, routing, fragment, destination options, AH),
/// the only one in the tree. The engine walks the whole chain (`TO_FRAGMENT` false); the host's
/// `ip_view` stops after a fragment header, as Zeek's header chain does, and then also learns
/// where the fragment header is and which next-header byte names it (6, or the first byte of
/// the extension header before it). A const parameter rather than a callback: with it the eBPF
/// program stayed instruction for instruction what it was before the host shared this walk.
fn walk_ipv6<const TO_FRAGMENT: bool>(
    ip: &[u8],
    meta: &mut PacketMeta,
) -> Result<Ipv6Walk, ParseError> {
    if ip.len() < 40 {
        return Err(ParseError::Truncated);
    }
    let payload = be16(ip, 4).ok_or(ParseError::Truncated)? as usize;
    let mut next = byte(ip, 6).ok_or(ParseError::Truncated)?;
    meta.ip_version = 6;
    meta.src = addr16(ip, 8).ok_or(ParseError::Truncated)?;
    meta.dst = addr16(ip, 24).ok_or(ParseError::Truncated)?;
    meta.ip_len = (payload + 40) as u32;
    let end = payload + 40;
    let mut off: usize = 40;
    let mut walked: u32 = 0;
    // Where the next-header byte naming the current header is (TO_FRAGMENT only).
    let mut named_at: usize = 6;
    let mut fragment = None;
    loop {
        let h = ip.get(off..).ok_or(ParseError::Truncated)?;
        let hdr_len = match next {
            // The mobility header (135) is a transport for Zeek built without mobile IPv6.
            IPV6_HOPOPTS | IPV6_DSTOPTS => {
                (byte(h, 1).ok_or(ParseError::Truncated)? as usize + 1) * 8
            }
            IPV6_ROUTING => {
                let len = (byte(h, 1).ok_or(ParseError::Truncated)? as usize + 1) * 8;
                note_routing0_final_dst(ip, off, meta);
                len
            }
            IPV6_AH => (byte(h, 1).ok_or(ParseError::Truncated)? as usize + 2) * 4,
            IPV6_FRAGMENT => {
                let offlg = be16(h, 2).ok_or(ParseError::Truncated)?;
                let more = offlg & 1 != 0;
                meta.frag_offset = offlg & 0xfff8;
                if more || meta.frag_offset != 0 {
                    meta.frag_flags = FRAG_IS_FRAGMENT | if more { FRAG_MORE } else { 0 };
                }
                meta.frag_id = be32(h, 4).ok_or(ParseError::Truncated)?;
                8
            }
            _ => break,
        };
        if walked >= MAX_IPV6_EXT_HEADERS {
            return Err(ParseError::TooManyExtHeaders);
        }
        walked += 1;
        let (kind, at) = (next, off);
        next = byte(ip, off).ok_or(ParseError::Truncated)?;
        off += hdr_len;
        if off > end {
            return Err(ParseError::BadLength);
        }
        if TO_FRAGMENT {
            if kind == IPV6_FRAGMENT {
                fragment = Some((at, named_at));
                break;
            }
            named_at = at;
        }
    }
    meta.proto = next;
    Ok((off, (end - off) as u32, fragment))
}

/// Routing header type 0 with segments left: the last listed address is the final destination,
/// which Zeek uses for the connection and the checksum pseudo-header. Silently ignored if the
/// address list was not captured.
#[inline(always)]
fn note_routing0_final_dst(ip: &[u8], off: usize, meta: &mut PacketMeta) {
    let (Some(len8), Some(rtype), Some(left)) =
        (byte(ip, off + 1), byte(ip, off + 2), byte(ip, off + 3))
    else {
        return;
    };
    let n_addrs = (len8 / 2) as usize;
    if rtype != 0 || left == 0 || n_addrs == 0 {
        return;
    }
    if let Some(a) = addr16(ip, off + 8 + (n_addrs - 1) * 16) {
        meta.dst = a;
        meta.meta_flags |= META_RT0_FINAL_DST;
    }
}

/// Transport header. `l4` is what was captured from the transport header on, `l4_len` the
/// transport length according to the IP header. Public for the eBPF glue's transport stage.
pub fn parse_l4(l4: &[u8], l4_len: u32, meta: &mut PacketMeta) -> Result<(), ParseError> {
    match meta.proto {
        proto::TCP => parse_tcp(l4, l4_len, meta),
        proto::UDP => {
            meta.sport = be16(l4, 0).ok_or(ParseError::Truncated)?;
            meta.dport = be16(l4, 2).ok_or(ParseError::Truncated)?;
            meta.udp_len = be16(l4, 4).ok_or(ParseError::Truncated)?;
            meta.payload_len = l4_len.checked_sub(8).ok_or(ParseError::BadLength)?;
            note_udp_app_bytes(l4.get(8..).unwrap_or(&[]), meta);
            Ok(())
        }
        proto::ICMP | proto::ICMPV6 => {
            meta.sport = byte(l4, 0).ok_or(ParseError::Truncated)? as u16;
            meta.dport = byte(l4, 1).ok_or(ParseError::Truncated)? as u16;
            // Zeek needs the whole 8-byte ICMP header (ICMP_MINLEN) to create a connection.
            meta.payload_len = l4_len.checked_sub(8).ok_or(ParseError::BadLength)?;
            Ok(())
        }
        _ => {
            meta.payload_len = l4_len;
            Ok(())
        }
    }
}

/// What a UDP application analyzer is handed: Zeek forwards `min(IP payload length, captured)`
/// bytes after the UDP header. Records the two bytes the orientation rules read and whether a
/// DNS header / an NTP standard message fits. `payload` is the captured payload;
/// `meta.payload_len` must already hold the length from the IP header. Public for the eBPF
/// glue, which calls it again with the packet's own bytes when its copy was cut.
#[inline(always)]
pub fn note_udp_app_bytes(payload: &[u8], meta: &mut PacketMeta) {
    let captured = if payload.len() > u16::MAX as usize {
        u16::MAX as u32
    } else {
        payload.len() as u32
    };
    note_udp_delivered(
        captured,
        payload.first().copied(),
        payload.get(2).copied(),
        meta,
    );
}

/// [`note_udp_app_bytes`] from the captured payload length and payload bytes 0 and 2 (the
/// eBPF glue reads them from the packet when they lie beyond its copy).
#[inline(always)]
pub fn note_udp_delivered(captured: u32, b0: Option<u8>, b2: Option<u8>, meta: &mut PacketMeta) {
    meta.meta_flags &= !(META_UDP_DNS_HEADER | META_UDP_NTP_MSG);
    meta.app_b0 = 0;
    meta.app_b2 = 0;
    let delivered = if captured < meta.payload_len {
        captured
    } else {
        meta.payload_len
    };
    if delivered < DNS_HEADER_LEN {
        return;
    }
    let (Some(b0), Some(b2)) = (b0, b2) else {
        return;
    };
    meta.app_b0 = b0;
    meta.app_b2 = b2;
    meta.meta_flags |= META_UDP_DNS_HEADER;
    if delivered >= NTP_STD_MSG_LEN {
        meta.meta_flags |= META_UDP_NTP_MSG;
    }
}

/// TCP header. Like Zeek, fewer than 20 transport bytes (in the IP header's length or in the
/// capture) is no connection at all, while a data offset that is too small or runs past either
/// length still keys one: the packet is flagged ([`PacketMeta::l4_dropped`]) with no payload.
fn parse_tcp(l4: &[u8], l4_len: u32, meta: &mut PacketMeta) -> Result<(), ParseError> {
    if l4_len < 20 {
        return Err(ParseError::BadLength);
    }
    if l4.len() < 20 {
        return Err(ParseError::Truncated);
    }
    meta.sport = be16(l4, 0).ok_or(ParseError::Truncated)?;
    meta.dport = be16(l4, 2).ok_or(ParseError::Truncated)?;
    meta.seq = be32(l4, 4).ok_or(ParseError::Truncated)?;
    meta.ack = be32(l4, 8).ok_or(ParseError::Truncated)?;
    meta.tcp_flags = byte(l4, 13).ok_or(ParseError::Truncated)?;
    meta.window = be16(l4, 14).ok_or(ParseError::Truncated)?;
    let doff = ((byte(l4, 12).ok_or(ParseError::Truncated)? >> 4) as u32) * 4;
    if doff < 20 || doff > l4_len {
        meta.meta_flags |= META_L4_BAD_HEADER;
        return Ok(());
    }
    // Known from the headers even when the options were not captured (the eBPF glue clears
    // META_L4_TRUNCATED when only its copy was cut and then needs it).
    meta.payload_len = l4_len - doff;
    if doff as usize > l4.len() {
        meta.meta_flags |= META_L4_TRUNCATED;
        return Ok(());
    }
    meta.set_payload_cut(l4.len() < l4_len as usize);
    // On BPF the eBPF glue walks the options in a stage of its own (verifier complexity).
    #[cfg(not(target_arch = "bpf"))]
    if meta.tcp_flags & tcp_flags::SYN != 0 {
        meta.window_scale = tcp_window_scale(l4, doff as usize);
    }
    Ok(())
}

/// Walks the TCP options (at most 40 bytes, so at most 40 iterations) for the window-scale
/// option the way Zeek's SYN option parser does: EOL ends, NOP is one byte, a length of 0 or
/// one running past the header ends the walk, a window-scale option needs length >= 3. Values
/// above 14 are clamped to 14 (RFC 7323, as Zeek does).
pub fn tcp_window_scale(l4: &[u8], doff: usize) -> u8 {
    let mut off: usize = 20;
    let mut scale = NO_WINDOW_SCALE;
    let mut i = 0;
    while i < 40 && off < doff {
        i += 1;
        let Some(kind) = byte(l4, off) else { break };
        if kind == 0 {
            break;
        }
        if kind == 1 {
            off += 1;
            continue;
        }
        if off + 1 >= doff {
            break;
        }
        let Some(len) = byte(l4, off + 1) else { break };
        let len = len as usize;
        if len == 0 || off + len > doff {
            break;
        }
        if kind == 3
            && len >= 3
            && let Some(s) = byte(l4, off + 2)
        {
            scale = if s > 14 { 14 } else { s };
        }
        off += len;
    }
    scale
}

/// Zeroes a value with volatile word stores (BPF: avoids `memset` byte-loop calls): 8-byte
/// words for 8-byte aligned types, 4-byte words otherwise. Only for the plain-integer
/// `#[repr(C)]` types of this crate (all-zero is valid, size a multiple of the word).
#[inline(always)]
pub(crate) fn zero_words<T: Copy>(v: &mut T) {
    if core::mem::align_of::<T>() >= 8 {
        let p = (v as *mut T).cast::<u64>();
        let n = core::mem::size_of::<T>() / 8;
        let mut i = 0;
        while i < n {
            // SAFETY: `i < size_of::<T>() / 8` keeps the store inside `*v`, which is 8-aligned.
            unsafe { core::ptr::write_volatile(p.add(i), 0) };
            i += 1;
        }
    } else {
        let p = (v as *mut T).cast::<u32>();
        let n = core::mem::size_of::<T>() / 4;
        let mut i = 0;
        while i < n {
            // SAFETY: inside `*v`; every type this is used for is at least 4-aligned.
            unsafe { core::ptr::write_volatile(p.add(i), 0) };
            i += 1;
        }
    }
}

const _: () = assert!(core::mem::align_of::<PacketMeta>() >= 4);
const _: () = assert!(core::mem::size_of::<PacketMeta>().is_multiple_of(4));
const _: () = assert!(core::mem::align_of::<crate::conn::Conn>() >= 8);

/// The IP layer as the host sees it before the engine, like Zeek's IP analyzer: what the
/// replay path's IP checks, fragment reassembly and the checksums ([`crate::checksum`]) need.
/// Host only; built by [`ip_view`].
#[cfg(any(test, feature = "user"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpView {
    /// 4 or 6.
    pub version: u8,
    /// Source address; IPv4 is stored IPv4-mapped.
    pub src: [u8; 16],
    /// Destination address (IPv6 routing type 0: the final destination).
    pub dst: [u8; 16],
    /// Transport protocol: after the IPv6 extension headers, or the next header named by an
    /// IPv6 fragment header.
    pub proto: u8,
    /// Offset of the transport header (after an IPv6 fragment header: of the fragment data).
    pub l4_off: usize,
    /// Transport length from the IP header lengths (0 when they contradict each other).
    pub l4_len: usize,
    /// IPv4 total length, or IPv6 payload length + 40, from the header.
    pub ip_len: usize,
    /// IPv4: MF set or offset non-zero. IPv6: there is a fragment header (an atomic one too).
    pub is_fragment: bool,
    /// The IPv6 fragment header, if there is one.
    pub ipv6_fragment: Option<Ipv6Fragment>,
}

/// An IPv6 fragment header and where it sits, for reassembly.
#[cfg(any(test, feature = "user"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Fragment {
    /// Offset of the fragment header: the bytes before it are the unfragmentable part.
    pub header_off: usize,
    /// Offset of the next-header byte that names the fragment header (6, or the first byte of
    /// the extension header before it): reassembly puts the fragments' next header there.
    pub named_at: usize,
    /// Fragment offset in bytes.
    pub offset: usize,
    /// The more-fragments flag.
    pub more: bool,
    /// Identification.
    pub id: u32,
}

/// Describes an IPv4 or IPv6 packet starting at its IP header; `None` if there is no IP header
/// to describe (shorter than the fixed header, IHL below 5, a truncated or overlong IPv6
/// extension-header chain, more than [`MAX_IPV6_EXT_HEADERS`] of them).
///
/// Unlike [`parse_ip`], an IPv4 header whose total length is below its own length (0 under
/// segmentation offload) or whose options were not captured is described anyway: the replay
/// path makes Zeek's IP checks itself, in Zeek's order. The IPv6 chain ends after a fragment
/// header, as in Zeek: what follows it is fragment data, headers only in a first fragment.
#[cfg(any(test, feature = "user"))]
pub fn ip_view(ip: &[u8]) -> Option<IpView> {
    match byte(ip, 0)? >> 4 {
        4 => ipv4_view(ip),
        6 => ipv6_view(ip),
        _ => None,
    }
}

/// [`parse_ip`] of a packet that [`ip_view`] described as `view` (`view` must be `ip_view(ip)`):
/// the same result, without reading a plain IPv4 header a second time. The replay describes
/// every packet for Zeek's IP checks before the engine parses it; for an unfragmented IPv4
/// packet whose header `parse_ip` accepts, the view already holds what that header gives
/// the engine. Anything else (IPv6, a fragment, a header `parse_ip` rejects) is parsed.
#[cfg(any(test, feature = "user"))]
pub fn parse_ip_viewed(ip: &[u8], view: &IpView, meta: &mut PacketMeta) -> Result<(), ParseError> {
    // parse_ipv4's checks: the header captured, the total length covering it.
    let ihl = view.l4_off;
    if view.version != 4 || view.is_fragment || ip.len() < ihl || view.ip_len < ihl {
        return parse_ip(ip, meta);
    }
    zero_words(meta);
    meta.window_scale = NO_WINDOW_SCALE;
    meta.pkts = 1;
    meta.ip_version = 4;
    meta.frag_id = be16(ip, 4).ok_or(ParseError::Truncated)? as u32;
    meta.proto = view.proto;
    meta.src = view.src;
    meta.dst = view.dst;
    meta.ip_len = view.ip_len as u32;
    meta.ip_bytes = meta.ip_len;
    meta.l4_offset = ihl as u16;
    let l4 = ip.get(ihl..).ok_or(ParseError::Truncated)?;
    parse_l4(l4, (view.ip_len - ihl) as u32, meta)
}

#[cfg(any(test, feature = "user"))]
fn ipv4_view(ip: &[u8]) -> Option<IpView> {
    let ihl = ((byte(ip, 0)? & 0x0f) as usize) * 4;
    if ihl < 20 || ip.len() < 20 {
        return None;
    }
    let total = be16(ip, 2)? as usize;
    let flags_off = be16(ip, 6)?;
    let more = flags_off & 0x2000 != 0;
    Some(IpView {
        version: 4,
        src: addr4_mapped(ip, 12)?,
        dst: addr4_mapped(ip, 16)?,
        proto: byte(ip, 9)?,
        l4_off: ihl,
        l4_len: total.saturating_sub(ihl),
        ip_len: total,
        is_fragment: more || flags_off & 0x1fff != 0,
        ipv6_fragment: None,
    })
}

#[cfg(any(test, feature = "user"))]
fn ipv6_view(ip: &[u8]) -> Option<IpView> {
    let mut meta = PacketMeta::default();
    let (l4_off, l4_len, fragment) = walk_ipv6::<true>(ip, &mut meta).ok()?;
    let ipv6_fragment = fragment.map(|(header_off, named_at)| Ipv6Fragment {
        header_off,
        named_at,
        offset: meta.frag_offset as usize,
        more: meta.frag_flags & FRAG_MORE != 0,
        id: meta.frag_id,
    });
    Some(IpView {
        version: 6,
        src: meta.src,
        dst: meta.dst,
        proto: meta.proto,
        l4_off,
        l4_len: l4_len as usize,
        ip_len: meta.ip_len as usize,
        is_fragment: ipv6_fragment.is_some(),
        ipv6_fragment,
    })
}

#[cfg(test)]
mod tests;
