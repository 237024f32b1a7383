//! The end of stage 2 and stage 3: `engine::process_packet`'s steps over `FLOWS`, split at
//! the point where the connection is ready for `engine::update`. Each half verifies on its
//! own; together (as the generic driver) they exceed the verifier's one-million-instruction
//! budget.
//!
//! The connection's lock is taken at the end of stage 2 and released in stage 3 (or in stage 2
//! if the tail call fails); a tail call does not leave the CPU, so the hold time stays one
//! packet.

use crate::lock;
use crate::maps::{
    CONFIG, CONFIG_FLAGS, CONFIG_SERVICE, CONTENTS_EXTRACT, CONTENTS_FROM_ORIG, CONTENTS_SAMPLE,
    FLOWS, LIKELY_SERVER_PORTS, SCRATCH, STAGE_CONTENTS, STAGE_THRESHOLD, STAGE_TUNNEL, Scratch,
};
use crate::note::{self, Note};
use crate::pkt::Pkt;
use aya_ebpf::bindings::BPF_NOEXIST;
use conntrack_common::conn::{CONN_FLIPPED, Conn};
use conntrack_common::contents;
use conntrack_common::engine::{
    Changes, EngineConfig, check_thresholds, event_after_update, init_conn, init_zeroed_conn,
    is_orig, is_reuse, update,
};
use conntrack_common::event::{ENCAP_CHANGED, ENCAP_NEW};
use conntrack_common::event::{EventKind, EventRef};
use conntrack_common::key::FlowKey;
use conntrack_common::packet::tcp_flags;
use conntrack_common::proto;
use conntrack_common::stats::Stat;
use conntrack_common::tunnel::{EncapChange, check_encap};

/// `-EEXIST`: another CPU inserted the key between our lookup and insert.
const EEXIST: i32 = 17;

/// Zeek's `likely_server_ports` from the `LIKELY_SERVER_PORTS` array (a byte per port, a bit
/// per protocol: `proto::likely_port_bit`).
pub struct BpfPorts;

impl EngineConfig for BpfPorts {
    #[inline(always)]
    fn likely_server_port(&self, port: u16, proto_nr: u8) -> bool {
        LIKELY_SERVER_PORTS
            .get(port as u32)
            .is_some_and(|bits| bits & proto::likely_port_bit(proto_nr) != 0)
    }

    #[inline(always)]
    fn sample_services(&self) -> bool {
        CONFIG
            .get(CONFIG_FLAGS)
            .is_some_and(|f| f & CONFIG_SERVICE != 0)
    }
}

/// A new connection's entry as inserted: all zero but the lock word, taken. The CPU that
/// inserts it holds the lock from the moment the entry exists, so another CPU that finds it
/// (the flow's other direction, arriving at the same time) waits until `init_conn` built it,
/// instead of applying its packet to a zeroed connection of no protocol.
static NEW_CONN: Conn = Conn {
    lock: 1,
    ..Conn::ZERO
};

/// Outcome of [`prepare`].
pub enum Prepared {
    /// The connection is locked and ready for `update`; `Scratch::key`/`created` are set.
    Ready(*mut Conn),
    /// Nothing more to do (table full: already reported).
    Done,
}

/// The end of stage 2: lookup or create (TableFull when the insert fails), TCP reuse (ReuseRemoved with
/// the old connection), initialisation of new connections; leaves the connection locked.
#[inline(always)]
pub fn prepare(emit: impl Fn(&EventRef<'_>), count: impl Fn(Stat)) -> Prepared {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Prepared::Done;
    };
    // SAFETY: per-CPU scratch filled by the earlier stages for this packet.
    let scratch = unsafe { &mut *scratch };
    let meta = &scratch.meta;
    let mut now_ns = scratch.now_ns;
    scratch.key = FlowKey::from_meta(meta);
    let key = &scratch.key;
    let mut created = Changes::NONE;
    // A plain SYN usually opens a connection: insert straight away (`BPF_NOEXIST` finds an
    // existing one), which saves the lookup that would miss. Other packets look up first.
    let opens = meta.proto == proto::TCP
        && meta.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
    let found = if opens { None } else { FLOWS.get_ptr_mut(key) };
    let conn = match found {
        Some(c) => c,
        None => {
            // By reference: by value the static would be copied onto the 512-byte stack.
            #[allow(clippy::needless_borrows_for_generic_args)]
            let inserted = FLOWS.insert(key, &NEW_CONN, BPF_NOEXIST as u64);
            match inserted {
                Ok(()) => created = Changes::NEW,
                Err(e) if e == -EEXIST => {}
                Err(_) => {
                    count(Stat::TableFull);
                    note::record(Note::TableFull, 0);
                    // The agent tracks this packet in its overflow table: it needs the
                    // checksum verdict too.
                    let changes = if scratch.checksum_ok == 0 {
                        Changes(Changes::TABLE_FULL.0 | Changes::BAD_CHECKSUM.0)
                    } else {
                        Changes::TABLE_FULL
                    };
                    emit(&EventRef {
                        kind: EventKind::TableFull,
                        changes,
                        ts_ns: now_ns,
                        key,
                        meta,
                        conn: None,
                    });
                    return Prepared::Done;
                }
            }
            match FLOWS.get_ptr_mut(key) {
                Some(c) => c,
                None => return Prepared::Done, // removed by the agent meanwhile
            }
        }
    };
    // Our own insert is locked already (`NEW_CONN`); anything else is taken here.
    if created == Changes::NONE {
        // SAFETY: a FLOWS value pointer stays valid for the program run.
        let lock_word = unsafe { &raw mut (*conn).lock };
        if unsafe { lock::lock(lock_word) } == lock::Taken::TakenOver {
            count(Stat::LockBusy);
            note::record(Note::LockTakenOver, 0);
        }
    }
    // SAFETY: locked; no other writer.
    let c = unsafe { &mut *conn };
    // Live, the clock was read before the lock: a packet that waited for it (the flow's other
    // direction, on another CPU) can carry an earlier time than the packet that went first.
    // Its time is then read again, now that it holds the lock: later than the time of every
    // packet applied before it, as in Zeek's one packet stream. A replay keeps the trace's times.
    if created == Changes::NONE && scratch.replay == 0 && now_ns <= c.last_ns {
        now_ns = crate::live_clock();
        scratch.now_ns = now_ns;
    }
    if created == Changes::NONE && is_reuse(c, meta, is_orig(c, meta)) {
        count(Stat::Reuses);
        emit(&EventRef {
            kind: EventKind::ReuseRemoved,
            changes: Changes::REUSED,
            ts_ns: now_ns,
            key,
            meta,
            conn: Some(c),
        });
        created = Changes::NEW | Changes::REUSED;
    }
    if created != Changes::NONE {
        count(Stat::NewConns);
        if created == Changes::NEW {
            // Just inserted as `NEW_CONN`.
            init_zeroed_conn(c, meta, now_ns, &BpfPorts);
        } else {
            init_conn(c, meta, now_ns, &BpfPorts);
        }
        // init_conn starts from a zeroed value: the lock word must stay taken.
        c.lock = 1;
        // For alert rules that match on the interface.
        c.ifindex = scratch.ifindex;
        if c.has_flag(CONN_FLIPPED) {
            created |= Changes::FLIPPED;
        }
    }
    scratch.created = created.0;
    Prepared::Ready(conn)
}

/// Stage 5: `engine::update`; then, when a threshold is armed, the threshold stage (which
/// finishes the packet); else NewConn / StateChanged and unlock.
#[inline(always)]
pub fn apply<C: Pkt>(ctx: &C, emit: impl Fn(&EventRef<'_>)) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch filled by the earlier stages for this packet.
    let scratch = unsafe { &mut *scratch };
    let Some(conn) = FLOWS.get_ptr_mut(scratch.key) else {
        return; // removed by the agent between the stages
    };
    // SAFETY: stage 2 locked it for this packet.
    let c = unsafe { &mut *conn };
    let created = Changes(scratch.created);
    let ch = update(c, &scratch.meta, scratch.now_ns, scratch.checksum_ok != 0) | created;
    // Zeek's tunnel-change rule, for a packet in a tunnel or of a connection seen in one.
    if scratch.encap_id != 0 || c.encap != 0 {
        let is_new = created.0 & Changes::NEW.0 != 0;
        let change = check_encap(c, scratch.encap_id, is_new);
        if scratch.depth != 0 {
            scratch.encap_event = if is_new {
                ENCAP_NEW
            } else if change == EncapChange::Changed {
                ENCAP_CHANGED
            } else {
                0
            };
        }
    }
    if c.thr_armed != 0 {
        // The check does not fit this stage's verifier budget; connections without thresholds
        // never pay the tail call.
        scratch.changes = ch.0;
        ctx.tail_call(STAGE_THRESHOLD);
        // Not installed: finish the packet without the check.
    }
    finish(conn, ch, emit);
    next_layer(ctx, scratch);
    // A lock taken over in stage 2: its note, if logging is on.
    note::flush(ctx);
}

/// After the packet's own event: its tunnel for the agent, then the next layer of a packet
/// that may carry a tunnel (tunnel.rs; a pending note is flushed by the last layer).
#[inline(always)]
fn next_layer<C: Pkt>(ctx: &C, scratch: &mut Scratch) {
    if scratch.encap_event != 0 {
        crate::tunnel::emit_encap(scratch, scratch.encap_event);
        scratch.encap_event = 0;
    }
    if crate::tunnel::wanted(scratch) {
        ctx.tail_call(STAGE_TUNNEL);
    }
}

/// The end of the contents stage, which stage 6 tail-called in place of its own end: the
/// packet's next layer (a tunnel's inner packet) and a pending note are not skipped.
#[inline(always)]
pub fn after_contents<C: Pkt>(ctx: &C) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch filled by the earlier stages for this packet.
    next_layer(ctx, unsafe { &mut *scratch });
    note::flush(ctx);
}

/// Stage 6 (only for a connection with an armed threshold, extraction or sampling bit):
/// `engine::check_thresholds`, then the packet's event (crossings included) and unlock; then,
/// for a packet whose payload is to be extracted, the contents stage.
#[inline(always)]
pub fn check_thresholds_stage<C: Pkt>(ctx: &C, emit: impl Fn(&EventRef<'_>)) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch filled by the earlier stages for this packet.
    let scratch = unsafe { &mut *scratch };
    let Some(conn) = FLOWS.get_ptr_mut(scratch.key) else {
        return;
    };
    // SAFETY: still locked since stage 2.
    let c = unsafe { &mut *conn };
    let ch = Changes(scratch.changes);
    let ch = ch | check_thresholds(c, &scratch.meta, scratch.now_ns, ch);
    // Content extraction and service samples share the armed word: decided under the lock,
    // done after it.
    let side = is_orig(c, &scratch.meta);
    let ok = scratch.checksum_ok != 0;
    let extract = contents::wanted(c, &scratch.meta, ok, side);
    let sample = contents::take_sample(c, &scratch.meta, ok, side);
    finish(conn, ch, emit);
    if extract || sample {
        scratch.contents_todo = if side { CONTENTS_FROM_ORIG } else { 0 }
            | if extract { CONTENTS_EXTRACT } else { 0 }
            | if sample { CONTENTS_SAMPLE } else { 0 };
        ctx.tail_call(STAGE_CONTENTS);
    }
    next_layer(ctx, scratch);
    note::flush(ctx);
}

/// The packet's event (if any), then unlock.
#[inline(always)]
fn finish(conn: *mut Conn, ch: Changes, emit: impl Fn(&EventRef<'_>)) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return release(conn);
    };
    // SAFETY: per-CPU scratch filled by the earlier stages for this packet.
    let scratch = unsafe { &*scratch };
    // SAFETY: locked since stage 2.
    let c = unsafe { &*conn };
    let created = Changes(scratch.created);
    if let Some(kind) = event_after_update(created, ch) {
        emit(&EventRef {
            kind,
            changes: ch,
            ts_ns: scratch.now_ns,
            key: &scratch.key,
            meta: &scratch.meta,
            conn: Some(c),
        });
    }
    release(conn);
}

/// Unlocks a connection locked by [`prepare`].
#[inline(always)]
pub fn release(conn: *mut Conn) {
    // SAFETY: a FLOWS value pointer held since `prepare`.
    unsafe { lock::unlock(&raw mut (*conn).lock) };
}
