//! `cargo xtask systemd --check`: the systemd unit in deploy/, checked and executed.
//!
//! This machine's init is not systemd, so the unit cannot be started by `systemctl`. Instead:
//! 1. `systemd-analyze verify` reads the unit (with ExecStart pointing at the built binary):
//!    any message (unknown key, bad value) fails the check;
//! 2. the check runs the unit as systemd would: its ExecStartPre lines (`+`: as root, else as
//!    the service user), then ExecStart as the unit's `User=` (uid 61184 here) with exactly
//!    the unit's AmbientCapabilities as ambient and bounding set and no-new-privileges; its
//!    Environment expanded; LogsDirectory, the config path and /sys/fs/bpf mapped to the
//!    check's own directories (a private BPF filesystem for the pins). The interface is the
//!    check's veth (`CONNTRACK_IFACE`, as an operator sets it). It sends the ExecReload signal
//!    (the agent must keep running), known traffic, then does what `systemctl restart` does
//!    (KillSignal, which hands over through the pins, and the start sequence again), stops for
//!    good with SIGINT as the unit's header says, and reads every conn.log file: each
//!    connection must be there exactly once, with the counts sent.
//!
//! Sandboxing directives (ProtectSystem, PrivateTmp, ...) are not emulated: they only take
//! things away that the agent does not use; the capability set is what decides whether it runs.

use crate::agent::{self, Profile};
use crate::deploy_check::{Bpffs, HOST_IF, TestLink, conn_logs, verify_conn_logs};
use crate::util::{self, step};
use anyhow::{Context, Result, bail, ensure};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const UNIT: &str = "deploy/conntrack-agent.service";
/// The uid/gid the check runs the unit's `User=` as (a system user's uid would do; this one is
/// unlikely to own anything here).
const SERVICE_UID: u32 = 61_184;

pub fn systemd(args: &[String]) -> Result<()> {
    let mut check = false;
    for a in args {
        match a.as_str() {
            "--check" => check = true,
            other => bail!("systemd: unknown option `{other}` (expected --check)"),
        }
    }
    if !check {
        println!(
            "The unit is {UNIT}; install it as its header says. `cargo xtask systemd --check` \
             verifies and executes it here."
        );
        return Ok(());
    }
    agent::build(Profile::Release)?;
    let text = std::fs::read_to_string(util::root().join(UNIT))
        .with_context(|| format!("cannot read {UNIT}"))?;
    let unit = Unit::parse(&text)?;
    verify(&text)?;
    execute(&unit)
}

/// The `[Service]` settings the check needs: each key's values in file order.
#[derive(Debug, Default)]
struct Unit {
    service: HashMap<String, Vec<String>>,
}

impl Unit {
    fn parse(text: &str) -> Result<Self> {
        let mut unit = Unit::default();
        let mut section = String::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .with_context(|| format!("{UNIT}:{}: not KEY=VALUE: {line}", n + 1))?;
            if section == "Service" {
                unit.service
                    .entry(k.trim().to_string())
                    .or_default()
                    .push(v.trim().to_string());
            }
        }
        Ok(unit)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.service
            .get(key)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// `Environment=A=1 B=2` lines as a map (no quoting in our unit).
    fn environment(&self) -> HashMap<String, String> {
        self.service
            .get("Environment")
            .into_iter()
            .flatten()
            .flat_map(|l| l.split_whitespace())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `CAP_BPF CAP_NET_ADMIN` -> `+bpf,+net_admin` (setpriv's spelling).
    fn ambient_caps(&self) -> Result<String> {
        let caps = self
            .get("AmbientCapabilities")
            .context("the unit sets no AmbientCapabilities")?;
        Ok(caps
            .split_whitespace()
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
            .collect::<Vec<_>>()
            .join(","))
    }
}

/// `$VAR` and `${VAR}` from `env`, as systemd expands ExecStart; then split on whitespace.
fn expand(cmdline: &str, env: &HashMap<String, String>) -> Vec<String> {
    cmdline
        .split_whitespace()
        .map(|word| {
            let mut w = word.to_string();
            for (k, v) in env {
                w = w
                    .replace(&format!("${{{k}}}"), v)
                    .replace(&format!("${k}"), v);
            }
            w
        })
        .collect()
}

fn verify(text: &str) -> Result<()> {
    step(&format!("systemd-analyze verify {UNIT}"));
    let dir = util::root().join("target/systemd-check");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    // verify checks that ExecStart exists: point it at the binary just built.
    let copy = dir.join("conntrack-agent.service");
    let bin = agent::binary(Profile::Release);
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/conntrack-agent", &bin.to_string_lossy()),
    )?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .context("cannot run systemd-analyze (Debian package systemd)")?;
    let messages =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && messages.trim().is_empty(),
        "systemd-analyze verify found problems in {UNIT}:\n{messages}"
    );
    Ok(())
}

/// Kills the agent if the check fails before it stops it.
struct Agent(Option<Child>);

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How the check maps the unit's host paths and user onto its own.
struct Mapping {
    pairs: Vec<(String, String)>,
    user: String,
    uid: String,
}

impl Mapping {
    /// One command line of the unit, expanded and mapped.
    fn argv(&self, cmdline: &str, env: &HashMap<String, String>) -> Vec<String> {
        expand(cmdline, env)
            .into_iter()
            .map(|a| {
                if a == self.user {
                    return self.uid.clone();
                }
                for (from, to) in &self.pairs {
                    if let Some(rest) = a.strip_prefix(from.as_str()) {
                        return format!("{to}{rest}");
                    }
                }
                a
            })
            .collect()
    }
}

/// Runs the unit's start sequence: ExecStartPre lines (`+`: with full privileges, else as the
/// service user), then ExecStart as the service user with the unit's capabilities.
fn start(
    unit: &Unit,
    map: &Mapping,
    env: &HashMap<String, String>,
    stderr: &Path,
) -> Result<Agent> {
    for pre in unit.service.get("ExecStartPre").into_iter().flatten() {
        let (privileged, line) = match pre.strip_prefix('+') {
            Some(l) => (true, l),
            None => (false, pre.as_str()),
        };
        let argv = map.argv(line, env);
        let mut cmd = if privileged {
            Command::new(&argv[0])
        } else {
            let mut c = as_service_user(unit, &map.uid, false)?;
            c.arg(&argv[0]);
            c
        };
        util::output(cmd.args(&argv[1..])).context("ExecStartPre failed")?;
    }
    let exec = unit.get("ExecStart").context("the unit has no ExecStart")?;
    let argv = map.argv(exec, env);
    let child = as_service_user(unit, &map.uid, true)?
        .args(&argv)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr)?)
        .spawn()
        .context("cannot start setpriv (util-linux)")?;
    let mut agent = Agent(Some(child));
    wait_for(stderr, "tracking on", &mut agent)?;
    Ok(agent)
}

/// setpriv as the service user; with the unit's capabilities when `caps`.
fn as_service_user(unit: &Unit, uid: &str, caps: bool) -> Result<Command> {
    let set = if caps {
        format!("-all,{}", unit.ambient_caps()?)
    } else {
        "-all".to_string()
    };
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"));
    if unit.get("NoNewPrivileges") == Some("yes") {
        cmd.arg("--no-new-privs");
    }
    Ok(cmd)
}

/// Sends signal `name` and waits for a clean exit.
fn stop(agent: &mut Agent, name: &str, stderr: &Path) -> Result<()> {
    let child = agent.0.as_ref().context("agent gone")?;
    signal(child.id(), name.trim_start_matches("SIG"))?;
    let status = agent.0.take().context("agent gone")?.wait()?;
    let text = std::fs::read_to_string(stderr).unwrap_or_default();
    ensure!(
        status.success(),
        "the agent exited with {status} after {name}:\n{text}"
    );
    Ok(())
}

fn execute(unit: &Unit) -> Result<()> {
    step("running the unit as systemd would: its user, capabilities, ExecStartPre, ExecStart");
    let dir = util::root().join("target/systemd-check");
    let logs = dir.join("logs");
    let config = dir.join("conntrack.toml");
    std::fs::create_dir_all(&logs)?;
    std::fs::copy(util::root().join("deploy/conntrack.toml"), &config)
        .context("cannot copy deploy/conntrack.toml")?;
    chown(&logs, SERVICE_UID)?;
    // The agent (uid SERVICE_UID) must reach the log directory through target/.
    for d in [dir.as_path(), dir.parent().unwrap_or(&dir)] {
        make_traversable(d)?;
    }
    let bpffs = Bpffs::mount(&dir.join("bpffs"))?;
    let logs_dir = unit
        .get("LogsDirectory")
        .context("the unit sets no LogsDirectory")?;
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let map = Mapping {
        pairs: vec![
            (
                "/usr/local/bin/conntrack-agent".into(),
                path(&agent::binary(Profile::Release)),
            ),
            (format!("/var/log/{logs_dir}"), path(&logs)),
            ("/etc/conntrack/conntrack.toml".into(), path(&config)),
            ("/sys/fs/bpf".into(), path(bpffs.path())),
        ],
        user: unit
            .get("User")
            .context("the unit sets no User")?
            .to_string(),
        uid: SERVICE_UID.to_string(),
    };
    let mut env = unit.environment();
    env.insert("CONNTRACK_IFACE".into(), HOST_IF.into());
    let kill = unit.get("KillSignal").unwrap_or("SIGTERM").to_string();
    let mut link = TestLink::create()?;

    let first_err = dir.join("agent-1.stderr");
    let mut agent = start(unit, &map, &env, &first_err)?;
    if unit.get("ExecReload").is_some_and(|r| r.contains("-HUP")) {
        signal(agent.0.as_ref().context("agent gone")?.id(), "HUP")?;
        std::thread::sleep(Duration::from_millis(500));
        ensure_running(
            &mut agent,
            &first_err,
            "after the ExecReload signal (SIGHUP)",
        )?;
    }
    link.exercise()?;
    // `systemctl restart`: the KillSignal, then the start sequence again.
    stop(&mut agent, &kill, &first_err)?;
    let second_err = dir.join("agent-2.stderr");
    let mut agent = start(unit, &map, &env, &second_err)?;
    // Stop for good, as the unit's header says: every connection is then logged, once.
    stop(&mut agent, "SIGINT", &second_err)?;
    let texts = conn_logs(&logs)?;
    verify_conn_logs(&texts)
        .with_context(|| format!("conn.log files in {} across a restart", logs.display()))?;
    drop(link);
    drop(bpffs);
    step("systemd check passed: the unit's user, capabilities and commands track across a restart");
    Ok(())
}

fn chown(path: &Path, uid: u32) -> Result<()> {
    util::output(Command::new("chown").arg(format!("{uid}:{uid}")).arg(path)).map(|_| ())
}

/// Adds o+x so that another user can pass through `dir` (not read it).
fn make_traversable(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(dir)?;
    let mut perms = meta.permissions();
    perms.set_mode(perms.mode() | 0o001);
    std::fs::set_permissions(dir, perms)
        .with_context(|| format!("cannot chmod o+x {}", dir.display()))
}

fn signal(pid: u32, name: &str) -> Result<()> {
    util::output(
        Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string()),
    )
    .map(|_| ())
}

fn ensure_running(agent: &mut Agent, stderr: &Path, when: &str) -> Result<()> {
    let child = agent.0.as_mut().context("agent gone")?;
    if let Some(status) = child.try_wait()? {
        let text = std::fs::read_to_string(stderr).unwrap_or_default();
        bail!("the agent exited ({status}) {when}:\n{text}");
    }
    Ok(())
}

fn wait_for(stderr: &Path, needle: &str, agent: &mut Agent) -> Result<()> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(stderr).unwrap_or_default();
        if text.contains(needle) {
            return Ok(());
        }
        ensure_running(agent, stderr, "at start")?;
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the agent did not start tracking within 30 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_read_as_systemd_would() {
        let text = std::fs::read_to_string(util::root().join(UNIT)).unwrap();
        let unit = Unit::parse(&text).unwrap();
        assert_eq!(unit.ambient_caps().unwrap(), "+bpf,+net_admin,+perfmon");
        assert_eq!(unit.get("KillSignal"), Some("SIGTERM"));
        let mut env = unit.environment();
        env.insert("CONNTRACK_IFACE".into(), "veth7".into());
        let argv = expand(unit.get("ExecStart").unwrap(), &env);
        assert_eq!(argv[0], "/usr/local/bin/conntrack-agent");
        let i = argv.iter().position(|a| a == "--iface").unwrap();
        assert_eq!(argv[i + 1], "veth7");
    }

    #[test]
    fn expansion_handles_both_forms() {
        let env = HashMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand("run $A ${A}/y", &env), ["run", "x", "x/y"]);
    }
}
