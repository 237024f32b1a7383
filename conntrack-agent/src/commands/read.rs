//! `read`: offline replay of a trace (Zeek's `-r`).

use crate::capture::checksum::ChecksumPolicy;
use crate::capture::defrag::{Defragmenter, FragResult};
use crate::capture::filter::TraceFilter;
use crate::capture::link::{LinkSkip, frame_l3, synth_ethernet_l2};
use crate::capture::pcap::{PcapReader, input_name};
use crate::cli::{Engine, ReadArgs};
use crate::commands::setup::{self, Mode, Settings, Started};
use crate::config::Config;
use crate::core::clock::{Clock, PacketClock};
use crate::core::events::Capability;
use crate::core::events::{ConnEvent, ConnHandle};
use crate::datapath::Datapath;
use crate::datapath::host::{HostConfig, HostDatapath};
use crate::logs::tunnel_log::TunnelLog;
use crate::util::site::NetSet;
use crate::util::stop::{Stop, signal_name};
use conntrack_common::checksum::{ipv4_header_checksum_ok, transport_checksum_ok};
use conntrack_common::packet::ip_view;
use conntrack_common::tunnel::is_ip_tunnel_proto;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::{Duration, Instant};

/// Packet accounting for the summary.
#[derive(Debug, Default)]
pub struct ReadStats {
    pub packets: u64,
    /// Records the capture filter (`-f`) rejected, of `packets`.
    pub filtered: u64,
    pub bytes: u64,
    pub processed: u64,
    pub skipped: BTreeMap<String, u64>,
    /// Invalid checksums (of packets whose checksums were checked), for the offloading hint.
    pub bad_ip_checksums: u64,
    pub bad_tcp_checksums: u64,
    pub bad_udp_checksums: u64,
}

/// `read` ended by SIGINT or SIGTERM (the open connections drained, conn.log closed, unless a
/// second signal came): `main` exits with 128 + the signal's number, as a shell expects of a
/// program a signal stopped.
#[derive(Debug, thiserror::Error)]
#[error("replay interrupted by {}", signal_name(*.signal))]
pub struct Interrupted {
    pub signal: i32,
}

/// Share of the packets with invalid checksums above which a replay suggests
/// `--ignore-checksums` (Zeek's `ChecksumOffloading` warns above 5%).
const OFFLOAD_BAD_SHARE: f64 = 0.05;

/// The hint Zeek's base/misc/find-checksum-offloading.zeek gives, when more than 5% of the
/// packets have invalid IP, TCP or UDP checksums: a capture on the sending host with checksum
/// offloading (or on `lo`) holds packets whose checksums the NIC would have filled in, and
/// since they are not used every connection looks like OTH with no bytes.
pub fn offload_hint(st: &ReadStats) -> Option<String> {
    // Of the packets the engine was given, as Zeek counts those libpcap let through.
    let seen = st.packets.saturating_sub(st.filtered);
    if seen == 0 {
        return None;
    }
    let over = |bad: u64| bad as f64 / seen as f64 > OFFLOAD_BAD_SHARE;
    let kinds = [
        ("IP", st.bad_ip_checksums),
        ("TCP", st.bad_tcp_checksums),
        ("UDP", st.bad_udp_checksums),
    ];
    if !kinds.iter().any(|&(_, n)| over(n)) {
        return None;
    }
    // As Zeek's message: every kind seen, once one is over the threshold.
    let named: Vec<&str> = kinds
        .iter()
        .filter(|&&(_, n)| n > 0)
        .map(|&(k, _)| k)
        .collect();
    let bad: u64 = kinds.iter().map(|&(_, n)| n).sum();
    Some(format!(
        "the trace likely has invalid {} checksums ({bad} of {} packets), most likely from NIC \
         checksum offloading or a capture on the loopback interface; packets with invalid \
         checksums are discarded (as Zeek does), so their connections look empty: replay with \
         -C/--ignore-checksums to use them (or --ignore-checksums-net for the capturing host's \
         addresses)",
        named.join(" and "),
        seen
    ))
}

/// Registered for the drain after a stop signal: a second signal exits at once, between two
/// connections of the drain. It unwinds out of the drain to `read`, which flushes the logs
/// and exits (see `drain`).
struct ExitOnSecondSignal(Stop);

/// The unwind payload of [`ExitOnSecondSignal`].
struct SecondSignal;

impl crate::core::events::Capability for ExitOnSecondSignal {
    fn on_event(&mut self, _conn: &mut ConnHandle<'_>, _event: &ConnEvent) {
        if self.0.exit_now() {
            resume_unwind(Box::new(SecondSignal));
        }
    }

    fn wants_state_changes(&self) -> bool {
        false
    }
}

impl ReadStats {
    pub fn skip(&mut self, why: &str) {
        *self.skipped.entry(why.to_string()).or_default() += 1;
    }
}

fn is_privileged() -> bool {
    // Effective uid 0 is what loading the eBPF program needs in practice.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The kernel datapath when asked for (an error if it cannot be loaded: a silent fallback would
/// hide which engine wrote the log), or by default when privileged, else the host engine.
fn make_datapath(
    engine: Option<Engine>,
    ports: &[(u16, u8)],
    table_size: u32,
    service: bool,
) -> anyhow::Result<Box<dyn Datapath>> {
    let host = || -> Box<dyn Datapath> {
        Box::new(HostDatapath::new(
            HostConfig::new(ports).with_service_samples(service),
        ))
    };
    match engine {
        Some(Engine::Host) => Ok(host()),
        Some(Engine::Kernel) => crate::datapath::kernel::replay_datapath(ports, table_size, service).map_err(|e| {
            e.context("--engine kernel: cannot load the eBPF program (use --engine host to replay without it)")
        }),
        None => {
            if is_privileged() {
                match crate::datapath::kernel::replay_datapath(ports, table_size, service) {
                    Ok(dp) => return Ok(dp),
                    Err(e) => {
                        log::warn!(
                            "kernel datapath unavailable ({}); using the host engine \
                             (--engine host or CONNTRACK_ENGINE=host skips this attempt)",
                            first_line(&e)
                        );
                        log::debug!("kernel datapath error: {e:#}");
                    }
                }
            }
            Ok(host())
        }
    }
}

fn first_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The replay, with SIGINT and SIGTERM taken from the start (see [`Interrupted`]).
pub fn read(args: ReadArgs, config: Config) -> anyhow::Result<()> {
    let stop = Stop::default();
    stop.install()?;
    replay(args, config, Vec::new(), &stop)
}

/// `read --engine host` of `data` as a trace file, for the coverage-guided fuzz target
/// (`fuzz/fuzz_targets/input.rs`): the whole replay path in process, from the command line
/// on. The outcome is ignored: a bad file is an error, which is fine; what the fuzzer looks
/// for is a panic, a hang, or memory out of proportion to the input. The trace and the logs
/// live in one directory per process, rewritten each time.
#[doc(hidden)]
pub fn fuzz_input(data: &[u8]) {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("conntrack-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("creating the fuzz directory");
        d
    });
    let trace = dir.join("input.pcap");
    std::fs::write(&trace, data).expect("writing the fuzz input");
    let argv = ["conntrack-agent", "read", "--engine", "host", "--log-dir"]
        .map(std::ffi::OsString::from)
        .into_iter()
        .chain([dir.join("logs").into(), trace.into()])
        .collect();
    let (cli, config) = crate::cli::parse(argv).expect("the fuzz command line parses");
    let crate::cli::Command::Read(args) = cli.command else {
        unreachable!("a read command")
    };
    let _ = replay(args, config, Vec::new(), &Stop::default());
}

/// `read` with capability modules registered before the first packet (the tests' observers).
#[cfg(test)]
pub fn read_with(
    args: ReadArgs,
    config: Config,
    capabilities: Vec<Box<dyn Capability>>,
) -> anyhow::Result<()> {
    replay(args, config, capabilities, &Stop::default())
}

fn replay(
    args: ReadArgs,
    config: Config,
    capabilities: Vec<Box<dyn Capability>>,
    stop: &Stop,
) -> anyhow::Result<()> {
    let settings = Settings::new(&args.common, config)?;
    let policy = ChecksumPolicy {
        ignore_all: args.ignore_checksums,
        ignore_nets: NetSet::parse_list(args.ignore_checksums_net.iter().map(String::as_str))?,
    };
    // Checked before the input is opened or any log touched: a typo is reported at once.
    let mut filter = crate::capture::filter::expression(args.common.filter.as_deref())
        .map(TraceFilter::new)
        .transpose()?;
    let name = input_name(&args.trace);
    let mut reader = match PcapReader::open_stoppable(&args.trace, stop) {
        // A signal while waiting for the first bytes: nothing was read, no log written.
        Err(_) if stop.requested() => {
            let signal = stop.signal().unwrap_or_default();
            eprintln!(
                "conntrack-agent: {}: replay interrupted by {} before the first packet",
                name.display(),
                signal_name(signal)
            );
            return Err(Interrupted { signal }.into());
        }
        r => r?,
    };
    let file_size = std::fs::metadata(&args.trace).map(|m| m.len()).unwrap_or(0);
    let mut dp = make_datapath(
        args.engine,
        &settings.ports,
        args.common.table_size,
        settings.service,
    )?;
    // The kernel's tunnel stage decapsulates; for the host engine `read` hands it each inner
    // packet (`decap::process_inner`). Both apply common's `tunnel` rules.
    let kernel_decap = args.tunnel_max_depth > 0
        && dp
            .set_tunnel_depth(args.tunnel_max_depth)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Before any log is touched (an agent running into the same directory writes conn.log
    // too), and after what can fail without one: the input and the engine (an unprivileged
    // `--engine kernel` must leave no directory behind).
    let _log_lock = crate::commands::log_lock::lock_if_written(
        &args.common.log_dir,
        args.common.to_stdout(),
        settings.writes_other_files(&args.common),
    )?;
    let mode = Mode::Replay {
        duration_timers: args.duration_timers,
    };
    let started = setup::start(&settings, &args.common, dp, mode, capabilities)?;
    let Started {
        mut agent,
        alerts,
        ipfix,
        ..
    } = started;
    if args.tunnel_max_depth > 0 {
        let opts = crate::logs::rotate::LogOptions {
            rotation: args.common.rotation(),
            stdout: false,
        };
        let log = TunnelLog::create(&args.common.log_dir, args.common.log_format, opts)?;
        agent.enable_tunnels(log, settings.service);
    }
    let mut clock = PacketClock::default();
    let mut defrag = Defragmenter::default();
    let mut st = ReadStats::default();
    let progress = args
        .progress
        .unwrap_or_else(|| std::io::stderr().is_terminal());
    let replay_started = Instant::now();
    let mut last_progress = Instant::now();
    let mut frame = Vec::with_capacity(2048);
    // The MAC/VLAN columns need the captured link layer: each packet then reaches the
    // datapath as a frame with its addresses and VLAN tags (else as the bare IP packet).
    let link_frames = args.common.columns().l2();

    let mut input_error = None;
    // A stop signal is looked at between packets: one atomic load each.
    while !stop.requested() {
        let pkt = match reader.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // A damaged record ends the input as a file cut short there does: the connections
            // open then are drained and logged; the error is reported after the summary.
            Err(e) => {
                input_error = Some(e);
                break;
            }
        };
        st.packets += 1;
        st.bytes += pkt.data.len() as u64 + 16;
        // As libpcap does for `zeek -r -f`: a rejected record is not seen at all, not even by
        // network time.
        if let Some(f) = filter.as_mut()
            && !f.keeps(pkt.linktype, pkt.data, pkt.orig_len)?
        {
            st.filtered += 1;
            continue;
        }
        if progress && st.packets % 4096 == 0 && last_progress.elapsed() >= Duration::from_secs(3) {
            last_progress = Instant::now();
            let pct = if file_size > 0 {
                (st.bytes as f64 * 100.0 / file_size as f64).min(100.0)
            } else {
                0.0
            };
            eprintln!(
                "conntrack-agent: {} packets (~{pct:.0}%), {} open connections, {} logged, {:.0}s",
                st.packets,
                agent.open_conns(),
                agent.stats.conns_logged,
                replay_started.elapsed().as_secs_f64()
            );
        }
        // Network time advances with every packet, IP or not; timers fire first.
        clock.saw(pkt.ts_ns);
        agent.advance(clock.now_ns())?;
        defrag.expire(pkt.ts_ns);

        let l3 = match frame_l3(pkt.linktype, pkt.data) {
            Ok(l) => l,
            Err(LinkSkip::NotIp) => {
                st.skip("not IP (ARP, LLDP, ...)");
                continue;
            }
            Err(LinkSkip::Truncated) => {
                st.skip("truncated link-layer header");
                continue;
            }
            Err(LinkSkip::LinkType) => {
                st.skip("unsupported link type");
                continue;
            }
        };
        let Some(view0) = ip_view(l3.ip) else {
            st.skip("truncated or malformed IP header");
            continue;
        };
        // Zeek's IP analyzer checks, in its order.
        let link_hdr = pkt.data.len() - l3.ip.len();
        let mut total_len = view0.ip_len;
        if l3.version == 4 && total_len == 0 {
            // TCP segmentation offload zeroes ip_len: Zeek copes only with -C.
            if !policy.ignore_all {
                st.skip("IPv4 total length 0 (segmentation offload; use --ignore-checksums)");
                continue;
            }
            total_len = l3.ip.len();
        }
        if (pkt.orig_len as usize) < total_len + link_hdr {
            st.skip("IP length beyond the wire length");
            continue;
        }
        let hdr_len = view0.l4_off.min(if l3.version == 4 { 60 } else { 40 });
        if l3.version == 4 && (hdr_len > total_len || hdr_len > l3.ip.len()) {
            st.skip("invalid IP header size");
            continue;
        }
        if l3.version == 4 && !policy.skip_for(&view0.src) && !ipv4_header_checksum_ok(l3.ip) {
            st.bad_ip_checksums += 1;
            st.skip("bad IPv4 header checksum");
            continue;
        }
        let owned;
        let mut frag_in = l3.ip;
        let first_frag_copy;
        if view0.is_fragment && l3.ip.len() < total_len {
            // Incompletely captured fragment: Zeek does not reassemble; it keeps only a first
            // fragment, processed on its own.
            if !is_first_fragment(l3.ip) {
                st.skip("incompletely captured IP fragment");
                continue;
            }
            first_frag_copy = unfragment_first(l3.ip);
            frag_in = &first_frag_copy;
        }
        // The captured packet has its view already; a first fragment's copy is read anew.
        let offered = if std::ptr::eq(frag_in, l3.ip) {
            defrag.offer_viewed(frag_in, &view0, pkt.ts_ns)
        } else {
            defrag.offer(frag_in, pkt.ts_ns)
        };
        let ip: &[u8] = match offered {
            // The packet as offered: an incompletely captured first fragment's copy with MF
            // cleared, so that the engine takes it as the whole packet it stands for.
            FragResult::NotFragment => frag_in,
            FragResult::Held => {
                st.skip("IP fragment (held for reassembly)");
                continue;
            }
            FragResult::Bad => {
                st.skip("malformed IP fragment");
                continue;
            }
            FragResult::Complete(buf) => {
                owned = buf;
                &owned
            }
        };
        // The packet as captured has the view above; a copy (a first fragment's with MF
        // cleared, a reassembled datagram) is described anew.
        let reassembled;
        let view = if std::ptr::eq(ip, l3.ip) {
            &view0
        } else {
            let Some(v) = ip_view(ip) else {
                st.skip("truncated or malformed IP header");
                continue;
            };
            reassembled = v;
            &reassembled
        };
        let checksum_ok = policy.skip_for(&view.src) || transport_checksum_ok(ip, view);
        if !checksum_ok {
            match view.proto {
                6 => st.bad_tcp_checksums += 1,
                17 => st.bad_udp_checksums += 1,
                _ => {}
            }
        }
        let decap = args.tunnel_max_depth > 0 && !kernel_decap;
        if kernel_decap {
            // The kernel opens the tunnel; the agent's checks of the inner packets go with it.
            let uncaptured = (pkt.orig_len as usize).saturating_sub(pkt.data.len());
            let v = decap::inner_verdicts(
                ip,
                view,
                checksum_ok,
                &policy,
                args.tunnel_max_depth,
                uncaptured,
            );
            agent.set_inner_verdicts(v);
        }
        // With decapsulation, GRE and IP-in-IP packets are tunnel layers, not connections.
        let r = if decap && is_ip_tunnel_proto(view.proto) {
            Ok(())
        } else if link_frames {
            let l2 = crate::capture::link::link_layer(pkt.linktype, pkt.data);
            synth_ethernet_l2(l3.version, ip, &l2, &mut frame);
            agent.process(&frame, pkt.ts_ns, checksum_ok)
        } else {
            agent.process_ip(
                l3.version,
                ip,
                Some(view),
                pkt.ts_ns,
                checksum_ok,
                &mut frame,
            )
        };
        match r {
            // Only UDP and the IP tunnel protocols can carry a tunnel (most packets are TCP).
            Ok(()) if decap && (view.proto == 17 || is_ip_tunnel_proto(view.proto)) => {
                st.processed += 1;
                decap::process_inner(
                    &mut agent,
                    ip,
                    view,
                    checksum_ok,
                    pkt.ts_ns,
                    &policy,
                    args.tunnel_max_depth,
                    (pkt.orig_len as usize).saturating_sub(pkt.data.len()),
                    &mut frame,
                )?;
            }
            Ok(()) => st.processed += 1,
            // A log that cannot be written ends the replay (the file is named).
            Err(e) if crate::logs::health::any_failing(&agent.log_health()) => return Err(e),
            Err(e) => st.skip(&format!("engine: {e}")),
        }
    }
    // A mapped trace's lease is not held through the drain (see `PcapReader::end_input`).
    reader.end_input();
    // A stop request ends a pipe's input as its end would: not a file cut short.
    if reader.truncated_tail && !stop.requested() {
        log::warn!(
            "{}: the last packet record is cut short (file truncated); stopped there",
            name.display()
        );
        st.skip("truncated last record");
    }
    if reader.skipped_linktype > 0 {
        *st.skipped
            .entry("unsupported link type (pcapng interface)".into())
            .or_default() += reader.skipped_linktype;
    }
    let incomplete = defrag.pending() as u64;
    if let Err(e) = drain(&mut agent, stop, st.packets, &name) {
        if e.is::<Interrupted>() {
            // Dropping the logs would write `#close`: the drain did not finish.
            std::mem::forget(agent);
        }
        return Err(e);
    }

    let ds = defrag.stats;
    let logs = agent.log_health();
    let conn_log = &logs[0];
    let logged = agent.stats.conns_logged;
    let destination = if !args.common.to_stdout() {
        format!(
            "logged to {}",
            args.common.log_dir.join("conn.log").display()
        )
    } else if conn_log
        .reader_gone
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        let lost = conn_log.dropped.load(std::sync::atomic::Ordering::Relaxed);
        format!(
            "{} logged to stdout before its reader closed it",
            logged.saturating_sub(lost)
        )
    } else {
        "logged to stdout".to_string()
    };
    let filtered = filter
        .as_ref()
        .map(|f| format!(", {} filtered out by {:?}", st.filtered, f.expr()))
        .unwrap_or_default();
    let mut summary = format!(
        "conntrack-agent: {}: {} packets{filtered}, {} processed, {logged} connections, \
         {destination}",
        name.display(),
        st.packets,
        st.processed,
    );
    if ds.fragments > 0 {
        summary.push_str(&format!(
            "; fragments {} (reassembled datagrams {}, incomplete {}, timed out {})",
            ds.fragments, ds.reassembled, incomplete, ds.timed_out
        ));
    }
    if agent.stats.table_full > 0 {
        summary.push_str(&format!(
            "; {} packets found the kernel table full (--table-size {}) and were tracked by the agent",
            agent.stats.table_full, args.common.table_size
        ));
    }
    eprintln!("{summary}");
    for line in crate::logs::health::summaries(&logs) {
        eprintln!("conntrack-agent: {line}");
    }
    let alerts = alerts.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(line) = alerts.and_then(|a| a.finish_blocking().summary()) {
        eprintln!("{line}");
    }
    if let Some(x) = ipfix {
        eprintln!("{}", x.finish());
    }
    if !st.skipped.is_empty() {
        let parts: Vec<String> = st
            .skipped
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        eprintln!(
            "conntrack-agent: not used by the engine: {}",
            parts.join(", ")
        );
    }
    if !policy.ignore_all
        && let Some(hint) = offload_hint(&st)
    {
        log::warn!("{}: {hint}", name.display());
    }
    if let Some(signal) = stop.signal() {
        eprintln!(
            "conntrack-agent: {}: replay interrupted by {} after {} packets; the open \
             connections were logged as at the end of input",
            name.display(),
            signal_name(signal),
            st.packets
        );
        return Err(Interrupted { signal }.into());
    }
    if let Some(e) = input_error {
        anyhow::bail!(
            "{:#}; the replay stopped there after {} packets, and the connections open then \
             were logged as at the end of input",
            anyhow::Error::new(e),
            st.packets
        );
    }
    if crate::logs::health::any_lost(&logs) {
        anyhow::bail!("some records could not be written (see above)");
    }
    if st.packets > 0 && st.processed == 0 && reader.skipped_linktype == st.packets {
        anyhow::bail!("{}: no packet had a supported link type", name.display());
    }
    Ok(())
}

/// The end of the replay: every open connection logged, `#close` written. After a stop signal
/// a second one ends the drain at once: [`ExitOnSecondSignal`] unwinds out of it between two
/// connections, when conn.log's writer has taken whole lines only (the main thread, the only
/// writer, is the one leaving: no write is cut), and the flush here writes out what its buffer
/// holds, the rest of the last line included. The logs thus end with a whole line, without
/// `#close` (they are not complete), and the error makes `read` exit without a summary.
fn drain(
    agent: &mut crate::core::agent::Agent,
    stop: &Stop,
    packets: u64,
    name: &std::path::Path,
) -> anyhow::Result<()> {
    if !stop.requested() {
        return agent.finish();
    }
    agent.register(Box::new(ExitOnSecondSignal(stop.clone())));
    match catch_unwind(AssertUnwindSafe(|| agent.finish())) {
        Ok(r) => r,
        Err(payload) if payload.is::<SecondSignal>() => {
            let flushed = agent.flush();
            let signal = stop.signal().unwrap_or_default();
            eprintln!(
                "conntrack-agent: {}: replay interrupted by {} after {packets} packets; a \
                 second signal stopped the drain: the logs hold whole lines but not every \
                 connection, and no #close{}",
                name.display(),
                signal_name(signal),
                flushed
                    .err()
                    .map(|e| format!(" (flushing them failed: {e:#})"))
                    .unwrap_or_default()
            );
            Err(Interrupted { signal }.into())
        }
        Err(payload) => resume_unwind(payload),
    }
}

/// True for a first fragment (IPv4 offset 0; IPv6 fragment header with offset 0).
fn is_first_fragment(ip: &[u8]) -> bool {
    match ip.first().map(|b| b >> 4) {
        Some(4) => ip.len() >= 8 && u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0,
        _ => false,
    }
}

/// A copy of an IPv4 first fragment with MF cleared, so that it is processed as a whole packet.
fn unfragment_first(ip: &[u8]) -> Vec<u8> {
    let mut v = ip.to_vec();
    if v.len() >= 8 && v[0] >> 4 == 4 {
        v[6] &= !0x20;
    }
    v
}

mod decap;
#[cfg(test)]
mod tests;
