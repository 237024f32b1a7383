//! The eBPF datapath: loads `conntrack-ebpf` (built by build.rs), attaches it to interfaces
//! (TCX, or netlink clsact on kernels without TCX), reads its ring buffer and counters, and
//! drives it with BPF_PROG_TEST_RUN for replays ([`KernelDatapath`]).
//!
//! The contract with the program (conntrack-ebpf/src/maps.rs): maps `FLOWS`,
//! `LIKELY_SERVER_PORTS`, `EVENTS`, `STATS`, `CONFIG`, `CONTENTS`, `CONTENTS_CONNS`;
//! `__sk_buff.cb[0]` flags and `__sk_buff.tstamp` in replay.

use crate::datapath::ContentChunk;
use crate::datapath::{
    Datapath, DatapathError, ThresholdError, decode_control_result, tso_zero_length_fix,
};
use anyhow::{Context, Result, bail};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, ProgramArray, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions, qdisc_add_clsact};
use aya::programs::{
    LinkOrder, ProgramError, SchedClassifier, TcAttachType, TestRun, TestRunOptions,
};
use aya::{Ebpf, EbpfLoader};
use conntrack_common::conn::Conn;
use conntrack_common::contents::{self, ContentCounters, ContentHeader};
use conntrack_common::event::Event;
use conntrack_common::key::FlowKey;
use conntrack_common::packet::MAX_HEADER_BYTES;
use conntrack_common::stats::Stat;
use conntrack_common::threshold::ThresholdCommand;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
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
    ("conntrack_transport", 1),
    ("conntrack_engine", 2),
    ("conntrack_update", 3),
    ("conntrack_threshold", 4),
    ("conntrack_contents", 5),
];

/// Threshold commands (never attached, run with BPF_PROG_TEST_RUN; conntrack-ebpf/src/control.rs).
const CONTROL_PROGRAM: &str = "conntrack_control";

/// `CONFIG` indices and flags (mirrors conntrack-ebpf/src/maps.rs).
const CONFIG_FLAGS: u32 = 0;
const CONFIG_CLOCK_OFFSET: u32 = 1;
const CONFIG_REPLAY: u64 = 1;
const CONFIG_CONTENTS_CAP: u32 = 2;
const CONFIG_CONTENTS_RATE: u32 = 3;

/// `__sk_buff.cb[0]` bits in replay: the transport checksum is bad / replay mode.
const CB_BAD_CHECKSUM: u32 = 1;
const CB_REPLAY: u32 = 2;
const CB_IP_LEN_ZERO: u32 = 4;

/// `struct __sk_buff` (uapi): size and the offsets of the fields a replay sets.
const SKB_SIZE: usize = 192;
const SKB_CB0: usize = 48;
const SKB_TSTAMP: usize = 152;

/// Bytes of a frame handed to BPF_PROG_TEST_RUN: the program reads only the first
/// `MAX_HEADER_BYTES` (lengths come from the headers), and the kernel refuses inputs larger
/// than about a page (reassembled datagrams can be).
const TEST_RUN_MAX_BYTES: usize = if MAX_HEADER_BYTES > 1024 {
    MAX_HEADER_BYTES
} else {
    1024
};

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
        let ports = opts.likely_server_ports.len().max(1) as u32;
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries("FLOWS", opts.max_flows.max(1))
            .map_max_entries("LIKELY_SERVER_PORTS", ports);
        if !opts.contents {
            // A ring buffer's size is a power-of-two number of pages.
            loader
                .map_max_entries("CONTENTS", page_size())
                .map_max_entries("CONTENTS_CONNS", 1);
        }
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
            let mut map: HashMap<_, u32, u8> = HashMap::try_from(
                ebpf.map_mut("LIKELY_SERVER_PORTS")
                    .context("no map LIKELY_SERVER_PORTS")?,
            )?;
            for &(port, proto) in opts.likely_server_ports {
                map.insert((port as u32) << 8 | proto as u32, 1, 0)?;
            }
        }
        {
            let mut config: Array<_, u64> =
                Array::try_from(ebpf.map_mut("CONFIG").context("no map CONFIG")?)?;
            let flags = if opts.replay { CONFIG_REPLAY } else { 0 };
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
        let flows = HashMap::try_from(ebpf.take_map("FLOWS").context("no map FLOWS")?)?;
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
        Ok(Kernel {
            ebpf,
            flows: Some(FlowMap {
                map: flows,
                control,
                contents,
            }),
            events,
            stats,
            attached: Vec::new(),
            pinned_links: Vec::new(),
        })
    }

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

    /// Moves the `FLOWS` map out (for a tracker that lives elsewhere than this `Kernel`).
    pub fn take_flows(&mut self) -> Option<FlowMap> {
        self.flows.take()
    }

    /// Appends every event waiting in the ring buffer to `out`; returns how many.
    pub fn drain_events(&mut self, out: &mut Vec<Event>) -> usize {
        let mut n = 0;
        while let Some(item) = self.events.next() {
            if item.len() >= size_of::<Event>() {
                // SAFETY: the program writes whole `Event`s (repr(C), integers only); the read
                // is unaligned-safe.
                out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
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

/// `conntrack_control`, run with BPF_PROG_TEST_RUN on a `ThresholdCommand` (by raw syscall: the
/// program stays owned by the `Kernel`, while live the flow map and this handle go to the agent).
pub struct ControlProgram {
    fd: OwnedFd,
}

/// `union bpf_attr` as BPF_PROG_TEST_RUN reads it (uapi `test` member).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// How often a command that found the connection locked is retried (a packet holds the lock
/// for well under a microsecond).
const CONTROL_TRIES: u32 = 8;

impl ControlProgram {
    /// Runs `cmd`; returns the crossed slots.
    pub fn run(&self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
        let mut last = ThresholdError::Busy;
        for _ in 0..CONTROL_TRIES {
            match decode_control_result(self.run_once(cmd)?) {
                Err(ThresholdError::Busy) => last = ThresholdError::Busy,
                other => return other,
            }
        }
        Err(last)
    }

    fn run_once(&self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: size_of::<ThresholdCommand>() as u32,
            data_in: (cmd as *const ThresholdCommand) as u64,
            repeat: 1,
            ..TestRunAttr::default()
        };
        // SAFETY: `attr` is a valid BPF_PROG_TEST_RUN attribute block; `data_in` points to a
        // live `ThresholdCommand` of `data_size_in` bytes; no output buffers.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &mut attr as *mut TestRunAttr,
                size_of::<TestRunAttr>(),
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return Err(ThresholdError::Failed(format!("BPF_PROG_TEST_RUN: {e}")));
        }
        Ok(attr.retval)
    }
}

/// The `FLOWS` map: lookups and removals for the tracker, and threshold commands.
pub struct FlowMap {
    map: HashMap<MapData, FlowKey, Conn>,
    control: ControlProgram,
    contents: KernelContents,
}

/// Content extraction's maps: the `CONTENTS` records, the `CONTENTS_CONNS` counters and the
/// caps in `CONFIG`.
struct KernelContents {
    records: RingBuf<MapData>,
    counters: HashMap<MapData, FlowKey, ContentCounters>,
    config: Array<MapData, u64>,
    /// Some connection had extraction turned on (replays then pass whole frames).
    active: bool,
}

impl FlowMap {
    /// A threshold or extraction command through `conntrack_control`.
    fn command(&mut self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
        let r = self.control.run(cmd);
        if r.is_ok() && cmd.mask & contents::CMD_SET_CONTENTS != 0 {
            self.contents.active |= cmd.mask & contents::EXTRACT_BITS != 0;
        }
        r
    }

    fn drain_contents(&mut self, out: &mut Vec<ContentChunk>) {
        let hdr_len = size_of::<ContentHeader>();
        while let Some(item) = self.contents.records.next() {
            if item.len() < hdr_len {
                continue;
            }
            // SAFETY: the program writes whole `ContentHeader`s (repr(C), integers only).
            let hdr = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ContentHeader>()) };
            let end = (hdr_len + hdr.len as usize).min(item.len());
            out.push(ContentChunk {
                hdr,
                data: item[hdr_len..end].to_vec(),
            });
        }
    }

    fn set_content_caps(&mut self, per_conn: u64, rate: u64) -> Result<(), DatapathError> {
        let err = |e: aya::maps::MapError| DatapathError::Other(format!("CONFIG: {e}"));
        self.contents
            .config
            .set(CONFIG_CONTENTS_CAP, per_conn, 0)
            .map_err(err)?;
        self.contents
            .config
            .set(CONFIG_CONTENTS_RATE, rate, 0)
            .map_err(err)
    }
}

impl FlowMap {
    pub fn lookup(&self, key: &FlowKey) -> Option<Conn> {
        self.map.get(key, 0).ok()
    }

    pub fn remove(&mut self, key: &FlowKey) -> Option<Conn> {
        let conn = self.map.get(key, 0).ok()?;
        // The program may have updated it between the two calls; a packet in between is lost
        // to this record, as in any remove-then-log design.
        self.map.remove(key).ok()?;
        Some(conn)
    }

    pub fn keys(&self) -> Vec<FlowKey> {
        self.map.keys().filter_map(Result::ok).collect()
    }
}

/// Live mode: the program updates connections itself; the agent only reads and removes them.
impl Datapath for FlowMap {
    fn process(
        &mut self,
        _: &[u8],
        _: u64,
        _: bool,
        _: &mut Vec<Event>,
    ) -> Result<(), DatapathError> {
        Err(DatapathError::Other(
            "live datapath: packets are processed in the kernel".into(),
        ))
    }
    fn lookup(&self, key: &FlowKey) -> Option<Conn> {
        FlowMap::lookup(self, key)
    }
    fn remove(&mut self, key: &FlowKey) -> Option<Conn> {
        FlowMap::remove(self, key)
    }
    fn keys(&self) -> Vec<FlowKey> {
        FlowMap::keys(self)
    }
    fn set_thresholds(&mut self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
        self.command(cmd)
    }
    fn drain_contents(&mut self, out: &mut Vec<ContentChunk>) {
        FlowMap::drain_contents(self, out)
    }
    fn content_counters(&self, key: &FlowKey) -> Option<ContentCounters> {
        self.contents.counters.get(key, 0).ok()
    }
    fn forget_contents(&mut self, key: &FlowKey) {
        let _ = self.contents.counters.remove(key);
    }
    fn set_content_caps(&mut self, per_conn: u64, rate: u64) -> Result<(), DatapathError> {
        FlowMap::set_content_caps(self, per_conn, rate)
    }
}

/// Replay through the loaded program: one BPF_PROG_TEST_RUN per frame, with the packet time in
/// `__sk_buff.tstamp` and the checksum verdict in `cb[0]`, then the ring buffer is drained.
pub struct KernelDatapath {
    kernel: Kernel,
    flows: FlowMap,
    ctx: [u8; SKB_SIZE],
}

impl KernelDatapath {
    pub fn new(likely_server_ports: &[(u16, u8)], max_flows: u32) -> Result<KernelDatapath> {
        let mut kernel = Kernel::load(&KernelOptions {
            max_flows,
            likely_server_ports,
            replay: true,
            contents: true,
        })?;
        let flows = kernel.take_flows().context("FLOWS already taken")?;
        Ok(KernelDatapath {
            kernel,
            flows,
            ctx: [0; SKB_SIZE],
        })
    }
}

impl Datapath for KernelDatapath {
    fn process(
        &mut self,
        frame: &[u8],
        ts_ns: u64,
        checksum_ok: bool,
        out: &mut Vec<Event>,
    ) -> Result<(), DatapathError> {
        // The kernel wants at least an Ethernet header, and (Linux 6.x) refuses with EINVAL an
        // untagged IPv4/IPv6 frame cut inside the IP header; the host parser rejects both as
        // truncated, so neither engine uses them (found by `fuzz-kernel`).
        if frame.len() < 14 || ip_header_cut(frame) {
            return Ok(());
        }
        // IPv4 total length 0 (accepted by the caller as Zeek does with -C): the program
        // parses a copy with the captured length and counts 0 IP bytes, like the host engine.
        let patched = tso_zero_length_fix(frame);
        let frame = patched.as_deref().unwrap_or(frame);
        // Content extraction needs the payload; otherwise the headers are enough.
        let data = if self.flows.contents.active {
            frame
        } else {
            frame.get(..TEST_RUN_MAX_BYTES).unwrap_or(frame)
        };
        let cb0 = CB_REPLAY
            | if checksum_ok { 0 } else { CB_BAD_CHECKSUM }
            | if patched.is_some() { CB_IP_LEN_ZERO } else { 0 };
        self.ctx[SKB_CB0..SKB_CB0 + 4].copy_from_slice(&cb0.to_ne_bytes());
        self.ctx[SKB_TSTAMP..SKB_TSTAMP + 8].copy_from_slice(&ts_ns.to_ne_bytes());
        let prog = self
            .kernel
            .program(PROGRAMS[0].0)
            .map_err(|e| DatapathError::Other(format!("{e:#}")))?;
        prog.test_run(TestRunOptions {
            data_in: Some(data),
            ctx_in: Some(&self.ctx),
            ..TestRunOptions::default()
        })
        .map_err(|e| {
            let cause = std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
            DatapathError::Other(format!("BPF_PROG_TEST_RUN: {e}{cause}"))
        })?;
        self.kernel.drain_events(out);
        Ok(())
    }
    fn drain_contents(&mut self, out: &mut Vec<ContentChunk>) {
        self.flows.drain_contents(out)
    }
    fn content_counters(&self, key: &FlowKey) -> Option<ContentCounters> {
        Datapath::content_counters(&self.flows, key)
    }
    fn forget_contents(&mut self, key: &FlowKey) {
        Datapath::forget_contents(&mut self.flows, key)
    }
    fn set_content_caps(&mut self, per_conn: u64, rate: u64) -> Result<(), DatapathError> {
        self.flows.set_content_caps(per_conn, rate)
    }
    fn lookup(&self, key: &FlowKey) -> Option<Conn> {
        self.flows.lookup(key)
    }
    fn remove(&mut self, key: &FlowKey) -> Option<Conn> {
        self.flows.remove(key)
    }
    fn keys(&self) -> Vec<FlowKey> {
        self.flows.keys()
    }
    fn set_thresholds(&mut self, cmd: &ThresholdCommand) -> Result<u32, ThresholdError> {
        self.flows.command(cmd)
    }
}

/// True for an untagged IPv4 (IPv6) frame with fewer than 20 (40) bytes after the Ethernet
/// header: BPF_PROG_TEST_RUN cannot run it.
fn ip_header_cut(frame: &[u8]) -> bool {
    let l3 = frame.len().saturating_sub(14);
    match frame.get(12..14) {
        Some([0x08, 0x00]) => l3 < 20,
        Some([0x86, 0xdd]) => l3 < 40,
        _ => false,
    }
}

/// The replay datapath as the agent core takes it.
pub fn replay_datapath(
    likely_server_ports: &[(u16, u8)],
    max_flows: u32,
) -> Result<Box<dyn Datapath>> {
    Ok(Box::new(KernelDatapath::new(
        likely_server_ports,
        max_flows,
    )?))
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

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; harmless elsewhere.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to a rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK");
    }
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

const PRIVILEGE_HELP: &str = "loading the eBPF program needs root, or the capabilities \
     CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON: run it with sudo, or `sudo setcap \
     cap_bpf,cap_net_admin,cap_perfmon+ep target/release/conntrack-agent`, or as a systemd \
     service with AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON; replays work without \
     privileges with `--engine host`";

/// What each capability is needed for, named in the error when it is missing.
const NEEDED_CAPS: [(u32, &str, &str); 3] = [
    (CAP_BPF, "CAP_BPF", "create maps and load programs"),
    (
        CAP_NET_ADMIN,
        "CAP_NET_ADMIN",
        "load TC programs and attach them to interfaces",
    ),
    (
        CAP_PERFMON,
        "CAP_PERFMON",
        "the verifier refuses the program's pointer arithmetic without it",
    ),
];

/// The capabilities of [`NEEDED_CAPS`] missing from the effective set `cap_eff` (CAP_SYS_ADMIN
/// stands for all of them), with what each is for.
fn missing_capabilities(cap_eff: u64) -> Vec<String> {
    let has = |c: u32| cap_eff & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    NEEDED_CAPS
        .iter()
        .filter(|(c, _, _)| !has(*c))
        .map(|(_, name, why)| format!("{name} ({why})"))
        .collect()
}

/// Fails early, naming the missing capabilities and what to do, when the process cannot load
/// and attach the program.
fn check_privileges() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(caps) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return Ok(()); // cannot tell: let the kernel decide
    };
    let missing = missing_capabilities(caps);
    if !missing.is_empty() {
        bail!(
            "missing capabilities: {}; {PRIVILEGE_HELP}",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Adds the privilege hint to EPERM failures.
fn explain_eperm(e: anyhow::Error) -> anyhow::Error {
    let eperm = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EPERM))
            || c.to_string().contains("Operation not permitted")
    });
    if eperm { e.context(PRIVILEGE_HELP) } else { e }
}

/// A load error with the verifier log, which aya keeps out of the error's `Display`.
fn verifier_error(e: ProgramError) -> anyhow::Error {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            anyhow::anyhow!("{io_error}\nverifier log:\n{verifier_log}")
        }
        other => anyhow::Error::new(other),
    }
}

#[cfg(test)]
mod test_run_tests {
    use super::{
        CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN, ip_header_cut, missing_capabilities,
    };

    #[test]
    fn missing_capabilities_are_named() {
        let all = 1u64 << CAP_BPF | 1 << CAP_NET_ADMIN | 1 << CAP_PERFMON;
        assert!(missing_capabilities(all).is_empty());
        assert!(missing_capabilities(1 << CAP_SYS_ADMIN).is_empty());
        let m = missing_capabilities(all & !(1 << CAP_PERFMON));
        assert_eq!(m.len(), 1);
        assert!(m[0].starts_with("CAP_PERFMON"), "{m:?}");
        assert_eq!(missing_capabilities(0).len(), 3);
    }

    #[test]
    fn test_run_skips_frames_cut_inside_the_ip_header() {
        let mut v4 = vec![0u8; 14 + 20];
        v4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert!(!ip_header_cut(&v4));
        assert!(ip_header_cut(&v4[..33]));
        let mut v6 = vec![0u8; 14 + 40];
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert!(!ip_header_cut(&v6));
        assert!(ip_header_cut(&v6[..53]));
        // Behind a VLAN tag the kernel sees no IP protocol and runs the program.
        let mut tagged = vec![0u8; 20];
        tagged[12..14].copy_from_slice(&[0x81, 0x00]);
        assert!(!ip_header_cut(&tagged));
    }
}

// ---------------------------------------------------------------------------------------------
// Pinning, for a restart without loss (issue 8 point 5; the policy is in handover.rs), kept
// apart from the attach code above.

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

// ---------------------------------------------------------------------------------------------
// Benchmark support (`cargo xtask bench`, issue 3), kept apart from the datapath above.

/// The program that does nothing (`conntrack-ebpf`'s `empty`): the per-packet cost baseline.
pub const BENCH_EMPTY_PROGRAM: &str = "empty";
/// The tracker's entry program, as BPF_PROG_TEST_RUN runs it (stages follow by tail call).
pub const BENCH_TRACKER_PROGRAM: &str = PROGRAMS[0].0;

impl Kernel {
    /// One BPF_PROG_TEST_RUN of program `name` on `frame`, `repeat` times in the kernel (no
    /// context: the live path, clock from `bpf_ktime_get_ns`). Loads the program first when
    /// [`Kernel::load`] did not (the bench's `empty`). Returns the kernel's mean ns per run.
    pub fn bench_test_run(&mut self, name: &str, frame: &[u8], repeat: u32) -> Result<u64> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("no program {name} in the eBPF object"))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| explain_eperm(verifier_error(e)))
                .with_context(|| format!("loading {name} (BPF verifier)"))?;
        }
        let res = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: repeat.max(1),
                ..TestRunOptions::default()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN of {name}"))?;
        Ok(res.duration.as_nanos() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + UDP frame (checksum 0: the live path does not check it).
    fn udp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: usize) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let total = (20 + 8 + payload) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.resize(f.len() + payload, 0xab);
        f
    }

    fn pin_to_cpu(cpu: usize) {
        // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        }
    }

    /// The program loaded with a 1024-entry table, or None (test skipped) where it cannot be.
    fn small_test_kernel() -> Option<Kernel> {
        if !std::path::Path::new("/sys/fs/bpf").exists() || OBJECT.is_empty() {
            eprintln!("skipping: eBPF program not built or no bpffs");
            return None;
        }
        if check_privileges().is_err() {
            eprintln!("skipping: needs root (CAP_BPF, CAP_NET_ADMIN)");
            return None;
        }
        Some(
            Kernel::load(&KernelOptions {
                max_flows: 1024,
                likely_server_ports: &[],
                replay: false,
                contents: false,
            })
            .expect("loading the program"),
        )
    }

    /// Sensor mode's XDP form and the TC form, fed the same conversation (on two different
    /// flows), must leave the same connection: same orientation, counters and history. The
    /// 1400-byte datagrams are longer than the header copy, so the XDP form's reads from the
    /// packet itself are exercised too.
    #[test]
    fn xdp_and_tc_forms_track_a_conversation_alike() {
        let Some(mut kernel) = small_test_kernel() else {
            return;
        };
        kernel.load_sensor(false).expect("loading the XDP form");
        let (a, b) = ([10, 9, 1, 1], [10, 9, 1, 2]);
        let conversation = |sport: u16| {
            vec![
                udp_frame(a, sport, b, 7000, 100),
                udp_frame(b, 7000, a, sport, 1400),
                udp_frame(a, sport, b, 7000, 1400),
                udp_frame(b, 7000, a, sport, 10),
                udp_frame(b, 7000, a, sport, 0),
            ]
        };
        for f in conversation(41000) {
            kernel
                .bench_test_run(BENCH_TRACKER_PROGRAM, &f, 1)
                .expect("TC run");
        }
        for f in conversation(42000) {
            kernel
                .bench_test_run_xdp(BENCH_XDP_PROGRAM, &f, 1)
                .expect("XDP run");
        }
        let flows = kernel.take_flows().unwrap();
        let conns: Vec<Conn> = flows
            .keys()
            .iter()
            .filter_map(|k| flows.lookup(k))
            .collect();
        assert_eq!(conns.len(), 2, "one connection per form");
        let view = |c: &Conn| {
            (
                (c.orig_pkts(), c.orig_bytes(), c.orig_ip_bytes()),
                (c.resp_pkts(), c.resp_bytes(), c.resp_ip_bytes()),
                c.history_str().to_vec(),
            )
        };
        assert_eq!(view(&conns[0]), view(&conns[1]));
        assert_eq!(
            view(&conns[0]).0,
            (2, 1500, 1500 + 2 * 28),
            "orig: the side that sent first"
        );
        assert_eq!(view(&conns[0]).1, (3, 1410, 1410 + 3 * 28));
    }

    /// Two CPUs hammer the same connection at once (one per direction). Every packet must be
    /// counted exactly once, either on the connection or, when the lock stayed busy, in
    /// `LockBusy` (handed to the agent): a lost or torn update would break the sums.
    #[test]
    fn one_connection_updated_from_two_cpus_is_not_corrupted() {
        let Some(mut kernel) = small_test_kernel() else {
            return;
        };
        let a = [10, 9, 0, 1];
        let b = [10, 9, 0, 2];
        let orig = udp_frame(a, 40000, b, 9999, 100);
        let resp = udp_frame(b, 9999, a, 40000, 300);
        // Create the connection first so that both threads update an existing entry.
        let prog = kernel.program(PROGRAMS[0].0).unwrap();
        let run = |frame: &[u8], repeat: u32| {
            prog.test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        };
        run(&orig, 1);
        const N: u32 = 300_000;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|s| {
            for (i, frame) in [&orig, &resp].into_iter().enumerate() {
                let run = &run;
                s.spawn(move || {
                    pin_to_cpu(i % cpus);
                    run(frame, N);
                });
            }
        });
        let flows = kernel.take_flows().unwrap();
        let keys = flows.keys();
        assert_eq!(keys.len(), 1, "both directions are one connection");
        let c = flows.lookup(&keys[0]).unwrap();
        let stats = kernel.stats().unwrap();
        let busy = stats.iter().find(|(s, _)| *s == Stat::LockBusy).unwrap().1;
        let (o, r) = (c.orig_pkts(), c.resp_pkts());
        assert_eq!(
            o + r + busy,
            1 + 2 * u64::from(N),
            "orig {o} resp {r} busy {busy}"
        );
        // Bytes move with their packets: a torn update would leave them out of step.
        assert_eq!(c.orig_ip_bytes(), o * (20 + 8 + 100));
        assert_eq!(c.resp_ip_bytes(), r * (20 + 8 + 300));
        assert_eq!(c.orig_bytes(), o * 100);
        assert_eq!(c.resp_bytes(), r * 300);
        eprintln!("orig {o} resp {r} lock busy {busy} on {cpus} CPUs");
    }
}

// ---------------------------------------------------------------------------------------------
// Sensor mode (issue 8 point 9): the XDP form of the program on SPAN/TAP monitor ports, kept
// apart from the TC loading above. The XDP programs share every map with the TC ones (flows,
// events, stats), so the rest of the agent does not know which form runs.

/// Sensor mode's entry program (conntrack-ebpf/src/main.rs).
const XDP_ENTRY_PROGRAM: &str = "conntrack_xdp";

/// Sensor mode's later stages, tail-called through `XDP_STAGES[index]` (same indices as
/// [`STAGE_PROGRAMS`]).
const XDP_STAGE_PROGRAMS: [(&str, u32); 6] = [
    ("conntrack_xdp_parse", 0),
    ("conntrack_xdp_transport", 1),
    ("conntrack_xdp_engine", 2),
    ("conntrack_xdp_update", 3),
    ("conntrack_xdp_threshold", 4),
    ("conntrack_xdp_contents", 5),
];

/// The XDP program that only returns the verdict: the bench's XDP baseline.
pub const BENCH_EMPTY_XDP_PROGRAM: &str = "empty_xdp";
/// Sensor mode's entry program, as the bench runs it.
pub const BENCH_XDP_PROGRAM: &str = XDP_ENTRY_PROGRAM;

/// `--sensor-xdp-mode`: which XDP attach modes to try.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SensorXdpMode {
    /// Native where the driver supports it, else generic (the agent says which).
    #[default]
    Auto,
    /// Native XDP only: in the driver, before the kernel allocates an skb.
    Native,
    /// Generic (SKB) XDP only: any driver.
    Generic,
}

/// How the sensor program got attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorAttach {
    /// Native (driver) XDP: the program runs before the kernel allocates an skb.
    Native,
    /// Generic (SKB) XDP: the driver has no XDP support; the program runs in the stack.
    Generic,
}

impl std::fmt::Display for SensorAttach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SensorAttach::Native => "native (driver) XDP",
            SensorAttach::Generic => "generic (SKB) XDP",
        })
    }
}

impl Kernel {
    /// Loads the XDP programs (once), installs their stages in `XDP_STAGES` and sets the
    /// verdict: `drop` makes every XDP stage return XDP_DROP after accounting.
    pub fn load_sensor(&mut self, drop: bool) -> Result<()> {
        let names = XDP_STAGE_PROGRAMS.iter().map(|(n, _)| *n);
        for name in names.chain([XDP_ENTRY_PROGRAM, BENCH_EMPTY_XDP_PROGRAM]) {
            let prog: &mut aya::programs::Xdp = self
                .ebpf
                .program_mut(name)
                .with_context(|| format!("no program {name} in the eBPF object"))?
                .try_into()?;
            if prog.fd().is_ok() {
                continue;
            }
            let loaded = prog.load();
            verified(&self.ebpf, name, loaded)?;
        }
        install_stages(&mut self.ebpf, "XDP_STAGES", &XDP_STAGE_PROGRAMS)?;
        let mut sensor: Array<_, u32> =
            Array::try_from(self.ebpf.map_mut("SENSOR").context("no map SENSOR")?)?;
        sensor.set(0, u32::from(drop), 0)?;
        Ok(())
    }

    /// Attaches the sensor program to `iface`'s ingress: native XDP where the driver supports
    /// it, else generic XDP (`mode` can force either). [`Kernel::load_sensor`] must have run.
    pub fn attach_sensor(&mut self, iface: &str, mode: SensorXdpMode) -> Result<SensorAttach> {
        use aya::programs::{Xdp, XdpMode};
        let c_name = std::ffi::CString::new(iface).context("interface name contains NUL")?;
        // SAFETY: a valid C string; if_nametoindex only reads it.
        if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
            bail!("interface {iface:?} not found (see `ip link`)");
        }
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(XDP_ENTRY_PROGRAM)
            .with_context(|| format!("no program {XDP_ENTRY_PROGRAM}"))?
            .try_into()?;
        let native = match mode {
            SensorXdpMode::Generic => None,
            SensorXdpMode::Auto | SensorXdpMode::Native => {
                match prog.attach(iface, XdpMode::Driver) {
                    Ok(_) => return Ok(SensorAttach::Native),
                    Err(e) if mode == SensorXdpMode::Native => {
                        return Err(explain_eperm(anyhow::Error::new(e))).with_context(|| {
                            format!(
                                "attaching the sensor (XDP) program to {iface} in native mode: \
                                 the driver may not support XDP (try --sensor-xdp-mode generic), \
                                 or another XDP program is attached (`ip link show {iface}`)"
                            )
                        });
                    }
                    Err(e) => Some(e),
                }
            }
        };
        let why = native.map_or(String::new(), |e| format!("native mode failed ({e}), "));
        prog.attach(iface, XdpMode::Skb)
            .map_err(|e| explain_eperm(anyhow::Error::new(e)))
            .with_context(|| {
                format!(
                    "attaching the sensor (XDP) program to {iface}: {why}generic mode failed; \
                     another XDP program may be attached (`ip link show {iface}`)"
                )
            })?;
        Ok(SensorAttach::Generic)
    }

    /// Detaches the sensor program from every interface (dropping the `Kernel` does too).
    pub fn detach_sensor(&mut self) {
        let prog: Option<&mut aya::programs::Xdp> = self
            .ebpf
            .program_mut(XDP_ENTRY_PROGRAM)
            .and_then(|p| p.try_into().ok());
        if let Some(prog) = prog
            && prog.fd().is_ok()
            && let Err(e) = prog.unload()
        {
            log::warn!("detaching {XDP_ENTRY_PROGRAM}: {e}");
        }
    }

    /// One BPF_PROG_TEST_RUN of XDP program `name` on `frame`, `repeat` times in the kernel;
    /// the kernel's mean ns per run (the XDP twin of [`Kernel::bench_test_run`]).
    pub fn bench_test_run_xdp(&mut self, name: &str, frame: &[u8], repeat: u32) -> Result<u64> {
        let prog: &aya::programs::Xdp = self
            .ebpf
            .program(name)
            .with_context(|| format!("no program {name} in the eBPF object"))?
            .try_into()?;
        let res = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: repeat.max(1),
                ..TestRunOptions::default()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN of {name}"))?;
        Ok(res.duration.as_nanos() as u64)
    }
}

// ---------------------------------------------------------------------------------------------
// Per-interface counters (issue 8 point 4): `IFACE_STATS`, kept in the `Ebpf` object.

/// The ifindex of each interface in `names` that exists (for [`Kernel::iface_stats`]).
pub fn ifindexes(names: &[String]) -> Vec<u32> {
    names
        .iter()
        .filter_map(|n| std::ffi::CString::new(n.as_str()).ok())
        // SAFETY: a valid C string; if_nametoindex only reads it.
        .map(|c| unsafe { libc::if_nametoindex(c.as_ptr()) })
        .filter(|&i| i != 0)
        .collect()
}

impl Kernel {
    /// Packets and bytes of each interface in `ifindexes`, summed over CPUs. Interfaces whose
    /// ifindex is beyond the kernel's array share its entry 0, reported as ifindex 0 (once).
    pub fn iface_stats(
        &self,
        ifindexes: &[u32],
    ) -> Result<Vec<(u32, conntrack_common::stats::IfaceCounters)>> {
        use conntrack_common::stats::{IfaceCounters, MAX_IFACES};
        let map: PerCpuArray<&MapData, IfaceCounters> =
            PerCpuArray::try_from(self.ebpf.map("IFACE_STATS").context("no map IFACE_STATS")?)?;
        let mut slots: Vec<u32> = ifindexes
            .iter()
            .map(|&i| if i < MAX_IFACES { i } else { 0 })
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots
            .into_iter()
            .map(|slot| {
                let per_cpu = map.get(&slot, 0)?;
                let sum = per_cpu
                    .iter()
                    .fold(IfaceCounters::default(), |a, v| IfaceCounters {
                        packets: a.packets.wrapping_add(v.packets),
                        bytes: a.bytes.wrapping_add(v.bytes),
                    });
                Ok((slot, sum))
            })
            .collect()
    }
}
