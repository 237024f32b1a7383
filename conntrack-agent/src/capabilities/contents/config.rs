//! The `[contents]` section of the config file: which connections' payload is extracted, where
//! it goes and how much of it.
//!
//! ```toml
//! [contents]
//! extract_all = false              # Zeek's Conn::default_extract
//! extract_dir = "/var/log/conntrack/extract"
//! max_bytes_per_conn = 10000000    # per direction; 0 = no cap
//! max_rate = 50000000              # bytes per second over all connections; 0 = no cap
//! disk_quota = 1000000000          # bytes written over all files; 0 = no quota
//!
//! [[contents.rules]]
//! direction = "both"               # "orig", "resp" or "both"
//! match = { proto = "tcp", resp_ports = [21], nets = ["10.0.0.0/8"] }
//! ```

use crate::capabilities::alerts::config::MatchSection;
use crate::capabilities::alerts::rule::{ConnMatch, Match};
use crate::util::config_values::SpanError;
use serde::Deserialize;
use std::path::PathBuf;

/// Which directions a rule extracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Orig,
    Resp,
    #[default]
    Both,
}

impl Direction {
    /// (originator, responder).
    pub fn sides(self) -> (bool, bool) {
        match self {
            Direction::Orig => (true, false),
            Direction::Resp => (false, true),
            Direction::Both => (true, true),
        }
    }
}

/// `[[contents.rules]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    #[serde(default)]
    pub direction: Direction,
    #[serde(default, rename = "match")]
    pub matcher: MatchSection,
}

/// `[contents]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentsSection {
    #[serde(default)]
    pub extract_all: bool,
    pub extract_dir: Option<PathBuf>,
    #[serde(default)]
    pub max_bytes_per_conn: u64,
    #[serde(default)]
    pub max_rate: u64,
    #[serde(default)]
    pub disk_quota: u64,
    #[serde(default)]
    pub rules: Vec<RuleSection>,
}

/// One extraction rule.
#[derive(Debug, Clone)]
pub struct ContentRule {
    pub direction: Direction,
    pub matcher: Match,
}

/// What the extraction runs with (the command line's `--extract-all` / `--extract-dir` are
/// merged in by the caller).
#[derive(Debug, Clone, Default)]
pub struct ContentsSettings {
    pub extract_all: bool,
    /// Default: `<log-dir>/extract`.
    pub extract_dir: Option<PathBuf>,
    pub max_bytes_per_conn: u64,
    pub max_rate: u64,
    pub disk_quota: u64,
    pub rules: Vec<ContentRule>,
}

impl ContentsSettings {
    /// True when some connection may be extracted.
    pub fn enabled(&self) -> bool {
        self.extract_all || !self.rules.is_empty()
    }

    /// The directions to extract for a connection: `extract_all` gives both, else the union of
    /// the matching rules.
    pub fn directions(&self, c: &ConnMatch<'_>) -> (bool, bool) {
        if self.extract_all {
            return (true, true);
        }
        let mut out = (false, false);
        for r in self.rules.iter().filter(|r| r.matcher.matches(c)) {
            let (o, p) = r.direction.sides();
            out = (out.0 || o, out.1 || p);
        }
        out
    }
}

impl ContentsSection {
    pub fn compile(self) -> Result<ContentsSettings, SpanError> {
        Ok(ContentsSettings {
            extract_all: self.extract_all,
            extract_dir: self.extract_dir,
            max_bytes_per_conn: self.max_bytes_per_conn,
            max_rate: self.max_rate,
            disk_quota: self.disk_quota,
            rules: self
                .rules
                .into_iter()
                .map(|r| ContentRule {
                    direction: r.direction,
                    matcher: r.matcher.compile(),
                })
                .collect(),
        })
    }
}
