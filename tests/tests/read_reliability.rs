//! `read` when the replay does not simply run to the end of a good file: stop signals, a
//! damaged record, the trace on standard input, checksum offloading, and `--engine kernel`
//! without privileges. Traces are generated here (pcapgen).

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use conntrack_tests::agent_path;
use conntrack_tests::pcapgen::{ACK, FIN, SYN, TcpConv, Trace, udp_frame};

const T0: u64 = 1_700_000_000_000_000;

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `n` short TCP conversations and, between them, a DNS-like UDP exchange each, one every
/// 10 ms: many connections, each closed or timed out at a different point.
fn many_conversations(n: u32) -> Trace {
    let mut t = Trace::default();
    for i in 0..n {
        let client = addr(&format!(
            "10.{}.{}.{}",
            1 + i / 65536,
            (i / 256) % 256,
            i % 256
        ));
        let ts = T0 + u64::from(i) * 10_000;
        let mut c = TcpConv::new((client, 40000), (addr("192.0.2.1"), 80), ts);
        c.c(&mut t, SYN, b"");
        c.s(&mut t, SYN | ACK, b"");
        c.c(&mut t, ACK, b"GET / HTTP/1.0\r\n\r\n");
        c.s(&mut t, ACK | FIN, b"HTTP/1.0 200 OK\r\n\r\n");
        c.c(&mut t, ACK | FIN, b"");
        let q = udp_frame((client, 5353), (addr("192.0.2.53"), 53), b"query");
        t.push(ts + 500, q);
    }
    t.frames.sort_by_key(|f| f.0);
    t
}

fn read_cmd(trace: &Path, log_dir: &Path) -> Command {
    let mut c = Command::new(agent_path());
    c.arg("read")
        .arg(trace)
        .arg("--log-dir")
        .arg(log_dir)
        .args(["--engine", "host", "--progress", "false"]);
    c
}

/// conn.log's record lines (no `#` lines) without the uid column, which is random.
fn records(log_dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log_dir.join("conn.log")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut f: Vec<&str> = l.split('\t').collect();
            f.remove(1);
            f.join("\t")
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits for `child` (at most a minute: a replay that ignores the signal fails the test).
fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("read did not exit within a minute of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The replay reads the trace from a pipe that stays open: once more of it has been written
/// than the pipe holds, the agent is reading (its handlers are installed before it opens
/// its input), and it cannot have seen the end of the trace. The signal then stops it mid-way.
fn stop_with(signal: nix::sys::signal::Signal, status: i32, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("many.pcap");
    many_conversations(20_000).write(&trace).unwrap();
    let bytes = std::fs::read(&trace).unwrap();
    let logs = dir.path().join("logs");
    let mut child = read_cmd(Path::new("-"), &logs)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let half = bytes.len() / 2;
    assert!(half > 1 << 20, "the trace must be larger than the pipe");
    stdin.write_all(&bytes[..half]).unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, signal).unwrap();
    let st = wait(&mut child);
    drop(stdin);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(st.code(), Some(status), "{name}: {st:?}; stderr: {err}");
    let needle = format!("replay interrupted by {name} after ");
    let at = err.find(&needle).unwrap_or_else(|| panic!("{err}"));
    let n: u64 = err[at + needle.len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{err}"));
    let total = 20_000 * 6;
    assert!(
        n > 0 && n < total,
        "stopped after {n} of {total} packets: {err}"
    );
    let text = std::fs::read_to_string(logs.join("conn.log")).unwrap();
    assert!(text.ends_with('\n'), "conn.log ends mid-line");
    assert!(
        text.lines().last().unwrap().starts_with("#close"),
        "no #close"
    );
    let width = text
        .lines()
        .find(|l| l.starts_with("#fields"))
        .unwrap()
        .split('\t')
        .count()
        - 1;
    let recs: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(!recs.is_empty());
    for l in &recs {
        assert_eq!(l.split('\t').count(), width, "cut line: {l}");
    }
    // The drain logged the connections still open at the stop: the last UDP flows (1 min
    // timeout) are there, as at the end of input.
    assert!(
        recs.iter().filter(|l| l.contains("\tudp\t")).count() > 0,
        "no UDP flow drained"
    );
}

#[test]
fn sigint_stops_drains_and_exits_130() {
    stop_with(nix::sys::signal::Signal::SIGINT, 130, "SIGINT");
}

#[test]
fn sigterm_stops_drains_and_exits_143() {
    stop_with(nix::sys::signal::Signal::SIGTERM, 143, "SIGTERM");
}

/// Offset of record `k` (1-based) of a pcap written by pcapgen (little-endian, 24-byte header).
fn record_offset(bytes: &[u8], k: usize) -> usize {
    let mut at = 24;
    for _ in 1..k {
        let incl = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        at += 16 + incl as usize;
    }
    at
}

#[test]
fn corrupt_record_gives_the_records_of_the_file_cut_there() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.pcap");
    many_conversations(300).write(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let k = 898;
    let at = record_offset(&bytes, k);
    let mut bad = bytes.clone();
    bad[at + 8..at + 12].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    let (bad_trace, cut_trace) = (dir.path().join("bad.pcap"), dir.path().join("cut.pcap"));
    std::fs::write(&bad_trace, &bad).unwrap();
    std::fs::write(&cut_trace, &bytes[..at]).unwrap();
    let (bad_logs, cut_logs) = (dir.path().join("bad"), dir.path().join("cut"));
    let out = read_cmd(&bad_trace, &bad_logs).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("byte offset {at}")), "{err}");
    assert!(err.contains(&format!("record {k}")), "{err}");
    assert!(err.contains("captured length 2147483647"), "{err}");
    let cut = read_cmd(&cut_trace, &cut_logs).output().unwrap();
    assert!(cut.status.success(), "{}", stderr(&cut));
    let (b, c) = (records(&bad_logs), records(&cut_logs));
    assert!(c.len() > 10, "{c:?}");
    assert_eq!(b, c);
    let text = std::fs::read_to_string(bad_logs.join("conn.log")).unwrap();
    assert!(text.contains("\n#close\t"), "no #close");
}

#[test]
fn stdin_replay_equals_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.pcap");
    many_conversations(500).write(&trace).unwrap();
    let (file_logs, stdin_logs) = (dir.path().join("file"), dir.path().join("stdin"));
    let out = read_cmd(&trace, &file_logs).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut child = read_cmd(Path::new("-"), &stdin_logs)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bytes = std::fs::read(&trace).unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("standard input"), "{}", stderr(&out));
    let (f, s) = (records(&file_logs), records(&stdin_logs));
    assert!(f.len() >= 1000, "{}", f.len());
    assert_eq!(f, s);
    // Garbage on standard input is named as such.
    let mut child = read_cmd(Path::new("-"), &dir.path().join("junk"))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"not a capture")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("standard input: not a pcap"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_tcp_checksums_print_the_offload_hint() {
    let dir = tempfile::tempdir().unwrap();
    let good = many_conversations(50);
    let mut bad = Trace::default();
    for (ts, f) in &good.frames {
        let mut f = f.clone();
        // IPv4 over Ethernet, 20-byte IP header: TCP's checksum at 14 + 20 + 16.
        if f[14 + 9] == 6 {
            f[14 + 20 + 16] ^= 0x5a;
        }
        bad.push(*ts, f);
    }
    let hint = "--ignore-checksums";
    for (name, trace, want) in [("good", &good, false), ("bad", &bad, true)] {
        let path = dir.path().join(format!("{name}.pcap"));
        trace.write(&path).unwrap();
        let out = read_cmd(&path, &dir.path().join(name)).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.contains(hint), want, "{name}: {err}");
        if want {
            assert!(err.contains("invalid TCP checksums"), "{err}");
        }
    }
    // The same trace with -C uses every packet and needs no hint.
    let path = dir.path().join("bad.pcap");
    let out = read_cmd(&path, &dir.path().join("c"))
        .arg("-C")
        .output()
        .unwrap();
    assert!(!stderr(&out).contains(hint), "{}", stderr(&out));
}

/// Without privileges `--engine kernel` fails before anything is created.
#[test]
fn kernel_engine_unprivileged_creates_no_log_dir() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if !conntrack_tests::is_root() {
        eprintln!("skipping: needs root to run the agent as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Writable by the unprivileged user: a log directory could be created in it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let trace = dir.path().join("t.pcap");
    many_conversations(2).write(&trace).unwrap();
    std::fs::set_permissions(&trace, std::fs::Permissions::from_mode(0o644)).unwrap();
    let logs = dir.path().join("logs");
    let out = Command::new(agent_path())
        .arg("read")
        .arg(&trace)
        .arg("--log-dir")
        .arg(&logs)
        .args(["--engine", "kernel"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--engine host"), "{}", stderr(&out));
    assert!(
        !logs.exists(),
        "the log directory was created before the failure"
    );
}
