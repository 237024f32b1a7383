//! Zeek's `scripts.base.protocols.conn.conn_state-RST-behavior` on its own four traces: bare
//! mode (`zeek -b`: only the tunnel ports are likely server ports) with checksums ignored
//! (`-C`), printing `history, conn_state` per connection. The expected lines are the btest
//! baseline (`zeek-conn-semantics.md`): they pin conn_state's RST rules, RSTOS0 only when the
//! history matches `^?S[^HAFGIQ]*R.*`.

use std::process::Command;

use conntrack_tests::connlog::ConnLog;
use conntrack_tests::{agent_path, conformance_dir, is_root};

/// `likely_server_ports` of a bare-mode run: the tunnel packet analyzers' ports.
const BARE_MODE_PORTS: &str = "2123/udp,2152/udp,3544/udp,4754/udp,4789/udp,5072/udp,6081/udp";

/// (trace, the baseline's `history, conn_state` line)
const CASES: &[(&str, &str)] = &[
    ("tcp__single-rst.pcap", "R, OTH"),
    ("tcp__syn-then-rst.pcap", "SR, RSTOS0"),
    ("tcp__syn-then-ack-then-rst.pcap", "SaR, RSTOS0"),
    ("tcp__syn-then-stuff-then-rst.pcap", "SaFR, OTH"),
];

#[test]
fn conn_state_rst_behavior_matches_zeek_baseline() {
    let Some(conf) = conformance_dir() else {
        eprintln!("skipping: ../shared/conformance/traces not found");
        return;
    };
    // The host engine always; the kernel engine (BPF_PROG_TEST_RUN) too when root.
    let engines: &[&str] = if is_root() {
        &["host", "kernel"]
    } else {
        &["host"]
    };
    for (engine, (trace, expected)) in engines
        .iter()
        .flat_map(|e| CASES.iter().map(move |c| (e, c)))
    {
        let out = tempfile::tempdir().unwrap();
        let res = Command::new(agent_path())
            .arg("read")
            .arg(conf.join("traces").join(trace))
            .arg("--log-dir")
            .arg(out.path())
            .args(["--engine", engine, "--ignore-checksums"])
            .arg(format!("--likely-server-ports={BARE_MODE_PORTS}"))
            .output()
            .unwrap();
        assert!(
            res.status.success(),
            "replaying {trace} ({engine} engine) failed: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        let log = ConnLog::read(&out.path().join("conn.log")).unwrap();
        let lines: Vec<String> = log
            .records
            .iter()
            .map(|r| format!("{}, {}", r["history"], r["conn_state"]))
            .collect();
        assert_eq!(lines, [expected.to_string()], "{trace} ({engine} engine)");
    }
}
