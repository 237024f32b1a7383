//! A tunnel made in userspace, for kernels built without a tunnel's module (`ip link add ...
//! type gre` or `type geneve` fails with "Unknown device type"): a TUN device in each
//! namespace of a [`NetnsPair`] carries that namespace's own inner packets, and a thread wraps
//! each one in the tunnel's header and sends it to the other namespace over the underlay (a raw
//! IP socket for GRE, a UDP socket for Geneve), and unwraps what arrives. The packets on the
//! underlay have the headers the kernel's devices write (plain GRE carrying IPv4; Geneve
//! carrying an Ethernet frame), so a tracker on the veth sees an ordinary tunnel.

use crate::netns::{NetnsPair, ip};
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MsgFlags, SockaddrIn, recv, sendto};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// The encapsulation the relay writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    /// GRE (RFC 2784) without options, protocol 0x0800: what `ip link add type gre` sends.
    Gre,
    /// Geneve (RFC 8926) to UDP 6081, VNI 42, an Ethernet frame inside (as `type geneve`).
    Geneve,
}

pub const GENEVE_PORT: u16 = 6081;
const IPPROTO_GRE: i32 = 47;
/// Room before the inner packet for the longest header written (Geneve + Ethernet).
const HEADROOM: usize = 8 + 14;

impl Encap {
    /// The header before an inner IPv4 packet.
    fn header(self) -> &'static [u8] {
        match self {
            Encap::Gre => &[0, 0, 0x08, 0x00],
            Encap::Geneve => &[
                0, 0, 0x65, 0x58, 0, 0, 42, 0, // Geneve: no options, Ethernet, VNI 42
                2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, // Ethernet, IPv4
            ],
        }
    }

    /// The inner IPv4 packet of what the socket received (None: not this tunnel's).
    fn unwrap(self, got: &[u8]) -> Option<&[u8]> {
        match self {
            Encap::Gre => {
                // A raw IPv4 socket hands over the IP header too.
                let ihl = (*got.first()? & 0x0f) as usize * 4;
                let gre = got.get(ihl..)?;
                (gre.get(..4)? == Encap::Gre.header()).then(|| &gre[4..])
            }
            Encap::Geneve => {
                let off = 8 + (*got.first()? & 0x3f) as usize * 4;
                let eth = got.get(off..)?;
                (got.get(2..4)? == [0x65, 0x58] && eth.get(12..14)? == [0x08, 0x00])
                    .then(|| &eth[14..])
            }
        }
    }
}

/// Both ends of the tunnel; stopped (threads joined, TUN devices gone) on drop.
pub struct UserTunnel {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl UserTunnel {
    /// A TUN device `dev` in each namespace with `inner[0]` (a) and `inner[1]` (b) on a /24,
    /// MTU 1400 (the tunnel's packets fit the veth's 1500), relayed over the pair's underlay.
    pub fn start(
        pair: &NetnsPair,
        encap: Encap,
        dev: &str,
        inner: [Ipv4Addr; 2],
    ) -> anyhow::Result<UserTunnel> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tunnel = UserTunnel {
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for (ns, peer) in [(&pair.a, &pair.b_v4), (&pair.b, &pair.a_v4)] {
            let peer: Ipv4Addr = peer.parse()?;
            // The tunnel carries IPv4 only: a device without IPv6 sends no neighbour
            // discovery or MLD of its own, traffic the tests never made.
            ip(&[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.disable_ipv6=1",
            ])?;
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (dev_name, stop) = (dev.to_string(), stop.clone());
            tunnel.threads.push(NetnsPair::run_in(ns, move || {
                match open(&dev_name, encap) {
                    Ok((tun, sock)) => {
                        let _ = ready_tx.send(Ok(()));
                        relay(tun, sock, encap, peer, &stop);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            }));
            ready_rx.recv()??;
        }
        // Both ends listen before either device is up: an end without its socket yet would
        // answer tunnel packets with ICMP protocol-unreachable, an underlay connection the
        // tests do not expect.
        for (ns, addr) in [(&pair.a, inner[0]), (&pair.b, inner[1])] {
            let addr = format!("{addr}/24");
            ip(&["-n", ns, "addr", "add", &addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "mtu", "1400", "up"])?;
        }
        Ok(tunnel)
    }
}

impl Drop for UserTunnel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The TUN device (IPv4 packets without the packet-information prefix) and the underlay
/// socket, in the calling thread's namespace.
fn open(dev: &str, encap: Encap) -> anyhow::Result<(File, OwnedFd)> {
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| anyhow::anyhow!("/dev/net/tun: {e}"))?;
    // SAFETY: an all-zero ifreq is valid (a C struct of integers and a union of them).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(dev.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads (and may write) one `ifreq`, which `ifr` is, on an open TUN fd.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
        anyhow::bail!("TUNSETIFF {dev}: {}", std::io::Error::last_os_error());
    }
    let sock = match encap {
        Encap::Gre => {
            // SAFETY: socket(2) with constant arguments; the result is checked below.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, IPPROTO_GRE) };
            anyhow::ensure!(
                fd >= 0,
                "raw GRE socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a descriptor just opened and owned by nothing else.
            unsafe { OwnedFd::from_raw_fd(fd) }
        }
        Encap::Geneve => UdpSocket::bind(("0.0.0.0", GENEVE_PORT))?.into(),
    };
    Ok((tun, sock))
}

/// Moves packets both ways until `stop` is set.
fn relay(mut tun: File, sock: OwnedFd, encap: Encap, peer: Ipv4Addr, stop: &AtomicBool) {
    let header = encap.header();
    let to = match encap {
        Encap::Gre => SockaddrIn::from(SocketAddrV4::new(peer, 0)),
        Encap::Geneve => SockaddrIn::from(SocketAddrV4::new(peer, GENEVE_PORT)),
    };
    let mut out = vec![0u8; 65536 + HEADROOM];
    let mut got = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let (tun_ready, sock_ready) = {
            let mut fds = [
                PollFd::new(tun.as_fd(), PollFlags::POLLIN),
                PollFd::new(sock.as_fd(), PollFlags::POLLIN),
            ];
            if poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0) <= 0 {
                continue;
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
            (ready(&fds[0]), ready(&fds[1]))
        };
        if tun_ready && let Ok(n) = tun.read(&mut out[header.len()..]) {
            out[..header.len()].copy_from_slice(header);
            let _ = sendto(
                sock.as_raw_fd(),
                &out[..header.len() + n],
                &to,
                MsgFlags::empty(),
            );
        }
        if sock_ready
            && let Ok(n) = recv(sock.as_raw_fd(), &mut got, MsgFlags::empty())
            && let Some(inner) = encap.unwrap(&got[..n])
        {
            let _ = tun.write(inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_wrapped_unwraps_to_the_same_packet() {
        let inner = [
            0x45u8, 0, 0, 20, 1, 2, 3, 4, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let geneve = [Encap::Geneve.header(), &inner[..]].concat();
        assert_eq!(Encap::Geneve.unwrap(&geneve), Some(&inner[..]));
        // GRE arrives with its IPv4 header (20 bytes here).
        let mut gre = inner.to_vec();
        gre.extend_from_slice(Encap::Gre.header());
        gre.extend_from_slice(&inner);
        assert_eq!(Encap::Gre.unwrap(&gre), Some(&inner[..]));
        // Another protocol inside (GRE key bit, Geneve carrying IPv6) is not this tunnel's.
        gre[20] = 0x20;
        assert_eq!(Encap::Gre.unwrap(&gre), None);
        let mut v6 = geneve.clone();
        v6[20..22].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(Encap::Geneve.unwrap(&v6), None);
    }
}
