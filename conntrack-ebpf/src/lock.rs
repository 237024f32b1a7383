//! The spin lock in `Conn::lock`: ingress and egress of one flow run on different CPUs at once.
//!
//! A packet always gets the lock: it spins until the holder lets go. The first attempts are
//! inline; after that the spin runs in `bpf_loop` (the verifier checks its callback once,
//! whatever the count), up to [`SPIN_LIMIT`] attempts, the helper's maximum (tens of
//! milliseconds). A holder in the TC or XDP hooks runs one packet's stages with bottom halves
//! off, a few microseconds; one under BPF_PROG_TEST_RUN (`conntrack_control`, replays, the
//! tests) runs in process context and can be preempted while it holds the lock, for up to a
//! scheduler time slice: the bound covers that too. A lock still taken then was left behind (a
//! copy of a locked value written back), not held: it is taken over and counted as `LockBusy`,
//! and the packet is applied all the same.
//!
//! `bpfel-unknown-none` has no atomic read-modify-write in `core::sync::atomic`, so the
//! intrinsics are used directly; they lower to BPF_CMPXCHG / BPF_XCHG (`-C target-cpu=v3`).
//! A plain release store is not selectable before cpu v4, hence the exchange to unlock.

use aya_ebpf::helpers::bpf_loop;
use core::ffi::c_void;
use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xchg};

/// Attempts made inline before the spin moves into `bpf_loop`.
const INLINE_TRIES: u32 = 8;

/// Attempts in `bpf_loop` before a lock is taken to be left behind: the helper's maximum
/// (`BPF_MAX_LOOPS`).
const SPIN_LIMIT: u32 = 1 << 23;

/// How [`lock`] got the lock.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// It was free, or its holder let go.
    Free,
    /// It stayed taken for [`SPIN_LIMIT`] attempts: left behind, taken over.
    TakenOver,
}

/// One attempt.
///
/// # Safety
/// `lock` points into a map value that lives for the whole program run.
#[inline(always)]
unsafe fn try_lock(lock: *mut u32) -> bool {
    let (_, ok) = unsafe {
        atomic_cxchg::<u32, { AtomicOrdering::Acquire }, { AtomicOrdering::Relaxed }>(lock, 0, 1)
    };
    ok
}

/// What the `bpf_loop` callback works on (on the caller's stack, as the helper requires).
#[repr(C)]
struct Spin {
    lock: *mut u32,
    got: u64,
}

/// `bpf_loop` callback: one attempt; 1 stops the loop.
extern "C" fn spin_once(_index: u64, ctx: *mut c_void) -> i64 {
    let spin = ctx.cast::<Spin>();
    // SAFETY: `ctx` is the caller's `Spin`, whose lock pointer is a map value.
    unsafe {
        if try_lock((*spin).lock) {
            (*spin).got = 1;
            return 1;
        }
    }
    0
}

/// Takes the lock at `lock`, waiting as long as it is held (see the module comment).
///
/// # Safety
/// `lock` points into a map value that lives for the whole program run.
#[inline(always)]
pub unsafe fn lock(lock: *mut u32) -> Taken {
    let mut i = 0;
    while i < INLINE_TRIES {
        if unsafe { try_lock(lock) } {
            return Taken::Free;
        }
        i += 1;
    }
    let mut spin = Spin { lock, got: 0 };
    // SAFETY: the callback and its context follow bpf_loop's contract.
    unsafe {
        bpf_loop(
            SPIN_LIMIT,
            spin_once as *mut c_void,
            (&raw mut spin).cast(),
            0,
        )
    };
    if spin.got != 0 {
        Taken::Free
    } else {
        // Left behind: take it over (it stays 1, now ours).
        unsafe { atomic_xchg::<u32, { AtomicOrdering::Acquire }>(lock, 1) };
        Taken::TakenOver
    }
}

/// Releases a lock taken with [`lock`].
///
/// # Safety
/// As for [`lock`], and the caller holds the lock.
#[inline(always)]
pub unsafe fn unlock(lock: *mut u32) {
    unsafe {
        atomic_xchg::<u32, { AtomicOrdering::Release }>(lock, 0);
    }
}
