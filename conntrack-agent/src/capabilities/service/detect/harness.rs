//! Scores the detectors against samples extracted from traces outside the repo (a script
//! writes one connection a line: `id`, `tcp`/`udp`, the two ports, each side's payloads as
//! comma-separated hex, and `partial` when the first packet had no SYN). Run with
//! `SERVICE_SAMPLES=FILE cargo test -p conntrack-agent --lib service_samples -- --ignored`;
//! it writes `id<TAB>services` lines to `FILE.out`. With `SERVICE_BENCH=1` it also prints the
//! time per call.

use super::test_util::hex;
use super::{MAX_SAMPLE_BYTES, MAX_SAMPLE_DATAGRAMS, Sample, Transport, detect, detect_partial};

/// One extracted connection.
struct Line {
    id: String,
    transport: Transport,
    ports: (u16, u16),
    orig: Vec<Vec<u8>>,
    resp: Vec<Vec<u8>>,
    partial: bool,
}

impl Line {
    fn parse(line: &str) -> Line {
        let f: Vec<&str> = line.split('\t').collect();
        let transport = if f[1] == "tcp" {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        Line {
            id: f[0].to_string(),
            transport,
            ports: (f[2].parse().unwrap(), f[3].parse().unwrap()),
            orig: side(f[4], transport),
            resp: side(f[5], transport),
            partial: f.get(6) == Some(&"partial"),
        }
    }

    fn detect(&self) -> Vec<&'static str> {
        let orig: Vec<&[u8]> = self.orig.iter().map(Vec::as_slice).collect();
        let resp: Vec<&[u8]> = self.resp.iter().map(Vec::as_slice).collect();
        let s = Sample {
            transport: self.transport,
            orig_port: self.ports.0,
            resp_port: self.ports.1,
            orig: &orig,
            resp: &resp,
        };
        if self.partial {
            detect_partial(&s)
        } else {
            detect(&s)
        }
    }
}

/// What the kernel hands over of one side: the stream's first bytes, or the first datagrams.
fn side(field: &str, transport: Transport) -> Vec<Vec<u8>> {
    let all = field.split(',').map(hex);
    let mut kept: Vec<Vec<u8>> = match transport {
        Transport::Tcp => all.take(1).collect(),
        Transport::Udp => all
            .filter(|d| !d.is_empty())
            .take(MAX_SAMPLE_DATAGRAMS)
            .collect(),
    };
    for d in &mut kept {
        d.truncate(MAX_SAMPLE_BYTES);
    }
    kept
}

#[test]
#[ignore = "needs SERVICE_SAMPLES, extracted from traces outside the repo"]
fn service_samples() {
    let path = std::env::var("SERVICE_SAMPLES").expect("SERVICE_SAMPLES=FILE");
    let lines: Vec<Line> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(Line::parse)
        .collect();
    let out: String = lines
        .iter()
        .map(|l| format!("{}\t{}\n", l.id, l.detect().join(",")))
        .collect();
    std::fs::write(format!("{path}.out"), out).unwrap();
    if std::env::var("SERVICE_BENCH").is_ok() {
        let rounds = 200;
        let start = std::time::Instant::now();
        let mut found = 0usize;
        for _ in 0..rounds {
            found += lines
                .iter()
                .map(|l| std::hint::black_box(l.detect()).len())
                .sum::<usize>();
        }
        let per = start.elapsed().as_nanos() as f64 / (rounds * lines.len()) as f64;
        eprintln!(
            "detect: {per:.0} ns per connection over {} samples ({found} names)",
            lines.len()
        );
    }
}
