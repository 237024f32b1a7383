//! Zeek's MAC and VLAN conn policy columns (`--mac-logging`, `--vlan-logging`) through the
//! agent core, host datapath and the kernel's when root: taken from each connection's first
//! packet, addresses following a role flip, and nothing kept or sent without the flags.

use crate::core::agent::Agent;
use crate::core::tracker::{SEC, Timeouts};
use crate::datapath::Datapath;
use crate::datapath::host::{HostConfig, HostDatapath};
use crate::logs::conn_log::{ConnLogWriter, LogFormat};
use crate::logs::l2_fields::Columns;
use crate::util::site::NetSet;
use conntrack_common::event::{Event, EventKind};
use std::collections::HashMap;

const T0: i64 = 1_700_000_000 * SEC;
const PORTS: [(u16, u8); 1] = [(80, 6)];

const MAC_A: [u8; 6] = [0x00, 0x13, 0x7f, 0xbe, 0x8c, 0xff];
const MAC_B: [u8; 6] = [0x00, 0xe0, 0xdb, 0x01, 0xcf, 0x4b];
const MAC_C: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0c];
const IP_A: [u8; 4] = [10, 0, 0, 1];
const IP_B: [u8; 4] = [10, 0, 0, 2];

/// An IPv4 frame from `src_mac` to `dst_mac` with 802.1Q tags of ids `vlans`.
fn frame(src_mac: [u8; 6], dst_mac: [u8; 6], vlans: &[u16], ip: Vec<u8>) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    for (i, id) in vlans.iter().enumerate() {
        // An 802.1ad outer tag in front of 802.1Q ones, with priority bits set.
        let tpid: u16 = if i == 0 && vlans.len() > 1 {
            0x88a8
        } else {
            0x8100
        };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(0xa000 | id).to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f
}

fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(l4);
    p
}

fn udp(src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&src.1.to_be_bytes());
    l4.extend_from_slice(&dst.1.to_be_bytes());
    l4.extend_from_slice(&12u16.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 1, 2, 3, 4]);
    ipv4(17, src.0, dst.0, &l4)
}

fn tcp(src: ([u8; 4], u16), dst: ([u8; 4], u16), flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&src.1.to_be_bytes());
    l4.extend_from_slice(&dst.1.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(&ack.to_be_bytes());
    l4.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    ipv4(6, src.0, dst.0, &l4)
}

/// The traffic: a QinQ-tagged UDP flow whose reply comes untagged from another router, a TCP
/// connection whose first packet is the server's SYN-ACK (flipped: the server's address is
/// the responder's), and a UDP flow with all-zero addresses (a loopback capture's).
fn traffic() -> Vec<Vec<u8>> {
    let (a, b) = ((IP_A, 5000), (IP_B, 53));
    let (client, server) = ((IP_A, 40000), (IP_B, 80));
    vec![
        frame(MAC_A, MAC_B, &[10, 20], udp(a, b)),
        frame(MAC_C, MAC_A, &[], udp(b, a)),
        frame(MAC_B, MAC_A, &[30], tcp(server, client, 0x12, 500, 101)),
        frame(MAC_A, MAC_B, &[], tcp(client, server, 0x10, 101, 501)),
        frame([0; 6], [0; 6], &[], udp((IP_A, 6000), (IP_B, 7000))),
    ]
}

fn datapaths() -> Vec<Box<dyn Datapath>> {
    let mut out: Vec<Box<dyn Datapath>> =
        vec![Box::new(HostDatapath::new(HostConfig::new(&PORTS)))];
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        out.push(
            crate::datapath::kernel::replay_datapath(&PORTS, 1024, false)
                .expect("loading the eBPF program"),
        );
    }
    out
}

/// conn.log's records by originator port, each as field name -> value.
fn run(dp: Box<dyn Datapath>, cols: Columns) -> HashMap<String, HashMap<String, String>> {
    let dir = tempfile::tempdir().unwrap();
    let writer = ConnLogWriter::create(dir.path(), LogFormat::Tsv, cols).unwrap();
    let mut agent = Agent::new(
        dp,
        HostConfig::new(&PORTS),
        Timeouts::default(),
        NetSet::default(),
        writer,
    );
    agent.enable_link_layers().unwrap();
    for (i, f) in traffic().iter().enumerate() {
        let t = T0 + i as i64 * SEC / 10;
        agent.advance(t).unwrap();
        agent.process(f, t, true).unwrap();
    }
    agent.finish().unwrap();
    let text = std::fs::read_to_string(dir.path().join("conn.log")).unwrap();
    let fields: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("#fields\t"))
        .unwrap()
        .split('\t')
        .collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let rec: HashMap<String, String> = fields
                .iter()
                .zip(l.split('\t'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (rec["id.orig_p"].clone(), rec)
        })
        .collect()
}

#[test]
fn first_packet_link_layer_both_engines() {
    let cols = Columns {
        community_id: false,
        mac: true,
        vlan: true,
    };
    for dp in datapaths() {
        let log = run(dp, cols);
        assert_eq!(log.len(), 3, "{log:?}");
        let udp = &log["5000"];
        assert_eq!(udp["orig_l2_addr"], "00:13:7f:be:8c:ff");
        assert_eq!(udp["resp_l2_addr"], "00:e0:db:01:cf:4b");
        assert_eq!((&*udp["vlan"], &*udp["inner_vlan"]), ("10", "20"));
        // Flipped at creation: the SYN-ACK's sender is the responder, and so is its address.
        let tcp = &log["40000"];
        assert_eq!(tcp["history"], "^hA");
        assert_eq!(tcp["orig_l2_addr"], "00:13:7f:be:8c:ff");
        assert_eq!(tcp["resp_l2_addr"], "00:e0:db:01:cf:4b");
        assert_eq!((&*tcp["vlan"], &*tcp["inner_vlan"]), ("30", "-"));
        let zero = &log["6000"];
        for f in ["orig_l2_addr", "resp_l2_addr", "vlan", "inner_vlan"] {
            assert_eq!(zero[f], "-", "{f}");
        }
    }
}

#[test]
fn only_the_columns_asked_for() {
    let cols = Columns {
        community_id: true,
        mac: false,
        vlan: true,
    };
    let log = run(Box::new(HostDatapath::new(HostConfig::new(&PORTS))), cols);
    let udp = &log["5000"];
    assert!(!udp.contains_key("orig_l2_addr"));
    assert_eq!(udp["vlan"], "10");
    assert!(udp["community_id"].starts_with("1:"));
}

/// The NewConn events of `traffic()` on `dp`.
fn new_conns(dp: &mut dyn Datapath) -> Vec<Event> {
    let mut events = Vec::new();
    for f in traffic() {
        dp.process(&f, T0 as u64, true, &mut events).unwrap();
    }
    events.retain(|e| e.kind() == Some(EventKind::NewConn));
    events
}

#[test]
fn link_layer_sent_only_with_the_flags() {
    for mut dp in datapaths() {
        let new = new_conns(dp.as_mut());
        assert_eq!(new.len(), 3);
        assert!(new.iter().all(|e| matches!(e, Event::Conn(_))), "{new:?}");
    }
    for mut dp in datapaths() {
        dp.set_l2_events(true).unwrap();
        let new = new_conns(dp.as_mut());
        let l2: Vec<_> = new
            .iter()
            .map(|e| match e {
                Event::NewConnL2(l) => (l.l2.src, l.l2.dst, l.l2.vlan, l.l2.inner_vlan),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            l2,
            [
                (MAC_A, MAC_B, 10, 20),
                (MAC_B, MAC_A, 30, 0),
                ([0; 6], [0; 6], 0, 0)
            ]
        );
    }
}
