//! Section 3: live overhead. Two namespaces joined by veth; iperf3 TCP throughput and
//! small-packet UDP rate (see [`UdpLoad`]) with nothing attached (the limit), with the tracker attached to the
//! receiving side's veth (ingress and egress), and with the kernel's nf_conntrack tracking the
//! same traffic (an nftables `ct state` rule in the receiving namespace).

use super::netns::{ADDR_B, NS_A, NS_B, Netns, RawSender, VETH_A, VETH_B};
use super::report::{Row, Section};
use super::{Bench, median, on_path};
use anyhow::{Context, Result, bail};
use conntrack_common::checksum::set_ipv4_header_checksum;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Config {
    /// Nothing attached and no agent running (a control).
    Bare,
    /// The limit: no program on the measured path. The agent runs, attached to namespace B's
    /// loopback, so that every set-up but `Bare` has the same user-space activity (a polling
    /// process changes how fast idle vCPUs wake up, which moves veth throughput by itself).
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
        "no program on the path (the limit; the agent idles on lo)",
    );
    if !on_path("iperf3") {
        bail!("iperf3 is not installed");
    }
    let (secs, rounds) = if b.quick { (1, 1) } else { (5, 4) };
    let mut ns = Netns::create()?;
    let server = ns.spawn(
        NS_B,
        std::path::Path::new("iperf3"),
        &["-s", "-B", ADDR_B],
        Some(&b.out_dir.join("iperf3-server.log")),
    )?;
    wait_for_server()?;
    let udp = UdpLoad::new()?;
    let all = [
        Config::None,
        Config::Tracker,
        Config::Conntrack,
        Config::Bare,
    ];
    let mut results: Vec<(Config, Samples)> =
        all.into_iter().map(|c| (c, Samples::default())).collect();
    let mut failed: Vec<Config> = Vec::new();
    // Rounds: every configuration once per round, the order rotated from round to round, so
    // that drifting background load hits them alike; medians over the rounds.
    for round in 0..rounds {
        for k in 0..all.len() {
            let config = all[(round + k) % all.len()];
            if failed.contains(&config) {
                continue;
            }
            super::check_interrupted()?;
            let s = &mut results
                .iter_mut()
                .find(|(c, _)| *c == config)
                .expect("all configs")
                .1;
            if let Err(e) = measure_config(b, &mut ns, &udp, config, secs, s) {
                let name = match config {
                    Config::None => "no program (agent on lo)",
                    Config::Bare => "nothing attached",
                    Config::Tracker => "tracker",
                    Config::Conntrack => "nf_conntrack",
                };
                sec.notes.push(format!("{name}: {e:#}"));
                failed.push(config);
                if config == Config::Tracker && b.kernel_unavailable.is_none() {
                    b.kernel_unavailable = Some(format!("{e:#}"));
                }
            }
        }
    }
    ns.stop(server, libc::SIGTERM, Duration::from_secs(5))?;
    drop(udp);
    drop(ns);
    let get = |c: Config| {
        results
            .iter()
            .find(|(x, _)| *x == c)
            .map(|(_, s)| s)
            .filter(|s| !s.tcp_bps.is_empty() && !s.udp_pps.is_empty())
    };
    // Without a loadable program the agent cannot idle on lo: the bare set-up is the limit.
    let base = get(Config::None).or(get(Config::Bare));
    if base.is_none() {
        bail!("no baseline measurement: {}", sec.notes.join("; "));
    }
    if get(Config::None).is_none() {
        sec.baseline = "nothing attached, no agent (the limit; the agent could not run)".into();
    }
    let base_tcp = base.and_then(|s| median(&s.tcp_bps));
    let base_udp = base.and_then(|s| median(&s.udp_pps));
    let detail = |v: &[f64]| format!("median of {} round(s) of {secs} s", v.len());
    for (c, label) in [
        (Config::None, "no program on the path, agent idle (limit)"),
        (Config::Tracker, "tracker attached"),
        (Config::Conntrack, "nf_conntrack (nftables ct state)"),
        (Config::Bare, "nothing attached, no agent (control)"),
    ] {
        let s = get(c);
        let tcp = s.and_then(|s| median(&s.tcp_bps)).map(|v| v / 1e9);
        let udp = s.and_then(|s| median(&s.udp_pps));
        let why = if matches!(c, Config::Tracker | Config::None) {
            b.kernel_unavailable.clone()
        } else {
            None
        };
        match (tcp, why) {
            (None, Some(w)) => {
                sec.rows.push(Row::missing(
                    &format!("TCP, {label}"),
                    "Gbit/s",
                    &format!("not run: {w}"),
                ));
                sec.rows.push(Row::missing(
                    &format!("UDP 64 B, {label}"),
                    "pkt/s",
                    &format!("not run: {w}"),
                ));
            }
            _ => {
                let v = s.map(|s| s.tcp_bps.clone()).unwrap_or_default();
                sec.rows.push(Row::new(
                    &format!("TCP, {label}"),
                    tcp,
                    "Gbit/s",
                    base_tcp.map(|b| b / 1e9),
                    &detail(&v),
                ));
                let v = s.map(|s| s.udp_pps.clone()).unwrap_or_default();
                sec.rows.push(Row::new(
                    &format!("UDP 64 B, {label}"),
                    udp,
                    "pkt/s",
                    base_udp,
                    &format!(
                        "{}; packets through the receiver's stack per second",
                        detail(&v)
                    ),
                ));
            }
        }
    }
    sec.notes.push(
        "TCP: one iperf3 stream, client in one namespace, server in the other. UDP: one flow of 64-byte \
         datagrams sent with AF_PACKET from the client namespace as fast as one core can (iperf3's UDP sender \
         tops out near 70 k pkt/s, far below the receive path, and would hide the cost); the figure is the \
         datagrams that reached the receiver's UDP layer per second (with veth the receive path runs on the \
         sender's CPU, so it is the inverse of the whole per-packet cost). The tracker runs as `conntrack-agent \
         run --iface <receiving veth>` (ingress and egress: every packet once); nf_conntrack is enabled by an \
         nftables `ct state` rule in the receiving namespace's prerouting and output hooks. In the limit and \
         nf_conntrack set-ups the agent runs too, attached to the receiving namespace's loopback (off the \
         measured path), so that these three have the same user-space activity; `nothing attached, no agent` \
         shows what the agent's mere presence does. Each round measures \
         the four set-ups in rotated order; medians over the rounds."
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

fn measure_config(
    b: &Bench,
    ns: &mut Netns,
    udp: &UdpLoad,
    config: Config,
    secs: u32,
    s: &mut Samples,
) -> Result<()> {
    let mut agent = None;
    let idle_agent_ok = b.kernel_unavailable.is_none();
    match config {
        Config::Bare => {}
        Config::None => {
            if let Some(why) = &b.kernel_unavailable {
                bail!("not run: {why}");
            }
            agent = Some(start_agent(b, ns, &["lo"], 1024, "live-agent-lo")?);
        }
        Config::Tracker => {
            if let Some(why) = &b.kernel_unavailable {
                bail!("not run: {why}");
            }
            agent = Some(start_agent(b, ns, &[VETH_B], 262_144, "live-agent")?);
        }
        Config::Conntrack => {
            nft(NFT_RULES)?;
            if idle_agent_ok {
                agent = Some(start_agent(b, ns, &["lo"], 1024, "live-agent-lo")?);
            }
        }
    }
    let res = (|| -> Result<()> {
        s.tcp_bps.push(iperf_tcp(secs)?);
        s.udp_pps.push(udp.run(secs)?);
        Ok(())
    })();
    if let Some(pid) = agent {
        ns.stop(pid, libc::SIGTERM, Duration::from_secs(60))?;
    }
    if config == Config::Conntrack {
        let _ = Netns::output(NS_B, "nft", &["delete", "table", "inet", "ctbench"]);
    }
    res
}

/// Starts `conntrack-agent run` in namespace B and waits until it tracks. Returns its PID.
pub fn start_agent(
    b: &Bench,
    ns: &mut Netns,
    ifaces: &[&str],
    table: u32,
    name: &str,
) -> Result<u32> {
    start_agent_with(b, ns, ifaces, table, name, &[])
}

/// [`start_agent`] with more arguments for `conntrack-agent run`.
pub fn start_agent_with(
    b: &Bench,
    ns: &mut Netns,
    ifaces: &[&str],
    table: u32,
    name: &str,
    extra: &[&str],
) -> Result<u32> {
    let log = b.out_dir.join(format!("{name}.log"));
    let dir = b.out_dir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let table_s = table.to_string();
    let dir_s = dir.to_string_lossy().into_owned();
    let mut args = vec!["run", "--log-dir", &dir_s, "--table-size", &table_s];
    for i in ifaces {
        args.extend(["--iface", i]);
    }
    args.extend_from_slice(extra);
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
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(rules.as_bytes())?;
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
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .context("iperf3: no sum_received")
}

/// Small-packet UDP load: one flow of 64-byte datagrams (106-byte frames) sent with AF_PACKET
/// from namespace A as fast as one core can, to a socket bound in namespace B that is never
/// read (the datagrams go through B's whole receive path, then fill its buffer). iperf3's UDP
/// sender tops out far below what the receive path can take (one write and clock read per
/// datagram), which would hide any per-packet cost on the receiver. With veth, the receive
/// path runs in the sender's softirq on the same CPU, so the rate is the inverse of the
/// whole per-packet cost.
struct UdpLoad {
    sender: RawSender,
    frame: Vec<u8>,
    _sink: std::net::UdpSocket,
}

const UDP_SINK_PORT: u16 = 9000;

impl UdpLoad {
    fn new() -> Result<UdpLoad> {
        let links: Value =
            serde_json::from_str(&Netns::output(NS_B, "ip", &["-j", "link", "show", VETH_B])?)?;
        let mac = links
            .pointer("/0/address")
            .and_then(Value::as_str)
            .context("no MAC address for the receiving veth")?;
        let mac: Vec<u8> = mac
            .split(':')
            .filter_map(|h| u8::from_str_radix(h, 16).ok())
            .collect();
        if mac.len() != 6 {
            bail!("bad MAC address of the receiving veth");
        }
        let path = std::path::Path::new("/var/run/netns").join(NS_B);
        let sink = std::thread::spawn(move || -> Result<std::net::UdpSocket> {
            let f = std::fs::File::open(&path)?;
            // SAFETY: setns on this thread only, with a valid namespace fd.
            if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0
            {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            Ok(std::net::UdpSocket::bind((ADDR_B, UDP_SINK_PORT))?)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("netns thread panicked"))??;
        let mut f = mac.clone();
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
        let payload = 64u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&(20 + 8 + payload).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 10, 250, 0, 1, 10, 250, 0, 2]);
        set_ipv4_header_checksum(&mut f[14..]);
        f.extend_from_slice(&5000u16.to_be_bytes());
        f.extend_from_slice(&UDP_SINK_PORT.to_be_bytes());
        f.extend_from_slice(&(8 + payload).to_be_bytes());
        f.extend_from_slice(&[0, 0]); // no checksum (IPv4)
        f.resize(f.len() + payload as usize, 0x55);
        Ok(UdpLoad {
            sender: RawSender::open(NS_A, VETH_A)?,
            frame: f,
            _sink: sink,
        })
    }

    /// Packets/s that reached B's UDP layer (delivered or dropped for a full buffer).
    fn run(&self, secs: u32) -> Result<f64> {
        let frames = vec![self.frame.clone(); 64];
        let before = udp_in_b()?;
        let t0 = Instant::now();
        let limit = Duration::from_secs(secs as u64);
        while t0.elapsed() < limit {
            if self.sender.send_batch(&frames) == 0 {
                bail!("sendmmsg sent nothing");
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        let got = udp_in_b()? - before;
        Ok(got as f64 / dt)
    }
}

/// UDP datagrams that reached namespace B's sockets: InDatagrams + RcvbufErrors.
fn udp_in_b() -> Result<u64> {
    let snmp = Netns::output(NS_B, "cat", &["/proc/net/snmp"])?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        bail!("no Udp lines in /proc/net/snmp");
    };
    let get = |k: &str| -> u64 {
        names
            .split_whitespace()
            .position(|n| n == k)
            .and_then(|i| values.split_whitespace().nth(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(get("InDatagrams") + get("RcvbufErrors"))
}
