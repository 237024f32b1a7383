//! Test helpers: frame builders (IPv4/IPv6 TCP/UDP/ICMP with correct checksums), a host flow
#![allow(dead_code)]
//! table, a likely-server-port set and a small simulator with an explicit clock.

use crate::checksum::set_checksums;
use crate::conn::Conn;
use crate::engine::{Changes, EngineConfig, FlowTable, process_packet};
use crate::event::Event;
use crate::key::FlowKey;
use crate::packet::{PacketMeta, parse_ethernet};
use crate::proto;
use std::collections::HashMap;
use std::vec;
use std::vec::Vec;

pub const A4: [u8; 4] = [10, 0, 0, 1];
pub const B4: [u8; 4] = [10, 0, 0, 2];
pub const A6: [u8; 16] = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const B6: [u8; 16] = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// Ethernet header + optional VLAN tags (TPIDs) + payload.
pub fn eth(vlans: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    for (i, tpid) in vlans.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Transport segment with its checksum field 0 ([`ipv4`] / [`ipv6`] fill it in).
pub fn tcp_seg(
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    opts: &[u8],
    len: usize,
) -> Vec<u8> {
    let doff = 20 + opts.len();
    assert!(doff.is_multiple_of(4));
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.push(((doff / 4) as u8) << 4);
    t.push(flags);
    t.extend_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(opts);
    t.extend(std::iter::repeat_n(0x61u8, len));
    t
}

pub fn udp_seg(sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&((8 + len) as u16).to_be_bytes());
    t.extend_from_slice(&[0, 0]);
    t.extend(std::iter::repeat_n(0x62u8, len));
    t
}

pub fn icmp_seg(ty: u8, code: u8, len: usize) -> Vec<u8> {
    let mut t = vec![ty, code, 0, 0, 0, 1, 0, 1];
    t.extend(std::iter::repeat_n(0x63u8, len));
    t
}

/// IPv4 packet (with `opts` as IP options) around a transport segment; checksums filled in.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], p: u8, opts: &[u8], seg: Vec<u8>) -> Vec<u8> {
    let ihl = 20 + opts.len();
    let total = ihl + seg.len();
    let mut ip = vec![0x40 | (ihl / 4) as u8, 0];
    ip.extend_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, p, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(opts);
    ip.extend_from_slice(&seg);
    set_checksums(&mut ip);
    ip
}

/// IPv6 packet with extension headers `ext` = (type, body incl. next-header byte placeholder)
/// around a transport segment; checksum filled in.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], p: u8, ext: &[(u8, Vec<u8>)], seg: Vec<u8>) -> Vec<u8> {
    let mut chain = Vec::new();
    for (i, (_, body)) in ext.iter().enumerate() {
        let mut b = body.clone();
        b[0] = ext.get(i + 1).map(|e| e.0).unwrap_or(p);
        chain.extend_from_slice(&b);
    }
    let first = ext.first().map(|e| e.0).unwrap_or(p);
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&((chain.len() + seg.len()) as u16).to_be_bytes());
    ip.push(first);
    ip.push(64);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    ip.extend_from_slice(&chain);
    ip.extend_from_slice(&seg);
    set_checksums(&mut ip);
    ip
}

pub fn eth4(ip: Vec<u8>) -> Vec<u8> {
    eth(&[], 0x0800, &ip)
}

pub fn eth6(ip: Vec<u8>) -> Vec<u8> {
    eth(&[], 0x86dd, &ip)
}

pub fn meta_of(frame: &[u8]) -> PacketMeta {
    let mut m = PacketMeta::default();
    parse_ethernet(frame, &mut m).expect("frame parses");
    m
}

#[derive(Default)]
pub struct HostTable {
    pub map: HashMap<FlowKey, Conn>,
    pub capacity: usize,
}

impl FlowTable for HostTable {
    fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Conn> {
        self.map.get_mut(key)
    }
    fn insert(&mut self, key: &FlowKey, conn: &Conn) -> bool {
        if self.map.contains_key(key) {
            return true;
        }
        if self.capacity != 0 && self.map.len() >= self.capacity {
            return false;
        }
        self.map.insert(*key, *conn);
        true
    }
}

#[derive(Default)]
pub struct Ports(pub Vec<(u16, u8)>);

impl EngineConfig for Ports {
    fn likely_server_port(&self, port: u16, p: u8) -> bool {
        self.0.contains(&(port, p))
    }
}

/// Drives frames through `process_packet` with explicit times (ms).
#[derive(Default)]
pub struct Sim {
    pub table: HostTable,
    pub cfg: Ports,
    pub events: Vec<Event>,
}

pub const MS: u64 = 1_000_000;

/// `e` decoded, after checking that a connection's event names its originator and the
/// packet's side as the connection does (the agent relies on both instead of a copy).
pub fn checked(e: &crate::event::EventRef<'_>) -> Event {
    let ev = e.to_event();
    if let (Some(c), Some(conn)) = (ev.change(), e.conn) {
        assert_eq!(
            c.orig_side(),
            (conn.orig_addr, conn.orig_port, conn.resp_port),
            "{c:?}"
        );
        assert_eq!(c.from_orig(), crate::engine::is_orig(conn, e.meta));
        assert_eq!((c.last_ns, c.flags), (conn.last_ns, conn.flags));
    }
    ev
}

impl Sim {
    pub fn with_ports(ports: &[(u16, u8)]) -> Sim {
        Sim {
            cfg: Ports(ports.to_vec()),
            ..Sim::default()
        }
    }

    pub fn feed(&mut self, frame: &[u8], t_ms: u64, checksum_ok: bool) -> Changes {
        let m = meta_of(frame);
        let ev = &mut self.events;
        process_packet(
            &mut self.table,
            &m,
            t_ms * MS,
            checksum_ok,
            &self.cfg,
            |e| ev.push(checked(e)),
        )
    }

    pub fn only(&self) -> &Conn {
        assert_eq!(self.table.map.len(), 1, "exactly one connection");
        self.table.map.values().next().unwrap()
    }

    pub fn hist(&self) -> std::string::String {
        std::string::String::from_utf8(self.only().history_str().to_vec()).unwrap()
    }
}

/// A TCP conversation between A:40000 (client) and B:80 (server) over IPv4.
pub fn tcp4(from_a: bool, flags: u8, seq: u32, ack: u32, len: usize) -> Vec<u8> {
    let (s, sp, d, dp) = if from_a {
        (A4, 40000, B4, 80)
    } else {
        (B4, 80, A4, 40000)
    };
    eth4(ipv4(
        s,
        d,
        proto::TCP,
        &[],
        tcp_seg(sp, dp, flags, seq, ack, &[], len),
    ))
}

pub fn udp4(from_a: bool, len: usize) -> Vec<u8> {
    let (s, sp, d, dp) = if from_a {
        (A4, 40000, B4, 53)
    } else {
        (B4, 53, A4, 40000)
    };
    eth4(ipv4(s, d, proto::UDP, &[], udp_seg(sp, dp, len)))
}

/// A UDP datagram with an explicit payload between two IPv4 endpoints.
pub fn udp4_payload(src: ([u8; 4], u16), dst: ([u8; 4], u16), payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&src.1.to_be_bytes());
    t.extend_from_slice(&dst.1.to_be_bytes());
    t.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    t.extend_from_slice(&[0, 0]);
    t.extend_from_slice(payload);
    eth4(ipv4(src.0, dst.0, proto::UDP, &[], t))
}

/// An NTP message of `len` bytes in `mode` (version 4).
pub fn ntp_msg(mode: u8, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    if let Some(b) = p.first_mut() {
        *b = (4 << 3) | (mode & 7);
    }
    p
}

/// A DNS message of `len` bytes (>= 3) with the QR bit `response`.
pub fn dns_msg(response: bool, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x12;
    p[1] = 0x34;
    p[2] = if response { 0x81 } else { 0x01 };
    p
}
