//! Community ID v1 flow hashing (<https://github.com/corelight/community-id-spec>), for the optional
//! conn.log column `community_id` that Zeek's `policy/protocols/conn/community-id-logging` adds.
//!
//! `"1:" + base64(sha1(seed . saddr . daddr . proto . 0 . sport . dport))`, all in network byte
//! order, with the endpoints ordered so that the smaller (address, port) comes first. ICMP and
//! ICMPv6 type/code pairs become port equivalents as in Zeek: a request/reply type gets its
//! counterpart type as destination port and may be flipped; any other message is one-way, keeps
//! its code as destination port and is never flipped. Protocols other than TCP, UDP, SCTP, ICMP
//! and ICMPv6 are hashed without ports.

use crate::logs::record::ConnRecord;
use base64::Engine as _;
use conntrack_common::key::{icmp4_counterpart, icmp6_counterpart};
use sha1::{Digest, Sha1};
use std::net::IpAddr;

const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;

/// The seed Zeek uses unless `CommunityID::seed` is redefined.
pub const DEFAULT_SEED: u16 = 0;

/// An address in network byte order: 4 bytes for IPv4 (also when stored IPv4-mapped, as Zeek
/// stores it), 16 for IPv6.
fn addr_bytes(a: IpAddr) -> ([u8; 16], usize) {
    let mut out = [0u8; 16];
    let v4 = match a {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return (v6.octets(), 16),
        },
    };
    out[..4].copy_from_slice(&v4.octets());
    (out, 4)
}

/// ICMP/ICMPv6 (type, code) as (source port, destination port, one-way).
fn icmp_ports(proto: u8, icmp_type: u16, code: u16) -> (u16, u16, bool) {
    let counterpart = u8::try_from(icmp_type).ok().and_then(|t| {
        if proto == ICMP {
            icmp4_counterpart(t)
        } else {
            icmp6_counterpart(t)
        }
    });
    match counterpart {
        Some(c) => (icmp_type, u16::from(c), false),
        None => (icmp_type, code, true),
    }
}

/// Community ID v1 of a flow from `saddr` to `daddr` with IP protocol `proto`. `sport` and
/// `dport` are the ports for TCP, UDP and SCTP, the message type and code for ICMP and ICMPv6;
/// they are ignored for other protocols.
pub fn community_id_v1(
    seed: u16,
    proto: u8,
    saddr: IpAddr,
    daddr: IpAddr,
    sport: u16,
    dport: u16,
) -> String {
    let (ports, one_way) = match proto {
        TCP | UDP | SCTP => (Some((sport, dport)), false),
        ICMP | ICMPV6 => {
            let (s, d, one_way) = icmp_ports(proto, sport, dport);
            (Some((s, d)), one_way)
        }
        _ => (None, false),
    };
    let (sa, sa_len) = addr_bytes(saddr);
    let (da, da_len) = addr_bytes(daddr);
    let (mut a, mut b) = (&sa[..sa_len], &da[..da_len]);
    let (mut pa, mut pb) = ports.unwrap_or((0, 0));
    // Ports decide only between equal addresses; ports compare as numbers (big-endian bytes).
    let ordered = one_way || a < b || (a == b && ports.is_some() && pa < pb);
    if !ordered {
        std::mem::swap(&mut a, &mut b);
        std::mem::swap(&mut pa, &mut pb);
    }
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    h.update(a);
    h.update(b);
    h.update([proto, 0]);
    if ports.is_some() {
        h.update(pa.to_be_bytes());
        h.update(pb.to_be_bytes());
    }
    let digest = h.finalize();
    format!(
        "1:{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_slice())
    )
}

/// The `community_id` value of a conn.log record (seed 0). Zeek's ICMP connection ids already
/// carry (type, counterpart type or code), which map to themselves. Unset for SCTP: Zeek keys
/// it as an unknown transport without ports, and the spec's SCTP ID needs the ports.
pub fn for_record(rec: &ConnRecord) -> Option<String> {
    if rec.ip_proto == SCTP {
        return None;
    }
    Some(community_id_v1(
        DEFAULT_SEED,
        rec.ip_proto,
        rec.orig_h,
        rec.resp_h,
        rec.orig_p,
        rec.resp_p,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seed: u16, proto: u8, s: &str, d: &str, sp: u16, dp: u16) -> String {
        community_id_v1(seed, proto, s.parse().unwrap(), d.parse().unwrap(), sp, dp)
    }

    /// Checks one vector (both directions are listed where the source gives both).
    fn check(seed: u16, proto: u8, s: &str, d: &str, sp: u16, dp: u16, want: &str) {
        assert_eq!(
            id(seed, proto, s, d, sp, dp),
            want,
            "{proto} {s}:{sp} -> {d}:{dp}"
        );
    }

    const V6A: &str = "fe80:0001:0203:0405:0607:0809:0A0B:0C0D";
    const V6B: &str = "fe80:1011:1213:1415:1617:1819:1A1B:1C1D";

    /// community-id-spec, baseline/README.md, "Default settings" and "A custom seed=1 value"
    /// tables (each row: proto, src, dst, sport, dport, seed 0 value, seed 1 value).
    #[test]
    fn spec_baseline_tables() {
        #[rustfmt::skip]
        let rows: &[(u8, &str, &str, u16, u16, &str, &str)] = &[
            (6, "1.2.3.4", "5.6.7.8", 1122, 3344, "1:wCb3OG7yAFWelaUydu0D+125CLM=", "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk="),
            (6, "5.6.7.8", "1.2.3.4", 3344, 1122, "1:wCb3OG7yAFWelaUydu0D+125CLM=", "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk="),
            (17, "1.2.3.4", "5.6.7.8", 1122, 3344, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=", "1:OShq+iKDAMVouh/4bMxB9Sz4amw="),
            (17, "5.6.7.8", "1.2.3.4", 3344, 1122, "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=", "1:OShq+iKDAMVouh/4bMxB9Sz4amw="),
            (132, "1.2.3.4", "5.6.7.8", 1122, 3344, "1:EKt4MsxuyaE6mL+hmrEkQ9csDD8=", "1:uitchpn5MMGAQKBJh7bIr/bAr7s="),
            (132, "5.6.7.8", "1.2.3.4", 3344, 1122, "1:EKt4MsxuyaE6mL+hmrEkQ9csDD8=", "1:uitchpn5MMGAQKBJh7bIr/bAr7s="),
            (1, "1.2.3.4", "5.6.7.8", 8, 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=", "1:9pr4ZGTICiuZoIh90RRYE2RyXpU="),
            (1, "5.6.7.8", "1.2.3.4", 0, 0, "1:crodRHL2FEsHjbv3UkRrfbs4bZ0=", "1:9pr4ZGTICiuZoIh90RRYE2RyXpU="),
            (1, "1.2.3.4", "5.6.7.8", 11, 0, "1:f/YiSyWqczrTgfUCZlBUnvHRcPk=", "1:1DD7cWGC/Yg91YGsQeni8du3pIA="),
            (58, V6A, V6B, 128, 0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=", "1:IO27GQzPuCtNnwFvjWALMHu5tJE="),
            (58, V6B, V6A, 129, 0, "1:0bf7hyMJUwt3fMED7z8LIfRpBeo=", "1:IO27GQzPuCtNnwFvjWALMHu5tJE="),
            (58, V6A, V6B, 146, 0, "1:fYC8+pz24E+EhANP1EZhpX0Dw10=", "1:Cv4IKJe56BNkF0MBW2YxQ3Nwc3s="),
            (46, "1.2.3.4", "5.6.7.8", 0, 0, "1:ikv3kmf89luf73WPz1jOs49S768=", "1:/buhqeOmaRCopOZFy9HnoJd5XW8="),
            (46, "5.6.7.8", "1.2.3.4", 0, 0, "1:ikv3kmf89luf73WPz1jOs49S768=", "1:/buhqeOmaRCopOZFy9HnoJd5XW8="),
            (46, V6A, V6B, 0, 0, "1:wQ/2mwrnXP4lmJcHdGL5ePjR+e0=", "1:j6EyyfBzL4vWKHFXgUqb5Az3OxM="),
            (46, V6B, V6A, 0, 0, "1:wQ/2mwrnXP4lmJcHdGL5ePjR+e0=", "1:j6EyyfBzL4vWKHFXgUqb5Az3OxM="),
        ];
        for &(proto, s, d, sp, dp, seed0, seed1) in rows {
            check(0, proto, s, d, sp, dp, seed0);
            check(1, proto, s, d, sp, dp, seed1);
        }
    }

    /// community-id-spec, baseline/baseline_deflt.json (the spec's sample pcaps, seed 0).
    /// ICMP rows hold the port equivalents (type, counterpart type or code), which map to
    /// themselves.
    #[test]
    fn spec_baseline_pcaps() {
        #[rustfmt::skip]
        let rows: &[(u8, &str, &str, u16, u16, &str)] = &[
            (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 135, 136, "1:dGHyGvjMfljg6Bppwm3bg0LO8TY="),
            (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 136, 135, "1:dGHyGvjMfljg6Bppwm3bg0LO8TY="),
            (58, "fe80::260:97ff:fe07:69ea", "fe80::200:86ff:fe05:80da", 135, 136, "1:zavyT/cezQr1fmImYCwYnMXbgck="),
            (58, "fe80::200:86ff:fe05:80da", "fe80::260:97ff:fe07:69ea", 136, 135, "1:zavyT/cezQr1fmImYCwYnMXbgck="),
            (58, "3ffe:501:1800:2345::2", "3ffe:507:0:1:200:86ff:fe05:80da", 3, 0, "1:2ObVBgIn28oZvibYZhZMBgh7WdQ="),
            (58, "3ffe:501:410:0:2c0:dfff:fe47:33e", "3ffe:507:0:1:200:86ff:fe05:80da", 1, 4, "1:hLZd0XGWojozrvxqE0dWB1iM6R0="),
            (58, "3ffe:507:0:1:200:86ff:fe05:80da", "3ffe:501:0:1001::2", 128, 129, "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg="),
            (58, "3ffe:501:0:1001::2", "3ffe:507:0:1:200:86ff:fe05:80da", 129, 128, "1:+TW+HtLHvV1xnGhV1lv7XoJrqQg="),
            (58, "fe80::200:86ff:fe05:80da", "ff02::2", 133, 134, "1:hO+sN4H+MG5MY/8hIrXPqc4ZQz0="),
            (58, "fe80::260:97ff:fe07:69ea", "ff02::1", 134, 133, "1:pkvHqCL88/tg1k4cPigmZXUtL00="),
            (1, "192.168.0.89", "192.168.0.1", 8, 0, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="),
            (1, "192.168.0.1", "192.168.0.89", 0, 8, "1:X0snYXpgwiv9TZtqg64sgzUn6Dk="),
            (1, "10.0.0.1", "10.0.0.2", 11, 0, "1:YHxtAirCG//0OzkcVAukqKQN9xM="),
            (6, "2001:470:e5bf:dead:4957:2174:e82c:4887", "2607:f8b0:400c:c03::1a", 63943, 25, "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="),
            (6, "2607:f8b0:400c:c03::1a", "2001:470:e5bf:dead:4957:2174:e82c:4887", 25, 63943, "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4="),
            (132, "192.168.170.8", "192.168.170.56", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs="),
            (132, "192.168.170.56", "192.168.170.8", 7, 7, "1:MP2EtRCAUIZvTw6MxJHLV7N7JDs="),
            (6, "128.232.110.120", "66.35.250.204", 34855, 80, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
            (6, "66.35.250.204", "128.232.110.120", 80, 34855, "1:LQU9qZlK+B5F3KDmev6m5PMibrg="),
            (17, "192.168.1.52", "8.8.8.8", 54585, 53, "1:d/FP5EW3wiY1vCndhwleRRKHowQ="),
            (17, "8.8.8.8", "192.168.1.52", 53, 54585, "1:d/FP5EW3wiY1vCndhwleRRKHowQ="),
            (46, "10.1.12.1", "10.1.12.2", 0, 0, "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw="),
            (46, "10.1.12.2", "10.1.12.1", 0, 0, "1:KHlLkgoJW7ifUTyTSgyVfkFHzKw="),
        ];
        for &(proto, s, d, sp, dp, want) in rows {
            check(0, proto, s, d, sp, dp, want);
        }
    }

    /// The reference Python implementation (corelight/pycommunityid): README example and
    /// tests/communityid_test.py (seed 0 column), with ICMP (type, code) inputs.
    #[test]
    fn pycommunityid_examples() {
        check(
            0,
            6,
            "127.0.0.1",
            "10.0.0.1",
            1234,
            80,
            "1:mgRgpIZSu0KHDp/QrtcWZpkJpMU=",
        );
        // Port order between equal-prefix addresses (pycommunityid issue 3).
        check(
            0,
            6,
            "10.0.0.1",
            "10.0.0.2",
            10,
            11569,
            "1:SXBGMX1lBOwhhoDrZynfROxnhnM=",
        );
        // Type 20 is not a request/reply type: the code is hashed, so codes differ ...
        check(
            0,
            1,
            "192.168.0.89",
            "192.168.0.1",
            20,
            0,
            "1:3o2RFccXzUgjl7zDpqmY7yJi8rI=",
        );
        check(
            0,
            1,
            "192.168.0.89",
            "192.168.0.1",
            20,
            1,
            "1:tz/fHIDUHs19NkixVVoOZywde+I=",
        );
        // ... while for an echo reply the code is ignored (counterpart type instead).
        check(
            0,
            1,
            "192.168.0.1",
            "192.168.0.89",
            0,
            20,
            "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
        );
        // One-way ICMPv6: the two directions differ.
        let (a, b) = (
            "3ffe:507:0:1:260:97ff:fe07:69ea",
            "3ffe:507:0:1:200:86ff:fe05:80da",
        );
        check(0, 58, a, b, 3, 0, "1:NdobDX8PQNJbAyfkWxhtL2Pqp5w=");
        check(0, 58, b, a, 3, 0, "1:/OGBt9BN1ofenrmSPWYicpij2Vc=");
        check(
            0,
            58,
            "fe80::200:86ff:fe05:80da",
            "fe80::260:97ff:fe07:69ea",
            135,
            0,
            "1:dGHyGvjMfljg6Bppwm3bg0LO8TY=",
        );
        check(
            0,
            132,
            "192.168.170.8",
            "192.168.170.56",
            7,
            80,
            "1:jQgCxbku+pNGw8WPbEc/TS/uTpQ=",
        );
        check(
            0,
            132,
            "192.168.170.56",
            "192.168.170.8",
            80,
            7,
            "1:jQgCxbku+pNGw8WPbEc/TS/uTpQ=",
        );
        check(
            0,
            46,
            "10.1.24.4",
            "10.1.12.1",
            0,
            0,
            "1:/nQI4Rh/TtY3mf0R2gJFBkVlgS4=",
        );
        check(
            0,
            46,
            "10.1.12.1",
            "10.1.24.4",
            0,
            0,
            "1:/nQI4Rh/TtY3mf0R2gJFBkVlgS4=",
        );
    }

    #[test]
    fn ipv4_mapped_and_equal_addresses() {
        // Zeek stores IPv4 addresses IPv4-mapped; they hash as 4 bytes.
        check(
            0,
            6,
            "::ffff:128.232.110.120",
            "::ffff:66.35.250.204",
            34855,
            80,
            "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
        );
        // Same address on both sides: the ports decide, so both directions agree.
        assert_eq!(
            id(0, 17, "10.0.0.1", "10.0.0.1", 5353, 53),
            id(0, 17, "10.0.0.1", "10.0.0.1", 53, 5353)
        );
        assert_eq!(
            id(0, 17, "10.0.0.1", "10.0.0.1", 256, 2),
            id(0, 17, "10.0.0.1", "10.0.0.1", 2, 256)
        );
    }

    /// A conn.log record, as conn_log writes it: Zeek's baseline for
    /// scripts.policy.protocols.conn.community-id-logging (http/get.pcap).
    #[test]
    fn record_value() {
        // The hash covers only the 5-tuple.
        let rec = crate::tests::fixtures::http_get_record();
        assert_eq!(
            for_record(&rec).as_deref(),
            Some("1:yvyB8h+3dnggTZW0UEITWCst97w=")
        );
        // Other IP protocols are logged without ports and hashed without them (the spec's
        // RSVP vector); SCTP's ID would need the ports the record does not have.
        let rsvp = ConnRecord {
            orig_h: "1.2.3.4".parse().unwrap(),
            orig_p: 0,
            resp_h: "5.6.7.8".parse().unwrap(),
            resp_p: 0,
            proto: "unknown_transport",
            ip_proto: 46,
            ..rec
        };
        assert_eq!(
            for_record(&rsvp).as_deref(),
            Some("1:ikv3kmf89luf73WPz1jOs49S768=")
        );
        let sctp = ConnRecord {
            ip_proto: 132,
            ..rsvp
        };
        assert_eq!(for_record(&sctp), None);
    }
}
