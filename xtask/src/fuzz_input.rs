//! `cargo xtask fuzz --target input`: coverage-guided fuzzing (cargo-fuzz, libFuzzer) of
//! `read`'s input path in process: arbitrary bytes as a trace file through the pcap/pcapng
//! reader, the link layers, the defragmenter, checksum validation, the host engine, the timers
//! and the conn.log writer (`fuzz/fuzz_targets/input.rs`).
//!
//! cargo-fuzz is installed into `.tools/` on first use (nightly builds the target). Seeds are
//! generated traces (the bench's generator: TCP, UDP, ICMP, IPv4 and IPv6) written under
//! `target/fuzz/input/seeds`; the corpus libFuzzer grows stays in `target/fuzz/input/corpus`
//! for the next run, and `fuzz/input.dict` gives it the formats' magic numbers. Built without
//! a sanitizer: the path is safe Rust, so AddressSanitizer would only slow it down and hide
//! the memory figure; `-malloc_limit_mb` and `-rss_limit_mb` keep memory in proportion to the
//! input (at most 64 KiB), `-timeout` catches a hang.

use crate::util::{self, step};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Largest input: a trace of a few hundred packets.
const MAX_LEN: usize = 65_536;
/// A single allocation above this, or a process above `RSS_LIMIT_MB`, is a failure.
const MALLOC_LIMIT_MB: u32 = 64;
const RSS_LIMIT_MB: u32 = 512;
/// Seconds one input may take.
const TIMEOUT_S: u32 = 10;

pub fn fuzz_input(budget: Duration) -> Result<()> {
    ensure_cargo_fuzz()?;
    let base = util::root().join("target/fuzz/input");
    let (seeds, corpus, artifacts) = (
        base.join("seeds"),
        base.join("corpus"),
        base.join("artifacts"),
    );
    for d in [&seeds, &corpus, &artifacts] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    write_seeds(&seeds)?;
    step("building the input fuzz target (nightly, cargo-fuzz)");
    util::run(cargo_fuzz().args(["build", "-O", "-s", "none", "input"]))?;
    step(&format!(
        "fuzzing read's input path for {:.0}s (corpus {})",
        budget.as_secs_f64(),
        corpus.display()
    ));
    let log = base.join("last-run.log");
    let out =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let status = cargo_fuzz()
        .args(["run", "-O", "-s", "none", "input"])
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={}", budget.as_secs().max(1)))
        .arg(format!("-max_len={MAX_LEN}"))
        .arg(format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-timeout={TIMEOUT_S}"))
        .arg(format!(
            "-dict={}",
            util::root().join("fuzz/input.dict").display()
        ))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .stderr(out)
        .status()
        .context("cannot run cargo fuzz")?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        for l in tail.iter().rev() {
            eprintln!("    {l}");
        }
        bail!(
            "the input fuzzer found a failure ({status}); the input is under {} (whole log: {}). \
             Reproduce with `conntrack-agent read --engine host FILE`, or \
             `rustup run nightly cargo fuzz run -O -s none --fuzz-dir fuzz input FILE`",
            artifacts.display(),
            log.display()
        );
    }
    println!("    {}", summary(&text));
    Ok(())
}

/// cargo-fuzz in `.tools/bin`, installed there (pinned) when missing.
fn ensure_cargo_fuzz() -> Result<()> {
    let bin = util::tools_dir().join("bin/cargo-fuzz");
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if version.contains(CARGO_FUZZ_VERSION) {
        return Ok(());
    }
    step(&format!(
        "installing cargo-fuzz {CARGO_FUZZ_VERSION} into .tools (a few minutes, once)"
    ));
    util::run(
        util::cargo()
            .args([
                "install",
                &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
                "--locked",
            ])
            .arg("--root")
            .arg(util::tools_dir())
            .env_remove("CARGO_TARGET_DIR"),
    )
}

/// `rustup run nightly cargo fuzz ...` in `fuzz/`, building into `target/fuzz/build`, with
/// the agent's eBPF program left out (the target runs the host engine).
fn cargo_fuzz() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo", "fuzz"])
        .current_dir(util::root().join("fuzz"))
        .env("PATH", util::path_with_tools())
        .env("CONNTRACK_SKIP_EBPF", "1")
        .env("CARGO_TARGET_DIR", util::root().join("target/fuzz/build"));
    // Flags of the outer stable cargo must not reach the nightly build.
    for key in ["RUSTFLAGS", "RUSTUP_TOOLCHAIN", "CARGO", "RUSTC", "RUSTDOC"] {
        c.env_remove(key);
    }
    c
}

/// Small generated traces, the fuzzer's starting points.
fn write_seeds(dir: &Path) -> Result<()> {
    for (name, packets, conns) in [("small", 40, 4), ("mixed", 300, 30)] {
        let path = dir.join(format!("{name}.pcap"));
        crate::bench::trace::generate(&path, packets, conns)?;
    }
    Ok(())
}

/// libFuzzer's final figures in one line: runs, rate, corpus, coverage, peak memory.
fn summary(log: &str) -> String {
    let stat = |name: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .map_or("?".to_string(), |v| v.trim().to_string())
    };
    let cov = log
        .lines()
        .rev()
        .find_map(|l| l.split("cov: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("?");
    format!(
        "input fuzzer: {} runs ({}/s), {} new corpus units, coverage {} edges, peak RSS {} MB, no failure",
        stat("number_of_executed_units"),
        stat("average_exec_per_sec"),
        stat("new_units_added"),
        cov,
        stat("peak_rss_mb")
    )
}
