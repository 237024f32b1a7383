//! `read --tunnel-max-depth N`: after an outer packet went through the agent, its inner
//! packets, layer by layer, each with Zeek's IP checks and its own checksum verdict, and each
//! in the encapsulation of the tunnels around it (for `tunnel_parents` and the change rule).

use crate::capture::checksum::ChecksumPolicy;
use crate::capture::tunnels::{check_inner, inner_of, udp_payload};
use crate::core::agent::Agent;
use crate::core::tunnels::Encap;
use conntrack_common::packet::IpView;
use conntrack_common::tunnel::{header_tunnel, is_ip_tunnel_proto};

/// The inner packets of `ip` (already processed, with `view` and transport checksum verdict
/// `checksum_ok`), nested at most `max_depth` deep. Zeek decapsulates only a valid packet:
/// a bad checksum at any layer stops it there.
#[allow(clippy::too_many_arguments)]
pub fn process_inner(
    agent: &mut Agent,
    ip: &[u8],
    view: &IpView,
    checksum_ok: bool,
    ts_ns: i64,
    policy: &ChecksumPolicy,
    max_depth: u32,
    uncaptured: usize,
    scratch: &mut Vec<u8>,
) -> anyhow::Result<()> {
    let (mut ip, mut view, mut ok) = (ip, *view, checksum_ok);
    let mut outer_id = 0u32;
    for _ in 0..max_depth {
        if !ok {
            break;
        }
        // Only a tunnel port can be the responder port a header confirms on.
        if let Some((key, sport, dport, payload)) = udp_payload(ip, &view)
            && (header_tunnel(sport).is_some() || header_tunnel(dport).is_some())
        {
            agent.confirm_tunnel_header(&key, payload);
        }
        let Some(hop) = inner_of(ip, &view) else {
            break;
        };
        let Some(parent) = agent.tunnel_parent(&hop, ts_ns)? else {
            break;
        };
        let id = hop.encap_id(outer_id);
        let (inner_view, inner_ok) = match check_inner(&hop.inner, policy, uncaptured) {
            Ok(v) => v,
            Err(why) => {
                log::debug!("inner packet of a {:?} tunnel dropped: {why:?}", hop.tunnel);
                break;
            }
        };
        // An inner GRE or IP-in-IP packet is a tunnel layer, not a connection.
        let r = if is_ip_tunnel_proto(inner_view.proto) {
            Ok(())
        } else {
            agent.set_encap(Some(Encap { id, parent }));
            let r = agent.process_ip(
                hop.inner.version,
                hop.inner.ip,
                Some(&inner_view),
                ts_ns,
                inner_ok,
                scratch,
            );
            agent.set_encap(None);
            r
        };
        if let Err(e) = r {
            if crate::logs::health::any_failing(&agent.log_health()) {
                return Err(e);
            }
            log::debug!("inner packet: engine: {e}");
            break;
        }
        (ip, view, ok, outer_id) = (hop.inner.ip, inner_view, inner_ok, id);
    }
    Ok(())
}

/// Per inner layer `d` (0: the first), 2 bits: 1 << 2d the layer's transport checksum is
/// bad, 2 << 2d Zeek's IP checks drop it (`check_inner`). Must match conntrack-ebpf/src/tunnel.rs.
const VERDICT_BAD_CHECKSUM: u32 = 1;
const VERDICT_DROPPED: u32 = 2;

/// For the kernel's tunnel stage, which opens the layers itself: the replay's verdicts on the
/// inner packets of `ip` (Zeek's IP checks and checksums, which need the capture's lengths and
/// the checksum policy), layer by layer as `process_inner` walks them. `None` when `ip` carries
/// no tunnel to open.
pub fn inner_verdicts(
    ip: &[u8],
    view: &IpView,
    checksum_ok: bool,
    policy: &ChecksumPolicy,
    max_depth: u32,
    uncaptured: usize,
) -> Option<u32> {
    let (mut ip, mut view, mut ok) = (ip, *view, checksum_ok);
    let mut bits = None::<u32>;
    for d in 0..max_depth.min(16) {
        if !ok {
            break;
        }
        let Some(hop) = inner_of(ip, &view) else {
            break;
        };
        let b = bits.get_or_insert(0);
        match check_inner(&hop.inner, policy, uncaptured) {
            Ok((v, inner_ok)) => {
                if !inner_ok {
                    *b |= VERDICT_BAD_CHECKSUM << (2 * d);
                }
                (ip, view, ok) = (hop.inner.ip, v, inner_ok);
            }
            Err(_) => {
                *b |= VERDICT_DROPPED << (2 * d);
                break;
            }
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::super::tests::udp;
    use super::super::*;
    use super::{VERDICT_BAD_CHECKSUM, inner_verdicts};
    use crate::capture::checksum::tests::fix_ipv4_header;
    use crate::capture::link::LINKTYPE_ETHERNET;
    use crate::capture::pcap::tests::write_pcap;
    use crate::tests::fixtures::replay_args;
    use conntrack_common::packet::ip_view;

    /// `inner` (an Ethernet frame) in VXLAN from `src`:`sport` to `dst`:4789.
    fn vxlan(src: [u8; 4], dst: [u8; 4], sport: u16, inner: &[u8]) -> Vec<u8> {
        let mut p = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
        p.extend_from_slice(inner);
        udp(src, dst, sport, 4789, &p)
    }

    /// The IP packet of `inner` (an Ethernet frame) in GRE from `src` to `dst`.
    fn gre(src: [u8; 4], dst: [u8; 4], inner: &[u8]) -> Vec<u8> {
        let body = &inner[14..];
        let total = (20 + 4 + body.len()) as u16;
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 1, 0, 0, 64, 47, 0, 0]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(&[0, 0, 0x08, 0x00]);
        ip.extend_from_slice(body);
        fix_ipv4_header(&mut ip);
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&ip);
        f
    }

    fn lines(dir: &std::path::Path, log: &str) -> Vec<Vec<String>> {
        std::fs::read_to_string(dir.join(log))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    }

    const TUNNEL_PARENTS: usize = 20;

    /// A DNS exchange inside VXLAN whose packets alternate between two tunnels (one per
    /// direction, as two VTEPs send), then one inside GRE.
    fn trace(path: &std::path::Path) {
        let (vtep_a, vtep_b) = ([192, 168, 0, 1], [192, 168, 0, 2]);
        let (client, server) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let mut pkts = Vec::new();
        for i in 0..8u32 {
            let p = if i % 2 == 0 {
                vxlan(vtep_a, vtep_b, 40000, &udp(client, server, 1234, 53, b"q"))
            } else {
                vxlan(vtep_b, vtep_a, 40001, &udp(server, client, 53, 1234, b"a"))
            };
            pkts.push((100, i * 1000, p));
        }
        let inner = udp([10, 1, 0, 1], [10, 1, 0, 2], 5000, 53, b"q");
        pkts.push((101, 0, gre([172, 16, 0, 1], [172, 16, 0, 2], &inner)));
        write_pcap(path, LINKTYPE_ETHERNET, false, &pkts);
    }

    fn read_with_depth(depth: u32) -> (tempfile::TempDir, Vec<Vec<String>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pcap");
        trace(&path);
        let mut args = replay_args(
            &path,
            Engine::Host,
            dir.path(),
            &["--likely-server-ports", "53/udp,4789/udp"],
        );
        args.tunnel_max_depth = depth;
        read(args, Config::default()).unwrap();
        let conns = lines(dir.path(), "conn.log");
        (dir, conns)
    }

    #[test]
    fn inner_connections_name_their_tunnels() {
        let (dir, conns) = read_with_depth(4);
        let find = |h: &str| conns.iter().find(|r| r[2] == h).unwrap().clone();
        let outer_a = find("192.168.0.1");
        let outer_b = find("192.168.0.2");
        let dns = find("10.0.0.1");
        assert_eq!(&dns[2..7], &["10.0.0.1", "1234", "10.0.0.2", "53", "udp"]);
        assert_eq!((dns[16].as_str(), dns[18].as_str()), ("4", "4"));
        // Seven changes of tunnel: the first five are reported (both tunnels are parents,
        // once each), the sixth adds X.
        assert_eq!(dns[15], "DdX");
        let mut parents: Vec<_> = dns[TUNNEL_PARENTS].split(',').collect();
        parents.sort();
        let mut want = vec![outer_a[1].as_str(), outer_b[1].as_str()];
        want.sort();
        assert_eq!(parents, want);
        assert_eq!(outer_a[TUNNEL_PARENTS], "-");
        // GRE: the parent is a tunnel.log entry, and the GRE packet is no connection.
        let gre_dns = find("10.1.0.1");
        assert!(
            !conns
                .iter()
                .any(|r| r[2] == "172.16.0.1" || r[2] == "172.16.0.2")
        );
        let tunnels = lines(dir.path(), "tunnel.log");
        let gre_entry = tunnels.iter().find(|t| t[6] == "Tunnel::GRE").unwrap();
        assert_eq!(&gre_entry[2..6], &["172.16.0.1", "0", "172.16.0.2", "0"]);
        assert_eq!(gre_dns[TUNNEL_PARENTS], gre_entry[1]);
        // Each VXLAN tunnel is discovered, then closed with its connection.
        for outer in [&outer_a, &outer_b] {
            let actions: Vec<_> = tunnels
                .iter()
                .filter(|t| t[1] == outer[1])
                .map(|t| (t[6].as_str(), t[7].as_str()))
                .collect();
            assert_eq!(
                actions,
                [
                    ("Tunnel::VXLAN", "Tunnel::DISCOVER"),
                    ("Tunnel::VXLAN", "Tunnel::CLOSE")
                ]
            );
        }
    }

    #[test]
    fn depth_limits_and_off() {
        // Depth 0: tunnels are left alone, their packets are connections like any other.
        let (dir, conns) = read_with_depth(0);
        assert!(!conns.iter().any(|r| r[2].starts_with("10.")));
        assert!(conns.iter().any(|r| r[6] == "unknown_transport"));
        assert!(!dir.path().join("tunnel.log").exists());
    }

    #[test]
    fn a_capture_without_tunnels_leaves_no_tunnel_log() {
        // Decapsulation on (the default depth), as Zeek: tunnel.log is made by a tunnel.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pcap");
        let pkts = vec![(100, 0, udp([10, 0, 0, 1], [10, 0, 0, 2], 1234, 53, b"q"))];
        write_pcap(&path, LINKTYPE_ETHERNET, false, &pkts);
        let mut args = replay_args(&path, Engine::Host, dir.path(), &[]);
        args.tunnel_max_depth = 4;
        read(args, Config::default()).unwrap();
        assert_eq!(lines(dir.path(), "conn.log").len(), 1);
        assert!(!dir.path().join("tunnel.log").exists());
    }

    /// Zeek's VXLAN and Geneve analyzers confirm once their header parsed, whatever follows:
    /// a Geneve header around ARP (`geneve-arp.pcap` in Zeek's suite) or around nothing is
    /// `geneve`; a VXLAN header without its I flag is a violation, not opened and not named.
    #[test]
    fn a_tunnel_header_names_the_service_whatever_it_carries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pcap");
        let arp = [
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 10,
            0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
        ];
        let mut geneve_arp = vec![0x00, 0x00, 0x08, 0x06, 0, 0, 1, 0];
        geneve_arp.extend_from_slice(&arp);
        let geneve_empty = [
            0x02, 0x00, 0x65, 0x58, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x0a,
        ];
        let dns = udp([10, 9, 0, 1], [10, 9, 0, 2], 1234, 53, b"q");
        let mut vxlan_no_i = vec![0, 0, 0, 0, 0, 0, 42, 0];
        vxlan_no_i.extend_from_slice(&dns);
        let pkts = vec![
            (
                100,
                0,
                udp([10, 0, 0, 1], [10, 0, 0, 2], 12345, 6081, &geneve_arp),
            ),
            (
                100,
                1,
                udp([20, 0, 0, 1], [20, 0, 0, 2], 50901, 6081, &geneve_empty),
            ),
            (
                100,
                2,
                udp([30, 0, 0, 1], [30, 0, 0, 2], 40000, 4789, &vxlan_no_i),
            ),
        ];
        write_pcap(&path, LINKTYPE_ETHERNET, false, &pkts);
        let service = |no_service: bool| {
            let out = tempfile::tempdir().unwrap();
            let mut extra = vec!["--likely-server-ports", "53/udp,4789/udp,6081/udp"];
            if no_service {
                extra.push("--no-service");
            }
            let mut args = replay_args(&path, Engine::Host, out.path(), &extra);
            args.tunnel_max_depth = 2;
            read(args, Config::default()).unwrap();
            let mut got: Vec<(String, String)> = lines(out.path(), "conn.log")
                .into_iter()
                .map(|r| (r[2].clone(), r[7].clone()))
                .collect();
            got.sort();
            got
        };
        let want = |names: [&str; 2]| {
            vec![
                ("10.0.0.1".to_string(), names[0].to_string()),
                ("20.0.0.1".to_string(), names[1].to_string()),
                ("30.0.0.1".to_string(), "-".to_string()),
            ]
        };
        assert_eq!(service(false), want(["geneve", "geneve"]));
        assert_eq!(service(true), want(["-", "-"]), "detection off");
    }

    #[test]
    fn verdicts_name_the_layer_that_fails() {
        let (client, server) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let inner = udp(client, server, 1234, 53, b"q");
        let outer = vxlan([192, 168, 0, 1], [192, 168, 0, 2], 40000, &inner);
        let ip = &outer[14..];
        let view = ip_view(ip).unwrap();
        let policy = ChecksumPolicy::default();
        assert_eq!(inner_verdicts(ip, &view, true, &policy, 2, 0), Some(0));
        // A bad outer checksum: Zeek does not open the tunnel.
        assert_eq!(inner_verdicts(ip, &view, false, &policy, 2, 0), None);
        // A damaged inner UDP checksum is the first layer's.
        let mut bad = outer.clone();
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        let bad_ip = &bad[14..];
        assert_eq!(
            inner_verdicts(bad_ip, &ip_view(bad_ip).unwrap(), true, &policy, 2, 0),
            Some(VERDICT_BAD_CHECKSUM)
        );
        // Not a tunnel.
        let plain = udp(client, server, 1234, 53, b"q");
        let plain_ip = &plain[14..];
        assert_eq!(
            inner_verdicts(plain_ip, &ip_view(plain_ip).unwrap(), true, &policy, 2, 0),
            None
        );
    }
}
