//! removal.log: one JSON line per removed connection saying why it was removed (closed,
//! reset, attempt, inactivity, expire, reuse, drained at shutdown, evicted) and when: what an
//! operator checks when a connection's conn.log record came earlier or later than expected.
//!
//! Built on removal hooks ([`crate::core::removal_hooks`]): a hook is registered on every new
//! connection, so this is also the end-to-end check that hooks run for every reason.
//!
//! ```toml
//! [removal_log]                  # the section turns it on: <log-dir>/removal.log
//! # path = "/var/log/conntrack/removal.log"
//! # enabled = false
//! ```

use crate::core::events::{Capability, ConnEvent, ConnHandle, RemovalReason};
use crate::core::removal_hooks::RemovalHook;
use crate::logs::rotate::{LogFile, LogOptions, RotationPolicy};
use crate::util::site::addr_from_bytes;
use conntrack_common::conn::Conn;
use conntrack_common::tcp::state;
use serde::Deserialize;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The `[removal_log]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemovalLogSection {
    enabled: Option<bool>,
    path: Option<PathBuf>,
}

/// The checked section; off unless the file has a `[removal_log]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemovalLogSettings {
    pub enabled: bool,
    pub path: Option<PathBuf>,
}

impl RemovalLogSection {
    pub fn compile_section(section: Option<Self>) -> RemovalLogSettings {
        section.map_or_else(RemovalLogSettings::default, |s| RemovalLogSettings {
            enabled: s.enabled.unwrap_or(true),
            path: s.path,
        })
    }
}

impl RemovalLogSettings {
    /// Where to write, when enabled (default `<log_dir>/removal.log`).
    pub fn path(&self, log_dir: &Path) -> Option<PathBuf> {
        self.enabled.then(|| {
            self.path
                .clone()
                .unwrap_or_else(|| log_dir.join("removal.log"))
        })
    }
}

/// Why a removal happened, finer than [`RemovalReason`]: a close that came from a RST says so.
fn why(reason: RemovalReason, c: &Conn) -> &'static str {
    let reset = c.orig.state == state::RESET || c.resp.state == state::RESET;
    match reason {
        RemovalReason::Closed | RemovalReason::Expire if reset => "reset",
        r => r.as_str(),
    }
}

/// One removal as a JSON object (conn.log's field names for the connection), written into
/// `out` (cleared first). Every string value is from a fixed alphabet (uid, address, protocol,
/// reason, state, history letters): none needs JSON escaping, so no JSON value is built.
fn line(out: &mut String, conn: &ConnHandle<'_>, reason: RemovalReason) {
    use std::fmt::Write;
    let c = conn.conn();
    let ts = conn.ts_ns() as f64 / 1e9;
    out.clear();
    // Writing into a String cannot fail. `{ts:?}`: serde_json's shortest round-trip float.
    let _ = write!(
        out,
        "{{\"ts\":{ts:?},\"uid\":\"{}\",\"id.orig_h\":\"{}\",\"id.orig_p\":{},\
         \"id.resp_h\":\"{}\",\"id.resp_p\":{},\"proto\":\"{}\",\"reason\":\"{}\",\
         \"conn_state\":\"{}\",\"history\":\"",
        conn.uid(),
        addr_from_bytes(&c.orig_addr),
        c.orig_port,
        addr_from_bytes(&c.resp_addr),
        c.resp_port,
        c.proto_name(),
        why(reason, c),
        c.conn_state().as_str(),
    );
    out.extend(c.history_str().iter().map(|&b| b as char));
    out.push_str("\"}");
}

/// The capability: a removal hook on every connection, writing one line each.
pub struct RemovalLog {
    hook: RemovalHook,
    out: Rc<RefCell<LogFile>>,
}

impl RemovalLog {
    #[cfg(test)]
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        Self::create_rotated(path, RotationPolicy::default())
    }

    /// Writes to `path`, rotated like conn.log (JSON lines: no header or `#close`; the
    /// rotated name is `<file stem>.<open time>.log`).
    pub fn create_rotated(path: &Path, rotation: RotationPolicy) -> anyhow::Result<Self> {
        let name = path
            .file_stem()
            .map_or_else(|| "removal".into(), |s| s.to_string_lossy().into_owned());
        let opts = LogOptions {
            rotation,
            stdout: false,
        };
        // Flushed with conn.log (the agent's flush, about once a second live, and at the
        // end): a flush per line was a write system call per connection.
        let out = Rc::new(RefCell::new(LogFile::create(
            path, &name, None, opts, false,
        )?));
        let shown = path.display().to_string();
        let file = out.clone();
        let buf = RefCell::new(String::new());
        let hook = RemovalHook::new(move |conn, reason| {
            let mut out = file.borrow_mut();
            let mut buf = buf.borrow_mut();
            line(&mut buf, conn, reason);
            if let Err(e) = out.write_line(&buf, Some(conn.ts_ns() as i64)) {
                log::warn!("{shown}: {e:#}");
            }
        });
        Ok(Self { hook, out })
    }

    /// removal.log, for the agent to tick (rotation).
    pub fn log(&self) -> crate::logs::rotate::SharedLog {
        self.out.clone()
    }
}

impl Capability for RemovalLog {
    fn wants_state_changes(&self) -> bool {
        false
    }

    fn on_event(&mut self, conn: &mut ConnHandle<'_>, event: &ConnEvent) {
        if *event == ConnEvent::New {
            conn.register_removal_hook(&self.hook);
        }
    }
}
