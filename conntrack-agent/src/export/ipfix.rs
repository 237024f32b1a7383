//! `--ipfix HOST:PORT`: IPFIX export (RFC 7011) of connection records to an existing collector
//! (nfdump's nfcapd, pmacct, Elastiflow, ...).
//!
//! Each removed connection becomes two uniflow Data Records, originator to responder and back
//! (the reverse one only if the responder sent anything): every collector understands
//! uniflows, while RFC 5103's biflow reverse elements (PEN 29305) need support not every collector
//! has.
//! Templates use IANA elements only:
//!
//! | template | fields (IE id, length)                                                           |
//! |----------|----------------------------------------------------------------------------------|
//! | 256 IPv4 | sourceIPv4Address 8/4, destinationIPv4Address 12/4, then the common tail         |
//! | 257 IPv6 | sourceIPv6Address 27/16, destinationIPv6Address 28/16, then the common tail      |
//! | tail     | sourceTransportPort 7/2, destinationTransportPort 11/2, protocolIdentifier 4/1,  |
//! |          | octetDeltaCount 1/8, packetDeltaCount 2/8, flowStartMilliseconds 152/8,          |
//! |          | flowEndMilliseconds 153/8                                                        |
//!
//! Octets are IP bytes (conn.log's `*_ip_bytes`), as NetFlow/IPFIX count them. The sending runs
//! on its own thread fed by a bounded channel: the event loop never waits for the network, and
//! records that find the channel full are counted as dropped. A thread rather than a tokio task
//! because `read` is synchronous and must wait for the last message at its end.

pub use super::ipfix_stats::ExportStats;
use crate::core::events::{Capability, ConnEvent, ConnHandle};
use crate::logs::record::ConnRecord;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

pub const VERSION: u16 = 10;
pub const TEMPLATE_SET_ID: u16 = 2;
pub const TEMPLATE_V4: u16 = 256;
pub const TEMPLATE_V6: u16 = 257;
/// Records per message: the largest message (templates and 16 IPv6 records, 1216 bytes) fits
/// a 1500-byte MTU, so UDP messages are never fragmented.
const MAX_RECORDS: usize = 16;
/// RFC 7011 §8.4: over UDP, templates are resent periodically, since the collector may have
/// started after us or lost the packet.
const UDP_TEMPLATE_INTERVAL: Duration = Duration::from_secs(30);
/// Records waiting for the sender; beyond this, records are dropped and counted.
const QUEUE: usize = 16_384;

/// (IE id, length) of the fields after the addresses, shared by both templates.
const TAIL: [(u16, u16); 7] = [(7, 2), (11, 2), (4, 1), (1, 8), (2, 8), (152, 8), (153, 8)];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
}

/// IPFIX options, shared by `run` and `read`.
#[derive(Args, Debug, Clone, Default)]
pub struct IpfixArgs {
    /// Export every connection record over IPFIX (RFC 7011) to this collector, e.g.
    /// nfcapd at 127.0.0.1:9995.
    #[arg(help_heading = "Export", long, value_name = "HOST:PORT")]
    pub ipfix: Option<String>,

    /// IPFIX transport (nfcapd listens on UDP only).
    #[arg(help_heading = "Export", long, value_enum, default_value_t = Transport::Udp, requires = "ipfix")]
    pub ipfix_transport: Transport,

    /// IPFIX Observation Domain ID, to tell several agents apart at one collector.
    #[arg(help_heading = "Export", long, default_value_t = 0, requires = "ipfix")]
    pub ipfix_domain: u32,
}

/// `[ipfix]` in the config file: the same settings; `--ipfix` on the command line replaces the
/// whole section.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpfixSection {
    /// HOST:PORT of the collector.
    pub collector: Option<String>,
    #[serde(default)]
    pub transport: Transport,
    #[serde(default)]
    pub domain: u32,
}

impl IpfixArgs {
    /// The command line if it names a collector, else the config file's section.
    pub fn or_file(&self, file: &IpfixSection) -> IpfixArgs {
        if self.ipfix.is_some() {
            return self.clone();
        }
        IpfixArgs {
            ipfix: file.collector.clone(),
            ipfix_transport: file.transport,
            ipfix_domain: file.domain,
        }
    }
}

/// One direction of a connection, as exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub octets: u64,
    pub packets: u64,
    pub start_ms: u64,
    pub end_ms: u64,
}

impl FlowRecord {
    fn is_v4(&self) -> bool {
        self.src.is_ipv4() && self.dst.is_ipv4()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
            }
            (s, d) => {
                out.extend_from_slice(&v6(s).octets());
                out.extend_from_slice(&v6(d).octets());
            }
        }
        out.extend_from_slice(&self.src_port.to_be_bytes());
        out.extend_from_slice(&self.dst_port.to_be_bytes());
        out.push(self.proto);
        for v in [self.octets, self.packets, self.start_ms, self.end_ms] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

fn v6(a: IpAddr) -> std::net::Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// The records of a removed connection: orig→resp, and resp→orig when the responder sent.
pub fn flow_records(c: &conntrack_common::conn::Conn) -> Vec<FlowRecord> {
    let r = ConnRecord::from_conn(c);
    let start_ms = (r.ts_ns.max(0) as u64) / 1_000_000;
    let end_ms = (r.ts_ns.max(0) as u64 + r.duration_ns.max(0) as u64) / 1_000_000;
    let fwd = FlowRecord {
        src: r.orig_h,
        dst: r.resp_h,
        src_port: r.orig_p,
        dst_port: r.resp_p,
        proto: r.ip_proto,
        octets: r.orig_ip_bytes,
        packets: r.orig_pkts,
        start_ms,
        end_ms,
    };
    let mut out = vec![fwd];
    if r.resp_pkts > 0 {
        out.push(FlowRecord {
            src: r.resp_h,
            dst: r.orig_h,
            src_port: r.resp_p,
            dst_port: r.orig_p,
            octets: r.resp_ip_bytes,
            packets: r.resp_pkts,
            ..fwd
        });
    }
    out
}

/// Builds IPFIX messages for one Observation Domain and Transport Session.
#[derive(Debug)]
pub struct Encoder {
    domain: u32,
    /// RFC 7011 §3.1: Data Records sent in this session before the message, modulo 2^32.
    seq: u32,
}

impl Encoder {
    pub fn new(domain: u32) -> Self {
        Self { domain, seq: 0 }
    }

    /// A Template Set defining both templates.
    fn template_set(out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&TEMPLATE_SET_ID.to_be_bytes());
        out.extend_from_slice(&[0, 0]); // length, filled in below
        for (id, addr_ie, addr_len) in
            [(TEMPLATE_V4, [8u16, 12], 4u16), (TEMPLATE_V6, [27, 28], 16)]
        {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&(2 + TAIL.len() as u16).to_be_bytes());
            for (ie, len) in addr_ie.iter().map(|&ie| (ie, addr_len)).chain(TAIL) {
                out.extend_from_slice(&ie.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        set_length(out, start);
    }

    /// One message: templates if asked, then a Data Set per address family present. Records
    /// beyond [`MAX_RECORDS`] belong in the next message (see [`Encoder::messages`]).
    pub fn message(&mut self, export_secs: u32, templates: bool, recs: &[FlowRecord]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1280);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&[0, 0]); // length
        out.extend_from_slice(&export_secs.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.domain.to_be_bytes());
        if templates {
            Self::template_set(&mut out);
        }
        for (id, v4) in [(TEMPLATE_V4, true), (TEMPLATE_V6, false)] {
            if !recs.iter().any(|r| r.is_v4() == v4) {
                continue;
            }
            let start = out.len();
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
            for r in recs.iter().filter(|r| r.is_v4() == v4) {
                r.encode(&mut out);
            }
            set_length(&mut out, start);
        }
        let len = out.len() as u16;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        self.seq = self.seq.wrapping_add(recs.len() as u32);
        out
    }

    /// `recs` in as many messages as needed; templates in the first if asked.
    pub fn messages(
        &mut self,
        export_secs: u32,
        templates: bool,
        recs: &[FlowRecord],
    ) -> Vec<Vec<u8>> {
        if recs.is_empty() {
            return if templates {
                vec![self.message(export_secs, true, &[])]
            } else {
                Vec::new()
            };
        }
        recs.chunks(MAX_RECORDS)
            .enumerate()
            .map(|(i, c)| self.message(export_secs, templates && i == 0, c))
            .collect()
    }
}

/// Writes the length of the set that starts at `start` into its header.
fn set_length(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as u16;
    out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// The running exporter: a sender thread and the channel that feeds it.
pub struct Exporter {
    tx: SyncSender<FlowRecord>,
    stats: Arc<ExportStats>,
    /// Set by `finish`: the capabilities may outlive it (`run` keeps its agent to the end).
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    target: SocketAddr,
}

impl Exporter {
    /// Starts exporting if `--ipfix` was given. The collector's address is resolved now, so
    /// that a typo fails at start.
    pub fn start(args: &IpfixArgs) -> Result<Option<Exporter>> {
        let Some(target) = &args.ipfix else {
            return Ok(None);
        };
        let addr = target
            .to_socket_addrs()
            .with_context(|| format!("--ipfix {target}: expected HOST:PORT of a collector"))?
            .next()
            .with_context(|| format!("--ipfix {target}: the name has no address"))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let stats = Arc::new(ExportStats::default());
        let mut link = Link::new(addr, args.ipfix_transport, args.ipfix_domain)?;
        let st = stats.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("ipfix".into())
            .spawn(move || link.run(rx, &st, &stopped))
            .context("starting the IPFIX thread")?;
        Ok(Some(Exporter {
            tx,
            stats,
            stop,
            thread,
            target: addr,
        }))
    }

    /// The capability that hands every removed connection to the exporter.
    pub fn capability(&self) -> Box<dyn Capability> {
        Box::new(IpfixExport {
            tx: self.tx.clone(),
            stats: self.stats.clone(),
        })
    }

    /// The exporter's counters (for the metrics endpoint).
    pub fn stats(&self) -> Arc<ExportStats> {
        self.stats.clone()
    }

    /// Sends what is queued, stops the thread and says what was exported.
    pub fn finish(self) -> String {
        let Exporter {
            tx,
            stats,
            stop,
            thread,
            target,
        } = self;
        drop(tx);
        stop.store(true, Ordering::Relaxed);
        let _ = thread.join();
        stats.summary(target)
    }
}

struct IpfixExport {
    tx: SyncSender<FlowRecord>,
    stats: Arc<ExportStats>,
}

impl Capability for IpfixExport {
    fn wants_state_changes(&self) -> bool {
        false
    }

    fn on_event(&mut self, conn: &mut ConnHandle<'_>, event: &ConnEvent) {
        if !matches!(event, ConnEvent::Removed(_)) {
            return;
        }
        for rec in flow_records(conn.conn()) {
            match self.tx.try_send(rec) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    if self
                        .stats
                        .dropped_queue_full
                        .fetch_add(1, Ordering::Relaxed)
                        == 0
                    {
                        log::warn!(
                            "IPFIX: the collector is slower than the traffic; dropping records"
                        );
                    }
                }
                Err(TrySendError::Disconnected(_)) => {
                    // The sender thread is gone (`finish`): nothing will send it.
                    self.stats.dropped_unsent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The connection to the collector, owned by the sender thread.
struct Link {
    target: SocketAddr,
    transport: Transport,
    domain: u32,
    udp: Option<UdpSocket>,
    tcp: Option<TcpStream>,
    enc: Encoder,
    /// When templates were last sent (UDP); None: not yet in this session.
    templates_at: Option<Instant>,
}

impl Link {
    fn new(target: SocketAddr, transport: Transport, domain: u32) -> Result<Self> {
        let udp = match transport {
            Transport::Udp => {
                let bind: SocketAddr = if target.is_ipv4() {
                    "0.0.0.0:0".parse()?
                } else {
                    "[::]:0".parse()?
                };
                let s = UdpSocket::bind(bind).context("IPFIX: UDP socket")?;
                s.connect(target)
                    .with_context(|| format!("IPFIX: no route to {target}"))?;
                Some(s)
            }
            Transport::Tcp => None,
        };
        Ok(Self {
            target,
            transport,
            domain,
            udp,
            tcp: None,
            enc: Encoder::new(domain),
            templates_at: None,
        })
    }

    /// Collects records into batches (up to a message, or what arrived within 200 ms) and
    /// sends them until the channel closes, or until `stop` and nothing is left to send.
    fn run(&mut self, rx: Receiver<FlowRecord>, stats: &ExportStats, stop: &AtomicBool) {
        let mut batch = Vec::with_capacity(MAX_RECORDS);
        loop {
            let closed = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(r) => {
                    batch.push(r);
                    while batch.len() < MAX_RECORDS {
                        match rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                    false
                }
                Err(RecvTimeoutError::Timeout) => stop.load(Ordering::Relaxed),
                Err(RecvTimeoutError::Disconnected) => true,
            };
            if !batch.is_empty() || self.udp_templates_due() {
                match self.send(&batch) {
                    Ok(()) => {
                        stats
                            .records
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if stats.send_errors.load(Ordering::Relaxed) == 0 {
                            log::warn!(
                                "IPFIX: sending to {} failed: {e:#}; its records are dropped",
                                self.target
                            );
                        }
                        stats.send_failed(batch.len(), &e);
                    }
                }
                batch.clear();
            }
            if closed {
                // The port unreachable of the last message comes back after its send: a run
                // too short for a later send to be refused still learns that nobody listened.
                if let Some(s) = &self.udp {
                    std::thread::sleep(Duration::from_millis(20));
                    if let Ok(Some(e)) = s.take_error()
                        && e.kind() == std::io::ErrorKind::ConnectionRefused
                    {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Some(s) = &self.tcp {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
                return;
            }
        }
    }

    fn udp_templates_due(&self) -> bool {
        self.transport == Transport::Udp
            && self
                .templates_at
                .is_some_and(|t| t.elapsed() >= UDP_TEMPLATE_INTERVAL)
    }

    fn send(&mut self, recs: &[FlowRecord]) -> Result<()> {
        if self.transport == Transport::Tcp && self.tcp.is_none() {
            let s = TcpStream::connect_timeout(&self.target, Duration::from_secs(5))
                .with_context(|| format!("connecting to {} (is the collector up?)", self.target))?;
            s.set_write_timeout(Some(Duration::from_secs(5)))?;
            self.tcp = Some(s);
            // A new Transport Session: templates again, sequence numbers from 0.
            self.enc = Encoder::new(self.domain);
            self.templates_at = None;
        }
        let templates = match self.transport {
            Transport::Tcp => self.templates_at.is_none(),
            Transport::Udp => self
                .templates_at
                .is_none_or(|t| t.elapsed() >= UDP_TEMPLATE_INTERVAL),
        };
        let msgs = self.enc.messages(unix_secs(), templates, recs);
        if templates {
            self.templates_at = Some(Instant::now());
        }
        for m in msgs {
            if let Some(s) = &self.udp {
                s.send(&m).context("UDP send")?;
            } else if let Some(s) = &mut self.tcp
                && let Err(e) = s.write_all(&m)
            {
                // Reconnect (and resend templates) with the next batch.
                self.tcp = None;
                return Err(e).context("TCP send");
            }
        }
        Ok(())
    }
}

fn unix_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::atomic::AtomicU64;

    fn v4_rec() -> FlowRecord {
        FlowRecord {
            src: "10.0.0.1".parse().unwrap(),
            dst: "192.168.1.2".parse().unwrap(),
            src_port: 40000,
            dst_port: 443,
            proto: 6,
            octets: 0x0102,
            packets: 3,
            start_ms: 1_700_000_000_123,
            end_ms: 1_700_000_001_456,
        }
    }

    fn v6_rec() -> FlowRecord {
        FlowRecord {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            proto: 17,
            ..v4_rec()
        }
    }

    fn u16_at(b: &[u8], i: usize) -> u16 {
        u16::from_be_bytes([b[i], b[i + 1]])
    }

    fn u32_at(b: &[u8], i: usize) -> u32 {
        u32::from_be_bytes(b[i..i + 4].try_into().unwrap())
    }

    /// (set id, set body) of each set of a message.
    fn sets(msg: &[u8]) -> Vec<(u16, &[u8])> {
        let mut out = Vec::new();
        let mut i = 16;
        while i < msg.len() {
            let (id, len) = (u16_at(msg, i), u16_at(msg, i + 2) as usize);
            out.push((id, &msg[i + 4..i + len]));
            i += len;
        }
        assert_eq!(i, msg.len(), "sets must fill the message exactly");
        out
    }

    /// RFC 7011 §3.1 message header, §3.3.2 set header, §3.4.1 template record: byte by byte.
    #[test]
    fn template_message_layout() {
        let m = Encoder::new(7).message(0x6543_2100, true, &[]);
        #[rustfmt::skip]
        let header = [
            0x00, 0x0a,             // version 10
            0x00, 100,              // length: 16 + template set (4 + 2 × 40)
            0x65, 0x43, 0x21, 0x00, // export time
            0, 0, 0, 0,             // sequence number: no data record sent yet
            0, 0, 0, 7,             // observation domain
        ];
        assert_eq!(&m[..16], &header);
        #[rustfmt::skip]
        let v4 = [
            0x00, 0x02, 0x00, 84,   // template set, length 84
            0x01, 0x00, 0x00, 9,    // template 256, 9 fields
            0, 8, 0, 4,   0, 12, 0, 4,                  // source/destinationIPv4Address
            0, 7, 0, 2,   0, 11, 0, 2,   0, 4, 0, 1,    // ports, protocolIdentifier
            0, 1, 0, 8,   0, 2, 0, 8,                   // octetDeltaCount, packetDeltaCount
            0, 152, 0, 8, 0, 153, 0, 8,                 // flowStart/EndMilliseconds
        ];
        assert_eq!(&m[16..16 + v4.len()], &v4);
        let v6 = &m[16 + v4.len()..];
        assert_eq!(&v6[..12], &[0x01, 0x01, 0, 9, 0, 27, 0, 16, 0, 28, 0, 16]);
        assert_eq!(&v6[12..], &v4[16..]);
        assert_eq!(m.len(), 100);
    }

    #[test]
    fn data_record_layout() {
        let m = Encoder::new(0).message(1, false, &[v4_rec()]);
        let s = sets(&m);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, TEMPLATE_V4);
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[10, 0, 0, 1, 192, 168, 1, 2][..],
            &[0x9c, 0x40, 0x01, 0xbb, 6],
            &[0, 0, 0, 0, 0, 0, 1, 2],
            &[0, 0, 0, 0, 0, 0, 0, 3],
            &1_700_000_000_123u64.to_be_bytes(),
            &1_700_000_001_456u64.to_be_bytes(),
        ]
        .concat();
        assert_eq!(s[0].1, &want[..]);
        assert_eq!(u16_at(&m, 2) as usize, m.len());
        assert_eq!(m.len(), 16 + 4 + 45);
    }

    #[test]
    fn v4_and_v6_go_in_their_own_sets() {
        let m = Encoder::new(0).message(1, true, &[v6_rec(), v4_rec(), v6_rec()]);
        let s = sets(&m);
        let ids: Vec<u16> = s.iter().map(|x| x.0).collect();
        assert_eq!(ids, [TEMPLATE_SET_ID, TEMPLATE_V4, TEMPLATE_V6]);
        assert_eq!(s[1].1.len(), 45);
        assert_eq!(s[2].1.len(), 2 * 69);
        assert_eq!(
            &s[2].1[..16],
            &"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets()
        );
    }

    /// §3.1: the sequence number counts data records sent before the message, modulo 2^32;
    /// template records do not count.
    #[test]
    fn sequence_numbers_count_data_records() {
        let mut e = Encoder::new(0);
        let recs = vec![v4_rec(); 40];
        let msgs = e.messages(1, true, &recs);
        assert_eq!(msgs.len(), 3);
        let seqs: Vec<u32> = msgs.iter().map(|m| u32_at(m, 8)).collect();
        assert_eq!(seqs, [0, 16, 32]);
        assert_eq!(sets(&msgs[0])[0].0, TEMPLATE_SET_ID);
        assert!(msgs[1..].iter().all(|m| sets(m)[0].0 == TEMPLATE_V4));
        assert_eq!(u32_at(&e.message(1, true, &[]), 8), 40);
        e.seq = u32::MAX;
        e.message(1, false, &[v4_rec(), v4_rec()]);
        assert_eq!(e.seq, 1);
    }

    #[test]
    fn largest_message_fits_one_ethernet_frame() {
        let m = Encoder::new(0).message(1, true, &vec![v6_rec(); MAX_RECORDS]);
        assert!(m.len() + 48 <= 1500, "{} bytes", m.len());
    }

    #[test]
    fn a_connection_is_two_uniflows_unless_one_sided() {
        let mut c = conntrack_common::conn::Conn::ZERO;
        c.ip_version = 4;
        c.proto = 17;
        // Addresses are stored IPv4-mapped.
        c.orig_addr = std::net::Ipv4Addr::new(10, 1, 0, 1)
            .to_ipv6_mapped()
            .octets();
        c.resp_addr = std::net::Ipv4Addr::new(10, 1, 0, 2)
            .to_ipv6_mapped()
            .octets();
        c.orig_port = 5353;
        c.resp_port = 53;
        c.start_ns = 2_000_000_000;
        c.last_ns = 2_500_000_000;
        c.orig.pkts = 1;
        c.orig.ip_bytes = 60;
        let one = flow_records(&c);
        assert_eq!(one.len(), 1, "{one:?}");
        assert_eq!(one[0].src.to_string(), "10.1.0.1");
        assert_eq!(
            (one[0].src_port, one[0].dst_port, one[0].proto),
            (5353, 53, 17)
        );
        assert_eq!((one[0].start_ms, one[0].end_ms), (2000, 2500));
        c.resp.pkts = 1;
        c.resp.ip_bytes = 120;
        let two = flow_records(&c);
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].src.to_string(), "10.1.0.2");
        assert_eq!((two[1].src_port, two[1].dst_port), (53, 5353));
        assert_eq!((two[1].octets, two[1].packets), (120, 1));
    }

    /// A collector over TCP: one stream of messages, templates first (once), sequence numbers
    /// per session; a second exporter run is a new session and starts again at 0.
    #[test]
    fn tcp_session_sends_templates_once_then_data() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let collector = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).unwrap();
            all
        });
        let args = IpfixArgs {
            ipfix: Some(addr.to_string()),
            ipfix_transport: Transport::Tcp,
            ipfix_domain: 42,
        };
        let x = Exporter::start(&args).unwrap().unwrap();
        for _ in 0..20 {
            x.tx.send(v4_rec()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        x.tx.send(v6_rec()).unwrap();
        let summary = x.finish();
        assert!(
            summary.contains("21 records exported, 0 dropped"),
            "{summary}"
        );
        let stream = collector.join().unwrap();
        let (mut i, mut msgs) = (0, Vec::new());
        while i < stream.len() {
            let len = u16_at(&stream, i + 2) as usize;
            msgs.push(&stream[i..i + len]);
            i += len;
        }
        let mut data = 0;
        let mut templates = 0;
        for m in &msgs {
            assert_eq!(u16_at(m, 0), 10);
            assert_eq!(u32_at(m, 12), 42);
            assert_eq!(u32_at(m, 8), data, "sequence number");
            for (id, body) in sets(m) {
                match id {
                    TEMPLATE_SET_ID => templates += 1,
                    TEMPLATE_V4 => data += body.len() as u32 / 45,
                    TEMPLATE_V6 => data += body.len() as u32 / 69,
                    other => panic!("unexpected set {other}"),
                }
            }
        }
        assert_eq!(sets(msgs[0])[0].0, TEMPLATE_SET_ID);
        assert_eq!((templates, data), (1, 21));
    }

    #[test]
    fn udp_to_a_closed_port_counts_every_record_once() {
        // A port nobody listens on: bound, then closed.
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let args = IpfixArgs {
            ipfix: Some(closed.to_string()),
            ..Default::default()
        };
        let x = Exporter::start(&args).unwrap().unwrap();
        let sent = 8;
        for _ in 0..sent {
            x.tx.send(v4_rec()).unwrap();
            // One batch each, so that the port unreachable of one comes back before the next.
            std::thread::sleep(Duration::from_millis(250));
        }
        let stats = x.stats();
        let summary = x.finish();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(get(&stats.records) + stats.dropped(), sent, "{summary}");
        assert_eq!(get(&stats.dropped_queue_full), 0, "{summary}");
        assert!(get(&stats.refused) > 0, "{summary}");
        assert!(!summary.contains("queue full"), "{summary}");
        assert!(summary.contains("Connection refused"), "{summary}");
        assert!(summary.contains("nothing was listening"), "{summary}");
    }

    #[test]
    fn udp_messages_reach_the_collector() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let args = IpfixArgs {
            ipfix: Some(rx.local_addr().unwrap().to_string()),
            ..Default::default()
        };
        let x = Exporter::start(&args).unwrap().unwrap();
        x.tx.send(v4_rec()).unwrap();
        let summary = x.finish();
        assert!(summary.contains("1 records exported"), "{summary}");
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).unwrap();
        let ids: Vec<u16> = sets(&buf[..n]).iter().map(|s| s.0).collect();
        assert_eq!(ids, [TEMPLATE_SET_ID, TEMPLATE_V4]);
    }

    #[test]
    fn command_line_and_config_file() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let c = Cli::try_parse_from([
            "conntrack-agent",
            "run",
            "-i",
            "eth0",
            "--metrics-addr",
            "127.0.0.1:9750",
            "--ipfix",
            "collector:4739",
            "--ipfix-transport",
            "tcp",
            "--ipfix-domain",
            "3",
        ])
        .unwrap();
        let Command::Run(r) = c.command else { panic!() };
        assert_eq!(r.metrics_addr, Some("127.0.0.1:9750".parse().unwrap()));
        assert_eq!(r.common.ipfix.ipfix.as_deref(), Some("collector:4739"));
        assert_eq!(r.common.ipfix.ipfix_transport, Transport::Tcp);
        assert_eq!(r.common.ipfix.ipfix_domain, 3);
        // The command line wins over the whole [ipfix] section; without it the file applies.
        let file = IpfixSection {
            collector: Some("other:9995".into()),
            transport: Transport::Udp,
            domain: 9,
        };
        assert_eq!(r.common.ipfix.or_file(&file).ipfix_domain, 3);
        let none = IpfixArgs::default().or_file(&file);
        assert_eq!(
            (none.ipfix.as_deref(), none.ipfix_domain),
            (Some("other:9995"), 9)
        );
        // Transport without a collector is a mistake worth refusing.
        assert!(
            Cli::try_parse_from([
                "conntrack-agent",
                "read",
                "x.pcap",
                "--ipfix-transport",
                "tcp"
            ])
            .is_err()
        );
    }

    /// `run` still holds the capability (in its agent) when it finishes the exporter.
    #[test]
    fn finish_returns_while_a_capability_is_alive() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let args = IpfixArgs {
            ipfix: Some(rx.local_addr().unwrap().to_string()),
            ..Default::default()
        };
        let x = Exporter::start(&args).unwrap().unwrap();
        let cap = x.capability();
        let t = Instant::now();
        x.finish();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        drop(cap);
    }

    #[test]
    fn a_bad_collector_address_is_refused_at_start() {
        let args = IpfixArgs {
            ipfix: Some("no-port".into()),
            ..Default::default()
        };
        let e = Exporter::start(&args).err().unwrap();
        assert!(
            format!("{e:#}").contains("--ipfix no-port: expected HOST:PORT"),
            "{e:#}"
        );
    }
}
