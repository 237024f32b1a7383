//! Section 3: live overhead. Two namespaces joined by veth; iperf3 TCP throughput and
//! small-packet UDP rate with nothing attached (the limit), with the tracker attached to the
//! receiving side's veth (ingress and egress), and with the kernel's nf_conntrack tracking the
//! same traffic (an nftables `ct state` rule in the receiving namespace).

use super::netns::{ADDR_B, NS_A, NS_B, Netns, VETH_B};
use super::report::{Row, Section};
use super::{Bench, median, on_path};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Config {
    None,
    Tracker,
    Conntrack,
}

const NFT_RULES: &str = "table inet ctbench {
  chain pre { type filter hook prerouting priority 0; ct state established,related,new counter accept; }
  chain out { type filter hook output priority 0; ct state established,related,new counter accept; }
}
";

#[derive(Default)]
struct Samples {
    tcp_bps: Vec<f64>,
    udp_pps: Vec<f64>,
}

pub fn run(b: &mut Bench) -> Result<Section> {
    let mut sec = Section::new(
        "live",
        "3. Live overhead (veth between two namespaces, iperf3)",
        "no program attached (the limit)",
    );
    if !on_path("iperf3") {
        bail!("iperf3 is not installed");
    }
    let (secs, runs) = if b.quick { (1, 1) } else { (5, 3) };
    let mut ns = Netns::create()?;
    let server = ns.spawn(NS_B, std::path::Path::new("iperf3"), &["-s", "-B", ADDR_B], Some(&b.out_dir.join("iperf3-server.log")))?;
    wait_for_server()?;
    let mut results: Vec<(Config, Samples)> = Vec::new();
    // The baseline is measured before and after the others; its median covers both.
    for config in [Config::None, Config::Tracker, Config::Conntrack, Config::None] {
        super::check_interrupted()?;
        let mut s = Samples::default();
        match measure_config(b, &mut ns, config, secs, runs, &mut s) {
            Ok(()) => {}
            Err(e) => {
                let name = match config {
                    Config::None => "no program",
                    Config::Tracker => "tracker",
                    Config::Conntrack => "nf_conntrack",
                };
                sec.notes.push(format!("{name}: {e:#}"));
                if config == Config::Tracker && b.kernel_unavailable.is_none() {
                    b.kernel_unavailable = Some(format!("{e:#}"));
                }
            }
        }
        if let Some((_, prev)) = results.iter_mut().find(|(c, _)| *c == config) {
            prev.tcp_bps.extend(s.tcp_bps);
            prev.udp_pps.extend(s.udp_pps);
        } else {
            results.push((config, s));
        }
    }
    ns.stop(server, libc::SIGTERM, Duration::from_secs(5))?;
    drop(ns);
    let get = |c: Config| results.iter().find(|(x, _)| *x == c).map(|(_, s)| s);
    let base = get(Config::None);
    let base_tcp = base.and_then(|s| median(&s.tcp_bps));
    let base_udp = base.and_then(|s| median(&s.udp_pps));
    let detail = |v: &[f64]| format!("median of {} run(s) of {secs} s", v.len());
    for (c, label) in [
        (Config::None, "no program (limit)"),
        (Config::Tracker, "tracker attached"),
        (Config::Conntrack, "nf_conntrack (nftables ct state)"),
    ] {
        let s = get(c);
        let tcp = s.and_then(|s| median(&s.tcp_bps)).map(|v| v / 1e9);
        let udp = s.and_then(|s| median(&s.udp_pps));
        let why = if c == Config::Tracker { b.kernel_unavailable.clone() } else { None };
        match (tcp, why) {
            (None, Some(w)) => {
                sec.rows.push(Row::missing(&format!("TCP, {label}"), "Gbit/s", &format!("not run: {w}")));
                sec.rows.push(Row::missing(&format!("UDP 64 B, {label}"), "pkt/s", &format!("not run: {w}")));
            }
            _ => {
                let v = s.map(|s| s.tcp_bps.clone()).unwrap_or_default();
                sec.rows.push(Row::new(&format!("TCP, {label}"), tcp, "Gbit/s", base_tcp.map(|b| b / 1e9), &detail(&v)));
                let v = s.map(|s| s.udp_pps.clone()).unwrap_or_default();
                sec.rows.push(Row::new(&format!("UDP 64 B, {label}"), udp, "pkt/s", base_udp, &format!("{}; received packets/s", detail(&v))));
            }
        }
    }
    sec.notes.push(
        "One iperf3 stream; client in one namespace, server in the other. The tracker runs as \
         `conntrack-agent run --iface <receiving veth>` (ingress and egress: every packet of both \
         directions once); nf_conntrack is enabled by an nftables `ct state` rule in the receiving \
         namespace's prerouting and output hooks."
            .into(),
    );
    Ok(sec)
}

fn wait_for_server() -> Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        let out = Netns::output(NS_B, "ss", &["-ltn"]).unwrap_or_default();
        if out.contains(":5201") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("iperf3 server did not start")
}

fn measure_config(b: &Bench, ns: &mut Netns, config: Config, secs: u32, runs: usize, s: &mut Samples) -> Result<()> {
    let mut agent = None;
    match config {
        Config::None => {}
        Config::Tracker => {
            if let Some(why) = &b.kernel_unavailable {
                bail!("not run: {why}");
            }
            agent = Some(start_agent(b, ns, &[VETH_B], 262_144, "live-agent")?);
        }
        Config::Conntrack => nft(NFT_RULES)?,
    }
    let res = (|| -> Result<()> {
        for _ in 0..runs {
            super::check_interrupted()?;
            s.tcp_bps.push(iperf_tcp(secs)?);
            s.udp_pps.push(iperf_udp(secs)?);
        }
        Ok(())
    })();
    match config {
        Config::None => {}
        Config::Tracker => {
            if let Some(pid) = agent {
                ns.stop(pid, libc::SIGTERM, Duration::from_secs(60))?;
            }
        }
        Config::Conntrack => {
            let _ = Netns::output(NS_B, "nft", &["delete", "table", "inet", "ctbench"]);
        }
    }
    res
}

/// Starts `conntrack-agent run` in namespace B and waits until it tracks. Returns its PID.
pub fn start_agent(b: &Bench, ns: &mut Netns, ifaces: &[&str], table: u32, name: &str) -> Result<u32> {
    let log = b.out_dir.join(format!("{name}.log"));
    let dir = b.out_dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let table_s = table.to_string();
    let dir_s = dir.to_string_lossy().into_owned();
    let mut args = vec!["run", "--log-dir", &dir_s, "--table-size", &table_s];
    for i in ifaces {
        args.extend(["--iface", i]);
    }
    let pid = ns.spawn(NS_B, &b.agent, &args, Some(&log))?;
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("tracking on") {
            return Ok(pid);
        }
        if !ns.running(pid) {
            let why = super::kernel_cost::summarize_load_error(&text);
            bail!("the agent exited: {why}");
        }
        if t0.elapsed() > Duration::from_secs(180) {
            let _ = ns.stop(pid, libc::SIGKILL, Duration::from_secs(5));
            bail!("the agent did not start tracking within 180 s");
        }
        super::check_interrupted()?;
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn nft(rules: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", NS_B, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting nft")?;
    child.stdin.take().context("nft stdin")?.write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn iperf(args: &[&str]) -> Result<Value> {
    let mut full = vec!["-c", ADDR_B, "-J"];
    full.extend_from_slice(args);
    let out = Command::new("ip")
        .args(["netns", "exec", NS_A, "iperf3"])
        .args(&full)
        .stdin(Stdio::null())
        .output()
        .context("running iperf3")?;
    let v: Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    Ok(v)
}

fn iperf_tcp(secs: u32) -> Result<f64> {
    let v = iperf(&["-t", &secs.to_string()])?;
    v.pointer("/end/sum_received/bits_per_second").and_then(Value::as_f64).context("iperf3: no sum_received")
}

fn iperf_udp(secs: u32) -> Result<f64> {
    let v = iperf(&["-u", "-b", "0", "-l", "64", "-t", &secs.to_string()])?;
    let sum = v.pointer("/end/sum").context("iperf3: no end.sum")?;
    let pkts = sum.get("packets").and_then(Value::as_f64).context("iperf3: no packets")?;
    let lost = sum.get("lost_packets").and_then(Value::as_f64).unwrap_or(0.0);
    let secs = sum.get("seconds").and_then(Value::as_f64).unwrap_or(secs as f64);
    Ok((pkts - lost).max(0.0) / secs.max(1e-3))
}
