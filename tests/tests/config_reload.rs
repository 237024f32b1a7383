//! SIGHUP live: the agent runs in a network namespace with `[inactivity] udp = "1h"` and an
//! alert rule no test connection reaches; the test rewrites the file (first with an error,
//! which must leave the agent running with its old settings, then with `udp = "2s"` and the
//! rule's threshold at 3 packets), sends SIGHUP, and sees UDP connections made afterwards
//! logged while the agent runs and alerted on, when under the old file none would be.
//! Needs root; skipped otherwise. Subnet 93 and the `ctlogs` prefix are this test's.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use conntrack_tests::connlog::ConnLog;
use conntrack_tests::is_root;
use conntrack_tests::netns::NetnsPair;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Five UDP datagrams from namespace a to b per port (each port its own connection).
fn send_udp(pair: &NetnsPair, ports: Vec<u16>) {
    let (src, dst) = (pair.a_v4.clone(), pair.b_v4.clone());
    NetnsPair::run_in(&pair.a, move || {
        let s = UdpSocket::bind((src.as_str(), 0)).unwrap();
        for p in ports {
            for _ in 0..5 {
                s.send_to(b"hello", (dst.as_str(), p)).unwrap();
            }
        }
    })
    .join()
    .unwrap();
}

fn logged_ports(path: &std::path::Path) -> Vec<u16> {
    ConnLog::read(path)
        .map(|l| {
            l.records
                .iter()
                .filter(|r| r["proto"] == "udp")
                .map(|r| r["id.resp_p"].parse().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// The responder ports of the connections in alerts.log, per rule.
fn alerted_ports(path: &std::path::Path) -> Vec<(String, u16)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let port = v["conn"]["id.resp_p"].as_u64().unwrap() as u16;
            (v["rule"].as_str().unwrap().to_string(), port)
        })
        .collect()
}

const RULE: &str = "[[alerts.rules]]\nname = \"chatty\"\nmetric = \"orig_packets\"\n";

#[test]
fn sighup_applies_new_timeouts_and_alert_rules() {
    if !is_root() {
        eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
        return;
    }
    let pair = NetnsPair::named("ctlogs93", 93).expect("creating network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("conntrack.toml");
    std::fs::write(
        &cfg,
        format!("[inactivity]\nudp = \"1h\"\n{RULE}threshold = 1000000\n"),
    )
    .unwrap();
    let agent = pair
        .start_agent(dir.path(), &["--config", cfg.to_str().unwrap()])
        .expect("starting the agent");
    let conn_log = dir.path().join("conn.log");
    let pid = Pid::from_raw(agent.pid());

    // Under the old timeout.
    send_udp(&pair, vec![5001]);

    // A broken file: logged and ignored; the agent keeps running with `udp = "1h"`.
    std::fs::write(
        &cfg,
        format!("[inactivity]\nudp = \"2 fortnights\"\n{RULE}threshold = 3\n"),
    )
    .unwrap();
    kill(pid, Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(500));

    std::fs::write(
        &cfg,
        format!("[inactivity]\nudp = \"2s\"\n{RULE}threshold = 3\n"),
    )
    .unwrap();
    kill(pid, Signal::SIGHUP).unwrap();

    // The reload happens when the agent gets to the signal: new connections, one a second,
    // until one is logged by the new 2 s timeout (under the old one: after an hour).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut port = 5100;
    let seen = loop {
        send_udp(&pair, vec![port]);
        port += 1;
        std::thread::sleep(Duration::from_secs(1));
        let ports = logged_ports(&conn_log);
        if ports.iter().any(|&p| p >= 5100) {
            break ports;
        }
        assert!(
            Instant::now() < deadline,
            "no connection made after SIGHUP was logged within 60 s: {ports:?}"
        );
    };
    assert!(
        !seen.contains(&5001),
        "the connection made before the reload keeps its 1 h timeout: {seen:?}"
    );

    let status = agent.stop().expect("stopping the agent");
    assert!(status.success(), "agent exited with {status}");
    // Still there at the end: drained at shutdown.
    assert!(logged_ports(&conn_log).contains(&5001));

    // The new rule alerted on connections made after the reload (5 packets > 3), not on the
    // one armed with the old threshold.
    let alerts = alerted_ports(&dir.path().join("alerts.log"));
    assert!(
        alerts
            .iter()
            .any(|(rule, p)| rule == "chatty" && *p >= 5100),
        "{alerts:?}"
    );
    assert!(!alerts.iter().any(|(_, p)| *p == 5001), "{alerts:?}");
}
