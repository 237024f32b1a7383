//! SIGHUP in `run`: the `--config` file is read again and what can change while connections
//! are tracked is applied; the rest keeps its running value and a warning names the keys that
//! need a restart. A file that does not load (syntax, unknown key, bad value) changes nothing:
//! the error is logged and the agent goes on with the configuration it has.
//!
//! Applied live:
//! - `[inactivity]`: connections created from then on (and TCP ones leaving the handshake)
//!   get the new timeouts; the timers of the others are already set.
//! - `[[alerts.rules]]` (when the agent started with rules and the webhooks are unchanged):
//!   new connections are armed with the new rules; a threshold armed before alerts only if a
//!   current rule has the same metric and threshold.
//! - `[conn_long] intervals` (when it was on at start and stays on): for new connections.
//! - `[[contents.rules]]` (when extraction was on at start): for connections selected from
//!   then on (TCP at establishment, others at their first packet).
//! - `tunnel-max-depth` in `[agent]`/`[run]` (when decapsulation was on at start, up to the
//!   kernel's 8 layers): the kernel program reads the depth from its CONFIG map at every
//!   packet, so the next packets are opened to the new depth. Connections already open stay
//!   as they are: an inner connection now past the depth gets no more packets and times out,
//!   and its tunnel's packets count for the enclosing connection (as with that depth from the
//!   start). Turning decapsulation on needs a restart (tunnel.log is opened at start); a
//!   depth given on the command line wins over the file, as it does at start.
//!
//! Refused (restart to apply): the webhooks, spool and queue of `[alerts]`, turning
//! `[conn_long]`, `[removal_log]`, alert rules, extraction or decapsulation on, the other
//! `[contents]` keys (directory, caps, quota), `[metrics]`, `[ipfix]`, and the other
//! `[agent]`/`[run]` options (interfaces, log directory, table size, ...: they shape the kernel
//! program, the open files and sockets).

use crate::capabilities::alerts::Rule;
use crate::capabilities::alerts::capability::SharedAlerts;
use crate::capabilities::conn_long::IntervalsHandle;
use crate::capabilities::contents::SettingsHandle;
use crate::capabilities::contents::config::ContentRule;
use crate::cli::DEFAULT_TUNNEL_MAX_DEPTH;
use crate::cli::file_options::FileOption;
use crate::config::Config;
use crate::core::agent::Agent;
use crate::core::inactivity::InactivitySettings;
use crate::datapath::kernel::MAX_TUNNEL_DEPTH;
use std::path::PathBuf;
use std::time::Duration;

/// A change that is applied while running.
#[derive(Debug, Clone)]
pub enum Change {
    Inactivity(InactivitySettings),
    AlertRules(Vec<Rule>),
    ConnLongIntervals(Vec<Duration>),
    ContentsRules(Vec<ContentRule>),
    TunnelMaxDepth(u32),
}

impl Change {
    /// How the reload line names it.
    pub fn name(&self) -> &'static str {
        match self {
            Change::Inactivity(_) => "[inactivity]",
            Change::AlertRules(_) => "[[alerts.rules]]",
            Change::ConnLongIntervals(_) => "[conn_long] intervals",
            Change::ContentsRules(_) => "[[contents.rules]]",
            Change::TunnelMaxDepth(_) => "tunnel-max-depth",
        }
    }
}

/// What a reload does: the changes to apply, the keys that changed but need a restart, and
/// changes that are ignored for another reason (each note says why).
#[derive(Debug, Default)]
pub struct Decision {
    pub apply: Vec<Change>,
    pub refused: Vec<String>,
    pub notes: Vec<String>,
}

/// What the agent started with that the file alone does not say.
#[derive(Debug, Clone, Copy)]
pub struct Running {
    /// The tunnel depth at start: 0 means tunnel.log was not opened, and decapsulation
    /// cannot be turned on live (turning it off and on again can).
    pub tunnel_depth_at_start: u32,
    /// `--tunnel-max-depth` was on the command line: it wins over the file.
    pub tunnel_depth_from_cli: bool,
}

impl Running {
    /// From this process's command line and the depth it runs with.
    pub fn from_command_line(tunnel_depth_at_start: u32) -> Self {
        let given = |long: &str| {
            std::env::args_os().skip(1).any(|a| {
                let a = a.to_string_lossy();
                a == long || a.strip_prefix(long).is_some_and(|v| v.starts_with('='))
            })
        };
        Self {
            tunnel_depth_at_start,
            tunnel_depth_from_cli: given("--tunnel-max-depth"),
        }
    }
}

/// clap's id of `--tunnel-max-depth`, the one command-line option a reload can change.
const TUNNEL_DEPTH_ID: &str = "tunnel_max_depth";

/// The file's tunnel depth for `run` (`[run]` or `[agent]`), the default when it has none,
/// and how the file names the key.
fn file_tunnel_depth(c: &Config) -> (u32, Option<String>) {
    match c.options.run.iter().find(|o| o.id == TUNNEL_DEPTH_ID) {
        Some(o) => {
            // `--tunnel-max-depth=N`, checked by clap's value parser when the file loaded.
            let n = o
                .args
                .first()
                .and_then(|a| a.split_once('='))
                .and_then(|(_, v)| v.parse().ok());
            (n.unwrap_or(DEFAULT_TUNNEL_MAX_DEPTH), Some(o.name()))
        }
        None => (DEFAULT_TUNNEL_MAX_DEPTH, None),
    }
}

/// A changed tunnel depth: applied, refused (restart) or a note saying why it stays.
fn decide_tunnel_depth(old: &Config, new: &Config, running: Running, d: &mut Decision) {
    let ((from, old_key), (to, new_key)) = (file_tunnel_depth(old), file_tunnel_depth(new));
    if from == to {
        return;
    }
    let key = new_key
        .or(old_key)
        .unwrap_or_else(|| "[run] tunnel-max-depth".into());
    if running.tunnel_depth_from_cli {
        d.notes.push(format!(
            "{key} changed, but --tunnel-max-depth was given on the command line, which wins \
             over the file: the running depth stays"
        ));
    } else if running.tunnel_depth_at_start == 0 {
        d.refused
            .push(format!("{key} (decapsulation was off at start)"));
    } else if to > MAX_TUNNEL_DEPTH {
        d.notes.push(format!(
            "{key} = {to}: the kernel engine opens at most {MAX_TUNNEL_DEPTH} tunnel layers; \
             the running depth, {from}, stays"
        ));
    } else {
        d.apply.push(Change::TunnelMaxDepth(to));
    }
}

/// Equality for settings types without `PartialEq` (their Debug text covers every field).
fn same<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

/// Compares the running configuration with the file just read (pure: the caller applies).
pub fn decide(old: &Config, new: &Config, running: Running) -> Decision {
    let mut apply = Vec::new();
    let mut refused = Vec::new();
    let mut refuse = |key: &str| refused.push(key.to_string());

    // [alerts]: the rules live, the delivery machinery (workers per webhook, spool) not.
    let (oa, na) = (&old.alerts, &new.alerts);
    let mut alerts_refused = false;
    for (changed, key) in [
        (!same(&oa.webhooks, &na.webhooks), "[alerts.webhooks]"),
        (oa.spool_dir != na.spool_dir, "[alerts] spool_dir"),
        (
            oa.queue_capacity != na.queue_capacity,
            "[alerts] queue_capacity",
        ),
        (
            oa.drain_timeout != na.drain_timeout,
            "[alerts] drain_timeout",
        ),
    ] {
        if changed {
            refuse(key);
            alerts_refused = true;
        }
    }
    if !same(&oa.rules, &na.rules) {
        if alerts_refused {
            // Rules name webhooks by position: not with another set of webhooks.
            refuse("[[alerts.rules]] (with the webhooks)");
        } else if oa.rules.is_empty() {
            refuse("[[alerts.rules]] (the agent started without rules)");
        } else {
            apply.push(Change::AlertRules(na.rules.clone()));
        }
    }

    if old.inactivity != new.inactivity {
        apply.push(Change::Inactivity(new.inactivity.clone()));
    }

    let (oc, nc) = (&old.conn_long, &new.conn_long);
    if oc.enabled != nc.enabled {
        refuse("[conn_long] (on/off)");
    } else if oc.enabled && oc.intervals != nc.intervals {
        apply.push(Change::ConnLongIntervals(nc.intervals.clone()));
    }

    if old.removal_log != new.removal_log {
        refuse("[removal_log]");
    }
    let (oc, nc) = (&old.contents, &new.contents);
    for (changed, key) in [
        (oc.extract_all != nc.extract_all, "[contents] extract_all"),
        (oc.extract_dir != nc.extract_dir, "[contents] extract_dir"),
        (
            oc.max_bytes_per_conn != nc.max_bytes_per_conn,
            "[contents] max_bytes_per_conn",
        ),
        (oc.max_rate != nc.max_rate, "[contents] max_rate"),
        (oc.disk_quota != nc.disk_quota, "[contents] disk_quota"),
    ] {
        if changed {
            refuse(key);
        }
    }
    if !same(&oc.rules, &nc.rules) {
        if oc.enabled() {
            apply.push(Change::ContentsRules(nc.rules.clone()));
        } else {
            refuse("[[contents.rules]] (extraction was off at start)");
        }
    }
    if old.metrics.addr != new.metrics.addr {
        refuse("[metrics]");
    }
    if !same(&old.ipfix, &new.ipfix) {
        refuse("[ipfix]");
    }

    // Command-line options: every change but the tunnel depth's needs a restart. Compared by
    // what they say, not where they are in the file.
    let said = |o: &FileOption| (o.id != TUNNEL_DEPTH_ID).then(|| (o.name(), o.args.clone()));
    let old_opts: Vec<_> = old.options.run.iter().filter_map(said).collect();
    let new_opts: Vec<_> = new.options.run.iter().filter_map(said).collect();
    let mut keys: Vec<String> = old_opts
        .iter()
        .filter(|o| !new_opts.contains(o))
        .chain(new_opts.iter().filter(|o| !old_opts.contains(o)))
        .map(|(name, _)| name.clone())
        .collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        refuse(&k);
    }
    let mut d = Decision {
        apply,
        refused,
        notes: Vec::new(),
    };
    decide_tunnel_depth(old, new, running, &mut d);
    d
}

/// What to say when the file's capture filter changed: it is compiled into the kernel
/// program at start (and a replay's is fixed for the whole trace), so it never changes live.
fn filter_note(refused: &[String]) -> Option<String> {
    let keys: Vec<&str> = refused
        .iter()
        .map(String::as_str)
        .filter(|k| k.ends_with(" filter"))
        .collect();
    (!keys.is_empty()).then(|| {
        format!(
            "{} changed, but the capture filter cannot change while the agent runs (it was \
             compiled into the kernel program at start): the running filter stays; restart \
             the agent to apply the new one",
            keys.join(", ")
        )
    })
}

/// The running configuration and the handles a reload changes.
pub struct Reloader {
    path: Option<PathBuf>,
    current: Config,
    alerts: SharedAlerts,
    conn_long: Option<IntervalsHandle>,
    contents: Option<SettingsHandle>,
    running: Running,
}

impl Reloader {
    pub fn new(
        path: Option<PathBuf>,
        current: Config,
        alerts: SharedAlerts,
        conn_long: Option<IntervalsHandle>,
        contents: Option<SettingsHandle>,
        running: Running,
    ) -> Self {
        Self {
            path,
            current,
            alerts,
            conn_long,
            contents,
            running,
        }
    }

    /// SIGHUP: reads the file again and applies what it can; never fails.
    pub fn reload(&mut self, agent: &mut Agent) {
        let Some(path) = self.path.clone() else {
            log::warn!("SIGHUP: no --config file to reload");
            return;
        };
        let new = match Config::load(Some(&path)) {
            Ok(c) => c,
            Err(e) => {
                log::error!("SIGHUP: {e}; keeping the running configuration");
                return;
            }
        };
        let d = decide(&self.current, &new, self.running);
        if let Some(note) = filter_note(&d.refused) {
            log::warn!("SIGHUP: {note}");
        }
        for note in &d.notes {
            log::warn!("SIGHUP: {note}");
        }
        if !d.refused.is_empty() {
            log::warn!(
                "SIGHUP: {} changed in {}: restart the agent to apply (running values kept)",
                d.refused.join(", "),
                path.display()
            );
        }
        let mut applied = Vec::new();
        for change in d.apply {
            let name = change.name();
            match self.apply(agent, change, &new) {
                Ok(()) => applied.push(name),
                Err(e) => log::error!("SIGHUP: {name}: {e:#}; its running value stays"),
            }
        }
        eprintln!(
            "conntrack-agent: reloaded {}: {}",
            path.display(),
            if applied.is_empty() {
                "nothing to apply".to_string()
            } else {
                format!("applied {}", applied.join(", "))
            }
        );
    }

    fn apply(&mut self, agent: &mut Agent, change: Change, new: &Config) -> anyhow::Result<()> {
        match change {
            Change::Inactivity(s) => {
                agent.set_timeouts(s.timeouts());
                self.current.inactivity = s;
            }
            Change::AlertRules(rules) => {
                let mut guard = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(a) = guard.as_mut() {
                    a.replace_rules(rules.clone());
                }
                self.current.alerts.rules = rules;
            }
            Change::ConnLongIntervals(iv) => {
                if let Some(h) = &self.conn_long {
                    *h.borrow_mut() = iv.clone().into();
                }
                self.current.conn_long.intervals = iv;
            }
            Change::ContentsRules(rules) => {
                // Present whenever the file had rules at start (`decide` checks that).
                if let Some(h) = &self.contents {
                    h.borrow_mut().rules = rules.clone();
                }
                self.current.contents.rules = rules;
            }
            Change::TunnelMaxDepth(depth) => {
                agent.set_tunnel_depth(depth)?;
                // The running options now have the file's depth (the other options keep
                // theirs: they were refused).
                let opts = &mut self.current.options.run;
                opts.retain(|o| o.id != TUNNEL_DEPTH_ID);
                opts.extend(
                    new.options
                        .run
                        .iter()
                        .filter(|o| o.id == TUNNEL_DEPTH_ID)
                        .cloned(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        Config::parse(text, "c.toml", &|_| Some("s".into())).unwrap()
    }

    /// An agent started with `c` and nothing on the command line.
    fn started(c: &Config) -> Running {
        Running {
            tunnel_depth_at_start: file_tunnel_depth(c).0,
            tunnel_depth_from_cli: false,
        }
    }

    fn decide_text(old: &str, new: &str) -> (Vec<&'static str>, Vec<String>) {
        let d = decide(&cfg(old), &cfg(new), started(&cfg(old)));
        (d.apply.iter().map(Change::name).collect(), d.refused)
    }

    const BASE: &str = r#"
[run]
iface = ["eth0"]
table-size = 1000

[inactivity]
udp = "1m"

[conn_long]
intervals = ["10m", "1h"]

[alerts.webhooks.ops]
url = "http://127.0.0.1:9000/"

[[alerts.rules]]
name = "big"
metric = "orig_bytes"
threshold = 1000
webhooks = ["ops"]
"#;

    #[test]
    fn the_same_file_changes_nothing() {
        let (apply, refused) = decide_text(BASE, BASE);
        assert!(
            apply.is_empty() && refused.is_empty(),
            "{apply:?} {refused:?}"
        );
        // Moving lines around is no change.
        let moved = format!("\n\n# comment\n{BASE}");
        let (apply, refused) = decide_text(BASE, &moved);
        assert!(
            apply.is_empty() && refused.is_empty(),
            "{apply:?} {refused:?}"
        );
    }

    #[test]
    fn live_settings_are_applied() {
        let new = BASE
            .replace("udp = \"1m\"", "udp = \"5s\"")
            .replace("threshold = 1000", "threshold = 5000")
            .replace("[\"10m\", \"1h\"]", "[\"1m\"]");
        let d = decide(&cfg(BASE), &cfg(&new), started(&cfg(BASE)));
        assert!(d.refused.is_empty(), "{:?}", d.refused);
        let names: Vec<_> = d.apply.iter().map(Change::name).collect();
        assert_eq!(
            names,
            ["[[alerts.rules]]", "[inactivity]", "[conn_long] intervals"]
        );
        for c in &d.apply {
            match c {
                Change::Inactivity(s) => assert_eq!(s.udp, Some(Duration::from_secs(5))),
                Change::AlertRules(r) => assert_eq!(r[0].threshold, 5000),
                Change::ConnLongIntervals(iv) => assert_eq!(iv, &[Duration::from_secs(60)]),
                Change::ContentsRules(_) | Change::TunnelMaxDepth(_) => panic!("{c:?}"),
            }
        }
    }

    #[test]
    fn restart_only_settings_are_refused_by_name() {
        let new = BASE
            .replace(
                "table-size = 1000",
                "table-size = 2000\nlog-dir = \"/tmp/l\"",
            )
            .replace("http://127.0.0.1:9000/", "http://127.0.0.1:9001/")
            .replace("threshold = 1000", "threshold = 5000")
            + "\n[removal_log]\n[metrics]\naddr = \"127.0.0.1:9750\"\n";
        let (apply, refused) = decide_text(BASE, &new);
        assert!(apply.is_empty(), "{apply:?}");
        assert_eq!(
            refused,
            [
                "[alerts.webhooks]",
                "[[alerts.rules]] (with the webhooks)",
                "[removal_log]",
                "[metrics]",
                "[run] log-dir",
                "[run] table-size"
            ]
        );
    }

    #[test]
    fn a_changed_capture_filter_is_refused_with_its_own_word() {
        let old = format!("{BASE}\n[agent]\nfilter = \"tcp\"\n");
        let new = format!("{BASE}\n[agent]\nfilter = \"udp\"\n");
        let (apply, refused) = decide_text(&old, &new);
        assert!(apply.is_empty(), "{apply:?}");
        assert_eq!(refused, ["[agent] filter"]);
        let note = filter_note(&refused).unwrap();
        assert!(
            note.contains("cannot change while the agent runs"),
            "{note}"
        );
        assert!(note.starts_with("[agent] filter changed"), "{note}");
        assert_eq!(filter_note(&["[run] table-size".to_string()]), None);
    }

    #[test]
    fn switching_capabilities_on_or_off_needs_a_restart() {
        let no_rules = "[inactivity]\nudp = \"1m\"\n";
        let with_rule = "[inactivity]\nudp = \"1m\"\n[[alerts.rules]]\nname = \"x\"\nmetric = \"orig_bytes\"\nthreshold = 5\n";
        let (apply, refused) = decide_text(no_rules, with_rule);
        assert!(apply.is_empty());
        assert_eq!(
            refused,
            ["[[alerts.rules]] (the agent started without rules)"]
        );
        let (_, refused) = decide_text(no_rules, "[conn_long]\n[inactivity]\nudp = \"1m\"\n");
        assert_eq!(refused, ["[conn_long] (on/off)"]);
        let (_, refused) = decide_text(
            no_rules,
            "[[contents.rules]]\nmatch = { ports = [21] }\n[inactivity]\nudp = \"1m\"\n",
        );
        assert_eq!(
            refused,
            ["[[contents.rules]] (extraction was off at start)"]
        );
        // Removing every rule is a change the running agent can make.
        let (apply, refused) = decide_text(with_rule, no_rules);
        assert_eq!((apply, refused), (vec!["[[alerts.rules]]"], vec![]));
    }

    /// BASE with `[run] tunnel-max-depth = depth` (None: the key left out).
    fn with_depth(depth: Option<&str>) -> String {
        match depth {
            Some(d) => BASE.replace(
                "table-size = 1000",
                &format!("table-size = 1000\ntunnel-max-depth = {d}"),
            ),
            None => BASE.to_string(),
        }
    }

    /// Started with `old` (and nothing on the command line), reloading `new`.
    fn depth_change(old: &str, new: &str) -> Decision {
        decide(&cfg(old), &cfg(new), started(&cfg(old)))
    }

    #[test]
    fn a_changed_tunnel_depth_is_applied_live() {
        // From the default (no key) to 2, from 2 to 0 (off), and in [agent] with the other
        // spelling of the key.
        for (old, new, want) in [
            (with_depth(None), with_depth(Some("2")), 2),
            (with_depth(Some("2")), with_depth(Some("0")), 0),
            (
                format!("{BASE}\n[agent]\ntunnel-max-depth = 3\n"),
                format!("{BASE}\n[agent]\ntunnel_max_depth = 8\n"),
                8,
            ),
        ] {
            let d = depth_change(&old, &new);
            assert!(d.refused.is_empty() && d.notes.is_empty(), "{d:?}");
            match &d.apply[..] {
                [Change::TunnelMaxDepth(n)] => assert_eq!(*n, want, "{new}"),
                other => panic!("{other:?}"),
            }
        }
        // The default written out, or the key moved to [agent]: the depth is the same.
        for same in [
            with_depth(Some("4")),
            format!("{BASE}\n[agent]\ntunnel-max-depth = 4\n"),
        ] {
            let d = depth_change(&with_depth(None), &same);
            assert!(d.apply.is_empty() && d.refused.is_empty(), "{d:?}");
        }
        // With a restart-only change beside it, each is treated on its own.
        let new = with_depth(Some("1")).replace("table-size = 1000", "table-size = 7");
        let d = depth_change(&with_depth(None), &new);
        assert_eq!(d.refused, ["[run] table-size"]);
        assert!(matches!(d.apply[..], [Change::TunnelMaxDepth(1)]), "{d:?}");
        // Turned off by an earlier reload, on again: tunnel.log is open since the start.
        let at_start = started(&cfg(&with_depth(None)));
        let d = decide(
            &cfg(&with_depth(Some("0"))),
            &cfg(&with_depth(Some("3"))),
            at_start,
        );
        assert!(matches!(d.apply[..], [Change::TunnelMaxDepth(3)]), "{d:?}");
    }

    #[test]
    fn a_tunnel_depth_that_cannot_apply_says_why() {
        // Off at start: tunnel.log was never opened, so turning it on needs a restart.
        let d = depth_change(&with_depth(Some("0")), &with_depth(Some("2")));
        assert!(d.apply.is_empty(), "{d:?}");
        assert_eq!(
            d.refused,
            ["[run] tunnel-max-depth (decapsulation was off at start)"]
        );
        // Past what the kernel program opens: the note names the limit, nothing changes.
        let d = depth_change(&with_depth(None), &with_depth(Some("9")));
        assert!(d.apply.is_empty() && d.refused.is_empty(), "{d:?}");
        assert!(d.notes[0].contains("at most 8"), "{:?}", d.notes);
        // Given on the command line: it wins over the file, as at start.
        let cli = Running {
            tunnel_depth_at_start: 4,
            tunnel_depth_from_cli: true,
        };
        let d = decide(&cfg(&with_depth(None)), &cfg(&with_depth(Some("2"))), cli);
        assert!(d.apply.is_empty() && d.refused.is_empty(), "{d:?}");
        assert!(d.notes[0].contains("command line"), "{:?}", d.notes);
    }

    #[test]
    fn contents_rules_change_live_and_the_rest_of_contents_not() {
        let old = "[[contents.rules]]\nmatch = { ports = [21] }\n";
        let new = "[contents]\ndisk_quota = 5\n[[contents.rules]]\nmatch = { ports = [21, 23] }\n";
        let d = decide(&cfg(old), &cfg(new), started(&cfg(old)));
        assert_eq!(d.refused, ["[contents] disk_quota"]);
        match &d.apply[..] {
            [Change::ContentsRules(r)] => assert_eq!(r.len(), 1),
            other => panic!("{other:?}"),
        }
    }
}
