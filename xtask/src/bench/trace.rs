//! The replay benchmark's trace: a pcap written by the bench itself, with a realistic mix of
//! connections (TCP with handshakes, data, closes, resets, rejections and unanswered attempts;
//! UDP request/response and longer flows; ICMP echo; a share over IPv6), correct checksums,
//! interleaved in time like a capture of a busy link. Payloads start with their protocol's
//! first message where the server port has one (`messages`), zeros after it (inside a TLS record on
//! the TLS ports).

use super::messages;
use anyhow::{Context, Result};
use conntrack_common::checksum::set_checksums;
use std::io::{BufWriter, Write};
use std::path::Path;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// What the generated file holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceInfo {
    pub packets: u64,
    pub connections: u64,
    pub tcp: u64,
    pub udp: u64,
    pub icmp: u64,
    pub ipv6: u64,
    pub bytes: u64,
}

/// A small deterministic PRNG (xorshift64*): the same trace on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

#[derive(Clone, Copy)]
enum Proto {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Clone, Copy)]
struct ConnSpec {
    v6: bool,
    proto: Proto,
    client: u32,
    server: u32,
    sport: u16,
    dport: u16,
}

/// One packet to write, in 24 bytes; frames are built at write time.
#[derive(Clone, Copy)]
struct Pkt {
    ts_us: u64,
    conn: u32,
    seq: u32,
    ack: u32,
    len: u16,
    resp: bool,
    flags: u8,
}

/// Payload sizes: mostly small, some full segments.
fn payload_len(rng: &mut Rng) -> u16 {
    match rng.below(10) {
        0..=4 => rng.range(1, 200) as u16,
        5..=7 => rng.range(200, 1000) as u16,
        _ => 1448,
    }
}

struct Gen {
    rng: Rng,
    /// Most request/response rounds of a TCP connection (at least one).
    max_rounds: u64,
    conns: Vec<ConnSpec>,
    pkts: Vec<Pkt>,
}

impl Gen {
    fn push(&mut self, ts_us: u64, resp: bool, flags: u8, seq: u32, ack: u32, len: u16) {
        self.pkts.push(Pkt {
            ts_us,
            conn: (self.conns.len() - 1) as u32,
            seq,
            ack,
            len,
            resp,
            flags,
        });
    }

    /// Adds one connection starting at `t`; returns its kind for the counts.
    fn conn(&mut self, i: u64, t0: u64, info: &mut TraceInfo) {
        let r = self.rng.below(100);
        let v6 = self.rng.below(100) < 15;
        let (proto, dport) = match r {
            0..=71 => {
                let ports = [80u16, 443, 443, 443, 22, 25, 8080, 993, 5432, 6379];
                (
                    Proto::Tcp,
                    ports[self.rng.below(ports.len() as u64) as usize],
                )
            }
            72..=95 => {
                let ports = [53u16, 53, 53, 123, 443, 5353, 51820];
                (
                    Proto::Udp,
                    ports[self.rng.below(ports.len() as u64) as usize],
                )
            }
            _ => (Proto::Icmp, 0),
        };
        let client = (i / 4) as u32;
        let spec = ConnSpec {
            v6,
            proto,
            client,
            server: self.rng.below(4000) as u32,
            sport: 1024 + (i % 4) as u16 * 16000 + self.rng.below(16000) as u16,
            dport,
        };
        self.conns.push(spec);
        info.connections += 1;
        if v6 {
            info.ipv6 += 1;
        }
        let rtt = self.rng.range(200, 40_000);
        let mut t = t0;
        match proto {
            Proto::Tcp => {
                info.tcp += 1;
                self.tcp(&mut t, rtt);
            }
            Proto::Udp => {
                info.udp += 1;
                let exchanges = if dport == 53 || dport == 123 {
                    1
                } else {
                    self.rng.range(2, 8)
                };
                for x in 0..exchanges {
                    let mut q = payload_len(&mut self.rng).min(512);
                    if x == 0 {
                        q = messages::first_len(true, dport, false, q);
                    }
                    self.push(t, false, 0, 0, 0, q);
                    t += rtt;
                    if self.rng.below(10) != 0 {
                        let mut a = payload_len(&mut self.rng);
                        if x == 0 {
                            a = messages::first_len(true, dport, true, a);
                        }
                        self.push(t, true, 0, 0, 0, a);
                    }
                    t += self.rng.range(1_000, 200_000);
                }
            }
            Proto::Icmp => {
                info.icmp += 1;
                let id = self.rng.below(65536) as u32;
                for s in 0..self.rng.range(1, 4) as u32 {
                    self.push(t, false, 8, id, s, 56);
                    t += rtt;
                    self.push(t, true, 0, id, s, 56);
                    t += 1_000_000;
                }
            }
        }
    }

    fn tcp(&mut self, t: &mut u64, rtt: u64) {
        let (mut c, mut s) = (self.rng.next() as u32, self.rng.next() as u32);
        let kind = self.rng.below(100);
        self.push(*t, false, SYN, c, 0, 0);
        c = c.wrapping_add(1);
        *t += rtt;
        if kind < 4 {
            // Unanswered attempt, one retransmission.
            self.push(*t + 1_000_000, false, SYN, c.wrapping_sub(1), 0, 0);
            return;
        }
        if kind < 9 {
            // Rejected.
            self.push(*t, true, RST | ACK, 0, c, 0);
            return;
        }
        self.push(*t, true, SYN | ACK, s, c, 0);
        s = s.wrapping_add(1);
        *t += rtt;
        self.push(*t, false, ACK, c, s, 0);
        let rounds = self.rng.range(1, self.max_rounds);
        let port = self.conns.last().map_or(0, |c| c.dport);
        for round in 0..rounds {
            *t += self.rng.range(100, 5_000);
            let mut q = payload_len(&mut self.rng).min(600);
            if round == 0 {
                q = messages::first_len(false, port, false, q);
            }
            self.push(*t, false, PSH | ACK, c, s, q);
            c = c.wrapping_add(q as u32);
            *t += rtt;
            for n in 0..self.rng.range(1, 2) {
                let mut a = payload_len(&mut self.rng);
                if round == 0 && n == 0 {
                    a = messages::first_len(false, port, true, a);
                }
                self.push(*t, true, PSH | ACK, s, c, a);
                s = s.wrapping_add(a as u32);
                *t += 50;
            }
            *t += rtt / 2;
            self.push(*t, false, ACK, c, s, 0);
        }
        *t += self.rng.range(100, 20_000);
        if kind < 17 {
            // Reset by the client.
            self.push(*t, false, RST | ACK, c, s, 0);
            return;
        }
        self.push(*t, false, FIN | ACK, c, s, 0);
        c = c.wrapping_add(1);
        *t += rtt;
        self.push(*t, true, FIN | ACK, s, c, 0);
        s = s.wrapping_add(1);
        *t += rtt;
        self.push(*t, false, ACK, c, s, 0);
    }
}

/// Writes a trace with at least `min_packets` packets and `min_conns` connections.
pub fn generate(path: &Path, min_packets: u64, min_conns: u64) -> Result<TraceInfo> {
    generate_with(path, min_packets, min_conns, 4)
}

/// As [`generate`], with TCP connections of up to `max_rounds` request/response rounds (4 in
/// the main trace; more gives more packets per connection).
pub fn generate_with(
    path: &Path,
    min_packets: u64,
    min_conns: u64,
    max_rounds: u64,
) -> Result<TraceInfo> {
    let mut g = Gen {
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        max_rounds: max_rounds.max(1),
        conns: Vec::new(),
        pkts: Vec::with_capacity(min_packets as usize + 1024),
    };
    let mut info = TraceInfo::default();
    // About 1000 new connections per second of trace time.
    let t_base: u64 = 1_700_000_000_000_000;
    let mut i = 0u64;
    while (g.pkts.len() as u64) < min_packets || i < min_conns {
        let t0 = t_base + i * 1_000 + g.rng.below(1_000);
        g.conn(i, t0, &mut info);
        i += 1;
    }
    g.pkts.sort_by_key(|p| p.ts_us);
    info.packets = g.pkts.len() as u64;

    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    // pcap header: microseconds, version 2.4, snaplen 65535, Ethernet.
    w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
    w.write_all(&2u16.to_le_bytes())?;
    w.write_all(&4u16.to_le_bytes())?;
    w.write_all(&[0; 8])?;
    w.write_all(&65535u32.to_le_bytes())?;
    w.write_all(&1u32.to_le_bytes())?;
    let mut frame = Vec::with_capacity(2048);
    for p in &g.pkts {
        build_frame(&g.conns[p.conn as usize], p, &mut frame);
        let n = frame.len() as u32;
        w.write_all(&((p.ts_us / 1_000_000) as u32).to_le_bytes())?;
        w.write_all(&((p.ts_us % 1_000_000) as u32).to_le_bytes())?;
        w.write_all(&n.to_le_bytes())?;
        w.write_all(&n.to_le_bytes())?;
        w.write_all(&frame)?;
        info.bytes += 16 + n as u64;
    }
    w.flush()?;
    Ok(info)
}

fn addr4(host: u32, server: bool) -> [u8; 4] {
    if server {
        [
            172,
            16 + (host % 16) as u8,
            (host >> 4) as u8,
            1 + (host % 250) as u8,
        ]
    } else {
        [10, (host >> 16) as u8, (host >> 8) as u8, host as u8]
    }
}

fn addr6(host: u32, server: bool) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0x20;
    a[1] = 0x01;
    a[2] = 0x0d;
    a[3] = 0xb8;
    a[5] = server as u8;
    a[12..].copy_from_slice(&host.to_be_bytes());
    a
}

/// Ethernet + IP + transport with checksums (conntrack-common's, which the agent validates
/// with); a payload starts with its protocol's message (cut to its length), zeros after (on
/// the TLS ports, in a record: `messages::fill_after`).
fn build_frame(c: &ConnSpec, p: &Pkt, f: &mut Vec<u8>) {
    f.clear();
    f.extend_from_slice(&[0x00, 0x16, 0x3e, 0, 0, if p.resp { 1 } else { 2 }]);
    f.extend_from_slice(&[0x00, 0x16, 0x3e, 0, 0, if p.resp { 2 } else { 1 }]);
    f.extend_from_slice(if c.v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    let ip_start = f.len();
    let (sport, dport) = if p.resp {
        (c.dport, c.sport)
    } else {
        (c.sport, c.dport)
    };
    let mut l4 = Vec::with_capacity(20);
    let proto = match c.proto {
        Proto::Tcp => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&p.seq.to_be_bytes());
            l4.extend_from_slice(&p.ack.to_be_bytes());
            if p.flags & SYN != 0 {
                // MSS, SACK permitted, window scale 7.
                l4.extend_from_slice(&[0x80, p.flags, 0xfa, 0xf0, 0, 0, 0, 0]);
                l4.extend_from_slice(&[2, 4, 0x05, 0xb4, 4, 2, 1, 1, 1, 3, 3, 7]);
            } else {
                l4.extend_from_slice(&[0x50, p.flags, 0x01, 0xf5, 0, 0, 0, 0]);
            }
            6u8
        }
        Proto::Udp => {
            l4.extend_from_slice(&sport.to_be_bytes());
            l4.extend_from_slice(&dport.to_be_bytes());
            l4.extend_from_slice(&(8 + p.len).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
            17
        }
        Proto::Icmp => {
            // Echo request/reply: seq holds the identifier, ack the sequence number.
            let ty = match (c.v6, p.resp) {
                (false, r) => {
                    if r {
                        0
                    } else {
                        8
                    }
                }
                (true, r) => {
                    if r {
                        129
                    } else {
                        128
                    }
                }
            };
            l4.extend_from_slice(&[ty, 0, 0, 0]);
            l4.extend_from_slice(&(p.seq as u16).to_be_bytes());
            l4.extend_from_slice(&(p.ack as u16).to_be_bytes());
            if c.v6 { 58 } else { 1 }
        }
    };
    let l4_len = l4.len() + p.len as usize;
    let (src, dst) = if p.resp {
        (c.server, c.client)
    } else {
        (c.client, c.server)
    };
    if c.v6 {
        let (s, d) = (addr6(src, p.resp), addr6(dst, !p.resp));
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[proto, 64]);
        f.extend_from_slice(&s);
        f.extend_from_slice(&d);
    } else {
        let (s, d) = (addr4(src, p.resp), addr4(dst, !p.resp));
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&s);
        f.extend_from_slice(&d);
    }
    f.extend_from_slice(&l4);
    let payload = f.len();
    f.resize(payload + p.len as usize, 0);
    let udp_flow = matches!(c.proto, Proto::Udp);
    if !matches!(c.proto, Proto::Icmp)
        && let Some(m) = messages::message(udp_flow, c.dport, p.resp)
    {
        let n = m.len().min(p.len as usize);
        f[payload..payload + n].copy_from_slice(&m[..n]);
        messages::fill_after(udp_flow, c.dport, &mut f[payload + n..]);
    }
    set_checksums(&mut f[ip_start..]);
}
