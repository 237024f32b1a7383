//! The Ethernet header and VLAN tags in front of the IP header (the part of
//! `packet::parse_ethernet` that runs in stage 1, so that stage 2 starts `parse_ip` at one
//! offset that the verifier does not know precisely).

use conntrack_common::packet::MAX_VLAN_TAGS;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_P_QINQ_OLD: u16 = 0x9100;

/// Largest IP header offset: Ethernet header plus the tags.
pub const MAX_L2_HEADER: usize = 14 + 4 * MAX_VLAN_TAGS as usize;

#[inline(always)]
fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

/// (offset of the IP header, ethertype) for IPv4/IPv6 frames, `None` otherwise.
#[inline(always)]
pub fn ip_offset(frame: &[u8]) -> Option<(usize, u16)> {
    let mut off = 12;
    let mut tags = 0;
    let mut ethertype = be16(frame, off)?;
    while matches!(ethertype, ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ_OLD) {
        if tags >= MAX_VLAN_TAGS {
            return None;
        }
        tags += 1;
        off += 4;
        ethertype = be16(frame, off)?;
    }
    matches!(ethertype, ETH_P_IPV4 | ETH_P_IPV6).then_some((off + 2, ethertype))
}

/// The IP version nibble agrees with the ethertype.
#[inline(always)]
pub fn version_matches(ethertype: u16, version: u8) -> bool {
    (ethertype == ETH_P_IPV4 && version == 4) || (ethertype == ETH_P_IPV6 && version == 6)
}
