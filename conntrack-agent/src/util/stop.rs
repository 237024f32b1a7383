//! Stop requests of a replay (`read`): the first SIGINT or SIGTERM asks it to stop reading and
//! drain as at the end of input, a second one to exit at once.
//!
//! The signals are taken by a task on the tokio runtime that `main` runs (`run` handles its
//! signals the same way), so the replay loop, which runs on the main thread, only loads one
//! atomic per packet. Without a runtime (unit tests calling `read` directly) nothing is
//! installed and the default actions stay.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Signals received so far: the count above the low byte, the last signal's number in it.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicU32>);

impl Stop {
    /// Records a signal (what the handler does; tests call it directly).
    pub fn request(&self, signal: i32) {
        let sig = (signal as u32) & 0xff;
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(((v >> 8).saturating_add(1) << 8) | sig)
            });
    }

    /// True once a stop signal came: the caller stops at its next packet.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed) != 0
    }

    /// The last signal received, if any.
    pub fn signal(&self) -> Option<i32> {
        let v = self.0.load(Ordering::Relaxed);
        (v != 0).then_some((v & 0xff) as i32)
    }

    /// A second signal came: exit without finishing the drain.
    pub fn exit_now(&self) -> bool {
        self.0.load(Ordering::Relaxed) >> 8 >= 2
    }

    /// Takes SIGINT and SIGTERM from now on (their default action would kill the process
    /// with the logs unfinished). Does nothing outside a tokio runtime.
    pub fn install(&self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Ok(());
        };
        let _entered = rt.enter();
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| anyhow::anyhow!("cannot install the SIGINT handler: {e}"))?;
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| anyhow::anyhow!("cannot install the SIGTERM handler: {e}"))?;
        let stop = self.clone();
        rt.spawn(async move {
            loop {
                let sig = tokio::select! {
                    _ = int.recv() => libc::SIGINT,
                    _ = term.recv() => libc::SIGTERM,
                };
                stop.request(sig);
            }
        });
        Ok(())
    }
}

/// The shell's convention for a process ended by a signal: 128 + its number (130 for SIGINT,
/// 143 for SIGTERM).
pub fn exit_status(signal: i32) -> u8 {
    (128 + signal.clamp(0, 127)) as u8
}

/// A signal's name for messages.
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_signal_stops_second_exits() {
        let s = Stop::default();
        assert!(!s.requested() && s.signal().is_none() && !s.exit_now());
        s.request(libc::SIGTERM);
        assert!(s.requested() && !s.exit_now());
        assert_eq!(s.signal(), Some(libc::SIGTERM));
        s.request(libc::SIGINT);
        assert!(s.exit_now());
        assert_eq!(s.signal(), Some(libc::SIGINT));
        assert_eq!(exit_status(libc::SIGINT), 130);
        assert_eq!(exit_status(libc::SIGTERM), 143);
    }
}
