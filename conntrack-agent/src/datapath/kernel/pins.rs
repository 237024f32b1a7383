//! Pinning, for a restart without loss (issue 8 point 5; the policy is in
//! commands/run/handover.rs): the maps a successor takes over, the TCX links it switches to its
//! programs, and the tail-call table kept alive in between.

use super::privileges::explain_eperm;
use super::{Kernel, KernelOptions, PROGRAMS};
use anyhow::{Context, Result, bail};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier};
use std::path::{Path, PathBuf};

/// Maps a successor takes over: the connections, the events produced while no agent runs, and
/// the counters. The others (config, ports, scratch, content extraction) belong to one
/// generation of programs: a successor creates its own, the old programs keep theirs until
/// their links are switched to the new ones.
pub const PINNED_MAPS: [&str; 3] = ["FLOWS", "EVENTS", "STATS"];

/// Pin of the running programs' tail-call table: the kernel empties a program array when its
/// last user reference goes, which would leave the attached entry programs without their
/// stages while no agent runs.
const STAGES_PIN: &str = "STAGES";

/// Pin name of the link of `iface`'s `program` in a pin directory (bpffs refuses names with a
/// dot, which interface names may contain: they become `_`).
pub fn link_pin_name(iface: &str, program: &str) -> String {
    let dir = if program == PROGRAMS[0].0 {
        "ingress"
    } else {
        "egress"
    };
    format!("link_{}_{dir}", iface.replace('.', "_"))
}

/// The ids of the TCX links pinned in `dir` (a predecessor's, which `attach_pinned` takes
/// over). Pins that are not links, or whose link is gone, are skipped.
pub fn pinned_link_ids(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("link_"))
        .filter_map(|e| PinnedLink::from_pin(e.path()).ok())
        .filter_map(|l| FdLink::from(l).info().ok())
        .map(|i| i.id())
        .collect()
}

impl Kernel {
    /// [`Kernel::load`] with [`PINNED_MAPS`] taken from `dir` (a predecessor's), or created and
    /// pinned there.
    pub fn load_pinned(opts: &KernelOptions<'_>, dir: &Path) -> Result<Kernel> {
        Self::load_with_pins(opts, Some(dir))
    }

    /// Attaches to `iface` through TCX links pinned in `dir`: a link a predecessor pinned is
    /// switched atomically to this program (BPF_LINK_UPDATE: no packet is missed or counted
    /// twice), otherwise a new link is created and pinned. Needs TCX (Linux 6.6+): a clsact
    /// filter cannot be pinned.
    pub fn attach_pinned(&mut self, iface: &str, dir: &Path) -> Result<()> {
        let c_name = std::ffi::CString::new(iface).context("interface name contains NUL")?;
        // SAFETY: a valid C string; if_nametoindex only reads it.
        if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
            bail!("interface {iface:?} not found (see `ip link`)");
        }
        for (name, kind) in PROGRAMS {
            let path = dir.join(link_pin_name(iface, name));
            let prog: &mut SchedClassifier = self
                .ebpf
                .program_mut(name)
                .with_context(|| format!("no program {name}"))?
                .try_into()?;
            let mut adopted = None;
            if path.exists() {
                let update = PinnedLink::from_pin(&path)
                    .map_err(anyhow::Error::new)
                    .and_then(|p| Ok(SchedClassifierLink::try_from(FdLink::from(p))?))
                    .and_then(|l| Ok(prog.attach_to_link(l)?));
                match update {
                    Ok(id) => adopted = Some(id),
                    Err(e) => {
                        // E.g. the interface was deleted and created again: the old link is
                        // defunct. Replace it.
                        log::warn!(
                            "{}: cannot take over ({e:#}); attaching anew",
                            path.display()
                        );
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            let fresh = adopted.is_none();
            let id = match adopted {
                Some(id) => id,
                None => prog
                    .attach_with_options(
                        iface,
                        kind,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(|e| explain_eperm(anyhow::Error::new(e)))
                    .with_context(|| {
                        format!(
                            "attaching {name} to {iface} with a TCX link (--pin-dir needs \
                             TCX, Linux 6.6 or later; run without --pin-dir on older kernels)"
                        )
                    })?,
            };
            let link = FdLink::try_from(prog.take_link(id)?)
                .context("the TCX attachment is not a BPF link")?;
            let link = if fresh {
                FdLink::from(
                    link.pin(&path)
                        .with_context(|| format!("pinning the link at {}", path.display()))?,
                )
            } else {
                link
            };
            log::info!(
                "{iface}: {name} {} ({})",
                if fresh {
                    "attached"
                } else {
                    "took over the pinned link"
                },
                path.display()
            );
            self.pinned_links.push((path, link));
        }
        Ok(())
    }

    /// Pins this generation's tail-call table in `dir` under a name of its own, before
    /// [`Kernel::attach_pinned`] switches links to this generation's programs: if the agent
    /// fails half-way, the programs of both generations keep their stages.
    pub fn stage_stages(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(format!("{STAGES_PIN}_next_{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        self.ebpf
            .map("STAGES")
            .context("no map STAGES")?
            .pin(&path)
            .with_context(|| format!("pinning STAGES at {}", path.display()))?;
        Ok(path)
    }

    /// Once every link runs this generation's programs: its tail-call table replaces the
    /// predecessor's pin (and any left by a start that failed half-way).
    pub fn commit_stages(dir: &Path, staged: &Path) -> Result<()> {
        let path = dir.join(STAGES_PIN);
        std::fs::rename(staged, &path)
            .with_context(|| format!("moving {} to {}", staged.display(), path.display()))?;
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{STAGES_PIN}_next_")) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Handover: lets go of the pinned links without detaching them (the programs keep
    /// accounting packets into the pinned maps). Returns how many.
    pub fn release_links(&mut self) -> usize {
        let n = self.pinned_links.len();
        self.pinned_links.clear();
        n
    }

    /// Stop for good: removes the links' pins, which detaches the programs.
    pub fn unpin_links(&mut self) {
        for (path, link) in self.pinned_links.drain(..) {
            if let Err(e) = std::fs::remove_file(&path) {
                log::warn!("removing {}: {e}", path.display());
            }
            drop(link);
        }
    }
}
