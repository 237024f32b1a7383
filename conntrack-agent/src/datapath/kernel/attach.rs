//! TC attachment: the ingress and egress programs on an interface, through TCX links where
//! the kernel has them, else a clsact qdisc with direct-action filters; and detaching them.

use super::privileges::explain_eperm;
use super::{Kernel, PROGRAMS};
use anyhow::{Context, Result, bail};
use aya::programs::tc::{NlOptions, TcAttachOptions, qdisc_add_clsact};
use aya::programs::{LinkOrder, SchedClassifier};

impl Kernel {
    /// Attaches ingress and egress to `iface`: TCX links where the kernel has them (>= 6.6),
    /// else a clsact qdisc with direct-action filters.
    pub fn attach(&mut self, iface: &str) -> Result<()> {
        let c_name = std::ffi::CString::new(iface).context("interface name contains NUL")?;
        // SAFETY: a valid C string; if_nametoindex only reads it.
        if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
            bail!("interface {iface:?} not found (see `ip link`)");
        }
        for (name, kind) in PROGRAMS {
            let prog: &mut SchedClassifier = self
                .ebpf
                .program_mut(name)
                .with_context(|| format!("no program {name}"))?
                .try_into()?;
            let tcx = prog.attach_with_options(
                iface,
                kind,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            );
            let link = match tcx {
                Ok(link) => link,
                Err(tcx_err) => {
                    log::info!("{iface}: TCX attach failed ({tcx_err}); using a clsact qdisc");
                    if let Err(e) = qdisc_add_clsact(iface) {
                        log::debug!("{iface}: clsact: {e} (may already exist)");
                    }
                    prog.attach_with_options(
                        iface,
                        kind,
                        TcAttachOptions::Netlink(NlOptions::default()),
                    )
                    .map_err(|e| explain_eperm(anyhow::Error::new(e)))
                    .with_context(|| format!("attaching {name} to {iface}"))?
                }
            };
            self.attached.push((iface.to_string(), name, link));
        }
        Ok(())
    }

    /// Detaches everything [`Kernel::attach`] attached (dropping the `Kernel` does too).
    pub fn detach_all(&mut self) {
        for (iface, name, link) in self.attached.drain(..) {
            let prog: Option<&mut SchedClassifier> =
                self.ebpf.program_mut(name).and_then(|p| p.try_into().ok());
            if let Some(prog) = prog
                && let Err(e) = prog.detach(link)
            {
                log::warn!("detaching {name} from {iface}: {e}");
            }
        }
    }
}
