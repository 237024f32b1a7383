//! The eBPF datapath: loads `conntrack-ebpf` (built by build.rs), attaches it to interfaces
//! (TCX, or netlink clsact on kernels without TCX), reads its ring buffer and counters, and
//! drives it with BPF_PROG_TEST_RUN for replays ([`KernelDatapath`]).
//!
//! The contract with the program (conntrack-ebpf/src/maps.rs): maps `FLOWS`,
//! `LIKELY_SERVER_PORTS`, `EVENTS`, `STATS`, `CONFIG`, `CONTENTS`, `CONTENTS_CONNS`;
//! `__sk_buff.cb[0]` flags and `__sk_buff.tstamp` in replay.
//!
//! What each file holds:
//! - `mod.rs`: the [`Kernel`] type and [`KernelOptions`]; loading the object (maps sized and
//!   filled, programs verified, tail-call tables installed), the event ring and `STATS`, and
//!   detaching on drop.
//! - `attach.rs`: attaching the TC programs to an interface (TCX, else a clsact qdisc) and
//!   detaching them.
//! - `attached.rs`: our programs already on an interface (a killed agent's), found and removed
//!   through the kernel's query APIs.
//! - `filter.rs`: the capture filter's program (`-f`), written to the `FILTER` map.
//! - `control.rs`: [`ControlProgram`], `conntrack_control` run by a raw BPF_PROG_TEST_RUN.
//! - `flows.rs`: [`FlowMap`] (the `FLOWS` map and content extraction's maps) and its live
//!   [`Datapath`](crate::datapath::Datapath).
//! - `replay.rs`: [`KernelDatapath`], replays through BPF_PROG_TEST_RUN of the TC program.
//! - `pins.rs`: pinned maps, links and tail-call table, for a restart without loss.
//! - `sensor.rs`: sensor mode, the XDP form of the program.
//! - `bench.rs`: single runs of a program for `cargo xtask bench`, TC and XDP.
//! - `flood.rs`: [`Flood`], the scale bench's generator of new flows (XDP live frames).
//! - `iface.rs`: per-interface counters (`IFACE_STATS`).
//! - `privileges.rs`: RLIMIT_MEMLOCK, the capabilities check, and errors explained (EPERM,
//!   the verifier's log).
//! - `tests.rs`: tests that load the program and run it.

mod attach;
mod attached;
mod bench;
mod control;
mod filter;
mod flood;
mod flows;
mod iface;
mod kernel_log;
mod pins;
mod privileges;
mod replay;
mod sensor;
#[cfg(test)]
mod tests;

pub use attached::{
    AttachedProgram, all_interfaces, detach_link, ifindex, remove_clsact_filters,
    tracker_programs_on,
};
pub use bench::{
    BENCH_EMPTY_PROGRAM, BENCH_EMPTY_XDP_PROGRAM, BENCH_FLOOR_CLOCK_PROGRAM,
    BENCH_FLOOR_LOOKUP_PROGRAM, BENCH_TRACKER_PROGRAM, BENCH_XDP_PROGRAM,
};
pub use control::ControlProgram;
pub use flood::Flood;
pub use flows::FlowMap;
pub use iface::ifindexes;
pub use kernel_log::{KernelLog, KernelLogSink};
pub use pins::{PINNED_MAPS, link_pin_name, pinned_link_ids};
pub use replay::{KernelDatapath, replay_datapath};
pub use sensor::{SensorAttach, SensorXdpMode};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, ProgramArray, RingBuf};
use aya::programs::links::FdLink;
use aya::programs::{SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use conntrack_common::event::Event;
use conntrack_common::stats::Stat;
use conntrack_common::threshold::ThresholdCommand;
use flows::KernelContents;
use privileges::{check_privileges, explain_eperm, raise_memlock_limit, verifier_error};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// The eBPF object; empty when build.rs could not build it (no bpf-linker).
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("CONNTRACK_EBPF_OBJ"));

/// Program names in the object.
const PROGRAMS: [(&str, TcAttachType); 2] = [
    ("conntrack_ingress", TcAttachType::Ingress),
    ("conntrack_egress", TcAttachType::Egress),
];

/// The later stages, tail-called through `STAGES[index]` (conntrack-ebpf/src/maps.rs).
const STAGE_PROGRAMS: [(&str, u32); 6] = [
    ("conntrack_parse", 0),
    ("conntrack_update", 1),
    ("conntrack_threshold", 2),
    ("conntrack_contents", 3),
    ("conntrack_note", 4),
    ("conntrack_tunnel", 5),
];

/// Threshold commands (never attached, run with BPF_PROG_TEST_RUN; conntrack-ebpf/src/control.rs).
const CONTROL_PROGRAM: &str = "conntrack_control";

/// `CONFIG` indices and flags (mirrors conntrack-ebpf/src/maps.rs).
const CONFIG_FLAGS: u32 = 0;
const CONFIG_CLOCK_OFFSET: u32 = 1;
const CONFIG_REPLAY: u64 = 1;
/// NewConn events carry the first packet's link layer (`--mac-logging`, `--vlan-logging`).
const CONFIG_L2: u64 = 2;
/// A capture filter is in the `FILTER` map; stage 1 runs it first.
const CONFIG_FILTER: u64 = 4;
/// The tunnel layers to open, in the flags word's bits 8..12 (conntrack-ebpf/src/tunnel.rs).
const CONFIG_TUNNEL_SHIFT: u64 = 8;
const CONFIG_TUNNEL_MASK: u64 = 0xf;
/// The program's own bound on the layers (`tunnel::MAX_LAYERS`: three tail calls each).
pub const MAX_TUNNEL_DEPTH: u32 = 8;
const CONFIG_CONTENTS_CAP: u32 = 2;
const CONFIG_CONTENTS_RATE: u32 = 3;
/// `CONFIG` flag: new connections hand their first payload to the agent (service detection).
const CONFIG_SERVICE: u64 = 8;
/// `CONTENTS` size when only service samples use it (no content extraction): a sample record
/// is ~2 KiB, and a few hundred new connections between two drains fit.
const SAMPLE_RING_BYTES: u32 = 4 << 20;

/// How the program is loaded.
pub struct KernelOptions<'a> {
    /// `FLOWS` size.
    pub max_flows: u32,
    /// Zeek's `likely_server_ports` as (port, IP protocol).
    pub likely_server_ports: &'a [(u16, u8)],
    /// Replay through BPF_PROG_TEST_RUN: the program trusts `tstamp` and `cb[0]`.
    pub replay: bool,
    /// Content extraction may be turned on: `CONTENTS` (32 MiB) and `CONTENTS_CONNS` get
    /// their full size. Without it they shrink to a page and one entry, which saves an idle
    /// agent that never extracts ~40 MB of kernel memory (and as much RSS: the ring is mapped).
    pub contents: bool,
    /// Service detection: new TCP/UDP connections hand the first payload of each direction to
    /// the agent (`CONTENTS` records flagged as samples).
    pub service: bool,
    /// The program's log lines (aya-log) to show and where (`run --kernel-log`); `None`: off.
    pub kernel_log: Option<KernelLogSink>,
    /// `EVENTS` size in bytes (a power of two of at least a page); 0: the program's 8 MiB.
    pub ring_bytes: u32,
    /// The capture filter (`-f`), compiled for Ethernet: the first stage runs it on every
    /// frame. `None`: no filter, and the first stage pays one bit test.
    pub filter: Option<&'a [conntrack_common::filter::Insn]>,
}

/// The loaded program and its maps.
pub struct Kernel {
    ebpf: Ebpf,
    flows: Option<FlowMap>,
    events: RingBuf<MapData>,
    stats: PerCpuArray<MapData, u64>,
    attached: Vec<(
        String,
        &'static str,
        aya::programs::tc::SchedClassifierLinkId,
    )>,
    /// TCX links pinned for a successor ([`Kernel::attach_pinned`]): dropping them leaves the
    /// programs attached; [`Kernel::unpin_links`] detaches them.
    pinned_links: Vec<(PathBuf, FdLink)>,
    /// The program's log lines, when `--kernel-log` asked for them (flushed with the events).
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

impl Kernel {
    /// Loads both programs (the verifier runs here), sizes `FLOWS`, fills
    /// `LIKELY_SERVER_PORTS` and `CONFIG`.
    pub fn load(opts: &KernelOptions<'_>) -> Result<Kernel> {
        Self::load_with_pins(opts, None)
    }

    /// [`Kernel::load`], reusing (or creating and pinning) the maps a successor takes over
    /// ([`PINNED_MAPS`]) in `pin_dir` when given.
    fn load_with_pins(opts: &KernelOptions<'_>, pin_dir: Option<&Path>) -> Result<Kernel> {
        if OBJECT.is_empty() {
            bail!(
                "the eBPF program was not built into this binary (bpf-linker or nightly was \
                 missing at build time): run `cargo xtask setup`, then `cargo xtask build`"
            );
        }
        check_privileges()?;
        raise_memlock_limit();
        let mut loader = EbpfLoader::new();
        loader.map_max_entries("FLOWS", opts.max_flows.max(1));
        if opts.ring_bytes != 0 {
            loader.map_max_entries("EVENTS", opts.ring_bytes.max(page_size()));
        }
        if !opts.contents {
            // A ring buffer's size is a power-of-two number of pages.
            // Service detection extracts FTP control channels (for their data connections'
            // announcements): a few at a time.
            let (ring, conns) = if opts.service {
                (SAMPLE_RING_BYTES.max(page_size()), 1024)
            } else {
                (page_size(), 1)
            };
            loader
                .map_max_entries("CONTENTS", ring)
                .map_max_entries("CONTENTS_CONNS", conns);
        }
        // aya-log's level in the program: 0 (none) unless asked for, so a rare condition costs
        // one load and branch.
        let log_level = opts.kernel_log.map_or(0, |k| k.level.level_byte());
        loader.override_global(aya_log::LEVEL, &log_level, true);
        let pin_paths: Vec<(&str, PathBuf)> = pin_dir
            .map(|d| PINNED_MAPS.iter().map(|n| (*n, d.join(n))).collect())
            .unwrap_or_default();
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| explain_eperm(anyhow::Error::new(e)))
            .context("loading the eBPF object")?;
        {
            let mut map: Array<_, u8> = Array::try_from(
                ebpf.map_mut("LIKELY_SERVER_PORTS")
                    .context("no map LIKELY_SERVER_PORTS")?,
            )?;
            for (port, bits) in likely_port_bits(opts.likely_server_ports) {
                map.set(port as u32, bits, 0)?;
            }
        }
        if let Some(insns) = opts.filter {
            filter::install(&mut ebpf, insns)?;
        }
        {
            let mut config: Array<_, u64> =
                Array::try_from(ebpf.map_mut("CONFIG").context("no map CONFIG")?)?;
            let mut flags = if opts.replay { CONFIG_REPLAY } else { 0 };
            if opts.filter.is_some() {
                flags |= CONFIG_FILTER;
            }
            if opts.service {
                flags |= CONFIG_SERVICE;
            }
            config.set(CONFIG_FLAGS, flags, 0)?;
            config.set(CONFIG_CLOCK_OFFSET, wall_minus_monotonic_ns(), 0)?;
        }
        let names = STAGE_PROGRAMS.iter().map(|(n, _)| *n);
        let names = names.chain(std::iter::once(CONTROL_PROGRAM));
        for name in names.chain(PROGRAMS.iter().map(|(n, _)| *n)) {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .with_context(|| format!("no program {name} in the eBPF object"))?
                .try_into()?;
            let loaded = prog.load();
            verified(&ebpf, name, loaded)?;
        }
        install_stages(&mut ebpf, "STAGES", &STAGE_PROGRAMS)?;
        let control = {
            let prog: &SchedClassifier = ebpf
                .program(CONTROL_PROGRAM)
                .context("no control program")?
                .try_into()?;
            ControlProgram {
                fd: prog.fd()?.as_fd().try_clone_to_owned()?,
            }
        };
        let flows_map = ebpf.take_map("FLOWS").context("no map FLOWS")?;
        let flows_fd = match &flows_map {
            aya::maps::Map::HashMap(d) => d
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .context("duplicating the FLOWS map's descriptor")?,
            _ => anyhow::bail!("FLOWS is not a hash map: the program and the agent disagree"),
        };
        let flows = HashMap::try_from(flows_map)?;
        let contents = KernelContents {
            records: RingBuf::try_from(ebpf.take_map("CONTENTS").context("no map CONTENTS")?)?,
            counters: HashMap::try_from(
                ebpf.take_map("CONTENTS_CONNS")
                    .context("no map CONTENTS_CONNS")?,
            )?,
            config: Array::try_from(ebpf.take_map("CONFIG").context("no map CONFIG")?)?,
            active: false,
        };
        let events = RingBuf::try_from(ebpf.take_map("EVENTS").context("no map EVENTS")?)?;
        let stats = PerCpuArray::try_from(ebpf.take_map("STATS").context("no map STATS")?)?;
        let logger = match opts.kernel_log {
            Some(k) if k.level != KernelLog::Off => Some(
                aya_log::EbpfLogger::init_with_logger(&mut ebpf, k.sink)
                    .context("reading the program's log lines (AYA_LOGS)")?,
            ),
            _ => None,
        };
        Ok(Kernel {
            ebpf,
            flows: Some(FlowMap {
                map: flows,
                fd: flows_fd,
                control,
                contents,
            }),
            events,
            stats,
            attached: Vec::new(),
            pinned_links: Vec::new(),
            logger,
        })
    }

    /// Moves the `FLOWS` map out (for a tracker that lives elsewhere than this `Kernel`).
    pub fn take_flows(&mut self) -> Option<FlowMap> {
        self.flows.take()
    }

    /// Appends every event waiting in the ring buffer to `out`; returns how many.
    /// A duplicate of the `EVENTS` ring buffer's descriptor, to wait on: the program wakes
    /// its readers once the ring is a quarter full.
    pub fn events_fd(&self) -> Result<std::os::fd::OwnedFd> {
        self.events
            .as_fd()
            .try_clone_to_owned()
            .context("duplicating the EVENTS ring buffer's descriptor")
    }

    pub fn drain_events(&mut self, out: &mut Vec<Event>) -> usize {
        if let Some(l) = &mut self.logger {
            l.flush();
        }
        let mut n = 0;
        while let Some(item) = self.events.next() {
            if let Some(ev) = Event::decode(&item) {
                out.push(ev);
                n += 1;
            }
        }
        n
    }

    /// Discards the waiting content records (while `FLOWS` has not been taken); returns how
    /// many.
    pub fn drain_content_records(&mut self) -> usize {
        let Some(flows) = self.flows.as_mut() else {
            return 0;
        };
        let mut n = 0;
        while flows.contents.records.next().is_some() {
            n += 1;
        }
        n
    }

    /// Every counter of `STATS`, summed over CPUs, in `Stat::ALL` order.
    pub fn stats(&self) -> Result<Vec<(Stat, u64)>> {
        Stat::ALL
            .iter()
            .map(|&s| {
                let per_cpu = self.stats.get(&s.index(), 0)?;
                Ok((s, per_cpu.iter().fold(0u64, |a, v| a.wrapping_add(*v))))
            })
            .collect()
    }

    /// A threshold command through `conntrack_control` (while `FLOWS` has not been taken).
    pub fn set_thresholds(&self, cmd: &ThresholdCommand) -> Result<u32> {
        let flows = self.flows.as_ref().context("FLOWS was taken")?;
        Ok(flows.control.run(cmd)?)
    }

    fn program(&self, name: &str) -> Result<&SchedClassifier> {
        Ok(self
            .ebpf
            .program(name)
            .with_context(|| format!("no program {name}"))?
            .try_into()?)
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// A program's load result with the verifier's refusal explained; logs how many instructions
/// the verifier processed (`RUST_LOG=info`), the figure to watch against its limits.
fn verified(
    ebpf: &Ebpf,
    name: &str,
    loaded: Result<(), aya::programs::ProgramError>,
) -> Result<()> {
    loaded
        .map_err(|e| explain_eperm(verifier_error(e)))
        .with_context(|| format!("loading {name} (BPF verifier)"))?;
    if let Some(n) = ebpf
        .program(name)
        .and_then(|p| p.info().ok())
        .and_then(|i| i.verified_instruction_count())
    {
        log::info!("{name}: the verifier processed {n} instructions");
    }
    Ok(())
}

/// Puts each loaded stage program at its index of the tail-call table `map`.
fn install_stages(ebpf: &mut Ebpf, map: &str, stages: &[(&str, u32)]) -> Result<()> {
    for &(name, index) in stages {
        let fd = ebpf
            .program(name)
            .with_context(|| format!("no stage {name}"))?
            .fd()?
            .try_clone()?;
        let mut table =
            ProgramArray::try_from(ebpf.map_mut(map).with_context(|| format!("no map {map}"))?)?;
        table
            .set(index, &fd, 0)
            .with_context(|| format!("installing {name} in {map}"))?;
    }
    Ok(())
}

/// `LIKELY_SERVER_PORTS`' entries for a list of (port, protocol): each port's protocol bits
/// (`proto::likely_port_bit`) together, in port order. Protocols without a bit are left out
/// (`parse_port_list` gives none).
fn likely_port_bits(ports: &[(u16, u8)]) -> Vec<(u16, u8)> {
    let mut bits = std::collections::BTreeMap::<u16, u8>::new();
    for &(port, proto_nr) in ports {
        let bit = conntrack_common::proto::likely_port_bit(proto_nr);
        if bit != 0 {
            *bits.entry(port).or_default() |= bit;
        }
    }
    bits.into_iter().collect()
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// CLOCK_REALTIME - CLOCK_MONOTONIC, so that `bpf_ktime_get_ns() + offset` is wall-clock time.
fn wall_minus_monotonic_ns() -> u64 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid clock id and out pointer.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        (ts.tv_sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ts.tv_nsec as u64)
    };
    now(libc::CLOCK_REALTIME).wrapping_sub(now(libc::CLOCK_MONOTONIC))
}
