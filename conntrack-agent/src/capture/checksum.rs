//! IP header and transport checksum validation on the host (Zeek's `ValidateChecksum` paths),
//! with `--ignore-checksums` and `--ignore-checksums-net` (source address match).

use crate::util::site::NetSet;

/// What the checksum code needs to know about an IP packet (own minimal walk, independent of
/// the engine's parser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpView {
    pub version: u8,
    pub src: [u8; 16],
    /// Final destination (IPv6 routing header type 0 with segments left is honoured).
    pub dst: [u8; 16],
    /// Transport protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Offset of the transport header from the IP header.
    pub l4_off: usize,
    /// Transport length from the IP header lengths.
    pub l4_len: usize,
    /// IPv4 total length or IPv6 payload length + 40.
    pub ip_len: usize,
    /// IPv4: MF set or offset non-zero. IPv6: a fragment header is present.
    pub is_fragment: bool,
}

fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(o)?, *b.get(o + 1)?]))
}

fn mapped_v4(a: &[u8]) -> [u8; 16] {
    let mut o = [0u8; 16];
    o[10] = 0xff;
    o[11] = 0xff;
    o[12..16].copy_from_slice(&a[..4]);
    o
}

pub fn ip_view(ip: &[u8]) -> Option<IpView> {
    match ip.first()? >> 4 {
        4 => {
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            if ihl < 20 || ip.len() < 20 {
                return None;
            }
            let total = be16(ip, 2)? as usize;
            let frag = be16(ip, 6)?;
            Some(IpView {
                version: 4,
                src: mapped_v4(ip.get(12..16)?),
                dst: mapped_v4(ip.get(16..20)?),
                proto: ip[9],
                l4_off: ihl,
                l4_len: total.saturating_sub(ihl),
                ip_len: total,
                is_fragment: (frag & 0x2000) != 0 || (frag & 0x1fff) != 0,
            })
        }
        6 => {
            if ip.len() < 40 {
                return None;
            }
            let plen = be16(ip, 4)? as usize;
            let mut src = [0u8; 16];
            src.copy_from_slice(&ip[8..24]);
            let mut dst = [0u8; 16];
            dst.copy_from_slice(&ip[24..40]);
            let mut nh = ip[6];
            let mut off = 40usize;
            let mut is_fragment = false;
            for _ in 0..16 {
                match nh {
                    0 | 60 | 43 | 135 | 139 | 140 => {
                        let len = (*ip.get(off + 1)? as usize + 1) * 8;
                        if nh == 43 {
                            // routing header: type 0 with segments left -> final destination
                            let rtype = *ip.get(off + 2)?;
                            let left = *ip.get(off + 3)? as usize;
                            if rtype == 0 && left > 0 {
                                let naddr = (len - 8) / 16;
                                if naddr > 0 {
                                    let a = off + 8 + (naddr - 1) * 16;
                                    dst.copy_from_slice(ip.get(a..a + 16)?);
                                }
                            }
                        }
                        nh = *ip.get(off)?;
                        off += len;
                    }
                    51 => {
                        let len = (*ip.get(off + 1)? as usize + 2) * 4;
                        nh = *ip.get(off)?;
                        off += len;
                    }
                    44 => {
                        is_fragment = true;
                        nh = *ip.get(off)?;
                        off += 8;
                    }
                    _ => break,
                }
            }
            Some(IpView {
                version: 6,
                src,
                dst,
                proto: nh,
                l4_off: off,
                l4_len: (plen + 40).saturating_sub(off),
                ip_len: plen + 40,
                is_fragment,
            })
        }
        _ => None,
    }
}

fn sum16(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u64) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// IPv4 header checksum; true for IPv6 (no header checksum).
pub fn ipv4_header_ok(ip: &[u8]) -> bool {
    if ip.first().map(|b| b >> 4) != Some(4) {
        return true;
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    match ip.get(..ihl) {
        Some(h) => fold(sum16(h, 0)) == 0xffff,
        None => true,
    }
}

/// Transport checksum of a complete (reassembled) IP packet. Packets whose capture is shorter
/// than the IP lengths are not checked (Zeek only validates fully captured packets).
pub fn transport_ok(ip: &[u8], v: &IpView) -> bool {
    let Some(l4) = ip.get(v.l4_off..v.l4_off + v.l4_len) else {
        return true;
    };
    let pseudo = |acc: u64| -> u64 {
        if v.version == 4 {
            let mut a = sum16(&v.src[12..16], acc);
            a = sum16(&v.dst[12..16], a);
            a + v.proto as u64 + v.l4_len as u64
        } else {
            let mut a = sum16(&v.src, acc);
            a = sum16(&v.dst, a);
            a + (v.l4_len as u64 & 0xffff) + ((v.l4_len as u64) >> 16) + v.proto as u64
        }
    };
    match (v.proto, v.version) {
        (6, _) => l4.len() >= 20 && fold(sum16(l4, pseudo(0))) == 0xffff,
        (17, _) => {
            if l4.len() < 8 {
                return false;
            }
            if v.version == 4 && l4[6] == 0 && l4[7] == 0 {
                return true;
            }
            fold(sum16(l4, pseudo(0))) == 0xffff
        }
        (1, 4) => fold(sum16(l4, 0)) == 0xffff,
        (58, 6) => fold(sum16(l4, pseudo(0))) == 0xffff,
        _ => true,
    }
}

/// Checksum policy of a run.
#[derive(Debug, Clone, Default)]
pub struct ChecksumPolicy {
    pub ignore_all: bool,
    pub ignore_nets: NetSet,
}

impl ChecksumPolicy {
    pub fn skip_for(&self, src: &[u8; 16]) -> bool {
        self.ignore_all || (!self.ignore_nets.is_empty() && self.ignore_nets.contains_bytes(src))
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn fix_ipv4_header(ip: &mut [u8]) {
        ip[10] = 0;
        ip[11] = 0;
        let ihl = ((ip[0] & 0x0f) as usize) * 4;
        let c = !fold(sum16(&ip[..ihl], 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }

    pub fn fix_udp4(ip: &mut [u8]) {
        let v = ip_view(ip).unwrap();
        let o = v.l4_off;
        ip[o + 6] = 0;
        ip[o + 7] = 0;
        let mut a = sum16(&v.src[12..16], 0);
        a = sum16(&v.dst[12..16], a);
        a += 17 + v.l4_len as u64;
        let c = !fold(sum16(&ip[o..o + v.l4_len], a));
        ip[o + 6..o + 8].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn ipv4_and_udp() {
        let mut ip = crate::capture::pcap::tests::ipv4_udp();
        fix_ipv4_header(&mut ip);
        assert!(ipv4_header_ok(&ip));
        let v = ip_view(&ip).unwrap();
        assert_eq!(v.proto, 17);
        assert_eq!(v.l4_off, 20);
        assert_eq!(v.l4_len, 12);
        // zero UDP checksum over IPv4 is fine
        assert!(transport_ok(&ip, &v));
        fix_udp4(&mut ip);
        assert!(transport_ok(&ip, &v));
        ip[30] ^= 0x55;
        assert!(!transport_ok(&ip, &v));
        ip[10] ^= 1;
        assert!(!ipv4_header_ok(&ip));
    }

    #[test]
    fn policy() {
        let p = ChecksumPolicy {
            ignore_all: false,
            ignore_nets: NetSet::parse_list(["192.168.0.0/16"]).unwrap(),
        };
        let a = crate::util::site::addr_to_bytes("192.168.1.28".parse().unwrap());
        let b = crate::util::site::addr_to_bytes("35.221.46.9".parse().unwrap());
        assert!(p.skip_for(&a));
        assert!(!p.skip_for(&b));
    }
}
