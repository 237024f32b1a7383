//! Zeek's per-packet TCP processing (`TCPSessionAdapter::Process` and its helpers): endpoint
//! initialisation, history letters, zero windows, ACK and sequence tracking, the endpoint state
//! machine, content gaps and close handling. Everything works on one `Conn` in place.

use super::{Changes, ep_mut, flip_roles, parts, swap_roles};
use crate::conn::{
    CONN_ATTEMPT_ARMED, CONN_CLOSE_ARMED, CONN_ESTABLISHED, CONN_HALF_CLOSED, CONN_HANDSHAKE_LEFT,
    CONN_PARTIAL, Conn,
};
use crate::engine::FastMeta;
use crate::history::mask;
use crate::packet::{NO_WINDOW_SCALE, PacketMeta, tcp_flags};
use crate::tcp::{EP_DID_CLOSE, Endpoint, TOO_LARGE_SEQ_DELTA, is_handshake, state};

/// Per-packet TCP flag summary.
#[derive(Clone, Copy)]
struct Flags {
    syn: bool,
    fin: bool,
    rst: bool,
    ack: bool,
}

impl Flags {
    #[inline(always)]
    fn of(meta: &PacketMeta) -> Flags {
        Flags {
            syn: meta.tcp_flags & tcp_flags::SYN != 0,
            fin: meta.tcp_flags & tcp_flags::FIN != 0,
            rst: meta.tcp_flags & tcp_flags::RST != 0,
            ack: meta.tcp_flags & tcp_flags::ACK != 0,
        }
    }
}

/// TCP, in Zeek's order: endpoint init, history, window, last_time, FIN count, ACK
/// processing, last sequence, state machine, gaps, counters, close handling.
pub(super) fn update_tcp(
    conn: &mut Conn,
    meta: &PacketMeta,
    now_ns: u64,
    checksum_ok: bool,
    mut is_orig: bool,
) -> Changes {
    if !checksum_ok {
        return super::bad_checksum(conn, is_orig);
    }
    let mut ch = Changes::NONE;
    let f = Flags::of(meta);
    let len = meta.payload_len;
    // RST payload is not part of the sequence space; SYN and FIN take one octet each.
    let seg_len = if f.rst {
        0
    } else {
        len.wrapping_add(f.syn as u32).wrapping_add(f.fin as u32)
    };
    let seq_end = meta.seq.wrapping_add(seg_len);
    let before = (conn.orig.state, conn.resp.state);

    init_endpoint(ep_mut(conn, is_orig), f, meta.seq, seq_end);
    let rel = ep_mut(conn, is_orig).rel_seq(meta.seq);
    let rel_seq = rel.unwrap_or(0);

    if update_history(conn, is_orig, f, rel_seq, len) {
        is_orig = !is_orig;
        ch |= Changes::FLIPPED;
    }
    update_window(conn, is_orig, meta.window, f);

    if !(conn.orig.did_close() && conn.resp.did_close()) {
        conn.last_ns = now_ns;
    }

    {
        let (ep, peer, _) = parts(conn, is_orig);
        if f.syn {
            init_window(ep, peer, f, meta.window_scale);
        }
        if f.fin {
            ep.fin_cnt = ep.fin_cnt.saturating_add(1);
            ep.fin_rel = rel_seq.wrapping_add(seg_len as u64);
        }
    }

    let rel_ack = process_ack(conn, is_orig, f, meta.ack);
    update_last_seq(conn, is_orig, seq_end, f, len);

    let (orig_now, do_close) = state_machine(conn, is_orig, meta, &mut ch);
    is_orig = orig_now;

    if f.ack {
        ack_received(conn, is_orig, rel_ack);
    }
    let ep = ep_mut(conn, is_orig);
    // A payload the capture cut never reaches the reassembler (`caplen >= len` in Zeek's
    // `TCP_Endpoint::DataSent`): once acknowledged it is a gap.
    if len > 0 && !f.rst && rel.is_some() && !meta.payload_cut() {
        ep.data_sent(rel_seq.wrapping_add(f.syn as u64), len);
    }
    ep.count_packet(meta.pkts, meta.ip_bytes);

    if do_close {
        connection_closed(conn, is_orig, &mut ch);
    }
    let after = (conn.orig.state, conn.resp.state);
    if before != after || ch.contains(Changes::FLIPPED) {
        ch |= Changes::STATE_CHANGED;
    }
    ch
}

/// [`update_tcp`] for the plain SYN that opens a connection (`FastMeta::opens`: no ACK, FIN,
/// RST or payload; valid checksum): the same steps in the same order, without those the SYN
/// cannot reach. `conn` was just initialised from it (not flipped: a plain SYN never is), so the
/// sender is the originator and both endpoints are INACTIVE.
pub(super) fn open_syn(conn: &mut Conn, m: &FastMeta, window_scale: u8, now_ns: u64) -> Changes {
    let f = Flags {
        syn: true,
        fin: false,
        rst: false,
        ack: false,
    };
    let mut ch = Changes::NONE;
    let seq_end = m.seq.wrapping_add(1);
    init_endpoint(&mut conn.orig, f, m.seq, seq_end);
    // The SYN sits at relative 0 of the space it starts; a SYN never flips the roles here.
    update_history(conn, true, f, 0, 0);
    update_window(conn, true, m.window, f);
    conn.last_ns = now_ns;
    init_window(&mut conn.orig, &mut conn.resp, f, window_scale);
    update_last_seq(conn, true, seq_end, f, 0);
    // `state_machine`: an INACTIVE originator sends a SYN.
    set_state(conn, true, state::SYN_SENT, &mut ch);
    conn.flags |= CONN_ATTEMPT_ARMED;
    ch.insert(Changes::ATTEMPT_ARMED);
    conn.orig.count_packet(m.pkts, m.ip_bytes);
    ch | Changes::STATE_CHANGED
}

/// `init_endpoint`: sets the sender's sequence space on its first packet (a missing SYN is
/// pretended at seq - 1 so that relative numbering starts at 1), and again on a SYN that
/// restarts the connection.
fn init_endpoint(ep: &mut Endpoint, f: Flags, seq: u32, seq_end: u32) {
    if ep.state == state::INACTIVE {
        if f.syn {
            ep.init_seq(seq, seq, seq_end);
        } else {
            let start = seq.wrapping_sub(1);
            ep.init_seq(start, start, seq);
        }
        return;
    }
    let restart = f.syn
        && match ep.state {
            state::SYN_SENT | state::SYN_ACK_SENT => seq != ep.start_seq,
            state::ESTABLISHED | state::PARTIAL => true,
            // Sequence numbers set up by a (possibly injected) RST are replaced by a real SYN.
            state::RESET => ep.prev_state == state::INACTIVE,
            _ => false,
        };
    if restart {
        ep.init_seq(seq, seq, seq_end);
    }
}

/// `update_history`: S/H/F/R (repeated only at a new relative sequence), I/Q, D/A once per
/// direction, and the SYN-ACK-first flip (`H` -> `^h`) on the next pure ACK or data packet.
/// Returns true if the roles were flipped.
fn update_history(conn: &mut Conn, is_orig: bool, f: Flags, rel_seq: u64, len: u32) -> bool {
    let bits = f.syn as u8 + f.fin as u8 + f.rst as u8;
    if bits > 1 {
        let (_, _, h) = parts(conn, is_orig);
        if f.fin && f.rst {
            h.check(mask::FIN_RST, b'I', is_orig);
        } else {
            h.check(mask::MULTI_FLAG, b'Q', is_orig);
        }
        return false;
    }
    if bits == 1 {
        let (ep, _, h) = parts(conn, is_orig);
        if f.syn {
            let code = if f.ack { b'H' } else { b'S' };
            if h.check(mask::SYN, code, is_orig) && rel_seq != ep.hist_last_syn as u64 {
                h.add(code, is_orig);
            }
            ep.hist_last_syn = rel_seq as u32;
        } else if f.fin {
            // A FIN's sequence is taken at the end of its payload.
            let fin_seq = (rel_seq as u32).wrapping_add(len);
            if h.check(mask::FIN, b'F', is_orig) && fin_seq != ep.hist_last_fin {
                h.add(b'F', is_orig);
            }
            ep.hist_last_fin = fin_seq;
        } else {
            if h.check(mask::RST, b'R', is_orig) && rel_seq != ep.hist_last_rst as u64 {
                h.add(b'R', is_orig);
            }
            ep.hist_last_rst = rel_seq as u32;
        }
        return false;
    }
    if len == 0 && !f.ack {
        return false;
    }
    let mut is_orig = is_orig;
    let mut flipped = false;
    if conn.history.is(b"H") {
        swap_roles(conn);
        conn.history.rewrite_syn_ack_flip();
        is_orig = !is_orig;
        flipped = true;
    }
    if len > 0 {
        conn.history.check(mask::DATA, b'D', is_orig);
    } else {
        conn.history.check(mask::ACK, b'A', is_orig);
    }
    flipped
}

/// `update_window`: W/w (logarithmic) for a zero window, unless the packet is a RST, the sender
/// was reset or its peer closed.
fn update_window(conn: &mut Conn, is_orig: bool, window: u16, f: Flags) {
    let (ep, peer, h) = parts(conn, is_orig);
    let scaled = (window as u32).wrapping_shl(ep.window_scale as u32);
    if scaled == 0 && !f.rst && peer.state != state::CLOSED && ep.state != state::RESET {
        h.scaled(&mut ep.win0_cnt, b'W', is_orig);
    }
}

/// `init_window`: records the window scale of a SYN; a SYN-ACK without the option means scaling
/// was not negotiated for either side.
fn init_window(ep: &mut Endpoint, peer: &mut Endpoint, f: Flags, scale: u8) {
    if scale == NO_WINDOW_SCALE {
        ep.window_scale = 0;
        if f.ack {
            peer.window_scale = 0;
        }
    } else {
        ep.window_scale = scale;
    }
}

/// The ACK part: the first ACK for an INACTIVE peer starts the peer's sequence space at
/// ack - 1 (`init_peer`); otherwise the peer's highest ack moves forward, except on RST packets.
/// Returns the relative ack (0 on underflow, 1 for a freshly initialised peer).
fn process_ack(conn: &mut Conn, is_orig: bool, f: Flags, ack: u32) -> u64 {
    if !f.ack {
        return 0;
    }
    let (_, peer, _) = parts(conn, is_orig);
    if peer.state == state::INACTIVE {
        let start = ack.wrapping_sub(1);
        peer.init_seq(start, start, start);
        return 1;
    }
    match peer.rel_ack(ack) {
        None => 0,
        Some(r) => {
            if !f.rst {
                peer.update_ack_seq(ack);
            }
            r
        }
    }
}

/// `update_last_seq`: moves the sender's highest sequence forward; a payload that does not
/// advance it is a retransmission (T/t, logarithmic). SYN/RST jumps over 1 MiB and anything
/// after the sender's RST are not trusted.
fn update_last_seq(conn: &mut Conn, is_orig: bool, seq_end: u32, f: Flags, len: u32) {
    let (ep, _, h) = parts(conn, is_orig);
    let delta = crate::tcp::seq_delta(seq_end, ep.last_seq);
    if (f.syn || f.rst) && !(-TOO_LARGE_SEQ_DELTA..=TOO_LARGE_SEQ_DELTA).contains(&delta) {
        // Not trusted.
    } else if f.fin && ep.last_seq == ep.start_seq.wrapping_add(1) {
        // Only the SYN was seen: take the FIN forward even past 2 GiB.
        ep.last_rel = ep
            .last_rel
            .wrapping_add(seq_end.wrapping_sub(ep.last_seq) as u64);
        ep.last_seq = seq_end;
    } else if ep.state == state::RESET {
        // Nothing after a RST is trusted.
    } else if delta > 0 {
        ep.set_last_seq(seq_end);
    } else if len > 0 {
        h.scaled(&mut ep.rxmit_cnt, b'T', is_orig);
    }
}

/// `TCP_Endpoint::SetState`: also notes when the connection leaves the handshake (the long
/// TCP inactivity timeout applies from then on).
fn set_state(conn: &mut Conn, orig_side: bool, new: u8, ch: &mut Changes) {
    let peer_state = if orig_side {
        conn.resp.state
    } else {
        conn.orig.state
    };
    let ep = ep_mut(conn, orig_side);
    if new == ep.state {
        return;
    }
    let left = !is_handshake(new) && is_handshake(ep.state) && is_handshake(peer_state);
    ep.prev_state = ep.state;
    ep.state = new;
    if left && !conn.has_flag(CONN_HANDSHAKE_LEFT) {
        conn.flags |= CONN_HANDSHAKE_LEFT;
        ch.insert(Changes::HANDSHAKE_LEFT);
    }
}

/// (state, prev_state) of the sender's peer.
#[inline(always)]
fn peer_state(conn: &Conn, is_orig: bool) -> (u8, u8) {
    let p = if is_orig { &conn.resp } else { &conn.orig };
    (p.state, p.prev_state)
}

/// Zeek's `UpdateStateMachine`, dispatched on the sender's state. Returns the (possibly
/// flipped) direction of the packet and whether the sender's close must be reported.
fn state_machine(
    conn: &mut Conn,
    is_orig: bool,
    meta: &PacketMeta,
    ch: &mut Changes,
) -> (bool, bool) {
    let f = Flags::of(meta);
    let mut is_orig = is_orig;
    let mut do_close = false;
    let sender_state = ep_mut(conn, is_orig).state;
    match sender_state {
        state::INACTIVE => {
            if f.syn {
                if is_orig {
                    let new = if f.ack {
                        state::SYN_ACK_SENT
                    } else {
                        state::SYN_SENT
                    };
                    set_state(conn, true, new, ch);
                    conn.flags |= CONN_ATTEMPT_ARMED;
                    ch.insert(Changes::ATTEMPT_ARMED);
                } else {
                    let ep_start = conn.resp.start_seq;
                    if !f.ack && conn.orig.state == state::SYN_ACK_SENT && meta.seq == ep_start {
                        // SYN/SYN-ACK reversal: the SYN-ACK sender becomes the responder.
                        flip_roles(conn);
                        is_orig = true;
                        ch.insert(Changes::FLIPPED);
                        set_state(conn, false, state::ESTABLISHED, ch);
                    }
                    if peer_state(conn, is_orig).0 == state::SYN_SENT {
                        set_state(conn, !is_orig, state::ESTABLISHED, ch);
                    }
                    set_state(conn, is_orig, state::ESTABLISHED, ch);
                    if peer_state(conn, is_orig).0 != state::PARTIAL {
                        established(conn, ch);
                    }
                }
            }
            if f.fin {
                set_state(conn, is_orig, state::CLOSED, ch);
                do_close = true;
            }
            if f.rst {
                set_state(conn, is_orig, state::RESET, ch);
                do_close = true;
            }
            if ep_mut(conn, is_orig).state == state::INACTIVE {
                let peer_state = peer_state(conn, is_orig).0;
                if !is_orig && meta.payload_len == 0 && conn.orig.state == state::SYN_SENT {
                    // A pure ACK answering a SYN before the SYN-ACK: not a partial connection.
                } else if f.ack && peer_state == state::ESTABLISHED {
                    // The SYN was missed: the connection is established.
                    set_state(conn, is_orig, state::ESTABLISHED, ch);
                } else {
                    set_state(conn, is_orig, state::PARTIAL, ch);
                }
            }
        }
        state::SYN_SENT | state::SYN_ACK_SENT => {
            if f.fin {
                set_state(conn, is_orig, state::CLOSED, ch);
                do_close = true;
            }
            if f.rst {
                set_state(conn, is_orig, state::RESET, ch);
                do_close = true;
            }
        }
        state::ESTABLISHED | state::PARTIAL => {
            let ep_state = ep_mut(conn, is_orig).state;
            let (peer_st, peer_prev) = peer_state(conn, is_orig);
            if f.syn && !f.ack && ep_state == state::PARTIAL && peer_st == state::INACTIVE {
                set_state(conn, is_orig, state::SYN_SENT, ch);
            }
            if f.fin && !f.rst {
                set_state(conn, is_orig, state::CLOSED, ch);
                if peer_st == state::RESET && peer_prev == state::CLOSED {
                    // The peer's RST came after its FIN: it counts as closed.
                    set_state(conn, !is_orig, state::CLOSED, ch);
                }
                do_close = true;
            }
            if f.rst {
                set_state(conn, is_orig, state::RESET, ch);
                do_close = true;
            }
        }
        // After a FIN exchange a RST does not change the state.
        state::CLOSED if f.rst && peer_state(conn, is_orig).0 != state::CLOSED => {
            set_state(conn, is_orig, state::RESET, ch);
            if !ep_mut(conn, is_orig).did_close() {
                do_close = true;
            }
        }
        _ => {}
    }
    (is_orig, do_close)
}

/// Zeek's `connection_established`.
fn established(conn: &mut Conn, ch: &mut Changes) {
    if !conn.has_flag(CONN_ESTABLISHED) {
        conn.flags |= CONN_ESTABLISHED;
    }
    ch.insert(Changes::ESTABLISHED);
}

/// `ConnectionClosed`: marks the sender's close as reported. Once the close is complete (the
/// sender reset, the peer closed too or never became active) Zeek cancels the attempt and
/// expire timers and arms the removal at `last_time + tcp_close_delay`; a later complete close
/// re-arms it. A close that is not complete, from an endpoint that was active before, arms an
/// extra expire check at `last_time + tcp_session_timer` (`CONN_HALF_CLOSED`).
fn connection_closed(conn: &mut Conn, is_orig: bool, ch: &mut Changes) {
    let (ep, peer, _) = parts(conn, is_orig);
    if ep.did_close() {
        return;
    }
    ep.flags |= EP_DID_CLOSE;
    let complete = ep.state == state::RESET || peer.did_close() || peer.state == state::INACTIVE;
    let was_active = ep.prev_state != state::INACTIVE;
    if complete {
        conn.flags |= CONN_CLOSE_ARMED;
        conn.flags &= !(CONN_ATTEMPT_ARMED | CONN_HALF_CLOSED);
        ch.insert(Changes::CLOSED);
    } else if was_active {
        conn.flags |= CONN_HALF_CLOSED;
    }
}

/// True for an endpoint that is cleanly established or closing after being established.
#[inline(always)]
fn clean(ep: &Endpoint) -> bool {
    ep.state == state::ESTABLISHED
        || (ep.state == state::CLOSED && ep.prev_state == state::ESTABLISHED)
}

/// The peer's `AckReceived`: bytes acknowledged but never seen are a content gap
/// (missed_bytes, G/g, logarithmic), reported only when both endpoints are cleanly established
/// or closing after being established (Zeek's `established_or_cleanly_closing`).
fn ack_received(conn: &mut Conn, acker_is_orig: bool, rel_ack: u64) {
    let partial = conn.has_flag(CONN_PARTIAL);
    let (acker, data_ep, h) = parts(conn, acker_is_orig);
    let missing = data_ep.ack_received(rel_ack, partial);
    if missing == 0 || !clean(acker) || !clean(data_ep) {
        return;
    }
    data_ep.missed_bytes = data_ep.missed_bytes.wrapping_add(missing);
    // Zeek counts G once per hole (`content_gap`); once per acknowledgement here keeps the
    // verifier's path count of `engine::update` within budget (differs from the 10th on).
    h.scaled(&mut data_ep.gap_cnt, b'G', !acker_is_orig);
}
