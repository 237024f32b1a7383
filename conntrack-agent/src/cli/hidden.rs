//! Arguments of the hidden commands that `cargo xtask bench` and `cargo xtask fuzz` drive.

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct BenchKernelArgs {
    /// BPF_PROG_TEST_RUN `repeat` for the repeated cases.
    #[arg(long, default_value_t = 1_000_000)]
    pub repeat: u32,
    /// Rounds (every case once per round, interleaved).
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// New connections (single runs) per round for `syn_new`.
    #[arg(long, default_value_t = 20_000)]
    pub syns: u32,
    /// Only print the shared layout the bench needs (sizes of Conn, FlowKey and Event, the
    /// `STATS` indices) and exit, without loading anything.
    #[arg(long)]
    pub layout: bool,
}

#[derive(Args, Debug, Clone)]
pub struct BenchFloodArgs {
    /// The interface to send on (in this network namespace; a veth whose peer has NAPI: GRO
    /// or an XDP program on it).
    #[arg(long)]
    pub dev: String,
    /// Id of the first flow (`conntrack_common::flood`).
    #[arg(long, default_value_t = 0)]
    pub first: u64,
    /// Flows to send, one frame each.
    #[arg(long)]
    pub count: u32,
    /// Frames per second; 0: as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
}

#[derive(Args, Debug)]
pub struct FuzzKernelArgs {
    /// Time budget.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Seed of the run (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run only this sequence of the seed (a reproducer) and print its frames.
    #[arg(long)]
    pub sequence: Option<u64>,
}
