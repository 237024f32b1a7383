//! The maps shared with the agent. Names are the contract with `conntrack-agent/src/datapath/kernel/`.

use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, HashMap, PerCpuArray, ProgramArray, RingBuf};
use conntrack_common::conn::Conn;
use conntrack_common::contents::ContentCounters;
use conntrack_common::flood::State;
use conntrack_common::key::FlowKey;
use conntrack_common::packet::{MAX_HEADER_BYTES, PacketMeta};
use conntrack_common::stats::{IfaceCounters, MAX_IFACES, STAT_COUNT};

/// Default size of [`FLOWS`]; the agent sets the real one at load time
/// (`EbpfLoader::set_max_entries`).
pub const DEFAULT_MAX_FLOWS: u32 = 262_144;

/// Open connections, keyed canonically. Entries are created here and removed by the agent.
#[map]
pub static FLOWS: HashMap<FlowKey, Conn> = HashMap::with_max_entries(DEFAULT_MAX_FLOWS, 0);

/// Zeek's `likely_server_ports`: indexed by port, a bit per protocol
/// (`proto::likely_port_bit`). Filled by the agent. An array (64 KiB) rather than a hash keyed
/// by port and protocol: its lookup is inlined by the kernel, and a new UDP flow asks up to
/// twice.
#[map]
pub static LIKELY_SERVER_PORTS: Array<u8> = Array::with_max_entries(1 << 16, 0);

/// Events for the agent (`conntrack_common::event::Event`), submitted without wakeup: the agent
/// polls.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Per-CPU counters, indexed by `conntrack_common::stats`.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Agent settings: [`CONFIG_FLAGS`] holds the `CONFIG_*` bits, [`CONFIG_CLOCK_OFFSET`] the
/// nanoseconds to add to `bpf_ktime_get_ns` (CLOCK_MONOTONIC) to get wall-clock time.
#[map]
pub static CONFIG: Array<u64> = Array::with_max_entries(4, 0);

/// Index of the flags word in [`CONFIG`].
pub const CONFIG_FLAGS: u32 = 0;
/// Index of the monotonic-to-wall-clock offset in [`CONFIG`].
pub const CONFIG_CLOCK_OFFSET: u32 = 1;
/// Index in [`CONFIG`] of the content extraction cap: payload bytes per connection and
/// direction (0 = none).
pub const CONFIG_CONTENTS_CAP: u32 = 2;
/// Index in [`CONFIG`] of the content extraction rate cap: payload bytes per second over all
/// connections (0 = none).
pub const CONFIG_CONTENTS_RATE: u32 = 3;
/// `CONFIG` flag: the program runs under BPF_PROG_TEST_RUN for a replay; trust `__sk_buff.tstamp`
/// and `cb[0]` (live, `cb[]` holds whatever the qdisc layer left there).
pub const CONFIG_REPLAY: u64 = 1;
/// `CONFIG` flag: NewConn events carry the first packet's link-layer fields
/// (`event::ConnL2`), for Zeek's MAC and VLAN policy fields.
pub const CONFIG_L2: u64 = 2;
/// `CONFIG` flag: a capture filter is in `filter::FILTER`; stage 1 runs it first.
pub const CONFIG_FILTER: u64 = 4;
/// `CONFIG` flag: new TCP/UDP connections hand their first payload to the agent for service
/// detection (`engine::EngineConfig::sample_services`).
pub const CONFIG_SERVICE: u64 = 8;
/// `CONFIG` flags bits 8..12: how many tunnel layers to decapsulate (Zeek's
/// `Tunnel::max_depth`; 0: none, tunnels are ordinary packets). tunnel.rs.
pub const CONFIG_TUNNEL_SHIFT: u64 = 8;
pub const CONFIG_TUNNEL_MASK: u64 = 0xf;

/// Per-CPU working memory: too large for the 512-byte stack.
#[repr(C)]
pub struct Scratch {
    /// The transport header read from the packet (when our copy was cut, and a SYN's TCP
    /// header for the window-scale option). A stack buffer fails the verifier (variable-offset
    /// stack reads); here the verifier's loose bound on the option walk's index (a few bytes
    /// past the end) still lands inside `frame`, which follows. The walk itself never leaves
    /// the header.
    pub l4_hdr: [u8; L4_HEADER_BYTES],
    /// The first bytes of the frame, copied with `bpf_skb_load_bytes`.
    pub frame: [u8; MAX_HEADER_BYTES],
    /// The parsed packet.
    pub meta: PacketMeta,
    /// Packet time (ns).
    pub now_ns: u64,
    /// 1 if the transport checksum is good (or not checked).
    pub checksum_ok: u32,
    /// Bytes of `frame` from the IP header on.
    pub ip_len: u32,
    /// Offset of the IP header in `frame`.
    pub l3_offset: u32,
    /// Ethertype in front of the IP header.
    pub ethertype: u32,
    /// `__sk_buff.gso_segs`.
    pub gso_segs: u32,
    /// `__sk_buff.ifindex`: the interface the packet was seen on (stored in a new `Conn`).
    pub ifindex: u32,
    /// 1 if the frame is longer than our copy (`MAX_HEADER_BYTES`).
    pub copy_cut: u32,
    /// Nonzero if the replayed packet had IPv4 total length 0 (segmentation offload; the
    /// agent passes a copy with the captured length): Zeek counts 0 IP bytes for it. From the
    /// transport stage on, the captured IP length (where the payload ends).
    pub ip_len_zero: u32,
    /// 1 in a replay (BPF_PROG_TEST_RUN): the frame may be a clipped copy, so whether the TCP
    /// payload was captured whole is the agent's verdict, [`Scratch::payload_cut`].
    pub replay: u32,
    /// Replay: 1 if the agent found the packet's payload cut by the capture's snap length.
    pub payload_cut: u32,
    /// `engine::Changes` bits of stage 2's lookup (NEW, REUSED, FLIPPED) for stage 3.
    pub created: u32,
    /// `engine::Changes` of the packet after stage 3, for the threshold stage.
    pub changes: u32,
    /// What the contents stage does with the packet's payload, set by the threshold stage:
    /// [`CONTENTS_FROM_ORIG`], [`CONTENTS_EXTRACT`], [`CONTENTS_SAMPLE`] bits.
    pub contents_todo: u32,
    /// A rare condition for the note stage to log (`note::Note`), 0 for none.
    pub note: u32,
    /// Tunnels (tunnel.rs): the layer being processed, 0 for the outer packet.
    pub depth: u32,
    /// The layers to decapsulate at most (`CONFIG_TUNNEL_SHIFT`).
    pub max_depth: u32,
    /// Offset in the packet of `frame[0]`: 0 for the outer packet, the inner frame's start
    /// for an inner one (the tunnel stage copies it to the front of `frame`).
    pub base: u32,
    /// The current layer's encapsulation id (`tunnel::hop_id`; 0 outside tunnels).
    pub encap_id: u32,
    /// The innermost tunnel's type (`tunnel::TunnelType as u8`).
    pub tunnel: u32,
    /// Replay: the agent's verdicts on the inner layers (`cb[1]`: per layer, 2 bits: bad
    /// transport checksum, dropped); 0 live.
    pub inner_verdicts: u32,
    /// `event::ENCAP_NEW` / `ENCAP_CHANGED` of the packet's connection, decided in the update
    /// stage, sent by the stage that finishes the packet (`tunnel::emit_encap`).
    pub encap_event: u32,
    /// Bytes of the frame as captured: the frame's length live, the agent's `wire_len` in a
    /// replay (the frame handed to the program may be clipped); for inner lengths.
    pub captured_len: u32,
    /// The start of a tunnel packet's payload, which the decapsulation rules read (tunnel.rs).
    pub window: [u8; TUNNEL_WINDOW],
    /// The innermost tunnel (`event::EncapEvent::parent`).
    pub parent: FlowKey,
    /// The packet's flow key.
    pub key: FlowKey,
    /// A connection opened by a plain SYN in stage 1 (fast.rs), built here and then inserted
    /// whole.
    pub conn: Conn,
}

/// [`Scratch::contents_todo`]: the payload was sent by the originator.
pub const CONTENTS_FROM_ORIG: u32 = 1;
/// [`Scratch::contents_todo`]: the payload is extracted (content extraction).
pub const CONTENTS_EXTRACT: u32 = 2;
/// [`Scratch::contents_todo`]: the payload's first bytes are a service sample.
pub const CONTENTS_SAMPLE: u32 = 4;

/// Bytes of the transport header read from the packet: the largest TCP header (data offset
/// 15) plus room to spare.
pub const L4_HEADER_BYTES: usize = 64;

/// Bytes of a tunnel packet's payload the tunnel stage reads (a power of two).
pub const TUNNEL_WINDOW: usize = 512;

/// One [`Scratch`] per CPU (a TC program is not preempted by itself on the same CPU).
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Tail-call targets, filled by the agent: the stages are verified separately, which keeps
/// each under the verifier's complexity limit.
#[map]
pub static STAGES: ProgramArray = ProgramArray::with_max_entries(6, 0);

/// The sensor-mode XDP stages (`conntrack_xdp_*`), at the same indices as in [`STAGES`]: a
/// tail call must stay within one program type.
#[map]
pub static XDP_STAGES: ProgramArray = ProgramArray::with_max_entries(6, 0);

/// Sensor mode settings, written by the agent: [`SENSOR_DROP`] holds 1 when the XDP programs
/// drop the (mirrored) packets after accounting, else they pass them on.
#[map]
pub static SENSOR: Array<u32> = Array::with_max_entries(1, 0);

/// Index of the drop flag in [`SENSOR`].
pub const SENSOR_DROP: u32 = 0;

/// Per-interface packets and bytes, indexed by ifindex (entry 0: every ifindex from
/// `MAX_IFACES` on), counted by stage 1 (one map update per packet).
#[map]
pub static IFACE_STATS: PerCpuArray<IfaceCounters> = PerCpuArray::with_max_entries(MAX_IFACES, 0);

/// Index of `conntrack_parse` in [`STAGES`].
pub const STAGE_PARSE: u32 = 0;
/// Index of `conntrack_update` in [`STAGES`].
pub const STAGE_UPDATE: u32 = 1;
/// Index of `conntrack_threshold` in [`STAGES`] (entered only when a threshold is armed).
pub const STAGE_THRESHOLD: u32 = 2;
/// Index of `conntrack_contents` in [`STAGES`] (entered only for a packet with payload of a
/// connection that extracts its direction).
pub const STAGE_CONTENTS: u32 = 3;
/// Index of `conntrack_note` in [`STAGES`]: the log line of a rare condition (note.rs).
pub const STAGE_NOTE: u32 = 4;
/// Index of `conntrack_tunnel` in [`STAGES`]: the next layer of a tunnel packet (tunnel.rs).
pub const STAGE_TUNNEL: u32 = 5;

/// Content extraction: payload records (`contents::ContentRecord`) of flagged connections,
/// submitted without wakeup (the agent polls). Large: a live transfer fills it at line rate
/// between two polls.
#[map]
pub static CONTENTS: RingBuf = RingBuf::with_byte_size(32 * 1024 * 1024, 0);

/// Content extraction: bytes delivered / not delivered per connection and direction, created
/// by the contents stage, removed by the agent with the connection.
#[map]
pub static CONTENTS_CONNS: HashMap<FlowKey, ContentCounters> = HashMap::with_max_entries(65_536, 0);

/// Content extraction rate cap: [start of the current one-second window (ns), bytes admitted
/// in it], shared by all CPUs (updated with atomics).
#[map]
pub static CONTENTS_RATE: Array<u64> = Array::with_max_entries(2, 0);

/// The bench's flow generator (`bench_flood`, never attached): its state
/// (`conntrack_common::flood::State`), set by the bench before each step and advanced by the
/// program.
#[map]
pub static FLOOD: Array<State> = Array::with_max_entries(1, 0);
