//! One direction's first payload as the datapath's samples deliver it: TCP segments with their
//! sequence numbers (possibly retransmitted, overlapping or out of order). (UDP keeps no
//! bytes: see `detect::marks`.) [`SideSample::stream`] puts a TCP direction back into the byte stream the detectors
//! expect: from its first byte up to the first gap.

use std::borrow::Cow;

/// What one direction has sent so far, as sampled.
///
/// Kept for every connection until it is decided or logged: one block of bytes per
/// direction. A decided connection's are [`SideSample::clear`]ed for the next one (its
/// buffer, just used, is still in cache where a new allocation would not be).
#[derive(Debug, Default, Clone)]
pub struct SideSample {
    /// Samples received (the datapath sends at most `contents::SAMPLE_PACKETS`).
    count: usize,
    /// TCP, while the samples came in order: the stream from sequence number `start` (at
    /// most `keep` bytes of it), and the sequence number after the last sample.
    start: u32,
    next: u32,
    /// That stream.
    bytes: Vec<u8>,
    /// TCP samples that did not continue the stream (reordered, or overlapping it with new
    /// bytes), put in place by [`SideSample::stream`].
    other: Vec<(u32, Vec<u8>)>,
}

impl SideSample {
    /// A TCP sample (`seq`: its first byte's sequence number); the stream is kept up to
    /// `keep` bytes.
    pub fn push_segment(&mut self, seq: u32, data: &[u8], keep: usize) {
        self.count += 1;
        let end = seq.wrapping_add(data.len() as u32);
        if self.count == 1 {
            self.start = seq;
            self.next = end;
            self.bytes.clear();
            self.bytes.extend_from_slice(&data[..data.len().min(keep)]);
            return;
        }
        if self.other.is_empty() {
            if seq == self.next {
                let room = keep.saturating_sub(self.bytes.len());
                self.bytes.extend_from_slice(&data[..data.len().min(room)]);
                self.next = end;
                return;
            }
            // A retransmission of bytes already there adds nothing.
            let within = |x: u32| x.wrapping_sub(self.start) <= self.next.wrapping_sub(self.start);
            if within(seq) && within(end) {
                return;
            }
        }
        self.other.push((seq, data.to_vec()));
    }

    /// Back to nothing sampled, the stream buffer kept for the next connection.
    pub fn clear(&mut self) {
        self.count = 0;
        self.bytes.clear();
        self.other.clear();
    }

    /// Samples received.
    pub fn count(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// TCP: the samples as (sequence number, bytes) in sequence order (relative to the first
    /// sample's), the in-order stream as one.
    pub fn in_order(&self) -> Vec<(u32, &[u8])> {
        let mut v: Vec<(u32, &[u8])> = Vec::with_capacity(1 + self.other.len());
        if self.count > 0 {
            v.push((self.start, self.bytes.as_slice()));
        }
        v.extend(self.other.iter().map(|(s, d)| (*s, d.as_slice())));
        let base = self.start;
        v.sort_by_key(|&(s, _)| s.wrapping_sub(base) as i32);
        v
    }

    /// TCP: the byte stream from the lowest sequence number sampled up to the first gap, at
    /// most `max` bytes (no more than the `keep` the samples were pushed with). Sequence
    /// numbers compare relative to the first sample's (they wrap); a retransmission adds
    /// only the bytes it has beyond what is already there. Samples that came in order (the
    /// usual case) are read in place.
    pub fn stream(&self, max: usize) -> Cow<'_, [u8]> {
        if self.other.is_empty() {
            return Cow::Borrowed(&self.bytes[..self.bytes.len().min(max)]);
        }
        // Relative to the first sample, signed: a segment sent before it (arrived later) is
        // negative.
        let base = self.start;
        let rel = |seq: u32| i64::from(seq.wrapping_sub(base) as i32);
        let order: Vec<(i64, &[u8])> = self
            .in_order()
            .into_iter()
            .map(|(s, d)| (rel(s), d))
            .collect();
        let mut out = Vec::new();
        let mut next = order[0].0;
        for (r, d) in order {
            if r > next || out.len() >= max {
                break; // a gap: the stream the detectors see ends here
            }
            let end = r + d.len() as i64;
            if end > next {
                let skip = (next - r) as usize;
                out.extend_from_slice(&d[skip..]);
                next = end;
            }
        }
        out.truncate(max);
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(parts: &[(u32, &[u8])]) -> SideSample {
        let mut s = SideSample::default();
        for (seq, d) in parts {
            s.push_segment(*seq, d, 512);
        }
        s
    }

    #[test]
    fn segments_in_order_make_the_stream() {
        let s = side(&[(1000, b"GET / HTTP/1.1\r\n"), (1016, b"Host: a\r\n\r\n")]);
        assert_eq!(&*s.stream(512), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(&*s.stream(3), b"GET");
        assert_eq!(&*side(&[(9, b"one part")]).stream(3), b"one");
        assert_eq!(s.count(), 2);
    }

    #[test]
    fn retransmissions_and_reordering_are_undone() {
        // The second segment first, then the first, then the first again with more bytes.
        let s = side(&[(5, b"world"), (0, b"hello"), (0, b"hellowor")]);
        assert_eq!(&*s.stream(512), b"helloworld");
    }

    #[test]
    fn the_stream_stops_at_a_gap() {
        let s = side(&[(100, b"abc"), (110, b"xyz")]);
        assert_eq!(&*s.stream(512), b"abc");
    }

    #[test]
    fn sequence_numbers_wrap() {
        let s = side(&[(u32::MAX - 1, b"ab"), (0, b"cd")]);
        assert_eq!(&*s.stream(512), b"abcd");
        let s = side(&[(0, b"cd"), (u32::MAX - 1, b"ab")]);
        assert_eq!(
            &*s.stream(512),
            b"abcd",
            "the earlier segment arrived second"
        );
    }

    #[test]
    fn nothing_sampled_is_an_empty_stream() {
        assert!(SideSample::default().stream(10).is_empty());
        assert!(SideSample::default().is_empty());
    }

    #[test]
    fn a_cleared_side_holds_the_next_stream_alone() {
        let mut s = SideSample::default();
        s.push_segment(0, b"first connection", 512);
        s.push_segment(100, b"out of order", 512);
        s.clear();
        assert!(s.is_empty());
        assert!(s.stream(512).is_empty());
        s.push_segment(7, b"next", 512);
        assert_eq!(&*s.stream(512), b"next");
        assert_eq!(s.count(), 1);
        assert!(
            matches!(s.stream(512), Cow::Borrowed(_)),
            "nothing left out of order"
        );
    }

    #[test]
    fn the_stream_keeps_only_what_detection_reads() {
        let mut s = SideSample::default();
        s.push_segment(0, &[b'a'; 400], 512);
        s.push_segment(400, &[b'b'; 400], 512);
        assert_eq!(s.stream(1000).len(), 512);
        // A retransmission inside the stream changes nothing and stays in place.
        s.push_segment(100, &[b'x'; 10], 512);
        assert!(matches!(s.stream(1000), Cow::Borrowed(_)));
        assert_eq!(s.count(), 3);
    }

    #[test]
    fn in_order_puts_a_late_earlier_segment_first() {
        let s = side(&[(10, b"later"), (5, b"early")]);
        let seqs: Vec<u32> = s.in_order().iter().map(|p| p.0).collect();
        assert_eq!(seqs, vec![5, 10]);
        assert_eq!(&*s.stream(512), b"earlylater");
    }
}
