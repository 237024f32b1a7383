//! The tracker's programs already attached to an interface, found through the kernel's query
//! APIs rather than our own bookkeeping: an agent killed with SIGKILL after `--pin-dir` leaves
//! its programs attached through pinned TCX links, and a second set attached next to them would
//! count every packet twice. `run` refuses to start on them; `detach` removes them.
//!
//! aya queries a TCX chain (BPF_PROG_QUERY) but does not give a link's interface; the links
//! are walked with raw bpf(2) calls (BPF_LINK_GET_NEXT_ID, BPF_OBJ_GET_INFO_BY_FD) to find the
//! one that holds each program on each interface, which BPF_LINK_DETACH then detaches.

use super::PROGRAMS;
use anyhow::{Context, Result};
use aya::programs::{SchedClassifier, TcAttachType};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The kernel keeps a program's name to 15 bytes (BPF_OBJ_NAME_LEN with its NUL).
const KERNEL_NAME_LEN: usize = 15;

/// True for the kernel's (truncated) name of one of our TC programs.
pub fn is_tracker_program(kernel_name: &str) -> bool {
    PROGRAMS
        .iter()
        .any(|(name, _)| kernel_name == &name[..name.len().min(KERNEL_NAME_LEN)])
}

/// One of our programs on an interface's TCX chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedProgram {
    pub iface: String,
    /// "ingress" or "egress".
    pub direction: &'static str,
    pub program_id: u32,
    /// The TCX link that holds it (None if it went meanwhile).
    pub link_id: Option<u32>,
}

impl std::fmt::Display for AttachedProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} (program {}",
            self.iface, self.direction, self.program_id
        )?;
        match self.link_id {
            Some(l) => write!(f, ", TCX link {l})"),
            None => write!(f, ")"),
        }
    }
}

/// BPF attach types of the TCX chains (uapi `enum bpf_attach_type`).
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// Our programs on `iface`'s TCX ingress and egress chains. A kernel without TCX (before 6.6)
/// has no chain to query: nothing is found there (its clsact filters are `detach`'s).
pub fn tracker_programs_on(iface: &str) -> Result<Vec<AttachedProgram>> {
    let ifindex = ifindex(iface).with_context(|| format!("interface {iface:?} not found"))?;
    let mut links = None;
    let mut found = Vec::new();
    for (kind, direction, attach_type) in [
        (TcAttachType::Ingress, "ingress", BPF_TCX_INGRESS),
        (TcAttachType::Egress, "egress", BPF_TCX_EGRESS),
    ] {
        let programs = match SchedClassifier::query_tcx(iface, kind) {
            Ok((_, programs)) => programs,
            // EINVAL: a kernel without TCX (before 6.6), nothing to find; EPERM: no
            // CAP_NET_ADMIN, which the attach then names with what to do. Any other failure
            // must not pass for an empty chain: `run` would attach a second set.
            Err(aya::programs::ProgramError::SyscallError(e))
                if matches!(e.io_error.raw_os_error(), Some(libc::EINVAL | libc::EPERM)) =>
            {
                log::debug!("{iface}: no TCX {direction} chain: {}", e.io_error);
                continue;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("querying {iface}'s TCX {direction} chain")));
            }
        };
        for p in programs {
            if !p.name_as_str().is_some_and(is_tracker_program) {
                continue;
            }
            let links = match &links {
                Some(l) => l,
                None => links.insert(tcx_links().context("listing the kernel's BPF links")?),
            };
            let link_id = links
                .iter()
                .find(|l| {
                    l.program_id == p.id() && l.ifindex == ifindex && l.attach_type == attach_type
                })
                .map(|l| l.id);
            found.push(AttachedProgram {
                iface: iface.to_string(),
                direction,
                program_id: p.id(),
                link_id,
            });
        }
    }
    Ok(found)
}

/// Every interface of this network namespace (for `detach` without `--iface`).
pub fn all_interfaces() -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array ended by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            out.push(
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

pub fn ifindex(iface: &str) -> Option<u32> {
    let c = std::ffi::CString::new(iface).ok()?;
    // SAFETY: a valid C string; if_nametoindex only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// A TCX link as the kernel describes it.
#[derive(Debug, Clone, Copy)]
struct TcxLink {
    id: u32,
    program_id: u32,
    ifindex: u32,
    attach_type: u32,
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
const BPF_LINK_DETACH: libc::c_long = 34;
const BPF_LINK_TYPE_TCX: u32 = 11;

/// bpf(2) with an attribute block of `attr` (zeroed beyond what the command reads).
fn bpf(cmd: libc::c_long, attr: &mut [u64; 8]) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, writable 64-byte block for the call's duration.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size_of_val(attr)) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A descriptor of link `id` (ENOENT if it went meanwhile).
fn link_fd(id: u32) -> std::io::Result<OwnedFd> {
    let mut attr = [0u64; 8];
    attr[0] = u64::from(id);
    let fd = bpf(BPF_LINK_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Every TCX link of the kernel (link ids are global: every network namespace's).
fn tcx_links() -> std::io::Result<Vec<TcxLink>> {
    let mut out = Vec::new();
    let mut start = 0u32;
    loop {
        let mut attr = [0u64; 8];
        attr[0] = u64::from(start);
        match bpf(BPF_LINK_GET_NEXT_ID, &mut attr) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Err(e) => return Err(e),
        }
        let id = (attr[0] >> 32) as u32;
        start = id;
        let fd = match link_fd(id) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        // struct bpf_link_info: type, id, prog_id, then (at offset 16) tcx.ifindex and
        // tcx.attach_type.
        let mut info = [0u32; 32];
        let mut attr = [0u64; 8];
        attr[0] = fd.as_raw_fd() as u32 as u64 | ((size_of_val(&info) as u64) << 32);
        attr[1] = info.as_mut_ptr() as u64;
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        if info[0] == BPF_LINK_TYPE_TCX {
            out.push(TcxLink {
                id: info[1],
                program_id: info[2],
                ifindex: info[4],
                attach_type: info[5],
            });
        }
    }
}

/// Detaches TCX link `id` (BPF_LINK_DETACH: the program leaves the chain even while a pin or
/// a process still holds the link, which becomes defunct).
pub fn detach_link(id: u32) -> Result<()> {
    let fd = link_fd(id).with_context(|| format!("opening TCX link {id}"))?;
    let mut attr = [0u64; 8];
    attr[0] = fd.as_raw_fd() as u32 as u64;
    bpf(BPF_LINK_DETACH, &mut attr).with_context(|| format!("detaching TCX link {id}"))?;
    Ok(())
}

/// Removes our programs' clsact filters from `iface` (kernels without TCX attach that way,
/// and a killed agent's filters stay). Returns the directions they were removed from.
pub fn remove_clsact_filters(iface: &str) -> Vec<&'static str> {
    let mut removed = Vec::new();
    for (name, kind) in PROGRAMS {
        match aya::programs::tc::qdisc_detach_program(iface, kind, name) {
            Ok(()) => removed.push(if kind == TcAttachType::Ingress {
                "ingress"
            } else {
                "egress"
            }),
            // Not found, or no clsact qdisc on the interface at all.
            Err(e) => log::debug!("{iface}: no clsact filter {name}: {e}"),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_programs_are_known_by_their_kernel_names() {
        assert!(is_tracker_program("conntrack_ingre"));
        assert!(is_tracker_program("conntrack_egres"));
        assert!(!is_tracker_program("conntrack_parse"));
        assert!(!is_tracker_program("cil_from_netdev"));
        assert!(!is_tracker_program(""));
    }
}
