//! The interpreter against libpcap's own `pcap_offline_filter` on random frames and
//! expressions; compile errors and the replay's per-link-type programs.

use super::*;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Primitives of the random expressions: byte offsets, ports, hosts and nets, VLAN, IPv6,
/// lengths, fragments, MPLS/PPPoE, arithmetic.
const PRIMITIVES: &[&str] = &[
    "tcp",
    "udp",
    "icmp",
    "ip",
    "ip6",
    "arp",
    "tcp port 80",
    "udp port 53",
    "port 22",
    "port 443",
    "host 10.0.0.1",
    "src host 10.0.0.2",
    "dst net 192.168.0.0/16",
    "net 10.0.0.0/8",
    "host fe80::1",
    "net 2001:db8::/32",
    "tcp[tcpflags] & tcp-syn != 0",
    "tcp[tcpflags] & (tcp-fin|tcp-rst) != 0",
    "tcp[13] == 18",
    "portrange 1000-2000",
    "dst portrange 0-1023",
    "vlan",
    "vlan 100",
    "icmp[icmptype] == icmp-echo",
    "ip[6:2] & 0x1fff != 0",
    "ip[2:2] > 576",
    "udp[8:4] = 0x01020304",
    "len > 100",
    "less 64",
    "greater 200",
    "ether host 02:00:00:00:00:01",
    "ether broadcast",
    "ip proto 47",
    "ip6 proto 58",
    "ip multicast",
    "ip6 multicast",
    "ether proto 0x88cc",
    "mpls",
    "pppoes",
    "tcp[0:2] % 7 = 3",
    "ip[8] * 2 - 10 > ip[9] / 3",
    "(ip[1] ^ 0xff) << 2 > 100",
];

pub(crate) fn random_expr(rng: &mut StdRng) -> String {
    let n = rng.random_range(1..=3);
    let mut e = String::new();
    for i in 0..n {
        if i > 0 {
            e.push_str(if rng.random_bool(0.5) {
                " and "
            } else {
                " or "
            });
        }
        if rng.random_bool(0.25) {
            e.push_str("not ");
        }
        e.push('(');
        e.push_str(PRIMITIVES[rng.random_range(0..PRIMITIVES.len())]);
        e.push(')');
    }
    e
}

fn pick<T: Copy>(rng: &mut StdRng, xs: &[T]) -> T {
    xs[rng.random_range(0..xs.len())]
}

/// One of `xs`, or (as often as any of them) a random value.
fn pick_or_any<T: Copy>(rng: &mut StdRng, xs: &[T]) -> T
where
    rand::distr::StandardUniform: rand::distr::Distribution<T>,
{
    if rng.random_range(0..=xs.len()) == xs.len() {
        rng.random()
    } else {
        pick(rng, xs)
    }
}

/// A frame from `rng`: mostly well-formed Ethernet with 0-2 VLAN tags, IPv4 (with options,
/// sometimes a fragment) or IPv6 (sometimes behind extension headers), TCP/UDP/ICMP with
/// ports and addresses the expressions name; sometimes ARP, MPLS or PPPoE; then sometimes
/// a byte changed and the capture cut short.
pub(crate) fn random_frame(rng: &mut StdRng) -> Vec<u8> {
    let mut f = Vec::new();
    let macs: [[u8; 6]; 3] = [[2, 0, 0, 0, 0, 1], [0xff; 6], [1, 0, 0x5e, 0, 0, 1]];
    f.extend_from_slice(&pick(rng, &macs));
    f.extend_from_slice(&pick(rng, &macs));
    for _ in 0..pick(rng, &[0, 0, 0, 1, 2]) {
        f.extend_from_slice(&pick(rng, &[0x8100u16, 0x88a8]).to_be_bytes());
        f.extend_from_slice(&pick_or_any(rng, &[100u16, 200]).to_be_bytes());
    }
    let l3 = pick(rng, &[4, 4, 4, 6, 6, 0x0806, 0x8847, 0x8864, 0x88cc]);
    let ethertype: u16 = match l3 {
        4 => 0x0800,
        6 => 0x86dd,
        t => t,
    };
    f.extend_from_slice(&ethertype.to_be_bytes());
    let v4: [[u8; 4]; 4] = [
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        [192, 168, 1, 1],
        [224, 0, 0, 1],
    ];
    let v6: [[u8; 16]; 3] = [
        [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    ];
    let proto = pick_or_any(rng, &[6u8, 6, 17, 17, 1, 58, 47]);
    let l4 = {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&pick_or_any(rng, &[22u16, 53, 80, 443, 1500]).to_be_bytes());
        l4.extend_from_slice(&pick_or_any(rng, &[22u16, 53, 80, 443, 999]).to_be_bytes());
        for _ in 0..16 {
            l4.push(rng.random());
        }
        let payload = rng.random_range(0..80);
        l4.extend((0..payload).map(|_| rng.random::<u8>()));
        l4
    };
    match l3 {
        4 => {
            let opts = pick(rng, &[0usize, 0, 4, 8]);
            let total = (20 + opts + l4.len()) as u16;
            f.push(0x40 | ((20 + opts) / 4) as u8);
            f.push(rng.random());
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&pick(rng, &[0u16, 0, 0x4000, 0x2000, 0x0010]).to_be_bytes());
            f.extend_from_slice(&[rng.random(), proto, 0, 0]);
            f.extend_from_slice(&pick(rng, &v4));
            f.extend_from_slice(&pick(rng, &v4));
            f.resize(f.len() + opts, 1);
        }
        6 => {
            let ext = rng.random_bool(0.2);
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&((l4.len() + 8 * ext as usize) as u16).to_be_bytes());
            f.extend_from_slice(&[if ext { 0 } else { proto }, 64]);
            f.extend_from_slice(&pick(rng, &v6));
            f.extend_from_slice(&pick(rng, &v6));
            if ext {
                f.extend_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
            }
        }
        _ => {}
    }
    f.extend_from_slice(&l4);
    if rng.random_bool(0.2) {
        let i = rng.random_range(0..f.len());
        f[i] = rng.random();
    }
    if rng.random_bool(0.2) {
        f.truncate(rng.random_range(0..=f.len()));
    }
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// libpcap's program, run by our interpreter, keeps exactly the frames libpcap's own
    /// `pcap_offline_filter` keeps.
    #[test]
    fn the_interpreter_agrees_with_libpcap(seed in any::<u64>()) {
        let mut rng = StdRng::seed_from_u64(seed);
        let expr = random_expr(&mut rng);
        let dead = ::pcap::Capture::dead(::pcap::Linktype(1)).unwrap();
        // libpcap refuses some combinations ("expression rejects all packets"): so do we.
        let Ok(theirs) = dead.compile(&expr, true) else {
            prop_assert!(compile(&expr, LINKTYPE_ETHERNET).is_err());
            return Ok(());
        };
        let ours = compile(&expr, LINKTYPE_ETHERNET).unwrap();
        for _ in 0..16 {
            let frame = random_frame(&mut rng);
            let pkt = Captured { data: &frame, wire_len: frame.len() as u32 };
            prop_assert_eq!(
                run(&ours, &pkt) != 0,
                theirs.filter(&frame),
                "{} on {:02x?}", expr, frame
            );
        }
    }
}

#[test]
fn a_bad_expression_gives_libpcaps_message_and_what_to_do() {
    let e = compile("tcp prot 80", LINKTYPE_ETHERNET).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("invalid capture filter \"tcp prot 80\""),
        "{msg}"
    );
    assert!(msg.contains("syntax error"), "{msg}");
    assert!(msg.contains("man pcap-filter"), "{msg}");
    assert!(TraceFilter::new("port 99999").is_err());
}

#[test]
fn a_replay_compiles_for_each_link_type_it_meets() {
    let mut f = TraceFilter::new("udp port 53").unwrap();
    // Raw IPv4 (LINKTYPE_RAW) + UDP to port 53: the Ethernet program would read the wrong
    // offsets.
    let mut ip = vec![
        0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    ip.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 8, 0, 0]);
    assert!(f.keeps(LINKTYPE_RAW, &ip, ip.len() as u32).unwrap());
    ip[23] = 54;
    assert!(!f.keeps(LINKTYPE_RAW, &ip, ip.len() as u32).unwrap());
    // An expression that means nothing on raw IP is refused for it, with the link type named.
    let mut f = TraceFilter::new("ether host 02:00:00:00:00:01").unwrap();
    let e = f.keeps(LINKTYPE_RAW, &ip, ip.len() as u32).unwrap_err();
    assert!(format!("{e:#}").contains("link type 101"), "{e:#}");
}

#[test]
fn an_empty_expression_is_no_filter() {
    assert_eq!(expression(Some("  ")), None);
    assert_eq!(expression(None), None);
    assert_eq!(expression(Some("tcp")), Some("tcp"));
}

#[test]
fn instructions_are_read_from_the_crates_text_form() {
    assert_eq!(
        parse_insn("21 0 8 2048"),
        Some(Insn {
            code: 0x15,
            jt: 0,
            jf: 8,
            k: 2048
        })
    );
    assert_eq!(parse_insn("21 0 8"), None);
    assert_eq!(parse_insn("21 0 8 1 2"), None);
}
