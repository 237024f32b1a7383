//! The spin lock in `Conn::lock`: ingress and egress of one flow run on different CPUs at once.
//!
//! `bpfel-unknown-none` has no atomic read-modify-write in `core::sync::atomic`, so the
//! intrinsics are used directly; they lower to BPF_CMPXCHG / BPF_XCHG (`-C target-cpu=v3`).
//! A plain release store is not selectable before cpu v4, hence the exchange to unlock.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xchg};

/// How often a busy lock is retried before the packet is handed to the agent instead.
const LOCK_TRIES: u32 = 64;

/// Takes the lock at `lock`; false if it stayed busy for [`LOCK_TRIES`] attempts.
///
/// # Safety
/// `lock` points into a map value that lives for the whole program run.
#[inline(always)]
pub unsafe fn lock(lock: *mut u32) -> bool {
    let mut i = 0;
    while i < LOCK_TRIES {
        let (_, ok) = unsafe {
            atomic_cxchg::<u32, { AtomicOrdering::Acquire }, { AtomicOrdering::Relaxed }>(
                lock, 0, 1,
            )
        };
        if ok {
            return true;
        }
        i += 1;
    }
    false
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
