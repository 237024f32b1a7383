//! `read` of a generated trace with log rotation and with conn.log on stdout: the records over
//! all rotated files are exactly those of an unrotated run, every file is closed, and the
//! rotated names follow Zeek's `<path>.<open time>.log` on network time.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use conntrack_tests::agent_path;
use conntrack_tests::connlog::{ConnLog, Record};
use conntrack_tests::pcapgen::{ACK, FIN, SYN, TcpConv, Trace, udp_frame};

/// 2023-11-14 22:13:20 UTC, in microseconds.
const T0: u64 = 1_700_000_000_000_000;
const MIN: u64 = 60_000_000;
/// UDP conversations, one every 5 minutes (3 h 20 min of network time).
const UDP_CONVS: u64 = 40;
/// TCP conversations, one every 20 minutes.
const TCP_CONVS: u64 = 10;

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn trace() -> Trace {
    let mut t = Trace::default();
    let mut frames = Vec::new();
    for i in 0..UDP_CONVS {
        let c = (addr("10.0.0.5"), 40000 + i as u16);
        let s = (addr("10.0.1.1"), 53);
        let at = T0 + i * 5 * MIN;
        frames.push((at, udp_frame(c, s, b"query")));
        frames.push((at + 1000, udp_frame(s, c, b"answer!")));
    }
    for i in 0..TCP_CONVS {
        let mut one = Trace::default();
        let mut conv = TcpConv::new(
            (addr("10.0.0.6"), 50000 + i as u16),
            (addr("10.0.1.2"), 80),
            T0 + i * 20 * MIN + 500,
        );
        conv.c(&mut one, SYN, b"");
        conv.s(&mut one, SYN | ACK, b"");
        conv.c(&mut one, ACK, b"");
        conv.c(&mut one, ACK, b"GET / HTTP/1.0\r\n\r\n");
        conv.s(&mut one, ACK, b"HTTP/1.0 200 OK\r\n\r\nhello");
        conv.c(&mut one, FIN | ACK, b"");
        conv.s(&mut one, FIN | ACK, b"");
        conv.c(&mut one, ACK, b"");
        frames.extend(one.frames);
    }
    frames.sort_by_key(|(ts, _)| *ts);
    for (ts, f) in frames {
        t.push(ts, f);
    }
    t
}

struct Run {
    dir: tempfile::TempDir,
    stdout: Vec<u8>,
}

fn read(pcap: &Path, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(agent_path());
    cmd.arg("read").arg(pcap);
    if !args.contains(&"--log-dir") {
        cmd.arg("--log-dir").arg(dir.path());
    }
    let out = cmd.args(["--engine", "host"]).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "read {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Run {
        dir,
        stdout: out.stdout,
    }
}

/// The log files in `dir` whose name starts with `stem.`: rotated ones in name (= time)
/// order, then the current `stem.log`.
fn log_files(dir: &Path, stem: &str) -> Vec<PathBuf> {
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(&format!("{stem}.")) && n != format!("{stem}.log")
        })
        .collect();
    rotated.sort();
    rotated.push(dir.join(format!("{stem}.log")));
    rotated
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Records without their uid (random per run).
fn strip_uids(records: Vec<Record>) -> Vec<Record> {
    records
        .into_iter()
        .map(|mut r| {
            r.remove("uid");
            r
        })
        .collect()
}

fn all_records(files: &[PathBuf]) -> Vec<Record> {
    let mut all = Vec::new();
    for f in files {
        let log = ConnLog::read(f).unwrap();
        assert!(log.closed, "{} has no #close line", f.display());
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.starts_with("#separator"), "{}: no header", f.display());
        all.extend(log.records);
    }
    strip_uids(all)
}

fn setup() -> (tempfile::TempDir, PathBuf, Vec<Record>) {
    let tmp = tempfile::tempdir().unwrap();
    let pcap = tmp.path().join("trace.pcap");
    trace().write(&pcap).unwrap();
    let plain = read(&pcap, &[]);
    let files = log_files(plain.dir.path(), "conn");
    assert_eq!(files.len(), 1, "no rotation asked for: {files:?}");
    let records = all_records(&files);
    assert_eq!(records.len() as u64, UDP_CONVS + TCP_CONVS);
    (tmp, pcap, records)
}

#[test]
fn size_rotation_conserves_records() {
    let (_tmp, pcap, want) = setup();
    let run = read(&pcap, &["--rotate-size", "2000"]);
    let files = log_files(run.dir.path(), "conn");
    assert!(files.len() >= 4, "expected several files: {files:?}");
    for f in &files {
        let size = std::fs::metadata(f).unwrap().len();
        // The limit is checked before each record; `#close` comes on top.
        assert!(size <= 2000 + 40, "{} is {size} bytes", f.display());
        let n = name(f);
        assert!(
            n == "conn.log" || (n.starts_with("conn.2023-11-1") && n.ends_with(".log")),
            "{n}"
        );
    }
    assert_eq!(all_records(&files), want, "the records over all files");
}

#[test]
fn interval_rotation_uses_network_time() {
    let (_tmp, pcap, want) = setup();
    let run = read(&pcap, &["--rotate-interval", "1h"]);
    let files = log_files(run.dir.path(), "conn");
    let names: Vec<String> = files.iter().map(|p| name(p)).collect();
    // As Zeek names them reading a trace: the first file opens with the first packet
    // (22:13:20), the next ones with the first packet past each hour (23:03:20, 00:03:20).
    assert_eq!(
        names,
        [
            "conn.2023-11-14-22-13-20.log",
            "conn.2023-11-14-23-03-20.log",
            "conn.2023-11-15-00-03-20.log",
            "conn.log"
        ]
    );
    // Each file holds the connections removed in its hour: UDP ones 1 min after their
    // packets, TCP ones at their close (packets within a second of the start).
    let hour = |h: u64| T0 - 13 * MIN - 20_000_000 + h * 60 * MIN;
    let removed_at = |r: &Record| -> u64 {
        let ts = (r["ts"].parse::<f64>().unwrap() * 1e6).round() as u64;
        if r["proto"] == "udp" { ts + MIN } else { ts }
    };
    let windows = [
        (0, hour(1)),
        (hour(1), hour(2)),
        (hour(2), hour(3)),
        (hour(3), u64::MAX),
    ];
    for (f, (from, to)) in files.iter().zip(windows) {
        let log = ConnLog::read(f).unwrap();
        assert!(!log.records.is_empty(), "{}", f.display());
        for r in &log.records {
            let at = removed_at(r);
            assert!(from <= at && at < to, "{} holds {r:?}", f.display());
        }
    }
    let second = std::fs::read_to_string(&files[1]).unwrap();
    assert!(second.contains("#open\t2023-11-14-23-03-20\n"), "{second}");
    assert!(
        second.ends_with("#close\t2023-11-15-00-03-20\n"),
        "{second}"
    );
    // The last file closes at the end of the trace (network time), as Zeek's does.
    let last = std::fs::read_to_string(&files[3]).unwrap();
    assert!(last.ends_with("#close\t2023-11-15-01-28-20\n"), "{last}");
    assert_eq!(all_records(&files), want);
}

#[test]
fn the_rotate_command_gets_every_rotated_file() {
    let (_tmp, pcap, want) = setup();
    let run = read(
        &pcap,
        &["--rotate-size", "2000", "--rotate-command", "gzip \"$1\""],
    );
    // `read` waits for the commands before it exits.
    let mut gz: Vec<PathBuf> = std::fs::read_dir(run.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| name(p).ends_with(".log.gz"))
        .collect();
    gz.sort();
    assert!(gz.len() >= 3, "{gz:?}");
    let mut all = Vec::new();
    for f in gz.iter() {
        let out = Command::new("gzip").arg("-dc").arg(f).output().unwrap();
        assert!(out.status.success());
        let log = ConnLog::parse(&String::from_utf8(out.stdout).unwrap());
        assert!(log.closed, "{}", f.display());
        all.extend(log.records);
    }
    all.extend(
        ConnLog::read(&run.dir.path().join("conn.log"))
            .unwrap()
            .records,
    );
    assert_eq!(strip_uids(all), want);
}

#[test]
fn json_rotates_too() {
    let (_tmp, pcap, _) = setup();
    let plain = read(&pcap, &["--log-format", "json"]);
    let lines = |files: &[PathBuf]| -> Vec<serde_json::Value> {
        let mut v = Vec::new();
        for f in files {
            for l in std::fs::read_to_string(f).unwrap().lines() {
                let mut j: serde_json::Value = serde_json::from_str(l).unwrap();
                j.as_object_mut().unwrap().remove("uid");
                v.push(j);
            }
        }
        v
    };
    let want = lines(&log_files(plain.dir.path(), "conn"));
    assert_eq!(want.len() as u64, UDP_CONVS + TCP_CONVS);
    let run = read(&pcap, &["--log-format", "json", "--rotate-size", "3000"]);
    let files = log_files(run.dir.path(), "conn");
    assert!(files.len() >= 3, "{files:?}");
    assert_eq!(lines(&files), want);
}

#[test]
fn stdout_mode_writes_conn_log_to_stdout_only() {
    let (_tmp, pcap, want) = setup();
    for args in [&["--stdout"][..], &["--log-dir", "-"][..]] {
        let run = read(&pcap, args);
        let text = String::from_utf8(run.stdout).unwrap();
        let log = ConnLog::parse(&text);
        assert!(log.closed, "{args:?}: stdout has no #close");
        assert!(text.starts_with("#separator"), "{args:?}");
        assert_eq!(strip_uids(log.records), want, "{args:?}");
        assert!(
            !run.dir.path().join("conn.log").exists(),
            "{args:?}: conn.log written to the directory too"
        );
    }
    // With nowhere to rotate to, rotation is refused up front.
    let out = Command::new(agent_path())
        .arg("read")
        .arg(&pcap)
        .args(["--engine", "host", "--stdout", "--rotate-size", "1000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rotate-size"), "{err}");
}

#[test]
fn rotation_and_format_from_the_config_file() {
    let (tmp, pcap, _) = setup();
    let plain = read(&pcap, &["--log-format", "json"]);
    let count = |files: &[PathBuf]| -> usize {
        files
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(f).unwrap();
                // JSON lines only: the file's log-format applied.
                assert!(text.lines().all(|l| l.starts_with('{')), "{}", f.display());
                text.lines().count()
            })
            .sum()
    };
    let want = count(&log_files(plain.dir.path(), "conn"));
    let cfg = tmp.path().join("conntrack.toml");
    std::fs::write(
        &cfg,
        "[agent]\nlog-format = \"json\"\n\n[read]\nrotate-size = \"3000\"\nengine = \"host\"\n",
    )
    .unwrap();
    let run = read(&pcap, &["--config", cfg.to_str().unwrap()]);
    let files = log_files(run.dir.path(), "conn");
    assert!(files.len() >= 3, "{files:?}");
    assert_eq!(count(&files), want);

    // A misspelt key stops `read` and names the file, line and key.
    std::fs::write(&cfg, "[read]\nrotate-sise = \"3000\"\n").unwrap();
    let out = Command::new(agent_path())
        .arg("read")
        .arg(&pcap)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("conntrack.toml:2:1: unknown option `rotate-sise` in [read]"),
        "{err}"
    );
}

#[test]
fn removal_and_conn_long_logs_rotate_too() {
    let (tmp, pcap, want) = setup();
    let cfg = tmp.path().join("lifecycle.toml");
    // No connection here lasts 1 s: conn_long.log stays empty but rotates with the others.
    std::fs::write(&cfg, "[removal_log]\n[conn_long]\nintervals = [\"1s\"]\n").unwrap();
    let run = read(
        &pcap,
        &["--config", cfg.to_str().unwrap(), "--rotate-interval", "1h"],
    );
    let removal = log_files(run.dir.path(), "removal");
    assert_eq!(removal.len(), 4, "{removal:?}");
    let mut lines = 0;
    for f in &removal {
        for l in std::fs::read_to_string(f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["reason"].is_string(), "{l}");
            lines += 1;
        }
    }
    assert_eq!(lines, want.len(), "one removal line per connection");
    let conn_long = log_files(run.dir.path(), "conn_long");
    let names = |files: &[PathBuf]| -> Vec<String> {
        files
            .iter()
            .map(|p| name(p).split_once('.').unwrap().1.to_string())
            .collect()
    };
    assert_eq!(
        names(&conn_long),
        names(&removal),
        "the same rotation times"
    );
    for f in &conn_long {
        assert!(ConnLog::read(f).unwrap().closed, "{}", f.display());
    }
}

/// `run` in a network namespace (10.93.0.0/24, `ctlogs93-*`; needs root): a 2 s rotation
/// interval on the wall clock while UDP connections come and go; every connection is in
/// exactly one file and every rotated file is closed.
#[test]
fn live_run_rotates_on_the_wall_clock() {
    use conntrack_tests::netns::NetnsPair;
    use std::net::UdpSocket;
    use std::time::Duration;
    if !conntrack_tests::is_root() {
        eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
        return;
    }
    let pair = NetnsPair::named("ctlogs93", 93).expect("creating network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("conntrack.toml");
    std::fs::write(&cfg, "[inactivity]\nudp = \"1s\"\n").unwrap();
    let logs = dir.path().join("logs");
    let agent = pair
        .start_agent(
            &logs,
            &["--config", cfg.to_str().unwrap(), "--rotate-interval", "2s"],
        )
        .expect("starting the agent");
    const PORTS: std::ops::Range<u16> = 6000..6008;
    let (src, dst) = (pair.a_v4.clone(), pair.b_v4.clone());
    NetnsPair::run_in(&pair.a, move || {
        let s = UdpSocket::bind((src.as_str(), 0)).unwrap();
        for p in PORTS {
            s.send_to(b"tick", (dst.as_str(), p)).unwrap();
            // Spread over several intervals (not a timing check: any spread works).
            std::thread::sleep(Duration::from_millis(700));
        }
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let status = agent.stop().expect("stopping the agent");
    assert!(status.success(), "agent exited with {status}");

    let files = log_files(&logs, "conn");
    assert!(files.len() >= 2, "a 2 s interval over ~8 s: {files:?}");
    let mut ports = Vec::new();
    for f in &files {
        let log = ConnLog::read(f).unwrap();
        assert!(log.closed, "{} has no #close", f.display());
        for r in log.records.iter().filter(|r| r["proto"] == "udp") {
            let p: u16 = r["id.resp_p"].parse().unwrap();
            if PORTS.contains(&p) {
                ports.push(p);
            }
        }
    }
    ports.sort();
    assert_eq!(ports, PORTS.collect::<Vec<_>>(), "each connection once");
}
