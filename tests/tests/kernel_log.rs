//! `run --kernel-log LEVEL`: the eBPF program's log lines for rare conditions reach stderr when
//! asked for, and only then. The rare condition here is a full flow table (`--table-size 1`),
//! which must still lose no connection. Needs root (CAP_BPF, CAP_NET_ADMIN); skipped otherwise.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use conntrack_tests::connlog::ConnLog;
use conntrack_tests::is_root;
use conntrack_tests::netns::{NetnsPair, wait_for_file};

/// Runs the agent on namespace b's veth with `--kernel-log level` and a one-entry flow table,
/// sends one datagram to each of three ports from a; returns (stderr, conn.log).
fn full_table_run(level: &str, subnet: u8) -> (String, ConnLog) {
    let pair = NetnsPair::named(&format!("klog-{level}"), subnet).expect("creating namespaces");
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr");
    let mut agent = Command::new("ip")
        .args(["netns", "exec", &pair.b])
        .arg(conntrack_tests::agent_path())
        .args(["run", "--iface", &pair.veth_b, "--table-size", "1"])
        .args(["--kernel-log", level, "--log-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("starting the agent");
    assert!(
        wait_for_file(&dir.path().join("conn.log"), Duration::from_secs(20)),
        "the agent did not open conn.log"
    );
    let dst_ip = pair.b_v4.parse().unwrap();
    let src = SocketAddr::new(pair.a_v4.parse().unwrap(), 0);
    NetnsPair::run_in(&pair.a, move || {
        let s = UdpSocket::bind(src).unwrap();
        for port in [7001, 7002, 7003] {
            s.send_to(b"hello", SocketAddr::new(dst_ip, port)).unwrap();
        }
    })
    .join()
    .unwrap();
    // The agent reads the program's log lines with its events (every 20 ms).
    std::thread::sleep(Duration::from_millis(500));
    let pid = nix::unistd::Pid::from_raw(agent.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = agent.wait().unwrap();
    assert!(status.success(), "agent exited with {status}");
    drop(pair);
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    let log = ConnLog::read(&dir.path().join("conn.log")).unwrap();
    (stderr, log)
}

#[test]
fn a_full_flow_table_is_logged_by_the_program_only_when_asked() {
    if !is_root() {
        eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
        return;
    }
    let (stderr, log) = full_table_run("warn", 91);
    assert!(
        stderr.contains("kernel] flow table full"),
        "no kernel log line for the full table: {stderr}"
    );
    // The connections that found the table full are tracked by the agent: none is lost.
    for port in [7001, 7002, 7003] {
        log.one("udp", port);
    }

    let (stderr, log) = full_table_run("off", 92);
    assert!(
        !stderr.contains("kernel]"),
        "kernel log lines without --kernel-log: {stderr}"
    );
    for port in [7001, 7002, 7003] {
        log.one("udp", port);
    }
}
