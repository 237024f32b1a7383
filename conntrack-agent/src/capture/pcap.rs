//! Offline input: pcap (microsecond and nanosecond) and pcapng (several sections and interfaces,
//! each with its own link type and timestamp resolution), plus link-layer decoding down to the IP
//! header.
//!
//! The container formats are parsed by `pcap-parser` (streaming). What stays here is what a block
//! means for the replay: per-interface link type and timestamp units/offset (computed from the raw
//! IDB options with the section's byte order: the crate's `if_tsoffset`/`ts_resolution` helpers
//! read the offset as little-endian and reject power-of-two resolutions), the end of input on a
//! record cut short, and errors that name the file and say what to do.
//!
//! Timestamps are truncated to microseconds, as Zeek sees them through libpcap's
//! `pcap_fopen_offline` (which does not ask for nanosecond precision).

use pcap_parser::traits::{PcapNGPacketBlock, PcapReaderIterator};
use pcap_parser::{
    Block, InterfaceDescriptionBlock, LegacyPcapReader, PcapBlockOwned, PcapError, PcapNGReader,
};
use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// Read buffer of the streaming parser; it grows for larger records.
const BUFFER: usize = 1 << 20;
/// Largest record or block accepted (libpcap allows 256 KiB snap lengths; this is generous).
const MAX_RECORD: usize = 64 << 20;
const SHB_MAGIC: u32 = 0x0a0d_0d0a;
/// pcapng Packet Block (obsolete, type 2): not decoded by pcap-parser (an unknown block).
const OPB_TYPE: u32 = 2;
const IDB_OPT_END: u16 = 0;
const IDB_OPT_TSRESOL: u16 = 9;
const IDB_OPT_TSOFFSET: u16 = 14;

/// The file as the parser reads it: the bytes already read to recognise the format, then the
/// rest. Keeps the last I/O error, which the parser reports only as `ReadError`.
struct Input {
    head: Cursor<Vec<u8>>,
    file: File,
    error: Arc<Mutex<Option<std::io::Error>>>,
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.head.read(buf)?;
        if n > 0 || buf.is_empty() {
            return Ok(n);
        }
        loop {
            match self.file.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = e.kind();
                    *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return Err(kind.into());
                }
                ok => return ok,
            }
        }
    }
}

/// Reads up to `limit` bytes (fewer only at the end of the file).
fn read_head(file: &mut File, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(limit);
    file.by_ref().take(limit as u64).read_to_end(&mut head)?;
    Ok(head)
}

#[derive(Clone, Copy)]
struct Iface {
    linktype: u32,
    /// Timestamp units per second (if_tsresol; 10^6 by default).
    units_per_sec: u64,
    /// if_tsoffset, seconds.
    offset_secs: i64,
}

enum Format {
    Pcap {
        big_endian: bool,
        nanos: bool,
        linktype: u32,
    },
    PcapNg {
        /// Byte order of the current section.
        big_endian: bool,
        /// Interfaces of the current section, by interface id.
        ifaces: Vec<Iface>,
    },
}

/// What `PcapReaderIterator::next` said, without the borrow of the reader.
enum Step {
    Block(usize, Result<Option<Packet>, InputError>),
    End,
    CutShort,
    NeedMore,
    BufferTooSmall,
    ReadError,
    Corrupt,
}

/// Where the packets come from and what is kept between blocks.
struct Stream {
    path: PathBuf,
    format: Format,
    skipped_linktype: u64,
    warned_linktypes: Vec<u32>,
}

pub struct PcapReader {
    reader: Box<dyn PcapReaderIterator + Send>,
    capacity: usize,
    read_error: Arc<Mutex<Option<std::io::Error>>>,
    st: Stream,
    done: bool,
    /// Packets skipped because of an unsupported interface link type (pcapng only).
    pub skipped_linktype: u64,
    pub truncated_tail: bool,
}

fn rd_u16(b: &[u8], be: bool) -> Option<u16> {
    let a = [*b.first()?, *b.get(1)?];
    Some(if be {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    })
}

fn rd_u32(b: &[u8], be: bool) -> Option<u32> {
    let a: [u8; 4] = b.get(..4)?.try_into().ok()?;
    Some(if be {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    })
}

fn rd_u64(b: &[u8], be: bool) -> Option<u64> {
    let a: [u8; 8] = b.get(..8)?.try_into().ok()?;
    Some(if be {
        u64::from_be_bytes(a)
    } else {
        u64::from_le_bytes(a)
    })
}

impl PcapReader {
    pub fn open(path: &Path) -> Result<Self, InputError> {
        Self::open_with_buffer(path, BUFFER)
    }

    fn open_with_buffer(path: &Path, capacity: usize) -> Result<Self, InputError> {
        let io = |source| InputError::Io {
            path: path.to_path_buf(),
            source,
        };
        let fmt = |msg: String| InputError::Format {
            path: path.to_path_buf(),
            msg,
        };
        let mut file = File::open(path).map_err(io)?;
        // The parser takes its file header from one read: hand it the first buffer-full.
        let head = read_head(&mut file, capacity).map_err(io)?;
        let magic: [u8; 4] = match head.get(..4) {
            Some(m) => m.try_into().unwrap_or_default(),
            None if head.is_empty() => {
                return Err(fmt("empty file: not a pcap or pcapng capture".into()));
            }
            None => return Err(fmt("file too short to be a pcap or pcapng capture".into())),
        };
        let read_error = Arc::new(Mutex::new(None));
        let input = Input {
            head: Cursor::new(head),
            file,
            error: Arc::clone(&read_error),
        };
        let (reader, format): (Box<dyn PcapReaderIterator + Send>, Format) =
            match u32::from_le_bytes(magic) {
                0xa1b2c3d4 | 0xa1b23c4d | 0xd4c3b2a1 | 0x4d3cb2a1 => {
                    let mut r = LegacyPcapReader::new(capacity, input)
                        .map_err(|_| fmt("truncated pcap file header".into()))?;
                    let header = match r.next() {
                        Ok((n, PcapBlockOwned::LegacyHeader(h))) => Some((n, h)),
                        _ => None,
                    };
                    let Some((n, h)) = header else {
                        return Err(fmt("truncated pcap file header".into()));
                    };
                    r.consume(n);
                    // The upper bits of the link-type field carry FCS information.
                    let linktype = (h.network.0 as u32) & 0x03ff_ffff;
                    if !linktype_supported(linktype) {
                        return Err(fmt(format!(
                            "unsupported link type {linktype}; supported: {SUPPORTED_TEXT}. \
                             Convert the capture (e.g. `editcap -T ether` or re-capture on an Ethernet/any interface)"
                        )));
                    }
                    let format = Format::Pcap {
                        big_endian: h.is_bigendian(),
                        nanos: h.is_nanosecond_precision(),
                        linktype,
                    };
                    (Box::new(r), format)
                }
                SHB_MAGIC => {
                    let r = PcapNGReader::new(capacity, input).map_err(|e| match e {
                        PcapError::Incomplete(_) => fmt("truncated pcapng section header".into()),
                        _ => fmt("bad pcapng section header (byte-order magic or length); \
                             the file is damaged"
                            .into()),
                    })?;
                    let format = Format::PcapNg {
                        big_endian: false,
                        ifaces: Vec::new(),
                    };
                    (Box::new(r), format)
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
            reader,
            capacity,
            read_error,
            st: Stream {
                path: path.to_path_buf(),
                format,
                skipped_linktype: 0,
                warned_linktypes: Vec::new(),
            },
            done: false,
            skipped_linktype: 0,
            truncated_tail: false,
        })
    }

    fn fmt_err(&self, msg: String) -> InputError {
        self.st.fmt_err(msg)
    }

    /// Next packet, or None at the end of the file. A record cut short at the end of the file
    /// ends the input (like libpcap) and sets `truncated_tail`.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, InputError> {
        while !self.done {
            let step = match self.reader.next() {
                Ok((n, block)) => Step::Block(n, self.st.on_block(block)),
                Err(PcapError::Eof) => Step::End,
                Err(PcapError::UnexpectedEof) => Step::CutShort,
                Err(PcapError::Incomplete(_)) => Step::NeedMore,
                Err(PcapError::BufferTooSmall) => Step::BufferTooSmall,
                Err(PcapError::ReadError) => Step::ReadError,
                Err(_) => Step::Corrupt,
            };
            self.skipped_linktype = self.st.skipped_linktype;
            match step {
                Step::Block(n, res) => {
                    self.reader.consume(n);
                    if let Some(p) = res? {
                        return Ok(Some(p));
                    }
                }
                Step::End => self.done = true,
                Step::CutShort => {
                    // The parser also ends this way when nothing at all is left.
                    self.truncated_tail = !self.reader.data().is_empty();
                    self.done = true;
                }
                Step::NeedMore => {
                    self.check_not_corrupt()?;
                    let before = self.reader.data().len();
                    self.refill()?;
                    if self.reader.data().len() == before && !self.reader.reader_exhausted() {
                        self.grow()?;
                    }
                }
                Step::BufferTooSmall => {
                    self.check_not_corrupt()?;
                    self.grow()?;
                }
                Step::ReadError => return Err(self.read_failed()),
                Step::Corrupt => return Err(self.corrupt()),
            }
        }
        Ok(None)
    }

    fn refill(&mut self) -> Result<(), InputError> {
        if self.reader.refill().is_err() {
            return Err(self.read_failed());
        }
        Ok(())
    }

    fn read_failed(&self) -> InputError {
        let source = self
            .read_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| std::io::Error::other("read error"));
        InputError::Io {
            path: self.st.path.clone(),
            source,
        }
    }

    /// The length the record or block at the read position declares, header included.
    fn declared_len(&self) -> Option<usize> {
        let d = self.reader.data();
        match &self.st.format {
            Format::Pcap { big_endian, .. } => {
                Some(16 + rd_u32(d.get(8..)?, *big_endian)? as usize)
            }
            Format::PcapNg { big_endian, .. } => {
                let be = if rd_u32(d, false)? == SHB_MAGIC {
                    // A new section declares its own byte order.
                    d.get(8..12)? == [0x1a, 0x2b, 0x3c, 0x4d]
                } else {
                    *big_endian
                };
                Some(rd_u32(d.get(4..)?, be)? as usize)
            }
        }
    }

    fn corrupt(&self) -> InputError {
        let d = self.reader.data();
        match &self.st.format {
            Format::Pcap { big_endian, .. } => {
                let incl = d.get(8..).and_then(|b| rd_u32(b, *big_endian));
                self.fmt_err(format!(
                    "corrupt pcap record (captured length {}) at byte offset {}; the file is damaged",
                    incl.map_or("?".into(), |v| v.to_string()),
                    self.reader.consumed()
                ))
            }
            Format::PcapNg { big_endian, .. } => {
                let btype = rd_u32(d, *big_endian).unwrap_or(0);
                let len = self.declared_len().unwrap_or(0);
                self.fmt_err(format!(
                    "corrupt pcapng block (type {btype:#x}, length {len}) at byte offset {}; \
                     the file is damaged",
                    self.reader.consumed()
                ))
            }
        }
    }

    /// The parser asks for more data: an error when the declared length is impossible or when
    /// the whole block is already buffered (its contents contradict its length).
    fn check_not_corrupt(&self) -> Result<(), InputError> {
        let Some(len) = self.declared_len() else {
            return Ok(());
        };
        let pcapng = matches!(self.st.format, Format::PcapNg { .. });
        let whole = pcapng && self.reader.data().len() >= len;
        if len > MAX_RECORD + 16 || whole {
            return Err(self.corrupt());
        }
        Ok(())
    }

    fn grow(&mut self) -> Result<(), InputError> {
        let want = self
            .declared_len()
            .unwrap_or(0)
            .saturating_add(1)
            .max(self.capacity.saturating_mul(2));
        if self.capacity > MAX_RECORD || !self.reader.grow(want) {
            return Err(self.corrupt());
        }
        self.capacity = want;
        Ok(())
    }
}

impl Stream {
    fn fmt_err(&self, msg: String) -> InputError {
        InputError::Format {
            path: self.path.clone(),
            msg,
        }
    }

    fn on_block(&mut self, block: PcapBlockOwned<'_>) -> Result<Option<Packet>, InputError> {
        match block {
            PcapBlockOwned::LegacyHeader(_) => Ok(None),
            PcapBlockOwned::Legacy(b) => {
                let Format::Pcap {
                    nanos, linktype, ..
                } = self.format
                else {
                    return Ok(None);
                };
                let us = if nanos { b.ts_usec / 1000 } else { b.ts_usec };
                Ok(Some(Packet {
                    ts_ns: b.ts_sec as i64 * 1_000_000_000 + us as i64 * 1000,
                    linktype,
                    data: b.data.to_vec(),
                    orig_len: b.origlen,
                }))
            }
            PcapBlockOwned::NG(b) => self.on_ng_block(b),
        }
    }

    fn on_ng_block(&mut self, block: Block<'_>) -> Result<Option<Packet>, InputError> {
        let Format::PcapNg { big_endian, ifaces } = &mut self.format else {
            return Ok(None);
        };
        let be = *big_endian;
        match block {
            Block::SectionHeader(shb) => {
                // A new section: its own byte order, interface ids start again.
                *big_endian = shb.big_endian();
                ifaces.clear();
                Ok(None)
            }
            Block::InterfaceDescription(idb) => {
                self.add_iface(&idb, be);
                Ok(None)
            }
            Block::EnhancedPacket(epb) => {
                let units = ((epb.ts_high as u64) << 32) | epb.ts_low as u64;
                let data = epb.packet_data();
                self.packet(epb.if_id as usize, Some(units), data, epb.origlen)
            }
            Block::SimplePacket(spb) => {
                if ifaces.is_empty() {
                    return Err(self.fmt_err("simple packet block without an interface".into()));
                }
                self.packet(0, None, spb.packet_data(), spb.origlen)
            }
            // pcap-parser reads an unknown block's type as little-endian.
            Block::Unknown(u)
                if (if be {
                    u.block_type.swap_bytes()
                } else {
                    u.block_type
                }) == OPB_TYPE =>
            {
                self.obsolete_packet(u.data, be)
            }
            _ => Ok(None),
        }
    }

    /// Packet Block (obsolete): u16 interface id, u16 drops, timestamp, lengths, data.
    fn obsolete_packet(&mut self, body: &[u8], be: bool) -> Result<Option<Packet>, InputError> {
        let fields = (|| {
            Some((
                rd_u16(body, be)? as usize,
                rd_u32(body.get(4..)?, be)? as u64,
                rd_u32(body.get(8..)?, be)? as u64,
                rd_u32(body.get(12..)?, be)? as usize,
                rd_u32(body.get(16..)?, be)?,
            ))
        })();
        let Some((ifid, hi, lo, cap, orig)) = fields else {
            return Err(self.fmt_err("truncated pcapng packet block".into()));
        };
        let Some(data) = body.get(20..20usize.saturating_add(cap)) else {
            return Err(self.fmt_err("pcapng packet block shorter than its captured length".into()));
        };
        self.packet(ifid, Some((hi << 32) | lo), data, orig)
    }

    fn packet(
        &mut self,
        ifid: usize,
        units: Option<u64>,
        data: &[u8],
        orig_len: u32,
    ) -> Result<Option<Packet>, InputError> {
        let Format::PcapNg { ifaces, .. } = &self.format else {
            return Ok(None);
        };
        let Some(iface) = ifaces.get(ifid).copied() else {
            return Err(self.fmt_err(format!(
                "packet block refers to interface {ifid}, which was never described"
            )));
        };
        if !linktype_supported(iface.linktype) {
            self.skipped_linktype += 1;
            return Ok(None);
        }
        Ok(Some(Packet {
            // Simple packet blocks carry no timestamp.
            ts_ns: units.map_or(0, |u| ts_for(&iface, u)),
            linktype: iface.linktype,
            data: data.to_vec(),
            orig_len,
        }))
    }

    fn add_iface(&mut self, idb: &InterfaceDescriptionBlock<'_>, be: bool) {
        let linktype = u32::from(idb.linktype.0 as u16);
        let mut units_per_sec = 1_000_000u64;
        let mut offset_secs = 0i64;
        for opt in &idb.options {
            let Ok(val) = opt.as_bytes() else { break };
            match opt.code.0 {
                IDB_OPT_END => break,
                IDB_OPT_TSRESOL if !val.is_empty() => {
                    let v = val[0];
                    let exp = u32::from(v & 0x7f);
                    units_per_sec = if v & 0x80 != 0 {
                        1u64.checked_shl(exp).unwrap_or(u64::MAX)
                    } else {
                        10u64.checked_pow(exp).unwrap_or(u64::MAX)
                    };
                }
                IDB_OPT_TSOFFSET => {
                    if let Some(v) = rd_u64(val, be) {
                        offset_secs = v as i64;
                    }
                }
                _ => {}
            }
        }
        let Format::PcapNg { ifaces, .. } = &mut self.format else {
            return;
        };
        if !linktype_supported(linktype) && !self.warned_linktypes.contains(&linktype) {
            self.warned_linktypes.push(linktype);
            log::warn!(
                "{}: interface {} has unsupported link type {linktype}; its packets are skipped (supported: {SUPPORTED_TEXT})",
                self.path.display(),
                ifaces.len()
            );
        }
        ifaces.push(Iface {
            linktype,
            units_per_sec: units_per_sec.max(1),
            offset_secs,
        });
    }
}

/// Nanoseconds since the epoch, truncated to microseconds, of a pcapng timestamp in the
/// interface's units.
fn ts_for(iface: &Iface, units: u64) -> i64 {
    let per = iface.units_per_sec as u128;
    let units = units as u128;
    let secs = (units / per) as i64;
    let us = ((units % per) * 1_000_000 / per) as i64;
    secs.wrapping_add(iface.offset_secs)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(us * 1000)
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

    /// A pcapng file in either byte order, built block by block.
    struct Ng {
        be: bool,
        out: Vec<u8>,
    }

    impl Ng {
        fn new(be: bool) -> Self {
            let mut ng = Ng {
                be,
                out: Vec::new(),
            };
            ng.shb(be);
            ng
        }
        fn u16(&self, v: u16) -> [u8; 2] {
            if self.be {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        }
        fn u32(&self, v: u32) -> [u8; 4] {
            if self.be {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        }
        fn u64(&self, v: u64) -> [u8; 8] {
            if self.be {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        }
        fn block(&mut self, t: u32, body: &[u8]) {
            let mut b = body.to_vec();
            while !b.len().is_multiple_of(4) {
                b.push(0);
            }
            let total = (b.len() + 12) as u32;
            let (t, total) = (self.u32(t), self.u32(total));
            self.out.extend_from_slice(&t);
            self.out.extend_from_slice(&total);
            self.out.extend_from_slice(&b);
            self.out.extend_from_slice(&total);
        }
        /// A new section (its byte order may differ from the previous one).
        fn shb(&mut self, be: bool) {
            self.be = be;
            let mut b = self.u32(0x1a2b_3c4d).to_vec();
            b.extend_from_slice(&self.u16(1));
            b.extend_from_slice(&self.u16(0));
            b.extend_from_slice(&u64::MAX.to_le_bytes());
            self.block(0x0a0d_0d0a, &b);
        }
        fn idb(&mut self, linktype: u16, opts: &[(u16, Vec<u8>)]) {
            let mut b = self.u16(linktype).to_vec();
            b.extend_from_slice(&[0, 0]);
            b.extend_from_slice(&self.u32(65535));
            for (code, val) in opts {
                b.extend_from_slice(&self.u16(*code));
                b.extend_from_slice(&self.u16(val.len() as u16));
                b.extend_from_slice(val);
                while !b.len().is_multiple_of(4) {
                    b.push(0);
                }
            }
            if !opts.is_empty() {
                b.extend_from_slice(&[0, 0, 0, 0]);
            }
            self.block(1, &b);
        }
        fn epb(&mut self, ifid: u32, ts: u64, data: &[u8]) {
            let mut b = self.u32(ifid).to_vec();
            b.extend_from_slice(&self.u32((ts >> 32) as u32));
            b.extend_from_slice(&self.u32(ts as u32));
            b.extend_from_slice(&self.u32(data.len() as u32));
            b.extend_from_slice(&self.u32(data.len() as u32 + 4));
            b.extend_from_slice(data);
            self.block(6, &b);
        }
        fn spb(&mut self, data: &[u8]) {
            let mut b = self.u32(data.len() as u32).to_vec();
            b.extend_from_slice(data);
            self.block(3, &b);
        }
        /// Obsolete Packet Block (type 2).
        fn opb(&mut self, ifid: u16, ts: u64, data: &[u8]) {
            let mut b = self.u16(ifid).to_vec();
            b.extend_from_slice(&self.u16(0));
            b.extend_from_slice(&self.u32((ts >> 32) as u32));
            b.extend_from_slice(&self.u32(ts as u32));
            b.extend_from_slice(&self.u32(data.len() as u32));
            b.extend_from_slice(&self.u32(data.len() as u32));
            b.extend_from_slice(data);
            self.block(2, &b);
        }
        fn write(&self, dir: &Path, name: &str) -> PathBuf {
            let p = dir.join(name);
            std::fs::write(&p, &self.out).unwrap();
            p
        }
    }

    #[test]
    fn pcapng_resolution_offset_and_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        let ip = ipv4_udp();
        for be in [false, true] {
            let mut ng = Ng::new(be);
            let off = ng.u64(1_000_000_000).to_vec();
            // 2^-20 s units with an offset; nanoseconds; milliseconds; the default (us).
            ng.idb(101, &[(9, vec![0x80 | 20]), (14, off)]);
            ng.idb(101, &[(9, vec![9])]);
            ng.idb(101, &[(2, b"eth0".to_vec()), (9, vec![3])]);
            ng.idb(101, &[]);
            ng.epb(0, (5 << 20) | (1 << 19), &ip); // 5.5 s after the offset
            ng.epb(1, 1_700_000_000_123_456_789, &ip);
            ng.epb(2, 1_700_000_000_123, &ip);
            ng.epb(3, 1_700_000_000_654_321, &ip);
            let p = ng.write(dir.path(), &format!("res-{be}.pcapng"));
            let ts: Vec<i64> = read_all(&p).iter().map(|p| p.ts_ns).collect();
            assert_eq!(
                ts,
                [
                    1_000_000_005_500_000_000,
                    1_700_000_000_123_456_000,
                    1_700_000_000_123_000_000,
                    1_700_000_000_654_321_000
                ],
                "big endian: {be}"
            );
            let pk = read_all(&p);
            assert!(
                pk.iter()
                    .all(|p| p.data == ip && p.orig_len == ip.len() as u32 + 4)
            );
        }
    }

    #[test]
    fn pcapng_sections_restart_interfaces() {
        let dir = tempfile::tempdir().unwrap();
        let ip = ipv4_udp();
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&ip);
        let mut ng = Ng::new(false);
        ng.idb(1, &[]);
        ng.epb(0, 1_000_000, &eth);
        // Second section, other byte order: interface 0 is now raw IP in nanoseconds.
        ng.shb(true);
        ng.idb(101, &[(9, vec![9])]);
        ng.epb(0, 2_000_000_000, &ip);
        ng.spb(&ip);
        ng.opb(0, 3_000_000_000, &ip);
        let p = ng.write(dir.path(), "sections.pcapng");
        let pk = read_all(&p);
        assert_eq!(pk.len(), 4);
        assert_eq!((pk[0].linktype, pk[0].ts_ns), (1, 1_000_000_000));
        assert_eq!((pk[1].linktype, pk[1].ts_ns), (101, 2_000_000_000));
        // Simple packet blocks have no timestamp.
        assert_eq!((pk[2].linktype, pk[2].ts_ns), (101, 0));
        assert_eq!((pk[3].linktype, pk[3].ts_ns), (101, 3_000_000_000));
        for p in &pk {
            assert_eq!(frame_l3(p.linktype, &p.data).unwrap().ip, &ip[..]);
        }
        // A packet for an interface the new section has not described is an error.
        let mut ng = Ng::new(false);
        ng.idb(1, &[]);
        ng.idb(1, &[]);
        ng.shb(false);
        ng.idb(101, &[]);
        ng.epb(1, 0, &ip);
        let p = ng.write(dir.path(), "undescribed.pcapng");
        let mut r = PcapReader::open(&p).unwrap();
        let e = r.next_packet().unwrap_err().to_string();
        assert!(
            e.contains("undescribed.pcapng") && e.contains("interface 1"),
            "{e}"
        );
    }

    #[test]
    fn big_endian_nanosecond_pcap() {
        let dir = tempfile::tempdir().unwrap();
        let ip = ipv4_udp();
        let mut f = 0xa1b2_3c4du32.to_be_bytes().to_vec();
        f.extend_from_slice(&2u16.to_be_bytes());
        f.extend_from_slice(&4u16.to_be_bytes());
        f.extend_from_slice(&[0u8; 8]);
        f.extend_from_slice(&65535u32.to_be_bytes());
        // FCS bits in the upper part of the link-type field are ignored.
        f.extend_from_slice(&(0x1000_0000 | LINKTYPE_RAW).to_be_bytes());
        for v in [7u32, 999_999_999, ip.len() as u32, 1500] {
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&ip);
        let p = dir.path().join("be-ns.pcap");
        std::fs::write(&p, f).unwrap();
        let pk = read_all(&p);
        assert_eq!(pk.len(), 1);
        assert_eq!(pk[0].ts_ns, 7_999_999_000);
        assert_eq!((pk[0].linktype, pk[0].orig_len), (LINKTYPE_RAW, 1500));
        assert_eq!(pk[0].data, ip);
    }

    #[test]
    fn records_larger_than_the_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let mut big = ipv4_udp();
        big.resize(300_000, 0xab);
        let small = ipv4_udp();
        let p = dir.path().join("big.pcap");
        write_pcap(
            &p,
            DLT_RAW_12,
            false,
            &[
                (1, 0, small.clone()),
                (2, 0, big.clone()),
                (3, 0, small.clone()),
            ],
        );
        let mut ng = Ng::new(true);
        ng.idb(101, &[]);
        ng.epb(0, 1, &small);
        ng.epb(0, 2, &big);
        ng.epb(0, 3, &small);
        let q = ng.write(dir.path(), "big.pcapng");
        for path in [&p, &q] {
            let mut r = PcapReader::open_with_buffer(path, 4096).unwrap();
            let mut lens = Vec::new();
            while let Some(pk) = r.next_packet().unwrap() {
                lens.push(pk.data.len());
            }
            assert_eq!(
                lens,
                [small.len(), big.len(), small.len()],
                "{}",
                path.display()
            );
            assert!(!r.truncated_tail);
        }
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let ip = ipv4_udp();
        // A pcap record claiming 200 MiB.
        let p = dir.path().join("huge.pcap");
        write_pcap(&p, DLT_RAW_12, false, &[(1, 0, ip.clone())]);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[32..36].copy_from_slice(&(200u32 << 20).to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let e = PcapReader::open(&p)
            .unwrap()
            .next_packet()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("huge.pcap") && e.contains("corrupt pcap record"),
            "{e}"
        );
        // An enhanced packet block whose captured length exceeds the block, mid-file.
        let mut ng = Ng::new(false);
        ng.idb(101, &[]);
        ng.epb(0, 1, &ip);
        ng.epb(0, 2, &ip);
        let at = ng.out.len() - ip.len() - 4 - 20 + 12;
        ng.out[at..at + 4].copy_from_slice(&4000u32.to_le_bytes());
        ng.epb(0, 3, &ip);
        let q = ng.write(dir.path(), "caplen.pcapng");
        let mut r = PcapReader::open(&q).unwrap();
        assert!(r.next_packet().unwrap().is_some());
        let e = r.next_packet().unwrap_err().to_string();
        assert!(
            e.contains("caplen.pcapng") && e.contains("corrupt pcapng block"),
            "{e}"
        );
        // Bad byte-order magic; a section header cut short.
        let mut ng = Ng::new(false);
        ng.out[8] ^= 0xff;
        let b = ng.write(dir.path(), "bom.pcapng");
        let e = PcapReader::open(&b).err().unwrap().to_string();
        assert!(
            e.contains("bom.pcapng") && e.contains("section header"),
            "{e}"
        );
        let ng = Ng::new(false);
        std::fs::write(dir.path().join("shb.pcapng"), &ng.out[..20]).unwrap();
        let e = PcapReader::open(&dir.path().join("shb.pcapng"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("truncated pcapng section header"), "{e}");
        // gzip.
        let g = dir.path().join("t.pcap.gz");
        std::fs::write(&g, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0]).unwrap();
        let e = PcapReader::open(&g).err().unwrap().to_string();
        assert!(e.contains("t.pcap.gz") && e.contains("gunzip"), "{e}");
    }

    #[test]
    fn truncated_pcapng_tail_ends_input() {
        let dir = tempfile::tempdir().unwrap();
        let ip = ipv4_udp();
        let mut ng = Ng::new(false);
        ng.idb(101, &[]);
        ng.epb(0, 1, &ip);
        ng.epb(0, 2, &ip);
        ng.out.truncate(ng.out.len() - 3);
        let p = ng.write(dir.path(), "cut.pcapng");
        let mut r = PcapReader::open(&p).unwrap();
        assert!(r.next_packet().unwrap().is_some());
        assert!(r.next_packet().unwrap().is_none());
        assert!(r.truncated_tail);
        assert!(r.next_packet().unwrap().is_none());
        // A file that ends exactly after a block is not truncated.
        assert!(ip.len().is_multiple_of(4));
        ng.out.truncate(ng.out.len() + 3 - (32 + ip.len()));
        let p = ng.write(dir.path(), "whole.pcapng");
        let mut r = PcapReader::open(&p).unwrap();
        assert!(r.next_packet().unwrap().is_some());
        assert!(r.next_packet().unwrap().is_none());
        assert!(!r.truncated_tail);
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
