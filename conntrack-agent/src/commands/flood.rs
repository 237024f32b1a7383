//! `conntrack-agent bench-flood` (hidden): sends `count` new UDP flows at `rate` frames/s on
//! an interface with the XDP live-frame generator ([`Flood`]), for the scale section of
//! `cargo xtask bench`. Prints one JSON object on stdout: flows sent, the seconds from the
//! first frame to the last and the achieved rate (by the program's clock), the wall time of
//! the whole call, and the next flow id.

use crate::cli::hidden::BenchFloodArgs;
use crate::datapath::kernel::Flood;
use anyhow::Result;
use std::time::Instant;

pub fn bench_flood(args: BenchFloodArgs) -> Result<()> {
    let mut flood = Flood::load(&args.dev)?;
    let t0 = Instant::now();
    let r = flood.step(args.first, u64::from(args.count), u64::from(args.rate))?;
    println!(
        "{}",
        serde_json::json!({
            "sent": r.sent,
            "secs": r.span_ns as f64 / 1e9,
            "rate": r.rate(),
            "wall_secs": t0.elapsed().as_secs_f64(),
            "next": r.next,
        })
    );
    Ok(())
}
