//! Capture filters (`-f/--filter EXPR`, Zeek's `-f`): a tcpdump expression compiled by libpcap
//! into a classic BPF program for the capture's link type, then run by conntrack-common's
//! interpreter (`conntrack_common::filter`), the same code the eBPF program runs.
//!
//! `read` filters each record of the trace as it comes, before anything else looks at it (link
//! layer, reassembly, network time), as libpcap does for `zeek -r` and `tcpdump -r`: so the
//! replay sees exactly the packets `tcpdump -r TRACE -w OUT EXPR` writes. `run` compiles the
//! expression for Ethernet and the kernel's first stage runs it on every frame.

use crate::capture::link::{DLT_RAW_12, DLT_RAW_14, LINKTYPE_ETHERNET, LINKTYPE_RAW};
use anyhow::{Context, Result, anyhow};
use conntrack_common::filter::{Captured, Insn, run, validate};

/// What to do about a bad expression, after libpcap's own message.
const SYNTAX_HINT: &str = "the filter takes tcpdump's syntax (`man pcap-filter`), e.g. \
     -f 'tcp port 80' or -f 'not port 22'; `tcpdump -d EXPR` shows what libpcap makes of one";

/// The `DLT_*` number libpcap compiles for, from a trace's `LINKTYPE_*` (they differ only for
/// raw IP, whose traces declare 101 and older ones 12 or 14).
fn dlt_of(linktype: u32) -> i32 {
    match linktype {
        LINKTYPE_RAW | DLT_RAW_12 | DLT_RAW_14 => DLT_RAW_12 as i32,
        lt => lt as i32,
    }
}

/// `expr` compiled by libpcap (optimised, as tcpdump does; netmask 0, as `tcpdump -r` uses)
/// for frames of `linktype`, checked as the kernel checks a classic program.
pub fn compile(expr: &str, linktype: u32) -> Result<Vec<Insn>> {
    let dead = ::pcap::Capture::dead(::pcap::Linktype(dlt_of(linktype)))
        .map_err(|e| anyhow!("libpcap cannot compile for link type {linktype}: {e}"))?;
    let prog = dead.compile(expr, true).map_err(|e| {
        let msg = match e {
            ::pcap::Error::PcapError(m) => m,
            other => other.to_string(),
        };
        anyhow!("invalid capture filter {expr:?}: {msg}; {SYNTAX_HINT}")
    })?;
    let insns = prog
        .get_instructions()
        .iter()
        .map(|i| parse_insn(&i.to_string()))
        .collect::<Option<Vec<Insn>>>()
        .context(
            "libpcap's compiled filter could not be read (is libpcap too new for the pcap crate?)",
        )?;
    validate(&insns).map_err(|e| {
        anyhow!("capture filter {expr:?}: libpcap's program is not valid classic BPF ({e:?})")
    })?;
    Ok(insns)
}

/// One instruction from the pcap crate's text form, `code jt jf k` (its only public view of
/// `struct bpf_insn`).
fn parse_insn(text: &str) -> Option<Insn> {
    let mut it = text.split_ascii_whitespace();
    let insn = Insn {
        code: it.next()?.parse().ok()?,
        jt: it.next()?.parse().ok()?,
        jf: it.next()?.parse().ok()?,
        k: it.next()?.parse().ok()?,
    };
    it.next().is_none().then_some(insn)
}

/// `-f EXPR` as given: `None` without one, or for an empty expression (which keeps every
/// packet, as in tcpdump: that is how a command line turns off a config file's filter).
pub fn expression(arg: Option<&str>) -> Option<&str> {
    arg.filter(|e| !e.trim().is_empty())
}

/// The filter of a live capture: `expr` for Ethernet, the link type of the TC and XDP hooks.
pub fn compile_live(expr: &str) -> Result<Vec<Insn>> {
    compile(expr, LINKTYPE_ETHERNET)
}

/// A replay's filter: the expression compiled for each link type the trace declares (a pcapng
/// file may have several), on first use.
pub struct TraceFilter {
    expr: String,
    programs: Vec<(u32, Vec<Insn>)>,
}

impl TraceFilter {
    /// Checks `expr` at once (compiled for Ethernet), so that a typo is reported before any
    /// log is touched.
    pub fn new(expr: &str) -> Result<TraceFilter> {
        let ethernet = compile(expr, LINKTYPE_ETHERNET)?;
        Ok(TraceFilter {
            expr: expr.to_string(),
            programs: vec![(LINKTYPE_ETHERNET, ethernet)],
        })
    }

    /// The expression as given.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// Whether the record (`data` as captured, `orig_len` on the wire) passes; an error when
    /// the expression means nothing for the record's link type (e.g. `ether host` on raw IP).
    pub fn keeps(&mut self, linktype: u32, data: &[u8], orig_len: u32) -> Result<bool> {
        let i = match self.programs.iter().position(|(lt, _)| *lt == linktype) {
            Some(i) => i,
            None => {
                let prog = compile(&self.expr, linktype)
                    .with_context(|| format!("the trace's link type {linktype}"))?;
                self.programs.push((linktype, prog));
                self.programs.len() - 1
            }
        };
        let pkt = Captured {
            data,
            wire_len: orig_len,
        };
        Ok(run(&self.programs[i].1, &pkt) != 0)
    }
}

#[cfg(test)]
pub(crate) mod tests;
