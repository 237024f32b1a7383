//! Per-interface counters (issue 8 point 4): `IFACE_STATS`, kept in the `Ebpf` object, and
//! the ifindexes they are keyed by.

use super::Kernel;
use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuArray};

/// The ifindex of each interface in `names` that exists (for [`Kernel::iface_stats`]).
pub fn ifindexes(names: &[String]) -> Vec<u32> {
    names
        .iter()
        .filter_map(|n| std::ffi::CString::new(n.as_str()).ok())
        // SAFETY: a valid C string; if_nametoindex only reads it.
        .map(|c| unsafe { libc::if_nametoindex(c.as_ptr()) })
        .filter(|&i| i != 0)
        .collect()
}

impl Kernel {
    /// Packets and bytes of each interface in `ifindexes`, summed over CPUs. Interfaces whose
    /// ifindex is beyond the kernel's array share its entry 0, reported as ifindex 0 (once).
    pub fn iface_stats(
        &self,
        ifindexes: &[u32],
    ) -> Result<Vec<(u32, conntrack_common::stats::IfaceCounters)>> {
        use conntrack_common::stats::{IfaceCounters, MAX_IFACES};
        let map: PerCpuArray<&MapData, IfaceCounters> =
            PerCpuArray::try_from(self.ebpf.map("IFACE_STATS").context("no map IFACE_STATS")?)?;
        let mut slots: Vec<u32> = ifindexes
            .iter()
            .map(|&i| if i < MAX_IFACES { i } else { 0 })
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots
            .into_iter()
            .map(|slot| {
                let per_cpu = map.get(&slot, 0)?;
                let sum = per_cpu
                    .iter()
                    .fold(IfaceCounters::default(), |a, v| IfaceCounters {
                        packets: a.packets.wrapping_add(v.packets),
                        bytes: a.bytes.wrapping_add(v.bytes),
                    });
                Ok((slot, sum))
            })
            .collect()
    }
}
