//! Address sets: `Site::local_nets` (local_orig / local_resp) and `ignore_checksums_nets`.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Zeek's `Site::private_address_space` (scripts/base/utils/site.zeek), which is what
/// `Site::local_nets` holds by default (`private_address_space_is_local = T`).
pub const PRIVATE_ADDRESS_SPACE: &[&str] = &[
    "0.0.0.0/8",
    "2002::/24",
    "10.0.0.0/8",
    "2002:a00::/24",
    "100.64.0.0/10",
    "2002:6440::/26",
    "127.0.0.0/8",
    "2002:7f00::/24",
    "169.254.0.0/16",
    "2002:a9fe::/32",
    "172.16.0.0/12",
    "2002:ac10::/28",
    "192.0.0.0/24",
    "2002:c000::/40",
    "192.0.2.0/24",
    "2002:c000:200::/40",
    "192.168.0.0/16",
    "2002:c0a8::/32",
    "198.18.0.0/15",
    "2002:c612::/31",
    "198.51.100.0/24",
    "2002:c633:6400::/40",
    "203.0.113.0/24",
    "2002:cb00:7100::/40",
    "224.0.0.0/24",
    "2002:e000::/40",
    "239.0.0.0/8",
    "2002:ef00::/24",
    "240.0.0.0/4",
    "2002:f000::/20",
    "255.255.255.255/32",
    "2002:ffff:ffff::/48",
    "::/128",
    "::1/128",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:2::/48",
    "2001:db8::/32",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
];

/// A set of IPv4/IPv6 networks. Addresses in the engine's 16-byte form (IPv4-mapped for IPv4)
/// are matched against IPv4 networks as IPv4, as Zeek does.
#[derive(Debug, Clone, Default)]
pub struct NetSet {
    nets: Vec<Masked>,
}

/// A network as a 128-bit prefix of the engine's 16-byte addresses (an IPv4 network sits in the
/// IPv4-mapped range), checked with one AND and compare: two of these per logged connection
/// (local_orig, local_resp) against a few dozen networks.
#[derive(Debug, Clone, Copy)]
struct Masked {
    v4: bool,
    net: u128,
    mask: u128,
}

impl Masked {
    fn of(net: IpNet) -> Self {
        let (v4, addr, len) = match net.trunc() {
            IpNet::V4(n) => (
                true,
                u128::from_be_bytes(n.network().to_ipv6_mapped().octets()),
                96 + u32::from(n.prefix_len()),
            ),
            IpNet::V6(n) => (
                false,
                u128::from_be_bytes(n.network().octets()),
                u32::from(n.prefix_len()),
            ),
        };
        let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
        Self {
            v4,
            net: addr & mask,
            mask,
        }
    }
}

impl NetSet {
    pub fn private_address_space() -> Self {
        Self::parse_list(PRIVATE_ADDRESS_SPACE.iter().copied()).expect("built-in list parses")
    }

    /// Parses CIDRs; each item may itself be a comma- or space-separated list. A bare address is
    /// taken as a host network (/32 or /128).
    pub fn parse_list<'a>(items: impl IntoIterator<Item = &'a str>) -> anyhow::Result<Self> {
        let mut nets = Vec::new();
        for item in items {
            for part in item
                .split([',', ' '])
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                let p = part.trim_start_matches('[').replace("]/", "/");
                let p = p.trim_end_matches(']');
                let net: IpNet = match p.parse::<IpNet>() {
                    Ok(n) => n,
                    Err(_) => match p.parse::<IpAddr>() {
                        Ok(a) => IpNet::from(a),
                        Err(_) => anyhow::bail!(
                            "invalid network {part:?}: expected CIDR such as 10.0.0.0/8 or fe80::/10"
                        ),
                    },
                };
                nets.push(Masked::of(net));
            }
        }
        Ok(Self { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn contains(&self, addr: &IpAddr) -> bool {
        let bytes = match canonical(*addr) {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        self.contains_bytes(&bytes)
    }

    /// `addr` in the engine's form; an IPv4-mapped address is IPv4 and meets only IPv4
    /// networks (and a native IPv6 address only IPv6 ones, even `::/0`).
    pub fn contains_bytes(&self, addr: &[u8; 16]) -> bool {
        let a = u128::from_be_bytes(*addr);
        let v4 = a >> 32 == 0xffff;
        self.nets.iter().any(|n| n.v4 == v4 && a & n.mask == n.net)
    }
}

/// IPv4-mapped IPv6 addresses are IPv4 addresses (Zeek stores every address as IPv6).
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

pub fn addr_from_bytes(b: &[u8; 16]) -> IpAddr {
    canonical(IpAddr::V6(Ipv6Addr::from(*b)))
}

#[cfg(test)]
pub fn addr_to_bytes(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[allow(dead_code)]
pub fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_space() {
        let s = NetSet::private_address_space();
        for yes in [
            "10.1.2.3",
            "192.168.1.28",
            "172.31.255.255",
            "127.0.0.1",
            "169.254.3.3",
            "100.64.0.1",
            "224.0.0.251",
            "239.255.255.250",
            "255.255.255.255",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::5",
            "2001:db8::1",
            "2002:c0a8:101::1",
        ] {
            assert!(s.contains(&a(yes)), "{yes}");
        }
        for no in [
            "8.8.8.8",
            "35.221.46.9",
            "172.32.0.1",
            "224.0.1.1",
            "ff02::fb",
            "2001:470:1f11::1",
            "2607:f8b0::1",
        ] {
            assert!(!s.contains(&a(no)), "{no}");
        }
        // IPv4-mapped form is matched as IPv4.
        assert!(s.contains_bytes(&addr_to_bytes(a("192.168.0.1"))));
    }

    #[test]
    fn parse_lists() {
        let s = NetSet::parse_list(["192.168.0.0/16, 192.169.0.0/16", "10.0.0.1", "[fe80::]/10"])
            .unwrap();
        assert!(s.contains(&a("192.169.3.4")));
        assert!(s.contains(&a("10.0.0.1")));
        assert!(!s.contains(&a("10.0.0.2")));
        assert!(s.contains(&a("fe80::2")));
        assert!(NetSet::parse_list(["nonsense"]).is_err());
        // host bits are masked like Zeek does
        let s = NetSet::parse_list(["192.168.1.1/16"]).unwrap();
        assert!(s.contains(&a("192.168.200.1")));
    }

    #[test]
    fn ipv4_and_ipv6_networks_meet_only_their_own_addresses() {
        let all6 = NetSet::parse_list(["::/0"]).unwrap();
        assert!(all6.contains(&a("2001:db8::1")));
        assert!(all6.contains(&a("::")));
        // An IPv4 address (also in its IPv4-mapped form) is not in an IPv6 network.
        assert!(!all6.contains(&a("10.0.0.1")));
        assert!(!all6.contains(&a("::ffff:10.0.0.1")));
        assert!(!all6.contains_bytes(&addr_to_bytes(a("10.0.0.1"))));
        let all4 = NetSet::parse_list(["0.0.0.0/0"]).unwrap();
        assert!(all4.contains(&a("10.0.0.1")));
        assert!(all4.contains(&a("::ffff:8.8.8.8")));
        assert!(!all4.contains(&a("2001:db8::1")));
        assert!(!all4.contains(&a("::")));
        // Prefix edges.
        let s = NetSet::parse_list(["10.1.2.3/32", "2001:db8::/127"]).unwrap();
        assert!(s.contains(&a("10.1.2.3")) && !s.contains(&a("10.1.2.4")));
        assert!(s.contains(&a("2001:db8::1")) && !s.contains(&a("2001:db8::2")));
    }
}
