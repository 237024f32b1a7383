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
    nets: Vec<IpNet>,
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
                nets.push(net.trunc());
            }
        }
        Ok(Self { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn contains(&self, addr: &IpAddr) -> bool {
        let addr = canonical(*addr);
        self.nets.iter().any(|n| n.contains(&addr))
    }

    pub fn contains_bytes(&self, addr: &[u8; 16]) -> bool {
        self.contains(&addr_from_bytes(addr))
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
}
