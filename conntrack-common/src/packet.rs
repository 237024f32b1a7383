//! Frame parsing: Ethernet (with stacked VLAN tags), IPv4/IPv6 and the transport header, into a
//! fixed-size [`PacketMeta`]. Also the host-side checksum helpers.
//!
//! Lengths (`ip_len`, `payload_len`) come from the header length fields, never from the number of
//! captured bytes: Zeek does the same, so Ethernet padding or a short capture does not change the
//! byte counts. A short capture yields `Err(ParseError::Truncated)` (or the part that is known)
//! and never panics.

use crate::proto;

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
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..16].copy_from_slice(s);
    Some(a)
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
        next = byte(ip, off).ok_or(ParseError::Truncated)?;
        off += hdr_len;
        if off > end {
            return Err(ParseError::BadLength);
        }
    }
    meta.proto = next;
    Ok((off, (end - off) as u32))
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

/// Adds `data` as big-endian 16-bit words to a one's-complement accumulator.
fn sum_words(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u64) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// True if the IPv4 header checksum is right (host use; Zeek drops packets where it is not,
/// before any connection is created). Non-IPv4 input returns true.
pub fn ipv4_header_checksum_ok(ip: &[u8]) -> bool {
    let Some(b0) = byte(ip, 0) else { return false };
    if b0 >> 4 != 4 {
        return true;
    }
    let ihl = ((b0 & 0x0f) as usize) * 4;
    match ip.get(..ihl) {
        Some(h) if ihl >= 20 => fold(sum_words(h, 0)) == 0xffff,
        _ => false,
    }
}

/// VXLAN's well-known port (Zeek's default `PacketAnalyzer::VXLAN::vxlan_ports`).
pub const VXLAN_PORT: u16 = 4789;

/// Zeek accepts a zero UDP checksum (also over IPv6) for what looks like VXLAN on its port:
/// long enough for VXLAN + Ethernet headers and the VXLAN "I" flag set.
fn looks_like_vxlan(udp: &[u8], meta: &PacketMeta) -> bool {
    meta.dport == VXLAN_PORT && udp.len() > 8 + 8 + 14 && byte(udp, 8).unwrap_or(0) & 0x08 != 0
}

/// Validates the TCP/UDP/ICMP/ICMPv6 checksum of a full (reassembled) IP packet the way Zeek
/// does: Internet checksum with the IPv4/IPv6 pseudo-header (none for ICMPv4), an IPv4 UDP
/// checksum of 0 means "not computed" (ok), for IPv6 UDP a 0 is an error. When fewer bytes were
/// captured than the header lengths say, the checksum cannot be checked and the packet is
/// accepted, again as Zeek does. Other protocols are always ok.
pub fn transport_checksum_ok(ip_packet: &[u8], meta: &PacketMeta) -> bool {
    let start = meta.l4_offset as usize;
    let Some(len) = (meta.ip_len as usize).checked_sub(start) else {
        return true;
    };
    let Some(data) = ip_packet.get(start..start + len) else {
        return true;
    };
    let pseudo = match meta.proto {
        proto::TCP | proto::ICMPV6 => true,
        proto::UDP => {
            if be16(data, 6) == Some(0) {
                return meta.ip_version == 4 || looks_like_vxlan(data, meta);
            }
            true
        }
        proto::ICMP => false,
        _ => return true,
    };
    let mut acc = 0u64;
    if pseudo {
        if meta.ip_version == 4 {
            acc = sum_words(&meta.src[12..16], acc);
            acc = sum_words(&meta.dst[12..16], acc);
        } else {
            acc = sum_words(&meta.src, acc);
            acc = sum_words(&meta.dst, acc);
        }
        acc += meta.proto as u64 + len as u64;
    }
    fold(sum_words(data, acc)) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::vec::Vec;

    fn parse(frame: &[u8]) -> Result<PacketMeta, ParseError> {
        let mut m = PacketMeta::default();
        parse_ethernet(frame, &mut m).map(|_| m)
    }

    #[test]
    fn ipv4_tcp_fields_come_from_the_headers() {
        let f = tcp4(true, SYN | ACK, 1000, 2000, 10);
        let m = parse(&f).unwrap();
        assert_eq!(m.ip_version, 4);
        assert_eq!(m.proto, proto::TCP);
        assert_eq!(&m.src[10..], &[0xff, 0xff, 10, 0, 0, 1]);
        assert_eq!((m.sport, m.dport), (40000, 80));
        assert_eq!((m.seq, m.ack, m.window), (1000, 2000, 65535));
        assert_eq!(m.tcp_flags, SYN | ACK);
        assert_eq!((m.ip_len, m.payload_len, m.l4_offset), (50, 10, 20));
        assert_eq!((m.pkts, m.ip_bytes), (1, 50));
        assert_eq!(m.window_scale, NO_WINDOW_SCALE);
        assert!(!m.is_fragment());
    }

    #[test]
    fn ethernet_padding_does_not_count_as_payload() {
        let mut f = tcp4(true, ACK, 1, 1, 0);
        f.extend_from_slice(&[0u8; 6]);
        let m = parse(&f).unwrap();
        assert_eq!((m.ip_len, m.payload_len), (40, 0));
    }

    #[test]
    fn udp_analyzer_sees_min_of_ip_length_and_capture() {
        let mut payload = [0u8; 48];
        payload[0] = 0x24; // NTP v4 server mode
        payload[2] = 0x81; // DNS QR
        let f = udp4_payload((A4, 123), (B4, 123), &payload);
        let m = parse(&f).unwrap();
        assert_eq!((m.app_b0, m.app_b2), (0x24, 0x81));
        assert!(m.meta_flags & META_UDP_DNS_HEADER != 0 && m.meta_flags & META_UDP_NTP_MSG != 0);
        // Snap length cut after 20 payload bytes: a DNS header, no NTP message.
        let cut = parse(&f[..f.len() - 28]).unwrap();
        assert_eq!(cut.payload_len, 48);
        assert_eq!(
            cut.meta_flags & (META_UDP_DNS_HEADER | META_UDP_NTP_MSG),
            META_UDP_DNS_HEADER
        );
        // Fewer than 12 bytes captured: nothing for the analyzers, bytes stay zero.
        let short = parse(&f[..f.len() - 37]).unwrap();
        assert_eq!((short.meta_flags, short.app_b0, short.app_b2), (0, 0, 0));
    }

    #[test]
    fn vlan_and_qinq_tags_are_skipped() {
        let ip = ipv4(A4, B4, proto::UDP, &[], udp_seg(1, 2, 3));
        for tags in [
            &[0x8100u16][..],
            &[0x88a8, 0x8100],
            &[0x9100, 0x8100, 0x8100],
        ] {
            let m = parse(&eth(tags, 0x0800, &ip)).unwrap();
            assert_eq!((m.sport, m.dport, m.udp_len, m.payload_len), (1, 2, 11, 3));
        }
        let too_many = eth(&[0x8100; 5], 0x0800, &ip);
        assert_eq!(parse(&too_many), Err(ParseError::TooManyVlanTags));
    }

    #[test]
    fn non_ip_and_bad_headers_are_errors() {
        assert_eq!(parse(&eth(&[], 0x0806, &[0u8; 28])), Err(ParseError::NotIp));
        let mut ip = ipv4(A4, B4, proto::UDP, &[], udp_seg(1, 2, 3));
        ip[0] = 0x44; // IHL 4
        assert_eq!(parse(&eth4(ip.clone())), Err(ParseError::BadHeaderLength));
        ip[0] = 0x65;
        assert_eq!(parse(&eth4(ip)), Err(ParseError::BadVersion));
    }

    #[test]
    fn ipv4_options_move_the_transport_header() {
        let opts = [1u8, 1, 1, 0]; // NOPs + EOL
        let f = eth4(ipv4(
            A4,
            B4,
            proto::TCP,
            &opts,
            tcp_seg(5, 6, ACK, 7, 8, &[], 4),
        ));
        let m = parse(&f).unwrap();
        assert_eq!(
            (m.l4_offset, m.sport, m.dport, m.seq, m.payload_len),
            (24, 5, 6, 7, 4)
        );
    }

    /// A SYN-ACK whose 40-byte TCP header was cut after 22 bytes by the snap length.
    fn syn_ack_with_cut_options() -> Vec<u8> {
        let opts = [
            2u8, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let f = eth4(ipv4(
            A4,
            B4,
            proto::TCP,
            &[],
            tcp_seg(443, 56960, SYN | ACK, 7, 8, &opts, 0),
        ));
        f[..14 + 20 + 22].to_vec()
    }

    #[test]
    fn tcp_header_cut_by_the_capture_keys_but_is_dropped() {
        let m = parse(&syn_ack_with_cut_options()).unwrap();
        assert_eq!(m.meta_flags, META_L4_TRUNCATED);
        assert!(m.l4_dropped());
        assert_eq!((m.sport, m.dport, m.tcp_flags), (443, 56960, SYN | ACK));
        assert_eq!((m.ip_len, m.ip_bytes, m.payload_len), (60, 60, 0));
        // payload_len is from the headers: 60 - 20 - 40.
    }

    #[test]
    fn tcp_data_offset_below_20_or_past_the_ip_length_keys_but_is_dropped() {
        let mut ip = ipv4(A4, B4, proto::TCP, &[], tcp_seg(5, 6, ACK, 7, 8, &[], 4));
        ip[20 + 12] = 4 << 4; // 16 bytes
        let m = parse(&eth4(ip.clone())).unwrap();
        assert_eq!(
            (m.meta_flags, m.sport, m.payload_len),
            (META_L4_BAD_HEADER, 5, 0)
        );
        ip[20 + 12] = 6 << 4; // 24 bytes, but the IP header says 24 transport bytes: ok
        let m = parse(&eth4(ip.clone())).unwrap();
        assert_eq!((m.meta_flags, m.payload_len), (0, 0));
        ip[20 + 12] = 7 << 4; // 28 bytes > 24
        let m = parse(&eth4(ip)).unwrap();
        assert!(m.l4_dropped());
    }

    #[test]
    fn tcp_shorter_than_20_bytes_is_no_connection() {
        let ip = ipv4(A4, B4, proto::TCP, &[], tcp_seg(5, 6, ACK, 7, 8, &[], 0));
        let mut short_ip = ip[..20 + 19].to_vec();
        short_ip[2..4].copy_from_slice(&39u16.to_be_bytes());
        assert_eq!(parse(&eth4(short_ip)), Err(ParseError::BadLength));
        assert_eq!(
            parse(&eth4(ip[..20 + 19].to_vec())),
            Err(ParseError::Truncated)
        );
    }

    #[test]
    fn window_scale_option_is_read_from_syn_and_clamped() {
        let opts = [2u8, 4, 5, 0xb4, 1, 3, 3, 7];
        let f = eth4(ipv4(
            A4,
            B4,
            proto::TCP,
            &[],
            tcp_seg(5, 6, SYN, 7, 0, &opts, 0),
        ));
        assert_eq!(parse(&f).unwrap().window_scale, 7);
        let opts = [1u8, 3, 3, 20];
        let f = eth4(ipv4(
            A4,
            B4,
            proto::TCP,
            &[],
            tcp_seg(5, 6, SYN, 7, 0, &opts, 0),
        ));
        assert_eq!(parse(&f).unwrap().window_scale, 14);
        let f = eth4(ipv4(
            A4,
            B4,
            proto::TCP,
            &[],
            tcp_seg(5, 6, ACK, 7, 0, &opts, 0),
        ));
        assert_eq!(parse(&f).unwrap().window_scale, NO_WINDOW_SCALE);
    }

    #[test]
    fn ipv4_fragments_are_flagged() {
        let mut ip = ipv4(A4, B4, proto::UDP, &[], udp_seg(1, 2, 30));
        ip[6] = 0x20; // MF, offset 0
        let m = parse(&eth4(ip.clone())).unwrap();
        assert_eq!(m.frag_flags, FRAG_IS_FRAGMENT | FRAG_MORE);
        assert_eq!((m.sport, m.frag_offset, m.frag_id), (1, 0, 0x1234));
        ip[6] = 0x00;
        ip[7] = 0x03; // offset 24 bytes, last fragment
        let m = parse(&eth4(ip.clone())).unwrap();
        assert_eq!(m.frag_flags, FRAG_IS_FRAGMENT);
        assert_eq!((m.sport, m.dport, m.frag_offset), (0, 0, 24));
        // A first fragment too short for its transport header is still passed on.
        let mut tiny = ip[..24].to_vec();
        tiny[2..4].copy_from_slice(&24u16.to_be_bytes());
        tiny[6] = 0x20;
        tiny[7] = 0;
        let m = parse(&eth4(tiny)).unwrap();
        assert!(m.is_fragment());
        assert_eq!(m.sport, 0);
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        let hop = (IPV6_HOPOPTS, std::vec![0u8, 0, 1, 4, 0, 0, 0, 0]);
        let dst = (IPV6_DSTOPTS, std::vec![0u8, 0, 1, 4, 0, 0, 0, 0]);
        let ah = (IPV6_AH, std::vec![0u8, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
        let atomic_frag = (IPV6_FRAGMENT, std::vec![0u8, 0, 0, 0, 0, 0, 0, 9]);
        let ip = ipv6(
            A6,
            B6,
            proto::TCP,
            &[hop, dst, ah, atomic_frag],
            tcp_seg(1, 2, SYN, 3, 0, &[], 0),
        );
        let m = parse(&eth6(ip.clone())).unwrap();
        assert_eq!((m.proto, m.sport, m.dport, m.seq), (proto::TCP, 1, 2, 3));
        assert_eq!(m.l4_offset, 40 + 8 + 8 + 12 + 8);
        assert_eq!(m.ip_len, ip.len() as u32);
        assert!(!m.is_fragment());
        assert!(transport_checksum_ok(&ip, &m));
    }

    #[test]
    fn ipv6_later_fragment_has_no_ports() {
        let frag = (IPV6_FRAGMENT, std::vec![0u8, 0, 0, 0x10, 0, 0, 0, 9]);
        let ip = ipv6(A6, B6, proto::UDP, &[frag], udp_seg(1, 2, 8));
        let m = parse(&eth6(ip)).unwrap();
        assert_eq!(m.frag_flags, FRAG_IS_FRAGMENT);
        assert_eq!((m.frag_offset, m.frag_id, m.sport), (16, 9, 0));
    }

    #[test]
    fn ipv6_routing_type0_final_destination_is_used() {
        let final_dst = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        let mut rt = std::vec![0u8, 2, 0, 1, 0, 0, 0, 0];
        rt.extend_from_slice(&final_dst);
        let ip = ipv6(A6, B6, proto::UDP, &[(IPV6_ROUTING, rt)], udp_seg(1, 2, 0));
        let m = parse(&eth6(ip)).unwrap();
        assert_eq!(m.dst, final_dst);
        assert_eq!(m.meta_flags, META_RT0_FINAL_DST);
        assert_eq!(m.l4_offset, 64);
    }

    #[test]
    fn icmp_type_and_code_are_the_ports() {
        let f = eth4(ipv4(A4, B4, proto::ICMP, &[], icmp_seg(3, 3, 28)));
        let m = parse(&f).unwrap();
        assert_eq!((m.sport, m.dport, m.payload_len), (3, 3, 28));
        let f = eth6(ipv6(A6, B6, proto::ICMPV6, &[], icmp_seg(128, 0, 32)));
        let m = parse(&f).unwrap();
        assert_eq!(
            (m.proto, m.sport, m.dport, m.payload_len),
            (proto::ICMPV6, 128, 0, 32)
        );
    }

    #[test]
    fn other_protocols_have_port_zero() {
        let f = eth4(ipv4(
            A4,
            B4,
            132,
            &[],
            (std::vec![1u8, 2, 3, 4, 0, 0, 0, 0], 4),
        ));
        let m = parse(&f).unwrap();
        assert_eq!((m.proto, m.sport, m.dport, m.payload_len), (132, 0, 0, 8));
    }

    #[test]
    fn truncated_or_garbage_input_never_panics() {
        let frames: Vec<Vec<u8>> = std::vec![
            tcp4(true, SYN, 1, 0, 0),
            eth(
                &[0x88a8, 0x8100],
                0x0800,
                &ipv4(
                    A4,
                    B4,
                    proto::TCP,
                    &[1, 1, 1, 0],
                    tcp_seg(1, 2, SYN, 3, 0, &[2, 4, 5, 0xb4, 1, 3, 3, 7], 5)
                )
            ),
            eth6(ipv6(
                A6,
                B6,
                proto::UDP,
                &[
                    (IPV6_HOPOPTS, std::vec![0u8; 8]),
                    (
                        IPV6_ROUTING,
                        std::vec![
                            0u8, 2, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                            14, 15, 16
                        ]
                    )
                ],
                udp_seg(1, 2, 3)
            )),
            eth6(ipv6(A6, B6, proto::ICMPV6, &[], icmp_seg(1, 0, 4))),
        ];
        let mut seed: u32 = 12345;
        for f in &frames {
            for cut in 0..=f.len() {
                let _ = parse(&f[..cut]);
                let mut g = f[..cut].to_vec();
                for _ in 0..4 {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    if !g.is_empty() {
                        let i = (seed as usize >> 8) % g.len();
                        g[i] = (seed >> 24) as u8;
                    }
                }
                let _ = parse(&g);
                let mut m = PacketMeta::default();
                let _ = parse_ip(&g, &mut m);
                let _ = transport_checksum_ok(&g, &m);
                let _ = ipv4_header_checksum_ok(&g);
            }
        }
        let mut m = PacketMeta::default();
        assert_eq!(parse_ethernet(&[], &mut m), Err(ParseError::Truncated));
        assert_eq!(parse_ip(&[0x45, 0], &mut m), Err(ParseError::Truncated));
    }

    #[test]
    fn checksums_validate_and_detect_corruption() {
        let ips = [
            ipv4(A4, B4, proto::TCP, &[], tcp_seg(1, 2, ACK, 3, 4, &[], 11)),
            ipv4(A4, B4, proto::UDP, &[], udp_seg(1, 2, 7)),
            ipv4(A4, B4, proto::ICMP, &[], icmp_seg(8, 0, 9)),
            ipv6(A6, B6, proto::TCP, &[], tcp_seg(1, 2, ACK, 3, 4, &[], 11)),
            ipv6(A6, B6, proto::UDP, &[], udp_seg(1, 2, 7)),
            ipv6(A6, B6, proto::ICMPV6, &[], icmp_seg(128, 0, 9)),
        ];
        for ip in ips {
            let mut m = PacketMeta::default();
            parse_ip(&ip, &mut m).unwrap();
            assert!(transport_checksum_ok(&ip, &m), "proto {}", m.proto);
            let mut bad = ip.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x55;
            assert!(!transport_checksum_ok(&bad, &m), "proto {}", m.proto);
            // Short capture: cannot be checked, accepted like Zeek.
            assert!(transport_checksum_ok(&bad[..last], &m));
        }
    }

    #[test]
    fn udp_zero_checksum_is_ok_for_ipv4_only() {
        let mut ip4 = ipv4(A4, B4, proto::UDP, &[], udp_seg(1, 2, 7));
        ip4[26] = 0;
        ip4[27] = 0;
        let mut m = PacketMeta::default();
        parse_ip(&ip4, &mut m).unwrap();
        assert!(transport_checksum_ok(&ip4, &m));
        let mut ip6 = ipv6(A6, B6, proto::UDP, &[], udp_seg(1, 2, 7));
        ip6[46] = 0;
        ip6[47] = 0;
        parse_ip(&ip6, &mut m).unwrap();
        assert!(!transport_checksum_ok(&ip6, &m));
        // ... except for VXLAN on its port.
        let mut vx = ipv6(A6, B6, proto::UDP, &[], udp_seg(5555, VXLAN_PORT, 40));
        vx[48] = 0x08;
        vx[46] = 0;
        vx[47] = 0;
        parse_ip(&vx, &mut m).unwrap();
        assert!(transport_checksum_ok(&vx, &m));
    }

    #[test]
    fn ipv4_header_checksum_is_checked() {
        let mut ip = ipv4(A4, B4, proto::UDP, &[1, 1, 1, 0], udp_seg(1, 2, 7));
        assert!(ipv4_header_checksum_ok(&ip));
        ip[8] ^= 1;
        assert!(!ipv4_header_checksum_ok(&ip));
    }
}
