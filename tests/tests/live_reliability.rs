//! Reliability (issue 17), live in network namespaces: one agent per log directory, and the
//! programs a killed `--pin-dir` agent leaves attached.
//!
//! Needs root; skipped otherwise. Subnets 105 and 106 are these tests'. Namespaces, veths and
//! the private BPF filesystem (with whatever is pinned in it) are removed on drop, also when a
//! test fails.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use conntrack_tests::connlog::ConnLog;
use conntrack_tests::netns::{NetnsPair, wait_for_file};
use conntrack_tests::{agent_path, is_root};

/// A private BPF filesystem for `--pin-dir` (`ip netns exec` mounts a fresh /sys, so
/// /sys/fs/bpf would not be the same one for the test and the agent); unmounting it on drop
/// frees what a failed test left pinned.
struct BpfFs {
    path: PathBuf,
}

impl BpfFs {
    fn mount(tag: &str) -> BpfFs {
        let path = PathBuf::from(format!("/tmp/ctrel-bpffs-{tag}-{}", std::process::id()));
        let _ = Command::new("umount")
            .arg(&path)
            .stderr(Stdio::null())
            .status();
        std::fs::create_dir_all(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&path)
            .status()
            .expect("running mount");
        assert!(ok.success(), "mount -t bpf failed");
        BpfFs { path }
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A child process (the agent, through `ip netns exec`, which execs it: its PID is the
/// agent's), killed on drop if still running.
struct Proc(Option<Child>);

impl Proc {
    fn pid(&self) -> i32 {
        self.0.as_ref().unwrap().id() as i32
    }

    /// SIGKILL, as a crash or an OOM kill would end it.
    fn kill(mut self) {
        let mut child = self.0.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGINT (stop for good) and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let mut child = self.0.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        wait_exit(&mut child, Duration::from_secs(30)).expect("agent exits within 30 s of SIGINT")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ip netns exec NS conntrack-agent ARGS` in the background, stderr to `stderr`.
fn spawn(ns: &str, args: &[&str], stderr: &Path) -> Proc {
    let err = std::fs::File::create(stderr).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(agent_path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("starting the agent");
    Proc(Some(child))
}

/// Runs the agent to its end (at most 20 s: an agent that starts when it should refuse would
/// run on, and is killed); None if it was still running.
fn run_to_end(ns: &str, args: &[&str]) -> Option<Output> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(agent_path())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the agent");
    match wait_exit(&mut child, Duration::from_secs(20)) {
        Some(_) => Some(child.wait_with_output().unwrap()),
        None => {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            eprintln!(
                "--- still running after 20 s, killed; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
    }
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// One UDP request and answer from namespace b to a (port `port`).
fn udp_exchange(pair: &NetnsPair, port: u16) {
    let srv_addr = format!("{}:{port}", pair.a_v4);
    let a = srv_addr.clone();
    let server = NetnsPair::run_in(&pair.a, move || {
        let s = UdpSocket::bind(&a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        s.send_to(&buf[..n], from).unwrap();
    });
    std::thread::sleep(Duration::from_millis(200));
    let b = pair.b_v4.clone();
    NetnsPair::run_in(&pair.b, move || {
        let s = UdpSocket::bind(format!("{b}:0")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(b"ping", &srv_addr).unwrap();
        let mut buf = [0u8; 64];
        s.recv_from(&mut buf).unwrap();
    })
    .join()
    .unwrap();
    server.join().unwrap();
}

#[test]
fn a_second_agent_on_one_log_directory_refuses_and_names_the_first() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let pair = NetnsPair::named("ctrel105", 105).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    let logs_s = logs.to_str().unwrap();
    let first = spawn(
        &pair.a,
        &[
            "run",
            "-i",
            &pair.veth_a,
            "--log-dir",
            logs_s,
            "--no-status",
        ],
        &tmp.path().join("first.err"),
    );
    assert!(
        wait_for_file(&logs.join("conn.log"), Duration::from_secs(20)),
        "the first agent did not open conn.log:\n{}",
        std::fs::read_to_string(tmp.path().join("first.err")).unwrap_or_default()
    );
    udp_exchange(&pair, 5105);

    // Another interface, so that only the log directory is shared.
    let second = run_to_end(
        &pair.b,
        &[
            "run",
            "-i",
            &pair.veth_b,
            "--log-dir",
            logs_s,
            "--no-status",
        ],
    )
    .expect("the second agent must refuse, not run");
    let err = text(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    assert!(err.contains("another --log-dir"), "{err}");

    // `read` into the same directory writes conn.log too.
    let trace = tmp.path().join("empty.pcap");
    let mut pcap = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        // (Version 2.4 as two u16 in one u32, little-endian.)
        pcap.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&trace, &pcap).unwrap();
    let read = Command::new(agent_path())
        .args(["read", trace.to_str().unwrap(), "--engine", "host"])
        .args(["--log-dir", logs_s])
        .output()
        .unwrap();
    let err = text(&read.stderr);
    assert!(!read.status.success(), "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");

    let status = first.stop();
    assert!(status.success(), "first agent: {status}");
    // The first agent's conn.log is whole: not set aside, closed, with the exchange.
    let names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("conn"))
        .collect();
    assert_eq!(names, ["conn.log"], "files set aside: {names:?}");
    let log = ConnLog::read(&logs.join("conn.log")).unwrap();
    assert!(log.closed, "no #close");
    assert!(
        log.records
            .iter()
            .any(|r| r["proto"] == "udp" && r["id.resp_p"] == "5105"),
        "no record of the UDP exchange: {:?}",
        log.records
    );
}

#[test]
fn programs_a_killed_pinned_agent_left_are_refused_then_detached() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let pair = NetnsPair::named("ctrel106", 106).unwrap();
    let bpffs = BpfFs::mount("orphan");
    let pins = bpffs.path.join("conntrack");
    let pins_s = pins.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    let logs_s = logs.to_str().unwrap();
    let iface = pair.veth_a.as_str();

    let pinned = spawn(
        &pair.a,
        &[
            "run",
            "-i",
            iface,
            "--log-dir",
            logs_s,
            "--no-status",
            "--pin-dir",
            pins_s,
        ],
        &tmp.path().join("pinned.err"),
    );
    assert!(
        wait_for_file(&logs.join("conn.log"), Duration::from_secs(20)),
        "the pinned agent did not open conn.log:\n{}",
        std::fs::read_to_string(tmp.path().join("pinned.err")).unwrap_or_default()
    );
    pinned.kill();

    // Without --pin-dir: refused, saying what is attached and what to do.
    let logs2 = tmp.path().join("logs2");
    let plain = ["run", "-i", iface, "--log-dir", logs2.to_str().unwrap()];
    let refused = run_to_end(&pair.a, &[&plain[..], &["--no-status"]].concat())
        .expect("the start without --pin-dir must refuse, not run");
    let err = text(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(err.contains(&format!("{iface} ingress")), "{err}");
    assert!(err.contains(&format!("{iface} egress")), "{err}");
    assert!(err.contains("--pin-dir"), "{err}");
    assert!(
        err.contains(&format!("conntrack-agent detach --iface {iface}")),
        "{err}"
    );
    assert!(
        !logs2.join("conn.log").exists(),
        "refused after opening conn.log"
    );

    // detach --pin-dir removes the pins, which detaches the programs.
    let detach = run_to_end(&pair.a, &["detach", "--pin-dir", pins_s]).expect("detach ends");
    let out = text(&detach.stdout);
    assert!(detach.status.success(), "{out}{}", text(&detach.stderr));
    for pin in ["link_", "FLOWS", "EVENTS", "STATS"] {
        assert!(out.contains(pin), "no {pin} pin removed:\n{out}");
    }
    let again = run_to_end(&pair.a, &["detach", "--pin-dir", pins_s, "-i", iface]).unwrap();
    assert!(again.status.success());
    assert!(
        text(&again.stdout).starts_with("nothing to remove"),
        "{}",
        text(&again.stdout)
    );

    // A normal start works now, and leaves nothing attached when it stops.
    let agent = spawn(
        &pair.a,
        &[&plain[..], &["--no-status"]].concat(),
        &tmp.path().join("plain.err"),
    );
    assert!(
        wait_for_file(&logs2.join("conn.log"), Duration::from_secs(20)),
        "the agent did not start after detach:\n{}",
        std::fs::read_to_string(tmp.path().join("plain.err")).unwrap_or_default()
    );
    assert!(agent.stop().success());
    let after = run_to_end(&pair.a, &["detach", "-i", iface]).unwrap();
    assert!(
        text(&after.stdout).starts_with("nothing to remove"),
        "left attached: {}",
        text(&after.stdout)
    );
}
