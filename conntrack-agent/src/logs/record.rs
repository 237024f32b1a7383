//! The conn.log record: one connection's values as Zeek computes them, and their TSV and JSON
//! forms (Zeek's ASCII and JSON writers' formatting of times, addresses, sets and unset
//! values).

use crate::util::site::addr_from_bytes;
use conntrack_common::conn::Conn;
use serde_json::Value;
use std::net::IpAddr;

/// One conn.log record, with values already computed by Zeek's rules.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnRecord {
    /// Start time, nanoseconds since the epoch (microsecond resolution in practice).
    pub ts_ns: i64,
    pub uid: String,
    pub orig_h: IpAddr,
    pub orig_p: u16,
    pub resp_h: IpAddr,
    pub resp_p: u16,
    /// tcp, udp, icmp or unknown_transport.
    pub proto: &'static str,
    pub service: Vec<String>,
    /// last - start in nanoseconds; duration, orig_bytes and resp_bytes are unset unless > 0.
    pub duration_ns: i64,
    pub orig_bytes: u64,
    pub resp_bytes: u64,
    pub conn_state: String,
    /// None when Site::local_nets is empty.
    pub local_orig: Option<bool>,
    pub local_resp: Option<bool>,
    pub missed_bytes: u64,
    pub history: String,
    pub orig_pkts: u64,
    pub orig_ip_bytes: u64,
    pub resp_pkts: u64,
    pub resp_ip_bytes: u64,
    pub tunnel_parents: Vec<String>,
    pub ip_proto: u8,
}

pub const FIELDS: [&str; 22] = [
    "ts",
    "uid",
    "id.orig_h",
    "id.orig_p",
    "id.resp_h",
    "id.resp_p",
    "proto",
    "service",
    "duration",
    "orig_bytes",
    "resp_bytes",
    "conn_state",
    "local_orig",
    "local_resp",
    "missed_bytes",
    "history",
    "orig_pkts",
    "orig_ip_bytes",
    "resp_pkts",
    "resp_ip_bytes",
    "tunnel_parents",
    "ip_proto",
];

pub const TYPES: [&str; 22] = [
    "time",
    "string",
    "addr",
    "port",
    "addr",
    "port",
    "enum",
    "string",
    "interval",
    "count",
    "count",
    "string",
    "bool",
    "bool",
    "count",
    "string",
    "count",
    "count",
    "count",
    "count",
    "set[string]",
    "count",
];

/// `secs.micros` with 6 decimals, as Zeek prints time and interval values.
pub fn fmt_time_ns(ns: i64) -> String {
    // Round to microseconds (values are microsecond-aligned already, this only guards).
    let us = if ns >= 0 {
        (ns + 500) / 1000
    } else {
        (ns - 500) / 1000
    };
    let neg = us < 0;
    let a = us.unsigned_abs();
    format!(
        "{}{}.{:06}",
        if neg { "-" } else { "" },
        a / 1_000_000,
        a % 1_000_000
    )
}

/// Zeek prints addresses as IPv4 dotted quads (including IPv4-mapped IPv6) or compressed IPv6.
pub fn fmt_addr(a: &IpAddr) -> String {
    match a {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4.to_string();
            }
            let s = v6.segments();
            // inet_ntop prints IPv4-compatible addresses (::a.b.c.d) with a dotted tail.
            if s[..6].iter().all(|&w| w == 0) && s[6] != 0 {
                let o = v6.octets();
                return format!("::{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
            }
            v6.to_string()
        }
    }
}

fn bool_tsv(b: bool) -> &'static str {
    if b { "T" } else { "F" }
}

impl ConnRecord {
    fn duration_set(&self) -> bool {
        self.duration_ns > 0
    }

    /// TSV line without the trailing newline. `community_id`: None without that column, else
    /// the column's value (`Some(None)`: unset).
    pub fn to_tsv(&self, community_id: Option<Option<&str>>) -> String {
        let unset = "-".to_string();
        let mut v: Vec<String> = Vec::with_capacity(22);
        v.push(fmt_time_ns(self.ts_ns));
        v.push(self.uid.clone());
        v.push(fmt_addr(&self.orig_h));
        v.push(self.orig_p.to_string());
        v.push(fmt_addr(&self.resp_h));
        v.push(self.resp_p.to_string());
        v.push(self.proto.to_string());
        v.push(if self.service.is_empty() {
            unset.clone()
        } else {
            self.service.join(",")
        });
        if self.duration_set() {
            v.push(fmt_time_ns(self.duration_ns));
            v.push(self.orig_bytes.to_string());
            v.push(self.resp_bytes.to_string());
        } else {
            v.push(unset.clone());
            v.push(unset.clone());
            v.push(unset.clone());
        }
        v.push(self.conn_state.clone());
        v.push(
            self.local_orig
                .map_or(unset.clone(), |b| bool_tsv(b).into()),
        );
        v.push(
            self.local_resp
                .map_or(unset.clone(), |b| bool_tsv(b).into()),
        );
        v.push(self.missed_bytes.to_string());
        v.push(if self.history.is_empty() {
            unset.clone()
        } else {
            escape_tsv(&self.history)
        });
        v.push(self.orig_pkts.to_string());
        v.push(self.orig_ip_bytes.to_string());
        v.push(self.resp_pkts.to_string());
        v.push(self.resp_ip_bytes.to_string());
        v.push(if self.tunnel_parents.is_empty() {
            unset.clone()
        } else {
            self.tunnel_parents.join(",")
        });
        v.push(self.ip_proto.to_string());
        if let Some(id) = community_id {
            v.push(id.map_or(unset.clone(), escape_tsv));
        }
        v.join("\t")
    }

    /// One JSON object as Zeek's JSON writer prints it: fields in log order, dotted names,
    /// unset fields omitted; `community_id` as for `to_tsv`, last.
    pub fn to_json(&self, community_id: Option<Option<&str>>) -> String {
        let m = self.json_fields(community_id);
        let mut out = String::with_capacity(320);
        out.push('{');
        for (i, (k, v)) in m.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push('"');
            out.push_str(k);
            out.push_str("\":");
            out.push_str(&v.to_string());
        }
        out.push('}');
        out
    }

    /// The fields of [`Self::to_json`], in log order (alerts embed the same object).
    pub fn json_fields(&self, community_id: Option<Option<&str>>) -> Vec<(&'static str, Value)> {
        let num = |ns: i64| -> Value {
            let s = fmt_time_ns(ns);
            let s = s.trim_end_matches('0');
            let s = if s.ends_with('.') {
                format!("{s}0")
            } else {
                s.to_string()
            };
            Value::Number(s.parse::<serde_json::Number>().unwrap_or_else(|_| 0.into()))
        };
        let mut m: Vec<(&str, Value)> = Vec::with_capacity(22);
        m.push(("ts", num(self.ts_ns)));
        m.push(("uid", self.uid.clone().into()));
        m.push(("id.orig_h", fmt_addr(&self.orig_h).into()));
        m.push(("id.orig_p", self.orig_p.into()));
        m.push(("id.resp_h", fmt_addr(&self.resp_h).into()));
        m.push(("id.resp_p", self.resp_p.into()));
        m.push(("proto", self.proto.into()));
        if !self.service.is_empty() {
            m.push(("service", self.service.join(",").into()));
        }
        if self.duration_set() {
            m.push(("duration", num(self.duration_ns)));
            m.push(("orig_bytes", self.orig_bytes.into()));
            m.push(("resp_bytes", self.resp_bytes.into()));
        }
        m.push(("conn_state", self.conn_state.clone().into()));
        if let Some(b) = self.local_orig {
            m.push(("local_orig", b.into()));
        }
        if let Some(b) = self.local_resp {
            m.push(("local_resp", b.into()));
        }
        m.push(("missed_bytes", self.missed_bytes.into()));
        if !self.history.is_empty() {
            m.push(("history", self.history.clone().into()));
        }
        m.push(("orig_pkts", self.orig_pkts.into()));
        m.push(("orig_ip_bytes", self.orig_ip_bytes.into()));
        m.push(("resp_pkts", self.resp_pkts.into()));
        m.push(("resp_ip_bytes", self.resp_ip_bytes.into()));
        if !self.tunnel_parents.is_empty() {
            m.push((
                "tunnel_parents",
                Value::Array(
                    self.tunnel_parents
                        .iter()
                        .cloned()
                        .map(Value::from)
                        .collect(),
                ),
            ));
        }
        m.push(("ip_proto", self.ip_proto.into()));
        if let Some(Some(id)) = community_id {
            m.push(("community_id", id.into()));
        }
        m
    }
}

/// Zeek's ASCII writer escapes the separator and non-printable bytes as `\xNN`.
fn escape_tsv(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\t' || c.is_control() {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

impl ConnRecord {
    /// conn.log values of a connection (uid and local_* are filled in by the caller).
    pub fn from_conn(c: &Conn) -> Self {
        Self {
            ts_ns: c.start_ns as i64,
            uid: String::new(),
            orig_h: addr_from_bytes(&c.orig_addr),
            orig_p: c.orig_port,
            resp_h: addr_from_bytes(&c.resp_addr),
            resp_p: c.resp_port,
            proto: c.proto_name(),
            service: Vec::new(),
            duration_ns: c.last_ns as i64 - c.start_ns as i64,
            orig_bytes: c.orig_bytes(),
            resp_bytes: c.resp_bytes(),
            conn_state: c.conn_state().as_str().to_string(),
            local_orig: None,
            local_resp: None,
            missed_bytes: c.missed_bytes(),
            history: String::from_utf8_lossy(c.history_str()).into_owned(),
            orig_pkts: c.orig_pkts(),
            orig_ip_bytes: c.orig_ip_bytes(),
            resp_pkts: c.resp_pkts(),
            resp_ip_bytes: c.resp_ip_bytes(),
            tunnel_parents: Vec::new(),
            ip_proto: c.proto,
        }
    }
}
