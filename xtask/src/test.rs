//! `cargo xtask test`: everything CI checks, in order, stopping at the first failure (a short
//! fuzz included).

use crate::agent::{self, Profile};
use crate::util::{self, step};
use anyhow::{Context, Result, bail};
use std::process::Command;

/// Debian packages the tests use, with a command that shows each is present.
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("iputils-ping", "ping"),
    ("python3", "python3"),
    // A real IPFIX collector for the export test (tests/tests/ipfix_nfcapd.rs).
    ("nfdump", "nfcapd"),
    // The container image check (`cargo xtask container --check`); runc where crun cannot run.
    ("podman", "podman"),
    ("runc", "runc"),
    ("binutils", "strip"),
    // `read -f` is compared with `tcpdump -r -w` (tests/tests/capture_filter.rs).
    ("tcpdump", "tcpdump"),
];

pub fn test() -> Result<()> {
    install_missing_packages()?;
    agent::build(Profile::Release)?;
    step("cargo test --workspace");
    util::run(util::cargo().args(["test", "--workspace", "--release"]))?;
    step("cargo clippy --workspace --all-targets -- -D warnings");
    util::run(util::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("cargo fmt --check (workspace and conntrack-ebpf)");
    util::run(util::cargo().args(["fmt", "--all", "--check"]))?;
    util::run(util::cargo().args([
        "fmt",
        "--manifest-path",
        "conntrack-ebpf/Cargo.toml",
        "--all",
        "--check",
    ]))?;
    conformance()?;
    crate::container::container(&["--check".to_string()])?;
    crate::systemd::systemd(&["--check".to_string()])?;
    crate::fuzz::fuzz_for(std::time::Duration::from_secs(40))?;
    crate::fuzz_input::fuzz_input(std::time::Duration::from_secs(30))?;
    step("scale check: 200,000 connections live, none lost, agent memory in proportion");
    crate::bench::scale_check(200_000)?;
    crate::soak::soak_for(std::time::Duration::from_secs(60))?;
    step("bench --quick (the bench must keep running; its figures are not checked)");
    crate::bench::bench(&["--quick".to_string()])?;
    step("all checks passed");
    Ok(())
}

fn install_missing_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, cmd)| !on_path(cmd))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        let names: Vec<&str> = PACKAGES.iter().map(|(pkg, _)| *pkg).collect();
        step(&format!("test packages present ({})", names.join(", ")));
        return Ok(());
    }
    step(&format!("installing {}", missing.join(" ")));
    util::run(Command::new("apt-get").args(["update", "-qq"]))?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

/// The Zeek conformance corpus in `../shared/conformance`, when it is there.
fn conformance() -> Result<()> {
    let script = util::root().join("../shared/conformance/conformance.py");
    if !script.is_file() {
        step("conformance: ../shared/conformance not found, skipped");
        return Ok(());
    }
    step("conformance run");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--agent")
        .arg(agent::binary(Profile::Release))
        .arg("-q")
        .current_dir(util::root())
        .output()
        .context("cannot run python3 conformance.py")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut failed_runs = 0u64;
    for line in text.lines() {
        if let Some(n) = line
            .strip_prefix("runs ")
            .and_then(|r| r.split("failed").nth(1))
        {
            failed_runs = n.trim().parse().unwrap_or(0);
        }
    }
    let summary: Vec<&str> = text.lines().rev().take(2).collect();
    for line in summary.iter().rev() {
        println!("    {line}");
    }
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        bail!("conformance.py exited with {}", out.status);
    }
    if failed_runs > 0 {
        bail!("conformance: {failed_runs} agent runs failed");
    }
    Ok(())
}
