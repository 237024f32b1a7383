//! Command-line options in the config file: `[agent]` (options both `run` and `read` take),
//! `[run]` and `[read]`, whose keys are the long option names (`log-dir` or `log_dir`).
//!
//! Nothing here lists the options: the keys are looked up in clap's own definition of the
//! command (`Command::get_arguments`) and each value is checked by that option's own value
//! parser, so an option added to `RunArgs` is a config key with no further code. A value
//! becomes what the command line would have said (`--log-dir=/var/log/conntrack`; a TOML
//! array is the option repeated; `true` for a flag is the flag itself), and the merged
//! command line is parsed by clap again (see `cli::parse`). The command line wins over the
//! file (and an environment variable clap reads, e.g. CONNTRACK_ENGINE, also wins), the file
//! over the defaults; `[run]`/`[read]` win over `[agent]`.

use crate::util::config_values::SpanError;
use clap::{ArgAction, CommandFactory};
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;

/// A table as written, keys and values with their positions.
pub type RawTable = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

/// One option from the file, as command-line arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOption {
    /// `[agent]`, `[run]` or `[read]`, and the key as written: how errors and reloads name it.
    pub table: &'static str,
    pub key: String,
    /// clap's id of the option (to ask whether the command line set it).
    pub id: String,
    /// `--long=value`, ... (empty for a flag set to false).
    pub args: Vec<String>,
    pub span: Range<usize>,
}

impl FileOption {
    /// `[run] log-dir`.
    pub fn name(&self) -> String {
        format!("[{}] {}", self.table, self.key)
    }
}

/// The options the file gives each command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileOptions {
    pub run: Vec<FileOption>,
    pub read: Vec<FileOption>,
}

impl FileOptions {
    /// For the `run` or `read` subcommand.
    pub fn for_command(&self, name: &str) -> &[FileOption] {
        match name {
            "run" => &self.run,
            "read" => &self.read,
            _ => &[],
        }
    }

    /// Checks the three tables against the commands' options.
    pub fn compile(
        agent: Option<RawTable>,
        run: Option<RawTable>,
        read: Option<RawTable>,
    ) -> Result<Self, SpanError> {
        let cli = crate::cli::Cli::command();
        let sub = |name: &str| {
            cli.find_subcommand(name)
                .expect("run and read are subcommands")
                .clone()
        };
        let (run_cmd, read_cmd) = (sub("run"), sub("read"));
        let mut out = Self::default();
        for (key, value) in agent.unwrap_or_default() {
            let in_run = find_arg(&run_cmd, key.get_ref());
            let in_read = find_arg(&read_cmd, key.get_ref());
            match (in_run, in_read) {
                (Some(a), Some(b)) => {
                    once(&out.run, &key, a)?;
                    out.run.push(option("agent", &key, &value, a)?);
                    out.read.push(option("agent", &key, &value, b)?);
                }
                (Some(_), None) | (None, Some(_)) => {
                    let only = if in_run.is_some() { "run" } else { "read" };
                    return Err((
                        key.span(),
                        format!(
                            "`{}` is an option of `{only}` only: put it in [{only}]",
                            key.get_ref()
                        ),
                    ));
                }
                (None, None) => return Err(unknown(&key, "agent", &run_cmd, Some(&read_cmd))),
            }
        }
        for (table, cmd, raw, list) in [
            ("run", &run_cmd, run, &mut out.run),
            ("read", &read_cmd, read, &mut out.read),
        ] {
            let mut own = Vec::new();
            for (key, value) in raw.unwrap_or_default() {
                let arg =
                    find_arg(cmd, key.get_ref()).ok_or_else(|| unknown(&key, table, cmd, None))?;
                once(&own, &key, arg)?;
                own.push(option(table, &key, &value, arg)?);
            }
            // The command's own table wins over [agent].
            list.retain(|o| !own.iter().any(|x| x.id == o.id));
            list.extend(own);
        }
        Ok(out)
    }
}

/// `log-dir` and `log_dir` in one table: refused rather than one silently winning.
fn once(seen: &[FileOption], key: &Spanned<String>, arg: &clap::Arg) -> Result<(), SpanError> {
    match seen.iter().find(|o| o.id == arg.get_id().as_str()) {
        Some(first) => Err((
            key.span(),
            format!(
                "`{}` and `{}` are the same option: give it once",
                first.key,
                key.get_ref()
            ),
        )),
        None => Ok(()),
    }
}

/// Options the file may not set: they are about the file or the program itself.
const NOT_IN_FILE: [&str; 3] = ["config", "help", "version"];

fn find_arg<'a>(cmd: &'a clap::Command, key: &str) -> Option<&'a clap::Arg> {
    let long = key.replace('_', "-");
    if NOT_IN_FILE.contains(&long.as_str()) {
        return None;
    }
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(long.as_str()))
}

fn settable(cmd: &clap::Command) -> Vec<String> {
    cmd.get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !NOT_IN_FILE.contains(l))
        .map(str::to_string)
        .collect()
}

fn unknown(
    key: &Spanned<String>,
    table: &str,
    cmd: &clap::Command,
    also: Option<&clap::Command>,
) -> SpanError {
    let k = key.get_ref();
    if NOT_IN_FILE.contains(&k.replace('_', "-").as_str()) {
        return (
            key.span(),
            format!("`{k}` cannot be set in the config file"),
        );
    }
    let mut names = settable(cmd);
    if let Some(other) = also {
        let theirs = settable(other);
        names.retain(|n| theirs.contains(n));
    }
    (
        key.span(),
        format!(
            "unknown option `{k}` in [{table}], expected one of {}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// The command-line arguments a value stands for, checked by the option's value parser.
fn option(
    table: &'static str,
    key: &Spanned<String>,
    value: &Spanned<toml::Value>,
    arg: &clap::Arg,
) -> Result<FileOption, SpanError> {
    let long = arg.get_long().expect("found by its long name");
    let bad = |msg: String| (value.span(), format!("[{table}] {}: {msg}", key.get_ref()));
    let v = value.get_ref();
    let args: Vec<String> = match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => {
            let Some(on) = v.as_bool() else {
                return Err(bad("a flag: true or false".into()));
            };
            let set = matches!(arg.get_action(), ArgAction::SetTrue) == on;
            if set {
                vec![format!("--{long}")]
            } else {
                Vec::new()
            }
        }
        ArgAction::Count => {
            let Some(n) = v.as_integer().filter(|n| (0..=16).contains(n)) else {
                return Err(bad("a count (0-16)".into()));
            };
            (0..n).map(|_| format!("--{long}")).collect()
        }
        ArgAction::Append => {
            let items: Vec<&toml::Value> = match v {
                toml::Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            let mut out = Vec::new();
            for item in items {
                let s = scalar(item).ok_or_else(|| bad("a list of values".into()))?;
                out.push(format!("--{long}={s}"));
            }
            out
        }
        ArgAction::Set => {
            let s = scalar(v).ok_or_else(|| bad("takes one value (not a list)".into()))?;
            vec![format!("--{long}={s}")]
        }
        _ => return Err(bad("cannot be set in the config file".into())),
    };
    check(arg, &args).map_err(bad)?;
    Ok(FileOption {
        table,
        key: key.get_ref().clone(),
        id: arg.get_id().as_str().to_string(),
        args,
        span: key.span().start..value.span().end,
    })
}

/// Parses `args` with this option alone (its value parser, value count and delimiter).
fn check(arg: &clap::Arg, args: &[String]) -> Result<(), String> {
    let mut probe = clap::Arg::new(arg.get_id().clone())
        .long(arg.get_long().expect("long").to_string())
        .action(arg.get_action().clone())
        .value_parser(arg.get_value_parser().clone());
    if let Some(n) = arg.get_num_args() {
        probe = probe.num_args(n);
    }
    if let Some(d) = arg.get_value_delimiter() {
        probe = probe.value_delimiter(d);
    }
    if let Some(names) = arg.get_value_names() {
        probe = probe.value_names(names.iter().cloned());
    }
    clap::Command::new("conntrack-agent")
        .no_binary_name(true)
        .arg(probe)
        .try_get_matches_from(args)
        .map(drop)
        .map_err(|e| clap_message(&e))
}

/// clap's message on one line, without its `error: ` prefix and the usage lines.
pub fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let joined = lines.join(" ");
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string()
}

/// The file's arguments the command line did not set itself (`explicit`: clap's value source
/// is the command line or the environment).
pub fn args_to_add(options: &[FileOption], explicit: &dyn Fn(&str) -> bool) -> Vec<String> {
    options
        .iter()
        .filter(|o| !explicit(&o.id))
        .flat_map(|o| o.args.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, Engine, parse};
    use crate::logs::conn_log::LogFormat;
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};

    fn config(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("c.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn cli(args: &[&str], cfg: &Path) -> anyhow::Result<Cli> {
        let mut v: Vec<OsString> = args.iter().map(OsString::from).collect();
        v.push("--config".into());
        v.push(cfg.into());
        parse(v).map(|(cli, _)| cli)
    }

    fn run_args(c: Cli) -> crate::cli::RunArgs {
        match c.command {
            Command::Run(r) => r,
            _ => panic!("not run"),
        }
    }

    fn read_args(c: Cli) -> crate::cli::ReadArgs {
        match c.command {
            Command::Read(r) => r,
            _ => panic!("not read"),
        }
    }

    const FILE: &str = r#"
[agent]
log-dir = "/var/log/conntrack"
table_size = 1000
community-id = true
mac-logging = true
local-nets = ["10.0.0.0/8", "192.168.0.0/16"]

[run]
iface = ["eth0", "eth1"]
metrics-addr = "127.0.0.1:9750"
table-size = 2000
rotate-interval = "1h"

[read]
engine = "host"
ignore-checksums = true
log-format = "json"
vlan_logging = true
"#;

    #[test]
    fn the_file_fills_in_what_the_command_line_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), FILE);
        let r = run_args(cli(&["conntrack-agent", "run"], &cfg).unwrap());
        assert_eq!(r.iface, ["eth0", "eth1"], "a required option from the file");
        assert_eq!(r.common.log_dir, PathBuf::from("/var/log/conntrack"));
        assert_eq!(r.common.table_size, 2000, "[run] wins over [agent]");
        assert!(r.common.community_id);
        assert!(r.common.mac_logging);
        assert!(!r.common.vlan_logging, "[read] only");
        assert_eq!(r.common.local_nets, ["10.0.0.0/8", "192.168.0.0/16"]);
        assert_eq!(r.metrics_addr, Some("127.0.0.1:9750".parse().unwrap()));
        assert_eq!(
            r.common.logs.rotate_interval,
            Some(std::time::Duration::from_secs(3600))
        );
        assert_eq!(r.common.log_format, LogFormat::Tsv, "default: in neither");

        let r = read_args(cli(&["conntrack-agent", "read", "x.pcap"], &cfg).unwrap());
        assert_eq!(r.common.table_size, 1000, "[agent] for read");
        assert_eq!(r.engine, Some(Engine::Host));
        assert!(r.ignore_checksums);
        assert_eq!(r.common.log_format, LogFormat::Json);
        assert!(r.common.mac_logging && r.common.vlan_logging);
        assert_eq!(r.common.logs.rotate_interval, None, "[run] only");
    }

    #[test]
    fn the_command_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), FILE);
        let r = run_args(
            cli(
                &[
                    "conntrack-agent",
                    "run",
                    "-i",
                    "veth9",
                    "--table-size",
                    "7",
                    "--log-dir",
                    "/tmp/x",
                    "--local-nets",
                    "172.16.0.0/12",
                ],
                &cfg,
            )
            .unwrap(),
        );
        assert_eq!(r.iface, ["veth9"], "a list is replaced, not extended");
        assert_eq!(r.common.table_size, 7);
        assert_eq!(r.common.log_dir, PathBuf::from("/tmp/x"));
        assert_eq!(r.common.local_nets, ["172.16.0.0/12"]);
        assert!(r.common.community_id, "still from the file");
        // A flag given on the command line and false in the file stays set.
        let cfg = config(dir.path(), "[read]\nextract-all = false\n");
        let r = read_args(cli(&["conntrack-agent", "read", "t", "--extract-all"], &cfg).unwrap());
        assert!(r.common.extract_all);
    }

    #[test]
    fn every_option_of_run_and_read_is_a_key() {
        let cmd = Cli::command();
        for name in ["run", "read"] {
            let sub = cmd.find_subcommand(name).unwrap();
            let mut n = 0;
            for a in sub.get_arguments() {
                let Some(long) = a.get_long() else { continue };
                if NOT_IN_FILE.contains(&long) {
                    continue;
                }
                assert!(find_arg(sub, long).is_some(), "{name} --{long}");
                assert!(find_arg(sub, &long.replace('-', "_")).is_some());
                n += 1;
            }
            assert!(n >= 15, "{name}: {n} options");
        }
    }

    #[test]
    fn bad_keys_and_values_are_named_with_their_position() {
        let err = |text: &str| {
            crate::config::Config::parse(text, "c.toml", &|_| None).expect_err("refused")
        };
        let e = err("[run]\niface = \"eth0\"\ntable-sise = 5\n");
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        assert!(
            e.message.contains("unknown option `table-sise` in [run]"),
            "{e}"
        );
        assert!(
            e.message.contains("`table-size`"),
            "the valid keys are listed: {e}"
        );
        let e = err("[read]\ntable-size = 0\n");
        assert_eq!((e.line, e.column), (2, 14), "{e}");
        assert!(
            e.message
                .starts_with("[read] table-size: invalid value '0'"),
            "{e}"
        );
        let e = err("[read]\nlog-format = \"xml\"\n");
        assert!(e.message.contains("invalid value 'xml'"), "{e}");
        assert!(e.message.contains("tsv, json"), "the choices: {e}");
        let e = err("[agent]\nmetrics-addr = \"127.0.0.1:1\"\n");
        assert!(e.message.contains("put it in [run]"), "{e}");
        let e = err("[agent]\nconfig = \"other.toml\"\n");
        assert!(
            e.message.contains("cannot be set in the config file"),
            "{e}"
        );
        let e = err("[run]\ncommunity-id = \"yes\"\n");
        assert!(e.message.contains("a flag: true or false"), "{e}");
        let e = err("[run]\ntable-size = [1, 2]\n");
        assert!(e.message.contains("one value"), "{e}");
        let e = err("[run]\nrotate-size = \"big\"\n");
        assert!(e.message.contains("bad size"), "{e}");
        let e = err("[read]\nlog-dir = \"a\"\nlog_dir = \"b\"\n");
        assert!(e.message.contains("are the same option"), "{e}");
        let e = err("[agent]\nlog_dir = \"a\"\nlog-dir = \"b\"\n");
        assert!(e.message.contains("are the same option"), "{e}");
    }

    #[test]
    fn options_that_need_each_other_are_checked_together() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "[read]\nipfix-transport = \"tcp\"\n");
        let e = cli(&["conntrack-agent", "read", "t"], &cfg).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("c.toml") && e.contains("--ipfix <HOST:PORT>"),
            "{e}"
        );
        // Together with the command line, it is whole.
        let r = read_args(
            cli(
                &["conntrack-agent", "read", "t", "--ipfix", "127.0.0.1:4739"],
                &cfg,
            )
            .unwrap(),
        );
        assert_eq!(
            r.common.ipfix.ipfix_transport,
            crate::export::ipfix::Transport::Tcp
        );
    }

    #[test]
    fn the_example_config_loads() {
        let text = include_str!("../../../conntrack.example.toml");
        let c = crate::config::Config::parse(text, "conntrack.example.toml", &|var| {
            (var == "CONNTRACK_WEBHOOK_SECRET").then(|| "change-me".to_string())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.conn_long.enabled && c.removal_log.enabled && c.contents.enabled());
        assert_eq!(c.alerts.rules.len(), 1);
        let dir = tempfile::tempdir().unwrap();
        // `cli::parse` reads the real environment: the secret is given inline instead.
        let text = text.replace(
            "secret_env = \"CONNTRACK_WEBHOOK_SECRET\"",
            "secret = \"change-me\"",
        );
        let cfg = config(dir.path(), &text);
        let r = run_args(cli(&["conntrack-agent", "run"], &cfg).unwrap());
        assert_eq!(r.iface, ["eth0"]);
        assert_eq!(r.common.log_dir, PathBuf::from("/var/log/conntrack"));
        assert!(r.common.community_id);
        assert_eq!(
            r.common.logs.rotate_interval,
            Some(std::time::Duration::from_secs(3600))
        );
        let r = read_args(cli(&["conntrack-agent", "read", "t.pcap"], &cfg).unwrap());
        assert_eq!(r.engine, Some(Engine::Host));
        assert_eq!(r.common.local_nets.len(), 2);
    }
}
