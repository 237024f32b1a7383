//! Alert and delivery counters, shared by the alert entry point and the delivery workers; plain
//! atomics so that the metrics endpoint can read them without locks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters since the agent started. Deliveries count (alert, webhook) pairs.
#[derive(Debug, Default)]
pub struct AlertMetrics {
    /// Alerts made (each written to alerts.log).
    pub alerts: AtomicU64,
    /// Deliveries written to the spool.
    pub spooled: AtomicU64,
    /// Deliveries found in the spool at start (left by an earlier run).
    pub replayed: AtomicU64,
    /// Deliveries answered with a 2xx.
    pub sent: AtomicU64,
    /// Attempts that failed and will be tried again (timeouts, connection errors, 5xx, 408, 429).
    pub retried: AtomicU64,
    /// Deliveries refused for good (other 4xx, 3xx) and moved to the dead-letter file.
    pub failed: AtomicU64,
    /// Deliveries that found the in-memory queue full; they wait in the spool.
    pub queue_full: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub alerts: u64,
    pub spooled: u64,
    pub replayed: u64,
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    pub queue_full: u64,
}

impl AlertMetrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            alerts: g(&self.alerts),
            spooled: g(&self.spooled),
            replayed: g(&self.replayed),
            sent: g(&self.sent),
            retried: g(&self.retried),
            failed: g(&self.failed),
            queue_full: g(&self.queue_full),
        }
    }
}

impl std::fmt::Display for MetricsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} alerts; webhook deliveries: {} sent, {} retries, {} failed (dead letter), {} replayed from the spool",
            self.alerts, self.sent, self.retried, self.failed, self.replayed
        )
    }
}
