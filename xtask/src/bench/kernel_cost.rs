//! Section 1: per-packet cost of the TC program in the kernel, BPF_PROG_TEST_RUN with `repeat`,
//! through the agent's hidden `bench-kernel` command (it loads the program with the agent's
//! own loader).

use super::report::{Row, Section};
use super::{Bench, median};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::process::Command;

pub fn run(b: &mut Bench) -> Result<Section> {
    let mut sec = Section::new(
        "kernel",
        "1. Per-packet cost in the kernel (BPF_PROG_TEST_RUN)",
        "the empty TC program's ns/packet",
    );
    let (repeat, rounds, syns) = if b.quick {
        (20_000, 3, 500)
    } else {
        (1_000_000, 7, 20_000)
    };
    let out = Command::new(&b.agent)
        .args([
            "bench-kernel",
            "--repeat",
            &repeat.to_string(),
            "--rounds",
            &rounds.to_string(),
        ])
        .args(["--syns", &syns.to_string()])
        .output()
        .context("running conntrack-agent bench-kernel")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let why = summarize_load_error(&err);
        b.kernel_unavailable = Some(why.clone());
        bail!("the eBPF program did not load: {why}");
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("bench-kernel output")?;
    let med = |k: &str| -> Option<f64> {
        let xs: Vec<f64> = v
            .get(k)?
            .as_array()?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        median(&xs)
    };
    let empty = med("empty");
    let empty_single = med("empty_single");
    let per = format!("median of {rounds} rounds of {repeat} runs");
    sec.rows.push(Row::new(
        "empty program (baseline)",
        empty,
        "ns",
        empty,
        &per,
    ));
    sec.rows.push(Row::new(
        "existing TCP, data packet",
        med("tcp_data"),
        "ns",
        empty,
        &format!("{per}; IPv4, 100-byte segment"),
    ));
    sec.rows.push(Row::new(
        "existing UDP flow packet",
        med("udp"),
        "ns",
        empty,
        &format!("{per}; IPv4, 100-byte datagram"),
    ));
    sec.rows.push(Row::new(
        "existing UDP flow packet, threshold armed",
        med("udp_armed"),
        "ns",
        empty,
        &format!("{per}; as above, plus the threshold stage (a threshold that never crosses)"),
    ));
    sec.rows.push(Row::new(
        "existing UDP flow packet, payload extracted",
        med("udp_extracted"),
        "ns",
        empty,
        &format!(
            "{per}; as the plain UDP row, plus the threshold and contents stages (100 bytes to \
             the CONTENTS ring buffer, drained every 10,000 runs)"
        ),
    ));
    sec.rows.push(Row::new(
        "IPv6, existing TCP, data",
        med("ipv6"),
        "ns",
        empty,
        &format!("{per}; 100-byte segment"),
    ));
    sec.rows.push(Row::new(
        "empty program, single run",
        empty_single,
        "ns",
        empty_single,
        &format!(
            "median over {syns} single runs x {rounds} rounds: includes the kernel's timer reads"
        ),
    ));
    sec.rows.push(Row::new(
        "new TCP SYN (creates a connection)",
        med("syn_new"),
        "ns",
        empty_single,
        "single runs on distinct 4-tuples, ratio vs the empty program's single run",
    ));
    // Sensor mode (`run --sensor`): the XDP form on the same frames. Ratios are against the
    // TC empty program, so that XDP and TC rows compare directly.
    let xdp_empty = med("xdp_empty");
    sec.rows.push(Row::new(
        "XDP: empty program (baseline)",
        xdp_empty,
        "ns",
        empty,
        &format!("{per}; returns XDP_PASS only"),
    ));
    for (name, key, what) in [
        (
            "XDP: existing TCP, data packet",
            "xdp_tcp_data",
            "IPv4, 100-byte segment",
        ),
        (
            "XDP: existing UDP flow packet",
            "xdp_udp",
            "IPv4, 100-byte datagram",
        ),
        (
            "XDP: IPv6, existing TCP, data",
            "xdp_ipv6",
            "100-byte segment",
        ),
    ] {
        sec.rows.push(Row::new(
            name,
            med(key),
            "ns",
            empty,
            &format!("{per}; {what}; sensor mode's XDP stages, ratio vs the TC empty program"),
        ));
    }
    if let Some(stats) = v.get("stats") {
        let get = |k: &str| stats.get(k).and_then(Value::as_u64).unwrap_or(0);
        sec.notes.push(format!(
            "Program counters after the runs: {} packets, {} new connections, {} events, {} ring-buffer full, {} parse errors.",
            get("packets"), get("new_conns"), get("events"), get("ringbuf_full"), get("parse_errors")
        ));
    }
    sec.notes.push(
        "The repeated data packet is the same segment each time (a retransmission for the engine after \
         the first run); the repeated UDP packet is an ordinary packet of an existing flow."
            .into(),
    );
    Ok(sec)
}

/// The first line of a load error and, for the verifier, its verdict line.
pub fn summarize_load_error(err: &str) -> String {
    let first = err
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("unknown error")
        .trim();
    let verdict = err
        .lines()
        .rev()
        .find(|l| l.contains("too large") || l.contains("processed ") || l.contains("invalid"))
        .map(str::trim);
    let mut s: String = first.chars().take(300).collect();
    if let Some(v) = verdict
        && !s.contains(v)
    {
        s.push_str(" / verifier: ");
        s.extend(v.chars().take(200));
    }
    s
}
