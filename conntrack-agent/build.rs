//! Builds the eBPF program (`conntrack-ebpf`, nightly, `bpfel-unknown-none`) and exposes the
//! object to the agent as `CONNTRACK_EBPF_OBJ` (a path for `include_bytes_aligned!`).
//!
//! When bpf-linker or the nightly toolchain is missing (or `CONNTRACK_SKIP_EBPF=1`), an empty
//! object is embedded with a warning, so host-only builds and tests still work; the agent then
//! says at run time that the eBPF program was not built.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("the agent lives in the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let object = out_dir.join("conntrack.bpf.o");
    for path in [
        "conntrack-ebpf/src",
        "conntrack-ebpf/Cargo.toml",
        "conntrack-ebpf/.cargo/config.toml",
        "conntrack-common/src",
        "conntrack-common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=CONNTRACK_SKIP_EBPF");
    println!("cargo:rustc-env=CONNTRACK_EBPF_OBJ={}", object.display());

    if std::env::var_os("CONNTRACK_SKIP_EBPF").is_some_and(|v| v == "1") {
        return embed_empty(
            &object,
            "CONNTRACK_SKIP_EBPF=1: the eBPF program is not built",
        );
    }
    let tools_bin = root.join(".tools/bin");
    let path = path_with(&tools_bin);
    if !on_path(&path, "bpf-linker") {
        // Look again on every build until `cargo xtask setup` installs it (a missing path is
        // always stale to cargo), so the build after setup embeds the real program.
        println!(
            "cargo:rerun-if-changed={}",
            tools_bin.join("bpf-linker").display()
        );
        println!("cargo:rerun-if-env-changed=PATH");
        return embed_empty(
            &object,
            "bpf-linker not found: the eBPF program is not built; run `cargo xtask setup`",
        );
    }
    if !Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return embed_empty(
            &object,
            "no nightly toolchain: the eBPF program is not built; run `cargo xtask setup`",
        );
    }

    // A target dir shared by every profile of the agent (debug, release, clippy) keeps the
    // nested build incremental.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("ebpf");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root.join("conntrack-ebpf"))
        .env("PATH", &path);
    // The outer cargo's settings (rustc wrappers such as clippy, flags, jobserver, toolchain
    // override) must not leak into the nested nightly build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let leak = (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || matches!(
                &*key,
                "RUSTFLAGS"
                    | "RUSTDOC"
                    | "RUSTUP_TOOLCHAIN"
                    | "DEBUG"
                    | "OPT_LEVEL"
                    | "PROFILE"
                    | "TARGET"
                    | "HOST"
                    | "NUM_JOBS"
                    | "OUT_DIR"
            );
        if leak {
            cmd.env_remove(&*key);
        }
    }
    let status = cmd.status().expect("cannot run `rustup run nightly cargo`");
    if !status.success() {
        panic!(
            "building conntrack-ebpf failed ({status}); set CONNTRACK_SKIP_EBPF=1 to build the agent without it"
        );
    }
    let built = target_dir.join("bpfel-unknown-none/release/conntrack");
    std::fs::copy(&built, &object).unwrap_or_else(|e| {
        panic!(
            "cannot copy {} to {}: {e}",
            built.display(),
            object.display()
        )
    });
}

fn embed_empty(object: &Path, why: &str) {
    println!("cargo:warning={why}");
    std::fs::write(object, []).expect("cannot write the empty eBPF object");
}

fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    if let Some(old) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&old));
    }
    std::env::join_paths(paths).expect("PATH entries contain no separator")
}

fn on_path(path: &std::ffi::OsStr, exe: &str) -> bool {
    std::env::split_paths(path).any(|d| d.join(exe).is_file())
}
