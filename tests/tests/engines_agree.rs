//! The kernel engine (the loaded TC program through BPF_PROG_TEST_RUN) and the host engine (the
//! same flow code compiled for the host) must write the same conn.log, uids aside, for every
//! trace of Zeek's conformance corpus.

use std::path::Path;
use std::process::Command;

use conntrack_tests::{agent_path, conformance_dir, is_root};

/// conn.log data lines with the uid column removed, sorted (removal order may differ only
/// where timers fire at the same instant).
fn records_without_uid(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("conn.log")).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut cols: Vec<&str> = l.split('\t').collect();
            cols.remove(1);
            cols.join("\t")
        })
        .collect();
    lines.sort();
    lines
}

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

#[test]
fn kernel_and_host_engines_write_identical_conn_logs() {
    if !is_root() {
        eprintln!("skipping: the kernel engine needs root");
        return;
    }
    let Some(conf) = conformance_dir() else {
        eprintln!("skipping: ../shared/conformance/traces not found");
        return;
    };
    let mut traces: Vec<_> = std::fs::read_dir(conf.join("traces"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    traces.sort();
    let mut disagreements = Vec::new();
    for trace in &traces {
        let (h, k) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let host = replay(trace, "host", h.path(), &[]);
        let kernel = replay(trace, "kernel", k.path(), &[]);
        if host != kernel {
            disagreements.push(trace.display().to_string());
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} traces differ between engines: {disagreements:#?}",
        disagreements.len(),
        traces.len()
    );
    eprintln!("{} traces: kernel and host engines agree", traces.len());
}

/// With a kernel table far too small, the packets that find it full go to the agent, which
/// tracks them itself: nothing is lost and the log is the one the host engine writes.
#[test]
fn full_kernel_table_loses_no_connection() {
    if !is_root() {
        eprintln!("skipping: the kernel engine needs root");
        return;
    }
    let Some(conf) = conformance_dir() else {
        eprintln!("skipping: ../shared/conformance/traces not found");
        return;
    };
    let trace = conf.join("traces/wikipedia.pcap");
    let (h, k) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let host = replay(&trace, "host", h.path(), &[]);
    let res = Command::new(agent_path())
        .arg("read")
        .arg(&trace)
        .arg("--log-dir")
        .arg(k.path())
        .args(["--engine", "kernel", "--table-size", "4"])
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
