//! `cargo xtask fuzz [--target engine|input] [--minutes N]`: fuzzing with a time budget. The
//! `input` target (coverage-guided, `read`'s input path) is in `fuzz_input.rs`; the default
//! `engine` target is here.
//!
//! Half the budget runs the engine's property tests (conntrack-common `engine::proptests`:
//! arbitrary bytes, arbitrary metas, mutated conversations) in rounds of `PROPTEST_CASES`
//! cases, each round with fresh random seeds; a failing case is shrunk and saved by proptest
//! under `conntrack-common/proptest-regressions/` (replayed first by every later run). The
//! other half runs `conntrack-agent fuzz-kernel`, the differential fuzz of the kernel engine
//! against the host engine (needs root; skipped with a note otherwise).

use crate::agent::{self, Profile};
use crate::util::{self, step};
use anyhow::{Context, Result, bail};
use std::process::Command;
use std::time::{Duration, Instant};

/// Cases per property and round: a round takes a few seconds, so the budget is kept closely.
const CASES_PER_ROUND: u32 = 2000;
/// The property tests of the engine (three properties).
const PROPERTIES: u64 = 3;
const PROPTEST_FILTER: &str = "engine::proptests";

const USAGE: &str = "usage: cargo xtask fuzz [--target engine|input] [--minutes N]";

pub fn fuzz(args: &[String]) -> Result<()> {
    let mut minutes = 1.0f64;
    let mut input = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minutes" => {
                let v = it
                    .next()
                    .context("--minutes needs a value, e.g. --minutes 10")?;
                minutes = v
                    .parse()
                    .ok()
                    .filter(|m: &f64| *m > 0.0)
                    .with_context(|| format!("--minutes {v}: give a positive number"))?;
            }
            "--target" => match it.next().map(String::as_str) {
                Some("engine") => input = false,
                Some("input") => input = true,
                other => bail!(
                    "--target {}: the targets are `engine` (property tests and the kernel \
                     engine against the host one) and `input` (coverage-guided, read's input \
                     path); {USAGE}",
                    other.unwrap_or("(missing)")
                ),
            },
            other => bail!("fuzz: unknown argument `{other}` ({USAGE})"),
        }
    }
    let budget = Duration::from_secs_f64(minutes * 60.0);
    if input {
        crate::fuzz_input::fuzz_input(budget)
    } else {
        fuzz_for(budget)
    }
}

/// Both fuzzers within `budget` (the kernel one gets half when it can run).
pub fn fuzz_for(budget: Duration) -> Result<()> {
    let kernel = is_root();
    let prop_budget = if kernel { budget / 2 } else { budget };
    proptests(prop_budget)?;
    if kernel {
        kernel_fuzz(budget - prop_budget)?;
    } else {
        step("fuzz-kernel skipped: loading the eBPF program needs root (sudo cargo xtask fuzz)");
    }
    Ok(())
}

fn proptests(budget: Duration) -> Result<()> {
    step(&format!(
        "engine property tests with fresh seeds for {:.0}s ({CASES_PER_ROUND} cases per property and round)",
        budget.as_secs_f64()
    ));
    let test = || {
        let mut c = util::cargo();
        c.args([
            "test",
            "--release",
            "-p",
            "conntrack-common",
            "--lib",
            PROPTEST_FILTER,
        ]);
        c
    };
    // Compile outside the budget.
    util::run(test().arg("--no-run"))?;
    let started = Instant::now();
    let mut rounds = 0u64;
    loop {
        let out = test()
            .args(["--", "--quiet"])
            .env("PROPTEST_CASES", CASES_PER_ROUND.to_string())
            .output()
            .context("cannot run cargo test for the property tests")?;
        if !out.status.success() {
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            bail!(
                "a property failed in round {} (the shrunk case is printed above and saved under \
                 conntrack-common/proptest-regressions/: keep that file, it replays first)",
                rounds + 1
            );
        }
        rounds += 1;
        if started.elapsed() >= budget {
            break;
        }
    }
    println!(
        "    property tests: {rounds} rounds, {} cases ({} per property) in {:.0}s, no failure",
        rounds * CASES_PER_ROUND as u64 * PROPERTIES,
        rounds * CASES_PER_ROUND as u64,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn kernel_fuzz(budget: Duration) -> Result<()> {
    agent::build(Profile::Release)?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    step(&format!(
        "fuzz-kernel (kernel vs host engine) for {:.0}s, seed {seed}",
        budget.as_secs_f64()
    ));
    util::run(
        Command::new(agent::binary(Profile::Release))
            .arg("fuzz-kernel")
            .args(["--seconds", &budget.as_secs().max(1).to_string()])
            .args(["--seed", &seed.to_string()]),
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
