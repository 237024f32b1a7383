//! The agent's side of tunnel decapsulation: the encapsulation of the packets it is given,
//! the tunnels' uids (discovered in tunnel.log), and Zeek's tunnel-change rule.

use super::*;

impl Agent {
    /// Turns tunnel decapsulation's bookkeeping on: inner connections get `tunnel_parents`,
    /// tunnels are written to tunnel.log; with `services` (service detection on) a UDP
    /// tunnel's connection gets its analyzer's name in `service`.
    pub fn enable_tunnels(&mut self, log: TunnelLog, services: bool) {
        self.add_log(log.shared());
        let mut t = Tunnels::new(log);
        t.services = services;
        self.tunnels = Some(Box::new(t));
    }

    /// A new `--tunnel-max-depth` for the datapath (SIGHUP): packets from now on are opened
    /// that many layers deep (0: none). Connections already open keep what they are.
    pub fn set_tunnel_depth(&mut self, depth: u32) -> anyhow::Result<()> {
        self.dp.set_tunnel_depth(depth)?;
        Ok(())
    }

    /// Replay through a datapath that decapsulates (the kernel's): the verdicts on the next
    /// packet's inner layers (`Datapath::set_inner_verdicts`).
    pub fn set_inner_verdicts(&mut self, verdicts: Option<u32>) {
        self.dp.set_inner_verdicts(verdicts);
    }

    /// The encapsulation of the packets `process_ip` is given next (None: not encapsulated).
    pub fn set_encap(&mut self, encap: Option<Encap>) {
        if let Some(t) = &mut self.tunnels {
            t.seen |= encap.is_some();
            t.current = encap;
        }
    }

    /// The uid of the tunnel `hop` (its outer packet was just processed), discovering it in
    /// tunnel.log the first time; None when decapsulation is off or the outer connection is
    /// not tracked.
    pub fn tunnel_parent(&mut self, hop: &Hop<'_>, ts_ns: i64) -> anyhow::Result<Option<String>> {
        self.parent_uid(hop.tunnel, hop.outer_key, hop.src, hop.dst, ts_ns)
    }

    /// A UDP payload of connection `key`, just processed, whose header may confirm the
    /// tunnel registered on the connection's responder port (see the datapath's
    /// `confirm_tunnel_header`): for `service`, with decapsulation on.
    pub fn confirm_tunnel_header(&mut self, key: &FlowKey, payload: &[u8]) {
        if self.tunnels.as_ref().is_some_and(|t| t.services) {
            self.dp.confirm_tunnel_header(key, payload);
        }
    }

    /// The kernel's report that an inner connection was created in, or changed to, a tunnel:
    /// the tunnel's uid (discovered as `tunnel_parent` does) joins its parents.
    pub(super) fn encap_reported(&mut self, e: &EncapEvent, ts_ns: i64) -> anyhow::Result<()> {
        let Some(tunnel) = TunnelType::from_u8((e.flags >> ENCAP_TYPE_SHIFT) as u8) else {
            return Ok(());
        };
        // A UDP tunnel is its outer connection; an IP one the outer packet's addresses.
        let outer_key = tunnel.is_udp().then_some(e.parent);
        let (src, dst) = (e.parent.addr_a, e.parent.addr_b);
        let Some(parent) = self.parent_uid(tunnel, outer_key, src, dst, ts_ns)? else {
            return Ok(());
        };
        // Flags 0: the tunnel's packet made no connection; the tunnel is discovered all the same.
        if e.flags & (ENCAP_NEW | ENCAP_CHANGED) == 0 {
            return Ok(());
        }
        if let Some(t) = self.tunnels.as_mut() {
            t.add_parent(e.key, parent, e.flags & ENCAP_NEW != 0);
        }
        Ok(())
    }

    /// The uid of a tunnel (see `tunnel_parent`): a UDP tunnel's outer connection `outer_key`,
    /// or the IP tunnel between `src` and `dst`.
    fn parent_uid(
        &mut self,
        tunnel: TunnelType,
        outer_key: Option<FlowKey>,
        src: [u8; 16],
        dst: [u8; 16],
        ts_ns: i64,
    ) -> anyhow::Result<Option<String>> {
        let Some(t) = self.tunnels.as_mut() else {
            return Ok(None);
        };
        let uid_gen = &mut self.uid_gen;
        match outer_key {
            None => t
                .ip_parent(tunnel, src, dst, ts_ns, || uid_gen.next_uid().render())
                .map(Some),
            Some(key) => {
                let Some(uid) = self.tracker.uid(&key).filter(|u| *u != Uid::UNSET) else {
                    return Ok(None);
                };
                let Some(c) = self.dp.lookup(&key).or_else(|| self.overflow.lookup(&key)) else {
                    return Ok(None);
                };
                t.udp_parent(
                    key,
                    tunnel,
                    uid.render(),
                    (c.orig_addr, c.orig_port),
                    (c.resp_addr, c.resp_port),
                    ts_ns,
                )
                .map(Some)
            }
        }
    }

    /// Zeek's `CheckEncapsulation` for the connection of packet `ip`, just processed: a change
    /// of tunnel adds a parent (up to the limit, then `X`).
    pub(super) fn check_encap(&mut self, ip: &[u8]) {
        let Some(t) = self.tunnels.as_mut() else {
            return;
        };
        let created = t.created.take();
        let id = t.current.as_ref().map_or(0, |e| e.id);
        if !t.seen {
            return;
        }
        let mut meta = PacketMeta::default();
        if parse_ip(ip, &mut meta).is_err() {
            return;
        }
        let key = FlowKey::from_meta(&meta);
        let is_new = created == Some(key);
        let change = self
            .dp
            .check_encap(&key, id, is_new)
            .or_else(|| self.overflow.check_encap(&key, id, is_new));
        if change == Some(EncapChange::Changed) {
            t.on_change(key);
        }
    }
}
