//! conntrack-agent: Zeek-compatible connection tracking, live (eBPF) or from a trace.

mod agent;
// The crossing path (rules_for, crossed) is called by the threshold capability once it is
// wired; until then only tests reach it. Remove this allow with that wiring.
mod alerts;
mod bench;
mod checksum;
mod cli;
mod clock;
mod community_id;
mod config;
mod conn_log;
mod conn_long;
mod contents;
mod datapath;
mod defrag;
mod events;
mod file_options;
mod fuzz;
mod handover;
mod inactivity;
mod ipfix;
mod kernel;
#[cfg(test)]
mod lifecycle_tests;
mod live;
mod logrotate;
mod metrics;
mod pcap_input;
mod polling;
mod read;
mod reload;
mod removal_hooks;
mod removal_log;
mod site;
mod status;
mod thresholds;
mod tracker;
mod uid;
#[cfg(test)]
mod zeek_lifecycle_tests;
#[cfg(test)]
mod zeek_threshold_tests;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        // Clears `run`'s status line first, so a message never runs into it.
        .format(|buf, record| {
            use std::io::Write;
            writeln!(
                buf,
                "{}[{:<5} {}] {}",
                status::clear_prefix(),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .init();
    let cli = match cli::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("conntrack-agent: error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let res = match cli.command {
        cli::Command::Run(args) => live::run(args).await,
        cli::Command::Read(args) => read::read(args),
        cli::Command::BenchKernel(args) => bench::bench_kernel(args),
        cli::Command::FuzzKernel(args) => fuzz::fuzz_kernel(args),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conntrack-agent: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
