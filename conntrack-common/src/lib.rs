//! Shared types and the per-packet flow engine of conntrack.
//!
//! This crate is compiled twice: into the eBPF TC program (target `bpfel-unknown-none`) and
//! into the host agent. It therefore follows the eBPF rules everywhere: no reachable panics
//! (no fallible indexing, wrapping/checked arithmetic), no recursion, constant-bounded loops,
//! no floats, no `u128`, no `usize` in shared structs and small stack frames.
//!
//! Modules, one concern each:
//! - [`packet`]: frame parsing into [`packet::PacketMeta`] (and the host's [`packet::IpView`]);
//! - `checksum` (host only): the IPv4 header and transport checksums;
//! - [`key`]: the canonical [`key::FlowKey`] (with ICMP request/reply pairing);
//! - [`tcp`]: per-direction [`tcp::Endpoint`] state, Zeek's sequence space and state machine;
//! - [`history`]: Zeek's history letters;
//! - [`conn`]: [`conn::Conn`], the map value, and its conn.log field accessors;
//! - [`engine`]: orientation, reuse, the per-packet update, the fast path and the generic driver;
//! - [`threshold`]: per-connection thresholds (the kernel side of ConnThreshold);
//! - [`contents`]: content extraction flags and the payload records;
//! - [`filter`]: capture filters, libpcap's classic BPF programs run by one interpreter;
//! - [`event`]: ring-buffer events; [`stats`]: per-CPU counter indices;
//! - [`tunnel`]: decapsulation (where an inner packet starts) and the tunnel-change rule;
//! - [`flood`]: the frames of the bench's new-flow generator.
#![no_std]

// The host (and the tests) have std: the checksum asks it which vector instructions the CPU
// has.
#[cfg(any(test, feature = "user"))]
extern crate std;

// The host's decoded events box their rare large variant.
#[cfg(any(test, feature = "user"))]
extern crate alloc;

#[cfg(any(test, feature = "user"))]
pub mod checksum;
pub mod conn;
pub mod contents;
pub mod engine;
pub mod event;
pub mod filter;
pub mod flood;
pub mod history;
pub mod key;
pub mod packet;
pub mod stats;
pub mod tcp;
pub mod threshold;
pub mod tunnel;

#[cfg(test)]
mod testutil;

/// IP protocol numbers the engine distinguishes.
pub mod proto {
    /// ICMP (IPv4).
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;

    /// The bit of `proto` in a `LIKELY_SERVER_PORTS` entry (one byte per port, a bit per
    /// protocol a likely server port can name: tcp, udp, icmp); 0 for any other protocol.
    #[inline(always)]
    pub const fn likely_port_bit(proto: u8) -> u8 {
        match proto {
            TCP => 1,
            UDP => 2,
            ICMP => 4,
            _ => 0,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    //! `aya::Pod` for every type that crosses the kernel/user boundary. All of them are
    //! `#[repr(C)]`, `Copy`, contain only integers/arrays and have explicit padding fields.
    unsafe impl aya::Pod for crate::key::FlowKey {}
    unsafe impl aya::Pod for crate::conn::Conn {}
    unsafe impl aya::Pod for crate::event::ConnChange {}
    unsafe impl aya::Pod for crate::event::TableFull {}
    unsafe impl aya::Pod for crate::event::Snapshot {}
    unsafe impl aya::Pod for crate::packet::PacketMeta {}
    unsafe impl aya::Pod for crate::engine::FastMeta {}
    unsafe impl aya::Pod for crate::tcp::Endpoint {}
    unsafe impl aya::Pod for crate::history::History {}
    unsafe impl aya::Pod for crate::threshold::ThresholdCommand {}
    unsafe impl aya::Pod for crate::contents::ContentHeader {}
    unsafe impl aya::Pod for crate::contents::ContentCounters {}
    unsafe impl aya::Pod for crate::stats::IfaceCounters {}
    unsafe impl aya::Pod for crate::filter::Program {}
}

// Layout guards: these types are shared with the eBPF program and must not change by accident.
const _: () = assert!(core::mem::size_of::<key::FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<packet::PacketMeta>() == 80);
const _: () = assert!(core::mem::size_of::<engine::FastMeta>() == 64);
const _: () = assert!(core::mem::size_of::<tcp::Endpoint>() == 128);
const _: () = assert!(core::mem::size_of::<history::History>() == 56);
const _: () = assert!(core::mem::size_of::<conn::Conn>() == 440);
const _: () = assert!(core::mem::size_of::<event::ConnChange>() == 72);
const _: () = assert!(core::mem::size_of::<event::TableFull>() == 96);
const _: () = assert!(core::mem::size_of::<event::Snapshot>() == 72 + size_of::<conn::Conn>());
const _: () = assert!(core::mem::size_of::<threshold::ThresholdCommand>() == 112);
const _: () = assert!(core::mem::size_of::<contents::ContentHeader>() == 64);
const _: () = assert!(core::mem::size_of::<contents::ContentCounters>() == 32);
const _: () = assert!(core::mem::size_of::<filter::Insn>() == 8);
const _: () = assert!(core::mem::size_of::<filter::Program>() == 8 + 8 * filter::MAX_INSNS);
