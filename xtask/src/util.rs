//! Small helpers shared by the tasks: workspace paths, progress lines, running commands.

use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (the parent of this crate's directory).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// `.tools/` under the workspace root: bpf-linker and the libLLVM links it runs with.
pub fn tools_dir() -> PathBuf {
    root().join(".tools")
}

/// PATH with `.tools/bin` in front, so cargo (and the agent's build script) find bpf-linker.
pub fn path_with_tools() -> OsString {
    let mut paths = vec![tools_dir().join("bin")];
    if let Some(old) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&old));
    }
    std::env::join_paths(paths).expect("PATH entries contain no separator")
}

/// One progress line per step.
pub fn step(msg: &str) {
    println!("==> {msg}");
}

/// The cargo that runs xtask (stable), without the rustup toolchain override of the parent so
/// that `rustup run nightly ...` and `+nightly` keep working in children.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root()).env("PATH", path_with_tools());
    cmd
}

/// Run a command with inherited stdio; fail with its description if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Run a command, capturing its output; fail if it does not succeed.
pub fn output(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {}", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Captured stdout of a successful command, as a string.
pub fn stdout(cmd: &mut Command) -> Result<String> {
    Ok(String::from_utf8_lossy(&output(cmd)?.stdout).into_owned())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    format!("`{s}`")
}
