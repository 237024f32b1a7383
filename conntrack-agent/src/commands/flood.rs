//! `conntrack-agent bench-flood` (hidden): sends `count` new UDP flows at `rate` frames/s on
//! an interface with the XDP live-frame generator ([`Flood`]), for the scale section of
//! `cargo xtask bench`. Prints one JSON object on stdout: flows sent, the seconds from the
//! first frame to the last and the achieved rate (by the program's clock), the wall time of
//! the whole call, the process's CPU time (user + system: with veth, the receiving side's
//! processing, a tracker's program included, runs in the sender's bottom halves and is
//! charged here), and the next flow id.

use crate::cli::hidden::BenchFloodArgs;
use crate::datapath::kernel::Flood;
use anyhow::Result;
use std::time::Instant;

/// This process's CPU time so far (user + system), in seconds.
fn cpu_secs() -> f64 {
    // SAFETY: a zeroed rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

pub fn bench_flood(args: BenchFloodArgs) -> Result<()> {
    let mut flood = Flood::load(&args.dev)?;
    let (t0, cpu0) = (Instant::now(), cpu_secs());
    let r = flood.step(args.first, u64::from(args.count), u64::from(args.rate))?;
    let cpu = cpu_secs() - cpu0;
    println!(
        "{}",
        serde_json::json!({
            "sent": r.sent,
            "secs": r.span_ns as f64 / 1e9,
            "rate": r.rate(),
            "wall_secs": t0.elapsed().as_secs_f64(),
            "cpu_secs": cpu,
            "next": r.next,
        })
    );
    Ok(())
}
