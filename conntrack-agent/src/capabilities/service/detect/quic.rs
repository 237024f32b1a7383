//! QUIC (RFC 9000, RFC 9369 for version 2). Zeek's QUIC analyzer confirms on the client's
//! first Initial packet, on any port, once it has decrypted it: it derives that packet's keys
//! from the destination connection id (RFC 9001 5.2), removes the header protection and opens
//! the payload, whose ClientHello it hands to the SSL analyzer, which confirms `ssl` too. A
//! packet that does not decrypt is a violation (Zeek's suite: `quic.decrypt-crash`).
//!
//! The sample holds a datagram's first bytes, not the whole packet with its AEAD tag: the
//! payload's start is decrypted (AES-GCM is a counter mode) and must read as the frames an
//! Initial carries, which is what a key derived from another connection id never gives.

use super::bytes::be32;
use aes::Aes128;
use aes::cipher::{BlockCipherEncrypt, KeyInit, KeyIvInit, StreamCipher};
// One list of versions for the rule and the datapath's filter (`may_be_quic_initial`).
use conntrack_common::contents::{QUIC_V1 as V1, QUIC_V2 as V2};
use hkdf::Hkdf;
use sha2::Sha256;

/// A long-header Initial packet's fields that its protection depends on.
struct Initial<'a> {
    version: u32,
    dcid: &'a [u8],
    /// Where the (protected) packet number starts.
    pn_offset: usize,
    /// The Length field: packet number and payload.
    length: u64,
}

/// A long-header Initial packet of version 1 or 2 with its connection ids, token and a
/// payload long enough for a ClientHello.
fn initial(d: &[u8]) -> Option<Initial<'_>> {
    let first = *d.first()?;
    // Long header with the fixed bit set.
    if first & 0xc0 != 0xc0 {
        return None;
    }
    let packet_type = (first >> 4) & 3;
    let version = be32(d, 1)?;
    match version {
        V1 if packet_type == 0 => {}
        V2 if packet_type == 1 => {}
        _ => return None,
    }
    let mut at = 5;
    let mut dcid: &[u8] = &[];
    for which in 0..2 {
        let len = *d.get(at)? as usize;
        if len > 20 {
            return None;
        }
        if which == 0 {
            dcid = d.get(at + 1..at + 1 + len)?;
        }
        at += 1 + len;
    }
    let (token_len, n) = varint(d, at)?;
    at += n + usize::try_from(token_len).ok()?;
    // The rest of the packet: a packet number and at least an AEAD tag's worth of payload.
    let (length, n) = varint(d, at)?;
    (length >= 20).then_some(Initial {
        version,
        dcid,
        pn_offset: at + n,
        length,
    })
}

/// A well-formed Initial (see [`initial`]): the datapath's filter keeps every one.
#[cfg(test)]
pub(super) fn is_initial(d: &[u8]) -> bool {
    initial(d).is_some()
}

/// Any of the client's first datagrams that starts with an Initial that decrypts confirms
/// `["quic", "ssl"]` (a client may send 0-RTT packets before its Initial when the first one
/// was lost).
pub(super) fn confirms(d: &[u8]) -> bool {
    initial(d).is_some_and(|i| decrypts(d, &i))
}

/// A client's Initial keys (RFC 9001 5.2; RFC 9369 3.3 for version 2's salt and labels).
struct Keys {
    key: [u8; 16],
    iv: [u8; 12],
    hp: [u8; 16],
}

fn client_keys(version: u32, dcid: &[u8]) -> Option<Keys> {
    let (salt, labels): (&[u8; 20], [&str; 3]) = if version == V2 {
        (
            &[
                0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26,
                0x9d, 0xcb, 0xf9, 0xbd, 0x2e, 0xd9,
            ],
            ["quicv2 key", "quicv2 iv", "quicv2 hp"],
        )
    } else {
        (
            &[
                0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8,
                0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a,
            ],
            ["quic key", "quic iv", "quic hp"],
        )
    };
    let (_, initial) = Hkdf::<Sha256>::extract(Some(salt), dcid);
    let mut secret = [0u8; 32];
    expand_label(&initial, "client in", &mut secret)?;
    let client = Hkdf::<Sha256>::from_prk(&secret).ok()?;
    let mut k = Keys {
        key: [0; 16],
        iv: [0; 12],
        hp: [0; 16],
    };
    expand_label(&client, labels[0], &mut k.key)?;
    expand_label(&client, labels[1], &mut k.iv)?;
    expand_label(&client, labels[2], &mut k.hp)?;
    Some(k)
}

/// TLS 1.3's HKDF-Expand-Label with an empty context (RFC 8446 7.1).
fn expand_label(prk: &Hkdf<Sha256>, label: &str, out: &mut [u8]) -> Option<()> {
    let mut info = [0u8; 2 + 1 + 6 + 16 + 1];
    let full = 6 + label.len();
    info[..2].copy_from_slice(&u16::try_from(out.len()).ok()?.to_be_bytes());
    info[2] = u8::try_from(full).ok()?;
    info[3..9].copy_from_slice(b"tls13 ");
    info.get_mut(9..3 + full)?.copy_from_slice(label.as_bytes());
    // The context's length (0) is the byte after the label, already 0.
    prk.expand(info.get(..3 + full + 1)?, out).ok()
}

/// How much of the payload is decrypted: enough for the frames that open an Initial.
const OPENED: usize = 48;

/// Whether the Initial `i` at the start of `d` decrypts: header protection removed with the
/// client's keys, its reserved bits are 0 and its payload's start reads as an Initial's frames.
fn decrypts(d: &[u8], i: &Initial<'_>) -> bool {
    // The header protection sample: 16 bytes, 4 after the packet number's start.
    let Some(sample) = d.get(i.pn_offset + 4..i.pn_offset + 20) else {
        return false;
    };
    let Some(keys) = client_keys(i.version, i.dcid) else {
        return false;
    };
    let mut mask = aes::Block::try_from(sample).expect("16 bytes");
    Aes128::new(&keys.hp.into()).encrypt_block(&mut mask);
    let first = d[0] ^ (mask[0] & 0x0f);
    if first & 0x0c != 0 {
        return false;
    }
    let pn_len = usize::from(first & 3) + 1;
    let mut pn = 0u64;
    for k in 0..pn_len {
        pn = (pn << 8) | u64::from(d[i.pn_offset + k] ^ mask[1 + k]);
    }
    let start = i.pn_offset + pn_len;
    let payload_len = usize::try_from(i.length).unwrap_or(usize::MAX) - pn_len;
    let end = d.len().min(start + payload_len.min(OPENED));
    let mut plain = [0u8; OPENED];
    let plain = &mut plain[..end.saturating_sub(start)];
    plain.copy_from_slice(&d[start..end]);
    // AES-GCM's counter blocks: the nonce (IV xor packet number), then 2, 3, ... (1 is the tag's).
    let mut counter = [0u8; 16];
    counter[..12].copy_from_slice(&keys.iv);
    for (k, b) in pn.to_be_bytes().iter().enumerate() {
        counter[4 + k] ^= b;
    }
    counter[15] = 2;
    ctr::Ctr32BE::<Aes128>::new(&keys.key.into(), &counter.into()).apply_keystream(plain);
    initial_frames(plain, payload_len)
}

/// Whether `plain`, the start of an Initial's payload of `payload_len` bytes, reads as the
/// frames an Initial may carry (RFC 9000 17.2.2): PADDING and PING, then an ACK, a
/// CONNECTION_CLOSE or a CRYPTO frame that fits the payload (the first piece of the
/// handshake: a ClientHello).
fn initial_frames(plain: &[u8], payload_len: usize) -> bool {
    let mut at = 0;
    loop {
        match plain.get(at) {
            // All padding as far as the sample goes.
            None => return true,
            Some(0x00 | 0x01) => at += 1,
            Some(0x02 | 0x03 | 0x1c) => return true,
            Some(0x06) => {
                let Some((offset, n)) = varint(plain, at + 1) else {
                    return true;
                };
                let Some((len, m)) = varint(plain, at + 1 + n) else {
                    return true;
                };
                let data = at + 1 + n + m;
                let fits = len > 0 && (data as u64).saturating_add(len) <= payload_len as u64;
                let hello = offset != 0 || plain.get(data).is_none_or(|&t| t == 1);
                return fits && hello;
            }
            Some(_) => return false,
        }
    }
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

    /// curl's first Initial and the server's reply.
    const INITIAL: &str = super::super::test_util::QUIC_INITIAL;
    const REPLY: &str = "cc0000000114e5ec6b26584229be98a164349ae910351c40d10b08c15d62c70884f4b500448ab691c44b170b755810b3ed";
    /// A version 2 Initial (type bits 01) of an echo client (15-byte destination id).
    const V2_INITIAL: &str = "de6b3343cf0ffa603212c8688817af3d3238735bc7000044cb5b2052825b3178017131993f51bc27b49ddeb85045fcf6d7f47144311740ccac10d8c7ab9b8d25df19cd052ae63a95ddddfe0851a7f729ec08b3e56765462a158846819c737bc70be5046f";
    /// RFC 9001 A.2: the client Initial's header and first 16 bytes of protected payload.
    const RFC9001_INITIAL: &str =
        "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11d242b123dc9b";

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
    fn initial_keys_are_rfc_9001s() {
        let k = super::client_keys(super::V1, &hex("8394c8f03e515708")).unwrap();
        assert_eq!(k.key.to_vec(), hex("1f369613dd76d5467730efcbe3b1a22d"));
        assert_eq!(k.iv.to_vec(), hex("fa044b2f42a3fd3b46fb255c"));
        assert_eq!(k.hp.to_vec(), hex("9f50449e04a0e810283a1e9933adedd2"));
        // The payload opens with a CRYPTO frame at offset 0 holding the ClientHello.
        assert!(super::confirms(&hex(RFC9001_INITIAL)));
    }

    #[test]
    fn an_initial_that_does_not_decrypt_confirms_nothing() {
        // Another destination id: other keys, the payload reads as noise.
        let mut other_id = hex(RFC9001_INITIAL);
        other_id[13] ^= 1;
        assert!(super::is_initial(&other_id));
        assert!(!super::confirms(&other_id));
        // A damaged first payload byte: 0x06 (CRYPTO) becomes 0x07, no frame of an Initial.
        let mut damaged = hex(RFC9001_INITIAL);
        damaged[22] ^= 1;
        assert!(!super::confirms(&damaged));
        // Cut before the header protection's sample ends: nothing to judge by.
        let cut = hex(RFC9001_INITIAL);
        assert!(!super::confirms(&cut[..cut.len() - 1]));
        let curl = hex(INITIAL);
        assert!(detect(&udp((34347, 443), &[&curl[..60]], &[])).is_empty());
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
