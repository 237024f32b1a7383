//! Removal hooks (Zeek's `base/protocols/conn/removal-hooks.zeek`): code that runs once when
//! one chosen connection is removed, whatever the reason, with its final state.
//!
//! A capability registers a hook on the connections it cares about through the
//! [`ConnHandle`]; the hook runs after every capability has seen `Removed` (Zeek runs them
//! from `connection_state_remove` at a low priority). Hooks are kept per connection in a map
//! that is empty, and costs one emptiness check per event, while no connection has one.
//!
//! "The same hook" is the same [`RemovalHook`] value (clones share identity), so a capability
//! makes its hook once and registers clones of it:
//!
//! ```ignore
//! let hook = RemovalHook::new(|conn, why| println!("{} removed: {}", conn.uid(), why.as_str()));
//! // in on_event, for a connection of interest:
//! conn.register_removal_hook(&hook); // true the first time, false after
//! ```

use crate::core::events::{ConnHandle, ConnInfo, RemovalReason};
use crate::util::hashing::FastMap;
use conntrack_common::conn::Conn;
use conntrack_common::key::FlowKey;
use smallvec::SmallVec;
use std::rc::Rc;

type HookFn = dyn Fn(&mut ConnHandle<'_>, RemovalReason);

/// A removal hook: a callback with an identity.
#[derive(Clone)]
pub struct RemovalHook(Rc<HookFn>);

impl RemovalHook {
    pub fn new(f: impl Fn(&mut ConnHandle<'_>, RemovalReason) + 'static) -> Self {
        Self(Rc::new(f))
    }

    /// Same hook: made by the same `new` (compares the allocation, not the vtable).
    pub fn same(&self, other: &RemovalHook) -> bool {
        std::ptr::addr_eq(Rc::as_ptr(&self.0), Rc::as_ptr(&other.0))
    }

    pub(crate) fn call(&self, conn: &mut ConnHandle<'_>, reason: RemovalReason) {
        (self.0)(conn, reason)
    }
}

impl std::fmt::Debug for RemovalHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemovalHook({:p})", Rc::as_ptr(&self.0))
    }
}

/// A connection's hooks in registration order: one inline (the common case, a capability
/// that hooks every connection), more on the heap.
pub(crate) type Hooks = SmallVec<[RemovalHook; 1]>;

struct Registered {
    hooks: Hooks,
    /// The connection as of the latest event delivered to the capabilities (state changes
    /// only when one of them wants those): what the hooks get if the datapath loses it. The
    /// event's own `ConnInfo`, shared: keeping it is a reference count, where a copy of the
    /// whole `Conn` per event was most of what a hook on every connection cost.
    last: Rc<ConnInfo>,
}

/// The hooks registered per connection.
#[derive(Default)]
pub struct RemovalHooks {
    /// Inline: a `Registered` is two words and a hook.
    by_conn: FastMap<FlowKey, Registered>,
}

impl RemovalHooks {
    /// Keeps the latest state of a connection that has hooks.
    /// Returns the state it kept before (for reuse).
    pub(crate) fn saw(&mut self, info: &Rc<ConnInfo>) -> Option<Rc<ConnInfo>> {
        if self.by_conn.is_empty() {
            return None;
        }
        let r = self.by_conn.get_mut(&info.key)?;
        let now = latest(&r.last, info);
        Some(std::mem::replace(&mut r.last, now))
    }

    /// What [`RemovalHooks::saw`] of an event nobody handles does, without the event: the
    /// connection's kept state becomes what `fill` writes (its uid stays the one registered,
    /// as `latest` keeps it), as of `ts_ns`. Written in place when nothing else holds the
    /// state (the common case: the event that registered the hooks is long delivered).
    pub(crate) fn refresh(
        &mut self,
        key: &FlowKey,
        ts_ns: u64,
        fill: impl FnOnce(&mut Conn) -> bool,
    ) {
        if self.by_conn.is_empty() {
            return;
        }
        let Some(r) = self.by_conn.get_mut(key) else {
            return;
        };
        let info = match Rc::get_mut(&mut r.last) {
            Some(info) => info,
            None => {
                let mut fresh = ConnInfo::clone(&r.last);
                if !fill(&mut fresh.conn) {
                    return;
                }
                fresh.ts_ns = ts_ns;
                r.last = Rc::new(fresh);
                return;
            }
        };
        if fill(&mut info.conn) {
            info.ts_ns = ts_ns;
        }
    }

    /// Removes and returns a connection's hooks (registration order) and its last state.
    pub(crate) fn take(&mut self, key: &FlowKey) -> Option<(Rc<ConnInfo>, Hooks)> {
        if self.by_conn.is_empty() {
            return None;
        }
        self.by_conn.remove(key).map(|r| (r.last, r.hooks))
    }

    /// True if connection `key` has hooks.
    pub(crate) fn has(&self, key: &FlowKey) -> bool {
        !self.by_conn.is_empty() && self.by_conn.contains_key(key)
    }

    /// Connections with hooks.
    pub(crate) fn len(&self) -> usize {
        self.by_conn.len()
    }
}

/// What a connection registered as `last` keeps after the event `now`: the event's state and
/// time with the uid it was registered with (a reuse removes the hooks first, so the two agree
/// but for an event whose uid was not known; that one gets a copy).
fn latest(last: &Rc<ConnInfo>, now: &Rc<ConnInfo>) -> Rc<ConnInfo> {
    if last.uid.same(&now.uid) {
        return Rc::clone(now);
    }
    let mut info = ConnInfo::clone(now);
    info.uid.clone_from(&last.uid);
    Rc::new(info)
}

impl ConnHandle<'_> {
    /// `Conn::register_removal_hook`: runs `hook` once when this connection is removed. False
    /// if this hook is already registered for it.
    pub fn register_removal_hook(&mut self, hook: &RemovalHook) -> bool {
        let info = self.info;
        let r = self
            .lifecycle
            .hooks
            .by_conn
            .entry(info.key)
            .or_insert_with(|| Registered {
                hooks: Hooks::new(),
                last: Rc::clone(info),
            });
        if r.hooks.iter().any(|h| h.same(hook)) {
            return false;
        }
        r.hooks.push(hook.clone());
        true
    }

    /// `Conn::unregister_removal_hook`: true if `hook` was registered for this connection.
    // API for capabilities; today only the Zeek test reproductions call it.
    #[allow(dead_code)]
    pub fn unregister_removal_hook(&mut self, hook: &RemovalHook) -> bool {
        let by_conn = &mut self.lifecycle.hooks.by_conn;
        let Some(r) = by_conn.get_mut(&self.info.key) else {
            return false;
        };
        let Some(i) = r.hooks.iter().position(|h| h.same(hook)) else {
            return false;
        };
        r.hooks.remove(i);
        if r.hooks.is_empty() {
            by_conn.remove(&self.info.key);
        }
        true
    }
}
