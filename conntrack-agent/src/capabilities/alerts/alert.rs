//! The alert document: one JSON object, the same bytes in alerts.log, in the spool and in the
//! webhook request body.

use super::rule::Rule;
use crate::core::thresholds::{Direction, ThresholdKind};
use crate::logs::record::ConnRecord;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Namespace of the name-based (v5) delivery ids.
const DELIVERY_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6c1e_0f3b_27a4_4d5e_9b1c_84f2_a0d3_7e95);

/// A threshold as the receiver reads it: bytes and packets as integers, duration in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ThresholdJson {
    Count(u64),
    Seconds(f64),
}

/// The connection as far as it has got when the threshold was crossed: exactly the object
/// conn.log's JSON writer prints for it (same names, same unset-field rules), so the same
/// filters work on both.
pub type AlertConn = serde_json::Map<String, serde_json::Value>;

/// One alert: a rule's threshold crossed by a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Also sent as `X-Conntrack-Delivery`. Derived from (uid, rule, metric, threshold), so the
    /// same crossing reported twice (e.g. re-armed after a restart) carries the same id and
    /// receivers de-duplicate it.
    pub delivery_id: String,
    pub rule: String,
    pub metric: ThresholdKind,
    pub threshold: ThresholdJson,
    pub direction: Direction,
    /// When the connection crossed the threshold (packet time: trace time in `read`), RFC 3339.
    pub crossed_at: String,
    /// When the agent made this alert (wall clock), RFC 3339.
    pub created_at: String,
    pub conn: AlertConn,
}

fn rfc3339(ns: i64) -> String {
    let t = if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH
    };
    humantime::format_rfc3339_micros(t).to_string()
}

pub fn delivery_id(uid: &str, rule: &str, metric: ThresholdKind, threshold: u64) -> String {
    let name = format!("{uid}\0{rule}\0{}\0{threshold}", metric.name());
    uuid::Uuid::new_v5(&DELIVERY_NAMESPACE, name.as_bytes()).to_string()
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `conn`'s conn.log JSON fields, with its community_id when the column is on.
fn alert_conn(conn: &ConnRecord, community_id: bool) -> AlertConn {
    let cid = community_id.then(|| crate::logs::community_id::for_record(conn));
    conn.json_fields(cid.as_ref().map(Option::as_deref))
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

impl Alert {
    /// `threshold` is the value that was crossed (the rule's, in its metric's unit: ns for
    /// duration); `crossed_at_ns` the network time of the crossing.
    pub fn new(
        rule: &Rule,
        threshold: u64,
        crossed_at_ns: i64,
        conn: &ConnRecord,
        community_id: bool,
    ) -> Self {
        let threshold_json = match rule.metric {
            ThresholdKind::Duration => ThresholdJson::Seconds(threshold as f64 / 1e9),
            _ => ThresholdJson::Count(threshold),
        };
        Self {
            delivery_id: delivery_id(&conn.uid, &rule.name, rule.metric, threshold),
            rule: rule.name.clone(),
            metric: rule.metric,
            threshold: threshold_json,
            direction: rule.metric.direction(),
            crossed_at: rfc3339(crossed_at_ns),
            created_at: rfc3339(now_ns()),
            conn: alert_conn(conn, community_id),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an alert always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::alerts::rule::Match;

    pub fn record() -> ConnRecord {
        ConnRecord {
            conn_state: "S1",
            history: "ShADad".into(),
            ..crate::tests::fixtures::http_get_record()
        }
    }

    fn rule(metric: ThresholdKind, threshold: u64) -> Rule {
        Rule {
            name: "r".into(),
            metric,
            threshold,
            matcher: Match::default(),
            webhooks: vec![],
        }
    }

    #[test]
    fn document_fields() {
        let a = Alert::new(
            &rule(ThresholdKind::RespBytes, 5000),
            5000,
            1_362_692_527_080_828_000,
            &record(),
            true,
        );
        let j: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
        assert_eq!(j["rule"], "r");
        assert_eq!(j["metric"], "resp_bytes");
        assert_eq!(j["threshold"], 5000);
        assert_eq!(j["direction"], "resp");
        assert_eq!(j["crossed_at"], "2013-03-07T21:42:07.080828Z");
        assert_eq!(j["conn"]["uid"], "CHhAvVGS1DHFjwGM9");
        assert_eq!(j["conn"]["id.orig_h"], "141.142.228.5");
        assert_eq!(j["conn"]["id.resp_p"], 80);
        assert_eq!(j["conn"]["resp_ip_bytes"], 5379);
        assert_eq!(j["conn"]["history"], "ShADad");
        // Zeek's value for this connection (see conn_log's community_id test).
        assert_eq!(j["conn"]["community_id"], "1:yvyB8h+3dnggTZW0UEITWCst97w=");
        assert!((j["conn"]["ts"].as_f64().unwrap() - 1362692526.939084).abs() < 1e-6);
        let back: Alert = serde_json::from_str(&a.to_json()).unwrap();
        assert_eq!(back, a);

        let a = Alert::new(
            &rule(ThresholdKind::Duration, 90_000_000_000),
            90_000_000_000,
            0,
            &record(),
            false,
        );
        let j: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
        assert_eq!(j["threshold"], 90.0);
        assert_eq!(j["direction"], "total");
        assert!(j["conn"].get("community_id").is_none());
    }

    #[test]
    fn delivery_id_is_stable_per_crossing() {
        let a = delivery_id("C1", "r", ThresholdKind::OrigBytes, 100);
        assert_eq!(a, delivery_id("C1", "r", ThresholdKind::OrigBytes, 100));
        assert_ne!(a, delivery_id("C2", "r", ThresholdKind::OrigBytes, 100));
        assert_ne!(a, delivery_id("C1", "r2", ThresholdKind::OrigBytes, 100));
        assert_ne!(a, delivery_id("C1", "r", ThresholdKind::RespBytes, 100));
        assert_ne!(a, delivery_id("C1", "r", ThresholdKind::OrigBytes, 200));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }
}
