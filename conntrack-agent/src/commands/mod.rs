//! The agent's commands: `run` (live), `read` (replay), and the hidden `bench-kernel`,
//! `bench-flood` and `fuzz-kernel` that `cargo xtask bench` and `cargo xtask fuzz` drive.

pub mod bench;
pub mod detach;
pub mod flood;
pub mod fuzz;
pub mod log_lock;
pub mod read;
pub mod run;
pub mod setup;
