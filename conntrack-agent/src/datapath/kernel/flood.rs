//! The scale bench's traffic generator (`conntrack-agent bench-flood`): conntrack-ebpf's
//! `bench_flood` run by BPF_PROG_TEST_RUN in live-frame mode. Each run of the program that
//! sends writes the next new flow's frame and returns `XDP_TX`, which the kernel turns into a
//! transmission out of the run's ingress interface (given in the `xdp_md` context): a veth
//! hands the frame to its peer's NAPI queue (the peer needs NAPI: GRO or an XDP program on
//! it), where it becomes an skb that TC ingress sees. No syscall, copy or skb per frame on the
//! sending side.
//!
//! One call per step, paced by the program itself (`conntrack_common::flood`): a call costs
//! an RCU grace period at its end, too long to pace with short calls. The call's `repeat` is
//! open-ended; once the program has sent the step's last flow, a signal ends it (EINTR).

use super::privileges::{check_privileges, raise_memlock_limit};
use super::{OBJECT, page_size, verified};
use anyhow::{Context, Result, bail};
use aya::maps::Array;
use aya::programs::{ProgramError, TestRun, TestRunAttrs, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use conntrack_common::flood::{self, FRAME_LEN, State, frame};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The generator program in the object.
const FLOOD_PROGRAM: &str = "bench_flood";
/// The signal that ends a step's call.
const STOP_SIGNAL: libc::c_int = libc::SIGUSR1;
/// A step fails when no flow went out for this long.
const STALL: Duration = Duration::from_secs(10);

/// `struct xdp_md` as BPF_PROG_TEST_RUN takes it: data, data_end, data_meta, ingress_ifindex,
/// rx_queue_index, egress_ifindex. `data_end` must be the frame's length.
fn xdp_md(ifindex: u32) -> [u32; 6] {
    [0, FRAME_LEN as u32, 0, ifindex, 0, 0]
}

/// What a step did, by the program's clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepResult {
    /// Flows sent.
    pub sent: u64,
    /// Nanoseconds from the first frame to the last.
    pub span_ns: u64,
    /// The id after the last one sent.
    pub next: u64,
}

impl StepResult {
    /// Frames per second: the intervals between the first frame and the last over their span
    /// (n evenly spaced frames at rate r span (n - 1) / r); 0 for fewer than two.
    pub fn rate(&self) -> f64 {
        if self.sent < 2 || self.span_ns == 0 {
            return 0.0;
        }
        (self.sent - 1) as f64 * 1e9 / self.span_ns as f64
    }

    fn of(s: &State) -> StepResult {
        StepResult {
            sent: s[flood::NEXT].saturating_sub(s[flood::FIRST]),
            span_ns: s[flood::T_LAST].saturating_sub(s[flood::T0]),
            next: s[flood::NEXT],
        }
    }
}

/// The loaded generator, bound to the interface it sends on.
pub struct Flood {
    ebpf: Ebpf,
    ctx: [u32; 6],
    /// Every frame starts as flow 0's; the program rewrites its headers.
    template: [u8; FRAME_LEN],
}

extern "C" fn ignore_signal(_: libc::c_int) {}

impl Flood {
    /// Loads `bench_flood` (and only it: the tracker's maps are created at their smallest),
    /// to send on `dev` (in this process's network namespace).
    pub fn load(dev: &str) -> Result<Flood> {
        if OBJECT.is_empty() {
            bail!("the eBPF program was not built into this binary");
        }
        check_privileges()?;
        raise_memlock_limit();
        let c_dev = std::ffi::CString::new(dev).context("interface name contains NUL")?;
        // SAFETY: a valid C string; if_nametoindex only reads it.
        let ifindex = unsafe { libc::if_nametoindex(c_dev.as_ptr()) };
        if ifindex == 0 {
            bail!("interface {dev:?} not found");
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("FLOWS", 1)
            .map_max_entries("EVENTS", page_size())
            .map_max_entries("CONTENTS", page_size())
            .map_max_entries("CONTENTS_CONNS", 1)
            .load(OBJECT)
            .context("loading the eBPF object")?;
        let prog: &mut Xdp = ebpf
            .program_mut(FLOOD_PROGRAM)
            .context("no program bench_flood in the eBPF object")?
            .try_into()?;
        let loaded = prog.load();
        verified(&ebpf, FLOOD_PROGRAM, loaded)?;
        // The stop signal only interrupts the call: a handler that does nothing, without
        // SA_RESTART (the kernel returns EINTR from BPF_PROG_TEST_RUN, it never restarts it).
        // SAFETY: a zeroed sigaction with a valid handler; no other code uses this signal.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(STOP_SIGNAL, &sa, std::ptr::null_mut()) != 0 {
                bail!("sigaction: {}", std::io::Error::last_os_error());
            }
        }
        Ok(Flood {
            ebpf,
            ctx: xdp_md(ifindex),
            template: frame(0),
        })
    }

    fn state(&self) -> Result<State> {
        let map: Array<_, State> =
            Array::try_from(self.ebpf.map("FLOOD").context("no map FLOOD")?)?;
        Ok(map.get(&0, 0)?)
    }

    /// Sends flows `first..first + count` at `rate` frames/s (0: as fast as it goes), in one
    /// BPF_PROG_TEST_RUN on a thread of its own, which this thread ends once the program has
    /// sent the last one.
    pub fn step(&mut self, first: u64, count: u64, rate: u64) -> Result<StepResult> {
        {
            let mut map: Array<_, State> =
                Array::try_from(self.ebpf.map_mut("FLOOD").context("no map FLOOD")?)?;
            map.set(0, flood::step(first, count, rate), 0)?;
        }
        let prog: &Xdp = self
            .ebpf
            .program(FLOOD_PROGRAM)
            .context("no program bench_flood")?
            .try_into()?;
        let ctx: Vec<u8> = self.ctx.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let opts = || TestRunOptions {
            data_in: Some(&self.template),
            ctx_in: Some(&ctx),
            repeat: u32::MAX,
            // 0: the kernel's batch (64 runs, then a flush to the device and bottom halves
            // enabled, where the receiving veth's NAPI poll runs).
            attrs: TestRunAttrs::new().xdp_live_frames(0),
            ..TestRunOptions::default()
        };
        // The runner's pthread_t, for the stop signal (0 until it has started).
        let runner = AtomicU64::new(0);
        std::thread::scope(|s| -> Result<StepResult> {
            let handle = s.spawn(|| {
                // SAFETY: pthread_self has no preconditions.
                runner.store(unsafe { libc::pthread_self() } as u64, Ordering::Release);
                prog.test_run(opts())
            });
            let (mut last, mut moved) = (first, Instant::now());
            let watch = loop {
                std::thread::sleep(Duration::from_millis(1));
                if handle.is_finished() {
                    break Ok(());
                }
                let next = self.state()?[flood::NEXT];
                if next >= first.saturating_add(count) {
                    break Ok(());
                }
                if next != last {
                    (last, moved) = (next, Instant::now());
                } else if moved.elapsed() > STALL {
                    break Err(anyhow::anyhow!(
                        "no flow sent for {STALL:?} ({} of {count})",
                        next - first
                    ));
                }
            };
            // Repeated: a signal that lands between two checks of the kernel's loop is still
            // seen at the next, but one sent before the call began would be lost.
            while !handle.is_finished() {
                let t = runner.load(Ordering::Acquire);
                if t != 0 {
                    // SAFETY: the runner thread is alive (not finished, joined below).
                    unsafe { libc::pthread_kill(t as libc::pthread_t, STOP_SIGNAL) };
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let ran = handle
                .join()
                .map_err(|_| anyhow::anyhow!("the flood thread panicked"))?;
            match ran {
                Ok(_) => {}
                Err(ProgramError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => {
                    return Err(e).context("BPF_PROG_TEST_RUN (live frames) of bench_flood");
                }
            }
            watch?;
            Ok(StepResult::of(&self.state()?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_names_the_interface_and_the_frame_length() {
        let md = xdp_md(7);
        assert_eq!(md[1] as usize, FRAME_LEN);
        assert_eq!(md[3], 7);
        assert_eq!([md[0], md[2], md[4], md[5]], [0; 4]);
    }

    #[test]
    fn rate_counts_intervals_over_the_span() {
        let mut s = flood::step(10, 5, 1000);
        for t in [1_000, 2_000, 3_000, 4_000, 5_000] {
            flood::sent(&mut s, t * 1000);
        }
        let r = StepResult::of(&s);
        assert_eq!((r.sent, r.span_ns, r.next), (5, 4_000_000, 15));
        assert_eq!(r.rate(), 1000.0);
        let one = StepResult {
            sent: 1,
            span_ns: 0,
            next: 1,
        };
        assert_eq!(one.rate(), 0.0);
    }
}
