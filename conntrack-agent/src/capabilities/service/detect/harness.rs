//! Scores the detectors against samples extracted from traces outside the repo (a script
//! writes one connection a line: `id`, `tcp`/`udp`, the two ports, then each side's payloads
//! as comma-separated hex). Run with
//! `SERVICE_SAMPLES=FILE cargo test -p conntrack-agent --lib service_samples -- --ignored`;
//! it writes `id<TAB>services` lines to `FILE.out`.

use super::test_util::hex;
use super::{MAX_SAMPLE_BYTES, MAX_SAMPLE_DATAGRAMS, Sample, Transport, detect, detect_partial};

fn side(field: &str, transport: Transport) -> Vec<Vec<u8>> {
    let all: Vec<Vec<u8>> = field.split(',').map(hex).collect();
    match transport {
        // The kernel copies at most this much of each direction.
        Transport::Tcp => all
            .into_iter()
            .take(1)
            .map(|mut b| {
                b.truncate(MAX_SAMPLE_BYTES);
                b
            })
            .collect(),
        Transport::Udp => all
            .into_iter()
            .filter(|d| !d.is_empty())
            .take(MAX_SAMPLE_DATAGRAMS)
            .map(|mut d| {
                d.truncate(MAX_SAMPLE_BYTES);
                d
            })
            .collect(),
    }
}

#[test]
#[ignore = "needs SERVICE_SAMPLES, extracted from traces outside the repo"]
fn service_samples() {
    let path = std::env::var("SERVICE_SAMPLES").expect("SERVICE_SAMPLES=FILE");
    let mut out = String::new();
    for line in std::fs::read_to_string(&path).unwrap().lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let transport = if f[1] == "tcp" {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let (orig, resp) = (side(f[4], transport), side(f[5], transport));
        let orig: Vec<&[u8]> = orig.iter().map(Vec::as_slice).collect();
        let resp: Vec<&[u8]> = resp.iter().map(Vec::as_slice).collect();
        let s = Sample {
            transport,
            orig_port: f[2].parse().unwrap(),
            resp_port: f[3].parse().unwrap(),
            orig: &orig,
            resp: &resp,
        };
        let found = if f.get(6) == Some(&"partial") {
            detect_partial(&s)
        } else {
            detect(&s)
        };
        out += &format!("{}\t{}\n", f[0], found.join(","));
    }
    std::fs::write(format!("{path}.out"), out).unwrap();
    if std::env::var("SERVICE_BENCH").is_ok() {
        bench(&path);
    }
}

/// Time per detect() call over the same samples (SERVICE_BENCH=1).
fn bench(path: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let owned: Vec<(Transport, u16, u16, Vec<Vec<u8>>, Vec<Vec<u8>>)> = text
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let t = if f[1] == "tcp" {
                Transport::Tcp
            } else {
                Transport::Udp
            };
            (
                t,
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                side(f[4], t),
                side(f[5], t),
            )
        })
        .collect();
    let rounds = 200;
    let start = std::time::Instant::now();
    let mut n = 0usize;
    for _ in 0..rounds {
        for (t, op, rp, o, r) in &owned {
            let o: Vec<&[u8]> = o.iter().map(Vec::as_slice).collect();
            let r: Vec<&[u8]> = r.iter().map(Vec::as_slice).collect();
            let s = Sample {
                transport: *t,
                orig_port: *op,
                resp_port: *rp,
                orig: &o,
                resp: &r,
            };
            n += std::hint::black_box(detect(&s)).len();
        }
    }
    let per = start.elapsed().as_nanos() as f64 / (rounds * owned.len()) as f64;
    eprintln!(
        "detect: {per:.0} ns per connection over {} samples ({n})",
        owned.len()
    );
}
