//! Zeek's connection history string (`c$history`): one letter per notable event, upper case
//! for the originator and lower case for the responder, judged when the letter is added.
//!
//! Storage is fixed-size ([`HISTORY_CAP`] letters); letters past the capacity are dropped (Zeek's
//! string is unbounded, but every letter except S/H/F/R repeats and the logarithmic C/T/W/G is
//! added at most once per direction, so real histories are far shorter).

/// Maximum number of history letters kept.
pub const HISTORY_CAP: usize = 48;

/// "Seen" bits, one per once-per-direction letter kind. The responder's bits are these shifted
/// left by 16 (as in Zeek's `hist_seen`).
pub mod mask {
    /// S or H (SYN, SYN+ACK share one bit).
    pub const SYN: u32 = 1 << 0;
    /// F
    pub const FIN: u32 = 1 << 1;
    /// R
    pub const RST: u32 = 1 << 2;
    /// I (FIN+RST)
    pub const FIN_RST: u32 = 1 << 3;
    /// D (TCP data, UDP valid packet)
    pub const DATA: u32 = 1 << 4;
    /// A (pure ACK)
    pub const ACK: u32 = 1 << 5;
    /// Q (SYN+FIN, SYN+RST, ...)
    pub const MULTI_FLAG: u32 = 1 << 6;
}

/// Fixed-size history letters plus the per-direction "seen" bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct History {
    /// Letters; only the first `len` are valid.
    pub letters: [u8; HISTORY_CAP],
    /// Number of valid letters.
    pub len: u8,
    /// Explicit padding, always zero.
    pub _pad: [u8; 3],
    /// Seen bits: originator in bits 0..16, responder in bits 16..32.
    pub seen: u32,
}

impl Default for History {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// Lower-cases `letter` for the responder.
#[inline(always)]
fn dir_letter(letter: u8, is_orig: bool) -> u8 {
    if is_orig {
        letter
    } else {
        letter.to_ascii_lowercase()
    }
}

/// True for 1, 10, 100, ...: the occurrences at which Zeek adds a logarithmic letter
/// (`Session::ScaledHistoryEntry` with base 10).
#[inline(always)]
pub fn is_power_of_ten(n: u32) -> bool {
    let mut p: u32 = 1;
    let mut i = 0;
    while i < 10 {
        if n == p {
            return true;
        }
        p = p.wrapping_mul(10);
        i += 1;
    }
    false
}

impl History {
    /// The empty history.
    pub const EMPTY: History = History {
        letters: [0; HISTORY_CAP],
        len: 0,
        _pad: [0; 3],
        seen: 0,
    };

    /// The letters as a byte string (ASCII).
    #[inline(always)]
    pub fn as_bytes(&self) -> &[u8] {
        self.letters.get(..self.len as usize).unwrap_or(&[])
    }

    /// Appends a raw letter (no case change); dropped when full.
    #[inline(always)]
    pub fn push(&mut self, letter: u8) {
        if let Some(slot) = self.letters.get_mut(self.len as usize) {
            *slot = letter;
            self.len += 1;
        }
    }

    /// Appends `letter` in the case of the direction.
    #[inline(always)]
    pub fn add(&mut self, letter: u8, is_orig: bool) {
        self.push(dir_letter(letter, is_orig));
    }

    /// Zeek's `CheckHistory`: if the letter kind `mask` was not yet seen in this direction,
    /// records it and appends the letter, returning false; returns true if it was already seen.
    #[inline(always)]
    pub fn check(&mut self, mask: u32, letter: u8, is_orig: bool) -> bool {
        let m = if is_orig { mask } else { mask << 16 };
        if self.seen & m != 0 {
            return true;
        }
        self.seen |= m;
        self.add(letter, is_orig);
        false
    }

    /// Counts one occurrence of a logarithmic letter (C, T, W, G) in `counter` and appends the
    /// letter at the 1st, 10th, 100th, ... occurrence. Returns true when a letter was added.
    #[inline(always)]
    pub fn scaled(&mut self, counter: &mut u32, letter: u8, is_orig: bool) -> bool {
        *counter = counter.saturating_add(1);
        if is_power_of_ten(*counter) {
            self.add(letter, is_orig);
            return true;
        }
        false
    }

    /// Exchanges the originator and responder seen bits (part of a role flip).
    #[inline(always)]
    pub fn swap_seen(&mut self) {
        self.seen = self.seen.rotate_left(16);
    }

    /// A role flip: appends `^` and swaps the seen bits (`Connection::FlipRoles`).
    #[inline(always)]
    pub fn flip(&mut self) {
        self.push(b'^');
        self.swap_seen();
    }

    /// True if the history is exactly `s`.
    #[inline(always)]
    pub fn is(&self, s: &[u8]) -> bool {
        self.as_bytes() == s
    }

    /// True if the history is the single letter `letter` (as `is`, without a slice compare,
    /// which BPF turns into a `memcmp` call).
    #[inline(always)]
    pub fn is_single(&self, letter: u8) -> bool {
        self.len == 1 && self.letters[0] == letter
    }

    /// The flip after a SYN-ACK-first start: the history `H` is rewritten as `^h`, as if the
    /// connection had been flipped before the SYN-ACK was seen.
    #[inline(always)]
    pub fn rewrite_syn_ack_flip(&mut self) {
        self.letters[0] = b'^';
        self.letters[1] = b'h';
        self.len = 2;
        self.swap_seen();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_ten_are_recognised() {
        let hits: std::vec::Vec<u32> = (0..2000).filter(|&n| is_power_of_ten(n)).collect();
        assert_eq!(hits, [1, 10, 100, 1000]);
        assert!(is_power_of_ten(1_000_000_000));
    }

    #[test]
    fn once_per_direction_letters_and_case() {
        let mut h = History::EMPTY;
        assert!(!h.check(mask::DATA, b'D', true));
        assert!(h.check(mask::DATA, b'D', true));
        assert!(!h.check(mask::DATA, b'D', false));
        assert_eq!(h.as_bytes(), b"Dd");
    }

    #[test]
    fn scaled_letters_at_1_10_100() {
        let mut h = History::EMPTY;
        let mut c = 0;
        for _ in 0..100 {
            h.scaled(&mut c, b'T', false);
        }
        assert_eq!(h.as_bytes(), b"ttt");
    }

    #[test]
    fn flip_appends_caret_and_swaps_seen_bits() {
        let mut h = History::EMPTY;
        h.check(mask::SYN, b'H', true);
        h.flip();
        assert_eq!(h.as_bytes(), b"H^");
        assert!(h.check(mask::SYN, b'S', false));
        assert!(!h.check(mask::SYN, b'S', true));
    }

    #[test]
    fn syn_ack_flip_rewrites_h() {
        let mut h = History::EMPTY;
        h.check(mask::SYN, b'H', true);
        h.rewrite_syn_ack_flip();
        assert_eq!(h.as_bytes(), b"^h");
        assert!(h.check(mask::SYN, b'H', false));
    }

    #[test]
    fn letters_past_capacity_are_dropped() {
        let mut h = History::EMPTY;
        for _ in 0..100 {
            h.push(b'x');
        }
        assert_eq!(h.as_bytes().len(), HISTORY_CAP);
    }
}
