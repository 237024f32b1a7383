//! `run`: live tracking. The eBPF program does the per-packet work in the kernel; this loop
//! polls its ring buffer (events are submitted without wakeups), feeds the events to the agent
//! core (timers on the wall clock, removal and logging through the `FLOWS` map) and, on
//! SIGINT/SIGTERM, drains: every open connection is logged, `#close` written, the programs
//! detached.

use crate::agent::Agent;
use crate::alerts::Alerts;
use crate::alerts::capability::{AlertRules, SharedAlerts};
use crate::cli::{RunArgs, parse_port_list};
use crate::clock::{Clock, WallClock};
use crate::config::Config;
use crate::conn_log::ConnLogWriter;
use crate::datapath::HostConfig;
use crate::kernel::{Kernel, KernelOptions};
use crate::metrics::Metrics;
use crate::read::local_nets_from;
use crate::thresholds::DurationMode;
use anyhow::{Context, Result};
use conntrack_common::event::{Event, EventKind};
use conntrack_common::packet::PacketMeta;
use conntrack_common::stats::Stat;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};

/// Ring-buffer poll interval: bounds event latency and how far timers lag.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// conn.log is flushed this often.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Drop counters are checked (and reported when they grew) this often.
const STATS_INTERVAL: Duration = Duration::from_secs(10);

/// Counters that mean lost or unapplied packets, reported when they grow.
const DROP_STATS: [Stat; 4] = [
    Stat::RingbufFull,
    Stat::TableFull,
    Stat::LockBusy,
    Stat::Fragments,
];

pub async fn run(args: RunArgs) -> Result<()> {
    let config = Config::load(args.common.config.as_deref())?;
    let ports = parse_port_list(&args.common.likely_server_ports)?;
    let local_nets = local_nets_from(&args.common.local_nets)?;
    let mut kernel = Kernel::load(&KernelOptions {
        max_flows: args.common.table_size,
        likely_server_ports: &ports,
        replay: false,
    })?;
    if args.sensor {
        attach_sensor(&mut kernel, &args)?;
    } else {
        for iface in &args.iface {
            // On error, dropping `kernel` detaches what was attached so far.
            kernel.attach(iface)?;
        }
    }
    let flows = kernel.take_flows().context("FLOWS map already taken")?;
    let alerts = Alerts::start(
        &config.alerts,
        &args.common.log_dir,
        args.common.community_id,
    )?;
    let alert_rules = alerts.has_rules();
    let alert_metrics = alerts.metrics();
    let alerts: SharedAlerts = Arc::new(Mutex::new(Some(alerts)));
    let writer = ConnLogWriter::create(
        &args.common.log_dir,
        args.common.log_format,
        args.common.community_id,
    )?;
    let mut agent = Agent::new(
        Box::new(flows),
        HostConfig::new(&ports),
        config.inactivity.timeouts(),
        local_nets.clone(),
        writer,
    );
    crate::read::register_lifecycle(&mut agent, &config, &args.common, &local_nets)?;
    if alert_rules {
        agent.register(Box::new(AlertRules::new(alerts.clone(), local_nets, true)));
    }
    crate::contents::register(&mut agent, &args.common, &config.contents)?;
    let metrics = match args.metrics_addr.or(config.metrics.addr) {
        Some(addr) => {
            let m = Metrics::new();
            m.set_table(0, u64::from(args.common.table_size));
            let bound = m.serve(addr).await?;
            agent.register(m.capability());
            eprintln!("conntrack-agent: metrics at http://{bound}/metrics");
            Some(m)
        }
        None => None,
    };
    let ipfix = crate::ipfix::Exporter::start(&args.common.ipfix.or_file(&config.ipfix))?;
    if let Some(x) = &ipfix {
        agent.register(x.capability());
    }
    // Live, an idle connection must not delay its duration thresholds until its next packet.
    agent.set_duration_mode(DurationMode::NextPacketOrTimer);
    eprintln!(
        "conntrack-agent: tracking on {} (conn.log in {}); Ctrl-C to stop",
        args.iface.join(", "),
        args.common.log_dir.display()
    );

    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut events = Vec::new();
    let mut last_flush = Instant::now();
    let mut last_stats = Instant::now();
    let mut reported = [0u64; DROP_STATS.len()];
    // The monitored interfaces, for the per-interface metrics.
    let ifindexes = crate::kernel::ifindexes(&args.iface);
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = tick.tick() => {
                poll(&mut kernel, &mut agent, &mut events)?;
                if let Some(m) = &metrics {
                    m.add_events_received(events.len() as u64);
                }
                if last_flush.elapsed() >= FLUSH_INTERVAL {
                    agent.flush()?;
                    if let Some(m) = &metrics {
                        scrape(
                            m,
                            &kernel,
                            &agent,
                            args.common.table_size,
                            &alert_metrics,
                            &ifindexes,
                        )?;
                        if let Some(x) = &ipfix {
                            m.set_ipfix(&x.stats());
                        }
                    }
                    last_flush = Instant::now();
                }
                if last_stats.elapsed() >= STATS_INTERVAL {
                    if report_drops(&kernel, &mut reported)? {
                        resync(&mut agent)?;
                    }
                    last_stats = Instant::now();
                }
            }
        }
    }

    eprintln!("conntrack-agent: stopping: logging open connections");
    poll(&mut kernel, &mut agent, &mut events)?;
    report_drops(&kernel, &mut reported)?;
    agent.finish()?;
    kernel.detach_all();
    kernel.detach_sensor();
    let stats = kernel.stats()?;
    let get = |s: Stat| stats.iter().find(|(k, _)| *k == s).map_or(0, |(_, v)| *v);
    eprintln!(
        "conntrack-agent: {} packets, {} connections logged, drops: ring buffer {}, table full {}, \
         lock busy {}, fragments not tracked {}",
        get(Stat::Packets),
        agent.stats.conns_logged,
        get(Stat::RingbufFull),
        get(Stat::TableFull),
        get(Stat::LockBusy),
        get(Stat::Fragments)
    );
    if let Some(x) = ipfix {
        // Joins the sender thread: at most one batch and a 5 s connect timeout.
        eprintln!("{}", tokio::task::block_in_place(|| x.finish()));
    }
    let alerts = alerts.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(line) = match alerts {
        Some(a) => a.finish().await.summary(),
        None => None,
    } {
        eprintln!("{line}");
    }
    Ok(())
}

/// `--sensor`: the XDP form on every --iface, saying which XDP mode each got.
fn attach_sensor(kernel: &mut Kernel, args: &RunArgs) -> Result<()> {
    kernel.load_sensor(args.sensor_drop)?;
    let verdict = if args.sensor_drop {
        "dropped after accounting"
    } else {
        "passed on"
    };
    for iface in &args.iface {
        // On error, dropping `kernel` detaches what was attached so far.
        let mode = kernel.attach_sensor(iface, args.sensor_xdp_mode)?;
        eprintln!("conntrack-agent: sensor mode on {iface}: {mode}; packets are {verdict}");
        if mode == crate::kernel::SensorAttach::Generic {
            // Generic XDP runs after GRO, which merges a TCP flow's segments: each merged
            // packet would count once.
            eprintln!(
                "conntrack-agent: {iface}: generic XDP sees packets after GRO; turn GRO/LRO off \
                 on a monitor port (ethtool -K {iface} gro off lro off) for exact packet counts"
            );
        }
    }
    Ok(())
}

/// Events first (they happened before now), then the timers due by the wall clock.
fn poll(kernel: &mut Kernel, agent: &mut Agent, events: &mut Vec<Event>) -> Result<()> {
    events.clear();
    kernel.drain_events(events);
    for ev in events.iter() {
        agent.handle_event(ev, ev.ts_ns as i64)?;
    }
    agent.deliver_contents();
    agent.advance(WallClock.now_ns())
}

/// Copies the kernel's counters, the table occupancy and the alert counters into `m` (once a
/// second: a scrape sees values at most that old).
fn scrape(
    m: &Metrics,
    kernel: &Kernel,
    agent: &Agent,
    capacity: u32,
    alerts: &crate::alerts::AlertMetrics,
    ifaces: &[u32],
) -> Result<()> {
    m.set_kernel_stats(&kernel.stats()?);
    m.set_iface_stats(&kernel.iface_stats(ifaces)?);
    m.set_table(agent.open_conns() as u64, u64::from(capacity));
    m.set_alerts(alerts);
    Ok(())
}

/// Warns about drop counters that grew; true if ring-buffer events were lost.
fn report_drops(kernel: &Kernel, reported: &mut [u64; DROP_STATS.len()]) -> Result<bool> {
    let stats = kernel.stats()?;
    let mut lost_events = false;
    for (i, stat) in DROP_STATS.iter().enumerate() {
        let now = stats.iter().find(|(s, _)| s == stat).map_or(0, |(_, v)| *v);
        if now > reported[i] {
            log::warn!("{}: {} (+{})", stat.name(), now, now - reported[i]);
            lost_events |= *stat == Stat::RingbufFull;
            reported[i] = now;
        }
    }
    Ok(lost_events)
}

/// After lost events: every connection in `FLOWS` is reported to the tracker again, so that
/// the ones whose `NewConn` was lost get timers and are logged on time.
fn resync(agent: &mut Agent) -> Result<()> {
    for key in agent.dp.keys() {
        let Some(conn) = agent.dp.lookup(&key) else {
            continue;
        };
        let ev = Event {
            kind: EventKind::StateChanged as u32,
            changes: 0,
            ts_ns: conn.last_ns,
            key,
            meta: PacketMeta::default(),
            conn,
        };
        agent.handle_event(&ev, conn.last_ns as i64)?;
    }
    Ok(())
}
