//! What many tests start from: a command line parsed as the agent parses it, and one conn.log
//! record (Zeek's `http/get.pcap` connection) that a test changes with struct-update syntax.

use crate::cli::{Cli, Command, CommonArgs, Engine, ReadArgs};
use crate::logs::record::ConnRecord;
use clap::Parser;
use std::path::Path;

/// `conntrack-agent read TRACE ARGS...`, parsed.
pub fn read_args(trace: &Path, args: &[&str]) -> ReadArgs {
    let trace = trace.display().to_string();
    let mut argv = vec!["conntrack-agent", "read", trace.as_str()];
    argv.extend_from_slice(args);
    match Cli::try_parse_from(argv)
        .expect("a valid read command line")
        .command
    {
        Command::Read(r) => r,
        _ => unreachable!("parsed as read"),
    }
}

/// The options both commands share, from a `read` command line.
pub fn common_args(args: &[&str]) -> CommonArgs {
    read_args(Path::new("t.pcap"), args).common
}

/// A replay of `trace` with `engine` into `log_dir`, quiet and with a small kernel table, plus
/// `args`.
pub fn replay_args(trace: &Path, engine: Engine, log_dir: &Path, args: &[&str]) -> ReadArgs {
    let log_dir = log_dir.display().to_string();
    let mut all = vec![
        "--log-dir",
        log_dir.as_str(),
        "--progress",
        "false",
        "--table-size",
        "1024",
    ];
    all.extend_from_slice(args);
    let mut r = read_args(trace, &all);
    r.engine = Some(engine);
    r
}

/// Zeek's conn.log record of `http/get.pcap` (its baseline line).
pub fn http_get_record() -> ConnRecord {
    ConnRecord {
        ts_ns: 1_362_692_526_939_084_000,
        uid: "CHhAvVGS1DHFjwGM9".into(),
        orig_h: "141.142.228.5".parse().unwrap(),
        orig_p: 59856,
        resp_h: "192.150.187.43".parse().unwrap(),
        resp_p: 80,
        proto: "tcp",
        service: vec![],
        duration_ns: 141_744_000,
        orig_bytes: 136,
        resp_bytes: 5007,
        conn_state: "SF",
        local_orig: Some(false),
        local_resp: Some(false),
        missed_bytes: 0,
        history: "^hADadFf".into(),
        orig_pkts: 6,
        orig_ip_bytes: 448,
        resp_pkts: 7,
        resp_ip_bytes: 5379,
        tunnel_parents: vec![],
        ip_proto: 6,
    }
}

/// The config file `args` names (the defaults without `--config`), as `cli::parse` reads it.
pub fn config_of(args: &ReadArgs) -> crate::config::Config {
    crate::config::Config::load(args.common.config.as_deref()).expect("a valid config file")
}

/// An Ethernet frame of one IPv4 TCP segment from `ends.0`:`ends.1` to `ends.2`:`ends.3`
/// (no options, DF set; the IP header checksum made, the TCP one left 0: for replays that
/// ignore checksums).
pub fn tcp_frame(
    ends: ([u8; 4], u16, [u8; 4], u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let (src, sport, dst, dport) = ends;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(&sport.to_be_bytes());
    ip.extend_from_slice(&dport.to_be_bytes());
    ip.extend_from_slice(&seq.to_be_bytes());
    ip.extend_from_slice(&ack.to_be_bytes());
    ip.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    ip.extend_from_slice(payload);
    crate::capture::checksum::tests::fix_ipv4_header(&mut ip);
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f
}

/// An Ethernet frame of one IPv4 UDP datagram from `ends.0`:`ends.1` to `ends.2`:`ends.3`
/// (both checksums made).
pub fn udp_frame(ends: ([u8; 4], u16, [u8; 4], u16), payload: &[u8]) -> Vec<u8> {
    let (src, sport, dst, dport) = ends;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(&sport.to_be_bytes());
    ip.extend_from_slice(&dport.to_be_bytes());
    ip.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(payload);
    crate::capture::checksum::tests::fix_ipv4_header(&mut ip);
    crate::capture::checksum::tests::fix_udp4(&mut ip);
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f
}
