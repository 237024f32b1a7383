//! Writes pcap traces of crafted conversations, so replay tests know exactly what was sent.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use conntrack_common::checksum::set_checksums;
use pcap_file::pcap::{PcapPacket, PcapWriter};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// Frames with their capture time, in microseconds since the epoch.
#[derive(Default)]
pub struct Trace {
    pub frames: Vec<(u64, Vec<u8>)>,
}

impl Trace {
    pub fn push(&mut self, ts_us: u64, frame: Vec<u8>) {
        self.frames.push((ts_us, frame));
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let file = std::fs::File::create(path)?;
        let mut w = PcapWriter::new(file)?;
        for (ts, frame) in &self.frames {
            let pkt = PcapPacket::new(Duration::from_micros(*ts), frame.len() as u32, frame);
            w.write_packet(&pkt)?;
        }
        Ok(())
    }
}

/// An Ethernet frame carrying `proto` with payload `l4`, checksums filled in (with
/// conntrack-common's functions, the ones the agent validates with).
pub fn ip_frame(src: IpAddr, dst: IpAddr, proto: u8, l4: Vec<u8>) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            frame.extend_from_slice(&[0x08, 0x00]);
            let total = (20 + l4.len()) as u16;
            frame.extend_from_slice(&[0x45, 0]);
            frame.extend_from_slice(&total.to_be_bytes());
            frame.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
            frame.extend_from_slice(&s.octets());
            frame.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            frame.extend_from_slice(&[0x86, 0xdd]);
            frame.extend_from_slice(&[0x60, 0, 0, 0]);
            frame.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            frame.extend_from_slice(&[proto, 64]);
            frame.extend_from_slice(&s.octets());
            frame.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed address families"),
    }
    frame.extend_from_slice(&l4);
    set_checksums(&mut frame[14..]);
    frame
}

/// The IP header length for an address family (no options / extension headers).
pub fn ip_header_len(addr: IpAddr) -> u64 {
    if addr.is_ipv4() { 20 } else { 40 }
}

pub fn tcp_frame(
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&src.1.to_be_bytes());
    t.extend_from_slice(&dst.1.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.extend_from_slice(&[0x50, flags]);
    t.extend_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(payload);
    ip_frame(src.0, dst.0, 6, t)
}

pub fn udp_frame(src: (IpAddr, u16), dst: (IpAddr, u16), payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&src.1.to_be_bytes());
    u.extend_from_slice(&dst.1.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    ip_frame(src.0, dst.0, 17, u)
}

pub fn icmp_echo_frame(
    src: IpAddr,
    dst: IpAddr,
    reply: bool,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let (proto, ty) = match (src.is_ipv4(), reply) {
        (true, false) => (1, 8),
        (true, true) => (1, 0),
        (false, false) => (58, 128),
        (false, true) => (58, 129),
    };
    let mut m = vec![ty, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    ip_frame(src, dst, proto, m)
}

/// A TCP conversation that keeps each side's sequence numbers, so a test can script
/// handshakes, data, closes and resets in a few lines.
pub struct TcpConv {
    pub client: (IpAddr, u16),
    pub server: (IpAddr, u16),
    pub cseq: u32,
    pub sseq: u32,
    pub ts_us: u64,
}

impl TcpConv {
    pub fn new(client: (IpAddr, u16), server: (IpAddr, u16), ts_us: u64) -> TcpConv {
        TcpConv {
            client,
            server,
            cseq: 1000,
            sseq: 5_000_000,
            ts_us,
        }
    }

    /// Client -> server segment; SYN and FIN consume one sequence number.
    pub fn c(&mut self, trace: &mut Trace, flags: u8, payload: &[u8]) {
        let ack = if flags & ACK != 0 { self.sseq } else { 0 };
        trace.push(
            self.ts_us,
            tcp_frame(self.client, self.server, self.cseq, ack, flags, payload),
        );
        self.cseq = self
            .cseq
            .wrapping_add(payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0));
        self.ts_us += 1000;
    }

    /// Server -> client segment.
    pub fn s(&mut self, trace: &mut Trace, flags: u8, payload: &[u8]) {
        let ack = if flags & ACK != 0 { self.cseq } else { 0 };
        trace.push(
            self.ts_us,
            tcp_frame(self.server, self.client, self.sseq, ack, flags, payload),
        );
        self.sseq = self
            .sseq
            .wrapping_add(payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0));
        self.ts_us += 1000;
    }
}
