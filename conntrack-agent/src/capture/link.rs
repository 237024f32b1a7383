//! Link-layer decoding, from a captured frame down to its IP header: the link types a trace may
//! declare (pcap/pcapng `LINKTYPE_*` numbers), Ethernet with its tags and encapsulations (VLAN,
//! QinQ, MPLS, PPPoE, 802.1ah, FabricPath, LLC/SNAP), Linux cooked SLL and SLL2, BSD NULL and
//! LOOP, PPP and raw IP; and the synthetic Ethernet header the datapath is given.

pub const LINKTYPE_NULL: u32 = 0;
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const DLT_RAW_12: u32 = 12;
pub const DLT_RAW_14: u32 = 14;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_LOOP: u32 = 108;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_IPV4: u32 = 228;
pub const LINKTYPE_IPV6: u32 = 229;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;
pub const LINKTYPE_PPP: u32 = 9;
pub const LINKTYPE_PPP_HDLC: u32 = 50;

pub fn linktype_supported(lt: u32) -> bool {
    matches!(
        lt,
        LINKTYPE_NULL
            | LINKTYPE_ETHERNET
            | DLT_RAW_12
            | DLT_RAW_14
            | LINKTYPE_RAW
            | LINKTYPE_LOOP
            | LINKTYPE_LINUX_SLL
            | LINKTYPE_IPV4
            | LINKTYPE_IPV6
            | LINKTYPE_LINUX_SLL2
            | LINKTYPE_PPP
            | LINKTYPE_PPP_HDLC
    )
}

pub(super) const SUPPORTED_TEXT: &str = "Ethernet (1), raw IP (12, 14, 101, 228, 229), Linux cooked SLL (113) and SLL2 (276), BSD NULL (0) and LOOP (108), PPP (9, 50)";

/// Why a frame could not be taken down to an IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkSkip {
    /// Too short for its link-layer header.
    Truncated,
    /// A layer-3 protocol that is not IP (ARP, LLDP, ...).
    NotIp,
    /// Unsupported link type.
    LinkType,
}

/// The network layer of a frame: the IP packet and its version (4 or 6).
#[derive(Debug, Clone, Copy)]
pub struct L3<'a> {
    pub version: u8,
    pub ip: &'a [u8],
}

use conntrack_common::packet::l2::L2Info;

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;

fn by_version(ip: &[u8]) -> Result<L3<'_>, LinkSkip> {
    match ip.first().map(|b| b >> 4) {
        Some(4) => Ok(L3 { version: 4, ip }),
        Some(6) => Ok(L3 { version: 6, ip }),
        Some(_) => Err(LinkSkip::NotIp),
        None => Err(LinkSkip::Truncated),
    }
}

fn by_ethertype(et: u16, rest: &[u8]) -> Result<L3<'_>, LinkSkip> {
    match et {
        ETH_IPV4 => {
            if rest.is_empty() {
                Err(LinkSkip::Truncated)
            } else {
                Ok(L3 {
                    version: 4,
                    ip: rest,
                })
            }
        }
        ETH_IPV6 => {
            if rest.is_empty() {
                Err(LinkSkip::Truncated)
            } else {
                Ok(L3 {
                    version: 6,
                    ip: rest,
                })
            }
        }
        _ => Err(LinkSkip::NotIp),
    }
}

fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

/// Walks Ethernet II with 802.1Q/802.1ad/QinQ tags, MPLS label stacks, PPPoE sessions,
/// 802.1ah (PBB) and Cisco FabricPath down to the IP header.
pub fn ethernet_l3(frame: &[u8]) -> Result<L3<'_>, LinkSkip> {
    let mut b = frame;
    // Bounded: each step consumes bytes, at most 16 encapsulation layers.
    for _ in 0..16 {
        let et = be16(b, 12).ok_or(LinkSkip::Truncated)?;
        let mut off = 14;
        let mut et = et;
        // inner loop over tag headers
        for _ in 0..16 {
            match et {
                0x8100 | 0x88a8 | 0x9100 | 0x9200 => {
                    et = be16(b, off + 2).ok_or(LinkSkip::Truncated)?;
                    off += 4;
                }
                0x8926 => {
                    // Cisco VN-Tag: 4 bytes, then the next ethertype.
                    et = be16(b, off + 4).ok_or(LinkSkip::Truncated)?;
                    off += 6;
                }
                _ => break,
            }
        }
        match et {
            0x8847 | 0x8848 => return mpls_l3(b.get(off..).ok_or(LinkSkip::Truncated)?),
            0x8864 => {
                // PPPoE session: 6-byte header then the PPP protocol.
                let proto = be16(b, off + 6).ok_or(LinkSkip::Truncated)?;
                let rest = b.get(off + 8..).ok_or(LinkSkip::Truncated)?;
                return match proto {
                    0x0021 => by_ethertype(ETH_IPV4, rest),
                    0x0057 => by_ethertype(ETH_IPV6, rest),
                    _ => Err(LinkSkip::NotIp),
                };
            }
            0x88e7 => {
                // 802.1ah I-TAG (4 bytes), then the customer Ethernet frame.
                b = b.get(off + 4..).ok_or(LinkSkip::Truncated)?;
                continue;
            }
            0x8903 => {
                // Cisco FabricPath: 2 bytes FTag/TTL after the outer header, then the
                // original Ethernet frame.
                b = b.get(off + 2..).ok_or(LinkSkip::Truncated)?;
                continue;
            }
            x if x <= 1500 => {
                // IEEE 802.3 length field: LLC/SNAP may carry IP.
                let llc = b.get(off..off + 3).ok_or(LinkSkip::Truncated)?;
                if llc == [0xaa, 0xaa, 0x03] {
                    let et2 = be16(b, off + 6).ok_or(LinkSkip::Truncated)?;
                    return by_ethertype(et2, b.get(off + 8..).ok_or(LinkSkip::Truncated)?);
                }
                return Err(LinkSkip::NotIp);
            }
            _ => return by_ethertype(et, b.get(off..).ok_or(LinkSkip::Truncated)?),
        }
    }
    Err(LinkSkip::NotIp)
}

fn mpls_l3(mut b: &[u8]) -> Result<L3<'_>, LinkSkip> {
    for _ in 0..32 {
        let e = b.get(0..4).ok_or(LinkSkip::Truncated)?;
        let bottom = e[2] & 1 == 1;
        b = &b[4..];
        if bottom {
            return by_version(b);
        }
    }
    Err(LinkSkip::NotIp)
}

/// Decodes a frame of the given link type down to its IP packet.
pub fn frame_l3(linktype: u32, data: &[u8]) -> Result<L3<'_>, LinkSkip> {
    match linktype {
        LINKTYPE_ETHERNET => ethernet_l3(data),
        DLT_RAW_12 | DLT_RAW_14 | LINKTYPE_RAW => by_version(data),
        LINKTYPE_IPV4 => match by_version(data)? {
            l @ L3 { version: 4, .. } => Ok(l),
            _ => Err(LinkSkip::NotIp),
        },
        LINKTYPE_IPV6 => match by_version(data)? {
            l @ L3 { version: 6, .. } => Ok(l),
            _ => Err(LinkSkip::NotIp),
        },
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            let fam = data.get(0..4).ok_or(LinkSkip::Truncated)?;
            let le = u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let be = u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let rest = &data[4..];
            let is = |f: u32| le == f || be == f;
            if is(2) {
                by_ethertype(ETH_IPV4, rest)
            } else if is(10) || is(24) || is(28) || is(30) {
                by_ethertype(ETH_IPV6, rest)
            } else {
                Err(LinkSkip::NotIp)
            }
        }
        LINKTYPE_LINUX_SLL => {
            let et = be16(data, 14).ok_or(LinkSkip::Truncated)?;
            let rest = data.get(16..).ok_or(LinkSkip::Truncated)?;
            if et == 0x8100 {
                let et2 = be16(rest, 2).ok_or(LinkSkip::Truncated)?;
                return by_ethertype(et2, rest.get(4..).ok_or(LinkSkip::Truncated)?);
            }
            by_ethertype(et, rest)
        }
        LINKTYPE_LINUX_SLL2 => {
            let et = be16(data, 0).ok_or(LinkSkip::Truncated)?;
            let rest = data.get(20..).ok_or(LinkSkip::Truncated)?;
            by_ethertype(et, rest)
        }
        LINKTYPE_PPP | LINKTYPE_PPP_HDLC => {
            // Optional HDLC address/control bytes, then the PPP protocol.
            let rest = if data.starts_with(&[0xff, 0x03]) {
                &data[2..]
            } else {
                data
            };
            let proto = be16(rest, 0).ok_or(LinkSkip::Truncated)?;
            let ip = rest.get(2..).ok_or(LinkSkip::Truncated)?;
            match proto {
                0x0021 => by_ethertype(ETH_IPV4, ip),
                0x0057 => by_ethertype(ETH_IPV6, ip),
                _ => Err(LinkSkip::NotIp),
            }
        }
        _ => Err(LinkSkip::LinkType),
    }
}

/// Wraps an IP packet in a synthetic Ethernet header (zero MACs) for the datapath.
pub fn synth_ethernet(version: u8, ip: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0u8; 12]);
    out.extend_from_slice(&(if version == 6 { ETH_IPV6 } else { ETH_IPV4 }).to_be_bytes());
    out.extend_from_slice(ip);
}

/// [`synth_ethernet`] with the captured link layer `l2` (addresses and VLAN tags) in front, for
/// the MAC/VLAN conn.log columns: the datapath reads it as it reads a live frame's.
pub fn synth_ethernet_l2(version: u8, ip: &[u8], l2: &L2Info, out: &mut Vec<u8>) {
    out.clear();
    conntrack_common::packet::l2::push_header(
        l2,
        if version == 6 { ETH_IPV6 } else { ETH_IPV4 },
        out,
    );
    out.extend_from_slice(ip);
}

/// The link-layer fields Zeek's MAC/VLAN policy scripts log of a captured frame: those of its
/// Ethernet header (the outermost), none for link types without Ethernet addresses (raw IP,
/// Linux cooked capture, BSD loopback: unset columns).
pub fn link_layer(linktype: u32, data: &[u8]) -> L2Info {
    match linktype {
        LINKTYPE_ETHERNET => conntrack_common::packet::l2::of_ethernet(data),
        _ => L2Info::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::{LinkSkip, ethernet_l3};
    use crate::capture::pcap::tests::ipv4_udp;

    #[test]
    fn mpls_and_pppoe() {
        let ip = ipv4_udp();
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x88, 0x47, 0, 0, 0x10, 0xff, 0, 0, 0x21, 0xff]);
        f.extend_from_slice(&ip);
        assert_eq!(ethernet_l3(&f).unwrap().ip, &ip[..]);
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x88, 0x64, 0x11, 0, 0, 1, 0, 34, 0x00, 0x21]);
        f.extend_from_slice(&ip);
        assert_eq!(ethernet_l3(&f).unwrap().ip, &ip[..]);
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 1]);
        assert_eq!(ethernet_l3(&arp).err(), Some(LinkSkip::NotIp));
    }
}
