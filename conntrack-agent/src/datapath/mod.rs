//! Where the flow engine runs. [`Datapath`] is the contract of docs/design.md;
//! [`HostDatapath`] runs conntrack-common's engine over a `HashMap` in this process
//! (the kernel datapath drives the loaded eBPF program instead).

use crate::capabilities::contents::{ContentChunk, payload_of};
use crate::core::tracker::ConnView;
use crate::logs::conn_log::ConnRecord;
use crate::util::site::addr_from_bytes;
use conntrack_common::conn::Conn;
use conntrack_common::contents::{self, ContentCounters, ContentHeader};
use conntrack_common::engine::{self, EngineConfig, FlowTable};
use conntrack_common::event::Event;
use conntrack_common::key::FlowKey;
use conntrack_common::packet::{PacketMeta, ParseError, parse_ethernet};
use conntrack_common::threshold::{self, ThresholdCommand};
use std::collections::{HashMap, HashSet};

/// Why the datapath did not use a frame.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DatapathError {
    #[error("unparsable packet ({0:?})")]
    Parse(ParseError),
    #[error("IP fragment reached the engine")]
    Fragment,
    #[error("{0}")]
    Other(String),
}

/// Why a threshold command was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error("no such connection in the flow table")]
    NotFound,
    #[error("the connection stayed locked by the datapath")]
    Busy,
    #[error("threshold command failed: {0}")]
    Failed(String),
}

/// Decodes the `conntrack_control` result word: the crossed slots, or why nothing was done.
pub fn decode_control_result(r: u32) -> Result<u32, ThresholdError> {
    if r & threshold::RESULT_APPLIED != 0 {
        Ok(r & threshold::ALL_SLOTS)
    } else if r & threshold::RESULT_NOT_FOUND != 0 {
        Err(ThresholdError::NotFound)
    } else if r & threshold::RESULT_BUSY != 0 {
        Err(ThresholdError::Busy)
    } else {
        Err(ThresholdError::Failed(format!("result {r:#x}")))
    }
}

/// The flow table plus the engine. Frames are Ethernet frames; `checksum_ok` is the host's
/// transport checksum verdict for the packet.
pub trait Datapath {
    fn process(
        &mut self,
        frame: &[u8],
        ts_ns: u64,
        checksum_ok: bool,
        events: &mut Vec<Event>,
    ) -> Result<(), DatapathError>;
    fn lookup(&self, key: &FlowKey) -> Option<Conn>;
    fn remove(&mut self, key: &FlowKey) -> Option<Conn>;
    fn keys(&self) -> Vec<FlowKey>;
    /// Writes the threshold slots of `cmd.mask` of connection `cmd.key` without touching the
    /// rest of it (the kernel datapath runs `conntrack_control`, which takes the connection's
    /// lock), then checks them as Zeek does on a set. Returns the slots that crossed (cleared).
    fn set_thresholds(&mut self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError>;

    /// Content extraction: moves the payload records produced since the last call to `out`.
    fn drain_contents(&mut self, _out: &mut Vec<ContentChunk>) {}
    /// Content extraction: a connection's delivered / not delivered byte counters.
    fn content_counters(&self, _key: &FlowKey) -> Option<ContentCounters> {
        None
    }
    /// Content extraction: drops a removed connection's counters.
    fn forget_contents(&mut self, _key: &FlowKey) {}
    /// Content extraction caps: bytes per connection and direction, bytes per second over all
    /// connections (0 = none).
    fn set_content_caps(&mut self, _per_conn: u64, _rate: u64) -> Result<(), DatapathError> {
        Ok(())
    }
}

/// likely_server_ports on the host.
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    ports: HashSet<(u16, u8)>,
}

impl HostConfig {
    pub fn new(ports: &[(u16, u8)]) -> Self {
        Self {
            ports: ports.iter().copied().collect(),
        }
    }
}

impl EngineConfig for HostConfig {
    fn likely_server_port(&self, port: u16, proto: u8) -> bool {
        self.ports.contains(&(port, proto))
    }
}

struct Table<'a>(&'a mut HashMap<FlowKey, Conn>);

impl FlowTable for Table<'_> {
    fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Conn> {
        self.0.get_mut(key)
    }
    fn insert(&mut self, key: &FlowKey, conn: &Conn) -> bool {
        self.0.entry(*key).or_insert(*conn);
        true
    }
}

/// The engine on the host: a HashMap of connections.
pub struct HostDatapath {
    table: HashMap<FlowKey, Conn>,
    cfg: HostConfig,
    /// Content extraction, as the kernel's contents stage does it.
    contents: HostContents,
}

/// The host's side of content extraction: records, counters and caps.
#[derive(Default)]
struct HostContents {
    chunks: Vec<ContentChunk>,
    counters: HashMap<FlowKey, ContentCounters>,
    per_conn: u64,
    rate: u64,
    window: [u64; 2],
}

impl HostDatapath {
    pub fn new(cfg: HostConfig) -> Self {
        Self {
            table: HashMap::new(),
            cfg,
            contents: HostContents::default(),
        }
    }

    /// After the engine ran on `meta`: the packet's payload as content records if its
    /// connection extracts that direction (caps and counters as in the kernel).
    fn extract(&mut self, frame: &[u8], meta: &PacketMeta, ts_ns: u64, checksum_ok: bool) {
        let key = FlowKey::from_meta(meta);
        let Some(conn) = self.table.get(&key) else {
            return;
        };
        if conn.thr_armed & contents::EXTRACT_BITS == 0 {
            return;
        }
        let is_orig = engine::is_orig(conn, meta);
        if !contents::wanted(conn, meta, checksum_ok, is_orig) {
            return;
        }
        let hc = &mut self.contents;
        let counters = hc.counters.entry(key).or_default();
        let d = contents::dir_index(is_orig);
        let total = meta.payload_len;
        let payload = payload_of(frame, meta).unwrap_or(&[]);
        let n = contents::admit(counters.delivered[d], hc.per_conn, total);
        let n = contents::rate_admit(&mut hc.window, ts_ns, hc.rate, n);
        let n = n.min(payload.len() as u32);
        let mut off = 0u32;
        while off < n {
            let len = (n - off).min(contents::CHUNK_BYTES as u32);
            hc.chunks.push(ContentChunk {
                hdr: ContentHeader {
                    key,
                    ts_ns,
                    seq: contents::record_seq(meta, off),
                    len,
                    flags: if is_orig {
                        contents::CONTENT_FROM_ORIG
                    } else {
                        0
                    },
                    proto: meta.proto as u32,
                },
                data: payload[off as usize..(off + len) as usize].to_vec(),
            });
            off += len;
        }
        counters.delivered[d] += n as u64;
        counters.not_delivered[d] += (total - n) as u64;
    }
}

impl HostDatapath {
    /// An already parsed packet through the engine (also used for the packets the kernel's
    /// table had no room for).
    pub fn process_meta(
        &mut self,
        meta: &PacketMeta,
        ts_ns: u64,
        checksum_ok: bool,
        events: &mut Vec<Event>,
    ) {
        let mut table = Table(&mut self.table);
        engine::process_packet(&mut table, meta, ts_ns, checksum_ok, &self.cfg, |e| {
            events.push(e.to_event())
        });
    }
}

impl Datapath for HostDatapath {
    fn process(
        &mut self,
        frame: &[u8],
        ts_ns: u64,
        checksum_ok: bool,
        events: &mut Vec<Event>,
    ) -> Result<(), DatapathError> {
        let mut meta = PacketMeta::default();
        if let Some(patched) = tso_zero_length_fix(frame) {
            // IPv4 total length 0 (segmentation offload), accepted by the caller (Zeek does
            // with -C): the payload is what was captured, but CONNSIZE counts the header's
            // TotalLen(), i.e. 0 bytes.
            parse_ethernet(&patched, &mut meta).map_err(DatapathError::Parse)?;
            meta.ip_len = 0;
            meta.ip_bytes = 0;
        } else {
            parse_ethernet(frame, &mut meta).map_err(DatapathError::Parse)?;
        }
        if meta.is_fragment() {
            return Err(DatapathError::Fragment);
        }
        self.process_meta(&meta, ts_ns, checksum_ok, events);
        if !self.table.is_empty() && meta.payload_len != 0 {
            let patched = tso_zero_length_fix(frame);
            let mut m = meta;
            if patched.is_some() {
                // payload_of needs the header's length; the engine was given 0.
                parse_ethernet(patched.as_deref().unwrap_or(frame), &mut m)
                    .map_err(DatapathError::Parse)?;
            }
            self.extract(patched.as_deref().unwrap_or(frame), &m, ts_ns, checksum_ok);
        }
        Ok(())
    }

    fn lookup(&self, key: &FlowKey) -> Option<Conn> {
        self.table.get(key).copied()
    }

    fn remove(&mut self, key: &FlowKey) -> Option<Conn> {
        self.table.remove(key)
    }

    fn keys(&self) -> Vec<FlowKey> {
        self.table.keys().copied().collect()
    }

    fn set_thresholds(&mut self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
        let conn = self
            .table
            .get_mut(&cmd.key)
            .ok_or(ThresholdError::NotFound)?;
        Ok(threshold::apply_command(conn, cmd))
    }

    fn drain_contents(&mut self, out: &mut Vec<ContentChunk>) {
        out.append(&mut self.contents.chunks);
    }

    fn content_counters(&self, key: &FlowKey) -> Option<ContentCounters> {
        self.contents.counters.get(key).copied()
    }

    fn forget_contents(&mut self, key: &FlowKey) {
        self.contents.counters.remove(key);
    }

    fn set_content_caps(&mut self, per_conn: u64, rate: u64) -> Result<(), DatapathError> {
        self.contents.per_conn = per_conn;
        self.contents.rate = rate;
        Ok(())
    }
}

/// For an untagged Ethernet frame carrying IPv4 with total length 0, a copy whose total length
/// is the captured IP length.
pub fn tso_zero_length_fix(frame: &[u8]) -> Option<Vec<u8>> {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] || frame[14] >> 4 != 4 {
        return None;
    }
    if frame[16] != 0 || frame[17] != 0 {
        return None;
    }
    let len = u16::try_from(frame.len() - 14).ok()?;
    let mut v = frame.to_vec();
    v[16..18].copy_from_slice(&len.to_be_bytes());
    Some(v)
}

/// What the tracker needs of a connection.
pub fn conn_view(c: &Conn) -> ConnView {
    ConnView {
        proto: c.proto,
        last_ns: c.last_ns as i64,
        orig_state: if c.is_tcp() { c.orig.state } else { 0 },
        resp_state: if c.is_tcp() { c.resp.state } else { 0 },
        orig_addr: c.orig_addr,
        orig_port: c.orig_port,
        resp_port: c.resp_port,
    }
}

/// conn.log values of a connection (uid and local_* are filled in by the caller).
pub fn conn_record_fields(c: &Conn) -> ConnRecord {
    ConnRecord {
        ts_ns: c.start_ns as i64,
        uid: String::new(),
        orig_h: addr_from_bytes(&c.orig_addr),
        orig_p: c.orig_port,
        resp_h: addr_from_bytes(&c.resp_addr),
        resp_p: c.resp_port,
        proto: c.proto_name(),
        service: Vec::new(),
        duration_ns: c.last_ns as i64 - c.start_ns as i64,
        orig_bytes: c.orig_bytes(),
        resp_bytes: c.resp_bytes(),
        conn_state: c.conn_state().as_str().to_string(),
        local_orig: None,
        local_resp: None,
        missed_bytes: c.missed_bytes(),
        history: String::from_utf8_lossy(c.history_str()).into_owned(),
        orig_pkts: c.orig_pkts(),
        orig_ip_bytes: c.orig_ip_bytes(),
        resp_pkts: c.resp_pkts(),
        resp_ip_bytes: c.resp_ip_bytes(),
        tunnel_parents: Vec::new(),
        ip_proto: c.proto,
    }
}

pub mod kernel;
