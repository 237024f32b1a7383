//! One direction of a TCP byte stream put back in sequence order, for content files.
//!
//! Sequence numbers are unwrapped into 64-bit stream positions (each relative to the previous
//! segment, so a stream longer than 4 GiB or crossing 2^32 keeps counting). Data is written as
//! soon as it is contiguous; segments above a hole wait. Bytes already written are never
//! written again: a retransmission or an overlap keeps the first copy, as Zeek's reassembler
//! does. A hole is given up on (declared a gap) when the connection ends or when more than
//! `max_pending` bytes wait above it; the writer then gets [`Piece::Gap`] with its size (Zeek
//! writes `\n<<gap N>>\n` into the contents file there) and carries on after it.

use std::collections::BTreeMap;

/// What the reassembler hands to its writer, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Data(&'a [u8]),
    /// This many bytes were never seen.
    Gap(u64),
}

#[derive(Debug)]
pub struct Reassembler {
    /// Stream position of the next byte to write; `None` until the first segment (or an
    /// anchor) says where the stream starts.
    next: Option<u64>,
    /// The last sequence number seen and its position, to unwrap the next one.
    last: Option<(u32, u64)>,
    /// Segments above a hole, by position (non-overlapping is not required).
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    max_pending: usize,
}

impl Reassembler {
    /// A stream whose first byte will be the first segment that arrives.
    pub fn new(max_pending: usize) -> Self {
        Self {
            next: None,
            last: None,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            max_pending,
        }
    }

    /// A stream known to start at sequence number `first_seq` (the ISN + 1): data after it
    /// that arrives first leaves a hole in front of it.
    pub fn anchored(first_seq: u32, max_pending: usize) -> Self {
        let mut r = Self::new(max_pending);
        r.next = Some(1 << 32);
        r.last = Some((first_seq, 1 << 32));
        r
    }

    /// Bytes waiting above a hole.
    #[cfg(test)]
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Stream position of `seq` (starting at 2^32, so that data slightly before the first
    /// segment seen still has a position).
    fn position(&mut self, seq: u32) -> u64 {
        let pos = match self.last {
            None => 1 << 32,
            Some((last_seq, last_pos)) => {
                let delta = seq.wrapping_sub(last_seq) as i32 as i64;
                last_pos.wrapping_add_signed(delta)
            }
        };
        self.last = Some((seq, pos));
        pos
    }

    /// A segment of `data` starting at `seq`; writes what became contiguous.
    pub fn push(&mut self, seq: u32, data: &[u8], out: &mut dyn FnMut(Piece<'_>)) {
        if data.is_empty() {
            return;
        }
        let pos = self.position(seq);
        let next = *self.next.get_or_insert(pos);
        let end = pos + data.len() as u64;
        if end <= next {
            return; // a retransmission of written data
        }
        if pos <= next {
            let skip = (next - pos) as usize;
            out(Piece::Data(&data[skip..]));
            self.next = Some(end);
            self.drain(out);
        } else {
            let slot = self.pending.entry(pos).or_default();
            if slot.len() < data.len() {
                self.pending_bytes += data.len() - slot.len();
                *slot = data.to_vec();
            }
            if self.pending_bytes > self.max_pending {
                self.skip_hole(out);
            }
        }
    }

    /// Writes the pending segments that now follow `next` (trimming overlaps).
    fn drain(&mut self, out: &mut dyn FnMut(Piece<'_>)) {
        let Some(mut next) = self.next else { return };
        while let Some(entry) = self.pending.first_entry() {
            let pos = *entry.key();
            if pos > next {
                break;
            }
            let data = entry.remove();
            self.pending_bytes -= data.len();
            let end = pos + data.len() as u64;
            if end > next {
                out(Piece::Data(&data[(next - pos) as usize..]));
                next = end;
            }
        }
        self.next = Some(next);
    }

    /// Gives up on the first hole: reports it and writes what follows.
    fn skip_hole(&mut self, out: &mut dyn FnMut(Piece<'_>)) {
        let (Some(next), Some((&pos, _))) = (self.next, self.pending.first_key_value()) else {
            return;
        };
        if pos > next {
            out(Piece::Gap(pos - next));
            self.next = Some(pos);
        }
        self.drain(out);
    }

    /// The connection ended: every remaining hole is a gap.
    pub fn finish(&mut self, out: &mut dyn FnMut(Piece<'_>)) {
        while !self.pending.is_empty() {
            self.skip_hole(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `segments` (seq, bytes) through a reassembler, then finishes; the output with gaps
    /// shown as `<gap N>`.
    fn run(mut r: Reassembler, segments: &[(u32, &str)]) -> String {
        let mut s = String::new();
        let mut out = |p: Piece<'_>| match p {
            Piece::Data(d) => s.push_str(std::str::from_utf8(d).unwrap()),
            Piece::Gap(n) => s.push_str(&format!("<gap {n}>")),
        };
        for (seq, d) in segments {
            r.push(*seq, d.as_bytes(), &mut out);
        }
        r.finish(&mut out);
        s
    }

    #[test]
    fn in_order_and_out_of_order_segments_come_out_in_order() {
        let r = Reassembler::new(1 << 20);
        assert_eq!(run(r, &[(100, "abc"), (103, "def")]), "abcdef");
        let r = Reassembler::new(1 << 20);
        assert_eq!(
            run(r, &[(100, "abc"), (106, "ghi"), (103, "def")]),
            "abcdefghi"
        );
    }

    #[test]
    fn retransmissions_and_overlaps_keep_the_first_copy() {
        let r = Reassembler::new(1 << 20);
        let got = run(
            r,
            &[
                (100, "abcd"),
                (100, "abcd"),
                (102, "CDEF"),
                (110, "klm"),
                (108, "IJKL"),
            ],
        );
        assert_eq!(got, "abcdEF<gap 2>IJKLm");
        let r = Reassembler::new(1 << 20);
        // A pending segment overlapped by a later, longer one at the same position.
        assert_eq!(
            run(r, &[(1, "a"), (5, "e"), (5, "efg"), (2, "bcd")]),
            "abcdefg"
        );
    }

    #[test]
    fn a_hole_becomes_a_gap_at_the_end_not_garbage() {
        let r = Reassembler::new(1 << 20);
        assert_eq!(run(r, &[(1, "ab"), (10, "xyz")]), "ab<gap 7>xyz");
    }

    #[test]
    fn a_hole_is_given_up_when_too_much_waits_above_it() {
        let mut r = Reassembler::new(4);
        let mut s = Vec::new();
        let mut out = |p: Piece<'_>| s.push(format!("{p:?}"));
        r.push(0, b"a", &mut out);
        r.push(3, b"dd", &mut out);
        r.push(5, b"ee", &mut out);
        assert_eq!(r.pending_bytes(), 4);
        r.push(7, b"f", &mut out);
        assert_eq!(r.pending_bytes(), 0);
        // data, the gap, the two runs that waited, then the new segment at once
        assert_eq!(s.len(), 5, "{s:?}");
        assert_eq!(s[1], "Gap(2)");
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let r = Reassembler::new(1 << 20);
        let got = run(r, &[(u32::MAX - 1, "ab"), (2, "ef"), (0, "cd")]);
        assert_eq!(got, "abcdef");
    }

    #[test]
    fn an_anchored_stream_reports_missing_first_bytes() {
        let r = Reassembler::anchored(1000, 1 << 20);
        assert_eq!(run(r, &[(1003, "def")]), "<gap 3>def");
        let r = Reassembler::anchored(u32::MAX, 1 << 20);
        assert_eq!(run(r, &[(0, "b"), (u32::MAX, "a")]), "ab");
    }
}
