//! Sensor mode (issue 8 point 9): the XDP form of the program on SPAN/TAP monitor ports. The
//! XDP programs share every map with the TC ones (flows, events, stats), so the rest of the
//! agent does not know which form runs.

use super::bench::BENCH_EMPTY_XDP_PROGRAM;
use super::privileges::explain_eperm;
use super::{Kernel, install_stages, verified};
use anyhow::{Context, Result, bail};
use aya::maps::Array;

/// Sensor mode's entry program (conntrack-ebpf/src/main.rs).
pub(super) const XDP_ENTRY_PROGRAM: &str = "conntrack_xdp";

/// Sensor mode's later stages, tail-called through `XDP_STAGES[index]` (same indices as
/// [`STAGE_PROGRAMS`](super::STAGE_PROGRAMS)).
const XDP_STAGE_PROGRAMS: [(&str, u32); 6] = [
    ("conntrack_xdp_parse", 0),
    ("conntrack_xdp_update", 1),
    ("conntrack_xdp_threshold", 2),
    ("conntrack_xdp_contents", 3),
    ("conntrack_xdp_note", 4),
    ("conntrack_xdp_tunnel", 5),
];

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
}
