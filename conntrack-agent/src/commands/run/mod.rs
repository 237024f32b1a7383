//! `run`: live tracking. The eBPF program does the per-packet work in the kernel; this loop
//! polls its ring buffer (events are submitted without wakeups), feeds the events to the agent
//! core (timers on the wall clock, removal and logging through the `FLOWS` map) and, on
//! SIGINT/SIGTERM, drains: every open connection is logged, `#close` written, the programs
//! detached.

use crate::cli::RunArgs;
use crate::commands::log_lock;
use crate::commands::setup::{self, Mode, Settings, Started};
use crate::config::Config;
use crate::core::agent::Agent;
use crate::core::clock::{Clock, WallClock};
use crate::datapath::kernel::{Kernel, KernelLogSink, KernelOptions};
use crate::export::metrics::Metrics;
use anyhow::{Context, Result};
use conntrack_common::engine::Changes;
use conntrack_common::event::{ConnChange, Event, EventKind};
use conntrack_common::key::FlowKey;
use conntrack_common::stats::Stat;
use handover::{HandoverState, PinDir, SavedConn, Shutdown};
use status::{DROP_STATS, Sample, StatusLine};
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};

/// Ring-buffer poll interval: bounds event latency and how far timers lag.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// conn.log is flushed this often.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Drop counters are checked (and reported when they grew) this often.
const STATS_INTERVAL: Duration = Duration::from_secs(10);

pub async fn run(mut args: RunArgs, config: Config) -> Result<()> {
    args.common.keep_previous_logs = true;
    // A monitor outlives its disk: logs hold records on write errors instead of failing.
    crate::logs::health::set_hold(args.log_backlog);
    // SIGHUP re-reads --config (reload.rs). Caught from the start: its default action would
    // end the agent, and a SIGHUP sent while it starts is handled in the first loop turn.
    let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let settings = Settings::new(&args.common, config)?;
    // The log directory's lock, before anything is attached or any log touched; held until the
    // process exits. (handover.json goes to the log directory with --pin-dir.)
    let lock_logs = || {
        log_lock::lock_if_written(
            &args.common.log_dir,
            args.common.to_stdout(),
            settings.writes_other_files(&args.common) || args.pin_dir.is_some(),
        )
    };
    let filter = crate::capture::filter::expression(args.common.filter.as_deref())
        .map(crate::capture::filter::compile_live)
        .transpose()?;
    let opts = KernelOptions {
        max_flows: args.common.table_size,
        likely_server_ports: &settings.ports,
        replay: false,
        contents: settings.contents.enabled(),
        service: settings.service,
        ring_bytes: args.ring_size << 20,
        kernel_log: Some(KernelLogSink {
            level: args.kernel_log,
            sink: &status::KernelLines,
        }),
        filter: filter.as_deref(),
    };
    let (mut kernel, pins, _log_lock) = match &args.pin_dir {
        Some(root) => {
            let (kernel, pins, lock) = load_pinned(&opts, root, &args, lock_logs)?;
            (kernel, Some(pins), lock)
        }
        None => {
            let lock = lock_logs()?;
            refuse_attached(&args.iface, &[], None)?;
            let mut kernel = Kernel::load(&opts)?;
            if args.sensor {
                attach_sensor(&mut kernel, &args)?;
            } else {
                for iface in &args.iface {
                    // On error, dropping `kernel` detaches what was attached so far.
                    kernel.attach(iface)?;
                }
            }
            (kernel, None, lock)
        }
    };
    let takeover = pins.as_ref().and_then(|p| p.takeover);
    let mut flows = kernel.take_flows().context("FLOWS map already taken")?;
    crate::datapath::Datapath::set_tunnel_depth(&mut flows, args.tunnel_max_depth)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut extra = Vec::new();
    let metrics = match args.metrics_addr.or(settings.config.metrics.addr) {
        Some(addr) => {
            let m = Metrics::new();
            m.set_table(0, u64::from(args.common.table_size));
            let bound = m.serve(addr).await?;
            extra.push(m.capability());
            eprintln!("conntrack-agent: metrics at http://{bound}/metrics");
            Some(m)
        }
        None => None,
    };
    // The stop handlers before conn.log exists: from then on a stop signal must drain and
    // close the log, not kill (whoever waits for conn.log may stop the agent at once). Earlier,
    // while the program loads, the default action is right: there is nothing to drain yet.
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let started = setup::start(&settings, &args.common, Box::new(flows), Mode::Live, extra)?;
    let Started {
        mut agent,
        alerts,
        alert_metrics,
        conn_long,
        contents,
        ipfix,
    } = started;
    if args.tunnel_max_depth > 0 {
        let opts = crate::logs::rotate::LogOptions {
            rotation: args.common.rotation(),
            stdout: false,
        };
        let log = crate::logs::tunnel_log::TunnelLog::create(
            &args.common.log_dir,
            args.common.log_format,
            opts,
        )?;
        agent.enable_tunnels(log, settings.service);
    }
    let mut events = Vec::new();
    if let Some(flows_id) = takeover {
        take_over(&mut kernel, &mut agent, &mut events, &args, flows_id)?;
    }
    eprintln!("{}", start_line(&args));
    let mut reloader = reload::Reloader::new(
        args.common.config.clone(),
        settings.config.clone(),
        alerts.clone(),
        conn_long,
        contents,
        reload::Running::from_command_line(args.tunnel_max_depth),
    );
    // The program wakes this once the ring buffer is a quarter full; below that the tick
    // drains it (at most 20 ms late).
    // SAFETY: the descriptor is an `OwnedFd` that the `AsyncFd` owns: open, and the same file,
    // for the `AsyncFd`'s whole life.
    let ring = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            kernel.events_fd()?,
            tokio::io::Interest::READABLE,
        )
    }
    .map_err(|e| e.into_parts().1)
    .context("waiting on the EVENTS ring buffer (epoll)")?;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_flush = Instant::now();
    let mut last_stats = Instant::now();
    // A predecessor's counters live on in the pinned STATS: report only what grows from now.
    let mut reported = [0u64; DROP_STATS.len()];
    let mut status = StatusLine::new(!args.no_status);
    report_drops(&kernel, &mut reported, false)?;
    let mut checksums = ChecksumWatch::new(&kernel.stats()?);
    let on_sigterm = if pins.is_some() && !args.no_handover {
        Shutdown::Handover
    } else {
        Shutdown::ForGood
    };
    let mut shutdown = Shutdown::ForGood;
    let mut resync: Option<Resync> = None;
    // The monitored interfaces, for the per-interface metrics.
    let ifindexes = crate::datapath::kernel::ifindexes(&args.iface);
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => {
                shutdown = on_sigterm;
                break;
            }
            _ = sighup.recv() => reloader.reload(&mut agent),
            ready = ring.readable() => {
                ready.context("waiting on the EVENTS ring buffer")?.clear_ready();
                let received = poll(&mut kernel, &mut agent, &mut events)?;
                if let Some(m) = &metrics {
                    m.add_events_received(received as u64);
                }
            }
            _ = tick.tick() => {
                let mut received = poll(&mut kernel, &mut agent, &mut events)?;
                // Timers left due by a full batch (a burst timing out together): the next
                // batch at once, events first each time.
                while agent.timers_behind() {
                    tokio::task::yield_now().await;
                    received += poll(&mut kernel, &mut agent, &mut events)?;
                }
                if let Some(m) = &metrics {
                    m.add_events_received(received as u64);
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
                        m.set_log_health(&agent.log_health());
                    }
                    status.update(Sample::new(
                        Instant::now(),
                        &kernel.stats()?,
                        agent.open_conns() as u64,
                        agent.stats.conns_logged,
                    ));
                    last_flush = Instant::now();
                }
                if last_stats.elapsed() >= STATS_INTERVAL {
                    if report_drops(&kernel, &mut reported, true)? {
                        // (Again from the start if a walk was under way.)
                        resync = Some(Resync::default());
                    }
                    if let Some(hint) = checksums.check(&kernel.stats()?, &args.iface) {
                        log::warn!("{hint}");
                    }
                    last_stats = Instant::now();
                }
                if let Some(r) = &mut resync
                    && r.step(&mut agent, u64::from(args.common.table_size) * 2)?
                {
                    resync = None;
                }
            }
        }
    }

    status.clear();
    if let (Shutdown::Handover, Some(pins)) = (shutdown, &pins) {
        hand_over(&mut kernel, &mut agent, &mut events, &args, pins)?;
    } else {
        eprintln!("conntrack-agent: stopping: logging open connections");
        poll(&mut kernel, &mut agent, &mut events)?;
        report_drops(&kernel, &mut reported, true)?;
        let (before, t0) = (agent.stats.conns_logged, Instant::now());
        agent.finish()?;
        let n = agent.stats.conns_logged - before;
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "conntrack-agent: logged {n} open connections in {secs:.2} s ({:.0} k/s)",
            n as f64 / secs.max(1e-6) / 1e3
        );
        kernel.detach_all();
        kernel.detach_sensor();
        if let Some(pins) = &pins {
            kernel.unpin_links();
            pins.dir.remove()?;
            eprintln!(
                "conntrack-agent: detached; pins removed from {}",
                pins.dir.root.display()
            );
        }
    }
    let stats = kernel.stats()?;
    let get = |s: Stat| stats.iter().find(|(k, _)| *k == s).map_or(0, |(_, v)| *v);
    let filtered = if filter.is_some() {
        format!(", {} rejected by the capture filter", get(Stat::Filtered))
    } else {
        String::new()
    };
    eprintln!(
        "conntrack-agent: {} packets ({} on the fast path{filtered}), {} connections logged, \
        drops: ring buffer {}, table full {}, fragments not tracked {}",
        get(Stat::Packets),
        get(Stat::FastPath),
        agent.stats.conns_logged,
        get(Stat::RingbufFull),
        get(Stat::TableFull),
        get(Stat::Fragments)
    );
    if get(Stat::LockBusy) > 0 {
        eprintln!(
            "conntrack-agent: {} connection locks were left behind and taken over (the packets \
            were applied); please report this",
            get(Stat::LockBusy)
        );
    }
    for line in crate::logs::health::summaries(&agent.log_health()) {
        eprintln!("conntrack-agent: {line}");
    }
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

/// What the agent says once it tracks: where conn.log goes.
fn start_line(args: &RunArgs) -> String {
    let log = if args.common.to_stdout() {
        "conn.log to standard output".to_string()
    } else {
        format!("conn.log in {}", args.common.log_dir.display())
    };
    let filter = crate::capture::filter::expression(args.common.filter.as_deref())
        .map(|e| format!(", capture filter {e:?}"))
        .unwrap_or_default();
    format!(
        "conntrack-agent: tracking on {} ({log}{filter}); Ctrl-C to stop",
        args.iface.join(", ")
    )
}

/// Refuses to start on an interface that has our programs attached already, except through
/// the links `taken_over` (those pinned in our --pin-dir, which this agent switches to its
/// programs): a second set would count every packet twice.
fn refuse_attached(
    ifaces: &[String],
    taken_over: &[u32],
    pin_dir: Option<&std::path::Path>,
) -> Result<()> {
    let mut found = Vec::new();
    for iface in ifaces {
        // An interface that does not exist is reported by the attach, as before.
        if crate::datapath::kernel::ifindex(iface).is_none() {
            continue;
        }
        let programs = crate::datapath::kernel::tracker_programs_on(iface).with_context(|| {
            format!(
                "checking {iface} for programs an earlier agent left attached (run as root, \
                or with CAP_BPF and CAP_NET_ADMIN)"
            )
        })?;
        found.extend(
            programs
                .into_iter()
                .filter(|p| !p.link_id.is_some_and(|l| taken_over.contains(&l))),
        );
    }
    if found.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", attached_message(&found, pin_dir))
    }
}

/// What is attached already, the likely reasons, and the ways out.
fn attached_message(
    found: &[crate::datapath::kernel::AttachedProgram],
    pin_dir: Option<&std::path::Path>,
) -> String {
    let list: Vec<String> = found.iter().map(ToString::to_string).collect();
    let mut ifaces: Vec<&str> = found.iter().map(|p| p.iface.as_str()).collect();
    ifaces.dedup();
    let iface_opts: String = ifaces.iter().map(|i| format!(" --iface {i}")).collect();
    let take_over = match pin_dir {
        Some(dir) => format!(
            "they are not pinned in --pin-dir {}: start with the --pin-dir the other agent used \
            to take them over",
            dir.display()
        ),
        None => "start with the --pin-dir DIR the killed agent used to take them over (its \
            open connections are then logged too)"
            .to_string(),
    };
    format!(
        "conntrack programs are already attached: {}. Another agent is tracking these \
        interfaces, or an agent started with --pin-dir was killed and left its programs \
        attached; a second set would count every packet twice. Stop the other agent; or \
        {take_over}; or remove them with `conntrack-agent detach{iface_opts}` (add --pin-dir \
        DIR to remove that directory's pins too)",
        list.join(", ")
    )
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
        if mode == crate::datapath::kernel::SensorAttach::Generic {
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
/// Returns how many events it handled.
fn poll(kernel: &mut Kernel, agent: &mut Agent, events: &mut Vec<Event>) -> Result<usize> {
    events.clear();
    kernel.drain_events(events);
    for ev in events.iter() {
        agent.handle_event(ev, ev.ts_ns() as i64)?;
    }
    // No packet of ours: the kernel's records carry their bytes.
    agent.deliver_contents(&[]);
    agent.advance(WallClock.now_ns())?;
    Ok(events.len())
}

/// Copies the kernel's counters, the table occupancy and the alert counters into `m` (once a
/// second: a scrape sees values at most that old).
fn scrape(
    m: &Metrics,
    kernel: &Kernel,
    agent: &Agent,
    capacity: u32,
    alerts: &crate::capabilities::alerts::AlertMetrics,
    ifaces: &[u32],
) -> Result<()> {
    m.set_kernel_stats(&kernel.stats()?);
    m.set_iface_stats(&kernel.iface_stats(ifaces)?);
    m.set_table(agent.open_conns() as u64, u64::from(capacity));
    m.set_alerts(alerts);
    Ok(())
}

/// Warns about drop counters that grew (when `warn`); true if ring-buffer events were lost.
fn report_drops(
    kernel: &Kernel,
    reported: &mut [u64; DROP_STATS.len()],
    warn: bool,
) -> Result<bool> {
    let stats = kernel.stats()?;
    let mut lost_events = false;
    for (i, stat) in DROP_STATS.iter().enumerate() {
        let now = stats.iter().find(|(s, _)| s == stat).map_or(0, |(_, v)| *v);
        if now > reported[i] {
            if warn {
                log::warn!("{}: {} (+{})", stat.name(), now, now - reported[i]);
                lost_events |= *stat == Stat::RingbufFull;
            }
            reported[i] = now;
        }
    }
    Ok(lost_events)
}

/// Packets (of a stats interval) below which bad checksums say nothing about the NIC.
const CHECKSUM_HINT_MIN_PACKETS: u64 = 500;

/// True when bad transport checksums dominate an interval's IP packets: the mark of NIC
/// checksum offloading (the NIC fills checksums in, or checks them, past the hook), as Zeek
/// warns for traces.
fn offload_suspected(ip_packets: u64, bad_checksums: u64) -> bool {
    ip_packets >= CHECKSUM_HINT_MIN_PACKETS && bad_checksums.saturating_mul(2) > ip_packets
}

/// Watches `STATS` for [`offload_suspected`] over each stats interval; warns once.
///
/// Note: the live program accounts every packet as checksum-valid today (only a replay flags
/// bad ones, conntrack-ebpf's `CB_BAD_CHECKSUM`), so `bad_checksums` stays 0 in `run` until
/// the datapath checks checksums live; this watch is what tells the user once it does.
struct ChecksumWatch {
    /// (IP packets, bad checksums) at the start of the interval.
    last: (u64, u64),
    warned: bool,
}

impl ChecksumWatch {
    fn new(stats: &[(Stat, u64)]) -> Self {
        Self {
            last: Self::counts(stats),
            warned: false,
        }
    }

    /// IP packets (frames less the non-IP and unparsable ones) and bad checksums so far.
    fn counts(stats: &[(Stat, u64)]) -> (u64, u64) {
        let get = |s: Stat| stats.iter().find(|(k, _)| *k == s).map_or(0, |(_, v)| *v);
        let ip = get(Stat::Packets)
            .saturating_sub(get(Stat::NonIp))
            .saturating_sub(get(Stat::ParseErrors));
        (ip, get(Stat::BadChecksums))
    }

    /// The hint, the first time an interval looks like checksum offloading.
    fn check(&mut self, stats: &[(Stat, u64)], ifaces: &[String]) -> Option<String> {
        let now = Self::counts(stats);
        let packets = now.0.saturating_sub(self.last.0);
        let bad = now.1.saturating_sub(self.last.1);
        self.last = now;
        if self.warned || !offload_suspected(packets, bad) {
            return None;
        }
        self.warned = true;
        Some(offload_hint(packets, bad, ifaces))
    }
}

/// Zeek's words for it, and what to do live (`run` has no `--ignore-checksums`: that is
/// `read`'s, for traces).
fn offload_hint(packets: u64, bad: u64, ifaces: &[String]) -> String {
    let list = ifaces.join(", ");
    let first = ifaces.first().map_or("IFACE", String::as_str);
    format!(
        "{bad} of the last {packets} IP packets on {list} had invalid TCP/UDP checksums: the \
         traffic likely has invalid TCP checksums, most likely from NIC checksum offloading. \
         Such packets do not count toward their connections (history C/c, as in Zeek). Turn \
         checksum offloading off on the interface (`ethtool -K {first} rx off tx off`), or \
         capture where checksums are final"
    )
}

/// After lost events: every connection in `FLOWS` is reported to the tracker again, so that
/// the ones whose `NewConn` was lost get timers and are logged on time.
/// Connections one resync step walks (one tick's worth: the events that arrive meanwhile are
/// handled between steps).
const RESYNC_STEP: usize = 20_000;

/// After lost events: the table walked in steps, each connection handed to the agent as a
/// state change (which tracks the ones it never heard of and corrects the others' states).
#[derive(Default)]
struct Resync {
    cursor: Option<FlowKey>,
    walked: u64,
}

impl Resync {
    /// One step; true when the walk is done. `limit` bounds it: the walk starts over when
    /// its cursor's connection is removed meanwhile.
    fn step(&mut self, agent: &mut Agent, limit: u64) -> Result<bool> {
        let keys = agent.dp.keys_after(self.cursor.as_ref(), RESYNC_STEP);
        for key in &keys {
            let Some(conn) = agent.dp.lookup(key) else {
                continue;
            };
            let ev = Event::Conn(ConnChange::of(
                EventKind::StateChanged,
                Changes::NONE,
                conn.last_ns,
                key,
                &conn,
                false,
            ));
            agent.handle_event(&ev, conn.last_ns as i64)?;
        }
        self.walked += keys.len() as u64;
        self.cursor = keys.last().copied();
        Ok(keys.len() < RESYNC_STEP || self.walked >= limit)
    }
}

// ---------------------------------------------------------------------------------------------
// Restart without loss (`--pin-dir`; the pin layout and state file are in handover.rs).

/// The pin directory, and whether a predecessor left a flow table there (its kernel id).
struct Pins {
    dir: PinDir,
    takeover: Option<u32>,
}

/// Loads the program with the pinned maps (a predecessor's when there is one) and attaches it
/// through pinned TCX links, switching a predecessor's links to the new programs. Takes the log
/// directory's lock (`lock_logs`) once it holds the pin directory's: a successor started
/// before its predecessor is sent SIGTERM waits for that one to exit, and its log directory is
/// free then.
fn load_pinned(
    opts: &KernelOptions<'_>,
    root: &std::path::Path,
    args: &RunArgs,
    lock_logs: impl FnOnce() -> Result<Option<log_lock::LogDirLock>>,
) -> Result<(Kernel, Pins, Option<log_lock::LogDirLock>)> {
    let dir = PinDir::prepare(root)?;
    let log_lock = lock_logs()?;
    // (After the pin directory's lock: a predecessor handing over has exited by then.)
    refuse_attached(
        &args.iface,
        &crate::datapath::kernel::pinned_link_ids(&dir.dir),
        Some(root),
    )?;
    let takeover = if dir.has_predecessor() {
        dir.flows_id()
    } else {
        None
    };
    if takeover.is_some()
        && let Some(cap) = dir.flows_capacity()
        && cap != opts.max_flows
    {
        eprintln!(
            "conntrack-agent: the pinned flow table holds {cap} connections: --table-size {} \
            takes effect after a stop for good (SIGINT)",
            opts.max_flows
        );
    }
    let mut kernel = Kernel::load_pinned(opts, &dir.dir).with_context(|| {
        format!(
            "loading the program with the maps pinned in {} (pins are the files of the user \
            who made them: another user must stop that agent for good first, or `chown -R` \
            the directory)",
            dir.dir.display()
        )
    })?;
    let staged = kernel.stage_stages(&dir.dir)?;
    for iface in &args.iface {
        kernel.attach_pinned(iface, &dir.dir)?;
    }
    dir.drop_other_links(&args.iface)?;
    Kernel::commit_stages(&dir.dir, &staged)?;
    Ok((kernel, Pins { dir, takeover }, log_lock))
}

/// Takes over a predecessor's connections. The events queued while no agent ran come first, in
/// order: a connection the predecessor tracked is adopted (with its uid) just before its first
/// event, with that event's snapshot, so that capabilities see it begin before it changes (or
/// is removed by a reuse). Then every other connection of the table is adopted as it is now:
/// the predecessor's (uid restored when its start time matches) and those whose events were
/// lost. Timers start from each connection's last packet.
fn take_over(
    kernel: &mut Kernel,
    agent: &mut Agent,
    events: &mut Vec<Event>,
    args: &RunArgs,
    flows_id: u32,
) -> Result<()> {
    let state = HandoverState::take(&args.common.log_dir, Some(flows_id));
    let mut saved: std::collections::HashMap<FlowKey, &SavedConn> = state
        .as_ref()
        .map(|s| s.entries().collect())
        .unwrap_or_default();
    let mut restored = 0;
    events.clear();
    let queued = kernel.drain_events(events);
    for ev in events.iter() {
        let predecessors = matches!(
            ev.kind(),
            Some(EventKind::StateChanged | EventKind::ThresholdCrossed | EventKind::ReuseRemoved)
        );
        let key = ev.key();
        // The predecessor's connection as of this event: a snapshot holds it (a reuse's old
        // connection); the other events carry only what changed, so it is read from the table.
        let conn = match ev.conn() {
            Some(c) => Some(*c),
            None => agent.dp.lookup(&key),
        };
        if predecessors
            && !agent.knows(&key)
            && let Some(conn) = conn
            && let Some(c) = saved.remove(&key)
        {
            let (uid, service) = (Some(c.uid.clone()), c.service.as_deref());
            agent.adopt_conn(key, &conn, uid, service, ev.ts_ns())?;
            restored += 1;
        }
        agent.handle_event(ev, ev.ts_ns() as i64)?;
    }
    for key in agent.dp.keys() {
        if agent.knows(&key) {
            continue;
        }
        let Some(conn) = agent.dp.lookup(&key) else {
            continue;
        };
        let (uid, service) = match saved.remove(&key) {
            Some(c) if c.start_ns == conn.start_ns => {
                restored += 1;
                (Some(c.uid.clone()), c.service.as_deref())
            }
            _ => (None, None),
        };
        agent.adopt_conn(key, &conn, uid, service, conn.last_ns)?;
    }
    eprintln!(
        "conntrack-agent: took over {} open connections ({restored} uids restored, {queued} \
        events queued while no agent ran)",
        agent.open_conns()
    );
    agent.advance(WallClock.now_ns())
}

/// Handover: events and timers are handled one last time, the uids of the connections still
/// open are saved for the successor, the logs closed; the programs stay attached.
fn hand_over(
    kernel: &mut Kernel,
    agent: &mut Agent,
    events: &mut Vec<Event>,
    args: &RunArgs,
    pins: &Pins,
) -> Result<()> {
    poll(kernel, agent, events)?;
    let flows_id = pins
        .dir
        .flows_id()
        .context("the pinned flow table is gone: cannot hand over")?;
    let conns: Vec<SavedConn> = agent
        .handed_over()
        .into_iter()
        .filter_map(|open| {
            let conn = agent.dp.lookup(&open.key)?;
            Some(SavedConn {
                key: handover::key_to_hex(&open.key),
                start_ns: conn.start_ns,
                uid: open.uid,
                service: open.service,
            })
        })
        .collect();
    let n = conns.len();
    HandoverState {
        schema: handover::schema_name(),
        flows_id,
        conns,
    }
    .save(&args.common.log_dir)?;
    agent.close_for_handover()?;
    let links = kernel.release_links();
    eprintln!(
        "conntrack-agent: handing over: {n} open connections left in {} for the next agent \
        ({links} links stay attached; SIGINT stops for good)",
        pins.dir.dir.display()
    );
    Ok(())
}

pub mod handover;
pub mod reload;
pub mod status;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn run_args(argv: &[&str]) -> RunArgs {
        let argv = ["conntrack-agent", "run"].iter().chain(argv);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Run(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn attached_programs_are_named_with_the_ways_out() {
        use crate::datapath::kernel::AttachedProgram;
        let found = [
            AttachedProgram {
                iface: "veth0".into(),
                direction: "ingress",
                program_id: 41,
                link_id: Some(7),
            },
            AttachedProgram {
                iface: "veth0".into(),
                direction: "egress",
                program_id: 42,
                link_id: None,
            },
        ];
        let msg = attached_message(&found, None);
        assert!(
            msg.contains("veth0 ingress (program 41, TCX link 7)"),
            "{msg}"
        );
        assert!(msg.contains("veth0 egress (program 42)"), "{msg}");
        assert!(msg.contains("--pin-dir DIR the killed agent used"), "{msg}");
        assert!(
            msg.contains("`conntrack-agent detach --iface veth0`"),
            "{msg}"
        );
        let pinned = attached_message(&found[..1], Some(std::path::Path::new("/sys/fs/bpf/c")));
        assert!(
            pinned.contains("not pinned in --pin-dir /sys/fs/bpf/c"),
            "{pinned}"
        );
    }

    #[test]
    fn bad_checksums_that_dominate_an_interval_give_one_hint() {
        assert!(!offload_suspected(100, 100), "too few packets to tell");
        assert!(!offload_suspected(1000, 500), "half is not most");
        assert!(offload_suspected(1000, 501));
        let stats = |packets: u64, non_ip: u64, bad: u64| {
            vec![
                (Stat::Packets, packets),
                (Stat::NonIp, non_ip),
                (Stat::BadChecksums, bad),
            ]
        };
        let ifaces = ["eth0".to_string()];
        // A predecessor's counters (pinned STATS) do not count: only what grows from now.
        let mut watch = ChecksumWatch::new(&stats(100_000, 0, 90_000));
        assert_eq!(watch.check(&stats(101_000, 0, 90_010), &ifaces), None);
        // 1000 frames of which 400 non-IP: 600 IP packets, 400 bad.
        let hint = watch
            .check(&stats(102_000, 400, 90_410), &ifaces)
            .expect("hint");
        assert!(
            hint.contains("400 of the last 600 IP packets on eth0"),
            "{hint}"
        );
        assert!(
            hint.contains("most likely from NIC checksum offloading"),
            "{hint}"
        );
        assert!(hint.contains("ethtool -K eth0 rx off tx off"), "{hint}");
        assert_eq!(
            watch.check(&stats(103_000, 400, 91_410), &ifaces),
            None,
            "once"
        );
    }

    #[test]
    fn the_start_line_says_where_conn_log_goes() {
        let file = start_line(&run_args(&["-i", "eth0", "--log-dir", "/l"]));
        assert!(file.contains("conn.log in /l"), "{file}");
        let out = start_line(&run_args(&["-i", "eth0", "--log-dir", "/l", "--stdout"]));
        assert!(out.contains("conn.log to standard output"), "{out}");
        assert!(!out.contains("/l"), "{out}");
        let dash = start_line(&run_args(&["-i", "eth0", "--log-dir", "-"]));
        assert!(dash.contains("conn.log to standard output"), "{dash}");
    }
}
