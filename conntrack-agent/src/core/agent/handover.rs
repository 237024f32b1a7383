//! The agent's side of a handover (`run --pin-dir`, commands/run/handover.rs): what a
//! successor needs of each open connection (its uid, and what the capabilities need to log
//! it as this agent would, e.g. its `service`), and the successor adopting them.

use super::*;

/// An open connection as a successor needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenConn {
    pub key: FlowKey,
    pub uid: String,
    /// [`Capability::saved_service`], if a capability has something.
    pub service: Option<String>,
}

impl Agent {
    /// The open connections the kernel's table holds, as a successor needs them.
    pub fn handed_over(&self) -> Vec<OpenConn> {
        self.tracker
            .uids()
            .filter(|(k, _)| self.overflow.lookup(k).is_none())
            .map(|(key, uid)| OpenConn {
                key,
                uid: uid.render(),
                service: self.core.saved_service(&key, self.tracker.service(&key)),
            })
            .collect()
    }

    /// True if the agent tracks `key` (it has a uid for it).
    pub fn knows(&self, key: &FlowKey) -> bool {
        self.tracker.knows(key)
    }

    /// Takes over a connection a predecessor tracked (or that started while no agent ran and
    /// whose events were lost), as of the snapshot `conn` at `ts_ns`, with the predecessor's
    /// uid and saved service state when known: the tracker arms its timers and the
    /// capabilities see it as new (rules, hooks and polls are armed again), as for a
    /// connection's first packet.
    pub fn adopt_conn(
        &mut self,
        key: FlowKey,
        conn: &Conn,
        uid: Option<String>,
        service: Option<&str>,
        ts_ns: u64,
    ) -> anyhow::Result<()> {
        let uid = uid.map_or_else(|| self.uid_gen.next_uid(), Uid::from);
        let v = ConnView::of(conn);
        let est = conn.has_flag(CONN_ESTABLISHED);
        let newly_established = self.tracker.observe(&key, &v, ts_ns as i64, true, est);
        self.forget_replaced(&key);
        self.tracker.set_uid(&key, uid);
        if let Some(saved) = service {
            let word = self.core.restored_service(key.proto, saved);
            if let Some(w) = self.tracker.service_mut(&key) {
                *w = word;
            }
        }
        if newly_established {
            self.deliver(
                key,
                ts_ns,
                Some(conn),
                &[ConnEvent::New, ConnEvent::Established],
                None,
            );
        } else {
            self.deliver(key, ts_ns, Some(conn), &[ConnEvent::New], None);
        }
        Ok(())
    }
}
