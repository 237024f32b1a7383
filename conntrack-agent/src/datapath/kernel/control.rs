//! Threshold and extraction commands: `conntrack_control`, run with BPF_PROG_TEST_RUN by raw
//! syscall, and the retries while the connection is locked.

use crate::datapath::{ThresholdError, decode_control_result};
use conntrack_common::threshold::ThresholdCommand;
use std::os::fd::{AsRawFd, OwnedFd};

/// `conntrack_control`, run with BPF_PROG_TEST_RUN on a `ThresholdCommand` (by raw syscall: the
/// program stays owned by the `Kernel`, while live the flow map and this handle go to the agent).
pub struct ControlProgram {
    pub(super) fd: OwnedFd,
}

/// `union bpf_attr` as BPF_PROG_TEST_RUN reads it (uapi `test` member).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// bpf(2) with `cmd` and its attribute block (the raw commands aya does not offer).
///
/// # Safety
/// `attr` is a valid `union bpf_attr` member for `cmd`, and every pointer in it is valid for
/// what the command reads or writes there.
pub(super) unsafe fn bpf_syscall<A>(cmd: libc::c_long, attr: &mut A) -> std::io::Result<()> {
    // SAFETY: per the contract.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut A, size_of::<A>()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl ControlProgram {
    /// Runs `cmd` (it waits for the connection's lock like a packet); returns the crossed
    /// slots.
    pub fn run(&self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
        decode_control_result(self.run_once(cmd)?)
    }

    fn run_once(&self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: size_of::<ThresholdCommand>() as u32,
            data_in: (cmd as *const ThresholdCommand) as u64,
            repeat: 1,
            ..TestRunAttr::default()
        };
        // SAFETY: `attr` is a valid BPF_PROG_TEST_RUN attribute block; `data_in` points to a
        // live `ThresholdCommand` of `data_size_in` bytes; no output buffers.
        unsafe { bpf_syscall(BPF_PROG_TEST_RUN, &mut attr) }
            .map_err(|e| ThresholdError::Failed(format!("BPF_PROG_TEST_RUN: {e}")))?;
        Ok(attr.retval)
    }
}
