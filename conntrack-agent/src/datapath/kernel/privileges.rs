//! Privileges and errors explained: RLIMIT_MEMLOCK, the capabilities check before loading,
//! the privilege hint on EPERM, and the verifier's log in load errors.

use anyhow::{Result, bail};
use aya::programs::ProgramError;

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; harmless elsewhere.
pub(super) fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to a rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK");
    }
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

const PRIVILEGE_HELP: &str = "loading the eBPF program needs root, or the capabilities \
     CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON: run it with sudo, or `sudo setcap \
     cap_bpf,cap_net_admin,cap_perfmon+ep target/release/conntrack-agent`, or as a systemd \
     service with AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON; replays work without \
     privileges with `--engine host`";

/// What each capability is needed for, named in the error when it is missing.
const NEEDED_CAPS: [(u32, &str, &str); 3] = [
    (CAP_BPF, "CAP_BPF", "create maps and load programs"),
    (
        CAP_NET_ADMIN,
        "CAP_NET_ADMIN",
        "load TC programs and attach them to interfaces",
    ),
    (
        CAP_PERFMON,
        "CAP_PERFMON",
        "the verifier refuses the program's pointer arithmetic without it",
    ),
];

/// The capabilities of [`NEEDED_CAPS`] missing from the effective set `cap_eff` (CAP_SYS_ADMIN
/// stands for all of them), with what each is for.
fn missing_capabilities(cap_eff: u64) -> Vec<String> {
    let has = |c: u32| cap_eff & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    NEEDED_CAPS
        .iter()
        .filter(|(c, _, _)| !has(*c))
        .map(|(_, name, why)| format!("{name} ({why})"))
        .collect()
}

/// Fails early, naming the missing capabilities and what to do, when the process cannot load
/// and attach the program.
pub(super) fn check_privileges() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(caps) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return Ok(()); // cannot tell: let the kernel decide
    };
    let missing = missing_capabilities(caps);
    if !missing.is_empty() {
        bail!(
            "missing capabilities: {}; {PRIVILEGE_HELP}",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Adds the privilege hint to EPERM failures.
pub(super) fn explain_eperm(e: anyhow::Error) -> anyhow::Error {
    let eperm = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EPERM))
            || c.to_string().contains("Operation not permitted")
    });
    if eperm { e.context(PRIVILEGE_HELP) } else { e }
}

/// A load error with the verifier log, which aya keeps out of the error's `Display`.
pub(super) fn verifier_error(e: ProgramError) -> anyhow::Error {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            anyhow::anyhow!("{io_error}\nverifier log:\n{verifier_log}")
        }
        other => anyhow::Error::new(other),
    }
}

#[cfg(test)]
mod tests {
    use super::{CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN, missing_capabilities};

    #[test]
    fn missing_capabilities_are_named() {
        let all = 1u64 << CAP_BPF | 1 << CAP_NET_ADMIN | 1 << CAP_PERFMON;
        assert!(missing_capabilities(all).is_empty());
        assert!(missing_capabilities(1 << CAP_SYS_ADMIN).is_empty());
        let m = missing_capabilities(all & !(1 << CAP_PERFMON));
        assert_eq!(m.len(), 1);
        assert!(m[0].starts_with("CAP_PERFMON"), "{m:?}");
        assert_eq!(missing_capabilities(0).len(), 3);
    }
}
