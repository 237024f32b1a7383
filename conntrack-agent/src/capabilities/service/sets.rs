//! The sets of names connections are decided with, interned: a decided connection keeps a
//! 4-byte [`SetId`] instead of a vector of its own, so deciding one allocates nothing.
//!
//! There are few sets (the detectors' names, in the orders they confirm them), so none is
//! ever dropped.

use super::ftp_data::Announcer;
use super::loaded::Loaded;
use crate::util::hashing::FastMap;

/// A set of service names as [`NameSets`] numbers it; [`SetId::EMPTY`] is no name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetId(u32);

impl SetId {
    pub const EMPTY: SetId = SetId(0);

    pub fn is_empty(self) -> bool {
        self == Self::EMPTY
    }

    /// As a connection's record stores it (see `tcp::Word`).
    pub fn stored(self) -> u32 {
        self.0
    }

    /// What a connection's record stored (0: [`SetId::EMPTY`]).
    pub fn from_stored(stored: u32) -> Self {
        Self(stored)
    }
}

/// Up to this many sets, [`NameSets::id`] looks for a set's literals first.
const SCAN: usize = 32;

/// Whether `a` and `b` are the same string literals (address and length), in order.
fn same_literals(a: &[&str], b: &[&str]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| std::ptr::eq(*x, *y))
}

/// Every set of names seen so far, by id.
#[derive(Debug)]
pub struct NameSets {
    sets: Vec<Vec<&'static str>>,
    ids: FastMap<Vec<&'static str>, SetId>,
    /// Per set, whether this run logs it (see [`NameSets::logged`]), once asked.
    logged: Vec<Option<bool>>,
    /// Per set, the control channel it makes a connection ([`Announcer::of`]).
    channel: Vec<Option<Announcer>>,
}

impl Default for NameSets {
    fn default() -> Self {
        Self {
            sets: vec![Vec::new()],
            ids: FastMap::default(),
            logged: vec![Some(false)],
            channel: vec![None],
        }
    }
}

impl NameSets {
    /// The id of `names` (in confirmation order), numbered the first time it is seen.
    pub fn id(&mut self, names: &[&'static str]) -> SetId {
        if names.is_empty() {
            return SetId::EMPTY;
        }
        // A detector names its protocol with the same literal every time: while the sets are
        // few, one is found by its names' addresses, without hashing them.
        if self.sets.len() <= SCAN
            && let Some(i) = self.sets.iter().position(|s| same_literals(s, names))
        {
            return SetId(i as u32);
        }
        if let Some(&id) = self.ids.get(names) {
            return id;
        }
        let id = SetId(self.sets.len() as u32);
        self.sets.push(names.to_vec());
        self.logged.push(None);
        self.channel.push(Announcer::of(names));
        self.ids.insert(names.to_vec(), id);
        id
    }

    /// Whether a run with the analyzers `loaded` logs set `id` ([`Loaded::logs`]), worked out
    /// once per set.
    pub fn logged(&mut self, id: SetId, loaded: &mut Loaded) -> bool {
        let i = id.0 as usize;
        *self.logged[i].get_or_insert_with(|| loaded.logs(&self.sets[i]))
    }

    /// The control channel a connection decided as set `id` is, if any: worked out once per
    /// set (every connection's first exchange asks).
    pub fn channel(&self, id: SetId) -> Option<Announcer> {
        self.channel[id.0 as usize]
    }

    /// The names of set `id`.
    pub fn names(&self, id: SetId) -> &[&'static str] {
        &self.sets[id.0 as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_gets_one_id_and_keeps_its_order() {
        let mut sets = NameSets::default();
        let http = sets.id(&["http"]);
        let upgraded = sets.id(&["http", "websocket", "ssh"]);
        assert_ne!(http, upgraded);
        assert_eq!(sets.id(&["http"]), http);
        assert_eq!(sets.names(upgraded), ["http", "websocket", "ssh"]);
        assert_ne!(sets.id(&["ssl", "quic"]), sets.id(&["quic", "ssl"]));
        assert_eq!(sets.id(&[]), SetId::EMPTY);
        assert!(sets.names(SetId::EMPTY).is_empty());
        assert!(!http.is_empty());
        // Found again from other strings with the same names.
        let (h, w, s) = (
            String::from("http"),
            String::from("websocket"),
            String::from("ssh"),
        );
        let names: Vec<&'static str> = [h, w, s].map(|n| &*n.leak()).to_vec();
        assert_eq!(sets.id(&names), upgraded);
    }

    #[test]
    fn a_set_is_logged_when_one_of_its_analyzers_is_loaded() {
        let mut sets = NameSets::default();
        let mut loaded = Loaded::new(&[(80, conntrack_common::proto::TCP)]);
        let http = sets.id(&["http", "websocket"]);
        let dns = sets.id(&["dns"]);
        assert!(sets.logged(http, &mut loaded));
        assert!(!sets.logged(dns, &mut loaded));
        assert!(!sets.logged(SetId::EMPTY, &mut loaded));
    }
}
