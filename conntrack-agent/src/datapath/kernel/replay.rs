//! Replay through the loaded program ([`KernelDatapath`]): one BPF_PROG_TEST_RUN of the TC
//! entry program per frame, with the `__sk_buff` fields a replay sets.

use super::flows::FlowMap;
use super::{Kernel, KernelOptions, PROGRAMS};
use crate::datapath::{ContentChunk, Datapath, DatapathError, ThresholdError, tso_zero_length_fix};
use anyhow::{Context, Result};
use aya::programs::{TestRun, TestRunOptions};
use conntrack_common::conn::Conn;
use conntrack_common::contents::{self, ContentCounters};
use conntrack_common::event::Event;
use conntrack_common::key::FlowKey;
use conntrack_common::packet::MAX_HEADER_BYTES;
use conntrack_common::stats::Stat;
use conntrack_common::threshold::ThresholdCommand;

/// `__sk_buff.cb[0]` bits in replay: the transport checksum is bad / replay mode.
const CB_BAD_CHECKSUM: u32 = 1;
const CB_REPLAY: u32 = 2;
const CB_IP_LEN_ZERO: u32 = 4;
const CB_PAYLOAD_CUT: u32 = 8;
/// The agent found a tunnel: the stage chain takes the packet, and `cb[1]` has the verdicts on
/// its inner layers.
const CB_TUNNEL: u32 = 16;

/// The largest input BPF_PROG_TEST_RUN takes for a TC program: a page less the skb's
/// headroom and `skb_shared_info` (3712 bytes on Linux 6.18 x86_64; larger inputs fail with
/// EINVAL), with room for other layouts. A frame with payload to extract is clipped here.
const TEST_RUN_LIMIT: usize = 3584;
const _: () = assert!(TEST_RUN_MAX_BYTES <= TEST_RUN_LIMIT);
// A service sample (after at most `MAX_HEADER_BYTES` of headers) fits whole.
const _: () = assert!(MAX_HEADER_BYTES + contents::SAMPLE_BYTES as usize <= TEST_RUN_LIMIT);

/// `struct __sk_buff` (uapi): size and the offsets of the fields a replay sets.
const SKB_SIZE: usize = 192;
const SKB_CB0: usize = 48;
const SKB_CB1: usize = 52;
const SKB_TSTAMP: usize = 152;
/// `wire_len`: the whole captured frame's length, which the program reads for a tunnel packet's
/// inner lengths when the frame it is handed was clipped to `TEST_RUN_MAX_BYTES`.
const SKB_WIRE_LEN: usize = 160;

/// Bytes of a frame handed to BPF_PROG_TEST_RUN: the program reads only the first
/// `MAX_HEADER_BYTES` (lengths come from the headers), and the kernel refuses inputs larger
/// than about a page (reassembled datagrams can be). An Ethernet MTU's frame fits whole, so the
/// fast path, which sees a clipped frame as a payload the capture cut, takes it (whether the
/// capture cut it is passed in `cb[0]`).
const TEST_RUN_MAX_BYTES: usize = if MAX_HEADER_BYTES > 3072 {
    MAX_HEADER_BYTES
} else {
    3072
};

/// Replay through the loaded program: one BPF_PROG_TEST_RUN per frame, with the packet time in
/// `__sk_buff.tstamp` and the checksum verdict in `cb[0]`, then the ring buffer is drained.
pub struct KernelDatapath {
    kernel: Kernel,
    flows: FlowMap,
    ctx: [u8; SKB_SIZE],
    /// Service samples are on: frames carry their first payload bytes too.
    service: bool,
    /// The next packet's inner-layer verdicts (`Datapath::set_inner_verdicts`).
    inner: Option<u32>,
}

impl KernelDatapath {
    /// Packets the program applied on its fast path so far (`Stat::FastPath`), and the
    /// connections it opened there (`Stat::FastOpens`).
    pub fn fast_path_packets(&self) -> Result<(u64, u64)> {
        let stats = self.kernel.stats()?;
        let get = |stat| {
            stats
                .iter()
                .find(|(s, _)| *s == stat)
                .map_or(0, |(_, n)| *n)
        };
        Ok((get(Stat::FastPath), get(Stat::FastOpens)))
    }

    /// `service`: new connections hand their first payload to the agent (service detection).
    pub fn new(
        likely_server_ports: &[(u16, u8)],
        max_flows: u32,
        service: bool,
    ) -> Result<KernelDatapath> {
        let mut kernel = Kernel::load(&KernelOptions {
            max_flows,
            likely_server_ports,
            replay: true,
            contents: true,
            service,
            ring_bytes: 0,
            kernel_log: None,
            filter: None,
        })?;
        let flows = kernel.take_flows().context("FLOWS already taken")?;
        Ok(KernelDatapath {
            kernel,
            flows,
            ctx: [0; SKB_SIZE],
            service,
            inner: None,
        })
    }
}

impl Datapath for KernelDatapath {
    fn process(
        &mut self,
        frame: &[u8],
        ts_ns: u64,
        checksum_ok: bool,
        out: &mut Vec<Event>,
    ) -> Result<(), DatapathError> {
        // The kernel wants at least an Ethernet header, and (Linux 6.x) refuses with EINVAL an
        // untagged IPv4/IPv6 frame cut inside the IP header; the host parser rejects both as
        // truncated, so neither engine uses them (found by `fuzz-kernel`).
        if frame.len() < 14 || ip_header_cut(frame) {
            return Ok(());
        }
        // IPv4 total length 0 (accepted by the caller as Zeek does with -C): the program
        // parses a copy with the captured length and counts 0 IP bytes, like the host engine.
        let patched = tso_zero_length_fix(frame);
        let frame = patched.as_deref().unwrap_or(frame);
        // Content extraction and service samples need the payload (as much as the kernel
        // takes: the rest of a larger frame is counted as not delivered); otherwise the
        // headers are enough.
        let data = if self.flows.contents.active || self.service {
            frame.get(..TEST_RUN_LIMIT).unwrap_or(frame)
        } else {
            frame.get(..TEST_RUN_MAX_BYTES).unwrap_or(frame)
        };
        let cb0 = CB_REPLAY
            | if checksum_ok { 0 } else { CB_BAD_CHECKSUM }
            | if patched.is_some() { CB_IP_LEN_ZERO } else { 0 }
            | if super::super::ip_cut(frame) {
                CB_PAYLOAD_CUT
            } else {
                0
            };
        let inner = self.inner.take();
        let cb0 = cb0 | if inner.is_some() { CB_TUNNEL } else { 0 };
        self.ctx[SKB_CB0..SKB_CB0 + 4].copy_from_slice(&cb0.to_ne_bytes());
        self.ctx[SKB_CB1..SKB_CB1 + 4].copy_from_slice(&inner.unwrap_or(0).to_ne_bytes());
        self.ctx[SKB_TSTAMP..SKB_TSTAMP + 8].copy_from_slice(&ts_ns.to_ne_bytes());
        let wire_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        self.ctx[SKB_WIRE_LEN..SKB_WIRE_LEN + 4].copy_from_slice(&wire_len.to_ne_bytes());
        let prog = self
            .kernel
            .program(PROGRAMS[0].0)
            .map_err(|e| DatapathError::Other(format!("{e:#}")))?;
        prog.test_run(TestRunOptions {
            data_in: Some(data),
            ctx_in: Some(&self.ctx),
            ..TestRunOptions::default()
        })
        .map_err(|e| {
            let cause = std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
            DatapathError::Other(format!("BPF_PROG_TEST_RUN: {e}{cause}"))
        })?;
        self.kernel.drain_events(out);
        Ok(())
    }
    fn drain_contents(&mut self, out: &mut Vec<ContentChunk>) {
        self.flows.drain_contents(out)
    }
    fn content_counters(&self, key: &FlowKey) -> Option<ContentCounters> {
        Datapath::content_counters(&self.flows, key)
    }
    fn forget_contents(&mut self, key: &FlowKey) {
        Datapath::forget_contents(&mut self.flows, key)
    }
    fn set_content_caps(&mut self, per_conn: u64, rate: u64) -> Result<(), DatapathError> {
        self.flows.set_content_caps(per_conn, rate)
    }
    fn set_l2_events(&mut self, on: bool) -> Result<(), DatapathError> {
        self.flows.set_l2_events(on)
    }
    fn set_tunnel_depth(&mut self, depth: u32) -> Result<bool, DatapathError> {
        self.flows.set_tunnel_depth(depth)
    }
    fn set_inner_verdicts(&mut self, verdicts: Option<u32>) {
        self.inner = verdicts;
    }
    fn lookup(&self, key: &FlowKey) -> Option<Conn> {
        self.flows.lookup(key)
    }
    fn remove(&mut self, key: &FlowKey) -> Option<Conn> {
        self.flows.remove(key)
    }
    fn keys(&self) -> Vec<FlowKey> {
        self.flows.keys()
    }
    fn set_thresholds(&mut self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
        self.flows.command(cmd)
    }
}

/// True for an untagged IPv4 (IPv6) frame with fewer than 20 (40) bytes after the Ethernet
/// header: BPF_PROG_TEST_RUN cannot run it.
fn ip_header_cut(frame: &[u8]) -> bool {
    let et = super::super::ethertype_offset(frame);
    let l3 = frame.len().saturating_sub(et + 2);
    match frame.get(et..et + 2) {
        Some([0x08, 0x00]) => l3 < 20,
        Some([0x86, 0xdd]) => l3 < 40,
        _ => false,
    }
}

/// The replay datapath as the agent core takes it.
pub fn replay_datapath(
    likely_server_ports: &[(u16, u8)],
    max_flows: u32,
    service: bool,
) -> Result<Box<dyn Datapath>> {
    Ok(Box::new(KernelDatapath::new(
        likely_server_ports,
        max_flows,
        service,
    )?))
}

#[cfg(test)]
mod tests {
    use super::ip_header_cut;

    #[test]
    fn test_run_skips_frames_cut_inside_the_ip_header() {
        let mut v4 = vec![0u8; 14 + 20];
        v4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert!(!ip_header_cut(&v4));
        assert!(ip_header_cut(&v4[..33]));
        let mut v6 = vec![0u8; 14 + 40];
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert!(!ip_header_cut(&v6));
        assert!(ip_header_cut(&v6[..53]));
        // Behind a VLAN tag the kernel sees no IP protocol and runs the program.
        let mut tagged = vec![0u8; 20];
        tagged[12..14].copy_from_slice(&[0x81, 0x00]);
        assert!(!ip_header_cut(&tagged));
    }
}
