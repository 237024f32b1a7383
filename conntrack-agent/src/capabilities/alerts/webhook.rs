//! Webhook delivery that loses nothing: every delivery is on disk (spool.rs) before it is
//! accepted, and leaves the disk only when the receiver answered for good. One worker task per
//! webhook posts the spooled bodies oldest first, so a receiver that is down holds back only
//! its own deliveries.
//!
//! Receivers get `X-Conntrack-Delivery` (the alert's delivery id, to de-duplicate: delivery is
//! at least once) and, with a secret, `X-Conntrack-Signature: sha256=<hex HMAC-SHA256 of the
//! body>`. A 2xx is delivered; timeouts, connection errors, 5xx, 408 and 429 are retried
//! without limit with exponential backoff and full jitter; any other answer (4xx, 3xx: the
//! request itself is wrong, retrying cannot help) moves the delivery to the dead-letter file.

use super::config::WebhookSettings;
use super::metrics::AlertMetrics;
use super::spool::Spool;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

pub const DELIVERY_HEADER: &str = "X-Conntrack-Delivery";
pub const SIGNATURE_HEADER: &str = "X-Conntrack-Signature";
/// Refused deliveries, one JSON object a line, in the spool root.
pub const DEAD_LETTER_FILE: &str = "dead-letter.jsonl";

/// `sha256=<hex>` of the body under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Full-jitter backoff: a uniform wait in [0, min(max, base * 2^attempt)]. The jitter spreads
/// the retries of many agents (or many queued alerts) over the window instead of hitting a
/// recovering receiver all at once.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let cap = base
        .saturating_mul(2u32.saturating_pow(attempt.min(31)))
        .min(max);
    let cap_ns = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::random_range(0..=cap_ns))
}

/// What an answer means for a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Delivered,
    /// With the receiver's `Retry-After` (seconds), when it gave one.
    Retry(String, Option<Duration>),
    Refused(String),
}

/// `Retry-After: <seconds>` (429, 503). The HTTP-date form is rare for webhooks and ignored.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn classify(status: reqwest::StatusCode) -> Outcome {
    let code = status.as_u16();
    if status.is_success() {
        Outcome::Delivered
    } else if status.is_server_error() || code == 408 || code == 429 {
        Outcome::Retry(format!("HTTP {status}"), None)
    } else {
        Outcome::Refused(format!("HTTP {status}"))
    }
}

/// A pending delivery: a hint to its spool file, with the body read once.
#[derive(Debug, Clone)]
struct Job {
    path: PathBuf,
    delivery_id: String,
    body: Arc<[u8]>,
}

/// The accepting side of one webhook's queue.
struct Queue {
    spool: Spool,
    tx: mpsc::Sender<Job>,
    /// Set when a delivery found the queue full (or at start): the worker then reads the spool.
    overflow: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

/// What was left when delivery stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainReport {
    /// Deliveries still in the spool (sent on the next start).
    pub left: usize,
    pub spool_dir: PathBuf,
}

impl std::fmt::Display for DrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.left {
            0 => write!(f, "no delivery pending"),
            n => write!(
                f,
                "{n} {} not answered yet, kept in {} for the next start",
                if n == 1 { "delivery" } else { "deliveries" },
                self.spool_dir.display()
            ),
        }
    }
}

/// The delivery workers of all configured webhooks.
pub struct Delivery {
    queues: Vec<Queue>,
    tasks: Vec<JoinHandle<()>>,
    metrics: Arc<AlertMetrics>,
    spool_root: PathBuf,
}

impl Delivery {
    /// Opens each webhook's spool and starts its worker on the current tokio runtime (must be
    /// called within one). What an earlier run left in the spool is sent first.
    pub fn start(
        webhooks: &[WebhookSettings],
        spool_root: &Path,
        queue_capacity: usize,
        metrics: Arc<AlertMetrics>,
    ) -> anyhow::Result<Self> {
        // reqwest is built without a default TLS provider (see Cargo.toml): ring is ours.
        // An error only means a provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if !webhooks.is_empty() && tokio::runtime::Handle::try_current().is_err() {
            anyhow::bail!("webhook delivery needs a tokio runtime");
        }
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for hook in webhooks {
            let spool = Spool::open(spool_root, &hook.name)?;
            let left = spool.list()?.len() as u64;
            metrics
                .replayed
                .fetch_add(left, std::sync::atomic::Ordering::Relaxed);
            if left > 0 {
                log::info!(
                    "webhook {}: {left} deliveries left in the spool by an earlier run",
                    hook.name
                );
            }
            let client = reqwest::Client::builder()
                .timeout(hook.timeout)
                .connect_timeout(hook.timeout)
                // A redirected POST may turn into a GET: configure the final URL instead.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("conntrack-agent/", env!("CARGO_PKG_VERSION")))
                .build()?;
            let (tx, rx) = mpsc::channel(queue_capacity);
            let overflow = Arc::new(AtomicBool::new(true));
            let wake = Arc::new(Notify::new());
            let worker = Worker {
                hook: hook.clone(),
                client,
                spool: spool.clone(),
                rx,
                overflow: overflow.clone(),
                wake: wake.clone(),
                pending: VecDeque::new(),
                capacity: queue_capacity,
                metrics: metrics.clone(),
                dead_letter: spool_root.join(DEAD_LETTER_FILE),
            };
            tasks.push(tokio::spawn(worker.run()));
            queues.push(Queue {
                spool,
                tx,
                overflow,
                wake,
            });
        }
        Ok(Self {
            queues,
            tasks,
            metrics,
            spool_root: spool_root.to_path_buf(),
        })
    }

    /// Accepts one delivery for webhook `webhook` (an index into the settings given to
    /// `start`): on disk first, then queued. Returns once the delivery is durable; an error
    /// means it was not accepted.
    pub fn enqueue(
        &self,
        webhook: usize,
        created_ns: i64,
        delivery_id: &str,
        body: &[u8],
    ) -> anyhow::Result<()> {
        let q = self
            .queues
            .get(webhook)
            .ok_or_else(|| anyhow::anyhow!("no webhook #{webhook}"))?;
        let path = q.spool.write(created_ns, delivery_id, body)?;
        AlertMetrics::inc(&self.metrics.spooled);
        let job = Job {
            path,
            delivery_id: delivery_id.to_string(),
            body: body.into(),
        };
        if q.tx.try_send(job).is_err() {
            // Full: the spool has it; the worker reads it from there once the queue drains.
            AlertMetrics::inc(&self.metrics.queue_full);
            q.overflow.store(true, Ordering::Release);
            q.wake.notify_one();
        }
        Ok(())
    }

    /// Stops accepting, lets the workers deliver what is pending for at most `wait`, then stops
    /// them; what is left stays in the spool.
    pub async fn drain(self, wait: Duration) -> DrainReport {
        let Self {
            queues,
            mut tasks,
            spool_root,
            ..
        } = self;
        let spools: Vec<Spool> = queues.iter().map(|q| q.spool.clone()).collect();
        // Closing the channels tells each worker to stop once its spool is empty.
        drop(queues);
        let all_done = async {
            for t in &mut tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(wait, all_done).await.is_err() {
            for t in &tasks {
                // An attempt cut short leaves its file: it is sent again on the next start.
                t.abort();
            }
            for t in tasks {
                let _ = t.await;
            }
        }
        DrainReport {
            left: spools.iter().map(Spool::len).sum(),
            spool_dir: spool_root,
        }
    }
}

impl Delivery {
    /// Stops the workers without waiting (attempts in flight are cut short: their files stay).
    pub fn stop_now(self) -> DrainReport {
        for t in &self.tasks {
            t.abort();
        }
        DrainReport {
            left: self.queues.iter().map(|q| q.spool.len()).sum(),
            spool_dir: self.spool_root,
        }
    }
}

struct Worker {
    hook: WebhookSettings,
    client: reqwest::Client,
    spool: Spool,
    rx: mpsc::Receiver<Job>,
    overflow: Arc<AtomicBool>,
    wake: Arc<Notify>,
    /// Jobs read back from the spool, oldest first (at most `capacity`).
    pending: VecDeque<Job>,
    capacity: usize,
    metrics: Arc<AlertMetrics>,
    dead_letter: PathBuf,
}

impl Worker {
    async fn run(mut self) {
        while let Some(job) = self.next_job().await {
            self.deliver(job).await;
        }
    }

    /// The next delivery; None once the queue is closed and nothing is left in the spool.
    async fn next_job(&mut self) -> Option<Job> {
        loop {
            if let Some(job) = self.pending.pop_front() {
                return Some(job);
            }
            if self.overflow.swap(false, Ordering::AcqRel) {
                // The queued hints are all in the spool too (written before they were sent),
                // so the spool alone gives every pending delivery, in order.
                while self.rx.try_recv().is_ok() {}
                self.load_from_spool().await;
                continue;
            }
            tokio::select! {
                job = self.rx.recv() => match job {
                    Some(job) => return Some(job),
                    None if self.overflow.load(Ordering::Acquire) => {}
                    None => return None,
                },
                () = self.wake.notified() => {}
            }
        }
    }

    /// Refills `pending` with the oldest spooled deliveries. Listing and reading a spool that
    /// grew during a long outage is disk work: it runs off the runtime's worker threads.
    async fn load_from_spool(&mut self) {
        let (spool, capacity, name) = (self.spool.clone(), self.capacity, self.hook.name.clone());
        let read = tokio::task::spawn_blocking(move || read_oldest(&spool, capacity, &name)).await;
        match read {
            Ok(Ok((jobs, more))) => {
                if more {
                    self.overflow.store(true, Ordering::Release);
                }
                self.pending.extend(jobs);
            }
            Ok(Err(e)) => log::error!("webhook {}: {e:#}", self.hook.name),
            Err(e) => log::error!("webhook {}: reading the spool: {e}", self.hook.name),
        }
    }

    async fn deliver(&mut self, job: Job) {
        if !job.path.exists() {
            // Answered already: this was a second hint to the same file.
            return;
        }
        let mut attempt: u32 = 0;
        loop {
            match self.post(&job).await {
                Outcome::Delivered => {
                    self.forget(&job);
                    AlertMetrics::inc(&self.metrics.sent);
                    return;
                }
                Outcome::Refused(why) => {
                    log::error!(
                        "webhook {}: delivery {} refused ({why}); kept in {}",
                        self.hook.name,
                        job.delivery_id,
                        self.dead_letter.display()
                    );
                    self.bury(&job, &why);
                    self.forget(&job);
                    AlertMetrics::inc(&self.metrics.failed);
                    return;
                }
                Outcome::Retry(why, asked) => {
                    AlertMetrics::inc(&self.metrics.retried);
                    // Once, then at doubling intervals: a receiver down for hours does not
                    // flood the agent's log.
                    if attempt == 0 || attempt.is_power_of_two() {
                        log::warn!(
                            "webhook {}: delivery {} attempt {} failed ({why}); retrying",
                            self.hook.name,
                            job.delivery_id,
                            attempt + 1
                        );
                    }
                    let mut wait = backoff(self.hook.retry_base, self.hook.retry_max, attempt);
                    // A receiver that says when to come back (rate limits) is obeyed, up to
                    // retry_max so that a bogus value cannot park the queue for days.
                    if let Some(asked) = asked {
                        wait = wait.max(asked.min(self.hook.retry_max));
                    }
                    tokio::time::sleep(wait).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    async fn post(&self, job: &Job) -> Outcome {
        let mut req = self
            .client
            .post(self.hook.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(DELIVERY_HEADER, job.delivery_id.as_str())
            .body(job.body.to_vec());
        if let Some(key) = &self.hook.secret {
            req = req.header(SIGNATURE_HEADER, signature(key, &job.body));
        }
        match req.send().await {
            Ok(resp) => match classify(resp.status()) {
                Outcome::Retry(why, _) => Outcome::Retry(why, retry_after(resp.headers())),
                other => other,
            },
            Err(e) => Outcome::Retry(error_chain(&e), None),
        }
    }

    /// The delivery is answered for good: its spool file goes.
    fn forget(&self, job: &Job) {
        if let Err(e) = std::fs::remove_file(&job.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            log::error!(
                "webhook {}: cannot remove {}: {e}",
                self.hook.name,
                job.path.display()
            );
        }
    }

    /// Appends a refused delivery to the dead-letter file, with the alert itself.
    fn bury(&self, job: &Job, why: &str) {
        let alert: serde_json::Value = serde_json::from_slice(&job.body)
            .unwrap_or_else(|_| String::from_utf8_lossy(&job.body).into_owned().into());
        let line = serde_json::json!({
            "failed_at": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            "webhook": self.hook.name,
            "url": self.hook.url.as_str(),
            "delivery_id": job.delivery_id,
            "error": why,
            "alert": alert,
        });
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.dead_letter)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = res {
            log::error!("cannot write {}: {e}", self.dead_letter.display());
        }
    }
}

/// The oldest `capacity` deliveries in the spool, and whether more are waiting.
fn read_oldest(spool: &Spool, capacity: usize, name: &str) -> anyhow::Result<(Vec<Job>, bool)> {
    let entries = spool.list()?;
    let more = entries.len() > capacity;
    let mut jobs = Vec::new();
    for e in entries.into_iter().take(capacity) {
        match std::fs::read(&e.path) {
            Ok(body) => jobs.push(Job {
                path: e.path,
                delivery_id: e.delivery_id,
                body: body.into(),
            }),
            // Unreadable now: it stays in the spool for a later scan.
            Err(err) => log::warn!("webhook {name}: {}: {err}", e.path.display()),
        }
    }
    Ok((jobs, more))
}

/// "error sending request: connection refused" rather than the outermost message only.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 0..40 {
            let cap = (base * 2u32.pow(attempt.min(10))).min(max);
            let samples: Vec<Duration> = (0..50).map(|_| backoff(base, max, attempt)).collect();
            assert!(samples.iter().all(|d| *d <= cap), "attempt {attempt}");
            // Full jitter: the waits spread over the window, not all at the cap.
            let distinct: std::collections::HashSet<_> = samples.iter().collect();
            assert!(distinct.len() > 10, "attempt {attempt}: {samples:?}");
        }
    }

    #[test]
    fn answers_are_classified() {
        let c = |n: u16| classify(reqwest::StatusCode::from_u16(n).unwrap());
        assert_eq!(c(200), Outcome::Delivered);
        assert_eq!(c(204), Outcome::Delivered);
        for n in [500, 502, 503, 408, 429] {
            assert!(matches!(c(n), Outcome::Retry(_, None)), "{n}");
        }
        for n in [400, 401, 403, 404, 410, 301] {
            assert!(matches!(c(n), Outcome::Refused(_)), "{n}");
        }
    }

    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
