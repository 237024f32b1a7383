//! `--metrics-addr`: Prometheus metrics over HTTP.
//!
//! Three sources feed one registry: a capability on the event core counts connections created
//! and removed (by reason); `run`'s poll loop copies the kernel's per-CPU `STATS` totals and the
//! table occupancy; the alert counters ([`AlertMetrics`]) are copied at the same time. The
//! counters are atomics, so the HTTP task encodes them without stopping the event loop.

use crate::capabilities::alerts::AlertMetrics;
use crate::core::events::{Capability, ConnEvent, ConnHandle};
use crate::export::ipfix::ExportStats;
use crate::logs::record::ConnRecord;
use anyhow::{Context, Result};
use conntrack_common::stats::{IfaceCounters, Stat};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

type Labels = Vec<(String, String)>;
type U64Gauge = Gauge<u64, AtomicU64>;

/// `[metrics]` in the config file; `--metrics-addr` wins over it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// ADDR:PORT to serve `/metrics` on.
    pub addr: Option<SocketAddr>,
}

/// Every metric the agent exports (clones share the same counters).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    conns_created: Counter,
    conns_removed: Family<Labels, Counter>,
    conns_active: U64Gauge,
    conn_bytes: Family<Labels, Counter>,
    conn_packets: Family<Labels, Counter>,
    table_entries: U64Gauge,
    table_capacity: U64Gauge,
    events_received: Counter,
    /// Kernel `STATS` counters, in `Stat::ALL` order.
    kernel: Vec<Counter>,
    alerts: Family<Labels, Counter>,
    ipfix: Family<Labels, Counter>,
    iface_packets: Family<Labels, Counter>,
    iface_bytes: Family<Labels, Counter>,
    log_dropped: Family<Labels, Counter>,
    log_pending: Family<Labels, U64Gauge>,
}

/// Name and help of each kernel counter (`conntrack_kernel_<name>_total`).
fn kernel_help(s: Stat) -> &'static str {
    match s {
        Stat::Packets => "Frames seen by the eBPF program",
        Stat::ParseErrors => "Frames whose headers could not be parsed",
        Stat::NonIp => "Frames that are not IPv4/IPv6",
        Stat::Fragments => "IP fragments (not tracked by the kernel)",
        Stat::TableFull => {
            "New connections that found the flow table full (tracked by the agent instead)"
        }
        Stat::RingbufFull => "Events dropped because the ring buffer was full",
        Stat::LockBusy => {
            "Connection locks left behind and taken over (the packet was applied); 0 normally"
        }
        Stat::NewConns => "Connections created in the kernel table",
        Stat::Reuses => "Connections replaced because of TCP reuse",
        Stat::BadChecksums => "Packets with a bad transport checksum",
        Stat::Events => "Events submitted to the ring buffer",
        Stat::ContentBytes => "Payload bytes of extracted connections sent to the agent",
        Stat::ContentNotDelivered => {
            "Payload bytes of extracted connections not delivered (caps, full ring buffer)"
        }
        Stat::IpBytes => {
            "IP bytes (headers and payload) of the packets the eBPF program parsed; fragments excluded"
        }
        Stat::FastPath => "Packets applied by the fast path (no stage chain, no event)",
        Stat::FastOpens => {
            "New connections opened by a plain SYN or a datagram in the first program (no stage chain)"
        }
        Stat::Filtered => "Frames the capture filter (-f) rejected: not tracked",
        Stat::ServiceBytes => {
            "Payload bytes of connections' first packets sent to the agent for service detection"
        }
        Stat::ServiceNotDelivered => {
            "Service detection samples not delivered (full ring buffer, payload not captured)"
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let conns_created = Counter::default();
        r.register(
            "conntrack_connections_created",
            "Connections seen for the first time",
            conns_created.clone(),
        );
        let conns_removed = Family::<Labels, Counter>::default();
        r.register(
            "conntrack_connections_removed",
            "Connections removed (and logged), by reason: closed, inactivity, attempt, expire, reuse, drained",
            conns_removed.clone(),
        );
        let conns_active = U64Gauge::default();
        r.register(
            "conntrack_connections_active",
            "Connections open now (created minus removed)",
            conns_active.clone(),
        );
        let conn_bytes = Family::<Labels, Counter>::default();
        r.register(
            "conntrack_connection_ip_bytes",
            "IP bytes of removed connections, by direction (orig, resp)",
            conn_bytes.clone(),
        );
        let conn_packets = Family::<Labels, Counter>::default();
        r.register(
            "conntrack_connection_packets",
            "Packets of removed connections, by direction (orig, resp)",
            conn_packets.clone(),
        );
        let table_entries = U64Gauge::default();
        r.register(
            "conntrack_table_entries",
            "Connections the agent tracks in the flow tables",
            table_entries.clone(),
        );
        let table_capacity = U64Gauge::default();
        r.register(
            "conntrack_table_capacity",
            "Connections the kernel's flow table holds (--table-size)",
            table_capacity.clone(),
        );
        let events_received = Counter::default();
        r.register(
            "conntrack_events_received",
            "Events the agent read from the kernel's ring buffer",
            events_received.clone(),
        );
        let kernel = Stat::ALL
            .iter()
            .map(|&s| {
                let c = Counter::default();
                r.register(
                    format!("conntrack_kernel_{}", s.name()),
                    kernel_help(s),
                    c.clone(),
                );
                c
            })
            .collect();
        let alerts = Family::<Labels, Counter>::default();
        r.register(
            "conntrack_alerts",
            "Alerts and webhook deliveries, by outcome: alert (made), sent, retried, failed, spooled, replayed, queue_full",
            alerts.clone(),
        );
        let ipfix = Family::<Labels, Counter>::default();
        r.register(
            "conntrack_ipfix_records",
            "IPFIX data records (--ipfix), by outcome: exported, dropped (queue full or send failed)",
            ipfix.clone(),
        );
        let iface_packets = Family::<Labels, Counter>::default();
        r.register(
            "conntrack_kernel_iface_packets",
            "Packets the eBPF program saw, by interface (a GSO/GRO packet counts its segments)",
            iface_packets.clone(),
        );
        let iface_bytes = Family::<Labels, Counter>::default();
        r.register(
            "conntrack_kernel_iface_bytes",
            "Frame bytes (Ethernet header on) the eBPF program saw, by interface",
            iface_bytes.clone(),
        );
        let log_dropped = Family::<Labels, Counter>::default();
        r.register(
            "conntrack_log_records_dropped",
            "Records that will never be written, by log: past --log-backlog while the log could \
             not be written, or its reader closed standard output",
            log_dropped.clone(),
        );
        let log_pending = Family::<Labels, U64Gauge>::default();
        r.register(
            "conntrack_log_records_pending",
            "Records held in memory because the log cannot be written now (disk full, I/O error)",
            log_pending.clone(),
        );
        Self {
            registry: Arc::new(r),
            conns_created,
            conns_removed,
            conns_active,
            conn_bytes,
            conn_packets,
            table_entries,
            table_capacity,
            events_received,
            kernel,
            alerts,
            ipfix,
            iface_packets,
            iface_bytes,
            log_dropped,
            log_pending,
        }
    }

    /// Copies the logs' write counters (`logs::health`).
    pub fn set_log_health(&self, logs: &[Arc<crate::logs::health::LogHealth>]) {
        for h in logs {
            let l = labels(&[("log", &h.name)]);
            let c = self.log_dropped.get_or_create(&l);
            let now = h.dropped.load(Ordering::Relaxed);
            if now > c.get() {
                c.inc_by(now - c.get());
            }
            self.log_pending
                .get_or_create(&l)
                .set(h.pending.load(Ordering::Relaxed));
        }
    }

    /// The text exposition format (what `/metrics` answers).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The capability that counts connections on the event core.
    pub fn capability(&self) -> Box<dyn Capability> {
        Box::new(ConnCounters(self.clone()))
    }

    pub fn set_table(&self, entries: u64, capacity: u64) {
        self.table_entries.set(entries);
        self.table_capacity.set(capacity);
    }

    pub fn add_events_received(&self, n: u64) {
        self.events_received.inc_by(n);
    }

    /// Copies the kernel's totals (`Kernel::stats`): counters only move forward, by the growth.
    pub fn set_kernel_stats(&self, stats: &[(Stat, u64)]) {
        for (stat, now) in stats {
            let c = &self.kernel[stat.index() as usize];
            let before = c.get();
            if *now > before {
                c.inc_by(now - before);
            }
        }
    }

    /// Copies the kernel's per-interface totals (`Kernel::iface_stats`), labelled with the
    /// interface name (`other` for ifindex 0: the interfaces beyond the kernel's array;
    /// `ifindex<N>` for an interface that is gone).
    pub fn set_iface_stats(&self, ifaces: &[(u32, IfaceCounters)]) {
        for (ifindex, c) in ifaces {
            let l = labels(&[("iface", &iface_name(*ifindex))]);
            for (family, now) in [
                (&self.iface_packets, c.packets),
                (&self.iface_bytes, c.bytes),
            ] {
                let counter = family.get_or_create(&l);
                let before = counter.get();
                if now > before {
                    counter.inc_by(now - before);
                }
            }
        }
    }

    /// Copies the alert counters.
    pub fn set_alerts(&self, a: &AlertMetrics) {
        let s = a.snapshot();
        for (outcome, now) in [
            ("alert", s.alerts),
            ("sent", s.sent),
            ("retried", s.retried),
            ("failed", s.failed),
            ("spooled", s.spooled),
            ("replayed", s.replayed),
            ("queue_full", s.queue_full),
        ] {
            let c = self.alerts.get_or_create(&labels(&[("outcome", outcome)]));
            let before = c.get();
            if now > before {
                c.inc_by(now - before);
            }
        }
    }

    /// Copies the IPFIX exporter's counters.
    pub fn set_ipfix(&self, x: &ExportStats) {
        for (outcome, now) in [
            ("exported", x.records.load(Ordering::Relaxed)),
            ("dropped", x.dropped()),
        ] {
            let c = self.ipfix.get_or_create(&labels(&[("outcome", outcome)]));
            let before = c.get();
            if now > before {
                c.inc_by(now - before);
            }
        }
    }

    /// Serves `/metrics` on `addr` until the runtime stops. Binding happens now, so that a busy
    /// port is an error at start rather than a silent missing endpoint.
    pub async fn serve(&self, addr: SocketAddr) -> Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics-addr {addr}: cannot listen (port in use?)"))?;
        let bound = listener.local_addr()?;
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let me = me.clone();
                        async move { Ok::<_, std::convert::Infallible>(me.respond(&req)) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    // A scraper that hangs up early is not our problem.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        Ok(bound)
    }

    fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let mut resp = if req.uri().path() == "/metrics" {
            let mut r = Response::new(Full::new(Bytes::from(self.encode())));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        } else {
            Response::new(Full::new(Bytes::from_static(b"metrics are at /metrics\n")))
        };
        if req.uri().path() != "/metrics" {
            *resp.status_mut() = StatusCode::NOT_FOUND;
        }
        resp
    }
}

/// The name of interface `ifindex` in the agent's namespace.
fn iface_name(ifindex: u32) -> String {
    if ifindex == 0 {
        return "other".into();
    }
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("ifindex{ifindex}");
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Counts connections as the event core reports them.
struct ConnCounters(Metrics);

impl Capability for ConnCounters {
    fn wants_state_changes(&self) -> bool {
        false
    }

    fn on_event(&mut self, conn: &mut ConnHandle<'_>, event: &ConnEvent) {
        let m = &self.0;
        match event {
            ConnEvent::New => {
                m.conns_created.inc();
                m.conns_active.inc();
            }
            ConnEvent::Removed(why) => {
                m.conns_removed
                    .get_or_create(&labels(&[("reason", why.as_str())]))
                    .inc();
                // A connection removed for reuse had its New counted too; never go below 0.
                if m.conns_active.get() > 0 {
                    m.conns_active.dec();
                }
                let c = ConnRecord::from_conn(conn.conn());
                for (dir, bytes, pkts) in [
                    ("orig", c.orig_ip_bytes, c.orig_pkts),
                    ("resp", c.resp_ip_bytes, c.resp_pkts),
                ] {
                    let l = labels(&[("direction", dir)]);
                    m.conn_bytes.get_or_create(&l).inc_by(bytes);
                    m.conn_packets.get_or_create(&l).inc_by(pkts);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::events::{ConnInfo, EventCore, RemovalReason};
    use crate::core::thresholds::{DurationMode, ThresholdTarget, Thresholds};
    use crate::datapath::ThresholdError;
    use conntrack_common::conn::Conn;
    use conntrack_common::key::FlowKey;
    use conntrack_common::threshold::ThresholdCommand;
    use std::io::{Read, Write};

    struct NoDatapath;
    impl ThresholdTarget for NoDatapath {
        fn set_thresholds(&mut self, _: &ThresholdCommand) -> Result<u32, ThresholdError> {
            Err(ThresholdError::NotFound)
        }
        fn lookup(&self, _: &FlowKey) -> Option<Conn> {
            None
        }
    }

    /// The value of the sample line `name` (with labels, exactly as exposed).
    fn sample(text: &str, name: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Three connections opened, two removed (closed, inactivity): what a scrape shows.
    fn core_with_three_conns(m: &Metrics) {
        let mut core = EventCore::new(Thresholds::new(DurationMode::NextPacket));
        core.register(m.capability());
        let mut conn = Conn::ZERO;
        conn.orig.pkts = 3;
        conn.orig.ip_bytes = 180;
        conn.resp.pkts = 2;
        conn.resp.ip_bytes = 1100;
        let info = ConnInfo {
            key: FlowKey::default(),
            uid: crate::core::event_uid::EventUid::from_text("C1".into()),
            conn,
            ts_ns: 1,
        };
        for _ in 0..3 {
            core.deliver(&mut NoDatapath, info.clone(), &[ConnEvent::New], None);
        }
        for why in [RemovalReason::Closed, RemovalReason::Inactivity] {
            core.deliver(
                &mut NoDatapath,
                info.clone(),
                &[ConnEvent::Removed(why)],
                None,
            );
        }
    }

    #[test]
    fn exposition_has_every_family_with_its_values() {
        let m = Metrics::new();
        core_with_three_conns(&m);
        m.set_kernel_stats(&[(Stat::Packets, 40), (Stat::RingbufFull, 2)]);
        // Kernel totals are absolute: a second copy adds only the growth.
        m.set_kernel_stats(&[(Stat::Packets, 50), (Stat::RingbufFull, 2)]);
        m.set_table(1, 1024);
        m.add_events_received(7);
        let lo = IfaceCounters {
            packets: 12,
            bytes: 900,
        };
        m.set_iface_stats(&[(1, lo)]);
        m.set_iface_stats(&[(1, IfaceCounters { packets: 15, ..lo })]);
        let a = AlertMetrics::default();
        AlertMetrics::inc(&a.alerts);
        AlertMetrics::inc(&a.sent);
        m.set_alerts(&a);
        let x = ExportStats::default();
        x.records.store(9, Ordering::Relaxed);
        m.set_ipfix(&x);
        let conn_log = crate::logs::health::LogHealth::new("logs/conn.log");
        conn_log.drop_records(4);
        conn_log.pending.store(6, Ordering::Relaxed);
        m.set_log_health(std::slice::from_ref(&conn_log));
        conn_log.drop_records(1);
        m.set_log_health(std::slice::from_ref(&conn_log));
        let t = m.encode();
        let want = [
            (
                "conntrack_log_records_dropped_total{log=\"logs/conn.log\"}",
                5,
            ),
            ("conntrack_log_records_pending{log=\"logs/conn.log\"}", 6),
            ("conntrack_connections_created_total", 3),
            ("conntrack_connections_active", 1),
            ("conntrack_connections_removed_total{reason=\"closed\"}", 1),
            (
                "conntrack_connections_removed_total{reason=\"inactivity\"}",
                1,
            ),
            ("conntrack_connection_packets_total{direction=\"orig\"}", 6),
            (
                "conntrack_connection_ip_bytes_total{direction=\"resp\"}",
                2200,
            ),
            ("conntrack_kernel_packets_total", 50),
            ("conntrack_kernel_ringbuf_full_total", 2),
            ("conntrack_kernel_table_full_total", 0),
            ("conntrack_kernel_lock_busy_total", 0),
            ("conntrack_table_entries", 1),
            ("conntrack_table_capacity", 1024),
            ("conntrack_events_received_total", 7),
            ("conntrack_alerts_total{outcome=\"alert\"}", 1),
            ("conntrack_alerts_total{outcome=\"sent\"}", 1),
            ("conntrack_alerts_total{outcome=\"failed\"}", 0),
            ("conntrack_ipfix_records_total{outcome=\"exported\"}", 9),
            ("conntrack_ipfix_records_total{outcome=\"dropped\"}", 0),
            ("conntrack_kernel_iface_packets_total{iface=\"lo\"}", 15),
            ("conntrack_kernel_iface_bytes_total{iface=\"lo\"}", 900),
            ("conntrack_kernel_ip_bytes_total", 0),
        ];
        for (name, v) in want {
            assert_eq!(sample(&t, name), Some(v), "{name} in\n{t}");
        }
        assert!(
            t.contains("# TYPE conntrack_connections_created counter"),
            "{t}"
        );
        assert!(
            t.contains("# TYPE conntrack_connections_active gauge"),
            "{t}"
        );
        assert!(t.trim_end().ends_with("# EOF"), "{t}");
    }

    #[tokio::test]
    async fn served_at_slash_metrics_only() {
        let m = Metrics::new();
        core_with_three_conns(&m);
        let addr = m.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let get = |path: &'static str| {
            tokio::task::spawn_blocking(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                write!(
                    s,
                    "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                out
            })
        };
        let ok = get("/metrics").await.unwrap();
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("conntrack_connections_created_total 3"), "{ok}");
        let missing = get("/").await.unwrap();
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        // A second listener on the same port is refused with a message naming the option.
        let e = m.serve(addr).await.unwrap_err();
        assert!(format!("{e:#}").contains("--metrics-addr"), "{e:#}");
    }
}
