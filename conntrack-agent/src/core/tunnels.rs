//! Tunnels on the agent's side (`read --tunnel-max-depth`): each inner connection's
//! `tunnel_parents`, the uids of its enclosing tunnels (the one it was created in, and each one
//! it changed to while Zeek still reports changes), and tunnel.log. The datapath keeps the
//! per-connection encapsulation state (`Conn::encap`, common's `tunnel::check_encap`).

use crate::logs::tunnel_log::{Action, TunnelLog, TunnelRecord};
use crate::util::hashing::FastMap;
use conntrack_common::conn::{CONN_TUNNEL_CONFIRMED, Conn};
use conntrack_common::key::FlowKey;
use conntrack_common::tunnel::{self, TunnelType};

/// The encapsulation of the packet being processed: its identity (common's `tunnel::encap_id`)
/// and the uid of its innermost tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encap {
    pub id: u32,
    pub parent: String,
}

/// A tunnel as tunnel.log names it.
#[derive(Debug, Clone)]
struct Known {
    uid: String,
    tunnel: TunnelType,
    orig: [u8; 16],
    orig_p: u16,
    resp: [u8; 16],
    resp_p: u16,
}

/// The tunnels seen and the parents of the inner connections still open.
pub struct Tunnels {
    log: TunnelLog,
    parents: FastMap<FlowKey, Vec<String>>,
    /// IP tunnels (GRE, IP-in-IP) by address pair (smaller first) and type.
    ip_tunnels: FastMap<([u8; 16], [u8; 16], TunnelType), String>,
    /// UDP tunnels by their connection's key, for `Tunnel::CLOSE` when it is removed.
    udp_tunnels: FastMap<FlowKey, Known>,
    /// The current packet's encapsulation (None: not encapsulated).
    pub current: Option<Encap>,
    /// The connection the current packet created, if it created one.
    pub created: Option<FlowKey>,
    /// Some packet was encapsulated: from then on a packet outside any tunnel may be a
    /// change for its connection too (until then no packet needs the lookup).
    pub seen: bool,
    /// A UDP tunnel's connection gets its analyzer's name in `service` ([`Tunnels::service`]).
    pub services: bool,
}

/// The name Zeek logs in `service` for the outer connection of a UDP tunnel: its packet
/// analyzer confirms the protocol once it has decapsulated a packet. IP tunnels (IP-in-IP,
/// GRE, GRE over UDP) have no connection of their own that names them.
pub fn service_name(tunnel: TunnelType) -> Option<&'static str> {
    match tunnel {
        TunnelType::Ayiya => Some("ayiya"),
        TunnelType::Teredo => Some("teredo"),
        TunnelType::Gtpv1 => Some("gtpv1"),
        TunnelType::Vxlan => Some("vxlan"),
        TunnelType::Geneve => Some("geneve"),
        TunnelType::Ip | TunnelType::Gre => None,
    }
}

impl Tunnels {
    pub fn new(log: TunnelLog) -> Self {
        Self {
            log,
            parents: FastMap::default(),
            ip_tunnels: FastMap::default(),
            udp_tunnels: FastMap::default(),
            current: None,
            created: None,
            seen: false,
            services: false,
        }
    }

    /// `key`'s tunnel name in `service`, if it is a UDP tunnel's connection (discovered: a
    /// packet was decapsulated from it) and service detection is on. Asked before
    /// [`Tunnels::removed`], with the connection `conn` as logged.
    // Inline: asked for every connection logged, and most runs have no UDP tunnel.
    #[inline]
    pub fn service(&self, key: &FlowKey, conn: &Conn) -> Option<&'static str> {
        if !self.services {
            return None;
        }
        if conn.flags & CONN_TUNNEL_CONFIRMED != 0 {
            return tunnel::header_tunnel(conn.resp_port).and_then(service_name);
        }
        if self.udp_tunnels.is_empty() {
            return None;
        }
        self.tunnel_service(key, conn)
    }

    fn tunnel_service(&self, key: &FlowKey, conn: &Conn) -> Option<&'static str> {
        let k = self.udp_tunnels.get(key)?;
        // Zeek's Teredo analyzer confirms only once both directions carried Teredo (a
        // one-way packet to a Teredo port may be anything); the others at their first packet.
        if k.tunnel == TunnelType::Teredo && (conn.orig_pkts() == 0 || conn.resp_pkts() == 0) {
            return None;
        }
        service_name(k.tunnel)
    }

    /// The uid of the IP tunnel between `src` and `dst` (a new one, discovered now, if it was
    /// not seen before).
    pub fn ip_parent(
        &mut self,
        tunnel: TunnelType,
        src: [u8; 16],
        dst: [u8; 16],
        ts_ns: i64,
        new_uid: impl FnOnce() -> String,
    ) -> anyhow::Result<String> {
        let pair = if src <= dst { (src, dst) } else { (dst, src) };
        if let Some(u) = self.ip_tunnels.get(&(pair.0, pair.1, tunnel)) {
            return Ok(u.clone());
        }
        let uid = new_uid();
        self.ip_tunnels
            .insert((pair.0, pair.1, tunnel), uid.clone());
        let k = Known {
            uid: uid.clone(),
            tunnel,
            orig: src,
            orig_p: 0,
            resp: dst,
            resp_p: 0,
        };
        self.write(&k, ts_ns, Action::Discover)?;
        Ok(uid)
    }

    /// A UDP tunnel's connection `key` (named `uid`, oriented as given): discovered the first
    /// time, then its uid is the parent.
    #[allow(clippy::too_many_arguments)]
    pub fn udp_parent(
        &mut self,
        key: FlowKey,
        tunnel: TunnelType,
        uid: String,
        orig: ([u8; 16], u16),
        resp: ([u8; 16], u16),
        ts_ns: i64,
    ) -> anyhow::Result<String> {
        if let Some(k) = self.udp_tunnels.get(&key) {
            return Ok(k.uid.clone());
        }
        let k = Known {
            uid: uid.clone(),
            tunnel,
            orig: orig.0,
            orig_p: orig.1,
            resp: resp.0,
            resp_p: resp.1,
        };
        self.write(&k, ts_ns, Action::Discover)?;
        self.udp_tunnels.insert(key, k);
        Ok(uid)
    }

    fn write(&mut self, k: &Known, ts_ns: i64, action: Action) -> anyhow::Result<()> {
        self.log.write(&TunnelRecord {
            ts_ns,
            uid: &k.uid,
            orig: k.orig,
            orig_p: k.orig_p,
            resp: k.resp,
            resp_p: k.resp_p,
            tunnel: k.tunnel,
            action,
        })
    }

    /// `key` was created by the current packet: its first parent is the current tunnel.
    pub fn on_new(&mut self, key: FlowKey) {
        self.created = Some(key);
        if let Some(e) = &self.current {
            self.parents.insert(key, vec![e.parent.clone()]);
        } else if !self.parents.is_empty() {
            self.parents.remove(&key);
        }
    }

    /// A change Zeek reports: the new tunnel joins the parents (a set; none when the packet
    /// left the tunnels).
    pub fn on_change(&mut self, key: FlowKey) {
        if let Some(e) = &self.current {
            let p = self.parents.entry(key).or_default();
            if !p.contains(&e.parent) {
                p.push(e.parent.clone());
            }
        }
    }

    /// The kernel's report for `key`: created in the tunnel `parent` (`new`), or changed to it
    /// (a change Zeek reports); the parents as `on_new` and `on_change` keep them.
    pub fn add_parent(&mut self, key: FlowKey, parent: String, new: bool) {
        let p = self.parents.entry(key).or_default();
        if new {
            p.clear();
        }
        if !p.contains(&parent) {
            p.push(parent);
        }
    }

    /// `key` is being logged: its parents; a UDP tunnel's connection also closes its tunnel.
    pub fn removed(&mut self, key: &FlowKey, ts_ns: i64) -> anyhow::Result<Vec<String>> {
        // Asked at every removal, on a trace that most often has no tunnel at all: an empty
        // map is not probed.
        if !self.udp_tunnels.is_empty()
            && let Some(k) = self.udp_tunnels.remove(key)
        {
            self.write(&k, ts_ns, Action::Close)?;
        }
        if self.parents.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.parents.remove(key).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::conn_log::LogFormat;
    use conntrack_common::proto;

    fn v4(last: u8) -> [u8; 16] {
        std::net::Ipv4Addr::new(10, 0, 0, last)
            .to_ipv6_mapped()
            .octets()
    }

    #[test]
    fn a_udp_tunnels_connection_is_named_after_its_analyzer() {
        let dir = tempfile::tempdir().unwrap();
        let log = TunnelLog::create(dir.path(), LogFormat::Tsv, Default::default()).unwrap();
        let mut t = Tunnels::new(log);
        t.services = true;
        let outer = FlowKey::from_tuple(&v4(1), 50_000, &v4(2), 4789, proto::UDP);
        let other = FlowKey::from_tuple(&v4(1), 50_001, &v4(2), 4789, proto::UDP);
        let uid = "CHhAvVGS1DHFjwGM9".to_string();
        t.udp_parent(
            outer,
            TunnelType::Vxlan,
            uid,
            (v4(1), 50_000),
            (v4(2), 4789),
            0,
        )
        .unwrap();
        let one_way = Conn::ZERO;
        assert_eq!(t.service(&outer, &one_way), Some("vxlan"));
        assert_eq!(t.service(&other, &one_way), None, "nothing decapsulated");
        t.services = false;
        assert_eq!(t.service(&outer, &one_way), None, "service detection off");
        t.services = true;
        t.removed(&outer, 1).unwrap();
        assert_eq!(t.service(&outer, &one_way), None, "logged: forgotten");
    }

    #[test]
    fn teredo_is_confirmed_by_both_directions() {
        let dir = tempfile::tempdir().unwrap();
        let log = TunnelLog::create(dir.path(), LogFormat::Tsv, Default::default()).unwrap();
        let mut t = Tunnels::new(log);
        t.services = true;
        let outer = FlowKey::from_tuple(&v4(1), 3797, &v4(2), 3544, proto::UDP);
        let uid = "CHhAvVGS1DHFjwGM9".to_string();
        t.udp_parent(
            outer,
            TunnelType::Teredo,
            uid,
            (v4(1), 3797),
            (v4(2), 3544),
            0,
        )
        .unwrap();
        let mut conn = Conn::ZERO;
        conn.resp.pkts = 1;
        assert_eq!(t.service(&outer, &conn), None, "the server's packet only");
        conn.orig.pkts = 2;
        assert_eq!(t.service(&outer, &conn), Some("teredo"));
    }
}
