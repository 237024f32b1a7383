//! The kernel engine (the loaded TC program through BPF_PROG_TEST_RUN) and the host engine (the
//! same flow code compiled for the host) must write the same conn.log, uids aside, for every
//! trace of Zeek's conformance corpus.

use std::path::{Path, PathBuf};
use std::process::Command;

use conntrack_tests::{agent_path, conformance_dir, is_root, records_without_uid};

fn replay(trace: &Path, engine: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let res = Command::new(agent_path())
        .arg("read")
        .arg(trace)
        .arg("--log-dir")
        .arg(out)
        .args(["--engine", engine])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{engine} engine failed on {}: {}",
        trace.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    records_without_uid(out)
}

/// Every trace with the replay settings of its conformance cases (checksum policy, likely
/// server ports), as `conformance.py` runs them; traces without a case with the defaults.
fn runs(conf: &Path) -> Vec<(PathBuf, Vec<String>)> {
    let mut runs: Vec<(PathBuf, Vec<String>)> = Vec::new();
    let cases = std::fs::read_to_string(conf.join("cases.jsonl")).unwrap_or_default();
    for line in cases.lines().filter(|l| !l.trim().is_empty()) {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let args = conntrack_tests::case_replay_args(&case["replay"]);
        let run = (conf.join(case["trace"].as_str().unwrap()), args);
        if !runs.contains(&run) {
            runs.push(run);
        }
    }
    let mut traces: Vec<PathBuf> = std::fs::read_dir(conf.join("traces"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    traces.sort();
    for t in traces {
        if !runs.iter().any(|(p, _)| *p == t) {
            runs.push((t, Vec::new()));
        }
    }
    runs
}

/// The conformance corpus, when the kernel engine can run here (root) and the corpus exists.
fn kernel_and_corpus() -> Option<PathBuf> {
    if !is_root() {
        eprintln!("skipping: the kernel engine needs root");
        return None;
    }
    let conf = conformance_dir();
    if conf.is_none() {
        eprintln!("skipping: ../shared/conformance/traces not found");
    }
    conf
}

#[test]
fn kernel_and_host_engines_write_identical_conn_logs() {
    let Some(conf) = kernel_and_corpus() else {
        return;
    };
    let runs = runs(&conf);
    let mut disagreements = Vec::new();
    for (trace, args) in &runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (h, k) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let host = replay(trace, "host", h.path(), &args);
        let kernel = replay(trace, "kernel", k.path(), &args);
        if host != kernel {
            disagreements.push(format!("{} {}", trace.display(), args.join(" ")));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} runs differ between engines: {disagreements:#?}",
        disagreements.len(),
        runs.len()
    );
    eprintln!("{} runs: kernel and host engines agree", runs.len());
}

/// With a kernel table far too small, the packets that find it full go to the agent, which
/// tracks them itself: nothing is lost and the log is the one the host engine writes. (Those
/// packets reach the agent as headers only, so their connections' `service` stays unset, as
/// the README says: the comparison leaves detection off.)
#[test]
fn full_kernel_table_loses_no_connection() {
    let Some(conf) = kernel_and_corpus() else {
        return;
    };
    let trace = conf.join("traces/wikipedia.pcap");
    let (h, k) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let host = replay(&trace, "host", h.path(), &["--no-service"]);
    let res = Command::new(agent_path())
        .arg("read")
        .arg(&trace)
        .arg("--log-dir")
        .arg(k.path())
        .args(["--engine", "kernel", "--table-size", "4", "--no-service"])
        .output()
        .unwrap();
    assert!(res.status.success());
    let summary = String::from_utf8_lossy(&res.stderr);
    assert!(
        summary.contains("found the kernel table full"),
        "the summary must account for the overflow: {summary}"
    );
    assert!(
        host.len() > 4,
        "the trace must hold more connections than the table"
    );
    assert_eq!(records_without_uid(k.path()), host);
}
