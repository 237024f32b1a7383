//! Benchmark support (`cargo xtask bench`, issue 3): one BPF_PROG_TEST_RUN of a program,
//! repeated in the kernel, for the TC form and sensor mode's XDP form.

use super::privileges::{explain_eperm, verifier_error};
use super::sensor::XDP_ENTRY_PROGRAM;
use super::{Kernel, PROGRAMS};
use anyhow::{Context, Result};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};

/// The program that does nothing (`conntrack-ebpf`'s `empty`): the per-packet cost baseline.
pub const BENCH_EMPTY_PROGRAM: &str = "empty";
/// The fast path's floor programs (`floor_clock`: the clock read; `floor_lookup`: the clock,
/// the in-place parse and the flow lookup), measured against [`BENCH_EMPTY_PROGRAM`].
pub const BENCH_FLOOR_CLOCK_PROGRAM: &str = "floor_clock";
pub const BENCH_FLOOR_LOOKUP_PROGRAM: &str = "floor_lookup";
/// The tracker's entry program, as BPF_PROG_TEST_RUN runs it (stages follow by tail call).
pub const BENCH_TRACKER_PROGRAM: &str = PROGRAMS[0].0;
/// The XDP program that only returns the verdict: the bench's XDP baseline.
pub const BENCH_EMPTY_XDP_PROGRAM: &str = "empty_xdp";
/// Sensor mode's entry program, as the bench runs it.
pub const BENCH_XDP_PROGRAM: &str = XDP_ENTRY_PROGRAM;

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
            .test_run(repeated(frame, repeat))
            .with_context(|| format!("BPF_PROG_TEST_RUN of {name}"))?;
        Ok(res.duration.as_nanos() as u64)
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
            .test_run(repeated(frame, repeat))
            .with_context(|| format!("BPF_PROG_TEST_RUN of {name}"))?;
        Ok(res.duration.as_nanos() as u64)
    }

    /// `frames[0]` and `frames[1]` through the tracker, `repeat` times each, on two CPUs at
    /// once (one thread per frame, pinned): the contended case of the connection lock when both
    /// frames belong to one connection. Returns each thread's mean ns per run.
    pub fn bench_test_run_pair(&self, frames: [&[u8]; 2], repeat: u32) -> Result<[u64; 2]> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(BENCH_TRACKER_PROGRAM)
            .context("no tracker program in the eBPF object")?
            .try_into()?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let run = |i: usize| -> Result<u64> {
            pin_to_cpu(i % cpus);
            let res = prog
                .test_run(repeated(frames[i], repeat))
                .context("BPF_PROG_TEST_RUN of the tracker")?;
            Ok(res.duration.as_nanos() as u64)
        };
        std::thread::scope(|s| {
            let a = s.spawn(|| run(0));
            let b = s.spawn(|| run(1));
            let (a, b) = (a.join(), b.join());
            match (a, b) {
                (Ok(a), Ok(b)) => Ok([a?, b?]),
                _ => anyhow::bail!("a bench thread panicked"),
            }
        })
    }
}

/// BPF_PROG_TEST_RUN options: `frame`, `repeat` times in the kernel (at least once), which
/// reports the mean time per run.
pub(super) fn repeated(frame: &[u8], repeat: u32) -> TestRunOptions<'_> {
    TestRunOptions {
        data_in: Some(frame),
        repeat: repeat.max(1),
        ..TestRunOptions::default()
    }
}

/// Pins the calling thread to `cpu` (best effort: unpinned, the figures are only noisier).
pub(super) fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}
