//! `cargo xtask build` and `cargo xtask run`: the agent binary (its build script builds the eBPF
//! program with nightly and bpf-linker from `.tools/bin`).

use crate::setup;
use crate::util::{self, step};
use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// Cargo profile of the agent build.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Release,
    Debug,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }
}

/// Splits `[--debug] [--] ARGS...` into the profile and the arguments for the agent.
pub fn parse_profile(args: &[String]) -> Result<(Profile, Vec<String>)> {
    let mut profile = Profile::Release;
    let mut rest = args;
    while let Some(first) = rest.first() {
        match first.as_str() {
            "--debug" => profile = Profile::Debug,
            "--release" => profile = Profile::Release,
            "--" => {
                rest = &rest[1..];
                break;
            }
            _ => break,
        }
        rest = &rest[1..];
    }
    Ok((profile, rest.to_vec()))
}

/// The agent binary a build with `profile` produces.
pub fn binary(profile: Profile) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"));
    target.join(profile.dir()).join("conntrack-agent")
}

pub fn build(profile: Profile) -> Result<()> {
    setup::setup()?;
    step(&format!("building conntrack-agent ({})", profile.dir()));
    let mut cmd = util::cargo();
    cmd.args(["build", "-p", "conntrack-agent"]);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    util::run(&mut cmd)?;
    step(&format!("built {}", binary(profile).display()));
    Ok(())
}

/// Builds, then replaces this process with `conntrack-agent run ...` so that Ctrl-C (SIGINT to
/// the foreground process group) reaches the agent alone and it can drain and log before exiting.
pub fn run(profile: Profile, extra: &[String]) -> Result<()> {
    build(profile)?;
    let mut args = vec!["run".to_string()];
    if !extra
        .iter()
        .any(|a| a == "--iface" || a.starts_with("--iface="))
    {
        let iface = default_route_iface()?;
        args.extend(["--iface".to_string(), iface]);
    }
    if !extra
        .iter()
        .any(|a| a == "--log-dir" || a.starts_with("--log-dir="))
    {
        args.extend(["--log-dir".to_string(), "./logs".to_string()]);
    }
    args.extend(extra.iter().cloned());
    let bin = binary(profile);
    step(&format!(
        "running {} {} (Ctrl-C to stop)",
        bin.display(),
        args.join(" ")
    ));
    let err = Command::new(&bin)
        .args(&args)
        .current_dir(util::root())
        .exec();
    Err(err).with_context(|| format!("cannot execute {}", bin.display()))
}

/// The interface of the IPv4 default route: `/proc/net/route`, else `ip route show default`.
pub fn default_route_iface() -> Result<String> {
    if let Ok(table) = std::fs::read_to_string("/proc/net/route")
        && let Some(iface) = parse_proc_net_route(&table)
    {
        return Ok(iface);
    }
    let out = util::stdout(Command::new("ip").args(["route", "show", "default"]))
        .context("no default route in /proc/net/route and `ip route` failed")?;
    match parse_ip_route(&out) {
        Some(iface) => Ok(iface),
        None => {
            bail!("no default route: pass the interface with `cargo xtask run -- --iface NAME`")
        }
    }
}

/// First route with destination and mask 0 (columns: Iface Destination Gateway Flags ... Mask).
fn parse_proc_net_route(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (iface, dest, mask) = (cols.first()?, cols.get(1)?, cols.get(7)?);
        (*dest == "00000000" && *mask == "00000000").then(|| iface.to_string())
    })
}

/// `default via 10.0.0.1 dev eth0 proto dhcp ...` -> `eth0`.
fn parse_ip_route(out: &str) -> Option<String> {
    out.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        words.by_ref().find(|w| *w == "dev")?;
        words.next().map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_route_default_is_found() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth1\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(parse_proc_net_route(table).as_deref(), Some("eth1"));
    }

    #[test]
    fn ip_route_default_is_found() {
        let out = "default via 192.168.1.1 dev wlan0 proto dhcp metric 600\n";
        assert_eq!(parse_ip_route(out).as_deref(), Some("wlan0"));
        assert_eq!(parse_ip_route(""), None);
    }

    #[test]
    fn profile_and_agent_args_are_split() {
        let args: Vec<String> = ["--debug", "--", "--iface", "lo"]
            .map(String::from)
            .to_vec();
        let (profile, rest) = parse_profile(&args).unwrap();
        assert!(profile == Profile::Debug);
        assert_eq!(rest, ["--iface", "lo"]);
    }
}
