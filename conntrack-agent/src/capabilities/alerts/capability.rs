//! The alert rules as a capability of the event core: on a new connection, every rule that
//! matches it arms its threshold through the ConnThreshold API; a crossing becomes an alert.
//!
//! The [`Alerts`] behind it is shared with `read`/`run`, which drain its delivery workers at the
//! end (after the last connection has been removed and its crossings handled).

use super::Alerts;
use crate::capabilities::alerts::rule::ConnMatch;
use crate::core::events::{Capability, ConnEvent, ConnHandle, EventMask};
use crate::logs::record::ConnRecord;
use crate::util::site::NetSet;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `Alerts` shared between the capability and its owner (`take` it to finish delivery).
pub type SharedAlerts = Arc<Mutex<Option<Alerts>>>;

pub struct AlertRules {
    alerts: SharedAlerts,
    /// For local_orig/local_resp in the alert's connection, as conn.log has them.
    local_nets: NetSet,
    /// Live: interface names by index (the kernel records the first packet's interface).
    /// None in replays, where no interface is known and rules naming one never match.
    ifaces: Option<HashMap<u32, Option<String>>>,
}

impl AlertRules {
    /// `live`: connections carry the interface they were seen on (`run`), not in `read`.
    pub fn new(alerts: SharedAlerts, local_nets: NetSet, live: bool) -> Self {
        Self {
            alerts,
            local_nets,
            ifaces: live.then(HashMap::new),
        }
    }
}

/// The name of interface `ifindex` from `ifaces` (cached: interfaces of a running agent rarely
/// change, and a renamed one keeps matching under the name it had when first seen).
fn iface(ifaces: &mut Option<HashMap<u32, Option<String>>>, ifindex: u32) -> Option<String> {
    let cache = ifaces.as_mut()?;
    if ifindex == 0 {
        return None;
    }
    cache
        .entry(ifindex)
        .or_insert_with(|| iface_name(ifindex))
        .clone()
}

/// `if_indextoname(3)`.
fn iface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as the call requires; on success it holds a C string.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: NUL-terminated by if_indextoname within buf.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

impl Capability for AlertRules {
    fn wants_state_changes(&self) -> bool {
        false
    }

    fn events(&self) -> EventMask {
        EventMask::NEW | EventMask::THRESHOLD_CROSSED
    }

    fn on_event(&mut self, conn: &mut ConnHandle<'_>, event: &ConnEvent) {
        if !matches!(event, ConnEvent::New | ConnEvent::ThresholdCrossed(_)) {
            return;
        }
        let Self { alerts, ifaces, .. } = self;
        let mut guard = alerts.lock().unwrap_or_else(|e| e.into_inner());
        let Some(alerts) = guard.as_mut() else {
            return;
        };
        let c = conn.conn();
        if *event == ConnEvent::New && !alerts.may_match(c.proto, c.orig_port, c.resp_port) {
            // No rule can match (most connections, for rules on a few ports or protocols).
            return;
        }
        let iface = iface(ifaces, c.ifindex);
        match event {
            // Rules match on the connection as first seen (Zeek's new_connection).
            ConnEvent::New => {
                let m = ConnMatch::from_conn(conn.conn(), iface.as_deref());
                let arms: Vec<_> = alerts.rules_for(&m).collect();
                for a in arms {
                    // False when another rule armed the same value already: one crossing
                    // then stands for both (`rules_at`).
                    conn.set_threshold(a.metric, a.threshold);
                }
            }
            ConnEvent::ThresholdCrossed(c) => {
                let m = ConnMatch::from_conn(conn.conn(), iface.as_deref());
                let rules: Vec<_> = alerts.rules_at(&m, c.kind, c.threshold).collect();
                if rules.is_empty() {
                    return;
                }
                let mut rec = ConnRecord::from_conn(conn.conn());
                rec.uid = conn.uid().to_string();
                if !self.local_nets.is_empty() {
                    rec.local_orig = Some(self.local_nets.contains_bytes(&conn.conn().orig_addr));
                    rec.local_resp = Some(self.local_nets.contains_bytes(&conn.conn().resp_addr));
                }
                for rule in rules {
                    if let Err(e) = alerts.crossed(rule, conn.ts_ns() as i64, &rec) {
                        // Not accepted (disk full, spool unwritable): say so, keep tracking.
                        log::error!("alert for {} not recorded: {e:#}", rec.uid);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_a_name_and_unknown_indexes_none() {
        assert_eq!(iface_name(1).as_deref(), Some("lo"));
        assert_eq!(iface_name(u32::MAX), None);
    }
}
