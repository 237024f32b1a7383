//! `read --tunnel-max-depth N`: after an outer packet went through the agent, its inner
//! packets, layer by layer, each with Zeek's IP checks and its own checksum verdict, and each
//! in the encapsulation of the tunnels around it (for `tunnel_parents` and the change rule).

use crate::capture::checksum::ChecksumPolicy;
use crate::capture::tunnels::{check_inner, inner_of};
use crate::core::agent::Agent;
use crate::core::tunnels::Encap;
use conntrack_common::packet::IpView;
use conntrack_common::tunnel::{encap_id, is_ip_tunnel_proto};

/// The inner packets of `ip` (already processed, with `view` and transport checksum verdict
/// `checksum_ok`), nested at most `max_depth` deep. Zeek decapsulates only a valid packet:
/// a bad checksum at any layer stops it there.
#[allow(clippy::too_many_arguments)]
pub fn process_inner(
    agent: &mut Agent,
    ip: &[u8],
    view: &IpView,
    checksum_ok: bool,
    ts_ns: i64,
    policy: &ChecksumPolicy,
    max_depth: u32,
    uncaptured: usize,
    scratch: &mut Vec<u8>,
) -> anyhow::Result<()> {
    let (mut ip, mut view, mut ok) = (ip, *view, checksum_ok);
    let mut outer_id = 0u32;
    for _ in 0..max_depth {
        if !ok {
            break;
        }
        let Some(hop) = inner_of(ip, &view) else {
            break;
        };
        let Some(parent) = agent.tunnel_parent(&hop, ts_ns)? else {
            break;
        };
        let id = encap_id(outer_id, hop.tunnel, &hop.id_bytes());
        let (inner_view, inner_ok) = match check_inner(&hop.inner, policy, uncaptured) {
            Ok(v) => v,
            Err(why) => {
                log::debug!("inner packet of a {:?} tunnel dropped: {why:?}", hop.tunnel);
                break;
            }
        };
        // An inner GRE or IP-in-IP packet is a tunnel layer, not a connection.
        let r = if is_ip_tunnel_proto(inner_view.proto) {
            Ok(())
        } else {
            agent.set_encap(Some(Encap { id, parent }));
            let r = agent.process_ip(hop.inner.version, hop.inner.ip, ts_ns, inner_ok, scratch);
            agent.set_encap(None);
            r
        };
        if let Err(e) = r {
            if crate::logs::health::any_failing(&agent.log_health()) {
                return Err(e);
            }
            log::debug!("inner packet: engine: {e}");
            break;
        }
        (ip, view, ok, outer_id) = (hop.inner.ip, inner_view, inner_ok, id);
    }
    Ok(())
}
