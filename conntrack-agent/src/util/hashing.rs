//! The hasher of the agent's per-connection maps (keyed by flow key): foldhash, seeded once
//! per process.
//!
//! std's SipHash-1-3 took a fifth of `read`'s time on a 1.7 M-packet trace: every packet looks
//! its flow key up at least once, and the 40-byte key costs SipHash several rounds. foldhash
//! hashes it in a few multiplications.
//!
//! The trade-off: SipHash is a keyed PRF, so nobody can choose keys that collide without the
//! key. foldhash is not a PRF; it is seeded per process from the OS's randomness, which leaves
//! an attacker to find collisions blind, through timing alone, against a seed that changes at
//! every start. The flow keys come from the network, so this is a real surface, but a small
//! one: hashbrown probes groups of 16 slots with SIMD, so a collision cluster costs a few
//! extra comparisons per packet, not a list walk, and the kernel's table (jhash with a random
//! seed) is what a live flood reaches first.
use std::collections::{HashMap, HashSet};

/// A `HashMap` with foldhash's seeded hasher.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with foldhash's seeded hasher.
pub type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;
