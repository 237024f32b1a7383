//! Alerts: what happens behind a threshold crossing. Rules from the config file say which
//! thresholds to arm on a new connection ([`Alerts::rules_for`]); a crossing becomes an
//! [`Alert`] ([`Alerts::crossed`]) written to `alerts.log` and delivered to the rule's
//! webhooks (webhook.rs), through an on-disk spool that outlives receivers and restarts.
//!
//! The thresholds themselves (kernel side, ConnThreshold API) are not here: the
//! [`capability::AlertRules`] capability arms them through the event core and calls
//! [`Alerts::crossed`] on a crossing.

pub mod alert;
pub mod capability;
pub mod config;
pub mod metrics;
pub mod rule;
mod spool;
pub mod webhook;

#[cfg(test)]
mod tests;

use crate::core::thresholds::ThresholdKind;
use crate::logs::record::ConnRecord;
pub use alert::Alert;
use config::AlertsSettings;
pub use metrics::{AlertMetrics, MetricsSnapshot};
pub use rule::{ConnMatch, Rule, RuleId};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use webhook::Delivery;
pub use webhook::DrainReport;

pub const ALERT_LOG: &str = "alerts.log";
pub const DEFAULT_SPOOL: &str = "alerts-spool";

/// A threshold to arm on a new connection: `threshold` in the metric's unit (bytes, packets,
/// nanoseconds for duration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arm {
    pub rule: RuleId,
    pub metric: ThresholdKind,
    pub threshold: u64,
}

/// The alert capability: rules, alerts.log and the webhook delivery workers.
pub struct Alerts {
    rules: Vec<Rule>,
    log: Option<crate::logs::rotate::LogFile>,
    log_path: PathBuf,
    delivery: Delivery,
    metrics: Arc<AlertMetrics>,
    community_id: bool,
    drain_timeout: Duration,
    /// Something to report at the end: rules or webhooks are configured.
    configured: bool,
    /// Bumped when the rules are replaced: the capability's copy of their matches is checked
    /// against it without taking the lock ([`capability::AlertRules`]).
    rules_version: Arc<AtomicU64>,
}

impl Alerts {
    /// Opens alerts.log (appending: it is the record of what was sent) when rules exist, and
    /// starts one delivery worker per webhook on the current tokio runtime, which first sends
    /// what an earlier run left in the spool. `community_id`: as `--community-id`, adds it
    /// to each alert's connection.
    pub fn start(
        settings: &AlertsSettings,
        log_dir: &Path,
        community_id: bool,
    ) -> anyhow::Result<Self> {
        let log_path = log_dir.join(ALERT_LOG);
        let log = if settings.rules.is_empty() {
            None
        } else {
            Some(crate::logs::rotate::LogFile::append(&log_path)?)
        };
        let spool_root = settings
            .spool_dir
            .clone()
            .unwrap_or_else(|| log_dir.join(DEFAULT_SPOOL));
        let metrics = Arc::new(AlertMetrics::default());
        let delivery = Delivery::start(
            &settings.webhooks,
            &spool_root,
            settings.queue_capacity,
            metrics.clone(),
        )?;
        Ok(Self {
            rules: settings.rules.clone(),
            log,
            log_path,
            delivery,
            metrics,
            community_id,
            drain_timeout: settings.drain_timeout,
            configured: !settings.rules.is_empty() || !settings.webhooks.is_empty(),
            rules_version: Arc::default(),
        })
    }

    /// New rules (SIGHUP) with the same webhooks. Thresholds already armed map to rules by
    /// value (`rules_at`): a crossing that no current rule stands for makes no alert.
    pub fn replace_rules(&mut self, rules: Vec<Rule>) {
        self.rules = rules;
        self.rules_version.fetch_add(1, Ordering::Release);
    }

    /// The rules' version (changes when they are replaced) and their matches as of now.
    pub fn matchers(&self) -> (Arc<AtomicU64>, u64, Vec<rule::Match>) {
        let version = self.rules_version.load(Ordering::Acquire);
        let matchers = self.rules.iter().map(|r| r.matcher.clone()).collect();
        (self.rules_version.clone(), version, matchers)
    }

    /// No rules: nothing to arm, no alert can happen.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The thresholds to arm on a new connection: one per rule that matches it.
    pub fn rules_for<'a>(&'a self, conn: &'a ConnMatch<'a>) -> impl Iterator<Item = Arm> + 'a {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.matches(conn))
            .map(|(rule, r)| Arm {
                rule,
                metric: r.metric,
                threshold: r.threshold,
            })
    }

    /// The rules a crossing of `threshold` on `metric` stands for, when the threshold API
    /// reports values rather than rule ids (several rules may share one threshold).
    pub fn rules_at<'a>(
        &'a self,
        conn: &'a ConnMatch<'a>,
        metric: ThresholdKind,
        threshold: u64,
    ) -> impl Iterator<Item = RuleId> + 'a {
        self.rules_for(conn)
            .filter(move |a| a.metric == metric && a.threshold == threshold)
            .map(|a| a.rule)
    }

    /// Rule `rule`'s threshold was crossed at network time `crossed_at_ns` by the connection
    /// `conn` (its record so far, uid and local_* filled in as for conn.log). Writes the alert
    /// to alerts.log and spools it for each of the rule's webhooks; returns it.
    pub fn crossed(
        &mut self,
        rule: RuleId,
        crossed_at_ns: i64,
        conn: &ConnRecord,
    ) -> anyhow::Result<Alert> {
        let r = self
            .rules
            .get(rule)
            .ok_or_else(|| anyhow::anyhow!("no alert rule #{rule}"))?;
        let alert = Alert::new(r, r.threshold, crossed_at_ns, conn, self.community_id);
        let body = alert.to_json();
        AlertMetrics::inc(&self.metrics.alerts);
        if let Some(log) = &mut self.log {
            // Written at once (`tail -f alerts.log` shows it now); on a full disk, held as
            // conn.log's records are (`run`).
            log.write_line(&body, None)?;
        }
        let created = alert::now_ns();
        for &hook in &r.webhooks {
            self.delivery
                .enqueue(hook, created, &alert.delivery_id, body.as_bytes())?;
        }
        Ok(alert)
    }

    /// What became of alerts.log's lines (None without rules: no alerts.log).
    pub fn log_health(&self) -> Option<Arc<crate::logs::health::LogHealth>> {
        self.log.as_ref().map(|l| l.health())
    }

    /// The counters (shared: they stay readable after `finish`), for the metrics endpoint.
    pub fn metrics(&self) -> Arc<AlertMetrics> {
        self.metrics.clone()
    }

    /// Waits up to the configured `drain_timeout` for pending deliveries, then stops the
    /// workers; what is left stays in the spool for the next start.
    pub async fn finish(self) -> Finished {
        let drain = self.delivery.drain(self.drain_timeout).await;
        Finished {
            drain,
            metrics: self.metrics.snapshot(),
            log_path: self.log_path,
            configured: self.configured,
        }
    }

    /// `finish` from synchronous code (`read`). On a multi-threaded tokio runtime the workers
    /// keep delivering while this thread waits; elsewhere they cannot run while it blocks, so
    /// they are stopped at once and everything pending stays in the spool.
    pub fn finish_blocking(self) -> Finished {
        use tokio::runtime::{Handle, RuntimeFlavor};
        match Handle::try_current() {
            Ok(rt) if rt.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| rt.block_on(self.finish()))
            }
            _ => Finished {
                drain: self.delivery.stop_now(),
                metrics: self.metrics.snapshot(),
                log_path: self.log_path,
                configured: self.configured,
            },
        }
    }
}

/// The state of alerting when the agent stops.
#[derive(Debug, Clone)]
pub struct Finished {
    pub drain: DrainReport,
    pub metrics: MetricsSnapshot,
    pub log_path: PathBuf,
    configured: bool,
}

impl Finished {
    /// One line for the end of `read`/`run`; None when no rule or webhook is configured.
    pub fn summary(&self) -> Option<String> {
        self.configured.then(|| {
            format!(
                "conntrack-agent: {} (log {}); {}",
                self.metrics,
                self.log_path.display(),
                self.drain
            )
        })
    }
}
