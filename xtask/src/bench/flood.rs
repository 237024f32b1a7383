//! The scale section's sender of new flows. First choice: `conntrack-agent bench-flood`, the
//! XDP live-frame generator (conntrack-ebpf's `bench_flood` run by BPF_PROG_TEST_RUN with
//! `BPF_F_TEST_XDP_LIVE_FRAMES`), which sends from namespace A's veth into namespace B's,
//! where the tracker's TC ingress sees each frame. It needs NAPI on the receiving veth (a
//! veth hands XDP frames only to a peer that polls), which GRO turns on. Without it (a kernel
//! before 5.18, or the generator failing its first try) the AF_PACKET `sendmmsg` sender,
//! about 280 k frames/s on the 2-core bench machine: below the rates the section probes.

use super::Bench;
use super::netns::{Netns, RawSender, in_netns};
use anyhow::{Context, Result, bail};
use conntrack_common::flood::frame;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What a step sent.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub flows: u64,
    /// Frames per second achieved, by the sender's clock.
    pub rate: f64,
    /// The XDP generator's CPU time (user + system), which includes the receiving veth's
    /// processing (it runs in the generator's bottom halves); `None` for the AF_PACKET sender.
    pub cpu_secs: Option<f64>,
}

impl Sent {
    /// Sending-side CPU time per flow, in microseconds, when known.
    pub fn cpu_us_per_flow(&self) -> Option<f64> {
        self.cpu_secs
            .filter(|_| self.flows > 0)
            .map(|c| c * 1e6 / self.flows as f64)
    }
}

pub enum Sender {
    /// The XDP generator: the agent binary and the namespace and interface it sends on.
    Flood {
        agent: PathBuf,
        ns: &'static str,
        dev: &'static str,
    },
    Raw(RawSender),
}

impl Sender {
    /// The XDP generator on `dev` in namespace `ns` towards `peer` in `peer_ns` (GRO turned on
    /// there), tried once with a few frames (sent before any tracker runs); else the AF_PACKET
    /// sender, with the reason it had to do.
    pub fn open(
        b: &Bench,
        (ns, dev): (&'static str, &'static str),
        (peer_ns, peer): (&'static str, &'static str),
    ) -> Result<(Sender, Option<String>)> {
        let flood = Sender::Flood {
            agent: b.agent.clone(),
            ns,
            dev,
        };
        let tried = set_gro(peer_ns, peer, true).and_then(|()| flood.send(0, 64, 0));
        match tried {
            Ok(s) if s.flows == 64 => Ok((flood, None)),
            Ok(s) => Ok((
                Sender::Raw(RawSender::open(ns, dev)?),
                Some(format!("the XDP generator sent {} of 64 frames", s.flows)),
            )),
            Err(e) => Ok((
                Sender::Raw(RawSender::open(ns, dev)?),
                Some(format!("{e:#}")),
            )),
        }
    }

    /// Sends flows `first..first + n` (`conntrack_common::flood` ids) at `rate` frames/s (0:
    /// as fast as the sender goes).
    pub fn send(&self, first: u64, n: u64, rate: u64) -> Result<Sent> {
        match self {
            Sender::Flood { agent, ns, dev } => {
                let agent = agent.to_string_lossy();
                let (first, n, rate) = (first.to_string(), n.to_string(), rate.to_string());
                let args = [
                    "bench-flood",
                    "--dev",
                    dev,
                    "--first",
                    &first,
                    "--count",
                    &n,
                    "--rate",
                    &rate,
                ];
                let out = Netns::output(ns, &agent, &args)?;
                parse_flood_output(&out)
            }
            Sender::Raw(s) => send_raw(s, first, n, rate),
        }
    }
}

/// `bench-flood`'s JSON line: flows sent and the achieved rate.
fn parse_flood_output(out: &str) -> Result<Sent> {
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .with_context(|| format!("bench-flood printed {:?}", out.trim()))?;
    let flows = v["sent"].as_u64().context("bench-flood: no `sent`")?;
    let rate = v["rate"].as_f64().context("bench-flood: no `rate`")?;
    Ok(Sent {
        flows,
        rate,
        cpu_secs: v["cpu_secs"].as_f64(),
    })
}

/// Turns GRO on or off on `dev` in `ns` (the legacy ETHTOOL_SGRO ioctl: no ethtool binary
/// needed). A veth with GRO on runs a NAPI poll, which lets its peer hand it XDP frames.
pub fn set_gro(ns: &str, dev: &str, on: bool) -> Result<()> {
    const ETHTOOL_SGRO: u32 = 0x2c;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    /// `struct ifreq` with its `ifr_data` member.
    #[repr(C)]
    struct IfreqData {
        name: [u8; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    let name = dev.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        bail!("interface name {dev:?} too long");
    }
    let dev = dev.to_string();
    in_netns(ns, move || {
        let mut value = EthtoolValue {
            cmd: ETHTOOL_SGRO,
            data: u32::from(on),
        };
        let mut req = IfreqData {
            name: [0; libc::IFNAMSIZ],
            data: &mut value,
            _pad: [0; 16],
        };
        req.name[..dev.len()].copy_from_slice(dev.as_bytes());
        // SAFETY: plain socket(2); the result is checked.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        if raw < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: SIOCETHTOOL with an ifreq whose data points at a live ethtool_value.
        let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
        if r != 0 {
            bail!("ETHTOOL_SGRO on {dev}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    })
}

/// The AF_PACKET sender: `sendmmsg` batches of [`frame`]s, paced by sleeping.
pub fn send_raw(s: &RawSender, first: u64, n: u64, rate: u64) -> Result<Sent> {
    const BATCH: u64 = 64;
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(BATCH as usize);
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let k = BATCH.min(n - sent);
        frames.clear();
        frames.extend((0..k).map(|j| frame(first + sent + j).to_vec()));
        let got = s.send_batch(&frames);
        if got == 0 {
            bail!("sendmmsg sent nothing");
        }
        sent += got as u64;
        if rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            while t0.elapsed() < due {
                let left = due.saturating_sub(t0.elapsed());
                if left > Duration::from_micros(200) {
                    std::thread::sleep(left - Duration::from_micros(100));
                }
            }
        }
    }
    Ok(Sent {
        flows: n,
        rate: n as f64 / t0.elapsed().as_secs_f64().max(1e-6),
        cpu_secs: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bench_flood_output() {
        let s = parse_flood_output(
            "{\"cpu_secs\":0.6,\"next\":400000,\"rate\":399885.7,\"secs\":1.0003,\"sent\":400000,\"wall_secs\":1.02}\n",
        )
        .unwrap();
        assert_eq!(s.flows, 400_000);
        assert_eq!(s.rate, 399_885.7);
        assert_eq!(s.cpu_us_per_flow(), Some(1.5));
        assert!(parse_flood_output("conntrack-agent: error").is_err());
    }
}
