//! conn.log writer: Zeek's ASCII (TSV) format with all header lines, or Zeek's JSON lines.

use crate::logs::conn_tsv::{RecordUid, with_conn_tsv};
use crate::logs::l2_fields::{Columns, L2Fields};
use crate::logs::record::{ConnRecord, FIELDS, TYPES};
use crate::logs::rotate::{HeaderFn, LogFile, LogOptions, fmt_log_date};
use conntrack_common::conn::Conn;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Tsv,
    Json,
}

/// What a conn.log record holds beside the connection's own state, decided by the agent at
/// removal: the capabilities' `service` names, the first packet's MAC/VLAN fields (for the
/// columns that are on) and the tunnels' `tunnel_parents`.
#[derive(Clone, Copy)]
pub struct ConnExtra<'a> {
    pub service: &'a [&'static str],
    pub l2: &'a L2Fields,
    pub tunnel_parents: &'a [String],
}

/// Writes conn.log (or a log with its fields, e.g. conn_long.log), rotated as
/// [`crate::logs::rotate`] describes.
pub struct ConnLogWriter {
    file: LogFile,
    format: LogFormat,
    records: u64,
    /// The columns after Zeek's standard ones: `community_id`
    /// (policy/protocols/conn/community-id-logging), the MAC and VLAN policy columns.
    cols: Columns,
    /// The line being written, kept for its allocation.
    line: String,
}

impl ConnLogWriter {
    #[cfg(test)]
    pub fn create(dir: &Path, format: LogFormat, cols: impl Into<Columns>) -> anyhow::Result<Self> {
        Self::create_with(dir, "conn", format, cols, LogOptions::default())
    }

    /// A log with conn.log's fields under another name (`<name>.log`, `#path <name>`), e.g.
    /// conn_long.log, to stdout or rotated as `opts` says. `cols`: the optional columns (a bool:
    /// `community_id` only).
    pub fn create_with(
        dir: &Path,
        name: &str,
        format: LogFormat,
        cols: impl Into<Columns>,
        opts: LogOptions,
    ) -> anyhow::Result<Self> {
        let cols = cols.into();
        let header: Option<HeaderFn> = (format == LogFormat::Tsv).then(|| {
            let name = name.to_string();
            Box::new(move |open| tsv_header_cols(&name, open, &cols)) as HeaderFn
        });
        let path = dir.join(format!("{name}.log"));
        Ok(Self {
            file: LogFile::create(&path, name, header, opts, false)?,
            format,
            records: 0,
            cols,
            line: String::with_capacity(512),
        })
    }

    /// Where the log is written.
    #[allow(dead_code)]
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// What became of its records.
    pub fn health(&self) -> std::sync::Arc<crate::logs::health::LogHealth> {
        self.file.health()
    }

    /// Records written so far.
    #[allow(dead_code)]
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Writes a record now (the wall clock decides interval rotation).
    #[cfg(test)]
    pub fn write(&mut self, rec: &ConnRecord) -> anyhow::Result<()> {
        self.write_at(rec, None)
    }

    /// Writes a record at network time `now_ns` (None: the wall clock).
    pub fn write_at(&mut self, rec: &ConnRecord, now_ns: Option<i64>) -> anyhow::Result<()> {
        self.write_record(rec, &L2Fields::default(), now_ns)
    }

    /// Writes a record with the MAC/VLAN columns' values `l2` (used when those columns are on).
    fn write_record(
        &mut self,
        rec: &ConnRecord,
        l2: &L2Fields,
        now_ns: Option<i64>,
    ) -> anyhow::Result<()> {
        let community_id = self
            .cols
            .community_id
            .then(|| crate::logs::community_id::for_record(rec));
        let community_id = community_id.as_ref().map(Option::as_deref);
        // One buffer for every record: no allocation per TSV record.
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        match self.format {
            LogFormat::Tsv => {
                rec.write_tsv(&mut line, community_id);
                l2.write_tsv(&self.cols, &mut line);
            }
            LogFormat::Json => {
                let mut m = rec.json_fields(community_id);
                l2.push_json(&self.cols, &mut m);
                line.push_str(&crate::logs::record::json_object(&m));
            }
        }
        let written = self.file.write_line(&line, now_ns);
        self.line = line;
        written?;
        self.records += 1;
        Ok(())
    }

    /// Writes connection `c`'s record, with uid `uid`, local_orig / local_resp `local` and the
    /// fields the agent adds (`extra`: service, MAC/VLAN columns, tunnel parents), at network
    /// time `now_ns` (None: the wall clock): straight from the connection when
    /// [`with_conn_tsv`] can, else through a [`ConnRecord`] (same text either way).
    pub fn write_conn(
        &mut self,
        c: &Conn,
        uid: RecordUid,
        local: Option<(bool, bool)>,
        extra: &ConnExtra<'_>,
        now_ns: Option<i64>,
    ) -> anyhow::Result<()> {
        let ConnExtra {
            service,
            l2,
            tunnel_parents,
        } = *extra;
        if self.format == LogFormat::Tsv
            && self.cols == Columns::default()
            && tunnel_parents.is_empty()
        {
            let file = &mut self.file;
            let written = with_conn_tsv(c, uid, local, service, |line| {
                file.write_line_bytes(line, now_ns)
            });
            if let Some(written) = written {
                written?;
                self.records += 1;
                return Ok(());
            }
        }
        let mut rec = ConnRecord::from_conn(c);
        rec.uid = uid.render();
        rec.tunnel_parents = tunnel_parents.to_vec();
        if let Some((orig, resp)) = local {
            rec.local_orig = Some(orig);
            rec.local_resp = Some(resp);
        }
        rec.service = service.iter().map(|s| s.to_string()).collect();
        self.write_record(&rec, l2, now_ns)
    }

    /// The optional columns this log has.
    pub fn columns(&self) -> Columns {
        self.cols
    }

    /// Network time moved to `now_ns`: rotates when an interval boundary passed.
    pub fn tick(&mut self, now_ns: i64) -> anyhow::Result<()> {
        self.file.tick(now_ns)
    }

    /// When the next interval rotation is due (network time), if one is.
    pub fn next_rotation_ns(&self) -> Option<i64> {
        self.file.next_rotation_ns()
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.file.flush()
    }

    /// Writes the `#close` line (TSV) and flushes.
    pub fn close(&mut self) -> anyhow::Result<()> {
        self.file.close()
    }
}

/// The `#fields`/`#types` entries that `--community-id` appends, after the standard columns.
pub const COMMUNITY_ID_FIELD: (&str, &str) = ("community_id", "string");

#[cfg(test)]
pub fn tsv_header(open_secs: i64, community_id: bool) -> String {
    tsv_header_cols("conn", open_secs, &community_id.into())
}

/// The TSV header of a log with conn.log's fields, the optional columns `cols`, and
/// `#path name`.
pub fn tsv_header_cols(name: &str, open_secs: i64, cols: &Columns) -> String {
    let (mut fields, mut types) = (FIELDS.to_vec(), TYPES.to_vec());
    for (f, t) in cols.fields() {
        fields.push(f);
        types.push(t);
    }
    let mut h = String::new();
    h.push_str("#separator \\x09\n");
    h.push_str("#set_separator\t,\n");
    h.push_str("#empty_field\t(empty)\n");
    h.push_str("#unset_field\t-\n");
    h.push_str(&format!("#path\t{name}\n"));
    h.push_str(&format!("#open\t{}\n", fmt_log_date(open_secs)));
    h.push_str(&format!("#fields\t{}\n", fields.join("\t")));
    h.push_str(&format!("#types\t{}\n", types.join("\t")));
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::record::{fmt_addr, fmt_time_ns};
    use std::net::IpAddr;

    fn rec() -> ConnRecord {
        crate::tests::fixtures::http_get_record()
    }

    #[test]
    fn tsv_line_exact() {
        assert_eq!(
            rec().to_tsv(None),
            "1362692526.939084\tCHhAvVGS1DHFjwGM9\t141.142.228.5\t59856\t192.150.187.43\t80\ttcp\t-\t0.141744\t136\t5007\tSF\tF\tF\t0\t^hADadFf\t6\t448\t7\t5379\t-\t6"
        );
    }

    #[test]
    fn zero_duration_unsets_bytes() {
        let mut r = rec();
        r.duration_ns = 0;
        r.history.clear();
        r.conn_state = "OTH";
        let line = r.to_tsv(None);
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(&f[8..11], &["-", "-", "-"]);
        assert_eq!(f[15], "-");
        let j: serde_json::Value = serde_json::from_str(&r.to_json(None)).unwrap();
        assert!(j.get("duration").is_none());
        assert!(j.get("orig_bytes").is_none());
        assert!(j.get("history").is_none());
        assert_eq!(j["orig_pkts"], 6);
    }

    #[test]
    fn json_order() {
        let j = rec().to_json(None);
        assert!(
            j.starts_with("{\"ts\":1362692526.939084,\"uid\":\"CHhAvVGS1DHFjwGM9\",\"id.orig_h\""),
            "{j}"
        );
        assert!(j.ends_with("\"resp_ip_bytes\":5379,\"ip_proto\":6}"), "{j}");
    }

    #[test]
    fn json_fields() {
        let j: serde_json::Value = serde_json::from_str(&rec().to_json(None)).unwrap();
        assert_eq!(j["id.orig_h"], "141.142.228.5");
        assert_eq!(j["id.resp_p"], 80);
        assert_eq!(j["local_orig"], false);
        assert!((j["ts"].as_f64().unwrap() - 1362692526.939084).abs() < 1e-6);
        assert!((j["duration"].as_f64().unwrap() - 0.141744).abs() < 1e-9);
        assert!(j.get("service").is_none());
        assert!(j.get("tunnel_parents").is_none());
    }

    #[test]
    fn header_exact() {
        let h = tsv_header(0, false);
        let lines: Vec<&str> = h.lines().collect();
        assert_eq!(lines[0], "#separator \\x09");
        assert_eq!(lines[1], "#set_separator\t,");
        assert_eq!(lines[2], "#empty_field\t(empty)");
        assert_eq!(lines[3], "#unset_field\t-");
        assert_eq!(lines[4], "#path\tconn");
        assert_eq!(lines[5], "#open\t1970-01-01-00-00-00");
        assert_eq!(
            lines[6],
            "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents\tip_proto"
        );
        assert_eq!(
            lines[7],
            "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool\tbool\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]\tcount"
        );
    }

    #[test]
    fn dates_and_addrs() {
        assert_eq!(fmt_log_date(1_700_000_000), "2023-11-14-22-13-20");
        assert_eq!(fmt_time_ns(1_000), "0.000001");
        assert_eq!(fmt_time_ns(-2_000_000), "-0.002000");
        // Every fraction digit pair, rounding to the microsecond half away from zero.
        assert_eq!(fmt_time_ns(1_700_000_000_123_456_500), "1700000000.123457");
        assert_eq!(fmt_time_ns(987_654_321_499), "987.654321");
        assert_eq!(fmt_time_ns(-10_999_999_500), "-11.000000");
        assert_eq!(fmt_time_ns(5_090_807_000), "5.090807");
        let a: IpAddr = "2001:470:4867:99::21".parse().unwrap();
        assert_eq!(fmt_addr(&a), "2001:470:4867:99::21");
        let m: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(fmt_addr(&m), "10.0.0.1");
        let f: IpAddr = "fe80::0:0:1".parse().unwrap();
        assert_eq!(fmt_addr(&f), "fe80::1");
    }

    #[test]
    fn community_id_column_is_last() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ConnLogWriter::create(dir.path(), LogFormat::Tsv, true).unwrap();
        w.write(&rec()).unwrap();
        w.close().unwrap();
        let text = std::fs::read_to_string(dir.path().join("conn.log")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[6].ends_with("\ttunnel_parents\tip_proto\tcommunity_id"));
        assert!(lines[7].ends_with("\tset[string]\tcount\tstring"));
        // Zeek's baseline value for this connection (http/get.pcap).
        assert!(
            lines[8].ends_with("\t-\t6\t1:yvyB8h+3dnggTZW0UEITWCst97w="),
            "{}",
            lines[8]
        );
        assert_eq!(lines[8].split('\t').count(), 23);

        let dir = tempfile::tempdir().unwrap();
        let mut w = ConnLogWriter::create(dir.path(), LogFormat::Json, true).unwrap();
        w.write(&rec()).unwrap();
        w.close().unwrap();
        let text = std::fs::read_to_string(dir.path().join("conn.log")).unwrap();
        assert!(
            text.trim_end()
                .ends_with(",\"ip_proto\":6,\"community_id\":\"1:yvyB8h+3dnggTZW0UEITWCst97w=\"}"),
            "{text}"
        );
    }

    #[test]
    fn unset_community_id() {
        assert!(rec().to_tsv(Some(None)).ends_with("\t-\t6\t-"));
        let j: serde_json::Value = serde_json::from_str(&rec().to_json(Some(None))).unwrap();
        assert!(j.get("community_id").is_none());
    }

    #[test]
    fn writer_writes_close() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ConnLogWriter::create(dir.path(), LogFormat::Tsv, false).unwrap();
        w.write(&rec()).unwrap();
        w.close().unwrap();
        let text = std::fs::read_to_string(dir.path().join("conn.log")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10);
        assert!(lines[9].starts_with("#close\t"));
    }
}
