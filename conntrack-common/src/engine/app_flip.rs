//! Orientation flips made by Zeek's application analyzers in the middle of a UDP connection
//! (`zeek-conn-semantics.md`, "Orientation" item 3). Zeek attaches an analyzer by the
//! responder port at creation; the same `register_for_ports` call puts the port into
//! `likely_server_ports`, so [`attached_analyzer`] decides from that set.
//!
//! Both analyzers run after the UDP adapter has added the `D`/`d` letter and the payload bytes
//! for the packet's role, and before CONNSIZE counts it (CONNSIZE is added to the tree after
//! the port analyzers). `Connection::FlipRoles` swaps addresses and ports and CONNSIZE's
//! counters, and appends `^`; the UDP adapter's byte counts and the per-role history bits of
//! `Session::CheckHistory` stay with the roles. CONNSIZE then counts the packet for the role
//! it arrived in, which after the flip is the other host: the `D^` of
//! `scripts.base.protocols.ntp.misordered-ntp` with both packets on the originator.

use crate::conn::{
    CONN_ANALYZER_DECIDED, CONN_DNS_ANALYZER, CONN_FLIPPED, CONN_NTP_ANALYZER, Conn,
};
use crate::packet::{META_UDP_DNS_HEADER, META_UDP_NTP_MSG, PacketMeta};
use crate::proto;

use super::EngineConfig;

/// UDP ports Zeek's DNS analyzer registers for (`base/protocols/dns/main.zeek`).
const DNS_UDP_PORTS: [u16; 4] = [53, 137, 5353, 5355];
/// UDP port Zeek's NTP analyzer registers for (`base/protocols/ntp/main.zeek`).
const NTP_UDP_PORT: u16 = 123;

/// NTP modes (low 3 bits of the first byte).
const NTP_MODE_CLIENT: u8 = 3;
const NTP_MODE_SERVER: u8 = 4;

/// The `CONN_*_ANALYZER` flag for a new connection: Zeek builds the analyzer tree from the
/// responder port (after the creation flip), and only ports registered by a loaded analyzer
/// script get one, which is exactly what put them into `likely_server_ports`.
#[inline(always)]
pub fn attached_analyzer(proto_nr: u8, resp_port: u16, cfg: &impl EngineConfig) -> u16 {
    if proto_nr != proto::UDP || !cfg.likely_server_port(resp_port, proto::UDP) {
        return 0;
    }
    if resp_port == NTP_UDP_PORT {
        return CONN_NTP_ANALYZER;
    }
    let mut i = 0;
    while i < DNS_UDP_PORTS.len() {
        if DNS_UDP_PORTS[i] == resp_port {
            return CONN_DNS_ANALYZER;
        }
        i += 1;
    }
    0
}

/// IPv4 224.0.0.0/4 (IPv4-mapped) or IPv6 ff00::/8: Zeek's `IPAddr::IsMulticast`.
#[inline(always)]
pub fn is_multicast(a: &[u8; 16]) -> bool {
    // Two words, not byte slices: comparisons of byte arrays become `memcmp` on BPF.
    let (hi, lo) = crate::key::addr_words(a);
    if hi == 0 && lo >> 32 == 0xffff {
        (lo >> 28) & 0xf == 0xe
    } else {
        hi >> 56 == 0xff
    }
}

/// The DNS analyzer's rule (`DNS_Interpreter::ParseMessage`): the first message it parses (a
/// full 12-byte header, either direction) flips the connection when it comes from the
/// originator with QR = 1 (a response) and the responder address is not multicast. Returns
/// whether to flip; marks the one decision spent.
#[inline(always)]
pub fn dns_first_response_flips(conn: &mut Conn, meta: &PacketMeta, is_orig: bool) -> bool {
    if conn.flags & (CONN_DNS_ANALYZER | CONN_ANALYZER_DECIDED) != CONN_DNS_ANALYZER
        || meta.meta_flags & META_UDP_DNS_HEADER == 0
    {
        return false;
    }
    conn.flags |= CONN_ANALYZER_DECIDED;
    let response = meta.app_b2 & 0x80 != 0;
    is_orig && response && !is_multicast(&conn.resp_addr)
}

/// The NTP analyzer's rule (`proc_ntp_message`): a parsed message in server mode from the
/// originator, or in client mode from the responder, flips the connection, once.
#[inline(always)]
pub fn ntp_misordered_mode_flips(conn: &mut Conn, meta: &PacketMeta, is_orig: bool) -> bool {
    if conn.flags & (CONN_NTP_ANALYZER | CONN_ANALYZER_DECIDED) != CONN_NTP_ANALYZER
        || meta.meta_flags & META_UDP_NTP_MSG == 0
    {
        return false;
    }
    let mode = meta.app_b0 & 0x07;
    let flip = (is_orig && mode == NTP_MODE_SERVER) || (!is_orig && mode == NTP_MODE_CLIENT);
    if flip {
        conn.flags |= CONN_ANALYZER_DECIDED;
    }
    flip
}

/// `Connection::FlipRoles` from an application analyzer of a UDP connection: addresses,
/// ports and CONNSIZE's counters swap and `^` is appended; the UDP adapter's byte counts,
/// active flags, checksum counters and the history's per-role bits stay.
#[inline(always)]
pub fn analyzer_flip(conn: &mut Conn) {
    core::mem::swap(&mut conn.orig_addr, &mut conn.resp_addr);
    core::mem::swap(&mut conn.orig_port, &mut conn.resp_port);
    core::mem::swap(&mut conn.orig.pkts, &mut conn.resp.pkts);
    core::mem::swap(&mut conn.orig.ip_bytes, &mut conn.resp.ip_bytes);
    conn.history.push(b'^');
    conn.flags |= CONN_FLIPPED;
}

/// Both rules for one valid UDP packet already applied by the adapter; flips if one fires.
#[inline(always)]
pub fn apply(conn: &mut Conn, meta: &PacketMeta, is_orig: bool) -> bool {
    let flip = dns_first_response_flips(conn, meta, is_orig)
        || ntp_misordered_mode_flips(conn, meta, is_orig);
    if flip {
        analyzer_flip(conn);
    }
    flip
}
