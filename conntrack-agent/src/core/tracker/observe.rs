//! The tracker's side of a connection's events ([`Tracker::observe`]): the connection's slot
//! (one lookup of its key), then the timers Zeek's TCP adapter arms as the endpoints move.

use super::*;

/// The timers one event arms, collected while the entry is borrowed.
#[derive(Default)]
struct Pushes {
    items: [(i64, Kind, u32, u8); 4],
    n: usize,
}

impl Pushes {
    fn push(&mut self, item: (i64, Kind, u32, u8)) {
        self.items[self.n] = item;
        self.n += 1;
    }

    fn as_slice(&self) -> &[(i64, Kind, u32, u8)] {
        &self.items[..self.n]
    }
}

impl<K: SlotKey> Tracker<K> {
    /// Reports a connection after a packet changed it (or created it: `is_new`).
    /// `established`: Zeek's connection_established has happened (acted on once). Returns true
    /// the first time `established` is seen for this connection.
    pub fn observe(
        &mut self,
        key: &K,
        v: &ConnView,
        pkt_ns: i64,
        is_new: bool,
        established: bool,
    ) -> bool {
        self.observe_named(key, v, pkt_ns, is_new, established, || Uid::UNSET)
            .newly_established
    }

    /// [`Tracker::observe`], giving a connection the tracker adds (`fresh`: new, or not
    /// known before) the uid `uid` makes. One lookup of the key for all of it: the agent did
    /// five for a new connection (knows, the insert's remove and insert, the slot again,
    /// set_uid) and three for a change.
    #[inline]
    pub fn observe_named(
        &mut self,
        key: &K,
        v: &ConnView,
        pkt_ns: i64,
        is_new: bool,
        established: bool,
        uid: impl FnOnce() -> Uid,
    ) -> Observed {
        let now = self.network_time.max(pkt_ns);
        let (slot, fresh) = self.slot_for(key, is_new);
        if fresh {
            let inactivity = self.base_inactivity(v.proto);
            self.slots[slot as usize].entry = Entry {
                uid_hi: 0,
                uid_lo: 0,
                orig_state: INACTIVE,
                resp_state: INACTIVE,
                orig: orig_tag(&v.orig_addr, v.orig_port),
                flags: 0,
                inactivity,
                close_at: NO_CLOSE,
                service: 0,
            };
            let stamp = &mut self.stamps[slot as usize];
            stamp.epoch = 0;
            let generation = stamp.generation;
            self.put_uid(slot, uid());
            // Session inactivity timer at last_time + timeout; TCP ExpireTimer at
            // network_time + tcp_SYN_timeout.
            self.push(
                v.last_ns.max(pkt_ns) + inactivity,
                Kind::Inactivity,
                slot,
                generation,
                0,
            );
            if v.proto == TCP {
                let at = now + self.t.tcp_syn_timeout;
                self.push(at, Kind::Expire, slot, generation, 0);
            } else if v.dns_analyzer && self.t.dns_session_timeout > 0 {
                // The DNS analyzer's expire timer, armed when it is attached (at creation).
                let at = now + self.t.dns_session_timeout;
                self.push(at, Kind::DnsExpire, slot, generation, 0);
            }
        }
        let newly_established = v.proto == TCP && self.observe_tcp(slot, v, pkt_ns, established);
        Observed {
            fresh,
            newly_established,
        }
    }

    /// `key`'s slot, and whether it is a new one: a connection the tracker did not know, or
    /// `replace` (a new connection of the same key: the old one is removed, its timers void,
    /// its service word kept for [`Tracker::take_replaced_service`]). A new slot's entry is
    /// the caller's to set.
    fn slot_for(&mut self, key: &K, replace: bool) -> (u32, bool) {
        let h = self.hasher.hash_one(key);
        let (slots, hasher) = (&self.slots, &self.hasher);
        let found = self.index.entry(
            h,
            |&i| {
                slots
                    .get(i as usize)
                    .is_some_and(|s| key.is_stored_in(&s.key))
            },
            |&i| hasher.hash_one(K::load(&slots[i as usize].key)),
        );
        match found {
            hashbrown::hash_table::Entry::Occupied(o) => {
                let slot = *o.get();
                if replace {
                    // As removing it and adding it again (the freed slot would be the next
                    // one taken), with its generation moved on; the key stays.
                    self.replaced_service = self.release(slot).service;
                }
                (slot, replace)
            }
            hashbrown::hash_table::Entry::Vacant(vac) => {
                let slot = match self.free.pop() {
                    Some(i) => {
                        self.slots[i as usize].key = key.store();
                        i
                    }
                    None => {
                        self.slots.push(Slot {
                            key: key.store(),
                            entry: Entry::unused(),
                        });
                        self.stamps.push(Stamp::default());
                        (self.slots.len() - 1) as u32
                    }
                };
                vac.insert(slot);
                (slot, true)
            }
        }
    }

    /// The TCP part of [`Tracker::observe`] for the connection in `slot`.
    fn observe_tcp(&mut self, slot: u32, v: &ConnView, pkt_ns: i64, established: bool) -> bool {
        let mut newly_established = false;
        let t = &self.t;
        // At most four: attempt, inactivity, one close per side (no allocation per event).
        let mut pushes = Pushes::default();
        {
            let e = &mut self.slots[slot as usize].entry;
            let stamp = &mut self.stamps[slot as usize];
            // A flip swaps the endpoints.
            let orig = orig_tag(&v.orig_addr, v.orig_port);
            if e.orig != orig {
                std::mem::swap(&mut e.orig_state, &mut e.resp_state);
                e.flags = swap_sides(e.flags);
                e.orig = orig;
            }
            let (o0, r0) = (e.orig_state, e.resp_state);
            let (o1, r1) = (v.orig_state, v.resp_state);
            // A timeout of 0 (set through the API) ended the timer chain: a new value restarts it.
            let inactivity_before = e.inactivity;

            // Attempt timer: the originator's SYN moved it out of INACTIVE.
            if o0 == INACTIVE && matches!(o1, SYN_SENT | SYN_ACK_SENT) && t.tcp_attempt_delay > 0 {
                pushes.push((
                    pkt_ns + t.tcp_attempt_delay,
                    Kind::Attempt,
                    stamp.generation,
                    stamp.epoch,
                ));
            }
            // tcp_inactivity_timeout once the handshake is left.
            if is_handshake(o0) && is_handshake(r0) && (!is_handshake(o1) || !is_handshake(r1)) {
                e.inactivity = t.tcp_inactivity;
            }
            if established && e.flags & ESTABLISHED == 0 {
                e.flags |= ESTABLISHED;
                newly_established = true;
                if let Some((_, to)) = t
                    .tcp_port_inactivity
                    .iter()
                    .find(|(p, _)| *p == v.resp_port)
                {
                    e.inactivity = *to;
                }
            }
            if inactivity_before <= 0 && e.inactivity > 0 {
                pushes.push((
                    v.last_ns + e.inactivity,
                    Kind::Inactivity,
                    stamp.generation,
                    0,
                ));
            }
            // ConnectionClosed for an endpoint that just went to CLOSED or RESET.
            for side in 0..2 {
                let (old, new, peer_new) = if side == 0 {
                    (o0, o1, r1)
                } else {
                    (r0, r1, o1)
                };
                if old == new || !matches!(new, CLOSED | RESET) || e.did_close(side) {
                    continue;
                }
                e.flags |= DID_CLOSE_ORIG << side;
                let close_complete = new == RESET || e.did_close(1 - side) || peer_new == INACTIVE;
                if close_complete {
                    stamp.epoch = stamp.epoch.wrapping_add(1); // CancelTimers
                    let at = v.last_ns + t.tcp_close_delay;
                    e.close_at = at;
                    pushes.push((at, Kind::CloseDelete, stamp.generation, stamp.epoch));
                } else if old != INACTIVE {
                    pushes.push((
                        v.last_ns + t.tcp_session_timer,
                        Kind::Expire,
                        stamp.generation,
                        stamp.epoch,
                    ));
                }
            }
            e.orig_state = o1;
            e.resp_state = r1;
        }
        for &(at, kind, generation, epoch) in pushes.as_slice() {
            self.push(at, kind, slot, generation, epoch);
        }
        newly_established
    }
}
