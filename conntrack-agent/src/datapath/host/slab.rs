//! The host engine's flow table: connections in a slab (a `Vec` of key and `Conn`), found
//! through a hash index of slot numbers.
//!
//! A `HashMap<FlowKey, Conn>` keeps 520-byte entries in its buckets: every insert wrote one
//! into a cold bucket, every removal moved one out, every growth moved them all, and its
//! memory was fresh pages each time. Here the index holds 4 bytes per connection (small
//! enough to stay in cache while it is probed), growth moves only those, and a new connection
//! takes the slot freed last: a removal has just read that slot to log it, so the insert
//! writes warm memory.

use conntrack_common::conn::Conn;
use conntrack_common::engine::FlowTable;
use conntrack_common::key::FlowKey;
use hashbrown::HashTable;
use std::hash::BuildHasher;

/// A connection and its key (the index compares keys here: it holds none itself), and the
/// service capability's word for it (`Datapath::service_word`), here where the packet that
/// carried a sample has just brought the slot into the cache.
struct Slot {
    key: FlowKey,
    conn: Conn,
    service: u32,
}

/// Flow key to connection, as a map would do it; see the module's comment for why not a map.
pub struct FlowSlab {
    /// Slot numbers, hashed by their slot's key.
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    slots: Vec<Slot>,
    /// Slots of removed connections, the last freed taken first. A free slot keeps its old
    /// contents until then; only `index` says which slots are live.
    free: Vec<u32>,
    /// The slot the last packet's update found or filled (live, or [`NO_SLOT`]): what the
    /// agent asks of that packet's connection next (its sample's service word, an end to
    /// its sampling) is read there without hashing its key again.
    last: u32,
}

const NO_SLOT: u32 = u32::MAX;

impl Default for FlowSlab {
    fn default() -> Self {
        Self {
            index: HashTable::default(),
            hasher: foldhash::fast::RandomState::default(),
            slots: Vec::new(),
            free: Vec::new(),
            last: NO_SLOT,
        }
    }
}

impl FlowSlab {
    /// Connections held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The slot of `key`, if it is held. Every line of a candidate slot is asked for before
    /// its key is compared: the table is larger than the caches, so the packet's update would
    /// otherwise miss line after line as it reaches each field.
    fn find(&self, key: &FlowKey) -> Option<u32> {
        let h = self.hasher.hash_one(key);
        let slots = &self.slots;
        self.index
            .find(h, |&i| {
                slots.get(i as usize).is_some_and(|s| {
                    prefetch_slot(s);
                    s.key == *key
                })
            })
            .copied()
    }

    pub fn get(&self, key: &FlowKey) -> Option<&Conn> {
        let i = self.find(key)?;
        self.slots.get(i as usize).map(|s| &s.conn)
    }

    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Conn> {
        let i = self.find(key)?;
        self.last = i;
        self.slots.get_mut(i as usize).map(|s| &mut s.conn)
    }

    /// The slot of `key`: the last one found ([`FlowSlab::last`]) if it is `key`'s, else
    /// found by its hash.
    fn find_again(&self, key: &FlowKey) -> Option<u32> {
        match self.slots.get(self.last as usize) {
            Some(s) if s.key == *key => Some(self.last),
            _ => self.find(key),
        }
    }

    /// [`FlowSlab::get_mut`] for the connection of the packet just updated.
    pub fn get_mut_again(&mut self, key: &FlowKey) -> Option<&mut Conn> {
        let i = self.find_again(key)?;
        self.slots.get_mut(i as usize).map(|s| &mut s.conn)
    }

    /// Stores `conn` under `key` unless `key` is held already (then it is left as it is).
    /// Returns the connection stored under `key`.
    pub fn insert_if_absent(&mut self, key: &FlowKey, conn: &Conn) -> &mut Conn {
        let h = self.hasher.hash_one(key);
        let (slots, hasher) = (&self.slots, &self.hasher);
        let entry = self.index.entry(
            h,
            |&i| slots.get(i as usize).is_some_and(|s| s.key == *key),
            // Growth rehashes from the slots (the index keeps no hashes): one read of each
            // key, a few times in the table's life.
            |&i| hasher.hash_one(slots[i as usize].key),
        );
        let i = match entry {
            hashbrown::hash_table::Entry::Occupied(o) => *o.get(),
            hashbrown::hash_table::Entry::Vacant(vac) => {
                let i = match self.free.pop() {
                    Some(i) => {
                        let s = &mut self.slots[i as usize];
                        s.key = *key;
                        s.conn = *conn;
                        s.service = 0;
                        i
                    }
                    None => {
                        let i = u32::try_from(self.slots.len())
                            .expect("fewer than 2^32 connections in the host table");
                        self.slots.push(Slot {
                            key: *key,
                            conn: *conn,
                            service: 0,
                        });
                        i
                    }
                };
                vac.insert(i);
                i
            }
        };
        self.last = i;
        &mut self.slots[i as usize].conn
    }

    /// The service word stored with `key`'s connection.
    pub fn service_mut(&mut self, key: &FlowKey) -> Option<&mut u32> {
        let i = self.find_again(key)?;
        self.slots.get_mut(i as usize).map(|s| &mut s.service)
    }

    /// Takes `key`'s connection out, with its service word; its slot is the next one reused.
    pub fn remove(&mut self, key: &FlowKey) -> Option<(Conn, u32)> {
        let h = self.hasher.hash_one(key);
        let slots = &self.slots;
        let (i, _) = self
            .index
            .find_entry(h, |&i| slots.get(i as usize).is_some_and(|s| s.key == *key))
            .ok()?
            .remove();
        self.free.push(i);
        if self.last == i {
            self.last = NO_SLOT;
        }
        self.slots.get(i as usize).map(|s| (s.conn, s.service))
    }

    /// Every key held, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &FlowKey> {
        self.index
            .iter()
            .filter_map(|&i| self.slots.get(i as usize).map(|s| &s.key))
    }
}

/// Starts loading every cache line of `slot` (a hint: no effect on any result).
#[inline(always)]
fn prefetch_slot(slot: &Slot) {
    #[cfg(target_arch = "x86_64")]
    {
        let p: *const u8 = (slot as *const Slot).cast();
        for off in (0..size_of::<Slot>()).step_by(64) {
            // SAFETY: a prefetch only hints the cache; the address is inside `slot`.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    p.add(off).cast(),
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

impl FlowTable for FlowSlab {
    fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Conn> {
        FlowSlab::get_mut(self, key)
    }

    fn insert(&mut self, key: &FlowKey, conn: &Conn) -> bool {
        self.insert_if_absent(key, conn);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn key(n: u32) -> FlowKey {
        let mut k = FlowKey::default();
        k.addr_a[12..].copy_from_slice(&n.to_be_bytes());
        k.addr_b[15] = 1;
        k.port_a = n as u16;
        k.proto = 6;
        k
    }

    fn conn(n: u64) -> Conn {
        let mut c = Conn::ZERO;
        c.start_ns = n;
        c.last_ns = n + 1;
        c
    }

    /// Inserts, updates and removals in an order that reuses slots while others stay: the
    /// slab answers every lookup as a `HashMap` given the same operations does.
    #[test]
    fn behaves_as_a_map() {
        let mut slab = FlowSlab::default();
        let mut map: HashMap<FlowKey, Conn> = HashMap::new();
        // A small LCG picks the operations: deterministic, and mixed enough to reuse slots.
        let mut x = 12345u64;
        for step in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = key((x >> 33) as u32 % 500);
            match (x >> 20) % 4 {
                0 | 1 => {
                    let c = conn(step);
                    slab.insert_if_absent(&k, &c);
                    map.entry(k).or_insert(c);
                }
                2 => assert_eq!(
                    slab.remove(&k).map(|(c, _)| c.start_ns),
                    map.remove(&k).map(|c| c.start_ns)
                ),
                _ => {
                    if let (Some(a), Some(b)) = (slab.get_mut(&k), map.get_mut(&k)) {
                        a.last_ns += step;
                        b.last_ns += step;
                    }
                }
            }
            assert_eq!(slab.len(), map.len());
            // The last packet's connection is found again without its hash, and a key just
            // removed is not.
            assert_eq!(
                slab.get_mut_again(&k).map(|c| c.start_ns),
                map.get(&k).map(|c| c.start_ns)
            );
        }
        for k in (0..500).map(key) {
            assert_eq!(
                slab.get(&k).map(|c| (c.start_ns, c.last_ns)),
                map.get(&k).map(|c| (c.start_ns, c.last_ns))
            );
        }
        let mut got: Vec<FlowKey> = slab.keys().copied().collect();
        let mut want: Vec<FlowKey> = map.keys().copied().collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    /// An insert under a key held already keeps the connection there (the engine's
    /// `FlowTable::insert` contract: a race on eBPF leaves the first value).
    #[test]
    fn insert_keeps_an_existing_connection() {
        let mut slab = FlowSlab::default();
        slab.insert_if_absent(&key(1), &conn(10));
        let kept = slab.insert_if_absent(&key(1), &conn(20)).start_ns;
        assert_eq!(kept, 10);
        assert_eq!(slab.len(), 1);
    }

    /// A removed connection's slot goes to the next new one, and the removed key is gone.
    #[test]
    fn removal_frees_the_slot_for_the_next_insert() {
        let mut slab = FlowSlab::default();
        for n in 0..3 {
            slab.insert_if_absent(&key(n), &conn(n as u64));
        }
        assert_eq!(slab.remove(&key(1)).map(|(c, _)| c.start_ns), Some(1));
        assert!(slab.get(&key(1)).is_none());
        assert!(slab.remove(&key(1)).is_none());
        slab.insert_if_absent(&key(7), &conn(7));
        assert_eq!(slab.slots.len(), 3, "the freed slot was reused");
        assert_eq!(slab.get(&key(7)).map(|c| c.start_ns), Some(7));
        assert_eq!(slab.get(&key(2)).map(|c| c.start_ns), Some(2));
    }

    /// The service word goes out with its connection, and a new connection in the freed
    /// slot starts without one.
    #[test]
    fn the_service_word_leaves_with_its_connection() {
        let mut slab = FlowSlab::default();
        slab.insert_if_absent(&key(1), &conn(1));
        assert_eq!(slab.service_mut(&key(1)).map(|w| *w), Some(0));
        *slab.service_mut(&key(1)).unwrap() = 0xabc;
        assert!(slab.service_mut(&key(2)).is_none());
        assert_eq!(slab.remove(&key(1)).map(|(_, w)| w), Some(0xabc));
        slab.insert_if_absent(&key(2), &conn(2));
        assert_eq!(slab.slots.len(), 1, "the freed slot was reused");
        assert_eq!(slab.service_mut(&key(2)).map(|w| *w), Some(0));
    }
}
