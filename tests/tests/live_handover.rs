//! Restart without loss and least privilege, live in network
//! namespaces.
//!
//! The agent pins its maps and links in a BPF filesystem mounted for the test (a private
//! instance under /tmp: `ip netns exec` mounts a fresh /sys, so /sys/fs/bpf would not be the
//! same filesystem for the test and the agent), unmounted at the end even on failure.
//! Needs root; skipped otherwise. Subnets 94 and 95 are these tests'.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use conntrack_tests::connlog::{ConnLog, Record, num};
use conntrack_tests::netns::NetnsPair;
use conntrack_tests::{agent_path, is_root};

/// The uid/gid the unprivileged agent runs as (nobody).
const NOBODY: u32 = 65534;

/// A private BPF filesystem, unmounted and removed on drop.
struct BpfFs {
    path: PathBuf,
}

impl BpfFs {
    fn mount(tag: &str) -> BpfFs {
        let path = PathBuf::from(format!("/tmp/ctpin-bpffs-{tag}-{}", std::process::id()));
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
        // Traversable by the unprivileged agent.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        BpfFs { path }
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        // Unmounting frees whatever a failed test left pinned (links detach, maps go).
        let _ = Command::new("umount").arg(&self.path).status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// The agent in a namespace, its stderr in a file; stopped with SIGINT on drop.
struct Agent {
    child: Option<Child>,
    stderr: PathBuf,
}

impl Agent {
    /// `ip netns exec NS [WRAPPER...] conntrack-agent run ARGS` (each of ip and the wrapper
    /// execs the next, so the child's PID is the agent's).
    fn start(ns: &str, wrapper: &[&str], args: &[&str], stderr: &Path) -> Agent {
        let err = File::create(stderr).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(wrapper)
            .arg(agent_path())
            .arg("run")
            .args(args)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("starting the agent");
        Agent {
            child: Some(child),
            stderr: stderr.to_path_buf(),
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until stderr contains `what`; fails if the agent exits first.
    fn wait_for(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.stderr().contains(what) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "agent exited ({status}) before {what:?}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what:?} within 30 s:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `sig`, waits for the exit; returns the status and stderr.
    fn stop(mut self, sig: nix::sys::signal::Signal) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let status = signal_and_wait(&mut child, sig);
        let err = self.stderr();
        eprintln!("--- agent stderr ({sig}):\n{err}---");
        (status, err)
    }

    /// Waits for an agent that exits by itself.
    fn wait(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, self.stderr());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("agent still running after 30 s:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn signal_and_wait(child: &mut Child, sig: nix::sys::signal::Signal) -> ExitStatus {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, sig);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("agent did not exit within 30 s of {sig}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// A TCP server in `ns`: accepts one connection, reads to EOF, answers `resp` bytes, closes.
/// Returns the bytes it read. Listening when this returns.
fn tcp_server(ns: &str, addr: SocketAddr, resp: usize) -> JoinHandle<usize> {
    let (ready_tx, ready) = mpsc::channel();
    let h = NetnsPair::run_in(ns, move || {
        let l = TcpListener::bind(addr).unwrap();
        ready_tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&vec![b'r'; resp]).unwrap();
        got.len()
    });
    ready.recv().unwrap();
    h
}

/// A TCP client in `ns`: sends each of `parts` (waiting for a go on `gate` before every part
/// after the first), then closes its side and reads the answer to EOF. Returns its length.
fn tcp_client(
    ns: &str,
    addr: SocketAddr,
    parts: Vec<usize>,
    gate: Option<mpsc::Receiver<()>>,
    sent: mpsc::Sender<()>,
) -> JoinHandle<usize> {
    NetnsPair::run_in(ns, move || {
        let mut s = TcpStream::connect(addr).unwrap();
        for (i, n) in parts.iter().enumerate() {
            if i > 0 {
                gate.as_ref().unwrap().recv().unwrap();
            }
            s.write_all(&vec![b'o'; *n]).unwrap();
            s.flush().unwrap();
            sent.send(()).unwrap();
        }
        // `gate` also holds the close until a go after the last part.
        if let Some(g) = &gate {
            g.recv().unwrap();
        }
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got.len()
    })
}

/// A whole TCP connection from a to b: `orig` bytes up, `resp` down, closed by both.
fn tcp_exchange(pair: &NetnsPair, port: u16, orig: usize, resp: usize) {
    let addr = sock(&pair.b_v4, port);
    let server = tcp_server(&pair.b, addr, resp);
    let (tx, _rx) = mpsc::channel();
    let client = NetnsPair::run_in(&pair.a, move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&vec![b'o'; orig]).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        let _ = tx.send(());
        got.len()
    });
    assert_eq!(client.join().unwrap(), resp);
    assert_eq!(server.join().unwrap(), orig);
}

/// An HTTP request and its reply between a and b, the connection then held open until a go
/// on the returned sender, then closed by both. Returns when the reply has come back, with
/// the go and the two ends to join.
fn http_held_open(
    pair: &NetnsPair,
    port: u16,
) -> (mpsc::Sender<()>, JoinHandle<()>, JoinHandle<()>) {
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: b\r\n\r\n";
    const REPLY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let addr = sock(&pair.b_v4, port);
    let (ready_tx, ready) = mpsc::channel();
    let server = NetnsPair::run_in(&pair.b, move || {
        let l = TcpListener::bind(addr).unwrap();
        ready_tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut got = vec![0u8; REQUEST.len()];
        s.read_exact(&mut got).unwrap();
        s.write_all(REPLY).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
    });
    ready.recv().unwrap();
    let (go, gate) = mpsc::channel::<()>();
    let (replied_tx, replied) = mpsc::channel();
    let client = NetnsPair::run_in(&pair.a, move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(REQUEST).unwrap();
        let mut back = vec![0u8; REPLY.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, REPLY);
        replied_tx.send(()).unwrap();
        gate.recv().unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
    });
    replied.recv().unwrap();
    (go, client, server)
}

/// A UDP flow from a (fixed port) to b: `rounds` datagrams of `orig` bytes, each answered with
/// `resp` bytes; between the batches of `batches`, waits for a go on `gate`.
struct UdpFlow {
    server: JoinHandle<()>,
    client: JoinHandle<()>,
}

fn udp_flow(
    pair: &NetnsPair,
    port: u16,
    batches: Vec<u32>,
    orig: usize,
    resp: usize,
    gate: Option<mpsc::Receiver<()>>,
    sent: mpsc::Sender<()>,
) -> UdpFlow {
    let total: u32 = batches.iter().sum();
    let srv = sock(&pair.b_v4, port);
    let (ready_tx, ready) = mpsc::channel();
    let server = NetnsPair::run_in(&pair.b, move || {
        let s = UdpSocket::bind(srv).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 2048];
        for _ in 0..total {
            let (n, from) = s.recv_from(&mut buf).unwrap();
            assert_eq!(n, orig);
            s.send_to(&vec![b'r'; resp], from).unwrap();
        }
    });
    ready.recv().unwrap();
    let cli = sock(&pair.a_v4, port + 100);
    let client = NetnsPair::run_in(&pair.a, move || {
        let s = UdpSocket::bind(cli).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.connect(srv).unwrap();
        let mut buf = [0u8; 2048];
        for (i, n) in batches.iter().enumerate() {
            if i > 0 {
                gate.as_ref().unwrap().recv().unwrap();
            }
            for _ in 0..*n {
                s.send(&vec![b'o'; orig]).unwrap();
                assert_eq!(
                    s.recv(&mut buf).unwrap(),
                    resp,
                    "answer to port {}",
                    srv.port()
                );
            }
            sent.send(()).unwrap();
        }
    });
    UdpFlow { server, client }
}

impl UdpFlow {
    fn join(self) {
        self.client.join().unwrap();
        self.server.join().unwrap();
    }
}

/// Every record of conn.log and of the logs a handover moved aside (`conn.<time>.log`).
fn all_conn_records(dir: &Path) -> Vec<Record> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "conn.log" || (name.starts_with("conn.") && name.ends_with(".log")) {
            out.extend(ConnLog::read(&e.path()).unwrap().records);
        }
    }
    out
}

/// (id.resp_p, uid) of every line of removal.log and of the ones a handover moved aside.
fn all_removals(dir: &Path) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("removal.") && name.ends_with(".log") {
            for line in std::fs::read_to_string(e.path()).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                out.push((
                    v["id.resp_p"].as_u64().unwrap() as u16,
                    v["uid"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out
}

/// What is left in a pin directory (an empty directory after a stop for good).
fn pins_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The one record of `proto` to `port`; fails on none or several.
fn one<'a>(recs: &'a [Record], proto: &str, port: u16) -> &'a Record {
    let p = port.to_string();
    let found: Vec<&Record> = recs
        .iter()
        .filter(|r| r["proto"] == proto && r["id.resp_p"] == p)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{proto}/{port}: expected exactly one conn.log record, got {found:#?}"
    );
    found[0]
}

fn assert_bytes(r: &Record, orig: u64, resp: u64) {
    let what = format!("{}/{}", r["proto"], r["id.resp_p"]);
    assert_eq!(num(r, "orig_bytes"), orig, "{what} orig_bytes: {r:?}");
    assert_eq!(num(r, "resp_bytes"), resp, "{what} resp_bytes: {r:?}");
}

fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn handover_across_a_restart_logs_every_connection_once_with_its_bytes() {
    if !is_root() {
        eprintln!("skipping live test: needs root");
        return;
    }
    use nix::sys::signal::Signal;
    let pair = NetnsPair::named("ctpin94", 94).expect("creating network namespaces");
    let bpf = BpfFs::mount("handover");
    let pin_dir = bpf.path.join("conntrack");
    let dir = private_dir();
    let logs = dir.path().join("logs");
    // removal.log: a removal hook on every connection, armed when the agent first sees it (for
    // the first agent's connections, when the second adopts them).
    let config = dir.path().join("conntrack.toml");
    std::fs::write(&config, "[removal_log]\n").unwrap();
    let args = [
        "--iface",
        pair.veth_a.as_str(),
        "--log-dir",
        logs.to_str().unwrap(),
        "--pin-dir",
        pin_dir.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    let b = pair.b_v4.clone();

    // Agent 1.
    let mut agent = Agent::start(&pair.a, &[], &args, &dir.path().join("agent1.err"));
    agent.wait_for("tracking on");

    // 9401: complete before the restart.
    tcp_exchange(&pair, 9401, 1000, 2000);
    // 9402: data before and after the restart, closed after it.
    let span_srv = tcp_server(&pair.b, sock(&b, 9402), 5000);
    let (span_go, span_gate) = mpsc::channel();
    let (span_sent_tx, span_sent) = mpsc::channel();
    let span = tcp_client(
        &pair.a,
        sock(&b, 9402),
        vec![3000, 4000],
        Some(span_gate),
        span_sent_tx,
    );
    span_sent.recv().unwrap();
    // 9407: all data before the restart, closed while no agent runs.
    let idle_srv = tcp_server(&pair.b, sock(&b, 9407), 1234);
    let (idle_go, idle_gate) = mpsc::channel();
    let (idle_sent_tx, idle_sent) = mpsc::channel();
    let idle = tcp_client(
        &pair.a,
        sock(&b, 9407),
        vec![1111],
        Some(idle_gate),
        idle_sent_tx,
    );
    idle_sent.recv().unwrap();
    // 9405: UDP, 3 datagrams before, 2 after.
    let (udp_go, udp_gate) = mpsc::channel();
    let (udp_sent_tx, udp_sent) = mpsc::channel();
    let udp_span = udp_flow(
        &pair,
        9405,
        vec![3, 2],
        100,
        300,
        Some(udp_gate),
        udp_sent_tx,
    );
    udp_sent.recv().unwrap();
    // 9408: HTTP, request and reply before the restart (service decided), closed after it.
    let (http_go, http_client, http_server) = http_held_open(&pair, 9408);
    // Let the agent see it all before the handover (not needed for correctness: the kernel
    // keeps counting either way).
    std::thread::sleep(Duration::from_millis(300));

    let (status, err1) = agent.stop(Signal::SIGTERM);
    assert!(status.success(), "agent 1 exited with {status}");
    assert!(err1.contains("handing over"), "{err1}");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(logs.join("handover.json")).unwrap())
            .expect("the uids of open connections are saved in handover.json");
    let saved_uids: Vec<String> = saved["conns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["uid"].as_str().unwrap().to_string())
        .collect();

    // No agent runs: the programs stay attached and count.
    idle_go.send(()).unwrap();
    assert_eq!(idle.join().unwrap(), 1234);
    assert_eq!(idle_srv.join().unwrap(), 1111);
    tcp_exchange(&pair, 9403, 6000, 7000);
    let (tx, _rx) = mpsc::channel();
    udp_flow(&pair, 9406, vec![4], 50, 70, None, tx).join();

    // Agent 2 takes over.
    let mut agent = Agent::start(&pair.a, &[], &args, &dir.path().join("agent2.err"));
    agent.wait_for("tracking on");
    let err2 = agent.stderr();
    assert!(err2.contains("took over"), "{err2}");
    assert!(!err2.contains(" 0 uids restored"), "uids restored: {err2}");

    span_go.send(()).unwrap(); // second part
    span_sent.recv().unwrap();
    span_go.send(()).unwrap(); // close
    assert_eq!(span.join().unwrap(), 5000);
    assert_eq!(span_srv.join().unwrap(), 7000);
    udp_go.send(()).unwrap();
    udp_sent.recv().unwrap();
    udp_span.join();
    http_go.send(()).unwrap();
    http_client.join().unwrap();
    http_server.join().unwrap();
    // 9404: after the restart.
    tcp_exchange(&pair, 9404, 8000, 9000);
    std::thread::sleep(Duration::from_millis(300));

    // Stop for good: everything still open is logged, the pins are removed.
    let (status, err3) = agent.stop(Signal::SIGINT);
    assert!(status.success(), "agent 2 exited with {status}");
    assert!(err3.contains("pins removed"), "{err3}");
    let left = pins_in(&pin_dir);
    assert!(left.is_empty(), "pins left behind: {left:?}");

    let recs = all_conn_records(&logs);
    for (port, orig, resp) in [
        (9401, 1000, 2000),
        (9402, 7000, 5000),
        (9403, 6000, 7000),
        (9404, 8000, 9000),
        (9407, 1111, 1234),
    ] {
        let r = one(&recs, "tcp", port);
        assert_bytes(r, orig, resp);
        assert_eq!(r["conn_state"], "SF", "tcp/{port}: {r:?}");
    }
    assert_bytes(one(&recs, "udp", 9405), 500, 1500);
    // The service decided before the restart is logged by the agent that logs the
    // connection, which saw none of its payload.
    let http = one(&recs, "tcp", 9408);
    assert_eq!(http["service"], "http", "{http:?}");
    assert_eq!(http["conn_state"], "SF", "{http:?}");
    // Connections open across the restart keep the uid the first agent gave them.
    for (proto, port) in [("tcp", 9402), ("tcp", 9407), ("tcp", 9408), ("udp", 9405)] {
        let uid = &one(&recs, proto, port)["uid"];
        assert!(
            saved_uids.contains(uid),
            "{proto}/{port}: uid {uid} not restored"
        );
    }
    assert_bytes(one(&recs, "udp", 9406), 200, 280);
    // Capabilities saw each connection end once, with conn.log's uid.
    let removals = all_removals(&logs);
    for (proto, port) in [
        ("tcp", 9401),
        ("tcp", 9402),
        ("tcp", 9403),
        ("tcp", 9404),
        ("tcp", 9407),
        ("tcp", 9408),
        ("udp", 9405),
        ("udp", 9406),
    ] {
        let uid = &one(&recs, proto, port)["uid"];
        let n = removals
            .iter()
            .filter(|(p, u)| *p == port && u == uid)
            .count();
        assert_eq!(
            n, 1,
            "{proto}/{port}: removal.log entries with uid {uid}: {removals:?}"
        );
    }
    let mut uids: Vec<&str> = recs.iter().map(|r| r["uid"].as_str()).collect();
    let n = uids.len();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), n, "uids are unique: {recs:#?}");
}

#[test]
fn pins_of_another_schema_are_detected_and_replaced() {
    if !is_root() {
        eprintln!("skipping live test: needs root");
        return;
    }
    use nix::sys::signal::Signal;
    let pair = NetnsPair::named("ctpin94s", 94).expect("creating network namespaces");
    let bpf = BpfFs::mount("schema");
    let pin_dir = bpf.path.join("conntrack");
    let dir = private_dir();
    let args = [
        "--iface",
        pair.veth_a.as_str(),
        "--log-dir",
        dir.path().to_str().unwrap(),
        "--pin-dir",
        pin_dir.to_str().unwrap(),
    ];
    // A handover leaves real pins (maps, links, stages) ...
    let mut agent = Agent::start(&pair.a, &[], &args, &dir.path().join("agent1.err"));
    agent.wait_for("tracking on");
    let (status, _) = agent.stop(Signal::SIGTERM);
    assert!(status.success());
    let schemas = |p: &Path| -> Vec<String> {
        std::fs::read_dir(p)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let ours = schemas(&pin_dir);
    assert_eq!(ours.len(), 1, "{ours:?}");
    // ... which become another layout's, as after an upgrade that changed the shared types.
    let stale = pin_dir.join("v0-0123456789abcdef");
    std::fs::rename(pin_dir.join(&ours[0]), &stale).unwrap();

    let mut agent = Agent::start(&pair.a, &[], &args, &dir.path().join("agent2.err"));
    agent.wait_for("tracking on");
    let err = agent.stderr();
    assert!(
        err.contains("holds pins of schema v0-0123456789abcdef") && err.contains("cannot be read"),
        "{err}"
    );
    assert!(
        !err.contains("took over"),
        "never reads another layout: {err}"
    );
    assert!(!stale.exists(), "the other schema's pins are removed");
    assert_eq!(schemas(&pin_dir), ours, "a fresh generation of this schema");

    // One agent per pin directory: a second one waits for the first to hand over.
    let mut next = Agent::start(&pair.a, &[], &args, &dir.path().join("agent3.err"));
    next.wait_for("waiting for the agent running with --pin-dir");
    let (status, _) = agent.stop(Signal::SIGTERM);
    assert!(status.success());
    next.wait_for("tracking on");
    assert!(next.stderr().contains("took over"), "{}", next.stderr());
    let (status, _) = next.stop(Signal::SIGINT);
    assert!(status.success());
    assert!(
        pins_in(&pin_dir).is_empty(),
        "pins removed after a stop for good"
    );
}

fn setpriv_args(caps: &str) -> Vec<String> {
    let uid = NOBODY.to_string();
    vec![
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".into(),
        format!("--inh-caps=-all,{caps}"),
        format!("--ambient-caps=-all,{caps}"),
    ]
}

fn have_setpriv() -> bool {
    Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A directory the unprivileged agent owns.
fn owned_by_nobody(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(NOBODY)),
        Some(nix::unistd::Gid::from_raw(NOBODY)),
    )
    .unwrap();
}

#[test]
fn runs_as_nobody_with_cap_bpf_net_admin_perfmon() {
    if !is_root() || !have_setpriv() {
        eprintln!("skipping live test: needs root and setpriv (util-linux)");
        return;
    }
    use nix::sys::signal::Signal;
    let pair = NetnsPair::named("ctpin95", 95).expect("creating network namespaces");
    let bpf = BpfFs::mount("nobody");
    let pin_dir = bpf.path.join("conntrack");
    owned_by_nobody(&pin_dir);
    let dir = private_dir();
    let logs = dir.path().join("logs");
    owned_by_nobody(&logs);
    let wrapper = setpriv_args("+bpf,+net_admin,+perfmon");
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let args = [
        "--iface",
        pair.veth_a.as_str(),
        "--log-dir",
        logs.to_str().unwrap(),
        "--pin-dir",
        pin_dir.to_str().unwrap(),
        "--no-handover",
    ];
    let mut agent = Agent::start(&pair.a, &wrapper, &args, &dir.path().join("agent.err"));
    agent.wait_for("tracking on");
    tcp_exchange(&pair, 9501, 1500, 2500);
    let (tx, _rx) = mpsc::channel();
    udp_flow(&pair, 9502, vec![2], 100, 200, None, tx).join();
    std::thread::sleep(Duration::from_millis(300));
    // --no-handover: SIGTERM stops for good, as SIGINT does.
    let (status, err) = agent.stop(Signal::SIGTERM);
    assert!(status.success(), "agent exited with {status}: {err}");
    assert!(err.contains("pins removed"), "{err}");
    let left = pins_in(&pin_dir);
    assert!(left.is_empty(), "pins left behind: {left:?}");
    let recs = ConnLog::read(&logs.join("conn.log")).unwrap().records;
    assert_bytes(one(&recs, "tcp", 9501), 1500, 2500);
    assert_bytes(one(&recs, "udp", 9502), 200, 400);
    let owner =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(logs.join("conn.log")).unwrap());
    assert_eq!(owner, NOBODY, "written by the unprivileged agent");
}

#[test]
fn a_missing_capability_is_named_with_what_to_do() {
    if !is_root() || !have_setpriv() {
        eprintln!("skipping live test: needs root and setpriv (util-linux)");
        return;
    }
    let pair = NetnsPair::named("ctpin95c", 95).expect("creating network namespaces");
    let dir = private_dir();
    let logs = dir.path().join("logs");
    owned_by_nobody(&logs);
    for (caps, missing) in [
        ("+bpf,+net_admin", "CAP_PERFMON"),
        ("+bpf,+perfmon", "CAP_NET_ADMIN"),
        ("+net_admin,+perfmon", "CAP_BPF"),
    ] {
        let wrapper = setpriv_args(caps);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let args = [
            "--iface",
            pair.veth_a.as_str(),
            "--log-dir",
            logs.to_str().unwrap(),
        ];
        let err_path = dir.path().join(format!("{missing}.err"));
        let (status, err) = Agent::start(&pair.a, &wrapper, &args, &err_path).wait();
        assert!(!status.success(), "{caps}: the agent must refuse to start");
        assert!(
            err.contains(&format!("missing capabilities: {missing} (")),
            "{caps}: {err}"
        );
        assert!(
            err.contains("AmbientCapabilities="),
            "says what to do: {err}"
        );
    }
}
