//! The bench's flood frames (`cargo xtask bench`, scale section): one 60-byte Ethernet/IPv4/UDP
//! frame per new flow, numbered by a flow id. Built here so that the kernel generator
//! (conntrack-ebpf's `bench_flood`, an XDP program run with BPF_PROG_TEST_RUN live frames) and
//! the host's checks build the same frame from the same id.
//!
//! Flow `id`: source 10.240.0.0/12 + (id mod 2^20), source port 40000 + id / 2^20, to
//! 10.250.0.2:4000 (the bench's receiving address) and a MAC nobody has (02:00:00:00:00:99):
//! the receiver's TC ingress sees the frame, its stack then drops it (not for this host).
//! Distinct ids below 2^20 * 25536 give distinct 5-tuples.
//!
//! Pacing: BPF_PROG_TEST_RUN sets up a page pool per call, and tearing it down waits for an
//! RCU grace period (20-30 ms measured on the bench machine), so one call per few
//! milliseconds of traffic cannot keep a rate. The generator instead runs once per rate step
//! with an open-ended `repeat`, and paces itself: each run sends the next flow when it is due
//! ([`pace`], from the step's [`State`]) and otherwise drops its frame; the bench ends the call
//! with a signal once every flow of the step has gone.

/// Length of a flood frame (the Ethernet minimum without FCS; the UDP payload is zeros).
pub const FRAME_LEN: usize = 60;
/// Bytes of the frame the generator writes for each flow: Ethernet, IPv4 and UDP headers (the
/// payload after them stays zero).
pub const HEADER_LEN: usize = 42;
/// Destination 10.250.0.2.
pub const DST_ADDR: [u8; 4] = [10, 250, 0, 2];
/// Destination UDP port (no analyzer on it).
pub const DST_PORT: u16 = 4000;
/// First source port; the source port goes up by one every 2^20 flows.
pub const SRC_PORT_BASE: u16 = 40000;

/// The headers with the per-flow fields (source address, source port, IPv4 checksum) zero.
const TEMPLATE: [u8; HEADER_LEN] = [
    // Ethernet: to 02:00:00:00:00:99 (nobody), from 02:00:00:00:00:01, IPv4.
    0x02, 0, 0, 0, 0, 0x99, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00,
    // IPv4: IHL 5, total length 46, DF, TTL 64, UDP, checksum, source, destination.
    0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0, 0, 0, 0, 0, 10, 250, 0, 2,
    // UDP: source port, destination port 4000, length 26, no checksum.
    0, 0, 0x0f, 0xa0, 0, 26, 0, 0,
];

/// Source address of flow `id`.
#[inline(always)]
pub const fn src_addr(id: u64) -> [u8; 4] {
    let low = (id & 0xf_ffff) as u32;
    (0x0af0_0000 | low).to_be_bytes()
}

/// Source port of flow `id`.
#[inline(always)]
pub const fn src_port(id: u64) -> u16 {
    SRC_PORT_BASE.wrapping_add((id >> 20) as u16)
}

/// The IPv4 header checksum of flow `id`'s frame: the template's constant words plus the
/// source address, folded and complemented (RFC 1071), without a loop over the header.
#[inline(always)]
pub const fn ip_checksum(id: u64) -> u16 {
    // 0x4500 + 46 + 0x4000 + 0x4011 + 10.250 + 0.2 (the words that never change).
    const FIXED: u32 = 0x4500 + 46 + 0x4000 + 0x4011 + 0x0afa + 0x0002;
    let s = src_addr(id);
    let mut sum =
        FIXED + (((s[0] as u32) << 8) | s[1] as u32) + (((s[2] as u32) << 8) | s[3] as u32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Flow `id`'s headers (the first [`HEADER_LEN`] bytes of its frame).
#[inline(always)]
pub const fn header(id: u64) -> [u8; HEADER_LEN] {
    let mut h = TEMPLATE;
    let c = ip_checksum(id).to_be_bytes();
    h[24] = c[0];
    h[25] = c[1];
    let s = src_addr(id);
    h[26] = s[0];
    h[27] = s[1];
    h[28] = s[2];
    h[29] = s[3];
    let p = src_port(id).to_be_bytes();
    h[34] = p[0];
    h[35] = p[1];
    h
}

/// Flow `id`'s whole frame.
pub const fn frame(id: u64) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    let h = header(id);
    let mut i = 0;
    while i < HEADER_LEN {
        f[i] = h[i];
        i += 1;
    }
    f
}

/// The generator's state (conntrack-ebpf's `FLOOD[0]`), written by the bench before a step
/// and advanced by the program: `[next, end, first, rate, t0, t_last]`.
pub type State = [u64; STATE_SLOTS];
/// Slots of [`State`].
pub const STATE_SLOTS: usize = 6;
/// The id of the next flow to send.
pub const NEXT: usize = 0;
/// The step ends before this id.
pub const END: usize = 1;
/// The step's first id (the pace counts from it).
pub const FIRST: usize = 2;
/// Frames per second; 0: as fast as the program is run.
pub const RATE: usize = 3;
/// `bpf_ktime_get_ns` of the step's first frame (0 until it is sent).
pub const T0: usize = 4;
/// `bpf_ktime_get_ns` of the step's latest frame.
pub const T_LAST: usize = 5;

/// A step of `count` flows from `first` at `rate` frames/s (0: unpaced), not yet started.
pub const fn step(first: u64, count: u64, rate: u64) -> State {
    [first, first.saturating_add(count), first, rate, 0, 0]
}

/// Whether the run at `now_ns` sends flow `s[NEXT]`: the step is not over, and the flow is due
/// (`s[T0]` + its place in the step at `s[RATE]`; always at rate 0, and for the first flow,
/// which starts the clock).
#[inline(always)]
pub const fn pace(s: &State, now_ns: u64) -> bool {
    if s[NEXT] >= s[END] {
        return false;
    }
    if s[RATE] == 0 || s[T0] == 0 {
        return true;
    }
    let sent = s[NEXT].wrapping_sub(s[FIRST]);
    let due = s[T0].wrapping_add(sent.wrapping_mul(1_000_000_000) / s[RATE]);
    now_ns >= due
}

/// `s` after sending flow `s[NEXT]` at `now_ns`.
#[inline(always)]
pub const fn sent(s: &mut State, now_ns: u64) {
    s[NEXT] = s[NEXT].wrapping_add(1);
    if s[T0] == 0 {
        s[T0] = now_ns;
    }
    s[T_LAST] = now_ns;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::set_ipv4_header_checksum;
    use crate::packet::{PacketMeta, parse_ethernet};

    #[test]
    fn checksum_matches_the_generic_one() {
        for id in [
            0u64,
            1,
            255,
            256,
            0xf_ffff,
            0x10_0000,
            0x12_3456,
            u64::from(u32::MAX),
        ] {
            let f = frame(id);
            let mut ip = f[14..34].to_vec();
            set_ipv4_header_checksum(&mut ip);
            assert_eq!(&ip[10..12], &f[24..26], "id {id}");
        }
    }

    #[test]
    fn ids_map_to_distinct_tuples() {
        let mut seen = std::collections::HashSet::new();
        for id in (0..4u64).flat_map(|k| [k, (1 << 20) - 1 - k, (1 << 20) + k, (3 << 20) + k]) {
            assert!(seen.insert((src_addr(id), src_port(id))), "id {id}");
        }
        assert_eq!(src_addr(0), [10, 240, 0, 0]);
        assert_eq!(src_addr(0x1_0203), [10, 241, 2, 3]);
        assert_eq!(src_port(0x1_0203), SRC_PORT_BASE);
        assert_eq!(src_port(5 << 20), SRC_PORT_BASE + 5);
    }

    #[test]
    fn pace_spaces_the_flows_at_the_rate() {
        let mut s = step(100, 3, 1000);
        // The first flow goes at once and starts the clock.
        assert!(pace(&s, 5_000_000));
        sent(&mut s, 5_000_000);
        assert_eq!((s[NEXT], s[T0], s[T_LAST]), (101, 5_000_000, 5_000_000));
        // The second is due 1 ms later.
        assert!(!pace(&s, 5_999_999));
        assert!(pace(&s, 6_000_000));
        sent(&mut s, 6_000_100);
        // The third is due by the step's clock, not 1 ms after the late second.
        assert!(pace(&s, 7_000_000));
        sent(&mut s, 7_000_000);
        assert_eq!((s[NEXT], s[T0], s[T_LAST]), (103, 5_000_000, 7_000_000));
        // The step is over.
        assert!(!pace(&s, u64::MAX));
    }

    #[test]
    fn unpaced_sends_until_the_end() {
        let mut s = step(0, 2, 0);
        assert!(pace(&s, 1));
        sent(&mut s, 1);
        assert!(pace(&s, 1));
        sent(&mut s, 1);
        assert!(!pace(&s, 2));
        assert_eq!(step(u64::MAX - 1, 5, 0)[END], u64::MAX);
    }

    #[test]
    fn frame_parses_as_the_flow() {
        let id = 0x2_0304 | (7 << 20);
        let f = frame(id);
        let mut meta = PacketMeta::default();
        parse_ethernet(&f, &mut meta).expect("a valid frame");
        assert_eq!(meta.proto, crate::proto::UDP);
        assert_eq!(&meta.src[12..], &[10, 242, 3, 4]);
        assert_eq!(&meta.dst[12..], &DST_ADDR);
        assert_eq!((meta.sport, meta.dport), (SRC_PORT_BASE + 7, DST_PORT));
        assert_eq!((meta.ip_len, meta.payload_len), (46, 18));
    }
}
