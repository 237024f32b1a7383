//! Tests of the pcap and pcapng reader, on files built byte by byte; the helpers that write
//! them are used by other modules' tests too.

use super::*;
use crate::capture::link::{
    DLT_RAW_12, DLT_RAW_14, LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2, LINKTYPE_LOOP, LINKTYPE_NULL, LINKTYPE_PPP, LINKTYPE_RAW, frame_l3,
};
use std::io::Write;

pub fn ipv4_udp() -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 32, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    p.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4]);
    p
}

pub fn write_pcap(path: &Path, linktype: u32, nanos: bool, pkts: &[(u32, u32, Vec<u8>)]) {
    let mut f = std::fs::File::create(path).unwrap();
    let magic: u32 = if nanos { 0xa1b23c4d } else { 0xa1b2c3d4 };
    f.write_all(&magic.to_le_bytes()).unwrap();
    f.write_all(&2u16.to_le_bytes()).unwrap();
    f.write_all(&4u16.to_le_bytes()).unwrap();
    f.write_all(&[0u8; 8]).unwrap();
    f.write_all(&65535u32.to_le_bytes()).unwrap();
    f.write_all(&linktype.to_le_bytes()).unwrap();
    for (s, frac, d) in pkts {
        f.write_all(&s.to_le_bytes()).unwrap();
        f.write_all(&frac.to_le_bytes()).unwrap();
        f.write_all(&(d.len() as u32).to_le_bytes()).unwrap();
        f.write_all(&(d.len() as u32).to_le_bytes()).unwrap();
        f.write_all(d).unwrap();
    }
}

fn block(t: u32, body: &[u8]) -> Vec<u8> {
    let mut b = body.to_vec();
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
    let total = (b.len() + 12) as u32;
    let mut out = t.to_le_bytes().to_vec();
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&b);
    out.extend_from_slice(&total.to_le_bytes());
    out
}

fn idb(linktype: u16, tsresol: Option<u8>) -> Vec<u8> {
    let mut b = linktype.to_le_bytes().to_vec();
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&65535u32.to_le_bytes());
    if let Some(r) = tsresol {
        b.extend_from_slice(&9u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&[r, 0, 0, 0]);
        b.extend_from_slice(&[0, 0, 0, 0]);
    }
    block(1, &b)
}

fn epb(ifid: u32, ts: u64, data: &[u8]) -> Vec<u8> {
    let mut b = ifid.to_le_bytes().to_vec();
    b.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
    b.extend_from_slice(&(ts as u32).to_le_bytes());
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(data);
    block(6, &b)
}

/// A packet copied out of the reader (which lends each one only until the next).
#[derive(Debug, PartialEq, Eq)]
pub struct Owned {
    pub ts_ns: i64,
    pub linktype: u32,
    pub data: Vec<u8>,
    pub orig_len: u32,
}

fn owned(p: Packet<'_>) -> Owned {
    Owned {
        ts_ns: p.ts_ns,
        linktype: p.linktype,
        data: p.data.to_vec(),
        orig_len: p.orig_len,
    }
}

fn read_all(path: &Path) -> Vec<Owned> {
    let mut r = PcapReader::open(path).unwrap();
    let mut v = Vec::new();
    while let Some(p) = r.next_packet().unwrap() {
        v.push(owned(p));
    }
    v
}

#[test]
fn pcap_link_types() {
    let dir = tempfile::tempdir().unwrap();
    let ip = ipv4_udp();
    let mut eth = vec![0u8; 12];
    eth.extend_from_slice(&[0x81, 0x00, 0, 5, 0x08, 0x00]);
    eth.extend_from_slice(&ip);
    let mut sll = vec![0u8; 14];
    sll.extend_from_slice(&[0x08, 0x00]);
    sll.extend_from_slice(&ip);
    let mut sll2 = vec![0x08, 0x00];
    sll2.extend_from_slice(&[0u8; 18]);
    sll2.extend_from_slice(&ip);
    let mut null = 2u32.to_le_bytes().to_vec();
    null.extend_from_slice(&ip);
    let mut lo = 2u32.to_be_bytes().to_vec();
    lo.extend_from_slice(&ip);
    let mut ppp = vec![0xff, 0x03, 0x00, 0x21];
    ppp.extend_from_slice(&ip);
    for (lt, frame) in [
        (LINKTYPE_ETHERNET, eth),
        (LINKTYPE_LINUX_SLL, sll),
        (LINKTYPE_LINUX_SLL2, sll2),
        (LINKTYPE_NULL, null),
        (LINKTYPE_LOOP, lo),
        (LINKTYPE_PPP, ppp),
        (DLT_RAW_12, ip.clone()),
        (DLT_RAW_14, ip.clone()),
        (LINKTYPE_RAW, ip.clone()),
        (LINKTYPE_IPV4, ip.clone()),
    ] {
        let p = dir.path().join(format!("lt{lt}.pcap"));
        write_pcap(&p, lt, false, &[(1_000_000_000, 123_456, frame)]);
        let pk = read_all(&p);
        assert_eq!(pk.len(), 1);
        assert_eq!(pk[0].ts_ns, 1_000_000_000_123_456_000);
        let l3 = frame_l3(pk[0].linktype, &pk[0].data).unwrap();
        assert_eq!(l3.version, 4, "linktype {lt}");
        assert_eq!(l3.ip, &ip[..], "linktype {lt}");
    }
}

#[test]
fn pcap_nanos_truncate_to_micros() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ns.pcap");
    write_pcap(&p, DLT_RAW_12, true, &[(5, 123_456_789, ipv4_udp())]);
    assert_eq!(read_all(&p)[0].ts_ns, 5_123_456_000);
}

#[test]
fn pcapng_multi_interface() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("multi.pcapng");
    let mut shb_body = vec![0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0];
    shb_body.extend_from_slice(&u64::MAX.to_le_bytes());
    let mut file = block(0x0a0d0d0a, &shb_body);
    file.extend(idb(1, None));
    file.extend(idb(101, Some(9)));
    file.extend(idb(147, None)); // unsupported: skipped
    let ip = ipv4_udp();
    let mut eth = vec![0u8; 12];
    eth.extend_from_slice(&[0x08, 0x00]);
    eth.extend_from_slice(&ip);
    file.extend(epb(0, 7_000_001, &eth));
    file.extend(epb(1, 7_000_001_999, &ip));
    file.extend(epb(2, 1, &ip));
    std::fs::write(&p, file).unwrap();
    let mut r = PcapReader::open(&p).unwrap();
    let a = owned(r.next_packet().unwrap().unwrap());
    let b = owned(r.next_packet().unwrap().unwrap());
    assert!(r.next_packet().unwrap().is_none());
    assert_eq!(r.skipped_linktype, 1);
    assert_eq!(a.ts_ns, 7_000_001_000);
    assert_eq!(b.ts_ns, 7_000_001_000);
    assert_eq!(a.linktype, 1);
    assert_eq!(b.linktype, 101);
    assert_eq!(frame_l3(a.linktype, &a.data).unwrap().ip, &ip[..]);
    assert_eq!(frame_l3(b.linktype, &b.data).unwrap().ip, &ip[..]);
}

#[test]
fn garbage_and_unknown_linktype_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let g = dir.path().join("garbage.pcap");
    std::fs::write(&g, b"hello world, not a capture").unwrap();
    let e = PcapReader::open(&g).err().unwrap().to_string();
    assert!(
        e.contains("garbage.pcap") && e.contains("not a pcap"),
        "{e}"
    );
    let u = dir.path().join("usb.pcap");
    write_pcap(&u, 189, false, &[]);
    let e = PcapReader::open(&u).err().unwrap().to_string();
    assert!(e.contains("usb.pcap") && e.contains("link type 189"), "{e}");
    let empty = dir.path().join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    assert!(PcapReader::open(&empty).is_err());
}

#[test]
fn truncated_tail_ends_input() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.pcap");
    write_pcap(
        &p,
        DLT_RAW_12,
        false,
        &[(1, 0, ipv4_udp()), (2, 0, ipv4_udp())],
    );
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.truncate(bytes.len() - 5);
    std::fs::write(&p, bytes).unwrap();
    let mut r = PcapReader::open(&p).unwrap();
    assert!(r.next_packet().unwrap().is_some());
    assert!(r.next_packet().unwrap().is_none());
    assert!(r.truncated_tail);
}

/// A pcapng file in either byte order, built block by block.
struct Ng {
    be: bool,
    out: Vec<u8>,
}

impl Ng {
    fn new(be: bool) -> Self {
        let mut ng = Ng {
            be,
            out: Vec::new(),
        };
        ng.shb(be);
        ng
    }
    fn u16(&self, v: u16) -> [u8; 2] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn u32(&self, v: u32) -> [u8; 4] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn u64(&self, v: u64) -> [u8; 8] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn block(&mut self, t: u32, body: &[u8]) {
        let mut b = body.to_vec();
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
        let total = (b.len() + 12) as u32;
        let (t, total) = (self.u32(t), self.u32(total));
        self.out.extend_from_slice(&t);
        self.out.extend_from_slice(&total);
        self.out.extend_from_slice(&b);
        self.out.extend_from_slice(&total);
    }
    /// A new section (its byte order may differ from the previous one).
    fn shb(&mut self, be: bool) {
        self.be = be;
        let mut b = self.u32(0x1a2b_3c4d).to_vec();
        b.extend_from_slice(&self.u16(1));
        b.extend_from_slice(&self.u16(0));
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        self.block(0x0a0d_0d0a, &b);
    }
    fn idb(&mut self, linktype: u16, opts: &[(u16, Vec<u8>)]) {
        let mut b = self.u16(linktype).to_vec();
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&self.u32(65535));
        for (code, val) in opts {
            b.extend_from_slice(&self.u16(*code));
            b.extend_from_slice(&self.u16(val.len() as u16));
            b.extend_from_slice(val);
            while !b.len().is_multiple_of(4) {
                b.push(0);
            }
        }
        if !opts.is_empty() {
            b.extend_from_slice(&[0, 0, 0, 0]);
        }
        self.block(1, &b);
    }
    fn epb(&mut self, ifid: u32, ts: u64, data: &[u8]) {
        let mut b = self.u32(ifid).to_vec();
        b.extend_from_slice(&self.u32((ts >> 32) as u32));
        b.extend_from_slice(&self.u32(ts as u32));
        b.extend_from_slice(&self.u32(data.len() as u32));
        b.extend_from_slice(&self.u32(data.len() as u32 + 4));
        b.extend_from_slice(data);
        self.block(6, &b);
    }
    fn spb(&mut self, data: &[u8]) {
        let mut b = self.u32(data.len() as u32).to_vec();
        b.extend_from_slice(data);
        self.block(3, &b);
    }
    /// Obsolete Packet Block (type 2).
    fn opb(&mut self, ifid: u16, ts: u64, data: &[u8]) {
        let mut b = self.u16(ifid).to_vec();
        b.extend_from_slice(&self.u16(0));
        b.extend_from_slice(&self.u32((ts >> 32) as u32));
        b.extend_from_slice(&self.u32(ts as u32));
        b.extend_from_slice(&self.u32(data.len() as u32));
        b.extend_from_slice(&self.u32(data.len() as u32));
        b.extend_from_slice(data);
        self.block(2, &b);
    }
    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, &self.out).unwrap();
        p
    }
}

#[test]
fn pcapng_resolution_offset_and_byte_order() {
    let dir = tempfile::tempdir().unwrap();
    let ip = ipv4_udp();
    for be in [false, true] {
        let mut ng = Ng::new(be);
        let off = ng.u64(1_000_000_000).to_vec();
        // 2^-20 s units with an offset; nanoseconds; milliseconds; the default (us).
        ng.idb(101, &[(9, vec![0x80 | 20]), (14, off)]);
        ng.idb(101, &[(9, vec![9])]);
        ng.idb(101, &[(2, b"eth0".to_vec()), (9, vec![3])]);
        ng.idb(101, &[]);
        ng.epb(0, (5 << 20) | (1 << 19), &ip); // 5.5 s after the offset
        ng.epb(1, 1_700_000_000_123_456_789, &ip);
        ng.epb(2, 1_700_000_000_123, &ip);
        ng.epb(3, 1_700_000_000_654_321, &ip);
        let p = ng.write(dir.path(), &format!("res-{be}.pcapng"));
        let ts: Vec<i64> = read_all(&p).iter().map(|p| p.ts_ns).collect();
        assert_eq!(
            ts,
            [
                1_000_000_005_500_000_000,
                1_700_000_000_123_456_000,
                1_700_000_000_123_000_000,
                1_700_000_000_654_321_000
            ],
            "big endian: {be}"
        );
        let pk = read_all(&p);
        assert!(
            pk.iter()
                .all(|p| p.data == ip && p.orig_len == ip.len() as u32 + 4)
        );
    }
}

#[test]
fn pcapng_sections_restart_interfaces() {
    let dir = tempfile::tempdir().unwrap();
    let ip = ipv4_udp();
    let mut eth = vec![0u8; 12];
    eth.extend_from_slice(&[0x08, 0x00]);
    eth.extend_from_slice(&ip);
    let mut ng = Ng::new(false);
    ng.idb(1, &[]);
    ng.epb(0, 1_000_000, &eth);
    // Second section, other byte order: interface 0 is now raw IP in nanoseconds.
    ng.shb(true);
    ng.idb(101, &[(9, vec![9])]);
    ng.epb(0, 2_000_000_000, &ip);
    ng.spb(&ip);
    ng.opb(0, 3_000_000_000, &ip);
    let p = ng.write(dir.path(), "sections.pcapng");
    let pk = read_all(&p);
    assert_eq!(pk.len(), 4);
    assert_eq!((pk[0].linktype, pk[0].ts_ns), (1, 1_000_000_000));
    assert_eq!((pk[1].linktype, pk[1].ts_ns), (101, 2_000_000_000));
    // Simple packet blocks have no timestamp.
    assert_eq!((pk[2].linktype, pk[2].ts_ns), (101, 0));
    assert_eq!((pk[3].linktype, pk[3].ts_ns), (101, 3_000_000_000));
    for p in &pk {
        assert_eq!(frame_l3(p.linktype, &p.data).unwrap().ip, &ip[..]);
    }
    // A packet for an interface the new section has not described is an error.
    let mut ng = Ng::new(false);
    ng.idb(1, &[]);
    ng.idb(1, &[]);
    ng.shb(false);
    ng.idb(101, &[]);
    ng.epb(1, 0, &ip);
    let p = ng.write(dir.path(), "undescribed.pcapng");
    let mut r = PcapReader::open(&p).unwrap();
    let e = r.next_packet().unwrap_err().to_string();
    assert!(
        e.contains("undescribed.pcapng") && e.contains("interface 1"),
        "{e}"
    );
}

#[test]
fn big_endian_nanosecond_pcap() {
    let dir = tempfile::tempdir().unwrap();
    let ip = ipv4_udp();
    let mut f = 0xa1b2_3c4du32.to_be_bytes().to_vec();
    f.extend_from_slice(&2u16.to_be_bytes());
    f.extend_from_slice(&4u16.to_be_bytes());
    f.extend_from_slice(&[0u8; 8]);
    f.extend_from_slice(&65535u32.to_be_bytes());
    // FCS bits in the upper part of the link-type field are ignored.
    f.extend_from_slice(&(0x1000_0000 | LINKTYPE_RAW).to_be_bytes());
    for v in [7u32, 999_999_999, ip.len() as u32, 1500] {
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&ip);
    let p = dir.path().join("be-ns.pcap");
    std::fs::write(&p, f).unwrap();
    let pk = read_all(&p);
    assert_eq!(pk.len(), 1);
    assert_eq!(pk[0].ts_ns, 7_999_999_000);
    assert_eq!((pk[0].linktype, pk[0].orig_len), (LINKTYPE_RAW, 1500));
    assert_eq!(pk[0].data, ip);
}

#[test]
fn records_larger_than_the_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let mut big = ipv4_udp();
    big.resize(300_000, 0xab);
    let small = ipv4_udp();
    let p = dir.path().join("big.pcap");
    write_pcap(
        &p,
        DLT_RAW_12,
        false,
        &[
            (1, 0, small.clone()),
            (2, 0, big.clone()),
            (3, 0, small.clone()),
        ],
    );
    let mut ng = Ng::new(true);
    ng.idb(101, &[]);
    ng.epb(0, 1, &small);
    ng.epb(0, 2, &big);
    ng.epb(0, 3, &small);
    let q = ng.write(dir.path(), "big.pcapng");
    for path in [&p, &q] {
        let mut r = PcapReader::open_with_buffer(path, 4096).unwrap();
        let mut lens = Vec::new();
        while let Some(pk) = r.next_packet().unwrap() {
            lens.push(pk.data.len());
        }
        assert_eq!(
            lens,
            [small.len(), big.len(), small.len()],
            "{}",
            path.display()
        );
        assert!(!r.truncated_tail);
    }
}

#[test]
fn damaged_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let ip = ipv4_udp();
    // A pcap record claiming 200 MiB.
    let p = dir.path().join("huge.pcap");
    write_pcap(&p, DLT_RAW_12, false, &[(1, 0, ip.clone())]);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[32..36].copy_from_slice(&(200u32 << 20).to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    let e = PcapReader::open(&p)
        .unwrap()
        .next_packet()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("huge.pcap") && e.contains("corrupt pcap record"),
        "{e}"
    );
    // An enhanced packet block whose captured length exceeds the block, mid-file.
    let mut ng = Ng::new(false);
    ng.idb(101, &[]);
    ng.epb(0, 1, &ip);
    ng.epb(0, 2, &ip);
    let at = ng.out.len() - ip.len() - 4 - 20 + 12;
    ng.out[at..at + 4].copy_from_slice(&4000u32.to_le_bytes());
    ng.epb(0, 3, &ip);
    let q = ng.write(dir.path(), "caplen.pcapng");
    let mut r = PcapReader::open(&q).unwrap();
    assert!(r.next_packet().unwrap().is_some());
    let e = r.next_packet().unwrap_err().to_string();
    assert!(
        e.contains("caplen.pcapng") && e.contains("corrupt pcapng block"),
        "{e}"
    );
    // Bad byte-order magic; a section header cut short.
    let mut ng = Ng::new(false);
    ng.out[8] ^= 0xff;
    let b = ng.write(dir.path(), "bom.pcapng");
    let e = PcapReader::open(&b).err().unwrap().to_string();
    assert!(
        e.contains("bom.pcapng") && e.contains("section header"),
        "{e}"
    );
    let ng = Ng::new(false);
    std::fs::write(dir.path().join("shb.pcapng"), &ng.out[..20]).unwrap();
    let e = PcapReader::open(&dir.path().join("shb.pcapng"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("truncated pcapng section header"), "{e}");
    // gzip.
    let g = dir.path().join("t.pcap.gz");
    std::fs::write(&g, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0]).unwrap();
    let e = PcapReader::open(&g).err().unwrap().to_string();
    assert!(e.contains("t.pcap.gz") && e.contains("gunzip"), "{e}");
}

#[test]
fn truncated_pcapng_tail_ends_input() {
    let dir = tempfile::tempdir().unwrap();
    let ip = ipv4_udp();
    let mut ng = Ng::new(false);
    ng.idb(101, &[]);
    ng.epb(0, 1, &ip);
    ng.epb(0, 2, &ip);
    ng.out.truncate(ng.out.len() - 3);
    let p = ng.write(dir.path(), "cut.pcapng");
    let mut r = PcapReader::open(&p).unwrap();
    assert!(r.next_packet().unwrap().is_some());
    assert!(r.next_packet().unwrap().is_none());
    assert!(r.truncated_tail);
    assert!(r.next_packet().unwrap().is_none());
    // A file that ends exactly after a block is not truncated.
    assert!(ip.len().is_multiple_of(4));
    ng.out.truncate(ng.out.len() + 3 - (32 + ip.len()));
    let p = ng.write(dir.path(), "whole.pcapng");
    let mut r = PcapReader::open(&p).unwrap();
    assert!(r.next_packet().unwrap().is_some());
    assert!(r.next_packet().unwrap().is_none());
    assert!(!r.truncated_tail);
}

/// Everything a reader gives for a file: the packets, the error that ended it (with its byte
/// offset and record number), the cut-short and skipped counts.
type Outcome = (Vec<Owned>, Option<String>, bool, u64);

fn outcome(mut r: PcapReader) -> Outcome {
    let mut v = Vec::new();
    let err = loop {
        match r.next_packet() {
            Ok(Some(p)) => v.push(owned(p)),
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    (v, err, r.truncated_tail, r.skipped_linktype)
}

/// The file through its mapping. A read lease is refused while anyone has the file open for
/// writing: a child process another test forks in the moment the file was being written
/// holds that descriptor until its exec, so a refused lease is tried again for a while.
fn open_mapped(path: &Path) -> PcapReader {
    for _ in 0..200 {
        let r = PcapReader::open(path).unwrap();
        if r.is_mapped() {
            return r;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{} is not mapped (no read lease?)", path.display());
}

/// The file through its mapping, and through the streaming reader with a small buffer and
/// with the default one: the same outcome.
fn both_paths(path: &Path) -> Outcome {
    let m = outcome(open_mapped(path));
    for capacity in [4096, BUFFER] {
        let s = outcome(PcapReader::open_with_buffer(path, capacity).unwrap());
        assert_eq!(m, s, "{} (buffer {capacity})", path.display());
    }
    m
}

#[test]
fn mapped_and_streaming_paths_agree() {
    let dir = tempfile::tempdir().unwrap();
    let ip = ipv4_udp();
    let mut big = ipv4_udp();
    big.resize(300_000, 0xab);
    let mut files = Vec::new();
    let pkts: Vec<(u32, u32, Vec<u8>)> = (0..50).map(|i| (i, i * 7, ip.clone())).collect();
    for nanos in [false, true] {
        let p = dir.path().join(format!("n{nanos}.pcap"));
        write_pcap(&p, DLT_RAW_12, nanos, &pkts);
        files.push(p);
    }
    let p = dir.path().join("big.pcap");
    write_pcap(
        &p,
        DLT_RAW_12,
        false,
        &[(1, 0, ip.clone()), (2, 0, big.clone()), (3, 0, ip.clone())],
    );
    // Cut short in its last record, and damaged mid-file (a record of 200 MiB).
    let mut bytes = std::fs::read(&p).unwrap();
    std::fs::write(dir.path().join("cut.pcap"), &bytes[..bytes.len() - 5]).unwrap();
    let second = 24 + 16 + ip.len();
    bytes[second + 8..second + 12].copy_from_slice(&(200u32 << 20).to_le_bytes());
    std::fs::write(dir.path().join("huge.pcap"), &bytes).unwrap();
    files.extend([p, dir.path().join("cut.pcap"), dir.path().join("huge.pcap")]);
    for be in [false, true] {
        // Sections in both byte orders, an unsupported interface, every packet block.
        let mut ng = Ng::new(be);
        ng.idb(101, &[(9, vec![9])]);
        ng.idb(147, &[]);
        ng.epb(0, 1_700_000_000_123_456_789, &ip);
        ng.epb(1, 5, &ip);
        ng.shb(!be);
        ng.idb(101, &[]);
        ng.epb(0, 2_000_000, &big);
        ng.spb(&ip);
        ng.opb(0, 3_000_000, &ip);
        files.push(ng.write(dir.path(), &format!("s{be}.pcapng")));
        // A block cut short at the end; a block whose contents do not fit its length.
        let mut cut = ng.out.clone();
        cut.truncate(cut.len() - 3);
        std::fs::write(dir.path().join(format!("cut{be}.pcapng")), &cut).unwrap();
        files.push(dir.path().join(format!("cut{be}.pcapng")));
        ng.epb(0, 3_500_000, &ip);
        let at = ng.out.len() - ip.len() - 4 - 20 + 12;
        let caplen = ng.u32(4000);
        ng.out[at..at + 4].copy_from_slice(&caplen);
        ng.epb(0, 4_000_000, &ip);
        files.push(ng.write(dir.path(), &format!("bad{be}.pcapng")));
    }
    let outcomes: Vec<Outcome> = files.iter().map(|f| both_paths(f)).collect();
    // The cases are what they say they are.
    assert_eq!(outcomes[0].0.len(), 50);
    assert!(outcomes[3].2, "cut.pcap");
    assert!(
        outcomes[4]
            .1
            .as_deref()
            .is_some_and(|e| e.contains("corrupt pcap record 2"))
    );
    assert_eq!((outcomes[5].0.len(), outcomes[5].3), (4, 1));
    assert!(outcomes[6].2, "cut pcapng");
    assert!(
        outcomes[7]
            .1
            .as_deref()
            .is_some_and(|e| e.contains("corrupt pcapng block"))
    );
}

#[test]
fn a_file_truncated_while_mapped_is_read_on_as_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("shrinks.pcap");
    // Several times the streaming reader's buffer, which may fill once before the truncation.
    let mut ip = ipv4_udp();
    ip.resize(1000, 0);
    let pkts: Vec<(u32, u32, Vec<u8>)> = (0..5000).map(|i| (i, 0, ip.clone())).collect();
    write_pcap(&p, DLT_RAW_12, false, &pkts);
    let mut r = open_mapped(&p);
    assert!(r.next_packet().unwrap().is_some());
    // The truncating open waits for the lease, which the reader gives back at its next
    // record; the pages it had mapped are never read after the truncation.
    let truncate = {
        let p = p.clone();
        std::thread::spawn(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&p)
                .unwrap();
        })
    };
    let mut n = 1;
    while !truncate.is_finished() && r.next_packet().unwrap().is_some() {
        n += 1;
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    truncate.join().unwrap();
    assert!(!r.is_mapped());
    while r.next_packet().unwrap().is_some() {
        n += 1;
    }
    // Whether the stream's reads came before or after the truncation (a record cut short
    // then) is up to the scheduler; what it may not do is read the whole file.
    assert!(n < 5000, "{n}");
}
