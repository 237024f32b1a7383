//! [`Conn`], the flow-table value, and the conn.log field values derived from it (the rules of
//! Zeek's `scripts/base/protocols/conn/main.zeek`).
//!
//! The engine keeps only raw state and timestamps here; timers (attempt, inactivity, close
//! delay) are run by the agent from the timestamps and flags, so that the eBPF side never needs
//! a timer.

use crate::history::History;
use crate::proto;
use crate::tcp::{Endpoint, state};

/// `Conn::flags`: the roles were flipped at least once.
pub const CONN_FLIPPED: u16 = 1 << 0;
/// `Conn::flags`: the originator's SYN armed Zeek's attempt timer (the agent's tracker runs
/// the timers from the events' times: no timestamp is kept here).
pub const CONN_ATTEMPT_ARMED: u16 = 1 << 1;
/// `Conn::flags`: a TCP endpoint left the handshake; from then on the
/// TCP inactivity timeout (5 min) applies instead of the initial 1 min.
pub const CONN_HANDSHAKE_LEFT: u16 = 1 << 2;
/// `Conn::flags`: the close completed (both closed, or a RST, or the peer never active); Zeek
/// removes the connection at `tcp_close_delay` after the last packet and cancels its attempt and expire
/// timers (`CancelTimers`; the attempt flag is cleared). Only the inactivity timer remains.
pub const CONN_CLOSE_ARMED: u16 = 1 << 3;
/// `Conn::flags`: `connection_established` happened.
pub const CONN_ESTABLISHED: u16 = 1 << 4;
/// `Conn::flags`: an endpoint that had been active closed without completing the close; Zeek
/// arms an extra `ExpireTimer` chain at `tcp_session_timer` after the last packet (re-armed every
/// `tcp_session_timer`), besides the one started at `start_ns + tcp_SYN_timeout`.
pub const CONN_HALF_CLOSED: u16 = 1 << 5;
/// `Conn::flags`: TCP connection that did not start with a plain SYN (approximates Zeek's
/// `is_partial`; a flip clears it). Only used for the first-ack gap exception.
pub const CONN_PARTIAL: u16 = 1 << 6;
/// `Conn::flags`: Zeek attached its DNS analyzer (UDP, responder port 53/137/5353/5355 in
/// `likely_server_ports` at creation; registering the port is what puts it in that set).
pub const CONN_DNS_ANALYZER: u16 = 1 << 7;
/// `Conn::flags`: Zeek attached its NTP analyzer (UDP, responder port 123 registered).
pub const CONN_NTP_ANALYZER: u16 = 1 << 8;
/// `Conn::flags`: the attached analyzer's one orientation decision is spent (DNS: it parsed
/// its first message; NTP: it flipped once).
pub const CONN_ANALYZER_DECIDED: u16 = 1 << 9;
/// `Conn::flags`: a datagram of this UDP flow carried a tunnel found by its content (Teredo
/// or AYIYA off their ports). Zeek tries that detection on every datagram, so the flow's
/// packets no longer take a fast path (the kernel's tunnel stage sets it).
pub const CONN_TUNNEL_DETECTED: u16 = 1 << 10;
/// `Conn::flags`: a datagram of this UDP flow had the header of the tunnel registered on its
/// responder port (VXLAN, Geneve, AYIYA), whose analyzer Zeek confirms on the header alone
/// (`tunnel::header_confirms`): conn.log's `service` names the tunnel.
pub const CONN_TUNNEL_CONFIRMED: u16 = 1 << 11;

/// One connection: the flow-table value shared by the eBPF program and the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    /// Originator address (after orientation), IPv4-mapped for IPv4.
    pub orig_addr: [u8; 16],
    /// Responder address.
    pub resp_addr: [u8; 16],
    /// Time of the packet that created the connection (ns).
    pub start_ns: u64,
    /// Zeek's `last_time` (ns).
    pub last_ns: u64,
    /// Originator endpoint.
    pub orig: Endpoint,
    /// Responder endpoint.
    pub resp: Endpoint,
    /// History letters.
    pub history: History,
    /// Originator port (ICMP: type).
    pub orig_port: u16,
    /// Responder port (ICMP: counterpart type or code).
    pub resp_port: u16,
    /// `CONN_*` flags.
    pub flags: u16,
    /// IP protocol number.
    pub proto: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// Spin lock used only by the eBPF glue (`bpf_spin_lock`-sized).
    pub lock: u32,
    /// Bits (`threshold::bit(slot)`) of the slots of `thr` that hold a threshold: the one
    /// word the per-packet check reads when nothing is armed.
    pub thr_armed: u32,
    /// The interface (index) of the connection's first packet; 0 when unknown (replays).
    /// Written by the eBPF glue at creation, for rules that match on the interface.
    pub ifindex: u32,
    /// The encapsulation of the connection's last packet and the tunnel changes counted
    /// (`tunnel::check_encap`); 0 for a connection never seen in a tunnel.
    pub encap: u32,
    /// The lowest pending threshold per `threshold::slot`: IP bytes and packets of the
    /// originator, the responder and both, and the duration in ns; pending while its bit is in
    /// `thr_armed` (0 = none). Written by the agent (under the lock, through `conntrack_control`
    /// on eBPF); the engine disarms a crossed slot and keeps its value for the event.
    pub thr: [u64; crate::threshold::SLOTS],
}

impl Default for Conn {
    fn default() -> Self {
        Self::ZERO
    }
}

/// An all-zero connection, e.g. to insert into a BPF map before initialising it in place.
pub static ZERO_CONN: Conn = Conn::ZERO;

/// Zeek's conn_state values.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnStateCode {
    /// Attempt seen, no reply.
    S0 = 0,
    /// Established, not terminated.
    S1 = 1,
    /// Normal establishment and termination.
    SF = 2,
    /// Attempt rejected.
    REJ = 3,
    /// Established, originator closed, no reply from responder.
    S2 = 4,
    /// Established, responder closed, no reply from originator.
    S3 = 5,
    /// Originator aborted (RST).
    RSTO = 6,
    /// Responder sent RST.
    RSTR = 7,
    /// Originator sent SYN then RST, no SYN-ACK from the responder.
    RSTOS0 = 8,
    /// Responder sent SYN-ACK then RST, no SYN from the originator.
    RSTRH = 9,
    /// Originator sent SYN then FIN, no SYN-ACK ("half open").
    SH = 10,
    /// Responder sent SYN-ACK then FIN, no SYN from the originator.
    SHR = 11,
    /// No SYN seen, just midstream traffic (or non-TCP/UDP).
    OTH = 12,
}

impl ConnStateCode {
    /// The conn.log spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S0 => "S0",
            Self::S1 => "S1",
            Self::SF => "SF",
            Self::REJ => "REJ",
            Self::S2 => "S2",
            Self::S3 => "S3",
            Self::RSTO => "RSTO",
            Self::RSTR => "RSTR",
            Self::RSTOS0 => "RSTOS0",
            Self::RSTRH => "RSTRH",
            Self::SH => "SH",
            Self::SHR => "SHR",
            Self::OTH => "OTH",
        }
    }
}

/// Zeek's `/^?S[^HAFGIQ]*R.*/` on the history: an optional `^`, then `S`, then no letter of
/// H, A, F, G, I, Q (upper case: the originator's) before an `R`.
fn history_is_syn_then_rst(h: &[u8]) -> bool {
    let mut i = 0usize;
    if h.first() == Some(&b'^') {
        i = 1;
    }
    if h.get(i) != Some(&b'S') {
        return false;
    }
    i += 1;
    let rest = h.get(i..).unwrap_or(&[]);
    for &c in rest {
        match c {
            b'R' => return true,
            b'H' | b'A' | b'F' | b'G' | b'I' | b'Q' => return false,
            _ => {}
        }
    }
    false
}

#[inline(always)]
fn inactive_or_partial(s: u8) -> bool {
    s == state::INACTIVE || s == state::PARTIAL
}

impl Conn {
    /// An all-zero connection.
    pub const ZERO: Conn = Conn {
        orig_addr: [0; 16],
        resp_addr: [0; 16],
        start_ns: 0,
        last_ns: 0,
        orig: Endpoint::ZERO,
        resp: Endpoint::ZERO,
        history: History::EMPTY,
        orig_port: 0,
        resp_port: 0,
        flags: 0,
        proto: 0,
        ip_version: 0,
        lock: 0,
        thr_armed: 0,
        ifindex: 0,
        encap: 0,
        thr: [0; crate::threshold::SLOTS],
    };

    /// True for TCP.
    #[inline(always)]
    pub fn is_tcp(&self) -> bool {
        self.proto == proto::TCP
    }

    /// True for UDP.
    #[inline(always)]
    pub fn is_udp(&self) -> bool {
        self.proto == proto::UDP
    }

    /// True for ICMP or ICMPv6.
    #[inline(always)]
    pub fn is_icmp(&self) -> bool {
        self.proto == proto::ICMP || self.proto == proto::ICMPV6
    }

    /// True if any flag of `mask` is set.
    #[inline(always)]
    pub fn has_flag(&self, mask: u16) -> bool {
        self.flags & mask != 0
    }

    /// conn.log `proto`: tcp, udp, icmp (also for ICMPv6) or unknown_transport.
    pub fn proto_name(&self) -> &'static str {
        match self.proto {
            proto::TCP => "tcp",
            proto::UDP => "udp",
            proto::ICMP | proto::ICMPV6 => "icmp",
            _ => "unknown_transport",
        }
    }

    /// Whether `init_conn` has built this entry. The eBPF program inserts a new connection's
    /// entry all zero but its lock word (taken) and builds it under that lock; a reader that
    /// does not take the lock (the agent's shutdown drain) can copy it in between. A built
    /// connection always has its IP version (its start time may be 0, in a replay).
    pub fn is_built(&self) -> bool {
        self.ip_version != 0
    }

    /// conn.log `duration` in ns (`last_time - start_time`). Zeek logs duration and the byte
    /// counts only when this is > 0.
    #[inline(always)]
    pub fn duration_ns(&self) -> u64 {
        self.last_ns.saturating_sub(self.start_ns)
    }

    /// conn.log `orig_bytes` (before the duration > 0 rule): TCP sequence-space size, UDP/ICMP
    /// payload bytes, 0 for other protocols.
    pub fn orig_bytes(&self) -> u64 {
        self.bytes(&self.orig, &self.resp)
    }

    /// conn.log `resp_bytes`, see [`Conn::orig_bytes`].
    pub fn resp_bytes(&self) -> u64 {
        self.bytes(&self.resp, &self.orig)
    }

    fn bytes(&self, ep: &Endpoint, peer: &Endpoint) -> u64 {
        match self.proto {
            proto::TCP => ep.size(peer.state),
            proto::UDP | proto::ICMP | proto::ICMPV6 => ep.data_bytes,
            _ => 0,
        }
    }

    /// conn.log `missed_bytes`: bytes acknowledged but never seen (Zeek's reassembler with a
    /// bounded number of buffered blocks, see `Endpoint::ack_received`).
    pub fn missed_bytes(&self) -> u64 {
        self.orig.missed_bytes.wrapping_add(self.resp.missed_bytes)
    }

    /// conn.log `history` letters (empty = `-`).
    #[inline(always)]
    pub fn history_str(&self) -> &[u8] {
        self.history.as_bytes()
    }

    /// conn.log `orig_pkts`.
    pub fn orig_pkts(&self) -> u64 {
        self.orig.pkts
    }

    /// conn.log `resp_pkts`.
    pub fn resp_pkts(&self) -> u64 {
        self.resp.pkts
    }

    /// conn.log `orig_ip_bytes`.
    pub fn orig_ip_bytes(&self) -> u64 {
        self.orig.ip_bytes
    }

    /// conn.log `resp_ip_bytes`.
    pub fn resp_ip_bytes(&self) -> u64 {
        self.resp.ip_bytes
    }

    /// conn.log `conn_state`, Zeek's `conn_state()` with its rules in their order.
    pub fn conn_state(&self) -> ConnStateCode {
        match self.proto {
            proto::TCP => self.tcp_conn_state(),
            proto::UDP => match (self.orig.is_active(), self.resp.is_active()) {
                (true, true) => ConnStateCode::SF,
                (true, false) => ConnStateCode::S0,
                (false, true) => ConnStateCode::SHR,
                (false, false) => ConnStateCode::OTH,
            },
            _ => ConnStateCode::OTH,
        }
    }

    fn tcp_conn_state(&self) -> ConnStateCode {
        let os = self.orig.state;
        let rs = self.resp.state;
        if rs == state::RESET {
            if os == state::SYN_SENT
                || os == state::SYN_ACK_SENT
                || (os == state::RESET && self.orig_bytes() == 0 && self.resp_bytes() == 0)
            {
                return ConnStateCode::REJ;
            }
            if inactive_or_partial(os) {
                return ConnStateCode::RSTRH;
            }
            return ConnStateCode::RSTR;
        }
        if os == state::RESET {
            if inactive_or_partial(rs) {
                if history_is_syn_then_rst(self.history_str()) {
                    return ConnStateCode::RSTOS0;
                }
                return ConnStateCode::OTH;
            }
            return ConnStateCode::RSTO;
        }
        if os == state::CLOSED && rs == state::CLOSED {
            return ConnStateCode::SF;
        }
        if os == state::CLOSED {
            return if inactive_or_partial(rs) {
                ConnStateCode::SH
            } else {
                ConnStateCode::S2
            };
        }
        if rs == state::CLOSED {
            return if inactive_or_partial(os) {
                ConnStateCode::SHR
            } else {
                ConnStateCode::S3
            };
        }
        if os == state::SYN_SENT && rs == state::INACTIVE {
            return ConnStateCode::S0;
        }
        if os == state::ESTABLISHED && rs == state::ESTABLISHED {
            return ConnStateCode::S1;
        }
        ConnStateCode::OTH
    }
}
