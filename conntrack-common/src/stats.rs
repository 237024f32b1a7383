//! Indices of the per-CPU `STATS` array map (one `u64` per index), summed by the agent.

/// A counter in the per-CPU `STATS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Frames seen by the program.
    Packets = 0,
    /// Frames whose headers could not be parsed.
    ParseErrors = 1,
    /// Frames that are not IPv4/IPv6.
    NonIp = 2,
    /// IP fragments (passed to the host for reassembly).
    Fragments = 3,
    /// New connections that did not fit into the flow table.
    TableFull = 4,
    /// Events dropped because the ring buffer was full.
    RingbufFull = 5,
    /// Connection locks found taken for about a millisecond and taken over: left behind (a
    /// written-back copy of a locked value), never a live holder. The packet was applied; a
    /// packet that waits for a held lock is not counted here.
    LockBusy = 6,
    /// Connections created.
    NewConns = 7,
    /// Connections replaced because of TCP reuse.
    Reuses = 8,
    /// Packets with a bad transport checksum (as flagged by the caller).
    BadChecksums = 9,
    /// Events submitted.
    Events = 10,
    /// Content extraction: payload bytes handed to the agent (`CONTENTS` ring buffer).
    ContentBytes = 11,
    /// Content extraction: payload bytes of flagged connections not handed over (caps, ring
    /// buffer full, copy failure, beyond `MAX_CHUNKS` records per packet).
    ContentNotDelivered = 12,
    /// IP bytes of the packets parsed (header plus payload, as conn.log's `*_ip_bytes` counts
    /// them; GSO super-packets count every segment's headers; fragments are not parsed).
    IpBytes = 13,
    /// Packets applied by the fast path (stage 1 alone: `engine::fast_update`); the rest of
    /// the parsed packets took the full stage chain.
    FastPath = 14,
    /// New connections opened in stage 1 by a plain SYN or a datagram (`engine::fast_open`):
    /// counted in `NewConns` too.
    FastOpens = 15,
    /// Frames the capture filter (`-f`) rejected: not tracked, not counted in the others
    /// but `Packets`.
    Filtered = 16,
    /// Service detection: payload bytes of the first packets of each direction handed to the
    /// agent as samples (`CONTENTS` records flagged `CONTENT_SAMPLE`).
    ServiceBytes = 17,
    /// Service detection: samples the ring buffer had no room for (or the copy failed).
    ServiceNotDelivered = 18,
}

/// Number of entries of the `STATS` array.
pub const STAT_COUNT: u32 = 19;

impl Stat {
    /// Index into the `STATS` array.
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// Short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Stat::Packets => "packets",
            Stat::ParseErrors => "parse_errors",
            Stat::NonIp => "non_ip",
            Stat::Fragments => "fragments",
            Stat::TableFull => "table_full",
            Stat::RingbufFull => "ringbuf_full",
            Stat::LockBusy => "lock_busy",
            Stat::NewConns => "new_conns",
            Stat::Reuses => "reuses",
            Stat::BadChecksums => "bad_checksums",
            Stat::Events => "events",
            Stat::ContentBytes => "content_bytes",
            Stat::ContentNotDelivered => "content_not_delivered",
            Stat::IpBytes => "ip_bytes",
            Stat::FastPath => "fast_path",
            Stat::FastOpens => "fast_opens",
            Stat::Filtered => "filtered",
            Stat::ServiceBytes => "service_bytes",
            Stat::ServiceNotDelivered => "service_not_delivered",
        }
    }

    /// All counters, in index order.
    pub const ALL: [Stat; STAT_COUNT as usize] = [
        Stat::Packets,
        Stat::ParseErrors,
        Stat::NonIp,
        Stat::Fragments,
        Stat::TableFull,
        Stat::RingbufFull,
        Stat::LockBusy,
        Stat::NewConns,
        Stat::Reuses,
        Stat::BadChecksums,
        Stat::Events,
        Stat::ContentBytes,
        Stat::ContentNotDelivered,
        Stat::IpBytes,
        Stat::FastPath,
        Stat::FastOpens,
        Stat::Filtered,
        Stat::ServiceBytes,
        Stat::ServiceNotDelivered,
    ];
}

/// Entries of the per-interface counter array (`IFACE_STATS`), indexed by ifindex: an
/// interface whose ifindex is this or more is counted in entry 0 (no interface has ifindex 0).
/// An array rather than a hash keyed by ifindex: its lookup is inlined by the kernel, where a
/// hash lookup added about 50 ns per packet.
pub const MAX_IFACES: u32 = 1024;

/// Per-interface counters (`IFACE_STATS`, per CPU, indexed by ifindex).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceCounters {
    /// Packets seen on the interface (a GSO/GRO super-packet counts its segments).
    pub packets: u64,
    /// Frame bytes as the hook saw them (Ethernet header on; a GSO super-packet counts its
    /// headers once).
    pub bytes: u64,
}
