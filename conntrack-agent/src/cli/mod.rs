//! Command line: `run` (live capture through the eBPF datapath) and `read` (offline replay, like
//! `zeek -r`).

use crate::config::Config;
use crate::logs::conn_log::LogFormat;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Zeek's `likely_server_ports` in default mode (every protocol script loaded): 73 ports.
pub const DEFAULT_LIKELY_SERVER_PORTS: &str = "21/tcp,22/tcp,25/tcp,53/tcp,79/tcp,80/tcp,81/tcp,88/tcp,135/tcp,139/tcp,143/tcp,389/tcp,443/tcp,445/tcp,465/tcp,502/tcp,514/tcp,563/tcp,585/tcp,587/tcp,614/tcp,631/tcp,636/tcp,989/tcp,990/tcp,992/tcp,993/tcp,995/tcp,1080/tcp,1434/tcp,1883/tcp,2811/tcp,3128/tcp,3268/tcp,3306/tcp,3389/tcp,5222/tcp,5223/tcp,5269/tcp,5432/tcp,6379/tcp,6666/tcp,6667/tcp,6668/tcp,6669/tcp,8000/tcp,8080/tcp,8888/tcp,20000/tcp,53/udp,67/udp,88/udp,123/udp,137/udp,161/udp,162/udp,389/udp,443/udp,514/udp,1812/udp,2123/udp,2152/udp,3389/udp,3544/udp,4011/udp,4754/udp,4789/udp,5060/udp,5072/udp,5353/udp,5355/udp,6081/udp,20000/udp";

#[derive(Parser, Debug)]
#[command(
    name = "conntrack-agent",
    version,
    about = "eBPF connection tracker writing Zeek's conn.log",
    after_help = "Examples:
  conntrack-agent run -i eth0 --log-dir /var/log/conntrack
  conntrack-agent run --config /etc/conntrack/conntrack.toml
  conntrack-agent read trace.pcap --stdout | zeek-cut id.orig_h id.resp_h conn_state

`conntrack-agent help run` and `help read` list every option."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Track live traffic on network interfaces and write conn.log as connections end (needs
    /// root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON).
    #[command(after_help = "Examples:
  conntrack-agent run -i eth0                          # ./logs/conn.log, Ctrl-C to stop
  conntrack-agent run -i eth0 -i eth1 --log-format json --rotate-interval 1h
  conntrack-agent run -i eth0 --pin-dir /sys/fs/bpf/conntrack   # restart without loss
  conntrack-agent run -i span0 --sensor --sensor-drop  # SPAN/TAP monitor port

Signals: SIGINT logs every open connection and exits; SIGTERM does too, or hands over with
--pin-dir; SIGHUP re-reads --config.")]
    Run(RunArgs),
    /// Replay a pcap/pcapng trace and write conn.log (like `zeek -r`).
    #[command(after_help = "Examples:
  conntrack-agent read trace.pcap                      # ./logs/conn.log
  conntrack-agent read trace.pcap -C --engine host     # no checksum checks, no privileges
  conntrack-agent read trace.pcap --stdout --log-format json")]
    Read(ReadArgs),
    /// Remove the tracker's programs that an agent left attached (killed with SIGKILL after
    /// `run --pin-dir`), and its pins.
    #[command(
        long_about = "Remove the tracker's programs that an agent left attached, and its pins.

An agent started with --pin-dir keeps its programs attached through pinned TCX links when
it is killed (SIGKILL, a crash): they go on counting packets, and `run` refuses to attach
a second set next to them. Either start `run` with the same --pin-dir to take them over
(their open connections are logged too), or remove them with this command.

Prints each program and pin it removes; with nothing to remove it says so and exits 0. It
removes a running agent's programs too: stop agents first (SIGINT detaches and removes its
pins by itself).",
        after_help = "Examples:
  conntrack-agent detach --pin-dir /sys/fs/bpf/conntrack   # its pins, and its programs everywhere
  conntrack-agent detach -i eth0                         # our programs on eth0, pinned or not
  conntrack-agent detach                                 # every interface of this namespace"
    )]
    Detach(DetachArgs),
    /// Per-packet cost of the eBPF program with BPF_PROG_TEST_RUN (for `cargo xtask bench`).
    #[command(hide = true)]
    BenchKernel(hidden::BenchKernelArgs),
    /// New UDP flows sent at a given rate by an XDP program in live-frame mode (the scale
    /// section of `cargo xtask bench`; needs root and the eBPF program).
    #[command(hide = true)]
    BenchFlood(hidden::BenchFloodArgs),
    /// Differential fuzzing: generated frames through the kernel and host engines, which must
    /// agree (for `cargo xtask fuzz`; needs root and the eBPF program).
    #[command(hide = true)]
    FuzzKernel(hidden::FuzzKernelArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// The common engine in this process (HashMap).
    Host,
    /// The loaded eBPF program, driven with BPF_PROG_TEST_RUN (needs privileges).
    Kernel,
}

/// Options shared by `run` and `read`.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Not an option: `run` sets it so that logs of an earlier run are set aside, never
    /// truncated (`read` overwrites, as `zeek -r` does).
    #[arg(skip)]
    pub keep_previous_logs: bool,

    /// Directory for conn.log and the other logs (`-`: conn.log to stdout, see --stdout).
    #[arg(help_heading = "Logs", long, default_value = "./logs")]
    pub log_dir: PathBuf,

    /// conn.log format.
    #[arg(help_heading = "Logs", long, value_enum, default_value_t = LogFormat::Tsv)]
    pub log_format: LogFormat,

    /// Site::local_nets (CIDRs, comma-separated or repeated). Default: Zeek's private address
    /// space.
    #[arg(help_heading = "Site", long, value_delimiter = ',')]
    pub local_nets: Vec<String>,

    /// likely_server_ports as PORT/PROTO list (e.g. 80/tcp,53/udp); decides orientation when the
    /// first packet is not a plain SYN. An empty value means none. Default: Zeek's default-mode
    /// set (73 ports; README, "Command line").
    #[arg(
        help_heading = "Site",
        long,
        default_value = DEFAULT_LIKELY_SERVER_PORTS,
        hide_default_value = true
    )]
    pub likely_server_ports: String,

    /// Connections the kernel's flow table holds (BPF map size; `run` and `read --engine
    /// kernel`). Packets of connections that find it full are tracked by the agent itself.
    #[arg(help_heading = "Capture", long, default_value_t = 262_144, value_parser = clap::value_parser!(u32).range(1..))]
    pub table_size: u32,

    /// Capture filter: track only the packets this tcpdump expression matches (libpcap's
    /// syntax, `man pcap-filter`; Zeek's -f), e.g. 'tcp port 80', 'not port 22',
    /// 'tcp[tcpflags] & tcp-syn != 0'. `read` keeps exactly what `tcpdump -r TRACE -w OUT EXPR`
    /// keeps; `run` runs it in the kernel on every frame (as Ethernet), before anything else.
    /// Rejected packets are counted (`filtered`). Set at start: SIGHUP does not change it. An
    /// empty EXPR means none.
    #[arg(help_heading = "Capture", long, short = 'f', value_name = "EXPR")]
    pub filter: Option<String>,

    /// Append Zeek's `community_id` column to conn.log (Community ID v1 flow hash, seed 0), as
    /// Zeek's policy/protocols/conn/community-id-logging does.
    #[arg(help_heading = "Logs", long)]
    pub community_id: bool,

    /// Append Zeek's `orig_l2_addr` and `resp_l2_addr` columns to conn.log: the Ethernet source
    /// and destination addresses of the connection's first packet (they follow the endpoints
    /// when the roles flip), as Zeek's policy/protocols/conn/mac-logging does.
    #[arg(help_heading = "Logs", long)]
    pub mac_logging: bool,

    /// Append Zeek's `vlan` and `inner_vlan` columns to conn.log: the 802.1Q/802.1ad VLAN ids
    /// of the connection's first packet, as Zeek's policy/protocols/conn/vlan-logging does.
    #[arg(help_heading = "Logs", long)]
    pub vlan_logging: bool,

    /// TOML config file, checked at start: capability sections (`[alerts]`, `[inactivity]`,
    /// ...) and any option of this command in `[agent]`/`[run]`/`[read]` (the command line
    /// wins). Unknown keys are errors. `run` re-reads it on SIGHUP. See conntrack.example.toml.
    #[arg(help_heading = "Config", long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Leave conn.log's `service` column unset: no protocol detection on the first payload
    /// bytes of each connection (detection is on by default, as Zeek's analyzers are).
    #[arg(help_heading = "Logs", long)]
    pub no_service: bool,

    /// Extract the payload of every connection to files (Zeek's Conn::default_extract). Finer
    /// selection, caps and quota: the `[contents]` section of --config.
    #[arg(help_heading = "Content extraction", long)]
    pub extract_all: bool,

    /// Directory for extracted contents files. Default: `[contents] extract_dir`, else
    /// `<log-dir>/extract`.
    #[arg(help_heading = "Content extraction", long, value_name = "DIR")]
    pub extract_dir: Option<PathBuf>,

    #[command(flatten)]
    pub ipfix: crate::export::ipfix::IpfixArgs,

    #[command(flatten)]
    pub logs: LogArgs,
}

/// Where logs go and how they rotate (shared by `run` and `read`).
#[derive(Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// Write conn.log to standard output (TSV with headers, or JSON lines) instead of
    /// <log-dir>/conn.log; messages go to stderr. `--log-dir -` does the same.
    #[arg(help_heading = "Logs", long, conflicts_with_all = ["rotate_interval", "rotate_size", "rotate_command"])]
    pub stdout: bool,

    /// Rotate the logs (conn.log, conn_long.log, removal.log) at every multiple of this
    /// interval (e.g. 1h, 15m; Zeek's Log::default_rotation_interval): the file gets `#close`
    /// and is renamed <name>.YYYY-MM-DD-HH-MM-SS.log after its open time (UTC). Network time:
    /// packet time in `read`.
    #[arg(help_heading = "Logs", long, value_name = "DURATION", value_parser = crate::logs::rotate::parse_interval)]
    pub rotate_interval: Option<std::time::Duration>,

    /// Rotate a log before the record that would make it larger than this (bytes, or with a
    /// K, M or G suffix).
    #[arg(help_heading = "Logs", long, value_name = "BYTES", value_parser = crate::logs::rotate::parse_size)]
    pub rotate_size: Option<u64>,

    /// Run this shell command on every rotated file, which is its $1 (Zeek's rotation
    /// postprocessor), e.g. 'gzip "$1"'. Not waited for, except at exit.
    #[arg(help_heading = "Logs", long, value_name = "CMD")]
    pub rotate_command: Option<String>,
}

impl CommonArgs {
    /// conn.log goes to stdout (`--stdout` or `--log-dir -`).
    pub fn to_stdout(&self) -> bool {
        self.logs.stdout || self.log_dir.as_os_str() == "-"
    }

    /// conn.log's optional columns (Zeek's conn policy scripts).
    pub fn columns(&self) -> crate::logs::l2_fields::Columns {
        crate::logs::l2_fields::Columns {
            community_id: self.community_id,
            mac: self.mac_logging,
            vlan: self.vlan_logging,
        }
    }

    /// How conn.log is written (stdout or rotated file).
    pub fn conn_log_options(&self) -> crate::logs::rotate::LogOptions {
        crate::logs::rotate::LogOptions {
            rotation: self.rotation(),
            stdout: self.to_stdout(),
        }
    }

    /// How the other logs in the log directory rotate.
    pub fn rotation(&self) -> crate::logs::rotate::RotationPolicy {
        crate::logs::rotate::RotationPolicy {
            interval: self.logs.rotate_interval,
            size: self.logs.rotate_size,
            command: self.logs.rotate_command.clone(),
            keep_previous: self.keep_previous_logs,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Interface to attach to (repeatable).
    #[arg(help_heading = "Capture", long = "iface", short = 'i', required = true)]
    pub iface: Vec<String>,

    /// Restart without loss: pin the flow table, event queue, counters and TCX links under
    /// DIR/<schema>/ (on a BPF filesystem, e.g. /sys/fs/bpf/conntrack). SIGTERM then hands
    /// over: open connections stay in the kernel, still counted, for the next agent started
    /// with the same DIR; SIGINT stops for good (logs everything, removes the pins).
    #[arg(help_heading = "Capture", long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,

    /// With --pin-dir: SIGTERM stops for good too (logs everything, detaches, removes the
    /// pins), as SIGINT does.
    #[arg(help_heading = "Capture", long, requires = "pin_dir")]
    pub no_handover: bool,

    /// Sensor mode, for SPAN/TAP monitor ports: attach the XDP form of the program to each
    /// --iface (native XDP where the driver supports it, else generic) instead of TC ingress
    /// and egress. Every mirrored packet arrives at ingress; connections are oriented by
    /// Zeek's rules, as always. (Not with --pin-dir: XDP attachments are not pinned.)
    #[arg(help_heading = "Capture", long, conflicts_with = "pin_dir")]
    pub sensor: bool,

    /// With --sensor: drop the mirrored packets after accounting (XDP_DROP) instead of passing
    /// them to the kernel stack, which has nothing to do with them on a monitor port.
    #[arg(help_heading = "Capture", long, requires = "sensor")]
    pub sensor_drop: bool,

    /// With --sensor: how to attach XDP. Generic XDP runs in the stack after GRO: turn GRO/LRO
    /// off on a monitor port.
    #[arg(
        help_heading = "Capture",
        long,
        value_enum,
        default_value_t,
        requires = "sensor"
    )]
    pub sensor_xdp_mode: crate::datapath::kernel::SensorXdpMode,

    #[command(flatten)]
    pub common: CommonArgs,

    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (e.g. 127.0.0.1:9750).
    #[arg(help_heading = "Export", long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// No status line on a terminal (connections, packets/s, events/s, drops, records; redrawn
    /// every second on stderr when it is a terminal).
    #[arg(help_heading = "Logs", long)]
    pub no_status: bool,

    /// Log lines from the eBPF program for rare conditions, on stderr: `error` (a connection
    /// lock left behind), `warn` (the flow table full), `debug` (each frame whose headers could
    /// not be parsed, with the reason). Off by default, and then free.
    #[arg(
        help_heading = "Logs",
        long,
        value_enum,
        value_name = "LEVEL",
        default_value_t
    )]
    pub kernel_log: crate::datapath::kernel::KernelLog,

    /// Size of the event ring buffer in MiB, a power of two. An event is 80 bytes (a reuse or
    /// a threshold crossing about 550): the default holds some 50,000, 130 ms of 400,000 new
    /// connections a second (the kernel wakes the agent when it is a quarter full, else
    /// every 20 ms). The agent maps it twice, so it counts double in its RSS. Grow it when
    /// the summary or the metrics report ring-buffer drops.
    #[arg(help_heading = "Capture", long, value_name = "MIB", default_value_t = 4,
          value_parser = parse_ring_mib)]
    pub ring_size: u32,

    /// Records each log holds in memory while it cannot be written (disk full, I/O error):
    /// tracking goes on, the log is tried again every second and the held records are written
    /// in order once it can be. Records past this are lost and counted (summary, metrics).
    #[arg(help_heading = "Logs", long, value_name = "RECORDS",
          default_value_t = crate::logs::health::DEFAULT_BACKLOG,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub log_backlog: u64,

    /// Decapsulate tunnels nested at most N deep (Zeek's Tunnel::max_depth, at most 8), in
    /// the kernel: VXLAN, Geneve, GRE, GTPv1-U, Teredo and AYIYA on their ports, and IP-in-IP.
    /// Inner connections get tunnel_parents, the tunnels go to tunnel.log. 0 turns it off
    /// (a tunnel's packets are then one connection like any other). SIGHUP applies a new value
    /// from the --config file to the packets that follow (unless it was 0 at start).
    #[arg(help_heading = "Capture", long, value_name = "N",
          default_value_t = DEFAULT_TUNNEL_MAX_DEPTH)]
    pub tunnel_max_depth: u32,
}

/// `--ring-size`: MiB, a power of two from 1 to 1024 (a BPF ring buffer is a power-of-two
/// number of pages).
fn parse_ring_mib(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number of MiB"))?;
    if !(1..=1024).contains(&n) || !n.is_power_of_two() {
        return Err(format!(
            "{n} MiB: the ring buffer's size must be a power of two from 1 to 1024 MiB"
        ));
    }
    Ok(n)
}

#[derive(Args, Debug, Clone)]
pub struct DetachArgs {
    /// Interface to remove the tracker's programs from (repeatable). Default: every interface
    /// of this network namespace. With --pin-dir, only these interfaces' links are unpinned
    /// (the maps go with the last link).
    #[arg(long = "iface", short = 'i', value_name = "IF")]
    pub iface: Vec<String>,

    /// The --pin-dir the agent ran with: its pins are removed (every schema's), which detaches
    /// the programs they hold. Refused while an agent runs with this directory.
    #[arg(long, value_name = "DIR")]
    pub pin_dir: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ReadArgs {
    /// pcap or pcapng file; `-` reads standard input (as `zeek -r -`).
    pub trace: PathBuf,

    #[command(flatten)]
    pub common: CommonArgs,

    /// Do not validate checksums (Zeek's -C).
    #[arg(help_heading = "Replay", long, short = 'C')]
    pub ignore_checksums: bool,

    /// Do not validate checksums of packets whose source address is in these networks
    /// (repeatable; each value may be a comma-separated list).
    #[arg(help_heading = "Replay", long = "ignore-checksums-net")]
    pub ignore_checksums_net: Vec<String>,

    /// Which datapath runs the engine (also env CONNTRACK_ENGINE). Default: kernel when
    /// privileged and the program loads, else host.
    #[arg(help_heading = "Replay", long, value_enum, env = "CONNTRACK_ENGINE")]
    pub engine: Option<Engine>,

    /// Progress on stderr every few seconds (default: when stderr is a terminal).
    #[arg(help_heading = "Replay", long)]
    pub progress: Option<bool>,

    /// Also fire duration thresholds by timer on idle connections, as `run` does. By default a
    /// replay keeps Zeek's rule: a duration threshold fires on the first packet past it.
    #[arg(help_heading = "Replay", long)]
    pub duration_timers: bool,

    /// Decapsulate tunnels nested at most N deep (Zeek's Tunnel::max_depth): VXLAN, Geneve,
    /// GRE (with PPTP, ERSPAN I/II/III, GRE over UDP 4754), GTPv1-U, Teredo, AYIYA and
    /// IP-in-IP. Inner connections are logged with tunnel_parents (the uid of the enclosing
    /// tunnel's connection or tunnel.log entry) and the tunnels in tunnel.log. The default, 4,
    /// is Zeek's; 0 leaves tunnels undecoded (their packets are connections like any other).
    /// Both engines decapsulate (the kernel's in a stage of its own, at most 8 deep).
    #[arg(help_heading = "Replay", long, value_name = "N", default_value_t = DEFAULT_TUNNEL_MAX_DEPTH)]
    pub tunnel_max_depth: u32,
}

/// Zeek's `Tunnel::max_depth`: tunnel layers decapsulated by default.
pub const DEFAULT_TUNNEL_MAX_DEPTH: u32 = 4;

/// The command line merged with the `[agent]`/`[run]`/`[read]` tables of its `--config` file
/// (file_options.rs): the command line wins, then the file, then the defaults. Returns the
/// config file too (the defaults without `--config`): it is read once, here. Help, version and
/// command-line errors exit as clap does.
pub fn parse(argv: Vec<std::ffi::OsString>) -> anyhow::Result<(Cli, Config)> {
    use clap::FromArgMatches;
    // First pass without required options: `--iface` or a trace may come from the file.
    let relaxed = Cli::command().mut_subcommands(|s| s.mut_args(|a| a.required(false)));
    let matches = match relaxed.try_get_matches_from(&argv) {
        Ok(m) => m,
        // Help, version and errors as the real command prints them.
        Err(_) => Cli::command().get_matches_from(&argv),
    };
    let strict = |argv: &[std::ffi::OsString]| -> Cli {
        Cli::command()
            .try_get_matches_from(argv)
            .and_then(|m| Cli::from_arg_matches(&m))
            .unwrap_or_else(|e| e.exit())
    };
    let Some((name, sub)) = matches.subcommand() else {
        return Ok((strict(&argv), Config::default()));
    };
    let path = match sub.try_get_one::<PathBuf>("config") {
        Ok(Some(p)) => p.clone(),
        _ => return Ok((strict(&argv), Config::default())),
    };
    let config = Config::load(Some(&path))?;
    let explicit = |id: &str| {
        matches!(
            sub.value_source(id),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        )
    };
    let extra = file_options::args_to_add(config.options.for_command(name), &explicit);
    let mut merged = argv.clone();
    merged.extend(extra.into_iter().map(Into::into));
    if merged.len() == argv.len() {
        return Ok((strict(&argv), config));
    }
    let cli = Cli::command()
        .try_get_matches_from(&merged)
        .and_then(|m| Cli::from_arg_matches(&m))
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: the options of the file ([agent], [{name}]) with the command line: {}",
                path.display(),
                file_options::clap_message(&e)
            )
        })?;
    Ok((cli, config))
}

/// Parses `80/tcp,53/udp,...` into (port, ip proto) pairs.
pub fn parse_port_list(s: &str) -> anyhow::Result<Vec<(u16, u8)>> {
    let mut out = Vec::new();
    for item in s.split([',', ' ']).map(str::trim).filter(|x| !x.is_empty()) {
        let (p, proto) = item
            .split_once('/')
            .ok_or_else(|| anyhow::anyhow!("bad port {item:?}: expected PORT/PROTO like 80/tcp"))?;
        let port: u16 = p
            .parse()
            .map_err(|_| anyhow::anyhow!("bad port number in {item:?}"))?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => 6,
            "udp" => 17,
            "icmp" => 1,
            _ => anyhow::bail!("bad protocol in {item:?}: expected tcp, udp or icmp"),
        };
        out.push((port, proto));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn default_ports() {
        let v = parse_port_list(DEFAULT_LIKELY_SERVER_PORTS).unwrap();
        assert_eq!(v.len(), 73);
        assert!(v.contains(&(80, 6)));
        assert!(v.contains(&(53, 17)));
        assert!(parse_port_list("").unwrap().is_empty());
        assert!(parse_port_list("80").is_err());
        assert!(parse_port_list("x/tcp").is_err());
    }

    #[test]
    fn read_args() {
        let c = Cli::try_parse_from([
            "conntrack-agent",
            "read",
            "x.pcap",
            "--log-dir",
            "/tmp/o",
            "--ignore-checksums-net",
            "192.168.0.0/16, 192.169.0.0/16",
            "--ignore-checksums-net",
            "10.0.0.0/8",
            "--likely-server-ports",
            "2123/udp,80/tcp",
            "--engine",
            "host",
            "--community-id",
            "--config",
            "/etc/conntrack.toml",
        ])
        .unwrap();
        let Command::Read(r) = c.command else {
            panic!()
        };
        assert!(r.common.community_id);
        assert_eq!(r.common.config, Some(PathBuf::from("/etc/conntrack.toml")));
        assert_eq!(r.ignore_checksums_net.len(), 2);
        assert_eq!(r.engine, Some(Engine::Host));
        let c = Cli::try_parse_from([
            "conntrack-agent",
            "run",
            "--iface",
            "eth0",
            "--iface",
            "eth1",
        ])
        .unwrap();
        let Command::Run(r) = c.command else { panic!() };
        assert_eq!(r.iface, vec!["eth0", "eth1"]);
        assert_eq!(r.common.table_size, 262_144);
        assert!(!r.common.community_id);
        assert_eq!(r.common.config, None);
        assert_eq!(r.ring_size, 4);
    }

    #[test]
    fn ring_size_is_a_power_of_two_of_mib() {
        let run = |size: &str| {
            Cli::try_parse_from(["conntrack-agent", "run", "-i", "eth0", "--ring-size", size])
                .map(|c| match c.command {
                    Command::Run(r) => r.ring_size,
                    _ => unreachable!(),
                })
                .map_err(|e| e.to_string())
        };
        assert_eq!(run("64"), Ok(64));
        assert!(run("24").unwrap_err().contains("power of two"));
        assert!(run("0").unwrap_err().contains("power of two"));
        assert!(run("8M").unwrap_err().contains("whole number of MiB"));
    }
}

pub mod file_options;
pub mod hidden;
