//! Zeek-style connection uids: `C` followed by the base62 form of 96 random bits.

use rand::RngCore;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Source of uids. Random by default; `seeded` gives a reproducible sequence (tests).
pub struct UidGen {
    rng: rand::rngs::StdRng,
}

impl UidGen {
    pub fn new() -> Self {
        use rand::SeedableRng;
        Self {
            rng: rand::rngs::StdRng::from_os_rng(),
        }
    }

    #[cfg(test)]
    pub fn seeded(seed: u64) -> Self {
        use rand::SeedableRng;
        Self {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    pub fn next_uid(&mut self) -> String {
        let hi = u64::from(self.rng.next_u32());
        let lo = self.rng.next_u64();
        encode(prefix_char(), hi, lo)
    }
}

impl Default for UidGen {
    fn default() -> Self {
        Self::new()
    }
}

fn prefix_char() -> char {
    'C'
}

/// Base62 of a 96-bit value given as (high 32 bits, low 64 bits), most significant digit first,
/// like Zeek's `uitoa_n` applied to each 64-bit word in turn.
fn encode(prefix: char, hi: u64, lo: u64) -> String {
    let mut s = String::with_capacity(24);
    s.push(prefix);
    // Zeek renders the uid from two 64-bit words; we keep the same shape: first word then second.
    push_base62(&mut s, hi);
    push_base62(&mut s, lo);
    s
}

fn push_base62(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 11];
    let mut n = 0;
    loop {
        buf[n] = ALPHABET[(v % 62) as usize];
        n += 1;
        v /= 62;
        if v == 0 {
            break;
        }
    }
    for i in (0..n).rev() {
        out.push(buf[i] as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_shape() {
        let mut g = UidGen::seeded(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let u = g.next_uid();
            assert!(u.starts_with('C'));
            assert!(u.len() >= 3 && u.len() <= 1 + 6 + 11, "{u}");
            assert!(u[1..].bytes().all(|b| b.is_ascii_alphanumeric()), "{u}");
            assert!(seen.insert(u));
        }
    }

    #[test]
    fn base62_digits() {
        assert_eq!(encode('C', 0, 61), "C0z");
        assert_eq!(encode('C', 1, 62), "C110");
    }
}
