//! conntrack-agent: Zeek-compatible connection tracking, live (eBPF) or from a trace.
//!
//! A library only so that the fuzz targets (`fuzz/`) can drive the replay path in process:
//! [`main`] is the whole program, and `src/main.rs` calls it.

mod capabilities;
mod capture;
mod cli;
mod commands;
mod config;
mod core;
mod datapath;
mod export;
mod logs;
#[cfg(test)]
mod tests;
mod util;

#[doc(hidden)]
pub use commands::read::fuzz_input;

/// The program: parses the command line and runs the command.
pub async fn main() -> std::process::ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        // Clears `run`'s status line first, so a message never runs into it.
        .format(|buf, record| {
            use std::io::Write;
            writeln!(
                buf,
                "{}[{:<5} {}] {}",
                commands::run::status::clear_prefix(),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .init();
    let (cli, config) = match cli::parse(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("conntrack-agent: error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let res = match cli.command {
        cli::Command::Run(args) => commands::run::run(args, config).await,
        cli::Command::Read(args) => commands::read::read(args, config),
        cli::Command::Detach(args) => commands::detach::detach(args),
        cli::Command::BenchKernel(args) => commands::bench::bench_kernel(args),
        cli::Command::BenchFlood(args) => commands::flood::bench_flood(args),
        cli::Command::FuzzKernel(args) => commands::fuzz::fuzz_kernel(args),
    };
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // Already reported on stderr, with what was logged.
        Err(e) if e.is::<commands::read::Interrupted>() => {
            let signal = e
                .downcast_ref::<commands::read::Interrupted>()
                .map_or(0, |i| i.signal);
            std::process::ExitCode::from(util::stop::exit_status(signal))
        }
        Err(e) => {
            eprintln!("conntrack-agent: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
