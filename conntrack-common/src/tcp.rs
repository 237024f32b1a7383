//! One direction of a connection ([`Endpoint`]): Zeek's TCP endpoint state, the 64-bit
//! sequence space used for the byte counts, and the per-direction counters (also used by UDP,
//! ICMP and other protocols for packets and bytes).
//!
//! Sequence numbers are kept as the raw 32-bit value last seen plus its position relative to the
//! endpoint's start sequence in 64 bits; a new raw value moves the position by the signed 32-bit
//! difference, which counts wraps exactly like Zeek's wrap counters.

/// Zeek's `TCP_ENDPOINT_*` numbers (`init-bare.zeek`).
pub mod state {
    /// Nothing seen yet.
    pub const INACTIVE: u8 = 0;
    /// SYN sent.
    pub const SYN_SENT: u8 = 1;
    /// SYN+ACK sent (originator sending SYN+ACK first).
    pub const SYN_ACK_SENT: u8 = 2;
    /// Traffic seen without a SYN.
    pub const PARTIAL: u8 = 3;
    /// Handshake done.
    pub const ESTABLISHED: u8 = 4;
    /// FIN sent.
    pub const CLOSED: u8 = 5;
    /// RST sent.
    pub const RESET: u8 = 6;
}

/// Sequence jumps larger than this on SYN/RST packets are not trusted (`TOO_LARGE_SEQ_DELTA`).
pub const TOO_LARGE_SEQ_DELTA: i32 = 1_048_576;

/// Data blocks the reassembler keeps above holes per endpoint. Zeek keeps every block; with a
/// bounded number, an extra block is merged with its nearest neighbour, so the (small) hole
/// between them is not reported as a gap. Each block costs the BPF verifier dearly in
/// `engine::update` (2: ~470k processed instructions, 3: ~720k, 4: ~810k of the 1M limit).
pub const REASM_BLOCKS: usize = 2;

/// `Endpoint::flags`: the endpoint's close was reported (`did_close`).
pub const EP_DID_CLOSE: u8 = 1;
/// `Endpoint::flags`: UDP/ICMP endpoint sent at least one valid-checksum packet.
pub const EP_ACTIVE: u8 = 2;

/// One direction of a connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// Packets counted (valid checksum only), Zeek's CONNSIZE `num_pkts`.
    pub pkts: u64,
    /// Sum of IP total lengths of the counted packets (`num_bytes_ip`).
    pub ip_bytes: u64,
    /// UDP/ICMP payload bytes (Zeek's `request_len`/`reply_len`).
    pub data_bytes: u64,
    /// Highest sequence number sent (one past the segment), relative to `start_seq`.
    pub last_rel: u64,
    /// Highest acknowledgement the peer sent for this endpoint, relative to `start_seq`.
    pub ack_rel: u64,
    /// Bytes the peer acknowledged that were never seen (approximate content gaps).
    pub missed_bytes: u64,
    /// Reassembly point: data up to here (relative) was delivered or declared a gap
    /// (Zeek's `last_reassem_seq`, starts at 1).
    pub deliv_rel: u64,
    /// Relative sequence one past the FIN (Zeek's `FIN_seq`), valid when `fin_cnt > 0`.
    pub fin_rel: u64,
    /// Start sequence number (ISN; for a missing SYN the first seq - 1).
    pub start_seq: u32,
    /// Raw value behind `last_rel`.
    pub last_seq: u32,
    /// Raw value behind `ack_rel`.
    pub ack_seq: u32,
    /// Relative seq of the previous SYN (history repeat rule).
    pub hist_last_syn: u32,
    /// Relative seq at the end of the previous FIN.
    pub hist_last_fin: u32,
    /// Relative seq of the previous RST.
    pub hist_last_rst: u32,
    /// Bad checksums (C).
    pub chk_cnt: u32,
    /// Retransmissions (T).
    pub rxmit_cnt: u32,
    /// Zero windows (W).
    pub win0_cnt: u32,
    /// Content gaps (G).
    pub gap_cnt: u32,
    /// FIN packets seen.
    pub fin_cnt: u32,
    /// Starts of the data blocks buffered above holes (low 32 bits of the relative position),
    /// ascending, disjoint and not touching, all above `deliv_rel`; a slot with
    /// `blk_lo == blk_hi` is empty (empty slots come last).
    pub blk_lo: [u32; REASM_BLOCKS],
    /// Ends of the buffered blocks, see `blk_lo`.
    pub blk_hi: [u32; REASM_BLOCKS],
    /// One of [`state`].
    pub state: u8,
    /// State before the last change (Zeek's `prev_state`).
    pub prev_state: u8,
    /// Negotiated window scale shift (0 when none).
    pub window_scale: u8,
    /// [`EP_DID_CLOSE`] | [`EP_ACTIVE`].
    pub flags: u8,
}

/// Signed distance from `b` to `a` in 32-bit sequence space (`seq_delta`).
#[inline(always)]
pub fn seq_delta(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// Moves a relative position by the signed distance between two raw values; `None` when the
/// result would lie before the start (Zeek's "underflow").
#[inline(always)]
fn advance(rel: u64, raw: u32, new_raw: u32) -> Option<u64> {
    let d = seq_delta(new_raw, raw) as i64;
    let r = (rel as i64).wrapping_add(d);
    if r < 0 { None } else { Some(r as u64) }
}

/// True for the states of the three-way handshake (`is_handshake`).
#[inline(always)]
pub fn is_handshake(s: u8) -> bool {
    s == state::INACTIVE || s == state::SYN_SENT || s == state::SYN_ACK_SENT
}

impl Endpoint {
    /// An all-zero (INACTIVE) endpoint.
    pub const ZERO: Endpoint = Endpoint {
        pkts: 0,
        ip_bytes: 0,
        data_bytes: 0,
        last_rel: 0,
        ack_rel: 0,
        missed_bytes: 0,
        deliv_rel: 0,
        fin_rel: 0,
        start_seq: 0,
        last_seq: 0,
        ack_seq: 0,
        hist_last_syn: 0,
        hist_last_fin: 0,
        hist_last_rst: 0,
        chk_cnt: 0,
        rxmit_cnt: 0,
        win0_cnt: 0,
        gap_cnt: 0,
        fin_cnt: 0,
        blk_lo: [0; REASM_BLOCKS],
        blk_hi: [0; REASM_BLOCKS],
        state: 0,
        prev_state: 0,
        window_scale: 0,
        flags: 0,
    };

    /// Sets start, ack and last sequence numbers (`InitStartSeq`/`InitAckSeq`/`InitLastSeq`).
    /// `ack` and `last` are raw values that must lie at or after `start`.
    #[inline(always)]
    pub fn init_seq(&mut self, start: u32, ack: u32, last: u32) {
        self.start_seq = start;
        self.ack_seq = ack;
        self.ack_rel = ack.wrapping_sub(start) as u64;
        self.last_seq = last;
        self.last_rel = last.wrapping_sub(start) as u64;
        // A new sequence space restarts reassembly at relative 1.
        self.deliv_rel = 1;
        // Word stores: an array assignment is a `memset` call on BPF.
        crate::packet::zero_words(&mut self.blk_lo);
        crate::packet::zero_words(&mut self.blk_hi);
    }

    /// `DataSent` into the reassembler: data that reaches the reassembly point moves it (and
    /// delivers the buffered blocks it then reaches); data beyond it is buffered as a block.
    #[inline(always)]
    pub fn data_sent(&mut self, start: u64, len: u32) {
        let end = start.wrapping_add(len as u64);
        if end <= self.deliv_rel {
            return;
        }
        if start <= self.deliv_rel {
            self.advance_reassembly(end);
        } else {
            self.buffer_block(start, end);
        }
    }

    /// `AckReceived` -> `TrimToSeq` -> `Undelivered`: the peer acknowledged up to `ack`. Every
    /// hole below it (between the reassembly point and the next buffered block, between
    /// blocks, and after the last block reached) is a content gap; the total is returned. The
    /// reassembly point moves to `ack`, or past the
    /// buffered data it reaches. An acknowledged FIN octet is not data. `skip_first` keeps
    /// Zeek's exception for acks up to relative 2 on partial connections (no gap, no move).
    #[inline(always)]
    pub fn ack_received(&mut self, ack: u64, skip_first: bool) -> u64 {
        let mut up_to = ack;
        if self.fin_cnt > 0 && up_to >= self.fin_rel {
            up_to = self.fin_rel.saturating_sub(1);
        }
        if up_to <= self.deliv_rel || (up_to <= 2 && skip_first) {
            return 0;
        }
        self.advance_reassembly(up_to)
    }

    /// Offset of a stored block boundary above the reassembly point.
    #[inline(always)]
    fn blk_off(&self, x: u32) -> u32 {
        x.wrapping_sub(self.deliv_rel as u32)
    }

    /// Moves the reassembly point to `to` (> `deliv_rel`), delivering in order every buffered
    /// block that starts at or below the point reached. Returns the bytes in between that no
    /// block covered (the holes; only meaningful when `to` comes from an acknowledgement).
    #[inline(always)]
    fn advance_reassembly(&mut self, to: u64) -> u64 {
        let base = self.deliv_rel;
        let mut point = base;
        let mut missing: u64 = 0;
        let mut done: usize = 0;
        while done < REASM_BLOCKS {
            let (Some(&lo), Some(&hi)) = (self.blk_lo.get(done), self.blk_hi.get(done)) else {
                break;
            };
            if lo == hi {
                break;
            }
            let lo = base.wrapping_add(self.blk_off(lo) as u64);
            let hi = base.wrapping_add(self.blk_off(hi) as u64);
            if lo > point && lo > to {
                break;
            }
            if lo > point {
                missing = missing.wrapping_add(lo - point);
            }
            if hi > point {
                point = hi;
            }
            done += 1;
        }
        if to > point {
            missing = missing.wrapping_add(to - point);
            point = to;
        }
        // Drop the delivered blocks; the others keep their (absolute) boundaries.
        let mut k: usize = 0;
        while done > 0 && k < REASM_BLOCKS {
            let from = k.wrapping_add(done);
            let lo = self.blk_lo.get(from).copied().unwrap_or(0);
            let hi = self.blk_hi.get(from).copied().unwrap_or(0);
            if let Some(l) = self.blk_lo.get_mut(k) {
                *l = lo;
            }
            if let Some(h) = self.blk_hi.get_mut(k) {
                *h = hi;
            }
            k += 1;
        }
        self.deliv_rel = point;
        missing
    }

    /// Buffers [start, end) above a hole (`start > deliv_rel`), merging it with the blocks it
    /// overlaps or touches. With more than [`REASM_BLOCKS`] blocks the two closest are merged.
    /// Data 4 GiB or more above the reassembly point is not buffered.
    #[inline(always)]
    fn buffer_block(&mut self, start: u64, end: u64) {
        let Some(span) = end.checked_sub(self.deliv_rel) else {
            return;
        };
        if span > u32::MAX as u64 {
            return;
        }
        // Work in offsets above the reassembly point, where the order is plain u32 order.
        let mut new_lo = (start - self.deliv_rel) as u32;
        let mut new_hi = span as u32;
        // Only the first `n` entries are ever read. Filled with a variable rather than 0: a
        // constant fill is a `memset` call on BPF.
        let mut out_lo = [new_lo; REASM_BLOCKS + 1];
        let mut out_hi = [new_hi; REASM_BLOCKS + 1];
        let mut n: usize = 0;
        let mut placed = false;
        let mut k: usize = 0;
        while k < REASM_BLOCKS {
            let (Some(&l), Some(&h)) = (self.blk_lo.get(k), self.blk_hi.get(k)) else {
                break;
            };
            k += 1;
            if l == h {
                break;
            }
            let (lo, hi) = (self.blk_off(l), self.blk_off(h));
            if hi < new_lo {
                push_block(&mut out_lo, &mut out_hi, &mut n, lo, hi);
            } else if lo > new_hi {
                if !placed {
                    push_block(&mut out_lo, &mut out_hi, &mut n, new_lo, new_hi);
                    placed = true;
                }
                push_block(&mut out_lo, &mut out_hi, &mut n, lo, hi);
            } else {
                new_lo = new_lo.min(lo);
                new_hi = new_hi.max(hi);
            }
        }
        if !placed {
            push_block(&mut out_lo, &mut out_hi, &mut n, new_lo, new_hi);
        }
        if n > REASM_BLOCKS {
            merge_closest(&mut out_lo, &mut out_hi);
        }
        let base = self.deliv_rel as u32;
        let mut k: usize = 0;
        while k < REASM_BLOCKS {
            let (lo, hi) = if k < n {
                (
                    out_lo.get(k).copied().unwrap_or(0),
                    out_hi.get(k).copied().unwrap_or(0),
                )
            } else {
                (0, 0)
            };
            if let Some(l) = self.blk_lo.get_mut(k) {
                *l = if lo == hi { 0 } else { base.wrapping_add(lo) };
            }
            if let Some(h) = self.blk_hi.get_mut(k) {
                *h = if lo == hi { 0 } else { base.wrapping_add(hi) };
            }
            k += 1;
        }
    }

    /// Position of `seq` relative to the start (`get_relative_seq` against the last sequence
    /// sent); `None` on underflow.
    #[inline(always)]
    pub fn rel_seq(&self, seq: u32) -> Option<u64> {
        advance(self.last_rel, self.last_seq, seq)
    }

    /// Position of an acknowledgement `ack` for this endpoint; `None` on underflow.
    #[inline(always)]
    pub fn rel_ack(&self, ack: u32) -> Option<u64> {
        advance(self.ack_rel, self.ack_seq, ack)
    }

    /// `UpdateLastSeq`: records a new highest sequence number.
    #[inline(always)]
    pub fn set_last_seq(&mut self, seq: u32) {
        if let Some(r) = self.rel_seq(seq) {
            self.last_rel = r;
        } else {
            self.last_rel = 0;
        }
        self.last_seq = seq;
    }

    /// `update_ack_seq`: an acknowledgement from the peer moves `ack` forward only; an ack of 0
    /// that jumps more than 1 MiB is taken as broken.
    #[inline(always)]
    pub fn update_ack_seq(&mut self, ack: u32) {
        let d = seq_delta(ack, self.ack_seq);
        if ack == 0 && d > TOO_LARGE_SEQ_DELTA {
            return;
        }
        if d > 0 {
            self.ack_rel = self.ack_rel.wrapping_add(d as u64);
            self.ack_seq = ack;
        }
    }

    /// True if the peer acknowledged nothing beyond the SYN (`NoDataAcked`).
    #[inline(always)]
    pub fn no_data_acked(&self) -> bool {
        self.ack_rel <= 1
    }

    /// Bytes this endpoint sent, from sequence space (`TCP_Endpoint::Size`): the larger of the
    /// highest sequence sent and the highest acknowledged, minus the SYN and FIN octets. An
    /// endpoint that went SYN_SENT -> RESET while the peer stayed INACTIVE and whose "acked"
    /// sequence lies beyond start+1 is an aborted half-open connection: 0.
    #[inline(always)]
    pub fn size(&self, peer_state: u8) -> u64 {
        if self.prev_state == state::SYN_SENT
            && self.state == state::RESET
            && peer_state == state::INACTIVE
            && !self.no_data_acked()
        {
            return 0;
        }
        let mut size = if self.last_rel > self.ack_rel {
            self.last_rel
        } else {
            self.ack_rel
        };
        size = size.saturating_sub(1);
        if self.fin_cnt > 0 {
            size = size.saturating_sub(1);
        }
        size
    }

    /// True once the endpoint's close has been reported.
    #[inline(always)]
    pub fn did_close(&self) -> bool {
        self.flags & EP_DID_CLOSE != 0
    }

    /// True once a UDP/ICMP endpoint sent a valid packet.
    #[inline(always)]
    pub fn is_active(&self) -> bool {
        self.flags & EP_ACTIVE != 0
    }

    /// Counts one packet (CONNSIZE).
    #[inline(always)]
    pub fn count_packet(&mut self, pkts: u32, ip_bytes: u32) {
        self.pkts = self.pkts.wrapping_add(pkts as u64);
        self.ip_bytes = self.ip_bytes.wrapping_add(ip_bytes as u64);
    }
}

/// Appends a block to a fixed list (dropped if full; the caller sizes it for one extra).
#[inline(always)]
fn push_block(lo: &mut [u32], hi: &mut [u32], n: &mut usize, l: u32, h: u32) {
    if let (Some(a), Some(b)) = (lo.get_mut(*n), hi.get_mut(*n)) {
        *a = l;
        *b = h;
        *n += 1;
    }
}

/// Merges the two neighbouring blocks of a full list of `REASM_BLOCKS + 1` with the smallest
/// hole between them, leaving `REASM_BLOCKS` blocks.
#[inline(always)]
fn merge_closest(lo: &mut [u32; REASM_BLOCKS + 1], hi: &mut [u32; REASM_BLOCKS + 1]) {
    let mut best: usize = 0;
    let mut best_gap = u32::MAX;
    let mut j: usize = 0;
    while j < REASM_BLOCKS {
        let gap = lo
            .get(j + 1)
            .copied()
            .unwrap_or(0)
            .wrapping_sub(hi.get(j).copied().unwrap_or(0));
        if gap < best_gap {
            best_gap = gap;
            best = j;
        }
        j += 1;
    }
    let mut j: usize = 0;
    while j < REASM_BLOCKS {
        if j == best {
            let next_hi = hi.get(j + 1).copied().unwrap_or(0);
            if let Some(d) = hi.get_mut(j) {
                *d = next_hi;
            }
        } else if j > best {
            let (nl, nh) = (
                lo.get(j + 1).copied().unwrap_or(0),
                hi.get(j + 1).copied().unwrap_or(0),
            );
            if let (Some(a), Some(b)) = (lo.get_mut(j), hi.get_mut(j)) {
                *a = nl;
                *b = nh;
            }
        }
        j += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An endpoint whose reassembly starts at relative 1 (after its SYN).
    fn ep() -> Endpoint {
        let mut e = Endpoint::ZERO;
        e.init_seq(1000, 1000, 1001);
        e
    }

    fn blocks(e: &Endpoint) -> std::vec::Vec<(u32, u32)> {
        (0..REASM_BLOCKS)
            .map(|k| (e.blk_lo[k], e.blk_hi[k]))
            .filter(|(l, h)| l != h)
            .collect()
    }

    #[test]
    fn every_acked_hole_is_a_gap_not_only_the_last() {
        let mut e = ep();
        e.data_sent(1, 10); // 1..11 delivered
        e.data_sent(21, 10); // hole 11..21
        e.data_sent(41, 10); // hole 31..41
        assert_eq!(blocks(&e), [(21, 31), (41, 51)]);
        assert_eq!(e.ack_received(61, false), 10 + 10 + 10);
        assert_eq!(e.deliv_rel, 61);
        assert!(blocks(&e).is_empty());
    }

    #[test]
    fn ack_inside_a_block_delivers_it_and_keeps_the_blocks_above() {
        let mut e = ep();
        e.data_sent(21, 10);
        e.data_sent(41, 10);
        // Up to 25: the hole 1..21 is a gap, block 21..31 is delivered, 41..51 stays.
        assert_eq!(e.ack_received(25, false), 20);
        assert_eq!(e.deliv_rel, 31);
        assert_eq!(blocks(&e), [(41, 51)]);
        // The hole 31..41 is reported when the peer acknowledges past it.
        assert_eq!(e.ack_received(51, false), 10);
        assert_eq!(e.deliv_rel, 51);
    }

    #[test]
    fn filled_holes_are_not_gaps_and_blocks_merge() {
        let mut e = ep();
        e.data_sent(21, 10);
        e.data_sent(41, 10);
        e.data_sent(31, 10); // fills 31..41: one block 21..51
        assert_eq!(blocks(&e), [(21, 51)]);
        e.data_sent(1, 20); // fills 1..21: everything delivered
        assert_eq!(e.deliv_rel, 51);
        assert!(blocks(&e).is_empty());
        assert_eq!(e.ack_received(51, false), 0);
    }

    #[test]
    fn more_blocks_than_slots_merge_the_closest_pair() {
        let mut e = ep();
        // REASM_BLOCKS blocks of 10 with holes of 10 (11.., 31.., ...), then one more block
        // 5 bytes after the last: that hole is the smallest and is merged away.
        let n = REASM_BLOCKS as u32;
        let mut want = std::vec::Vec::new();
        for i in 0..n {
            e.data_sent(11 + 20 * i as u64, 10);
            want.push((11 + 20 * i, 21 + 20 * i));
        }
        let extra = 20 * n + 6; // the last block ends at 20 * n + 1
        e.data_sent(extra as u64, 10);
        want.last_mut().unwrap().1 = extra + 10;
        assert_eq!(blocks(&e), want);
        // Every hole of 10 is a gap, the merged 5 are lost, 5 more after the last block.
        assert_eq!(e.ack_received(extra as u64 + 15, false), 10 * n as u64 + 5);
    }

    #[test]
    fn acked_fin_octet_and_partial_first_ack_are_no_gap() {
        let mut e = ep();
        e.data_sent(1, 10);
        e.fin_cnt = 1;
        e.fin_rel = 12;
        assert_eq!(e.ack_received(12, false), 0);
        let mut p = ep();
        assert_eq!(p.ack_received(2, true), 0);
        assert_eq!(p.deliv_rel, 1);
    }

    #[test]
    fn blocks_survive_sequence_wrap_of_the_low_32_bits() {
        let mut e = ep();
        e.deliv_rel = (1u64 << 32) - 5;
        e.data_sent((1u64 << 32) + 5, 10);
        assert_eq!(e.ack_received((1u64 << 32) + 20, false), 10 + 5);
        assert_eq!(e.deliv_rel, (1u64 << 32) + 20);
    }
}
