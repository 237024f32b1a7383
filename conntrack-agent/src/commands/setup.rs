//! The start-up that `run` and `read` share: the config file (read once), the checks that need
//! both it and the command line, and the agent core with the capabilities the settings turn on.
//! Each command brings its own datapath (the attached kernel program, or a replay engine) and
//! the capabilities only it has (metrics in `run`, a test's observer in `read`).

use crate::capabilities::alerts::capability::{AlertRules, SharedAlerts};
use crate::capabilities::alerts::{AlertMetrics, Alerts};
use crate::capabilities::conn_long::{ConnLong, IntervalsHandle};
use crate::capabilities::contents::config::ContentsSettings;
use crate::capabilities::contents::{self, SettingsHandle};
use crate::capabilities::removal_log::RemovalLog;
use crate::capabilities::service::Service;
use crate::cli::{CommonArgs, parse_port_list};
use crate::config::Config;
use crate::core::agent::Agent;
use crate::core::events::Capability;
use crate::core::thresholds::DurationMode;
use crate::datapath::Datapath;
use crate::datapath::host::HostConfig;
use crate::export::ipfix::Exporter;
use crate::logs::conn_log::ConnLogWriter;
use crate::util::site::NetSet;
use anyhow::Result;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Timers handled per advance in `run` (between two looks at the ring buffer): about 10 ms of
/// expirations, each a map delete and a record.
const LIVE_EXPIRE_BATCH: usize = 5_000;

/// The settings both commands start from, before any datapath exists.
pub struct Settings {
    pub config: Config,
    /// `--likely-server-ports` as (port, IP protocol).
    pub ports: Vec<(u16, u8)>,
    /// `--local-nets`, or the private address space.
    pub local_nets: NetSet,
    /// Content extraction as the command line and `[contents]` together ask for it, and the
    /// directory its files go to.
    pub contents: ContentsSettings,
    pub extract_dir: PathBuf,
    /// Service detection (conn.log's `service`): on unless `--no-service`.
    pub service: bool,
}

impl Settings {
    /// The settings of `common` and its config file (read once, by `cli::parse`), checked
    /// against each other.
    pub fn new(common: &CommonArgs, config: Config) -> Result<Self> {
        check_log_dir(common, &config)?;
        let ports = parse_port_list(&common.likely_server_ports)?;
        let local_nets = local_nets_from(&common.local_nets)?;
        let mut contents = config.contents.clone();
        // The command line adds to the [contents] section.
        contents.extract_all |= common.extract_all;
        let extract_dir = common
            .extract_dir
            .clone()
            .or_else(|| contents.extract_dir.clone())
            .unwrap_or_else(|| common.log_dir.join("extract"));
        Ok(Self {
            config,
            ports,
            local_nets,
            contents,
            extract_dir,
            service: !common.no_service,
        })
    }
}

impl Settings {
    /// True when something besides conn.log is written under the log directory: the other
    /// logs, the alert spool, extracted contents (`--stdout` runs then still lock it).
    pub fn writes_other_files(&self, common: &CommonArgs) -> bool {
        let config = &self.config;
        let under = |p: &std::path::Path| p.starts_with(&common.log_dir);
        config.conn_long.enabled
            || config
                .removal_log
                .path(&common.log_dir)
                .is_some_and(|p| under(&p))
            || !config.alerts.rules.is_empty()
            || (!config.alerts.webhooks.is_empty()
                && config.alerts.spool_dir.as_deref().is_none_or(under))
            || (self.contents.enabled() && under(&self.extract_dir))
    }
}

/// How the command runs: duration thresholds of an idle connection fire on a timer live, and
/// in a replay only with `--duration-timers` (Zeek's `-r` checks them at the next packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    Replay { duration_timers: bool },
}

/// The agent core with its capabilities, and the handles each command needs afterwards.
pub struct Started {
    pub agent: Agent,
    pub alerts: SharedAlerts,
    pub alert_metrics: Arc<AlertMetrics>,
    /// What SIGHUP may change (see commands/run/reload.rs).
    pub conn_long: Option<IntervalsHandle>,
    pub contents: Option<SettingsHandle>,
    pub ipfix: Option<Exporter>,
}

/// Creates conn.log and the agent on `dp`, and registers the capabilities: conn_long.log and
/// removal.log, alert rules, content extraction, then `extra`, then the IPFIX exporter.
pub fn start(
    settings: &Settings,
    common: &CommonArgs,
    dp: Box<dyn Datapath>,
    mode: Mode,
    extra: Vec<Box<dyn Capability>>,
) -> Result<Started> {
    let config = &settings.config;
    let writer = ConnLogWriter::create_with(
        &common.log_dir,
        "conn",
        common.log_format,
        common.columns(),
        common.conn_log_options(),
    )?;
    // Started before the first packet so that deliveries left by an earlier run go out meanwhile.
    let alerts = Alerts::start(&config.alerts, &common.log_dir, common.community_id)?;
    let alert_rules = alerts.has_rules();
    let alert_metrics = alerts.metrics();
    let alert_log = alerts.log_health();
    let alerts: SharedAlerts = Arc::new(Mutex::new(Some(alerts)));
    let mut agent = Agent::new(
        dp,
        // The overflow table samples as the kernel's does.
        HostConfig::new(&settings.ports).with_service_samples(settings.service),
        config.inactivity.timeouts(),
        settings.local_nets.clone(),
        writer,
    );
    agent.enable_link_layers()?;
    if mode == Mode::Live {
        // Live, timers come due by the wall clock, a million at once when a burst of
        // connections times out together: taken in large batches, with the ring buffer's
        // events handled between them (commands/run), not Zeek's 300 per packet.
        agent.set_expire_batch(LIVE_EXPIRE_BATCH);
    }
    if matches!(
        mode,
        Mode::Live
            | Mode::Replay {
                duration_timers: true
            }
    ) {
        // An idle connection must not delay its duration thresholds until its next packet.
        agent.set_duration_mode(DurationMode::NextPacketOrTimer);
    }
    if let Some(h) = alert_log {
        agent.add_health(h);
    }
    let conn_long = register_logs(&mut agent, config, common, &settings.local_nets)?;
    if alert_rules {
        let live = mode == Mode::Live;
        let rules = AlertRules::new(alerts.clone(), settings.local_nets.clone(), live);
        agent.register(Box::new(rules));
    }
    let contents = if settings.contents.enabled() {
        let handle = contents::register(&mut agent, &settings.contents, &settings.extract_dir)?;
        Some(handle)
    } else {
        None
    };
    if settings.service {
        agent.register(Box::new(Service::new(&settings.ports)));
    }
    for cap in extra {
        agent.register(cap);
    }
    let ipfix = Exporter::start(&common.ipfix.or_file(&config.ipfix))?;
    if let Some(x) = &ipfix {
        agent.register(x.capability());
    }
    Ok(Started {
        agent,
        alerts,
        alert_metrics,
        conn_long,
        contents,
        ipfix,
    })
}

/// `--local-nets`; without it, the private address space (Zeek's `Site::local_nets` is empty by
/// default, but a tracker's users expect local_orig/local_resp filled in).
pub fn local_nets_from(args: &[String]) -> Result<NetSet> {
    if args.is_empty() {
        Ok(NetSet::private_address_space())
    } else {
        NetSet::parse_list(args.iter().map(String::as_str))
    }
}

/// The logs the config file turns on besides conn.log (`[conn_long]`, `[removal_log]`); returns
/// conn_long's intervals for SIGHUP.
fn register_logs(
    agent: &mut Agent,
    config: &Config,
    common: &CommonArgs,
    local_nets: &NetSet,
) -> Result<Option<IntervalsHandle>> {
    let mut intervals = None;
    if config.conn_long.enabled {
        let cap = ConnLong::create(
            &config.conn_long,
            &common.log_dir,
            common.log_format,
            common.community_id,
            local_nets.clone(),
            common.rotation(),
        )?;
        intervals = Some(cap.intervals_handle());
        agent.add_log(cap.log());
        agent.register(Box::new(cap));
    }
    if let Some(path) = config.removal_log.path(&common.log_dir) {
        let cap = RemovalLog::create_rotated(&path, common.rotation())?;
        agent.add_log(cap.log());
        agent.register(Box::new(cap));
    }
    Ok(intervals)
}

/// Refuses `--log-dir -` (conn.log on stdout) when another log or file needs a directory,
/// and rotation without a file to rotate.
fn check_log_dir(common: &CommonArgs, config: &Config) -> Result<()> {
    if common.log_dir.as_os_str() != "-" {
        return Ok(());
    }
    let rotates = !common.rotation().is_off();
    let needs = [
        (rotates, "--rotate-interval/--rotate-size"),
        (config.conn_long.enabled, "[conn_long] (conn_long.log)"),
        (
            config.removal_log.enabled && config.removal_log.path.is_none(),
            "[removal_log] without a path",
        ),
        (
            !config.alerts.rules.is_empty(),
            "[alerts] rules (alerts.log)",
        ),
        (
            (config.contents.enabled() || common.extract_all)
                && common.extract_dir.is_none()
                && config.contents.extract_dir.is_none(),
            "content extraction without an extract_dir",
        ),
    ];
    if let Some((_, what)) = needs.iter().find(|(on, _)| *on) {
        anyhow::bail!(
            "--log-dir - writes conn.log to stdout and leaves no directory for {what}: \
             use --stdout --log-dir DIR instead"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::fixtures::common_args;

    fn config(text: &str) -> Config {
        Config::parse(text, "c.toml", &|_| None).unwrap()
    }

    #[test]
    fn log_dir_dash_leaves_no_directory_for_other_logs() {
        let dash = common_args(&["--log-dir", "-"]);
        assert!(dash.to_stdout());
        check_log_dir(&dash, &config("")).unwrap();
        let e = check_log_dir(&dash, &config("[conn_long]\n")).unwrap_err();
        assert!(e.to_string().contains("[conn_long]"), "{e}");
        assert!(e.to_string().contains("--stdout --log-dir DIR"), "{e}");
        let rotating = common_args(&["--log-dir", "-", "--rotate-size", "1M"]);
        let e = check_log_dir(&rotating, &config("")).unwrap_err();
        assert!(e.to_string().contains("--rotate-size"), "{e}");
        // With a path of its own, removal.log needs no log directory.
        check_log_dir(&dash, &config("[removal_log]\npath = \"/tmp/r.log\"\n")).unwrap();
        // --stdout keeps the directory for the other logs.
        let stdout = common_args(&["--stdout"]);
        assert!(stdout.to_stdout());
        check_log_dir(&stdout, &config("[conn_long]\n")).unwrap();
    }

    #[test]
    fn other_files_in_the_log_dir_are_known() {
        let stdout = common_args(&["--stdout", "--log-dir", "/l"]);
        let writes = |text: &str| {
            Settings::new(&stdout, config(text))
                .unwrap()
                .writes_other_files(&stdout)
        };
        assert!(!writes(""));
        assert!(writes("[conn_long]\n"));
        assert!(writes("[removal_log]\n"));
        assert!(!writes("[removal_log]\npath = \"/elsewhere/r.log\"\n"));
        assert!(writes("[contents]\nextract_all = true\n"));
        assert!(!writes(
            "[contents]\nextract_all = true\nextract_dir = \"/x\"\n"
        ));
    }

    #[test]
    fn the_command_line_adds_to_the_contents_section() {
        let off = Settings::new(&common_args(&[]), config("")).unwrap();
        assert!(!off.contents.enabled());
        let all = Settings::new(
            &common_args(&["--extract-all", "--log-dir", "/l"]),
            config(""),
        );
        let all = all.unwrap();
        assert!(all.contents.enabled());
        assert_eq!(all.extract_dir, PathBuf::from("/l/extract"));
        let file = config("[contents]\nextract_dir = \"/f\"\n");
        let from_file = Settings::new(&common_args(&["--extract-all"]), file.clone()).unwrap();
        assert_eq!(from_file.extract_dir, PathBuf::from("/f"));
        let cli_wins = Settings::new(
            &common_args(&["--extract-all", "--extract-dir", "/c"]),
            file,
        );
        assert_eq!(cli_wins.unwrap().extract_dir, PathBuf::from("/c"));
    }
}
