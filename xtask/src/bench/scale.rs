//! Section 4: scale. The tracker runs live (`conntrack-agent run`) on the receiving veth while
//! the bench injects new UDP flows (one 60-byte frame each, to a MAC that is not the receiver's:
//! the tracker sees them at TC ingress and the stack then drops them) at rising rates, then up
//! to 1 M concurrent connections. The flows come from the XDP live-frame generator
//! (flood.rs; AF_PACKET `sendmmsg` where it cannot run), on the same CPU as the receiving
//! veth's processing, the tracker's program included; the agent drains on the other. Measured: the event rate the agent sustains without ring
//! buffer drops, kernel map memory per connection (the maps' `memlock` in fdinfo), agent RSS,
//! and the time to expire and log them all (Zeek's 1 min UDP inactivity timeout; in quick mode
//! the shutdown drain instead).

use super::flood::{Sender, send_raw};
use super::live::{start_agent, start_agent_with};
use super::netns::{NS_A, NS_B, Netns, RawSender, VETH_A, VETH_B, rss_kib};
use super::report::{Row, Section};
use super::{Bench, Layout};
use anyhow::{Context, Result, bail};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

/// Zeek's UDP inactivity timeout (the agent's default).
const UDP_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(b: &mut Bench) -> Result<Section> {
    let mut sec = Section::new(
        "scale",
        "4. Scale (live, UDP flows injected on the veth)",
        "see each row",
    );
    if let Some(why) = &b.kernel_unavailable {
        bail!("not run: the eBPF program does not load ({why})");
    }
    // (flows of the fill, rate steps (0: as fast as the sender goes), seconds per paced step,
    // flows of the unpaced step)
    let (total, steps, step_secs, max_flows): (u32, &[u32], f64, u32) = if b.quick {
        (10_000, &[20_000, 0], 0.1, 2_000)
    } else {
        (
            1_000_000,
            &[
                25_000, 50_000, 100_000, 200_000, 400_000, 600_000, 800_000, 0,
            ],
            1.0,
            500_000,
        )
    };
    let mut ns = Netns::create()?;
    let (sender, fallback) = Sender::open(b, (NS_A, VETH_A), (NS_B, VETH_B))?;
    sec.notes.push(match &fallback {
        None => "Sender: the XDP live-frame generator (`conntrack-agent bench-flood`: \
                 BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, paced by the program's clock), \
                 into the receiving veth with GRO on (its NAPI poll); each step's rate is the \
                 generator's, from its first frame to its last. Between frames due, the generator \
                 spins. For a step that fell short of its rate, the generator's CPU time per flow: \
                 it includes the receiving veth's processing, the tracker's program included (which \
                 runs in the generator's bottom halves), so one over it is the rate a CPU of its own \
                 would reach."
            .to_string(),
        Some(why) => format!(
            "Sender: AF_PACKET sendmmsg (the XDP live-frame generator could not run: {why})."
        ),
    });

    // Phase 1, the rate probe, on an agent of its own: steps of fresh flows at rising rates;
    // after each, the ring-buffer-full counter says whether events were lost. Its own agent, so
    // that the overload of the top steps (and the agent's recovery from lost events: a resync
    // that walks the whole map) does not leak into the 1 M measurement.
    let step_flows = |r: u32| {
        if r == 0 {
            max_flows
        } else {
            (r as f64 * step_secs) as u32
        }
    };
    let probe_total: u32 = steps.iter().map(|&r| step_flows(r)).sum();
    let probe = start_agent(
        b,
        &mut ns,
        &[VETH_B],
        probe_total + probe_total / 10 + 1024,
        "scale-probe-agent",
    )?;
    let pmaps = AgentMaps::find(probe, &b.layout)?;
    let mut next = 0u64;
    let mut best_ok: Option<f64> = None;
    let mut step_notes = Vec::new();
    let mut drops_total = 0u64;
    let mut max_step_clean = false;
    let mut saw_drops = false;
    for &rate in steps {
        super::check_interrupted()?;
        let n = step_flows(rate);
        let before = pmaps.stat(&b.layout, "ringbuf_full")?;
        let created_before = pmaps.stat(&b.layout, "new_conns")?;
        let sent = sender.send(next, u64::from(n), u64::from(rate))?;
        next += sent.flows;
        std::thread::sleep(Duration::from_millis(300));
        let dropped = pmaps.stat(&b.layout, "ringbuf_full")? - before;
        // Every flow sent must have reached the tracker (a new connection each; the veth's
        // own traffic may add a few): else the step measured the path, not the agent.
        let created = pmaps.stat(&b.layout, "new_conns")? - created_before;
        let lost = sent.flows.saturating_sub(created);
        drops_total += dropped;
        let target = if rate == 0 {
            "max".to_string()
        } else {
            format!("{} k/s", rate / 1000)
        };
        step_notes.push(format!(
            "{target}: {:.0} k/s sent{}, {dropped} dropped{}",
            sent.rate / 1e3,
            sent.cpu_us_per_flow()
                .filter(|_| fell_short(rate, sent.rate))
                .map_or(String::new(), |us| format!(
                    " ({us:.2} us of sending-CPU time per flow)"
                )),
            if lost > 0 {
                format!(", {lost} of {} never reached the tracker", sent.flows)
            } else {
                String::new()
            }
        ));
        // The sustainable rate: the last step of an unbroken run of drop-free steps (a short
        // step above it can still pass by filling the buffer without overflowing it).
        let clean = dropped == 0 && lost == 0;
        if clean && !saw_drops {
            best_ok = Some(best_ok.map_or(sent.rate, |b: f64| b.max(sent.rate)));
        }
        saw_drops |= !clean;
        max_step_clean = rate == 0 && !saw_drops;
    }
    let probe_drain = ns.stop(probe, libc::SIGTERM, Duration::from_secs(600))?;
    let probe_logged =
        LineCounter::default().count(&b.out_dir.join("scale-probe-agent").join("conn.log"))?;

    // Phase 2: a fresh agent, `total` flows at half the best drop-free rate of the probe.
    let table = total + total / 10 + 1024;
    let agent = start_agent(b, &mut ns, &[VETH_B], table, "scale-agent")?;
    let maps = AgentMaps::find(agent, &b.layout)?;
    let idle_rss = rss_kib(agent, "VmRSS:").unwrap_or(0) as f64 * 1024.0;
    let fill_rate = best_ok.map_or(50_000, |r| (r * 0.5) as u32).max(10_000);
    let fill_count = total;
    let before = maps.stat(&b.layout, "ringbuf_full")?;
    sender.send(0, u64::from(total), u64::from(fill_rate))?;
    let next = total;
    std::thread::sleep(Duration::from_millis(500));
    let fill_drops = maps.stat(&b.layout, "ringbuf_full")? - before;
    let t_last_sent = Instant::now();
    // Wait until the agent has taken every event (its new-connection count stops moving).
    let new_conns = maps.stat(&b.layout, "new_conns")?;
    let table_full = maps.stat(&b.layout, "table_full")?;
    std::thread::sleep(Duration::from_millis(500));
    let rss = rss_kib(agent, "VmRSS:").unwrap_or(0) as f64 * 1024.0;
    let (flows_memlock, all_memlock, max_entries) = maps.memory()?;
    let per_conn = flows_memlock as f64 / max_entries as f64;
    let raw = (b.layout.conn + b.layout.key) as f64;

    sec.rows.push(Row::new(
        "concurrent connections",
        Some(new_conns as f64),
        "conns",
        Some(next as f64),
        &format!("created by the program (ratio: of {next} flows sent); table full: {table_full}"),
    ));
    sec.rows.push(Row::new(
        "kernel memory per connection (FLOWS)",
        Some(per_conn),
        "B",
        Some(raw),
        &format!("FLOWS memlock {:.0} MB / {max_entries} entries (preallocated); ratio vs key + value = {raw:.0} B", flows_memlock as f64 / 1e6),
    ));
    sec.rows.push(Row::new(
        "kernel memory per connection (all maps)",
        Some(all_memlock as f64 / new_conns.max(1) as f64),
        "B",
        Some(raw),
        &format!(
            "every map of the agent, {:.0} MB, incl. the 4 MiB ring buffer, per connection held",
            all_memlock as f64 / 1e6
        ),
    ));
    sec.rows.push(Row::new(
        "agent RSS",
        Some(rss / 1e6),
        "MB",
        Some(idle_rss / 1e6),
        &format!(
            "with {new_conns} connections; ratio vs the idle agent ({:.1} MB)",
            idle_rss / 1e6
        ),
    ));
    sec.rows.push(Row::new(
        "ring-buffer event rate without drops",
        best_ok,
        "ev/s",
        None,
        &format!(
            "highest step of the unbroken run of steps with no ring-buffer-full{} (one NewConn event of {} B per flow; steps: {})",
            if max_step_clean { ", a lower bound: no drops even at the sending CPU's maximum rate (the generator and the receiving veth's processing, the tracker's program included, share that CPU)" } else { "" },
            b.layout.event,
            step_notes.join("; ")
        ),
    ));
    sec.rows.push(Row::new(
        "ring-buffer drops",
        Some(drops_total as f64),
        "events",
        None,
        "in the rate probe (its own agent), including the steps above the sustainable rate",
    ));
    sec.rows.push(Row::new(
        "drops while filling to the total",
        Some(fill_drops as f64),
        "events",
        None,
        &format!(
            "{fill_count} flows at {} k/s (half the best drop-free step) into a fresh agent",
            fill_rate / 1000
        ),
    ));
    sec.rows.push(Row::new(
        "shutdown drain (SIGTERM) of the probe's connections",
        Some(probe_drain.as_secs_f64()),
        "s",
        None,
        &format!(
            "{probe_logged} records logged ({:.0} k records/s)",
            probe_logged as f64 / probe_drain.as_secs_f64().max(1e-3) / 1e3
        ),
    ));
    sec.rows.push(Row::new(
        "shutdown drain rate",
        Some(probe_logged as f64 / probe_drain.as_secs_f64().max(1e-3)),
        "records/s",
        None,
        "the row above: records logged per second, from SIGTERM to the agent's exit",
    ));

    // Expire and log.
    let log = b.out_dir.join("scale-agent").join("conn.log");
    let mut counter = LineCounter::default();
    if b.quick {
        let dt = ns.stop(agent, libc::SIGTERM, Duration::from_secs(600))?;
        let logged = counter.count(&log)?;
        sec.rows.push(Row::new(
            "time to log them all (shutdown drain)",
            Some(dt.as_secs_f64()),
            "s",
            None,
            &format!(
                "{logged} records; SIGTERM to exit (quick mode does not wait for the 1 min timeout)"
            ),
        ));
    } else {
        let due = t_last_sent + UDP_TIMEOUT;
        let deadline = due + Duration::from_secs(300);
        let mut logged = 0;
        let mut first_seen: Option<Instant> = None;
        while Instant::now() < deadline {
            super::check_interrupted()?;
            logged = counter.count(&log)?;
            if logged > 0 && first_seen.is_none() {
                first_seen = Some(Instant::now());
            }
            if logged >= new_conns {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let done = Instant::now();
        let hwm = rss_kib(agent, "VmHWM:").unwrap_or(0) as f64 * 1024.0;
        let after = done.saturating_duration_since(due).as_secs_f64();
        if logged >= new_conns {
            let span = first_seen.map_or(0.0, |f| done.duration_since(f).as_secs_f64());
            sec.rows.push(Row::new(
                "time to expire and log them all",
                Some(after),
                "s",
                None,
                &format!("{logged} records; after the last became due (1 min inactivity); first to last record {span:.1} s ({:.0} k records/s)", logged as f64 / span.max(1e-3) / 1e3),
            ));
        } else {
            sec.rows.push(Row::new(
                "time to expire and log them all",
                None,
                "s",
                None,
                &format!(
                    "not done: {logged} of {new_conns} logged {after:.0} s after they became due"
                ),
            ));
        }
        sec.rows.push(Row::new(
            "agent peak RSS",
            Some(hwm / 1e6),
            "MB",
            Some(idle_rss / 1e6),
            "VmHWM over the whole run",
        ));
        let dt = ns.stop(agent, libc::SIGTERM, Duration::from_secs(600))?;
        sec.notes.push(format!(
            "Agent shutdown after expiry: {:.2} s.",
            dt.as_secs_f64()
        ));
    }
    drop(ns);
    Ok(sec)
}

/// Rate of the scale check: well below the drop-free rate the bench measures (341 k/s on
/// the 2-core machine), so that a loss is a bug, not an overload.
const CHECK_RATE: u32 = 100_000;
/// Agent heap per connection the scale check accepts (about 110 B measured at 200,000 on
/// 2026-12-03; the tracker's tables grow in powers of two, so a count just past one costs more).
const CHECK_RSS_PER_CONN: f64 = 250.0;

/// `cargo xtask test`'s scale check: `total` new UDP flows into a live agent, then SIGTERM.
/// Fails unless every flow became one connection in the kernel and exactly one conn.log
/// record, with no ring-buffer or table-full loss, and the agent's memory grew by at most
/// `CHECK_RSS_PER_CONN` per connection.
pub fn check(b: &Bench, total: u32) -> Result<()> {
    let mut ns = Netns::create()?;
    let sender = RawSender::open(NS_A, VETH_A)?;
    let table = total + total / 10 + 1024;
    let agent = start_agent(b, &mut ns, &[VETH_B], table, "scale-check-agent")?;
    let maps = AgentMaps::find(agent, &b.layout)?;
    let idle_rss = rss_kib(agent, "VmRSS:").unwrap_or(0) as f64 * 1024.0;
    let idle_anon = rss_kib(agent, "RssAnon:").unwrap_or(0) as f64 * 1024.0;
    let t0 = Instant::now();
    let achieved = send_raw(&sender, 0, u64::from(total), u64::from(CHECK_RATE))?.rate;
    // Every event taken: the agent's count of new connections stops short of nothing.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut new_conns = maps.stat(&b.layout, "new_conns")?;
    while new_conns < u64::from(total) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        new_conns = maps.stat(&b.layout, "new_conns")?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss = rss_kib(agent, "VmRSS:").unwrap_or(0) as f64 * 1024.0;
    let anon = rss_kib(agent, "RssAnon:").unwrap_or(0) as f64 * 1024.0;
    let ringbuf_full = maps.stat(&b.layout, "ringbuf_full")?;
    let table_full = maps.stat(&b.layout, "table_full")?;
    let drain = ns.stop(agent, libc::SIGTERM, Duration::from_secs(300))?;
    drop(ns);
    let log = b.out_dir.join("scale-check-agent").join("conn.log");
    let text = std::fs::read_to_string(&log).with_context(|| format!("{}", log.display()))?;
    // The flows sent go to 10.250.0.2; the veth's own traffic (IPv6 neighbour discovery) is
    // tracked too and counted apart.
    let (mut records, mut other) = (0u64, 0u64);
    let mut sources = std::collections::HashSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.get(4) == Some(&"10.250.0.2") {
            records += 1;
            sources.insert(cols[2].to_string());
        } else {
            other += 1;
        }
    }
    // The agent's own memory per connection: its heap (RssAnon). VmRSS also grows by the
    // ring buffer's pages once events have passed through them (8 MiB for the default 4 MiB ring, mapped twice, whatever the count).
    let per_conn = (anon - idle_anon).max(0.0) / f64::from(total);
    println!(
        "scale check: {total} flows sent at {:.0} k/s in {:.1} s; {new_conns} connections in the kernel \
         (ring buffer full {ringbuf_full}, table full {table_full}); {records} records \
         ({} distinct sources; {other} of the veth's own traffic) after a {:.2} s drain; agent RSS {:.0} MB (idle {:.0} MB); \
         its heap grew by {per_conn:.0} B per connection",
        achieved / 1e3,
        t0.elapsed().as_secs_f64(),
        sources.len(),
        drain.as_secs_f64(),
        rss / 1e6,
        idle_rss / 1e6,
    );
    let mut wrong = Vec::new();
    // The veth's own connections may start after the count was read.
    if new_conns < u64::from(total) || new_conns > u64::from(total) + other {
        wrong.push(format!(
            "the kernel created {new_conns} connections for {total} flows and {other} others"
        ));
    }
    if ringbuf_full != 0 || table_full != 0 {
        wrong.push(format!(
            "events lost: ring buffer full {ringbuf_full}, table full {table_full}"
        ));
    }
    if records != u64::from(total) || sources.len() as u64 != u64::from(total) {
        wrong.push(format!(
            "conn.log has {records} records from {} distinct sources, want {total} of each",
            sources.len()
        ));
    }
    if per_conn > CHECK_RSS_PER_CONN {
        wrong.push(format!(
            "the agent grew by {per_conn:.0} B per connection (at most {CHECK_RSS_PER_CONN:.0})"
        ));
    }
    if !wrong.is_empty() {
        bail!("scale check failed: {}", wrong.join("; "));
    }
    check_loss_recovery(b)
}

/// Flows of the loss-recovery check: far more events than its 1 MiB ring buffer holds (about
/// 13,000).
const LOSS_FLOWS: u32 = 30_000;

/// Loss recovery: an agent stopped (SIGSTOP) while `LOSS_FLOWS` new flows arrive loses most
/// of their events. Running again, its resync (at the next drop check, within 10 s) must
/// track every connection the kernel holds: each then times out (UDP inactivity 2 s here) and
/// removal.log says `inactivity` for every one, none `drained` at shutdown.
fn check_loss_recovery(b: &Bench) -> Result<()> {
    let mut ns = Netns::create()?;
    let sender = RawSender::open(NS_A, VETH_A)?;
    let dir = b.out_dir.join("scale-loss-agent");
    let config = b.out_dir.join("scale-loss.toml");
    std::fs::write(&config, "[inactivity]\nudp = \"2s\"\n\n[removal_log]\n")?;
    let config_s = config.to_string_lossy().into_owned();
    let extra = ["--ring-size", "1", "--config", config_s.as_str()];
    let agent = start_agent_with(b, &mut ns, &[VETH_B], 65_536, "scale-loss-agent", &extra)?;
    let maps = AgentMaps::find(agent, &b.layout)?;
    // SAFETY: kill(2) on the agent this check started (still running: unreaped).
    unsafe { libc::kill(agent as i32, libc::SIGSTOP) };
    let sent = send_raw(&sender, 0, u64::from(LOSS_FLOWS), u64::from(CHECK_RATE));
    // SAFETY: as above.
    unsafe { libc::kill(agent as i32, libc::SIGCONT) };
    sent?;
    let lost = maps.stat(&b.layout, "ringbuf_full")?;
    let log = dir.join("removal.log");
    let ours = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains("\"id.resp_h\":\"10.250.0.2\""))
            .map(str::to_string)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline
        && ours(&std::fs::read_to_string(&log).unwrap_or_default()).len() < LOSS_FLOWS as usize
    {
        std::thread::sleep(Duration::from_millis(250));
    }
    ns.stop(agent, libc::SIGTERM, Duration::from_secs(60))?;
    drop(ns);
    let removed = ours(&std::fs::read_to_string(&log).unwrap_or_default());
    let by_timeout = removed
        .iter()
        .filter(|l| l.contains("\"reason\":\"inactivity\""))
        .count();
    println!(
        "loss recovery: {LOSS_FLOWS} flows while the agent was stopped, {lost} events lost; \
         {by_timeout} of {} removals by the inactivity timeout",
        removed.len()
    );
    if lost == 0 {
        bail!("loss recovery check: no event was lost (the ring buffer is bigger than assumed)");
    }
    if removed.len() != LOSS_FLOWS as usize || by_timeout != removed.len() {
        bail!(
            "loss recovery check failed: {} removals for {LOSS_FLOWS} flows, {by_timeout} of them \
             by the inactivity timeout (the others were not tracked after the loss)",
            removed.len()
        );
    }
    Ok(())
}

/// Whether a step at target `rate` (0: unpaced) sent at `achieved` frames/s was bound by the
/// sender (unpaced, or more than 3% short of its target) rather than by its pacing.
fn fell_short(rate: u32, achieved: f64) -> bool {
    rate == 0 || achieved < f64::from(rate) * 0.97
}

/// Counts the records appended to a conn.log so far (lines not starting with `#`).
#[derive(Default)]
struct LineCounter {
    offset: u64,
    lines: u64,
    partial: Vec<u8>,
}

impl LineCounter {
    fn count(&mut self, path: &Path) -> Result<u64> {
        let Ok(mut f) = std::fs::File::open(path) else {
            return Ok(self.lines);
        };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        let mut data = std::mem::take(&mut self.partial);
        data.extend_from_slice(&buf);
        let mut start = 0;
        for (i, &c) in data.iter().enumerate() {
            if c == b'\n' {
                if data.get(start) != Some(&b'#') {
                    self.lines += 1;
                }
                start = i + 1;
            }
        }
        self.partial = data[start..].to_vec();
        Ok(self.lines)
    }
}

/// The agent's BPF maps, found through its file descriptors.
struct AgentMaps {
    /// (map_id, map_type, key_size, value_size, max_entries, memlock)
    maps: Vec<[u64; 6]>,
    stats_id: u32,
    key_size: u64,
    conn_size: u64,
    pid: u32,
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const MAP_TYPE_HASH: u64 = 1;
const MAP_TYPE_PERCPU_ARRAY: u64 = 6;

impl AgentMaps {
    fn find(pid: u32, layout: &Layout) -> Result<AgentMaps> {
        let mut maps = Vec::new();
        for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
            let text = std::fs::read_to_string(e?.path()).unwrap_or_default();
            let field = |k: &str| -> Option<u64> {
                text.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.trim().parse().ok())
            };
            if let Some(id) = field("map_id:") {
                maps.push([
                    id,
                    field("map_type:").unwrap_or(0),
                    field("key_size:").unwrap_or(0),
                    field("value_size:").unwrap_or(0),
                    field("max_entries:").unwrap_or(0),
                    field("memlock:").unwrap_or(0),
                ]);
            }
        }
        let stats = maps
            .iter()
            .find(|m| m[1] == MAP_TYPE_PERCPU_ARRAY && m[3] == 8 && m[4] == layout.stat_count)
            .context("the agent has no STATS map open")?;
        Ok(AgentMaps {
            stats_id: stats[0] as u32,
            maps: maps.clone(),
            key_size: layout.key as u64,
            conn_size: layout.conn as u64,
            pid,
        })
    }

    /// (FLOWS memlock, every map's memlock, FLOWS max_entries).
    fn memory(&self) -> Result<(u64, u64, u64)> {
        let flows = self
            .maps
            .iter()
            // Other hash maps are keyed by the flow key too (CONTENTS_CONNS): FLOWS is the one
            // whose values are Conns.
            .find(|m| m[1] == MAP_TYPE_HASH && m[2] == self.key_size && m[3] == self.conn_size)
            .with_context(|| format!("agent {} has no FLOWS map open", self.pid))?;
        let mut seen = std::collections::HashSet::new();
        let all = self
            .maps
            .iter()
            .filter(|m| seen.insert(m[0]))
            .map(|m| m[5])
            .sum();
        Ok((flows[5], all, flows[4]))
    }

    /// A `STATS` counter summed over CPUs (BPF_MAP_LOOKUP_ELEM by map id).
    fn stat(&self, layout: &Layout, name: &str) -> Result<u64> {
        let mut attr = [0u64; 16];
        attr[0] = self.stats_id as u64;
        // SAFETY: bpf(2) with a zero-padded attr of 128 bytes.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_FD_BY_ID,
                attr.as_mut_ptr(),
                128u32,
            )
        };
        if fd < 0 {
            bail!("BPF_MAP_GET_FD_BY_ID: {}", std::io::Error::last_os_error());
        }
        let cpus = possible_cpus();
        let mut values = vec![0u64; cpus];
        let key: u32 = layout.stat(name)?;
        let mut attr = [0u64; 16];
        attr[0] = fd as u64;
        attr[1] = (&key as *const u32) as u64;
        attr[2] = values.as_mut_ptr() as u64;
        // SAFETY: key and value buffers outlive the call; the value holds one u64 per possible CPU.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_ELEM,
                attr.as_mut_ptr(),
                128u32,
            )
        };
        let err = std::io::Error::last_os_error();
        // SAFETY: closing the fd we got above.
        unsafe { libc::close(fd as i32) };
        if r != 0 {
            bail!("BPF_MAP_LOOKUP_ELEM: {err}");
        }
        Ok(values.iter().fold(0u64, |a, v| a.wrapping_add(*v)))
    }
}

fn possible_cpus() -> usize {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    s.trim()
        .split(',')
        .filter_map(|r| {
            let mut it = r.split('-');
            let a: usize = it.next()?.parse().ok()?;
            let b: usize = it.next().map_or(Some(a), |x| x.parse().ok())?;
            Some(b - a + 1)
        })
        .sum::<usize>()
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_fell_short_when_unpaced_or_below_its_rate() {
        assert!(fell_short(0, 1e6));
        assert!(fell_short(400_000, 320_000.0));
        assert!(!fell_short(400_000, 399_000.0));
        assert!(!fell_short(25_000, 25_000.0));
    }
}
