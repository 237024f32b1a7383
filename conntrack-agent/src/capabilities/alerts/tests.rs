//! Alerts end to end against a real HTTP receiver on 127.0.0.1: what a receiver gets (body,
//! delivery id, signature), what stays on disk, and what survives a receiver outage and an
//! agent restart.

use super::webhook::{DEAD_LETTER_FILE, DELIVERY_HEADER, SIGNATURE_HEADER, signature};
use super::*;
use crate::config::Config;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const SECRET: &str = "receiver-shared-secret";

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    delivery_id: String,
    signature: Option<String>,
    content_type: String,
    body: Vec<u8>,
}

impl Received {
    fn alert(&self) -> Alert {
        serde_json::from_slice(&self.body).expect("the body is an alert")
    }

    fn signature_ok(&self) -> bool {
        self.signature.as_deref() == Some(signature(SECRET.as_bytes(), &self.body).as_str())
    }
}

/// Answer to request number n (from 0): status, and how long to wait before answering. A 429
/// carries `Retry-After: 1`.
type Behaviour = Arc<dyn Fn(usize) -> (u16, Duration) + Send + Sync>;

/// A webhook receiver: a hyper server on loopback that records every request.
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

fn header(req: &hyper::Request<hyper::body::Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl Receiver {
    async fn start(behaviour: Behaviour) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), behaviour).await
    }

    async fn start_on(addr: SocketAddr, behaviour: Behaviour) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let rec = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (rec, count, behaviour) = (rec.clone(), count.clone(), behaviour.clone());
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (rec, count, behaviour) = (rec.clone(), count.clone(), behaviour.clone());
                    async move {
                        let delivery_id = header(&req, DELIVERY_HEADER).unwrap_or_default();
                        let signature = header(&req, SIGNATURE_HEADER);
                        let content_type = header(&req, "content-type").unwrap_or_default();
                        let body = req.into_body().collect().await?.to_bytes().to_vec();
                        let n = count.fetch_add(1, Ordering::SeqCst);
                        rec.lock().unwrap().push(Received {
                            delivery_id,
                            signature,
                            content_type,
                            body,
                        });
                        let (status, delay) = behaviour(n);
                        tokio::time::sleep(delay).await;
                        let mut resp = hyper::Response::builder().status(status);
                        if status == 429 {
                            resp = resp.header("retry-after", "1");
                        }
                        resp.body(Empty::<Bytes>::new())
                            .map_err(|_| -> hyper::Error { unreachable!("a valid status") })
                    }
                });
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            received,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A URL on a loopback port with nothing listening (yet).
fn free_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/hook", l.local_addr().unwrap())
}

fn always(status: u16) -> Behaviour {
    Arc::new(move |_| (status, Duration::ZERO))
}

/// A config with webhook `ops` (signed) at `url` and rule `big` (orig_bytes >= 1000 to ops).
fn settings(url: &str, webhook_extra: &str, alerts_extra: &str) -> AlertsSettings {
    let retry_max = if webhook_extra.contains("retry_max") {
        ""
    } else {
        "retry_max = \"50ms\""
    };
    let text = format!(
        r#"
[alerts]
{alerts_extra}

[alerts.webhooks.ops]
url = "{url}"
secret = "{SECRET}"
retry_base = "10ms"
{retry_max}
{webhook_extra}

[[alerts.rules]]
name = "big"
metric = "orig_bytes"
threshold = 1000
webhooks = ["ops"]
"#
    );
    Config::parse(&text, "test", &|_| None).unwrap().alerts
}

fn record(uid: &str) -> ConnRecord {
    ConnRecord {
        ts_ns: 1_700_000_000_000_000_000,
        uid: uid.into(),
        orig_h: "10.0.0.1".parse().unwrap(),
        orig_p: 40000,
        resp_h: "192.0.2.80".parse().unwrap(),
        resp_p: 443,
        duration_ns: 2_000_000_000,
        orig_bytes: 900,
        resp_bytes: 100,
        conn_state: "S1",
        local_orig: Some(true),
        local_resp: Some(true),
        history: "ShADad".into(),
        orig_pkts: 10,
        orig_ip_bytes: 1400,
        resp_pkts: 8,
        resp_ip_bytes: 520,
        ..crate::tests::fixtures::http_get_record()
    }
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn spool_files(dir: &Path) -> usize {
    let d = dir.join(DEFAULT_SPOOL).join("ops");
    std::fs::read_dir(d).map_or(0, |r| r.count())
}

fn log_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join(ALERT_LOG))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn rules_for_arms_the_matching_rules() {
    let text = r#"
[[alerts.rules]]
name = "https-upload"
metric = "orig_bytes"
threshold = 1000000
match = { proto = "tcp", resp_ports = [443] }

[[alerts.rules]]
name = "long"
metric = "duration"
threshold = "10m"

[[alerts.rules]]
name = "dns"
metric = "total_packets"
threshold = 500
match = { proto = "udp" }
"#;
    let cfg = Config::parse(text, "t", &|_| None).unwrap().alerts;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alerts = rt.block_on(async { Alerts::start(&cfg, dir.path(), false).unwrap() });
    let rec = record("C1");
    let m = ConnMatch::from_record(&rec, None);
    let arms: Vec<Arm> = alerts.rules_for(&m).collect();
    assert_eq!(
        arms,
        [
            Arm {
                rule: 0,
                metric: ThresholdKind::OrigBytes,
                threshold: 1_000_000
            },
            Arm {
                rule: 1,
                metric: ThresholdKind::Duration,
                threshold: 600_000_000_000
            },
        ]
    );
    let at: Vec<RuleId> = alerts
        .rules_at(&m, ThresholdKind::Duration, 600_000_000_000)
        .collect();
    assert_eq!(at, [1]);
    assert_eq!(alerts.rules_at(&m, ThresholdKind::Duration, 1).count(), 0);
}

/// Normal delivery, from synchronous code as `read` does it (finish_blocking).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_signed_alerts_and_logs_them() {
    let rx = Receiver::start(always(200)).await;
    let plain = Receiver::start(always(204)).await;
    let text = format!(
        r#"
[alerts.webhooks.ops]
url = "{}"
secret = "{SECRET}"
[alerts.webhooks.plain]
url = "{}"

[[alerts.rules]]
name = "big"
metric = "orig_bytes"
threshold = 1000
webhooks = ["ops"]

[[alerts.rules]]
name = "long"
metric = "duration"
threshold = "1s"
webhooks = ["ops", "plain"]
"#,
        rx.url(),
        plain.url()
    );
    let cfg = Config::parse(&text, "t", &|_| None).unwrap().alerts;
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().to_path_buf();
    // Synchronous calls on the runtime's block_on thread: where `read` runs.
    let mut alerts = Alerts::start(&cfg, &log_dir, true).unwrap();
    let made = vec![
        alerts
            .crossed(0, 1_700_000_001_000_000_000, &record("C1"))
            .unwrap(),
        alerts
            .crossed(0, 1_700_000_001_500_000_000, &record("C2"))
            .unwrap(),
        alerts
            .crossed(1, 1_700_000_002_000_000_000, &record("C1"))
            .unwrap(),
    ];
    let finished = alerts.finish_blocking();

    assert_eq!(finished.drain.left, 0, "{}", finished.drain);
    let m = finished.metrics;
    assert_eq!(
        (m.alerts, m.spooled, m.sent, m.retried, m.failed),
        (3, 4, 4, 0, 0)
    );
    assert!(finished.summary().unwrap().contains("4 sent"));

    let got = rx.received();
    assert_eq!(got.len(), 3);
    for (r, a) in got.iter().zip(&made) {
        assert_eq!(r.content_type, "application/json");
        assert_eq!(r.delivery_id, a.delivery_id);
        assert!(r.signature_ok(), "bad signature {:?}", r.signature);
        assert_eq!(&r.alert(), a);
    }
    let first = got[0].alert();
    assert_eq!(
        (first.rule.as_str(), first.conn["uid"].as_str().unwrap()),
        ("big", "C1")
    );
    assert_eq!(first.conn["orig_ip_bytes"], 1400);
    assert!(first.conn.get("community_id").is_some());
    assert_eq!(first.crossed_at, "2023-11-14T22:13:21.000000Z");

    let got_plain = plain.received();
    assert_eq!(got_plain.len(), 1);
    assert_eq!(got_plain[0].delivery_id, made[2].delivery_id);
    assert_eq!(got_plain[0].signature, None);

    let lines = log_lines(dir.path());
    assert_eq!(lines.len(), 3);
    for (l, a) in lines.iter().zip(&made) {
        assert_eq!(&serde_json::from_str::<Alert>(l).unwrap(), a);
    }
    assert_eq!(spool_files(dir.path()), 0);
}

#[tokio::test]
async fn receiver_answering_500_then_200() {
    let rx = Receiver::start(Arc::new(|n| {
        (if n == 0 { 500 } else { 200 }, Duration::ZERO)
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut alerts = Alerts::start(&settings(&rx.url(), "", ""), dir.path(), false).unwrap();
    let a = alerts.crossed(0, 0, &record("C1")).unwrap();
    let f = alerts.finish().await;
    assert_eq!(f.drain.left, 0);
    assert_eq!(
        (f.metrics.sent, f.metrics.retried, f.metrics.failed),
        (1, 1, 0)
    );
    let ids: Vec<String> = rx.received().into_iter().map(|r| r.delivery_id).collect();
    assert_eq!(ids, [a.delivery_id.clone(), a.delivery_id]);
    assert_eq!(spool_files(dir.path()), 0);
}

#[tokio::test]
async fn rate_limited_receiver_is_retried_after_the_time_it_asks() {
    let rx = Receiver::start(Arc::new(|n| {
        (if n == 0 { 429 } else { 200 }, Duration::ZERO)
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut alerts = Alerts::start(&settings(&rx.url(), "", ""), dir.path(), false).unwrap();
    let t = Instant::now();
    alerts.crossed(0, 0, &record("C1")).unwrap();
    // retry_max (50 ms) caps the wait below the 1 s asked for: retried quickly, once.
    let f = alerts.finish().await;
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert_eq!((f.metrics.sent, f.metrics.retried), (1, 1));

    let rx = Receiver::start(Arc::new(|n| {
        (if n == 0 { 429 } else { 200 }, Duration::ZERO)
    }))
    .await;
    let cfg = settings(&rx.url(), "retry_max = \"5s\"", "");
    let mut alerts = Alerts::start(&cfg, dir.path(), false).unwrap();
    let t = Instant::now();
    alerts.crossed(0, 0, &record("C2")).unwrap();
    let f = alerts.finish().await;
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "did not wait: {:?}",
        t.elapsed()
    );
    assert_eq!((f.metrics.sent, f.metrics.retried), (1, 1));
    assert_eq!(rx.received().len(), 2);
}

#[tokio::test]
async fn slow_receiver_past_the_timeout_is_retried() {
    // The first answer would come after 5 s; the timeout is 300 ms.
    let rx = Receiver::start(Arc::new(|n| {
        let delay = if n == 0 {
            Duration::from_secs(5)
        } else {
            Duration::ZERO
        };
        (200, delay)
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = settings(&rx.url(), "timeout = \"300ms\"", "");
    let mut alerts = Alerts::start(&cfg, dir.path(), false).unwrap();
    let t = Instant::now();
    let a = alerts.crossed(0, 0, &record("C1")).unwrap();
    let f = alerts.finish().await;
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "waited for the slow answer: {:?}",
        t.elapsed()
    );
    assert_eq!(f.drain.left, 0);
    assert_eq!((f.metrics.sent, f.metrics.failed), (1, 0));
    assert!(f.metrics.retried >= 1);
    let got = rx.received();
    assert!(got.len() >= 2);
    assert!(
        got.iter()
            .all(|r| r.delivery_id == a.delivery_id && r.signature_ok())
    );
}

#[tokio::test]
async fn refused_delivery_goes_to_the_dead_letter_file() {
    let rx = Receiver::start(always(404)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut alerts = Alerts::start(&settings(&rx.url(), "", ""), dir.path(), false).unwrap();
    let a = alerts.crossed(0, 0, &record("C1")).unwrap();
    let f = alerts.finish().await;
    assert_eq!(
        (f.metrics.sent, f.metrics.retried, f.metrics.failed),
        (0, 0, 1)
    );
    assert_eq!(rx.received().len(), 1, "a 404 is not retried");
    assert_eq!(spool_files(dir.path()), 0);
    let dead =
        std::fs::read_to_string(dir.path().join(DEFAULT_SPOOL).join(DEAD_LETTER_FILE)).unwrap();
    let lines: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["delivery_id"], a.delivery_id.as_str());
    assert_eq!(lines[0]["webhook"], "ops");
    assert!(lines[0]["error"].as_str().unwrap().contains("404"));
    assert_eq!(lines[0]["alert"]["rule"], "big");
}

/// A queue of one, a slow receiver and ten alerts: the overflow waits in the spool and is
/// sent in order, each once.
#[tokio::test]
async fn full_queue_overflows_to_the_spool_in_order() {
    let rx = Receiver::start(Arc::new(|_| (200, Duration::from_millis(30)))).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = settings(&rx.url(), "", "queue_capacity = 1");
    let mut alerts = Alerts::start(&cfg, dir.path(), false).unwrap();
    let ids: Vec<String> = (0..10)
        .map(|i| {
            alerts
                .crossed(0, 0, &record(&format!("C{i}")))
                .unwrap()
                .delivery_id
        })
        .collect();
    let f = alerts.finish().await;
    assert!(f.metrics.queue_full > 0);
    assert_eq!((f.metrics.sent, f.drain.left), (10, 0));
    let got: Vec<String> = rx.received().into_iter().map(|r| r.delivery_id).collect();
    assert_eq!(got, ids);
}

/// The receiver is down; the agent stops with alerts unsent, starts again, makes more alerts,
/// and the receiver comes up: every alert arrives, each id once after de-duplication, signed.
#[tokio::test]
async fn receiver_down_then_up_after_agent_restart() {
    let url = free_port_url();
    let port = reqwest::Url::parse(&url).unwrap().port().unwrap();
    let dir = tempfile::tempdir().unwrap();

    // First run: 5 alerts, a queue of 2, a short drain.
    let cfg = settings(
        &url,
        "timeout = \"500ms\"",
        "queue_capacity = 2\ndrain_timeout = \"200ms\"",
    );
    let mut alerts = Alerts::start(&cfg, dir.path(), false).unwrap();
    let mut expected: Vec<String> = (0..5)
        .map(|i| {
            alerts
                .crossed(0, 0, &record(&format!("Cfirst{i}")))
                .unwrap()
                .delivery_id
        })
        .collect();
    let metrics = alerts.metrics();
    eventually("a failed attempt", Duration::from_secs(5), || {
        metrics.snapshot().retried >= 2
    })
    .await;
    let f = alerts.finish().await;
    assert_eq!((f.metrics.sent, f.drain.left), (0, 5), "{}", f.drain);
    assert_eq!(spool_files(dir.path()), 5);

    // Restart: the spool is replayed, 3 more alerts, then the receiver comes up.
    let cfg = settings(
        &url,
        "timeout = \"500ms\"",
        "queue_capacity = 2\ndrain_timeout = \"10s\"",
    );
    let mut alerts = Alerts::start(&cfg, dir.path(), false).unwrap();
    expected.extend((0..3).map(|i| {
        alerts
            .crossed(0, 0, &record(&format!("Csecond{i}")))
            .unwrap()
            .delivery_id
    }));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rx = Receiver::start_on(format!("127.0.0.1:{port}").parse().unwrap(), always(200)).await;
    let f = alerts.finish().await;
    assert_eq!(f.drain.left, 0, "{}", f.drain);
    assert_eq!(
        (f.metrics.replayed, f.metrics.spooled, f.metrics.sent),
        (5, 3, 8)
    );

    let got = rx.received();
    assert!(got.len() >= 8);
    for r in &got {
        assert!(r.signature_ok(), "bad signature on {}", r.delivery_id);
        assert_eq!(r.alert().delivery_id, r.delivery_id);
    }
    let unique: HashSet<&str> = got.iter().map(|r| r.delivery_id.as_str()).collect();
    let want: HashSet<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(want.len(), 8);
    assert_eq!(unique, want);
    assert_eq!(spool_files(dir.path()), 0);
    // alerts.log is appended across the restart.
    assert_eq!(log_lines(dir.path()).len(), 8);
}

/// `read --config`: the delivery left in the spool by an earlier run (receiver down) goes out
/// during the replay, to the webhook's current URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_delivers_what_an_earlier_run_left_in_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = settings(&free_port_url(), "", "drain_timeout = \"100ms\"");
    let mut alerts = Alerts::start(&cfg, dir.path(), false).unwrap();
    let id = alerts
        .crossed(0, 0, &record("Cearlier"))
        .unwrap()
        .delivery_id;
    assert_eq!(alerts.finish().await.drain.left, 1);

    let rx = Receiver::start(always(200)).await;
    let config = dir.path().join("conntrack.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts.webhooks.ops]\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
            rx.url()
        ),
    )
    .unwrap();
    let trace = dir.path().join("empty.pcap");
    crate::capture::pcap::tests::write_pcap(
        &trace,
        crate::capture::link::LINKTYPE_ETHERNET,
        false,
        &[],
    );
    let d = |p: &Path| p.display().to_string();
    let args = crate::tests::fixtures::read_args(
        &trace,
        &[
            "--log-dir",
            &d(dir.path()),
            "--config",
            &d(&config),
            "--engine",
            "host",
        ],
    );
    let config = crate::tests::fixtures::config_of(&args);
    crate::commands::read::read(args, config).unwrap();
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].delivery_id, id);
    assert!(got[0].signature_ok());
    assert_eq!(spool_files(dir.path()), 0);
}
