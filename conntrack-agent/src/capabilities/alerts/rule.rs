//! Alert rules: which connections a rule watches (its match), what it measures (the metric) and
//! where its alerts go (webhook sinks; alerts.log always).

use crate::core::thresholds::ThresholdKind;
#[cfg(test)]
use crate::logs::record::ConnRecord;
use crate::util::site::{NetSet, addr_from_bytes, canonical};
use std::net::IpAddr;

/// Index of a rule in the order of the config file; what the threshold wiring carries from
/// "arm this threshold" to "this threshold was crossed".
pub type RuleId = usize;

/// Inclusive port range; a single port is `lo == hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    fn contains(self, p: u16) -> bool {
        (self.lo..=self.hi).contains(&p)
    }
}

/// The connection fields a rule's match looks at. `proto` is the IP protocol number; `iface`
/// the interface the connection was first seen on (None in `read`: then a rule that names
/// interfaces does not match).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnMatch<'a> {
    pub proto: u8,
    pub orig_h: IpAddr,
    pub orig_p: u16,
    pub resp_h: IpAddr,
    pub resp_p: u16,
    pub iface: Option<&'a str>,
}

impl<'a> ConnMatch<'a> {
    /// From the engine's connection (e.g. the snapshot in a NewConn event).
    pub fn from_conn(c: &conntrack_common::conn::Conn, iface: Option<&'a str>) -> Self {
        Self {
            proto: c.proto,
            orig_h: addr_from_bytes(&c.orig_addr),
            orig_p: c.orig_port,
            resp_h: addr_from_bytes(&c.resp_addr),
            resp_p: c.resp_port,
            iface,
        }
    }

    #[cfg(test)]
    pub fn from_record(r: &ConnRecord, iface: Option<&'a str>) -> Self {
        Self {
            proto: r.ip_proto,
            orig_h: r.orig_h,
            orig_p: r.orig_p,
            resp_h: r.resp_h,
            resp_p: r.resp_p,
            iface,
        }
    }
}

/// A rule's optional match. Every condition given must hold; an empty list means "any".
/// `nets`/`ports` hold when either side matches; `orig_*`/`resp_*` look at one side.
#[derive(Debug, Clone, Default)]
pub struct Match {
    /// IP protocol numbers; `icmp` in the config stands for both ICMP (1) and ICMPv6 (58), as
    /// conn.log's `proto` does.
    pub protos: Vec<u8>,
    pub orig_nets: NetSet,
    pub resp_nets: NetSet,
    pub nets: NetSet,
    pub orig_ports: Vec<PortRange>,
    pub resp_ports: Vec<PortRange>,
    pub ports: Vec<PortRange>,
    pub ifaces: Vec<String>,
}

fn in_nets(set: &NetSet, a: IpAddr) -> bool {
    set.is_empty() || set.contains(&canonical(a))
}

fn in_ports(ranges: &[PortRange], p: u16) -> bool {
    ranges.is_empty() || ranges.iter().any(|r| r.contains(p))
}

impl Match {
    pub fn matches(&self, c: &ConnMatch) -> bool {
        self.may_match(c.proto, c.orig_p, c.resp_p)
            && in_nets(&self.orig_nets, c.orig_h)
            && in_nets(&self.resp_nets, c.resp_h)
            && (self.nets.is_empty()
                || in_nets(&self.nets, c.orig_h)
                || in_nets(&self.nets, c.resp_h))
            && (self.ifaces.is_empty()
                || c.iface.is_some_and(|i| self.ifaces.iter().any(|x| x == i)))
    }
}

impl Match {
    /// The protocol and port conditions alone, which need no [`ConnMatch`]: false means the
    /// rule cannot match (`matches` checks them first). Most connections fail a rule here,
    /// before their addresses are converted for the net conditions.
    pub fn may_match(&self, proto: u8, orig_p: u16, resp_p: u16) -> bool {
        (self.protos.is_empty() || self.protos.contains(&proto))
            && in_ports(&self.orig_ports, orig_p)
            && in_ports(&self.resp_ports, resp_p)
            && (self.ports.is_empty()
                || in_ports(&self.ports, orig_p)
                || in_ports(&self.ports, resp_p))
    }
}

/// One alert rule from the config file.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub metric: ThresholdKind,
    /// Bytes or packets; nanoseconds for `ThresholdKind::Duration`.
    pub threshold: u64,
    pub matcher: Match,
    /// Indices into the configured webhooks.
    pub webhooks: Vec<usize>,
}

impl Rule {
    pub fn matches(&self, conn: &ConnMatch) -> bool {
        self.matcher.matches(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn<'a>(
        proto: u8,
        o: &str,
        op: u16,
        r: &str,
        rp: u16,
        iface: Option<&'a str>,
    ) -> ConnMatch<'a> {
        ConnMatch {
            proto,
            orig_h: o.parse().unwrap(),
            orig_p: op,
            resp_h: r.parse().unwrap(),
            resp_p: rp,
            iface,
        }
    }

    fn nets(s: &str) -> NetSet {
        NetSet::parse_list([s]).unwrap()
    }

    #[test]
    fn empty_match_is_any() {
        let m = Match::default();
        assert!(m.matches(&conn(17, "1.2.3.4", 5, "5.6.7.8", 53, None)));
    }

    #[test]
    fn one_side_conditions() {
        let m = Match {
            protos: vec![6],
            orig_nets: nets("10.0.0.0/8"),
            resp_ports: vec![PortRange { lo: 443, hi: 443 }],
            ..Match::default()
        };
        assert!(m.matches(&conn(6, "10.1.2.3", 40000, "93.184.216.34", 443, None)));
        // Wrong side: the local address is the responder.
        assert!(!m.matches(&conn(6, "93.184.216.34", 443, "10.1.2.3", 40000, None)));
        assert!(!m.matches(&conn(17, "10.1.2.3", 40000, "93.184.216.34", 443, None)));
        assert!(!m.matches(&conn(6, "10.1.2.3", 40000, "93.184.216.34", 80, None)));
    }

    #[test]
    fn either_side_conditions() {
        let m = Match {
            nets: nets("192.168.0.0/16"),
            ports: vec![PortRange { lo: 8000, hi: 8100 }],
            ..Match::default()
        };
        assert!(m.matches(&conn(6, "192.168.1.1", 8080, "8.8.8.8", 1234, None)));
        assert!(m.matches(&conn(6, "8.8.8.8", 1234, "192.168.1.1", 8100, None)));
        assert!(!m.matches(&conn(6, "8.8.8.8", 1234, "192.168.1.1", 8101, None)));
        assert!(!m.matches(&conn(6, "8.8.8.8", 8080, "9.9.9.9", 1234, None)));
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_nets() {
        let m = Match {
            orig_nets: nets("10.0.0.0/8"),
            ..Match::default()
        };
        assert!(m.matches(&conn(6, "::ffff:10.0.0.1", 1, "::1", 2, None)));
    }

    #[test]
    fn may_match_is_the_protocol_and_port_part_of_matches() {
        let m = Match {
            protos: vec![6],
            nets: nets("10.0.0.0/8"),
            ports: vec![PortRange { lo: 1, hi: 1 }],
            ..Match::default()
        };
        for (proto, op, rp, may) in [(6, 1, 80, true), (6, 80, 1, true), (6, 80, 443, false)] {
            assert_eq!(m.may_match(proto, op, rp), may, "{proto} {op} {rp}");
            let inside = conn(proto, "10.0.0.1", op, "8.8.8.8", rp, None);
            assert_eq!(m.matches(&inside), may, "the nets hold: as the ports");
            let outside = conn(proto, "11.0.0.1", op, "8.8.8.8", rp, None);
            assert!(!m.matches(&outside), "the nets do not hold");
        }
        assert!(!m.may_match(17, 1, 1), "protocol");
        assert!(Match::default().may_match(17, 5, 6), "no condition");
    }

    #[test]
    fn iface_needs_a_known_interface() {
        let m = Match {
            ifaces: vec!["eth1".into()],
            ..Match::default()
        };
        assert!(m.matches(&conn(6, "1.1.1.1", 1, "2.2.2.2", 2, Some("eth1"))));
        assert!(!m.matches(&conn(6, "1.1.1.1", 1, "2.2.2.2", 2, Some("eth0"))));
        assert!(!m.matches(&conn(6, "1.1.1.1", 1, "2.2.2.2", 2, None)));
    }

    #[test]
    fn from_conn_reads_the_oriented_tuple() {
        let mut c = conntrack_common::conn::ZERO_CONN;
        c.proto = 17;
        c.orig_addr = crate::util::site::addr_to_bytes("10.0.0.1".parse().unwrap());
        c.resp_addr = crate::util::site::addr_to_bytes("2001:db8::1".parse().unwrap());
        c.orig_port = 5353;
        c.resp_port = 53;
        assert_eq!(
            ConnMatch::from_conn(&c, Some("eth0")),
            conn(17, "10.0.0.1", 5353, "2001:db8::1", 53, Some("eth0"))
        );
    }
}
