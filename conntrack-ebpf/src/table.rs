//! The engine's `FlowTable` and `EngineConfig` over the BPF maps, with the per-connection spin
//! lock held from the first lookup until [`BpfFlows::release`].

use crate::lock;
use crate::maps::{FLOWS, LIKELY_SERVER_PORTS};
use aya_ebpf::bindings::BPF_NOEXIST;
use conntrack_common::conn::Conn;
use conntrack_common::engine::{EngineConfig, FlowTable};
use conntrack_common::key::FlowKey;

/// `-EEXIST`: another CPU inserted the key between our lookup and insert.
const EEXIST: i32 = 17;

/// `FLOWS` as the engine's table. The first successful lookup takes the connection's lock; a
/// lock that stays busy makes the connection look absent (and its insert a no-op), so the
/// engine skips the packet and the caller reports it.
pub struct BpfFlows {
    locked: *mut u32,
    /// The lock stayed busy: the packet was not applied.
    pub busy: bool,
}

impl BpfFlows {
    #[inline(always)]
    pub fn new() -> BpfFlows {
        BpfFlows {
            locked: core::ptr::null_mut(),
            busy: false,
        }
    }

    /// Releases the lock taken by the lookup, if any.
    #[inline(always)]
    pub fn release(&mut self) {
        if !self.locked.is_null() {
            // SAFETY: `locked` points into a FLOWS value; held since `get_mut`.
            unsafe { lock::unlock(self.locked) };
            self.locked = core::ptr::null_mut();
        }
    }
}

impl FlowTable for BpfFlows {
    #[inline(always)]
    fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Conn> {
        if self.busy {
            return None;
        }
        let conn = FLOWS.get_ptr_mut(key)?;
        // SAFETY: a map value pointer is valid for the whole program run; the lock serialises
        // writers across CPUs.
        let lock_ptr = unsafe { &raw mut (*conn).lock };
        if self.locked.is_null() {
            if !unsafe { lock::lock(lock_ptr) } {
                self.busy = true;
                return None;
            }
            self.locked = lock_ptr;
        }
        Some(unsafe { &mut *conn })
    }

    #[inline(always)]
    fn insert(&mut self, key: &FlowKey, conn: &Conn) -> bool {
        if self.busy {
            return true;
        }
        match FLOWS.insert(key, conn, BPF_NOEXIST as u64) {
            Ok(()) => true,
            Err(e) => e == -EEXIST,
        }
    }
}

/// Zeek's `likely_server_ports` from the `LIKELY_SERVER_PORTS` map (key `port << 8 | proto`).
pub struct BpfPorts;

impl EngineConfig for BpfPorts {
    #[inline(always)]
    fn likely_server_port(&self, port: u16, proto: u8) -> bool {
        let key = (port as u32) << 8 | proto as u32;
        LIKELY_SERVER_PORTS.get_ptr(&key).is_some()
    }
}
