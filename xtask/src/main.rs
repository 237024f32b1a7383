//! `cargo xtask`: the single entry point for developer tasks.
//!
//! - `setup`: toolchain bootstrap (nightly rust-src, bpf-linker built against nightly's libLLVM
//!   into `.tools/`), idempotent and fast when nothing changed;
//! - `build [--debug]`: setup if needed, then build `conntrack-agent` (which builds the eBPF
//!   program through its build script);
//! - `run [--debug] [-- AGENT ARGS]`: build, then `conntrack-agent run` on the default route's
//!   interface with `--log-dir ./logs` unless given;
//! - `test`: setup, build, workspace tests, clippy, fmt, and the conformance run when available;
//! - `bench [--quick]`: benchmarks against baselines measured in the same run;
//! - `scale-check [N]`: N (default 200,000) connections through a live agent, none lost, its
//!   memory in proportion (part of `test`);
//! - `fuzz [--minutes N]`: the engine's property tests with fresh seeds and the differential
//!   kernel-vs-host fuzz, within a time budget (default 1 minute);
//! - `soak [--minutes N]`: N minutes (default 1) of steady traffic through a live agent (root):
//!   every connection logged once, no kernel drop, every alert delivered or spooled, memory and
//!   fds flat;
//! - `container [--check]`: the container image from `deploy/Containerfile`, and a check that it
//!   tracks traffic when run as deploy/ describes;
//! - `systemd --check`: the systemd unit verified, and its command run as the unit would run it.

mod agent;
mod bench;
mod container;
mod deploy_check;
mod fuzz;
mod fuzz_input;
mod setup;
mod soak;
mod systemd;
mod test;
mod util;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup                      install rust-src for nightly and build bpf-linker into .tools/
  build [--debug]            setup if needed, then build conntrack-agent (and its eBPF program)
  run [--debug] [-- ARGS]    build, then run `conntrack-agent run` (default: --iface <default
                             route interface> --log-dir ./logs) until Ctrl-C
  test                       setup, build, cargo test, clippy, fmt --check, conformance,
                             a 40 s fuzz, the scale check, a 1 min soak, bench --quick
  scale-check [N]            (root) N new connections (default 200000) through a live agent:
                             fails if one is lost or the agent's memory is out of proportion;
                             then lost events (agent stopped) must be recovered by its resync
  fuzz [--minutes N]         property tests with fresh seeds, then (root) the kernel-vs-host
                             differential fuzz, N minutes in all (default 1)
  soak [--minutes N]         (root) N minutes (default 1) of steady traffic through a live
                             agent with rotation and a flaky webhook: every connection logged
                             once, no drop, every alert delivered or spooled, RSS and fds flat
  container [--check]        build the container image (podman, else docker) from
                             deploy/Containerfile; --check runs it against a test veth
  systemd --check            verify deploy/conntrack-agent.service and run its command as
                             the unit would (dynamic user, its capabilities) on a test veth
  bench [--quick]            benchmarks (root): kernel per-packet cost, replay, live, scale;
                             writes target/bench/results.json and BENCHMARKS.md";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match cmd.as_str() {
        "setup" => setup::setup(),
        "build" => agent::parse_profile(rest).and_then(|(profile, _)| agent::build(profile)),
        "run" => {
            agent::parse_profile(rest).and_then(|(profile, extra)| agent::run(profile, &extra))
        }
        "test" => test::test(),
        "bench" => bench::bench(rest),
        "fuzz" => fuzz::fuzz(rest),
        "soak" => soak::soak(rest),
        "scale-check" => bench::scale_check_cmd(rest),
        "container" => container::container(rest),
        "systemd" => systemd::systemd(rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("xtask: unknown command `{other}`\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
