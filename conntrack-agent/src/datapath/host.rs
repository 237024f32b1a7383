//! The engine on the host: conntrack-common's flow engine over a flow table ([`slab`]), for
//! `read --engine host` and the tests. Content extraction and thresholds behave as the
//! kernel's do.

mod slab;

use super::{
    ContentChunk, Datapath, DatapathError, Processed, ThresholdError, ip_payload_of, payload_of,
    tso_zero_length_fix, tso_zero_length_fix_ip,
};
use crate::util::hashing::{FastMap, FastSet};
use conntrack_common::conn::Conn;
use conntrack_common::contents::{self, ContentCounters, ContentHeader};
use conntrack_common::engine::{self, Changes, EngineConfig};
use conntrack_common::event::Event;
use conntrack_common::key::FlowKey;
use conntrack_common::packet::{
    IpView, PacketMeta, ParseError, l2, parse_ethernet, parse_ip, parse_ip_viewed,
};
use conntrack_common::proto;
use conntrack_common::threshold::{self, ThresholdCommand};
use conntrack_common::tunnel::{self, EncapChange};
use std::ops::Range;

/// likely_server_ports on the host.
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    ports: FastSet<(u16, u8)>,
    /// New connections hand their first payload over (service detection).
    samples: bool,
}

impl HostConfig {
    pub fn new(ports: &[(u16, u8)]) -> Self {
        Self {
            ports: ports.iter().copied().collect(),
            samples: false,
        }
    }

    /// With service samples on or off (as the kernel's `CONFIG_SERVICE`).
    pub fn with_service_samples(mut self, on: bool) -> Self {
        self.samples = on;
        self
    }
}

impl EngineConfig for HostConfig {
    fn likely_server_port(&self, port: u16, proto: u8) -> bool {
        self.ports.contains(&(port, proto))
    }

    fn sample_services(&self) -> bool {
        self.samples
    }
}

/// The engine on the host: a table of connections.
pub struct HostDatapath {
    table: slab::FlowSlab,
    cfg: HostConfig,
    /// Content extraction, as the kernel's contents stage does it.
    contents: HostContents,
    /// NewConn events carry the first packet's link-layer fields (`set_l2_events`).
    l2_events: bool,
}

/// The host's side of content extraction: records, counters and caps.
#[derive(Default)]
struct HostContents {
    chunks: Vec<ContentChunk>,
    counters: FastMap<FlowKey, ContentCounters>,
    per_conn: u64,
    rate: u64,
    window: [u64; 2],
    /// Some connection was ever asked to extract: until then no packet needs the second
    /// lookup that `extract` does.
    armed: bool,
    /// The last packet's service sample: its header and where its bytes are in the packet
    /// (`Datapath::take_contents`).
    sample: Option<(ContentHeader, Range<usize>)>,
}

impl HostDatapath {
    pub fn new(cfg: HostConfig) -> Self {
        Self {
            table: slab::FlowSlab::default(),
            cfg,
            contents: HostContents::default(),
            l2_events: false,
        }
    }

    /// After the engine ran on `meta`: the packet's payload (of `payload`, the packet's
    /// transport payload as captured) as content records if its connection extracts that
    /// direction (caps and counters as in the kernel).
    fn extract(
        &mut self,
        key: &FlowKey,
        payload: &[u8],
        meta: &PacketMeta,
        ts_ns: u64,
        checksum_ok: bool,
    ) {
        let key = *key;
        let Some(conn) = self.table.get(&key) else {
            return;
        };
        if conn.thr_armed & contents::EXTRACT_BITS == 0 {
            return;
        }
        let is_orig = engine::is_orig(conn, meta);
        if !contents::wanted(conn, meta, checksum_ok, is_orig) {
            return;
        }
        let hc = &mut self.contents;
        let counters = hc.counters.entry(key).or_default();
        let d = contents::dir_index(is_orig);
        let total = meta.payload_len;
        let n = contents::admit(counters.delivered[d], hc.per_conn, total);
        let n = contents::rate_admit(&mut hc.window, ts_ns, hc.rate, n);
        let n = n.min(payload.len() as u32);
        let mut off = 0u32;
        while off < n {
            let len = (n - off).min(contents::CHUNK_BYTES as u32);
            hc.chunks.push(ContentChunk {
                hdr: ContentHeader {
                    key,
                    ts_ns,
                    seq: contents::record_seq(meta, off),
                    len,
                    flags: if is_orig {
                        contents::CONTENT_FROM_ORIG
                    } else {
                        0
                    },
                    proto: meta.proto as u32,
                },
                data: payload[off as usize..(off + len) as usize].to_vec(),
            });
            off += len;
        }
        counters.delivered[d] += n as u64;
        counters.not_delivered[d] += (total - n) as u64;
    }
}

impl HostDatapath {
    /// A service sample of the packet `meta` (payload as captured: `payload`, which lies in
    /// `packet`), after the engine took it ([`Changes::SAMPLE`]): the record of its first
    /// bytes the kernel's contents stage writes (of a cut packet, `contents::sample_take`'s,
    /// as there), its bytes left where they are in `packet`.
    fn sample(
        &mut self,
        key: &FlowKey,
        packet: &[u8],
        payload: &[u8],
        meta: &PacketMeta,
        ts_ns: u64,
        ch: Changes,
    ) {
        let captured = payload.len().min(u32::MAX as usize) as u32;
        let len = contents::sample_take(meta.payload_len, captured, meta.proto == proto::UDP);
        let Some(bytes) = payload.get(..len as usize).filter(|b| !b.is_empty()) else {
            return;
        };
        if !contents::sample_handed_over(meta, bytes[0]) {
            return; // counted against the budget, no record: as the kernel's contents stage
        }
        if ch.contains(Changes::SAMPLE_QUIC_ONLY) && !contents::may_be_quic_initial(bytes) {
            return; // narrowed by the agent (`narrow_sampling`): only a QUIC Initial can tell
        }
        let is_orig = ch.contains(Changes::SAMPLE_ORIG);
        let start = bytes.as_ptr() as usize - packet.as_ptr() as usize;
        let hdr = ContentHeader {
            key: *key,
            ts_ns,
            seq: contents::record_seq(meta, 0),
            len,
            flags: contents::sample_flags(key, meta, is_orig),
            proto: meta.proto as u32,
        };
        self.contents.sample = Some((hdr, start..start + bytes.len()));
    }

    /// The payload of a packet [`Self::payload_wanted`] chose (`payload`, which lies in
    /// `packet`): the sample first, as the kernel's contents stage writes it.
    // The packet as the engine just took it: its changes, key, bytes, payload, header.
    #[allow(clippy::too_many_arguments)]
    fn take_payload(
        &mut self,
        ch: Changes,
        key: &FlowKey,
        packet: &[u8],
        payload: &[u8],
        meta: &PacketMeta,
        ts_ns: u64,
        checksum_ok: bool,
    ) {
        if ch.contains(Changes::SAMPLE) {
            self.sample(key, packet, payload, meta, ts_ns, ch);
        }
        if self.contents.armed {
            self.extract(key, payload, meta, ts_ns, checksum_ok);
        }
    }

    /// After the engine: the packet's payload to the extraction and sampling that want it.
    fn payload_wanted(&self, ch: Changes, meta: &PacketMeta) -> bool {
        (self.contents.armed || ch.contains(Changes::SAMPLE)) && meta.payload_len != 0
    }

    /// An already parsed packet through the engine (also used for the packets the kernel's
    /// table had no room for).
    pub fn process_meta(
        &mut self,
        meta: &PacketMeta,
        ts_ns: u64,
        checksum_ok: bool,
        events: &mut Vec<Event>,
    ) -> Changes {
        let key = FlowKey::from_meta(meta);
        self.process_keyed(&key, meta, ts_ns, checksum_ok, events)
    }

    /// [`HostDatapath::process_meta`] with the packet's key made (its payload's records
    /// carry it).
    fn process_keyed(
        &mut self,
        key: &FlowKey,
        meta: &PacketMeta,
        ts_ns: u64,
        checksum_ok: bool,
        events: &mut Vec<Event>,
    ) -> Changes {
        let table = &mut self.table;
        engine::process_packet_keyed(table, key, meta, ts_ns, checksum_ok, &self.cfg, |e| {
            events.push(e.to_event())
        })
    }
}

impl Datapath for HostDatapath {
    fn process(
        &mut self,
        frame: &[u8],
        ts_ns: u64,
        checksum_ok: bool,
        events: &mut Vec<Event>,
    ) -> Result<(), DatapathError> {
        let mut meta = PacketMeta::default();
        if let Some(patched) = tso_zero_length_fix(frame) {
            // IPv4 total length 0 (segmentation offload), accepted by the caller (Zeek does
            // with -C): the payload is what was captured, but CONNSIZE counts the header's
            // TotalLen(), i.e. 0 bytes.
            parse_ethernet(&patched, &mut meta).map_err(DatapathError::Parse)?;
            meta.ip_len = 0;
            meta.ip_bytes = 0;
        } else {
            parse_ethernet(frame, &mut meta).map_err(DatapathError::Parse)?;
        }
        if meta.is_fragment() {
            return Err(DatapathError::Fragment);
        }
        let first = events.len();
        let key = FlowKey::from_meta(&meta);
        let ch = self.process_keyed(&key, &meta, ts_ns, checksum_ok, events);
        if self.l2_events {
            // As the kernel's NewConn: the frame's link layer, read only when asked for.
            let l2 = l2::of_ethernet(frame);
            for ev in &mut events[first..] {
                ev.attach_l2(&l2);
            }
        }
        if self.payload_wanted(ch, &meta) {
            let patched = tso_zero_length_fix(frame);
            let mut m = meta;
            if patched.is_some() {
                // payload_of needs the header's length; the engine was given 0.
                parse_ethernet(patched.as_deref().unwrap_or(frame), &mut m)
                    .map_err(DatapathError::Parse)?;
            }
            // A patched frame is a copy of `frame` but for the length field: the payload's
            // place in it is its place in `frame`, where the caller reads a sample.
            let packet = patched.as_deref().unwrap_or(frame);
            let payload = payload_of(packet, &m).unwrap_or(&[]);
            self.take_payload(ch, &key, packet, payload, &m, ts_ns, checksum_ok);
        }
        Ok(())
    }

    /// `process` of the frame `synth_ethernet` makes of `ip`, without making it: the same
    /// checks (the IP version the link layer named, the zero total length of segmentation
    /// offload), one parse of the IP packet where it lies.
    fn process_ip(
        &mut self,
        version: u8,
        ip: &[u8],
        view: Option<&IpView>,
        ts_ns: u64,
        checksum_ok: bool,
        events: &mut Vec<Event>,
        _scratch: &mut Vec<u8>,
    ) -> Result<Processed, DatapathError> {
        let first = *ip
            .first()
            .ok_or(DatapathError::Parse(ParseError::Truncated))?;
        if first >> 4 != version {
            return Err(DatapathError::Parse(ParseError::BadVersion));
        }
        let mut meta = PacketMeta::default();
        // As in `process` (IPv4 total length 0, accepted by the caller): the engine is given
        // 0 bytes, the payload is what was captured.
        let patched = tso_zero_length_fix_ip(version, ip);
        let ip = patched.as_deref().unwrap_or(ip);
        match view {
            // The view is of the packet as given; a patched copy is parsed anew.
            Some(v) if patched.is_none() => parse_ip_viewed(ip, v, &mut meta),
            _ => parse_ip(ip, &mut meta),
        }
        .map_err(DatapathError::Parse)?;
        // The header's lengths, kept for extraction (not a copy of the whole meta per packet).
        let lengths = (meta.ip_len, meta.ip_bytes);
        if patched.is_some() {
            meta.ip_len = 0;
            meta.ip_bytes = 0;
        }
        if meta.is_fragment() {
            return Err(DatapathError::Fragment);
        }
        let key = FlowKey::from_meta(&meta);
        let ch = self.process_keyed(&key, &meta, ts_ns, checksum_ok, events);
        if self.payload_wanted(ch, &meta) {
            // payload_of needs the header's length; the engine was given 0.
            (meta.ip_len, meta.ip_bytes) = lengths;
            // As in `process`: a patched copy has the payload where `ip` has it.
            let payload = ip_payload_of(ip, &meta).unwrap_or(&[]);
            self.take_payload(ch, &key, ip, payload, &meta, ts_ns, checksum_ok);
        }
        Ok(Processed {
            contents: self.contents_pending(),
        })
    }

    fn lookup(&self, key: &FlowKey) -> Option<Conn> {
        self.table.get(key).copied()
    }

    fn check_encap(&mut self, key: &FlowKey, id: u32, is_new: bool) -> Option<EncapChange> {
        let conn = self.table.get_mut(key)?;
        Some(tunnel::check_encap(conn, id, is_new))
    }

    fn confirm_tunnel_header(&mut self, key: &FlowKey, payload: &[u8]) {
        if let Some(conn) = self.table.get_mut(key) {
            tunnel::confirm_header(conn, payload, payload.len());
        }
    }

    fn with_conn(&self, key: &FlowKey, f: &mut dyn FnMut(&Conn)) -> bool {
        self.table.get(key).map(f).is_some()
    }

    fn remove(&mut self, key: &FlowKey) -> Option<Conn> {
        self.table.remove(key).map(|(c, _)| c)
    }

    fn remove_with_service(&mut self, key: &FlowKey) -> Option<(Conn, u32)> {
        self.table.remove(key)
    }

    fn service_word(&mut self, key: &FlowKey) -> Option<&mut u32> {
        self.table.service_mut(key)
    }

    fn keys(&self) -> Vec<FlowKey> {
        self.table.keys().copied().collect()
    }

    fn set_thresholds(&mut self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
        let conn = self
            .table
            .get_mut(&cmd.key)
            .ok_or(ThresholdError::NotFound)?;
        let armed = threshold::apply_command(conn, cmd);
        self.contents.armed |= conn.thr_armed & contents::EXTRACT_BITS != 0;
        Ok(armed)
    }

    fn stop_sampling(&mut self, key: &FlowKey) -> bool {
        let Some(conn) = self.table.get_mut_again(key) else {
            return false;
        };
        // As when the budget is spent: the connection's packets take the fast path again.
        conn.thr_armed &= !contents::SAMPLE_STATE;
        true
    }

    fn narrow_sampling(&mut self, key: &FlowKey) -> bool {
        let Some(conn) = self.table.get_mut_again(key) else {
            return false;
        };
        if conn.thr_armed & contents::SAMPLE_BITS != 0 {
            conn.thr_armed |= contents::SAMPLE_QUIC_ONLY;
        }
        true
    }

    fn take_contents(
        &mut self,
        out: &mut Vec<ContentChunk>,
    ) -> Option<(ContentHeader, Range<usize>)> {
        if !self.contents.chunks.is_empty() {
            self.drain_contents(out);
        }
        self.contents.sample.take()
    }

    fn drain_contents(&mut self, out: &mut Vec<ContentChunk>) {
        if out.is_empty() {
            // The usual case (the agent hands back an empty vector): the two trade places,
            // no record is moved.
            std::mem::swap(out, &mut self.contents.chunks);
        } else {
            out.append(&mut self.contents.chunks);
        }
    }

    fn contents_pending(&self) -> bool {
        self.contents.sample.is_some() || !self.contents.chunks.is_empty()
    }

    fn content_counters(&self, key: &FlowKey) -> Option<ContentCounters> {
        self.contents.counters.get(key).copied()
    }

    fn forget_contents(&mut self, key: &FlowKey) {
        // Only extraction keeps counters (service samples do not): no lookup per removed
        // connection until some connection was extracted.
        if !self.contents.counters.is_empty() {
            self.contents.counters.remove(key);
        }
    }

    fn set_content_caps(&mut self, per_conn: u64, rate: u64) -> Result<(), DatapathError> {
        self.contents.per_conn = per_conn;
        self.contents.rate = rate;
        Ok(())
    }

    fn set_l2_events(&mut self, on: bool) -> Result<(), DatapathError> {
        self.l2_events = on;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::fixtures::udp_frame;

    const DNS_QUERY: &[u8] =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01";
    /// The same query with an id that starts like a QUIC long header (0xc0).
    const DNS_QUERY_C0: &[u8] =
        b"\xc0\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01";

    /// The first bytes of a QUIC version 1 Initial (long header, type 0).
    fn quic_initial() -> Vec<u8> {
        let mut d = vec![
            0xc3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x40, 0x40,
        ];
        d.extend_from_slice(&[0; 64]);
        d
    }

    /// What the packet in `frame` hands over as a service sample, if anything.
    fn sample_of(dp: &mut HostDatapath, frame: &[u8]) -> Option<Vec<u8>> {
        let mut events = Vec::new();
        dp.process(frame, 1_000_000_000, true, &mut events)
            .expect("a valid frame");
        let mut chunks = Vec::new();
        let sample = dp.take_contents(&mut chunks);
        assert!(chunks.is_empty(), "nothing extracted");
        sample.map(|(_, at)| frame[at].to_vec())
    }

    #[test]
    fn a_narrowed_connection_hands_over_only_what_may_be_a_quic_initial() {
        let cfg = HostConfig::new(&[(53, proto::UDP)]).with_service_samples(true);
        let mut dp = HostDatapath::new(cfg);
        let (client, server) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let out = (client, 40_000, server, 53);
        let back = (server, 53, client, 40_000);
        let key = FlowKey::from_tuple(
            &std::net::Ipv4Addr::from(client).to_ipv6_mapped().octets(),
            40_000,
            &std::net::Ipv4Addr::from(server).to_ipv6_mapped().octets(),
            53,
            proto::UDP,
        );
        assert_eq!(
            sample_of(&mut dp, &udp_frame(out, DNS_QUERY)).as_deref(),
            Some(DNS_QUERY),
            "the query, read where it lies"
        );
        assert!(dp.narrow_sampling(&key));
        // The answer and a second query are counted against the budget, not handed over;
        // a datagram that may be a QUIC Initial still is.
        assert_eq!(sample_of(&mut dp, &udp_frame(back, DNS_QUERY)), None);
        assert_eq!(sample_of(&mut dp, &udp_frame(out, DNS_QUERY_C0)), None);
        let initial = quic_initial();
        assert_eq!(
            sample_of(&mut dp, &udp_frame(out, &initial)),
            Some(initial.clone())
        );
        // The client's fourth datagram ends its budget: nothing after it, whatever it is.
        assert!(sample_of(&mut dp, &udp_frame(out, &initial)).is_some());
        assert_eq!(sample_of(&mut dp, &udp_frame(out, &initial)), None);
        // Another connection is not narrowed.
        let other = (client, 40_001, server, 53);
        assert!(sample_of(&mut dp, &udp_frame(other, DNS_QUERY)).is_some());
        assert!(sample_of(&mut dp, &udp_frame(other, DNS_QUERY)).is_some());
        assert!(
            !dp.narrow_sampling(&FlowKey::default()),
            "no such connection"
        );
    }
}
