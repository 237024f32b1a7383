//! The sets of names connections are decided with, interned: a decided connection keeps a
//! 4-byte [`SetId`] instead of a vector of its own, so deciding one allocates nothing.
//!
//! There are few sets (the detectors' names, in the orders they confirm them), so none is
//! ever dropped.

use crate::util::hashing::FastMap;

/// A set of service names as [`NameSets`] numbers it; [`SetId::EMPTY`] is no name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetId(u32);

impl SetId {
    pub const EMPTY: SetId = SetId(0);

    pub fn is_empty(self) -> bool {
        self == Self::EMPTY
    }

    /// As a connection's record stores it (`ThresholdTarget::set_service`).
    pub fn stored(self) -> u32 {
        self.0
    }

    /// What a connection's record stored (0: [`SetId::EMPTY`]).
    pub fn from_stored(stored: u32) -> Self {
        Self(stored)
    }
}

/// Every set of names seen so far, by id.
#[derive(Debug)]
pub struct NameSets {
    sets: Vec<Vec<&'static str>>,
    ids: FastMap<Vec<&'static str>, SetId>,
}

impl Default for NameSets {
    fn default() -> Self {
        Self {
            sets: vec![Vec::new()],
            ids: FastMap::default(),
        }
    }
}

impl NameSets {
    /// The id of `names` (in confirmation order), numbered the first time it is seen.
    pub fn id(&mut self, names: &[&'static str]) -> SetId {
        if names.is_empty() {
            return SetId::EMPTY;
        }
        if let Some(&id) = self.ids.get(names) {
            return id;
        }
        let id = SetId(self.sets.len() as u32);
        self.sets.push(names.to_vec());
        self.ids.insert(names.to_vec(), id);
        id
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
    }
}
