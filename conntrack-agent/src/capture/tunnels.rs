//! The replay's side of tunnel decapsulation: the inner IP packet of an outer one (where it
//! starts is conntrack-common's `tunnel` rule, shared with the kernel), and Zeek's IP checks on
//! it, as an outer packet gets them in `read`.

use crate::capture::checksum::ChecksumPolicy;
use crate::capture::link::{L3, ethernet_l3};
use conntrack_common::checksum::{ipv4_header_checksum_ok, transport_checksum_ok};
use conntrack_common::key::FlowKey;
use conntrack_common::packet::{IpView, ip_view};
use conntrack_common::tunnel::{self, InnerKind, TunnelType};

/// One tunnel layer: the enclosing tunnel and the IP packet it carries.
#[derive(Debug, Clone)]
pub struct Hop<'a> {
    pub tunnel: TunnelType,
    /// The tunnel's endpoints as the outer packet has them (source first).
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// UDP tunnels: the outer connection's key (its conn.log record is the parent).
    pub outer_key: Option<FlowKey>,
    pub inner: L3<'a>,
}

impl Hop<'_> {
    /// The encapsulation id of this layer inside the stack `outer` (common's `hop_id`, as
    /// the kernel computes it): a UDP tunnel by its outer connection, an IP one by the pair.
    pub fn encap_id(&self, outer: u32) -> u32 {
        match &self.outer_key {
            Some(k) => tunnel::hop_id(
                outer,
                self.tunnel,
                &k.addr_a,
                &k.addr_b,
                Some((k.port_a, k.port_b)),
            ),
            None => tunnel::hop_id(outer, self.tunnel, &self.src, &self.dst, None),
        }
    }
}

/// The inner packet of `ip` (described by `view`), if it is a tunnel Zeek decapsulates and
/// what it carries is IP. The caller has judged the outer packet valid.
pub fn inner_of<'a>(ip: &'a [u8], view: &IpView) -> Option<Hop<'a>> {
    // Asked of every packet: only UDP and the IP tunnel protocols can carry one, and most
    // packets are TCP.
    if view.is_fragment || (view.proto != 17 && !tunnel::is_ip_tunnel_proto(view.proto)) {
        return None;
    }
    let (found, payload, outer_key) = match view.proto {
        17 => {
            let (key, sport, dport, payload) = udp_payload(ip, view)?;
            let found = tunnel::decap_udp_detect(sport, dport, payload)?;
            // GRE over UDP is a GRE tunnel between the addresses, as any GRE one.
            let key = (found.tunnel != TunnelType::Gre).then_some(key);
            (found, payload, key)
        }
        p => {
            let l4 = ip.get(view.l4_off..view.ip_len.min(ip.len()))?;
            (tunnel::decap_ip(p, l4)?, l4, None)
        }
    };
    let rest = payload.get(found.offset as usize..)?;
    let inner = match found.kind {
        InnerKind::Ethernet => ethernet_l3(rest).ok()?,
        InnerKind::Ipv4 => L3 {
            version: 4,
            ip: rest,
        },
        InnerKind::Ipv6 => L3 {
            version: 6,
            ip: rest,
        },
    };
    Some(Hop {
        tunnel: found.tunnel,
        src: view.src,
        dst: view.dst,
        outer_key,
        inner,
    })
}

/// The connection key, source and destination ports and payload of a UDP packet `ip`
/// (described by `view`), the payload bounded by the UDP length as Zeek takes it.
pub fn udp_payload<'a>(ip: &'a [u8], view: &IpView) -> Option<(FlowKey, u16, u16, &'a [u8])> {
    if view.is_fragment || view.proto != 17 {
        return None;
    }
    let end = view.ip_len.min(ip.len());
    let l4 = ip.get(view.l4_off..end)?;
    let sport = u16::from_be_bytes([*l4.first()?, *l4.get(1)?]);
    let dport = u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]);
    let ulen = u16::from_be_bytes([*l4.get(4)?, *l4.get(5)?]) as usize;
    let payload = l4.get(8..ulen.clamp(8, l4.len()))?;
    let key = FlowKey::from_tuple(&view.src, sport, &view.dst, dport, 17);
    Some((key, sport, dport, payload))
}

/// Why an inner packet is not processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InnerSkip {
    Malformed,
    Truncated,
    BadIpChecksum,
    Fragment,
    NoNextHeader,
}

/// Zeek's IP checks on an inner packet (as `read` makes them on an outer one): its view and
/// transport checksum verdict, or why it is dropped. Inner fragments are not reassembled.
/// `uncaptured`: bytes of the frame on the wire beyond the capture (the snap length): an inner
/// packet is cut short only if it is longer than what was on the wire.
pub fn check_inner(
    inner: &L3<'_>,
    policy: &ChecksumPolicy,
    uncaptured: usize,
) -> Result<(IpView, bool), InnerSkip> {
    let ip = inner.ip;
    let view = ip_view(ip).ok_or(InnerSkip::Malformed)?;
    if view.version != inner.version || (view.version == 4 && view.ip_len == 0) {
        return Err(InnerSkip::Malformed);
    }
    // IPv6 "no next header": a Teredo bubble, no connection.
    if view.proto == 59 {
        return Err(InnerSkip::NoNextHeader);
    }
    if view.ip_len > ip.len() + uncaptured {
        return Err(InnerSkip::Truncated);
    }
    if view.version == 4 && !policy.skip_for(&view.src) && !ipv4_header_checksum_ok(ip) {
        return Err(InnerSkip::BadIpChecksum);
    }
    if view.is_fragment {
        return Err(InnerSkip::Fragment);
    }
    let ok = policy.skip_for(&view.src) || transport_checksum_ok(ip, &view);
    Ok((view, ok))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::checksum::tests::{fix_ipv4_header, fix_udp4};

    /// An IPv4 UDP packet from 10.0.0.1:sport to 10.0.0.2:dport with `payload`, checksums set.
    fn udp4(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let len = 28 + payload.len();
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[28..].copy_from_slice(payload);
        fix_ipv4_header(&mut p);
        fix_udp4(&mut p);
        p
    }

    #[test]
    fn vxlan_frame_to_inner_udp() {
        let inner = udp4(1234, 53, b"query");
        let mut vx = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        vx.extend_from_slice(&[0; 12]);
        vx.extend_from_slice(&0x0800u16.to_be_bytes());
        vx.extend_from_slice(&inner);
        let outer = udp4(40000, 4789, &vx);
        let view = ip_view(&outer).unwrap();
        let hop = inner_of(&outer, &view).unwrap();
        assert_eq!(hop.tunnel, TunnelType::Vxlan);
        assert_eq!(hop.inner.ip, &inner[..]);
        assert!(hop.outer_key.is_some());
        let (v, ok) = check_inner(&hop.inner, &ChecksumPolicy::default(), 0).unwrap();
        assert_eq!((v.proto, ok), (17, true));
        // A damaged inner UDP checksum is judged like an outer one's.
        let mut bad = outer.clone();
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        let hop = inner_of(&bad, &view).unwrap();
        assert!(
            !check_inner(&hop.inner, &ChecksumPolicy::default(), 0)
                .unwrap()
                .1
        );
    }

    #[test]
    fn ordinary_udp_and_cut_inner_packets() {
        let outer = udp4(40000, 53, b"not a tunnel");
        assert!(inner_of(&outer, &ip_view(&outer).unwrap()).is_none());
        let inner = udp4(1, 2, b"x");
        let cut = L3 {
            version: 4,
            ip: &inner[..inner.len() - 1],
        };
        assert_eq!(
            check_inner(&cut, &ChecksumPolicy::default(), 0).unwrap_err(),
            InnerSkip::Truncated
        );
        // Cut by the capture, not on the wire: processed as far as it goes.
        assert!(check_inner(&cut, &ChecksumPolicy::default(), 1).is_ok());
    }
}
