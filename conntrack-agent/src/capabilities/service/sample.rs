//! One direction's first payload as the datapath's samples deliver it: TCP segments with their
//! sequence numbers (possibly retransmitted, overlapping or out of order), UDP datagrams in
//! order. [`SideSample::stream`] puts a TCP direction back into the byte stream the detectors
//! expect: from its first byte up to the first gap.

/// What one direction has sent so far, as sampled.
#[derive(Debug, Default, Clone)]
pub struct SideSample {
    /// (TCP sequence number of the first byte, bytes); UDP: sequence 0, in arrival order.
    parts: Vec<(u32, Vec<u8>)>,
}

impl SideSample {
    /// A sample record's bytes (`seq`: its first byte's TCP sequence number).
    pub fn push(&mut self, seq: u32, data: &[u8]) {
        self.parts.push((seq, data.to_vec()));
    }

    /// Samples received (the datapath sends at most `contents::SAMPLE_PACKETS`).
    pub fn count(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// UDP: the datagrams, in arrival order, at most `max` of them.
    pub fn datagrams(&self, max: usize) -> Vec<&[u8]> {
        self.parts.iter().take(max).map(|(_, d)| d.as_slice()).collect()
    }

    /// The samples as (sequence number, bytes), in sequence order (relative to the first
    /// sample's, as [`SideSample::stream`] orders them); UDP: in arrival order.
    pub fn in_order(&self) -> Vec<(u32, &[u8])> {
        let Some(&(base, _)) = self.parts.first() else {
            return Vec::new();
        };
        let mut v: Vec<(u32, &[u8])> = self.parts.iter().map(|(s, d)| (*s, d.as_slice())).collect();
        v.sort_by_key(|&(s, _)| s.wrapping_sub(base) as i32);
        v
    }

    /// TCP: the byte stream from the lowest sequence number sampled up to the first gap, at
    /// most `max` bytes. Sequence numbers compare relative to the first sample's (they wrap);
    /// a retransmission adds only the bytes it has beyond what is already there.
    pub fn stream(&self, max: usize) -> Vec<u8> {
        let Some(&(base, _)) = self.parts.first() else {
            return Vec::new();
        };
        // Relative to the first sample, signed: a segment sent before it (arrived later) is
        // negative.
        let rel = |seq: u32| i64::from(seq.wrapping_sub(base) as i32);
        let mut order: Vec<(i64, &[u8])> = self
            .parts
            .iter()
            .map(|(s, d)| (rel(*s), d.as_slice()))
            .collect();
        order.sort_by_key(|&(r, _)| r);
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
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(parts: &[(u32, &[u8])]) -> SideSample {
        let mut s = SideSample::default();
        for (seq, d) in parts {
            s.push(*seq, d);
        }
        s
    }

    #[test]
    fn segments_in_order_make_the_stream() {
        let s = side(&[(1000, b"GET / HTTP/1.1\r\n"), (1016, b"Host: a\r\n\r\n")]);
        assert_eq!(s.stream(512), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(s.stream(3), b"GET");
        assert_eq!(s.count(), 2);
    }

    #[test]
    fn retransmissions_and_reordering_are_undone() {
        // The second segment first, then the first, then the first again with more bytes.
        let s = side(&[(5, b"world"), (0, b"hello"), (0, b"hello wor")]);
        assert_eq!(s.stream(512), b"helloworld");
    }

    #[test]
    fn the_stream_stops_at_a_gap() {
        let s = side(&[(100, b"abc"), (110, b"xyz")]);
        assert_eq!(s.stream(512), b"abc");
    }

    #[test]
    fn sequence_numbers_wrap() {
        let s = side(&[(u32::MAX - 1, b"ab"), (0, b"cd")]);
        assert_eq!(s.stream(512), b"abcd");
        let s = side(&[(0, b"cd"), (u32::MAX - 1, b"ab")]);
        assert_eq!(s.stream(512), b"abcd", "the earlier segment arrived second");
    }

    #[test]
    fn datagrams_keep_their_order_and_bound() {
        let s = side(&[(0, b"one"), (0, b"two"), (0, b"three")]);
        assert_eq!(s.datagrams(2), vec![&b"one"[..], &b"two"[..]]);
        assert!(SideSample::default().stream(10).is_empty());
    }
}
