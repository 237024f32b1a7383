//! The status line of `run`: on a terminal the agent redraws one line with
//! connections, packet and event rates, drops and records written; shutdown messages clear it
//! first; without a terminal nothing of it appears. The terminal is a pseudo-terminal from
//! util-linux `script`; the agent watches a veth in a namespace pair (10.89.0.0/24) while the test pings
//! across it. Needs root; skipped otherwise.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use conntrack_tests::connlog::{ConnLog, num};
use conntrack_tests::netns::NetnsPair;
use conntrack_tests::{agent_path, is_root};

const PINGS: usize = 6;

/// Waits (up to 30 s) until `path` contains `needle`.
fn wait_for_text(path: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}: {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The child processes of `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The last status line drawn in `out` (the text after the last "erase line" sequence that
/// starts with "conns ").
fn last_status(out: &str) -> Option<&str> {
    out.rsplit("\x1b[2K")
        .find(|s| s.starts_with("conns "))
        .map(|s| s.split(['\r', '\n']).next().unwrap_or(s))
}

/// `conns 3 | 5 pkt/s | ...` -> the number after `name`.
fn field(line: &str, name: &str) -> Option<String> {
    line.split(" | ").find_map(|part| {
        let mut words = part.split_whitespace();
        match (words.next(), words.next()) {
            (Some(n), Some(v)) if n == name => Some(v.to_string()),
            (Some(v), Some(n)) if n == name => Some(v.to_string()),
            _ => None,
        }
    })
}

#[test]
fn status_line_on_a_terminal_shows_what_the_agent_tracks() {
    if !is_root() {
        eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
        return;
    }
    let pair = NetnsPair::new(89).expect("creating network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let typescript = dir.path().join("typescript");
    // Inside a pseudo-terminal; `exec` makes the agent script(1)'s own child.
    let agent_cmd = format!(
        "exec {} run --iface {} --log-dir {}",
        agent_path().display(),
        pair.veth_a,
        dir.path().display()
    );
    let mut script = Command::new("ip")
        .args(["netns", "exec", &pair.a, "script", "-qfec", &agent_cmd])
        .arg(&typescript)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starting script(1)");
    wait_for_text(&typescript, "tracking on");
    let agent = children(script.id())
        .into_iter()
        .next()
        .expect("the agent under script(1)");
    let ping = Command::new("ip")
        .args(["netns", "exec", &pair.a, "ping", "-c", &PINGS.to_string()])
        .args(["-i", "0.3", "-W", "2", &pair.b_v4])
        .output()
        .expect("ping");
    assert!(ping.status.success(), "ping failed: {ping:?}");
    // Two more redraws after the last echo.
    std::thread::sleep(Duration::from_millis(2500));
    kill(Pid::from_raw(agent as i32), Signal::SIGINT).unwrap();
    let status = script.wait().expect("waiting for script(1)");
    assert!(
        status.success(),
        "agent under script(1) exited with {status}"
    );

    let out = std::fs::read_to_string(&typescript).unwrap();
    let line = last_status(&out).unwrap_or_else(|| panic!("no status line drawn:\n{out:?}"));
    for name in ["pkt/s", "ev/s", "drops", "records"] {
        assert!(field(line, name).is_some(), "no {name} in {line:?}");
    }
    let conns: u64 = field(line, "conns").unwrap().parse().unwrap();
    assert!(conns >= 1, "the ping connection is not counted: {line:?}");
    assert_eq!(field(line, "drops").as_deref(), Some("0"), "{line:?}");
    // While the pings ran (2 packets every 0.3 s), some redraw showed a packet rate.
    let busiest = out
        .split("\x1b[2K")
        .filter(|s| s.starts_with("conns "))
        .filter_map(|s| field(s, "pkt/s")?.parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!(
        busiest >= 1.0,
        "no packet rate shown while pinging:\n{out:?}"
    );
    // The shutdown message comes after the line was cleared, on a line of its own.
    let stop = out
        .find("conntrack-agent: stopping: logging open connections")
        .expect("no shutdown message");
    assert!(
        out[..stop].ends_with("\x1b[2K"),
        "the status line was not cleared first: {:?}",
        &out[stop.saturating_sub(100)..stop]
    );

    // What the agent logged is what was sent: one ICMP connection with every echo.
    let log = ConnLog::read(&dir.path().join("conn.log")).unwrap();
    let icmp: Vec<_> = log
        .records
        .iter()
        .filter(|r| r["proto"] == "icmp" && r["id.resp_h"] == pair.b_v4)
        .collect();
    assert_eq!(icmp.len(), 1, "{:?}", log.records);
    assert_eq!(num(icmp[0], "orig_pkts"), PINGS as u64);
}

#[test]
fn no_status_line_without_a_terminal() {
    if !is_root() {
        eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
        return;
    }
    let pair = NetnsPair::named("ctt89n", 89).expect("creating network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr");
    let mut agent = Command::new("ip")
        .args(["netns", "exec", &pair.a])
        .arg(agent_path())
        .args(["run", "--iface", &pair.veth_a, "--log-dir"])
        .arg(dir.path())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("starting the agent");
    wait_for_text(&err_path, "tracking on");
    // Longer than a redraw interval.
    std::thread::sleep(Duration::from_millis(2500));
    // `ip netns exec` execs the agent: this is its pid.
    kill(Pid::from_raw(agent.id() as i32), Signal::SIGINT).unwrap();
    let status = agent.wait().unwrap();
    assert!(status.success(), "agent exited with {status}");
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(stderr.contains("tracking on"), "{stderr}");
    assert!(!stderr.contains("pkt/s"), "status line on a pipe: {stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "escape sequences on a pipe: {stderr}"
    );
}
