//! Reading conn.log (Zeek TSV with its `#fields` header) into records keyed by field name.

use std::collections::BTreeMap;
use std::path::Path;

/// One conn.log line: field name -> value as written (`-` for unset).
pub type Record = BTreeMap<String, String>;

/// A parsed conn.log: its records and whether the `#close` trailer was written.
#[derive(Debug, Default)]
pub struct ConnLog {
    pub records: Vec<Record>,
    pub closed: bool,
}

impl ConnLog {
    pub fn read(path: &Path) -> anyhow::Result<ConnLog> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> ConnLog {
        let mut fields: Vec<String> = Vec::new();
        let mut log = ConnLog::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("#fields\t") {
                fields = rest.split('\t').map(str::to_owned).collect();
            } else if line.starts_with("#close") {
                log.closed = true;
            } else if !line.starts_with('#') && !line.is_empty() {
                let rec = fields
                    .iter()
                    .cloned()
                    .zip(line.split('\t').map(str::to_owned))
                    .collect();
                log.records.push(rec);
            }
        }
        log
    }

    /// Records whose responder port and protocol match.
    pub fn by_resp(&self, proto: &str, resp_p: u16) -> Vec<&Record> {
        let port = resp_p.to_string();
        self.records
            .iter()
            .filter(|r| r["proto"] == proto && r["id.resp_p"] == port)
            .collect()
    }

    /// The one record of `proto` to responder port `resp_p`; panics (with the whole log) if
    /// there is not exactly one.
    pub fn one(&self, proto: &str, resp_p: u16) -> &Record {
        let recs = self.by_resp(proto, resp_p);
        assert_eq!(
            recs.len(),
            1,
            "expected one {proto}/{resp_p} record in {:#?}",
            self.records
        );
        recs[0]
    }
}

/// A field parsed as an integer (`-` counts as 0, as an analyst reading conn.log would).
pub fn num(rec: &Record, field: &str) -> u64 {
    match rec.get(field).map(String::as_str) {
        None | Some("-") => 0,
        Some(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{field}={v} is not a number")),
    }
}
