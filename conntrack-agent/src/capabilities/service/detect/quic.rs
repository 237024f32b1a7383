//! QUIC (RFC 9000, RFC 9369 for version 2). Zeek's QUIC analyzer confirms on the client's
//! first Initial packet, on any port: it derives that packet's keys from the connection id
//! (RFC 9001 5.2), so it decrypts the ClientHello inside and hands it to the SSL analyzer,
//! which confirms `ssl` too. A well-formed Initial of a known version is what it takes here.

use super::bytes::be32;
// One list of versions for the rule and the datapath's filter (`may_be_quic_initial`).
use conntrack_common::contents::{QUIC_V1 as V1, QUIC_V2 as V2};

/// A long-header Initial packet of version 1 or 2 with its connection ids, token and a
/// payload long enough for a ClientHello. Any of the client's first datagrams that starts
/// with one confirms `["quic", "ssl"]` (a client may send 0-RTT packets before its Initial
/// when the first one was lost).
pub(super) fn is_initial(d: &[u8]) -> bool {
    let Some(&first) = d.first() else {
        return false;
    };
    // Long header with the fixed bit set.
    if first & 0xc0 != 0xc0 {
        return false;
    }
    let packet_type = (first >> 4) & 3;
    match be32(d, 1) {
        Some(V1) if packet_type == 0 => {}
        Some(V2) if packet_type == 1 => {}
        _ => return false,
    }
    let mut at = 5;
    for _ in 0..2 {
        let Some(&len) = d.get(at) else { return false };
        if len > 20 {
            return false;
        }
        at += 1 + len as usize;
    }
    let Some((token_len, n)) = varint(d, at) else {
        return false;
    };
    at += n + token_len as usize;
    // The rest of the packet: a packet number and at least an AEAD tag's worth of payload.
    varint(d, at).is_some_and(|(len, _)| len >= 20)
}

/// A variable-length integer (RFC 9000 16) at `at`: its value and size.
fn varint(d: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *d.get(at)?;
    let size = 1usize << (first >> 6);
    let bytes = d.get(at..at + size)?;
    let mut v = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, size))
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::test_util::{hex, udp};

    /// curl's first Initial (version 1, 16-byte destination id) and the server's reply.
    const INITIAL: &str = "cc0000000110815d62c70884f4b51e8ccadd5beed37214e5ec6b26584229be98a164349ae910351c40d10b004120ce43dfccf374eedfb3";
    const REPLY: &str = "cc0000000114e5ec6b26584229be98a164349ae910351c40d10b08c15d62c70884f4b500448ab691c44b170b755810b3ed";
    /// A version 2 Initial (type bits 01) of an echo client (15-byte destination id).
    const V2_INITIAL: &str = "de6b3343cf0ffa603212c8688817af3d3238735bc7000044cb5b2052825b3178";

    #[test]
    fn a_client_initial_is_quic_and_ssl() {
        let (i, r) = (hex(INITIAL), hex(REPLY));
        assert_eq!(detect(&udp((34347, 443), &[&i], &[&r])), ["quic", "ssl"]);
        assert_eq!(detect(&udp((34347, 4433), &[&i], &[])), ["quic", "ssl"]);
        let v2 = hex(V2_INITIAL);
        assert_eq!(detect(&udp((34347, 443), &[&v2], &[])), ["quic", "ssl"]);
    }

    proptest::proptest! {
        /// The datapath's filter for a narrowed connection (`may_be_quic_initial`) lets
        /// through every datagram this rule confirms: real Initials with any first byte and
        /// any of the versions, tail cut anywhere.
        #[test]
        fn the_datapaths_filter_keeps_every_initial(
            which in 0usize..2,
            first: u8,
            version in proptest::prop_oneof![
                proptest::strategy::Just(super::V1),
                proptest::strategy::Just(super::V2),
                proptest::prelude::any::<u32>(),
            ],
            cut in 0usize..80,
        ) {
            let mut d = hex([INITIAL, V2_INITIAL][which]);
            d[0] = first;
            d[1..5].copy_from_slice(&version.to_be_bytes());
            d.truncate(d.len().saturating_sub(cut).max(1));
            if super::is_initial(&d) {
                proptest::prop_assert!(conntrack_common::contents::may_be_quic_initial(&d));
            }
        }
    }

    #[test]
    fn the_datapaths_filter_takes_initials_and_not_dns() {
        use conntrack_common::contents::may_be_quic_initial;
        assert!(may_be_quic_initial(&hex(INITIAL)));
        assert!(may_be_quic_initial(&hex(V2_INITIAL)));
        // A DNS query whose id starts with 0xc0: a long header by its first bits only.
        let dns = hex("c0de 0100 0001 0000 0000 0000 01 61 00 0001 0001");
        assert!(!may_be_quic_initial(&dns));
        assert!(!may_be_quic_initial(&[0xc0]));
    }

    #[test]
    fn other_long_headers_are_not() {
        // The server's Handshake packet first, or an unknown version.
        let r = hex(REPLY);
        let mut handshake = r.clone();
        handshake[0] = 0xe0;
        assert!(detect(&udp((34347, 443), &[&handshake], &[])).is_empty());
        let mut unknown = hex(INITIAL);
        unknown[4] = 7;
        assert!(detect(&udp((34347, 443), &[&unknown], &[])).is_empty());
    }
}
