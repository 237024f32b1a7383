//! Capture filters (`-f EXPR`): `read -f` keeps exactly the packets `tcpdump -r TRACE -w OUT
//! EXPR` keeps (so its conn.log is the one read from OUT), with both engines, on real traces of
//! the conformance corpus; on a generated trace the filtered-out connections are gone and the
//! others unchanged; live, a filter that excludes a port keeps its connections out of
//! conn.log.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use conntrack_tests::connlog::ConnLog;
use conntrack_tests::netns::NetnsPair;
use conntrack_tests::pcapgen::{ACK, FIN, PSH, SYN, TcpConv, Trace, udp_frame};
use conntrack_tests::{agent_path, conformance_dir, is_root, records_without_uid};

fn read(trace: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(agent_path())
        .arg("read")
        .arg(trace)
        .arg("--log-dir")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// conn.log's records without the uid column (random per run), sorted.
fn records(trace: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let res = read(trace, out, extra);
    assert!(
        res.status.success(),
        "read {} {extra:?} failed: {}",
        trace.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    records_without_uid(out)
}

fn tcpdump_present() -> bool {
    Command::new("tcpdump")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// An IPv4 address of the trace's first TCP packet (for `host X and tcp`).
fn first_tcp_host(trace: &Path) -> Option<String> {
    let out = Command::new("tcpdump")
        .args(["-nn", "-c", "1", "-r"])
        .arg(trace)
        .args(["ip and tcp"])
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .to_string();
    let src = line.split(" IP ").nth(1)?.split_whitespace().next()?;
    Some(src.rsplit_once('.')?.0.to_string())
}

/// Traces of different kinds: many TCP connections on port 22, HTTP, IPv4 fragments, GTP with
/// fragments, pcapng, VLAN and MPLS tags, IPv6.
const TRACES: &[&str] = &[
    "ssh__ssh.pcap",
    "http__http-post-large.pcap",
    "quic__chromium-115.0.5790.110-google-de-fragmented.pcap",
    "tunnels__gtp__gtp1_gn_normal_incl_fragmentation.pcap",
    "ldap__missing_ldap_logs.pcapng",
    "mixed-vlan-mpls.pcap",
    "ftp__ipv6.pcap",
    "tcp__ssh-dups.pcap",
];

#[test]
fn read_filter_keeps_what_tcpdump_keeps_on_real_traces() {
    let Some(conf) = conformance_dir() else {
        eprintln!("skipping: the conformance corpus (../shared/conformance) is not there");
        return;
    };
    if !tcpdump_present() {
        eprintln!("skipping: tcpdump is not installed (`cargo xtask test` installs it)");
        return;
    }
    let kernel = is_root();
    if !kernel {
        eprintln!("the kernel engine needs root: comparing the host engine only");
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for name in TRACES {
        let trace = conf.join("traces").join(name);
        if !trace.is_file() {
            eprintln!("{name}: not in the corpus, skipped");
            continue;
        }
        let mut exprs: Vec<String> = [
            "tcp[tcpflags] & tcp-syn != 0",
            "udp port 53",
            "not port 22",
            "ip6",
            "vlan and tcp",
            "ip[6:2] & 0x1fff != 0 or udp",
        ]
        .map(String::from)
        .to_vec();
        if let Some(h) = first_tcp_host(&trace) {
            exprs.push(format!("host {h} and tcp"));
        }
        for expr in &exprs {
            let out: PathBuf = tmp.path().join("out.pcap");
            let dump = Command::new("tcpdump")
                .args(["--time-stamp-precision", "nano", "-r"])
                .arg(&trace)
                .arg("-w")
                .arg(&out)
                .arg(expr)
                .output()
                .unwrap();
            assert!(
                dump.status.success(),
                "tcpdump -r {name} {expr:?}: {}",
                String::from_utf8_lossy(&dump.stderr)
            );
            let want = records(&out, &tmp.path().join("want"), &["--engine", "host"]);
            let f = ["-f", expr.as_str()];
            let host = records(
                &trace,
                &tmp.path().join("host"),
                &[&f[..], &["--engine", "host"]].concat(),
            );
            assert_eq!(host, want, "{name} -f {expr:?}, host engine");
            if kernel {
                let k = records(
                    &trace,
                    &tmp.path().join("kernel"),
                    &[&f[..], &["--engine", "kernel"]].concat(),
                );
                assert_eq!(k, want, "{name} -f {expr:?}, kernel engine");
            }
            compared += 1;
        }
    }
    assert!(compared > 0, "no trace of the list was found");
}

/// Port 22 and port 80 TCP conversations, a DNS exchange: a trace whose every packet the
/// test knows.
fn generated_trace(dir: &Path) -> PathBuf {
    let mut t = Trace::default();
    let c: IpAddr = "10.1.0.1".parse().unwrap();
    let s: IpAddr = "10.1.0.2".parse().unwrap();
    for (i, port) in [22u16, 80, 22, 8080].into_iter().enumerate() {
        let mut conv = TcpConv::new((c, 40000 + i as u16), (s, port), 1_700_000_000_000_000);
        conv.ts_us += i as u64 * 10_000;
        conv.c(&mut t, SYN, b"");
        conv.s(&mut t, SYN | ACK, b"");
        conv.c(&mut t, ACK, b"");
        conv.c(&mut t, PSH | ACK, b"hello");
        conv.s(&mut t, PSH | ACK, b"world!");
        conv.c(&mut t, FIN | ACK, b"");
        conv.s(&mut t, FIN | ACK, b"");
        conv.c(&mut t, ACK, b"");
    }
    t.push(
        1_700_000_000_100_000,
        udp_frame((c, 5353), (s, 53), b"0123456789abcdef"),
    );
    t.push(
        1_700_000_000_100_500,
        udp_frame((s, 53), (c, 5353), b"0123456789abcdefgh"),
    );
    t.frames.sort_by_key(|(ts, _)| *ts);
    let path = dir.join("gen.pcap");
    t.write(&path).unwrap();
    path
}

#[test]
fn read_filter_drops_the_excluded_connections_and_leaves_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = generated_trace(tmp.path());
    let engines: &[&str] = if is_root() {
        &["host", "kernel"]
    } else {
        &["host"]
    };
    for engine in engines {
        let all = records(&trace, &tmp.path().join("all"), &["--engine", engine]);
        assert_eq!(all.len(), 5, "{all:#?}");
        let kept = records(
            &trace,
            &tmp.path().join("kept"),
            &["--engine", engine, "-f", "not port 22"],
        );
        let without_22: Vec<String> = all
            .iter()
            .filter(|r| r.split('\t').nth(4) != Some("22"))
            .cloned()
            .collect();
        assert_eq!(without_22.len(), 3);
        assert_eq!(kept, without_22, "{engine} engine");
        // Only the SYNs and SYN-ACKs: every TCP connection is a handshake without data.
        let syns = ConnLog::parse(
            &std::fs::read_to_string({
                let out = tmp.path().join("syns");
                records(
                    &trace,
                    &out,
                    &["--engine", engine, "-f", "tcp[tcpflags] & tcp-syn != 0"],
                );
                out.join("conn.log")
            })
            .unwrap(),
        );
        assert_eq!(syns.records.len(), 4, "{:#?}", syns.records);
        for r in &syns.records {
            assert_eq!(r["history"], "Sh", "{r:#?}");
        }
    }
    // The summary counts what the filter rejected.
    let res = read(
        &trace,
        &tmp.path().join("sum"),
        &["--engine", "host", "-f", "udp"],
    );
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("34 packets, 32 filtered out by \"udp\""),
        "{err}"
    );
}

#[test]
fn the_filter_comes_from_the_config_file_and_a_bad_one_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = generated_trace(tmp.path());
    let config = tmp.path().join("conntrack.toml");
    std::fs::write(&config, "[agent]\nfilter = \"udp port 53\"\n").unwrap();
    let cfg = config.to_str().unwrap();
    let only_dns = records(
        &trace,
        &tmp.path().join("cfg"),
        &["--engine", "host", "--config", cfg],
    );
    assert_eq!(only_dns.len(), 1, "{only_dns:#?}");
    assert!(only_dns[0].contains("\tudp\t"), "{only_dns:#?}");
    // The command line wins; an empty expression turns the file's filter off.
    let all = records(
        &trace,
        &tmp.path().join("cli"),
        &["--engine", "host", "--config", cfg, "-f", ""],
    );
    assert_eq!(all.len(), 5, "{all:#?}");

    let res = read(
        &trace,
        &tmp.path().join("bad"),
        &["--engine", "host", "-f", "tcp prot 80"],
    );
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("invalid capture filter \"tcp prot 80\""),
        "{err}"
    );
    assert!(err.contains("syntax error"), "libpcap's message: {err}");
    assert!(err.contains("man pcap-filter"), "what to do: {err}");
    assert!(
        !tmp.path().join("bad/conn.log").exists(),
        "no log for a bad filter"
    );
}

/// Live: the agent on a veth with `-f 'not tcp port 5011'`; TCP on 5011 and 5012 and a UDP
/// exchange cross it; only 5012 and the UDP one are logged, and the summary counts the
/// rejected frames.
#[test]
fn live_filter_keeps_an_excluded_port_out_of_conn_log() {
    if !is_root() {
        eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
        return;
    }
    let pair = NetnsPair::named("ctflt118", 118).expect("creating network namespaces");
    let dir = tempfile::tempdir().unwrap();
    let agent = pair
        .start_agent(dir.path(), &["-f", "not tcp port 5011"])
        .expect("starting the agent");
    for port in [5011u16, 5012] {
        let srv = SocketAddr::new(pair.b_v4.parse().unwrap(), port);
        let server = NetnsPair::run_in(&pair.b, move || {
            let l = TcpListener::bind(srv).unwrap();
            let (mut s, _) = l.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(b"bye").unwrap();
        });
        std::thread::sleep(Duration::from_millis(300));
        NetnsPair::run_in(&pair.a, move || {
            let mut c = TcpStream::connect_timeout(&srv, Duration::from_secs(5)).unwrap();
            c.write_all(&[b'q'; 5000]).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut back = Vec::new();
            c.read_to_end(&mut back).unwrap();
        })
        .join()
        .unwrap();
        server.join().unwrap();
    }
    let udp_srv = SocketAddr::new(pair.b_v4.parse().unwrap(), 5013);
    let server = NetnsPair::run_in(&pair.b, move || {
        let s = UdpSocket::bind(udp_srv).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        s.send_to(&buf[..n], from).unwrap();
    });
    std::thread::sleep(Duration::from_millis(200));
    NetnsPair::run_in(&pair.a, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(b"ping", udp_srv).unwrap();
        let mut buf = [0u8; 64];
        s.recv_from(&mut buf).unwrap();
    })
    .join()
    .unwrap();
    server.join().unwrap();
    let status = agent.stop().expect("stopping the agent");
    assert!(status.success(), "agent exited with {status}");
    let log = ConnLog::read(&dir.path().join("conn.log")).unwrap();
    assert!(log.by_resp("tcp", 5011).is_empty(), "{:#?}", log.records);
    let kept = log.one("tcp", 5012);
    assert_eq!(kept["conn_state"], "SF", "{kept:#?}");
    assert_eq!(log.one("udp", 5013)["conn_state"], "SF");
}
