//! The IPFIX exporter's counters and its end-of-run summary: every record is exported or
//! dropped, with the reason.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the exporter. A record is either exported (handed to the network: over UDP
/// nothing confirms that it arrived) or dropped, for one of two reasons.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub records: AtomicU64,
    /// Dropped because the queue to the sender thread was full.
    pub dropped_queue_full: AtomicU64,
    /// Dropped because the message that carried them could not be sent.
    pub dropped_unsent: AtomicU64,
    /// Messages that could not be sent.
    pub send_errors: AtomicU64,
    /// UDP sends refused (ECONNREFUSED): an ICMP port unreachable came back for an earlier
    /// message, i.e. nothing listens at the collector's address. The refused send itself
    /// sends nothing, and what was exported before it was lost too.
    pub refused: AtomicU64,
    /// The last send error, for the summary.
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl ExportStats {
    /// Records dropped, for every reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full.load(Ordering::Relaxed)
            + self.dropped_unsent.load(Ordering::Relaxed)
    }

    /// The end-of-run line: what was exported, what was dropped and why.
    pub fn summary(&self, target: SocketAddr) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut line = format!(
            "conntrack-agent: IPFIX to {target}: {} records exported, {} dropped",
            get(&self.records),
            self.dropped()
        );
        let mut reasons = Vec::new();
        if get(&self.dropped_queue_full) > 0 {
            reasons.push(format!(
                "{} with the queue full (the collector or network was slower than the traffic)",
                get(&self.dropped_queue_full)
            ));
        }
        if get(&self.dropped_unsent) > 0 {
            let error = self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default();
            reasons.push(format!(
                "{} not sent: {} messages failed ({error})",
                get(&self.dropped_unsent),
                get(&self.send_errors)
            ));
        }
        if !reasons.is_empty() {
            line.push_str(&format!(" ({})", reasons.join("; ")));
        }
        if get(&self.refused) > 0 {
            let n = get(&self.refused);
            line.push_str(&format!(
                "; but nothing was listening at {target} (ICMP port unreachable, {n} time{}): \
                 records exported around then were lost; is the collector running?",
                if n == 1 { "" } else { "s" }
            ));
        }
        line
    }

    pub(super) fn send_failed(&self, records: usize, e: &anyhow::Error) {
        self.send_errors.fetch_add(1, Ordering::Relaxed);
        self.dropped_unsent
            .fetch_add(records as u64, Ordering::Relaxed);
        if is_refused(e) {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{e:#}"));
    }
}

/// ECONNREFUSED somewhere in `e`'s chain.
fn is_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_gives_each_dropped_record_its_reason() {
        let target: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let x = ExportStats::default();
        x.records.store(7, Ordering::Relaxed);
        assert_eq!(
            x.summary(target),
            "conntrack-agent: IPFIX to 127.0.0.1:1: 7 records exported, 0 dropped"
        );
        x.dropped_queue_full.store(2, Ordering::Relaxed);
        let refused =
            anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
                .context("UDP send");
        x.send_failed(3, &refused);
        x.send_failed(1, &refused);
        let s = x.summary(target);
        assert!(s.contains("7 records exported, 6 dropped ("), "{s}");
        assert!(s.contains("2 with the queue full"), "{s}");
        assert!(
            s.contains("4 not sent: 2 messages failed (UDP send: "),
            "{s}"
        );
        assert!(s.contains("nothing was listening at 127.0.0.1:1"), "{s}");
        assert!(s.contains("port unreachable, 2 times"), "{s}");
    }
}
