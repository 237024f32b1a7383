//! IPv4 and IPv6 fragment reassembly in front of the engine (Zeek reassembles before the
//! transport analyzers see a packet). Bounded in memory and in time.

use crate::util::hashing::FastMap;
use conntrack_common::checksum::set_ipv4_header_checksum;
use conntrack_common::packet::{IpView, ip_view};

/// Default: give up on an incomplete datagram after this long (network time).
pub const DEFAULT_TIMEOUT_NS: i64 = 60_000_000_000;
/// Default bound on buffered fragment bytes over all datagrams.
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;
const MAX_DATAGRAM: usize = 65_535 + 40;
const MAX_PENDING: usize = 16_384;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
    proto: u8,
    v6: bool,
}

struct Pending {
    /// Header of the first fragment (IPv4 header; IPv6 unfragmentable part), once seen.
    header: Option<Vec<u8>>,
    /// For IPv6: offset in `header` of the next-header byte that must point to the payload.
    nh_pos: usize,
    next_proto: u8,
    /// (offset, data), in arrival order.
    parts: Vec<(usize, Vec<u8>)>,
    total: Option<usize>,
    bytes: usize,
    first_ns: i64,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct DefragStats {
    pub fragments: u64,
    pub reassembled: u64,
    pub timed_out: u64,
    pub dropped_memory: u64,
    pub malformed: u64,
}

pub enum FragResult {
    /// Not a fragment: use the packet as it is.
    NotFragment,
    /// A fragment was buffered; nothing to process yet.
    Held,
    /// The datagram is complete.
    Complete(Vec<u8>),
    /// Malformed fragment, dropped.
    Bad,
}

pub struct Defragmenter {
    pending: FastMap<Key, Pending>,
    bytes: usize,
    timeout_ns: i64,
    max_bytes: usize,
    /// Network time of the last sweep (sweeps run at most once per second).
    last_sweep: i64,
    pub stats: DefragStats,
}

impl Default for Defragmenter {
    fn default() -> Self {
        Self::new(DEFAULT_TIMEOUT_NS, DEFAULT_MAX_BYTES)
    }
}

fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(o)?, *b.get(o + 1)?]))
}

impl Defragmenter {
    pub fn new(timeout_ns: i64, max_bytes: usize) -> Self {
        Self {
            pending: FastMap::default(),
            bytes: 0,
            timeout_ns,
            max_bytes,
            last_sweep: i64::MIN,
            stats: DefragStats::default(),
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Drops datagrams older than the timeout.
    // Inline: asked per packet, and almost always there is nothing to do.
    #[inline]
    pub fn expire(&mut self, now_ns: i64) {
        if self.pending.is_empty() || now_ns.saturating_sub(self.last_sweep) < 1_000_000_000 {
            return;
        }
        self.sweep(now_ns);
    }

    #[cold]
    fn sweep(&mut self, now_ns: i64) {
        self.last_sweep = now_ns;
        let t = self.timeout_ns;
        let mut freed = 0usize;
        let mut n = 0u64;
        self.pending.retain(|_, p| {
            let keep = now_ns - p.first_ns <= t;
            if !keep {
                freed += p.bytes;
                n += 1;
            }
            keep
        });
        self.bytes -= freed;
        self.stats.timed_out += n;
    }

    /// Offers an IP packet. `ip` is exactly the captured IP packet.
    pub fn offer(&mut self, ip: &[u8], now_ns: i64) -> FragResult {
        match ip.first().map(|b| b >> 4) {
            Some(4) => self.offer_v4(ip, now_ns),
            Some(6) => self.offer_v6(ip, now_ns),
            _ => FragResult::NotFragment,
        }
    }

    /// [`Defragmenter::offer`] of `ip`, already described by `view` (`ip_view` of the same
    /// bytes): a packet that is no fragment (almost all) is answered from the view, without
    /// reading its header again (for IPv6, without walking its extension headers again).
    pub fn offer_viewed(&mut self, ip: &[u8], view: &IpView, now_ns: i64) -> FragResult {
        // The view's `is_fragment` is the rule of `offer_v4` (MF or an offset) and of
        // `offer_v6` (a fragment header) over the same bytes.
        if !view.is_fragment {
            return FragResult::NotFragment;
        }
        self.offer(ip, now_ns)
    }

    fn offer_v4(&mut self, ip: &[u8], now_ns: i64) -> FragResult {
        let Some(fl) = be16(ip, 6) else {
            return FragResult::NotFragment;
        };
        let mf = fl & 0x2000 != 0;
        let off = ((fl & 0x1fff) as usize) * 8;
        if !mf && off == 0 {
            return FragResult::NotFragment;
        }
        self.stats.fragments += 1;
        let ihl = ((ip[0] & 0x0f) as usize) * 4;
        let total = be16(ip, 2).unwrap_or(0) as usize;
        if ihl < 20 || total < ihl || ip.len() < total {
            self.stats.malformed += 1;
            return FragResult::Bad;
        }
        let data = &ip[ihl..total];
        if mf && !data.len().is_multiple_of(8) {
            self.stats.malformed += 1;
            return FragResult::Bad;
        }
        let mut src = [0u8; 16];
        src[12..].copy_from_slice(&ip[12..16]);
        let mut dst = [0u8; 16];
        dst[12..].copy_from_slice(&ip[16..20]);
        let key = Key {
            src,
            dst,
            id: be16(ip, 4).unwrap_or(0) as u32,
            proto: ip[9],
            v6: false,
        };
        let header = if off == 0 {
            Some(ip[..ihl].to_vec())
        } else {
            None
        };
        self.add(key, header, 0, ip[9], off, data, mf, now_ns)
    }

    fn offer_v6(&mut self, ip: &[u8], now_ns: i64) -> FragResult {
        // Common's walk finds the fragment header (the chain ends there, as in Zeek).
        let Some(view) = ip_view(ip) else {
            return FragResult::NotFragment;
        };
        let Some(frag) = view.ipv6_fragment else {
            return FragResult::NotFragment;
        };
        self.stats.fragments += 1;
        // The walk ensured the fragment header lies within the payload length and the capture.
        let end = view.ip_len.min(ip.len());
        let data = &ip[view.l4_off..end];
        if frag.more && !data.len().is_multiple_of(8) {
            self.stats.malformed += 1;
            return FragResult::Bad;
        }
        if !frag.more && frag.offset == 0 {
            // Atomic fragment: strip the fragment header.
            let mut out = ip[..frag.header_off].to_vec();
            out[frag.named_at] = view.proto;
            out.extend_from_slice(data);
            let pl = (out.len() - 40) as u16;
            out[4..6].copy_from_slice(&pl.to_be_bytes());
            return FragResult::Complete(out);
        }
        let mut src = [0u8; 16];
        src.copy_from_slice(&ip[8..24]);
        // The IPv6 header's destination (not a routing header's final one): the same for all
        // fragments of a datagram either way.
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&ip[24..40]);
        let key = Key {
            src,
            dst,
            id: frag.id,
            proto: 0,
            v6: true,
        };
        let header = if frag.offset == 0 {
            Some(ip[..frag.header_off].to_vec())
        } else {
            None
        };
        self.add(
            key,
            header,
            frag.named_at,
            view.proto,
            frag.offset,
            data,
            frag.more,
            now_ns,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        key: Key,
        header: Option<Vec<u8>>,
        nh_pos: usize,
        next_proto: u8,
        off: usize,
        data: &[u8],
        mf: bool,
        now_ns: i64,
    ) -> FragResult {
        if off + data.len() > MAX_DATAGRAM {
            self.stats.malformed += 1;
            return FragResult::Bad;
        }
        self.expire(now_ns);
        if self.bytes + data.len() > self.max_bytes || self.pending.len() >= MAX_PENDING {
            self.evict_oldest();
            if self.bytes + data.len() > self.max_bytes {
                self.stats.dropped_memory += 1;
                return FragResult::Bad;
            }
        }
        let p = self.pending.entry(key.clone()).or_insert_with(|| Pending {
            header: None,
            nh_pos: 0,
            next_proto,
            parts: Vec::new(),
            total: None,
            bytes: 0,
            first_ns: now_ns,
        });
        if let Some(h) = header
            && p.header.is_none()
        {
            p.header = Some(h);
            p.nh_pos = nh_pos;
            p.next_proto = next_proto;
        }
        if !mf {
            p.total = Some(off + data.len());
        }
        p.parts.push((off, data.to_vec()));
        p.bytes += data.len();
        self.bytes += data.len();

        // Complete when a header and the end are known and the data covers [0, total).
        let (Some(total), Some(_)) = (p.total, p.header.as_ref()) else {
            return FragResult::Held;
        };
        let mut spans: Vec<(usize, usize)> =
            p.parts.iter().map(|(o, d)| (*o, *o + d.len())).collect();
        spans.sort_unstable();
        let mut covered = 0usize;
        for (s, e) in spans {
            if s > covered {
                return FragResult::Held;
            }
            covered = covered.max(e);
        }
        if covered < total {
            return FragResult::Held;
        }
        let p = self.pending.remove(&key).expect("present");
        self.bytes -= p.bytes;
        let mut payload = vec![0u8; total];
        // Where fragments overlap the data that arrived first is kept (like Zeek's
        // reassembler), so they are applied newest first.
        for (o, d) in p.parts.iter().rev() {
            let e = (*o + d.len()).min(total);
            if *o < e {
                payload[*o..e].copy_from_slice(&d[..e - *o]);
            }
        }
        let mut out = p.header.expect("header");
        if key.v6 {
            let pos = p.nh_pos;
            out[pos] = p.next_proto;
            // Remove nothing else: the fragment header was not part of the stored header.
            out.extend_from_slice(&payload);
            let pl = out.len() - 40;
            if pl > 0xffff {
                self.stats.malformed += 1;
                return FragResult::Bad;
            }
            out[4..6].copy_from_slice(&(pl as u16).to_be_bytes());
        } else {
            out.extend_from_slice(&payload);
            if out.len() > 0xffff {
                self.stats.malformed += 1;
                return FragResult::Bad;
            }
            let tl = out.len() as u16;
            out[2..4].copy_from_slice(&tl.to_be_bytes());
            out[6] = 0;
            out[7] = 0;
            set_ipv4_header_checksum(&mut out);
        }
        self.stats.reassembled += 1;
        FragResult::Complete(out)
    }

    fn evict_oldest(&mut self) {
        if let Some(k) = self
            .pending
            .iter()
            .min_by_key(|(_, p)| p.first_ns)
            .map(|(k, _)| k.clone())
        {
            let p = self.pending.remove(&k).expect("present");
            self.bytes -= p.bytes;
            self.stats.dropped_memory += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_frag(id: u16, off8: u16, mf: bool, payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let fl = off8 | if mf { 0x2000 } else { 0 };
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&fl.to_be_bytes());
        p.extend_from_slice(&[64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn ipv4_out_of_order() {
        let mut d = Defragmenter::default();
        let data: Vec<u8> = (0..40u8).collect();
        let a = v4_frag(7, 0, true, &data[..16]);
        let b = v4_frag(7, 2, true, &data[16..32]);
        let c = v4_frag(7, 4, false, &data[32..]);
        assert!(matches!(d.offer(&c, 1), FragResult::Held));
        assert!(matches!(d.offer(&a, 2), FragResult::Held));
        let FragResult::Complete(out) = d.offer(&b, 3) else {
            panic!("expected complete")
        };
        assert_eq!(&out[20..], &data[..]);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 60);
        assert_eq!(
            conntrack_common::checksum::ipv4_header_checksum(&out),
            Some(0)
        );
        assert_eq!(d.pending(), 0);
        // not a fragment
        let whole = v4_frag(8, 0, false, &data);
        assert!(matches!(d.offer(&whole, 4), FragResult::NotFragment));
    }

    /// What `offer` and `offer_viewed` answer for one packet, in a fresh defragmenter each.
    fn both_ways(p: &[u8]) -> (&'static str, &'static str) {
        let name = |r: FragResult| match r {
            FragResult::NotFragment => "not a fragment",
            FragResult::Held => "held",
            FragResult::Complete(_) => "complete",
            FragResult::Bad => "bad",
        };
        let view = ip_view(p).expect("a well-formed header");
        (
            name(Defragmenter::default().offer(p, 1)),
            name(Defragmenter::default().offer_viewed(p, &view, 1)),
        )
    }

    /// The view's answer is the full offer's, for whole packets and for fragments of either
    /// IP version (an atomic IPv6 fragment, MF and offset alone over IPv4).
    #[test]
    fn offer_viewed_decides_as_offer() {
        let udp = [0u8; 16];
        let frag6 = |off8: u16, mf: bool| {
            let mut chain = vec![17u8, 0];
            chain.extend_from_slice(&((off8 << 3) | u16::from(mf)).to_be_bytes());
            chain.extend_from_slice(&7u32.to_be_bytes());
            v6(44, &chain, &udp)
        };
        let cases = [
            (v4_frag(1, 0, false, &udp), "not a fragment"),
            (v4_frag(1, 0, true, &udp), "held"),
            (v4_frag(1, 2, false, &udp), "held"),
            (v6(17, &[], &udp), "not a fragment"),
            (frag6(0, true), "held"),
            (frag6(0, false), "complete"),
        ];
        for (p, want) in cases {
            assert_eq!(both_ways(&p), (want, want), "packet {p:02x?}");
        }
    }

    #[test]
    fn overlap_keeps_first_data() {
        let mut d = Defragmenter::default();
        let a = v4_frag(9, 0, true, &[1u8; 16]);
        let b = v4_frag(9, 1, true, &[2u8; 16]); // overlaps bytes 8..16
        let c = v4_frag(9, 3, false, &[3u8; 8]);
        assert!(matches!(d.offer(&a, 1), FragResult::Held));
        assert!(matches!(d.offer(&b, 1), FragResult::Held));
        let FragResult::Complete(out) = d.offer(&c, 1) else {
            panic!("expected complete")
        };
        assert_eq!(&out[20..36], &[1u8; 16]);
        assert_eq!(&out[36..44], &[2u8; 8]);
        assert_eq!(&out[44..], &[3u8; 8]);
    }

    #[test]
    fn ipv4_timeout_and_memory() {
        let mut d = Defragmenter::new(1_000_000_000, 64);
        let data = [0u8; 48];
        assert!(matches!(
            d.offer(&v4_frag(1, 0, true, &data[..32]), 0),
            FragResult::Held
        ));
        // second datagram exceeds memory: oldest evicted
        assert!(matches!(
            d.offer(&v4_frag(2, 0, true, &data[..40]), 10),
            FragResult::Held
        ));
        assert_eq!(d.pending(), 1);
        // timeout
        d.expire(5_000_000_000);
        assert_eq!(d.pending(), 0);
        assert!(d.stats.timed_out >= 1);
    }

    #[test]
    fn ipv6_fragments() {
        let data: Vec<u8> = (0..24u8).collect();
        let mk = |off8: u16, mf: bool, chunk: &[u8]| {
            let mut p = vec![0x60, 0, 0, 0];
            p.extend_from_slice(&((8 + chunk.len()) as u16).to_be_bytes());
            p.extend_from_slice(&[44, 64]);
            p.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            let fo = (off8 << 3) | u16::from(mf);
            p.extend_from_slice(&[17, 0]);
            p.extend_from_slice(&fo.to_be_bytes());
            p.extend_from_slice(&0xdeadu32.to_be_bytes());
            p.extend_from_slice(chunk);
            p
        };
        let mut d = Defragmenter::default();
        assert!(matches!(
            d.offer(&mk(2, false, &data[16..]), 1),
            FragResult::Held
        ));
        let FragResult::Complete(out) = d.offer(&mk(0, true, &data[..16]), 2) else {
            panic!("expected complete")
        };
        assert_eq!(out[6], 17);
        assert_eq!(u16::from_be_bytes([out[4], out[5]]), 24);
        assert_eq!(&out[40..], &data[..]);
    }

    /// An IPv6 packet: fixed header, then `chain` (extension headers, next-header bytes
    /// already set), then `rest`; the first header's type is `first`.
    fn v6(first: u8, chain: &[u8], rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&((chain.len() + rest.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[first, 64]);
        p.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(chain);
        p.extend_from_slice(rest);
        p
    }

    #[test]
    fn ipv6_fragment_header_behind_ah_and_headers_behind_it() {
        // Hop-by-hop, AH (12 bytes), then the fragment header; the fragmentable part starts
        // with destination options, then 16 bytes of UDP.
        let hop = [51u8, 0, 1, 4, 0, 0, 0, 0];
        let ah = [44u8, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9];
        let mut datagram = vec![17u8, 0, 1, 4, 0, 0, 0, 0];
        datagram.extend_from_slice(&[0x13, 0x88, 0, 53, 0, 16, 0, 0]);
        datagram.extend_from_slice(&[0xff; 8]);
        let frag = |off8: u16, more: bool| {
            let fo = (off8 << 3) | u16::from(more);
            let mut f = vec![60u8, 0];
            f.extend_from_slice(&fo.to_be_bytes());
            f.extend_from_slice(&0x1234u32.to_be_bytes());
            [&hop[..], &ah, &f].concat()
        };
        // The second fragment's data looks like a long extension header: it is data.
        let first = v6(0, &frag(0, true), &datagram[..16]);
        let second = v6(0, &frag(2, false), &datagram[16..]);
        let mut d = Defragmenter::default();
        assert!(matches!(d.offer(&second, 1), FragResult::Held));
        let FragResult::Complete(out) = d.offer(&first, 2) else {
            panic!("expected complete")
        };
        assert_eq!(
            out,
            v6(
                0,
                &[&hop[..], &[60, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9]].concat(),
                &datagram
            )
        );
        let v = ip_view(&out).unwrap();
        assert_eq!(
            (v.proto, v.l4_off, v.l4_len, v.is_fragment),
            (17, 68, 16, false)
        );
        assert_eq!(d.stats.fragments, 2);
        // An atomic fragment behind AH loses its fragment header at once.
        let atomic = v6(0, &frag(0, false), &datagram);
        let FragResult::Complete(out) = d.offer(&atomic, 3) else {
            panic!("expected complete")
        };
        assert_eq!(
            out,
            v6(
                0,
                &[&hop[..], &[60, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9]].concat(),
                &datagram
            )
        );
        // No fragment header: not a fragment.
        assert!(matches!(d.offer(&out, 4), FragResult::NotFragment));
    }
}
