//! How the tracker keeps a connection's key in its slot. A flow key is 40 bytes: two 16-byte
//! addresses, IPv4 ones in their IPv4-mapped form. Most connections are IPv4, and their key
//! packs into 16 bytes (the two addresses' 4 bytes, ports and protocol); any other key is kept
//! whole, boxed. At a million connections that is 24 MB less.

use conntrack_common::key::FlowKey;
use std::hash::Hash;

/// A key the tracker can store in a compact form and give back exactly.
pub trait SlotKey: Ord + Hash + Clone {
    type Stored: Default;
    fn store(&self) -> Self::Stored;
    fn load(stored: &Self::Stored) -> Self;
    /// `stored` holds `self` (without building the key back).
    fn is_stored_in(&self, stored: &Self::Stored) -> bool;
}

/// A `FlowKey` as a slot holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackedKey {
    /// Both addresses IPv4 (IPv4-mapped in the key), the padding zero.
    V4 {
        a: [u8; 4],
        b: [u8; 4],
        port_a: u16,
        port_b: u16,
        proto: u8,
    },
    Whole(Box<FlowKey>),
}

impl Default for PackedKey {
    fn default() -> Self {
        PackedKey::V4 {
            a: [0; 4],
            b: [0; 4],
            port_a: 0,
            port_b: 0,
            proto: 0,
        }
    }
}

const V4_MAPPED: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// The IPv4 address of an IPv4-mapped one.
fn v4_of(addr: &[u8; 16]) -> Option<[u8; 4]> {
    let (prefix, v4) = addr.split_at(12);
    if prefix != V4_MAPPED {
        return None;
    }
    v4.try_into().ok()
}

fn mapped(v4: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..12].copy_from_slice(&V4_MAPPED);
    a[12..].copy_from_slice(&v4);
    a
}

impl SlotKey for FlowKey {
    type Stored = PackedKey;

    fn store(&self) -> PackedKey {
        match (v4_of(&self.addr_a), v4_of(&self.addr_b)) {
            (Some(a), Some(b)) if self._pad0 == 0 && self._pad1 == 0 => PackedKey::V4 {
                a,
                b,
                port_a: self.port_a,
                port_b: self.port_b,
                proto: self.proto,
            },
            _ => PackedKey::Whole(Box::new(*self)),
        }
    }

    fn load(stored: &PackedKey) -> FlowKey {
        match stored {
            PackedKey::V4 {
                a,
                b,
                port_a,
                port_b,
                proto,
            } => FlowKey {
                addr_a: mapped(*a),
                addr_b: mapped(*b),
                port_a: *port_a,
                port_b: *port_b,
                proto: *proto,
                _pad0: 0,
                _pad1: 0,
            },
            PackedKey::Whole(k) => **k,
        }
    }

    fn is_stored_in(&self, stored: &PackedKey) -> bool {
        match stored {
            PackedKey::V4 {
                a,
                b,
                port_a,
                port_b,
                proto,
            } => {
                self.port_a == *port_a
                    && self.port_b == *port_b
                    && self.proto == *proto
                    && self._pad0 == 0
                    && self._pad1 == 0
                    && v4_of(&self.addr_a) == Some(*a)
                    && v4_of(&self.addr_b) == Some(*b)
            }
            PackedKey::Whole(k) => **k == *self,
        }
    }
}

/// Plain keys (the tracker's tests) are stored as they are.
impl SlotKey for u32 {
    type Stored = u32;
    fn store(&self) -> u32 {
        *self
    }
    fn load(stored: &u32) -> u32 {
        *stored
    }
    fn is_stored_in(&self, stored: &u32) -> bool {
        self == stored
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_packed_key_is_16_bytes() {
        assert_eq!(size_of::<PackedKey>(), 16);
    }

    fn key(a: [u8; 16], b: [u8; 16], pa: u16, pb: u16, proto: u8, pad: u8) -> FlowKey {
        FlowKey {
            addr_a: a,
            addr_b: b,
            port_a: pa,
            port_b: pb,
            proto,
            _pad0: pad,
            _pad1: 0,
        }
    }

    proptest! {
        /// Every key comes back exactly, is recognised in its own stored form and in no
        /// other key's: IPv4 pairs, IPv6, one of each, IPv4-compatible look-alikes.
        #[test]
        fn store_load_is_exact(
            a in proptest::array::uniform4(any::<u8>()),
            b in proptest::array::uniform4(any::<u8>()),
            other in proptest::array::uniform16(any::<u8>()),
            kind in 0u8..4,
            pa: u16, pb: u16, proto: u8, pad in prop_oneof![Just(0u8), any::<u8>()],
            flip in 0usize..16,
        ) {
            let (addr_a, addr_b) = match kind {
                0 => (mapped(a), mapped(b)),
                1 => (mapped(a), other),
                2 => (other, mapped(b)),
                _ => {
                    // An address that differs from a mapped one in one prefix byte.
                    let mut x = mapped(a);
                    x[flip % 12] ^= 0x01;
                    (x, mapped(b))
                }
            };
            let k = key(addr_a, addr_b, pa, pb, proto, pad);
            let s = k.store();
            prop_assert_eq!(FlowKey::load(&s), k);
            prop_assert!(k.is_stored_in(&s));
            let mut k2 = k;
            k2.port_b = k2.port_b.wrapping_add(1);
            prop_assert!(!k2.is_stored_in(&s));
            let mut k3 = k;
            k3.addr_a[flip] ^= 0x80;
            prop_assert!(!k3.is_stored_in(&s));
        }
    }
}
