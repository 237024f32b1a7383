//! `detach`: removes the tracker's programs an agent left attached (killed after `run
//! --pin-dir`, see datapath/kernel/attached.rs) and, with `--pin-dir`, its pins.

use crate::cli::DetachArgs;
use crate::commands::run::handover;
use crate::datapath::kernel::{
    all_interfaces, detach_link, remove_clsact_filters, tracker_programs_on,
};
use anyhow::{Context, Result};

pub fn detach(args: DetachArgs) -> Result<()> {
    let mut removed = 0;
    // Pins first: removing a link's pin detaches it, and the chains are then checked for
    // whatever is still attached (pinned elsewhere, or held by a process).
    if let Some(root) = &args.pin_dir {
        for pin in handover::remove_pins(root, &args.iface)? {
            println!("removed pin {}", pin.display());
            removed += 1;
        }
    }
    let ifaces = if args.iface.is_empty() {
        all_interfaces()
    } else {
        args.iface.clone()
    };
    let mut unpinned_links = false;
    for iface in &ifaces {
        let programs = tracker_programs_on(iface).with_context(|| {
            format!("looking for the tracker's programs on {iface} (see `ip link`)")
        })?;
        for p in programs {
            match p.link_id {
                Some(link) => {
                    detach_link(link).with_context(|| format!("detaching {p}"))?;
                    println!("detached {p}");
                    removed += 1;
                    unpinned_links = true;
                }
                // Its link went between the query and now.
                None => log::info!("{p}: no link holds it any more"),
            }
        }
        for direction in remove_clsact_filters(iface) {
            println!("removed the clsact filter on {iface} {direction}");
            removed += 1;
        }
    }
    if removed == 0 {
        println!("{}", nothing_message(&ifaces, args.pin_dir.as_deref()));
    } else if unpinned_links && args.pin_dir.is_none() {
        println!(
            "(their pins, if any, stay in the --pin-dir the agent used: `conntrack-agent detach \
             --pin-dir DIR` removes them)"
        );
    }
    Ok(())
}

/// What `detach` says when it found nothing to remove.
fn nothing_message(ifaces: &[String], pin_dir: Option<&std::path::Path>) -> String {
    let pins = match pin_dir {
        Some(dir) => format!(" and no pins in {}", dir.display()),
        None => String::new(),
    };
    format!(
        "nothing to remove: no conntrack programs attached to {}{pins}",
        if ifaces.is_empty() {
            "any interface".to_string()
        } else {
            ifaces.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_remove_says_where_it_looked() {
        let ifaces = ["eth0".to_string(), "eth1".to_string()];
        let m = nothing_message(&ifaces, Some(std::path::Path::new("/sys/fs/bpf/c")));
        assert_eq!(
            m,
            "nothing to remove: no conntrack programs attached to eth0, eth1 and no pins in \
             /sys/fs/bpf/c"
        );
        assert!(nothing_message(&[], None).ends_with("attached to any interface"));
    }
}
