//! conntrack-agent: Zeek-compatible connection tracking, live (eBPF) or from a trace.
//! The program lives in the library (`src/lib.rs`), which the fuzz targets also link.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    conntrack_agent::main().await
}
