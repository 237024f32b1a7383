//! Content extraction: the payload of chosen connections, reassembled, to files named
//! as Zeek's `contents.zeek` names them.
//!
//! Selection: `--extract-all` (Zeek's `Conn::default_extract`) or `[contents]` rules pick the
//! connections; [`Extractor`] turns extraction on through [`ConnHandle::set_extract`] at
//! `connection_established` for TCP (as Zeek does; nothing has been sent yet then, so the files
//! hold the streams from their first byte) and at the first packet for other protocols. Any
//! capability may call `set_extract` at any time (e.g. on a threshold crossing); the extractor
//! writes whatever payload the datapath hands over.
//!
//! Files: `<extract_dir>/contents_<orig_h>:<orig_p>-<resp_h>:<resp_p>_{orig,resp}.dat` with
//! every `:` replaced by `-` and IPv6 addresses in brackets (Zeek's
//! `generate_extraction_filename` as its baseline shows it, e.g.
//! `contents_[2001-470-1f11-81f-c999-d94-aa7c-2e3e]-49185-[2001-470-4867-99--21]-21_orig.dat`).
//! TCP payload is reassembled in sequence order (see [`reassembly`]); a hole that is never
//! filled is written as Zeek writes it, `\n<<gap N>>\n`, and logged. Other protocols' payload
//! is appended per packet. Files are closed and their sizes logged when the connection is
//! removed. Past the disk quota nothing more is written (one warning) and extraction is turned
//! off for the connections seen afterwards.

pub mod config;
pub mod reassembly;
#[cfg(test)]
mod zeek_tests;

use crate::capabilities::alerts::rule::ConnMatch;
use crate::core::events::{Capability, ConnEvent, ConnHandle};
use crate::core::thresholds::ThresholdTarget;
use crate::datapath::Content;
use crate::logs::health::LogHealth;
use crate::util::hashing::FastMap;
use crate::util::site::addr_from_bytes;
use config::ContentsSettings;
use conntrack_common::conn::Conn;
use conntrack_common::key::FlowKey;
use conntrack_common::proto;
use reassembly::{Piece, Reassembler};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Payload waiting above a TCP hole before the hole is given up on (per direction).
const MAX_PENDING: usize = 4 << 20;

fn uri(a: IpAddr) -> String {
    match a {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Zeek's file name for one direction of a connection (see the module doc).
pub fn file_name(c: &Conn, is_orig: bool) -> String {
    let name = format!(
        "contents_{}:{}-{}:{}_{}.dat",
        uri(addr_from_bytes(&c.orig_addr)),
        c.orig_port,
        uri(addr_from_bytes(&c.resp_addr)),
        c.resp_port,
        if is_orig { "orig" } else { "resp" }
    );
    name.replace(':', "-")
}

/// One direction's file.
struct DirFile {
    path: PathBuf,
    out: BufWriter<File>,
    /// TCP only.
    reasm: Option<Reassembler>,
    written: u64,
    gaps: u64,
    gap_bytes: u64,
}

/// The shared budget: bytes written over all files against the quota.
struct Budget {
    quota: u64,
    written: u64,
    exhausted: bool,
    /// Write errors: warned about once, the bytes not written counted (summary, metrics).
    health: std::sync::Arc<LogHealth>,
}

impl Budget {
    /// A write or create error on `path`: counts `lost` bytes; warns the first time only (a
    /// full disk fails every write after it).
    fn failed(&self, path: &Path, e: &std::io::Error, lost: u64) {
        self.health.drop_records(lost);
        if self.health.fail(&e.to_string()) {
            log::warn!(
                "content extraction: cannot write {}: {e} (check free space and permissions); \
                 later errors are counted, not shown: see the summary",
                path.display()
            );
        }
    }
}

impl Budget {
    /// Bytes of `n` that may still be written; warns once when the quota is reached.
    fn take(&mut self, n: usize) -> usize {
        if self.quota == 0 {
            self.written += n as u64;
            return n;
        }
        let room = self.quota.saturating_sub(self.written).min(n as u64) as usize;
        self.written += room as u64;
        if room < n && !self.exhausted {
            self.exhausted = true;
            log::warn!(
                "content extraction: disk quota of {} bytes reached; nothing more is written \
                 (raise [contents] disk_quota)",
                self.quota
            );
        }
        room
    }
}

impl DirFile {
    fn write(&mut self, piece: Piece<'_>, budget: &mut Budget) {
        let marker;
        let bytes: &[u8] = match piece {
            Piece::Data(d) => d,
            Piece::Gap(n) => {
                self.gaps += 1;
                self.gap_bytes += n;
                log::info!(
                    "content extraction: {}: gap of {n} bytes",
                    self.path.display()
                );
                marker = format!("\n<<gap {n}>>\n");
                marker.as_bytes()
            }
        };
        let n = budget.take(bytes.len());
        if n == 0 {
            return;
        }
        match self.out.write_all(&bytes[..n]) {
            Ok(()) => self.written += n as u64,
            Err(e) => budget.failed(&self.path, &e, n as u64),
        }
    }

    fn push(&mut self, chunk: Content<'_>, budget: &mut Budget) {
        match self.reasm.take() {
            Some(mut r) => {
                r.push(chunk.hdr.seq, chunk.data, &mut |p| self.write(p, budget));
                self.reasm = Some(r);
            }
            None => self.write(Piece::Data(chunk.data), budget),
        }
    }

    fn close(mut self, budget: &mut Budget) -> (PathBuf, u64, u64, u64) {
        if let Some(mut r) = self.reasm.take() {
            r.finish(&mut |p| self.write(p, budget));
        }
        let unflushed = self.out.buffer().len() as u64;
        if let Err(e) = self.out.flush() {
            budget.failed(&self.path, &e, unflushed);
        }
        (self.path, self.written, self.gaps, self.gap_bytes)
    }
}

/// The files of one connection.
#[derive(Default)]
struct ConnFiles {
    dirs: [Option<DirFile>; 2],
}

/// What was extracted, for the end of a run and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClosedFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub gaps: u64,
}

/// The settings an [`Extractor`] selects connections with; its rules are replaced on SIGHUP
/// (reload.rs).
pub type SettingsHandle = std::rc::Rc<std::cell::RefCell<ContentsSettings>>;

/// The extraction capability.
pub struct Extractor {
    settings: SettingsHandle,
    dir: PathBuf,
    conns: FastMap<FlowKey, ConnFiles>,
    budget: Budget,
    dir_error: bool,
}

impl Extractor {
    /// `dir` is where files go (`--extract-dir`, `[contents] extract_dir` or
    /// `<log-dir>/extract`); created when the first file is.
    pub fn new(settings: ContentsSettings, dir: &Path) -> Self {
        let budget = Budget {
            quota: settings.disk_quota,
            written: 0,
            exhausted: false,
            health: LogHealth::counting(&format!("extracted files in {}", dir.display()), "bytes"),
        };
        Self {
            settings: std::rc::Rc::new(std::cell::RefCell::new(settings)),
            dir: dir.to_path_buf(),
            conns: FastMap::default(),
            budget,
            dir_error: false,
        }
    }

    /// Opens the file of one direction (once).
    fn open(&mut self, key: &FlowKey, c: &Conn, is_orig: bool, anchor: bool) {
        let files = self.conns.entry(*key).or_default();
        let slot = &mut files.dirs[usize::from(!is_orig)];
        if slot.is_some() {
            return;
        }
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            if !self.dir_error {
                self.dir_error = true;
                log::warn!(
                    "content extraction: cannot create {}: {e} (set --extract-dir)",
                    self.dir.display()
                );
            }
            return;
        }
        let path = self.dir.join(file_name(c, is_orig));
        let file = match File::create(&path) {
            Ok(f) => f,
            Err(e) => {
                self.budget.failed(&path, &e, 0);
                return;
            }
        };
        let reasm = (c.proto == proto::TCP).then(|| {
            let ep = if is_orig { &c.orig } else { &c.resp };
            // Nothing sent yet: the stream starts right after the SYN, so data that arrives
            // out of order first still lands at its place.
            if anchor && ep.last_rel <= 1 {
                Reassembler::anchored(ep.start_seq.wrapping_add(1), MAX_PENDING)
            } else {
                Reassembler::new(MAX_PENDING)
            }
        });
        *slot = Some(DirFile {
            path,
            out: BufWriter::new(file),
            reasm,
            written: 0,
            gaps: 0,
            gap_bytes: 0,
        });
    }

    /// Turns extraction on for the directions the settings give this connection.
    fn select(&mut self, conn: &mut ConnHandle<'_>) {
        let c = *conn.conn();
        let (o, r) = self
            .settings
            .borrow()
            .directions(&ConnMatch::from_conn(&c, None));
        for (is_orig, on) in [(true, o), (false, r)] {
            if on && conn.set_extract(is_orig, true) {
                self.open(conn.key(), &c, is_orig, true);
            }
        }
    }

    /// Closes a connection's files and logs what they hold.
    fn close(&mut self, conn: &ConnHandle<'_>) -> Vec<ClosedFile> {
        let Some(files) = self.conns.remove(conn.key()) else {
            return Vec::new();
        };
        let counters = conn.content_counters().unwrap_or_default();
        let mut out = Vec::new();
        for (d, f) in files.dirs.into_iter().enumerate() {
            let Some(f) = f else { continue };
            let (path, bytes, gaps, gap_bytes) = f.close(&mut self.budget);
            let lost = counters.not_delivered[d];
            log::info!(
                "content extraction: {} ({}): {bytes} bytes written, {gaps} gaps \
                 ({gap_bytes} bytes), {lost} bytes not delivered by the datapath (caps)",
                path.display(),
                conn.uid()
            );
            out.push(ClosedFile { path, bytes, gaps });
        }
        out
    }
}

impl Capability for Extractor {
    fn on_event(&mut self, conn: &mut ConnHandle<'_>, event: &ConnEvent) {
        let is_tcp = conn.conn().proto == proto::TCP;
        match event {
            ConnEvent::New if !is_tcp => self.select(conn),
            ConnEvent::Established if is_tcp => self.select(conn),
            ConnEvent::Removed(_) => {
                self.close(conn);
            }
            _ => {}
        }
        if self.budget.exhausted && self.conns.contains_key(conn.key()) {
            conn.set_extract(true, false);
            conn.set_extract(false, false);
        }
    }

    fn on_payload(&mut self, chunk: Content<'_>, dp: &mut dyn ThresholdTarget) {
        if chunk.hdr.flags & conntrack_common::contents::CONTENT_SAMPLE != 0 {
            // Service detection's samples: not extracted content.
            return;
        }
        let key = chunk.hdr.key;
        let is_orig = chunk.is_orig();
        let d = usize::from(!is_orig);
        let known = self.conns.get(&key).is_some_and(|f| f.dirs[d].is_some());
        if !known {
            // Turned on by another capability: name the file from the connection as it is.
            let Some(c) = dp.lookup(&key) else { return };
            self.open(&key, &c, is_orig, false);
        }
        if let Some(f) = self.conns.get_mut(&key).and_then(|f| f.dirs[d].as_mut()) {
            f.push(chunk, &mut self.budget);
        }
    }
}

/// Sets the datapath's caps and registers the extractor, writing to `dir`; returns the handle
/// through which SIGHUP changes the rules.
pub fn register(
    agent: &mut crate::core::agent::Agent,
    settings: &ContentsSettings,
    dir: &Path,
) -> anyhow::Result<SettingsHandle> {
    agent
        .dp
        .set_content_caps(settings.max_bytes_per_conn, settings.max_rate)
        .map_err(|e| anyhow::anyhow!("setting the content extraction caps: {e}"))?;
    let extractor = Extractor::new(settings.clone(), dir);
    agent.add_health(extractor.budget.health.clone());
    let handle = extractor.settings.clone();
    agent.register(Box::new(extractor));
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::site::addr_to_bytes;

    fn conn(orig: &str, op: u16, resp: &str, rp: u16) -> Conn {
        let mut c = Conn::ZERO;
        c.orig_addr = addr_to_bytes(orig.parse().unwrap());
        c.resp_addr = addr_to_bytes(resp.parse().unwrap());
        c.orig_port = op;
        c.resp_port = rp;
        c
    }

    #[test]
    fn file_names_are_zeeks() {
        let c = conn(
            "2001:470:1f11:81f:c999:d94:aa7c:2e3e",
            49185,
            "2001:470:4867:99::21",
            21,
        );
        assert_eq!(
            file_name(&c, true),
            "contents_[2001-470-1f11-81f-c999-d94-aa7c-2e3e]-49185-[2001-470-4867-99--21]-21_orig.dat"
        );
        let c = conn("10.0.0.1", 40000, "10.0.0.2", 80);
        assert_eq!(
            file_name(&c, false),
            "contents_10.0.0.1-40000-10.0.0.2-80_resp.dat"
        );
    }

    #[test]
    fn the_quota_cuts_writes_and_stays_cut() {
        let mut b = Budget {
            quota: 10,
            written: 0,
            exhausted: false,
            health: LogHealth::new("x"),
        };
        assert_eq!(b.take(6), 6);
        assert_eq!(b.take(6), 4);
        assert!(b.exhausted);
        assert_eq!(b.take(1), 0);
    }
}
