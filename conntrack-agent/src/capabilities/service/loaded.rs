//! Which of Zeek's protocol analyzers are loaded. An analyzer attaches to a connection (by
//! port or by its DPD signature) only when its script is loaded, and loading the script is what
//! registers its ports, which puts them in `likely_server_ports` (`--likely-server-ports`, which
//! also decides orientation). So the same setting tells which names a run of Zeek could log: a
//! bare Zeek (`-b`, only the tunnel ports) logs none, one that loaded `base/protocols/http`
//! logs `http`.
//!
//! An analyzer that a loaded one starts inside a connection (WebSocket after an HTTP upgrade,
//! TLS inside QUIC, NTLM/GSSAPI inside LDAP) needs no script of its own: a set of names is kept
//! whole when one of its names belongs to a loaded analyzer.
//!
//! A few scripts register no port at all (POP3 attaches by its DPD signature only; the
//! WebSocket script loads the HTTP analyzer it needs). The ports cannot tell whether they were
//! loaded, so they count as loaded, as they are in Zeek's default configuration.

use crate::util::hashing::{FastMap, FastSet};
use conntrack_common::proto::{TCP, UDP};

/// The server ports each analyzer's script registers (Zeek's `scripts/base/protocols/*`),
/// by the name it logs in `service`. Data channels count as their control channel's.
fn registered_ports(name: &str) -> &'static [(u16, u8)] {
    match name {
        "dce_rpc" => &[(135, TCP)],
        "dhcp" => &[(67, UDP), (4011, UDP)],
        "dnp3_tcp" => &[(20000, TCP)],
        "dnp3_udp" => &[(20000, UDP)],
        "dns" => &[(53, UDP), (53, TCP), (137, UDP), (5353, UDP), (5355, UDP)],
        "finger" => &[(79, TCP)],
        "ftp" | "ftp-data" | "gridftp" | "gridftp-data" => &[(21, TCP), (2811, TCP)],
        "http" => &[
            (80, TCP),
            (81, TCP),
            (631, TCP),
            (1080, TCP),
            (3128, TCP),
            (8000, TCP),
            (8080, TCP),
            (8888, TCP),
        ],
        "imap" => &[(143, TCP)],
        "irc" | "irc-dcc-data" => &[(6666, TCP), (6667, TCP), (6668, TCP), (6669, TCP)],
        "krb" => &[(88, UDP)],
        "krb_tcp" => &[(88, TCP)],
        "ldap_tcp" => &[(389, TCP), (3268, TCP)],
        "ldap_udp" => &[(389, UDP)],
        "modbus" => &[(502, TCP)],
        "mqtt" => &[(1883, TCP)],
        "mysql" => &[(1434, TCP), (3306, TCP)],
        "ntp" => &[(123, UDP)],
        "postgresql" => &[(5432, TCP)],
        "quic" => &[(443, UDP)],
        "radius" => &[(1812, UDP)],
        "rdp" => &[(3389, TCP)],
        "rdpeudp" => &[(3389, UDP)],
        "redis" => &[(6379, TCP)],
        "sip" => &[(5060, UDP)],
        "smb" => &[(139, TCP), (445, TCP)],
        "smtp" => &[(25, TCP), (587, TCP)],
        "snmp" => &[(161, UDP), (162, UDP)],
        "socks" => &[(1080, TCP)],
        "ssh" => &[(22, TCP)],
        "ssl" => &[
            (443, TCP),
            (465, TCP),
            (563, TCP),
            (585, TCP),
            (614, TCP),
            (636, TCP),
            (989, TCP),
            (990, TCP),
            (992, TCP),
            (993, TCP),
            (995, TCP),
            (5223, TCP),
        ],
        "dtls" => &[(443, UDP)],
        "syslog" => &[(514, UDP)],
        "syslog_tcp" => &[(514, TCP)],
        "xmpp" => &[(5222, TCP), (5269, TCP)],
        // Started by another analyzer only (ntlm, gssapi, ...), or unknown here.
        _ => &[],
    }
}

/// The analyzers whose scripts register no port: nothing in `likely_server_ports` shows them,
/// so they count as loaded (see the module's documentation).
const PORTLESS: &[&str] = &["pop3", "websocket"];

/// The analyzers a run loaded, as its likely server ports tell.
#[derive(Debug, Default, Clone)]
pub struct Loaded {
    ports: FastSet<(u16, u8)>,
    /// [`Loaded::has`]'s answers so far, by the name's address and length: asked for the
    /// names of every connection logged, which are a few literals (a literal's address is
    /// its identity; another copy of the same name is only another entry).
    known: FastMap<(usize, usize), bool>,
}

impl Loaded {
    /// From the likely server ports as (port, IP protocol).
    pub fn new(likely_server_ports: &[(u16, u8)]) -> Self {
        Self {
            ports: likely_server_ports.iter().copied().collect(),
            known: FastMap::default(),
        }
    }

    /// Whether the analyzer that logs `name` is loaded.
    pub fn has(&mut self, name: &'static str) -> bool {
        let literal = (name.as_ptr() as usize, name.len());
        if let Some(&known) = self.known.get(&literal) {
            return known;
        }
        let has = PORTLESS.contains(&name)
            || registered_ports(name)
                .iter()
                .any(|p| self.ports.contains(p));
        self.known.insert(literal, has);
        has
    }

    /// Whether a run with these analyzers logs the set `names` (in confirmation order): one of
    /// them must be a loaded analyzer's.
    pub fn logs(&mut self, names: &[&'static str]) -> bool {
        names.iter().any(|n| self.has(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zeek with `-b` and only `base/protocols/conn`: the tunnels' ports.
    const BARE: &[(u16, u8)] = &[
        (2123, UDP),
        (2152, UDP),
        (3544, UDP),
        (4754, UDP),
        (4789, UDP),
        (5072, UDP),
        (6081, UDP),
    ];

    #[test]
    fn bare_zeek_logs_no_service() {
        let mut l = Loaded::new(BARE);
        assert!(!l.logs(&["dns"]));
        assert!(!l.logs(&["http"]));
        assert!(!l.logs(&["ssh"]));
    }

    #[test]
    fn scripts_without_ports_count_as_loaded() {
        // `zeek -b` with base/protocols/pop3 (or websocket) has the bare ports only.
        let mut l = Loaded::new(BARE);
        assert!(l.logs(&["pop3"]));
        assert!(
            l.logs(&["http", "websocket"]),
            "the websocket script loads http"
        );
        assert!(
            !l.logs(&["http"]),
            "without an upgrade, http alone is not logged"
        );
    }

    #[test]
    fn a_loaded_script_logs_its_analyzer_and_what_it_starts() {
        let mut ports = BARE.to_vec();
        ports.extend([(80, TCP), (8080, TCP)]);
        let mut l = Loaded::new(&ports);
        assert!(l.logs(&["http"]));
        assert!(l.logs(&["http", "websocket", "ssh"]), "started inside http");
        assert!(!l.logs(&["dns"]), "dns not loaded");
        assert!(!l.logs(&["ftp-data"]));
        ports.push((21, TCP));
        assert!(Loaded::new(&ports).logs(&["ftp-data"]), "with ftp");
    }
}
