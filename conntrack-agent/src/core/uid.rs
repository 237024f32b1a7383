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

    pub fn next_uid(&mut self) -> Uid {
        Uid::Random {
            hi: self.rng.next_u32(),
            lo: self.rng.next_u64(),
        }
    }
}

/// A connection's uid as the agent keeps it: the 96 random bits (written out only when a
/// record or a capability needs the text), or the text a predecessor agent gave it (handover,
/// boxed twice so that the common case stays 16 bytes). The text form for every connection
/// cost a heap allocation each; at a million open connections that was 56 MB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uid {
    Random { hi: u32, lo: u64 },
    Given(Box<GivenUid>),
}

/// A uid's text from elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GivenUid(String);

impl Uid {
    /// The placeholder of a connection the tracker holds before the agent names it.
    pub const UNSET: Uid = Uid::Random { hi: 0, lo: 0 };

    /// The uid as conn.log writes it.
    pub fn render(&self) -> String {
        match self {
            Uid::Random { hi, lo } => encode(prefix_char(), u64::from(*hi), *lo),
            Uid::Given(s) => s.0.clone(),
        }
    }
}

impl From<String> for Uid {
    fn from(s: String) -> Self {
        Uid::Given(Box::new(GivenUid(s)))
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

    /// conn.log's writer spells random uids itself (no `String` per record): as `render`.
    #[test]
    fn the_log_writer_spells_uids_as_render() {
        use crate::logs::conn_tsv::RecordUid;
        let mut g = UidGen::seeded(7);
        let mut cases = vec![(0, 0), (u32::MAX, u64::MAX), (1, 61), (61, 62)];
        for _ in 0..1000 {
            if let Uid::Random { hi, lo } = g.next_uid() {
                cases.push((hi, lo));
            }
        }
        for (hi, lo) in cases {
            let want = Uid::Random { hi, lo }.render();
            assert_eq!(RecordUid::Random { hi, lo }.render(), want);
        }
    }

    #[test]
    fn uid_shape() {
        let mut g = UidGen::seeded(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let u = g.next_uid().render();
            assert!(u.starts_with('C'));
            assert!(u.len() >= 3 && u.len() <= 1 + 6 + 11, "{u}");
            assert!(u[1..].bytes().all(|b| b.is_ascii_alphanumeric()), "{u}");
            assert!(seen.insert(u));
        }
    }

    #[test]
    fn a_given_uid_renders_as_given() {
        assert_eq!(
            Uid::from("CHhAvVGS1DHFjwGM9".to_string()).render(),
            "CHhAvVGS1DHFjwGM9"
        );
        assert_eq!(size_of::<Uid>(), 16);
    }

    #[test]
    fn base62_digits() {
        assert_eq!(encode('C', 0, 61), "C0z");
        assert_eq!(encode('C', 1, 62), "C110");
    }
}
