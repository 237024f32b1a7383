//! Alert rules end to end: a rule file armed on connections, the crossing written to alerts.log
//! and POSTed to a webhook receiver the test runs. In `read` (a generated trace, both engines)
//! and live (real TCP traffic in network namespaces): the webhook must receive the alert within
//! one second of the crossing.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use conntrack_tests::netns::NetnsPair;
use conntrack_tests::pcapgen::{ACK, FIN, PSH, SYN, TcpConv, Trace};
use conntrack_tests::{agent_path, is_root};
use serde_json::Value;

/// One POST the receiver got.
struct Delivery {
    received: SystemTime,
    headers: HashMap<String, String>,
    body: Value,
}

type Deliveries = Arc<Mutex<Vec<Delivery>>>;

/// Reads one HTTP/1.1 request (head + Content-Length body) and answers 204.
fn serve_one(stream: TcpStream, got: &Deliveries) -> std::io::Result<()> {
    let mut r = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    if !line.starts_with("POST ") {
        return Ok(());
    }
    let mut headers = HashMap::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let received = SystemTime::now();
    got.lock().unwrap().push(Delivery {
        received,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let mut w = stream;
    w.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    w.shutdown(Shutdown::Both)
}

/// Serves `listener` on a background thread for the rest of the test process.
fn receiver(listener: TcpListener) -> Deliveries {
    let got: Deliveries = Arc::default();
    let g = got.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let _ = serve_one(s, &g);
        }
    });
    got
}

fn write_config(dir: &Path, port: u16, rules: &str) -> std::path::PathBuf {
    let p = dir.join("conntrack.toml");
    std::fs::write(
        &p,
        format!(
            "[alerts]\ndrain_timeout = \"5s\"\n\n\
             [alerts.webhooks.test]\nurl = \"http://127.0.0.1:{port}/hook\"\ntimeout = \"2s\"\n\
             retry_base = \"100ms\"\nretry_max = \"1s\"\n\n{rules}"
        ),
    )
    .unwrap();
    p
}

fn alerts_log(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("alerts.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn read_arms_rules_and_delivers_each_crossing_once() {
    // A client uploads 20 segments of 1000 bytes (1040 IP bytes each); the rule fires at 5000
    // IP bytes from the originator: SYN and ACK (40 each), then the 5th data segment
    // (80 + 5 * 1040 = 5280 >= 5000; after four it is 4240).
    let mut trace = Trace::default();
    let mut c = TcpConv::new(
        (addr("10.1.0.1"), 40000),
        (addr("10.1.0.2"), 8443),
        1_700_000_000_000_000,
    );
    c.c(&mut trace, SYN, &[]);
    c.s(&mut trace, SYN | ACK, &[]);
    c.c(&mut trace, ACK, &[]);
    for _ in 0..20 {
        c.c(&mut trace, PSH | ACK, &[b'x'; 1000]);
        c.s(&mut trace, ACK, &[]);
    }
    c.c(&mut trace, FIN | ACK, &[]);
    c.s(&mut trace, FIN | ACK, &[]);
    c.c(&mut trace, ACK, &[]);
    // A second connection the rule's match leaves out (other port): no alert.
    let mut other = TcpConv::new(
        (addr("10.1.0.1"), 40001),
        (addr("10.1.0.2"), 22),
        1_700_000_000_100_000,
    );
    other.c(&mut trace, SYN, &[]);
    other.s(&mut trace, SYN | ACK, &[]);
    for _ in 0..20 {
        other.c(&mut trace, PSH | ACK, &[b'y'; 1000]);
    }

    let engines: &[&str] = if is_root() {
        &["host", "kernel"]
    } else {
        &["host"]
    };
    for engine in engines {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = receiver(listener);
        let dir = tempfile::tempdir().unwrap();
        let pcap = dir.path().join("t.pcap");
        trace.write(&pcap).unwrap();
        let cfg = write_config(
            dir.path(),
            port,
            "[[alerts.rules]]\nname = \"upload\"\nmetric = \"orig_bytes\"\nthreshold = 5000\n\
             webhooks = [\"test\"]\nmatch = { proto = \"tcp\", resp_ports = [8443] }\n",
        );
        let out = Command::new(agent_path())
            .arg("read")
            .arg(&pcap)
            .arg("--log-dir")
            .arg(dir.path())
            .args(["--engine", engine, "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{engine}: read failed: {stderr}");

        let logged = alerts_log(dir.path());
        assert_eq!(logged.len(), 1, "{engine}: alerts.log: {logged:#?}");
        let a = &logged[0];
        assert_eq!(a["rule"], "upload", "{engine}: {a:#}");
        assert_eq!(a["threshold"], 5000, "{engine}: {a:#}");
        assert_eq!(a["direction"], "orig", "{engine}: {a:#}");
        assert_eq!(a["conn"]["id.resp_p"], 8443, "{engine}: {a:#}");
        // Counters so far: the crossing packet's, not the connection's final ones.
        assert_eq!(a["conn"]["orig_ip_bytes"], 80 + 5 * 1040, "{engine}: {a:#}");
        assert_eq!(a["conn"]["orig_pkts"], 7, "{engine}: {a:#}");

        let deliveries = got.lock().unwrap();
        assert_eq!(deliveries.len(), 1, "{engine}: webhook deliveries");
        let d = &deliveries[0];
        assert_eq!(d.body, *a, "{engine}: webhook body differs from alerts.log");
        assert_eq!(
            d.headers.get("x-conntrack-delivery").map(String::as_str),
            a["delivery_id"].as_str(),
            "{engine}: delivery id header"
        );
        assert!(
            stderr.contains("1 sent"),
            "{engine}: summary should count the delivery: {stderr}"
        );
    }
}

/// RFC 3339 UTC with fractional seconds ("2026-11-28T08:01:02.123456Z") to SystemTime.
fn parse_rfc3339(s: &str) -> SystemTime {
    let (date, time) = s.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<u64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days since 1970-01-01 (civil-from-days inverse, proleptic Gregorian).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe - 719_468) as u64;
    let nanos: u64 = format!("{frac:0<9}")[..9].parse().unwrap();
    SystemTime::UNIX_EPOCH
        + Duration::from_secs(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
        + Duration::from_nanos(nanos)
}

#[test]
fn rfc3339_parser_matches_known_instants() {
    let t = parse_rfc3339("2013-03-07T21:42:07.080828Z");
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    assert_eq!(d.as_secs(), 1_362_692_527);
    assert_eq!(d.subsec_micros(), 80_828);
}

#[test]
fn live_byte_threshold_reaches_the_webhook_within_a_second() {
    if !is_root() {
        eprintln!("skipping live test: needs root (CAP_BPF and CAP_NET_ADMIN)");
        return;
    }
    let pair = NetnsPair::new(90).expect("creating network namespaces");
    // The receiver listens on namespace a's loopback, next to the agent (not on the monitored
    // veth, so the webhook's own traffic is not tracked).
    let listener = NetnsPair::run_in(&pair.a, || TcpListener::bind("127.0.0.1:0").unwrap())
        .join()
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = receiver(listener);
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        port,
        &format!(
            "[[alerts.rules]]\nname = \"big-upload\"\nmetric = \"orig_bytes\"\n\
             threshold = 1000000\nwebhooks = [\"test\"]\n\
             match = {{ proto = \"tcp\", resp_ports = [5090], ifaces = [\"{}\"] }}\n\n\
             [[alerts.rules]]\nname = \"elsewhere\"\nmetric = \"orig_bytes\"\n\
             threshold = 1000\nwebhooks = [\"test\"]\nmatch = {{ ifaces = [\"nosuch0\"] }}\n",
            pair.veth_a
        ),
    );
    let agent = pair
        .start_agent(dir.path(), &["--config", cfg.to_str().unwrap()])
        .expect("starting the agent");

    // 3 MB upload from a to b: the 1 MB threshold is crossed a third of the way in.
    let up = 3_000_000usize;
    let srv = SocketAddr::new(addr(&pair.b_v4), 5090);
    let server = NetnsPair::run_in(&pair.b, move || {
        let l = TcpListener::bind(srv).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut n = 0usize;
        let mut buf = vec![0; 65536];
        loop {
            let k = s.read(&mut buf).unwrap();
            if k == 0 {
                break n;
            }
            n += k;
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    // Paced like a long transfer (64 KB every 10 ms, ~0.5 s): the agent arms a rule's
    // threshold when it handles the connection's first event (within its 20 ms poll); bytes
    // sent before that count, but a crossing that early is reported when armed.
    let client = NetnsPair::run_in(&pair.a, move || {
        let mut c = TcpStream::connect_timeout(&srv, Duration::from_secs(5)).unwrap();
        for chunk in vec![b'q'; up].chunks(65536) {
            c.write_all(chunk).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        c.shutdown(Shutdown::Write).unwrap();
    });
    client.join().unwrap();
    assert_eq!(server.join().unwrap(), up);

    let deadline = Instant::now() + Duration::from_secs(5);
    while got.lock().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = agent.stop().expect("stopping the agent");
    assert!(status.success(), "agent exited with {status}");

    let deliveries = got.lock().unwrap();
    // Only the rule for the monitored interface fires ("elsewhere" names another one).
    assert_eq!(deliveries.len(), 1, "webhook deliveries");
    let d = &deliveries[0];
    let a = &d.body;
    assert_eq!(a["rule"], "big-upload", "{a:#}");
    assert_eq!(a["conn"]["id.orig_h"], pair.a_v4.as_str(), "{a:#}");
    assert_eq!(a["conn"]["id.resp_p"], 5090, "{a:#}");
    let ip_bytes = a["conn"]["orig_ip_bytes"].as_u64().unwrap();
    assert!(
        (1_000_000..1_000_000 + 70_000).contains(&ip_bytes),
        "counters at the crossing should be just past the threshold (one GSO packet at most): {a:#}"
    );
    let crossed = parse_rfc3339(a["crossed_at"].as_str().unwrap());
    let latency = d.received.duration_since(crossed).unwrap_or(Duration::ZERO);
    eprintln!("alert at {ip_bytes} IP bytes reached the webhook {latency:?} after the crossing");
    assert!(
        latency < Duration::from_secs(1),
        "alert reached the webhook {latency:?} after the crossing"
    );
    assert_eq!(alerts_log(dir.path()).len(), 1, "alerts.log");
    drop(pair);
}
