//! What Zeek's conn policy scripts log of a connection's link layer, taken from its first
//! packet: the Ethernet source and destination addresses (`policy/protocols/conn/mac-logging`:
//! `orig_l2_addr`, `resp_l2_addr`) and the VLAN tags (`policy/protocols/conn/vlan-logging`:
//! `vlan`, `inner_vlan`).
//!
//! Zeek copies them from the packet that creates the connection and never updates them; the
//! addresses follow the endpoints when the roles flip, the VLAN ids do not. An all-zero address
//! and a VLAN id of 0 are logged unset. Read only when one of the two flags is on (the NewConn
//! event then carries an [`L2Info`]), so connections cost nothing more without them.

/// A connection's link-layer fields as its first packet carried them (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct L2Info {
    /// The packet's source address (the originator's, unless the roles flipped).
    pub src: [u8; 6],
    /// The packet's destination address.
    pub dst: [u8; 6],
    /// The outer VLAN id (12 bits), 0 for none.
    pub vlan: u16,
    /// The inner VLAN id, 0 for none.
    pub inner_vlan: u16,
}

/// Tag ethertypes Zeek's Ethernet analyzer hands to its VLAN analyzer (802.1Q, 802.1ad, and the
/// pre-standard QinQ 0x9100), as `packet::parse_ethernet` skips them.
/// The six bytes at `off`, zeros if the frame ends before (a slice pattern: no panic path,
/// which the eBPF build must not have).
#[inline(always)]
fn mac_at(frame: &[u8], off: usize) -> [u8; 6] {
    match frame.get(off..off + 6) {
        Some(&[a, b, c, d, e, f]) => [a, b, c, d, e, f],
        _ => [0; 6],
    }
}

/// Cisco's VN-Tag ethertype.
const VN_TAG: u16 = 0x8926;

#[inline(always)]
fn is_vlan_tag(ethertype: u16) -> bool {
    matches!(ethertype, 0x8100 | 0x88a8 | 0x9100)
}

/// The link-layer fields of an Ethernet II frame: both addresses and up to
/// [`super::MAX_VLAN_TAGS`] tags. Zeek's VLAN analyzer stores each tag's id in `vlan` while that
/// is still 0, else in `inner_vlan` (so a priority tag, id 0, leaves `vlan` to the next tag, and
/// a third tag overwrites `inner_vlan`). A frame too short for its Ethernet header gives what it
/// has (zeros: unset).
#[inline(always)]
pub fn of_ethernet(frame: &[u8]) -> L2Info {
    let mut info = L2Info {
        dst: mac_at(frame, 0),
        src: mac_at(frame, 6),
        ..L2Info::default()
    };
    let mut off = 12;
    // Each step is a tag or a VN-Tag; bounded by the number of tags parse_ethernet skips
    // plus one VN-Tag on each side of them.
    let mut steps = 0;
    while steps < super::MAX_VLAN_TAGS + 2 {
        steps += 1;
        let Some(ethertype) = super::be16(frame, off) else {
            break;
        };
        if ethertype == VN_TAG {
            // Cisco's VN-Tag (4 bytes) sits between tags; Zeek's analyzer passes on to the
            // next ethertype.
            off += 6;
            continue;
        }
        if !is_vlan_tag(ethertype) {
            break;
        }
        let Some(tci) = super::be16(frame, off + 2) else {
            break;
        };
        let id = tci & 0x0fff;
        if info.vlan == 0 {
            info.vlan = id;
        } else {
            info.inner_vlan = id;
        }
        off += 4;
    }
    info
}

/// The Ethernet header and tags that carry `info` in front of an IP packet of `ethertype`
/// (`of_ethernet` of the result gives `info` back): the replay's frames are built from the IP
/// packet, and with the policy fields on they keep the captured link layer.
#[cfg(any(test, feature = "user"))]
pub fn push_header(info: &L2Info, ethertype: u16, out: &mut alloc::vec::Vec<u8>) {
    out.extend_from_slice(&info.dst);
    out.extend_from_slice(&info.src);
    for id in [info.vlan, info.inner_vlan] {
        if id != 0 {
            out.extend_from_slice(&0x8100u16.to_be_bytes());
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
    out.extend_from_slice(&ethertype.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const DST: [u8; 6] = [0x00, 0xe0, 0xdb, 0x01, 0xcf, 0x4b];
    const SRC: [u8; 6] = [0x00, 0x13, 0x7f, 0xbe, 0x8c, 0xff];

    fn frame(tags: &[(u16, u16)]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&DST);
        f.extend_from_slice(&SRC);
        for (tpid, tci) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
        f
    }

    #[test]
    fn untagged() {
        let i = of_ethernet(&frame(&[]));
        assert_eq!((i.src, i.dst, i.vlan, i.inner_vlan), (SRC, DST, 0, 0));
    }

    #[test]
    fn tags_outer_then_inner_priority_bits_dropped() {
        // PCP 5 and DEI set on the outer tag: only the 12-bit id is the VLAN.
        let i = of_ethernet(&frame(&[(0x88a8, 0xb000 | 10), (0x8100, 20)]));
        assert_eq!((i.vlan, i.inner_vlan), (10, 20));
        let i = of_ethernet(&frame(&[(0x9100, 4094)]));
        assert_eq!((i.vlan, i.inner_vlan), (4094, 0));
    }

    #[test]
    fn priority_tag_leaves_vlan_to_the_next_tag() {
        let i = of_ethernet(&frame(&[(0x8100, 0x6000), (0x8100, 7)]));
        assert_eq!((i.vlan, i.inner_vlan), (7, 0));
        // A third tag overwrites the inner one, as Zeek's VLAN analyzer does.
        let i = of_ethernet(&frame(&[(0x8100, 1), (0x8100, 2), (0x8100, 3)]));
        assert_eq!((i.vlan, i.inner_vlan), (1, 3));
    }

    #[test]
    fn vn_tag_between_tags() {
        let mut f = Vec::new();
        f.extend_from_slice(&DST);
        f.extend_from_slice(&SRC);
        f.extend_from_slice(&[0x81, 0x00, 0x00, 250]);
        f.extend_from_slice(&[0x89, 0x26, 0x80, 0x01, 0x00, 0x02]);
        f.extend_from_slice(&[0x81, 0x00, 0x00, 251, 0x08, 0x00]);
        let i = of_ethernet(&f);
        assert_eq!((i.vlan, i.inner_vlan), (250, 251));
    }

    #[test]
    fn short_frames_give_what_they_have() {
        assert_eq!(
            of_ethernet(&DST),
            L2Info {
                dst: DST,
                ..L2Info::default()
            }
        );
        let mut f = frame(&[]);
        f.truncate(12);
        assert_eq!(of_ethernet(&f).src, SRC);
        let mut f = frame(&[(0x8100, 9)]);
        f.truncate(15);
        assert_eq!(of_ethernet(&f).vlan, 0);
    }

    #[test]
    fn header_round_trips() {
        for tags in [&[][..], &[(0x8100, 5)], &[(0x88a8, 5), (0x8100, 6)]] {
            let want = of_ethernet(&frame(tags));
            let mut out = Vec::new();
            push_header(&want, 0x0800, &mut out);
            assert_eq!(of_ethernet(&out), want);
            assert_eq!(&out[out.len() - 2..], &[0x08, 0x00]);
        }
    }
}
