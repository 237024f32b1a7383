//! The log disk fills while the agent runs, then gets space back: the agent keeps tracking,
//! holds the records it cannot write and writes them once it can. Every connection made
//! before, during and after is logged exactly once, no line is split, and the agent never
//! exits on its own. (Issue 17: `run` used to exit on ENOSPC after a half-written record.)
//! Needs root (namespaces, eBPF, a tmpfs mount); skipped otherwise.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use conntrack_tests::connlog::ConnLog;
use conntrack_tests::is_root;
use conntrack_tests::netns::NetnsPair;

const SUBNET: u8 = 110;
const PORT: u16 = 7100;

/// A small tmpfs, unmounted on drop (also when the test panics).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(st.success(), "mounting a tmpfs on {}", dir.path().display());
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        loop {
            if let Err(e) = f.write_all(&block) {
                assert_eq!(e.raw_os_error(), Some(28), "filling: {e}");
                return path;
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// `n` TCP connections from namespace a to the server in b, each sending a little and closing;
/// returns the client ports (one connection each).
fn connections(pair: &NetnsPair, n: usize) -> Vec<u16> {
    let srv: SocketAddr = format!("{}:{PORT}", pair.b_v4).parse().unwrap();
    let server = NetnsPair::run_in(&pair.b, move || {
        let l = TcpListener::bind(srv).unwrap();
        for _ in 0..n {
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(b"bye").unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let client = NetnsPair::run_in(&pair.a, move || {
        (0..n)
            .map(|_| {
                let mut c = TcpStream::connect_timeout(&srv, Duration::from_secs(5)).unwrap();
                let port = c.local_addr().unwrap().port();
                c.write_all(b"hello").unwrap();
                c.shutdown(Shutdown::Write).unwrap();
                let mut back = Vec::new();
                c.read_to_end(&mut back).unwrap();
                port
            })
            .collect::<Vec<u16>>()
    });
    let ports = client.join().unwrap();
    server.join().unwrap();
    ports
}

/// conn.log's lines: every one whole (a header line or a record with every field).
fn whole_lines(path: &Path) -> ConnLog {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "conn.log ends in a cut line"
    );
    let log = ConnLog::parse(&text);
    let fields = text
        .lines()
        .find_map(|l| l.strip_prefix("#fields\t"))
        .map_or(0, |f| f.split('\t').count());
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert_eq!(line.split('\t').count(), fields, "split record: {line:?}");
    }
    log
}

/// Records to our server, by client port.
fn by_client_port(log: &ConnLog) -> BTreeMap<u16, usize> {
    let mut seen = BTreeMap::new();
    for r in log.by_resp("tcp", PORT) {
        *seen
            .entry(r["id.orig_p"].parse::<u16>().unwrap())
            .or_insert(0) += 1;
    }
    seen
}

/// Waits until conn.log holds records of all `ports`.
fn wait_logged(path: &Path, ports: &[u16], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let seen = by_client_port(&whole_lines(path));
        if ports.iter().all(|p| seen.contains_key(p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

#[test]
fn a_full_log_disk_loses_no_record_and_the_agent_goes_on() {
    if !is_root() {
        eprintln!("skipping: needs root (namespaces, eBPF, mount)");
        return;
    }
    let disk = SmallDisk::mount(256 * 1024);
    let pair = NetnsPair::named("ctdisk", SUBNET).expect("creating network namespaces");
    let logs = disk.path().join("logs");
    let conn_log = logs.join("conn.log");
    let mut agent = pair.start_agent(&logs, &["--no-status"]).expect("starting");

    // Closed connections are logged 5 s after their last packet (Zeek's tcp_close_delay).
    let before = connections(&pair, 10);
    assert!(
        wait_logged(&conn_log, &before, Duration::from_secs(20)),
        "the first connections were not logged"
    );

    let filler = disk.fill();
    let during = connections(&pair, 30);
    // Past the close delay and a few retries: these records are held, not written.
    std::thread::sleep(Duration::from_secs(8));
    let log = whole_lines(&conn_log);
    let seen = by_client_port(&log);
    assert!(
        during.iter().any(|p| !seen.contains_key(p)),
        "the disk was full, yet every record was written: the test did not fill it"
    );
    assert!(agent.running(), "the agent exited when its disk filled");

    std::fs::remove_file(filler).unwrap();
    let after = connections(&pair, 10);
    let all: Vec<u16> = [&before[..], &during, &after].concat();
    assert!(
        wait_logged(&conn_log, &all, Duration::from_secs(20)),
        "held records were not written once the disk had space again"
    );
    let status = agent.stop().expect("stopping the agent");
    assert!(status.success(), "agent exited with {status}");

    let log = whole_lines(&conn_log);
    assert!(log.closed, "no #close line");
    let seen = by_client_port(&log);
    for p in &all {
        assert_eq!(seen.get(p), Some(&1), "client port {p}: {seen:?}");
    }
    assert_eq!(
        seen.len(),
        all.len(),
        "records of other connections: {seen:?}"
    );
}

/// A trace of `flows` UDP flows of `datagrams` datagrams of `size` bytes each.
fn udp_trace(path: &Path, flows: u16, datagrams: u16, size: usize) {
    use conntrack_tests::pcapgen::{Trace, udp_frame};
    let (a, b): (std::net::IpAddr, std::net::IpAddr) =
        ("10.9.0.1".parse().unwrap(), "10.9.0.2".parse().unwrap());
    let mut t = Trace::default();
    let payload = vec![b'p'; size];
    let mut ts = 1_000_000u64;
    for f in 0..flows {
        for _ in 0..datagrams {
            t.push(ts, udp_frame((a, 1024 + f), (b, 5000), &payload));
            ts += 10;
        }
    }
    t.write(path).unwrap();
}

fn read_agent(args: &[&str]) -> std::process::Output {
    Command::new(conntrack_tests::agent_path())
        .arg("read")
        .args(["--engine", "host"])
        .args(args)
        .output()
        .expect("running the agent")
}

/// `read` on a full disk: an error naming the file, a non-zero exit, and a conn.log that ends
/// with a whole record (it used to name no file and leave the last record split).
#[test]
fn read_on_a_full_disk_names_the_file_and_leaves_whole_records() {
    if !is_root() {
        eprintln!("skipping: needs root (mount)");
        return;
    }
    let disk = SmallDisk::mount(32 * 1024);
    let work = tempfile::tempdir().unwrap();
    let trace = work.path().join("flows.pcap");
    udp_trace(&trace, 2000, 1, 10);
    let logs = disk.path().join("logs");
    let out = read_agent(&["--log-dir", logs.to_str().unwrap(), trace.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit 0 on a full disk: {stderr}");
    let conn_log = logs.join("conn.log");
    assert!(
        stderr.contains(&format!("cannot write {}", conn_log.display()))
            && stderr.contains("No space left on device"),
        "{stderr}"
    );
    let log = whole_lines(&conn_log);
    assert!(
        !log.records.is_empty(),
        "nothing was written before the disk filled"
    );
}

/// Extraction to a full disk: one warning, the bytes not written in the summary, and a
/// non-zero exit for `read` (it used to print a warning per write and exit 0).
#[test]
fn extraction_on_a_full_disk_warns_once_and_read_fails() {
    if !is_root() {
        eprintln!("skipping: needs root (mount)");
        return;
    }
    let disk = SmallDisk::mount(64 * 1024);
    let work = tempfile::tempdir().unwrap();
    let trace = work.path().join("flows.pcap");
    udp_trace(&trace, 40, 20, 1000);
    let out = read_agent(&[
        "--extract-all",
        "--extract-dir",
        disk.path().to_str().unwrap(),
        "--log-dir",
        work.path().join("logs").to_str().unwrap(),
        trace.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "exit 0 with extraction lost: {stderr}"
    );
    assert_eq!(
        stderr.matches("content extraction: cannot write").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("extracted files in {}", disk.path().display()))
            && stderr.contains("bytes were lost"),
        "no summary line: {stderr}"
    );
    // conn.log (on a disk with room) is whole and has every flow.
    let log = whole_lines(&work.path().join("logs/conn.log"));
    assert_eq!(log.by_resp("udp", 5000).len(), 40);
}
