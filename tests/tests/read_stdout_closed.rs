//! `read --stdout | head`: the reader closes the pipe early. The agent drops the rest quietly
//! (one warning), and its summary says how many records reached the reader instead of
//! claiming every connection was logged to stdout (issue 17).

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Command, Stdio};

use conntrack_tests::agent_path;
use conntrack_tests::pcapgen::{Trace, udp_frame};

#[test]
fn a_reader_that_closes_stdout_early_is_reported_truthfully() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("flows.pcap");
    let mut t = Trace::default();
    let (a, b): (IpAddr, IpAddr) = ("10.1.0.1".parse().unwrap(), "10.1.0.2".parse().unwrap());
    // Enough records to overflow the pipe's buffer: the agent is still writing when it closes.
    let flows = 20_000u32;
    for i in 0..flows {
        let port = 1024 + (i % 60_000) as u16;
        let dst = (b, 9000 + (i / 60_000) as u16);
        t.push(1_000_000 + u64::from(i), udp_frame((a, port), dst, b"x"));
    }
    t.write(&trace).unwrap();

    let mut child = Command::new(agent_path())
        .args(["read", "--engine", "host", "--stdout"])
        .arg(&trace)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The pipe's read end is closed here.
    assert!(first.starts_with("#separator"), "{first:?}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert!(
        !stderr.contains("connections logged to stdout"),
        "claims every record reached stdout: {stderr}"
    );
    let reached: u64 = stderr
        .split(" logged to stdout before its reader closed it")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of records that reached the reader: {stderr}"));
    assert!(reached < u64::from(flows), "{stderr}");
    assert_eq!(
        stderr.matches("closed by its reader:").count(),
        1,
        "one warning: {stderr}"
    );
}

/// `--log-dir` naming a file: said so, not "File exists" (issue 17).
#[test]
fn a_file_given_as_log_dir_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("afile");
    std::fs::write(&file, "not a directory").unwrap();
    let trace = dir.path().join("one.pcap");
    let mut t = Trace::default();
    let (a, b): (IpAddr, IpAddr) = ("10.1.0.1".parse().unwrap(), "10.1.0.2".parse().unwrap());
    t.push(1_000_000, udp_frame((a, 1234), (b, 9000), b"x"));
    t.write(&trace).unwrap();
    for cmd in [
        &["read", "--engine", "host"][..],
        &["run", "--iface", "ctnone0"],
    ] {
        let out = Command::new(agent_path())
            .args(cmd)
            .arg("--log-dir")
            .arg(&file)
            .args(if cmd[0] == "read" {
                vec![&trace]
            } else {
                vec![]
            })
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("afile is not a directory") && !stderr.contains("File exists"),
            "{cmd:?}: {stderr}"
        );
    }
}
