//! Where the flow engine runs. [`Datapath`] is the contract of docs/design.md, with the records
//! it delivers (events, content chunks) and its errors; [`host`] runs conntrack-common's engine
//! over a `HashMap` in this process, [`kernel`] drives the loaded eBPF program.

use crate::capture::link::synth_ethernet;
use conntrack_common::conn::Conn;
use conntrack_common::contents::{CONTENT_FROM_ORIG, ContentCounters, ContentHeader};
use conntrack_common::event::Event;
use conntrack_common::key::FlowKey;
use conntrack_common::packet::{IpView, PacketMeta, ParseError};
use conntrack_common::threshold::{self, ThresholdCommand};
use conntrack_common::tunnel::EncapChange;

/// Why the datapath did not use a frame.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DatapathError {
    #[error("unparsable packet ({0:?})")]
    Parse(ParseError),
    #[error("IP fragment reached the engine")]
    Fragment,
    #[error("{0}")]
    Other(String),
}

/// Why a threshold command was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error("no such connection in the flow table")]
    NotFound,
    #[error("threshold command failed: {0}")]
    Failed(String),
}

/// Decodes the `conntrack_control` result word: the crossed slots, or why nothing was done.
pub fn decode_control_result(r: u32) -> Result<u32, ThresholdError> {
    if r & threshold::RESULT_APPLIED != 0 {
        Ok(r & threshold::ALL_SLOTS)
    } else if r & threshold::RESULT_NOT_FOUND != 0 {
        Err(ThresholdError::NotFound)
    } else {
        Err(ThresholdError::Failed(format!("result {r:#x}")))
    }
}

/// One payload record from the datapath.
#[derive(Debug, Clone)]
pub struct ContentChunk {
    pub hdr: ContentHeader,
    pub data: Vec<u8>,
}

impl ContentChunk {
    /// The record as the capabilities are given it.
    pub fn content(&self) -> Content<'_> {
        Content {
            hdr: &self.hdr,
            data: &self.data,
        }
    }
}

/// A payload record as the capabilities see it: a [`ContentChunk`], or a service sample the
/// host engine left in its packet ([`Datapath::take_contents`]).
#[derive(Debug, Clone, Copy)]
pub struct Content<'a> {
    pub hdr: &'a ContentHeader,
    pub data: &'a [u8],
}

impl Content<'_> {
    pub fn is_orig(&self) -> bool {
        self.hdr.flags & CONTENT_FROM_ORIG != 0
    }
}

/// The transport payload of a parsed frame (what the datapath extracts): from the end of the
/// transport header to the end of the IP packet per its header, cut at the capture.
pub fn payload_of<'a>(frame: &'a [u8], meta: &PacketMeta) -> Option<&'a [u8]> {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    while matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
        off += 4;
        ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    }
    ip_payload_of(frame.get(off + 2..)?, meta)
}

/// [`payload_of`] of an IP packet (no link layer).
pub fn ip_payload_of<'a>(ip: &'a [u8], meta: &PacketMeta) -> Option<&'a [u8]> {
    let start = meta.ip_len.checked_sub(meta.payload_len)? as usize;
    let end = (start + meta.payload_len as usize).min(ip.len());
    ip.get(start..end)
}

/// What [`Datapath::process_ip`] leaves for the agent besides its events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Processed {
    /// [`Datapath::take_contents`] may have something ([`Datapath::contents_pending`]):
    /// answered with the packet, which spares the agent a call per packet.
    pub contents: bool,
}

/// The flow table plus the engine. Frames are Ethernet frames; `checksum_ok` is the host's
/// transport checksum verdict for the packet.
pub trait Datapath {
    fn process(
        &mut self,
        frame: &[u8],
        ts_ns: u64,
        checksum_ok: bool,
        events: &mut Vec<Event>,
    ) -> Result<(), DatapathError>;
    /// An IP packet of version `version` (no link layer; the replay's packets): what
    /// `process` does with the frame [`synth_ethernet`] makes of it, which is what the default
    /// does in `scratch` (the kernel engine runs the program on a frame). The host engine
    /// parses the IP packet where it lies, taking what `view` (the replay's `ip_view` of
    /// `ip`, if it has one) already read of the header rather than reading it again.
    #[allow(clippy::too_many_arguments)]
    fn process_ip(
        &mut self,
        version: u8,
        ip: &[u8],
        _view: Option<&IpView>,
        ts_ns: u64,
        checksum_ok: bool,
        events: &mut Vec<Event>,
        scratch: &mut Vec<u8>,
    ) -> Result<Processed, DatapathError> {
        synth_ethernet(version, ip, scratch);
        self.process(scratch, ts_ns, checksum_ok, events)?;
        Ok(Processed {
            contents: self.contents_pending(),
        })
    }
    fn lookup(&self, key: &FlowKey) -> Option<Conn>;
    /// Zeek's tunnel-change rule (common's `tunnel::check_encap`) for connection `key`, whose
    /// packet just came in encapsulation `id` (0: none); None when the table does not have
    /// it or the datapath does not decapsulate (the kernel's, for now).
    fn check_encap(&mut self, _key: &FlowKey, _id: u32, _is_new: bool) -> Option<EncapChange> {
        None
    }
    /// Common's `tunnel::confirm_header` for UDP connection `key` and one of its payloads:
    /// marks a tunnel whose header Zeek's analyzer confirms. The kernel's tunnel stage marks
    /// its connections itself.
    fn confirm_tunnel_header(&mut self, _key: &FlowKey, _payload: &[u8]) {}
    fn remove(&mut self, key: &FlowKey) -> Option<Conn>;
    /// [`Datapath::remove`], with the service word the datapath kept for the connection
    /// ([`Datapath::service_word`]; 0 when it keeps none).
    fn remove_with_service(&mut self, key: &FlowKey) -> Option<(Conn, u32)> {
        self.remove(key).map(|c| (c, 0))
    }
    /// The service capability's word for connection `key` (`ThresholdTarget::service_mut`),
    /// when the datapath keeps it with the connection: the host engine does, in the entry the
    /// sample's packet has just read. None: the agent's tracker keeps it (the kernel's table
    /// has no room for it).
    fn service_word(&mut self, _key: &FlowKey) -> Option<&mut u32> {
        None
    }
    fn keys(&self) -> Vec<FlowKey>;
    /// Calls `f` with the connection, if the table has it (the host's table without a copy:
    /// timers read a connection each time they fire).
    fn with_conn(&self, key: &FlowKey, f: &mut dyn FnMut(&Conn)) -> bool {
        match self.lookup(key) {
            Some(c) => {
                f(&c);
                true
            }
            None => false,
        }
    }
    /// Up to `max` keys after `after` (from the first with `None`), in the table's own order:
    /// a walk of the table in steps. A key removed meanwhile may restart the walk (as the
    /// kernel's hash maps do); the default takes the keys in sorted order.
    fn keys_after(&self, after: Option<&FlowKey>, max: usize) -> Vec<FlowKey> {
        let mut all = self.keys();
        all.sort_unstable();
        all.into_iter()
            .filter(|k| after.is_none_or(|a| k > a))
            .take(max)
            .collect()
    }
    /// For the shutdown drain: batches of connections (a few thousand each, with their
    /// keys) removed from the table in its own order by a thread of its own, so that removing
    /// the next batch overlaps logging this one. None when the datapath has no batch removal;
    /// the caller then removes key by key, as it does whatever the batches left.
    fn drain_batches(&mut self) -> Option<std::sync::mpsc::Receiver<Vec<(FlowKey, Conn)>>> {
        None
    }
    /// Writes the threshold slots of `cmd.mask` of connection `cmd.key` without touching the
    /// rest of it (the kernel datapath runs `conntrack_control`, which takes the connection's
    /// lock), then checks them as Zeek does on a set. Returns the slots that crossed (cleared).
    fn set_thresholds(&mut self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError>;

    /// Service detection decided connection `key`: its packets need not be sampled any more
    /// (samples still coming are ignored). True when it stopped it here. The kernel's
    /// sampling is left to end by its budget (a few packets per connection): a command per
    /// connection would cost more live than the samples it saves.
    fn stop_sampling(&mut self, _key: &FlowKey) -> bool {
        false
    }

    /// Service detection can learn nothing more of UDP connection `key` but from a QUIC
    /// Initial: of its samples still to come only those that may be one
    /// (`contents::may_be_quic_initial`) need be handed over; the others are still counted
    /// against the budget. True when it narrowed them here. As with
    /// [`Datapath::stop_sampling`], the kernel's are left as they are.
    fn narrow_sampling(&mut self, _key: &FlowKey) -> bool {
        false
    }

    /// Content extraction: moves the payload records produced since the last call to `out`.
    fn drain_contents(&mut self, _out: &mut Vec<ContentChunk>) {}

    /// What [`Datapath::drain_contents`] moves to `out`, and the service sample of the packet
    /// just processed when the datapath left its bytes in the packet (the host engine: a
    /// sample is a packet's first bytes, read where they are rather than copied): its header
    /// and where its bytes are in the buffer given to [`Datapath::process`] or
    /// [`Datapath::process_ip`]. The sample comes before the records (which have the
    /// kernel's samples). One call per packet that has any.
    fn take_contents(
        &mut self,
        out: &mut Vec<ContentChunk>,
    ) -> Option<(ContentHeader, std::ops::Range<usize>)> {
        self.drain_contents(out);
        None
    }

    /// Whether [`Datapath::take_contents`] may have something: false lets the agent skip it
    /// after a packet that produced nothing (most packets, once sampling ended). True when
    /// the datapath cannot tell cheaply.
    fn contents_pending(&self) -> bool {
        true
    }
    /// Content extraction: a connection's delivered / not delivered byte counters.
    fn content_counters(&self, _key: &FlowKey) -> Option<ContentCounters> {
        None
    }
    /// Content extraction: drops a removed connection's counters.
    fn forget_contents(&mut self, _key: &FlowKey) {}
    /// Content extraction caps: bytes per connection and direction, bytes per second over all
    /// connections (0 = none).
    fn set_content_caps(&mut self, _per_conn: u64, _rate: u64) -> Result<(), DatapathError> {
        Ok(())
    }
    /// Zeek's MAC/VLAN policy fields: every NewConn from now on carries the link-layer fields
    /// of the connection's first packet (`Event::NewConnL2`). Off by default, and then free.
    fn set_l2_events(&mut self, on: bool) -> Result<(), DatapathError>;
    /// Tunnel decapsulation in the datapath itself (the kernel's tunnel stage), up to `depth`
    /// layers (0: off). Returns whether this datapath decapsulates: the host engine does not
    /// (its replay decapsulates in `read`, handing it each inner packet).
    fn set_tunnel_depth(&mut self, _depth: u32) -> Result<bool, DatapathError> {
        Ok(false)
    }
    /// Replay through a datapath that decapsulates: the agent's verdicts on the next packet's
    /// inner layers (`capture::tunnels`: per layer, bad checksum and dropped bits), `None`
    /// when the packet carries no tunnel.
    fn set_inner_verdicts(&mut self, _verdicts: Option<u32>) {}
}
/// Offset of the ethertype that follows an Ethernet frame's VLAN tags (12 untagged): the
/// replay's frames carry the captured tags when the VLAN policy fields are on.
pub fn ethertype_offset(frame: &[u8]) -> usize {
    let mut off = 12;
    for _ in 0..conntrack_common::packet::MAX_VLAN_TAGS {
        match frame.get(off..off + 2) {
            Some([0x81, 0x00] | [0x88, 0xa8] | [0x91, 0x00]) => off += 4,
            _ => break,
        }
    }
    off
}

/// True if an Ethernet frame (VLAN tags skipped) holds less of its IP packet than the IP
/// header's length says: the capture's snap length cut it (`PacketMeta::payload_cut` for the
/// kernel, which may be handed a clipped copy).
pub fn ip_cut(frame: &[u8]) -> bool {
    let et = ethertype_offset(frame);
    let l3 = et + 2;
    let captured = frame.len().saturating_sub(l3);
    let be16 = |o: usize| {
        frame
            .get(o..o + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    };
    let ip_len = match frame.get(et..l3) {
        Some([0x08, 0x00]) => be16(l3 + 2),
        Some([0x86, 0xdd]) => be16(l3 + 4).map(|p| p + 40),
        _ => None,
    };
    ip_len.is_some_and(|len| captured < len)
}

/// For an Ethernet frame (VLAN tags skipped) carrying IPv4 with total length 0, a copy whose
/// total length is the captured IP length.
pub fn tso_zero_length_fix(frame: &[u8]) -> Option<Vec<u8>> {
    let et = ethertype_offset(frame);
    let l3 = et + 2;
    if frame.len() < l3 + 20 || frame[et..l3] != [0x08, 0x00] || frame[l3] >> 4 != 4 {
        return None;
    }
    if frame[l3 + 2] != 0 || frame[l3 + 3] != 0 {
        return None;
    }
    let len = u16::try_from(frame.len() - l3).ok()?;
    let mut v = frame.to_vec();
    v[l3 + 2..l3 + 4].copy_from_slice(&len.to_be_bytes());
    Some(v)
}

/// [`tso_zero_length_fix`] of an IP packet of version `version` (what it does to the frame
/// [`synth_ethernet`] makes of it).
pub fn tso_zero_length_fix_ip(version: u8, ip: &[u8]) -> Option<Vec<u8>> {
    if version != 4 || ip.len() < 20 || ip[0] >> 4 != 4 || ip[2] != 0 || ip[3] != 0 {
        return None;
    }
    let len = u16::try_from(ip.len()).ok()?;
    let mut v = ip.to_vec();
    v[2..4].copy_from_slice(&len.to_be_bytes());
    Some(v)
}

pub mod host;
pub mod kernel;
