//! The `service` column: which application protocols a connection carries, as Zeek's protocol
//! analyzers confirm them. [`detect`] holds the detectors, pure functions over each direction's
//! first payload bytes; this module is the capability around them.
//!
//! The datapath samples every new TCP/UDP connection: the payload of the first
//! `contents::SAMPLE_PACKETS` packets of each direction (at most `contents::SAMPLE_BYTES` of
//! each) comes as `CONTENTS` records flagged `CONTENT_SAMPLE`, the same in the kernel and the
//! host engine. [`Service`] keeps what detection needs of them per connection while it is
//! undecided and runs the detectors once both directions have spoken: when their answer is
//! final ([`detect::is_final`], or [`detect::settled`] by what the samples hold) only the names
//! are kept from then on; else again once the samples are complete or when the connection is
//! logged. The names go into its conn.log record ([`Capability::conn_service`]).
//!
//! What detection keeps of a connection is a 32-bit word in the connection's record
//! (`ThresholdTarget::service_mut`, as Zeek keeps `service` in the connection record: the
//! host engine's table entry, which the sample's packet has just read, or the tracker's
//! record), handed back when it is logged: no table of connections is kept beside those
//! (only one for the few that no record has yet).
//! - TCP ([`tcp::Word`]): the decided names, an interned set ([`sets`]); while samples are
//!   still coming, the slot that holds the bytes of each direction's stream ([`tcp::Slots`],
//!   [`sample::SideSample`]), for about a round trip.
//! - UDP ([`udp`]): a few bits per direction, not bytes, and only once a datagram marks
//!   something. The datapath hands over no datagram that cannot mark anything (off the UDP
//!   analyzers' ports, one that cannot be a QUIC Initial: `contents::udp_sample_useful`),
//!   and once a datagram marked DNS only those that may be a QUIC Initial
//!   (`ThresholdTarget::narrow_sampling`, the host engine's), the one thing that could still
//!   change the answer.
//!
//! Most connections carry nothing a detector confirms, so that answer is made cheap: a TCP
//! connection whose first bytes no detector can continue ([`detect::rejects_for_good`]) is
//! decided at its first exchange with no name, and a decided connection's sampling is
//! stopped (`ThresholdTarget::stop_sampling`: the host engine's, which then keeps nothing of
//! it; the kernel's ends by its budget, and what still comes is ignored).
//!
//! FTP and IRC control channels are followed further: once one is confirmed its payload is
//! extracted (the contents mechanism) and its announcements make the data connections
//! `ftp-data` or `irc-dcc-data` ([`ftp_data`]). Other capabilities add their own names through
//! the same hook (tunnels: `vxlan`, `gtpv1`, `teredo`, ... on the outer connection).

// Some of the detectors' helpers (e.g. `detect_partial`, for connections picked up midway)
// are not called by the capability yet.
#[allow(dead_code, unused_imports)]
pub mod detect;
mod early;
mod ftp_data;
mod loaded;
mod sample;
mod sets;
mod tcp;
mod udp;

use crate::core::events::{Capability, ConnEvent, ConnHandle, EventMask};
use crate::core::thresholds::ThresholdTarget;
use crate::datapath::Content;
use crate::util::hashing::FastMap;
use conntrack_common::conn::Conn;
use conntrack_common::contents::{
    self, CONTENT_FROM_A, CONTENT_FROM_ORIG, CONTENT_SAMPLE, SAMPLE_PACKETS,
};
use conntrack_common::key::FlowKey;
use conntrack_common::proto;
use conntrack_common::threshold::ThresholdCommand;
use detect::{MAX_SAMPLE_BYTES, MAX_SAMPLE_DATAGRAMS, Sample, Transport};
use early::Early;
use ftp_data::{Announcer, ControlChannel, Expectations};
use loaded::Loaded;
use sample::SideSample;
use sets::{NameSets, SetId};
use std::borrow::Cow;
use tcp::{Slots, Word};
use udp::UdpConns;

// The kernel's budget covers what the detectors look at.
const _: () = assert!(MAX_SAMPLE_DATAGRAMS <= SAMPLE_PACKETS as usize);
const _: () = assert!(MAX_SAMPLE_BYTES <= (contents::SAMPLE_BYTES * SAMPLE_PACKETS) as usize);

/// A TCP connection whose samples are still coming.
#[derive(Debug, Default)]
struct Pending {
    /// The samples per side of the key: 0 is `addr_a`/`port_a`, 1 the other (the roles may
    /// flip; the key's sides do not).
    sides: [SideSample; 2],
    /// The key's `a` side is the originator (as of the latest sample).
    a_is_orig: bool,
    /// What the detectors said of the samples so far.
    found: SetId,
    /// Samples arrived since `found` was decided.
    stale: bool,
    /// Both sides have spoken (the first exchange was looked at).
    exchanged: bool,
}

impl Pending {
    /// Back to no sample, its buffers kept for the next connection.
    fn clear(&mut self) {
        for side in &mut self.sides {
            side.clear();
        }
        self.a_is_orig = false;
        self.found = SetId::EMPTY;
        self.stale = false;
        self.exchanged = false;
    }

    /// Side `i`'s stream, at most `max` bytes; with `this`, side `this.0`'s is `this.1` (its
    /// first sample, not kept).
    fn stream<'a>(
        &'a self,
        this: Option<(usize, &'a [u8])>,
        i: usize,
        max: usize,
    ) -> Cow<'a, [u8]> {
        match this {
            Some((side, bytes)) if side == i => Cow::Borrowed(&bytes[..bytes.len().min(max)]),
            _ => self.sides[i].stream(max),
        }
    }
}

/// Service detection: conn.log's `service`.
#[derive(Default)]
pub struct Service {
    /// TCP connections the tracker does not know (yet): their words ([`tcp::Word`]).
    unrecorded: Early,
    /// TCP connections whose samples are still coming.
    slots: Slots,
    /// The sets of names connections were decided with.
    sets: NameSets,
    /// The detectors' answer, reused.
    found: Vec<&'static str>,
    /// UDP connections not (yet) known to the tracker.
    udp: UdpConns,
    /// Confirmed FTP and IRC control channels (extracted, for their announcements).
    ftp: FastMap<FlowKey, ControlChannel>,
    expected: Expectations,
    /// The analyzers this run has (a bare Zeek logs no service).
    loaded: Loaded,
    /// `loaded` has FTP's, IRC's: asked at every connection's first exchange.
    ftp_loaded: bool,
    irc_loaded: bool,
    /// Names read from a predecessor's handover file, each kept once for the run.
    interned: FastMap<String, &'static str>,
}

/// Whether `server` begins as an FTP server's greeting does (a 220 reply, RFC 959): an FTP
/// control channel found at the first exchange is followed from there on.
fn may_be_ftp_greeting(server: &[u8]) -> bool {
    let s = server.trim_ascii_start();
    s.starts_with(b"220")
}

impl Service {
    /// Detection with the analyzers whose ports are among `likely_server_ports` (see
    /// [`loaded`]).
    pub fn new(likely_server_ports: &[(u16, u8)]) -> Self {
        let mut loaded = Loaded::new(likely_server_ports);
        Self {
            ftp_loaded: loaded.has("ftp"),
            irc_loaded: loaded.has("irc"),
            loaded,
            ..Self::default()
        }
    }

    /// Runs `judge` on `p`'s samples as one [`Sample`], with the key's `a` side as
    /// originator when `a_is_orig`; with `this`, side `this.0`'s stream is `this.1`.
    fn judge<R>(
        key: &FlowKey,
        p: &Pending,
        a_is_orig: bool,
        this: Option<(usize, &[u8])>,
        judge: impl FnOnce(&Sample) -> R,
    ) -> R {
        let (o, r) = if a_is_orig { (0, 1) } else { (1, 0) };
        let (orig_port, resp_port) = if a_is_orig {
            (key.port_a, key.port_b)
        } else {
            (key.port_b, key.port_a)
        };
        let (os, rs) = (
            p.stream(this, o, MAX_SAMPLE_BYTES),
            p.stream(this, r, MAX_SAMPLE_BYTES),
        );
        judge(&Sample {
            transport: Transport::Tcp,
            orig_port,
            resp_port,
            orig: &[&*os],
            resp: &[&*rs],
        })
    }

    /// `name` (a service name from a handover file) as the `'static` string the sets hold:
    /// each distinct name is allocated once, for the run.
    fn intern(&mut self, name: &str) -> &'static str {
        if let Some(&n) = self.interned.get(name) {
            return n;
        }
        let n: &'static str = Box::leak(name.to_owned().into_boxed_str());
        self.interned.insert(name.to_owned(), n);
        n
    }

    /// A TCP sample of connection `key`: its state found by its word, in its record (one
    /// lookup) or, for a connection no record has yet, in `unrecorded`.
    fn on_sample(&mut self, chunk: Content<'_>, dp: &mut dyn ThresholdTarget) {
        let key = chunk.hdr.key;
        if !self.ftp.is_empty() {
            self.feed_channel(&chunk);
        }
        let after = if let Some(word) = dp.service_mut(&key) {
            if !self.unrecorded.is_empty()
                && let Some(early) = self.unrecorded.remove(&key)
            {
                self.adopt(word, early);
            }
            self.on_word(word, chunk)
        } else {
            let mut word = self.unrecorded.get(&key).unwrap_or(0);
            let after = self.on_word(&mut word, chunk);
            let Self {
                unrecorded, slots, ..
            } = self;
            // A word dropped as stale frees the samples it named.
            unrecorded.set(key, word, chunk.hdr.ts_ns, |w| {
                if let Word::Pending(n) = Word::from_stored(w) {
                    slots.release(n);
                }
            });
            after
        };
        if after.follow {
            follow(&key, dp, chunk.hdr.ts_ns);
        }
        if after.stop {
            dp.stop_sampling(&key);
        }
    }

    /// `early`, the word a connection had before the tracker knew it, into its record's
    /// `word` (unless the record has one already).
    fn adopt(&mut self, word: &mut u32, early: u32) {
        if *word == 0 {
            *word = early;
        } else if let Word::Pending(n) = Word::from_stored(early) {
            self.slots.release(n);
        }
    }

    /// A TCP sample of the connection whose word is `word`: the detectors run at most at the
    /// first exchange (a possible FTP greeting) and once the samples are complete.
    fn on_word(&mut self, word: &mut u32, chunk: Content<'_>) -> After {
        let Self {
            slots,
            sets,
            found,
            ftp,
            expected,
            ftp_loaded,
            irc_loaded,
            ..
        } = self;
        let n = match Word::from_stored(*word) {
            Word::Empty => {
                let n = slots.open();
                *word = Word::Pending(n).stored();
                n
            }
            Word::Pending(n) => n,
            // Decided: later samples change nothing.
            Word::Nothing | Word::Names(_) => return After::default(),
        };
        let Some(p) = slots.get_mut(n) else {
            *word = 0; // not ours (cannot happen): start again from the next sample
            return After::default();
        };
        let key = chunk.hdr.key;
        let from_a = chunk.hdr.flags & CONTENT_FROM_A != 0;
        let from_orig = chunk.hdr.flags & CONTENT_FROM_ORIG != 0;
        p.a_is_orig = from_a == from_orig;
        let idx = usize::from(!from_a);
        let (seq, data) = (chunk.hdr.seq, chunk.data);
        let first_exchange = p.sides[idx].is_empty() && !p.sides[1 - idx].is_empty();
        let mut after = After::default();
        if first_exchange {
            // The first exchange, judged while its bytes are hot, this side's where they are
            // (they are kept only if the connection stays undecided).
            p.exchanged = true;
            let this = Some((idx, &data[..data.len().min(MAX_SAMPLE_BYTES)]));
            // The names, and whether they can still change, from one reading of the streams.
            let decided = Self::judge(&key, p, p.a_is_orig, this, |s| {
                detect::detect_into(s, found)
            });
            // Most connections carry nothing a detector recognises: rejected for good, and
            // nothing of them kept. (A rejected exchange has no names.)
            if found.is_empty() && Self::rejected(&key, p, this) {
                slots.release(n);
                *word = Word::Nothing.stored();
                return After::STOP;
            }
            p.found = sets.id(found);
            p.stale = false;
            let announcer = match sets.channel(p.found) {
                Some(channel) => Self::announcer(channel, (*ftp_loaded, *irc_loaded), p, this),
                None => None,
            };
            if announcer.is_some() || !decided {
                p.sides[idx].push_segment(seq, data, MAX_SAMPLE_BYTES);
            }
            if let Some(kind) = announcer {
                after.follow = Self::follow_channel(kind, &key, p, chunk.hdr.ts_ns, ftp, expected);
            }
            if decided {
                let names = p.found;
                slots.release(n);
                *word = Word::decided(names).stored();
                after.stop = true;
                return after;
            }
        } else {
            p.sides[idx].push_segment(seq, data, MAX_SAMPLE_BYTES);
            p.stale = true;
            // A later sample may complete what the rule needs (PostgreSQL's first 8 bytes).
            if p.exchanged && Self::rejected(&key, p, None) {
                slots.release(n);
                *word = Word::Nothing.stored();
                return After::STOP;
            }
        }
        if p.sides.iter().all(|s| s.count() >= SAMPLE_PACKETS as usize) {
            // Both budgets are spent: no sample comes after this one.
            *word = Self::last_sample(&key, p, found, sets).stored();
            slots.release(n);
        }
        after
    }

    /// The names of TCP connection `key`, logged with its samples still coming (slot `n`),
    /// with the `a` side as originator when `a_is_orig`.
    // Cold: most connections are decided at their first exchange.
    #[cold]
    fn pending_names(
        &mut self,
        key: &FlowKey,
        n: u32,
        a_is_orig: bool,
        out: &mut Vec<&'static str>,
    ) {
        let Some(p) = self.slots.close(n) else {
            return;
        };
        if p.stale || a_is_orig != p.a_is_orig {
            let found = &mut self.found;
            Self::judge(key, &p, a_is_orig, None, |s| detect::detect_into(s, found));
            out.extend_from_slice(found);
        } else {
            out.extend_from_slice(self.sets.names(p.found));
        }
        self.slots.recycle(p);
    }

    /// Removes `ftp` from the names from `start` on: its analyzer reported a violation.
    #[cold]
    fn drop_failed(out: &mut Vec<&'static str>, start: usize) {
        let mut i = start;
        while i < out.len() {
            if out[i] == "ftp" {
                out.remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// The word of a connection whose last sample `p` just took.
    #[cold]
    fn last_sample(
        key: &FlowKey,
        p: &Pending,
        found: &mut Vec<&'static str>,
        sets: &mut NameSets,
    ) -> Word {
        let names = if p.stale {
            Self::judge(key, p, p.a_is_orig, None, |s| detect::detect_into(s, found));
            sets.id(found)
        } else {
            p.found
        };
        Word::decided(names)
    }

    /// The control channel a connection decided at its first exchange as one that may
    /// announce others (`channel`) is, if its analyzer is loaded (`loaded`: FTP's, IRC's)
    /// and, for FTP, the server greeted as one.
    // Cold, as the two below: few connections are control channels, and their code is kept
    // out of the instruction cache lines of every connection's first exchange.
    #[cold]
    fn announcer(
        channel: Announcer,
        loaded: (bool, bool),
        p: &Pending,
        this: Option<(usize, &[u8])>,
    ) -> Option<Announcer> {
        let server = usize::from(p.a_is_orig);
        match channel {
            Announcer::Ftp if loaded.0 => {
                may_be_ftp_greeting(&p.stream(this, server, 8)).then_some(Announcer::Ftp)
            }
            Announcer::Irc if loaded.1 => Some(Announcer::Irc),
            _ => None,
        }
    }

    /// Starts reading control channel `key`'s announcements (unless it is read already):
    /// whether its extraction is to be turned on.
    #[cold]
    fn follow_channel(
        kind: Announcer,
        key: &FlowKey,
        p: &Pending,
        now_ns: u64,
        ftp: &mut FastMap<FlowKey, ControlChannel>,
        expected: &mut Expectations,
    ) -> bool {
        if ftp.contains_key(key) {
            return false;
        }
        let ctl = Self::control_channel(kind, key, p, now_ns, expected);
        ftp.insert(*key, ctl);
        true
    }

    /// A sample of control channel `key` (one is being read): its announcements.
    #[cold]
    fn feed_channel(&mut self, chunk: &Content<'_>) {
        if let Some(ctl) = self.ftp.get_mut(&chunk.hdr.key) {
            let from_orig = chunk.hdr.flags & CONTENT_FROM_ORIG != 0;
            let (seq, ts) = (chunk.hdr.seq, chunk.hdr.ts_ns);
            ctl.feed(from_orig, seq, chunk.data, ts, &mut self.expected);
        }
    }

    /// TCP: both sides have spoken and no continuation of their streams can confirm a
    /// service ([`detect::rejects_for_good`]); with `this`, side `this.0`'s stream is
    /// `this.1` (its first sample, not kept).
    fn rejected(key: &FlowKey, p: &Pending, this: Option<(usize, &[u8])>) -> bool {
        let (o, r) = (
            p.stream(this, 0, MAX_SAMPLE_BYTES),
            p.stream(this, 1, MAX_SAMPLE_BYTES),
        );
        if o.is_empty() || r.is_empty() {
            return false;
        }
        // The orientation does not matter: both are checked.
        detect::rejects_for_good(&Sample {
            transport: Transport::Tcp,
            orig_port: key.port_a,
            resp_port: key.port_b,
            orig: &[&*o],
            resp: &[&*r],
        })
    }

    /// A confirmed control channel, its samples so far read.
    fn control_channel(
        kind: Announcer,
        key: &FlowKey,
        p: &Pending,
        now_ns: u64,
        expected: &mut Expectations,
    ) -> ControlChannel {
        let (client, server) = if p.a_is_orig {
            (key.addr_a, key.addr_b)
        } else {
            (key.addr_b, key.addr_a)
        };
        let mut ctl = ControlChannel::new(kind, client, server);
        for (side, s) in p.sides.iter().enumerate() {
            let from_client = (side == 0) == p.a_is_orig;
            for (seq, data) in s.in_order() {
                ctl.feed(from_client, seq, data, now_ns, expected);
            }
        }
        ctl
    }
}

/// What a sample asks of the datapath once it is taken in.
#[derive(Debug, Default, Clone, Copy)]
struct After {
    /// Extraction on: a control channel was found.
    follow: bool,
    /// The connection is decided: its sampling can stop.
    stop: bool,
}

impl After {
    const STOP: After = After {
        follow: false,
        stop: true,
    };
}

/// Extraction on for both directions of `key`: a control channel's announcements come after
/// its first bytes.
#[cold]
fn follow(key: &FlowKey, dp: &mut dyn ThresholdTarget, now_ns: u64) {
    let cmd = ThresholdCommand {
        key: *key,
        mask: contents::CMD_SET_CONTENTS | contents::EXTRACT_BITS,
        now_ns,
        ..ThresholdCommand::default()
    };
    if let Err(e) = dp.set_thresholds(&cmd) {
        log::debug!("service: following a control channel: {e}");
    }
}

impl Capability for Service {
    fn on_event(&mut self, _conn: &mut ConnHandle<'_>, _event: &ConnEvent) {}

    /// Payload only (samples, and an FTP control channel's extraction): no connection events,
    /// so with no other capability the agent builds none. conn.log asks
    /// [`Capability::conn_service`] at logging time.
    fn events(&self) -> EventMask {
        EventMask::PAYLOAD
    }

    fn on_payload(&mut self, chunk: Content<'_>, dp: &mut dyn ThresholdTarget) {
        if chunk.hdr.flags & CONTENT_SAMPLE != 0 {
            return if chunk.hdr.key.proto == proto::TCP {
                self.on_sample(chunk, dp)
            } else {
                self.udp.on_sample(chunk, dp)
            };
        }
        // Extracted payload: a control channel's (or another capability's extraction).
        if let Some(ctl) = self.ftp.get_mut(&chunk.hdr.key) {
            let from_client = chunk.hdr.flags & CONTENT_FROM_ORIG != 0;
            let (seq, ts) = (chunk.hdr.seq, chunk.hdr.ts_ns);
            ctl.feed(from_client, seq, chunk.data, ts, &mut self.expected);
        }
    }

    /// An undecided TCP connection's samples are freed (its word in the record, or one kept
    /// here), and what is kept of a control channel or a UDP connection not yet recorded.
    fn forgotten_service(&mut self, key: &FlowKey, stored: u32) {
        if !self.ftp.is_empty() {
            self.ftp.remove(key);
        }
        match key.proto {
            proto::TCP => {
                let early = self.unrecorded.remove(key).unwrap_or(0);
                for word in [stored, early] {
                    if let Word::Pending(n) = Word::from_stored(word) {
                        self.slots.release(n);
                    }
                }
            }
            proto::UDP => self.udp.forget(key),
            _ => {}
        }
    }

    /// A TCP connection's decision as names (`tcp:NAMES`, comma-separated, empty for none);
    /// one still sampled is judged on what it has, and carried only if that confirmed
    /// something (else the successor starts afresh with the samples it gets). A UDP
    /// connection's word is self-contained (`udp1:WORD`).
    fn saved_service(&self, key: &FlowKey, stored: u32) -> Option<String> {
        let proto = key.proto;
        // Live, a connection's samples may have been read before its first event: its word
        // is then still waiting in the capability's own table.
        let stored = match proto {
            _ if stored != 0 => stored,
            proto::TCP => self.unrecorded.get(key).unwrap_or(0),
            _ => self.udp.early_word(key),
        };
        let names: Vec<&str> = match proto {
            proto::TCP => match Word::from_stored(stored) {
                Word::Empty => return None,
                Word::Nothing => Vec::new(),
                Word::Names(set) => self.sets.names(set).to_vec(),
                Word::Pending(n) => {
                    let p = self.slots.get(n)?;
                    let names = if !p.stale {
                        self.sets.names(p.found).to_vec()
                    } else {
                        let mut found = Vec::new();
                        Self::judge(key, p, p.a_is_orig, None, |s| {
                            detect::detect_into(s, &mut found)
                        });
                        found
                    };
                    if names.is_empty() {
                        return None;
                    }
                    names
                }
            },
            proto::UDP if stored != 0 => return Some(format!("udp1:{stored}")),
            _ => return None,
        };
        Some(format!("tcp:{}", names.join(",")))
    }

    fn restored_service(&mut self, proto: u8, saved: &str) -> Option<u32> {
        if let Some(word) = saved.strip_prefix("udp1:") {
            return (proto == proto::UDP).then(|| word.parse().ok()).flatten();
        }
        let names = saved.strip_prefix("tcp:").filter(|_| proto == proto::TCP)?;
        let names: Vec<&'static str> = names
            .split(',')
            .filter(|n| !n.is_empty())
            .map(|n| self.intern(n))
            .collect();
        Some(Word::decided(self.sets.id(&names)).stored())
    }

    fn conn_service(
        &mut self,
        key: &FlowKey,
        conn: &Conn,
        stored: u32,
        out: &mut Vec<&'static str>,
    ) {
        let start = out.len();
        if !self.expected.is_empty()
            && let Some(name) = self.expected.matches(conn)
        {
            out.push(name);
        }
        // An FTP control channel whose server broke the protocol has lost `ftp` again.
        let failed = !self.ftp.is_empty() && self.ftp.remove(key).is_some_and(|c| c.failed());
        // The roles as Zeek logs them: a flip after the last sample changes which side is the
        // originator.
        let a_is_orig = || conn.orig_addr == key.addr_a && conn.orig_port == key.port_a;
        if conn.is_tcp() {
            // The word the record kept; one the tracker did not have is in `unrecorded`
            // (checked only when that table is not empty).
            let mut word = stored;
            if !self.unrecorded.is_empty()
                && let Some(early) = self.unrecorded.remove(key)
            {
                self.adopt(&mut word, early);
            }
            match Word::from_stored(word) {
                Word::Empty | Word::Nothing => {}
                Word::Names(set) => {
                    if out.len() == start
                        && !failed
                        && !detect::picked_up_midway(conn.history_str())
                    {
                        // The usual case, the set alone: whether it is logged is known per
                        // set.
                        if self.sets.logged(set, &mut self.loaded) {
                            out.extend_from_slice(self.sets.names(set));
                        }
                        return;
                    }
                    out.extend_from_slice(self.sets.names(set));
                }
                Word::Pending(n) => self.pending_names(key, n, a_is_orig(), out),
            }
        } else if conn.proto == proto::UDP {
            out.extend_from_slice(self.udp.take_names(key, stored, a_is_orig));
        }
        if failed {
            Self::drop_failed(out, start);
        }
        if out.len() == start {
            return;
        }
        if conn.is_tcp() && detect::picked_up_midway(conn.history_str()) {
            let mut names = out.split_off(start);
            detect::drop_partial_skippers(&mut names);
            out.extend(names);
        }
        if !self.loaded.logs(&out[start..]) {
            out.truncate(start);
        }
    }
}

#[cfg(test)]
mod tests;
