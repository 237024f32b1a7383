//! The replay's checksum policy: `--ignore-checksums` and `--ignore-checksums-net` (source
//! address match). The checksums themselves are conntrack-common's (`checksum::*_ok`, Zeek's
//! rules), on the packet's `packet::ip_view`.

use crate::util::site::NetSet;

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
    use conntrack_common::checksum::{set_ipv4_header_checksum, set_transport_checksum};

    /// Test packets are built with checksum fields 0; these fill them in.
    pub fn fix_ipv4_header(ip: &mut [u8]) {
        set_ipv4_header_checksum(ip);
    }

    pub fn fix_udp4(ip: &mut [u8]) {
        set_transport_checksum(ip);
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
        let all = ChecksumPolicy {
            ignore_all: true,
            ..ChecksumPolicy::default()
        };
        assert!(all.skip_for(&b));
    }
}
