//! A regular file read through a memory mapping: records are parsed where they lie in the
//! page cache, so no byte is copied before the engine (the streaming reader copies every byte
//! twice: `read(2)` into its buffer, then the buffer's shifts).
//!
//! [`Mapped`] is a `PcapReaderIterator` over the mapping that answers as pcap-parser's
//! streaming readers do once their input is exhausted, so [`PcapReader`]'s handling of a
//! block, a record cut short and a damaged record is the same code for both paths.
//!
//! # A file that changes while mapped
//!
//! A mapped page whose file was truncated away raises SIGBUS when it is read. The mapping is
//! therefore only made under a read lease (`F_SETLEASE`): whoever then opens the file for
//! writing or truncates it is held by the kernel until the lease is given back, and this
//! process is told by SIGIO. [`PcapReader::leave_mapping_if_asked`] notices it before the next
//! record, unmaps, gives the lease back, and reads the rest of the file with the streaming
//! reader from the same offset: from there on the replay sees the change as it would have
//! without a mapping. Without a lease (the file is open for writing somewhere, it is not ours
//! and we lack CAP_LEASE, the filesystem has no leases) the file is not mapped at all.
//!
//! What is left: the kernel breaks a lease by force after `/proc/sys/fs/lease-break-time`
//! (45 s by default). A replay stuck that long inside one packet (conn.log to a pipe whose
//! reader is stopped) while another process truncates the trace could still take SIGBUS.
//! The mapping covers the size seen when the lease was taken, never more, so a file that grows
//! is read to that size and then its growth through the streaming reader only if the lease
//! was broken meanwhile (as a write-open breaks it).

use super::{BUFFER, Format, Input, PcapReader, Source};
use pcap_parser::nom;
use pcap_parser::pcap::{LegacyPcapBlock, PcapHeader, parse_pcap_header};
use pcap_parser::pcapng::{Block, parse_block_be, parse_block_le, parse_sectionheaderblock};
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{LegacyPcapReader, PcapBlockOwned, PcapError, PcapNGReader};
use std::fs::File;
use std::io::{Cursor, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

type LegacyParse = fn(&[u8]) -> nom::IResult<&[u8], LegacyPcapBlock<'_>, PcapError<&[u8]>>;

/// SIGIO signals received (lease breaks): readers compare it with what they saw last, one
/// atomic load per record.
static SIGIO_COUNT: AtomicU64 = AtomicU64::new(0);
static SIGIO_TAKEN: OnceLock<bool> = OnceLock::new();

/// SIGIO counted from now on (its default action ends the process). False if it cannot be.
fn take_sigio() -> bool {
    *SIGIO_TAKEN.get_or_init(|| {
        // SAFETY: the action only increments an atomic, which is async-signal-safe; the
        // registry chains any other handler of SIGIO.
        unsafe {
            signal_hook_registry::register(libc::SIGIO, || {
                SIGIO_COUNT.fetch_add(1, Ordering::SeqCst);
            })
        }
        .is_ok()
    })
}

/// A read lease on the file (see the module's text); given back when dropped.
pub(super) struct Lease {
    file: File,
    seen: u64,
}

impl Lease {
    fn take(file: &File) -> Option<Self> {
        if !take_sigio() {
            return None;
        }
        // The lease belongs to the open file description, which this descriptor shares.
        let file = file.try_clone().ok()?;
        let seen = SIGIO_COUNT.load(Ordering::SeqCst);
        // SAFETY: fcntl on a descriptor this function owns.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
        (r == 0).then_some(Self { file, seen })
    }

    /// Someone wants to write or truncate the file: give the mapping up now.
    fn broken(&mut self) -> bool {
        let now = SIGIO_COUNT.load(Ordering::SeqCst);
        if now == self.seen {
            return false;
        }
        self.seen = now;
        // SAFETY: as in `take`. While a lease is being broken, F_GETLEASE answers the type it
        // is being broken to (F_UNLCK for a read lease).
        unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_GETLEASE) != libc::F_RDLCK }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // SAFETY: as in `take`.
        unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
    }
}

/// The file mapped under its lease, before the format is known.
pub(super) struct Mapping {
    map: memmap2::Mmap,
    lease: Lease,
}

impl Mapping {
    /// Lease, then map the size the file has now; None if either cannot be done (the caller
    /// reads the file instead).
    pub(super) fn new(file: &File) -> Option<Self> {
        let lease = Lease::take(file)?;
        let size = usize::try_from(file.metadata().ok()?.len()).ok()?;
        if size == 0 {
            return None;
        }
        // SAFETY: the lease keeps other processes from writing or truncating the file while
        // it is mapped (see the module's text); this process never writes a trace.
        let map = unsafe { memmap2::MmapOptions::new().len(size).map(file) }.ok()?;
        // Read-ahead for a front-to-back walk; only a hint.
        let _ = map.advise(memmap2::Advice::Sequential);
        Some(Self { map, lease })
    }

    /// The reader of a pcap file, parsed as `LegacyPcapReader::new` parses it.
    pub(super) fn pcap(self) -> Result<(Mapped, Lease), PcapError<&'static [u8]>> {
        let header = match parse_pcap_header(&self.map) {
            Ok((_, h)) => h,
            Err(nom::Err::Incomplete(_)) => return Err(PcapError::Incomplete(0)),
            Err(_) => return Err(PcapError::HeaderNotRecognized),
        };
        let parse: LegacyParse = if header.is_bigendian() {
            pcap_parser::pcap::parse_pcap_frame_be
        } else {
            pcap_parser::pcap::parse_pcap_frame
        };
        let kind = Kind::Pcap { header, parse };
        Ok((Mapped::new(self.map, kind), self.lease))
    }

    /// The reader of a pcapng file, checked as `PcapNGReader::new` checks it.
    pub(super) fn pcapng(self) -> Result<(Mapped, Lease), PcapError<&'static [u8]>> {
        match parse_sectionheaderblock(&self.map) {
            Ok(_) => {}
            Err(nom::Err::Incomplete(_)) => return Err(PcapError::Incomplete(0)),
            Err(_) => return Err(PcapError::HeaderNotRecognized),
        }
        let kind = Kind::PcapNg { big_endian: false };
        Ok((Mapped::new(self.map, kind), self.lease))
    }
}

enum Kind {
    Pcap {
        header: PcapHeader,
        parse: LegacyParse,
    },
    PcapNg {
        big_endian: bool,
    },
}

/// The mapped file as a `PcapReaderIterator`: an exhausted streaming reader whose buffer is
/// the whole file.
pub(super) struct Mapped {
    map: memmap2::Mmap,
    pos: usize,
    kind: Kind,
    /// The mapping's pages below this offset were asked in ([`Mapped::populate_ahead`]).
    populated: usize,
}

impl Mapped {
    fn new(map: memmap2::Mmap, kind: Kind) -> Self {
        Self {
            map,
            pos: 0,
            kind,
            populated: 0,
        }
    }

    /// Maps the next [`POPULATE_CHUNK`] of the file into the page table in one system call
    /// once the reader is within half a chunk of the end of what was: otherwise every 64 KiB
    /// (the kernel's fault-around) is a page fault taken in the middle of a packet. A hint:
    /// a kernel without `MADV_POPULATE_READ` (before 5.14) faults the pages in as before.
    #[inline]
    fn populate_ahead(&mut self) {
        if self.pos + POPULATE_CHUNK / 2 < self.populated || self.populated >= self.map.len() {
            return;
        }
        let len = POPULATE_CHUNK.min(self.map.len() - self.populated);
        #[cfg(target_os = "linux")]
        let _ = self
            .map
            .advise_range(memmap2::Advice::PopulateRead, self.populated, len);
        self.populated += len;
    }
}

/// The file is mapped into the page table this much at a time, ahead of the reader (a
/// multiple of the page size: each chunk starts page-aligned).
const POPULATE_CHUNK: usize = 8 << 20;

/// Bytes of the next record asked into the cache while this one is processed: the mapping's
/// bytes are first read by the replay itself (the transport checksum), no longer by a copy.
const PREFETCH: usize = 512;

/// Starts loading the first [`PREFETCH`] bytes of `next` into the cache (a hint: no fault,
/// no effect on the result).
#[inline(always)]
fn prefetch(next: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..next.len().min(PREFETCH)).step_by(64) {
        // SAFETY: a prefetch only hints the cache; the address is inside `next`.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                next.as_ptr().add(off).cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = next;
}

impl PcapReaderIterator for Mapped {
    fn next(&mut self) -> Result<(usize, PcapBlockOwned<'_>), PcapError<&[u8]>> {
        self.populate_ahead();
        let data = &self.map[self.pos..];
        let parsed = match &mut self.kind {
            // As the streaming reader: the file header comes first.
            Kind::Pcap { header, .. } if self.pos == 0 => {
                return Ok((header.size(), PcapBlockOwned::from(header.clone())));
            }
            _ if data.is_empty() => return Err(PcapError::Eof),
            Kind::Pcap { parse, .. } => parse(data).map(|(rem, b)| (rem, PcapBlockOwned::from(b))),
            Kind::PcapNg { big_endian } => {
                let parse = if *big_endian {
                    parse_block_be
                } else {
                    parse_block_le
                };
                parse(data).map(|(rem, b)| {
                    if let Block::SectionHeader(shb) = &b {
                        *big_endian = shb.big_endian();
                    }
                    (rem, PcapBlockOwned::from(b))
                })
            }
        };
        match parsed {
            Ok((rem, b)) => {
                prefetch(rem);
                Ok((data.len() - rem.len(), b))
            }
            Err(nom::Err::Error(e)) | Err(nom::Err::Failure(e)) => Err(e),
            // No more bytes will come: a record cut short.
            Err(nom::Err::Incomplete(_)) => Err(PcapError::UnexpectedEof),
        }
    }

    #[inline]
    fn consume(&mut self, offset: usize) {
        self.pos = (self.pos + offset).min(self.map.len());
    }

    fn consume_noshift(&mut self, offset: usize) {
        self.consume(offset);
    }

    fn consumed(&self) -> usize {
        self.pos
    }

    fn refill(&mut self) -> Result<(), PcapError<&[u8]>> {
        Ok(())
    }

    fn position(&self) -> usize {
        0
    }

    fn grow(&mut self, _new_size: usize) -> bool {
        true
    }

    #[inline]
    fn data(&self) -> &[u8] {
        &self.map[self.pos..]
    }

    fn reader_exhausted(&self) -> bool {
        true
    }
}

/// What a reader holds once its mapping is given up at the end of the input.
pub(super) struct Ended;

impl PcapReaderIterator for Ended {
    fn next(&mut self) -> Result<(usize, PcapBlockOwned<'_>), PcapError<&[u8]>> {
        Err(PcapError::Eof)
    }
    fn consume(&mut self, _offset: usize) {}
    fn consume_noshift(&mut self, _offset: usize) {}
    fn consumed(&self) -> usize {
        0
    }
    fn refill(&mut self) -> Result<(), PcapError<&[u8]>> {
        Ok(())
    }
    fn position(&self) -> usize {
        0
    }
    fn grow(&mut self, _new_size: usize) -> bool {
        false
    }
    fn data(&self) -> &[u8] {
        &[]
    }
    fn reader_exhausted(&self) -> bool {
        true
    }
}

/// The reader behind a [`PcapReader`]: pcap-parser's streaming one, or the mapping, whose
/// pcap records are also read without the generic block machinery
/// ([`PcapReader::mapped_pcap_record`]).
pub(super) enum Reader {
    Stream(Box<dyn PcapReaderIterator + Send>),
    Mapped(Mapped),
}

impl Reader {
    fn it(&self) -> &dyn PcapReaderIterator {
        match self {
            Reader::Stream(r) => r.as_ref(),
            Reader::Mapped(m) => m,
        }
    }

    fn it_mut(&mut self) -> &mut dyn PcapReaderIterator {
        match self {
            Reader::Stream(r) => r.as_mut(),
            Reader::Mapped(m) => m,
        }
    }
}

// `consume` and `data`, which every packet calls, dispatch on the variant: a mapped file's
// are then a few inlined instructions instead of a call through the trait object.
impl PcapReaderIterator for Reader {
    fn next(&mut self) -> Result<(usize, PcapBlockOwned<'_>), PcapError<&[u8]>> {
        self.it_mut().next()
    }
    #[inline]
    fn consume(&mut self, offset: usize) {
        match self {
            Reader::Mapped(m) => m.consume(offset),
            Reader::Stream(r) => r.consume(offset),
        }
    }
    fn consume_noshift(&mut self, offset: usize) {
        self.it_mut().consume_noshift(offset)
    }
    fn consumed(&self) -> usize {
        self.it().consumed()
    }
    fn refill(&mut self) -> Result<(), PcapError<&[u8]>> {
        self.it_mut().refill()
    }
    fn position(&self) -> usize {
        self.it().position()
    }
    fn grow(&mut self, new_size: usize) -> bool {
        self.it_mut().grow(new_size)
    }
    #[inline]
    fn data(&self) -> &[u8] {
        match self {
            Reader::Mapped(m) => m.data(),
            Reader::Stream(r) => r.data(),
        }
    }
    fn reader_exhausted(&self) -> bool {
        self.it().reader_exhausted()
    }
}

/// A whole pcap record at the start of `d`: (ts_sec, ts_usec, orig_len, captured length,
/// record length), read as `parse_pcap_frame(_be)` reads it; None when it is not whole.
fn pcap_record(d: &[u8], be: bool) -> Option<(u32, u32, u32, usize, usize)> {
    let hdr: &[u8; 16] = d.first_chunk()?;
    let word = |i: usize| {
        let w = [hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]];
        if be {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    };
    let caplen = word(8) as usize;
    let n = caplen.checked_add(16).filter(|&n| n <= d.len())?;
    Some((word(0), word(4), word(12), caplen, n))
}

impl PcapReader {
    /// The next record of a mapped pcap file when it is whole, read in place: what the
    /// generic path (`next_found`) makes of it, without pcap-parser's block and the steps.
    /// Anything else (the file header, a record cut short or damaged, pcapng) is None and
    /// takes the generic path.
    #[inline]
    pub(super) fn mapped_pcap_record(&mut self) -> Option<super::Found> {
        let Reader::Mapped(m) = &mut self.reader else {
            return None;
        };
        let Format::Pcap {
            big_endian,
            nanos,
            linktype,
        } = self.st.format
        else {
            return None;
        };
        if m.pos == 0 {
            return None;
        }
        m.populate_ahead();
        let data = &m.map[m.pos..];
        let (ts_sec, ts_usec, orig_len, caplen, n) = pcap_record(data, big_endian)?;
        prefetch(&data[n..]);
        let us = if nanos { ts_usec / 1000 } else { ts_usec };
        self.blocks += 1;
        self.pending = n;
        Some(super::Found {
            ts_ns: ts_sec as i64 * 1_000_000_000 + us as i64 * 1000,
            linktype,
            orig_len,
            start: 16,
            len: caplen,
        })
    }

    /// Before each record of a mapped file: if the lease is being broken, the rest of the file
    /// is read by the streaming reader from the same offset, and the lease given back (see the
    /// module's text). The streaming reader is started with the bytes it needs first: the pcap
    /// file header, or the current section's header block.
    pub(super) fn leave_mapping_if_asked(&mut self) -> Result<(), super::InputError> {
        if !self.lease.as_mut().is_some_and(Lease::broken) {
            return Ok(());
        }
        let Some(lease) = self.lease.take() else {
            return Ok(());
        };
        let offset = self.reader.consumed();
        let head = std::mem::take(&mut self.restart_head);
        let io = |source| super::InputError::Io {
            path: self.st.path.clone(),
            source,
        };
        let mut file = lease.file.try_clone().map_err(io)?;
        file.seek(SeekFrom::Start(offset as u64)).map_err(io)?;
        let skip_head = !head.is_empty();
        let head_len = head.len();
        let input = Input {
            head: Cursor::new(head),
            source: Source::File(file),
            error: std::sync::Arc::clone(&self.read_error),
        };
        let unreadable = |_| self.fmt_err("cannot read the file on after it changed".into());
        let stream: Box<dyn PcapReaderIterator + Send> = match self.st.format {
            Format::Pcap { .. } => {
                Box::new(LegacyPcapReader::new(BUFFER, input).map_err(unreadable)?)
            }
            Format::PcapNg { .. } => {
                Box::new(PcapNGReader::new(BUFFER, input).map_err(unreadable)?)
            }
        };
        let mut reader = Reader::Stream(stream);
        if skip_head {
            // Already seen through the mapping.
            let n = reader.next().map(|(n, _)| n).unwrap_or(head_len);
            reader.consume(n);
        }
        self.consumed_base = offset - head_len.min(offset);
        self.capacity = BUFFER;
        // The old reader, and with it the mapping, goes before the lease.
        self.reader = reader;
        drop(lease);
        Ok(())
    }

    /// True while the file is read through its mapping (the tests' view).
    #[cfg(test)]
    pub fn is_mapped(&self) -> bool {
        self.lease.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::pcap_record;
    use pcap_parser::pcap::{parse_pcap_frame, parse_pcap_frame_be};

    /// The fast path reads a record as pcap-parser does, in both byte orders, and declines
    /// what is not whole.
    #[test]
    fn pcap_record_reads_as_pcap_parser() {
        for be in [false, true] {
            let w = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
            let mut rec: Vec<u8> = [w(7), w(999_999), w(5), w(60)].concat();
            rec.extend_from_slice(&[1, 2, 3, 4, 5, 0xee]);
            let parse = if be {
                parse_pcap_frame_be
            } else {
                parse_pcap_frame
            };
            let (rem, b) = parse(&rec).unwrap();
            let got = pcap_record(&rec, be).unwrap();
            assert_eq!(
                got,
                (
                    b.ts_sec,
                    b.ts_usec,
                    b.origlen,
                    b.data.len(),
                    rec.len() - rem.len()
                )
            );
            for cut in 0..21 {
                assert_eq!(pcap_record(&rec[..cut], be), None, "{cut}");
            }
            let huge: Vec<u8> = [w(7), w(0), w(u32::MAX), w(60)].concat();
            assert_eq!(pcap_record(&huge, be), None);
        }
    }
}
