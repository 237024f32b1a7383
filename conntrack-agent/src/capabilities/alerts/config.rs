//! The `[alerts]` section of the config file: what the file says (`AlertsSection`, checked by
//! serde as it is read, so a bad value is reported at its line) and what the agent runs with
//! (`AlertsSettings`, after the checks that need the whole section: sink names, threshold units,
//! secrets from the environment).

use super::rule::{Match, PortRange, Rule};
use crate::core::thresholds::ThresholdKind;
use crate::util::config_values::{HumanDuration, SpanError};
use crate::util::site::NetSet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

const DEFAULT_QUEUE_CAPACITY: usize = 1024;
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(1);
const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(300);

/// A list of CIDRs (a bare address is a host network).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct Nets(pub NetSet);

impl TryFrom<Vec<String>> for Nets {
    type Error = String;
    fn try_from(v: Vec<String>) -> Result<Self, String> {
        for item in &v {
            // One network per string here: a comma would hide a typo in a list.
            if item.contains([',', ' ']) {
                return Err(format!("invalid network {item:?}: one CIDR per string"));
            }
        }
        NetSet::parse_list(v.iter().map(String::as_str))
            .map(Nets)
            .map_err(|e| e.to_string())
    }
}

/// An integer or a string, for values that take either (`443` or `"8000-8100"`, `6` or `"tcp"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum IntOrText {
    Int(i64),
    Text(String),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "IntOrText")]
pub struct PortSpec(pub PortRange);

fn port(n: i64, whole: &str) -> Result<u16, String> {
    u16::try_from(n).map_err(|_| format!("invalid port {whole:?}: ports are 0-65535"))
}

impl TryFrom<IntOrText> for PortSpec {
    type Error = String;
    fn try_from(v: IntOrText) -> Result<Self, String> {
        let (lo, hi) = match v {
            IntOrText::Int(n) => {
                let p = port(n, &n.to_string())?;
                (p, p)
            }
            IntOrText::Text(s) => {
                let bad =
                    || format!("invalid port range {s:?}: expected e.g. 443 or \"8000-8100\"");
                let (a, b) = s.split_once('-').ok_or_else(bad)?;
                let a: i64 = a.trim().parse().map_err(|_| bad())?;
                let b: i64 = b.trim().parse().map_err(|_| bad())?;
                (port(a, &s)?, port(b, &s)?)
            }
        };
        if lo > hi {
            return Err(format!(
                "invalid port range {lo}-{hi}: low end above high end"
            ));
        }
        Ok(PortSpec(PortRange { lo, hi }))
    }
}

/// `"tcp"`, `"udp"`, `"icmp"` (ICMP and ICMPv6), `"sctp"` or an IP protocol number.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "IntOrText")]
pub struct ProtoSpec(pub Vec<u8>);

impl TryFrom<IntOrText> for ProtoSpec {
    type Error = String;
    fn try_from(v: IntOrText) -> Result<Self, String> {
        let protos = match v {
            IntOrText::Int(n) => vec![
                u8::try_from(n)
                    .map_err(|_| format!("invalid protocol number {n}: expected 0-255"))?,
            ],
            IntOrText::Text(s) => match s.to_ascii_lowercase().as_str() {
                "tcp" => vec![6],
                "udp" => vec![17],
                "icmp" => vec![1, 58],
                "sctp" => vec![132],
                _ => {
                    return Err(format!(
                        "invalid protocol {s:?}: expected tcp, udp, icmp, sctp or a number"
                    ));
                }
            },
        };
        Ok(ProtoSpec(protos))
    }
}

/// `match = { ... }` of a rule.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSection {
    pub proto: Option<ProtoSpec>,
    #[serde(default)]
    pub orig_nets: Nets,
    #[serde(default)]
    pub resp_nets: Nets,
    /// Either side.
    #[serde(default)]
    pub nets: Nets,
    #[serde(default)]
    pub orig_ports: Vec<PortSpec>,
    #[serde(default)]
    pub resp_ports: Vec<PortSpec>,
    /// Either side.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub ifaces: Vec<String>,
}

impl MatchSection {
    pub(crate) fn compile(self) -> Match {
        let ranges = |v: Vec<PortSpec>| v.into_iter().map(|p| p.0).collect();
        Match {
            protos: self.proto.map(|p| p.0).unwrap_or_default(),
            orig_nets: self.orig_nets.0,
            resp_nets: self.resp_nets.0,
            nets: self.nets.0,
            orig_ports: ranges(self.orig_ports),
            resp_ports: ranges(self.resp_ports),
            ports: ranges(self.ports),
            ifaces: self.ifaces,
        }
    }
}

/// A threshold as written: a count for bytes and packets, a duration string for `duration`.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawThreshold")]
pub enum ThresholdValue {
    Count(u64),
    Duration(String),
}

/// Any TOML value a threshold might be written as, so that a wrong one is refused with what
/// is wrong with it (an untagged enum only says that nothing matched).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawThreshold {
    Int(i64),
    Float(f64),
    Text(String),
}

/// What a threshold accepts, for the messages that refuse one.
const THRESHOLD_ACCEPTS: &str = "a bytes or packets threshold is a whole number of at least 1 \
                                 (e.g. 1000000), a duration threshold a string like \"10m\"";

impl TryFrom<RawThreshold> for ThresholdValue {
    type Error = String;
    fn try_from(v: RawThreshold) -> Result<Self, String> {
        match v {
            RawThreshold::Int(n) => u64::try_from(n)
                .map(ThresholdValue::Count)
                .map_err(|_| format!("threshold {n} is negative: {THRESHOLD_ACCEPTS}")),
            RawThreshold::Float(x) => Err(format!(
                "threshold {x} is not a whole number: {THRESHOLD_ACCEPTS}"
            )),
            RawThreshold::Text(t) => Ok(ThresholdValue::Duration(t)),
        }
    }
}

/// `[[alerts.rules]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    pub name: Spanned<String>,
    pub metric: ThresholdKind,
    pub threshold: Spanned<ThresholdValue>,
    #[serde(default, rename = "match")]
    pub matcher: MatchSection,
    /// Names of `[alerts.webhooks.NAME]` tables; alerts.log gets every alert regardless.
    #[serde(default)]
    pub webhooks: Vec<Spanned<String>>,
}

/// `[alerts.webhooks.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    pub url: Spanned<String>,
    /// HMAC-SHA256 key for `X-Conntrack-Signature`. `secret_env` names an environment variable
    /// holding it instead, to keep the key out of the file.
    pub secret: Option<String>,
    pub secret_env: Option<Spanned<String>>,
    /// Per-request timeout (connect, send, response headers).
    pub timeout: Option<HumanDuration>,
    /// Retries wait a random time in [0, min(retry_max, retry_base * 2^attempt)].
    pub retry_base: Option<HumanDuration>,
    pub retry_max: Option<HumanDuration>,
}

/// `[alerts]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// Default: `<log-dir>/alerts-spool`.
    pub spool_dir: Option<PathBuf>,
    pub queue_capacity: Option<Spanned<usize>>,
    /// How long `read` (and `run` at shutdown) waits for queued deliveries before leaving them
    /// in the spool for the next start.
    pub drain_timeout: Option<HumanDuration>,
    #[serde(default)]
    pub webhooks: BTreeMap<Spanned<String>, WebhookSection>,
    #[serde(default)]
    pub rules: Vec<RuleSection>,
}

/// A webhook as the delivery worker uses it.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub name: String,
    pub url: reqwest::Url,
    pub secret: Option<Vec<u8>>,
    pub timeout: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
}

/// The checked `[alerts]` section.
#[derive(Debug, Clone)]
pub struct AlertsSettings {
    pub spool_dir: Option<PathBuf>,
    pub queue_capacity: usize,
    pub drain_timeout: Duration,
    pub webhooks: Vec<WebhookSettings>,
    pub rules: Vec<Rule>,
}

impl Default for AlertsSettings {
    fn default() -> Self {
        Self {
            spool_dir: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            webhooks: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// Webhook names become spool directory names: keep them to a safe alphabet.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn compile_webhook(
    name: &Spanned<String>,
    w: WebhookSection,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<WebhookSettings, SpanError> {
    if !valid_name(name.get_ref()) {
        return Err((
            name.span(),
            format!(
                "invalid webhook name {:?}: use letters, digits, '-' and '_' (at most 64)",
                name.get_ref()
            ),
        ));
    }
    let url = reqwest::Url::parse(w.url.get_ref()).map_err(|e| {
        (
            w.url.span(),
            format!("invalid url {:?}: {e}", w.url.get_ref()),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err((
            w.url.span(),
            format!("invalid url {:?}: use http or https", w.url.get_ref()),
        ));
    }
    let secret = match (w.secret, w.secret_env) {
        (Some(_), Some(var)) => {
            return Err((
                var.span(),
                "give either secret or secret_env, not both".into(),
            ));
        }
        (Some(s), None) => Some(s.into_bytes()),
        (None, Some(var)) => match env(var.get_ref()) {
            Some(s) if !s.is_empty() => Some(s.into_bytes()),
            _ => {
                return Err((
                    var.span(),
                    format!(
                        "secret_env: environment variable {} is not set",
                        var.get_ref()
                    ),
                ));
            }
        },
        (None, None) => None,
    };
    Ok(WebhookSettings {
        name: name.get_ref().clone(),
        url,
        secret,
        timeout: w.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0),
        retry_base: w.retry_base.map_or(DEFAULT_RETRY_BASE, |d| d.0),
        retry_max: w.retry_max.map_or(DEFAULT_RETRY_MAX, |d| d.0),
    })
}

fn compile_threshold(metric: ThresholdKind, t: &Spanned<ThresholdValue>) -> Result<u64, SpanError> {
    match (metric, t.get_ref()) {
        (ThresholdKind::Duration, ThresholdValue::Duration(s)) => {
            let d = HumanDuration::try_from(s.clone()).map_err(|e| (t.span(), e))?;
            u64::try_from(d.0.as_nanos())
                .ok()
                .filter(|&ns| ns > 0)
                .ok_or_else(|| (t.span(), format!("invalid duration threshold {s:?}")))
        }
        (ThresholdKind::Duration, ThresholdValue::Count(_)) => Err((
            t.span(),
            "a duration threshold is a string such as \"30s\", \"5m\" or \"1h\"".into(),
        )),
        (_, ThresholdValue::Count(0)) => Err((t.span(), "threshold must be at least 1".into())),
        (_, ThresholdValue::Count(n)) => Ok(*n),
        (_, ThresholdValue::Duration(_)) => Err((
            t.span(),
            format!("the threshold of metric {} is a number", metric.name()),
        )),
    }
}

impl AlertsSection {
    /// Checks what serde cannot see from one value. `env` looks up `secret_env` variables
    /// (a parameter so that tests do not depend on the process environment).
    pub fn compile(
        self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<AlertsSettings, SpanError> {
        let mut out = AlertsSettings {
            spool_dir: self.spool_dir,
            drain_timeout: self.drain_timeout.map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.0),
            ..AlertsSettings::default()
        };
        if let Some(q) = self.queue_capacity {
            if *q.get_ref() == 0 {
                return Err((q.span(), "queue_capacity must be at least 1".into()));
            }
            out.queue_capacity = *q.get_ref();
        }
        for (name, w) in self.webhooks {
            out.webhooks.push(compile_webhook(&name, w, env)?);
        }
        for r in self.rules {
            if out.rules.iter().any(|x: &Rule| x.name == *r.name.get_ref()) {
                return Err((
                    r.name.span(),
                    format!("duplicate rule name {:?}", r.name.get_ref()),
                ));
            }
            let threshold = compile_threshold(r.metric, &r.threshold)?;
            let mut webhooks = Vec::new();
            for sink in &r.webhooks {
                let i = out
                    .webhooks
                    .iter()
                    .position(|w| w.name == *sink.get_ref())
                    .ok_or_else(|| {
                        (
                            sink.span(),
                            format!(
                                "rule {:?}: no webhook named {:?} (define [alerts.webhooks.{}])",
                                r.name.get_ref(),
                                sink.get_ref(),
                                sink.get_ref()
                            ),
                        )
                    })?;
                if !webhooks.contains(&i) {
                    webhooks.push(i);
                }
            }
            out.rules.push(Rule {
                name: r.name.into_inner(),
                metric: r.metric,
                threshold,
                matcher: r.matcher.compile(),
                webhooks,
            });
        }
        Ok(out)
    }
}
