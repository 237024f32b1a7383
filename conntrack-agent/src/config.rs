//! `--config FILE`: the agent's settings in one TOML file, checked at start.
//!
//! The file has one table per capability (`[alerts]`, `[inactivity]`, `[conn_long]`,
//! `[removal_log]`, `[contents]`, `[metrics]`, `[ipfix]`): each capability adds its own section
//! type next to its code and one field to [`ConfigFile`], with a `compile` step when values need
//! more than serde's checks. Unknown keys are errors everywhere (`deny_unknown_fields`): a
//! misspelt option that is silently ignored is worse than a refusal to start. Every error names
//! the file, the line and the column of the value at fault.
//!
//! Every command-line option of `run` and `read` is also a key, with no code per option:
//!
//! | table     | keys                                              | applies to     |
//! |-----------|---------------------------------------------------|----------------|
//! | `[agent]` | long options both commands have (`log-dir`, ...)  | `run`, `read`  |
//! | `[run]`   | any long option of `run` (`iface`, `metrics-addr`) | `run`         |
//! | `[read]`  | any long option of `read` (`engine`, ...)         | `read`         |
//!
//! Keys are the long names (`log-dir` or `log_dir`); values are what the command line would
//! take (a string, number or bool; a list for a repeatable option; `true`/`false` for a flag).
//! They are looked up in clap's definition of the command and checked by each option's own
//! value parser (file_options.rs), then added to the command line where it did not set the
//! option itself (clap's `ArgMatches::value_source`), and clap parses the whole again
//! (`cli::parse`): command line > environment variables clap reads > `[run]`/`[read]` >
//! `[agent]` > defaults. `config`, `help` and `version` are refused. When an option also has a
//! capability section (`metrics-addr` and `[metrics] addr`, `ipfix` and `[ipfix]`), the option
//! wins.
//!
//! `run` reads the file again on SIGHUP (reload.rs says what is applied live and what needs a
//! restart). `conntrack.example.toml` at the repository root shows every table; a test loads it.

use crate::capabilities::alerts::config::{AlertsSection, AlertsSettings};
use crate::capabilities::conn_long::{ConnLongSection, ConnLongSettings};
use crate::capabilities::contents::config::{ContentsSection, ContentsSettings};
use crate::capabilities::removal_log::{RemovalLogSection, RemovalLogSettings};
use crate::cli::file_options::{FileOptions, RawTable};
use crate::core::inactivity::{InactivitySection, InactivitySettings};
use crate::export::ipfix::IpfixSection;
use crate::export::metrics::MetricsSection;
use serde::Deserialize;
use std::ops::Range;
use std::path::Path;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    alerts: AlertsSection,
    #[serde(default)]
    inactivity: InactivitySection,
    conn_long: Option<ConnLongSection>,
    removal_log: Option<RemovalLogSection>,
    #[serde(default)]
    contents: ContentsSection,
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    ipfix: IpfixSection,
    /// Command-line options (file_options.rs): both commands, `run`, `read`.
    agent: Option<RawTable>,
    run: Option<RawTable>,
    read: Option<RawTable>,
}

/// The checked configuration the agent runs with.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub alerts: AlertsSettings,
    pub inactivity: InactivitySettings,
    pub conn_long: ConnLongSettings,
    pub removal_log: RemovalLogSettings,
    pub contents: ContentsSettings,
    pub metrics: MetricsSection,
    pub ipfix: IpfixSection,
    /// `[agent]`, `[run]`, `[read]`: command-line options, applied by `cli::parse`.
    pub options: FileOptions,
}

/// A config error, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.located_message())]
pub struct ConfigError {
    pub origin: String,
    /// 1-based; 0 when the error has no position (e.g. the file cannot be read).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl ConfigError {
    /// `FILE:LINE:COLUMN: message`; without a position (e.g. the file cannot be read), no
    /// `:0:0` but `FILE: message`, or the message alone when it names the file itself.
    fn located_message(&self) -> String {
        if self.line == 0 && self.message.contains(&self.origin) {
            self.message.clone()
        } else if self.line == 0 {
            format!("{}: {}", self.origin, self.message)
        } else {
            format!(
                "{}:{}:{}: {}",
                self.origin, self.line, self.column, self.message
            )
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
    (line, column)
}

fn located(text: &str, origin: &str, span: Option<Range<usize>>, message: String) -> ConfigError {
    let (line, column) = span.map_or((0, 0), |s| line_col(text, s.start));
    ConfigError {
        origin: origin.to_string(),
        line,
        column,
        message,
    }
}

impl Config {
    /// Parses and checks a config text; `origin` names it in errors (the file path).
    pub fn parse(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file: ConfigFile = toml::from_str(text)
            .map_err(|e| located(text, origin, e.span(), e.message().trim().to_string()))?;
        let alerts = file
            .alerts
            .compile(env)
            .map_err(|(span, msg)| located(text, origin, Some(span), msg))?;
        let at = |(span, msg)| located(text, origin, Some(span), msg);
        Ok(Self {
            alerts,
            inactivity: file.inactivity.compile().map_err(at)?,
            conn_long: ConnLongSection::compile_section(file.conn_long).map_err(at)?,
            removal_log: RemovalLogSection::compile_section(file.removal_log),
            contents: file.contents.compile().map_err(at)?,
            metrics: file.metrics,
            ipfix: file.ipfix,
            options: FileOptions::compile(file.agent, file.run, file.read).map_err(at)?,
        })
    }

    /// Reads `path`; without a path, the defaults (what the command line alone means).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read config file {origin}: {e}"),
        })?;
        Self::parse(&text, &origin, &|var| std::env::var(var).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::alerts::rule::ConnMatch;
    use crate::core::thresholds::ThresholdKind;
    use std::time::Duration;

    const GOOD: &str = r#"
[alerts]
drain_timeout = "20s"
queue_capacity = 64

[alerts.webhooks.ops]
url = "https://hooks.example.com/conntrack"
secret_env = "OPS_SECRET"
timeout = "3s"
retry_base = "500ms"
retry_max = "2m"

[alerts.webhooks.soar]
url = "http://127.0.0.1:9000/alert"

[[alerts.rules]]
name = "big-upload"
metric = "orig_bytes"
threshold = 100000000
webhooks = ["ops", "soar"]
match = { proto = "tcp", orig_nets = ["10.0.0.0/8", "fd00::/8"], resp_ports = [443, "8000-8100"] }

[[alerts.rules]]
name = "long-lived"
metric = "duration"
threshold = "1h 30m"

[[alerts.rules]]
name = "dns-flood"
metric = "total_packets"
threshold = 10000
webhooks = ["soar"]
[alerts.rules.match]
proto = "udp"
ports = [53]
ifaces = ["eth0"]
"#;

    fn env(var: &str) -> Option<String> {
        (var == "OPS_SECRET").then(|| "s3cret".to_string())
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", &env)
    }

    fn err(text: &str) -> ConfigError {
        parse(text).expect_err("the config should be refused")
    }

    #[test]
    fn a_missing_file_is_named_without_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.toml");
        let e = Config::load(Some(&path)).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "cannot read config file {}: No such file or directory (os error 2)",
                path.display()
            )
        );
        let unplaced = located("", "c.toml", None, "bad".into()).to_string();
        assert_eq!(unplaced, "c.toml: bad");
    }

    #[test]
    fn a_negative_or_fractional_threshold_says_what_is_accepted() {
        let rule = |threshold: &str| {
            format!(
                "[[alerts.rules]]\nname = \"r\"\nmetric = \"total_bytes\"\nthreshold = {threshold}\n"
            )
        };
        for (value, what) in [
            ("-5", "threshold -5 is negative"),
            ("1.5", "threshold 1.5 is not a whole number"),
        ] {
            let e = err(&rule(value));
            let msg = e.to_string();
            assert!(msg.contains(what), "{msg}");
            assert!(msg.contains("whole number of at least 1"), "{msg}");
            assert!(msg.contains("\"10m\""), "{msg}");
            assert!(!msg.contains("untagged"), "{msg}");
            assert_eq!(e.line, 4, "{msg}");
        }
        parse(&rule("1000")).expect("a count");
    }

    #[test]
    fn good_file() {
        let c = parse(GOOD).unwrap().alerts;
        assert_eq!(c.drain_timeout, Duration::from_secs(20));
        assert_eq!(c.queue_capacity, 64);
        assert_eq!(c.webhooks.len(), 2);
        let ops = c.webhooks.iter().find(|w| w.name == "ops").unwrap();
        assert_eq!(ops.secret.as_deref(), Some(&b"s3cret"[..]));
        assert_eq!(ops.timeout, Duration::from_secs(3));
        assert_eq!(ops.retry_base, Duration::from_millis(500));
        assert_eq!(ops.retry_max, Duration::from_secs(120));
        let soar = c.webhooks.iter().find(|w| w.name == "soar").unwrap();
        assert!(soar.secret.is_none());
        assert_eq!(soar.timeout, Duration::from_secs(10));

        let names: Vec<&str> = c.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["big-upload", "long-lived", "dns-flood"]);
        let big = &c.rules[0];
        assert_eq!(big.metric, ThresholdKind::OrigBytes);
        assert_eq!(big.threshold, 100_000_000);
        assert_eq!(big.webhooks.len(), 2);
        let upload = |o: &str, rp: u16| ConnMatch {
            proto: 6,
            orig_h: o.parse().unwrap(),
            orig_p: 50000,
            resp_h: "93.184.216.34".parse().unwrap(),
            resp_p: rp,
            iface: None,
        };
        assert!(big.matches(&upload("10.9.8.7", 443)));
        assert!(big.matches(&upload("fd00::1", 8050)));
        assert!(!big.matches(&upload("10.9.8.7", 80)));
        assert!(!big.matches(&upload("11.0.0.1", 443)));

        assert_eq!(c.rules[1].threshold, 5_400_000_000_000);
        assert!(c.rules[1].webhooks.is_empty());
        assert_eq!(c.rules[2].metric, ThresholdKind::TotalPackets);
        assert_eq!(c.rules[2].matcher.ifaces, ["eth0"]);
        assert_eq!(c.rules[2].matcher.protos, [17]);
    }

    #[test]
    fn no_file_means_defaults() {
        let c = Config::load(None).unwrap();
        assert!(c.alerts.rules.is_empty());
        assert_eq!(parse("").unwrap().alerts.queue_capacity, 1024);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = err(
            "[alerts]\n\n[[alerts.rules]]\nname = \"x\"\nmetric = \"orig_bytes\"\ntreshold = 5\n",
        );
        assert_eq!((e.origin.as_str(), e.line), ("test.toml", 6), "{e}");
        assert!(e.message.contains("unknown field `treshold`"), "{e}");
        let e = err("[alert]\n");
        assert!(e.message.contains("unknown field `alert`"), "{e}");
        assert_eq!(e.line, 1);
        let e = err("[alerts.webhooks.a]\nurl = \"http://x/\"\nretries = 3\n");
        assert!(e.message.contains("unknown field `retries`"), "{e}");
        assert_eq!(e.line, 3);
        let e = err(
            "[[alerts.rules]]\nname = \"x\"\nmetric = \"orig_bytes\"\nthreshold = 5\nmatch = { src_nets = [\"10.0.0.0/8\"] }\n",
        );
        assert!(e.message.contains("unknown field `src_nets`"), "{e}");
        assert_eq!(e.line, 5);
    }

    #[test]
    fn bad_cidr() {
        let e = err(
            "[[alerts.rules]]\nname = \"x\"\nmetric = \"orig_bytes\"\nthreshold = 5\n\n[alerts.rules.match]\nresp_nets = [\"10.0.0.0/8\", \"192.168.1.300/24\"]\n",
        );
        assert_eq!(e.line, 7, "{e}");
        assert!(e.message.contains("192.168.1.300/24"), "{e}");
        assert!(e.to_string().starts_with("test.toml:7:"), "{e}");
    }

    #[test]
    fn bad_duration() {
        let e = err(
            "[[alerts.rules]]\nname = \"x\"\nmetric = \"duration\"\nthreshold = \"5 fortnights\"\n",
        );
        assert_eq!(e.line, 4, "{e}");
        assert!(
            e.message.contains("invalid duration \"5 fortnights\""),
            "{e}"
        );
        let e = err("[alerts.webhooks.a]\nurl = \"http://x/\"\ntimeout = \"ten seconds\"\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("invalid duration"), "{e}");
        // A bare number is ambiguous for a duration: refused rather than guessed.
        let e = err("[[alerts.rules]]\nname = \"x\"\nmetric = \"duration\"\nthreshold = 30\n");
        assert!(e.message.contains("duration threshold is a string"), "{e}");
    }

    #[test]
    fn other_refusals() {
        let rule = |extra: &str| {
            format!(
                "[[alerts.rules]]\nname = \"x\"\nmetric = \"orig_bytes\"\nthreshold = 5\n{extra}"
            )
        };
        let e = err(&rule("webhooks = [\"nowhere\"]\n"));
        assert!(e.message.contains("no webhook named \"nowhere\""), "{e}");
        assert_eq!(e.line, 5);
        let e = err("[[alerts.rules]]\nname = \"x\"\nmetric = \"bytes\"\nthreshold = 5\n");
        assert!(e.message.contains("unknown variant `bytes`"), "{e}");
        assert_eq!(e.line, 3);
        let e =
            err("[[alerts.rules]]\nname = \"x\"\nmetric = \"orig_bytes\"\nthreshold = \"5m\"\n");
        assert!(e.message.contains("is a number"), "{e}");
        let e = err(&rule("match = { resp_ports = [70000] }\n"));
        assert!(e.message.contains("ports are 0-65535"), "{e}");
        let e = err(&rule("match = { proto = \"tpc\" }\n"));
        assert!(e.message.contains("invalid protocol \"tpc\""), "{e}");
        let e = err("[alerts.webhooks.a]\nurl = \"ftp://x/\"\n");
        assert!(e.message.contains("use http or https"), "{e}");
        let e = err("[alerts.webhooks.a]\nurl = \"http://x/\"\nsecret_env = \"MISSING\"\n");
        assert!(e.message.contains("MISSING is not set"), "{e}");
        let e = err(&format!("{}{}", rule(""), rule("").replace("[[", "\n[[")));
        assert!(e.message.contains("duplicate rule name"), "{e}");
    }

    #[test]
    fn metrics_and_ipfix_sections() {
        let c = parse(
            "[metrics]\naddr = \"127.0.0.1:9750\"\n[ipfix]\ncollector = \"collector:4739\"\ntransport = \"tcp\"\ndomain = 7\n",
        )
        .unwrap();
        assert_eq!(c.metrics.addr, Some("127.0.0.1:9750".parse().unwrap()));
        assert_eq!(c.ipfix.collector.as_deref(), Some("collector:4739"));
        assert_eq!(c.ipfix.transport, crate::export::ipfix::Transport::Tcp);
        assert_eq!(c.ipfix.domain, 7);
        let e = err("[metrics]\naddr = \"localhost\"\n");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("invalid socket address"), "{e}");
        let e = err("[ipfix]\ncollector = \"c:4739\"\ntransport = \"sctp\"\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("unknown variant `sctp`"), "{e}");
    }

    #[test]
    fn unreadable_file_is_named() {
        let e = Config::load(Some(Path::new("/nonexistent/conntrack.toml"))).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent/conntrack.toml"), "{msg}");
        assert!(!msg.contains(":0:0"), "{msg}");
    }

    #[test]
    fn a_contents_section_is_read_and_checked() {
        let text = r#"
[contents]
extract_dir = "/tmp/x"
max_bytes_per_conn = 1000
disk_quota = 5000

[[contents.rules]]
direction = "orig"
match = { proto = "tcp", resp_ports = [21] }
"#;
        let c = Config::parse(text, "c.toml", &|_| None).unwrap();
        assert!(c.contents.enabled());
        assert_eq!(c.contents.max_bytes_per_conn, 1000);
        assert_eq!(c.contents.rules.len(), 1);
        let bad = "[contents]\nmax_bytes = 1\n";
        let e = Config::parse(bad, "c.toml", &|_| None).unwrap_err();
        assert_eq!((e.line, e.column), (2, 1), "{e}");
        let bad = "[[contents.rules]]\ndirection = \"up\"\n";
        let e = Config::parse(bad, "c.toml", &|_| None).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }
}
