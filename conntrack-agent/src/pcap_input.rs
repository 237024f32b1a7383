//! Offline input: pcap (microsecond and nanosecond) and pcapng (several interfaces, each with its
//! own link type and timestamp resolution), plus link-layer decoding down to the IP header.
//!
//! Timestamps are truncated to microseconds, as Zeek sees them through libpcap's
//! `pcap_fopen_offline` (which does not ask for nanosecond precision).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

pub const LINKTYPE_NULL: u32 = 0;
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const DLT_RAW_12: u32 = 12;
pub const DLT_RAW_14: u32 = 14;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_LOOP: u32 = 108;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_IPV4: u32 = 228;
pub const LINKTYPE_IPV6: u32 = 229;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;
pub const LINKTYPE_PPP: u32 = 9;
pub const LINKTYPE_PPP_HDLC: u32 = 50;

pub fn linktype_supported(lt: u32) -> bool {
    matches!(
        lt,
        LINKTYPE_NULL
            | LINKTYPE_ETHERNET
            | DLT_RAW_12
            | DLT_RAW_14
            | LINKTYPE_RAW
            | LINKTYPE_LOOP
            | LINKTYPE_LINUX_SLL
            | LINKTYPE_IPV4
            | LINKTYPE_IPV6
            | LINKTYPE_LINUX_SLL2
            | LINKTYPE_PPP
            | LINKTYPE_PPP_HDLC
    )
}

const SUPPORTED_TEXT: &str = "Ethernet (1), raw IP (12, 14, 101, 228, 229), Linux cooked SLL (113) and SLL2 (276), BSD NULL (0) and LOOP (108), PPP (9, 50)";

/// One captured packet.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Microsecond-truncated time in nanoseconds since the epoch.
    pub ts_ns: i64,
    pub linktype: u32,
    pub data: Vec<u8>,
    pub orig_len: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    // The io error is the source: anyhow's `{:#}` appends it after this text.
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Clone, Copy)]
struct Iface {
    linktype: u32,
    /// Timestamp units per second, as (numerator is units, so seconds = units / per_sec).
    units_per_sec: u64,
    offset_secs: i64,
}

enum Kind {
    Pcap {
        big_endian: bool,
        nanos: bool,
        linktype: u32,
    },
    PcapNg {
        big_endian: bool,
        ifaces: Vec<Iface>,
    },
}

pub struct PcapReader {
    path: PathBuf,
    r: BufReader<File>,
    kind: Kind,
    /// Packets skipped because of an unsupported interface link type (pcapng only).
    pub skipped_linktype: u64,
    pub warned_linktypes: Vec<u32>,
    pub truncated_tail: bool,
}

fn rd_u16(b: &[u8], be: bool) -> u16 {
    let a = [b[0], b[1]];
    if be {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    }
}

fn rd_u32(b: &[u8], be: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if be {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

fn rd_u64(b: &[u8], be: bool) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    if be {
        u64::from_be_bytes(a)
    } else {
        u64::from_le_bytes(a)
    }
}

/// Reads exactly `buf.len()` bytes; Ok(false) at a clean EOF before the first byte,
/// Err(UnexpectedEof) when the data stops in the middle.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => {
                if n == 0 {
                    return Ok(false);
                }
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

const MAX_RECORD: usize = 64 << 20;

impl PcapReader {
    pub fn open(path: &Path) -> Result<Self, InputError> {
        let io = |source| InputError::Io {
            path: path.to_path_buf(),
            source,
        };
        let fmt = |msg: String| InputError::Format {
            path: path.to_path_buf(),
            msg,
        };
        let f = File::open(path).map_err(io)?;
        let mut r = BufReader::with_capacity(1 << 20, f);
        let mut magic = [0u8; 4];
        match read_full(&mut r, &mut magic) {
            Ok(true) => {}
            Ok(false) => return Err(fmt("empty file: not a pcap or pcapng capture".into())),
            Err(_) => return Err(fmt("file too short to be a pcap or pcapng capture".into())),
        }
        let m_le = u32::from_le_bytes(magic);
        let kind = match m_le {
            0xa1b2c3d4 | 0xa1b23c4d | 0xd4c3b2a1 | 0x4d3cb2a1 => {
                let big_endian = matches!(m_le, 0xd4c3b2a1 | 0x4d3cb2a1);
                let nanos = matches!(m_le, 0xa1b23c4d | 0x4d3cb2a1);
                let mut rest = [0u8; 20];
                if !read_full(&mut r, &mut rest).unwrap_or(false) {
                    return Err(fmt("truncated pcap file header".into()));
                }
                let linktype = rd_u32(&rest[16..20], big_endian) & 0x03ff_ffff;
                if !linktype_supported(linktype) {
                    return Err(fmt(format!(
                        "unsupported link type {linktype}; supported: {SUPPORTED_TEXT}. \
                         Convert the capture (e.g. `editcap -T ether` or re-capture on an Ethernet/any interface)"
                    )));
                }
                Kind::Pcap {
                    big_endian,
                    nanos,
                    linktype,
                }
            }
            0x0a0d0d0a => {
                let mut pr = Self {
                    path: path.to_path_buf(),
                    r,
                    kind: Kind::PcapNg {
                        big_endian: false,
                        ifaces: Vec::new(),
                    },
                    skipped_linktype: 0,
                    warned_linktypes: Vec::new(),
                    truncated_tail: false,
                };
                pr.read_shb_rest()?;
                return Ok(pr);
            }
            _ => {
                let hint = if magic.starts_with(&[0x1f, 0x8b]) {
                    " (it looks gzip-compressed: run gunzip on it first)"
                } else {
                    ""
                };
                return Err(fmt(format!(
                    "not a pcap or pcapng capture (magic bytes {:02x}{:02x}{:02x}{:02x}){hint}; \
                     give a file written by tcpdump, dumpcap or Wireshark",
                    magic[0], magic[1], magic[2], magic[3]
                )));
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            r,
            kind,
            skipped_linktype: 0,
            warned_linktypes: Vec::new(),
            truncated_tail: false,
        })
    }

    fn fmt_err(&self, msg: String) -> InputError {
        InputError::Format {
            path: self.path.clone(),
            msg,
        }
    }

    /// Section header block after its 4-byte type has been read.
    fn read_shb_rest(&mut self) -> Result<(), InputError> {
        let mut hdr = [0u8; 8];
        if !read_full(&mut self.r, &mut hdr).unwrap_or(false) {
            return Err(self.fmt_err("truncated pcapng section header".into()));
        }
        let bom = &hdr[4..8];
        let big_endian = match bom {
            [0x1a, 0x2b, 0x3c, 0x4d] => true,
            [0x4d, 0x3c, 0x2b, 0x1a] => false,
            _ => return Err(self.fmt_err("bad pcapng byte-order magic".into())),
        };
        let total = rd_u32(&hdr[0..4], big_endian) as usize;
        if !(28..=MAX_RECORD).contains(&total) || !total.is_multiple_of(4) {
            return Err(self.fmt_err(format!("bad pcapng section header length {total}")));
        }
        let mut rest = vec![0u8; total - 12];
        if !read_full(&mut self.r, &mut rest).unwrap_or(false) {
            return Err(self.fmt_err("truncated pcapng section header".into()));
        }
        self.kind = Kind::PcapNg {
            big_endian,
            ifaces: Vec::new(),
        };
        Ok(())
    }

    /// Next packet, or None at the end of the file. A record cut short at the end of the file
    /// ends the input (like libpcap) and sets `truncated_tail`.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, InputError> {
        loop {
            match &self.kind {
                Kind::Pcap {
                    big_endian,
                    nanos,
                    linktype,
                } => {
                    let (be, ns, lt) = (*big_endian, *nanos, *linktype);
                    let mut h = [0u8; 16];
                    match read_full(&mut self.r, &mut h) {
                        Ok(true) => {}
                        Ok(false) => return Ok(None),
                        Err(_) => {
                            self.truncated_tail = true;
                            return Ok(None);
                        }
                    }
                    let sec = rd_u32(&h[0..4], be) as i64;
                    let frac = rd_u32(&h[4..8], be) as i64;
                    let incl = rd_u32(&h[8..12], be) as usize;
                    let orig = rd_u32(&h[12..16], be);
                    if incl > MAX_RECORD {
                        return Err(self.fmt_err(format!(
                            "corrupt pcap record (captured length {incl}); the file is damaged"
                        )));
                    }
                    let mut data = vec![0u8; incl];
                    match read_full(&mut self.r, &mut data) {
                        Ok(true) => {}
                        Ok(false) | Err(_) => {
                            if incl > 0 {
                                self.truncated_tail = true;
                                return Ok(None);
                            }
                        }
                    }
                    let us = if ns { frac / 1000 } else { frac };
                    return Ok(Some(Packet {
                        ts_ns: sec * 1_000_000_000 + us * 1000,
                        linktype: lt,
                        data,
                        orig_len: orig,
                    }));
                }
                Kind::PcapNg { big_endian, .. } => {
                    let be = *big_endian;
                    let mut h = [0u8; 8];
                    match read_full(&mut self.r, &mut h) {
                        Ok(true) => {}
                        Ok(false) => return Ok(None),
                        Err(_) => {
                            self.truncated_tail = true;
                            return Ok(None);
                        }
                    }
                    let btype = rd_u32(&h[0..4], be);
                    if btype == 0x0a0d0d0a {
                        // New section: its byte order may differ; re-read the length field.
                        let mut bom = [0u8; 4];
                        if !read_full(&mut self.r, &mut bom).unwrap_or(false) {
                            self.truncated_tail = true;
                            return Ok(None);
                        }
                        let be2 = match bom {
                            [0x1a, 0x2b, 0x3c, 0x4d] => true,
                            [0x4d, 0x3c, 0x2b, 0x1a] => false,
                            _ => return Err(self.fmt_err("bad pcapng byte-order magic".into())),
                        };
                        let total = rd_u32(&h[4..8], be2) as usize;
                        if !(28..=MAX_RECORD).contains(&total) {
                            return Err(self.fmt_err(format!("bad pcapng block length {total}")));
                        }
                        let mut rest = vec![0u8; total - 12];
                        if !read_full(&mut self.r, &mut rest).unwrap_or(false) {
                            self.truncated_tail = true;
                            return Ok(None);
                        }
                        self.kind = Kind::PcapNg {
                            big_endian: be2,
                            ifaces: Vec::new(),
                        };
                        continue;
                    }
                    let total = rd_u32(&h[4..8], be) as usize;
                    if !(12..=MAX_RECORD).contains(&total) || !total.is_multiple_of(4) {
                        return Err(self.fmt_err(format!(
                            "corrupt pcapng block (type {btype:#x}, length {total}); the file is damaged"
                        )));
                    }
                    let mut body = vec![0u8; total - 8];
                    match read_full(&mut self.r, &mut body) {
                        Ok(true) => {}
                        _ => {
                            self.truncated_tail = true;
                            return Ok(None);
                        }
                    }
                    body.truncate(total - 12); // drop trailing length
                    match btype {
                        1 => self.add_iface(&body, be)?,
                        6 | 2 => {
                            if let Some(p) = self.packet_block(btype, &body, be)? {
                                return Ok(Some(p));
                            }
                        }
                        3 => {
                            if let Some(p) = self.simple_block(&body, be)? {
                                return Ok(Some(p));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn ifaces(&mut self) -> &mut Vec<Iface> {
        match &mut self.kind {
            Kind::PcapNg { ifaces, .. } => ifaces,
            Kind::Pcap { .. } => unreachable!("pcapng only"),
        }
    }

    fn add_iface(&mut self, body: &[u8], be: bool) -> Result<(), InputError> {
        if body.len() < 8 {
            return Err(self.fmt_err("truncated pcapng interface description block".into()));
        }
        let linktype = rd_u16(&body[0..2], be) as u32;
        let mut units_per_sec = 1_000_000u64;
        let mut offset_secs = 0i64;
        let mut opts = &body[8..];
        while opts.len() >= 4 {
            let code = rd_u16(&opts[0..2], be);
            let len = rd_u16(&opts[2..4], be) as usize;
            let padded = (len + 3) & !3;
            if opts.len() < 4 + len {
                break;
            }
            let val = &opts[4..4 + len];
            match code {
                0 => break,
                9 if len >= 1 => {
                    let v = val[0];
                    let exp = (v & 0x7f) as u32;
                    units_per_sec = if v & 0x80 != 0 {
                        1u64.checked_shl(exp).unwrap_or(u64::MAX)
                    } else {
                        10u64.checked_pow(exp).unwrap_or(u64::MAX)
                    };
                }
                14 if len >= 8 => offset_secs = rd_u64(val, be) as i64,
                _ => {}
            }
            if opts.len() < 4 + padded {
                break;
            }
            opts = &opts[4 + padded..];
        }
        if !linktype_supported(linktype) && !self.warned_linktypes.contains(&linktype) {
            self.warned_linktypes.push(linktype);
            let n = self.ifaces().len();
            log::warn!(
                "{}: interface {} has unsupported link type {linktype}; its packets are skipped (supported: {SUPPORTED_TEXT})",
                self.path.display(),
                n
            );
        }
        self.ifaces().push(Iface {
            linktype,
            units_per_sec: units_per_sec.max(1),
            offset_secs,
        });
        Ok(())
    }

    fn ts_for(iface: &Iface, units: u64) -> i64 {
        let per = iface.units_per_sec as u128;
        let units = units as u128;
        let secs = (units / per) as i64;
        let us = ((units % per) * 1_000_000 / per) as i64;
        (secs + iface.offset_secs) * 1_000_000_000 + us * 1000
    }

    fn packet_block(
        &mut self,
        btype: u32,
        body: &[u8],
        be: bool,
    ) -> Result<Option<Packet>, InputError> {
        if body.len() < 20 {
            return Err(self.fmt_err("truncated pcapng packet block".into()));
        }
        let (ifid, ts_hi, ts_lo, cap, orig) = if btype == 6 {
            (
                rd_u32(&body[0..4], be) as usize,
                rd_u32(&body[4..8], be) as u64,
                rd_u32(&body[8..12], be) as u64,
                rd_u32(&body[12..16], be) as usize,
                rd_u32(&body[16..20], be),
            )
        } else {
            (
                rd_u16(&body[0..2], be) as usize,
                rd_u32(&body[4..8], be) as u64,
                rd_u32(&body[8..12], be) as u64,
                rd_u32(&body[12..16], be) as usize,
                rd_u32(&body[16..20], be),
            )
        };
        let Some(iface) = self.ifaces().get(ifid).copied() else {
            return Err(self.fmt_err(format!(
                "packet block refers to interface {ifid}, which was never described"
            )));
        };
        if body.len() < 20 + cap {
            return Err(self.fmt_err("pcapng packet block shorter than its captured length".into()));
        }
        if !linktype_supported(iface.linktype) {
            self.skipped_linktype += 1;
            return Ok(None);
        }
        Ok(Some(Packet {
            ts_ns: Self::ts_for(&iface, (ts_hi << 32) | ts_lo),
            linktype: iface.linktype,
            data: body[20..20 + cap].to_vec(),
            orig_len: orig,
        }))
    }

    fn simple_block(&mut self, body: &[u8], be: bool) -> Result<Option<Packet>, InputError> {
        if body.len() < 4 {
            return Err(self.fmt_err("truncated pcapng simple packet block".into()));
        }
        let Some(iface) = self.ifaces().first().copied() else {
            return Err(self.fmt_err("simple packet block without an interface".into()));
        };
        if !linktype_supported(iface.linktype) {
            self.skipped_linktype += 1;
            return Ok(None);
        }
        let orig = rd_u32(&body[0..4], be);
        let cap = (orig as usize).min(body.len() - 4);
        Ok(Some(Packet {
            ts_ns: 0,
            linktype: iface.linktype,
            data: body[4..4 + cap].to_vec(),
            orig_len: orig,
        }))
    }
}

/// Why a frame could not be taken down to an IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkSkip {
    /// Too short for its link-layer header.
    Truncated,
    /// A layer-3 protocol that is not IP (ARP, LLDP, ...).
    NotIp,
    /// Unsupported link type.
    LinkType,
}

/// The network layer of a frame: the IP packet and its version (4 or 6).
#[derive(Debug, Clone, Copy)]
pub struct L3<'a> {
    pub version: u8,
    pub ip: &'a [u8],
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;

fn by_version(ip: &[u8]) -> Result<L3<'_>, LinkSkip> {
    match ip.first().map(|b| b >> 4) {
        Some(4) => Ok(L3 { version: 4, ip }),
        Some(6) => Ok(L3 { version: 6, ip }),
        Some(_) => Err(LinkSkip::NotIp),
        None => Err(LinkSkip::Truncated),
    }
}

fn by_ethertype(et: u16, rest: &[u8]) -> Result<L3<'_>, LinkSkip> {
    match et {
        ETH_IPV4 => {
            if rest.is_empty() {
                Err(LinkSkip::Truncated)
            } else {
                Ok(L3 {
                    version: 4,
                    ip: rest,
                })
            }
        }
        ETH_IPV6 => {
            if rest.is_empty() {
                Err(LinkSkip::Truncated)
            } else {
                Ok(L3 {
                    version: 6,
                    ip: rest,
                })
            }
        }
        _ => Err(LinkSkip::NotIp),
    }
}

fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

/// Walks Ethernet II with 802.1Q/802.1ad/QinQ tags, MPLS label stacks, PPPoE sessions,
/// 802.1ah (PBB) and Cisco FabricPath down to the IP header.
pub fn ethernet_l3(frame: &[u8]) -> Result<L3<'_>, LinkSkip> {
    let mut b = frame;
    // Bounded: each step consumes bytes, at most 16 encapsulation layers.
    for _ in 0..16 {
        let et = be16(b, 12).ok_or(LinkSkip::Truncated)?;
        let mut off = 14;
        let mut et = et;
        // inner loop over tag headers
        for _ in 0..16 {
            match et {
                0x8100 | 0x88a8 | 0x9100 | 0x9200 => {
                    et = be16(b, off + 2).ok_or(LinkSkip::Truncated)?;
                    off += 4;
                }
                0x8926 => {
                    // Cisco VN-Tag: 4 bytes, then the next ethertype.
                    et = be16(b, off + 4).ok_or(LinkSkip::Truncated)?;
                    off += 6;
                }
                _ => break,
            }
        }
        match et {
            0x8847 | 0x8848 => return mpls_l3(b.get(off..).ok_or(LinkSkip::Truncated)?),
            0x8864 => {
                // PPPoE session: 6-byte header then the PPP protocol.
                let proto = be16(b, off + 6).ok_or(LinkSkip::Truncated)?;
                let rest = b.get(off + 8..).ok_or(LinkSkip::Truncated)?;
                return match proto {
                    0x0021 => by_ethertype(ETH_IPV4, rest),
                    0x0057 => by_ethertype(ETH_IPV6, rest),
                    _ => Err(LinkSkip::NotIp),
                };
            }
            0x88e7 => {
                // 802.1ah I-TAG (4 bytes), then the customer Ethernet frame.
                b = b.get(off + 4..).ok_or(LinkSkip::Truncated)?;
                continue;
            }
            0x8903 => {
                // Cisco FabricPath: 2 bytes FTag/TTL after the outer header, then the
                // original Ethernet frame.
                b = b.get(off + 2..).ok_or(LinkSkip::Truncated)?;
                continue;
            }
            x if x <= 1500 => {
                // IEEE 802.3 length field: LLC/SNAP may carry IP.
                let llc = b.get(off..off + 3).ok_or(LinkSkip::Truncated)?;
                if llc == [0xaa, 0xaa, 0x03] {
                    let et2 = be16(b, off + 6).ok_or(LinkSkip::Truncated)?;
                    return by_ethertype(et2, b.get(off + 8..).ok_or(LinkSkip::Truncated)?);
                }
                return Err(LinkSkip::NotIp);
            }
            _ => return by_ethertype(et, b.get(off..).ok_or(LinkSkip::Truncated)?),
        }
    }
    Err(LinkSkip::NotIp)
}

fn mpls_l3(mut b: &[u8]) -> Result<L3<'_>, LinkSkip> {
    for _ in 0..32 {
        let e = b.get(0..4).ok_or(LinkSkip::Truncated)?;
        let bottom = e[2] & 1 == 1;
        b = &b[4..];
        if bottom {
            return by_version(b);
        }
    }
    Err(LinkSkip::NotIp)
}

/// Decodes a frame of the given link type down to its IP packet.
pub fn frame_l3(linktype: u32, data: &[u8]) -> Result<L3<'_>, LinkSkip> {
    match linktype {
        LINKTYPE_ETHERNET => ethernet_l3(data),
        DLT_RAW_12 | DLT_RAW_14 | LINKTYPE_RAW => by_version(data),
        LINKTYPE_IPV4 => match by_version(data)? {
            l @ L3 { version: 4, .. } => Ok(l),
            _ => Err(LinkSkip::NotIp),
        },
        LINKTYPE_IPV6 => match by_version(data)? {
            l @ L3 { version: 6, .. } => Ok(l),
            _ => Err(LinkSkip::NotIp),
        },
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            let fam = data.get(0..4).ok_or(LinkSkip::Truncated)?;
            let le = u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let be = u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let rest = &data[4..];
            let is = |f: u32| le == f || be == f;
            if is(2) {
                by_ethertype(ETH_IPV4, rest)
            } else if is(10) || is(24) || is(28) || is(30) {
                by_ethertype(ETH_IPV6, rest)
            } else {
                Err(LinkSkip::NotIp)
            }
        }
        LINKTYPE_LINUX_SLL => {
            let et = be16(data, 14).ok_or(LinkSkip::Truncated)?;
            let rest = data.get(16..).ok_or(LinkSkip::Truncated)?;
            if et == 0x8100 {
                let et2 = be16(rest, 2).ok_or(LinkSkip::Truncated)?;
                return by_ethertype(et2, rest.get(4..).ok_or(LinkSkip::Truncated)?);
            }
            by_ethertype(et, rest)
        }
        LINKTYPE_LINUX_SLL2 => {
            let et = be16(data, 0).ok_or(LinkSkip::Truncated)?;
            let rest = data.get(20..).ok_or(LinkSkip::Truncated)?;
            by_ethertype(et, rest)
        }
        LINKTYPE_PPP | LINKTYPE_PPP_HDLC => {
            // Optional HDLC address/control bytes, then the PPP protocol.
            let rest = if data.starts_with(&[0xff, 0x03]) {
                &data[2..]
            } else {
                data
            };
            let proto = be16(rest, 0).ok_or(LinkSkip::Truncated)?;
            let ip = rest.get(2..).ok_or(LinkSkip::Truncated)?;
            match proto {
                0x0021 => by_ethertype(ETH_IPV4, ip),
                0x0057 => by_ethertype(ETH_IPV6, ip),
                _ => Err(LinkSkip::NotIp),
            }
        }
        _ => Err(LinkSkip::LinkType),
    }
}

/// Wraps an IP packet in a synthetic Ethernet header (zero MACs) for the datapath.
pub fn synth_ethernet(version: u8, ip: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0u8; 12]);
    out.extend_from_slice(&(if version == 6 { ETH_IPV6 } else { ETH_IPV4 }).to_be_bytes());
    out.extend_from_slice(ip);
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::Write;

    pub fn ipv4_udp() -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 32, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4]);
        p
    }

    pub fn write_pcap(path: &Path, linktype: u32, nanos: bool, pkts: &[(u32, u32, Vec<u8>)]) {
        let mut f = std::fs::File::create(path).unwrap();
        let magic: u32 = if nanos { 0xa1b23c4d } else { 0xa1b2c3d4 };
        f.write_all(&magic.to_le_bytes()).unwrap();
        f.write_all(&2u16.to_le_bytes()).unwrap();
        f.write_all(&4u16.to_le_bytes()).unwrap();
        f.write_all(&[0u8; 8]).unwrap();
        f.write_all(&65535u32.to_le_bytes()).unwrap();
        f.write_all(&linktype.to_le_bytes()).unwrap();
        for (s, frac, d) in pkts {
            f.write_all(&s.to_le_bytes()).unwrap();
            f.write_all(&frac.to_le_bytes()).unwrap();
            f.write_all(&(d.len() as u32).to_le_bytes()).unwrap();
            f.write_all(&(d.len() as u32).to_le_bytes()).unwrap();
            f.write_all(d).unwrap();
        }
    }

    fn block(t: u32, body: &[u8]) -> Vec<u8> {
        let mut b = body.to_vec();
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
        let total = (b.len() + 12) as u32;
        let mut out = t.to_le_bytes().to_vec();
        out.extend_from_slice(&total.to_le_bytes());
        out.extend_from_slice(&b);
        out.extend_from_slice(&total.to_le_bytes());
        out
    }

    fn idb(linktype: u16, tsresol: Option<u8>) -> Vec<u8> {
        let mut b = linktype.to_le_bytes().to_vec();
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&65535u32.to_le_bytes());
        if let Some(r) = tsresol {
            b.extend_from_slice(&9u16.to_le_bytes());
            b.extend_from_slice(&1u16.to_le_bytes());
            b.extend_from_slice(&[r, 0, 0, 0]);
            b.extend_from_slice(&[0, 0, 0, 0]);
        }
        block(1, &b)
    }

    fn epb(ifid: u32, ts: u64, data: &[u8]) -> Vec<u8> {
        let mut b = ifid.to_le_bytes().to_vec();
        b.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        b.extend_from_slice(&(ts as u32).to_le_bytes());
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(data);
        block(6, &b)
    }

    fn read_all(path: &Path) -> Vec<Packet> {
        let mut r = PcapReader::open(path).unwrap();
        let mut v = Vec::new();
        while let Some(p) = r.next_packet().unwrap() {
            v.push(p);
        }
        v
    }

    #[test]
    fn pcap_link_types() {
        let dir = tempfile::tempdir().unwrap();
        let ip = ipv4_udp();
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x81, 0x00, 0, 5, 0x08, 0x00]);
        eth.extend_from_slice(&ip);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&ip);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&ip);
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(&ip);
        let mut lo = 2u32.to_be_bytes().to_vec();
        lo.extend_from_slice(&ip);
        let mut ppp = vec![0xff, 0x03, 0x00, 0x21];
        ppp.extend_from_slice(&ip);
        for (lt, frame) in [
            (LINKTYPE_ETHERNET, eth),
            (LINKTYPE_LINUX_SLL, sll),
            (LINKTYPE_LINUX_SLL2, sll2),
            (LINKTYPE_NULL, null),
            (LINKTYPE_LOOP, lo),
            (LINKTYPE_PPP, ppp),
            (DLT_RAW_12, ip.clone()),
            (DLT_RAW_14, ip.clone()),
            (LINKTYPE_RAW, ip.clone()),
            (LINKTYPE_IPV4, ip.clone()),
        ] {
            let p = dir.path().join(format!("lt{lt}.pcap"));
            write_pcap(&p, lt, false, &[(1_000_000_000, 123_456, frame)]);
            let pk = read_all(&p);
            assert_eq!(pk.len(), 1);
            assert_eq!(pk[0].ts_ns, 1_000_000_000_123_456_000);
            let l3 = frame_l3(pk[0].linktype, &pk[0].data).unwrap();
            assert_eq!(l3.version, 4, "linktype {lt}");
            assert_eq!(l3.ip, &ip[..], "linktype {lt}");
        }
    }

    #[test]
    fn pcap_nanos_truncate_to_micros() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ns.pcap");
        write_pcap(&p, DLT_RAW_12, true, &[(5, 123_456_789, ipv4_udp())]);
        assert_eq!(read_all(&p)[0].ts_ns, 5_123_456_000);
    }

    #[test]
    fn pcapng_multi_interface() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("multi.pcapng");
        let mut shb_body = vec![0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0];
        shb_body.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut file = block(0x0a0d0d0a, &shb_body);
        file.extend(idb(1, None));
        file.extend(idb(101, Some(9)));
        file.extend(idb(147, None)); // unsupported: skipped
        let ip = ipv4_udp();
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&ip);
        file.extend(epb(0, 7_000_001, &eth));
        file.extend(epb(1, 7_000_001_999, &ip));
        file.extend(epb(2, 1, &ip));
        std::fs::write(&p, file).unwrap();
        let mut r = PcapReader::open(&p).unwrap();
        let a = r.next_packet().unwrap().unwrap();
        let b = r.next_packet().unwrap().unwrap();
        assert!(r.next_packet().unwrap().is_none());
        assert_eq!(r.skipped_linktype, 1);
        assert_eq!(a.ts_ns, 7_000_001_000);
        assert_eq!(b.ts_ns, 7_000_001_000);
        assert_eq!(a.linktype, 1);
        assert_eq!(b.linktype, 101);
        assert_eq!(frame_l3(a.linktype, &a.data).unwrap().ip, &ip[..]);
        assert_eq!(frame_l3(b.linktype, &b.data).unwrap().ip, &ip[..]);
    }

    #[test]
    fn garbage_and_unknown_linktype_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("garbage.pcap");
        std::fs::write(&g, b"hello world, not a capture").unwrap();
        let e = PcapReader::open(&g).err().unwrap().to_string();
        assert!(
            e.contains("garbage.pcap") && e.contains("not a pcap"),
            "{e}"
        );
        let u = dir.path().join("usb.pcap");
        write_pcap(&u, 189, false, &[]);
        let e = PcapReader::open(&u).err().unwrap().to_string();
        assert!(e.contains("usb.pcap") && e.contains("link type 189"), "{e}");
        let empty = dir.path().join("empty.pcap");
        std::fs::write(&empty, b"").unwrap();
        assert!(PcapReader::open(&empty).is_err());
    }

    #[test]
    fn truncated_tail_ends_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.pcap");
        write_pcap(
            &p,
            DLT_RAW_12,
            false,
            &[(1, 0, ipv4_udp()), (2, 0, ipv4_udp())],
        );
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 5);
        std::fs::write(&p, bytes).unwrap();
        let mut r = PcapReader::open(&p).unwrap();
        assert!(r.next_packet().unwrap().is_some());
        assert!(r.next_packet().unwrap().is_none());
        assert!(r.truncated_tail);
    }

    #[test]
    fn mpls_and_pppoe() {
        let ip = ipv4_udp();
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x88, 0x47, 0, 0, 0x10, 0xff, 0, 0, 0x21, 0xff]);
        f.extend_from_slice(&ip);
        assert_eq!(ethernet_l3(&f).unwrap().ip, &ip[..]);
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x88, 0x64, 0x11, 0, 0, 1, 0, 34, 0x00, 0x21]);
        f.extend_from_slice(&ip);
        assert_eq!(ethernet_l3(&f).unwrap().ip, &ip[..]);
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 1]);
        assert_eq!(ethernet_l3(&arp).err(), Some(LinkSkip::NotIp));
    }
}
