//! What became of the records the agent meant to write: held while a log cannot be written
//! (disk full, I/O error), dropped past the backlog, or dropped because standard output was
//! closed by its reader. One [`LogHealth`] per log, shared by its writer, the metrics endpoint
//! and the summary printed at exit (the agent collects them: `Agent::log_health`).
//!
//! How a writer reacts to an error is a property of the command, not of the log: `run` keeps
//! monitoring and holds records until the disk takes them again ([`set_hold`]); `read` stops
//! with an error naming the file (the default), as any batch tool should.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What a log writer does when a write fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnWriteError {
    /// Return the error (the caller stops): `read`.
    Fail,
    /// Warn once, keep up to this many records in memory, retry every second: `run`.
    Hold { backlog: u64 },
}

/// `--log-backlog`'s default: records held per log while it cannot be written.
pub const DEFAULT_BACKLOG: u64 = 1_000_000;

static HOLD_BACKLOG: AtomicU64 = AtomicU64::new(0);

/// From now on, logs created hold records on write errors (0: they fail).
pub fn set_hold(backlog: u64) {
    HOLD_BACKLOG.store(backlog.max(1), Ordering::Relaxed);
}

/// The policy for a log created now.
pub fn policy() -> OnWriteError {
    match HOLD_BACKLOG.load(Ordering::Relaxed) {
        0 => OnWriteError::Fail,
        backlog => OnWriteError::Hold { backlog },
    }
}

/// Counters of one log (the file's display name, e.g. `logs/conn.log`).
#[derive(Debug, Default)]
pub struct LogHealth {
    pub name: String,
    /// What `dropped` counts: "records", or "bytes" for extracted files.
    pub unit: &'static str,
    /// Records (or bytes, see `unit`) that will never be written.
    pub dropped: AtomicU64,
    /// Records held in memory, waiting for the log to be writable again.
    pub pending: AtomicU64,
    /// The log is failing now.
    pub failing: AtomicBool,
    /// It failed at least once (the summary says so even after a recovery).
    pub failed_once: AtomicBool,
    /// Standard output was closed by its reader (`--stdout | head`).
    pub reader_gone: AtomicBool,
    /// The first error, for the summary.
    pub first_error: Mutex<Option<String>>,
}

impl LogHealth {
    pub fn new(name: &str) -> Arc<Self> {
        Self::counting(name, "records")
    }

    /// Counting what is lost in `unit`s.
    pub fn counting(name: &str, unit: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_string(),
            unit,
            ..Default::default()
        })
    }

    pub fn drop_records(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Notes a failure; true the first time (the caller warns once).
    pub fn fail(&self, error: &str) -> bool {
        self.failing.store(true, Ordering::Relaxed);
        let first = !self.failed_once.swap(true, Ordering::Relaxed);
        if first {
            *self.first_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
        }
        first
    }

    /// The summary line for this log, if anything went wrong.
    pub fn summary(&self) -> Option<String> {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if self.reader_gone.load(Ordering::Relaxed) {
            return Some(format!(
                "{}: closed by its reader; {dropped} {} were not written",
                self.name, self.unit
            ));
        }
        if !self.failed_once.load(Ordering::Relaxed) {
            return None;
        }
        let error = self
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        Some(if dropped > 0 {
            format!(
                "{}: writes failed ({error}); {dropped} {} were lost",
                self.name, self.unit
            )
        } else if self.unit == "records" {
            // Held records all reached the disk once it had room again.
            format!(
                "{}: writes failed ({error}); everything was written once it could be",
                self.name
            )
        } else {
            // Extraction: a file that could not be created lost its data uncounted.
            format!("{}: writes failed ({error})", self.name)
        })
    }
}

/// The trouble of these logs, a line each, for the summary at exit.
pub fn summaries(logs: &[Arc<LogHealth>]) -> Vec<String> {
    logs.iter().filter_map(|h| h.summary()).collect()
}

/// Records lost for good (not counting a reader that closed standard output): `read` then
/// exits non-zero.
pub fn any_lost(logs: &[Arc<LogHealth>]) -> bool {
    logs.iter()
        .any(|h| h.dropped.load(Ordering::Relaxed) > 0 && !h.reader_gone.load(Ordering::Relaxed))
}

/// Some of these logs cannot be written now.
pub fn any_failing(logs: &[Arc<LogHealth>]) -> bool {
    logs.iter().any(|h| h.failing.load(Ordering::Relaxed))
}
