//! Internet checksums (RFC 1071) on the host: the IPv4 header checksum and the TCP, UDP, ICMP
//! and ICMPv6 checksum, the only implementation of each in the tree. Replay validates them the
//! way Zeek does before the engine sees a packet (the eBPF program never checks: in replay it
//! takes the agent's verdict); reassembly and the trace generators of the tests and benchmarks
//! fill them in.
//!
//! Each rule is one function that computes the checksum over the packet as it stands: 0 when
//! the stored checksum is right, and with the checksum field zeroed the value that belongs
//! there. The `_ok` functions add what Zeek accepts without checking, the `set_` functions
//! write the field.

use crate::packet::{IpView, ip_view};
use crate::proto;

/// VXLAN's well-known port (Zeek's default `PacketAnalyzer::VXLAN::vxlan_ports`).
pub const VXLAN_PORT: u16 = 4789;

/// Adds `data` to a one's-complement accumulator as big-endian 16-bit words, an odd last byte
/// padded with a zero byte. The raw accumulator differs from the plain 16-bit word sum;
/// [`finish`] folds it to the same 16 bits (2^16 = 1 modulo 0xffff, so any word size folds
/// alike).
fn sum_words(data: &[u8], acc: u64) -> u64 {
    acc + from_native(sum_native(data))
}

/// The one's-complement sum of `data` in native (little-endian) words, unfolded: to be
/// folded and byte-swapped by [`from_native`]. Byte order does not matter to a one's
/// complement sum (RFC 1071 2.B) as long as every byte keeps its place in its 16-bit word, so
/// any number of such sums over pieces that start at even offsets may be added together
/// first.
///
/// The bulk is summed 32 bytes at a time as eight little-endian 32-bit words in eight 64-bit
/// lanes: no carry to add back (a lane overflows only after 2^32 words), and independent adds
/// that the compiler turns into vector adds, where one 64-bit add-with-carry chain took a
/// cycle per word. The rest (under 32 bytes: most of a short segment, and every address of a
/// pseudo-header) as 64-bit words split in halves, then the last 2 to 7 bytes: a loop over
/// 16-bit words there took a tenth of a replay's checksum time.
#[inline]
fn sum_native(data: &[u8]) -> u64 {
    let (blocks, rest) = data.as_chunks::<32>();
    let mut sum = 0u64;
    // Not for an IP header or an address (most calls): the lanes' setup and their sum cost
    // more than the few words themselves.
    if !blocks.is_empty() {
        sum = sum_blocks(blocks);
    }
    let (quads, rest) = rest.as_chunks::<8>();
    for q in quads {
        let w = u64::from_le_bytes(*q);
        sum += (w & 0xffff_ffff) + (w >> 32);
    }
    let (words, rest) = rest.as_chunks::<4>();
    if let [w] = words {
        sum += u64::from(u32::from_le_bytes(*w));
    }
    let (pairs, odd) = rest.as_chunks::<2>();
    if let [p] = pairs {
        sum += u64::from(u16::from_le_bytes(*p));
    }
    // An odd last byte is the high byte of its big-endian word: the low byte of a native one.
    if let [last] = odd {
        sum += u64::from(*last);
    }
    sum
}

/// The 32-byte blocks' part of [`sum_native`], with AVX2 when the CPU has it: the same code
/// compiled for 256-bit registers sums a block in four instructions (two widening loads, two
/// adds) where the baseline's 128-bit ones take about fourteen; it is most of the cost of a
/// full-size segment.
#[inline]
fn sum_blocks(blocks: &[[u8; 32]]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (just asked; std caches the answer).
        return unsafe { sum_blocks_avx2(blocks) };
    }
    sum_blocks_baseline(blocks)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_blocks_avx2(blocks: &[[u8; 32]]) -> u64 {
    sum_blocks_baseline(blocks)
}

/// Eight little-endian 32-bit words of each block into eight 64-bit lanes (see
/// [`sum_native`]), then the lanes' total.
#[inline(always)]
fn sum_blocks_baseline(blocks: &[[u8; 32]]) -> u64 {
    let mut lanes = [0u64; 8];
    for block in blocks {
        let (words, _) = block.as_chunks::<4>();
        for (lane, word) in lanes.iter_mut().zip(words) {
            *lane += u64::from(u32::from_le_bytes(*word));
        }
    }
    lanes.iter().sum()
}

/// A [`sum_native`] total as a big-endian accumulator value: folded to 16 bits, bytes swapped.
#[inline]
fn from_native(native: u64) -> u64 {
    u64::from((fold16(native) as u16).swap_bytes())
}

/// `acc` folded to 16 bits with end-around carries; 0 only when `acc` is 0. Four fixed steps
/// (64 -> 33 -> 17 -> 16 bits, the last for the carry of the third) instead of a loop.
#[inline]
fn fold16(acc: u64) -> u64 {
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    (acc & 0xffff) + (acc >> 16)
}

/// The checksum of an accumulated sum: carries folded back in (end-around carry), complemented.
fn finish(acc: u64) -> u16 {
    !(fold16(acc) as u16)
}

/// The IPv4 header checksum over `ip[..IHL * 4]` as it stands; `None` when `ip` is not IPv4 or
/// the header was not captured whole (or IHL is below 5).
pub fn ipv4_header_checksum(ip: &[u8]) -> Option<u16> {
    let b0 = *ip.first()?;
    let ihl = usize::from(b0 & 0x0f) * 4;
    if b0 >> 4 != 4 || ihl < 20 {
        return None;
    }
    Some(finish(sum_words(ip.get(..ihl)?, 0)))
}

/// False only for an IPv4 header whose checksum is wrong (Zeek drops such packets before any
/// connection sees them). A header that cannot be checked is not bad: Zeek validates only what
/// it has whole, and the replay path drops a cut header before asking.
pub fn ipv4_header_checksum_ok(ip: &[u8]) -> bool {
    let Some(&b0) = ip.first() else {
        return true;
    };
    let ihl = usize::from(b0 & 0x0f) * 4;
    if b0 >> 4 != 4 || ihl < 20 {
        return true;
    }
    // Asked of every IPv4 packet: a right header's words sum to 0xffff (the checksum field is
    // the complement of the rest), which reads the same in either byte order, so the native
    // sum is folded and compared without the swap and the complement of `finish`. The usual
    // 20-byte header as five fixed words: the general sum's loops cost three times as much.
    if ihl == 20
        && let Some(h) = ip.first_chunk::<20>()
    {
        let (words, _) = h.as_chunks::<4>();
        let sum: u64 = words
            .iter()
            .map(|w| u64::from(u32::from_le_bytes(*w)))
            .sum();
        return fold16(sum) == 0xffff;
    }
    ip.get(..ihl)
        .is_none_or(|h| fold16(sum_native(h)) == 0xffff)
}

/// Fills in the IPv4 header checksum (no-op for anything else).
pub fn set_ipv4_header_checksum(ip: &mut [u8]) {
    if ipv4_header_checksum(ip).is_none() {
        return;
    }
    ip[10..12].fill(0);
    if let Some(c) = ipv4_header_checksum(ip) {
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

/// Where the transport's checksum field is (offset in the transport header) and whether the
/// pseudo-header is summed, for the protocols whose checksum is checked. ICMP is checked only
/// over IPv4 and ICMPv6 only over IPv6, as the replay path always did.
fn checksum_field(view: &IpView) -> Option<(usize, bool)> {
    match (view.proto, view.version) {
        (proto::TCP, _) => Some((16, true)),
        (proto::UDP, _) => Some((6, true)),
        (proto::ICMP, 4) => Some((2, false)),
        (proto::ICMPV6, 6) => Some((2, true)),
        _ => None,
    }
}

/// The transport bytes per the IP header lengths, if all of them were captured.
fn whole_transport<'a>(ip: &'a [u8], view: &IpView) -> Option<&'a [u8]> {
    ip.get(view.l4_off..view.l4_off.checked_add(view.l4_len)?)
}

/// The TCP/UDP/ICMP/ICMPv6 checksum of a whole IP packet as it stands: over the transport
/// header and payload plus, except for ICMP, the pseudo-header (source, destination (for IPv6
/// the final one of a type 0 routing header), protocol and transport length). `None` when there
/// is nothing to compute: another protocol, or fewer bytes captured than the IP header's
/// lengths say.
pub fn transport_checksum(ip: &[u8], view: &IpView) -> Option<u16> {
    let (_, pseudo) = checksum_field(view)?;
    let l4 = whole_transport(ip, view)?;
    let mut native = sum_native(l4);
    let mut acc = 0;
    if pseudo {
        let (src, dst) = if view.version == 4 {
            (&view.src[12..], &view.dst[12..])
        } else {
            (&view.src[..], &view.dst[..])
        };
        // The addresses are whole 16-bit words: their native sums add to the segment's.
        native += sum_native(src) + sum_native(dst);
        // IPv6 has the length as 32 bits: adding it whole folds to the same checksum.
        acc = u64::from(view.proto) + l4.len() as u64;
    }
    Some(finish(acc + from_native(native)))
}

/// Zeek's UDP analyzer accepts a zero checksum, also over IPv6, for what looks like VXLAN on
/// its port: long enough for the VXLAN and an Ethernet header, VXLAN's "I" flag set.
fn looks_like_vxlan(udp: &[u8]) -> bool {
    udp.get(2..4) == Some(&VXLAN_PORT.to_be_bytes()[..])
        && udp.len() > 8 + 8 + 14
        && udp.get(8).is_some_and(|flags| flags & 0x08 != 0)
}

/// False only when the packet's transport checksum is known to be wrong, as Zeek decides:
/// - not checked when fewer bytes were captured than the IP header's lengths say (Zeek only
///   validates packets it has whole), nor for protocols without a checksum here;
/// - a UDP checksum of 0 means "none" over IPv4; over IPv6 it is checked like any other value
///   (RFC 8200), except for what looks like VXLAN (Zeek: a VXLAN header with its "I" flag and
///   room for an Ethernet header, to [`VXLAN_PORT`]), which sends 0.
pub fn transport_checksum_ok(ip: &[u8], view: &IpView) -> bool {
    let Some(l4) = whole_transport(ip, view) else {
        return true;
    };
    if view.proto == proto::UDP
        && l4.get(6..8) == Some(&[0, 0][..])
        && (view.version == 4 || looks_like_vxlan(l4))
    {
        return true;
    }
    transport_checksum(ip, view).is_none_or(|c| c == 0)
}

/// Fills in the transport checksum of a whole IP packet (no-op when it has none, see
/// [`transport_checksum`]). A UDP checksum that comes out 0 is sent as 0xffff (RFC 768: 0 is
/// "none").
pub fn set_transport_checksum(ip: &mut [u8]) {
    let Some(view) = ip_view(ip) else { return };
    let Some((field, _)) = checksum_field(&view) else {
        return;
    };
    if field + 2 > view.l4_len || whole_transport(ip, &view).is_none() {
        return;
    }
    let at = view.l4_off + field;
    ip[at..at + 2].fill(0);
    if let Some(mut c) = transport_checksum(ip, &view) {
        if view.proto == proto::UDP && c == 0 {
            c = 0xffff;
        }
        ip[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// Fills in the transport checksum and the IPv4 header checksum of a generated IP packet.
pub fn set_checksums(ip: &mut [u8]) {
    set_transport_checksum(ip);
    set_ipv4_header_checksum(ip);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::vec::Vec;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn view(ip: &[u8]) -> IpView {
        ip_view(ip).unwrap()
    }

    // Captured packets with the checksums their senders computed: from Zeek's test traces
    // (http/get.trace, icmp/5-pings, quic/chromium-115 api-cirrus-com, chksums/ip6-udp-good-chksum,
    // ftp/ipv6), and an ICMPv6 echo request with a 9-byte payload that Linux checksummed.
    const TCP4_SYN: &str = "45000040df8e400040066dd38d8ee405c096bb2be9d00050fe21323a00000000b002ffff3bc00000020405b4010303040101080a164add200000000004020000";
    const ICMP4_ECHO: &str = "45000054946a40004001bd04ac108502acd90b4e0800ef2404ca00018bcfcf5f00000000db0d0f0000000000101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f3031323334353637";
    const UDP4_ODD: &str = "45000033000040003811150e6ed5357352ef367501bbd1df001f3ff653639417f6c572023211f97d5f232bc0b28904f6693c97";
    const UDP6: &str = "60000000000c1140200104f80004000702e081fffe52ffff200104f80004000702e081fffe529a6b753032c8000cbc5458585858";
    const TCP6_SYN: &str = "60000000002c0640200104701f11081fc9990d94aa7c2e3e20010470486700990000000000000021c0210015268a7e5f00000000b002ffff44890000020405a0010303010101080a3a01ea4e0000000004020000";
    const ICMP6_ECHO_ODD: &str = "600da70100113a40000000000000000000000000000000010000000000000000000000000000000180005ac912340001636f6e6e747261636b";

    const REAL: [&str; 6] = [
        TCP4_SYN,
        ICMP4_ECHO,
        UDP4_ODD,
        UDP6,
        TCP6_SYN,
        ICMP6_ECHO_ODD,
    ];

    proptest::proptest! {
        /// The 64-bit sum folds to RFC 1071's: 16-bit big-endian words, an odd byte padded,
        /// end-around carry; also when a word sums past 64 bits (runs of 0xff bytes).
        #[test]
        fn wide_sum_is_rfc1071(
            data in proptest::collection::vec(
                proptest::prop_oneof![proptest::prelude::any::<u8>(), proptest::strategy::Just(0xffu8)],
                0..1600,
            ),
            acc in 0u64..1 << 40,
        ) {
            let mut want = acc;
            for pair in data.chunks(2) {
                want += u64::from(pair[0]) << 8 | u64::from(*pair.get(1).unwrap_or(&0));
            }
            proptest::prop_assert_eq!(finish(sum_words(&data, acc)), finish(want));
        }
    }

    proptest::proptest! {
        /// The header check says what the computed checksum says: right exactly when it
        /// comes out 0, and not checked when it cannot be computed.
        #[test]
        fn header_check_agrees_with_the_checksum(
            mut ip in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            version_ihl in proptest::prop_oneof![
                proptest::strategy::Just(0x45u8),
                proptest::strategy::Just(0x4fu8),
                proptest::prelude::any::<u8>(),
            ],
            fill in proptest::prelude::any::<bool>(),
        ) {
            if let Some(b0) = ip.first_mut() {
                *b0 = version_ihl;
            }
            if fill {
                set_ipv4_header_checksum(&mut ip);
            }
            let c = ipv4_header_checksum(&ip);
            proptest::prop_assert_eq!(ipv4_header_checksum_ok(&ip), c.is_none_or(|c| c == 0));
            if fill && c.is_some() {
                proptest::prop_assert!(ipv4_header_checksum_ok(&ip));
            }
        }
    }

    proptest::proptest! {
        /// Both ways of summing the blocks give the same total (on a CPU with AVX2 the
        /// checksum takes that way; without, the check is the baseline against itself).
        #[test]
        fn avx2_blocks_sum_as_the_baseline(
            data in proptest::collection::vec(
                proptest::prop_oneof![proptest::prelude::any::<u8>(), proptest::strategy::Just(0xffu8)],
                0..2048,
            ),
        ) {
            let (blocks, _) = data.as_chunks::<32>();
            proptest::prop_assert_eq!(sum_blocks(blocks), sum_blocks_baseline(blocks));
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                let avx2 = unsafe { sum_blocks_avx2(blocks) };
                proptest::prop_assert_eq!(avx2, sum_blocks_baseline(blocks));
            }
        }
    }

    #[test]
    fn captured_packets_have_good_checksums() {
        for p in REAL {
            let ip = hex(p);
            let v = view(&ip);
            assert_eq!(transport_checksum(&ip, &v), Some(0), "{p}");
            assert!(transport_checksum_ok(&ip, &v));
            assert!(ipv4_header_checksum_ok(&ip));
        }
        assert_eq!(ipv4_header_checksum(&hex(TCP4_SYN)), Some(0));
        assert_eq!(ipv4_header_checksum(&hex(UDP6)), None);
    }

    #[test]
    fn filling_in_reproduces_the_senders_checksums() {
        for p in REAL {
            let sent = hex(p);
            let mut ip = sent.clone();
            let v = view(&ip);
            let field = v.l4_off + checksum_field(&v).unwrap().0;
            ip[field] ^= 0xa5;
            if v.version == 4 {
                ip[10] ^= 0x5a;
            }
            assert!(!transport_checksum_ok(&ip, &v), "{p}");
            set_checksums(&mut ip);
            assert_eq!(ip, sent, "{p}");
        }
    }

    #[test]
    fn the_rfc1071_example_sums_like_the_rfc() {
        // RFC 1071 section 3: these bytes sum to ddf2 (one's complement), checksum 220d.
        let data = [0x00u8, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum_words(&data, 0)), !0xddf2);
        // The same words in another chunking (odd tail, pairs only) sum the same.
        assert_eq!(sum_words(&data[..3], 0), 0x0001 + 0xf200);
        assert_eq!(
            finish(sum_words(&data[..7], 0) + 0xf7),
            finish(sum_words(&data, 0))
        );
    }

    #[test]
    fn corruption_anywhere_is_detected() {
        for p in REAL {
            let good = hex(p);
            let v = view(&good);
            for i in v.l4_off..good.len() {
                let mut bad = good.clone();
                bad[i] ^= 0x10;
                assert!(!transport_checksum_ok(&bad, &v), "{p} byte {i}");
            }
            // The pseudo-header is covered too (not for ICMP over IPv4).
            if v.proto != proto::ICMP {
                let mut other_src = v;
                other_src.src[15] ^= 1;
                assert!(!transport_checksum_ok(&good, &other_src), "{p}");
            }
        }
        let mut ip = hex(TCP4_SYN);
        ip[8] ^= 1; // TTL
        assert!(!ipv4_header_checksum_ok(&ip));
    }

    #[test]
    fn short_buffers_are_not_checked() {
        for p in REAL {
            let mut ip = hex(p);
            let v = view(&ip);
            let last = ip.len() - 1;
            ip[last] ^= 0x55;
            assert!(!transport_checksum_ok(&ip, &v));
            // Cut by the snap length: Zeek does not validate, so it is not bad.
            assert_eq!(transport_checksum(&ip[..last], &v), None);
            assert!(transport_checksum_ok(&ip[..last], &v));
            assert!(transport_checksum_ok(&ip[..v.l4_off], &v));
        }
        // An IPv4 header cut short cannot be checked either.
        let mut ip = ipv4(A4, B4, proto::UDP, &[1, 1, 1, 0], udp_seg(1, 2, 7));
        ip[10] ^= 0xff;
        assert!(!ipv4_header_checksum_ok(&ip));
        assert_eq!(ipv4_header_checksum(&ip[..23]), None);
        assert!(ipv4_header_checksum_ok(&ip[..23]));
        assert!(ipv4_header_checksum_ok(&[]));
        // Ethernet padding after the IP packet is not summed.
        let mut padded = hex(TCP4_SYN);
        padded.extend_from_slice(&[0xee; 6]);
        assert!(transport_checksum_ok(&padded, &view(&padded)));
    }

    #[test]
    fn odd_lengths_pad_the_last_byte() {
        for p in [UDP4_ODD, ICMP6_ECHO_ODD] {
            let ip = hex(p);
            let v = view(&ip);
            assert_eq!(v.l4_len % 2, 1);
            let mut bad = ip.clone();
            let last = bad.len() - 1;
            // The last byte is the high half of its word: a change there is a change of 256.
            bad[last] = bad[last].wrapping_add(1);
            assert!(!transport_checksum_ok(&bad, &v));
        }
    }

    #[test]
    fn udp_zero_checksum_means_none_over_ipv4_only() {
        let mut ip4 = hex(UDP4_ODD);
        ip4[26..28].fill(0);
        assert!(transport_checksum_ok(&ip4, &view(&ip4)));
        let mut ip6 = hex(UDP6);
        ip6[46..48].fill(0);
        assert!(!transport_checksum_ok(&ip6, &view(&ip6)));
        // A computed 0 is sent as 0xffff, which validates (and a zero field with such a sum
        // passes over IPv6 too, as in Zeek: the sum is what is checked).
        let zero_sum = (0..=u16::MAX)
            .map(|sport| {
                let mut p = ipv6(A6, B6, proto::UDP, &[], udp_seg(sport, 53, 3));
                p[46..48].fill(0);
                p
            })
            .find(|p| transport_checksum(p, &view(p)) == Some(0))
            .unwrap();
        assert!(transport_checksum_ok(&zero_sum, &view(&zero_sum)));
        let mut filled = zero_sum.clone();
        set_transport_checksum(&mut filled);
        assert_eq!(&filled[46..48], &[0xff, 0xff]);
        assert!(transport_checksum_ok(&filled, &view(&filled)));
    }

    #[test]
    fn vxlan_may_have_a_zero_udp_checksum_over_ipv6() {
        let vxlan = |flags: u8, dport: u16, len: usize| {
            let mut p = ipv6(A6, B6, proto::UDP, &[], udp_seg(5555, dport, len));
            p[48] = flags;
            p[46..48].fill(0);
            p
        };
        let ok = |p: &Vec<u8>| transport_checksum_ok(p, &view(p));
        assert!(ok(&vxlan(0x08, VXLAN_PORT, 40)));
        assert!(!ok(&vxlan(0x00, VXLAN_PORT, 40)), "no I flag");
        assert!(!ok(&vxlan(0x08, 4790, 40)), "other port");
        assert!(!ok(&vxlan(0x08, VXLAN_PORT, 22)), "no room for Ethernet");
        assert!(ok(&vxlan(0x08, VXLAN_PORT, 23)));
        // A VXLAN datagram with a checksum has it checked.
        let mut p = vxlan(0x08, VXLAN_PORT, 40);
        set_transport_checksum(&mut p);
        assert!(ok(&p));
        let last = p.len() - 1;
        p[last] ^= 1;
        assert!(!ok(&p));
    }

    #[test]
    fn ipv6_extension_headers_with_ah_and_routing_type0() {
        let hop = (0u8, std::vec![0u8, 0, 1, 4, 0, 0, 0, 0]);
        let ah = (
            51u8,
            std::vec![
                0u8, 4, 0, 0, 0, 0, 1, 0, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
            ],
        );
        let final_dst = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        let mut rt = std::vec![0u8, 2, 0, 1, 0, 0, 0, 0];
        rt.extend_from_slice(&final_dst);
        let dst = (60u8, std::vec![0u8, 0, 1, 4, 0, 0, 0, 0]);
        let ip = ipv6(
            A6,
            B6,
            proto::TCP,
            &[hop, (43, rt), ah, dst],
            tcp_seg(1, 2, ACK, 3, 4, &[], 5),
        );
        let v = view(&ip);
        assert_eq!(
            (v.proto, v.l4_off, v.dst),
            (proto::TCP, 40 + 8 + 24 + 24 + 8, final_dst)
        );
        assert!(transport_checksum_ok(&ip, &v));
        // The pseudo-header has the final destination, not the IPv6 header's.
        let mut first_hop = v;
        first_hop.dst = B6;
        assert!(!transport_checksum_ok(&ip, &first_hop));
    }

    #[test]
    fn generated_packets_validate() {
        let ips = [
            ipv4(A4, B4, proto::TCP, &[], tcp_seg(1, 2, ACK, 3, 4, &[], 11)),
            ipv4(A4, B4, proto::UDP, &[1, 1, 1, 0], udp_seg(1, 2, 7)),
            ipv4(A4, B4, proto::ICMP, &[], icmp_seg(8, 0, 9)),
            ipv6(A6, B6, proto::TCP, &[], tcp_seg(1, 2, ACK, 3, 4, &[], 11)),
            ipv6(A6, B6, proto::UDP, &[], udp_seg(1, 2, 7)),
            ipv6(A6, B6, proto::ICMPV6, &[], icmp_seg(128, 0, 9)),
        ];
        for ip in ips {
            let v = view(&ip);
            assert_eq!(transport_checksum(&ip, &v), Some(0), "proto {}", v.proto);
            assert!(ipv4_header_checksum_ok(&ip));
        }
    }

    #[test]
    fn other_protocols_and_mismatched_icmp_are_not_checked() {
        let sctp = ipv4(A4, B4, 132, &[], std::vec![1u8, 2, 3, 4, 9, 9, 9, 9]);
        assert_eq!(transport_checksum(&sctp, &view(&sctp)), None);
        assert!(transport_checksum_ok(&sctp, &view(&sctp)));
        let mut icmp_in_v6 = ipv6(A6, B6, proto::ICMP, &[], icmp_seg(8, 0, 4));
        icmp_in_v6[42] ^= 0xff;
        assert!(transport_checksum_ok(&icmp_in_v6, &view(&icmp_in_v6)));
    }
}
