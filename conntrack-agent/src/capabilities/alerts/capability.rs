//! The alert rules as a capability of the event core: on a new connection, every rule that
//! matches it arms its threshold through the ConnThreshold API; a crossing becomes an alert.
//!
//! The [`Alerts`] behind it is shared with `read`/`run`, which drain its delivery workers at the
//! end (after the last connection has been removed and its crossings handled).

use super::Alerts;
use crate::capabilities::alerts::rule::{ConnMatch, Match};
use crate::core::events::{Capability, ConnEvent, ConnHandle, EventMask};
use crate::logs::record::ConnRecord;
use crate::util::site::NetSet;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The rules' matches as of `version` (see [`AlertRules::may_match`]); no version when
    /// there were no `Alerts` at the start.
    matchers: Vec<Match>,
    version: Option<(Arc<AtomicU64>, u64)>,
}

impl AlertRules {
    /// `live`: connections carry the interface they were seen on (`run`), not in `read`.
    pub fn new(alerts: SharedAlerts, local_nets: NetSet, live: bool) -> Self {
        let mut rules = Self {
            alerts,
            local_nets,
            ifaces: live.then(HashMap::new),
            matchers: Vec::new(),
            version: None,
        };
        rules.reload_matchers();
        rules
    }

    fn reload_matchers(&mut self) {
        let guard = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = guard.as_ref() {
            let (version, now, matchers) = a.matchers();
            self.version = Some((version, now));
            self.matchers = matchers;
        }
    }

    /// False when no rule can match a connection of protocol `proto` between ports `orig_p`
    /// and `resp_p` ([`Match::may_match`]): most connections, for rules on a few ports or
    /// protocols. Checked on a copy of the rules' matches, without the lock: the atomic
    /// operation of a lock per new connection waited for the stores before it to drain,
    /// which cost more than the rest of the capability.
    pub fn may_match(&mut self, proto: u8, orig_p: u16, resp_p: u16) -> bool {
        let Some((version, seen)) = &self.version else {
            return true;
        };
        if version.load(Ordering::Acquire) != *seen {
            // The rules were replaced (SIGHUP).
            self.reload_matchers();
        }
        self.matchers
            .iter()
            .any(|m| m.may_match(proto, orig_p, resp_p))
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
        let c = conn.conn();
        if *event == ConnEvent::New && !self.may_match(c.proto, c.orig_port, c.resp_port) {
            return;
        }
        let Self { alerts, ifaces, .. } = self;
        let mut guard = alerts.lock().unwrap_or_else(|e| e.into_inner());
        let Some(alerts) = guard.as_mut() else {
            return;
        };
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
    fn rules_that_cannot_match_are_skipped_until_replaced() {
        let text = r#"
[[alerts.rules]]
name = "one"
metric = "orig_bytes"
threshold = 1
match = { ports = [1], proto = "tcp" }
"#;
        let cfg = crate::config::Config::parse(text, "t", &|_| None)
            .unwrap()
            .alerts;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let alerts = rt.block_on(async { Alerts::start(&cfg, dir.path(), false).unwrap() });
        let shared: SharedAlerts = Arc::new(Mutex::new(Some(alerts)));
        let mut cap = AlertRules::new(shared.clone(), NetSet::default(), false);
        assert!(cap.may_match(6, 1, 80));
        assert!(!cap.may_match(6, 443, 80));
        assert!(!cap.may_match(17, 1, 80), "the protocol too");
        // SIGHUP: the rule now watches port 80 (any protocol).
        let mut rules = cfg.rules.clone();
        rules[0].matcher = Match {
            ports: vec![crate::capabilities::alerts::rule::PortRange { lo: 80, hi: 80 }],
            ..Match::default()
        };
        shared
            .lock()
            .unwrap()
            .as_mut()
            .unwrap()
            .replace_rules(rules);
        assert!(cap.may_match(17, 443, 80), "the new rules");
        assert!(!cap.may_match(6, 1, 443));
        let none = AlertRules::new(Arc::new(Mutex::new(None)), NetSet::default(), false);
        assert!(
            none.version.is_none(),
            "no Alerts: every connection goes to the lock"
        );
    }

    #[test]
    fn loopback_has_a_name_and_unknown_indexes_none() {
        assert_eq!(iface_name(1).as_deref(), Some("lo"));
        assert_eq!(iface_name(u32::MAX), None);
    }
}
