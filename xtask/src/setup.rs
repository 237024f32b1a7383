//! `cargo xtask setup`: the eBPF toolchain, and libpcap's headers and link library (the agent
//! compiles capture filters with libpcap: `-f EXPR`).
//!
//! The eBPF program needs nightly (`-Z build-std=core` for `bpfel-unknown-none`, hence rust-src)
//! and `bpf-linker`. bpf-linker is built against the nightly toolchain's own libLLVM (no system
//! LLVM is needed, and its LLVM is then never older than rustc's), into `.tools/`. Its rpath
//! points at that libLLVM, so it is rebuilt whenever the nightly changes: the stamp file records
//! the nightly commit it was built for.

use crate::util::{self, step};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

const BPF_LINKER_VERSION: &str = "0.13.0";

/// The nightly toolchain's identity, from `rustc -vV`.
struct Nightly {
    commit: String,
    llvm_major: String,
    sysroot: PathBuf,
}

pub fn setup() -> Result<()> {
    ensure_libpcap_dev()?;
    ensure_rust_src()?;
    let nightly = nightly_info()?;
    let tools = util::tools_dir();
    let linker = tools.join("bin/bpf-linker");
    let stamp_path = tools.join("bpf-linker.stamp");
    let stamp = format!(
        "bpf-linker {BPF_LINKER_VERSION}\nnightly {}\nllvm {}\n",
        nightly.commit, nightly.llvm_major
    );
    let current = std::fs::read_to_string(&stamp_path).unwrap_or_default();
    if current == stamp && linker.is_file() && linker_runs(&linker) {
        step(&format!(
            "bpf-linker {BPF_LINKER_VERSION} is up to date (nightly {}, LLVM {})",
            short(&nightly.commit),
            nightly.llvm_major
        ));
        return Ok(());
    }
    step(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against nightly {}'s LLVM {} (about a minute)",
        short(&nightly.commit),
        nightly.llvm_major
    ));
    link_nightly_llvm(&nightly)?;
    let _ = std::fs::remove_file(&stamp_path);
    util::run(
        util::cargo()
            .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}")])
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{}", nightly.llvm_major))
            .arg("--force")
            .arg("--root")
            .arg(&tools)
            .env("LLVM_PREFIX", tools.join("llvm"))
            .env_remove("CARGO_TARGET_DIR"),
    )?;
    if !linker_runs(&linker) {
        bail!("{} was built but does not run", linker.display());
    }
    std::fs::write(&stamp_path, stamp)
        .with_context(|| format!("cannot write {}", stamp_path.display()))?;
    step("bpf-linker installed");
    Ok(())
}

/// libpcap-dev: the agent links libpcap (capture filters), which needs `libpcap.so` and its
/// headers at build time; installed with apt-get when missing.
fn ensure_libpcap_dev() -> Result<()> {
    let present = Command::new("pkg-config")
        .args(["--exists", "libpcap"])
        .status()
        .is_ok_and(|s| s.success())
        || std::path::Path::new("/usr/include/pcap/pcap.h").is_file();
    if present {
        step("libpcap-dev is installed");
        return Ok(());
    }
    step("installing libpcap-dev (the agent compiles capture filters with libpcap)");
    util::run(Command::new("apt-get").args(["update", "-qq"]))?;
    util::run(
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "libpcap-dev",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .context("installing libpcap-dev (run `apt-get install libpcap-dev` as root)")
}

fn ensure_rust_src() -> Result<()> {
    let installed = util::stdout(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context("is the nightly toolchain installed? (`rustup toolchain install nightly`)")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        step("nightly rust-src is installed");
        return Ok(());
    }
    step("installing rust-src for nightly");
    util::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

fn nightly_info() -> Result<Nightly> {
    let vv = util::stdout(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))?;
    let field = |name: &str| {
        vv.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("`rustc +nightly -vV` has no `{name}` line"))
    };
    let commit = field("commit-hash:")?;
    let llvm = field("LLVM version:")?;
    let llvm_major = llvm.split('.').next().unwrap_or_default().to_string();
    let sysroot = util::stdout(
        Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]),
    )?;
    Ok(Nightly {
        commit,
        llvm_major,
        sysroot: PathBuf::from(sysroot.trim()),
    })
}

/// `.tools/llvm/lib/libLLVM.so` (for linking) and the soname (for the runtime loader), both
/// pointing at the nightly's libLLVM; stale links from an older nightly are removed.
fn link_nightly_llvm(nightly: &Nightly) -> Result<()> {
    let nightly_lib = nightly.sysroot.join("lib");
    let so = std::fs::read_dir(&nightly_lib)
        .with_context(|| format!("cannot list {}", nightly_lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so"))
        .with_context(|| format!("no libLLVM.so* in {}", nightly_lib.display()))?;
    let lib = util::tools_dir().join("llvm/lib");
    std::fs::create_dir_all(&lib)?;
    for entry in std::fs::read_dir(&lib)?.filter_map(|e| e.ok()) {
        if entry.file_name().to_string_lossy().starts_with("libLLVM") {
            std::fs::remove_file(entry.path())?;
        }
    }
    for name in ["libLLVM.so", so.as_str()] {
        std::os::unix::fs::symlink(nightly_lib.join(&so), lib.join(name))
            .with_context(|| format!("cannot link {}", lib.join(name).display()))?;
    }
    Ok(())
}

fn linker_runs(linker: &std::path::Path) -> bool {
    Command::new(linker)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn short(commit: &str) -> &str {
    commit.get(..9).unwrap_or(commit)
}
