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
    pub conn_state: &'static str,
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
    let mut s = String::new();
    let _ = write_time_ns(&mut s, ns);
    s
}

/// Zeek prints addresses as IPv4 dotted quads (including IPv4-mapped IPv6) or compressed IPv6.
pub fn fmt_addr(a: &IpAddr) -> String {
    let mut s = String::new();
    let _ = write_addr(&mut s, a);
    s
}

/// A time in nanoseconds as conn.log writes it, `secs.micros` rounded half away from zero:
/// (negative, whole seconds, the six fraction digits zero-padded).
pub(crate) fn time_parts(ns: i64) -> (bool, u64, [u8; 6]) {
    let us = if ns >= 0 {
        (ns + 500) / 1000
    } else {
        (ns - 500) / 1000
    };
    let a = us.unsigned_abs();
    // Six digits, zero-padded, two at a time (every record has two times).
    let f = (a % 1_000_000) as usize;
    let [p0, p1, p2] = [f / 10_000, f / 100 % 100, f % 100].map(|i| DIGIT_PAIRS[i]);
    (
        us < 0,
        a / 1_000_000,
        [p0[0], p0[1], p1[0], p1[1], p2[0], p2[1]],
    )
}

/// `00` to `99`: decimal digits written two at a time.
pub(crate) const DIGIT_PAIRS: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < t.len() {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

/// [`fmt_time_ns`] appended to `out`.
fn write_time_ns(out: &mut String, ns: i64) -> std::fmt::Result {
    let (negative, secs, frac) = time_parts(ns);
    if negative {
        out.push('-');
    }
    push_int(out, secs);
    out.push('.');
    // ASCII digits.
    frac.iter().for_each(|&d| out.push(char::from(d)));
    Ok(())
}

/// An integer in decimal, appended without `fmt` (records are written by the hundred thousand).
fn push_int(out: &mut String, v: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// An IPv4 address in dotted decimal.
fn push_v4(out: &mut String, o: [u8; 4]) {
    for (i, b) in o.into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_int(out, b);
    }
}

/// [`fmt_addr`] appended to `out`.
fn write_addr(out: &mut String, a: &IpAddr) -> std::fmt::Result {
    use std::fmt::Write;
    match a {
        IpAddr::V4(v4) => {
            push_v4(out, v4.octets());
            Ok(())
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                push_v4(out, v4.octets());
                return Ok(());
            }
            let s = v6.segments();
            // inet_ntop prints IPv4-compatible addresses (::a.b.c.d) with a dotted tail.
            if s[..6].iter().all(|&w| w == 0) && s[6] != 0 {
                let o = v6.octets();
                return write!(out, "::{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
            }
            write!(out, "{v6}")
        }
    }
}

/// A set column: its members joined by commas, `-` when empty.
fn write_set(out: &mut String, items: &[String]) -> std::fmt::Result {
    if items.is_empty() {
        out.push('-');
    }
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    Ok(())
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
    #[cfg(test)]
    pub fn to_tsv(&self, community_id: Option<Option<&str>>) -> String {
        let mut s = String::new();
        self.write_tsv(&mut s, community_id);
        s
    }

    /// Appends the TSV line (see [`ConnRecord::to_tsv`]) to `out`: formatted in place, so a
    /// writer that reuses `out` allocates nothing per record.
    pub fn write_tsv(&self, out: &mut String, community_id: Option<Option<&str>>) {
        use std::fmt::Write;
        const UNSET: &str = "-";
        // Writing into a String cannot fail.
        let _ = (|| -> std::fmt::Result {
            write_time_ns(out, self.ts_ns)?;
            out.push('\t');
            out.push_str(&self.uid);
            out.push('\t');
            write_addr(out, &self.orig_h)?;
            out.push('\t');
            push_int(out, self.orig_p);
            out.push('\t');
            write_addr(out, &self.resp_h)?;
            out.push('\t');
            push_int(out, self.resp_p);
            out.push('\t');
            out.push_str(self.proto);
            out.push('\t');
            write_set(out, &self.service)?;
            out.push('\t');
            if self.duration_set() {
                write_time_ns(out, self.duration_ns)?;
                out.push('\t');
                push_int(out, self.orig_bytes);
                out.push('\t');
                push_int(out, self.resp_bytes);
            } else {
                write!(out, "{UNSET}\t{UNSET}\t{UNSET}")?;
            }
            out.push('\t');
            out.push_str(self.conn_state);
            out.push('\t');
            out.push_str(self.local_orig.map_or(UNSET, bool_tsv));
            out.push('\t');
            out.push_str(self.local_resp.map_or(UNSET, bool_tsv));
            out.push('\t');
            push_int(out, self.missed_bytes);
            out.push('\t');
            if self.history.is_empty() {
                out.push_str(UNSET);
            } else {
                write_escaped_tsv(out, &self.history)?;
            }
            for v in [
                self.orig_pkts,
                self.orig_ip_bytes,
                self.resp_pkts,
                self.resp_ip_bytes,
            ] {
                out.push('\t');
                push_int(out, v);
            }
            out.push('\t');
            write_set(out, &self.tunnel_parents)?;
            out.push('\t');
            push_int(out, self.ip_proto);
            if let Some(id) = community_id {
                out.push('\t');
                match id {
                    Some(id) => write_escaped_tsv(out, id)?,
                    None => out.push_str(UNSET),
                }
            }
            Ok(())
        })();
    }

    /// One JSON object as Zeek's JSON writer prints it: fields in log order, dotted names,
    /// unset fields omitted; `community_id` as for `to_tsv`, last.
    #[cfg(test)]
    pub fn to_json(&self, community_id: Option<Option<&str>>) -> String {
        json_object(&self.json_fields(community_id))
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
        m.push(("conn_state", self.conn_state.into()));
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

/// One JSON object of `fields`, in their order, as Zeek's JSON writer prints a record.
pub fn json_object(fields: &[(&'static str, Value)]) -> String {
    let mut out = String::with_capacity(320);
    out.push('{');
    for (i, (k, v)) in fields.iter().enumerate() {
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

/// Zeek's ASCII writer escapes the separator and non-printable bytes as `\xNN`.
/// `s` with tabs and control characters as `\xNN`, appended to `out`.
fn write_escaped_tsv(out: &mut String, s: &str) -> std::fmt::Result {
    use std::fmt::Write;
    for c in s.chars() {
        if c == '\t' || c.is_control() {
            write!(out, "\\x{:02x}", c as u32)?;
        } else {
            out.push(c);
        }
    }
    Ok(())
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
            conn_state: c.conn_state().as_str(),
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
