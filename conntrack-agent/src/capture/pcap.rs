//! Offline input: pcap (microsecond and nanosecond) and pcapng (several sections and interfaces,
//! each with its own link type and timestamp resolution). Decoding a frame of a link type down
//! to its IP header is in [`link`](super::link).
//!
//! The container formats are parsed by `pcap-parser`: a regular file in place, through a memory
//! mapping ([`mapped`]), anything else (standard input, a pipe, a file that cannot be mapped)
//! by its streaming reader. What stays here is what a block
//! means for the replay: per-interface link type and timestamp units/offset (computed from the raw
//! IDB options with the section's byte order: the crate's `if_tsoffset`/`ts_resolution` helpers
//! read the offset as little-endian and reject power-of-two resolutions), the end of input on a
//! record cut short, and errors that name the file and say what to do.
//!
//! Timestamps are truncated to microseconds, as Zeek sees them through libpcap's
//! `pcap_fopen_offline` (which does not ask for nanosecond precision).

use super::link::{SUPPORTED_TEXT, linktype_supported};
use crate::util::stop::Stop;
use input::{Input, Source, read_head};
use pcap_parser::traits::{PcapNGPacketBlock, PcapReaderIterator};
use pcap_parser::{
    Block, InterfaceDescriptionBlock, LegacyPcapReader, PcapBlockOwned, PcapError, PcapNGReader,
};
use std::fs::File;
use std::io::Cursor;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One captured packet, borrowed from the reader's buffer until the next `next_packet`
/// (a replay copies no packet out of the file buffer and allocates nothing per packet).
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Microsecond-truncated time in nanoseconds since the epoch.
    pub ts_ns: i64,
    pub linktype: u32,
    pub data: &'a [u8],
    pub orig_len: u32,
}

/// A packet found in a block: its data as a range of the parser's buffer, so that the block's
/// borrow of the parser ends before the packet is handed out.
struct Found {
    ts_ns: i64,
    linktype: u32,
    orig_len: u32,
    start: usize,
    len: usize,
}

impl Found {
    fn new(ts_ns: i64, linktype: u32, orig_len: u32, base: usize, data: &[u8]) -> Self {
        Self {
            ts_ns,
            linktype,
            orig_len,
            start: data.as_ptr() as usize - base,
            len: data.len(),
        }
    }
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
    Block(usize, Result<Option<Found>, InputError>),
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
    reader: mapped::Reader,
    capacity: usize,
    read_error: Arc<Mutex<Option<std::io::Error>>>,
    st: Stream,
    done: bool,
    /// Bytes of the packet last handed out, consumed at the next call (the packet borrows them).
    pending: usize,
    /// Packets skipped because of an unsupported interface link type (pcapng only).
    pub skipped_linktype: u64,
    pub truncated_tail: bool,
    /// The read lease of a mapped file (`reader` is then a [`mapped::Mapped`]).
    lease: Option<mapped::Lease>,
    /// Mapped: what a streaming reader taking over is given first (the pcap file header, or
    /// the current section's header block).
    restart_head: Vec<u8>,
    /// File offset of the streaming reader's offset 0 (0 unless it took over from a mapping).
    consumed_base: usize,
    /// Records (pcap) or blocks (pcapng, the section header included) read whole, and packets
    /// handed out: where a damaged record is, for its error.
    blocks: u64,
    packets: u64,
}

/// `-`: standard input.
pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The input as messages name it: its path, or "standard input" for `-`.
pub fn input_name(path: &Path) -> PathBuf {
    if is_stdin(path) {
        PathBuf::from("standard input")
    } else {
        path.to_path_buf()
    }
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
    #[cfg(test)]
    pub fn open(path: &Path) -> Result<Self, InputError> {
        Self::open_with(path, Stop::default(), BUFFER, true)
    }

    /// `open`, with `stop` ending the input of a pipe that has no data (see [`Source`]).
    pub fn open_stoppable(path: &Path, stop: &Stop) -> Result<Self, InputError> {
        Self::open_with(path, stop.clone(), BUFFER, true)
    }

    /// The streaming reader, even for a file that could be mapped.
    #[cfg(test)]
    fn open_with_buffer(path: &Path, capacity: usize) -> Result<Self, InputError> {
        Self::open_with(path, Stop::default(), capacity, false)
    }

    /// `path` `-` is standard input (as for `zeek -r -`). A regular file is mapped if `map`
    /// and it can be.
    fn open_with(path: &Path, stop: Stop, capacity: usize, map: bool) -> Result<Self, InputError> {
        let stdin = is_stdin(path);
        let name = input_name(path);
        let io = |source| InputError::Io {
            path: name.clone(),
            source,
        };
        let fmt = |msg: String| InputError::Format {
            path: name.clone(),
            msg,
        };
        let file = if stdin {
            // A descriptor of its own: the reader (or its pump thread) owns what it reads.
            std::io::stdin()
                .as_fd()
                .try_clone_to_owned()
                .map(File::from)
                .map_err(io)?
        } else {
            File::open(path).map_err(io)?
        };
        // Before the first byte is read: the lease keeps the file as it is from here on.
        let regular = file.metadata().map(|m| m.is_file()).unwrap_or(false);
        let mut mapping = (map && regular)
            .then(|| mapped::Mapping::new(&file))
            .flatten();
        let read_error = Arc::new(Mutex::new(None));
        let mut input = Input {
            head: Cursor::new(Vec::new()),
            source: Source::new(file, stop),
            error: Arc::clone(&read_error),
        };
        let head = read_head(&mut input).map_err(|e| {
            io(read_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or(e))
        })?;
        let magic: [u8; 4] = match head.get(..4) {
            Some(m) => m.try_into().unwrap_or_default(),
            None if head.is_empty() && stdin => {
                return Err(fmt(
                    "no data: not a pcap or pcapng capture (give `read -` a \
                     capture on standard input, e.g. from `tcpdump -w -`)"
                        .into(),
                ));
            }
            None if head.is_empty() => {
                return Err(fmt("empty file: not a pcap or pcapng capture".into()));
            }
            None => return Err(fmt("file too short to be a pcap or pcapng capture".into())),
        };
        let mut lease = None;
        let restart_head = head.clone();
        input.head = Cursor::new(head);
        let (reader, format): (mapped::Reader, Format) = match u32::from_le_bytes(magic) {
            0xa1b2c3d4 | 0xa1b23c4d | 0xd4c3b2a1 | 0x4d3cb2a1 => {
                let mut r = match mapping.take() {
                    Some(m) => {
                        let (r, l) = m
                            .pcap()
                            .map_err(|_| fmt("truncated pcap file header".into()))?;
                        lease = Some(l);
                        mapped::Reader::Mapped(r)
                    }
                    None => mapped::Reader::Stream(Box::new(
                        LegacyPcapReader::new(capacity, input)
                            .map_err(|_| fmt("truncated pcap file header".into()))?,
                    )),
                };
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
                (r, format)
            }
            SHB_MAGIC => {
                let bad = |e| match e {
                    PcapError::Incomplete(_) => fmt("truncated pcapng section header".into()),
                    _ => fmt("bad pcapng section header (byte-order magic or length); \
                             the file is damaged"
                        .into()),
                };
                let r = match mapping.take() {
                    Some(m) => {
                        let (r, l) = m.pcapng().map_err(bad)?;
                        lease = Some(l);
                        mapped::Reader::Mapped(r)
                    }
                    None => mapped::Reader::Stream(Box::new(
                        PcapNGReader::new(capacity, input).map_err(bad)?,
                    )),
                };
                let format = Format::PcapNg {
                    big_endian: false,
                    ifaces: Vec::new(),
                };
                (r, format)
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
        // The section header is the first block the mapping gives.
        let restart_head = if matches!(format, Format::Pcap { .. }) && lease.is_some() {
            restart_head
        } else {
            Vec::new()
        };
        Ok(Self {
            reader,
            capacity,
            read_error,
            st: Stream {
                path: name.clone(),
                format,
                skipped_linktype: 0,
                warned_linktypes: Vec::new(),
            },
            done: false,
            pending: 0,
            skipped_linktype: 0,
            truncated_tail: false,
            lease,
            restart_head,
            consumed_base: 0,
            blocks: 0,
            packets: 0,
        })
    }

    fn fmt_err(&self, msg: String) -> InputError {
        self.st.fmt_err(msg)
    }

    /// Next packet, or None at the end of the file. A record cut short at the end of the file
    /// ends the input (like libpcap) and sets `truncated_tail`. After an error (a damaged record,
    /// a failed read) the input has ended too: the caller may finish as at its end.
    pub fn next_packet(&mut self) -> Result<Option<Packet<'_>>, InputError> {
        let found = match self.next_found() {
            Ok(f) => f,
            Err(e) => {
                self.done = true;
                self.end_input();
                return Err(e);
            }
        };
        if found.is_none() {
            self.end_input();
        }
        Ok(found.map(|p| {
            self.packets += 1;
            Packet {
                ts_ns: p.ts_ns,
                linktype: p.linktype,
                data: &self.reader.data()[p.start..p.start + p.len],
                orig_len: p.orig_len,
            }
        }))
    }

    fn next_found(&mut self) -> Result<Option<Found>, InputError> {
        if self.pending > 0 {
            self.reader.consume(self.pending);
            self.pending = 0;
        }
        while !self.done {
            self.leave_mapping_if_asked()?;
            if let Some(p) = self.mapped_pcap_record() {
                return Ok(Some(p));
            }
            // The parser does not move its buffer while it parses (only `refill` and
            // `consume` do): block data lies at a fixed offset from here.
            let base = self.reader.data().as_ptr() as usize;
            let step = match self.reader.next() {
                Ok((n, block)) => Step::Block(n, self.st.on_block(block, base)),
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
                    self.blocks += 1;
                    if self.lease.is_some()
                        && matches!(self.st.format, Format::PcapNg { .. })
                        && rd_u32(self.reader.data(), false) == Some(SHB_MAGIC)
                    {
                        self.restart_head = self.reader.data()[..n].to_vec();
                    }
                    let Some(p) = res? else {
                        self.reader.consume(n);
                        continue;
                    };
                    self.pending = n;
                    return Ok(Some(p));
                }
                Step::End => self.done = true,
                Step::CutShort => {
                    // A mapped file's parser knows no more data will come, where the streaming
                    // one asked for more first (`NeedMore`): the same check.
                    self.check_not_corrupt()?;
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

    /// The input has ended: a mapping and its lease are given up at once, not when the reader
    /// goes (the drain that follows may take a while, and a writer waits for the lease).
    pub fn end_input(&mut self) {
        if let Some(lease) = self.lease.take() {
            // The mapping goes before the lease.
            self.reader = mapped::Reader::Stream(Box::new(mapped::Ended));
            drop(lease);
        }
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

    /// The record or block at the read position is damaged: where it is (byte offset, record
    /// or block number) and what is wrong with it.
    fn corrupt(&self) -> InputError {
        let d = self.reader.data();
        let at = self.consumed_base + self.reader.consumed();
        let n = self.blocks + 1;
        let too_long = |len: usize| len > MAX_RECORD + 16;
        let msg = match &self.st.format {
            Format::Pcap { big_endian, .. } => {
                let incl = d.get(8..).and_then(|b| rd_u32(b, *big_endian));
                let what = match incl {
                    Some(l) if too_long(l as usize) => format!(
                        "its captured length {l} is more than a record can hold ({} MiB)",
                        MAX_RECORD >> 20
                    ),
                    Some(l) => format!("its header is invalid (captured length {l})"),
                    None => "its header is invalid".into(),
                };
                format!("corrupt pcap record {n} (packet {n}) at byte offset {at}: {what}")
            }
            Format::PcapNg { big_endian, .. } => {
                let btype = rd_u32(d, *big_endian).unwrap_or(0);
                let len = self.declared_len().unwrap_or(0);
                let what = if too_long(len) {
                    format!(
                        "its length is more than a block can hold ({} MiB)",
                        MAX_RECORD >> 20
                    )
                } else if len < 12 || !len.is_multiple_of(4) {
                    "not a valid block length".into()
                } else {
                    "its contents do not fit its length".into()
                };
                format!(
                    "corrupt pcapng block {n} (after packet {}) at byte offset {at}: \
                     type {btype:#x}, length {len}: {what}",
                    self.packets
                )
            }
        };
        self.fmt_err(format!("{msg}; the file is damaged from there on"))
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

    fn on_block(
        &mut self,
        block: PcapBlockOwned<'_>,
        base: usize,
    ) -> Result<Option<Found>, InputError> {
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
                let ts_ns = b.ts_sec as i64 * 1_000_000_000 + us as i64 * 1000;
                Ok(Some(Found::new(ts_ns, linktype, b.origlen, base, b.data)))
            }
            PcapBlockOwned::NG(b) => self.on_ng_block(b, base),
        }
    }

    fn on_ng_block(&mut self, block: Block<'_>, base: usize) -> Result<Option<Found>, InputError> {
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
                self.packet(epb.if_id as usize, Some(units), data, epb.origlen, base)
            }
            Block::SimplePacket(spb) => {
                if ifaces.is_empty() {
                    return Err(self.fmt_err("simple packet block without an interface".into()));
                }
                self.packet(0, None, spb.packet_data(), spb.origlen, base)
            }
            // pcap-parser reads an unknown block's type as little-endian.
            Block::Unknown(u)
                if (if be {
                    u.block_type.swap_bytes()
                } else {
                    u.block_type
                }) == OPB_TYPE =>
            {
                self.obsolete_packet(u.data, be, base)
            }
            _ => Ok(None),
        }
    }

    /// Packet Block (obsolete): u16 interface id, u16 drops, timestamp, lengths, data.
    fn obsolete_packet(
        &mut self,
        body: &[u8],
        be: bool,
        base: usize,
    ) -> Result<Option<Found>, InputError> {
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
        self.packet(ifid, Some((hi << 32) | lo), data, orig, base)
    }

    fn packet(
        &mut self,
        ifid: usize,
        units: Option<u64>,
        data: &[u8],
        orig_len: u32,
        base: usize,
    ) -> Result<Option<Found>, InputError> {
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
        // Simple packet blocks carry no timestamp.
        let ts_ns = units.map_or(0, |u| ts_for(&iface, u));
        Ok(Some(Found::new(
            ts_ns,
            iface.linktype,
            orig_len,
            base,
            data,
        )))
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

mod input;
mod mapped;
#[cfg(test)]
pub mod tests;
