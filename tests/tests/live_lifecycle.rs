//! Live lifecycle tests: the agent runs in a network namespace created by the test,
//! with a config file, while the test makes connections it knows the fate of. removal.log (a
//! removal hook on every connection) must say each was removed once and why; conn_long.log
//! must hold an interim record of a connection kept open past its configured interval.
//! Needs root; skipped otherwise. Subnets 86 and 87 are these tests'.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use conntrack_tests::connlog::{ConnLog, num};
use conntrack_tests::is_root;
use conntrack_tests::netns::{LiveAgent, NetnsPair};

struct Live {
    pair: NetnsPair,
    agent: Option<LiveAgent>,
    dir: tempfile::TempDir,
}

impl Live {
    /// Namespaces on `subnet`, the agent on veth a with `config` as its config file.
    fn start(subnet: u8, config: &str) -> Option<Live> {
        if !is_root() {
            eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
            return None;
        }
        let pair = NetnsPair::new(subnet).expect("creating network namespaces");
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("conntrack.toml");
        std::fs::write(&cfg, config).unwrap();
        let agent = pair
            .start_agent(dir.path(), &["--config", cfg.to_str().unwrap()])
            .expect("starting the agent");
        Some(Live {
            pair,
            agent: Some(agent),
            dir,
        })
    }

    fn log(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Stops the agent (SIGINT: it drains every open connection).
    fn stop(&mut self) {
        let status = self
            .agent
            .take()
            .unwrap()
            .stop()
            .expect("stopping the agent");
        assert!(status.success(), "agent exited with {status}");
    }
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// A TCP server in namespace b that reads until EOF (or reset) and returns the byte count.
fn tcp_sink(live: &Live, srv: SocketAddr) -> std::thread::JoinHandle<usize> {
    let server = NetnsPair::run_in(&live.pair.b, move || {
        let l = TcpListener::bind(srv).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got.len()
    });
    std::thread::sleep(Duration::from_millis(200));
    server
}

/// removal.log lines: (id.resp_p, reason, uid).
fn removals(path: &Path) -> Vec<(u64, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            (
                v["id.resp_p"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_string(),
                v["uid"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn live_removal_hook_runs_on_close_reset_timeout_and_shutdown() {
    let config = "[inactivity]\nudp = \"2s\"\n\n[removal_log]\n";
    let Some(mut live) = Live::start(86, config) else {
        return;
    };
    let b = live.pair.b_v4.clone();

    // 6001: request, then both sides close (FINs).
    let srv = sock(&b, 6001);
    let server = tcp_sink(&live, srv);
    NetnsPair::run_in(&live.pair.a, move || {
        let mut c = TcpStream::connect_timeout(&srv, Duration::from_secs(5)).unwrap();
        c.write_all(&[1u8; 500]).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let _ = c.read_to_end(&mut Vec::new());
    })
    .join()
    .unwrap();
    assert_eq!(server.join().unwrap(), 500);

    // 6002: reset by the client (SO_LINGER 0).
    let srv = sock(&b, 6002);
    let server = tcp_sink(&live, srv);
    NetnsPair::run_in(&live.pair.a, move || {
        let mut c = TcpStream::connect_timeout(&srv, Duration::from_secs(5)).unwrap();
        c.write_all(&[2u8; 300]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        set_linger_zero(&c);
    })
    .join()
    .unwrap();
    assert_eq!(server.join().unwrap(), 300);

    // 6003: one UDP datagram, then silence past the configured 2 s.
    let srv = sock(&b, 6003);
    NetnsPair::run_in(&live.pair.a, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"ping", srv).unwrap();
    })
    .join()
    .unwrap();

    // The TCP removals come 5 s after the close (Zeek's tcp_close_delay), the UDP one after
    // 2 s: wait for all three hooks.
    let path = live.log("removal.log");
    wait_until("three removals", Duration::from_secs(12), || {
        let done = removals(&path);
        [6001, 6002, 6003]
            .iter()
            .all(|p| done.iter().any(|r| r.0 == *p))
    });

    // 6004: open while the agent shuts down.
    let srv = sock(&b, 6004);
    let server = tcp_sink(&live, srv);
    let (release, held) = mpsc::channel::<()>();
    let (opened, is_open) = mpsc::channel::<()>();
    let client = NetnsPair::run_in(&live.pair.a, move || {
        let mut c = TcpStream::connect_timeout(&srv, Duration::from_secs(5)).unwrap();
        c.write_all(&[4u8; 100]).unwrap();
        opened.send(()).unwrap();
        held.recv().unwrap();
    });
    is_open.recv().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    live.stop();
    release.send(()).unwrap();
    client.join().unwrap();
    assert_eq!(server.join().unwrap(), 100);

    let all = removals(&path);
    let mut uids: Vec<&str> = all.iter().map(|r| r.2.as_str()).collect();
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), all.len(), "a hook ran twice: {all:#?}");
    // Only the test's connections (the namespaces also see IPv6 neighbour discovery).
    let ours = |port: u64| (6001..=6004).contains(&port);
    let mut got: Vec<(u64, String)> = all
        .iter()
        .filter(|r| ours(r.0))
        .map(|(port, why, _)| (*port, why.clone()))
        .collect();
    got.sort();
    let want = [
        (6001, "closed"),
        (6002, "reset"),
        (6003, "inactivity"),
        (6004, "drained"),
    ];
    let want: Vec<(u64, String)> = want.iter().map(|(p, w)| (*p, w.to_string())).collect();
    assert_eq!(got, want, "one hook run per connection, with its reason");
    // The hooks saw the connections conn.log has.
    let log = ConnLog::read(&live.log("conn.log")).unwrap();
    for (port, _, uid) in all.into_iter().filter(|r| ours(r.0)) {
        let proto = if port == 6003 { "udp" } else { "tcp" };
        let recs = log.by_resp(proto, port as u16);
        assert_eq!(recs.len(), 1, "{port}: {:#?}", log.records);
        assert_eq!(recs[0]["uid"], uid, "{port}");
    }
}

#[test]
fn live_conn_long_records_a_connection_held_open_past_its_interval() {
    let Some(mut live) = Live::start(87, "[conn_long]\nintervals = [\"2s\"]\n") else {
        return;
    };
    let srv = sock(&live.pair.b_v4, 6101);
    let server = tcp_sink(&live, srv);
    let long_log = live.log("conn_long.log");
    let (chunk, chunks) = (100usize, 16usize);
    // The client sends a chunk every 250 ms (4 s in all) and, before closing, reads what
    // conn_long.log says about its connection while it is still open.
    let watched = long_log.clone();
    let interim = NetnsPair::run_in(&live.pair.a, move || {
        let mut c = TcpStream::connect_timeout(&srv, Duration::from_secs(5)).unwrap();
        for _ in 0..chunks {
            c.write_all(&vec![5u8; chunk]).unwrap();
            std::thread::sleep(Duration::from_millis(250));
        }
        let seen = ConnLog::read(&watched)
            .map(|l| l.records)
            .unwrap_or_default();
        c.shutdown(Shutdown::Write).unwrap();
        let _ = c.read_to_end(&mut Vec::new());
        seen
    })
    .join()
    .unwrap();
    assert_eq!(server.join().unwrap(), chunk * chunks);
    live.stop();

    assert!(
        !interim.is_empty(),
        "no conn_long record while the connection was open"
    );
    let r = &interim[0];
    assert_eq!(r["id.resp_p"], "6101", "{r:#?}");
    assert_eq!(r["conn_state"], "S1", "still open: {r:#?}");
    let duration: f64 = r["duration"].parse().unwrap();
    assert!((2.0..4.0).contains(&duration), "{r:#?}");
    let sent = num(r, "orig_bytes") as usize;
    // By 2 s at least 8 chunks were sent, and never more than all of them.
    assert!(sent >= 8 * chunk && sent < chunk * chunks, "{r:#?}");
    assert_eq!(sent % chunk, 0, "whole chunks: {r:#?}");

    let long = ConnLog::read(&long_log).unwrap();
    assert!(long.closed, "conn_long.log has no #close line");
    let log = ConnLog::read(&live.log("conn.log")).unwrap();
    let finals = log.by_resp("tcp", 6101);
    assert_eq!(finals.len(), 1, "{:#?}", log.records);
    let f = finals[0];
    assert_eq!(
        f["uid"], r["uid"],
        "the interim record names the connection"
    );
    assert_eq!(f["conn_state"], "SF", "{f:#?}");
    assert_eq!(num(f, "orig_bytes") as usize, chunk * chunks, "{f:#?}");
}

/// Sets SO_LINGER {on, 0} and closes: the kernel resets the connection.
fn set_linger_zero(c: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a properly sized option value.
    let rc = unsafe {
        nix::libc::setsockopt(
            c.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_LINGER,
            &linger as *const _ as *const nix::libc::c_void,
            std::mem::size_of_val(&linger) as u32,
        )
    };
    assert_eq!(rc, 0);
}
