//! The capture filter in the kernel (`run -f`): the classic BPF program that stage 1 runs
//! first (conntrack-ebpf/src/filter.rs), written to its `FILTER` map before the programs are
//! attached; `CONFIG_FILTER` turns it on.

use anyhow::{Context, Result, bail};
use aya::Ebpf;
use aya::maps::Array;
use conntrack_common::filter::{Insn, MAX_INSNS, Program};

/// Writes `insns` to `FILTER`.
pub(super) fn install(ebpf: &mut Ebpf, insns: &[Insn]) -> Result<()> {
    if insns.is_empty() || insns.len() > MAX_INSNS {
        bail!(
            "the capture filter has {} instructions; the kernel takes 1 to {MAX_INSNS}",
            insns.len()
        );
    }
    // 32 KiB: built on the heap.
    let mut prog = Box::new(Program {
        len: insns.len() as u32,
        _pad: 0,
        insns: [Insn::default(); MAX_INSNS],
    });
    prog.insns[..insns.len()].copy_from_slice(insns);
    let mut map: Array<_, Program> =
        Array::try_from(ebpf.map_mut("FILTER").context("no map FILTER")?)?;
    map.set(0, *prog, 0)
        .context("writing the capture filter to the FILTER map")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::sensor::XDP_ENTRY_PROGRAM;
    use super::super::{BENCH_TRACKER_PROGRAM, Kernel, KernelOptions, OBJECT};
    use super::*;
    use crate::capture::filter::compile_live;
    use crate::capture::filter::tests::{random_expr, random_frame};
    use conntrack_common::filter::{Captured, run};
    use conntrack_common::stats::Stat;
    use rand::SeedableRng;

    fn filtered(kernel: &Kernel) -> u64 {
        let stats = kernel.stats().unwrap();
        stats.iter().find(|(s, _)| *s == Stat::Filtered).unwrap().1
    }

    /// The first stage of the TC and XDP forms rejects exactly the frames the host's
    /// interpreter rejects (`read -f`), for random expressions and frames: one `step`, two
    /// engines.
    #[test]
    fn the_kernel_rejects_what_the_host_rejects() {
        if OBJECT.is_empty() || super::super::privileges::check_privileges().is_err() {
            eprintln!("skipping: needs root and the eBPF program");
            return;
        }
        let first = compile_live("tcp").unwrap();
        let mut kernel = Kernel::load(&KernelOptions {
            max_flows: 1024,
            likely_server_ports: &[],
            replay: false,
            contents: false,
            service: false,
            ring_bytes: 0,
            kernel_log: None,
            filter: Some(&first),
        })
        .expect("loading the program with a filter");
        kernel.load_sensor(false).expect("loading the XDP form");
        let mut rng = rand::rngs::StdRng::seed_from_u64(18);
        let (mut kept, mut rejected, mut refused) = (0, 0, 0);
        for _ in 0..60 {
            let expr = random_expr(&mut rng);
            let Ok(insns) = compile_live(&expr) else {
                continue; // libpcap refuses it ("expression rejects all packets")
            };
            install(&mut kernel.ebpf, &insns).unwrap();
            for _ in 0..40 {
                let frame = random_frame(&mut rng);
                // BPF_PROG_TEST_RUN takes whole Ethernet headers only.
                if frame.len() < 14 {
                    continue;
                }
                let pkt = Captured {
                    data: &frame,
                    wire_len: frame.len() as u32,
                };
                let host_keeps = run(&insns, &pkt) != 0;
                let before = filtered(&kernel);
                // The kernel refuses a few test inputs (a bare IPv4 Ethernet header): those
                // are left out.
                if kernel
                    .bench_test_run(BENCH_TRACKER_PROGRAM, &frame, 1)
                    .is_err()
                {
                    refused += 1;
                    continue;
                }
                let tc = filtered(&kernel) - before;
                kernel
                    .bench_test_run_xdp(XDP_ENTRY_PROGRAM, &frame, 1)
                    .unwrap();
                let xdp = filtered(&kernel) - before - tc;
                let expect = u64::from(!host_keeps);
                assert_eq!((tc, xdp), (expect, expect), "{expr} on {frame:02x?}");
                if host_keeps {
                    kept += 1;
                } else {
                    rejected += 1;
                }
            }
        }
        // Both outcomes were exercised.
        assert!(
            kept > 100 && rejected > 100 && refused * 20 < kept + rejected,
            "{kept} kept, {rejected} rejected, {refused} refused by BPF_PROG_TEST_RUN"
        );
    }
}
