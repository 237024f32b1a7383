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
    /// Start of the data buffered above a hole (valid when `above_hi > above_lo`).
    pub above_lo: u64,
    /// End of the data buffered above a hole.
    pub above_hi: u64,
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
        above_lo: 0,
        above_hi: 0,
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
        self.above_lo = 0;
        self.above_hi = 0;
    }

    /// `DataSent` into the reassembler: contiguous data moves the reassembly point (and takes
    /// the data buffered above a hole along once the hole is filled); data beyond it is
    /// buffered. Overlaps inside the buffered range are not tracked (one range only).
    #[inline(always)]
    pub fn data_sent(&mut self, start: u64, len: u32) {
        let end = start.wrapping_add(len as u64);
        if end <= self.deliv_rel {
            return;
        }
        if start <= self.deliv_rel {
            self.deliv_rel = end;
            if self.above_hi > self.above_lo && self.deliv_rel >= self.above_lo {
                if self.above_hi > self.deliv_rel {
                    self.deliv_rel = self.above_hi;
                }
                self.above_lo = 0;
                self.above_hi = 0;
            }
            return;
        }
        if self.above_hi <= self.above_lo {
            self.above_lo = start;
            self.above_hi = end;
        } else {
            if start < self.above_lo {
                self.above_lo = start;
            }
            if end > self.above_hi {
                self.above_hi = end;
            }
        }
    }

    /// `AckReceived` -> `TrimToSeq` -> `Undelivered`: the peer acknowledged up to `ack`; the
    /// bytes between the reassembly point and `ack` that were never seen are returned as the
    /// gap, and the reassembly point moves to `ack` (or past the buffered data it reaches).
    /// An acknowledged FIN octet is not data. `skip_first` keeps Zeek's exception for acks up to
    /// relative 2 on partial connections (no gap, no move).
    #[inline(always)]
    pub fn ack_received(&mut self, ack: u64, skip_first: bool) -> u64 {
        let mut up_to = ack;
        if self.fin_cnt > 0 && up_to >= self.fin_rel {
            up_to = self.fin_rel.saturating_sub(1);
        }
        if up_to <= self.deliv_rel {
            return 0;
        }
        if up_to <= 2 && skip_first {
            return 0;
        }
        let span = up_to - self.deliv_rel;
        let mut covered = 0;
        let buffered = self.above_hi > self.above_lo;
        if buffered && self.above_lo < up_to {
            let top = if self.above_hi < up_to {
                self.above_hi
            } else {
                up_to
            };
            covered = top - self.above_lo;
        }
        self.deliv_rel = up_to;
        if buffered && self.above_lo <= up_to {
            if self.above_hi > self.deliv_rel {
                self.deliv_rel = self.above_hi;
            }
            self.above_lo = 0;
            self.above_hi = 0;
        }
        span.saturating_sub(covered)
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
